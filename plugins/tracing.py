"""``tracing``: OpenTelemetry spans for every request, its hook phases and each upstream attempt.

Off unless listed in the pipeline; it needs the ``tracing`` extra (``pip install
'hookgate[tracing]'``: opentelemetry-sdk and the OTLP/HTTP exporter) and says so at start-up when
it is missing. A trace of one chat request looks like::

    chat gpt-4o-mini                  SERVER  the request, arrival to last byte; gen_ai.* attributes
    ├── before_request                INTERNAL  the phase
    │   ├── before_request api_keys   INTERNAL  one plugin's hook call
    │   └── before_request rate_limit
    ├── cache_lookup
    │   └── cache_lookup memory_cache
    ├── call_provider                 INTERNAL  the middleware chain; each middleware's own time is an event
    │   ├── chat gpt-4o-mini          CLIENT  attempt 1 (error.type 503)
    │   └── chat gpt-4o-mini          CLIENT  attempt 2, response model, finish reasons, usage
    └── after_response
        └── after_response request_log

Attributes follow OpenTelemetry's GenAI semantic conventions (``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
``gen_ai.response.finish_reasons``, ``gen_ai.usage.input_tokens``…); prompts and answers are never
recorded. A client's W3C ``traceparent`` makes the request span its child (``trust_traceparent``).

Every span is built from the core's lifecycle events (request started and finished, each phase
started and finished, each upstream attempt started and finished) and its hook timings, so the
trace is the same wherever ``tracing`` is listed, and each upstream attempt is its own span even
when retry wraps it. An attempt span is current while the provider is called, so an instrumented
HTTP client nests under it; for a stream it ends with the first chunk (the stream's finish reasons
and usage are on the request span). The tracer provider belongs to the plugin instance (never the
global one), and so does its exporter: two apps in one process trace separately.
"""
from __future__ import annotations

import asyncio
from contextvars import ContextVar
from time import perf_counter, time_ns
from typing import Any, Callable, Literal, Mapping

from pydantic import Field, SecretStr

from hookgate import Attempt, Outcome, PluginConfig, PluginLoadError, RequestContext, StateKey, hookimpl
from hookgate.accounting import TokenUsage
from hookgate.facts import CLIENT_KEY, COST_USD
from hookgate.rules import Reads

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # the plugin is installed with hookgate; its dependencies are an extra
    OPENTELEMETRY_MISSING: str | None = f"{type(exc).__name__}: {exc}"
else:
    OPENTELEMETRY_MISSING = None

REQUEST_PHASES = ("before_request", "cache_lookup", "call_provider", "after_response", "on_error")
"""The hooks whose calls become spans; lifecycle and admin hooks are not part of a request."""
_MAX_ATTRIBUTE_CHARS = 256


class TracingConfig(PluginConfig):
    """Settings of the OpenTelemetry tracing."""

    service_name: str = Field("hookgate", min_length=1, description="service.name of the spans' resource")
    resource_attributes: dict[str, str] = Field(
        default_factory=dict, description="further resource attributes (deployment.environment.name = \"prod\"…)"
    )
    exporter: Literal["otlp", "console", "memory"] = Field(
        "otlp", description="otlp: OTLP over HTTP/protobuf; console: print spans (debugging); memory: keep them in the process (tests)"
    )
    endpoint: str | None = Field(
        None,
        description="OTLP/HTTP traces URL; default $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else http://localhost:4318/v1/traces",
    )
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="headers sent with every export (authorization…)")
    timeout_seconds: float = Field(10.0, gt=0, description="limit of one export (exports run off the event loop, in batches)")
    sample_ratio: float = Field(1.0, ge=0, le=1, description="share of new traces recorded; a client's sampled traceparent is followed")
    trust_traceparent: bool = Field(True, description="continue the trace of a client's W3C traceparent header")
    hook_spans: bool = Field(True, description="a span per phase and per plugin hook call (false: only request and attempt spans)")


class Tracing:
    """OpenTelemetry spans: the request, each hook phase and plugin, each upstream attempt (GenAI conventions)."""

    Config = TracingConfig
    roles = ("observer",)
    rules = (
        Reads(CLIENT_KEY, "request_finished", why="hookgate.key_id"),
        Reads(COST_USD, "request_finished", why="hookgate.cost_usd"),
    )

    def __init__(self, config: TracingConfig) -> None:
        if OPENTELEMETRY_MISSING is not None:
            raise PluginLoadError(
                "plugin 'tracing' needs OpenTelemetry, which is not installed "
                f"({OPENTELEMETRY_MISSING}): pip install 'hookgate[tracing]'"
            )
        self.config = config
        self.memory_exporter = InMemorySpanExporter() if config.exporter == "memory" else None
        """With ``exporter = "memory"``: the finished spans (``get_finished_spans()``), for tests."""
        self.provider: TracerProvider | None = None
        self.tracer: otel_trace.Tracer | None = None
        # Hook timings carry no request: they are matched to it through the task's context, which
        # request_started sets (each request runs in its own task, and tasks it starts inherit it).
        # Per instance, so that two apps (or two pipelines across a reload) never mix.
        self._current: ContextVar[RequestTrace | None] = ContextVar(f"hookgate_tracing_{id(self):x}", default=None)
        self._propagator = TraceContextTextMapPropagator()

    # ---------------------------------------------------------------------------------- lifecycle

    @hookimpl
    async def startup(self) -> None:
        config = self.config
        resource = Resource.create({**config.resource_attributes, "service.name": config.service_name})
        self.provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)))
        if self.memory_exporter is not None:
            self.provider.add_span_processor(SimpleSpanProcessor(self.memory_exporter))
        elif config.exporter == "console":
            self.provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(service_name=config.service_name)))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            headers = {name: value.get_secret_value() for name, value in config.headers.items()}
            exporter = OTLPSpanExporter(endpoint=config.endpoint, headers=headers or None, timeout=config.timeout_seconds)
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("hookgate.plugins.tracing")

    @hookimpl
    async def shutdown(self) -> None:
        provider, self.provider, self.tracer = self.provider, None, None
        if provider is not None:
            await asyncio.to_thread(provider.shutdown)  # flushes the last batch: blocking network I/O

    @hookimpl
    def register_hook_observers(self, register: Callable[[Callable[[str, str, float, str], None]], None]) -> None:
        if self.config.hook_spans:
            register(self.observe_hook)

    # ------------------------------------------------------------------------------------- events

    @hookimpl
    def request_started(self, ctx: RequestContext) -> None:
        if self.tracer is None:
            return
        parent = self._propagator.extract(_traceparent_only(ctx.headers)) if self.config.trust_traceparent else None
        span = self.tracer.start_span(
            "chat", context=parent, kind=SpanKind.SERVER, attributes={"hookgate.request_id": ctx.request_id}, start_time=_wall_ns(ctx.started_at)
        )
        if not span.is_recording():
            return
        trace = ctx[_TRACE] = RequestTrace(span)
        self._current.set(trace)

    @hookimpl
    def phase_started(self, ctx: RequestContext, phase: str, started_at: float) -> None:
        trace = ctx.get(_TRACE)
        if trace is not None and self.config.hook_spans and self.tracer is not None:
            trace.phases[phase] = self.tracer.start_span(
                phase, context=otel_trace.set_span_in_context(trace.span), attributes={"hookgate.phase": phase}, start_time=_wall_ns(started_at)
            )

    @hookimpl
    def phase_finished(self, ctx: RequestContext, phase: str, started_at: float, seconds: float, outcome: str) -> None:
        trace = ctx.get(_TRACE)
        span = trace.phases.pop(phase, None) if trace is not None else None
        if span is not None:
            if outcome not in ("ok", "hit"):
                span.set_status(Status(StatusCode.ERROR, outcome))
            span.end(end_time=_wall_ns(started_at + seconds))

    @hookimpl
    def attempt_started(self, ctx: RequestContext, number: int) -> None:
        trace = ctx.get(_TRACE)
        if trace is None or self.tracer is None:
            return
        parent = trace.phases.get("call_provider") or trace.span
        upstream_model = ctx.route.upstream_model if ctx.route is not None else ctx.model
        attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": ctx.provider_name, "hookgate.attempt": number}
        if upstream_model:
            attributes["gen_ai.request.model"] = _short(upstream_model)
        span = self.tracer.start_span(
            f"chat {_short(upstream_model)}", context=otel_trace.set_span_in_context(parent), kind=SpanKind.CLIENT, attributes=attributes
        )
        # Current while the provider is called, so an instrumented HTTP client nests under it.
        token = otel_context.attach(otel_trace.set_span_in_context(span))
        trace.attempts[number] = (span, token)

    @hookimpl
    def attempt_finished(self, ctx: RequestContext, attempt: Attempt) -> None:
        trace = ctx.get(_TRACE)
        opened = trace.attempts.pop(attempt.number, None) if trace is not None else None
        if opened is None:
            return
        span, token = opened
        try:
            otel_context.detach(token)
        except Exception:  # detached in another context: the span is still ended below
            pass
        if attempt.outcome == "ok":
            # The answered attempt stays open until the answer is complete (a stream: its last
            # chunk), so it can carry the response's model, finish reasons and usage.
            if ctx.stream:
                span.set_attribute("gen_ai.response.time_to_first_chunk", attempt.duration_ms / 1000)
            trace.answered = span
            return
        error_type = attempt.outcome.removeprefix("http_") if attempt.status else attempt.outcome
        if attempt.status:
            span.set_attribute("http.response.status_code", attempt.status)
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, attempt.outcome))
        span.end()

    @hookimpl
    def request_finished(self, ctx: RequestContext, outcome: Outcome) -> None:
        trace = ctx.pop(_TRACE, None)
        if trace is None:
            return
        span = trace.span
        for leftover in trace.phases.values():
            leftover.end()
        answered = trace.answered
        if answered is not None:
            if outcome.response is not None and not ctx.cache_hit:
                _set_response(answered, outcome.response.body, outcome.usage)
            elif outcome.error is not None:
                answered.set_attribute("hookgate.stream.incomplete", True)
            # The upstream was done once the answer was complete, before after_response and the send.
            done = ctx.started_at + outcome.total_seconds - outcome.phases.get("after_response", 0.0)
            answered.end(end_time=_wall_ns(done))
        span.set_attributes(_request_attributes(ctx))
        _set_outcome(span, ctx, outcome)
        if outcome.response is not None:
            _set_response(span, outcome.response.body, outcome.usage if not ctx.cache_hit else None)
        error = outcome.error
        if error is not None:
            span.set_attribute("error.type", error.code or type(error).__name__)
            if error.status >= 500:  # OpenTelemetry's HTTP conventions: a 4xx is the client's doing
                span.set_status(Status(StatusCode.ERROR, error.message[:_MAX_ATTRIBUTE_CHARS]))
        span.end(end_time=_wall_ns(ctx.started_at + outcome.total_seconds))

    # --------------------------------------------------------------------------------- hook spans

    def observe_hook(self, hook: str, plugin: str, seconds: float, outcome: str) -> None:
        """Hook observer: one plugin's hook call becomes a span of its phase (a call_provider
        middleware, whose own time is split around the rest of the chain, an event on it)."""
        trace = self._current.get()
        if trace is None or hook not in REQUEST_PHASES or self.tracer is None:
            return
        phase = trace.phases.get(hook)
        if phase is None:
            return
        end = time_ns()
        attributes = {"hookgate.hook": hook, "hookgate.plugin": plugin, "hookgate.hook.outcome": outcome}
        if hook == "call_provider":
            phase.add_event(f"middleware {plugin}", {**attributes, "hookgate.hook.self_ms": seconds * 1000}, timestamp=end)
            return
        span = self.tracer.start_span(
            f"{hook} {plugin}", context=otel_trace.set_span_in_context(phase), attributes=attributes, start_time=end - int(seconds * 1e9)
        )
        if outcome != "ok" and outcome != "hit":
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end(end_time=end)


class RequestTrace:
    """One request's open spans: the request span, the phases under way, the attempts under way."""

    __slots__ = ("span", "phases", "attempts", "answered")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.phases: dict[str, Any] = {}
        self.attempts: dict[int, tuple[Any, Any]] = {}
        self.answered: Any = None
        """The attempt span that got the answer, ended when the request finishes."""


_TRACE: StateKey[RequestTrace] = StateKey("tracing.trace", RequestTrace, "the request's open spans")


def _wall_ns(at: float) -> int:
    """A ``perf_counter()`` instant as wall-clock nanoseconds (what span timestamps are)."""
    return time_ns() - int((perf_counter() - at) * 1e9)


def _traceparent_only(headers: Mapping[str, str]) -> dict[str, str]:
    """The W3C trace headers of a request, bounded: the propagator never sees anything else."""
    found = {}
    for name in ("traceparent", "tracestate"):
        value = headers.get(name)
        if value is not None and len(value) <= 512:
            found[name] = value
    return found


# ------------------------------------------------------------------------------------ attributes


def _short(value: Any) -> str:
    text = str(value) if value is not None else "unknown"
    return text[:_MAX_ATTRIBUTE_CHARS]


def _request_attributes(ctx: RequestContext) -> dict[str, Any]:
    """What the client asked for: the model and sampling parameters, never the messages."""
    body = ctx.body
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "http.request.method": "POST",
        "url.path": "/v1/chat/completions",
        "hookgate.request_id": ctx.request_id,
        "gen_ai.request.stream": ctx.stream,
    }
    if ctx.model is not None:
        attributes["gen_ai.request.model"] = _short(ctx.model)
    for key, name in _REQUEST_PARAMETERS:
        value = body.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attributes[name] = value
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(max_tokens, int):
        attributes["gen_ai.request.max_tokens"] = max_tokens
    stop = body.get("stop")
    if isinstance(stop, str):
        attributes["gen_ai.request.stop_sequences"] = [stop[:_MAX_ATTRIBUTE_CHARS]]
    elif isinstance(stop, list):
        attributes["gen_ai.request.stop_sequences"] = [str(s)[:_MAX_ATTRIBUTE_CHARS] for s in stop]
    n = body.get("n")
    if isinstance(n, int) and n != 1:
        attributes["gen_ai.request.choice.count"] = n
    return attributes


_REQUEST_PARAMETERS = (
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
    ("seed", "gen_ai.request.seed"),
)


def _set_outcome(span: Any, ctx: RequestContext, outcome: Outcome) -> None:
    """What the gateway did with the request: routing, cache, attempts, status, cost."""
    attributes: dict[str, Any] = {
        "http.response.status_code": outcome.status,
        "hookgate.cache": ctx.cache_status,
        "hookgate.upstream_seconds": outcome.upstream_seconds,
    }
    if ctx.route is not None:  # routed: the model name is one the gateway serves
        span.update_name(f"chat {_short(ctx.model)}")
        attributes["gen_ai.provider.name"] = ctx.provider_name
    if ctx.cache_source:
        attributes["hookgate.cache_source"] = ctx.cache_source
    if ctx.attempts:
        attributes["hookgate.attempts"] = len(ctx.attempts)
    if outcome.time_to_first_byte_seconds is not None and ctx.stream:
        attributes["gen_ai.response.time_to_first_chunk"] = outcome.time_to_first_byte_seconds
    key = ctx.get(CLIENT_KEY)
    if key is not None:
        attributes["hookgate.key_id"] = key.id
    if outcome.cost_usd is not None:
        attributes["hookgate.cost_usd"] = float(outcome.cost_usd)
    span.set_attributes(attributes)


def _set_response(span: Any, body: Mapping[str, Any], usage: Mapping[str, Any] | None) -> None:
    """The GenAI response attributes of a complete answer."""
    attributes: dict[str, Any] = {}
    if isinstance(body.get("id"), str):
        attributes["gen_ai.response.id"] = _short(body["id"])
    if isinstance(body.get("model"), str):
        attributes["gen_ai.response.model"] = _short(body["model"])
    reasons = [c.get("finish_reason") for c in body.get("choices") or () if isinstance(c, dict) and c.get("finish_reason")]
    if reasons:
        attributes["gen_ai.response.finish_reasons"] = [str(r) for r in reasons]
    attributes.update(_usage_attributes(usage))
    span.set_attributes(attributes)


def _usage_attributes(usage: Mapping[str, Any] | None) -> dict[str, int]:
    if not usage:
        return {}
    found: dict[str, int] = {}
    if isinstance(usage.get("prompt_tokens"), int):
        found["gen_ai.usage.input_tokens"] = usage["prompt_tokens"]
    if isinstance(usage.get("completion_tokens"), int):
        found["gen_ai.usage.output_tokens"] = usage["completion_tokens"]
    counts = TokenUsage.of(usage)
    if counts.cached:
        found["gen_ai.usage.cache_read.input_tokens"] = counts.cached
    if counts.reasoning:
        found["gen_ai.usage.reasoning.output_tokens"] = counts.reasoning
    return found
