"""sqlite_cache: a response cache in a SQLite file, so answers survive a restart and the
``--workers`` processes of one machine share them.

It is a cache like any other to the gateway: ``cache_lookup`` answers with a ``Completion`` or
None, ``after_response`` stores complete answers, keyed by ``hookgate.cache_key(ctx)`` (everything
that changes the answer, scoped per client unless ``shared``). What is particular is the storage:

* ``sqlite3`` blocks, so every statement runs in a worker thread, one at a time per process (one
  connection, a lock); nothing waits on the event loop. The write is handed to the app's background
  tasks, so a JSON answer is not held back by the disk.
* It fails open (DESIGN.md invariant 7): a database that cannot be opened, read or written means a
  MISS, logged at most once a minute, never a failed request.
* It is bounded: at most ``max_entries`` rows (the oldest go first), ``max_entry_bytes`` each, and
  an entry past its ``ttl_seconds`` is never served. Times are wall-clock, since they must mean
  the same after a restart.

    [gateway]
    pipeline = ["request_log", "memory_cache", "sqlite_cache", "openai"]

    [plugins.sqlite_cache]
    path = "/var/cache/hookgate/answers.sqlite3"
    ttl_seconds = 86400
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import Field

from hookgate import Completion, PluginConfig, RequestContext, cache_key, hookimpl, is_complete
from hookgate.cache_control import CacheDirectives
from hookgate.logs import IntervalLog
from hookgate.tasks import background

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["SqliteCache", "SqliteCacheConfig"]

log = structlog.get_logger("cookbook.sqlite_cache")


class SqliteCacheConfig(PluginConfig):
    """Settings of ``[plugins.sqlite_cache]``."""

    path: str = Field("hookgate-answers.sqlite3", min_length=1, description="the database file (created, with its directory)")
    ttl_seconds: float = Field(3600.0, gt=0, description="how long an answer stays valid")
    max_entries: int = Field(100_000, ge=1, le=100_000_000, description="answers kept; the oldest go first")
    max_entry_bytes: int = Field(1_048_576, ge=1, description="answers larger than this (as JSON) are not stored")
    shared: bool = Field(False, description="one namespace for every client instead of one per key")


class _Database:
    """One SQLite connection, used from worker threads one statement at a time."""

    SCHEMA = "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, body TEXT NOT NULL, stored_at REAL NOT NULL, expires_at REAL NOT NULL)"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(path, check_same_thread=False, timeout=2.0, isolation_level=None)
        try:
            self._connection.execute("PRAGMA journal_mode=WAL")  # readers do not wait for a writer
            self._connection.execute(self.SCHEMA)
            self._connection.execute("CREATE INDEX IF NOT EXISTS answers_by_age ON answers (stored_at)")
        except sqlite3.Error:
            self._connection.close()
            raise

    def get(self, key: str, now: float) -> dict[str, Any] | None:
        with self._lock:
            row = self._connection.execute("SELECT body FROM answers WHERE key = ? AND expires_at > ?", (key, now)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, answer: dict[str, Any], now: float, ttl: float, max_entries: int, max_bytes: int) -> None:
        body = json.dumps(answer, separators=(",", ":"))  # here, in the worker thread: a large answer costs the loop nothing
        if len(body) > max_bytes:
            return
        with self._lock:
            self._connection.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)", (key, body, now, now + ttl))
            (count,) = self._connection.execute("SELECT COUNT(*) FROM answers").fetchone()
            if count > max_entries:
                self._connection.execute(
                    "DELETE FROM answers WHERE key IN (SELECT key FROM answers ORDER BY stored_at LIMIT ?)", (count - max_entries,)
                )

    def close(self) -> None:
        with self._lock:
            self._connection.close()


class SqliteCache:
    """Exact-match response cache in a SQLite file: survives restarts, shared by local workers; fails open."""

    Config = SqliteCacheConfig
    roles = ("cache",)

    def __init__(self, config: SqliteCacheConfig) -> None:
        self.config = config
        self._db: _Database | None = None
        self._app: web.Application | None = None
        self._trouble = IntervalLog(log, "sqlite_cache_unavailable", interval_seconds=60.0)

    @hookimpl
    async def startup(self, app: web.Application) -> None:
        self._app = app
        try:
            self._db = await asyncio.to_thread(_Database, Path(self.config.path))
        except (sqlite3.Error, OSError) as exc:
            self._trouble.warning(path=self.config.path, error=f"{type(exc).__name__}: {exc}", effect="every request is a MISS")

    @hookimpl
    async def shutdown(self, app: web.Application) -> None:
        db, self._db = self._db, None
        if db is not None:
            await asyncio.to_thread(db.close)

    @hookimpl
    async def cache_lookup(self, ctx: RequestContext) -> Completion | None:
        if CacheDirectives.of(ctx.headers).no_cache:
            ctx.cache_status = "BYPASS"
            return None
        db = self._db
        if db is None:
            return None
        try:
            body = await asyncio.to_thread(db.get, cache_key(ctx, shared=self.config.shared), time.time())
        except sqlite3.Error as exc:
            self._trouble.warning(path=self.config.path, error=f"{type(exc).__name__}: {exc}", effect="a MISS")
            return None
        return Completion(body) if body is not None else None

    @hookimpl
    async def after_response(self, ctx: RequestContext, response: Completion) -> None:
        db, app = self._db, self._app
        if db is None or app is None or ctx.cache_status == "HIT" or not is_complete(response):
            return
        if CacheDirectives.of(ctx.headers).no_store:
            return
        key = cache_key(ctx, shared=self.config.shared)
        background(app).spawn(self._store(db, key, response.body), name="sqlite_cache.store")

    async def _store(self, db: _Database, key: str, answer: dict[str, Any]) -> None:
        config = self.config
        try:
            await asyncio.to_thread(db.put, key, answer, time.time(), config.ttl_seconds, config.max_entries, config.max_entry_bytes)
        except sqlite3.Error as exc:
            self._trouble.warning(path=config.path, error=f"{type(exc).__name__}: {exc}", effect="an answer not stored")


