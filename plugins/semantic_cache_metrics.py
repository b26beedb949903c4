"""The semantic cache's Prometheus metrics, offered through ``register_metrics``.

=============================================  ==========================================================
family                                         labels
=============================================  ==========================================================
``hookgate_semantic_cache_lookups_total``      namespace, outcome (hit, shadow, audit, miss, refused, ineligible reason)
``hookgate_semantic_cache_guard_refusals_total``  check (the guard's first refusing check)
``hookgate_semantic_cache_shadow_total``       namespace, result (agree, disagree)
``hookgate_semantic_cache_stores_total``       result (stored, failed, skipped)
``hookgate_semantic_cache_score``              histogram of the best candidate's similarity, by outcome
``hookgate_semantic_cache_embedding_seconds``  histogram of one prompt's embedding time
``hookgate_semantic_cache_lookup_seconds``     histogram of the semantic tier's whole lookup (embed, search, guard, confirm)
``hookgate_semantic_cache_index_entries``      gauge: entries in this instance's index
=============================================  ==========================================================

Labels are bounded: outcomes, checks and results are fixed sets, and namespaces are the first
``max_namespaces`` seen by this process, every later one counted as ``other``.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["SemanticCacheMetrics"]

_SCORE_BUCKETS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0)
_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
OTHER = "other"


class _Histogram:
    __slots__ = ("buckets", "counts", "total", "count")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*map(str, self.buckets), "+Inf"), self.counts):
            running += count
            out.append((bound, running))
        return out


class SemanticCacheMetrics:
    """Counters kept by the plugin, turned into metric families on each scrape."""

    def __init__(self, max_namespaces: int, index_entries: Callable[[], int]) -> None:
        self._max_namespaces = max_namespaces
        self._namespaces: set[str] = set()
        self._index_entries = index_entries
        self.lookups: dict[tuple[str, str], int] = {}
        self.refusals: dict[str, int] = {}
        self.shadow: dict[tuple[str, str], int] = {}
        self.stores: dict[str, int] = {}
        self.scores: dict[str, _Histogram] = {}
        self.embedding = _Histogram(_SECONDS_BUCKETS)
        self.lookup_seconds = _Histogram(_SECONDS_BUCKETS)

    def namespace(self, name: str) -> str:
        """The label for a namespace: itself while few are known, else ``other``."""
        if name in self._namespaces:
            return name
        if len(self._namespaces) < self._max_namespaces:
            self._namespaces.add(name)
            return name
        return OTHER

    def lookup(self, namespace: str, outcome: str) -> None:
        key = (self.namespace(namespace), outcome)
        self.lookups[key] = self.lookups.get(key, 0) + 1

    def refused(self, check: str) -> None:
        self.refusals[check] = self.refusals.get(check, 0) + 1

    def compared(self, namespace: str, agreed: bool) -> None:
        key = (self.namespace(namespace), "agree" if agreed else "disagree")
        self.shadow[key] = self.shadow.get(key, 0) + 1

    def stored(self, result: str) -> None:
        self.stores[result] = self.stores.get(result, 0) + 1

    def score(self, outcome: str, value: float) -> None:
        self.scores.setdefault(outcome, _Histogram(_SCORE_BUCKETS)).observe(value)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        lookups = CounterMetricFamily("hookgate_semantic_cache_lookups", "Semantic cache lookups by namespace and outcome.", labels=["namespace", "outcome"])
        for (namespace, outcome), value in sorted(self.lookups.items()):
            lookups.add_metric([namespace, outcome], value)
        yield lookups
        refusals = CounterMetricFamily("hookgate_semantic_cache_guard_refusals", "Candidates the guard refused, by first refusing check.", labels=["check"])
        for check, value in sorted(self.refusals.items()):
            refusals.add_metric([check], value)
        yield refusals
        shadow = CounterMetricFamily("hookgate_semantic_cache_shadow", "Shadow comparisons of a cached answer with a fresh one.", labels=["namespace", "result"])
        for (namespace, result), value in sorted(self.shadow.items()):
            shadow.add_metric([namespace, result], value)
        yield shadow
        stores = CounterMetricFamily("hookgate_semantic_cache_stores", "Answers offered to the semantic cache, by result.", labels=["result"])
        for result, value in sorted(self.stores.items()):
            stores.add_metric([result], value)
        yield stores
        scores = HistogramMetricFamily("hookgate_semantic_cache_score", "Similarity of the best candidate, by outcome.", labels=["outcome"])
        for outcome, histogram in sorted(self.scores.items()):
            scores.add_metric([outcome], histogram.cumulative(), histogram.total)
        yield scores
        for name, doc, histogram in (
            ("hookgate_semantic_cache_embedding_seconds", "Time to embed one prompt.", self.embedding),
            ("hookgate_semantic_cache_lookup_seconds", "Time the semantic tier spent on a lookup.", self.lookup_seconds),
        ):
            family = HistogramMetricFamily(name, doc)
            family.add_metric([], histogram.cumulative(), histogram.total)
            yield family
        entries = GaugeMetricFamily("hookgate_semantic_cache_index_entries", "Entries in this instance's vector index.")
        entries.add_metric([], self._index_entries())
        yield entries
