"""``circuit_breaker``: stop sending requests to a route that keeps failing, and recover by itself.

One breaker per route (provider and model). It opens after ``failure_threshold`` consecutive
upstream failures, or when at least ``min_requests`` calls in the last ``window_seconds`` failed
at ``error_ratio`` or more. While open, requests fail fast with a 503 and ``Retry-After`` (so
retry does not hammer the route either), or go to the model's fallback route when it has one. After ``open_seconds`` it lets ``half_open_probes``
requests through: a success closes it, a failure opens it again.

Only upstream trouble counts (5xx, 529, timeouts, connection errors); a 4xx about the request or
an upstream 429 says nothing about the route's health. State is per instance, in a bounded table:
a breaker not used for longer than ``window_seconds`` and ``open_seconds`` is forgotten (a fresh
one is the same thing), and at most ``max_routes`` are kept, so a client inventing model names
under a pattern route (``[models."groq/*"]``) cannot grow it. Its rules put it
inside retry (each attempt is judged) and outside concurrency (a rejected request takes no slot).

On a load-balanced route the deployment is picked after this plugin has run, at the innermost
end of the chain, so it judges each *deployment* (its own upstream, ``provider/model``, the same
breaker as a plain route to that upstream): it hands the core's pick an
:class:`~hookgate.balancing.UpstreamGate` (``UPSTREAM_GATE``), the pick skips deployments whose
circuit is open, and the request goes to another deployment instead of failing fast.
"""
from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field
from time import monotonic
from typing import Awaitable, Callable, Literal

import structlog
from pydantic import Field

from hookgate import GatewayError, PluginConfig, ProviderResponse, RequestContext, ServiceUnavailable, hookimpl
from hookgate.bounds import RecentTable, clip
from hookgate.facts import UPSTREAM_GATE
from hookgate.rules import After, Before, Produces
from hookgate.upstream import is_upstream_failure

log = structlog.get_logger("hookgate.circuit_breaker")


class CircuitBreakerConfig(PluginConfig):
    """Settings of the circuit breaker."""

    failure_threshold: int = Field(5, ge=1, description="consecutive upstream failures that open the breaker")
    error_ratio: float = Field(0.5, gt=0, le=1, description="failure share over the window that opens it")
    min_requests: int = Field(20, ge=1, description="calls needed in the window before error_ratio applies")
    window_seconds: float = Field(30.0, gt=0, description="the rolling window for error_ratio")
    open_seconds: float = Field(30.0, gt=0, description="how long it stays open before probing")
    half_open_probes: int = Field(1, ge=1, description="requests let through at once to probe a recovering route")
    max_routes: int = Field(
        10_000, ge=1, description="breakers kept (one per route); past it the least recently used goes (pattern routes take any model name)"
    )


WINDOW_BUCKETS = 30
"""Buckets a breaker's ``window_seconds`` is counted in."""


@dataclass
class Breaker:
    """The state of one route."""

    config: CircuitBreakerConfig
    state: Literal["closed", "open", "half_open"] = "closed"
    consecutive_failures: int = 0
    opened_at: float = 0.0
    probes_in_flight: int = 0
    window: deque[list[int]] = field(default_factory=deque)
    """The calls and failures of the last ``window_seconds`` in :data:`WINDOW_BUCKETS` buckets of
    ``[bucket number, calls, failures]``, oldest first: memory and the cost of a verdict stay the
    same whatever the request rate (a list of every outcome held some 75,000 at 2,500 requests/s,
    and each failure counted them all). The window is exact to a bucket's width."""
    calls: int = 0
    failures: int = 0

    def usable(self) -> bool:
        """Whether :meth:`allow` would let a request through now, without changing anything."""
        if self.state == "open" and monotonic() - self.opened_at < self.config.open_seconds:
            return False
        if self.state == "closed":
            return True
        probes = self.probes_in_flight if self.state == "half_open" else 0
        return probes < self.config.half_open_probes

    def allow(self) -> bool:
        if self.state == "open":
            if monotonic() - self.opened_at < self.config.open_seconds:
                return False
            self.state, self.probes_in_flight = "half_open", 0
        if self.state == "half_open":
            if self.probes_in_flight >= self.config.half_open_probes:
                return False
            self.probes_in_flight += 1
        return True

    def retry_after(self) -> int:
        return max(1, math.ceil(self.config.open_seconds - (monotonic() - self.opened_at)))

    def record(self, failed: bool) -> str | None:
        """Record one outcome; return the new state when it changed."""
        now = monotonic()
        self._count(now, failed)
        if self.state == "half_open":
            self.probes_in_flight = max(0, self.probes_in_flight - 1)
            if failed:
                return self._open(now)
            self.state, self.consecutive_failures = "closed", 0
            self.window.clear()
            self.calls = self.failures = 0
            return "closed"
        if not failed:
            self.consecutive_failures = 0
            return None
        self.consecutive_failures += 1
        ratio_tripped = self.calls >= self.config.min_requests and self.failures / self.calls >= self.config.error_ratio
        if self.state == "closed" and (self.consecutive_failures >= self.config.failure_threshold or ratio_tripped):
            return self._open(now)
        return None

    def _count(self, now: float, failed: bool) -> None:
        """Add one outcome to the window, first dropping the buckets wholly older than it."""
        window = self.window
        number = int(now * WINDOW_BUCKETS / self.config.window_seconds)  # this outcome's bucket
        if window and window[-1][0] == number:
            bucket = window[-1]
        else:
            while window and window[0][0] < number - WINDOW_BUCKETS:  # wholly older than the window
                _, calls, failures = window.popleft()
                self.calls -= calls
                self.failures -= failures
            bucket = [number, 0, 0]
            window.append(bucket)
        bucket[1] += 1
        self.calls += 1
        if failed:
            bucket[2] += 1
            self.failures += 1

    def forget_probe(self) -> None:
        """A probe ended without a verdict (cancelled, or a 4xx): let another one through."""
        if self.state == "half_open":
            self.probes_in_flight = max(0, self.probes_in_flight - 1)

    def _open(self, now: float) -> str:
        self.state, self.opened_at, self.consecutive_failures = "open", now, 0
        return "open"


class CircuitBreaker:
    """Fails fast on routes that keep failing; half-open probes close the breaker again."""

    Config = CircuitBreakerConfig
    roles = ("circuit_breaker",)
    rules = (
        After("retry", "call_provider", why="each attempt is judged, not the whole request"),
        Before("concurrency", "call_provider", why="a request refused by an open circuit takes no slot"),
        Produces(UPSTREAM_GATE, "call_provider"),
    )

    def __init__(self, config: CircuitBreakerConfig) -> None:
        self.config = config
        idle = max(config.window_seconds, config.open_seconds)
        self.breakers: RecentTable[str, Breaker] = RecentTable(config.max_routes, idle_seconds=idle)

    def breaker(self, route: str) -> Breaker:
        return self.breakers.setdefault(route, lambda: Breaker(self.config))

    @hookimpl
    async def call_provider(
        self, ctx: RequestContext, call_next: Callable[[RequestContext], Awaitable[ProviderResponse]]
    ) -> ProviderResponse:
        if ctx.route is not None and ctx.route.balanced is not None:
            return await self._judge_deployment(ctx, call_next)
        route = f"{ctx.provider_name}/{clip(ctx.route.upstream_model if ctx.route else ctx.model)}"
        breaker = self.breaker(route)
        if not breaker.allow():
            raise ServiceUnavailable(
                f"The route {route} is failing; requests to it are paused (circuit open).",
                code="circuit_open",
                headers={"Retry-After": str(breaker.retry_after())},
            )
        try:
            response = await call_next(ctx)
        except BaseException as error:
            self._judge(route, breaker, error)
            raise
        self._judge(route, breaker, None)
        return response

    async def _judge_deployment(
        self, ctx: RequestContext, call_next: Callable[[RequestContext], Awaitable[ProviderResponse]]
    ) -> ProviderResponse:
        """A balanced route: the core's pick asks the gate, and the deployment it claimed is judged."""
        gate = _Gate(self)
        ctx[UPSTREAM_GATE] = gate
        try:
            response = await call_next(ctx)
        except BaseException as error:
            if gate.claimed is not None:
                self._judge(gate.claimed, gate.breaker, error)  # type: ignore[arg-type]
            raise
        if gate.claimed is not None:
            self._judge(gate.claimed, gate.breaker, None)  # type: ignore[arg-type]
        return response

    def _judge(self, route: str, breaker: Breaker, error: BaseException | None) -> None:
        """Count one attempt's outcome: only upstream trouble is a failure."""
        if error is None:
            self._record(route, breaker, failed=False)
        elif isinstance(error, GatewayError):
            if is_upstream_failure(error):
                self._record(route, breaker, failed=True)
            else:
                breaker.forget_probe()
        elif isinstance(error, (asyncio.CancelledError, GeneratorExit)):
            breaker.forget_probe()
        elif isinstance(error, Exception):
            self._record(route, breaker, failed=True)

    def _record(self, route: str, breaker: Breaker, *, failed: bool) -> None:
        change = breaker.record(failed)
        if change is not None:
            log.warning("circuit_" + change, route=route)


class _Gate:
    """The breaker's answer to one request's deployment pick (hookgate.balancing.UpstreamGate)."""

    __slots__ = ("plugin", "claimed", "breaker")

    def __init__(self, plugin: CircuitBreaker) -> None:
        self.plugin = plugin
        self.claimed: str | None = None
        self.breaker: Breaker | None = None

    def usable(self, upstream: str) -> bool:
        breaker = self.plugin.breakers.get(upstream)
        return breaker is None or breaker.usable()

    def claim(self, upstream: str) -> bool:
        breaker = self.plugin.breaker(upstream)
        if not breaker.allow():
            return False
        self.claimed, self.breaker = upstream, breaker
        return True
