"""Work that follows a request without delaying it: bounded background tasks, awaited at shutdown.

Accounting writes that need not happen before the answer (settling a budget, correcting a rate
limit, adding a row to the usage ledger, storing a request record) are handed to the app's
:class:`BackgroundTasks` from ``request_finished``::

    from hookgate.tasks import background

    @hookimpl
    def request_finished(self, ctx, outcome):
        background(self.app).spawn(self._settle(ctx, outcome), name="budget.settle")

The set is bounded (``[gateway] max_background_tasks``): past the bound a task is not started, and
the loss is counted and logged once per interval, so an overload can never grow memory without
end. On shutdown the app waits up to ``[gateway] background_drain_seconds`` for what is still
running, then cancels the rest. A task that raises is logged with its name, never silently lost.
"""
from __future__ import annotations

import asyncio
from typing import Any, Coroutine

import structlog
from aiohttp import web

from .logs import IntervalLog

__all__ = ["BackgroundTasks", "BACKGROUND_TASKS", "background", "stop_task"]

log = structlog.get_logger("hookgate.tasks")


class BackgroundTasks:
    """The app's bounded set of background tasks."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.dropped = 0
        """Tasks not started because the set was full (each one's work was lost)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._overflow = IntervalLog(log, "background_tasks_full")

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Coroutine[Any, Any, Any], *, name: str) -> bool:
        """Run ``work`` in the background; False (and ``work`` closed unrun) when the set is full."""
        if len(self._tasks) >= self.limit:
            work.close()
            self.dropped += 1
            self._overflow.warning(task=name, limit=self.limit, dropped=self.dropped)
            return False
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._done)
        return True

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("background_task_failed", task=task.get_name(), exc_info=task.exception())

    async def idle(self) -> None:
        """Wait until no background task is running (tests, shutdown)."""
        await self._idle.wait()

    async def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for running tasks, then cancel the rest."""
        if self._tasks:
            try:
                async with asyncio.timeout(timeout):
                    await self.idle()
            except TimeoutError:
                leftovers = list(self._tasks)
                log.warning("background_tasks_cancelled", count=len(leftovers))
                for task in leftovers:
                    task.cancel()
                await asyncio.gather(*leftovers, return_exceptions=True)


BACKGROUND_TASKS = web.AppKey("hookgate_background_tasks", BackgroundTasks)
"""Where an app keeps its :class:`BackgroundTasks`."""


def background(app: web.Application) -> BackgroundTasks:
    """The app's background tasks (created by :func:`hookgate.server.create_app`)."""
    return app[BACKGROUND_TASKS]


async def stop_task(task: asyncio.Task[Any] | None, *, recancel_seconds: float = 1.0) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling it again every
    ``recancel_seconds`` while it runs.

    One ``cancel()`` is not always enough for a long-running loop: a library that catches the
    cancellation (or an ``asyncio.timeout`` expiring at the same moment, which turns it into a
    ``TimeoutError`` on Python 3.11) leaves the loop running, and a plain ``await`` of it then
    waits forever (a shutdown that never ends). Such a loop should also check a flag of its own.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=recancel_seconds)
    if not task.cancelled() and task.exception() is not None:
        log.warning("task_failed_while_stopping", task=task.get_name(), error=type(task.exception()).__name__)

