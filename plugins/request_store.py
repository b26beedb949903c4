"""``request_store``: one row per request in a database, for the operator's console.

SQLite in a file by default (``hookgate serve`` keeps a queryable history with no setup), or
PostgreSQL shared by every instance (``url = "postgresql://…"``). The schema is migrated at
start-up; records are written off the request path through a bounded queue and dropped (and
counted) rather than ever slowing a request; rows older than ``retention_days`` are pruned in
the background. The admin API reads through :meth:`RequestStore.list_requests`,
:meth:`RequestStore.get_request` and :meth:`RequestStore.stats`.

This module is the plugin's config model and the store's facade. The hook glue (building a
:class:`RequestRecord` from the core's request-finished event and calling
:meth:`RequestStore.submit`) stays thin and separate, so it can follow the plugin contract.

The pieces, one job each: ``request_store_record`` (the bounded row), ``request_store_queries``
(query models, cursor, answers), ``request_store_sql`` (both dialects' SQL),
``request_store_migrations``, ``request_store_sqlite`` / ``request_store_postgres`` (the
backends), ``request_store_writer`` (bounded batching), ``request_store_retention``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator

from hookgate import PluginConfig, Readiness

from .request_store_backend import RequestStoreBackend, StoreUnavailable
from .request_store_postgres import SCHEMA_NAME, PostgresBackend
from .request_store_queries import RequestListQuery, RequestPage, Stats, StatsQuery
from .request_store_record import MAX_BODY_BYTES, MAX_ID_CHARS, RequestRecord, bounded_body
from .request_store_retention import RetentionPruner
from .request_store_sqlite import SqliteBackend
from .request_store_writer import RequestWriter, WriterStats

__all__ = ["RequestStoreConfig", "RequestStore", "open_backend", "StoreUnavailable"]


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
    when it cannot: the caller decides whether the gateway starts without it), then starts the
    writer and the pruner. ``submit()`` never waits; reads raise :class:`StoreUnavailable` when
    the database does not answer within ``query_timeout_s`` (the admin API's 503).
    """

    def __init__(self, config: RequestStoreConfig, *, backend: RequestStoreBackend | None = None) -> None:
        self.config = config
        self.backend = backend or open_backend(config)
        self.writer = RequestWriter(
            self.backend.insert,
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
            RetentionPruner(self.backend.prune, retention_days=config.retention_days, interval_s=config.prune_interval_s)
            if config.retention_days > 0 else None
        )
        self._body_keys = frozenset(config.store_bodies_for_keys)

    async def start(self) -> None:
        try:
            await self.backend.open()
        except BaseException:
            await self.backend.close()  # whatever the failed open left (threads, connections)
            raise
        self.writer.start()
        if self.pruner is not None:
            self.pruner.start()

    async def close(self) -> None:
        """Flush within ``shutdown_timeout_s``, stop pruning, release the database."""
        try:
            await self.writer.close()
            if self.pruner is not None:
                await self.pruner.close()
        finally:
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
        return await self.backend.list_requests(query)

    async def get_request(self, request_id: str) -> RequestRecord | None:
        if len(request_id) > MAX_ID_CHARS:
            return None  # never stored: ids are bounded on the way in
        return await self.backend.get_request(request_id)

    async def stats(self, query: StatsQuery) -> Stats:
        return await self.backend.stats(query)

    # --------------------------------------------------------------------------- operations ---

    def writer_stats(self) -> WriterStats:
        """Submitted, written and dropped counts, for metrics."""
        return self.writer.stats()

    def readiness(self) -> Readiness:
        """``degraded`` while writes fail (requests are still served; rows are being dropped)."""
        stats = self.writer.stats()
        if stats.last_error is not None:
            return Readiness("degraded", f"request_store writes failing ({stats.last_error}); {stats.dropped} rows dropped so far")
        return Readiness("ok")
