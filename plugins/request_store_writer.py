"""The write path of ``request_store``: off the request, bounded, and lossy by design.

A request hands its record to :meth:`RequestWriter.submit`, a plain function that appends to a
bounded deque (O(1), no await, no lock, no I/O) or, when the deque is full, counts the record
as dropped and returns. One background task takes batches off the deque and inserts each in one
transaction. When the database is slow or down the deque fills, later records are dropped and
counted, a failed batch is dropped and counted, and the task backs off before trying again:
the request never waits for the database, and memory never grows past ``capacity`` records.

Drops are visible two ways: :meth:`RequestWriter.stats` (cumulative counters a metrics plugin
can export) and at most one warning log line per ``drop_log_interval_s``, summing what was
dropped since the last one. On shutdown the writer stops accepting, flushes what is queued
within ``shutdown_timeout_s``, and counts the rest as dropped.

``submit`` must be called on the event loop's thread (every hook runs there).
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass

import structlog

from .request_store_record import RequestRecord

__all__ = ["RequestWriter", "WriterStats"]

InsertBatch = Callable[[Sequence[RequestRecord]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Cumulative counts since the writer started, and the queue right now.

    ``submitted`` counts every call of ``submit``; each such record is ``written``, in one of the
    ``dropped_*`` counters, or still ``queued`` / ``in_flight``.
    """

    submitted: int
    written: int
    dropped_queue_full: int
    """Refused by ``submit`` because the queue was at capacity (the database is slow or down)."""
    dropped_write_failed: int
    """In a batch the database refused or did not take in time. SQLite always knows a batch's
    outcome; with PostgreSQL a COPY cut off right after the server committed it counts here
    although its rows exist, so this is an upper bound."""
    dropped_at_shutdown: int
    """Still queued, or submitted after close, when the flush time ran out."""
    queued: int
    in_flight: int
    capacity: int
    batches_failed: int
    last_error: str | None
    """The kind of the last write failure (an exception class name), None once a write succeeds."""

    @property
    def dropped(self) -> int:
        return self.dropped_queue_full + self.dropped_write_failed + self.dropped_at_shutdown


class RequestWriter:
    """Batches records into a database, never making the caller wait.

    :param insert: writes one batch atomically (a backend's ``insert``); raises on failure.
    :param capacity: most records held in memory; past it ``submit`` drops.
    :param batch_size: most records per insert; a full batch is written at once.
    :param flush_interval_s: a partial batch waits at most this long before it is written.
    :param write_timeout_s: a write taking longer is abandoned and its batch dropped.
    :param retry_backoff_s: wait after a failed write, doubling to ``max_backoff_s``.
    """

    def __init__(
        self,
        insert: InsertBatch,
        *,
        capacity: int = 10_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.25,
        write_timeout_s: float = 5.0,
        retry_backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        drop_log_interval_s: float = 60.0,
        shutdown_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        if capacity < 1 or batch_size < 1:
            raise ValueError("capacity and batch_size must be at least 1")
        self._insert = insert
        self._capacity, self._batch_size = capacity, batch_size
        self._flush_interval_s, self._write_timeout_s = flush_interval_s, write_timeout_s
        self._retry_backoff_s, self._max_backoff_s = retry_backoff_s, max_backoff_s
        self._drop_log_interval_s, self._shutdown_timeout_s = drop_log_interval_s, shutdown_timeout_s
        self._clock = clock
        self._log = logger or structlog.get_logger("hookgate.request_store")
        self._queue: deque[RequestRecord] = deque()
        self._wakeup = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._accepting = True
        self._submitted = self._written = 0
        self._dropped_full = self._dropped_failed = self._dropped_shutdown = 0
        self._batches_failed = 0
        self._in_flight = 0
        self._last_error: str | None = None
        self._logged_dropped = 0
        self._last_drop_log: float | None = None

    # ------------------------------------------------------------------------ request path ---

    def submit(self, record: RequestRecord) -> bool:
        """Queue ``record`` for writing; False (and counted) when it had to be dropped."""
        self._submitted += 1
        if len(self._queue) >= self._capacity or not self._accepting:
            if self._accepting:
                self._dropped_full += 1
            else:
                self._dropped_shutdown += 1
            # Here rather than only in the background task, which may be stuck in a write
            # for up to write_timeout_s: a clock read, and a log line once per interval.
            self._report_drops()
            return False
        self._queue.append(record)
        if len(self._queue) >= self._batch_size:
            self._wakeup.set()
        return True

    def stats(self) -> WriterStats:
        """The counters now (cheap: a metrics scrape may call it every few seconds)."""
        return WriterStats(
            submitted=self._submitted,
            written=self._written,
            dropped_queue_full=self._dropped_full,
            dropped_write_failed=self._dropped_failed,
            dropped_at_shutdown=self._dropped_shutdown,
            queued=len(self._queue),
            in_flight=self._in_flight,
            capacity=self._capacity,
            batches_failed=self._batches_failed,
            last_error=self._last_error,
        )

    # --------------------------------------------------------------------------- lifecycle ---

    def start(self) -> None:
        """Start the background task (on the running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="request_store.writer")

    async def close(self) -> None:
        """Stop accepting, write what is queued within ``shutdown_timeout_s``, drop the rest."""
        self._accepting = False
        self._closing.set()
        self._wakeup.set()
        task, self._task = self._task, None
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=self._shutdown_timeout_s)
            if not done:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        self._dropped_shutdown += len(self._queue)
        self._queue.clear()
        self._report_drops(force=True)

    # ------------------------------------------------------------------------ background ---

    async def _run(self) -> None:
        backoff = self._retry_backoff_s
        while True:
            if len(self._queue) < self._batch_size and not self._closing.is_set():
                self._wakeup.clear()
                with suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_interval_s):
                        await self._wakeup.wait()
            if not self._queue:
                self._report_drops()
                if self._closing.is_set():
                    return
                continue
            count = min(self._batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(count)]
            ok = await self._write(batch)
            self._report_drops()
            if ok:
                backoff = self._retry_backoff_s
            elif not self._closing.is_set():
                # Do not hammer a database that is down; records meanwhile queue up to capacity.
                with suppress(TimeoutError):
                    async with asyncio.timeout(backoff):
                        await self._closing.wait()
                backoff = min(backoff * 2, self._max_backoff_s)

    async def _write(self, batch: list[RequestRecord]) -> bool:
        self._in_flight = len(batch)
        try:
            async with asyncio.timeout(self._write_timeout_s):
                await self._insert(batch)
        except asyncio.CancelledError:
            self._dropped_shutdown += len(batch)  # close() ran out of time mid-write
            raise
        except Exception as exc:  # any failure of the database must cost rows, never the writer
            self._dropped_failed += len(batch)
            self._batches_failed += 1
            self._last_error = type(exc).__name__
            return False
        finally:
            self._in_flight = 0
        self._written += len(batch)
        self._last_error = None
        return True

    def _report_drops(self, *, force: bool = False) -> None:
        """One warning per interval at most, with what was dropped since the previous one."""
        if not force and self._last_drop_log is not None and self._clock() - self._last_drop_log < self._drop_log_interval_s:
            return  # the common case on the drop path: one clock read
        dropped = self._dropped_full + self._dropped_failed + self._dropped_shutdown
        new = dropped - self._logged_dropped
        if new <= 0:
            return
        self._last_drop_log, self._logged_dropped = self._clock(), dropped
        self._log.warning(
            "request_store_rows_dropped",
            dropped=new,
            dropped_total=dropped,
            queue_full=self._dropped_full,
            write_failed=self._dropped_failed,
            at_shutdown=self._dropped_shutdown,
            last_error=self._last_error,
            queued=len(self._queue),
        )
