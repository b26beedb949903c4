"""Fixtures and helpers of the request_store tests: records, both backends, a cuttable TCP path.

PostgreSQL: ``$DATABASE_URL`` when set, else ``postgresql://postgres@127.0.0.1:5432/test``.
Every test gets its own schema with a random name and drops only that one. Under ``CI=true`` an
unreachable server fails the test; elsewhere it skips it.
"""
from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from hookgate.plugins.request_store_postgres import PostgresBackend
from hookgate.plugins.request_store_record import AttemptRecord, RequestRecord, Timings, TokenCounts
from hookgate.plugins.request_store_sqlite import SqliteBackend
from servers import free_port

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def record(i: int = 0, **overrides: Any) -> RequestRecord:
    """A plausible record; ``i`` spreads time (one second apart, newest = highest i), ids and latency."""
    values: dict[str, Any] = {
        "time": T0 + timedelta(seconds=i),
        "request_id": f"req-{i}",
        "status": 200,
        "key_id": "team-a",
        "model": "gpt-4o-mini",
        "upstream_model": "gpt-4o-mini-2024-07-18",
        "provider": "openai",
        "surface": "openai.chat",
        "cache_status": "MISS",
        "attempts": (AttemptRecord("ok", 200, 10.0 + i),),
        "timings": Timings(total_ms=20.0 + i, upstream_ms=15.0 + i, ttft_ms=5.5, phases={"before_request": 0.25, "call_provider": 15.0 + i}),
        "tokens": TokenCounts(prompt=100, completion=20, cached=10, reasoning=3),
        "cost_usd": Decimal("0.0000270"),
    }
    values.update(overrides)
    return RequestRecord(**values)


# --------------------------------------------------------------------------- PostgreSQL ---


def _missing_server(reason: str) -> None:
    message = f"PostgreSQL not reachable ({reason}); set DATABASE_URL or run a server on 127.0.0.1:5432"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def database_url() -> str:
    """A reachable PostgreSQL URL (the test database, never dropped)."""
    url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL

    async def probe() -> None:
        conn = await asyncpg.connect(url, timeout=5)
        await conn.close()

    try:
        asyncio.run(probe())
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        _missing_server(type(exc).__name__)
    return url


@pytest.fixture
def pg_schema(database_url: str) -> Iterator[str]:
    """A schema name no one else uses; dropped (with what the test created in it) afterwards."""
    schema = f"hgtest_rs_{uuid.uuid4().hex[:12]}"
    yield schema

    async def drop() -> None:
        conn = await asyncpg.connect(database_url, timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def via_port(url: str, port: int) -> str:
    """``url`` with its host and port replaced by 127.0.0.1:``port`` (credentials kept)."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def server_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


# ------------------------------------------------------------------------------ backends ---


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Where a test's backends live: a temp SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return {"kind": "sqlite", "path": tmp_path / "requests.db"}
    return {"kind": "postgresql", "url": request.getfixturevalue("database_url"), "schema": request.getfixturevalue("pg_schema")}


@pytest.fixture
async def make_backend(store_target: dict[str, Any]) -> AsyncIterator[Callable[..., Any]]:
    """A factory of (unopened) backends on the test's database; all are closed afterwards."""
    made: list[Any] = []

    def make(**options: Any) -> Any:
        if store_target["kind"] == "sqlite":
            backend: Any = SqliteBackend(store_target["path"], **options)
        else:
            backend = PostgresBackend(store_target["url"], schema=store_target["schema"], **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


@pytest.fixture
async def backend(make_backend: Callable[..., Any]) -> Any:
    """An opened backend (SQLite in a temp file, or PostgreSQL in a fresh schema)."""
    opened = make_backend()
    await opened.open()
    return opened


# ---------------------------------------------------------------------------- TCP proxy ---


class TcpProxy:
    """A TCP relay on a local port that a test can cut (close every connection, refuse new
    ones) and restore: a database outage without touching the shared server."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        return self

    async def cut(self) -> None:
        """Drop every open connection and stop listening (new connections are refused)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


@pytest.fixture
async def pg_proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    proxy = await TcpProxy(server_address(database_url)).start()
    try:
        yield proxy
    finally:
        await proxy.cut()
