"""Load balancing across the deployments of one model: which deployment takes the next attempt.

A route (one public model name) may be served by several *deployments*: two OpenAI organisations,
an Azure-style endpoint, a vLLM pool, Groq as overflow. A :class:`Balancer` per route picks the
deployment for each attempt and hands out a :class:`Lease`; releasing the lease says how the
attempt went, which feeds the in-flight counts, latency averages and per-minute usage that the
strategies read. After a retriable error the caller asks again with the deployments already tried
in ``exclude``, so a retry lands on another deployment of the same route.

**Strategies** (``strategy`` of a ``[models.NAME]`` table) order the deployments of one tier:

* ``weighted`` (default): random, in proportion to ``weight``.
* ``least_busy``: fewest attempts in flight per unit of weight.
* ``lowest_latency``: lowest average latency (time to first token for streams, total time
  otherwise). With probability ``exploration`` (5 %) a pick is weighted-random instead, so a
  deployment that was slow keeps getting a trickle of traffic and is seen when it recovers; each
  sample weighs at least ``alpha`` (0.5) in the average, more after a quiet spell (half after
  ``half_life_seconds``), so a few fresh samples outweigh a stale average even when probes are
  sparse. Without exploration a slow deployment never gets traffic again; the defaults come from
  ``bench/balancing_overhead.py --exploration`` (recovery time against traffic spent on a slow
  deployment). Deployments within ``tolerance`` (10 %) of the best share its traffic by weight,
  so near-equal deployments do not flap.
* ``usage``: furthest from its limits, as the larger of the shares of ``requests_per_minute`` and
  ``tokens_per_minute`` used in the current window. A deployment without a limit of a kind counts
  as large as the route's largest limit of that kind; on a route with no limits at all this is the
  least-used deployment per unit of weight.

**Tiers**: every deployment has a ``tier`` (1 first). A tier is used only when no deployment of
the tiers before it can take the attempt: each is excluded, unhealthy (circuit open, key missing:
the injected ``healthy`` predicate), at its ``max_in_flight``, at its per-minute limits or cooling
down after an upstream 429. The limits of a deployment are enforced at pick time, atomically.

**State** lives in a :class:`BalancingState`: :class:`LocalBalancingState` (the default) keeps it
in this process, so with several gateway instances each counts only its own traffic and
enforces each limit on its own (N instances send up to N × the limit).
:class:`hookgate.balancing_redis.RedisBalancingState` shares in-flight counts (leases that expire
when an instance dies) and per-minute windows (decided in Lua on Redis's clock) across instances;
when Redis fails it falls back to per-instance state within a bounded time, logged once per
interval.

The module knows nothing of plugins, HTTP or the request context: the routing glue builds
:class:`Deployment` values from :class:`RouteBalancingConfig`, passes the health predicate, and
releases each lease with the attempt's outcome (:func:`outcome_of` maps an error to one).
"""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import random
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, Callable, Collection, Literal, Protocol, Sequence, final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import ClientDisconnected, GatewayError
from .upstream import EXHAUSTED_CODES, is_upstream_failure, retry_after_seconds

__all__ = [
    "StrategyName",
    "Outcome",
    "Refusal",
    "DeploymentConfig",
    "LatencyTuning",
    "RouteBalancingConfig",
    "Deployment",
    "deployments_from_config",
    "DeploymentLoad",
    "DeploymentStatus",
    "Strategy",
    "WeightedRandom",
    "LeastBusy",
    "LowestLatency",
    "LeastUsage",
    "strategy_for",
    "Balancer",
    "Lease",
    "NoDeploymentAvailable",
    "outcome_of",
    "Ticket",
    "AttemptReport",
    "Acquisition",
    "BalancingState",
    "LocalBalancingState",
    "UpstreamGate",
]

StrategyName = Literal["weighted", "least_busy", "lowest_latency", "usage"]

Outcome = Literal["success", "failure", "rate_limited", "abandoned"]
"""How an attempt ended, as far as the deployment's health is concerned:

* ``success``: answered; its latency is a sample.
* ``failure``: the upstream failed (5xx, timeout, connection); counts as a slow sample (at least
  twice the current average), so a deployment that fails fast does not look fast.
* ``rate_limited``: the upstream answered 429; the deployment cools down (``Retry-After``, else
  5 s) and takes nothing meanwhile.
* ``abandoned``: says nothing about the deployment (client gone, a 4xx about the request).
"""

Refusal = Literal["unhealthy", "in_flight_limit", "requests_limit", "tokens_limit", "cooling_down"]
"""Why a deployment could not take an attempt."""

LIMIT_REFUSALS = frozenset({"in_flight_limit", "requests_limit", "tokens_limit", "cooling_down"})

DEFAULT_COOLDOWN_SECONDS = 5.0
MAX_COOLDOWN_SECONDS = 300.0
MAX_DEPLOYMENTS_PER_ROUTE = 64

# ------------------------------------------------------------------------------------ config ---

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$"


class DeploymentConfig(BaseModel):
    """One entry of a route's ``deployments = [...]``."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        None, pattern=_NAME_PATTERN,
        description="shown in x-hookgate-deployment, logs and metrics; unique within the route (default: the provider name)",
    )
    provider: str = Field(min_length=1, max_length=128, description="the enabled provider that serves it")
    model: str | None = Field(None, min_length=1, max_length=256, description="upstream model name (default: the route's model)")
    weight: float = Field(1.0, gt=0, le=1_000_000, description="share of traffic for weighted choices")
    requests_per_minute: int | None = Field(None, ge=1, description="requests sent to it per sliding minute at most")
    tokens_per_minute: int | None = Field(None, ge=1, description="tokens (reserved, then actual) per sliding minute at most")
    max_in_flight: int | None = Field(None, ge=1, description="attempts in flight at once at most")
    tier: int = Field(1, ge=1, le=9, description="1 first; a tier is used only while every earlier tier refuses")
    api_key_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", description="environment variable holding its own key (default: the provider's)"
    )
    base_url: str | None = Field(None, min_length=1, max_length=2048, description="its own base URL (default: the provider's)")


class LatencyTuning(BaseModel):
    """How ``lowest_latency`` averages and explores."""

    model_config = ConfigDict(extra="forbid")

    exploration: float = Field(0.05, ge=0, le=0.5, description="share of picks made weighted-random, so a recovered deployment is seen")
    tolerance: float = Field(0.1, ge=0, le=10, description="deployments within this fraction of the best share its traffic")
    alpha: float = Field(0.5, gt=0, le=1, description="weight of each new sample in the average, at least")
    half_life_seconds: float = Field(
        10.0, gt=0, le=86_400, description="a sample after this long a quiet spell counts for half the average, at least"
    )


class RouteBalancingConfig(BaseModel):
    """The balancing fields of a ``[models.NAME]`` table (for ``ModelRouteConfig`` to inherit)::

        [models.gpt-4o]
        strategy = "least_busy"
        deployments = [
          { name = "org-a", provider = "openai", weight = 2, requests_per_minute = 5000 },
          { name = "org-b", provider = "openai", api_key_env = "OPENAI_ORG_B_KEY" },
          { provider = "groq", model = "llama-3.3-70b-versatile", tier = 2 },
        ]
    """

    model_config = ConfigDict(extra="forbid")

    deployments: list[DeploymentConfig] = Field(
        default_factory=list, max_length=MAX_DEPLOYMENTS_PER_ROUTE, description="the deployments that serve this model, balanced"
    )
    strategy: StrategyName = Field("weighted", description="how the deployments of a tier are ordered")
    latency: LatencyTuning = Field(default_factory=LatencyTuning, description="settings of lowest_latency")

    @model_validator(mode="after")
    def _unique_names(self) -> RouteBalancingConfig:
        seen: set[str] = set()
        for index, deployment in enumerate(self.deployments):
            name = deployment.name or deployment.provider
            if name in seen:
                raise ValueError(f"deployments[{index}]: two deployments are named {name!r}; give each its own `name`")
            seen.add(name)
        return self


# ------------------------------------------------------------------------------- deployments ---


@dataclass(frozen=True, slots=True)
class Deployment:
    """One upstream that can answer a route: a provider, the model it is asked for, and limits.

    ``key`` (``route/name``) identifies its balancing state; ``breaker_key`` identifies the
    upstream endpoint for a circuit breaker: ``provider/model`` like a plain route when the
    deployment uses its provider's own endpoint and key (so every route to that upstream shares
    one breaker), with a digest of its own base URL and key variable otherwise. Never holds a key.
    """

    route: str
    name: str
    provider: str
    upstream_model: str
    weight: float = 1.0
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_in_flight: int | None = None
    tier: int = 1
    api_key_env: str | None = None
    base_url: str | None = None
    key: str = field(init=False, repr=False, compare=False)
    breaker_key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ValueError(f"deployment {self.name!r}: weight must be positive")
        object.__setattr__(self, "key", f"{self.route}/{self.name}")
        upstream = f"{self.provider}/{self.upstream_model}"
        if self.base_url is not None or self.api_key_env is not None:
            endpoint = hashlib.sha256(f"{self.base_url or ''}\0{self.api_key_env or ''}".encode()).hexdigest()[:10]
            upstream = f"{upstream}@{endpoint}"
        object.__setattr__(self, "breaker_key", upstream)

    @property
    def limited(self) -> bool:
        """Whether it has a limit of its own to enforce."""
        return self.max_in_flight is not None or self.requests_per_minute is not None or self.tokens_per_minute is not None


def deployments_from_config(route: str, config: RouteBalancingConfig, default_model: str) -> tuple[Deployment, ...]:
    """The :class:`Deployment` values of a route; ``default_model`` is the route's upstream model
    (its ``model``, else its public name) for deployments that name none."""
    return tuple(
        Deployment(
            route=route,
            name=entry.name or entry.provider,
            provider=entry.provider,
            upstream_model=entry.model or default_model,
            weight=entry.weight,
            requests_per_minute=entry.requests_per_minute,
            tokens_per_minute=entry.tokens_per_minute,
            max_in_flight=entry.max_in_flight,
            tier=entry.tier,
            api_key_env=entry.api_key_env,
            base_url=entry.base_url,
        )
        for entry in config.deployments
    )


@dataclass(slots=True)
class DeploymentLoad:
    """What the strategies know of a deployment: its traffic now, its latency averages, and
    whether it could take a one-request attempt now (``refusal`` None)."""

    in_flight: int = 0
    requests: int = 0
    """Requests sent to it in the current window."""
    tokens: int = 0
    """Tokens reserved or used in the current window."""
    ttft: float | None = None
    """Average time to first token, seconds (None: no sample yet)."""
    total: float | None = None
    """Average total latency, seconds (None: no sample yet)."""
    refusal: Refusal | None = None
    free_in: float = 0.0
    """Seconds until the limit behind ``refusal`` frees up (0 when unknown or not refused)."""


@dataclass(frozen=True, slots=True)
class DeploymentStatus:
    """A deployment's live state, for the route table in ``hookgate plugins`` and the pipeline API."""

    deployment: Deployment
    load: DeploymentLoad
    backend: Literal["local", "redis"]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: configuration (no key, no base URL) and live figures."""
        d, load = self.deployment, self.load
        return {
            "name": d.name, "provider": d.provider, "model": d.upstream_model, "tier": d.tier, "weight": d.weight,
            "requests_per_minute": d.requests_per_minute, "tokens_per_minute": d.tokens_per_minute, "max_in_flight": d.max_in_flight,
            "own_endpoint": d.base_url is not None or d.api_key_env is not None,
            "in_flight": load.in_flight, "requests_in_window": load.requests, "tokens_in_window": load.tokens,
            "ttft_seconds": load.ttft, "latency_seconds": load.total,
            "refusal": load.refusal, "free_in_seconds": round(load.free_in, 3), "state": self.backend,
        }


# -------------------------------------------------------------------------------- strategies ---


class Strategy(Protocol):
    """Orders the deployments of one tier, most preferred first.

    ``rank`` returns indices into ``deployments`` (every index once); ``loads`` are aligned with
    it (empty when ``needs_loads`` is false: the state is then not asked). It is called on
    every pick, so it must be cheap, and it must not keep per-request state. Refused deployments
    may be ranked anywhere: the state skips them when it reserves.
    """

    name: str
    needs_loads: bool

    def rank(self, deployments: Sequence[Deployment], loads: Sequence[DeploymentLoad], rng: random.Random, stream: bool) -> list[int]: ...


def _weighted_keys(deployments: Sequence[Deployment], rng: random.Random) -> list[float]:
    # The exponential race: deployment i finishes first with probability w_i / sum(w), and
    # sorting by the keys is weighted sampling without replacement.
    return [rng.expovariate(d.weight) for d in deployments]


@final
class WeightedRandom:
    """Random in proportion to ``weight``."""

    __slots__ = ()
    name = "weighted"
    needs_loads = False

    def rank(self, deployments: Sequence[Deployment], loads: Sequence[DeploymentLoad], rng: random.Random, stream: bool) -> list[int]:
        keys = _weighted_keys(deployments, rng)
        return sorted(range(len(deployments)), key=keys.__getitem__)


@final
class LeastBusy:
    """Fewest attempts in flight per unit of weight; ties weighted-random."""

    __slots__ = ()
    name = "least_busy"
    needs_loads = True

    def rank(self, deployments: Sequence[Deployment], loads: Sequence[DeploymentLoad], rng: random.Random, stream: bool) -> list[int]:
        keys = _weighted_keys(deployments, rng)
        busy = [load.in_flight / d.weight for d, load in zip(deployments, loads)]
        return sorted(range(len(deployments)), key=lambda i: (busy[i], keys[i]))


@final
class LowestLatency:
    """Lowest average latency, with exploration; see the module docstring."""

    __slots__ = ("exploration", "tolerance")
    name = "lowest_latency"
    needs_loads = True

    def __init__(self, exploration: float = 0.05, tolerance: float = 0.1) -> None:
        self.exploration, self.tolerance = exploration, tolerance

    def rank(self, deployments: Sequence[Deployment], loads: Sequence[DeploymentLoad], rng: random.Random, stream: bool) -> list[int]:
        keys = _weighted_keys(deployments, rng)
        order = range(len(deployments))
        if self.exploration and rng.random() < self.exploration:
            return sorted(order, key=keys.__getitem__)
        scores = [load.ttft if stream else load.total for load in loads]
        known = [score for score in scores if score is not None]
        # Unmeasured deployments count as good as the best, so a new one gets traffic and a sample.
        best = min(known) if known else 0.0
        close = best * (1 + self.tolerance)
        ranked = [best if score is None else score for score in scores]
        return sorted(order, key=lambda i: (ranked[i] > close, ranked[i] if ranked[i] > close else 0.0, keys[i]))


@final
class LeastUsage:
    """Furthest from its per-minute limits; see the module docstring."""

    __slots__ = ()
    name = "usage"
    needs_loads = True

    def rank(self, deployments: Sequence[Deployment], loads: Sequence[DeploymentLoad], rng: random.Random, stream: bool) -> list[int]:
        keys = _weighted_keys(deployments, rng)
        largest_requests = max((d.requests_per_minute or 0 for d in deployments), default=0)
        largest_tokens = max((d.tokens_per_minute or 0 for d in deployments), default=0)

        def used(d: Deployment, load: DeploymentLoad) -> float:
            if not largest_requests and not largest_tokens:
                return load.requests / d.weight
            share = 0.0
            if largest_requests:
                share = load.requests / (d.requests_per_minute or largest_requests)
            if largest_tokens:
                share = max(share, load.tokens / (d.tokens_per_minute or largest_tokens))
            return share

        shares = [used(d, load) for d, load in zip(deployments, loads)]
        return sorted(range(len(deployments)), key=lambda i: (shares[i], keys[i]))


def strategy_for(name: StrategyName, latency: LatencyTuning | None = None) -> Strategy:
    """The strategy object for a configured name."""
    if name == "weighted":
        return WeightedRandom()
    if name == "least_busy":
        return LeastBusy()
    if name == "lowest_latency":
        tuning = latency or LatencyTuning()
        return LowestLatency(tuning.exploration, tuning.tolerance)
    if name == "usage":
        return LeastUsage()
    raise ValueError(f"unknown balancing strategy {name!r}")


# ---------------------------------------------------------------------------- state contract ---


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a state backend needs to release a reservation: made by ``acquire``, opaque to others."""

    deployment: Deployment
    lease_id: str
    bucket: int
    """Index of the window bucket the reservation was counted in."""
    reserved_tokens: int
    backend: Literal["local", "redis"]
    acquired_at_ms: int
    """When it was reserved, on the backend's clock (Redis's for ``redis``)."""


@dataclass(frozen=True, slots=True)
class AttemptReport:
    """How an attempt went, for the backend to update its figures."""

    outcome: Outcome
    ttft: float | None
    total: float | None
    tokens: int | None
    """Tokens actually used (None: keep the reservation)."""
    cooldown: float | None
    alpha: float
    half_life_seconds: float


@dataclass(slots=True)
class Acquisition:
    """The result of ``acquire``: a ticket for the first ranked deployment that fits (None if
    none does), and the fresh loads of the ranked deployments, aligned with the ranking: at least
    of those it considered, so of all of them when none fit."""

    ticket: Ticket | None
    loads: list[DeploymentLoad]


class BalancingState(Protocol):
    """Where in-flight counts, per-minute usage and latency averages live.

    ``acquire`` walks ``ranked`` in order and reserves the first deployment whose own limits
    (``max_in_flight``, per-minute requests and tokens, cooldown) admit one more request of
    ``tokens`` tokens; checking and reserving are one atomic step, so limits hold under
    concurrency (and across instances for a shared backend).
    """

    async def loads(self, deployments: Sequence[Deployment]) -> list[DeploymentLoad]: ...

    async def acquire(self, ranked: Sequence[Deployment], tokens: int) -> Acquisition: ...

    async def release(self, ticket: Ticket, report: AttemptReport) -> None: ...

    @property
    def shared(self) -> bool:
        """Whether the figures are shared with other instances right now."""
        ...


class UpstreamGate(Protocol):
    """What a health plugin (the circuit breaker) tells the core's pick about upstreams.

    A load-balanced route's deployment is chosen at the innermost end of the middleware chain,
    after a circuit breaker has run, so the breaker cannot refuse a deployment itself: it puts a
    gate in :data:`hookgate.facts.UPSTREAM_GATE` and the core asks it. ``upstream`` is a
    deployment's :attr:`Deployment.breaker_key`.
    """

    def usable(self, upstream: str) -> bool:
        """Whether the upstream may be picked; called for every candidate, so cheap and free of
        side effects."""
        ...

    def claim(self, upstream: str) -> bool:
        """The upstream was picked for this attempt: take what it needs (a half-open probe's
        slot). False: it cannot take the attempt after all, and another deployment is picked."""
        ...


# -------------------------------------------------------------------------------- the balancer ---


class NoDeploymentAvailable(GatewayError):
    """No deployment of the route could take the attempt.

    429 (``rate_limit_error``) when every refusal was a limit or a cooldown, so clients back off;
    503 otherwise. ``Retry-After`` says when the earliest limit frees (at least 1 s).
    ``refusals`` maps each deployment considered to why it refused (excluded ones are absent).
    """

    status = 503
    type = "service_unavailable"
    default_code = "no_deployment_available"

    def __init__(self, route: str, refusals: dict[str, Refusal], free_in: float) -> None:
        all_limits = bool(refusals) and all(reason in LIMIT_REFUSALS for reason in refusals.values())
        listed = ", ".join(f"{name} ({reason.replace('_', ' ')})" for name, reason in refusals.items()) or "every deployment was tried"
        retry_after = max(1, math.ceil(free_in)) if free_in > 0 else 1
        super().__init__(
            f"No deployment of the model '{route}' can take this request now: {listed}.",
            headers={"Retry-After": str(retry_after)},
            status=429 if all_limits else None,
        )
        if all_limits:
            self.type = "rate_limit_error"  # type: ignore[misc]
        self.route = route
        self.refusals = refusals
        self.retry_after = retry_after


def outcome_of(error: BaseException | None) -> tuple[Outcome, float | None]:
    """The outcome of an attempt that ended with ``error`` (None: it succeeded), and the cooldown
    an upstream 429 asked for (its ``Retry-After``; None: the default)."""
    if error is None:
        return "success", None
    if isinstance(error, (asyncio.CancelledError, ClientDisconnected)):
        return "abandoned", None
    if isinstance(error, GatewayError):
        if error.upstream_status == 429:
            if error.code in EXHAUSTED_CODES:
                return "rate_limited", MAX_COOLDOWN_SECONDS
            return "rate_limited", retry_after_seconds(error.headers)
        return ("failure" if is_upstream_failure(error) else "abandoned"), None
    return "failure", None


@final
class Lease:
    """One deployment reserved for one attempt; release it exactly once, whatever happened.

    ``release`` frees the in-flight slot and reports the attempt: latencies default to the time
    since the pick (and since :meth:`mark_first_token` for the first token); ``tokens`` corrects
    the tokens reserved at pick time to what was used. Releasing again does nothing.
    """

    __slots__ = ("deployment", "_ticket", "_state", "_tuning", "_clock", "started_at", "_first_token_at", "_released")

    def __init__(self, ticket: Ticket, state: BalancingState, tuning: LatencyTuning, clock: Callable[[], float]) -> None:
        self.deployment = ticket.deployment
        self._ticket, self._state, self._tuning, self._clock = ticket, state, tuning, clock
        self.started_at = clock()
        self._first_token_at: float | None = None
        self._released = False

    @property
    def backend(self) -> Literal["local", "redis"]:
        """Which state counted this reservation (``local`` while Redis is down)."""
        return self._ticket.backend

    @property
    def acquired_at_ms(self) -> int:
        """When the reservation was made, on the state's clock (Redis's for a shared state)."""
        return self._ticket.acquired_at_ms

    @property
    def released(self) -> bool:
        return self._released

    def mark_first_token(self) -> None:
        """The first chunk of a stream arrived (only the first call counts)."""
        if self._first_token_at is None:
            self._first_token_at = self._clock()

    async def release(
        self,
        outcome: Outcome,
        ttft: float | None = None,
        total: float | None = None,
        tokens: int | None = None,
        *,
        cooldown: float | None = None,
    ) -> None:
        """Free the slot and report the attempt (see :data:`Outcome`); ``cooldown`` is the wait
        an upstream 429 asked for."""
        if self._released:
            return
        self._released = True
        now = self._clock()
        if total is None:
            total = now - self.started_at
        if ttft is None and self._first_token_at is not None:
            ttft = self._first_token_at - self.started_at
        if ttft is None and outcome == "failure":
            ttft = total  # no first token at all: as slow as the whole attempt, for stream ranking too
        if outcome == "rate_limited":
            cooldown = min(MAX_COOLDOWN_SECONDS, max(0.05, cooldown if cooldown is not None else DEFAULT_COOLDOWN_SECONDS))
        else:
            cooldown = None
        report = AttemptReport(
            outcome, ttft, total, None if tokens is None else max(0, int(tokens)), cooldown, self._tuning.alpha, self._tuning.half_life_seconds
        )
        await self._state.release(self._ticket, report)


@final
class Balancer:
    """Picks the deployment for each attempt at one route; see the module docstring."""

    __slots__ = ("route", "deployments", "strategy", "state", "latency", "_tiers", "_rng", "_clock")

    def __init__(
        self,
        route: str,
        deployments: Sequence[Deployment],
        *,
        strategy: StrategyName | Strategy = "weighted",
        state: BalancingState | None = None,
        latency: LatencyTuning | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        if not deployments:
            raise ValueError(f"route {route!r}: a balanced route needs at least one deployment")
        names = [d.name for d in deployments]
        if len(set(names)) != len(names):
            raise ValueError(f"route {route!r}: deployment names must be unique ({', '.join(names)})")
        self.route = route
        self.deployments = tuple(deployments)
        self.latency = latency or LatencyTuning()
        self.strategy: Strategy = strategy_for(strategy, self.latency) if isinstance(strategy, str) else strategy
        self.state: BalancingState = state if state is not None else LocalBalancingState(clock=clock)
        self._tiers = [tuple(d for d in self.deployments if d.tier == tier) for tier in sorted({d.tier for d in self.deployments})]
        self._rng = rng or random.Random()
        self._clock = clock

    @classmethod
    def from_config(
        cls,
        route: str,
        config: RouteBalancingConfig,
        *,
        default_model: str,
        state: BalancingState | None = None,
        rng: random.Random | None = None,
    ) -> Balancer:
        """The balancer of a configured route (see :func:`deployments_from_config`)."""
        deployments = deployments_from_config(route, config, default_model)
        return cls(route, deployments, strategy=config.strategy, state=state, latency=config.latency, rng=rng)

    async def pick(
        self,
        *,
        exclude: Collection[str] = (),
        healthy: Callable[[Deployment], bool] | None = None,
        tokens: int = 0,
        stream: bool = False,
    ) -> Lease:
        """Reserve the deployment for the next attempt.

        ``exclude``: names of deployments not to use (those already tried by this request).
        ``healthy``: whether a deployment may be used at all (circuit closed, key present…); it is
        called for every candidate on every pick, so it must be cheap and free of side effects.
        ``tokens``: the attempt's token estimate, reserved against ``tokens_per_minute`` and
        corrected on release. ``stream``: rank by time to first token rather than total latency.
        Raises :class:`NoDeploymentAvailable` when no deployment can take it.
        """
        refusals: dict[str, Refusal] = {}
        groups: list[list[Deployment]] = []
        for tier in self._tiers:
            group = []
            for d in tier:
                if d.name in exclude:
                    continue
                if healthy is not None and not healthy(d):
                    refusals[d.name] = "unhealthy"
                    continue
                group.append(d)
            if group:
                groups.append(group)
        if not groups:
            raise NoDeploymentAvailable(self.route, refusals, 0.0)
        ranked: list[Deployment] = []
        if len(groups) == 1 and len(groups[0]) == 1:
            ranked = groups[0]
        else:
            loads = await self.state.loads([d for group in groups for d in group]) if self.strategy.needs_loads else None
            at = 0
            for group in groups:
                group_loads = loads[at : at + len(group)] if loads is not None else ()
                at += len(group)
                ranked.extend(group[i] for i in self.strategy.rank(group, group_loads, self._rng, stream))
        acquisition = await self.state.acquire(ranked, max(0, int(tokens)))
        if acquisition.ticket is None:
            free_in = 0.0
            for d, load in zip(ranked, acquisition.loads):
                refusals[d.name] = load.refusal or "in_flight_limit"
                if load.free_in > 0:
                    free_in = load.free_in if free_in == 0 else min(free_in, load.free_in)
            raise NoDeploymentAvailable(self.route, refusals, free_in)
        return Lease(acquisition.ticket, self.state, self.latency, self._clock)

    async def status(self) -> list[DeploymentStatus]:
        """Every deployment's live state, in configuration order."""
        loads = await self.state.loads(self.deployments)
        backend: Literal["local", "redis"] = "redis" if self.state.shared else "local"
        return [DeploymentStatus(d, load, backend) for d, load in zip(self.deployments, loads)]


# ------------------------------------------------------------------------------ shared helpers ---


def _refusal(d: Deployment, in_flight: int, requests: int, used_tokens: int, tokens: int, cooling: float) -> Refusal | None:
    """The one admission rule, mirrored by the Lua script: cooldown, in flight, requests, tokens."""
    if cooling > 0:
        return "cooling_down"
    if d.max_in_flight is not None and in_flight >= d.max_in_flight:
        return "in_flight_limit"
    if d.requests_per_minute is not None and requests + 1 > d.requests_per_minute:
        return "requests_limit"
    if d.tokens_per_minute is not None and (used_tokens + tokens > d.tokens_per_minute or used_tokens >= d.tokens_per_minute):
        return "tokens_limit"
    return None


def _blend(average: float | None, sample: float, weight: float) -> float:
    return sample if average is None else average + weight * (sample - average)


def _sample_weight(alpha: float, half_life: float, quiet_for: float | None) -> float:
    """Weight of a new sample: at least ``alpha``, more after a quiet spell (half after one
    half-life), so a stale average gives way to the first fresh sample."""
    if quiet_for is None:
        return 1.0
    return max(alpha, 1.0 - 2.0 ** (-max(0.0, quiet_for) / half_life))


# ------------------------------------------------------------------------------- local state ---


@dataclass(slots=True)
class _Record:
    """One deployment's state in this process."""

    in_flight: int = 0
    buckets: deque[list[int]] = field(default_factory=deque)
    """[bucket index, requests, tokens], oldest first; only buckets still in the window."""
    requests: int = 0
    tokens: int = 0
    cooling_until: float = 0.0
    ttft: float | None = None
    total: float | None = None
    sampled_at: float | None = None


@final
class LocalBalancingState:
    """Balancing state in this process (the default): exact for one instance, per instance for many.

    Per-minute usage is counted in ``buckets`` buckets per window and a bucket counts in full while
    any part of it is in the window: the count never falls below the true sliding-window count, so
    a limit is never exceeded over any window, at the price of capacity coming back up to one
    bucket (5 s of a minute) late. It keeps at most ``max_deployments`` records; beyond that the
    least recently used idle one is forgotten. Atomic because it never awaits.
    """

    __slots__ = ("window", "bucket", "max_deployments", "_clock", "_records", "_lease_ids")

    def __init__(
        self,
        *,
        window_seconds: float = 60.0,
        buckets: int = 12,
        max_deployments: int = 4096,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        if window_seconds <= 0 or buckets < 1 or max_deployments < 1:
            raise ValueError("window_seconds, buckets and max_deployments must be positive")
        self.window, self.bucket = window_seconds, window_seconds / buckets
        self.max_deployments = max_deployments
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._lease_ids = itertools.count(1)

    def __len__(self) -> int:
        """How many deployments it keeps figures for."""
        return len(self._records)

    # The synchronous core, also used by RedisBalancingState for its fallback and local latency.

    def record(self, d: Deployment) -> _Record:
        """The deployment's record, created when first needed."""
        record = self._records.get(d.key)
        if record is None:
            if len(self._records) >= self.max_deployments:
                self._evict()
            record = self._records[d.key] = _Record()
        return record

    def _evict(self) -> None:
        for key, record in self._records.items():  # least recently reserved first
            if record.in_flight == 0:
                del self._records[key]
                return

    def _trim(self, record: _Record, now: float) -> None:
        oldest = math.floor((now - self.window) / self.bucket)
        buckets = record.buckets
        while buckets and buckets[0][0] < oldest:
            _, requests, tokens = buckets.popleft()
            record.requests -= requests
            record.tokens -= tokens

    def load_of(self, d: Deployment, now: float | None = None, tokens: int = 0) -> DeploymentLoad:
        """The deployment's load, and whether it could take a request of ``tokens`` tokens now."""
        now = self._clock() if now is None else now
        record = self._records.get(d.key)
        if record is None:
            return DeploymentLoad(refusal=_refusal(d, 0, 0, 0, tokens, 0.0))
        self._trim(record, now)
        cooling = max(0.0, record.cooling_until - now)
        refusal = _refusal(d, record.in_flight, record.requests, record.tokens, tokens, cooling)
        free_in = self._free_in(record, refusal, cooling, now)
        return DeploymentLoad(record.in_flight, record.requests, record.tokens, record.ttft, record.total, refusal, free_in)

    def _free_in(self, record: _Record, refusal: Refusal | None, cooling: float, now: float) -> float:
        if refusal == "cooling_down":
            return cooling
        if refusal in ("requests_limit", "tokens_limit") and record.buckets:
            return max(0.0, (record.buckets[0][0] + 1) * self.bucket + self.window - now)
        return 0.0

    def acquire_now(self, ranked: Sequence[Deployment], tokens: int) -> Acquisition:
        now = self._clock()
        chosen: Ticket | None = None
        loads = []
        for d in ranked:
            load = self.load_of(d, now, tokens)
            loads.append(load)
            if load.refusal is None:
                chosen = self._reserve(d, tokens, now)
                break
        return Acquisition(chosen, loads)

    def _reserve(self, d: Deployment, tokens: int, now: float) -> Ticket:
        record = self.record(d)
        self._records.move_to_end(d.key)
        bucket = math.floor(now / self.bucket)
        if record.buckets and record.buckets[-1][0] == bucket:
            record.buckets[-1][1] += 1
            record.buckets[-1][2] += tokens
        else:
            record.buckets.append([bucket, 1, tokens])
        record.requests += 1
        record.tokens += tokens
        record.in_flight += 1
        return Ticket(d, str(next(self._lease_ids)), bucket, tokens, "local", int(now * 1000))

    def release_now(self, ticket: Ticket, report: AttemptReport) -> None:
        now = self._clock()
        record = self.record(ticket.deployment)
        record.in_flight = max(0, record.in_flight - 1)
        if report.tokens is not None and report.tokens != ticket.reserved_tokens:
            self._correct_tokens(record, ticket.bucket, report.tokens - ticket.reserved_tokens, now)
        if report.cooldown is not None:
            record.cooling_until = max(record.cooling_until, now + report.cooldown)
        self.sample_latency(record, report, now)

    def _correct_tokens(self, record: _Record, bucket: int, delta: int, now: float) -> None:
        self._trim(record, now)
        for entry in reversed(record.buckets):
            if entry[0] == bucket:
                entry[2] += delta
                record.tokens += delta
                return
        if delta > 0:  # its bucket left the window (a long stream): count the excess now
            current = math.floor(now / self.bucket)
            if record.buckets and record.buckets[-1][0] == current:
                record.buckets[-1][2] += delta
            else:
                record.buckets.append([current, 0, delta])
            record.tokens += delta

    @staticmethod
    def sample_latency(record: _Record, report: AttemptReport, now: float) -> None:
        """Fold an attempt's latencies into the averages (failures count as slow)."""
        if report.outcome not in ("success", "failure"):
            return
        weight = _sample_weight(report.alpha, report.half_life_seconds, None if record.sampled_at is None else now - record.sampled_at)
        failed = report.outcome == "failure"
        if report.ttft is not None:
            sample = max(report.ttft, 2 * record.ttft) if failed and record.ttft is not None else report.ttft
            record.ttft = _blend(record.ttft, sample, weight)
        if report.total is not None:
            sample = max(report.total, 2 * record.total) if failed and record.total is not None else report.total
            record.total = _blend(record.total, sample, weight)
        record.sampled_at = now

    # BalancingState

    @property
    def shared(self) -> bool:
        return False

    async def loads(self, deployments: Sequence[Deployment]) -> list[DeploymentLoad]:
        now = self._clock()
        return [self.load_of(d, now) for d in deployments]

    async def acquire(self, ranked: Sequence[Deployment], tokens: int) -> Acquisition:
        return self.acquire_now(ranked, tokens)

    async def release(self, ticket: Ticket, report: AttemptReport) -> None:
        self.release_now(ticket, report)
