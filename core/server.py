"""The aiohttp application: the HTTP edge, the core's routes, and writing answers as JSON or SSE.

This layer reads requests and writes bytes. What happens between (authentication, the phases,
routing, caches, the provider chain, and ending each request exactly once) belongs to the
request's :class:`~hookgate.exchange.Exchange`; the shapes of each client-facing API (request,
answer, stream, error) belong to its :class:`~hookgate.surfaces.Surface`.

The edge defends the process: a body must arrive within ``body_read_timeout_seconds`` (408), at
most ``max_anonymous_body_reads`` unauthenticated bodies are read at once, and at most half the
process's open-file limit (up to 1024) of all bodies (503 past either, and the connection closed,
so that slow bodies cannot take every file descriptor and lock out every other client), the key
is checked from the headers before any body is read, and a body that is not what its
``Content-Encoding`` says is a 400.
"""
from __future__ import annotations

import asyncio
import os
from time import perf_counter
from typing import Any, AsyncIterator, Callable

import orjson
import structlog
from aiohttp import web

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

from .config import GatewayConfig
from .context import RequestContext
from .errors import (
    ClientDisconnected,
    GatewayError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    UpstreamError,
)
from .exchange import Exchange, as_gateway_error
from .facts import CLIENT_KEY, USAGE
from .gateway import Gateway
from .health import Readiness
from .pipelines import PIPELINES, Pipelines
from .redis import REDIS_SERVICE, RedisService
from .conversations import CONVERSATION_STORE_SLOT, StoreSlot
from .embeddings import EMBEDDERS, EmbedderService
from .http import install_http_service
from .output import OutputFilter, output_filters
from .responses import Completion, CompletionStream, assemble_stream, completion_to_chunks, is_complete
from .sse import SSE_RELAY, SSERelay
from .surfaces import NATIVE_EVENTS, Surface, remember_native
from .tasks import BACKGROUND_TASKS, BackgroundTasks
from .web import describe_pipeline, identify, presented_key, require_admin

__all__ = ["create_app", "PIPELINES", "current_gateway"]

log = structlog.get_logger("hookgate.server")

_REQUEST_ID = web.RequestKey("hookgate_request_id", str)
_STREAM = web.RequestKey("hookgate_stream", web.StreamResponse)
"""The SSE response of a request once its headers went out: after that, a failure must end the
stream with an error event, never start a second HTTP response inside it."""
_SURFACE = web.RequestKey("hookgate_surface", object)
"""The surface serving a request, so that its errors are written in that surface's shape."""


class _ReadSlots:
    """How many bodies are being read at once, against a bound: a counter, not a semaphore,
    because a body read never waits for a slot (the edge answers 503 when none is free), and
    ``asyncio.Semaphore``'s ``locked()``, ``acquire()`` and ``release()`` cost about 4 µs per
    request for a wait that cannot happen."""

    __slots__ = ("limit", "in_use")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def full(self) -> bool:
        return self.in_use >= self.limit


_ANONYMOUS_BODY_READS = web.AppKey("hookgate_anonymous_body_reads", _ReadSlots)
_BODY_READS = web.AppKey("hookgate_body_reads", _ReadSlots)
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def create_app(config: GatewayConfig, *, pipelines: Callable[[Gateway], Pipelines] | None = None) -> web.Application:
    """Build an isolated gateway app: its own plugin instances, providers and state.

    :param pipelines: how to hold the pipeline; ``Pipelines.from_file`` makes it reloadable from
        a plugins.toml (``hookgate serve`` does). By default it can be reloaded only with a
        config object given to :meth:`Pipelines.reload`.

    Raises :class:`~hookgate.config.ConfigError` or :class:`~hookgate.runner.PipelineError` when
    the configuration cannot form a pipeline. Plugin resources open when the app starts
    (``startup``) and close when it stops.
    """
    gateway = Gateway(config)
    settings = config.gateway
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[_errors_and_request_id])
    app[PIPELINES] = pipelines(gateway) if pipelines else Pipelines(gateway, grace_seconds=settings.shutdown_grace_seconds)
    app[REDIS_SERVICE] = RedisService(
        max_operations=settings.redis_max_connections,
        failure_threshold=settings.redis_failure_threshold,
        retry_interval=settings.redis_retry_interval_seconds,
    )
    app[BACKGROUND_TASKS] = BackgroundTasks(settings.max_background_tasks)
    app[EMBEDDERS] = EmbedderService()
    app[CONVERSATION_STORE_SLOT] = StoreSlot()  # filled by the memory plugin, even one enabled by a reload
    app[_ANONYMOUS_BODY_READS] = _ReadSlots(settings.max_anonymous_body_reads)
    app[_BODY_READS] = _ReadSlots(_body_reads_bound())
    app[_REQUEST_IDS] = _RequestIds()
    for path, (method, handler) in _CORE_ROUTES.items():
        app.router.add_route(method, path, handler)
    app.router.add_route("*", "/{path:.*}", pipeline_routes)  # last: the pipeline's surfaces and plugin routes
    gateway.add_routes(app)
    install_http_service(app, settings)  # before the plugins' lifecycle: the pool closes after them
    app.cleanup_ctx.append(_plugin_lifecycle)
    return app


def current_gateway(app: web.Application) -> Gateway:
    """The pipeline new requests of ``app`` use."""
    return app[PIPELINES].current


async def _plugin_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Start the plugins before the server accepts requests; stop them after it stopped."""
    pipelines = app[PIPELINES]
    gateway = pipelines.current
    try:
        await gateway.start(app)
    except BaseException:
        await app[REDIS_SERVICE].close()
        await app[EMBEDDERS].close()
        raise
    for warning in gateway.config.warnings:
        log.warning("config_warning", detail=warning)
    log.info(
        "pipeline_ready",
        pipeline=list(gateway.runner.plugins),
        rules=sum(len(rules.rules) for rules in gateway.runner.plugin_rules()),
        config=gateway.config.source,
    )
    try:
        yield
    finally:
        await app[BACKGROUND_TASKS].close(gateway.config.gateway.background_drain_seconds)
        await pipelines.close(app)
        await app[REDIS_SERVICE].close()
        await app[EMBEDDERS].close()


# -------------------------------------------------------------------------------------------------
# Surfaces: every client-facing API runs the same chain
# -------------------------------------------------------------------------------------------------


async def surface_request(request: web.Request, surface: Surface) -> web.StreamResponse:
    """A request to one of the current pipeline's surfaces, through the hook chain.

    The request runs to its end on the pipeline that was current when it arrived, even if a
    reload replaces it meanwhile.
    """
    gateway = request.app[PIPELINES].current
    gateway.in_flight += 1
    request[_SURFACE] = surface
    ctx = RequestContext(
        request_id=request[_REQUEST_ID],
        body={},
        headers=request.headers,
        api_key=presented_key(request.headers),
        surface=surface.name,
        kind=surface.kind,
        client_address=request.remote,
    )
    exchange = gateway.exchange(ctx, surface.kind)
    try:
        return await _serve(request, gateway, exchange, surface)
    finally:
        exchange.finish()
        gateway.in_flight -= 1


async def _serve(request: web.Request, gateway: Gateway, exchange: Exchange, surface: Surface) -> web.StreamResponse:
    ctx = exchange.ctx
    try:
        await exchange.authenticate()
        raw = await _read_json(request, gateway.config.gateway, authenticated=CLIENT_KEY in ctx)
        parsed = await surface.parse(ctx, raw)
        ctx.body = parsed.canonical
        if parsed.native is not None:
            ctx.native = parsed.native
            remember_native(ctx, surface.wire)
        answer = await exchange.answer()
        if isinstance(answer, CompletionStream):
            if ctx.stream:
                return await _relay_stream(request, exchange, surface, answer)
            answer = await _drain(ctx, answer)
        if ctx.stream:
            return await _replay_as_stream(request, exchange, surface, answer)
        await exchange.complete(answer)
        answer = _for_client(ctx, answer)
        await surface.completed(ctx, answer)
        return await _send_json(request, exchange, orjson.dumps(surface.render(ctx, answer)))
    except asyncio.CancelledError:
        await exchange.fail(ClientDisconnected("The client closed the connection before the answer was complete."))
        raise
    except Exception as exc:
        error = exchange.error or as_gateway_error(exc, ctx.request_id)
        if not isinstance(exc, GatewayError):
            log.error("request_failed", request_id=ctx.request_id, exc_info=exc)
        await exchange.fail(error)
        return _error_response(error, _headers(ctx), surface)


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: every model an enabled provider serves that the caller's key may use."""
    allowed = await _allowed_models(request)
    data = [
        _model_object(model, provider)
        for model, provider in request.app[PIPELINES].current.model_ids()
        if allowed is None or model in allowed
    ]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type="application/json")


async def retrieve_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{model}``: one model, if it is served and the caller's key may use it."""
    wanted = request.match_info["model"]
    allowed = await _allowed_models(request)
    for model, provider in request.app[PIPELINES].current.model_ids():
        if model == wanted and (allowed is None or model in allowed):
            return web.Response(body=orjson.dumps(_model_object(model, provider)), content_type="application/json")
    shown = wanted if len(wanted) <= 256 and wanted.isprintable() else wanted[:256].encode("unicode_escape").decode("ascii")
    raise NotFound(f"The model '{shown}' does not exist or is not served by this gateway.", param="model", code="model_not_found")


async def _allowed_models(request: web.Request) -> frozenset[str] | None:
    key = await identify(request)
    return key.models if key is not None else None


def _model_object(model: str, provider: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": provider}


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: the process is up and serving."""
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: every plugin's readiness and each Redis server's, checked all at once,
    each within ``readiness_timeout_seconds``; 503 while any is unavailable."""
    gateway = request.app[PIPELINES].current
    timeout = gateway.config.gateway.readiness_timeout_seconds
    calls = gateway.runner.calls("check_ready")
    results = await asyncio.gather(
        *(_bounded_check(call.function, call.argnames, request.app, timeout) for call in calls),
        _bounded(request.app[REDIS_SERVICE].readiness(timeout / 2), timeout),
        return_exceptions=True,
    )
    checks: dict[str, dict[str, str]] = {}
    for call, result in zip(calls, results):
        if isinstance(result, Readiness):
            checks[call.plugin] = {"status": result.status, "detail": result.detail}
        elif isinstance(result, TimeoutError):
            checks[call.plugin] = {"status": "unavailable", "detail": f"readiness check took longer than {timeout:g} s"}
        elif isinstance(result, BaseException):
            log.error("readiness_check_failed", plugin=call.plugin, exc_info=result)
            checks[call.plugin] = {"status": "unavailable", "detail": f"readiness check failed ({type(result).__name__})"}
    redis_report = results[-1]
    if isinstance(redis_report, dict):
        for where, readiness in redis_report.items():
            checks[f"redis {where}"] = {"status": readiness.status, "detail": readiness.detail}
    statuses = {check["status"] for check in checks.values()}
    overall = "unavailable" if "unavailable" in statuses else "degraded" if "degraded" in statuses else "ready"
    return web.Response(
        status=503 if overall == "unavailable" else 200,
        body=orjson.dumps({"status": overall, "checks": checks}),
        content_type="application/json",
    )


async def _bounded_check(function: Any, argnames: tuple[str, ...], app: web.Application, timeout: float) -> Any:
    return await _bounded(function(*[{"app": app}[name] for name in argnames]), timeout)


async def _bounded(awaitable: Any, timeout: float) -> Any:
    async with asyncio.timeout(timeout):
        return await awaitable


async def plugins_report(request: web.Request) -> web.Response:
    """``GET /-/plugins``: the running pipeline, hook order, rules, schemas and effective values
    (secrets masked). An admin endpoint: ``authorize_admin`` hooks decide who may see it."""
    await require_admin(request)
    report = await describe_pipeline(request)
    return web.Response(body=orjson.dumps(report, default=str), content_type="application/json")


async def pipeline_routes(request: web.Request) -> web.StreamResponse:
    """Serve what the current pipeline adds: its surfaces, their extra routes, and the routes
    plugins registered; else 404/405."""
    gateway = request.app[PIPELINES].current
    surface = gateway.surfaces.get(request.path)
    if surface is not None:
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        return await surface_request(request, surface)
    if request.path in _CORE_ROUTES:  # a core path with another method
        raise web.HTTPMethodNotAllowed(request.method, [_CORE_ROUTES[request.path][0]])
    match = await gateway.plugin_router.resolve(request)
    if match.http_exception is not None:
        raise match.http_exception
    request.match_info.update(match)  # the plugin's own path parameters ({id})
    owner = gateway.route_surfaces.get(match.route.resource.canonical if match.route.resource else "")
    if owner is not None:
        request[_SURFACE] = owner
    return await match.handler(request)


_CORE_ROUTES: dict[str, tuple[str, Any]] = {
    "/v1/models": ("GET", list_models),
    "/v1/models/{model}": ("GET", retrieve_model),
    "/healthz": ("GET", healthz),
    "/readyz": ("GET", readyz),
    "/-/plugins": ("GET", plugins_report),
}
"""The core's own routes; any other path goes to the current pipeline (surfaces, plugin routes)."""


# -------------------------------------------------------------------------------------------------
# Answers
# -------------------------------------------------------------------------------------------------


async def _send_json(request: web.Request, exchange: Exchange, payload: bytes) -> web.StreamResponse:
    """Send a complete JSON answer (written here, so the request ends after its last byte)."""
    ctx = exchange.ctx
    response = web.Response(body=payload, content_type="application/json", headers=_headers(ctx))
    ctx.first_byte_at = perf_counter()
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        await exchange.fail(ClientDisconnected("The client closed the connection before the answer was sent."))
    return response


async def _relay_stream(request: web.Request, exchange: Exchange, surface: Surface, stream: CompletionStream) -> web.StreamResponse:
    """Send chunks as they arrive; ``after_response`` gets the assembled answer after the last one.

    The response is started only once the first chunk is in hand, so a failure before it is still
    an ordinary HTTP error with its status. After the first byte the status cannot change: the
    client gets the surface's error event and a clean end of stream. The upstream is closed in
    every case, including a client that went away. A pass-through stream (chunks carrying their
    native bytes) is written byte for byte to a surface of the same wire, unless an output filter
    must see the chunks. A stream whose provider relays its upstream's bytes (an ``SSERelay``
    of the surface's wire) is written one upstream read at a time, as those bytes, for as long
    as the chunks come through the chain unchanged.
    """
    ctx = exchange.ctx
    response: web.StreamResponse | None = None
    chunks: list[dict[str, Any]] = []
    delivered: list[dict[str, Any]] = []  # what the output filters let the client have
    filters = output_filters(ctx)
    writer = surface.open_stream(ctx)
    native: bool | None = None  # decided by the first chunk
    relay: SSERelay | None = None  # likewise
    intact = False  # whether the stream is its provider's chunks as it made them (CompletionStream.relay)
    vouched = 0  # how many of the first chunks the relay wrote as the provider's checked bytes
    iterator = stream.batches()  # the chunks of one upstream read together, when the provider gives them so
    try:
        while True:
            waited_from = perf_counter()
            try:
                batch = await anext(iterator)
            except StopAsyncIteration:
                break
            finally:
                ctx.upstream_seconds += perf_counter() - waited_from
            if not batch:
                continue
            started = response is None
            if response is None:
                response = await _start_stream(request, ctx, surface)
                native = NATIVE_EVENTS in batch[0] and not filters
                if not native and not filters:
                    relay = ctx.get(SSE_RELAY)
                    if relay is not None and (relay.wire != surface.wire or relay.broken):
                        relay = None
                    intact = relay is not None and stream.relay is relay
            chunks.extend(batch)
            if native:
                payload = b"".join([chunk.get(NATIVE_EVENTS) or b"" for chunk in batch])
            elif relay is not None:
                payload = relay.accept_all(batch, intact=intact)
                if relay.broken:  # a chunk the chain made or changed: render from here on
                    payload += _rendered(writer, relay.release())
                    relay = None
                else:
                    vouched = len(chunks)  # the provider's own chunks, checked by it and unchanged since
            elif filters:
                filtered = [out for chunk in batch for out in _filtered_chunk(filters, chunk)]
                delivered.extend(filtered)
                payload = b"".join([writer.feed(out) for out in filtered])
            else:
                payload = b"".join([writer.feed(chunk) for chunk in batch])
            if payload or started:  # the first write sends the headers, with what there is
                await response.write(payload)
        if response is None:
            response = await _start_stream(request, ctx, surface)
        if relay is not None:
            held = _rendered(writer, relay.release())  # a read whose last chunk the chain dropped
            if held:
                await response.write(held)
        if filters:
            released = _filters_end(filters)
            delivered.extend(released)
            held = b"".join(writer.feed(out) for out in released)
            if held:
                await response.write(held)
        # The provider's assembly while its relay (never broken, then) vouched for every chunk;
        # else the chunks as they came.
        assembly = relay.assembly if relay is not None else None
        completion = assembly.completion() if assembly is not None and vouched == len(chunks) == assembly.count else None
        if completion is None:
            completion = assemble_stream(chunks, checked=vouched)
        if not is_complete(completion):
            raise UpstreamError("The provider ended the stream before the answer was complete.", code="upstream_incomplete")
        if completion.body.get("usage") is None and USAGE in ctx:
            completion.body["usage"] = ctx[USAGE]  # the usage chunk a client did not ask for was not relayed
        await exchange.complete(completion)
        await surface.completed(ctx, _as_delivered(completion, delivered) if filters else completion)
    except asyncio.CancelledError:
        raise
    except ConnectionError:
        await exchange.fail(ClientDisconnected("The client closed the connection during the stream."))
        return response if response is not None else web.Response(status=499)
    except Exception as exc:
        error = exchange.error or as_gateway_error(exc, ctx.request_id)
        if not isinstance(exc, GatewayError):
            log.error("stream_failed", request_id=ctx.request_id, exc_info=exc)
        await exchange.fail(error)
        if response is not None:
            held = _rendered(writer, relay.release()) if relay is not None else b""
            await _end_stream(exchange, response, held + writer.fail(error))
            return response
        return _error_response(error, _headers(ctx), surface)
    finally:
        await stream.aclose()
    await _end_stream(exchange, response, b"" if native else writer.finish())
    return response


def _rendered(writer: Any, chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(writer.feed(chunk) for chunk in chunks)


class _SSEAnswer(web.StreamResponse):
    """A streamed answer whose headers go out with its first bytes, in one write, as aiohttp's
    ``Response`` sends a body it has whole (a ``StreamResponse`` writes them alone at once). The
    core writes right after :func:`_start_stream`, an empty write if it has nothing yet, so the
    headers are never held back. Should aiohttp drop the attribute, the headers simply go first."""

    _send_headers_immediately = False


async def _start_stream(request: web.Request, ctx: RequestContext, surface: Surface) -> web.StreamResponse:
    """Start the SSE response: its headers, the first byte of the answer, go out with the first
    write, which the caller makes at once."""
    response = _SSEAnswer(headers={"Content-Type": surface.content_type, **_SSE_HEADERS, **_headers(ctx)})
    await response.prepare(request)
    request[_STREAM] = response
    ctx.first_byte_at = perf_counter()
    return response


async def _replay_as_stream(request: web.Request, exchange: Exchange, surface: Surface, completion: Completion) -> web.StreamResponse:
    """Send a complete answer (a cache hit, or a provider that cannot stream) as SSE."""
    ctx = exchange.ctx
    await exchange.complete(completion)
    filters = output_filters(ctx)
    replayed: list[dict[str, Any]] = []
    if filters:
        replayed = completion_to_chunks(completion.body, include_usage=ctx.include_usage)
        replayed = [out for chunk in replayed for out in _filtered_chunk(filters, chunk)] + _filters_end(filters)
    await surface.completed(ctx, _as_delivered(completion, replayed) if filters else completion)
    payload = surface.replay_native(ctx, completion.native) if completion.native is not None and not filters else None
    if payload is None:
        writer = surface.open_stream(ctx)
        if not filters:
            replayed = completion_to_chunks(completion.body, include_usage=ctx.include_usage)
        payload = b"".join(writer.feed(chunk) for chunk in replayed) + writer.finish()
    try:
        response = await _start_stream(request, ctx, surface)
        await response.write_eof(payload)  # headers, events and the end in one write
    except ConnectionError:
        await exchange.fail(ClientDisconnected("The client closed the connection during the stream."))
        return request.get(_STREAM) or web.Response(status=499)
    return response


def _for_client(ctx: RequestContext, completion: Completion) -> Completion:
    """The answer as this client gets it: through its output filters (which see a copy; the
    pipeline's answer is left as it is), and without the native answer once one has filtered it."""
    filters = output_filters(ctx)
    if not filters:
        return completion
    body = orjson.loads(orjson.dumps(completion.body))
    for output_filter in filters:
        body = output_filter.body(body)
    return Completion(body)


def _as_delivered(completion: Completion, chunks: list[dict[str, Any]]) -> Completion:
    """The streamed answer as the client received it, through its output filters (what a surface
    stores and continues from: the values guardrails restored, not its placeholders), with the
    provider's usage."""
    if not chunks:
        return completion
    delivered = assemble_stream(chunks)
    if completion.body.get("usage") is not None:
        delivered.body["usage"] = completion.body["usage"]
    return delivered


def _filtered_chunk(filters: list[OutputFilter], chunk: dict[str, Any]) -> list[dict[str, Any]]:
    """What the client gets in place of ``chunk``, through every filter in order (they get a copy:
    the pipeline assembles the answer from the chunks as they came)."""
    chunks = [orjson.loads(orjson.dumps({key: value for key, value in chunk.items() if key != NATIVE_EVENTS}))]
    for output_filter in filters:
        chunks = [out for item in chunks for out in output_filter.chunk(item)]
    return chunks


def _filters_end(filters: list[OutputFilter]) -> list[dict[str, Any]]:
    """Each filter's held-back chunks, passed on through the filters after it."""
    out: list[dict[str, Any]] = []
    for index, output_filter in enumerate(filters):
        released = output_filter.end()
        for later in filters[index + 1 :]:
            released = [item for chunk in released for item in later.chunk(chunk)]
        out.extend(released)
    return out


async def _drain(ctx: RequestContext, stream: CompletionStream) -> Completion:
    """Collect a whole stream into one answer (a provider streamed to a non-streaming client)."""
    chunks: list[dict[str, Any]] = []
    waited_from = perf_counter()
    try:
        async for batch in stream.batches():
            chunks.extend(batch)
    finally:
        ctx.upstream_seconds += perf_counter() - waited_from
        await stream.aclose()
    completion = assemble_stream(chunks)
    if not is_complete(completion):
        raise UpstreamError("The provider ended the stream before the answer was complete.", code="upstream_incomplete")
    return completion


async def _end_stream(exchange: Exchange, response: web.StreamResponse, closing: bytes) -> None:
    try:
        await response.write_eof(closing)  # the closing events and the end of the body in one write
    except ConnectionError:
        await exchange.fail(ClientDisconnected("The client closed the connection during the stream."))


# -------------------------------------------------------------------------------------------------
# Edges: request parsing, headers, errors
# -------------------------------------------------------------------------------------------------


async def _read_json(request: web.Request, settings: Any, *, authenticated: bool) -> Any:
    """The request's JSON body, read within the edge's bounds: its size, the time it may take to
    arrive, and (for a client no authenticate hook recognised) how many are read at once."""
    limit = settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The request body is {request.content_length} bytes; the limit is {limit}.")
    reads = (request.app[_BODY_READS],) if authenticated else (request.app[_BODY_READS], request.app[_ANONYMOUS_BODY_READS])
    for slots in reads:
        if slots.full():
            raise ServiceUnavailable(
                "Too many requests are sending their bodies at once; try again shortly.", code="overloaded", headers={"Retry-After": "1"}
            )
    for slots in reads:
        slots.in_use += 1
    try:
        if request.content.is_eof():
            # The whole body has arrived (a small body comes with its headers): read() returns
            # without waiting, so the deadline's timer (about 5 µs to arm and cancel) could never fire.
            raw = await request.read()
        else:
            async with asyncio.timeout(settings.body_read_timeout_seconds):
                raw = await request.read()
    except TimeoutError:
        raise RequestTimeout(f"The request body did not arrive within {settings.body_read_timeout_seconds:g} s.") from None
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes.") from None
    except (ValueError, OSError, web.RequestPayloadError) as exc:  # not what its Content-Encoding says, a broken connection
        if isinstance(exc, ConnectionError):
            raise
        raise InvalidRequest(_undecodable(request), code="invalid_body") from None
    finally:
        for slots in reads:
            slots.in_use -= 1
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        if request.headers.get("Content-Encoding"):  # e.g. gzip cut short: it decodes, to less than JSON
            raise InvalidRequest(_undecodable(request), code="invalid_body") from None
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be a JSON object (Content-Type: application/json)."
        ) from None


def _undecodable(request: web.Request) -> str:
    encoding = request.headers.get("Content-Encoding", "")
    if encoding and encoding.isascii() and encoding.isprintable() and len(encoding) <= 32:
        return f"The request body is not what its Content-Encoding says ({encoding}), or not JSON once decoded."
    return "The request body could not be read (is it what its Content-Encoding says?)."


def _body_reads_bound() -> int:
    """Bodies read at once from any client: half the open-file limit (the rest is for connections
    waiting on upstreams, idle keep-alives, the upstream pool, Redis), at most 1024."""
    if resource is None:
        return 1024
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1024 if soft == resource.RLIM_INFINITY else max(16, min(1024, soft // 2))


def _headers(ctx: RequestContext) -> dict[str, str]:
    overhead_ms = (perf_counter() - ctx.started_at - ctx.upstream_seconds) * 1000.0
    headers = {
        "x-request-id": ctx.request_id,
        "x-hookgate-cache": ctx.cache_status,
        "x-hookgate-provider": ctx.provider_name,
        "x-hookgate-overhead-ms": f"{overhead_ms:.3f}",
    }
    if ctx.response_headers:
        headers.update(ctx.response_headers)
    return headers


_CLOSES_THE_CONNECTION = frozenset({"overloaded", "invalid_body"})
"""Error codes (besides 408) sent with ``Connection: close``: the connection is closed once aiohttp
has read what else of the body comes within its lingering time (``hookgate serve`` makes that
``body_read_timeout_seconds``), never kept alive for another request. A body that missed its
deadline, or that the edge has no room to read, is not worth waiting for; after a body that does
not decode, aiohttp cannot read the connection's next request."""


def _error_response(error: GatewayError, headers: dict[str, str] | None = None, surface: Surface | None = None) -> web.Response:
    body = surface.error_body(error) if surface is not None else error.to_body()
    response = web.Response(
        status=error.status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={**(headers or {}), **error.headers, **_retry_advice(error)},
    )
    if error.status == 408 or error.code in _CLOSES_THE_CONNECTION:
        response.force_close()
    return response


def _retry_advice(error: GatewayError) -> dict[str, str]:
    """``x-should-retry`` for the official SDKs, which obey it: ``false`` for everything the
    gateway already retried or decided is not worth retrying, so a client's own retries do not
    multiply the attempts. Only the gateway's own load shedding (a 429 or 503 it decided itself,
    with Retry-After, or a 409 for a conversation busy with another turn) is left to the client's
    judgement."""
    if error.upstream_status is None and error.status in (409, 429, 503) and "Retry-After" in error.headers:
        return {}
    return {"x-should-retry": "false"}


class _RequestIds:
    """New request ids: uuid4's 128 random bits from ``os.urandom``, read for 256 ids at a time.

    One ``getrandom`` system call per request was about 1 % of a cache hit's CPU (py-spy); the
    bits are the same, only read in bulk. Each process has its own (``--workers`` spawns, so no
    two processes share a pool)."""

    __slots__ = ("_pool", "_at")
    _IDS_PER_READ = 256

    def __init__(self) -> None:
        self._pool = ""
        self._at = 0

    def new(self) -> str:
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(16 * self._IDS_PER_READ).hex(), 0
        self._at = at + 32
        return "req_" + self._pool[at : at + 32]


_REQUEST_IDS = web.AppKey("hookgate_request_ids", _RequestIds)


def _request_id(request: web.Request) -> str:
    """The client's ``x-request-id`` when it is a sensible token, else a new one."""
    given = request.headers.get("x-request-id")
    if given and len(given) <= 128 and given.isascii() and given.isprintable():
        return given
    return request.app[_REQUEST_IDS].new()


@web.middleware
async def _errors_and_request_id(request: web.Request, handler: Any) -> web.StreamResponse:
    """Give every response an ``x-request-id`` and every failure the error shape of the surface it
    came through (OpenAI's elsewhere)."""
    request_id = request[_REQUEST_ID] = _request_id(request)
    try:
        response = await handler(request)
    except GatewayError as error:
        response = _error_response(error, {"x-hookgate-cache": "BYPASS", "x-hookgate-provider": "none"}, request.get(_SURFACE))  # type: ignore[arg-type]
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = _http_error(exc)
        response = _error_response(error, {"x-hookgate-cache": "BYPASS", "x-hookgate-provider": "none"}, request.get(_SURFACE))  # type: ignore[arg-type]
        if exc.status == 405:
            response.headers["Allow"] = exc.headers.get("Allow", "")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("request_failed", request_id=request_id, path=request.path, exc_info=exc)
        response = _error_response(as_gateway_error(exc, request_id), None, request.get(_SURFACE))  # type: ignore[arg-type]
    started = request.get(_STREAM)
    if started is not None and response is not started:
        # The stream's headers are gone: a second response would be written inside its body.
        return started
    if not response.prepared:
        response.headers["x-request-id"] = request_id
    return response


def _http_error(exc: web.HTTPException) -> GatewayError:
    if exc.status == 404:
        return NotFound("Unknown path.", code="not_found")
    if exc.status == 405:
        return InvalidRequest("Method not allowed for this path.", status=405, code="method_not_allowed")
    return GatewayError(exc.reason, status=exc.status)
