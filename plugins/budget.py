"""``budget``: spend limits per key per UTC day and month, held across every instance.

Before the call the request's worst case (priced by the cost plugin: prompt estimate at the
input price plus the completion limit at the output price) is **reserved** against the key's
budget, atomically in Redis; after it the reservation is **corrected** to the actual cost, on
success and on every failure (a cache HIT and a failure before any output cost 0; a broken stream
costs what it produced). A request is admitted only if

    spent this period + reserved by requests in flight + its worst case ≤ budget

so however many requests arrive at once, on however many instances, the spend never passes the
budget by more than what a request costs beyond its own worst case (only possible when the
provider exceeds ``max_tokens`` or the prompt estimate, or a request without ``max_tokens`` goes past
token_counter's ``default_max_completion_tokens``). Over budget → 429 ``budget_exceeded`` with
``Retry-After`` (the next UTC day or month when spent money is the reason; 1 s when requests in
flight hold the rest).

Days and months are UTC on Redis's clock. A reservation is dropped after ``reservation_seconds``
even if its instance died before settling it, so none can leak. Budgets come from the key
(``daily_budget_usd``/``monthly_budget_usd`` in api_keys) or this plugin's defaults. Money is kept as
integer pico-dollars, added by Redis exactly; an absurd cost is clamped (never an int64 overflow
half-way through the settlement, however many absurd answers a key gets: the spend counters
stop at the cap). Redis down: ``on_redis_error = "reject"`` (default, 503: money
is at stake) or ``"allow"``; once the app's Redis guard has seen it fail, requests take that path
in milliseconds. Without any Redis the budget is kept per instance.

Its rules need the cost plugin's worst case (a pipeline with budget before cost, or without cost,
does not start). The settlement runs from ``request_finished``, in the background, after the
answer was sent: the reservation holds the money until then.
"""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Literal

import structlog
from aiohttp import web
from pydantic import Field

from hookgate import (
    Outcome,
    PermissionDenied,
    RateLimited,
    Readiness,
    RequestContext,
    ServiceUnavailable,
    StateKey,
    hookimpl,
)
from hookgate.accounting import MAX_PICO, REDIS_ADD_CLAMPED_LUA, REDIS_CALENDAR_LUA, to_pico
from hookgate.bounds import RecentTable, clip
from hookgate.facts import CLIENT_KEY, COST_USD, WORST_CASE_COST_USD, key_id
from hookgate.logs import IntervalLog
from hookgate.redis import RedisUnavailable, RedisURLConfig, SharedRedis, redis_service
from hookgate.rules import Needs, Reads
from hookgate.tasks import background

log = structlog.get_logger("hookgate.budget")

NO_LIMIT = -1
RETENTION_SECONDS = 40 * 86400  # a key's counters outlive the month they count

# Shared by both scripts: move the key's counters to the current day and month, and drop
# reservations whose instance never settled them. KEYS: state hash, reservation expiries (zset),
# reservation amounts (hash).
_ROLL = REDIS_CALENDAR_LUA + """
if tonumber(redis.call('HGET', KEYS[1], 'day') or -1) ~= day then
  redis.call('HSET', KEYS[1], 'day', day, 'day_spent', 0)
end
if tonumber(redis.call('HGET', KEYS[1], 'month') or -1) ~= month then
  redis.call('HSET', KEYS[1], 'month', month, 'month_spent', 0)
end
for _, stale in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms)) do
  local amount = redis.call('HGET', KEYS[3], stale)
  if amount then redis.call('HINCRBY', KEYS[1], 'reserved', '-' .. amount) end
  redis.call('HDEL', KEYS[3], stale)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
local function figure(name) return tonumber(redis.call('HGET', KEYS[1], name) or 0) end
local function keep(seconds) for i = 1, 3 do redis.call('EXPIRE', KEYS[i], seconds) end end
"""
# ARGV: id, worst case (pico-$), daily and monthly budget (pico-$, -1: none), reservation ms,
# retention s. Returns {admitted, retry-after s, day spent, month spent, reserved}.
_RESERVE = _ROLL + """
local amount, daily, monthly = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local day_spent, month_spent, reserved = figure('day_spent'), figure('month_spent'), figure('reserved')
local over_day = daily >= 0 and day_spent + reserved + amount > daily
local over_month = monthly >= 0 and month_spent + reserved + amount > monthly
if over_day or over_month then
  local wait = 1
  if daily >= 0 and day_spent + amount > daily then wait = math.max(wait, seconds_to_next_day) end
  if monthly >= 0 and month_spent + amount > monthly then wait = math.max(wait, seconds_to_next_month) end
  return {0, wait, day_spent, month_spent, reserved}
end
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[5]), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[2])
keep(tonumber(ARGV[6]))
return {1, 0, day_spent, month_spent, reserved + amount}
"""
# ARGV: id, actual cost (pico-$), retention s. The spend is added even when the reservation had
# already been dropped: money spent is spent.
_SETTLE = _ROLL + REDIS_ADD_CLAMPED_LUA + """
local amount = redis.call('HGET', KEYS[3], ARGV[1])
if amount then
  redis.call('HINCRBY', KEYS[1], 'reserved', '-' .. amount)
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if tonumber(ARGV[2]) > 0 then
  add_clamped(KEYS[1], 'day_spent', ARGV[2])
  add_clamped(KEYS[1], 'month_spent', ARGV[2])
end
keep(tonumber(ARGV[3]))
return {figure('day_spent'), figure('month_spent'), figure('reserved')}
"""


class BudgetConfig(RedisURLConfig):
    """Settings of the spend limits."""

    daily_budget_usd: Decimal | None = Field(None, ge=0, description="per key per UTC day, for keys without their own")
    monthly_budget_usd: Decimal | None = Field(None, ge=0, description="per key per UTC month, for keys without their own")
    key_prefix: str = Field("hookgate:budget", description="prefix of the Redis keys")
    redis_timeout_seconds: float = Field(2.0, gt=0, description="how long a request may wait for its budget decision; then on_redis_error applies")
    reservation_seconds: float = Field(900.0, gt=0, description="a reservation never settled (its instance died) is dropped after this")
    on_redis_error: Literal["reject", "allow"] = Field("reject", description="when Redis fails: 503, or admit without a budget check")
    max_local_accounts: int = Field(
        100_000, ge=1, description="without Redis: accounts kept in the process; the least recently used go first"
    )
    unpriced_models: Literal["reject", "allow"] = Field(
        "reject", description="a key with a budget asking for a model with no price: 403, or admit uncounted"
    )


@dataclass(slots=True)
class BudgetReservation:
    id: str
    key: str
    amount_pico: int
    backend: Literal["redis", "local"]
    settled: bool = False


class Budget:
    """Daily and monthly spend limits per key, reserve-then-correct across instances (Redis, Lua)."""

    Config = BudgetConfig
    roles = ("budget",)
    rules = (
        Needs(WORST_CASE_COST_USD, "before_request", why="the worst case is what budget reserves"),
        Reads(CLIENT_KEY, "before_request", why="a key's own budgets"),
        Reads(COST_USD, "request_finished", why="the reservation is settled to the actual cost"),
    )

    def __init__(self, config: BudgetConfig) -> None:
        self.config = config
        self.local = LocalBudgets(config.max_local_accounts)
        self.redis: SharedRedis | None = None
        self.app: web.Application | None = None
        self._redis_trouble = IntervalLog(log, "budget_redis_unavailable")

    @hookimpl
    async def startup(self, app: web.Application) -> None:
        self.app = app
        url = self.config.resolved_redis_url()
        if url is not None:
            self.redis = await redis_service(app).connect(url)
            self._reserve = self.redis.client.register_script(_RESERVE)
            self._settle_script = self.redis.client.register_script(_SETTLE)

    @hookimpl
    async def check_ready(self) -> Readiness:
        if self.redis is None:
            return Readiness("ok", "no Redis: budgets are per instance")
        fail_closed = self.config.on_redis_error == "reject"
        return self.redis.readiness(detail_when_down=f"on_redis_error = {self.config.on_redis_error}", fail_closed=fail_closed)

    @hookimpl
    async def before_request(self, ctx: RequestContext) -> None:
        daily, monthly = self._budgets(ctx)
        if daily is None and monthly is None:
            return
        worst_case = ctx.get(WORST_CASE_COST_USD)
        if worst_case is None:
            if self.config.unpriced_models == "allow":
                return
            raise PermissionDenied(
                f"This key has a spend limit and the model '{clip(ctx.model)}' has no price, so its spend cannot be limited.",
                param="model",
                code="model_not_priced",
            )
        reservation = BudgetReservation(uuid.uuid4().hex, key_id(ctx), to_pico(worst_case, round_up=True), "redis" if self.redis else "local")
        limits = (to_pico(daily) if daily is not None else NO_LIMIT, to_pico(monthly) if monthly is not None else NO_LIMIT)
        admitted, retry_after = await self._reserve_budget(reservation, limits)
        if not admitted:
            raise RateLimited(
                "This key's spend limit is reached"
                + (" for now (requests in flight hold the rest)." if retry_after <= 1 else "; it resets at the start of the next UTC period."),
                code="budget_exceeded",
                headers={"Retry-After": str(retry_after)},
            )
        ctx[_RESERVATION] = reservation

    @hookimpl
    def request_finished(self, ctx: RequestContext, outcome: Outcome) -> None:
        reservation = ctx.get(_RESERVATION)
        if reservation is None or reservation.settled:
            return
        reservation.settled = True
        actual = 0 if ctx.cache_hit or outcome.cost_usd is None else to_pico(outcome.cost_usd)
        if reservation.backend == "local":
            self.local.settle(reservation, actual)
        elif self.app is not None:
            background(self.app).spawn(self._settle_in_redis(reservation, actual), name="budget.settle")

    # ------------------------------------------------------------------------------------ helpers

    def _budgets(self, ctx: RequestContext) -> tuple[Decimal | None, Decimal | None]:
        key = ctx.get(CLIENT_KEY)
        daily = key.daily_budget_usd if key is not None and key.daily_budget_usd is not None else self.config.daily_budget_usd
        monthly = key.monthly_budget_usd if key is not None and key.monthly_budget_usd is not None else self.config.monthly_budget_usd
        return daily, monthly

    async def _reserve_budget(self, reservation: BudgetReservation, limits: tuple[int, int]) -> tuple[bool, int]:
        if reservation.backend == "redis" and self.redis is not None:
            args = [reservation.id, reservation.amount_pico, *limits, int(self.config.reservation_seconds * 1000), RETENTION_SECONDS]
            try:
                reply = await self.redis.run(
                    lambda: self._reserve(keys=self._keys(reservation.key), args=args), timeout=self.config.redis_timeout_seconds
                )
                return reply[0] == 1, int(reply[1])
            except RedisUnavailable as exc:
                self._redis_trouble.warning(error=str(exc), fallback=self.config.on_redis_error)
                if self.config.on_redis_error == "allow":
                    reservation.settled = True  # nothing reserved, nothing to settle
                    return True, 0
                raise ServiceUnavailable(
                    "Spend limits cannot be checked right now; try again shortly.", code="budget_unavailable", headers={"Retry-After": "1"}
                ) from None
        return self.local.reserve(reservation, limits, self.config.reservation_seconds)

    async def _settle_in_redis(self, reservation: BudgetReservation, actual: int) -> None:
        """Replace the reservation by the actual cost in Redis (a background task)."""
        assert self.redis is not None
        try:
            await self.redis.run(
                lambda: self._settle_script(keys=self._keys(reservation.key), args=[reservation.id, actual, RETENTION_SECONDS]),
                timeout=self.config.redis_timeout_seconds,
            )
        except RedisUnavailable as exc:  # the reservation is dropped after reservation_seconds; this spend is lost
            self._redis_trouble.warning(error=str(exc), during="settlement", key_id=reservation.key)

    def _keys(self, key: str) -> list[str]:
        base = f"{self.config.key_prefix}:{key}"
        return [base, f"{base}:reservations", f"{base}:reservation_amounts"]


_RESERVATION: StateKey[BudgetReservation] = StateKey("budget.reservation", BudgetReservation, "what the request holds of its key's budget")


@dataclass(slots=True)
class _LocalAccount:
    day: str = ""
    month: str = ""
    day_spent: int = 0
    month_spent: int = 0
    held: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    """Reservations in flight: id -> (amount, when it is dropped unsettled)."""


_IDLE_ACCOUNT_SECONDS = 32 * 86400
"""An account not used for longer than a month has nothing left to count: its month is over."""


class LocalBudgets:
    """The same accounts in this process, for a gateway without Redis (per-instance budgets).

    At most ``max_accounts`` are kept (the least recently used go first) and an account unused for
    longer than a month is dropped: without api_keys a budget applies per bearer token, and a
    client inventing tokens must not grow the table for ever.
    """

    def __init__(self, max_accounts: int = 100_000) -> None:
        self._accounts: RecentTable[str, _LocalAccount] = RecentTable(max_accounts, idle_seconds=_IDLE_ACCOUNT_SECONDS)

    def __len__(self) -> int:
        return len(self._accounts)

    def reserve(self, reservation: BudgetReservation, limits: tuple[int, int], hold_seconds: float) -> tuple[bool, int]:
        now = datetime.now(timezone.utc)
        account = self._roll(reservation.key, now)
        reserved = sum(amount for amount, _ in account.held.values())
        daily, monthly = limits
        over_day = daily >= 0 and account.day_spent + reserved + reservation.amount_pico > daily
        over_month = monthly >= 0 and account.month_spent + reserved + reservation.amount_pico > monthly
        if over_day or over_month:
            wait = 1
            if daily >= 0 and account.day_spent + reservation.amount_pico > daily:
                wait = max(wait, _seconds_until(_next_day(now), now))
            if monthly >= 0 and account.month_spent + reservation.amount_pico > monthly:
                wait = max(wait, _seconds_until(_next_month(now), now))
            return False, wait
        account.held[reservation.id] = (reservation.amount_pico, now + timedelta(seconds=hold_seconds))
        return True, 0

    def settle(self, reservation: BudgetReservation, actual: int) -> None:
        account = self._roll(reservation.key, datetime.now(timezone.utc))
        account.held.pop(reservation.id, None)
        account.day_spent = min(account.day_spent + actual, MAX_PICO)  # as the Redis script saturates
        account.month_spent = min(account.month_spent + actual, MAX_PICO)

    def _roll(self, key: str, now: datetime) -> _LocalAccount:
        account = self._accounts.setdefault(key, _LocalAccount)
        day, month = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")
        if account.day != day:
            account.day, account.day_spent = day, 0
        if account.month != month:
            account.month, account.month_spent = month, 0
        held = account.held
        for stale in [rid for rid, (_, expires) in held.items() if expires <= now]:
            del held[stale]
        return account


def _next_day(now: datetime) -> datetime:
    return datetime(now.year, now.month, now.day, tzinfo=timezone.utc) + timedelta(days=1)


def _next_month(now: datetime) -> datetime:
    return datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=timezone.utc)


def _seconds_until(then: datetime, now: datetime) -> int:
    return max(1, math.ceil((then - now).total_seconds()))
