"""Retention of ``request_store``: rows older than N days are deleted in the background.

One prune right after start-up (a gateway that was down for a week catches up at once), then one
every ``interval_s``. Deletion goes in short batches (the backend's ``prune``), so it never holds
the table's write lock for long. With PostgreSQL every instance prunes; the deletes are
idempotent, so several instances pruning together only repeat a cheap index range scan.
A failed prune is logged and tried again at the next interval.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import datetime, timedelta, timezone

import structlog

__all__ = ["RetentionPruner"]

Prune = Callable[[datetime], Awaitable[int]]


class RetentionPruner:
    """Deletes rows older than ``retention_days`` every ``interval_s``.

    :param prune: deletes the rows older than a given time and returns how many (a backend's
        ``prune``).
    :param now: the clock, for tests.
    """

    def __init__(
        self,
        prune: Prune,
        *,
        retention_days: float,
        interval_s: float = 3600.0,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        if retention_days <= 0:
            raise ValueError("retention_days must be positive")
        self._prune, self._retention = prune, timedelta(days=retention_days)
        self._interval_s, self._now = interval_s, now
        self._task: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("hookgate.request_store")
        self.last_pruned: int | None = None
        """Rows the last successful run deleted (None before the first)."""
        self.runs = 0
        """Completed runs, failed or not."""

    def cutoff(self) -> datetime:
        """Rows before this time are due for deletion."""
        return self._now() - self._retention

    async def run_once(self) -> int:
        """Prune now; returns the rows deleted."""
        deleted = await self._prune(self.cutoff())
        self.last_pruned = deleted
        if deleted:
            self._log.info("request_store_pruned", deleted=deleted, retention_days=self._retention.days)
        return deleted

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="request_store.retention")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the database may be down: try again next interval
                self._log.warning("request_store_prune_failed", error=type(exc).__name__, detail=str(exc)[:200])
            self.runs += 1
            await asyncio.sleep(self._interval_s)
