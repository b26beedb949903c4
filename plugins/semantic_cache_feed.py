"""Keeps an instance's local index in step with Redis: the stream of changes, and rebuilds.

Every instance writes its adds and deletes to one Redis stream; every instance reads it and
applies them to its :class:`~hookgate.plugins.semantic_cache_index.LocalIndex`. The index is
rebuilt from the entries themselves (each namespace's sorted set of ids, then the entries'
prompts and vectors, never their answers) when it cannot trust the stream:

* on start (the index is empty);
* when it **fell behind**: the stream is capped (``stream_max_len``, trimmed oldest first), and
  Redis counts the messages ever added; ``added - length`` were trimmed, and when that is more
  than this instance has consumed, changes it never read are gone;
* when Redis **lost the stream** (restarted without persistence): its count of messages ever
  added is below what this instance consumed, or the stream is gone.

A rebuild notes the stream's position first, reads the entries, swaps the new index in, then
applies the stream from the noted position: a change made during the rebuild is applied twice at
worst, and adds and deletes are idempotent. Between a change and its arrival here the index may be
stale for a moment; that costs a miss, never a wrong answer, because every candidate is confirmed
in Redis before it is served. While Redis is down the feed waits and the semantic tier is off.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import structlog

from hookgate.logs import IntervalLog
from hookgate.redis import RedisUnavailable
from hookgate.tasks import stop_task

from .semantic_cache_backend import IndexedEntry
from .semantic_cache_index import LocalIndex
from .semantic_cache_store import EntryStore, StreamPosition

__all__ = ["IndexFeed", "FeedState"]

log = structlog.get_logger("hookgate.semantic_cache")


@dataclass(slots=True)
class FeedState:
    """What the admin page and metrics show of the feed."""

    ready: bool = False
    """The index was built from Redis at least once."""
    last_id: str = "0-0"
    consumed: int = 0
    """Messages of the stream accounted for: up to the position of the last rebuild, plus those read since."""
    rebuilds: int = 0
    applied: int = 0
    last_rebuild_seconds: float = 0.0
    last_rebuild_reason: str = ""
    reasons: dict[str, int] = field(default_factory=dict)


class IndexFeed:
    """The task that applies the stream to the index (see the module docstring)."""

    def __init__(self, store: EntryStore, index: LocalIndex, *, dimensions: int, block_ms: int, batch: int, retry_seconds: float, sweep_seconds: float) -> None:
        self.store = store
        self.index = index
        self.state = FeedState()
        self._dimensions = dimensions
        self._block_ms = block_ms
        self._batch = batch
        self._retry = retry_seconds
        self._sweep_every = sweep_seconds
        self._next_sweep = time.monotonic() + sweep_seconds
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._errors = IntervalLog(log, "semantic_cache_feed_error", 30.0)
        self._synced = asyncio.Event()

    async def start(self, first_build_timeout: float) -> None:
        """Build the index from Redis (waiting up to ``first_build_timeout``), then keep it fed
        in the background. A Redis that is down only delays the first build."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="semantic-cache-feed")
        try:
            async with asyncio.timeout(first_build_timeout):
                await self._synced.wait()
        except TimeoutError:
            log.warning("semantic_cache_index_not_ready", waited_s=first_build_timeout, note="built in the background; misses until then")

    async def close(self) -> None:
        self._closing = True  # the loop ends even if a cancellation is swallowed mid-read
        await stop_task(self._task)
        self._task = None

    async def caught_up(self) -> None:
        """Wait until the feed has applied everything the stream had (tests, benchmarks)."""
        await self._synced.wait()

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except RedisUnavailable as exc:
                self._errors.warning(error=str(exc), note="the local index waits for Redis; the semantic tier is off meanwhile")
                await asyncio.sleep(self._retry)
            except Exception:
                log.exception("semantic_cache_feed_failed")
                await asyncio.sleep(self._retry)

    async def _step(self) -> None:
        position = await self.store.position()
        reason = self._rebuild_reason(position)
        if reason is not None:
            await self.rebuild(position, reason)
        changes = await self.store.read(self.state.last_id, count=self._batch, block_ms=0 if reason else self._block_ms)
        for change in changes:
            if change.op == "add" and change.entry is not None:
                if len(change.entry.vector) == self._dimensions:
                    self.index.add_now(change.entry)
            elif change.op == "del":
                self.index.remove_now(change.namespace_id, change.entry_id, change.partition or None)
            self.state.last_id = change.message_id
        self.state.applied += len(changes)
        self.state.consumed += len(changes)
        if len(changes) < self._batch:
            self._synced.set()
        if time.monotonic() >= self._next_sweep:
            self.index.sweep()
            self._next_sweep = time.monotonic() + self._sweep_every

    def _rebuild_reason(self, position: StreamPosition) -> str | None:
        state = self.state
        if not state.ready:
            return "start"
        if position.added < state.consumed or (not position.exists and state.last_id != "0-0"):
            return "stream_lost"
        if position.trimmed > state.consumed:
            return "fell_behind"
        return None

    async def rebuild(self, position: StreamPosition, reason: str) -> None:
        """Replace the index with what Redis holds, then continue from ``position``."""
        started = time.perf_counter()
        entries: list[IndexedEntry] = []
        for namespace_id in await self.store.namespace_names():
            found = await self.store.scan(namespace_id)
            if not found:
                await self.store.forget_namespace_if_empty(namespace_id)
            entries.extend(e for e in found if len(e.vector) == self._dimensions)
        self.index.replace(entries)
        state = self.state
        state.last_id, state.consumed, state.ready = position.last_id, position.added, True
        state.rebuilds += 1
        state.last_rebuild_reason = reason
        state.reasons[reason] = state.reasons.get(reason, 0) + 1
        state.last_rebuild_seconds = time.perf_counter() - started
        log.info("semantic_cache_index_rebuilt", reason=reason, entries=len(self.index), seconds=round(state.last_rebuild_seconds, 3))

