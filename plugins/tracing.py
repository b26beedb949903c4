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

Phase and hook spans are built from the core's hook timings (``register_hook_observers``), so they
cover every plugin wherever this one is listed. The attempt spans come from this plugin's own
``call_provider`` middleware: **list it after the reliability middlewares, right before the
providers** (``… retry, circuit_breaker, concurrency, timeout, tracing, echo, openai``), so each
attempt is one span; listed before ``retry`` it would see one span for all attempts. That place
also makes its ``after_response`` the last of the observers, so the request span closes after
the others. The tracer provider belongs to the plugin instance (never the global one), and so does
its exporter: two apps in one process trace separately.
"""
from __future__ import annotations

import asyncio
from contextvars import ContextVar
from time import perf_counter, time_ns
from typing import Any, AsyncIterator, Awaitable, Callable, Literal, Mapping

from pydantic import Field, SecretStr

from hookgate import Completion, CompletionStream, GatewayError, PluginConfig, ProviderResponse, RequestContext, hookimpl
from hookgate.registry import PluginLoadError

try:
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
        # Per instance, so that two apps (or two pipelines across a reload) never see each
        # other's requests. A request runs in its own task (aiohttp copies the context per
        # request), and hooks are awaited in it, so the variable follows exactly one request.
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
        register(self.observe_hook)

    # ------------------------------------------------------------------------------------ requests

    @hookimpl
    async def before_request(self, ctx: RequestContext) -> None:
        self._trace_of(ctx)

    @hookimpl
    async def call_provider(
        self, ctx: RequestContext, call_next: Callable[[RequestContext], Awaitable[ProviderResponse]]
    ) -> ProviderResponse:
        trace = self._current.get()
        if trace is None or trace.span is None or not trace.recording or self.tracer is None:
            return await call_next(ctx)
        parent = trace.enter_phase("call_provider", trace.last_end_ns or time_ns()) if self.config.hook_spans else trace.span
        trace.attempts += 1
        route = ctx.route
        upstream_model = route.upstream_model if route is not None else ctx.model
        trace.span.update_name(f"chat {_short(ctx.model)}")
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": ctx.provider_name,
            "hookgate.attempt": trace.attempts,
        }
        if upstream_model:
            attributes["gen_ai.request.model"] = _short(upstream_model)
        span = self.tracer.start_span(
            f"chat {_short(upstream_model)}", context=otel_trace.set_span_in_context(parent), kind=SpanKind.CLIENT, attributes=attributes
        )
        started = perf_counter()
        try:
            # Current while the provider is called, so an instrumented HTTP client nests under it.
            with otel_trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                response = await call_next(ctx)
        except BaseException as exc:
            _fail(span, exc)
            span.end()
            raise
        if isinstance(response, CompletionStream):
            return _traced_stream(response, span, started)
        _set_response(span, response.body, response.usage)
        span.end()
        return response

    @hookimpl
    async def after_response(self, ctx: RequestContext, response: Completion) -> None:
        trace = self._trace_of(ctx)
        if trace.recording and not trace.done:
            span = trace.span
            _set_outcome(span, ctx, ctx.status)
            if ctx.cache_status != "HIT":  # a HIT spent no tokens: usage stays on the attempt that did
                _set_response(span, response.body, getattr(ctx, "usage", None) or response.usage)
            else:
                _set_response(span, response.body, None)
            self._close(trace)

    @hookimpl
    async def on_error(self, ctx: RequestContext, error: GatewayError) -> None:
        trace = self._trace_of(ctx)
        if trace.recording and not trace.done:
            span = trace.span
            _set_outcome(span, ctx, error.status)
            span.set_attribute("error.type", error.code or type(error).__name__)
            if error.status >= 500:  # OpenTelemetry's HTTP conventions: a 4xx is the client's doing
                span.set_status(Status(StatusCode.ERROR, error.message[:_MAX_ATTRIBUTE_CHARS]))
            self._close(trace)

    # --------------------------------------------------------------------------------- hook spans

    def observe_hook(self, hook: str, plugin: str, seconds: float, outcome: str) -> None:
        """Hook observer: turn one plugin's hook call into a span of its request's trace."""
        if hook not in REQUEST_PHASES:
            return
        trace = self._current.get()
        if trace is None or (trace.done and hook == "before_request"):
            # A hook of a plugin listed before this one: kept until before_request starts the trace.
            trace = RequestTrace(self.tracer)
            self._current.set(trace)
        if not trace.recording:
            return
        end = time_ns()
        call = (hook, plugin, end - int(seconds * 1e9), end, outcome)
        if trace.span is None:
            trace.pending.append(call)
        elif self.config.hook_spans:
            trace.record(call)
        if trace.closing:
            # This was this plugin's own after_response/on_error: the request span ends now, after
            # the phase that contains it.
            trace.finish()

    def _trace_of(self, ctx: RequestContext) -> RequestTrace:
        """The request's trace, its span started (at the request's arrival) on first use."""
        trace = self._current.get()
        if trace is None or (trace.ctx is not None and trace.ctx is not ctx):
            # (A previous request's trace only when requests share a task: hooks driven directly.)
            trace = RequestTrace(self.tracer)
            self._current.set(trace)
        if trace.span is None and trace.recording:
            trace.ctx = ctx
            parent = self._propagator.extract(ctx.headers) if self.config.trust_traceparent else None
            span = self.tracer.start_span(
                "chat",
                context=parent,
                kind=SpanKind.SERVER,
                attributes=_request_attributes(ctx),
                start_time=time_ns() - int((perf_counter() - ctx.started_at) * 1e9),
            )
            trace.span = span
            trace.recording = span.is_recording()
            if trace.recording and self.config.hook_spans:
                for call in trace.pending:
                    trace.record(call)
            trace.pending.clear()
        return trace

    def _close(self, trace: RequestTrace) -> None:
        if self.config.hook_spans:
            trace.closing = True  # finished by the observer, right after this hook call
        else:
            trace.finish()


class RequestTrace:
    """One request's spans while it runs: the request span, the open phase, hook calls seen
    before the request span existed."""

    __slots__ = ("tracer", "ctx", "span", "recording", "pending", "phase", "phase_span", "last_end_ns", "attempts", "closing", "done")

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer
        self.ctx: RequestContext | None = None
        self.span: Any = None
        self.recording = tracer is not None
        self.pending: list[tuple[str, str, int, int, str]] = []
        self.phase: str | None = None
        self.phase_span: Any = None
        self.last_end_ns = 0
        self.attempts = 0
        self.closing = False
        self.done = False

    def enter_phase(self, phase: str, start_ns: int) -> Any:
        """The span of ``phase``, opened at ``start_ns`` if the request moved on to it."""
        if self.phase != phase:
            self._end_phase()
            self.phase = phase
            self.phase_span = self.tracer.start_span(
                phase, context=otel_trace.set_span_in_context(self.span), attributes={"hookgate.phase": phase}, start_time=start_ns
            )
        return self.phase_span

    def record(self, call: tuple[str, str, int, int, str]) -> None:
        """One plugin's hook call: a child span of its phase, or for a ``call_provider``
        middleware (whose own time is split around the rest of the chain) an event on the phase."""
        hook, plugin, start, end, outcome = call
        attributes = {"hookgate.hook": hook, "hookgate.plugin": plugin, "hookgate.hook.outcome": outcome}
        if self.done:
            # A plugin listed after this one, still running after the request span ended.
            parent = self.span
        elif hook == "call_provider":
            phase = self.enter_phase(hook, self.last_end_ns or start)
            phase.add_event(f"middleware {plugin}", {**attributes, "hookgate.hook.self_ms": (end - start) / 1e6}, timestamp=end)
            self.last_end_ns = max(self.last_end_ns, end)
            return
        else:
            parent = self.enter_phase(hook, start)
        span = self.tracer.start_span(f"{hook} {plugin}", context=otel_trace.set_span_in_context(parent), attributes=attributes, start_time=start)
        if outcome != "ok" and outcome != "hit":
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end(end_time=end)
        self.last_end_ns = max(self.last_end_ns, end)

    def finish(self) -> None:
        """End the open phase and the request span."""
        self._end_phase()
        self.span.end()
        self.done = True
        self.closing = False

    def _end_phase(self) -> None:
        if self.phase_span is not None:
            self.phase_span.end(end_time=max(self.last_end_ns, self.phase_span.start_time or 0) or None)
            self.phase_span = None
            self.phase = None


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


def _set_outcome(span: Any, ctx: RequestContext, status: int) -> None:
    """What the gateway did with the request: routing, cache, attempts, status, cost."""
    attributes: dict[str, Any] = {
        "http.response.status_code": status,
        "hookgate.cache": ctx.cache_status,
        "hookgate.upstream_seconds": ctx.upstream_seconds,
    }
    if ctx.route is not None:  # routed: the model name is one the gateway serves
        span.update_name(f"chat {_short(ctx.model)}")
        attributes["gen_ai.provider.name"] = ctx.provider_name
    if ctx.cache_source:
        attributes["hookgate.cache_source"] = ctx.cache_source
    if ctx.attempts:
        attributes["hookgate.attempts"] = len(ctx.attempts)
    key = getattr(ctx, "client_key", None)
    if key is not None:
        attributes["hookgate.key_id"] = key.id
    cost = getattr(ctx, "cost_usd", None)
    if cost is not None:
        attributes["hookgate.cost_usd"] = float(cost)
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
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    if isinstance(cached, int) and cached:
        found["gen_ai.usage.cache_read.input_tokens"] = cached
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    if isinstance(reasoning, int) and reasoning:
        found["gen_ai.usage.reasoning.output_tokens"] = reasoning
    return found


def _fail(span: Any, exc: BaseException) -> None:
    """Mark an attempt span failed: ``error.type`` is the upstream status, the error code, or the
    exception's class (``cancelled`` when a timeout or a disconnected client cancelled it)."""
    if isinstance(exc, GatewayError):
        error_type = str(exc.upstream_status) if exc.upstream_status else exc.code or type(exc).__name__
        if exc.upstream_status:
            span.set_attribute("http.response.status_code", exc.upstream_status)
        description = exc.message
    elif isinstance(exc, asyncio.CancelledError):
        error_type, description = "cancelled", "the attempt was cancelled (a timeout, or the client went away)"
    else:
        error_type, description = type(exc).__name__, str(exc)
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, description[:_MAX_ATTRIBUTE_CHARS]))


def _traced_stream(stream: CompletionStream, span: Any, started: float) -> CompletionStream:
    """Pass a stream's chunks through, noting its response attributes; the attempt span ends
    with the stream (exhausted, failed, or closed early by the client or a timeout)."""
    seen: dict[str, Any] = {"reasons": []}
    ended = False

    def end(complete: bool) -> None:
        nonlocal ended
        if ended:
            return
        ended = True
        body = {"id": seen.get("id"), "model": seen.get("model"), "choices": [{"finish_reason": r} for r in seen["reasons"]]}
        _set_response(span, body, seen.get("usage"))
        if not complete and "error" not in seen:
            span.set_attribute("hookgate.stream.incomplete", True)
        span.end()

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        try:
            async for chunk in stream:
                if "first" not in seen:
                    seen["first"] = True
                    seen["id"], seen["model"] = chunk.get("id"), chunk.get("model")
                    span.set_attribute("gen_ai.response.time_to_first_chunk", perf_counter() - started)
                for choice in chunk.get("choices") or ():
                    reason = choice.get("finish_reason")
                    if reason:
                        seen["reasons"].append(reason)
                if chunk.get("usage"):
                    seen["usage"] = chunk["usage"]
                yield chunk
        except GeneratorExit:
            raise
        except BaseException as exc:
            seen["error"] = True
            _fail(span, exc)
            end(False)
            raise
        end(True)

    async def close() -> None:
        try:
            await stream.aclose()
        finally:
            end(False)

    return CompletionStream(chunks(), close=close, first_chunk_received=stream.first_chunk_received)
