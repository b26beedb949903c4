"""``timeout``: one deadline per request, a budget per attempt, and stream-aware limits.

Every request gets an absolute deadline (``deadline_seconds``, per model in ``per_model``, or per
request with the ``x-hookgate-timeout`` header, capped by ``max_deadline_seconds``). Each attempt
through this middleware gets ``min(per_attempt_seconds, time left)``, and none starts with less
than ``min_attempt_seconds`` left: a doomed attempt only loads the upstream.

Streams are limited differently, since a long answer may rightly take minutes: the attempt must
produce its first chunk within ``first_token_seconds`` (and the attempt budget), then no gap
between chunks may exceed ``chunk_gap_seconds``, and the whole stream must end by the deadline.

On expiry the upstream call is cancelled (its connection closed) and the client gets a 504 in
OpenAI's error shape, or mid-stream an SSE error event and a clean end. Its rules put it inside
retry and concurrency: each attempt gets its own budget, and waiting for a slot is not counted
against the attempt. The deadline it sets is the :data:`~hookgate.facts.DEADLINE` fact that retry
reads.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
from time import perf_counter
from typing import Any, Awaitable, Callable

from pydantic import Field, model_validator

from hookgate import CompletionStream, GatewayTimeout, InvalidRequest, PluginConfig, ProviderResponse, RequestContext, hookimpl
from hookgate.facts import ATTEMPT_DEADLINE, DEADLINE
from hookgate.rules import After, Produces


class TimeoutConfig(PluginConfig):
    """Settings of the timeout plugin (all in seconds)."""

    deadline_seconds: float = Field(60.0, gt=0, description="time a whole request may take, attempts and waits included")
    per_model: dict[str, float] = Field(default_factory=dict, description="deadline per public model name, overriding deadline_seconds")
    max_deadline_seconds: float = Field(600.0, gt=0, description="largest deadline a client may ask for with the request header")
    request_header: str = Field("x-hookgate-timeout", description="request header with a client's own deadline in seconds")
    per_attempt_seconds: float = Field(30.0, gt=0, description="limit of one upstream attempt (for a stream: until its first chunk)")
    min_attempt_seconds: float = Field(0.25, ge=0, description="no attempt starts with less time than this left")
    first_token_seconds: float = Field(30.0, gt=0, description="streams: time from the attempt's start to its first chunk")
    chunk_gap_seconds: float = Field(30.0, gt=0, description="streams: longest silence allowed between two chunks")

    @model_validator(mode="after")
    def _sane(self) -> TimeoutConfig:
        for model, seconds in self.per_model.items():
            if seconds <= 0:
                raise ValueError(f"per_model[{model!r}] must be positive")
        return self


class Timeout:
    """Per-request deadline, per-attempt limit, time-to-first-token and chunk-gap limits."""

    Config = TimeoutConfig
    roles = ("timeout",)
    rules = (
        Produces(DEADLINE, "before_request"),
        Produces(ATTEMPT_DEADLINE, "call_provider"),
        After("retry", "call_provider", why="each attempt gets its own budget"),
        After("concurrency", "call_provider", why="waiting for a slot is not the attempt's time"),
    )

    def __init__(self, config: TimeoutConfig) -> None:
        self.config = config
        self._deadlines: _Deadlines | None = None

    def _watch(self) -> _Watch:
        """A watch of the current task, on the running loop's :class:`_Deadlines`."""
        deadlines = self._deadlines
        watch = deadlines.watch() if deadlines is not None else None
        if watch is None:  # the first wait, or the plugin now runs on another loop
            self._deadlines = deadlines = _Deadlines(asyncio.get_running_loop())
            watch = deadlines.watch()
            assert watch is not None, "called outside a task"
        return watch

    @hookimpl
    async def before_request(self, ctx: RequestContext) -> None:
        seconds = self.config.per_model.get(ctx.model or "", self.config.deadline_seconds)
        asked = ctx.headers.get(self.config.request_header)
        if asked is not None:
            try:
                seconds = float(asked)
            except ValueError:
                seconds = -1.0
            if not 0 < seconds < float("inf"):
                raise InvalidRequest(f"The {self.config.request_header} header must be a positive number of seconds.", code="invalid_timeout")
            seconds = min(seconds, self.config.max_deadline_seconds)
        deadline = ctx.started_at + seconds
        earlier = ctx.get(DEADLINE)
        ctx[DEADLINE] = deadline if earlier is None else min(earlier, deadline)

    @hookimpl
    async def call_provider(
        self, ctx: RequestContext, call_next: Callable[[RequestContext], Awaitable[ProviderResponse]]
    ) -> ProviderResponse:
        remaining = ctx.remaining()
        if remaining < self.config.min_attempt_seconds:
            raise GatewayTimeout("The request's deadline passed before the provider could be asked again.", code="timeout")
        budget = min(self.config.per_attempt_seconds, remaining)
        if ctx.stream:
            budget = min(budget, self.config.first_token_seconds)
        ctx[ATTEMPT_DEADLINE] = perf_counter() + budget
        watch = self._watch()  # as asyncio.timeout, on a timer every attempt shares
        watch.arm(budget)
        try:
            response = await call_next(ctx)  # a stream comes back with its first chunk in hand
        except asyncio.CancelledError:
            if watch.expired():
                raise GatewayTimeout(f"The provider did not answer within {budget:.2f} s.", code="timeout") from None
            raise
        else:
            watch.expired()  # a cancellation it caused that the call swallowed is undone, as asyncio.timeout does
        finally:
            watch.close()
        if isinstance(response, CompletionStream):
            # A batched stream is watched batch by batch: a read's chunks arrive together, so
            # the gap between two batches is the gap between their chunks. The guard sees only
            # the waits, never a chunk, so the stream stays the provider's own.
            gaps = _StreamGaps(self, ctx)
            return response.with_guard(gaps, done=gaps.close)
        return response


class _StreamGaps:
    """The waits of one stream (:meth:`hookgate.CompletionStream.with_guard`): each for at most
    ``chunk_gap_seconds``, and all of them before the request's deadline.

    One watch follows the whole stream, its deadline moved on with each wait (on the timer every
    wait shares, :class:`_Deadlines`), rather than an ``asyncio.timeout`` per chunk: a timer
    made and cancelled for each chunk cost some 15 % of a streamed answer's CPU (py-spy, bench).
    It is made at the first wait, in the task that reads the stream.
    """

    __slots__ = ("_plugin", "_gap", "_deadline", "_watch", "_end", "_waited_from", "_late")

    def __init__(self, plugin: Timeout, ctx: RequestContext) -> None:
        self._plugin = plugin
        self._gap = plugin.config.chunk_gap_seconds
        self._deadline = ctx.get(DEADLINE)  # read once: the request's deadline, on perf_counter's clock
        self._watch: _Watch | None = None
        self._end = float("inf")
        self._waited_from = 0.0
        self._late = False

    def __call__(self) -> _StreamGaps:
        return self

    def __enter__(self) -> None:
        watch = self._watch
        if watch is None:
            watch = self._watch = self._plugin._watch()
            if self._deadline is not None:
                self._end = watch.clock() + (self._deadline - perf_counter())
        self._waited_from = now = watch.clock()
        self._late = late = now + self._gap >= self._end  # the request's deadline comes before the gap's end
        watch.arm_at(self._end if late else now + self._gap)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> None:
        watch = self._watch
        assert watch is not None
        watch.disarm()
        if kind is asyncio.CancelledError and watch.expired():
            reason = "the request's deadline passed" if self._late else f"no chunk arrived for {watch.clock() - self._waited_from:.2f} s"
            raise GatewayTimeout(f"The provider's stream stopped: {reason}.", code="timeout") from None

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()


class _Deadlines:
    """The deadlines of every wait the plugin watches on one event loop, on one timer.

    A timer per wait (``loop.call_at`` when an attempt or a stream starts, cancelled when it
    ends: 1.6 µs with uvloop measured alone, and on Python 3.11 two ``getpid`` system calls to
    find the loop and the task) was paid on every request. Here a wait is an entry in a heap,
    and the one timer is set for the earliest entry; the waits of one pipeline mostly have the
    same budget, so a new entry comes after the earliest and moves nothing.

    A watch's deadline only grows (an attempt has one; a stream's moves on with each read), so
    its entry is due at or before its current deadline. When an entry comes due, its watch's task
    is cancelled if the watch is still waiting past its deadline; a watch waiting with a later
    deadline is queued again at it, and one not waiting is queued again by its next
    :meth:`_Watch.arm_at`. Closed watches' entries are dropped as they come due, or all at once
    when they are most of the heap: it holds about twice the waits in flight, not a budget's
    worth of finished requests.
    """

    __slots__ = ("loop", "_heap", "_order", "_closed", "_timer", "_timer_at")

    _COMPACT_ABOVE = 64
    """Closed entries tolerated in the heap before it is rebuilt without them (when they are
    also more than half of it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()  # ties broken by arrival, never by comparing watches
        self._closed = 0
        """Entries in the heap whose watch is closed."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    def watch(self) -> _Watch | None:
        """A watch of the current task, not armed; None when no task of this loop runs."""
        task = asyncio.current_task(self.loop)
        return None if task is None else _Watch(self, task)

    def queue(self, watch: _Watch, deadline: float) -> None:
        heapq.heappush(self._heap, (deadline, next(self._order), watch))
        if deadline < self._timer_at:
            self._set_timer(deadline)

    def closed_one(self) -> None:
        """A queued watch was closed."""
        self._closed += 1
        if self._closed > self._COMPACT_ABOVE and 2 * self._closed > len(self._heap):
            self._heap = [entry for entry in self._heap if not entry[2].closed]
            heapq.heapify(self._heap)
            self._closed = 0

    def _set_timer(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = self.loop.call_at(at, self._fire), at

    def _fire(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        heap, now = self._heap, self.loop.time()
        while heap and heap[0][0] <= now:
            watch = heapq.heappop(heap)[2]
            if watch.closed:
                self._closed -= 1
                continue
            deadline = watch.deadline
            if deadline is None:  # not waiting now
                watch.queued = False
            elif deadline <= now:
                watch.queued = False
                watch.fire()
            else:
                heapq.heappush(heap, (deadline, next(self._order), watch))
        if heap:
            self._set_timer(heap[0][0])


class _Watch:
    """A deadline for each wait of one task (an attempt, or each chunk of a stream).

    :meth:`arm_at` before a wait and :meth:`disarm` after it only note the deadline, which may
    only grow; the shared timer (:class:`_Deadlines`) cancels the task if it is still waiting
    past it. A cancellation it caused is told apart from any other, as ``asyncio.timeout`` does,
    by :meth:`expired`.
    """

    __slots__ = ("_deadlines", "_task", "_cancelling", "deadline", "queued", "closed", "_fired")

    def __init__(self, deadlines: _Deadlines, task: asyncio.Task[Any]) -> None:
        self._deadlines = deadlines
        self._task = task
        self._cancelling = task.cancelling()
        self.deadline: float | None = None
        self.queued = False
        self.closed = False
        self._fired = False

    @property
    def clock(self) -> Callable[[], float]:
        """The event loop's clock, which :meth:`arm_at` takes its deadlines on."""
        return self._deadlines.loop.time

    def arm(self, seconds: float) -> None:
        self.arm_at(self._deadlines.loop.time() + seconds)

    def arm_at(self, deadline: float) -> None:
        self.deadline = deadline
        if not self.queued:
            self.queued = True
            self._deadlines.queue(self, deadline)

    def disarm(self) -> None:
        self.deadline = None

    def expired(self) -> bool:
        """Whether the CancelledError being handled is this watch's own (and it is then undone)."""
        return self._fired and self._task.uncancel() <= self._cancelling

    def close(self) -> None:
        if not self.closed:
            self.closed, self.deadline = True, None
            if self.queued:
                self._deadlines.closed_one()

    def fire(self) -> None:
        self._fired = True
        self._task.cancel()
