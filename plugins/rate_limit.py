"""``rate_limit``: requests and tokens per minute, per key and per model, exact across instances.

Each limit is a sliding window of one minute, kept in Redis and decided inside one Lua script on
Redis's clock, so ten gateway instances enforce one limit, not ten: a request is admitted only if,
in every scope it belongs to (its key, its model), the requests of the last 60 s stay within
``requests_per_minute`` and their tokens within ``tokens_per_minute``. A refused request consumes
nothing. Scopes and limits: ``requests_per_minute``/``tokens_per_minute`` per key (a key's own
values from api_keys win over these defaults; without api_keys the "key" is the client's tenant),
and ``[plugins.rate_limit.models.NAME]`` per model across all keys.

Tokens are reserved before the call (token_counter's prompt estimate plus the completion limit) and
corrected to the provider's usage after it, on success and on every failure (0 when nothing was
generated; what was streamed when a stream broke; 0 for a cache HIT). **What counts:** a request
answered (from the provider or a cache) or failed after the provider was asked; a request that
never reached the provider (refused by a later plugin: a 403, an unknown model, a budget, an
invalid parameter) gives its reservation back entirely. A reservation is an entry of the window,
so it leaves the count after 60 s whatever happens to the instance that made it: none can leak.
Corrections and releases run after the answer was sent, in the background. A 429 carries ``Retry-After`` (when enough of the window expires) and every admitted
response OpenAI's headers: ``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests``,
``x-ratelimit-reset-requests`` and the ``-tokens`` trio, for the tightest scope.

Without Redis (no ``redis_url``, no ``$REDIS_URL``) the same windows are kept in the process: each
instance then enforces the limit on its own, so N instances admit up to N × the limit. When a
configured Redis cannot be reached, ``on_redis_error`` decides: ``local`` (default: per-instance
windows, readiness degraded), ``allow`` or ``reject`` (503); once the app's Redis guard has seen
it fail, requests take that path in milliseconds.

Without api_keys, the "key" is whatever bearer token the client sends (hashed): a client that
invents a new token per request is not limited by it. Enable api_keys, or set
``key_by = "client_address"`` to limit per client address instead.
"""
from __future__ import annotations

import math
import uuid
from collections import OrderedDict
from itertools import islice
from dataclasses import dataclass, field
from time import monotonic
from typing import Literal

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from hookgate import (
    Outcome,
    RateLimited,
    Readiness,
    RequestContext,
    ServiceUnavailable,
    StateKey,
    hookimpl,
)
from hookgate.bounds import RecentTable, clip
from hookgate.facts import CLIENT_KEY, PROMPT_ESTIMATE, USAGE, billable_usage, key_id, prompt_estimate
from hookgate.logs import IntervalLog
from hookgate.redis import RedisUnavailable, RedisURLConfig, SharedRedis, redis_service
from hookgate.rules import Reads
from hookgate.tasks import background

log = structlog.get_logger("hookgate.rate_limit")

WINDOW_MS = 60_000
NO_LIMIT = -1

# KEYS: three per scope (request window, token window, token amounts with their '_sum').
# ARGV: window ms, reservation id, tokens, then per scope its request and token limit (-1: none).
# Returns {admitted (1/0, 2 = can never fit), retry_after_ms, then per scope: requests used,
# ms until its oldest request leaves the window, tokens used, same for tokens} (after admission).
_RESERVE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local window, id, amount = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local horizon = now - window
local scopes = #KEYS / 3
local wait, too_large = 0, false
for i = 0, scopes - 1 do
  local requests, tokens, amounts = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local request_limit, token_limit = tonumber(ARGV[4 + 2 * i]), tonumber(ARGV[5 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', requests, '-inf', horizon)
  local expired = redis.call('ZRANGEBYSCORE', tokens, '-inf', horizon)
  if #expired > 0 then
    local freed = 0
    for _, member in ipairs(expired) do
      freed = freed + (tonumber(redis.call('HGET', amounts, member)) or 0)
      redis.call('HDEL', amounts, member)
    end
    redis.call('HINCRBY', amounts, '_sum', -freed)
    redis.call('ZREMRANGEBYSCORE', tokens, '-inf', horizon)
  end
  local used_requests = redis.call('ZCARD', requests)
  if request_limit >= 0 and used_requests + 1 > request_limit then
    local at = used_requests - request_limit
    local entry = redis.call('ZRANGE', requests, at, at, 'WITHSCORES')
    wait = math.max(wait, entry[2] and (tonumber(entry[2]) + window - now) or window)
  end
  local used_tokens = tonumber(redis.call('HGET', amounts, '_sum')) or 0
  if token_limit >= 0 and used_tokens + amount > token_limit then
    if amount > token_limit then
      too_large = true
    else
      local need, freed, until_ms = used_tokens + amount - token_limit, 0, window
      local entries = redis.call('ZRANGE', tokens, 0, 9999, 'WITHSCORES')
      for j = 1, #entries, 2 do
        freed = freed + (tonumber(redis.call('HGET', amounts, entries[j])) or 0)
        if freed >= need then until_ms = tonumber(entries[j + 1]) + window - now break end
      end
      wait = math.max(wait, until_ms)
    end
  end
end
local admitted = 1
if too_large then admitted = 2 elseif wait > 0 then admitted = 0 end
local report = {admitted, math.max(wait, 1)}
for i = 0, scopes - 1 do
  local requests, tokens, amounts = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local request_limit, token_limit = tonumber(ARGV[4 + 2 * i]), tonumber(ARGV[5 + 2 * i])
  if admitted == 1 then
    if request_limit >= 0 then
      redis.call('ZADD', requests, now, id)
      redis.call('PEXPIRE', requests, window + 1000)
    end
    if token_limit >= 0 then
      redis.call('ZADD', tokens, now, id)
      redis.call('HSET', amounts, id, amount)
      redis.call('HINCRBY', amounts, '_sum', amount)
      redis.call('PEXPIRE', tokens, window + 1000)
      redis.call('PEXPIRE', amounts, window + 1000)
    end
  end
  local oldest_request = redis.call('ZRANGE', requests, 0, 0, 'WITHSCORES')
  local oldest_token = redis.call('ZRANGE', tokens, 0, 0, 'WITHSCORES')
  report[#report + 1] = redis.call('ZCARD', requests)
  report[#report + 1] = oldest_request[2] and (tonumber(oldest_request[2]) + window - now) or 0
  report[#report + 1] = tonumber(redis.call('HGET', amounts, '_sum')) or 0
  report[#report + 1] = oldest_token[2] and (tonumber(oldest_token[2]) + window - now) or 0
end
return report
"""
# KEYS: three per scope, as for _RESERVE. ARGV: reservation id. Gives a reservation back entirely
# (a request that never reached the provider).
_RELEASE = """
for i = 0, #KEYS / 3 - 1 do
  local requests, tokens, amounts = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  redis.call('ZREM', requests, ARGV[1])
  local old = redis.call('HGET', amounts, ARGV[1])
  if old then
    redis.call('HDEL', amounts, ARGV[1])
    redis.call('HINCRBY', amounts, '_sum', -tonumber(old))
    redis.call('ZREM', tokens, ARGV[1])
  end
end
return 1
"""
# KEYS: the token-amount hashes of the reservation's scopes. ARGV: reservation id, actual tokens.
# An entry that already left the window is not touched: its tokens no longer count anyway.
_CORRECT = """
for i = 1, #KEYS do
  local old = redis.call('HGET', KEYS[i], ARGV[1])
  if old then
    redis.call('HSET', KEYS[i], ARGV[1], ARGV[2])
    redis.call('HINCRBY', KEYS[i], '_sum', tonumber(ARGV[2]) - tonumber(old))
  end
end
return 1
"""


class Limits(BaseModel):
    """Per-minute limits of one scope; absent means unlimited."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(None, ge=1, description="requests admitted per sliding minute")
    tokens_per_minute: int | None = Field(None, ge=1, description="tokens (reserved, then actual) per sliding minute")


class RateLimitConfig(RedisURLConfig):
    """Settings of the rate limiter."""

    requests_per_minute: int | None = Field(None, ge=1, description="per key, for keys without their own limit")
    tokens_per_minute: int | None = Field(None, ge=1, description="per key, for keys without their own limit")
    models: dict[str, Limits] = Field({}, description="per public model name, across all keys")
    key_prefix: str = Field("hookgate:ratelimit", description="prefix of the Redis keys")
    redis_timeout_seconds: float = Field(2.0, gt=0, description="how long a request may wait for its limit decision; then on_redis_error applies")
    on_redis_error: Literal["local", "allow", "reject"] = Field(
        "local", description="when Redis fails: per-instance limits, admit everything, or 503"
    )
    max_local_scopes: int = Field(
        100_000, ge=1, description="without Redis: scopes (keys, tokens, addresses) kept in the process; idle ones go after a minute"
    )
    key_by: Literal["key", "client_address"] = Field(
        "key",
        description="whose limit a request counts against: its gateway key (else its bearer token's hash), or the client's address",
    )


@dataclass(frozen=True, slots=True)
class Scope:
    """One set of limits a request counts against (``key:team-a``, ``model:gpt-4o``)."""

    name: str
    requests: int | None
    tokens: int | None


@dataclass(frozen=True, slots=True)
class ScopeUsage:
    """A scope's window after the decision."""

    scope: Scope
    requests_used: int
    requests_reset_ms: int
    tokens_used: int
    tokens_reset_ms: int


@dataclass(frozen=True, slots=True)
class Decision:
    admitted: bool
    retry_after_ms: int
    scopes: list[ScopeUsage]
    too_large: bool = False


@dataclass(slots=True)
class Reservation:
    """What a request holds until it is corrected: its id in each scope's windows."""

    id: str
    scopes: list[Scope]
    tokens: int
    backend: Literal["redis", "local"]
    settled: bool = False


class RateLimit:
    """Requests and tokens per minute per key and per model, atomically in Redis (Lua, sliding window)."""

    Config = RateLimitConfig
    roles = ("rate_limit",)
    rules = (
        Reads(CLIENT_KEY, "before_request", why="a key's own limits"),
        Reads(PROMPT_ESTIMATE, "before_request", why="the tokens a request reserves"),
        Reads(USAGE, "request_finished", why="the reservation is corrected to the tokens used"),
    )

    def __init__(self, config: RateLimitConfig) -> None:
        self.config = config
        self.local = LocalWindows(config.max_local_scopes)
        self.redis: SharedRedis | None = None
        self.app: web.Application | None = None
        self._redis_trouble = IntervalLog(log, "rate_limit_redis_unavailable")

    @hookimpl
    async def startup(self, app: web.Application) -> None:
        self.app = app
        url = self.config.resolved_redis_url()
        if url is not None:
            self.redis = await redis_service(app).connect(url)
            self._reserve = self.redis.client.register_script(_RESERVE)
            self._correct = self.redis.client.register_script(_CORRECT)
            self._release = self.redis.client.register_script(_RELEASE)

    @hookimpl
    async def check_ready(self) -> Readiness:
        if self.redis is None:
            return Readiness("ok", "no Redis: limits are per instance")
        fail_closed = self.config.on_redis_error == "reject"
        return self.redis.readiness(detail_when_down=f"on_redis_error = {self.config.on_redis_error}", fail_closed=fail_closed)

    @hookimpl
    async def before_request(self, ctx: RequestContext) -> None:
        scopes = self._scopes(ctx)
        if not scopes:
            return
        tokens = prompt_estimate(ctx).worst_case_tokens
        reservation = Reservation(uuid.uuid4().hex, scopes, tokens, "redis" if self.redis is not None else "local")
        decision = await self._decide(reservation)
        if decision is None:
            return  # Redis is down and on_redis_error = "allow"
        headers = _openai_headers(decision, tokens)
        if decision.too_large:
            raise RateLimited(
                f"This request may use {tokens} tokens (prompt estimate plus max_tokens), more than the "
                f"{_tightest_token_limit(decision)} tokens per minute allowed: reduce max_tokens or the prompt.",
                headers={"Retry-After": str(WINDOW_MS // 1000), **headers},
            )
        if not decision.admitted:
            retry_after = max(1, math.ceil(decision.retry_after_ms / 1000))
            raise RateLimited(
                f"Rate limit reached; retry in {retry_after} s.",
                headers={"Retry-After": str(retry_after), **headers},
            )
        ctx[_RESERVATION] = reservation
        ctx.response_headers.update(headers)

    @hookimpl
    def request_finished(self, ctx: RequestContext, outcome: Outcome) -> None:
        """Correct the reservation to the tokens actually used, or give it back when the request
        never reached the provider; once, whatever ended the request."""
        reservation = ctx.get(_RESERVATION)
        if reservation is None or reservation.settled:
            return
        reservation.settled = True
        if outcome.error is not None and not ctx.attempts:
            self._settle(reservation, None)
            return
        actual = billable_usage(ctx, outcome.response).total
        if actual != reservation.tokens and any(scope.tokens for scope in reservation.scopes):
            self._settle(reservation, actual)

    # ------------------------------------------------------------------------------------ helpers

    def _scopes(self, ctx: RequestContext) -> list[Scope]:
        scopes = []
        key = ctx.get(CLIENT_KEY)
        requests = key.requests_per_minute if key is not None and key.requests_per_minute else self.config.requests_per_minute
        tokens = key.tokens_per_minute if key is not None and key.tokens_per_minute else self.config.tokens_per_minute
        if requests or tokens:
            scopes.append(Scope(self._whose(ctx), requests, tokens))
        model_limits = self.config.models.get(ctx.model or "")
        if model_limits is not None and (model_limits.requests_per_minute or model_limits.tokens_per_minute):
            scopes.append(Scope(f"model:{ctx.model}", model_limits.requests_per_minute, model_limits.tokens_per_minute))
        return scopes

    def _whose(self, ctx: RequestContext) -> str:
        if self.config.key_by == "client_address":
            return f"address:{clip(ctx.client_address or 'unknown')}"
        return f"key:{clip(key_id(ctx))}"

    async def _decide(self, reservation: Reservation) -> Decision | None:
        if reservation.backend == "redis":
            try:
                return await self._decide_in_redis(reservation)
            except RedisUnavailable as exc:
                self._redis_trouble.warning(error=str(exc), fallback=self.config.on_redis_error)
                if self.config.on_redis_error == "allow":
                    return None
                if self.config.on_redis_error == "reject":
                    raise ServiceUnavailable(
                        "The rate limiter is unavailable; try again shortly.", code="rate_limiter_unavailable", headers={"Retry-After": "1"}
                    ) from None
                reservation.backend = "local"
        return self.local.reserve(reservation, monotonic_ms())

    async def _decide_in_redis(self, reservation: Reservation) -> Decision:
        keys: list[str] = []
        limits: list[int] = []
        for scope in reservation.scopes:
            base = f"{self.config.key_prefix}:{scope.name}"
            keys += [f"{base}:requests", f"{base}:tokens", f"{base}:token_amounts"]
            limits += [scope.requests or NO_LIMIT, scope.tokens or NO_LIMIT]
        assert self.redis is not None
        args = [WINDOW_MS, reservation.id, reservation.tokens, *limits]
        reply = await self.redis.run(lambda: self._reserve(keys=keys, args=args), timeout=self.config.redis_timeout_seconds)
        admitted, retry_after_ms, *figures = (int(value) for value in reply)
        usages = [
            ScopeUsage(scope, *figures[4 * i : 4 * i + 4])  # type: ignore[arg-type]
            for i, scope in enumerate(reservation.scopes)
        ]
        return Decision(admitted == 1, retry_after_ms, usages, too_large=admitted == 2)

    def _settle(self, reservation: Reservation, actual: int | None) -> None:
        """Correct to ``actual`` tokens, or give back entirely when ``actual`` is None."""
        if reservation.backend == "local":
            if actual is None:
                self.local.release(reservation)
            else:
                self.local.correct(reservation, actual)
        elif self.app is not None:
            background(self.app).spawn(self._settle_in_redis(reservation, actual), name="rate_limit.settle")

    async def _settle_in_redis(self, reservation: Reservation, actual: int | None) -> None:
        assert self.redis is not None
        if actual is None:
            keys = [f"{self.config.key_prefix}:{scope.name}:{part}" for scope in reservation.scopes for part in ("requests", "tokens", "token_amounts")]
            operation = lambda: self._release(keys=keys, args=[reservation.id])  # noqa: E731
        else:
            keys = [f"{self.config.key_prefix}:{scope.name}:token_amounts" for scope in reservation.scopes if scope.tokens]
            operation = lambda: self._correct(keys=keys, args=[reservation.id, actual])  # noqa: E731
        try:
            await self.redis.run(operation, timeout=self.config.redis_timeout_seconds)
        except RedisUnavailable as exc:  # the reservation leaves the window within a minute by itself
            self._redis_trouble.warning(error=str(exc), during="correction")


_RESERVATION: StateKey[Reservation] = StateKey("rate_limit.reservation", Reservation, "what the request holds in its scopes' windows")


@dataclass(slots=True)
class _Window:
    """One scope's sliding minute in this process: its admitted requests and token amounts."""

    requests: OrderedDict[str, float] = field(default_factory=OrderedDict)
    """Reservation id -> when it was admitted, oldest first (an OrderedDict, not a deque: a
    quarter of the memory for the one-request scope a flood of tokens makes, O(1) release)."""
    tokens: OrderedDict[str, list[float]] = field(default_factory=OrderedDict)
    token_sum: int = 0

    def trim(self, horizon: float) -> None:
        requests, tokens = self.requests, self.tokens
        while requests and next(iter(requests.values())) <= horizon:
            requests.popitem(last=False)
        while tokens:
            reservation_id, (at, amount) = next(iter(tokens.items()))
            if at > horizon:
                break
            del tokens[reservation_id]
            self.token_sum -= int(amount)


class LocalWindows:
    """The same sliding windows in this process: the limiter without Redis (or while it is down).

    Atomic because it never awaits. Per-instance: N instances admit up to N × the limit. A scope
    is kept only while it has entries in the window (one not used for a minute holds nothing and
    is dropped), and at most ``max_scopes`` at once (the least recently used first): a client
    inventing a bearer token per request costs memory for a minute, within a bound.
    """

    def __init__(self, max_scopes: int = 100_000) -> None:
        self._windows: RecentTable[str, _Window] = RecentTable(max_scopes, idle_seconds=WINDOW_MS, clock=monotonic_ms)

    def __len__(self) -> int:
        return len(self._windows)

    def reserve(self, reservation: Reservation, now: float) -> Decision:
        horizon = now - WINDOW_MS
        wait, too_large = 0.0, False
        windows = []
        for scope in reservation.scopes:
            window = self._windows.setdefault(scope.name, _Window, now)
            window.trim(horizon)
            windows.append(window)
            requests = window.requests
            if scope.requests is not None and len(requests) + 1 > scope.requests:
                freeing = next(islice(requests.values(), len(requests) - scope.requests, None))
                wait = max(wait, freeing + WINDOW_MS - now)
            used = window.token_sum
            if scope.tokens is not None and used + reservation.tokens > scope.tokens:
                if reservation.tokens > scope.tokens:
                    too_large = True
                else:
                    need, freed, until = used + reservation.tokens - scope.tokens, 0, float(WINDOW_MS)
                    for at, amount in window.tokens.values():
                        freed += int(amount)
                        if freed >= need:
                            until = at + WINDOW_MS - now
                            break
                    wait = max(wait, until)
        admitted = not too_large and wait <= 0
        usages = []
        for scope, window in zip(reservation.scopes, windows):
            requests, tokens = window.requests, window.tokens
            if admitted:
                if scope.requests is not None:
                    requests[reservation.id] = now
                if scope.tokens is not None:
                    tokens[reservation.id] = [now, reservation.tokens]
                    window.token_sum += reservation.tokens
            oldest_token = next(iter(tokens.values()))[0] if tokens else None
            usages.append(
                ScopeUsage(
                    scope,
                    len(requests),
                    int(next(iter(requests.values())) + WINDOW_MS - now) if requests else 0,
                    window.token_sum,
                    int(oldest_token + WINDOW_MS - now) if oldest_token is not None else 0,
                )
            )
        return Decision(admitted, max(1, int(wait)), usages, too_large=too_large)

    def release(self, reservation: Reservation) -> None:
        """Give a reservation back entirely."""
        for scope in reservation.scopes:
            window = self._windows.peek(scope.name)
            if window is None:
                continue
            window.requests.pop(reservation.id, None)
            entry = window.tokens.pop(reservation.id, None)
            if entry is not None:
                window.token_sum -= int(entry[1])

    def correct(self, reservation: Reservation, actual: int) -> None:
        for scope in reservation.scopes:
            window = self._windows.peek(scope.name)
            entry = window.tokens.get(reservation.id) if window is not None else None
            if window is not None and entry is not None:
                window.token_sum += actual - int(entry[1])
                entry[1] = actual


def monotonic_ms() -> float:
    return monotonic() * 1000


def _openai_headers(decision: Decision, tokens: int) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the tightest scope of each kind."""
    headers: dict[str, str] = {}
    with_requests = [u for u in decision.scopes if u.scope.requests is not None]
    if with_requests:
        tightest = min(with_requests, key=lambda u: u.scope.requests - u.requests_used)  # type: ignore[operator]
        headers["x-ratelimit-limit-requests"] = str(tightest.scope.requests)
        headers["x-ratelimit-remaining-requests"] = str(max(0, tightest.scope.requests - tightest.requests_used))  # type: ignore[operator]
        headers["x-ratelimit-reset-requests"] = duration(tightest.requests_reset_ms)
    with_tokens = [u for u in decision.scopes if u.scope.tokens is not None]
    if with_tokens:
        tightest = min(with_tokens, key=lambda u: u.scope.tokens - u.tokens_used)  # type: ignore[operator]
        headers["x-ratelimit-limit-tokens"] = str(tightest.scope.tokens)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, tightest.scope.tokens - tightest.tokens_used))  # type: ignore[operator]
        headers["x-ratelimit-reset-tokens"] = duration(tightest.tokens_reset_ms)
    return headers


def _tightest_token_limit(decision: Decision) -> int:
    return min(u.scope.tokens for u in decision.scopes if u.scope.tokens is not None)  # type: ignore[type-var]


def duration(ms: float) -> str:
    """A wait in OpenAI's header format: ``250ms``, ``1.5s``, ``1m0s``."""
    ms = max(0, int(ms))
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    seconds = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"
