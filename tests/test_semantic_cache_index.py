"""The semantic cache's local index: exact search for small partitions, an HNSW graph built off the
loop for large ones, and never a deleted, expired or other partition's entry."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from hookgate.plugins.semantic_cache_backend import IndexedEntry
from hookgate.plugins.semantic_cache_index import IndexLimits, LocalIndex

DIMENSIONS = 32


def unit_vectors(count: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIMENSIONS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def entry(i: int, vector: np.ndarray, *, partition: str = "p", namespace: str = "ns", ttl: float = 600) -> IndexedEntry:
    return IndexedEntry(namespace, f"e{i}", partition, f"prompt {i}", vector, time.time() + ttl)


@pytest.fixture
async def index():
    made = LocalIndex(DIMENSIONS, IndexLimits(max_entries=5_000, exact_max_entries=200, loop_max_entries=50))
    await made.start()
    yield made
    await made.close()


async def test_exact_search_returns_the_nearest_first_with_exact_scores(index):
    vectors = unit_vectors(40)
    for i, vector in enumerate(vectors):
        assert index.add_now(entry(i, vector))
    found = await index.search("ns", "p", vectors[7], 3, -1.0)
    assert [c.entry_id for c in found][0] == "e7" and found[0].prompt == "prompt 7"
    assert found[0].score == pytest.approx(1.0, abs=1e-5) and found[0].score >= found[1].score >= found[2].score
    assert len(found) == 3
    assert await index.search("ns", "p", vectors[7], 3, 0.999) == found[:1]  # min_score filters


async def test_other_partitions_and_namespaces_are_never_candidates(index):
    vector = unit_vectors(1)[0]
    index.add_now(entry(1, vector, partition="other"))
    index.add_now(entry(2, vector, namespace="tenant-b"))
    assert await index.search("ns", "p", vector, 4, 0.0) == []


async def test_removed_and_expired_entries_are_never_returned(index):
    vectors = unit_vectors(3)
    index.add_now(entry(0, vectors[0]))
    index.add_now(entry(1, vectors[1], ttl=0.05))
    index.remove_now("ns", "e0", "p")
    assert [c.entry_id for c in await index.search("ns", "p", vectors[1], 4, -1.0)] == ["e1"]
    await asyncio.sleep(0.06)  # the entry's TTL, not synchronisation: expiry is a time
    assert await index.search("ns", "p", vectors[1], 4, -1.0) == []
    assert index.sweep() == 1 and len(index) == 0 and index.stats()["groups"] == 0


async def test_a_large_partition_gets_an_hnsw_graph_that_finds_what_exact_search_finds(index):
    vectors = unit_vectors(600, seed=3)
    for i, vector in enumerate(vectors):
        index.add_now(entry(i, vector))
    await asyncio.gather(*index._builds)
    while index._builds:  # a graph that drifted while it was built is rebuilt once more
        await asyncio.gather(*index._builds)
    assert index.stats()["graphs"] == 1 and index.graphs_built >= 1
    queries = unit_vectors(50, seed=4)
    hits = 0
    for query in queries:
        exact = int(np.argmax(vectors @ query))
        found = await index.search("ns", "p", query, 4, -1.0)
        if found[0].entry_id == f"e{exact}":
            hits += 1
            assert found[0].score == pytest.approx(float(vectors[exact] @ query), abs=1e-5)  # exact, not int8
    assert hits >= 47  # recall@1 of the int8 graph against brute force

    later = unit_vectors(1, seed=5)[0]
    index.add_now(entry(10_000, later))  # after the graph: searched in its tail
    assert (await index.search("ns", "p", later, 1, 0.0))[0].entry_id == "e10000"
    index.remove_now("ns", "e5", "p")  # in the graph: filtered out
    assert all(c.entry_id != "e5" for c in await index.search("ns", "p", vectors[5], 4, -1.0))


async def test_the_index_is_bounded_and_a_rebuild_replaces_everything():
    small = LocalIndex(DIMENSIONS, IndexLimits(max_entries=10))
    vectors = unit_vectors(12)
    assert [small.add_now(entry(i, v)) for i, v in enumerate(vectors)].count(False) == 2
    assert len(small) == 10 and small.refused == 2
    small.replace([entry(99, vectors[0], partition="q")])
    assert len(small) == 1 and await small.search("ns", "p", vectors[0], 4, -1.0) == []
    assert not small.add_now(entry(100, vectors[1], ttl=-1))  # already expired: not indexed
