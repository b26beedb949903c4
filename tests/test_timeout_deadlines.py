"""timeout's shared timer: every attempt's budget is kept on one timer per event loop, and each
attempt still ends on its own deadline, whatever the others' budgets, with no backlog of the
attempts that finished."""
from __future__ import annotations

import asyncio
import time
from time import perf_counter

import pytest

from hookgate import Completion, GatewayTimeout, RequestContext
from hookgate.facts import DEADLINE
from hookgate.plugins.timeout import Timeout, TimeoutConfig

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def request(deadline_in: float | None = None) -> RequestContext:
    ctx = RequestContext(request_id="r", body=dict(BODY), headers={})
    if deadline_in is not None:
        ctx[DEADLINE] = perf_counter() + deadline_in
    return ctx


async def answered(ctx: RequestContext) -> Completion:
    return Completion({"choices": []})


async def hangs(ctx: RequestContext) -> Completion:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_an_attempt_with_a_shorter_budget_than_those_in_flight_ends_on_its_own_deadline():
    plugin = Timeout(TimeoutConfig(per_attempt_seconds=30, min_attempt_seconds=0))
    long_ones = [asyncio.ensure_future(plugin.call_provider(request(), hangs)) for _ in range(3)]
    await asyncio.sleep(0)  # their 30 s deadlines are on the timer
    started = time.monotonic()
    with pytest.raises(GatewayTimeout):
        await plugin.call_provider(request(deadline_in=0.1), hangs)
    assert time.monotonic() - started < 1.0
    assert not any(task.done() for task in long_ones), "the others keep their own deadlines"
    for task in long_ones:
        task.cancel()
    for task in long_ones:
        with pytest.raises(asyncio.CancelledError):  # a cancellation not the watch's own passes as one
            await task


async def test_thousands_of_finished_attempts_leave_no_backlog_and_a_later_hang_still_ends_on_time():
    plugin = Timeout(TimeoutConfig(per_attempt_seconds=30, min_attempt_seconds=0))
    for _ in range(5000):
        await plugin.call_provider(request(), answered)
    deadlines = plugin._deadlines
    assert deadlines is not None
    assert len(deadlines._heap) <= 2 * deadlines._COMPACT_ABOVE + 2, "finished attempts are dropped, not kept for their 30 s"
    started = time.monotonic()
    with pytest.raises(GatewayTimeout):
        await plugin.call_provider(request(deadline_in=0.1), hangs)
    assert time.monotonic() - started < 1.0


async def test_a_stream_gap_is_watched_on_the_shared_timer_next_to_attempts():
    from hookgate import CompletionStream

    plugin = Timeout(TimeoutConfig(per_attempt_seconds=30, chunk_gap_seconds=0.1, first_token_seconds=30, min_attempt_seconds=0))
    hanging_attempt = asyncio.ensure_future(plugin.call_provider(request(), hangs))
    released = asyncio.Event()

    async def chunks():
        yield {"choices": [{"index": 0, "delta": {"content": "a"}}]}
        await released.wait()  # the upstream stalls after its first chunk
        yield {"choices": []}

    async def streams(ctx: RequestContext) -> CompletionStream:
        return CompletionStream(chunks(), first_chunk_received=True)

    ctx = request()
    ctx.body["stream"] = True
    stream = await plugin.call_provider(ctx, streams)
    received = []

    async def read_all() -> None:
        async for chunk in stream:
            received.append(chunk)

    started = time.monotonic()
    with pytest.raises(GatewayTimeout, match="no chunk arrived"):
        await asyncio.wait_for(read_all(), timeout=5)  # a TimeoutError instead if the gap were not watched
    assert len(received) == 1 and time.monotonic() - started < 1.0
    assert not hanging_attempt.done()
    hanging_attempt.cancel()
