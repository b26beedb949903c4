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
from time import perf_counter
from typing import Any, AsyncIterator, Awaitable, Callable

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
        watch = _ChunkWatch()  # one timer, as asyncio.timeout's but without its context manager's cost
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
            # the gap between two batches is the gap between their chunks.
            if response.batched:
                return CompletionStream.of_batches(self._limited(ctx, response.batches()), close=response.aclose, first_chunk_received=True)
            return CompletionStream(self._limited(ctx, response.__aiter__()), close=response.aclose, first_chunk_received=True)
        return response

    async def _limited(self, ctx: RequestContext, iterator: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """Relay a stream's chunks (or batches of them), failing when one is late or the
        deadline passes.

        One timer watches the whole stream (:class:`_ChunkWatch`) rather than an
        ``asyncio.timeout`` per chunk: a stream's chunks mostly arrive many to a read, and a timer
        made and cancelled for each cost some 15 % of a streamed answer's CPU (py-spy, bench)."""
        gap = self.config.chunk_gap_seconds
        watch = _ChunkWatch()
        clock = watch.clock
        deadline = ctx.get(DEADLINE)  # read once: the request's deadline, on the event loop's clock
        end = float("inf") if deadline is None else clock() + (deadline - perf_counter())
        try:
            while True:
                waited_from = clock()
                late = waited_from + gap >= end  # the request's deadline comes before the gap's end
                watch.arm_at(end if late else waited_from + gap)
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if not watch.expired():
                        raise
                    reason = "the request's deadline passed" if late else f"no chunk arrived for {clock() - waited_from:.2f} s"
                    raise GatewayTimeout(f"The provider's stream stopped: {reason}.", code="timeout") from None
                finally:
                    watch.disarm()
                yield chunk
        finally:
            watch.close()


class _ChunkWatch:
    """A deadline for each wait of one task (an attempt, or each chunk of a stream), on one timer
    that is re-armed only when it fires.

    :meth:`arm` before a wait and :meth:`disarm` after it only note the deadline; the timer,
    when it fires, cancels the task if it is still waiting past the deadline and otherwise moves
    itself to the current deadline (deadlines only grow, so it never fires late). A cancellation
    it caused is told apart from any other, as ``asyncio.timeout`` does, by :meth:`expired`.
    """

    __slots__ = ("_loop", "_task", "_cancelling", "_deadline", "_handle", "_fired")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        self._deadline: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._fired = False

    @property
    def clock(self) -> Callable[[], float]:
        """The event loop's clock, which :meth:`arm_at` takes its deadlines on."""
        return self._loop.time

    def arm(self, seconds: float) -> None:
        self.arm_at(self._loop.time() + seconds)

    def arm_at(self, deadline: float) -> None:
        self._deadline = deadline
        if self._handle is None:
            self._handle = self._loop.call_at(deadline, self._check)

    def disarm(self) -> None:
        self._deadline = None

    def expired(self) -> bool:
        """Whether the CancelledError being handled is this watch's own (and it is then undone)."""
        return self._fired and self._task.uncancel() <= self._cancelling

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        deadline = self._deadline
        if deadline is None:  # not waiting now: the next arm() starts the timer again
            return
        if self._loop.time() >= deadline:
            self._fired = True
            self._task.cancel()
        else:
            self._handle = self._loop.call_at(deadline, self._check)
