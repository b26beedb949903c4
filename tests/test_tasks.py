"""hookgate.tasks.stop_task: a shutdown that always ends, even for a loop that swallows a cancel."""
from __future__ import annotations

import asyncio

from hookgate.tasks import stop_task


async def test_a_loop_that_swallows_the_first_cancellation_is_still_stopped():
    started = asyncio.Event()
    swallowed = []

    async def stubborn() -> None:
        started.set()
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:  # the second cancellation is obeyed
                    raise
                swallowed.append(True)  # a library turning the first into something else

    task = asyncio.create_task(stubborn())
    await started.wait()
    await asyncio.wait_for(stop_task(task, recancel_seconds=0.05), timeout=5)
    assert task.cancelled() and swallowed == [True]


async def test_a_task_that_ended_or_none_is_left_as_it_is():
    async def done() -> int:
        return 1

    task = asyncio.create_task(done())
    await task
    await stop_task(task)
    await stop_task(None)
    assert task.result() == 1
