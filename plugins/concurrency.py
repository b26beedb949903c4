"""``concurrency``: a limit on upstream calls in flight, per instance or across every instance.

The seed's ``asyncio.Semaphore``, grown up. The limit applies per ``scope``: the whole instance,
each provider, each model or each API key (tenant). With ``distributed = true`` the same limit is
held across every gateway instance sharing one Redis, as a counting semaphore with leases (Redis
in Action, §6.3): a holder is a member of a sorted set scored by its last refresh on Redis's
clock, so the slots of a crashed instance come back once its leases expire, and a running call
(a long stream) refreshes its lease. If Redis cannot be reached the plugin falls back to the
per-instance limit and says so in the log once per interval.

A request that waits longer than ``max_wait_seconds`` for a slot gets a 429 with ``Retry-After``
(or a 503, ``reject_status``). A slot is released on success, error, timeout, cancellation and
client disconnect; for a stream, when the stream ends. List it after retry, so that no slot is
held while retry sleeps between attempts, or before it, to hold one slot across attempts. How long
a request waited is the :data:`~hookgate.facts.CONCURRENCY_WAIT_SECONDS` fact (metrics reads it).
"""
from __future__ import annotations

import asyncio
import collections
import uuid
from time import monotonic, perf_counter
from typing import Any, AsyncIterator, Awaitable, Callable, Literal

import structlog
from aiohttp import web
from pydantic import Field

from hookgate import (
    CompletionStream,
    GatewayError,
    ProviderResponse,
    RateLimited,
    Readiness,
    RequestContext,
    ServiceUnavailable,
    hookimpl,
)
from hookgate.bounds import clip
from hookgate.facts import CONCURRENCY_WAIT_SECONDS
from hookgate.logs import IntervalLog
from hookgate.redis import RedisUnavailable, RedisURLConfig, SharedRedis, redis_service
from hookgate.rules import Produces

log = structlog.get_logger("hookgate.concurrency")

_DEFAULT_URL = "redis://127.0.0.1:6379/0"

# Acquire a slot if fewer than ARGV[1] unexpired holders exist. Scores are Redis's own clock (ms),
# so instances with skewed clocks agree on which leases have expired.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - lease)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], lease * 2)
  return 1
end
return 0
"""
# Extend a held lease; 0 means it had already expired and the slot may be someone else's.
_REFRESH = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], 'XX', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
"""


class ConcurrencyConfig(RedisURLConfig):
    """Settings of the concurrency limit."""

    limit: int = Field(64, ge=1, description="upstream calls in flight at once, per scope")
    scope: Literal["instance", "provider", "model", "api_key"] = Field("instance", description="what the limit is counted per")
    max_wait_seconds: float = Field(10.0, ge=0, description="how long a request may wait for a slot")
    reject_status: Literal[429, 503] = Field(429, description="status for a request that waited too long")
    retry_after_seconds: int = Field(1, ge=0, description="Retry-After sent with that rejection")
    distributed: bool = Field(False, description="hold the limit across every instance through Redis")
    key_prefix: str = Field("hookgate:concurrency", description="prefix of the Redis keys")
    lease_seconds: float = Field(30.0, gt=0, description="a crashed instance's slots come back after this long")
    poll_seconds: float = Field(0.02, gt=0, description="how often a waiting request asks Redis for a slot")
    redis_timeout_seconds: float = Field(1.0, gt=0, description="limit of one Redis operation (waiting for a pooled connection included)")


class Concurrency:
    """Limits upstream calls in flight, per instance/provider/model/key, optionally across instances."""

    Config = ConcurrencyConfig
    roles = ("concurrency",)
    rules = (Produces(CONCURRENCY_WAIT_SECONDS, "call_provider"),)

    def __init__(self, config: ConcurrencyConfig) -> None:
        self.config = config
        self.local = KeyedSemaphore(config.limit)
        self.redis: SharedRedis | None = None
        self._redis_trouble = IntervalLog(log, "concurrency_redis_unavailable")

    @hookimpl
    async def startup(self, app: web.Application) -> None:
        if self.config.distributed:
            self.redis = await redis_service(app).connect(self.config.resolved_redis_url(default=_DEFAULT_URL) or _DEFAULT_URL)
            self._acquire = self.redis.client.register_script(_ACQUIRE)
            self._refresh = self.redis.client.register_script(_REFRESH)

    @hookimpl
    async def check_ready(self) -> Readiness | None:
        if self.redis is None:
            return None
        return self.redis.readiness(detail_when_down="limiting per instance")

    @hookimpl
    async def call_provider(
        self, ctx: RequestContext, call_next: Callable[[RequestContext], Awaitable[ProviderResponse]]
    ) -> ProviderResponse:
        key = self._scope_key(ctx)
        if self.redis is None and self.local.try_acquire(key):
            ctx[CONCURRENCY_WAIT_SECONDS] = 0.0  # a free slot, taken without waiting
            release = _LocalRelease(self.local, key)
        else:
            started = perf_counter()
            release = await self._acquire_slot(key)
            ctx[CONCURRENCY_WAIT_SECONDS] = perf_counter() - started
        try:
            response = await call_next(ctx)
        except BaseException:
            await release()
            raise
        if isinstance(response, CompletionStream):
            # The slot is held until the stream is closed (the core always closes it); the chunks
            # themselves pass straight through, without a generator of ours around each.
            return response.with_close(_then(response.aclose, release))
        await release()
        return response

    def _scope_key(self, ctx: RequestContext) -> str:
        scope = self.config.scope
        if scope == "provider":
            return f"provider:{ctx.provider_name}"
        if scope == "model":
            return f"model:{clip(ctx.model)}"  # a Redis key with distributed = true: bounded
        if scope == "api_key":
            return f"tenant:{clip(ctx.tenant or 'anon')}"
        return "instance"

    async def _acquire_slot(self, key: str) -> Callable[[], Awaitable[None]]:
        if self.redis is not None:
            try:
                return await self._acquire_distributed(self.redis, key)
            except RedisUnavailable as exc:
                self._log_fallback(exc)
        if not await self.local.acquire(key, self.config.max_wait_seconds):
            raise self._rejection()
        return _LocalRelease(self.local, key)

    async def _acquire_distributed(self, redis: SharedRedis, key: str) -> Callable[[], Awaitable[None]]:
        redis_key = f"{self.config.key_prefix}:{{{key}}}"
        holder = uuid.uuid4().hex
        lease_ms = int(self.config.lease_seconds * 1000)
        timeout = self.config.redis_timeout_seconds
        give_up = monotonic() + self.config.max_wait_seconds

        async def forget() -> None:
            try:
                await redis.run(lambda: redis.client.zrem(redis_key, holder), timeout=timeout)
            except RedisUnavailable as exc:  # the lease expires by itself
                self._log_fallback(exc)

        try:
            while not await redis.run(lambda: self._acquire(keys=[redis_key], args=[self.config.limit, lease_ms, holder]), timeout=timeout):
                if monotonic() >= give_up:
                    raise self._rejection()
                await asyncio.sleep(min(self.config.poll_seconds, max(0.0, give_up - monotonic())))
        except asyncio.CancelledError:
            # Cancelled (client gone) while the acquire was in flight: it may have succeeded.
            await asyncio.shield(forget())
            raise
        refresher = asyncio.create_task(self._keep_lease(redis, redis_key, holder, lease_ms))

        async def release() -> None:
            if refresher.done():
                return
            refresher.cancel()
            await asyncio.shield(forget())

        return release

    async def _keep_lease(self, redis: SharedRedis, redis_key: str, holder: str, lease_ms: int) -> None:
        while True:
            await asyncio.sleep(self.config.lease_seconds / 3)
            try:
                if not await redis.run(lambda: self._refresh(keys=[redis_key], args=[holder, lease_ms]), timeout=self.config.redis_timeout_seconds):
                    log.warning("concurrency_lease_lost", key=redis_key)
                    return
            except RedisUnavailable as exc:
                self._log_fallback(exc)

    def _rejection(self) -> GatewayError:
        message = f"Too many requests in flight (limit {self.config.limit}); no slot freed within {self.config.max_wait_seconds} s."
        headers = {"Retry-After": str(self.config.retry_after_seconds)}
        if self.config.reject_status == 503:
            return ServiceUnavailable(message, code="concurrency_limit", headers=headers)
        return RateLimited(message, code="concurrency_limit", headers=headers)

    def _log_fallback(self, exc: BaseException) -> None:
        self._redis_trouble.warning(error=type(exc).__name__, fallback="per-instance limit")


class KeyedSemaphore:
    """A counting semaphore per key, dropped again when nobody holds or waits for it.

    Not ``asyncio.Semaphore``: a request that finds a free slot (nearly every one) takes it
    with :meth:`try_acquire`, a plain function, where the semaphore needs a coroutine and two
    scans of its waiters on every request's path.
    Only a request that must wait awaits a future, first come first served. A released slot
    goes straight to the first waiter, so a newcomer never overtakes one, and a waiter that
    gives up (its timeout, a cancellation) after being handed a slot passes it on.
    """

    __slots__ = ("limit", "_slots")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots: dict[str, _Slots] = {}

    def __len__(self) -> int:
        """Keys held or waited for now."""
        return len(self._slots)

    def try_acquire(self, key: str) -> bool:
        """Take a slot of ``key`` if one is free and nobody waits for one."""
        slots = self._slots.get(key)
        if slots is None:
            self._slots[key] = _Slots()
            return True
        if slots.held < self.limit and not slots.waiters:
            slots.held += 1
            return True
        return False

    async def acquire(self, key: str, timeout: float) -> bool:
        """Take a slot of ``key``, waiting up to ``timeout`` seconds; False when none came."""
        if self.try_acquire(key):
            return True
        slots = self._slots[key]
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        slots.waiters.append(handed)
        try:
            async with asyncio.timeout(timeout):
                await handed
            return True
        except TimeoutError:
            self._give_up(key, slots, handed)
            return False
        except BaseException:
            self._give_up(key, slots, handed)
            raise

    def release(self, key: str) -> None:
        """Give a slot of ``key`` back: to its first waiter, if one waits."""
        slots = self._slots[key]
        while slots.waiters:
            waiter = slots.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands: ``held`` stays
                return
        slots.held -= 1
        if slots.held == 0:
            del self._slots[key]

    def _give_up(self, key: str, slots: _Slots, handed: asyncio.Future[None]) -> None:
        if handed.done() and not handed.cancelled():
            self.release(key)  # handed a slot just as it gave up: the next waiter's
            return
        handed.cancel()
        try:
            slots.waiters.remove(handed)
        except ValueError:
            pass


class _LocalRelease:
    """Gives a local slot back, once however often it is awaited."""

    __slots__ = ("_slots", "_key")

    def __init__(self, slots: KeyedSemaphore, key: str) -> None:
        self._slots: KeyedSemaphore | None = slots
        self._key = key

    async def __call__(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots.release(self._key)


class _Slots:
    """One key's slots: how many are held (at least one while the key exists) and who waits."""

    __slots__ = ("held", "waiters")

    def __init__(self) -> None:
        self.held = 1
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()


def _then(first: Callable[[], Awaitable[None]], second: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    async def both() -> None:
        try:
            await first()
        finally:
            await second()

    return both
