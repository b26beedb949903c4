"""Balancing state shared by every gateway instance through one Redis.

:class:`RedisBalancingState` is the shared :class:`~hookgate.balancing.BalancingState`: in-flight
counts as leases that expire when an instance dies, per-deployment request and token windows
decided in Lua on Redis's clock, latency averages optionally. It takes the app's
``redis.asyncio`` client (one pool per URL, the app's fail-fast settings) and never opens one.
When Redis fails it falls back to per-instance state within ``timeout_seconds``.
"""
from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import replace
from time import monotonic
from typing import TYPE_CHECKING, Any, Callable, Sequence, final

import structlog

from .balancing import (
    Acquisition,
    AttemptReport,
    Deployment,
    DeploymentLoad,
    LocalBalancingState,
    Refusal,
    Ticket,
)
from .tasks import stop_task

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisBalancingState"]

log = structlog.get_logger("hookgate.balancing")


# KEYS: per candidate in order of preference: its in-flight set (lease id -> expiry, ms), its stats
# hash (r:<bucket> requests, t:<bucket> tokens, cool = cooling until (ms), lat:ttft, lat:total,
# lat:at). ARGV: reserve (1/0), lease id, tokens, window ms, bucket ms, lease ms, retention ms,
# then per candidate: max in flight, requests limit, tokens limit (-1: none).
# Returns {chosen (1-based, 0: none), now ms, bucket, then per candidate: refusal code, in flight,
# requests, tokens, free in ms, ttft, total} after the reservation. Refusal codes: _REFUSALS; the rule mirrors hookgate.balancing._refusal().
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reserve, id, amount = ARGV[1] == '1', ARGV[2], tonumber(ARGV[3])
local window, bucket, lease, retention = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local current = math.floor(now / bucket)
local oldest_counted = math.floor((now - window) / bucket)
local reply = {0, now, current}
for i = 1, #KEYS / 2 do
  local flights, stats = KEYS[2 * i - 1], KEYS[2 * i]
  local max_flight, max_requests, max_tokens = tonumber(ARGV[5 + 3 * i]), tonumber(ARGV[6 + 3 * i]), tonumber(ARGV[7 + 3 * i])
  redis.call('ZREMRANGEBYSCORE', flights, '-inf', now)
  local in_flight = redis.call('ZCARD', flights)
  local fields = redis.call('HGETALL', stats)
  local requests, tokens, cooling, oldest, ttft, total = 0, 0, 0, nil, '', ''
  for j = 1, #fields, 2 do
    local name, value = fields[j], fields[j + 1]
    local kind = string.sub(name, 1, 2)
    if kind == 'r:' or kind == 't:' then
      local index = tonumber(string.sub(name, 3))
      if index < oldest_counted then
        redis.call('HDEL', stats, name)
      else
        if kind == 'r:' then requests = requests + tonumber(value) else tokens = tokens + tonumber(value) end
        if oldest == nil or index < oldest then oldest = index end
      end
    elseif name == 'cool' then cooling = math.max(0, tonumber(value) - now)
    elseif name == 'lat:ttft' then ttft = value
    elseif name == 'lat:total' then total = value
    end
  end
  local refusal = 0
  local function judge(extra)
    if cooling > 0 then return 5 end
    if max_flight >= 0 and in_flight >= max_flight then return 2 end
    if max_requests >= 0 and requests + 1 > max_requests then return 3 end
    if max_tokens >= 0 and (tokens + extra > max_tokens or tokens >= max_tokens) then return 4 end
    return 0
  end
  if reserve and reply[1] == 0 then
    refusal = judge(amount)
    if refusal == 0 then
      reply[1] = i
      redis.call('ZADD', flights, now + lease, id)
      redis.call('PEXPIRE', flights, lease * 2)
      redis.call('HINCRBY', stats, 'r:' .. current, 1)
      if amount > 0 then redis.call('HINCRBY', stats, 't:' .. current, amount) end
      redis.call('PEXPIRE', stats, retention)
      in_flight, requests, tokens = in_flight + 1, requests + 1, tokens + amount
      if oldest == nil then oldest = current end
      refusal = judge(0)
    end
  else
    refusal = judge(0)
  end
  local free_in = 0
  if refusal == 5 then free_in = cooling
  elseif (refusal == 3 or refusal == 4) and oldest ~= nil then free_in = math.max(0, (oldest + 1) * bucket + window - now) end
  for _, value in ipairs({refusal, in_flight, requests, tokens, free_in, ttft, total}) do reply[#reply + 1] = value end
end
return reply
"""
# KEYS: the deployment's in-flight set and stats hash. ARGV: lease id, bucket of the reservation,
# token correction, cooldown ms (0: none), ttft, total ('' : none), alpha, half-life ms,
# failed (1/0), window ms, bucket ms, retention ms, share latency (1/0).
_RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stats = KEYS[2]
redis.call('ZREM', KEYS[1], ARGV[1])
local delta, window, bucket = tonumber(ARGV[3]), tonumber(ARGV[10]), tonumber(ARGV[11])
if delta ~= 0 then
  local index = tonumber(ARGV[2])
  if index >= math.floor((now - window) / bucket) then
    redis.call('HINCRBY', stats, 't:' .. index, delta)
  elseif delta > 0 then
    redis.call('HINCRBY', stats, 't:' .. math.floor(now / bucket), delta)
  end
end
local cooldown = tonumber(ARGV[4])
if cooldown > 0 then
  local until_ms = now + cooldown
  if until_ms > (tonumber(redis.call('HGET', stats, 'cool')) or 0) then redis.call('HSET', stats, 'cool', until_ms) end
end
if ARGV[13] == '1' and (ARGV[5] ~= '' or ARGV[6] ~= '') then
  local alpha, half_life, failed = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9] == '1'
  local at = tonumber(redis.call('HGET', stats, 'lat:at'))
  local weight = 1
  if at then weight = math.max(alpha, 1 - 2 ^ (-math.max(0, now - at) / half_life)) end
  for name, raw in pairs({['lat:ttft'] = ARGV[5], ['lat:total'] = ARGV[6]}) do
    if raw ~= '' then
      local sample, average = tonumber(raw), tonumber(redis.call('HGET', stats, name))
      if failed and average then sample = math.max(sample, 2 * average) end
      if average then sample = average + weight * (sample - average) end
      redis.call('HSET', stats, name, string.format('%.6f', sample))
    end
  end
  redis.call('HSET', stats, 'lat:at', now)
end
redis.call('PEXPIRE', stats, math.max(tonumber(ARGV[12]), cooldown + bucket))
return 1
"""
# KEYS: in-flight sets. ARGV: lease ms, then per key: how many lease ids, and the ids. Extends
# leases that still exist; one that expired stays gone (its slot may be someone else's now).
_REFRESH = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local at = 2
for i = 1, #KEYS do
  local count = tonumber(ARGV[at])
  for j = 1, count do redis.call('ZADD', KEYS[i], 'XX', expiry, ARGV[at + j]) end
  redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[1]) * 2)
  at = at + count + 1
end
return 1
"""

_REFUSALS: dict[int, Refusal | None] = {0: None, 2: "in_flight_limit", 3: "requests_limit", 4: "tokens_limit", 5: "cooling_down"}
_NO_LIMIT = -1


class _OncePerInterval:
    """Logs a recurring problem at most once per interval, with how often it was suppressed."""

    __slots__ = ("event", "interval", "_last", "_suppressed")

    def __init__(self, event: str, interval_seconds: float) -> None:
        self.event, self.interval = event, interval_seconds
        self._last = float("-inf")
        self._suppressed = 0

    def warning(self, **fields: Any) -> None:
        now = monotonic()
        if now - self._last < self.interval:
            self._suppressed += 1
            return
        log.warning(self.event, suppressed=self._suppressed, **fields)
        self._last, self._suppressed = now, 0


@final
class RedisBalancingState:
    """Balancing state shared by every instance through one Redis.

    In-flight counts are leases: members of a sorted set scored by their expiry on Redis's clock,
    refreshed every ``lease_seconds / 3`` while held, so an instance that dies gives its slots back
    within ``lease_seconds``. Per-minute usage is bucketed like :class:`LocalBalancingState`'s and
    decided with the reservation in one Lua script, so the limits hold across instances. Latency
    averages stay per instance unless ``share_latency`` (one more hash write per release).

    Ranking reads the loads the last Redis reply returned (at most ``snapshot_max_age_seconds``
    old, else it reads them first); the limits themselves are always checked on fresh state.
    A Redis operation that fails or takes longer than ``timeout_seconds`` switches this instance
    to its per-instance ``fallback`` for ``retry_seconds`` (logged once per ``log_interval``); a
    lease taken in Redis whose release fails expires by itself. Keys share the hash tag of their
    route (``{prefix}:{route}:name:...``), so Redis Cluster keeps a route's keys in one slot.
    The client is the app's (its pool and timeouts); :meth:`aclose` stops the lease refresher.
    """

    __slots__ = (
        "redis", "prefix", "window", "bucket", "lease_seconds", "timeout", "retry_seconds", "snapshot_max_age", "share_latency",
        "max_hold_seconds", "fallback", "_clock", "_acquire", "_release", "_refresh", "_down_until", "_trouble", "_keys", "_cache",
        "_held", "_refresher", "_ids", "_instance", "_background",
    )

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str = "hookgate:balancing",
        window_seconds: float = 60.0,
        buckets: int = 12,
        lease_seconds: float = 30.0,
        timeout_seconds: float = 0.25,
        retry_seconds: float = 5.0,
        snapshot_max_age_seconds: float = 1.0,
        share_latency: bool = False,
        max_hold_seconds: float = 3600.0,
        log_interval_seconds: float = 30.0,
        fallback: LocalBalancingState | None = None,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        if window_seconds <= 0 or buckets < 1 or lease_seconds <= 0 or timeout_seconds <= 0:
            raise ValueError("window_seconds, buckets, lease_seconds and timeout_seconds must be positive")
        self.redis = redis
        self.prefix = key_prefix
        self.window, self.bucket = int(window_seconds * 1000), max(1, int(window_seconds * 1000 / buckets))
        self.lease_seconds, self.timeout, self.retry_seconds = lease_seconds, timeout_seconds, retry_seconds
        self.snapshot_max_age, self.share_latency, self.max_hold_seconds = snapshot_max_age_seconds, share_latency, max_hold_seconds
        self.fallback = fallback or LocalBalancingState(window_seconds=window_seconds, buckets=buckets, clock=clock)
        self._clock = clock
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self._refresh = redis.register_script(_REFRESH)
        self._down_until = float("-inf")
        self._trouble = _OncePerInterval("balancing_redis_unavailable", log_interval_seconds)
        self._keys: dict[str, tuple[str, str]] = {}
        self._cache: dict[str, tuple[float, DeploymentLoad]] = {}
        self._held: dict[str, tuple[str, float]] = {}  # lease id -> (in-flight key, acquired at)
        self._refresher: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._instance = os.urandom(6).hex()
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def shared(self) -> bool:
        """Whether Redis is in use now (False while degraded to per-instance state)."""
        return self._clock() >= self._down_until

    def _redis_keys(self, d: Deployment) -> tuple[str, str]:
        keys = self._keys.get(d.key)
        if keys is None:
            if len(self._keys) >= 4096:
                self._keys.clear()
            base = f"{self.prefix}:{{{d.route}}}:{d.name}"
            keys = self._keys[d.key] = (f"{base}:inflight", f"{base}:stats")
        return keys

    def _went_down(self, error: BaseException, during: str) -> None:
        self._down_until = self._clock() + self.retry_seconds
        self._trouble.warning(error=type(error).__name__, during=during, fallback="per-instance state", retry_in_seconds=self.retry_seconds)

    # BalancingState

    async def loads(self, deployments: Sequence[Deployment]) -> list[DeploymentLoad]:
        if not self.shared:
            return await self.fallback.loads(deployments)
        now = self._clock()
        cached = [self._cache.get(d.key) for d in deployments]
        if all(entry is not None and now - entry[0] <= self.snapshot_max_age for entry in cached):
            return [entry[1] for entry in cached]  # type: ignore[index]
        try:
            reply = await self._call(self._acquire, deployments, reserve=False, lease_id="", tokens=0)
        except Exception as exc:
            self._went_down(exc, "read")
            return await self.fallback.loads(deployments)
        return self._parse(deployments, reply)[1]

    async def acquire(self, ranked: Sequence[Deployment], tokens: int) -> Acquisition:
        if not self.shared:
            return self.fallback.acquire_now(ranked, tokens)
        lease_id = f"{self._instance}:{next(self._ids)}"
        try:
            reply = await self._call(self._acquire, ranked, reserve=True, lease_id=lease_id, tokens=tokens)
        except asyncio.CancelledError:
            # The script may have reserved before the cancellation reached us: give the slot back.
            self._spawn(self._forget(lease_id, ranked))
            raise
        except Exception as exc:
            self._went_down(exc, "acquire")  # a reservation made before a timeout expires by itself
            return self.fallback.acquire_now(ranked, tokens)
        chosen, loads = self._parse(ranked, reply)
        if chosen is None:
            return Acquisition(None, loads)
        d = ranked[chosen]
        self._held[lease_id] = (self._redis_keys(d)[0], self._clock())
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._keep_leases())
        return Acquisition(Ticket(d, lease_id, int(reply[2]), tokens, "redis", int(reply[1])), loads)

    async def release(self, ticket: Ticket, report: AttemptReport) -> None:
        if ticket.backend == "local":
            self.fallback.release_now(ticket, report)
            return
        self._held.pop(ticket.lease_id, None)
        cached = self._cache.get(ticket.deployment.key)
        if cached is not None:  # a copy: callers may hold the cached load
            self._cache[ticket.deployment.key] = (cached[0], replace(cached[1], in_flight=max(0, cached[1].in_flight - 1)))
        record = self.fallback.record(ticket.deployment)
        if not self.share_latency:
            self.fallback.sample_latency(record, report, self._clock())
        if not self.shared:
            if report.cooldown is not None:  # keep it here at least
                record.cooling_until = max(record.cooling_until, self._clock() + report.cooldown)
            return  # the lease expires by itself; the token correction is lost
        delta = 0 if report.tokens is None else report.tokens - ticket.reserved_tokens
        args: list[Any] = [
            ticket.lease_id, ticket.bucket, delta, int((report.cooldown or 0) * 1000),
            _number(report.ttft), _number(report.total), report.alpha, int(report.half_life_seconds * 1000),
            1 if report.outcome == "failure" else 0, self.window, self.bucket, self._retention(),
            1 if self.share_latency and report.outcome in ("success", "failure") else 0,
        ]
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.shield(self._release(keys=list(self._redis_keys(ticket.deployment)), args=args))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._went_down(exc, "release")

    async def aclose(self) -> None:
        """Stop refreshing leases (they expire within ``lease_seconds``) and background clean-ups."""
        await asyncio.gather(*(stop_task(task) for task in (self._refresher, *self._background)))

    # Helpers

    def _retention(self) -> int:
        # Long enough to keep latency averages through a quiet spell; usage buckets expire anyway.
        return max(2 * self.window, 600_000)

    async def _call(self, script: Any, deployments: Sequence[Deployment], *, reserve: bool, lease_id: str, tokens: int) -> list[Any]:
        keys: list[str] = []
        args: list[Any] = [1 if reserve else 0, lease_id, tokens, self.window, self.bucket, int(self.lease_seconds * 1000), self._retention()]
        for d in deployments:
            keys.extend(self._redis_keys(d))
            args += [
                _NO_LIMIT if d.max_in_flight is None else d.max_in_flight,
                _NO_LIMIT if d.requests_per_minute is None else d.requests_per_minute,
                _NO_LIMIT if d.tokens_per_minute is None else d.tokens_per_minute,
            ]
        async with asyncio.timeout(self.timeout):
            return await script(keys=keys, args=args)

    def _parse(self, deployments: Sequence[Deployment], reply: list[Any]) -> tuple[int | None, list[DeploymentLoad]]:
        now = self._clock()
        loads = []
        for i, d in enumerate(deployments):
            refusal, in_flight, requests, tokens, free_in, ttft, total = reply[3 + 7 * i : 10 + 7 * i]
            if self.share_latency:
                average_ttft, average_total = _parsed(ttft), _parsed(total)
            else:
                record = self.fallback.record(d)
                average_ttft, average_total = record.ttft, record.total
            load = DeploymentLoad(
                int(in_flight), int(requests), int(tokens), average_ttft, average_total, _REFUSALS[int(refusal)], int(free_in) / 1000
            )
            self._cache[d.key] = (now, load)
            loads.append(load)
        if len(self._cache) > 4096:
            self._cache.clear()
        chosen = int(reply[0])
        return (chosen - 1 if chosen else None), loads

    async def _keep_leases(self) -> None:
        """Refresh every lease this instance holds, in one script call per round, until none is held."""
        lease_ms = int(self.lease_seconds * 1000)
        while self._held:
            await asyncio.sleep(self.lease_seconds / 3)
            now = self._clock()
            by_key: dict[str, list[str]] = {}
            for lease_id, (key, acquired_at) in list(self._held.items()):
                if now - acquired_at > self.max_hold_seconds:
                    del self._held[lease_id]  # never released: let it expire rather than hold it forever
                    continue
                by_key.setdefault(key, []).append(lease_id)
            if not by_key:
                continue
            args: list[Any] = [lease_ms]
            for ids in by_key.values():
                args += [len(ids), *ids]
            try:
                async with asyncio.timeout(self.timeout):
                    await self._refresh(keys=list(by_key), args=args)
            except Exception as exc:
                self._went_down(exc, "lease refresh")

    async def _forget(self, lease_id: str, ranked: Sequence[Deployment]) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for d in ranked:
                        pipe.zrem(self._redis_keys(d)[0], lease_id)
                    await pipe.execute()
        except Exception as exc:
            self._went_down(exc, "cancelled acquire")

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _parsed(value: Any) -> float | None:
    if value in (None, b"", ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
