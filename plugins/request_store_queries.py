"""What the admin API can ask ``request_store``, and the shapes of the answers.

The query models are pydantic because they are the edge: the admin API validates its query
string straight into them, so a bad value is a 400 naming the parameter, and every size the
client controls (page length, number of buckets, number of groups, cursor length) is bounded
here. The answers are plain dataclasses.

Pagination is by keyset, never OFFSET: rows are ordered newest first by ``(time, seq)``, where
``seq`` is the row's insertion number, unique per database. The cursor is that pair for the last
row of a page, encoded opaquely; the next page is ``(time, seq) < cursor``, an index range scan
however deep the client pages, and rows inserted meanwhile never shift or repeat a page.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hookgate import InvalidRequest

from .request_store_record import MAX_ID_CHARS, MAX_NAME_CHARS, RequestRecord

__all__ = [
    "RequestListQuery",
    "StatsQuery",
    "RequestPage",
    "StatsRow",
    "Stats",
    "PageCursor",
    "encode_cursor",
    "decode_cursor",
    "GroupBy",
    "OTHER_GROUP",
    "NO_GROUP",
    "ALL_GROUP",
    "MAX_PAGE",
    "MAX_BUCKETS",
    "MAX_GROUPS",
]

MAX_PAGE = 500
"""Most rows one list call returns."""
MAX_BUCKETS = 1_500
"""Most time buckets one stats call may ask for (a day in minutes fits)."""
MAX_GROUPS = 100
"""Most groups (models, keys, providers) one stats call returns; the rest are summed in ``(other)``."""
OTHER_GROUP = "(other)"
"""The group standing for every group past ``top``."""
NO_GROUP = "(none)"
"""The group of rows without a value (an anonymous request has no key)."""
ALL_GROUP = "(all)"
"""The single group when stats are not grouped."""

GroupBy = Literal["model", "key", "provider"]
_CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CURSOR_BODY = re.compile(r"^1\.(\d{1,20})\.(\d{1,20})$")


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    since: datetime | None = Field(None, description="rows at or after this time (ISO 8601; UTC if no offset)")
    until: datetime | None = Field(None, description="rows before this time")
    key: str | None = Field(None, max_length=MAX_ID_CHARS, description="only this key id")
    model: str | None = Field(None, max_length=MAX_NAME_CHARS, description="only this model (as the client named it)")

    @field_validator("since", "until")
    @classmethod
    def _as_utc(cls, moment: datetime | None) -> datetime | None:
        return _utc(moment)

    @model_validator(mode="after")
    def _ordered(self) -> _Query:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be before until")
        return self


class RequestListQuery(_Query):
    """Filters and page of ``GET /-/api/requests``, newest first."""

    status: int | None = Field(None, ge=100, le=599, description="only this HTTP status")
    errors: bool | None = Field(None, description="true: only failed requests (status >= 400); false: only successes")
    cache: Literal["HIT", "HIT-SEMANTIC", "MISS", "SHADOW", "BYPASS"] | None = Field(None, description="only this cache result")
    min_cost: Decimal | None = Field(None, ge=0, le=Decimal("1e9"), description="only requests costing at least this many USD")
    limit: int = Field(50, ge=1, le=MAX_PAGE, description="rows per page")
    cursor: str | None = Field(None, max_length=64, description="next_cursor of the previous page")

    @field_validator("cursor")
    @classmethod
    def _valid_cursor(cls, cursor: str | None) -> str | None:
        if cursor is not None:
            try:
                decode_cursor(cursor)
            except InvalidRequest as problem:
                raise ValueError(problem.message) from None
        return cursor


class StatsQuery(_Query):
    """``GET /-/api/stats``: time-bucketed totals, grouped by model, key or provider.

    Without ``since`` the range is the last 24 hours before ``until`` (default: now). Buckets are
    aligned to multiples of ``bucket_seconds`` since the Unix epoch; buckets without requests
    are absent from the answer.
    """

    bucket_seconds: int = Field(3600, ge=1, le=31 * 86400, description="width of a time bucket")
    group_by: GroupBy | None = Field(None, description="split every bucket by model, key or provider")
    top: int = Field(10, ge=1, le=MAX_GROUPS, description="groups named (by request count); the rest are summed as '(other)'")
    provider: str | None = Field(None, max_length=MAX_NAME_CHARS, description="only this provider")

    @model_validator(mode="after")
    def _bounded_buckets(self) -> StatsQuery:
        since, until = self.range()
        if (until - since).total_seconds() / self.bucket_seconds > MAX_BUCKETS:
            raise ValueError(f"the range spans more than {MAX_BUCKETS} buckets: widen bucket_seconds or narrow the range")
        return self

    def range(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        """The ``[since, until)`` the stats cover."""
        until = self.until or _utc(now) or datetime.now(timezone.utc)
        return (self.since or until - timedelta(days=1)), until


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Where a page ended: the last row's time (µs since the epoch, UTC) and insertion number."""

    time_us: int
    seq: int


def encode_cursor(cursor: PageCursor) -> str:
    """The opaque text the client sends back to get the next page."""
    return base64.urlsafe_b64encode(f"1.{cursor.time_us}.{cursor.seq}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> PageCursor:
    """The position a cursor names; a cursor that this store did not make is a 400."""
    problem = InvalidRequest("cursor is not a next_cursor this API returned", param="cursor", code="invalid_cursor")
    if not _CURSOR.match(text):
        raise problem
    try:
        body = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise problem from None
    match = _CURSOR_BODY.match(body)
    if match is None:
        raise problem
    time_us, seq = int(match[1]), int(match[2])
    if time_us >= 2**63 or seq >= 2**63:
        raise problem
    return PageCursor(time_us, seq)


@dataclass(frozen=True, slots=True)
class RequestPage:
    """One page of requests, newest first. Bodies are left out of lists (get one request for
    them). ``next_cursor`` is None on the last page."""

    items: tuple[RequestRecord, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class StatsRow:
    """Totals of one time bucket (or the whole range) and one group.

    ``p50_ms``/``p95_ms`` are nearest-rank percentiles of ``total_ms`` (PostgreSQL's
    ``percentile_disc``: the smallest latency at or above that fraction of requests), computed in
    SQL by both backends. ``cache_lookups`` counts HIT and MISS (BYPASS did not look).
    """

    bucket: datetime
    group: str
    requests: int
    errors: int
    cache_hits: int
    cache_lookups: int
    p50_ms: float | None
    p95_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal

    @property
    def hit_rate(self) -> float | None:
        """Share of cache lookups that hit; None when the cache was never asked."""
        return self.cache_hits / self.cache_lookups if self.cache_lookups else None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class Stats:
    """The answer to a :class:`StatsQuery`: ``buckets`` ordered by time then group, and
    ``totals``, one row per group over the whole range (its ``bucket`` is the range start)."""

    since: datetime
    until: datetime
    bucket_seconds: int
    group_by: GroupBy | None
    buckets: tuple[StatsRow, ...]
    totals: tuple[StatsRow, ...]
