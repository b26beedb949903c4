"""The semantic cache's pgvector backend: one table in PostgreSQL, shared by every instance.

Chosen over Redis vector search because PostgreSQL with pgvector is what operators can get
almost everywhere (every major cloud's managed PostgreSQL ships it), hookgate already speaks
PostgreSQL (asyncpg, for the request store), and a vector type with an HNSW index and an ordinary
``WHERE`` on the partition is all the cache needs; Redis vector search needs Redis Stack or Redis 8,
which plain Redis 7 servers (Debian's included) do not have.

The table (``<schema>.entries_<dimensions>``) holds, per entry, what a search needs: namespace,
id, partition, the prompt's last user turn (for the guard), its vector, its expiry. Answers stay in
Redis, the source of truth: every candidate is confirmed there before it is served, so a row whose
entry expired or was deleted (or that Redis lost) can cost a lookup, never a wrong answer; such rows
are deleted when a lookup finds them gone, and expired rows by a periodic sweep.

A search is ``ORDER BY embedding <#> $q LIMIT k`` inside one partition. pgvector before 0.8
filters an HNSW scan *after* the graph walk, so a partition that is a small part of a huge table
is better served by the partition's b-tree index and an exact sort (PostgreSQL's planner picks it
for a selective filter); with pgvector 0.8 or later the backend turns on ``hnsw.iterative_scan``.
Every operation has a deadline; a PostgreSQL that is down or slow makes lookups miss
(:class:`~hookgate.plugins.semantic_cache_backend.BackendUnavailable`), and the pool is opened
again in the background until it answers.
"""
from __future__ import annotations

import asyncio
import struct
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, final

import structlog

from hookgate.logs import IntervalLog
from hookgate.tasks import stop_task

from .semantic_cache_backend import BackendUnavailable, Candidate, IndexedEntry

if TYPE_CHECKING:
    from .semantic_cache import PgvectorConfig

__all__ = ["PgvectorBackend"]

log = structlog.get_logger("hookgate.semantic_cache")

_RETRY_SECONDS = 5.0
_SWEEP_SECONDS = 60.0


@final
class PgvectorBackend:
    """Candidates from a shared pgvector table (module docstring)."""

    name = "pgvector"
    fed_by_stream = False

    def __init__(self, config: PgvectorConfig, *, dimensions: int, model_id: str) -> None:
        self.config = config
        self.dimensions = dimensions
        self.table = f"{config.schema_name}.entries_{dimensions}"
        self._pool: Any = None
        self._task: asyncio.Task[None] | None = None
        self._errors = IntervalLog(log, "semantic_cache_pgvector_error", 30.0)
        self._entries = 0
        self._iterative = False

    async def start(self) -> None:
        """Open the pool and create the table; a server that does not answer is retried in the
        background (lookups miss meanwhile)."""
        try:
            await self._open()
        except Exception as exc:
            self._errors.warning(error=_describe(exc), note="the semantic cache misses until PostgreSQL answers")
        self._task = asyncio.get_running_loop().create_task(self._maintain(), name="semantic-cache-pgvector")

    async def close(self) -> None:
        await stop_task(self._task)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _open(self) -> None:
        import asyncpg

        assert self.config.dsn is not None
        timeout = max(self.config.operation_timeout_seconds, 5.0)
        async with asyncio.timeout(timeout):
            connection = await asyncpg.connect(self.config.dsn.get_secret_value())
            try:
                await _create(connection, self.config.schema_name, self.table, self.dimensions)
                version = await connection.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            finally:
                await connection.close()
            self._iterative = tuple(int(p) for p in str(version).split(".")[:2]) >= (0, 8)
            self._pool = await asyncpg.create_pool(
                self.config.dsn.get_secret_value(), min_size=1, max_size=self.config.max_connections, init=self._init_connection
            )
        log.info("semantic_cache_pgvector_ready", table=self.table, pgvector=str(version))

    async def _init_connection(self, connection: Any) -> None:
        schema = await connection.fetchval(
            "SELECT n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typname = 'vector'"
        )
        await connection.set_type_codec("vector", schema=schema, encoder=_encode_vector, decoder=_decode_vector, format="binary")
        await connection.execute(f"SET hnsw.ef_search = {int(self.config.hnsw_ef_search)}")
        if self._iterative:
            await connection.execute("SET hnsw.iterative_scan = relaxed_order")

    async def _maintain(self) -> None:
        """Reopen a pool that never opened; sweep expired rows and refresh the entry count."""
        while True:
            await asyncio.sleep(_RETRY_SECONDS if self._pool is None else _SWEEP_SECONDS)
            try:
                if self._pool is None:
                    await self._open()
                await self._sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._errors.warning(error=_describe(exc))

    async def _sweep(self) -> None:
        async with asyncio.timeout(30.0):
            await self._pool.execute(f"DELETE FROM {self.table} WHERE expires_at <= now()")
            self._entries = int(await self._pool.fetchval(f"SELECT count(*) FROM {self.table}"))

    async def _run(self, method: str, query: str, *args: Any) -> Any:
        pool = self._pool
        if pool is None:
            raise BackendUnavailable("PostgreSQL is not connected")
        try:
            async with asyncio.timeout(self.config.operation_timeout_seconds):
                return await getattr(pool, method)(query, *args)
        except Exception as exc:  # timeouts, connection errors, and anything asyncpg may raise
            self._errors.warning(error=_describe(exc))
            raise BackendUnavailable(f"PostgreSQL did not answer ({type(exc).__name__})") from exc

    # -- the VectorBackend protocol

    async def add(self, entry: IndexedEntry) -> bool:
        await self._run(
            "execute",
            f"INSERT INTO {self.table} (namespace_id, entry_id, partition, prompt, embedding, expires_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            entry.namespace_id,
            entry.entry_id,
            entry.partition,
            entry.prompt,
            entry.vector,
            datetime.fromtimestamp(entry.expires_at, timezone.utc),
        )
        self._entries += 1
        return True

    async def remove(self, namespace_id: str, entry_id: str) -> None:
        await self._run("execute", f"DELETE FROM {self.table} WHERE namespace_id = $1 AND entry_id = $2", namespace_id, entry_id)

    async def search(self, namespace_id: str, partition: str, vector: Any, k: int, min_score: float) -> list[Candidate]:
        rows = await self._run(
            "fetch",
            f"SELECT entry_id, prompt, -(embedding <#> $3) AS score FROM {self.table} "
            "WHERE namespace_id = $1 AND partition = $2 AND expires_at > now() ORDER BY embedding <#> $3 LIMIT $4",
            namespace_id,
            partition,
            vector,
            k,
        )
        return [Candidate(row["entry_id"], row["prompt"], float(row["score"])) for row in rows if row["score"] >= min_score]

    def stats(self) -> dict[str, Any]:
        return {"entries": self._entries, "table": self.table, "connected": self._pool is not None}


async def _create(connection: Any, schema: str, table: str, dimensions: int) -> None:
    """Create the extension (when allowed), the schema, the table and its indexes, once."""
    async with connection.transaction():
        # One creator at a time: instances starting together must not race on CREATE.
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", table)
        await connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await connection.execute(
            f"CREATE TABLE IF NOT EXISTS {table} ("
            "namespace_id text NOT NULL, entry_id text NOT NULL, partition text NOT NULL, prompt text NOT NULL, "
            f"embedding vector({dimensions}) NOT NULL, expires_at timestamptz NOT NULL, "
            "PRIMARY KEY (namespace_id, entry_id))"
        )
        name = table.split(".")[1]
        await connection.execute(f"CREATE INDEX IF NOT EXISTS {name}_partition ON {table} (namespace_id, partition)")
        await connection.execute(f"CREATE INDEX IF NOT EXISTS {name}_embedding ON {table} USING hnsw (embedding vector_ip_ops)")


def _encode_vector(vector: Any) -> bytes:
    """pgvector's binary format: dimensions (int16), unused (int16), float32 values, big-endian."""
    import numpy as np

    values = np.asarray(vector, dtype=">f4")
    return struct.pack(">HH", len(values), 0) + values.tobytes()


def _decode_vector(data: bytes) -> Any:
    import numpy as np

    dimensions, _ = struct.unpack_from(">HH", data)
    return np.frombuffer(data, dtype=">f4", count=dimensions, offset=4).astype(np.float32)


def _describe(exc: BaseException) -> str:
    text = str(exc).split("\n")[0][:200] or "no detail"
    return f"{type(exc).__name__}: {text}"

