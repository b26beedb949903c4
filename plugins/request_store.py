"""``request_store``: one row per request in a database, for the operator's console.

SQLite in a file by default (``hookgate serve`` keeps a queryable history with no setup), or
PostgreSQL shared by every instance (``url = "postgresql://…"``). The schema is migrated at
start-up; records are written off the request path through a bounded queue and dropped (and
counted) rather than ever slowing a request; rows older than ``retention_days`` are pruned in
the background. The admin API reads through :meth:`RequestStore.list_requests`,
:meth:`RequestStore.get_request` and :meth:`RequestStore.stats`.

This module is the plugin's config model, the plugin (its hooks: a row from every
``request_finished`` event, start and stop, readiness, metrics, routes) and the store's facade.
The plugin also serves the operator's console over the store: the admin API
(``/-/api/requests``, ``/-/api/stats``, ``/-/api/pipeline``, ``/-/api/openapi.json``) and the web
dashboard at ``/-/dashboard`` (docs/console.md). Every one of those routes calls
:func:`hookgate.web.require_admin`; the keys API and the dashboard's login session belong to the
``api_keys`` plugin, which owns credentials.

If the database cannot be reached at start-up, the gateway starts anyway: rows are dropped and
counted (``/readyz`` says ``degraded``) while the store keeps trying to connect.

The pieces, one job each: ``request_store_record`` (the bounded row), ``request_store_capture``
(the row from the event), ``request_store_queries`` (query models, cursor, answers),
``request_store_sql`` (both dialects' SQL), ``request_store_migrations``,
``request_store_sqlite`` / ``request_store_postgres`` (the backends), ``request_store_writer``
(bounded batching), ``request_store_retention``, ``request_store_metrics`` (the Prometheus
collector), ``request_store_api`` (the admin API) and ``request_store_dashboard`` (the web pages).
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import structlog
from aiohttp import web
from pydantic import Field, SecretStr, field_validator

from hookgate import Outcome, PluginConfig, Readiness, RequestContext, hookimpl
from hookgate.facts import BODY_REDACTOR, CLIENT_KEY, COST_USD, USAGE
from hookgate.logs import IntervalLog
from hookgate.rules import Reads
from hookgate.tasks import background

from .request_store_api import ConsoleAPI
from .request_store_backend import RequestStoreBackend, StoreUnavailable
from .request_store_capture import bodies_of, record_of, with_bodies
from .request_store_dashboard import Dashboard
from .request_store_metrics import RequestStoreCollector
from .request_store_postgres import SCHEMA_NAME, PostgresBackend
from .request_store_queries import RequestListQuery, RequestPage, Stats, StatsQuery
from .request_store_record import MAX_BODY_BYTES, MAX_ID_CHARS, RequestRecord, bounded_body
from .request_store_retention import RetentionPruner
from .request_store_sqlite import SqliteBackend
from .request_store_writer import RequestWriter, WriterStats

__all__ = ["RequestStoreConfig", "RequestStorePlugin", "RequestStore", "open_backend", "StoreUnavailable"]

log = structlog.get_logger("hookgate.request_store")


class RequestStoreConfig(PluginConfig):
    """Settings of the request store."""

    url: SecretStr = Field(
        SecretStr("sqlite:///hookgate-requests.db"),
        description="where rows go: sqlite:///relative/path.db, sqlite:////absolute/path.db, or postgresql://user:password@host/db",
    )
    postgres_schema: str = Field("public", pattern=SCHEMA_NAME.pattern, description="PostgreSQL schema of the tables (created if missing)")
    queue_capacity: int = Field(10_000, ge=1, le=1_000_000, description="records held in memory while the database catches up; past it rows are dropped")
    batch_size: int = Field(500, ge=1, le=10_000, description="most rows per insert")
    flush_interval_ms: int = Field(250, ge=10, le=60_000, description="a partial batch waits at most this long")
    write_timeout_s: float = Field(5.0, gt=0, le=120, description="a slower insert is abandoned and its rows dropped")
    query_timeout_s: float = Field(10.0, gt=0, le=300, description="admin queries taking longer fail with 503")
    connect_timeout_s: float = Field(5.0, gt=0, le=60, description="PostgreSQL connection attempts")
    pool_size: int = Field(4, ge=1, le=64, description="PostgreSQL connections per gateway process")
    shutdown_timeout_s: float = Field(5.0, ge=0, le=120, description="time to flush queued rows on shutdown; the rest are dropped")
    drop_log_interval_s: float = Field(60.0, ge=1, le=86_400, description="at most one 'rows dropped' warning per interval")
    retention_days: float = Field(30.0, ge=0, le=36_500, description="rows older than this are deleted; 0 keeps them forever")
    prune_interval_s: float = Field(3600.0, ge=10, le=86_400, description="how often old rows are pruned")
    store_bodies: bool = Field(False, description="store request and response bodies of every request (may contain personal data)")
    store_bodies_for_keys: list[str] = Field(
        [], max_length=10_000, description="key ids whose request and response bodies are stored even when store_bodies is off"
    )
    max_body_bytes: int = Field(65_536, ge=0, le=MAX_BODY_BYTES, description="longer bodies are cut (and marked truncated)")
    bodies_need_redactor: bool = Field(
        False, description="keep a body only when a redactor (the guardrails plugin) processed the request: never an unredacted one"
    )
    connect_retry_s: float = Field(
        5.0, ge=0.1, le=3600, description="how often to try again to reach a database that was unreachable at start-up"
    )
    admin_api: bool = Field(
        True, description="serve /-/api/requests, /-/api/stats, /-/api/pipeline and /-/api/openapi.json (admin only)"
    )
    dashboard: bool = Field(True, description="serve the web console at /-/dashboard (admin only; needs admin_api)")
    dashboard_refresh_s: float = Field(5.0, ge=1, le=300, description="how often the dashboard's pages fetch new numbers")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: SecretStr) -> SecretStr:
        text = url.get_secret_value()
        if not (text.startswith("sqlite:///") and len(text) > len("sqlite:///")) and not text.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// (and name a file) or postgresql://")
        return url

    @field_validator("store_bodies_for_keys")
    @classmethod
    def _bounded_ids(cls, keys: list[str]) -> list[str]:
        if any(len(key) > MAX_ID_CHARS for key in keys):
            raise ValueError(f"key ids are at most {MAX_ID_CHARS} characters")
        return keys


class RequestStorePlugin:
    """One row per request in SQLite or PostgreSQL, the admin API over it, and the web console."""

    Config = RequestStoreConfig
    roles = ("observer",)
    rules = (
        Reads(CLIENT_KEY, "request_finished", why="the key id"),
        Reads(USAGE, "request_finished", why="tokens"),
        Reads(COST_USD, "request_finished", why="the cost"),
        Reads(BODY_REDACTOR, "request_finished", why="bodies are redacted before they are kept"),
    )

    def __init__(self, config: RequestStoreConfig) -> None:
        self.config = config
        self.store = RequestStore(config)
        self.app: web.Application | None = None
        self.bodies_skipped = 0
        """Requests whose bodies were configured to be kept but were not (no room to process them)."""
        self.collector = RequestStoreCollector(self.store.writer_stats, lambda: self.store.connected, lambda: self.bodies_skipped)
        self.api = ConsoleAPI(self.store)
        self.dashboard = Dashboard(refresh_s=config.dashboard_refresh_s)
        self._body_trouble = IntervalLog(log, "request_store_bodies_failed")

    # ------------------------------------------------------------------------------ start-up ---

    @hookimpl
    def register_routes(self, router: web.UrlDispatcher) -> None:
        if self.config.admin_api:
            self.api.add_routes(router)
            if self.config.dashboard:
                self.dashboard.add_routes(router)

    @hookimpl
    def register_metrics(self, register: Callable[[object], None]) -> None:
        register(self.collector)

    @hookimpl
    async def startup(self, app: web.Application) -> None:
        self.app = app
        problem = await self.store.start_or_keep_trying(self.config.connect_retry_s)
        if problem is not None:
            log.warning("request_store_unreachable_at_startup", error=str(problem), retry_s=self.config.connect_retry_s)
        if self.config.admin_api and self.config.dashboard:
            await self.dashboard.load()

    @hookimpl
    async def shutdown(self) -> None:
        await self.store.close()

    @hookimpl
    async def check_ready(self) -> Readiness:
        return self.store.readiness()

    # ------------------------------------------------------------------------------ requests ---

    @hookimpl
    def request_finished(self, ctx: RequestContext, outcome: Outcome) -> None:
        record = record_of(ctx, outcome)
        if not self.store.stores_bodies_for(record.key_id):
            self.store.submit(record)
            return
        redactor = ctx.get(BODY_REDACTOR)
        if redactor is None and self.config.bodies_need_redactor:
            self.store.submit(record)
            return
        request_body, response_body = bodies_of(ctx, outcome)
        work = self._submit_with_bodies(record, request_body, response_body, redactor)
        if self.app is None or not background(self.app).spawn(work, name="request_store.bodies"):
            self.bodies_skipped += 1
            self.store.submit(record)  # the row is kept; only its bodies are lost

    async def _submit_with_bodies(self, record: RequestRecord, request_body: Any, response_body: Any, redactor: Any) -> None:
        """Redact, serialize and bound the bodies on a worker thread, then queue the row."""
        try:
            record = await asyncio.to_thread(
                with_bodies, record, request_body, response_body, max_bytes=self.config.max_body_bytes, redactor=redactor
            )
        except Exception as exc:  # a redactor's bug, or a body changed under us: keep the row without bodies
            self.bodies_skipped += 1
            self._body_trouble.warning(error=type(exc).__name__)
        self.store.submit(record)


def open_backend(config: RequestStoreConfig) -> RequestStoreBackend:
    """The backend ``config.url`` names (not yet opened)."""
    url = config.url.get_secret_value()
    if url.startswith("sqlite:///"):
        return SqliteBackend(
            Path(url[len("sqlite:///"):]), write_timeout_s=config.write_timeout_s, query_timeout_s=config.query_timeout_s
        )
    return PostgresBackend(
        url,
        schema=config.postgres_schema,
        pool_size=config.pool_size,
        connect_timeout_s=config.connect_timeout_s,
        write_timeout_s=config.write_timeout_s,
        query_timeout_s=config.query_timeout_s,
    )


class RequestStore:
    """The request log store: a backend, its writer and its pruner, opened and closed together.

    ``start()`` opens the database and applies migrations (raising :class:`StoreUnavailable`
    when it cannot), then starts the writer and the pruner; ``start_or_keep_trying()`` starts
    them in any case and, while the database cannot be reached, keeps trying to connect in the
    background (rows meanwhile are dropped and counted). ``submit()`` never waits; reads raise
    :class:`StoreUnavailable` when the database is not connected or does not answer within
    ``query_timeout_s`` (the admin API's 503).
    """

    def __init__(self, config: RequestStoreConfig, *, backend: RequestStoreBackend | None = None) -> None:
        self.config = config
        self._given_backend = backend
        self.backend = backend or open_backend(config)
        self.connected = False
        """Whether the database was opened (and migrated); writes may still fail afterwards."""
        self.writer = RequestWriter(
            self._insert,
            capacity=config.queue_capacity,
            batch_size=config.batch_size,
            flush_interval_s=config.flush_interval_ms / 1000,
            # Backends bound their own writes by write_timeout_s and report the true outcome;
            # this backstop only catches one that does not come back (beyond SQLite's own).
            write_timeout_s=config.write_timeout_s * 2 + 10.0,
            drop_log_interval_s=config.drop_log_interval_s,
            shutdown_timeout_s=config.shutdown_timeout_s,
        )
        self.pruner = (
            RetentionPruner(self._prune, retention_days=config.retention_days, interval_s=config.prune_interval_s)
            if config.retention_days > 0 else None
        )
        self._body_keys = frozenset(config.store_bodies_for_keys)
        self._connecting: asyncio.Task[None] | None = None
        self._last_connect_error: str | None = None

    async def start(self) -> None:
        await self._open()
        self._start_tasks()

    async def start_or_keep_trying(self, retry_interval_s: float) -> StoreUnavailable | None:
        """Start; when the database cannot be reached, accept rows anyway (they wait in the
        bounded queue, and past its capacity are dropped and counted) and keep trying to connect
        every ``retry_interval_s``; writing starts once connected. Returns the first failure
        (None when connected). A schema that cannot be migrated (:class:`MigrationError`) is
        raised: that needs an operator."""
        try:
            await self._open()
        except StoreUnavailable as exc:
            self._last_connect_error = str(exc)
            self._connecting = asyncio.get_running_loop().create_task(
                self._keep_connecting(retry_interval_s), name="request_store.connect"
            )
            return exc
        self._start_tasks()
        return None

    def _start_tasks(self) -> None:
        self.writer.start()
        if self.pruner is not None:
            self.pruner.start()

    async def _open(self) -> None:
        try:
            await self.backend.open()
        except BaseException:
            await self.backend.close()  # whatever the failed open left (threads, connections)
            raise
        self.connected = True
        self._last_connect_error = None

    async def _keep_connecting(self, interval_s: float) -> None:
        trouble = IntervalLog(log, "request_store_still_unreachable", interval_seconds=max(60.0, interval_s))
        while not self.connected:
            await asyncio.sleep(interval_s)
            if self._given_backend is None:
                self.backend = open_backend(self.config)  # a closed backend is not reopened
            try:
                await self._open()
            except StoreUnavailable as exc:
                self._last_connect_error = str(exc)
                trouble.warning(error=str(exc))
            except Exception as exc:  # a migration that cannot apply: stop trying, say why
                self._last_connect_error = f"{type(exc).__name__}: {exc}"
                log.error("request_store_cannot_open", error=self._last_connect_error)
                return
        log.info("request_store_connected", dialect=self.backend.dialect)
        self._start_tasks()

    async def _insert(self, records: Sequence[RequestRecord]) -> None:
        if not self.connected:
            raise StoreUnavailable("the request store's database is not connected")
        await self.backend.insert(records)

    async def _prune(self, before: datetime) -> int:
        if not self.connected:
            raise StoreUnavailable("the request store's database is not connected")
        return await self.backend.prune(before)

    async def close(self) -> None:
        """Flush within ``shutdown_timeout_s``, stop pruning, release the database."""
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
            with suppress(asyncio.CancelledError):
                await connecting
        try:
            await self.writer.close()
            if self.pruner is not None:
                await self.pruner.close()
        finally:
            self.connected = False
            await self.backend.close()

    # ------------------------------------------------------------------------ request path ---

    def submit(self, record: RequestRecord) -> bool:
        """Queue a finished request's record; never waits (False: dropped and counted)."""
        return self.writer.submit(record)

    def stores_bodies_for(self, key_id: str | None) -> bool:
        """Whether this key's request and response bodies are to be stored."""
        return self.config.store_bodies or (key_id is not None and key_id in self._body_keys)

    def body(self, value: Any) -> tuple[str | None, bool]:
        """A body bounded to ``max_body_bytes``: ``(text, truncated)``, for the record."""
        return bounded_body(value, self.config.max_body_bytes)

    # ------------------------------------------------------------------------------ reads ---

    async def list_requests(self, query: RequestListQuery) -> RequestPage:
        self._require_connected()
        return await self.backend.list_requests(query)

    async def get_request(self, request_id: str) -> RequestRecord | None:
        if len(request_id) > MAX_ID_CHARS:
            return None  # never stored: ids are bounded on the way in
        self._require_connected()
        return await self.backend.get_request(request_id)

    async def stats(self, query: StatsQuery) -> Stats:
        self._require_connected()
        return await self.backend.stats(query)

    def _require_connected(self) -> None:
        if not self.connected:
            raise StoreUnavailable("the request store's database is not connected")

    # --------------------------------------------------------------------------- operations ---

    def writer_stats(self) -> WriterStats:
        """Submitted, written and dropped counts, for metrics."""
        return self.writer.stats()

    def readiness(self) -> Readiness:
        """``degraded`` while writes fail (requests are still served; rows are being dropped)."""
        stats = self.writer.stats()
        if not self.connected:
            return Readiness("degraded", f"request_store cannot reach its database ({self._last_connect_error}); rows are dropped meanwhile")
        if stats.last_error is not None:
            return Readiness("degraded", f"request_store writes failing ({stats.last_error}); {stats.dropped} rows dropped so far")
        return Readiness("ok")
