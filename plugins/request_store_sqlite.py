"""``request_store`` in a SQLite file: the embedded default, queryable with no setup.

Why stdlib ``sqlite3`` on dedicated threads rather than aiosqlite: aiosqlite is the same design
(one thread per connection, calls queued to it), but it hops to its thread once per call, so a
batch is three hops (BEGIN, executemany, COMMIT) and rows would be converted on the event loop.
Here a whole job (convert the records, BEGIN IMMEDIATE, executemany, COMMIT, or a stats query
and its decoding) is one function run on the connection's own thread: one hop per batch, no CPU
on the loop, full control of the transaction, and no dependency.

Two connections, each owned by one thread: a writer (inserts, pruning, migrations) and a
read-only reader (admin queries). In WAL mode readers see a consistent snapshot while a write
commits, so a slow stats query never delays inserts and vice versa. ``synchronous=NORMAL`` is
durable across application crashes and loses at most the last commits on power loss: right for
a request log. Several ``hookgate serve`` workers may share the file; SQLite's own locks (and the
busy timeout) serialize their writes.

A job bounds itself (busy timeout for locks, a progress-handler deadline for statements), and
the caller always waits for its outcome, so a batch counted as failed was really not written.
Only a thread that does not come back at all is interrupted (``Connection.interrupt()``, the one
call SQLite allows from another thread) and abandoned; jobs never pile up behind it, since each
waits for the previous one.
"""
from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from .request_store_backend import StoreUnavailable
from .request_store_migrations import VERSION_TABLE, Migration, load_migrations, pending, sql_statements
from .request_store_queries import RequestListQuery, RequestPage, Stats, StatsQuery, encode_cursor
from .request_store_record import RequestRecord
from .request_store_sql import SQLITE

__all__ = ["SqliteBackend"]

T = TypeVar("T")


class _ConnectionThread:
    """One SQLite connection, created and used only on its own thread; jobs run one at a time."""

    def __init__(self, path: Path, name: str, *, busy_timeout_s: float, read_only: bool) -> None:
        self._path, self._busy_timeout_s, self._read_only = path, busy_timeout_s, read_only
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._lock = asyncio.Lock()
        self._conn: sqlite3.Connection | None = None
        self.journal_mode = ""

    async def open(self) -> None:
        await self._submit(self._connect, timeout=self._busy_timeout_s + 5)

    def _connect(self) -> None:
        if not self._read_only:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, timeout=self._busy_timeout_s, isolation_level=None)
        try:
            if self._read_only:
                conn.execute("PRAGMA query_only = ON")
            else:
                self.journal_mode = self._wal(conn)
                conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _wal(self, conn: sqlite3.Connection) -> str:
        """Ask for WAL, retrying a busy answer within the busy timeout: SQLite may answer busy
        at once, without its busy handler, where waiting could deadlock
        (``sqlite3_busy_handler``), and instances opening one new file together got a busy
        answer here once in a loaded CI run (not reproduced since)."""
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.01)  # on the connection's own thread, never the event loop

    async def run(self, job: Callable[[sqlite3.Connection], T], *, timeout: float) -> T:
        """Run ``job(connection)`` on the thread, within ``timeout`` seconds of its start.

        The job bounds itself: lock waits by the busy timeout (at most ``timeout``), statements
        by a progress handler that aborts them at the deadline (the transaction rolls back). So
        its outcome is always known: the caller waits for it, and a batch reported as failed
        was not written. Only if the thread does not come back at all (a hung disk) is the job
        interrupted and abandoned after a backstop of ``timeout + busy + 5`` seconds.
        """

        def call() -> T:
            conn = self._connection()
            deadline = time.monotonic() + timeout
            conn.set_progress_handler(lambda: time.monotonic() > deadline, 1000)
            try:
                return job(conn)
            finally:
                conn.set_progress_handler(None, 0)

        return await self._submit(call, timeout=timeout + self._busy_timeout_s + 5)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("the request store is closed")
        return self._conn

    async def _submit(self, call: Callable[[], T], *, timeout: float) -> T:
        async with self._lock:
            try:
                future = self._executor.submit(call)
            except RuntimeError:  # after close()
                raise StoreUnavailable("sqlite: the request store is closed") from None
            try:
                async with asyncio.timeout(timeout):
                    return await asyncio.wrap_future(future)
            except (TimeoutError, asyncio.CancelledError) as stop:
                if not future.cancel() and self._conn is not None:
                    self._conn.interrupt()  # the one call SQLite allows from another thread
                if isinstance(stop, TimeoutError):
                    raise StoreUnavailable(f"sqlite: no answer within {timeout:g} s") from None
                raise
            except sqlite3.Error as exc:
                if isinstance(exc, sqlite3.OperationalError) and str(exc) == "interrupted":
                    raise StoreUnavailable("sqlite: aborted at its deadline") from None
                raise StoreUnavailable(f"sqlite: {type(exc).__name__}: {str(exc)[:200]}") from None

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
            self._conn = None

        try:
            await self._submit(close, timeout=self._busy_timeout_s + 5)
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)


class SqliteBackend:
    """Request records in a SQLite file (WAL mode), behind :class:`RequestStoreBackend`."""

    dialect: Literal["sqlite"] = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        write_timeout_s: float = 5.0,
        query_timeout_s: float = 10.0,
        migration_timeout_s: float = 300.0,
        migrations: Sequence[Migration] | None = None,
    ) -> None:
        self.path = Path(path)
        self._write_timeout_s, self._query_timeout_s, self._migration_timeout_s = write_timeout_s, query_timeout_s, migration_timeout_s
        self._migrations = tuple(migrations) if migrations is not None else load_migrations("sqlite")
        busy = min(write_timeout_s, 5.0)
        self._writer = _ConnectionThread(self.path, "request-store-sqlite-w", busy_timeout_s=busy, read_only=False)
        self._reader = _ConnectionThread(self.path, "request-store-sqlite-r", busy_timeout_s=busy, read_only=True)
        self._insert_sql = SQLITE.insert_sql()

    @property
    def journal_mode(self) -> str:
        """What SQLite granted (``wal``, unless the file system cannot share memory maps)."""
        return self._writer.journal_mode

    async def open(self) -> None:
        await self._writer.open()
        await self._writer.run(self._migrate, timeout=self._migration_timeout_s)
        await self._reader.open()

    async def close(self) -> None:
        for thread in (self._reader, self._writer):
            try:
                await thread.close()
            except StoreUnavailable:
                pass

    # ----------------------------------------------------------------------------- writes ---

    async def insert(self, records: Sequence[RequestRecord]) -> None:
        if records:
            batch = list(records)
            await self._writer.run(lambda conn: self._insert(conn, batch), timeout=self._write_timeout_s)

    def _insert(self, conn: sqlite3.Connection, records: list[RequestRecord]) -> None:
        rows = [SQLITE.to_row(record) for record in records]
        with _transaction(conn, "BEGIN IMMEDIATE"):
            conn.executemany(self._insert_sql, rows)

    async def prune(self, before: datetime, *, batch: int = 5_000) -> int:
        sql, params = SQLITE.prune_sql(before, batch)
        total = 0
        while True:
            # One batch per job: inserts queued meanwhile get the writer between batches.
            deleted = await self._writer.run(lambda conn: conn.execute(sql, params).rowcount, timeout=self._write_timeout_s)
            total += deleted
            if deleted < batch:
                return total

    def _migrate(self, conn: sqlite3.Connection) -> list[int]:
        # BEGIN IMMEDIATE takes the database's write lock before reading the version table, so a
        # second process starting now waits here (busy timeout) and then finds nothing to do.
        with _transaction(conn, "BEGIN IMMEDIATE"):
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at INTEGER NOT NULL)"
            )
            applied = dict(conn.execute(f"SELECT version, checksum FROM {VERSION_TABLE}").fetchall())
            todo = pending(applied, self._migrations)
            for migration in todo:
                for statement in sql_statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    f"INSERT INTO {VERSION_TABLE} (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
                    (migration.version, migration.name, migration.checksum, int(time.time())),
                )
        return [m.version for m in todo]

    # ------------------------------------------------------------------------------ reads ---

    async def schema_version(self) -> int:
        return await self._reader.run(
            lambda conn: conn.execute(f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}").fetchone()[0],
            timeout=self._query_timeout_s,
        )

    async def list_requests(self, query: RequestListQuery) -> RequestPage:
        sql, params = SQLITE.list_sql(query)

        def page(conn: sqlite3.Connection) -> RequestPage:
            decoded = [SQLITE.from_row(row) for row in conn.execute(sql, params).fetchall()]
            items = decoded[: query.limit]
            more = len(decoded) > query.limit
            return RequestPage(tuple(r for r, _ in items), encode_cursor(items[-1][1]) if more else None)

        return await self._reader.run(page, timeout=self._query_timeout_s)

    async def get_request(self, request_id: str) -> RequestRecord | None:
        sql, params = SQLITE.get_sql(request_id)

        def get(conn: sqlite3.Connection) -> RequestRecord | None:
            row = conn.execute(sql, params).fetchone()
            return None if row is None else SQLITE.from_row(row)[0]

        return await self._reader.run(get, timeout=self._query_timeout_s)

    async def stats(self, query: StatsQuery) -> Stats:
        since, until = query.range()
        bucketed_sql, bucketed_params = SQLITE.stats_sql(query, since, until, bucketed=True)
        totals_sql, totals_params = SQLITE.stats_sql(query, since, until, bucketed=False)

        def stats(conn: sqlite3.Connection) -> Stats:
            with _transaction(conn, "BEGIN"):  # one snapshot for buckets and totals
                buckets = [SQLITE.stats_from_row(row) for row in conn.execute(bucketed_sql, bucketed_params)]
                totals = [SQLITE.stats_from_row(row) for row in conn.execute(totals_sql, totals_params)]
            return Stats(since, until, query.bucket_seconds, query.group_by, tuple(buckets), tuple(totals))

        return await self._reader.run(stats, timeout=self._query_timeout_s)

    async def run_read(self, job: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``job(connection)`` on the read-only connection (tests, diagnostics)."""
        return await self._reader.run(job, timeout=self._query_timeout_s)


class _transaction:
    """BEGIN … COMMIT, or ROLLBACK when the body raises (also when interrupted)."""

    def __init__(self, conn: sqlite3.Connection, begin: str) -> None:
        self._conn, self._begin = conn, begin

    def __enter__(self) -> None:
        self._conn.execute(self._begin)

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self._conn.execute("COMMIT")
        elif self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
