"""``retry``: the one owner of retries, with exponential backoff, full jitter and a budget.

At most ``max_attempts`` attempts in total. Between attempts it sleeps
``random(0, min(cap, base * 2**n))`` (tenacity's ``wait_random_exponential``: full jitter), or
longer when the upstream asked for it with ``retry-after-ms``/``Retry-After``. Only transient
failures are retried (upstream 408, 429, 500, 502, 503, 504, 529, connection errors, timeouts);
never a 4xx about the request, never a 429 meaning quota is exhausted (``insufficient_quota``).

It never waits past the request's deadline (set by the timeout plugin): when the wait the upstream
asked for does not fit, the client gets the 429 at once, with ``Retry-After`` passed on. On a
load-balanced route the upstream's ``Retry-After`` cools that one deployment down instead (the
core's pick skips it), so the next attempt goes after the usual backoff to another deployment; when
none is left the client gets the core's 429 with the earliest ``Retry-After``. A retry
budget per instance (retries at most ``budget_ratio`` of requests over ``budget_window_seconds``,
with a floor of ``budget_min_retries``) keeps an upstream outage from multiplying the load on it.

Streams are retried only until their first chunk (the core hands the chain a stream once its
first chunk is in hand): once a byte may have reached the client, a failure ends the stream
instead. Responses say how many attempts were made (``x-hookgate-attempts``); the core records
each one's outcome in ``ctx.attempts`` for the observers.

Where it sits is the operator's choice: listed before ``concurrency`` no slot is held while it
sleeps between attempts; after it, the slot is held across attempts. The breaker and the timeout
declare that they run inside it (their rules), so each attempt is judged and timed on its own.
"""
from __future__ import annotations

import asyncio
from collections import deque
from time import monotonic
from typing import Awaitable, Callable

import structlog
from pydantic import Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

from hookgate import GatewayError, PluginConfig, ProviderResponse, RequestContext, hookimpl
from hookgate.facts import DEADLINE
from hookgate.rules import Reads
from hookgate.upstream import is_retriable, retry_after_seconds

log = structlog.get_logger("hookgate.retry")


class RetryConfig(PluginConfig):
    """Settings of the retry plugin."""

    max_attempts: int = Field(3, ge=1, le=10, description="attempts in total, the first included")
    backoff_base_seconds: float = Field(0.5, gt=0, description="full-jitter window of the first retry; it doubles per retry")
    backoff_cap_seconds: float = Field(8.0, gt=0, description="largest backoff window")
    max_retry_after_seconds: float = Field(60.0, ge=0, description="never wait longer than this for an upstream's Retry-After")
    budget_ratio: float = Field(0.2, ge=0, le=10, description="retries allowed as a share of requests over the window")
    budget_window_seconds: float = Field(10.0, gt=0, description="the rolling window of the retry budget")
    budget_min_retries: int = Field(10, ge=0, description="retries always allowed per window, however few the requests")
    deadline_margin_seconds: float = Field(
        0.25, ge=0, description="a backoff is shortened so that at least this much of the deadline is left for the next attempt"
    )


class RetryBudget:
    """Counts requests and retries over a rolling window, in one-second buckets."""

    def __init__(self, ratio: float, window_seconds: float, min_retries: int) -> None:
        self.ratio, self.window, self.min_retries = ratio, window_seconds, min_retries
        self._buckets: deque[list[float]] = deque()  # [second, requests, retries]
        self._requests = 0.0
        self._retries = 0.0

    def _bucket(self) -> list[float]:
        now = monotonic()
        second = float(int(now))
        while self._buckets and self._buckets[0][0] <= now - self.window:
            _, requests, retries = self._buckets.popleft()
            self._requests -= requests
            self._retries -= retries
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0.0, 0.0])
        return self._buckets[-1]

    def record_request(self) -> None:
        self._bucket()[1] += 1
        self._requests += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is used up."""
        bucket = self._bucket()
        if self._retries >= max(self.min_retries, self.ratio * self._requests):
            return False
        bucket[2] += 1
        self._retries += 1
        return True


class Retry:
    """Retries transient upstream failures with full-jitter backoff, within deadline and budget."""

    Config = RetryConfig
    roles = ("retry",)
    rules = (Reads(DEADLINE, "call_provider", why="never waits past the request's deadline"),)

    def __init__(self, config: RetryConfig) -> None:
        self.config = config
        self.budget = RetryBudget(config.budget_ratio, config.budget_window_seconds, config.budget_min_retries)
        self._jitter = wait_random_exponential(multiplier=config.backoff_base_seconds, max=config.backoff_cap_seconds)

    @hookimpl
    async def call_provider(
        self, ctx: RequestContext, call_next: Callable[[RequestContext], Awaitable[ProviderResponse]]
    ) -> ProviderResponse:
        self.budget.record_request()
        made = 1
        try:
            # The first attempt runs bare: tenacity's loop is built only once an attempt failed in
            # a way worth retrying (building and running it for every request was some 20 % of a
            # miss's instructions, measured with callgrind). It then replays that failure as its
            # own first attempt, so its stop, wait and budget decide exactly as they would have.
            try:
                return await call_next(ctx)
            except GatewayError as error:
                if self.config.max_attempts == 1 or not is_retriable(error):
                    raise
                failed: GatewayError | None = error
            retrying = AsyncRetrying(
                retry=retry_if_exception(lambda exc: isinstance(exc, GatewayError) and is_retriable(exc)),
                wait=lambda state: self._wait(state, ctx),
                stop=stop_after_attempt(self.config.max_attempts) | (lambda state: self._must_stop(ctx, state)),
                sleep=asyncio.sleep,
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    if failed is not None:
                        replayed, failed = failed, None
                        raise replayed
                    made += 1
                    return await call_next(ctx)
        finally:
            ctx.response_headers["x-hookgate-attempts"] = str(made)
        raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover

    def _wait(self, state: RetryCallState, ctx: RequestContext | None = None) -> float:
        """Full jitter, shortened to leave the deadline's last moments for the next attempt, or
        the upstream's Retry-After when it asks for longer (never shortened: it is the upstream's
        demand, and :meth:`_must_stop` gives up instead when it does not fit)."""
        jitter = self._jitter(state)
        if ctx is not None:
            jitter = min(jitter, max(0.0, ctx.remaining() - self.config.deadline_margin_seconds))
        error = state.outcome.exception() if state.outcome else None
        if ctx is not None and ctx.route is not None and ctx.route.balanced is not None:
            return jitter  # the deployment that asked to wait is cooling down; another takes the retry
        asked = retry_after_seconds(error.headers) if isinstance(error, GatewayError) else None
        return max(jitter, asked) if asked is not None else jitter

    def _must_stop(self, ctx: RequestContext, state: RetryCallState) -> bool:
        """Stop when the next wait would not leave time for an attempt, or the budget is spent."""
        sleep = state.upcoming_sleep
        room = ctx.remaining() - self.config.deadline_margin_seconds
        # A jittered wait was already shortened to fit (the tolerance absorbs the clock moving on
        # since); only an upstream's Retry-After, or a deadline already spent, fails this.
        if sleep > self.config.max_retry_after_seconds or room <= 0 or sleep > room + 0.01:
            log.info("retry_skipped", request_id=ctx.request_id, reason="wait does not fit the deadline", wait_s=round(sleep, 3))
            return True
        if not self.budget.try_spend():
            log.warning("retry_budget_exhausted", request_id=ctx.request_id)
            return True
        return False
