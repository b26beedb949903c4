"""The semantic cache's local vector index: one group of vectors per partition, in memory.

A lookup only ever compares prompts of one partition (same tenant, model, parameters and earlier
turns), so the index is a dict of small groups rather than one big index with a filter. A group is
searched by exact brute force (one float32 matrix-vector product) while it has at most
``exact_max_entries`` live entries, and through an HNSW graph (usearch, int8) above that:

=========  ==============================  ===========================================
entries    exact search (numpy)            HNSW search (usearch, i8)
=========  ==============================  ===========================================
1,000      57 µs                           -
5,000      167 µs                          -
10,000     2.6 to 5.4 ms (out of cache)    0.3 ms
20,000     1.0 to 15.9 ms                  0.19 ms (build: 6.5 s on one core)
=========  ==============================  ===========================================

(p50 on the shared 2-core development machine; ``python bench/semantic_cache_latency.py`` for the
plugin's whole miss path.) Past ~5,000 rows a float32 matrix no longer fits the CPU caches and the
cost of a product jumps tenfold, so the default switch is 5,000. Small groups, and graphs whose
tail is small, are searched on the event loop (tens of microseconds for brute force over 2,000
rows, 0.2 to 0.5 ms for a graph walk: about what the guard costs); brute force over more rows runs
on the index's worker thread, never on the loop.

Why the HNSW graph is built the way it is:

- **Built off the loop, from a snapshot, then swapped in.** Building takes seconds (about 0.3 ms
  a vector on one core). Meanwhile the group keeps answering by brute force on the worker thread,
  and entries added since the snapshot (its *tail*) are searched by brute force next to the graph
  after the swap. A graph is never modified after it is built, so searching it needs no lock.
- **Rebuilt when it drifts**: when the tail or the deleted entries pass a fifth of the graph.
  Deletions and expiries only clear a slot's ``alive`` flag; a rebuild compacts the slots.
- **Scores are exact.** The graph (int8) only proposes; each candidate's score is recomputed from
  its float32 vector, so the guard's threshold means the same in both regimes.

Bounds: ``max_entries`` live entries in all (an add past it is refused and counted). The index
never holds an answer, only the prompt text the guard needs and the vector.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, final

import structlog

from .semantic_cache_backend import Candidate, IndexedEntry

__all__ = ["LocalIndex", "IndexLimits"]

log = structlog.get_logger("hookgate.semantic_cache")

_FIRST_CAPACITY = 4
_REBUILD_DRIFT = 0.2
"""Tail or deleted entries, as a fraction of the graph, past which the graph is rebuilt."""
_HNSW_EXPANSION = 4
"""The graph is asked for k × this many neighbours: deleted ones are filtered out afterwards."""


@final
@dataclass(frozen=True, slots=True)
class IndexLimits:
    """How large the index may grow, and where it switches to HNSW."""

    max_entries: int = 200_000
    exact_max_entries: int = 5_000
    loop_max_entries: int = 2_000
    """Groups up to this size are searched on the event loop (~60 µs); larger ones on the worker thread."""
    hnsw_connectivity: int = 16
    hnsw_expansion_add: int = 64
    hnsw_expansion_search: int = 64


class _Group:
    """One partition's vectors: append-only slots, ``alive`` flags, an optional HNSW graph over
    the first ``graph_slots`` slots."""

    __slots__ = ("vectors", "ids", "prompts", "expires", "alive", "count", "live", "slot_of", "graph", "graph_slots", "building")

    def __init__(self, dimensions: int) -> None:
        import numpy as np

        self.vectors = np.zeros((_FIRST_CAPACITY, dimensions), dtype=np.float32)
        self.expires = np.zeros(_FIRST_CAPACITY, dtype=np.float64)
        self.alive = np.zeros(_FIRST_CAPACITY, dtype=bool)
        self.ids: list[str] = []
        self.prompts: list[str] = []
        self.count = 0
        self.live = 0
        self.slot_of: dict[str, int] = {}
        self.graph: Any = None
        self.graph_slots = 0
        self.building = False

    def append(self, entry: IndexedEntry) -> None:
        import numpy as np

        if self.count == len(self.alive):
            capacity = 2 * len(self.alive)
            # New arrays (never resized in place): a search running on the worker thread keeps
            # reading the old ones safely.
            vectors = np.zeros((capacity, self.vectors.shape[1]), dtype=np.float32)
            vectors[: self.count] = self.vectors[: self.count]
            expires = np.zeros(capacity, dtype=np.float64)
            expires[: self.count] = self.expires[: self.count]
            alive = np.zeros(capacity, dtype=bool)
            alive[: self.count] = self.alive[: self.count]
            self.vectors, self.expires, self.alive = vectors, expires, alive
        slot = self.count
        self.vectors[slot] = entry.vector
        self.expires[slot] = entry.expires_at
        self.alive[slot] = True
        self.ids.append(entry.entry_id)
        self.prompts.append(entry.prompt)
        self.slot_of[entry.entry_id] = slot
        self.count += 1
        self.live += 1

    def kill(self, slot: int) -> None:
        if self.alive[slot]:
            self.alive[slot] = False
            self.live -= 1
            del self.slot_of[self.ids[slot]]

    def compact(self) -> None:
        """Drop dead slots (only for groups without a graph: slots are the graph's keys)."""
        import numpy as np

        self.keep_rows(np.flatnonzero(self.alive[: self.count]))

    def keep_rows(self, rows: Any) -> None:
        """Keep only the slots ``rows``, in that order (new slot i is old slot ``rows[i]``), in
        arrays sized for them; the rest are gone."""
        import numpy as np

        alive = self.alive[rows]
        capacity = max(_FIRST_CAPACITY, 1 << int(len(rows)).bit_length())
        vectors = np.zeros((capacity, self.vectors.shape[1]), dtype=np.float32)
        vectors[: len(rows)] = self.vectors[rows]
        expires = np.zeros(capacity, dtype=np.float64)
        expires[: len(rows)] = self.expires[rows]
        self.alive = np.zeros(capacity, dtype=bool)
        self.alive[: len(rows)] = alive
        self.ids = [self.ids[i] for i in rows]
        self.prompts = [self.prompts[i] for i in rows]
        self.vectors, self.expires = vectors, expires
        self.count, self.live = len(rows), int(np.count_nonzero(alive))
        self.slot_of = {self.ids[slot]: slot for slot in np.flatnonzero(alive)}

    def drifted(self) -> bool:
        if self.graph is None:
            return True
        tail = self.count - self.graph_slots
        dead = self.graph_slots - int(self.alive[: self.graph_slots].sum())
        return max(tail, dead) > _REBUILD_DRIFT * max(1, self.graph_slots)


@final
class LocalIndex:
    """The per-instance vector index (a :class:`~hookgate.plugins.semantic_cache_backend.VectorBackend`)."""

    name = "local"
    fed_by_stream = True

    def __init__(self, dimensions: int, limits: IndexLimits | None = None) -> None:
        self.dimensions = dimensions
        self.limits = limits or IndexLimits()
        self._groups: dict[tuple[str, str], _Group] = {}
        self._live = 0
        self.refused = 0
        """Adds refused because the index was full."""
        self.graphs_built = 0
        self._search_thread: ThreadPoolExecutor | None = None
        self._build_thread: ThreadPoolExecutor | None = None
        self._builds: set[asyncio.Task[None]] = set()
        self._generation = 0
        """Bumped by :meth:`replace`: a graph built for an older generation is thrown away."""

    def __len__(self) -> int:
        return self._live

    # -- lifecycle

    async def start(self) -> None:
        self._search_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hookgate-semantic-search")
        self._build_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hookgate-semantic-hnsw")

    async def close(self) -> None:
        self._generation += 1
        for task in list(self._builds):
            task.cancel()
        await asyncio.gather(*self._builds, return_exceptions=True)
        for executor in (self._search_thread, self._build_thread):
            if executor is not None:
                await asyncio.get_running_loop().run_in_executor(None, lambda e=executor: e.shutdown(wait=True, cancel_futures=True))
        self._search_thread = self._build_thread = None

    # -- writes (on the event loop only)

    async def add(self, entry: IndexedEntry) -> bool:
        return self.add_now(entry)

    def add_now(self, entry: IndexedEntry) -> bool:
        """Index ``entry`` unless it is known, expired, or the index is full."""
        key = (entry.namespace_id, entry.partition)
        group = self._groups.get(key)
        if group is not None and entry.entry_id in group.slot_of:
            return True
        if entry.expires_at <= time.time():
            return False
        if self._live >= self.limits.max_entries:
            self.refused += 1
            return False
        if group is None:
            group = self._groups[key] = _Group(self.dimensions)
        group.append(entry)
        self._live += 1
        if group.live > self.limits.exact_max_entries and not group.building and group.drifted():
            self._build_graph(key, group)
        return True

    async def remove(self, namespace_id: str, entry_id: str) -> None:
        self.remove_now(namespace_id, entry_id)

    def remove_now(self, namespace_id: str, entry_id: str, partition: str | None = None) -> bool:
        """Forget an entry; True when it was indexed. Without ``partition`` every group of the
        namespace is looked at (deletion messages carry the partition, so that is rare)."""
        keys = [(namespace_id, partition)] if partition is not None else [k for k in self._groups if k[0] == namespace_id]
        for key in keys:
            group = self._groups.get(key)
            slot = group.slot_of.get(entry_id) if group is not None else None
            if group is not None and slot is not None:
                group.kill(slot)
                self._live -= 1
                self._tidy(key, group)
                return True
        return False

    def replace(self, entries: list[IndexedEntry]) -> None:
        """Throw everything away and index ``entries`` (a rebuild from Redis)."""
        self._generation += 1
        self._groups, self._live = {}, 0
        for entry in entries:
            self.add_now(entry)

    def sweep(self, now: float | None = None) -> int:
        """Mark expired entries dead, drop empty groups; returns how many expired."""
        now = time.time() if now is None else now
        expired = 0
        for key, group in list(self._groups.items()):
            slots = (group.alive[: group.count] & (group.expires[: group.count] <= now)).nonzero()[0]
            for slot in slots:
                group.kill(int(slot))
            expired += len(slots)
            self._tidy(key, group)
        self._live -= expired
        return expired

    def _tidy(self, key: tuple[str, str], group: _Group) -> None:
        if group.live == 0 and not group.building:
            del self._groups[key]
        elif group.graph is None and group.count > 2 * group.live and group.count > 64:
            group.compact()
        elif group.graph is not None and group.live > self.limits.exact_max_entries and not group.building and group.drifted():
            self._build_graph(key, group)

    # -- search

    async def search(self, namespace_id: str, partition: str, vector: Any, k: int, min_score: float) -> list[Candidate]:
        group = self._groups.get((namespace_id, partition))
        if group is None or group.live == 0:
            return []
        now = time.time()
        # On the loop: a small group, or a graph (a walk of a few hundred int8 distances, 0.2 to
        # 0.5 ms) with a small tail; a handoff to the thread cost ~5 ms p50 on the loaded machine.
        brute_force_rows = group.count - group.graph_slots if group.graph is not None else group.count
        if brute_force_rows <= self.limits.loop_max_entries or self._search_thread is None:
            return _search_group(group, group.count, vector, k, min_score, now)
        count = group.count
        return await asyncio.get_running_loop().run_in_executor(
            self._search_thread, _search_group, group, count, vector, k, min_score, now
        )

    def stats(self) -> dict[str, Any]:
        graphs = sum(1 for group in self._groups.values() if group.graph is not None)
        largest = max((group.live for group in self._groups.values()), default=0)
        return {"entries": self._live, "groups": len(self._groups), "graphs": graphs, "largest_group": largest, "refused": self.refused}

    # -- HNSW graphs

    def _build_graph(self, key: tuple[str, str], group: _Group) -> None:
        if self._build_thread is None:
            return
        group.building = True
        task = asyncio.get_running_loop().create_task(self._swap_in_graph(key, group, self._generation), name="semantic-cache-hnsw")
        self._builds.add(task)
        task.add_done_callback(self._builds.discard)

    async def _swap_in_graph(self, key: tuple[str, str], group: _Group, generation: int) -> None:
        import numpy as np

        snapshot_count = group.count
        keep = np.flatnonzero(group.alive[:snapshot_count])
        vectors = group.vectors  # rows below snapshot_count never change: no copy needed
        started = time.perf_counter()
        try:
            graph = await asyncio.get_running_loop().run_in_executor(self._build_thread, self._graph_of, vectors, keep)
        except Exception:
            group.building = False
            log.exception("semantic_cache_hnsw_build_failed", entries=len(keep))
            return
        group.building = False
        if generation != self._generation or self._groups.get(key) is not group:
            return  # replaced meanwhile (a rebuild from Redis): this graph indexes old slots
        # Compact: the graph's keys are the new slots 0..len(keep)-1, then the tail after them.
        tail = np.arange(snapshot_count, group.count)
        group.keep_rows(np.concatenate([keep, tail]).astype(np.int64))
        group.graph, group.graph_slots = graph, len(keep)
        self.graphs_built += 1
        log.info("semantic_cache_hnsw_built", entries=len(keep), seconds=round(time.perf_counter() - started, 2))
        if group.live > self.limits.exact_max_entries and group.drifted():
            self._build_graph(key, group)

    def _graph_of(self, vectors: Any, keep: Any) -> Any:
        """Blocking: an int8 HNSW graph over ``vectors[keep]`` keyed 0..len(keep)-1."""
        import numpy as np

        _load_onnxruntime_first()
        from usearch.index import Index

        limits = self.limits
        graph = Index(
            ndim=self.dimensions,
            metric="ip",
            dtype="i8",
            connectivity=limits.hnsw_connectivity,
            expansion_add=limits.hnsw_expansion_add,
            expansion_search=limits.hnsw_expansion_search,
        )
        if len(keep):
            graph.add(np.arange(len(keep), dtype=np.uint64), np.ascontiguousarray(vectors[keep]), threads=1)
        return graph


def _search_group(group: _Group, count: int, vector: Any, k: int, min_score: float, now: float) -> list[Candidate]:
    """The best ``k`` live slots below ``count`` scoring at least ``min_score`` (may run on the
    worker thread: reads only, on arrays that are replaced, never resized in place)."""
    import numpy as np

    vectors, alive, expires, ids, prompts = group.vectors, group.alive, group.expires, group.ids, group.prompts
    graph, graph_slots = group.graph, group.graph_slots
    if graph is None:
        slots = np.arange(count)
    else:
        found = graph.search(vector, min(graph_slots, k * _HNSW_EXPANSION), threads=1)
        proposed = np.asarray(found.keys, dtype=np.int64)
        slots = np.concatenate([proposed[proposed < graph_slots], np.arange(graph_slots, count)])
    if not len(slots):
        return []
    scores = vectors[slots] @ vector
    valid = alive[slots] & (expires[slots] > now) & (scores >= min_score)
    slots, scores = slots[valid], scores[valid]
    if len(slots) > k:
        best = np.argpartition(-scores, k - 1)[:k]
        slots, scores = slots[best], scores[best]
    order = np.argsort(-scores, kind="stable")
    return [Candidate(ids[slot], prompts[slot], float(scores[i])) for i, slot in ((i, int(slots[i])) for i in order)]


def _load_onnxruntime_first() -> None:
    """Import onnxruntime (when installed) before usearch: with usearch 2.26's compiled module
    loaded first, importing onnxruntime 1.32 crashes the process (a segmentation fault, measured:
    ``python -c "import usearch.compiled; import onnxruntime"``), and the embedder imports it later."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        pass
