"""What does the semantic tier add to a request it cannot answer? p50 of its lookup on a miss.

    python bench/semantic_cache_latency.py [--sizes 1000,10000,100000] [--lookups 300]

For each size N, one partition of one namespace holds N entries (the worst case: every entry a
candidate; real traffic spreads over many partitions), and the plugin's ``cache_lookup`` runs
for prompts it cannot answer, in-process, with the default configuration:

* ``no candidate``: nothing in the partition reaches the similarity threshold;
* ``refused``: the nearest entry is a near-miss (``... in 3 steps?`` against ``How do I reset my
  password?``): found above the threshold, then refused by the guard (numbers).

Neither touches Redis (with the local backend a miss asks Redis nothing; a hit costs one round
trip to confirm), so Redis is stubbed out and the figures are embedding + search + guard. The
embedding of one prompt alone and the index search alone are printed beside them; the kinds are
interleaved so that the shared machine's drift hits all alike.

How 100k entries are built fast: the entries are not embedded and not written to Redis. The
near-miss's cached prompt is embedded once with the real model; the other N - 1 vectors are
pre-generated (seeded numpy, unit length, shifted away from the queries so none reaches the
threshold) and handed to the index in one ``LocalIndex.replace``, as a rebuild from Redis would.
Above ``exact_max_entries`` (5,000) the index builds its HNSW graph on its thread; the bench waits
for it (tens of seconds at 100k on one core) before measuring, and reports the build time.
Bounded: at most ``--lookups`` lookups per size and query kind; sizes capped at 200,000.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import numpy as np

from hookgate import RequestContext
from hookgate.embeddings import OnnxSentenceEmbedder
from hookgate.plugins.semantic_cache import SemanticCache, SemanticCacheConfig, _LOOKUP
from hookgate.plugins.semantic_cache_backend import IndexedEntry
from hookgate.plugins.semantic_cache_index import IndexLimits, LocalIndex
from hookgate.plugins.semantic_cache_scope import SemanticScope, scope_of

MAX_SIZE = 200_000
SYSTEM = "You are the help desk of Example Ltd."
CACHED = "How do I reset my password?"
NEAR_MISS = "How do I reset my password in 3 steps?"
UNRELATED = ["What are your opening hours on {}?", "Can I pay by card for order {}?", "Where is parcel {} now?"]


class _RedisUp:
    """Stands in for the app's Redis on a miss (which never calls it)."""

    available = True


def request(prompt: str) -> RequestContext:
    body = {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]}
    return RequestContext(request_id="bench", body=body, headers={}, tenant="bench")


def filler(count: int, dimensions: int, away_from: np.ndarray, seed: int) -> np.ndarray:
    """Unit vectors with a similarity well below the threshold to ``away_from``'s directions."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dimensions)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for direction in away_from:  # random 384-d vectors are already near-orthogonal; make sure
        vectors -= np.outer(np.maximum(vectors @ direction - 0.3, 0.0), direction)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


async def measure(sizes: list[int], lookups: int) -> list[dict[str, Any]]:
    embedder = await OnnxSentenceEmbedder.load()
    config = SemanticCacheConfig()
    plugin = SemanticCache(config)
    plugin.embedder, plugin.redis, plugin.store = embedder, _RedisUp(), object()  # type: ignore[assignment]
    scope = scope_of(request(CACHED), model_id=embedder.model_id, shared=False, max_temperature=1.0, temperature_override_label="", max_prompt_chars=2000)
    assert isinstance(scope, SemanticScope)
    unrelated = [template.format(i) for template in UNRELATED for i in range(max(1, lookups // len(UNRELATED) + 1))][:lookups]
    queries = (await embedder.embed([CACHED, NEAR_MISS, *unrelated[:50]])).vectors
    results = []
    for size in sizes:
        index = LocalIndex(embedder.dimensions, IndexLimits(max_entries=MAX_SIZE, exact_max_entries=config.index.exact_max_entries, loop_max_entries=config.index.loop_max_entries))
        await index.start()
        plugin.backend = index
        expires = time.time() + 3600
        vectors = filler(size - 1, embedder.dimensions, queries, seed=size)
        entries = [IndexedEntry(scope.namespace_id, "cached", scope.partition, CACHED, queries[0], expires)]
        entries += [IndexedEntry(scope.namespace_id, f"f{i}", scope.partition, f"filler {i}", vectors[i], expires) for i in range(size - 1)]
        built = time.perf_counter()
        index.replace(entries)
        while index._builds:
            await asyncio.gather(*index._builds)
        graph_seconds = time.perf_counter() - built
        row: dict[str, Any] = {"entries": size, "regime": "hnsw" if index.stats()["graphs"] else "exact", "index_build_s": round(graph_seconds, 2)}
        timings: dict[str, list[float]] = {"no candidate": [], "refused": [], "embedding": []}
        for prompt in unrelated[:lookups]:  # interleaved, so the machine's drift hits every kind alike
            started = time.perf_counter()
            await embedder.embed([prompt])
            timings["embedding"].append(time.perf_counter() - started)
            for kind, text in (("no candidate", prompt), ("refused", NEAR_MISS)):
                ctx = request(text)
                started = time.perf_counter()
                answer = await plugin.cache_lookup(ctx)
                timings[kind].append(time.perf_counter() - started)
                assert answer is None and ctx[_LOOKUP].shadowed is None, "a miss was expected"
        for kind, values in timings.items():
            row[kind] = round(statistics.median(values) * 1000, 3)
        search = []
        for query in queries[2:]:
            started = time.perf_counter()
            await index.search(scope.namespace_id, scope.partition, query, config.candidates, config.guard.similarity_threshold)
            search.append(time.perf_counter() - started)
        row["search only"] = round(statistics.median(search) * 1000, 3)
        results.append(row)
        await index.close()
        print(row, flush=True)
    await embedder.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="entries per namespace, comma-separated (at most 200,000 each)")
    parser.add_argument("--lookups", type=int, default=300, help="lookups per size and query kind (at most 2,000)")
    args = parser.parse_args()
    sizes = [min(MAX_SIZE, max(1, int(s))) for s in args.sizes.split(",")]
    results = asyncio.run(measure(sizes, min(2000, max(10, args.lookups))))
    print(f"\n  {'entries':>8} {'regime':>6} {'build s':>8} | p50 ms of the lookup on a miss: {'no candidate':>12} {'refused':>8} | {'embedding':>9} {'search':>7}")
    for row in results:
        print(
            f"  {row['entries']:>8} {row['regime']:>6} {row['index_build_s']:>8} | {'':>31} {row['no candidate']:>12} "
            f"{row['refused']:>8} | {row['embedding']:>9} {row['search only']:>7}"
        )


if __name__ == "__main__":
    main()
