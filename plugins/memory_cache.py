"""``memory_cache``: an exact-match response cache in this process (LRU with a TTL and a byte budget).

The key is :func:`hookgate.cache_key` (DESIGN.md invariant 7): everything that changes the answer,
scoped per tenant unless ``shared``. Only complete answers whose finish reasons are listed in
``cacheable_finish_reasons`` are stored; errors and cut-off streams never are. Entries are kept as
serialised bytes, so a hit hands out a fresh object that no later plugin can corrupt for others.
The cache holds at most ``max_entries`` answers and ``max_bytes`` of them (keys and a fixed
per-entry overhead counted), the least recently used going first: unique prompts cannot grow it
past a known size.

Clients steer it with ``Cache-Control``: ``no-cache`` skips the lookup (``x-hookgate-cache:
BYPASS``) and the fresh answer replaces the entry, ``no-store`` skips the write, and
``x-hookgate-cache-ttl`` can shorten (never lengthen) ``ttl_seconds`` for one answer.

Listed before a shared cache (``redis_cache``), it is the first tier: it fills itself from that
cache's hits, keeping the entry's age, so the next identical request is answered from memory. It
never stores a semantic cache's hit (``SEMANTIC_MATCH``): that answer was chosen by meaning for
another prompt, and the semantic cache's audits, deletions and TTLs must keep reaching it.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from time import monotonic

import orjson
from pydantic import Field

from hookgate import Completion, PluginConfig, RequestContext, StateKey, cache_key, hookimpl, is_complete
from hookgate.cache_control import CacheDirectives
from hookgate.facts import SEMANTIC_MATCH
from hookgate.rules import Reads


class MemoryCacheConfig(PluginConfig):
    """Settings of the in-memory cache."""

    max_entries: int = Field(10_000, ge=1, description="entries kept; the least recently used go first")
    ttl_seconds: float = Field(300.0, gt=0, description="how long an answer stays valid")
    max_entry_bytes: int = Field(1_048_576, ge=1, description="answers larger than this (serialised) are not stored")
    max_bytes: int = Field(
        256 * 1024 * 1024, ge=1, description="memory the entries may take in all (answers, keys, overhead); the least recently used go first"
    )
    shared: bool = Field(False, description="one namespace for every client instead of one per tenant/API key")
    cacheable_finish_reasons: list[str] = Field(
        ["stop", "length", "tool_calls"], description="answers are stored only when every choice ended with one of these"
    )


@dataclass(slots=True)
class _Lookup:
    """This cache's view of one request, from ``cache_lookup`` to ``after_response``."""

    key: str
    route: tuple[int, int]
    """What the key was computed for: a fallback route's answer is stored under its own key."""
    directives: CacheDirectives
    answered: bool = False
    """This cache answered the request: its own hit is never stored again."""


class MemoryCache:
    """Exact-match LRU + TTL response cache inside this process."""

    Config = MemoryCacheConfig
    roles = ("cache",)
    rules = (Reads(SEMANTIC_MATCH, "after_response", why="a semantic hit is not stored under this prompt's exact key"),)

    def __init__(self, config: MemoryCacheConfig) -> None:
        self.config = config
        self._finish_reasons = frozenset(config.cacheable_finish_reasons)
        # key -> (expires_at, stored_at, serialised chat.completion)
        self._entries: OrderedDict[str, tuple[float, float, bytes]] = OrderedDict()
        self.bytes = 0
        """What the entries take, as :func:`_entry_bytes` counts them."""

    def __len__(self) -> int:
        return len(self._entries)

    @hookimpl
    async def cache_lookup(self, ctx: RequestContext) -> Completion | None:
        directives = CacheDirectives.of(ctx.headers)
        lookup = ctx[_LOOKUP] = _Lookup(cache_key(ctx, shared=self.config.shared), _route_of(ctx), directives)
        if directives.no_cache:
            ctx.cache_status = "BYPASS"
            return None
        entry = self._entries.get(lookup.key)
        if entry is None:
            return None
        expires_at, stored_at, payload = entry
        now = monotonic()
        if now >= expires_at:
            self._drop(lookup.key)
            return None
        self._entries.move_to_end(lookup.key)
        lookup.answered = True
        ctx.response_headers["age"] = str(int(now - stored_at))
        return Completion.from_bytes(payload)

    @hookimpl
    async def after_response(self, ctx: RequestContext, response: Completion) -> None:
        lookup = ctx.get(_LOOKUP)
        if lookup is None or lookup.answered or lookup.directives.no_store or SEMANTIC_MATCH in ctx:
            return
        if not is_complete(response) or any(c.get("finish_reason") not in self._finish_reasons for c in response.body.get("choices") or ()):
            return
        payload = response.to_bytes()
        if len(payload) > self.config.max_entry_bytes:
            return
        size = _entry_bytes(lookup.key, payload)
        if size > self.config.max_bytes:
            return
        ttl = self.config.ttl_seconds
        if lookup.directives.ttl_seconds is not None:
            ttl = min(ttl, lookup.directives.ttl_seconds)
        key = lookup.key if lookup.route == _route_of(ctx) else cache_key(ctx, shared=self.config.shared)
        now = monotonic()
        # A later cache's hit (or an answer shared by its single-flight) keeps its age here, so
        # this tier never serves an answer for longer after it was generated than ttl_seconds.
        stored_at = now - _age_seconds(ctx.response_headers.get("age")) if ctx.cache_hit else now
        if stored_at + ttl <= now:
            return
        self._drop(key)
        self._entries[key] = (stored_at + ttl, stored_at, payload)
        self.bytes += _entry_bytes(key, payload)
        while len(self._entries) > self.config.max_entries or self.bytes > self.config.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= _entry_bytes(key, entry[2])


_LOOKUP: StateKey[_Lookup] = StateKey("memory_cache.lookup", _Lookup, "this cache's view of the request")


_ENTRY_OVERHEAD_BYTES = 250
"""What one entry costs beyond its key's and answer's bytes (the dict slot, the tuple, two floats,
the bytes and str headers), measured with sys.getsizeof on CPython 3.11."""


def _entry_bytes(key: str, payload: bytes) -> int:
    return len(key) + len(payload) + _ENTRY_OVERHEAD_BYTES


def _route_of(ctx: RequestContext) -> tuple[int, int]:
    """The provider and route serving the request (a fallback changes both after the lookup)."""
    return id(ctx.provider), id(getattr(ctx, "route", None))


def _age_seconds(header: str | None) -> float:
    try:
        return max(0.0, float(header)) if header is not None else 0.0
    except ValueError:
        return 0.0
