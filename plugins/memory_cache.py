"""``memory_cache``: an exact-match response cache in this process (LRU with a TTL).

The key is :func:`hookgate.cache_key` (DESIGN.md invariant 7): everything that changes the answer,
scoped per tenant unless ``shared``. Only complete answers whose finish reasons are listed in
``cacheable_finish_reasons`` are stored; errors and cut-off streams never are. Entries are kept as
serialised bytes, so a hit hands out a fresh object that no later plugin can corrupt for others.

Clients steer it with ``Cache-Control``: ``no-cache`` skips the lookup (``x-hookgate-cache:
BYPASS``), ``no-store`` skips the write.
"""
from __future__ import annotations

from collections import OrderedDict
from time import monotonic

import orjson
from pydantic import Field

from hookgate import Completion, PluginConfig, RequestContext, cache_key, hookimpl, is_complete

_STATE_KEY = "memory_cache.key"


class MemoryCacheConfig(PluginConfig):
    """Settings of the in-memory cache."""

    max_entries: int = Field(10_000, ge=1, description="entries kept; the least recently used go first")
    ttl_seconds: float = Field(300.0, gt=0, description="how long an answer stays valid")
    max_entry_bytes: int = Field(1_048_576, ge=1, description="answers larger than this (serialised) are not stored")
    shared: bool = Field(False, description="one namespace for every client instead of one per tenant/API key")
    cacheable_finish_reasons: list[str] = Field(
        ["stop", "length", "tool_calls"], description="answers are stored only when every choice ended with one of these"
    )


class MemoryCache:
    """Exact-match LRU + TTL response cache inside this process."""

    Config = MemoryCacheConfig

    def __init__(self, config: MemoryCacheConfig) -> None:
        self.config = config
        self._finish_reasons = frozenset(config.cacheable_finish_reasons)
        # key -> (expires_at, stored_at, serialised chat.completion)
        self._entries: OrderedDict[str, tuple[float, float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @hookimpl
    async def cache_lookup(self, ctx: RequestContext) -> Completion | None:
        if "no-cache" in ctx.headers.get("Cache-Control", ""):
            ctx.cache_status = "BYPASS"
            return None
        key = ctx.state[_STATE_KEY] = cache_key(ctx, shared=self.config.shared)
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, stored_at, payload = entry
        now = monotonic()
        if now >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        ctx.response_headers["age"] = str(int(now - stored_at))
        return Completion(orjson.loads(payload))

    @hookimpl
    async def after_response(self, ctx: RequestContext, response: Completion) -> None:
        key = ctx.state.get(_STATE_KEY)
        if key is None or ctx.cache_status != "MISS" or "no-store" in ctx.headers.get("Cache-Control", ""):
            return
        if not is_complete(response) or any(c.get("finish_reason") not in self._finish_reasons for c in response.body["choices"]):
            return
        payload = orjson.dumps(response.body)
        if len(payload) > self.config.max_entry_bytes:
            return
        now = monotonic()
        self._entries[key] = (now + self.config.ttl_seconds, now, payload)
        self._entries.move_to_end(key)
        while len(self._entries) > self.config.max_entries:
            self._entries.popitem(last=False)
