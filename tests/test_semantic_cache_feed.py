"""Keeping local indexes in step with Redis: the change stream between instances, rebuilds when an
instance fell behind or Redis lost the stream, and shadow mode's trust decisions."""
from __future__ import annotations

import time

import numpy as np
import pytest

from hookgate.plugins.semantic_cache_backend import IndexedEntry
from hookgate.plugins.semantic_cache_feed import IndexFeed
from hookgate.plugins.semantic_cache_index import LocalIndex
from hookgate.plugins.semantic_cache_shadow import ShadowConfig, ShadowDecision, answers_agree, decide, trust_of
from hookgate.plugins.semantic_cache_store import EntryStore, new_entry_id
from hookgate.redis import RedisService

DIMENSIONS = 8


def vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIMENSIONS).astype(np.float32)
    return v / np.linalg.norm(v)


def entry(seed: int, ttl: float = 600) -> IndexedEntry:
    return IndexedEntry("nsid", new_entry_id(), "part", f"prompt {seed}", vector(seed), time.time() + ttl)


@pytest.fixture
async def redis(redis_url):
    service = RedisService()
    shared = await service.connect(redis_url)
    yield shared
    await service.close()


def make_store(redis, prefix: str, **options) -> EntryStore:
    settings = dict(operation_timeout=2.0, scan_timeout=5.0, stream_max_len=100_000, max_entries_per_namespace=1000, shadow_window=10, shadow_ttl_seconds=60)
    return EntryStore(redis, key_prefix=prefix, **{**settings, **options})


def make_feed(store: EntryStore) -> tuple[IndexFeed, LocalIndex]:
    index = LocalIndex(DIMENSIONS)
    return IndexFeed(store, index, dimensions=DIMENSIONS, block_ms=10, batch=500, retry_seconds=0.05, sweep_seconds=60), index


async def test_adds_and_deletes_of_one_instance_reach_another_instances_index(redis, redis_prefix):
    writer = make_store(redis, redis_prefix)
    feed, index = make_feed(make_store(redis, redis_prefix))
    await feed._step()  # first build: empty
    stored = entry(1)
    await writer.add(stored, "team-a", b'{"choices": []}', 600)
    await feed._step()
    assert [c.entry_id for c in await index.search("nsid", "part", stored.vector, 4, 0.5)] == [stored.entry_id]
    assert await writer.delete("nsid", stored.entry_id)
    await feed._step()
    assert len(index) == 0 and feed.state.rebuilds == 1


async def test_a_confirmation_finds_only_live_entries(redis, redis_prefix):
    store = make_store(redis, redis_prefix)
    live, short = entry(1), entry(2, ttl=0.05)
    await store.add(live, "team-a", b'{"answer": 1}', 600)
    await store.add(short, "team-a", b'{"answer": 2}', 0.05)
    found, _ = await store.confirm("nsid", live.entry_id)
    assert found is not None and found.answer == b'{"answer": 1}'
    assert (await store.confirm("nsid", "0123456789abcdef"))[0] is None
    time.sleep(0.06)  # the entry's TTL (an expiry is a time, not an event)
    assert (await store.confirm("nsid", short.entry_id))[0] is None


async def test_an_instance_that_fell_behind_the_capped_stream_rebuilds_from_the_entries(redis, redis_prefix):
    writer = make_store(redis, redis_prefix, stream_max_len=100)
    feed, index = make_feed(make_store(redis, redis_prefix, stream_max_len=100))
    await feed._step()
    kept = [entry(seed) for seed in range(400)]
    for stored in kept:  # while this instance is not reading: the stream keeps only ~100 of them
        await writer.add(stored, "team-a", b"{}", 600)
    await feed._step()
    assert feed.state.last_rebuild_reason == "fell_behind" and feed.state.rebuilds == 2
    assert len(index) == 400


async def test_a_stream_lost_with_redis_makes_the_index_forget_what_redis_forgot(redis, redis_prefix):
    writer = make_store(redis, redis_prefix)
    feed, index = make_feed(make_store(redis, redis_prefix))
    await feed._step()
    await writer.add(entry(1), "team-a", b"{}", 600)
    await feed._step()
    assert len(index) == 1
    keys = [key async for key in redis.client.scan_iter(match=f"{redis_prefix}:*")]
    await redis.client.delete(*keys)  # what a Redis restarted without persistence looks like
    await feed._step()
    assert feed.state.last_rebuild_reason == "stream_lost" and len(index) == 0


async def test_a_namespace_keeps_at_most_its_bound_and_evictions_are_streamed(redis, redis_prefix):
    writer = make_store(redis, redis_prefix, max_entries_per_namespace=3)
    feed, index = make_feed(make_store(redis, redis_prefix))
    await feed._step()
    stored = [entry(seed, ttl=600 + seed) for seed in range(5)]
    evicted = [await writer.add(e, "team-a", b"{}", 600 + i) for i, e in enumerate(stored)]
    assert evicted[:3] == [[], [], []] and evicted[3] == [stored[0].entry_id] and evicted[4] == [stored[1].entry_id]
    await feed._step()
    assert len(index) == 3 and len(await writer.scan("nsid")) == 3


async def test_a_rebuild_forgets_namespaces_whose_entries_all_expired(redis, redis_prefix):
    writer = make_store(redis, redis_prefix)
    for tenant in range(5):  # many tenants, each with one short-lived entry
        stored = IndexedEntry(f"ns{tenant}", new_entry_id(), "part", "p", vector(tenant), time.time() + 0.05)
        await writer.add(stored, f"tenant-{tenant}", b"{}", 0.05)
    assert len(await writer.namespace_names()) == 5
    time.sleep(0.06)  # the entries' TTL (an expiry is a time, not an event)
    feed, index = make_feed(make_store(redis, redis_prefix))
    await feed._step()
    assert len(index) == 0 and await writer.namespace_names() == {}


# ------------------------------------------------------------------------------ shadow mode ---


def test_a_namespace_is_trusted_after_enough_agreeing_observations_and_loses_trust_when_they_disagree():
    config = ShadowConfig(min_observations=4, window=10, max_disagreement=0.25)
    assert not trust_of((True,) * 3, config).trusted
    assert trust_of((True,) * 4, config).trusted
    assert trust_of((False,) + (True,) * 3, config).trusted  # 3/4 = 1 - δ
    assert not trust_of((False, False) + (True,) * 3, config).trusted  # 3/5 < 1 - δ
    assert trust_of((False, False) + (True,) * 20, config).agreement == 0.8  # only the window counts


def test_untrusted_namespaces_shadow_and_trusted_ones_audit_a_fraction():
    config = ShadowConfig(min_observations=1, window=1, audit_fraction=0.1)
    trusted, untrusted = trust_of((True,), config), trust_of((), config)
    assert decide(untrusted, config, draw=0.99) is ShadowDecision.SHADOW
    assert decide(trusted, config, draw=0.05) is ShadowDecision.AUDIT
    assert decide(trusted, config, draw=0.5) is ShadowDecision.SERVE
    assert decide(untrusted, ShadowConfig(enabled=False)) is ShadowDecision.SERVE
    with pytest.raises(ValueError, match="window"):
        ShadowConfig(min_observations=10, window=5)


async def test_answers_are_compared_by_meaning_or_exactly():
    class Embedder:
        model_id, dimensions = "fake", 2

        async def embed(self, texts):
            from hookgate.embeddings import Embeddings

            vectors = np.array([[1.0, 0.0] if "Paris" in t else [0.0, 1.0] for t in texts], dtype=np.float32)
            return Embeddings(vectors, (1,) * len(texts), (False,) * len(texts), "fake")

    by_meaning = ShadowConfig()
    assert await answers_agree("It is Paris.", "Paris, of course.", by_meaning, Embedder()) == (True, 1.0)
    assert (await answers_agree("It is Paris.", "Berlin.", by_meaning, Embedder()))[0] is False
    exact = ShadowConfig(comparison="exact")
    assert (await answers_agree("It is  Paris.", "it is paris.", exact, Embedder()))[0] is True
    assert (await answers_agree("It is Paris.", "Paris, of course.", exact, Embedder()))[0] is False
