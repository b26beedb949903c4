"""``request_store`` in PostgreSQL: one database shared by every gateway instance.

Why asyncpg rather than psycopg 3: the writer's hot path is bulk insertion, and asyncpg's
``copy_records_to_table`` streams a batch as binary COPY (one round trip, no SQL text per row),
with a built-in pool, per-call timeouts that cancel the query server-side, and no libpq to
install. psycopg 3 would serve too (its async COPY is as good), but needs its C build or libpq
for comparable speed. One caveat of asyncpg: behind PgBouncer in transaction mode, set
``statement_cache_size=0`` (not needed for direct connections).

The schema is chosen with ``search_path`` (``schema``, default ``public``), so several gateways
or test runs can share a database without sharing tables. Migrations run in one transaction
under ``pg_advisory_xact_lock`` keyed by the schema: instances starting together queue on the
lock and each later one finds nothing left to apply.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Literal

import asyncpg

from .request_store_backend import StoreUnavailable
from .request_store_migrations import VERSION_TABLE, Migration, load_migrations, pending
from .request_store_queries import RequestListQuery, RequestPage, Stats, StatsQuery, encode_cursor
from .request_store_record import RequestRecord
from .request_store_sql import INSERT_COLUMNS_OF, POSTGRESQL, TABLE

__all__ = ["PostgresBackend", "SCHEMA_NAME"]

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
"""What a ``schema`` may be called (an unquoted PostgreSQL identifier)."""
_FAILURES = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def _unavailable(what: str, exc: BaseException) -> StoreUnavailable:
    # asyncpg's messages name hosts, users and databases, never passwords.
    detail = str(exc)[:200] if not isinstance(exc, TimeoutError) else "no answer in time"
    return StoreUnavailable(f"postgresql: {what}: {type(exc).__name__}: {detail}")


class PostgresBackend:
    """Request records in PostgreSQL, behind :class:`RequestStoreBackend`."""

    dialect: Literal["postgresql"] = "postgresql"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        pool_size: int = 4,
        connect_timeout_s: float = 5.0,
        write_timeout_s: float = 5.0,
        query_timeout_s: float = 10.0,
        migration_timeout_s: float = 300.0,
        migrations: Sequence[Migration] | None = None,
        application_name: str = "hookgate-request-store",
    ) -> None:
        if not SCHEMA_NAME.match(schema):
            raise ValueError("schema must be a lower-case PostgreSQL identifier")
        self._dsn, self.schema, self._pool_size = dsn, schema, pool_size
        self._connect_timeout_s, self._write_timeout_s = connect_timeout_s, write_timeout_s
        self._query_timeout_s, self._migration_timeout_s = query_timeout_s, migration_timeout_s
        self._migrations = tuple(migrations) if migrations is not None else load_migrations("postgresql")
        self._application_name = application_name[:63]
        self._pool: asyncpg.Pool | None = None
        self._columns = list(INSERT_COLUMNS_OF["postgresql"])

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._connect_timeout_s,
                command_timeout=self._query_timeout_s,
                server_settings={"search_path": self.schema, "application_name": self._application_name},
            )
        except ValueError:  # a malformed DSN: its text may hold a password, so it is not repeated
            raise StoreUnavailable("postgresql: the database URL is not a valid postgresql:// URL") from None
        except _FAILURES as exc:
            raise _unavailable("cannot connect", exc) from None
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout=self._write_timeout_s)
        except (TimeoutError, *_FAILURES):
            pool.terminate()

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable("postgresql: the request store is not open")
        return self._pool

    async def _migrate(self) -> list[int]:
        timeout = self._migration_timeout_s
        try:
            async with self._require_pool().acquire(timeout=self._connect_timeout_s) as conn:
                async with conn.transaction():
                    # hashtext() of the schema: instances sharing a schema share the lock, tests
                    # in their own schemas do not wait for each other.
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"hookgate.request_store:{self.schema}", timeout=timeout)
                    if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", self.schema, timeout=timeout):
                        await conn.execute(f'CREATE SCHEMA "{self.schema}"', timeout=timeout)
                    await conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                        "checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                        timeout=timeout,
                    )
                    applied = {r["version"]: r["checksum"] for r in await conn.fetch(f"SELECT version, checksum FROM {VERSION_TABLE}", timeout=timeout)}
                    todo = pending(applied, self._migrations)
                    for migration in todo:
                        await conn.execute(migration.sql, timeout=timeout)  # no arguments: a multi-statement script
                        await conn.execute(
                            f"INSERT INTO {VERSION_TABLE} (version, name, checksum) VALUES ($1, $2, $3)",
                            migration.version, migration.name, migration.checksum, timeout=timeout,
                        )
        except _FAILURES as exc:
            raise _unavailable("migrating the schema", exc) from None
        return [m.version for m in todo]

    # ----------------------------------------------------------------------------- writes ---

    async def insert(self, records: Sequence[RequestRecord]) -> None:
        if not records:
            return
        rows = [POSTGRESQL.to_row(record) for record in records]
        pool = self._require_pool()
        try:
            async with asyncio.timeout(self._write_timeout_s):
                async with pool.acquire() as conn:
                    await conn.copy_records_to_table(TABLE, records=rows, columns=self._columns, schema_name=self.schema)
        except _FAILURES as exc:
            raise _unavailable("inserting", exc) from None

    async def prune(self, before: datetime, *, batch: int = 5_000) -> int:
        sql, params = POSTGRESQL.prune_sql(before, batch)
        total = 0
        while True:
            try:
                async with self._require_pool().acquire(timeout=self._connect_timeout_s) as conn:
                    status = await conn.execute(sql, *params, timeout=self._write_timeout_s)
            except _FAILURES as exc:
                raise _unavailable("pruning", exc) from None
            deleted = int(status.rsplit(" ", 1)[-1])  # "DELETE n"
            total += deleted
            if deleted < batch:
                return total

    # ------------------------------------------------------------------------------ reads ---

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[asyncpg.Record]:
        try:
            async with self._require_pool().acquire(timeout=self._connect_timeout_s) as conn:
                return await conn.fetch(sql, *params, timeout=self._query_timeout_s)
        except _FAILURES as exc:
            raise _unavailable("querying", exc) from None

    async def schema_version(self) -> int:
        rows = await self._fetch(f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}", ())
        return int(rows[0][0])

    async def list_requests(self, query: RequestListQuery) -> RequestPage:
        sql, params = POSTGRESQL.list_sql(query)
        decoded = [POSTGRESQL.from_row(tuple(row)) for row in await self._fetch(sql, params)]
        items = decoded[: query.limit]
        more = len(decoded) > query.limit
        return RequestPage(tuple(r for r, _ in items), encode_cursor(items[-1][1]) if more else None)

    async def get_request(self, request_id: str) -> RequestRecord | None:
        sql, params = POSTGRESQL.get_sql(request_id)
        rows = await self._fetch(sql, params)
        return POSTGRESQL.from_row(tuple(rows[0]))[0] if rows else None

    async def stats(self, query: StatsQuery) -> Stats:
        since, until = query.range(datetime.now(timezone.utc))
        bucketed_sql, bucketed_params = POSTGRESQL.stats_sql(query, since, until, bucketed=True)
        totals_sql, totals_params = POSTGRESQL.stats_sql(query, since, until, bucketed=False)
        try:
            async with self._require_pool().acquire(timeout=self._connect_timeout_s) as conn:
                # One snapshot for buckets and totals, so they add up.
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    buckets = await conn.fetch(bucketed_sql, *bucketed_params, timeout=self._query_timeout_s)
                    totals = await conn.fetch(totals_sql, *totals_params, timeout=self._query_timeout_s)
        except _FAILURES as exc:
            raise _unavailable("querying", exc) from None
        return Stats(
            since, until, query.bucket_seconds, query.group_by,
            tuple(POSTGRESQL.stats_from_row(tuple(r)) for r in buckets),
            tuple(POSTGRESQL.stats_from_row(tuple(r)) for r in totals),
        )

    async def fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        """Run a read query in the store's schema (tests, diagnostics)."""
        return await self._fetch(sql, params)
