"""The semantic cache's scope: may this request be compared by meaning, and with which entries?

A cached answer may only be served for a prompt that asks the same question *in the same
setting*. Everything but the last user turn is therefore compared exactly, as a hash, and only
the last user turn is compared by meaning. :func:`scope_of` returns a request's
:class:`SemanticScope` (its namespace, its partition and the text to embed) or an
:class:`Ineligible` reason, a bounded label for metrics.

The **partition** hashes, with the entry schema version:

* the surface the client called (``chat.completions``, ``anthropic.messages``, ``responses``):
  caches never mix surfaces;
* the routed provider and the upstream model (a fallback route gets its own partition);
* every field of the request body as the provider receives it (route defaults applied), except
  ``messages`` and the fields that do not change the answer (:data:`hookgate.cache_keys.NON_OUTPUT_FIELDS`):
  so every generation parameter (temperature, top_p, max_tokens, stop, seed, n…), tools,
  tool_choice and response_format. A parameter OpenAI adds tomorrow makes the partition
  stricter, never wrong;
* the conversation before the last user turn, system prompt included
  (:func:`~hookgate.plugins.semantic_cache_partition.conversation_partition`);
* the embedding model's id: vectors of another model are never compared. For a model routed
  through the gateway (``embedding_model``) the id covers the public name, what its route
  resolves to (provider, upstream model, default parameters) and the requested ``dimensions``
  (:attr:`hookgate.embeddings.GatewayEmbedder.model_id`), so switching models, or re-routing the
  name, starts an empty partition.

The **namespace** is the tenant (the key's cache namespace, else its id, else a hash of the
credential; ``anon`` without one), or ``shared`` when the operator shares one namespace. Shadow
mode, bounds and metrics are per namespace.

**Eligible** requests are chat-like, end with a text user turn of at most ``max_prompt_chars``
characters, have a temperature (the provider default counts as 1.0) no higher than the configured
maximum unless the key's metadata allows it, and do not say ``Cache-Control: no-cache``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, final

from hookgate import RequestContext, canonical_json
from hookgate.cache_keys import NON_OUTPUT_FIELDS, cache_identity
from hookgate.facts import CLIENT_KEY
from .semantic_cache_partition import PARTITION_VERSION, conversation_partition

__all__ = ["ENTRY_SCHEMA", "CHAT_SURFACES", "Ineligible", "SemanticScope", "scope_of", "namespace_id", "answer_text"]

ENTRY_SCHEMA: Final = "semantic-v1"
"""Version of what an entry holds and what its partition hashes: bumped when either changes, so
old entries are never read with a new meaning."""

CHAT_SURFACES: Final = frozenset({"chat.completions", "anthropic.messages", "responses"})
"""Surfaces whose canonical request is a chat: the only ones the semantic cache serves."""

_DEFAULT_TEMPERATURE: Final = 1.0
"""What chat APIs use when a request sends no temperature."""


class Ineligible(str, Enum):
    """Why a request is not compared by meaning: the value is the metrics label."""

    SURFACE = "surface"
    NOT_TEXT = "not_text"
    TOO_LONG = "too_long"
    TEMPERATURE = "temperature"
    NO_CACHE = "no_cache"
    REDIS_DOWN = "redis_down"
    TRUNCATED = "truncated"
    EMBEDDER = "embedder"
    """The embedding failed (upstream error, overloaded, a vector of the wrong length)."""
    EMBEDDER_TIMEOUT = "embedder_timeout"
    """A routed embedding model (``embedding_model``) did not answer in time."""
    NOT_READY = "not_ready"
    """A routed embedding model's dimensions are not known yet: there is no index to search."""


@final
@dataclass(frozen=True, slots=True)
class SemanticScope:
    """Where a request's candidates may come from, and what is compared."""

    namespace: str
    """Tenant, ``anon`` or ``shared``: readable, for metrics and the admin page."""
    namespace_id: str
    """A fixed-length hash of ``namespace``, used in keys (a tenant name may hold any character)."""
    partition: str
    """sha256 of everything that must be identical (module docstring)."""
    text: str
    """The last user turn: embedded, and compared by the guard."""
    route: tuple[int, int]
    """The provider and route the partition was computed for (a fallback changes them)."""


def namespace_id(namespace: str) -> str:
    """The key-safe id of a namespace."""
    return hashlib.sha256(namespace.encode()).hexdigest()[:20]


def scope_of(
    ctx: RequestContext,
    *,
    model_id: str,
    shared: bool,
    max_temperature: float,
    temperature_override_label: str,
    max_prompt_chars: int,
) -> SemanticScope | Ineligible:
    """The request's scope, or why it has none."""
    if ctx.surface not in CHAT_SURFACES:
        return Ineligible.SURFACE
    body, provider = cache_identity(ctx)
    messages = body.get("messages")
    if not isinstance(messages, list):
        return Ineligible.NOT_TEXT
    conversation = conversation_partition(messages)
    if conversation is None:
        return Ineligible.NOT_TEXT
    if len(conversation.last_user_text) > max_prompt_chars:
        return Ineligible.TOO_LONG
    if _temperature(body) > max_temperature and not _key_allows_any_temperature(ctx, temperature_override_label):
        return Ineligible.TEMPERATURE
    parameters = {k: v for k, v in body.items() if k != "messages" and k not in NON_OUTPUT_FIELDS}
    material = {
        "schema": ENTRY_SCHEMA,
        "conversation": PARTITION_VERSION,
        "surface": ctx.surface,
        "provider": provider,
        "parameters": parameters,  # the upstream model included
        "prefix": conversation.prefix_hash,
        "embedding_model": model_id,
    }
    namespace = "shared" if shared else (ctx.tenant or "anon")
    return SemanticScope(
        namespace=namespace,
        namespace_id=namespace_id(namespace),
        partition=hashlib.sha256(canonical_json(material)).hexdigest()[:32],
        text=conversation.last_user_text,
        route=route_of(ctx),
    )


def route_of(ctx: RequestContext) -> tuple[int, int]:
    """The provider and route serving the request (a fallback changes both after the lookup; the
    deployment a load-balanced route picked does not: the route is the identity)."""
    route = getattr(ctx, "route", None)
    balanced = route.balanced if route is not None else None
    if balanced is not None:
        return 0, id(balanced)
    return id(ctx.provider), id(route)


def answer_text(body: dict[str, Any]) -> str | None:
    """The text of a cacheable answer: every choice a plain text message (no tool call, no
    refusal), joined; None when the answer must not be cached by meaning."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return None
    texts = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict) or message.get("tool_calls") or message.get("function_call") or message.get("refusal"):
            return None
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            return None
        texts.append(content)
    return "\n".join(texts)


def _temperature(body: dict[str, Any]) -> float:
    value = body.get("temperature")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _DEFAULT_TEMPERATURE
    return float(value)


def _key_allows_any_temperature(ctx: RequestContext, label: str) -> bool:
    key = ctx.get(CLIENT_KEY)
    return key is not None and str(key.metadata.get(label, "")).lower() in ("true", "1", "yes")
