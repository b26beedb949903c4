"""``metrics``: Prometheus metrics of every request, served at ``GET /metrics``.

What is counted (docs/observability.md lists every metric with its labels): requests by model,
provider, status and cache result; request, upstream, time-to-first-token and concurrency-wait
histograms; tokens and cost; cache hits and misses; upstream attempts, retries, timeouts and
rate-limited requests; requests in flight; per deployment of a load-balanced route, its attempts
by outcome, their duration and its attempts in flight; and how long each plugin's hooks take
(through ``register_hook_observers``), so a slow third-party plugin shows up by name.

Names follow Prometheus conventions, and OpenTelemetry's GenAI semantic conventions wherever those
name the same quantity (``gen_ai_client_token_usage``, ``gen_ai_server_request_duration_seconds``,
``gen_ai_server_time_to_first_token_seconds``); model and provider labels use the conventions'
attribute names (``gen_ai_request_model``, ``gen_ai_provider_name``) on every metric, so one query
can join them. Label values are bounded: a model or provider is only named once the request was
routed (``none`` before), and each label lets at most ``max_label_values`` distinct values through,
each clipped to 128 characters (later ones read ``other``), so a client inventing model names cannot grow the series without end.

Everything is counted from the core's lifecycle events (``request_started``, ``attempt_started``,
``attempt_finished``, ``request_finished``) and hook timings, so the numbers are the same wherever ``metrics`` is listed:
the cost of a request is there even when ``cost`` comes later in the pipeline, and the in-flight
gauge always comes back down. A tenant label names only authenticated keys (``none`` otherwise), so
junk credentials cannot push real tenants out of the bounded label set.

The registry belongs to the app: two apps in one process share nothing, and after a live reload
the new pipeline's ``metrics`` plugin carries on with the same registry (counters keep counting)
as long as its label and bucket settings are unchanged. Under ``hookgate serve --workers N`` every
worker writes its samples to ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode)
and whichever worker answers ``/metrics`` sums all of them. ``GET /metrics`` is admin-only when an
auth plugin is enabled (``require_admin`` unset), open otherwise.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Callable, Sequence

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from pydantic import Field, field_validator

from hookgate import Attempt, Completion, GatewayError, Outcome, PluginConfig, RequestContext, StateKey, hookimpl
from hookgate.bounds import clip
from hookgate.facts import CLIENT_KEY, CONCURRENCY_WAIT_SECONDS, COST_USD, USAGE
from hookgate.rules import Reads
from hookgate.logs import IntervalLog
from hookgate.web import metrics_collectors, require_admin

OTHER = "other"
"""The label value standing for every value past a label's ``max_label_values``."""
NONE = "none"
"""The model and provider of a request that was not routed (rejected before routing, 404)."""

# OpenTelemetry GenAI semantic conventions' latency boundaries (0.01 s … 81.92 s), with three
# smaller ones in front: a cache HIT is answered in well under 10 ms.
DEFAULT_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
# The conventions' boundaries for gen_ai.server.time_to_first_token and gen_ai.client.token.usage.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
# A hook call is usually microseconds; a slow plugin's is milliseconds or more.
HOOK_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

MODEL, PROVIDER, OPERATION = "gen_ai_request_model", "gen_ai_provider_name", "gen_ai_operation_name"


class MetricsConfig(PluginConfig):
    """Settings of the Prometheus metrics."""

    path: str = Field("/metrics", pattern=r"^/[^{}]*$", description="where the metrics are served (GET)")
    require_admin: bool | None = Field(
        None,
        description="true: only requests every authorize_admin hook accepts (an admin key); false: anyone; "
        "unset: admin-only when an auth plugin is enabled",
    )
    tenant_label: bool = Field(
        False,
        description="add a tenant label (the api_keys key id, else a hash of the client's key) to requests, tokens and cost; "
        "bounded by max_label_values like every label",
    )
    hook_timings: bool = Field(True, description="time every plugin's hooks (hookgate_plugin_hook_duration_seconds)")
    max_label_values: int = Field(
        100, ge=1, le=10_000, description="distinct values one label may take (per model, provider, tenant…); later ones read 'other'"
    )
    duration_buckets: list[float] = Field(
        list(DEFAULT_DURATION_BUCKETS), min_length=1, description="bucket bounds in seconds of the request and upstream duration histograms"
    )

    @field_validator("duration_buckets")
    @classmethod
    def _increasing(cls, buckets: list[float]) -> list[float]:
        if any(b <= 0 for b in buckets) or any(a >= b for a, b in zip(buckets, buckets[1:])):
            raise ValueError("bucket bounds must be positive and strictly increasing")
        return buckets


class Metrics:
    """Prometheus metrics at GET /metrics: requests, latency, TTFT, tokens, cost, cache, retries, hook timings."""

    Config = MetricsConfig
    roles = ("observer",)
    rules = (
        Reads(COST_USD, "request_finished", why="hookgate_cost_usd_total"),
        Reads(CONCURRENCY_WAIT_SECONDS, "request_finished", why="hookgate_concurrency_wait_seconds"),
        Reads(CLIENT_KEY, "request_finished", why="the tenant label"),
    )

    def __init__(self, config: MetricsConfig) -> None:
        self.config = config
        self.metrics: GatewayMetrics | None = None
        """The app's metric families; bound in ``register_routes`` (no app, nothing to count)."""

    # ----------------------------------------------------------------------------------- start-up

    @hookimpl
    def register_routes(self, router: web.UrlDispatcher, app: web.Application) -> None:
        kept = app.get(_APP_METRICS)
        if kept is None and not app.frozen:
            kept = app[_APP_METRICS] = {}
        inherited = kept.get("metrics") if kept is not None else None
        if inherited is not None and inherited.layout == GatewayMetrics.layout_of(self.config):
            self.metrics = inherited  # a reload with the same layout: counters carry on
        else:
            self.metrics = GatewayMetrics(self.config)
            if kept is not None:
                kept["metrics"] = self.metrics
        router.add_get(self.config.path, self.serve_metrics)

    @hookimpl
    def register_hook_observers(self, register: Callable[[Callable[[str, str, float, str], None]], None]) -> None:
        if self.config.hook_timings:
            register(self.observe_hook)

    # ------------------------------------------------------------------------------------ requests

    @hookimpl
    def request_started(self, ctx: RequestContext) -> None:
        metrics = self.metrics
        if metrics is not None:
            metrics.in_flight.inc()
            ctx[_COUNTED_BY] = metrics  # the gauge to bring down, even across a reload

    @hookimpl
    def attempt_started(self, ctx: RequestContext, number: int) -> None:
        metrics, route = self.metrics, ctx.route
        if metrics is not None and route is not None and route.deployment is not None:
            labels = (metrics.models(route.model), metrics.deployments(route.deployment.name))
            metrics.deployment_in_flight.child(*labels).inc()
            ctx[_DEPLOYMENT_IN_FLIGHT] = (metrics, labels)

    @hookimpl
    def attempt_finished(self, ctx: RequestContext, attempt: Attempt) -> None:
        counted = ctx.pop(_DEPLOYMENT_IN_FLIGHT, None)
        if counted is None:
            return
        metrics, labels = counted
        metrics.deployment_in_flight.child(*labels).dec()
        metrics.deployment_attempts.child(*labels, metrics.outcomes(attempt.outcome)).inc()
        metrics.deployment_duration.child(*labels).observe(attempt.duration_ms / 1000.0)

    @hookimpl
    def request_finished(self, ctx: RequestContext, outcome: Outcome) -> None:
        counted = ctx.pop(_COUNTED_BY, None)
        if counted is not None:
            counted.in_flight.dec()
        if self.metrics is not None:
            self.metrics.record(ctx, outcome.status, outcome.error, outcome.response)

    def observe_hook(self, hook: str, plugin: str, seconds: float, outcome: str) -> None:
        """Hook observer: the time one plugin's hook call took, and its exceptions."""
        metrics = self.metrics
        if metrics is not None:
            metrics.observe_hook(hook, plugin, seconds, outcome)

    # -------------------------------------------------------------------------------- GET /metrics

    async def serve_metrics(self, request: web.Request) -> web.Response:
        """``GET /metrics``: the Prometheus text format (or OpenMetrics, when the scraper asks)."""
        if self.config.require_admin is not False:
            await require_admin(request)  # with no auth plugin and require_admin unset, it lets everyone through
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        metrics = self.metrics
        assert metrics is not None  # bound when this route was added
        # Rendering is CPU work (and file reads in multiprocess mode): keep it off the event loop.
        body = await asyncio.to_thread(metrics.render, encoder, metrics_collectors(request.app))
        return web.Response(body=body, headers={"Content-Type": content_type})


@dataclass(frozen=True, slots=True)
class MetricsLayout:
    """What fixes the metric families' shape: a registry is reused only for the same layout."""

    tenant_label: bool
    max_label_values: int
    duration_buckets: tuple[float, ...]


MAX_LABEL_CHARS = 128
"""Longest label value: a model name under a pattern route is the client's choice."""


class LabelGuard:
    """Lets at most ``limit`` distinct values of one label through, each at most
    :data:`MAX_LABEL_CHARS` long; later values read ``other``."""

    __slots__ = ("limit", "seen")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if value is None:
            return NONE
        if len(value) > MAX_LABEL_CHARS or not value.isprintable():
            value = clip(value, MAX_LABEL_CHARS)
        if value in self.seen:
            return value
        if len(self.seen) < self.limit:
            self.seen.add(value)
            return value
        return OTHER


class Family:
    """A labelled metric with its children cached by label values: ``.labels()`` converts and
    locks on every call, a dict lookup does not."""

    __slots__ = ("metric", "children")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.children: dict[tuple[str, ...], Any] = {}

    def child(self, *values: str) -> Any:
        found = self.children.get(values)
        if found is None:
            found = self.children[values] = self.metric.labels(*values)
        return found


class GatewayMetrics:
    """The metric families of one app, its registry, and the guards that bound its labels."""

    def __init__(self, config: MetricsConfig) -> None:
        self.layout = self.layout_of(config)
        self.multiprocess = bool(getattr(values.ValueClass, "_multiprocess", False))
        """prometheus-client chose its file-backed values at import (``PROMETHEUS_MULTIPROC_DIR``
        was set): samples go to per-process files and ``/metrics`` sums every process's files."""
        self.registry = CollectorRegistry()
        limit = config.max_label_values
        self.models, self.providers, self.tenants = LabelGuard(limit), LabelGuard(limit), LabelGuard(limit)
        self.deployments = LabelGuard(limit)
        self.errors, self.outcomes, self.exceptions = LabelGuard(limit), LabelGuard(limit), LabelGuard(limit)
        self.tenant_label = config.tenant_label
        tenant = ("tenant",) if config.tenant_label else ()
        durations = tuple(config.duration_buckets)
        r = self.registry

        self.requests = Family(Counter(
            "hookgate_requests", "Chat requests answered, by model, provider, HTTP status and cache result (HIT, MISS, BYPASS).",
            [MODEL, PROVIDER, "http_response_status_code", "cache", *tenant], registry=r))
        self.in_flight = Gauge(
            "hookgate_requests_in_flight", "Chat requests being served now (from before_request to their answer or error).",
            registry=r, multiprocess_mode="livesum")
        self.request_duration = Family(Histogram(
            "gen_ai_server_request_duration_seconds",
            "Time from the request's arrival to its last byte (a stream: its last chunk), errors included (error_type set).",
            [OPERATION, PROVIDER, MODEL, "cache", "error_type"], buckets=durations, registry=r))
        self.upstream_duration = Family(Histogram(
            "hookgate_upstream_duration_seconds",
            "Time spent waiting for the provider per request: every attempt, and a stream's chunks; not retry backoff.",
            [PROVIDER, MODEL], buckets=durations, registry=r))
        self.ttft = Family(Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Streamed answers: time from the request's arrival to its first chunk reaching the client.",
            [OPERATION, PROVIDER, MODEL, "cache"], buckets=TTFT_BUCKETS, registry=r))
        self.tokens = Family(Histogram(
            "gen_ai_client_token_usage",
            "Tokens per request that providers processed (input: prompt, output: completion); a cache HIT spends none.",
            [OPERATION, PROVIDER, MODEL, "gen_ai_token_type", *tenant], buckets=TOKEN_BUCKETS, registry=r))
        self.cost = Family(Counter(
            "hookgate_cost_usd", "What providers charged, in US dollars (needs the cost plugin).",
            [PROVIDER, MODEL, *tenant], registry=r))
        self.cache_lookups = Family(Counter(
            "hookgate_cache_lookups", "Cache lookups by result (hit, hit-semantic, miss, shadow) and, for a hit, the cache plugin that answered.",
            [MODEL, "result", "cache_plugin"], registry=r))
        self.attempts = Family(Counter(
            "hookgate_upstream_attempts", "Upstream attempts by outcome (ok, http_503, timeout, cancelled…).",
            [PROVIDER, MODEL, "outcome"], registry=r))
        self.deployment_attempts = Family(Counter(
            "hookgate_deployment_attempts",
            "Upstream attempts on each deployment of a load-balanced route, by outcome (ok, http_503, timeout…).",
            [MODEL, "deployment", "outcome"], registry=r))
        self.deployment_duration = Family(Histogram(
            "hookgate_deployment_attempt_duration_seconds",
            "How long each attempt on a deployment took (a stream: until its first chunk).",
            [MODEL, "deployment"], buckets=durations, registry=r))
        self.deployment_in_flight = Family(Gauge(
            "hookgate_deployment_in_flight", "Attempts in flight on each deployment of a load-balanced route (this instance).",
            [MODEL, "deployment"], registry=r, multiprocess_mode="livesum"))
        self.retries = Family(Counter(
            "hookgate_upstream_retries", "Upstream attempts after a request's first (each one a retry).",
            [PROVIDER, MODEL], registry=r))
        self.timeouts = Family(Counter(
            "hookgate_timeouts", "Requests that failed because a deadline passed (504, error code timeout).",
            [PROVIDER, MODEL], registry=r))
        self.rate_limited = Family(Counter(
            "hookgate_rate_limited", "Requests answered 429, by error code (rate_limit_exceeded, budget_exceeded…).",
            [MODEL, PROVIDER, "error_code"], registry=r))
        self.concurrency_wait = Family(Histogram(
            "hookgate_concurrency_wait_seconds", "Time a request waited for a concurrency slot (its last attempt's wait).",
            [PROVIDER, MODEL], buckets=WAIT_BUCKETS, registry=r))
        self.hook_duration = Family(Histogram(
            "hookgate_plugin_hook_duration_seconds",
            "Time one plugin's hook call took; a call_provider middleware's excludes the rest of the chain.",
            ["hook", "plugin"], buckets=HOOK_BUCKETS, registry=r))
        self.hook_exceptions = Family(Counter(
            "hookgate_plugin_hook_exceptions", "Hook calls that raised, by exception class (a rejection is one too).",
            ["hook", "plugin", "exception"], registry=r))

    @staticmethod
    def layout_of(config: MetricsConfig) -> MetricsLayout:
        return MetricsLayout(config.tenant_label, config.max_label_values, tuple(config.duration_buckets))

    def record(self, ctx: RequestContext, status: int, error: GatewayError | None, response: Completion | None) -> None:
        """Count one finished request."""
        now = perf_counter()
        if ctx.route is not None:
            model, provider = self.models(ctx.model), self.providers(ctx.provider_name)
        else:
            model = provider = NONE  # not routed: the model name is whatever the client sent
        cache = ctx.cache_status
        hit = ctx.cache_hit
        tenant = (self.tenants(_tenant(ctx)),) if self.tenant_label else ()
        self.requests.child(model, provider, str(status), cache, *tenant).inc()
        error_type = "" if error is None else self.errors(error.code or type(error).__name__)
        self.request_duration.child("chat", provider, model, cache, error_type).observe(now - ctx.started_at)
        if ctx.upstream_seconds > 0:
            self.upstream_duration.child(provider, model).observe(ctx.upstream_seconds)
        if error is None and ctx.stream:
            # A replayed answer (a HIT) gets its first byte right after after_response: now.
            first_byte = ctx.first_byte_at or now
            self.ttft.child("chat", provider, model, cache).observe(first_byte - ctx.started_at)
        if not hit:
            usage = ctx.get(USAGE) or (response.usage if response is not None else None)
            if usage:
                prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
                if isinstance(prompt, int):
                    self.tokens.child("chat", provider, model, "input", *tenant).observe(prompt)
                if isinstance(completion, int):
                    self.tokens.child("chat", provider, model, "output", *tenant).observe(completion)
        cost = ctx.get(COST_USD)
        if cost:
            self.cost.child(provider, model, *tenant).inc(float(cost))
        if cache != "BYPASS":
            self.cache_lookups.child(model, cache.lower(), ctx.cache_source or "").inc()
        self._count_attempts(ctx, provider, model, error)
        if error is not None:
            if error.code == "timeout" or status == 504:
                self.timeouts.child(provider, model).inc()
            if status == 429:
                self.rate_limited.child(model, provider, self.errors(error.code or type(error).__name__)).inc()
        waited = ctx.get(CONCURRENCY_WAIT_SECONDS)
        if waited is not None:
            self.concurrency_wait.child(provider, model).observe(waited)

    def _count_attempts(self, ctx: RequestContext, provider: str, model: str, error: GatewayError | None) -> None:
        for attempt in ctx.attempts:
            self.attempts.child(provider, model, self.outcomes(attempt.outcome)).inc()
        if len(ctx.attempts) > 1:
            self.retries.child(provider, model).inc(len(ctx.attempts) - 1)

    def observe_hook(self, hook: str, plugin: str, seconds: float, outcome: str) -> None:
        self.hook_duration.child(hook, plugin).observe(seconds)
        if outcome != "ok" and outcome != "hit":
            self.hook_exceptions.child(hook, plugin, self.exceptions(outcome)).inc()

    def render(self, encoder: Callable[[Any], bytes], collectors: Sequence[Any] = ()) -> bytes:
        """The exposition text of this app's metrics (or of every worker's in multiprocess mode)
        and of the collectors other plugins offered (``register_metrics``)."""
        # A fresh registry per scrape, as prometheus-client documents for multiprocess mode (no
        # sample is exported twice); it also lets plugins' collectors change with a reload.
        registry = CollectorRegistry(auto_describe=False)
        if self.multiprocess:
            # The families above also write each sample to this process's files; the collector
            # reads every process's files and sums them.
            MultiProcessCollector(registry)
        else:
            registry.register(_Families(self.registry))
        for collector in collectors:
            try:
                registry.register(collector)
            except ValueError:  # a plugin's family name clashes with another's: skip, say so once
                _clash.warning(collector=type(collector).__name__)
        return encoder(registry)


class _Families:
    """The app's own registry, as one collector of a scrape's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Any:
        return self.registry.collect()


_clash = IntervalLog(structlog.get_logger("hookgate.metrics"), "metrics_collector_clash", 300.0)


def _tenant(ctx: RequestContext) -> str | None:
    """Only authenticated keys name a tenant: a label per junk credential would let anyone fill
    the bounded label set and push real tenants into ``other``."""
    key = ctx.get(CLIENT_KEY)
    return key.id if key is not None else None


_APP_METRICS = web.AppKey("hookgate_metrics", dict)
"""The app's metric families (under ``"metrics"``), kept on the app so that a reloaded pipeline
carries on counting. A holder made while the app is built: a started app's state is not changed."""
_COUNTED_BY: StateKey[GatewayMetrics] = StateKey("metrics.in_flight", GatewayMetrics, "the metrics whose in-flight gauge counts this request")
_DEPLOYMENT_IN_FLIGHT: StateKey[tuple] = StateKey(
    "metrics.deployment_in_flight", tuple, "the metrics and labels whose deployment in-flight gauge counts this attempt"
)
