"""The console's admin API over ``request_store``: requests, one request, stats, the pipeline,
and the OpenAPI document of every admin route.

    GET /-/api/requests             filters (time range, key, model, status, errors, cache,
                                    min_cost), newest first, cursor pagination
    GET /-/api/requests/{id}        one request with its attempts, phases and (if kept) bodies
    GET /-/api/stats                time-bucketed totals, optionally grouped by model/key/provider
    GET /-/api/pipeline             plugins, order, rules, effective config (secrets masked)
    GET /-/api/openapi.json         every described admin route (this plugin's, api_keys'…)

Every handler calls :func:`hookgate.web.require_admin` first: an admin key (``Authorization:
Bearer``) or the dashboard's session cookie with its CSRF token. Query strings are validated
into the pydantic models of ``request_store_queries`` (a bad value is a 400 naming the
parameter; every size is bounded there). A database that does not answer is a 503
``request_store_unavailable``. Answers are JSON with ``Cache-Control: no-store``.

The plugin router does not pass aiohttp's path parameters on yet, so ``{id}`` is read from the
request's path (:func:`path_tail`).
"""
from __future__ import annotations

from collections.abc import Awaitable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from hookgate import InvalidRequest, NotFound, ServiceUnavailable
from hookgate.openapi import openapi_document, operation
from hookgate.web import describe_pipeline, require_admin

from .request_store_backend import StoreUnavailable
from .request_store_queries import RequestListQuery, Stats, StatsQuery, StatsRow
from .request_store_record import RequestRecord

if TYPE_CHECKING:
    from .request_store import RequestStore

__all__ = ["ConsoleAPI", "record_json", "stats_json", "path_tail", "parse_query", "json_response"]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

REQUESTS_PATH = "/-/api/requests"
NO_STORE = {"Cache-Control": "no-store"}

_NUMBER = {"type": ["number", "null"]}
_TEXT = {"type": ["string", "null"]}
RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "the request id (x-request-id)"},
        "time": {"type": "string", "format": "date-time", "description": "when the request arrived (UTC)"},
        "status": {"type": "integer"},
        "key_id": _TEXT, "model": _TEXT, "upstream_model": _TEXT, "provider": _TEXT, "surface": _TEXT, "error_code": _TEXT,
        "cache": {"type": "object", "properties": {"status": {"enum": ["HIT", "HIT-SEMANTIC", "MISS", "SHADOW", "BYPASS"]}, "source": _TEXT}},
        "attempt_count": {"type": "integer"},
        "attempts": {"type": "array", "items": {"type": "object", "properties": {
            "outcome": {"type": "string"}, "status": {"type": ["integer", "null"]}, "duration_ms": _NUMBER}}},
        "timings": {"type": "object", "properties": {
            "total_ms": {"type": "number"}, "upstream_ms": _NUMBER, "ttft_ms": _NUMBER,
            "phases": {"type": "object", "additionalProperties": {"type": "number"}}}},
        "tokens": {"type": "object", "properties": {k: {"type": ["integer", "null"]} for k in ("prompt", "completion", "cached", "reasoning")}},
        "cost_usd": {"type": ["string", "null"], "description": "exact decimal, USD"},
        "bodies": {"type": ["object", "null"], "description": "only in GET /-/api/requests/{id}, and only when bodies are kept",
                   "properties": {"request": _TEXT, "response": _TEXT, "truncated": {"type": "boolean"}}},
    },
}
PAGE_SCHEMA = {"type": "object", "properties": {
    "object": {"const": "list"}, "data": {"type": "array", "items": RECORD_SCHEMA},
    "next_cursor": {"type": ["string", "null"], "description": "pass as cursor for the next page; null on the last"}}}
_ROW_SCHEMA = {"type": "object", "properties": {
    "bucket": {"type": "string", "format": "date-time"}, "group": {"type": "string"}, "requests": {"type": "integer"},
    "errors": {"type": "integer"}, "error_rate": {"type": "number"}, "cache_hits": {"type": "integer"},
    "cache_lookups": {"type": "integer"}, "hit_rate": _NUMBER, "p50_ms": _NUMBER, "p95_ms": _NUMBER,
    "tokens": {"type": "object", "additionalProperties": {"type": "integer"}}, "cost_usd": {"type": "string"}}}
STATS_SCHEMA = {"type": "object", "properties": {
    "since": {"type": "string", "format": "date-time"}, "until": {"type": "string", "format": "date-time"},
    "bucket_seconds": {"type": "integer"}, "group_by": _TEXT,
    "buckets": {"type": "array", "items": _ROW_SCHEMA}, "totals": {"type": "array", "items": _ROW_SCHEMA}}}
PIPELINE_SCHEMA = {"type": "object", "description": "the same report as GET /-/plugins", "properties": {
    "pipeline": {"type": "array", "items": {"type": "string"}}, "hooks": {"type": "object"},
    "models": {"type": "array", "items": {"type": "string"}}, "plugins": {"type": "array", "items": {"type": "object"}}}}


class ConsoleAPI:
    """The admin API's handlers over one :class:`RequestStore`."""

    def __init__(self, store: RequestStore) -> None:
        self.store = store
        self.router: web.UrlDispatcher | None = None

    def add_routes(self, router: web.UrlDispatcher) -> None:
        self.router = router
        router.add_get(REQUESTS_PATH, self.list_requests)
        router.add_get(REQUESTS_PATH + "/{request_id}", self.get_request)
        router.add_get("/-/api/stats", self.stats)
        router.add_get("/-/api/pipeline", self.pipeline)
        router.add_get("/-/api/openapi.json", self.openapi)

    @operation(summary="List requests, newest first", query=RequestListQuery, response=PAGE_SCHEMA, tag="requests",
               description="Bodies are left out; cursor pagination (next_cursor), stable while rows are added.")
    async def list_requests(self, request: web.Request) -> web.Response:
        await require_admin(request)
        query = parse_query(RequestListQuery, request)
        page = await self._read(self.store.list_requests(query))
        return json_response({"object": "list", "data": [record_json(r) for r in page.items], "next_cursor": page.next_cursor})

    @operation(summary="One request: attempts, phase timings, cache, cost and (when kept) bodies", response=RECORD_SCHEMA,
               tag="requests", errors={404: "no request with this id (or it was pruned)"})
    async def get_request(self, request: web.Request) -> web.Response:
        await require_admin(request)
        request_id = path_tail(request, REQUESTS_PATH + "/")
        record = await self._read(self.store.get_request(request_id))
        if record is None:
            raise NotFound("No request with this id is stored (it may have been pruned, or dropped while the database was down).",
                           code="request_not_found")
        return json_response(record_json(record, bodies=True))

    @operation(summary="Requests, errors, hit rate, latency percentiles, tokens and cost per time bucket",
               query=StatsQuery, response=STATS_SCHEMA, tag="stats",
               description="Without since: the 24 hours before until (default now). group_by splits by model, key or provider.")
    async def stats(self, request: web.Request) -> web.Response:
        await require_admin(request)
        query = parse_query(StatsQuery, request)
        return json_response(stats_json(await self._read(self.store.stats(query))))

    @operation(summary="The running pipeline: plugins in order, hook order, rules, effective config (secrets masked)",
               response=PIPELINE_SCHEMA, tag="pipeline")
    async def pipeline(self, request: web.Request) -> web.Response:
        await require_admin(request)
        return json_response(await describe_pipeline(request))

    @operation(summary="This document", tag="meta")
    async def openapi(self, request: web.Request) -> web.Response:
        await require_admin(request)
        assert self.router is not None  # set with the routes
        return json_response(openapi_document(self.router, title="hookgate admin API", prefix="/-/api/"))

    async def _read(self, query: Awaitable[T]) -> T:
        try:
            return await query
        except StoreUnavailable:
            raise ServiceUnavailable(
                "The request store's database cannot be reached right now.", code="request_store_unavailable", headers={"Retry-After": "5"}
            ) from None


# ------------------------------------------------------------------------------- helpers ---


def parse_query(model: type[M], request: web.Request) -> M:
    """The query string validated into ``model``: a 400 naming the first bad parameter (a
    parameter given twice, or one the model does not know, is bad too)."""
    values: dict[str, str] = {}
    for name, value in request.query.items():
        if name in values:
            raise InvalidRequest(f"The query parameter {name[:64]!r} is given more than once.", param=name[:64], code="invalid_parameter")
        values[name] = value
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise InvalidRequest.from_validation(exc, what="query") from None


def path_tail(request: web.Request, prefix: str) -> str:
    """The rest of the path after ``prefix`` (one percent-decoded segment): a path parameter,
    until the core passes the plugin router's ``match_info`` on."""
    raw = request.rel_url.raw_path
    if not raw.startswith(prefix):
        raise NotFound("Unknown path.", code="not_found")
    tail = raw[len(prefix):]
    if not tail or "/" in tail:
        raise NotFound("Unknown path.", code="not_found")
    return unquote(tail, errors="replace")


def json_response(body: Any, *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body, default=_default), status=status, content_type="application/json", headers=NO_STORE)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def record_json(record: RequestRecord, *, bodies: bool = False) -> dict[str, Any]:
    """A stored request as the API shows it (bodies only with ``bodies`` and when kept)."""
    t, k = record.timings, record.tokens
    shown: dict[str, Any] = {
        "id": record.request_id,
        "time": record.time.isoformat(),
        "status": record.status,
        "key_id": record.key_id,
        "model": record.model,
        "upstream_model": record.upstream_model,
        "provider": record.provider,
        "surface": record.surface,
        "error_code": record.error_code,
        "cache": {"status": record.cache_status, "source": record.cache_source},
        "attempt_count": record.attempt_count,
        "attempts": [{"outcome": a.outcome, "status": a.status, "duration_ms": a.duration_ms} for a in record.attempts],
        "timings": {"total_ms": t.total_ms, "upstream_ms": t.upstream_ms, "ttft_ms": t.ttft_ms, "phases": dict(t.phases)},
        "tokens": {"prompt": k.prompt, "completion": k.completion, "cached": k.cached, "reasoning": k.reasoning},
        "cost_usd": _money(record.cost_usd),
    }
    if bodies:
        kept = record.request_body is not None or record.response_body is not None
        shown["bodies"] = (
            {"request": record.request_body, "response": record.response_body, "truncated": record.bodies_truncated} if kept else None
        )
    return shown


def stats_json(stats: Stats) -> dict[str, Any]:
    return {
        "since": stats.since.isoformat(),
        "until": stats.until.isoformat(),
        "bucket_seconds": stats.bucket_seconds,
        "group_by": stats.group_by,
        "buckets": [_row_json(row) for row in stats.buckets],
        "totals": [_row_json(row) for row in stats.totals],
    }


def _row_json(row: StatsRow) -> dict[str, Any]:
    return {
        "bucket": row.bucket.isoformat(),
        "group": row.group,
        "requests": row.requests,
        "errors": row.errors,
        "error_rate": row.error_rate,
        "cache_hits": row.cache_hits,
        "cache_lookups": row.cache_lookups,
        "hit_rate": row.hit_rate,
        "p50_ms": row.p50_ms,
        "p95_ms": row.p95_ms,
        "tokens": {"prompt": row.prompt_tokens, "completion": row.completion_tokens, "cached": row.cached_tokens, "reasoning": row.reasoning_tokens},
        "cost_usd": _money(row.cost_usd),
    }


def _money(amount: Decimal | None) -> str | None:
    """A cost as exact decimal text without trailing zeros (``0.000027``), None when unknown."""
    if amount is None:
        return None
    text = format(amount.normalize(), "f")
    return text
