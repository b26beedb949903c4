"""``usage``: the usage ledger, per key, model and UTC day, and ``GET /v1/usage`` to read it.

Every answered request adds to its (day, key, model) row: requests, cache hits, prompt,
completion, cached and reasoning tokens, and cost; a failed request of a known key adds an error
and whatever it consumed (a stream cut off mid-way). Only routed requests count: a model name the
gateway does not serve never becomes a row (a client cannot grow the ledger with invented names).
One Lua script updates the row atomically in Redis, dated on Redis's clock, so every instance
writes to the same rows; it runs after the answer was sent, in the background. A request whose
model has no price counts in ``unpriced_requests`` instead of adding a silent $0. A cache HIT
counts as a request and a cache hit, with no tokens or cost (nothing was spent upstream).

``GET /v1/usage?key=&model=&start=YYYY-MM-DD&end=YYYY-MM-DD`` (default: the last 30 days): with
the api_keys plugin a key sees its own rows, and rows of every key (or of another) pass the
``authorize_admin`` hooks (an admin key); without it, only the ``authorize_admin`` hooks decide. The ledger
is separate from cost (which only prices) so that a gateway can price requests without storing
anything, and from budget (which keeps its own running totals, so that enforcing a limit never
waits on a query over days of rows).

Redis trouble never fails a request: the row update is skipped, counted and logged once per 30 s,
and ``/readyz`` says degraded. Without any Redis the ledger is kept in the process (per instance,
lost on restart), in at most ``max_local_rows`` rows (the least recently updated go first, logged
once per interval). Rows expire after ``retention_days``. Key ids and model names are clipped to
256 characters before they name a row (a pattern route lets a client choose any model name). The scripts build row keys from Redis's
date, so they need a single Redis (or Sentinel), not a Cluster.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta, timezone
from typing import Any

import orjson
import structlog
from aiohttp import web
from pydantic import Field

from hookgate import (
    InvalidRequest,
    Outcome,
    Readiness,
    RequestContext,
    ServiceUnavailable,
    hookimpl,
)
from hookgate.accounting import REDIS_ADD_CLAMPED_LUA, REDIS_CALENDAR_LUA, format_usd, from_pico, to_pico
from hookgate.bounds import RecentTable, clip
from hookgate.facts import CLIENT_KEY, COST_USD, USAGE, billable_usage, key_id
from hookgate.logs import IntervalLog
from hookgate.redis import RedisUnavailable, RedisURLConfig, SharedRedis, redis_service
from hookgate.rules import Reads
from hookgate.tasks import background
from hookgate.web import identify, require_admin

log = structlog.get_logger("hookgate.usage")

DEFAULT_RANGE_DAYS = 30


@dataclass(slots=True)
class UsageRow:
    """One (day, key, model) row of the ledger."""

    requests: int = 0
    cache_hits: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_pico: int = 0
    unpriced_requests: int = 0

    def add(self, other: UsageRow) -> None:
        for name in FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def public(self) -> dict[str, Any]:
        row = {name: getattr(self, name) for name in FIELDS if name != "cost_pico"}
        row["cost_usd"] = format_usd(from_pico(self.cost_pico))
        return row


FIELDS = tuple(f.name for f in fields(UsageRow))

# KEYS[1]: day-index prefix, KEYS[2]: row prefix. ARGV: key id, model, retention s, then the
# increments in FIELDS order. The row's key is built from Redis's date (single Redis only). Counters
# saturate (add_clamped) so that absurd upstream figures never fail the script half-way.
_RECORD = REDIS_CALENDAR_LUA + REDIS_ADD_CLAMPED_LUA + """
local member = cjson.encode({ARGV[1], ARGV[2]})
local index = KEYS[1] .. date
local row = KEYS[2] .. date .. ':' .. member
local names = {%s}
for i, name in ipairs(names) do
  if ARGV[3 + i] ~= '0' then add_clamped(row, name, ARGV[3 + i]) end
end
redis.call('SADD', index, member)
redis.call('EXPIRE', row, ARGV[3])
redis.call('EXPIRE', index, ARGV[3])
return date
""" % ", ".join(f"'{name}'" for name in FIELDS)


class UsageConfig(RedisURLConfig):
    """Settings of the usage ledger."""

    key_prefix: str = Field("hookgate:usage", description="prefix of the Redis keys")
    redis_timeout_seconds: float = Field(1.0, gt=0, description="limit of one Redis call")
    retention_days: int = Field(400, ge=1, description="rows are kept this many days")
    max_range_days: int = Field(366, ge=1, description="longest date range one GET /v1/usage may ask for")
    max_local_rows: int = Field(
        100_000, ge=1, description="without Redis: rows kept in the process; the least recently updated go first"
    )


class Usage:
    """Usage ledger per key, model and day (Redis, atomic); GET /v1/usage."""

    Config = UsageConfig
    roles = ("usage",)
    rules = (
        Reads(CLIENT_KEY, "request_finished", why="rows are per key"),
        Reads(USAGE, "request_finished", why="tokens"),
        Reads(COST_USD, "request_finished", why="cost"),
    )

    def __init__(self, config: UsageConfig) -> None:
        self.config = config
        self.local: RecentTable[tuple[str, str, str], UsageRow] = RecentTable(
            config.max_local_rows, idle_seconds=config.retention_days * 86400.0
        )
        self.lost_updates = 0
        self.redis: SharedRedis | None = None
        self.app: web.Application | None = None
        self._redis_trouble = IntervalLog(log, "usage_ledger_redis_unavailable")
        self._local_full = IntervalLog(log, "usage_local_ledger_full")

    @hookimpl
    async def startup(self, app: web.Application) -> None:
        self.app = app
        url = self.config.resolved_redis_url()
        if url is not None:
            self.redis = await redis_service(app).connect(url)
            self._record = self.redis.client.register_script(_RECORD)

    @hookimpl
    async def check_ready(self) -> Readiness:
        if self.redis is None:
            return Readiness("ok", "no Redis: the ledger is per instance")
        return self.redis.readiness(detail_when_down="usage is not being recorded")

    @hookimpl
    def register_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/usage", self.get_usage)

    @hookimpl
    def request_finished(self, ctx: RequestContext, outcome: Outcome) -> None:
        if ctx.route is None:
            return  # never routed (an unknown model, a rejected request): nothing to account for
        failed = outcome.error is not None
        if failed and CLIENT_KEY not in ctx:
            return  # unauthenticated failures would only let strangers grow the ledger
        row = self.row_of(ctx, outcome)
        key, model = clip(key_id(ctx)), clip(ctx.route.model)
        if self.redis is None:
            today = datetime.now(timezone.utc).date().isoformat()
            evicted = self.local.evicted
            self.local.setdefault((today, key, model), UsageRow).add(row)
            if self.local.evicted != evicted:
                self._local_full.warning(max_local_rows=self.config.max_local_rows, evicted=self.local.evicted)
        elif self.app is not None:
            background(self.app).spawn(self._record_in_redis(key, model, row), name="usage.record")

    # ----------------------------------------------------------------------------------- recording

    @staticmethod
    def row_of(ctx: RequestContext, outcome: Outcome) -> UsageRow:
        """What this request adds to its row."""
        failed = outcome.error is not None
        usage = billable_usage(ctx, outcome.response)
        hit = ctx.cache_hit and not failed
        consumed = usage.total > 0
        cost = outcome.cost_usd
        return UsageRow(
            requests=0 if failed else 1,
            cache_hits=1 if hit else 0,
            errors=1 if failed else 0,
            prompt_tokens=usage.prompt,
            completion_tokens=usage.completion,
            cached_tokens=usage.cached,
            reasoning_tokens=usage.reasoning,
            cost_pico=to_pico(cost) if cost is not None and not hit else 0,
            unpriced_requests=1 if cost is None and consumed else 0,
        )

    async def _record_in_redis(self, key: str, model: str, row: UsageRow) -> None:
        assert self.redis is not None
        increments = [getattr(row, name) for name in FIELDS]
        args = [key, model, self.config.retention_days * 86400, *increments]
        try:
            await self.redis.run(lambda: self._record(keys=self._prefixes(), args=args), timeout=self.config.redis_timeout_seconds)
        except RedisUnavailable as exc:
            self.lost_updates += 1
            self._redis_trouble.warning(error=str(exc), lost_updates=self.lost_updates)

    def _prefixes(self) -> list[str]:
        return [f"{self.config.key_prefix}:index:", f"{self.config.key_prefix}:row:"]

    # ------------------------------------------------------------------------------------- reading

    async def get_usage(self, request: web.Request) -> web.Response:
        """``GET /v1/usage``: rows by day, key and model, with totals; a key sees only its own."""
        wanted_key = request.query.get("key") or None
        caller = await identify(request)
        if caller is None or wanted_key != caller.id:
            if caller is not None and not caller.admin and wanted_key is None:
                wanted_key = caller.id  # a key's own usage needs no admin rights
            else:
                await require_admin(request)
        start, end = self._date_range(request.query.get("start"), request.query.get("end"))
        rows = await self.rows(start, end, key=wanted_key, model=request.query.get("model") or None)
        total = UsageRow()
        for _, _, _, row in rows:
            total.add(row)
        body = {
            "object": "list",
            "start": start.isoformat(),
            "end": end.isoformat(),
            "data": [{"date": day, "key": key, "model": model, **row.public()} for day, key, model, row in rows],
            "total": total.public(),
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def rows(self, start: date, end: date, *, key: str | None, model: str | None) -> list[tuple[str, str, str, UsageRow]]:
        """The ledger's rows from ``start`` to ``end`` (inclusive), filtered, sorted by day, key, model."""
        days = [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
        found: list[tuple[str, str, str, UsageRow]] = []
        if self.redis is None:
            self.local.expire()
            for (day, row_key, row_model), row in self.local.items():
                if day in days and key in (None, row_key) and model in (None, row_model):
                    found.append((day, row_key, row_model, row))
            return sorted(found, key=lambda item: item[:3])
        index_prefix, row_prefix = self._prefixes()
        redis = self.redis

        async def indexes() -> list[Any]:
            async with redis.client.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.smembers(index_prefix + day)
                return await pipe.execute()

        async def rows_of(wanted: list[tuple[str, str, str, bytes]]) -> list[Any]:
            async with redis.client.pipeline(transaction=False) as pipe:
                for *_, redis_key in wanted:
                    pipe.hgetall(redis_key)
                return await pipe.execute()

        timeout = self.config.redis_timeout_seconds
        try:
            wanted = []
            for day, members in zip(days, await redis.run(indexes, timeout=timeout)):
                for member in members:
                    row_key, row_model = orjson.loads(member)
                    if key in (None, row_key) and model in (None, row_model):
                        wanted.append((day, row_key, row_model, row_prefix.encode() + day.encode() + b":" + member))
            values = await redis.run(lambda: rows_of(wanted), timeout=timeout)
        except RedisUnavailable as exc:
            self._redis_trouble.warning(error=str(exc), during="query")
            raise ServiceUnavailable("The usage ledger (Redis) cannot be reached.", code="usage_unavailable") from None
        for (day, row_key, row_model, _), value in zip(wanted, values):
            row = UsageRow(**{name.decode(): int(count) for name, count in value.items() if name.decode() in FIELDS})
            found.append((day, row_key, row_model, row))
        return sorted(found, key=lambda item: item[:3])

    def _date_range(self, start_text: str | None, end_text: str | None) -> tuple[date, date]:
        today = datetime.now(timezone.utc).date()
        end = _parse_date(end_text, "end") if end_text else today
        try:
            start = _parse_date(start_text, "start") if start_text else end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
        except OverflowError:
            raise InvalidRequest(f"end must be at least {DEFAULT_RANGE_DAYS} days after year 1, or give start.", param="end") from None
        if start > end:
            raise InvalidRequest("start must not be after end.", param="start")
        if (end - start).days + 1 > self.config.max_range_days:
            raise InvalidRequest(f"The date range may span at most {self.config.max_range_days} days.", param="start")
        return start, end


def _parse_date(text: str, param: str) -> date:
    try:
        return date.fromisoformat(text[:32])
    except ValueError:
        raise InvalidRequest(f"{param} must be a date as YYYY-MM-DD.", param=param) from None

