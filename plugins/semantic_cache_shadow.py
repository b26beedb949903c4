"""Shadow mode: a namespace's semantic hits are served only once they proved right on its traffic.

The guard's figures come from a labelled set it was tuned on; real traffic is different. So a new
namespace starts in **shadow**: a lookup that finds a candidate the guard accepts still calls
upstream, answers the client with the fresh answer (``x-hookgate-cache: SHADOW``), and compares
the two answers. Each comparison is one observation in Redis (the latest ``window`` are kept, per
namespace, shared by every instance). The namespace is **trusted** once it has
``min_observations`` of them and at least ``1 - max_disagreement`` agreed; from then on the
candidates are served (``HIT-SEMANTIC``), and ``audit_fraction`` of those hits are still
shadowed, so a namespace whose traffic drifts falls back to shadow by itself when agreement drops.

The comparison is configurable: ``answer_embedding`` (default) embeds both answers with the
cache's model and agrees above ``answer_similarity``; ``exact`` agrees when the texts are equal
once whitespace and case are normalised (for deterministic upstreams, or scripted tests).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Literal, final

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from hookgate.embeddings import EmbeddingModel

__all__ = ["ShadowConfig", "Trust", "trust_of", "ShadowDecision", "decide", "answers_agree"]


class ShadowConfig(BaseModel):
    """Settings of shadow mode (the ``shadow`` table of the semantic cache's config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="false serves guard-accepted candidates at once, with no observation (not recommended)")
    min_observations: int = Field(50, ge=1, le=100_000, description="shadow comparisons a namespace needs before its hits are served")
    max_disagreement: float = Field(
        0.05, ge=0.0, le=1.0, description="δ: a namespace is trusted while at least 1 - δ of its latest comparisons agreed"
    )
    window: int = Field(200, ge=1, le=100_000, description="latest comparisons kept per namespace (older ones are forgotten)")
    audit_fraction: float = Field(
        0.05, ge=0.0, le=1.0, description="fraction of a trusted namespace's hits still shadowed and compared"
    )
    comparison: Literal["answer_embedding", "exact"] = Field(
        "answer_embedding", description="how two answers are compared: their embeddings' similarity, or equal text"
    )
    answer_similarity: float = Field(
        0.8, ge=0.0, le=1.0, description="answer_embedding: the cosine similarity from which two answers agree"
    )
    max_answer_chars: int = Field(4000, ge=1, le=32_768, description="characters of each answer compared (the model reads ~256 tokens)")
    forget_after_seconds: float = Field(
        7 * 86400.0, gt=0, description="a namespace without a comparison for this long starts over in shadow"
    )

    @model_validator(mode="after")
    def _window_holds_the_minimum(self) -> ShadowConfig:
        if self.window < self.min_observations:
            raise ValueError(f"window ({self.window}) must be at least min_observations ({self.min_observations})")
        return self


@final
@dataclass(frozen=True, slots=True)
class Trust:
    """A namespace's standing, from its latest observations."""

    observations: int
    agreed: int
    trusted: bool

    @property
    def agreement(self) -> float:
        return self.agreed / self.observations if self.observations else 0.0


def trust_of(observations: tuple[bool, ...], config: ShadowConfig) -> Trust:
    """Whether the observations (newest first) trust the namespace."""
    window = observations[: config.window]
    agreed = sum(window)
    trusted = len(window) >= config.min_observations and agreed >= (1 - config.max_disagreement) * len(window) - 1e-9
    return Trust(len(window), agreed, trusted)


class ShadowDecision(str, Enum):
    """What to do with a confirmed candidate: the value is the metrics label."""

    SERVE = "hit"
    SHADOW = "shadow"
    AUDIT = "audit"


def decide(trust: Trust, config: ShadowConfig, draw: float | None = None) -> ShadowDecision:
    """Serve, shadow (not trusted yet) or audit (trusted, but drawn for a comparison)."""
    if not config.enabled:
        return ShadowDecision.SERVE
    if not trust.trusted:
        return ShadowDecision.SHADOW
    draw = random.random() if draw is None else draw
    return ShadowDecision.AUDIT if draw < config.audit_fraction else ShadowDecision.SERVE


async def answers_agree(cached: str, fresh: str, config: ShadowConfig, embedder: EmbeddingModel) -> tuple[bool, float]:
    """Whether the cached answer says what the fresh one says, and the similarity measured."""
    a, b = cached[: config.max_answer_chars], fresh[: config.max_answer_chars]
    if config.comparison == "exact":
        same = _normalised(a) == _normalised(b)
        return same, 1.0 if same else 0.0
    if _normalised(a) == _normalised(b):
        return True, 1.0
    result = await embedder.embed([a, b])
    similarity = float(result.vectors[0] @ result.vectors[1])
    return similarity >= config.answer_similarity, similarity


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()
