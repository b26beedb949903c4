"""The request store's own Prometheus metrics: what became of the rows, and the queue.

Offered through ``register_metrics``, so the ``metrics`` plugin serves them at ``/metrics``
without either plugin importing the other. The numbers are read from the writer's counters at
scrape time (no work per request). Under ``--workers N`` each worker reports its own queue.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .request_store_writer import WriterStats

__all__ = ["RequestStoreCollector"]


class RequestStoreCollector:
    """A prometheus-client collector of one request store's counters.

    :param stats: the writer's counters now.
    :param connected: whether the database is reachable (it answered the last open or write).
    :param bodies_skipped: requests whose bodies were not kept (the background set was full).
    """

    def __init__(self, stats: Callable[[], WriterStats], connected: Callable[[], bool], bodies_skipped: Callable[[], int]) -> None:
        self._stats, self._connected, self._bodies_skipped = stats, connected, bodies_skipped

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        written = CounterMetricFamily("hookgate_request_store_rows_written", "Request records written to the database")
        written.add_metric([], stats.written)
        dropped = CounterMetricFamily(
            "hookgate_request_store_rows_dropped",
            "Request records dropped instead of slowing requests: queue_full (the database is slow or down), "
            "write_failed (a batch the database refused or did not take in time), shutdown (not flushed in time)",
            labels=["reason"],
        )
        dropped.add_metric(["queue_full"], stats.dropped_queue_full)
        dropped.add_metric(["write_failed"], stats.dropped_write_failed)
        dropped.add_metric(["shutdown"], stats.dropped_at_shutdown)
        failed = CounterMetricFamily("hookgate_request_store_batches_failed", "Insert batches that failed")
        failed.add_metric([], stats.batches_failed)
        queued = GaugeMetricFamily("hookgate_request_store_queue_rows", "Request records waiting to be written (queued and in flight)")
        queued.add_metric([], stats.queued + stats.in_flight)
        capacity = GaugeMetricFamily("hookgate_request_store_queue_capacity", "Most records the queue holds before dropping")
        capacity.add_metric([], stats.capacity)
        connected = GaugeMetricFamily("hookgate_request_store_connected", "1 while the database is reachable, else 0")
        connected.add_metric([], 1.0 if self._connected() and stats.last_error is None else 0.0)
        skipped = CounterMetricFamily("hookgate_request_store_bodies_skipped", "Requests stored without the bodies they were configured to keep")
        skipped.add_metric([], self._bodies_skipped())
        yield from (written, dropped, failed, queued, capacity, connected, skipped)
