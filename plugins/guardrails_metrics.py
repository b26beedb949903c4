"""What the guardrails found, as the record other plugins, the request log and Prometheus read.

One :class:`Tally` per side of a request counts findings by kind and action, never the value.
It becomes ``(kind, count, action, side)`` tuples (:data:`hookgate.facts.GuardrailRecord`) (the ``GUARDRAIL_FINDINGS`` fact, which
the request store reads), a few short strings in ``ctx.annotations`` (the request log line), and
counters in :class:`GuardrailsMetrics`, the collector the plugin offers through
``register_metrics``.

Every label is bounded by configuration: kinds are those the configured detectors declare,
detectors and judges those configured, sides, actions and outcomes fixed sets.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterator, Literal

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from hookgate.facts import GuardrailRecord

__all__ = ["Side", "Tally", "GuardrailsMetrics", "MAX_ANNOTATED", "SCAN_SECONDS_BUCKETS"]

Side = Literal["request", "answer"]

MAX_ANNOTATED = 32
"""Entries of one annotation list at most (kinds × actions is bounded anyway; this caps the log line)."""

SCAN_SECONDS_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


class Tally:
    """Findings of one side of one request: (kind, action) → count, and the detectors that failed."""

    __slots__ = ("side", "counts", "failures")

    def __init__(self, side: Side) -> None:
        self.side: Side = side
        self.counts: Counter[tuple[str, str]] = Counter()
        self.failures: list[tuple[str, str]] = []
        """(detector, fail mode ``open``/``closed``) per failure."""

    def add(self, kind: str, action: str, count: int = 1) -> None:
        self.counts[(kind, action)] += count

    def records(self) -> tuple[GuardrailRecord, ...]:
        return tuple((kind, count, action, self.side) for (kind, action), count in sorted(self.counts.items()))

    def annotation(self) -> list[str]:
        """``side:KIND:action:count`` strings for the log line."""
        return [f"{self.side}:{kind}:{action}:{count}" for (kind, action), count in sorted(self.counts.items())][:MAX_ANNOTATED]

    def failure_annotation(self) -> list[str]:
        return [f"{self.side}:{detector}:{mode}" for detector, mode in self.failures][:MAX_ANNOTATED]


class GuardrailsMetrics:
    """The plugin's Prometheus collector: counters kept by the plugin, exported on scrape.

    Updated on the event loop only (scans on worker threads hand their tallies back first), so
    plain counters need no lock.
    """

    def __init__(self) -> None:
        self.findings: Counter[tuple[str, str, str]] = Counter()
        self.blocked: Counter[str] = Counter()
        self.detector_errors: Counter[tuple[str, str, str]] = Counter()
        self.judge_calls: Counter[tuple[str, str]] = Counter()
        self._scans: dict[str, list[float]] = {}
        """side → [count per bucket..., +Inf count, sum]."""

    def tally(self, tally: Tally, *, blocked: bool) -> None:
        for (kind, action), count in tally.counts.items():
            self.findings[(kind, action, tally.side)] += count
        for detector, mode in tally.failures:
            self.detector_errors[(detector, tally.side, mode)] += 1
        if blocked:
            self.blocked[tally.side] += 1

    def judged(self, judge: str, outcome: str) -> None:
        self.judge_calls[(judge, outcome)] += 1

    def scanned(self, side: Side, seconds: float) -> None:
        slots = self._scans.setdefault(side, [0.0] * (len(SCAN_SECONDS_BUCKETS) + 2))
        for index, bound in enumerate(SCAN_SECONDS_BUCKETS):
            if seconds <= bound:
                slots[index] += 1
        slots[-2] += 1
        slots[-1] += seconds

    def collect(self) -> Iterator[object]:
        findings = CounterMetricFamily(
            "hookgate_guardrails_findings", "Findings of the guardrails, by kind, action and side.", labels=["kind", "action", "side"]
        )
        for labels, count in sorted(self.findings.items()):
            findings.add_metric(list(labels), count)
        yield findings
        blocked = CounterMetricFamily(
            "hookgate_guardrails_blocked", "Requests refused (request side) or answers withheld (answer side).", labels=["side"]
        )
        for side, count in sorted(self.blocked.items()):
            blocked.add_metric([side], count)
        yield blocked
        errors = CounterMetricFamily(
            "hookgate_guardrails_detector_errors",
            "Detector failures, by detector, side and the fail mode applied (open: went on without it; closed: refused).",
            labels=["detector", "side", "mode"],
        )
        for labels, count in sorted(self.detector_errors.items()):
            errors.add_metric(list(labels), count)
        yield errors
        judged = CounterMetricFamily(
            "hookgate_guardrails_judge_calls",
            "Judge verdicts by outcome: flagged, clean (cached_ when from its cache), timeout, error, unparseable.",
            labels=["judge", "outcome"],
        )
        for labels, count in sorted(self.judge_calls.items()):
            judged.add_metric(list(labels), count)
        yield judged
        scans = HistogramMetricFamily("hookgate_guardrails_scan_seconds", "Time to scan one side of a request.", labels=["side"])
        for side, slots in sorted(self._scans.items()):
            buckets = [(str(bound), slots[i]) for i, bound in enumerate(SCAN_SECONDS_BUCKETS)] + [("+Inf", slots[-2])]
            scans.add_metric([side], buckets, slots[-1])
        yield scans

