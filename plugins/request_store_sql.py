"""The SQL of ``request_store``, written once for both dialects.

Each query is built from whitelisted column names and placeholders only (no value is ever
spliced into the text), by a :class:`Dialect` that knows the few differences: placeholders
(``?`` / ``$n``), how time and cost are stored (SQLite: integer microseconds and integer units of
:data:`COST_QUANTUM`; PostgreSQL: ``timestamptz`` and ``NUMERIC``), and how percentiles are
computed. Both compute them in SQL: PostgreSQL with ``percentile_disc``, SQLite (which has no
percentile aggregate in its default build) with the ``cume_dist()`` window function, which
yields the same nearest-rank value.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal

import orjson

from .request_store_queries import (
    ALL_GROUP,
    NO_GROUP,
    OTHER_GROUP,
    PageCursor,
    RequestListQuery,
    StatsQuery,
    StatsRow,
    decode_cursor,
)
from .request_store_record import COST_QUANTUM, AttemptRecord, RequestRecord, Timings, TokenCounts

__all__ = ["Dialect", "SQLITE", "POSTGRESQL", "TABLE", "INSERT_COLUMNS_OF", "SqlParams", "micros", "from_micros"]

TABLE = "request_store_requests"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_COST_SCALE = Decimal(1) / COST_QUANTUM  # 1e10
_GROUP_COLUMNS = MappingProxyType({"model": "model", "key": "key_id", "provider": "provider"})
_PERCENTILES = (0.5, 0.95)


def micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch, exact (no float on the way)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(value))


class SqlParams:
    """Collects the values of one statement and hands out their placeholders."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return "?" if self.dialect.name == "sqlite" else f"${len(self.values)}"


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one database stores time, cost, JSON and booleans, and spells a few expressions."""

    name: Literal["sqlite", "postgresql"]
    cost_column: str
    ts_micros: str
    """An SQL expression of the row's time in µs since the epoch (bigint)."""

    # ------------------------------------------------------------------------------ values ---

    def ts_value(self, moment: datetime) -> Any:
        return micros(moment) if self.name == "sqlite" else moment

    def ts_from_db(self, value: Any) -> datetime:
        return from_micros(value) if self.name == "sqlite" else value.astimezone(timezone.utc)

    def cost_value(self, cost: Decimal | None) -> Any:
        if cost is None:
            return None
        return int(cost * _COST_SCALE) if self.name == "sqlite" else cost

    def cost_from_db(self, value: Any) -> Decimal | None:
        if value is None:
            return None
        if self.name == "sqlite":
            return (Decimal(int(value)) / _COST_SCALE).quantize(COST_QUANTUM)
        return Decimal(value).quantize(COST_QUANTUM)

    def int_cast(self, placeholder: str) -> str:
        """A placeholder typed as a 64-bit integer (asyncpg needs to know; SQLite does not)."""
        return placeholder if self.name == "sqlite" else f"{placeholder}::bigint"

    def text_cast(self, placeholder: str) -> str:
        """A placeholder typed as text, where PostgreSQL cannot infer it (a bare select item)."""
        return placeholder if self.name == "sqlite" else f"{placeholder}::text"

    # -------------------------------------------------------------------------- statements ---

    def insert_sql(self) -> str:
        """One row's INSERT, for SQLite's executemany (PostgreSQL uses COPY)."""
        params = SqlParams(self)
        marks = ", ".join(params(None) for _ in INSERT_COLUMNS_OF[self.name])
        return f"INSERT INTO {TABLE} ({', '.join(INSERT_COLUMNS_OF[self.name])}) VALUES ({marks})"

    def list_sql(self, query: RequestListQuery) -> tuple[str, list[Any]]:
        """A page of rows matching ``query``, newest first, one more than ``limit`` (to know
        whether another page follows), bodies left out."""
        params = SqlParams(self)
        where = self._filters(params, query)
        if query.status is not None:
            where.append(f"status = {params(query.status)}")
        if query.errors is not None:
            where.append("status >= 400" if query.errors else "status < 400")
        if query.cache is not None:
            where.append(f"cache_status = {params(query.cache)}")
        if query.min_cost is not None:
            where.append(f"{self.cost_column} >= {params(self.cost_value(query.min_cost.quantize(COST_QUANTUM)))}")
        if query.cursor is not None:
            cursor = decode_cursor(query.cursor)
            time_param = params(self.ts_value(from_micros(cursor.time_us)))
            where.append(f"(ts, seq) < ({time_param}, {self.int_cast(params(cursor.seq))})")
        columns = ", ".join(("seq", *SELECT_COLUMNS_OF[self.name][:-3], "NULL", "NULL", "bodies_truncated"))
        sql = f"SELECT {columns} FROM {TABLE}{_where(where)} ORDER BY ts DESC, seq DESC LIMIT {params(query.limit + 1)}"
        return sql, params.values

    def get_sql(self, request_id: str) -> tuple[str, list[Any]]:
        """The most recent row of a request id (a client may reuse its ``x-request-id``)."""
        params = SqlParams(self)
        columns = ", ".join(("seq", *SELECT_COLUMNS_OF[self.name]))
        sql = f"SELECT {columns} FROM {TABLE} WHERE request_id = {params(request_id)} ORDER BY ts DESC, seq DESC LIMIT 1"
        return sql, params.values

    def stats_sql(self, query: StatsQuery, since: datetime, until: datetime, *, bucketed: bool) -> tuple[str, list[Any]]:
        """Totals per (bucket, group) over ``[since, until)``; the whole range is one bucket
        when not ``bucketed``. Groups past ``query.top`` (by request count over the range) are
        summed as ``(other)``."""
        params = SqlParams(self)
        if bucketed:
            width = query.bucket_seconds * 1_000_000
            bucket = f"(({self.ts_micros}) / {self.int_cast(params(width))}) * {self.int_cast(params(width))}"
        else:
            bucket = self.int_cast(params(micros(since)))
        column = _GROUP_COLUMNS.get(query.group_by) if query.group_by else None
        group = f"COALESCE({column}, {params(NO_GROUP)})" if column else self.text_cast(params(ALL_GROUP))
        where = self._filters(params, query, since=since, until=until)
        if query.provider is not None:
            where.append(f"provider = {params(query.provider)}")
        base = (
            f"SELECT {bucket} AS bucket, {group} AS grp, status, cache_status, total_ms, prompt_tokens, completion_tokens, "
            f"cached_tokens, reasoning_tokens, {self.cost_column} AS cost FROM {TABLE}{_where(where)}"
        )
        top = f"SELECT grp FROM base GROUP BY grp ORDER BY COUNT(*) DESC, grp LIMIT {params(query.top)}"
        labelled = (
            f"SELECT b.bucket, CASE WHEN t.grp IS NULL THEN {params(OTHER_GROUP)} ELSE b.grp END AS grp, b.status, b.cache_status, "
            "b.total_ms, b.prompt_tokens, b.completion_tokens, b.cached_tokens, b.reasoning_tokens, b.cost "
            "FROM base b LEFT JOIN top_groups t ON t.grp = b.grp"
        )
        sums = (
            "COUNT(*), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(CASE WHEN cache_status = 'HIT' THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN cache_status IN ('HIT', 'MISS') THEN 1 ELSE 0 END)"
        )
        tokens = (
            "COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cached_tokens), 0), "
            "COALESCE(SUM(reasoning_tokens), 0), COALESCE(SUM(cost), 0)"
        )
        if self.name == "postgresql":
            percentiles = ", ".join(f"percentile_disc({p}) WITHIN GROUP (ORDER BY total_ms)" for p in _PERCENTILES)
            final = f"SELECT bucket, grp, {sums}, {percentiles}, {tokens} FROM labelled GROUP BY bucket, grp ORDER BY bucket, grp"
            ctes = f"base AS ({base}), top_groups AS ({top}), labelled AS ({labelled})"
        else:
            # cume_dist() is the fraction of the partition at or below a row's value (ties
            # included), so the smallest value whose cume_dist reaches p is percentile_disc(p).
            ranked = "SELECT *, cume_dist() OVER (PARTITION BY bucket, grp ORDER BY total_ms) AS cd FROM labelled"
            percentiles = ", ".join(f"MIN(CASE WHEN cd >= {p} THEN total_ms END)" for p in _PERCENTILES)
            final = f"SELECT bucket, grp, {sums}, {percentiles}, {tokens} FROM ranked GROUP BY bucket, grp ORDER BY bucket, grp"
            ctes = f"base AS ({base}), top_groups AS ({top}), labelled AS ({labelled}), ranked AS ({ranked})"
        return f"WITH {ctes} {final}", params.values

    def prune_sql(self, before: datetime, batch: int) -> tuple[str, list[Any]]:
        """Delete at most ``batch`` rows older than ``before`` (short transactions, so pruning a
        large backlog never holds the table for long)."""
        params = SqlParams(self)
        inner = f"SELECT seq FROM {TABLE} WHERE ts < {params(self.ts_value(before))} LIMIT {params(batch)}"
        return f"DELETE FROM {TABLE} WHERE seq IN ({inner})", params.values

    def _filters(self, params: SqlParams, query: Any, *, since: datetime | None = None, until: datetime | None = None) -> list[str]:
        where: list[str] = []
        since = since if since is not None else query.since
        until = until if until is not None else query.until
        if since is not None:
            where.append(f"ts >= {params(self.ts_value(since))}")
        if until is not None:
            where.append(f"ts < {params(self.ts_value(until))}")
        if query.key is not None:
            where.append(f"key_id = {params(query.key)}")
        if query.model is not None:
            where.append(f"model = {params(query.model)}")
        return where

    # ------------------------------------------------------------------------- row codecs ---

    def to_row(self, record: RequestRecord) -> tuple[Any, ...]:
        """A record as the values of :data:`INSERT_COLUMNS`, in this dialect's types."""
        t, k = record.timings, record.tokens
        attempts = orjson.dumps([[a.outcome, a.status, a.duration_ms] for a in record.attempts]).decode()
        return (
            self.ts_value(record.time), record.request_id, record.key_id, record.model, record.upstream_model,
            record.provider, record.surface, record.status, record.error_code, record.cache_status, record.cache_source,
            record.attempt_count, attempts, t.total_ms, t.upstream_ms, t.ttft_ms, orjson.dumps(dict(t.phases)).decode(),
            k.prompt, k.completion, k.cached, k.reasoning, self.cost_value(record.cost_usd),
            record.request_body, record.response_body, record.bodies_truncated if self.name == "postgresql" else int(record.bodies_truncated),
        )

    def from_row(self, row: Sequence[Any]) -> tuple[RequestRecord, PageCursor]:
        """A row selected as ``seq, *SELECT_COLUMNS`` back as a record, and its page position."""
        (seq, ts, request_id, key_id, model, upstream_model, provider, surface, status, error_code, cache_status, cache_source,
         attempt_count, attempts, total_ms, upstream_ms, ttft_ms, phases, prompt, completion, cached, reasoning, cost,
         request_body, response_body, truncated) = row
        moment = self.ts_from_db(ts)
        record = RequestRecord(
            time=moment, request_id=request_id, status=status, key_id=key_id, model=model, upstream_model=upstream_model,
            provider=provider, surface=surface, error_code=error_code, cache_status=cache_status, cache_source=cache_source,
            attempts=tuple(AttemptRecord(*a) for a in _json(attempts, [])), attempt_count=attempt_count,
            timings=Timings(total_ms=total_ms, upstream_ms=upstream_ms, ttft_ms=ttft_ms, phases=_json(phases, {})),
            tokens=TokenCounts(prompt=prompt, completion=completion, cached=cached, reasoning=reasoning),
            cost_usd=self.cost_from_db(cost), request_body=request_body, response_body=response_body, bodies_truncated=bool(truncated),
        )
        return record, PageCursor(micros(moment), int(seq))

    def stats_from_row(self, row: Sequence[Any]) -> StatsRow:
        (bucket, group, requests, errors, hits, lookups, p50, p95, prompt, completion, cached, reasoning, cost) = row
        return StatsRow(
            bucket=from_micros(bucket), group=str(group), requests=int(requests), errors=int(errors or 0),
            cache_hits=int(hits or 0), cache_lookups=int(lookups or 0),
            p50_ms=None if p50 is None else float(p50), p95_ms=None if p95 is None else float(p95),
            prompt_tokens=int(prompt), completion_tokens=int(completion), cached_tokens=int(cached), reasoning_tokens=int(reasoning),
            cost_usd=self.cost_from_db(cost) or Decimal(0).quantize(COST_QUANTUM),
        )


def _where(conditions: list[str]) -> str:
    return " WHERE " + " AND ".join(conditions) if conditions else ""


def _json(value: Any, default: Any) -> Any:
    if value is None:
        return default
    try:
        loaded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return default
    return loaded if isinstance(loaded, type(default)) else default


_COMMON_COLUMNS = (
    "ts", "request_id", "key_id", "model", "upstream_model", "provider", "surface", "status", "error_code", "cache_status",
    "cache_source", "attempt_count", "attempts", "total_ms", "upstream_ms", "ttft_ms", "phases", "prompt_tokens",
    "completion_tokens", "cached_tokens", "reasoning_tokens",
)
_BODY_COLUMNS = ("request_body", "response_body", "bodies_truncated")
INSERT_COLUMNS_OF: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "sqlite": (*_COMMON_COLUMNS, "cost_e10", *_BODY_COLUMNS),
    "postgresql": (*_COMMON_COLUMNS, "cost_usd", *_BODY_COLUMNS),
})
"""The columns a record fills, in :meth:`Dialect.to_row` order."""
SELECT_COLUMNS_OF: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "sqlite": INSERT_COLUMNS_OF["sqlite"],
    "postgresql": tuple(f"{c}::text" if c in ("attempts", "phases") else c for c in INSERT_COLUMNS_OF["postgresql"]),
})

SQLITE = Dialect(name="sqlite", cost_column="cost_e10", ts_micros="ts")
POSTGRESQL = Dialect(name="postgresql", cost_column="cost_usd", ts_micros="(floor(extract(epoch from ts) * 1000000))::bigint")
