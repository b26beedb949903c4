"""The pgvector backend on a real PostgreSQL with pgvector: candidates from one shared table, and
two gateway processes sharing it (and Redis, the source of truth)."""
from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np
import pytest

from conftest import pipeline_config
from hookgate.plugins.semantic_cache import PgvectorConfig, SemanticCacheConfig
from hookgate.plugins.semantic_cache_backend import BackendUnavailable, IndexedEntry
from hookgate.plugins.semantic_cache_pgvector import PgvectorBackend
from test_semantic_cache import SHADOW, admin, ask, new_key, observations, wait_for

DIMENSIONS = 8


def vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIMENSIONS).astype(np.float32)
    return v / np.linalg.norm(v)


def entry(seed: int, *, partition: str = "p", namespace: str = "ns", ttl: float = 600) -> IndexedEntry:
    return IndexedEntry(namespace, f"{seed:016x}", partition, f"prompt {seed}", vector(seed), time.time() + ttl)


@pytest.fixture
def schema() -> str:
    return f"hgtest_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def backend(pgvector_url, schema):
    made = PgvectorBackend(PgvectorConfig(dsn=pgvector_url, schema_name=schema, operation_timeout_seconds=5), dimensions=DIMENSIONS, model_id="m")
    await made.start()
    yield made
    await made.close()
    await drop(pgvector_url, schema)


async def drop(url: str, schema: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await connection.close()


async def test_the_nearest_live_entries_of_the_partition_are_found_with_exact_scores(backend):
    for seed in range(20):
        await backend.add(entry(seed))
    await backend.add(entry(100, partition="other"))
    await backend.add(entry(101, namespace="tenant-b"))
    await backend.add(entry(102, ttl=-1))
    found = await backend.search("ns", "p", vector(3), 4, -1.0)
    assert found[0].entry_id == f"{3:016x}" and found[0].prompt == "prompt 3" and found[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(found) == 4 and [c.score for c in found] == sorted((c.score for c in found), reverse=True)
    assert {c.entry_id for c in await backend.search("ns", "p", vector(100), 20, -1.0)}.isdisjoint({f"{s:016x}" for s in (100, 101, 102)})
    assert await backend.search("ns", "p", vector(3), 4, 0.9999) == found[:1]
    await backend.remove("ns", f"{3:016x}")
    assert all(c.entry_id != f"{3:016x}" for c in await backend.search("ns", "p", vector(3), 4, -1.0))


async def test_a_postgresql_that_does_not_answer_makes_lookups_miss_quickly(schema):
    from servers import free_port

    down = PgvectorBackend(
        PgvectorConfig(dsn=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", schema_name=schema, operation_timeout_seconds=0.2),
        dimensions=DIMENSIONS,
        model_id="m",
    )
    await down.start()
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await down.search("ns", "p", vector(1), 4, 0.0)
        assert time.monotonic() - started < 1.0 and down.stats()["connected"] is False
    finally:
        await down.close()


def test_the_pgvector_backend_needs_a_dsn():
    with pytest.raises(ValueError, match="pgvector.dsn"):
        SemanticCacheConfig(backend="pgvector")


def test_two_instances_share_one_pgvector_table(gateway_process, redis_url, redis_prefix, pgvector_url, schema):
    import asyncpg

    section = {"redis_url": redis_url, "key_prefix": redis_prefix, "shadow": SHADOW, "operation_timeout_seconds": 1.0, "backend": "pgvector", "pgvector": {"dsn": pgvector_url, "schema_name": schema, "operation_timeout_seconds": 2.0}}
    config = pipeline_config(["semantic_cache", "mock"], semantic_cache=section, mock={"models": ["gpt-4o-mini"]})
    first, second = gateway_process(config), gateway_process(config)
    key = new_key()

    async def rows() -> int:
        connection = await asyncpg.connect(pgvector_url)
        try:
            return int(await connection.fetchval(f"SELECT count(*) FROM {schema}.entries_384"))
        finally:
            await connection.close()

    try:
        _, headers, _ = ask(first, "How do I reset my password?", key=key)
        assert headers["x-hookgate-cache"] == "MISS"
        entry_id = headers["x-hookgate-cache-entry"]
        wait_for(lambda: asyncio.run(rows()) == 1, "the entry reached the table")
        for number, paraphrase in enumerate(("How can I reset my password?", "What is the way to reset my password?"), start=1):
            _, headers, _ = ask(second, paraphrase, key=key, headers={"Cache-Control": "no-store"})
            assert (headers["x-hookgate-cache"], headers["x-hookgate-cache-entry"]) == ("SHADOW", entry_id)
            wait_for(lambda: observations(second, key) >= number, "the shadow comparison was recorded")
        assert admin(first)["index"]["table"] == f"{schema}.entries_384"
        _, headers, _ = ask(second, "Steps to reset my password?", key=key, headers={"Cache-Control": "no-store"})
        assert (headers["x-hookgate-cache"], headers["x-hookgate-cache-entry"]) == ("HIT-SEMANTIC", entry_id)
    finally:
        asyncio.run(drop(pgvector_url, schema))
