"""request_store's writer: a request never waits for the database, memory stays bounded, and
every record is either written or counted as dropped."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from structlog.testing import capture_logs

from hookgate.plugins.request_store_record import RequestRecord
from hookgate.plugins.request_store_retention import RetentionPruner
from hookgate.plugins.request_store_writer import RequestWriter, WriterStats
from request_store_support import record


class Sink:
    """A database stand-in: records batches, can be held (slow), or fail (down)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.calls = 0
        self.open = asyncio.Event()
        self.open.set()
        self.failing: Exception | None = None
        self.received = asyncio.Condition()

    async def insert(self, records: Sequence[RequestRecord]) -> None:
        self.calls += 1
        await self.open.wait()
        if self.failing is not None:
            raise self.failing
        self.batches.append([r.request_id for r in records])
        async with self.received:
            self.received.notify_all()

    @property
    def written(self) -> list[str]:
        return [i for batch in self.batches for i in batch]

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            async with self.received:
                await self.received.wait_for(lambda: len(self.written) >= count)


def accounted(stats: WriterStats) -> bool:
    return stats.submitted == stats.written + stats.dropped + stats.queued + stats.in_flight


RECORDS = [record(i) for i in range(1200)]


async def test_records_are_written_in_batches_in_order_and_a_partial_batch_is_flushed():
    sink = Sink()
    writer = RequestWriter(sink.insert, capacity=10_000, batch_size=500, flush_interval_s=0.05)
    writer.start()
    for r in RECORDS:
        assert writer.submit(r) is True
    await sink.wait_for(1200)  # the last 200 go out after the flush interval, not at close
    assert sink.written == [r.request_id for r in RECORDS]
    assert max(len(b) for b in sink.batches) == 500
    await writer.close()
    stats = writer.stats()
    assert (stats.submitted, stats.written, stats.dropped, stats.queued) == (1200, 1200, 0, 0)


async def test_a_flood_never_grows_the_queue_past_its_bound_and_submit_stays_cheap():
    sink = Sink()
    sink.open.clear()  # the database hangs
    writer = RequestWriter(sink.insert, capacity=1_000, batch_size=100, flush_interval_s=0.01, write_timeout_s=60, shutdown_timeout_s=0.1)
    writer.start()
    await asyncio.sleep(0)
    deepest, started = 0, time.perf_counter()
    for n in range(100_000):
        writer.submit(RECORDS[n % len(RECORDS)])
        deepest = max(deepest, writer.stats().queued) if n % 97 == 0 else deepest
        if n % 10_000 == 0:
            await asyncio.sleep(0)  # let the writer take a batch, as a busy loop would
    elapsed = time.perf_counter() - started
    stats = writer.stats()
    assert stats.queued <= 1_000 and deepest <= 1_000
    assert stats.dropped_queue_full >= 100_000 - 1_000 - 100 and accounted(stats)
    assert elapsed < 5.0, f"100k submits (and 1k stats calls) took {elapsed:.2f} s"
    await writer.close()
    assert writer.stats().dropped_at_shutdown >= 1_000 and accounted(writer.stats())


async def test_a_failing_database_costs_rows_not_requests_and_the_writer_recovers():
    sink = Sink()
    sink.failing = ConnectionRefusedError("down")
    writer = RequestWriter(sink.insert, capacity=100, batch_size=10, flush_interval_s=0.01, retry_backoff_s=0.01, max_backoff_s=0.02)
    writer.start()
    for r in RECORDS[:50]:
        writer.submit(r)
    async with asyncio.timeout(5):
        while writer.stats().dropped_write_failed < 50:
            await asyncio.sleep(0.005)
    stats = writer.stats()
    assert stats.last_error == "ConnectionRefusedError" and stats.batches_failed == 5 and accounted(stats)
    sink.failing = None
    for r in RECORDS[50:60]:
        writer.submit(r)
    await sink.wait_for(10)
    assert sink.written == [r.request_id for r in RECORDS[50:60]] and writer.stats().last_error is None
    await writer.close()


async def test_a_write_that_hangs_is_abandoned_and_its_rows_counted():
    sink = Sink()
    sink.open.clear()
    writer = RequestWriter(sink.insert, capacity=100, batch_size=5, flush_interval_s=0.01, write_timeout_s=0.05, retry_backoff_s=0.01)
    writer.start()
    for r in RECORDS[:5]:
        writer.submit(r)
    async with asyncio.timeout(5):
        while writer.stats().dropped_write_failed < 5:
            await asyncio.sleep(0.005)
    assert writer.stats().last_error == "TimeoutError"
    await writer.close()


async def test_drops_are_logged_at_most_once_per_interval():
    now = [1000.0]
    sink = Sink()
    sink.open.clear()
    with capture_logs() as logs:
        writer = RequestWriter(sink.insert, capacity=5, batch_size=5, flush_interval_s=0.005, write_timeout_s=60,
                               drop_log_interval_s=60, clock=lambda: now[0], shutdown_timeout_s=0.05)
        writer.start()
        for round_ in range(20):
            for r in RECORDS[:50]:
                writer.submit(r)
            await asyncio.sleep(0.01)  # several writer loop turns per round: each may log
        dropped = [e for e in logs if e["event"] == "request_store_rows_dropped"]
        assert len(dropped) == 1
        now[0] += 61
        for r in RECORDS[:50]:
            writer.submit(r)
        async with asyncio.timeout(5):
            while len([e for e in logs if e["event"] == "request_store_rows_dropped"]) < 2:
                await asyncio.sleep(0.005)
        await writer.close()
    dropped = [e for e in logs if e["event"] == "request_store_rows_dropped"]
    assert sum(e["dropped"] for e in dropped) == writer.stats().dropped
    assert all(e["log_level"] == "warning" for e in dropped)


async def test_shutdown_flushes_what_is_queued_within_its_bound():
    sink = Sink()
    writer = RequestWriter(sink.insert, capacity=10_000, batch_size=100, flush_interval_s=10)  # only close() flushes
    writer.start()
    for r in RECORDS[:250]:
        writer.submit(r)
    await writer.close()
    assert len(sink.written) == 250 and writer.stats().dropped == 0
    assert writer.submit(RECORDS[0]) is False and writer.stats().dropped_at_shutdown == 1

    stuck = Sink()
    stuck.open.clear()
    writer = RequestWriter(stuck.insert, capacity=10_000, batch_size=100, write_timeout_s=60, shutdown_timeout_s=0.2)
    writer.start()
    for r in RECORDS[:250]:
        writer.submit(r)
    started = time.perf_counter()
    await writer.close()
    assert time.perf_counter() - started < 2.0
    stats = writer.stats()
    assert stats.dropped_at_shutdown == 250 and stats.written == 0 and accounted(stats)


async def test_the_pruner_runs_at_start_and_then_every_interval():
    calls: list[object] = []
    ran = asyncio.Event()

    async def prune(before):
        calls.append(before)
        if len(calls) == 1:
            raise ConnectionRefusedError("down")  # a failed run is retried next interval
        ran.set()
        return 3

    from datetime import datetime, timezone

    now = datetime(2025, 6, 10, tzinfo=timezone.utc)
    pruner = RetentionPruner(prune, retention_days=7, interval_s=0.01, now=lambda: now)
    pruner.start()
    await asyncio.wait_for(ran.wait(), 5)
    await pruner.close()
    assert calls[0] == datetime(2025, 6, 3, tzinfo=timezone.utc) and len(calls) >= 2 and pruner.last_pruned == 3
    with pytest.raises(ValueError):
        RetentionPruner(prune, retention_days=0)
