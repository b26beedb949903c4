"""The semantic cache's vector backends: what finds the nearest cached prompts of a partition.

Redis holds the entries (prompt, answer, TTL) and is the source of truth; a backend only finds
*candidates*, and every candidate is confirmed in Redis before it is served, so a backend that
lags (a deletion not yet seen, an expiry not yet swept) can cost a lookup, never a wrong answer.

Two backends, chosen with ``[plugins.semantic_cache] backend``:

* ``local`` (default): each instance keeps its own index in memory
  (:mod:`~hookgate.plugins.semantic_cache_index`), fed by the Redis stream of adds and deletes and
  rebuilt from Redis on start or when it fell behind (:mod:`~hookgate.plugins.semantic_cache_feed`).
  Nothing else to run; a lookup that finds no candidate costs no network round trip.
* ``pgvector``: one table in PostgreSQL with the pgvector extension, shared by every instance
  (:mod:`~hookgate.plugins.semantic_cache_pgvector`): no per-instance memory or rebuild, at one
  SQL round trip per lookup.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, final, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["IndexedEntry", "Candidate", "VectorBackend", "BackendUnavailable"]


class BackendUnavailable(Exception):
    """A backend with a server of its own (pgvector) did not answer in time: the lookup misses,
    the entry stays in Redis unindexed. The message never holds a DSN."""


@final
@dataclass(frozen=True, slots=True)
class IndexedEntry:
    """What a backend knows of one cached entry (its answer stays in Redis)."""

    namespace_id: str
    entry_id: str
    partition: str
    prompt: str
    """The cached prompt's last user turn: the guard compares it with the new one."""
    vector: npt.NDArray[np.float32]
    """Unit length, the embedding model's dimensions."""
    expires_at: float
    """Unix time after which the entry is gone from Redis."""


@final
@dataclass(frozen=True, slots=True)
class Candidate:
    """A cached prompt near the new one, best first."""

    entry_id: str
    prompt: str
    score: float
    """Cosine similarity of the two prompts (exact float32, whatever the index approximated)."""


@runtime_checkable
class VectorBackend(Protocol):
    """Finds candidates; see the module docstring for the two implementations."""

    name: str
    dimensions: int
    """The length of every vector it holds: a query vector of another length is never searched."""
    fed_by_stream: bool
    """True for a per-instance index that must apply the Redis stream (and be rebuilt from Redis)."""

    async def start(self) -> None:
        """Open connections, create tables (called in the plugin's startup)."""

    async def close(self) -> None:
        """Release what ``start`` opened."""

    async def add(self, entry: IndexedEntry) -> bool:
        """Index ``entry`` (idempotent); False when a bound refused it."""

    async def remove(self, namespace_id: str, entry_id: str) -> None:
        """Forget an entry (idempotent)."""

    async def search(self, namespace_id: str, partition: str, vector: Any, k: int, min_score: float) -> list[Candidate]:
        """At most ``k`` live entries of the partition scoring at least ``min_score``, best first."""

    def stats(self) -> dict[str, Any]:
        """Small, bounded figures for the admin page and metrics (entries, groups…)."""
