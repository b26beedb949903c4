"""The request's path through the phases, independent of HTTP.

``before_request`` → routing → ``cache_lookup`` → the ``call_provider`` chain; then
``after_response`` once the answer is complete, or ``on_error``. The HTTP layer (server.py) reads
the request, calls :meth:`Gateway.answer`, and writes JSON or SSE.
"""
from __future__ import annotations

from time import perf_counter
from typing import Iterable

import structlog
from aiohttp import web

from .config import ConfigError, GatewayConfig
from .context import RequestContext
from .errors import GatewayError, InternalError, ModelNotFound
from .provider import Provider
from .responses import Completion, CompletionStream, ProviderResponse, with_first_chunk
from .routing import Route, RoutingError, RoutingTable
from .runner import HookRunner, PipelineError
from .upstream import should_fall_back

log = structlog.get_logger("hookgate.gateway")

__all__ = ["Gateway"]


class Gateway:
    """One resolved pipeline: hooks in config order, the provider chain and the routing table.

    Built once per app (and, with live reload, once per configuration); requests only read it.
    """

    __slots__ = ("config", "runner", "providers", "routes", "plugin_router", "in_flight", "_started", "_chain", "_has_cache")

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.runner = HookRunner(config)
        self.providers: dict[str, Provider] = {}
        self._check_pipeline(config)
        self.runner.call_startup_hook("register_providers", register=self._register_provider)
        try:
            self.routes = RoutingTable(self.providers, config.models)
        except RoutingError as exc:
            raise ConfigError(config.source, exc.reason, section=exc.section, key=exc.key) from None
        self.plugin_router = web.UrlDispatcher()
        """Routes the plugins added (``register_routes``), served while this pipeline is current."""
        self.in_flight = 0
        """Requests being served by this pipeline: a replaced pipeline shuts down once it is 0."""
        self._started: list[str] = []
        self._chain = self.runner.build_chain(_call_routed_provider)
        self._has_cache = bool(self.runner.calls("cache_lookup"))

    def add_routes(self, app: web.Application) -> None:
        """Let plugins add their HTTP routes to :attr:`plugin_router`."""
        self.runner.call_startup_hook("register_routes", router=self.plugin_router, app=app)

    async def start(self, app: web.Application) -> None:
        """Await each plugin's ``startup`` in order; if one fails, shut down those that started
        and raise."""
        startups = {call.plugin: call for call in self.runner.calls("startup")}
        try:
            for name in self.runner.plugins:
                if name in startups:
                    await startups[name].function(*[{"app": app}[a] for a in startups[name].argnames])
                self._started.append(name)
        except BaseException:
            await self.stop(app)
            raise

    async def stop(self, app: web.Application) -> None:
        """Await ``shutdown`` in reverse order for exactly the plugins that started; a failing
        plugin is logged and the others still shut down."""
        shutdowns = {call.plugin: call for call in self.runner.calls("shutdown")}
        started, self._started = self._started, []
        for name in reversed(started):
            if name in shutdowns:
                try:
                    await shutdowns[name].function(*[{"app": app}[a] for a in shutdowns[name].argnames])
                except Exception:
                    log.exception("plugin_shutdown_failed", plugin=name)

    def _check_pipeline(self, config: GatewayConfig) -> None:
        """Let each plugin refuse a pipeline it cannot work in (``check_pipeline``)."""
        names = list(config.pipeline)
        for call in self.runner.calls("check_pipeline"):
            try:
                call.function(*[{"pipeline": names, "name": call.plugin}[a] for a in call.argnames])
            except ValueError as exc:
                raise ConfigError(config.source, f"plugin {call.plugin!r}: {exc}", section="gateway", key="pipeline") from None

    def _register_provider(self, provider: Provider) -> None:
        if not isinstance(provider, Provider):
            raise PipelineError(f"{provider!r} is not a hookgate Provider (needs name, models() and async complete())")
        if provider.name in self.providers and self.providers[provider.name] is not provider:
            raise PipelineError(f"two providers are named {provider.name!r}")
        self.providers[provider.name] = provider

    def model_ids(self) -> Iterable[tuple[str, str]]:
        """(model, provider name) for every routable model name."""
        return self.routes.listed()

    async def answer(self, ctx: RequestContext) -> ProviderResponse:
        """Run the request phases up to the provider's answer (complete, or a stream to relay)."""
        runner = self.runner
        await runner.each("before_request", ctx=ctx)
        route = self.routes.resolve(ctx.body["model"])
        if route is None:
            raise ModelNotFound(f"The model '{ctx.body['model']}' does not exist or is not served by this gateway.", param="model")
        ctx.route, ctx.provider = route, route.provider
        if self._has_cache:
            ctx.cache_status = "MISS"
            source, hit = await runner.first("cache_lookup", ctx=ctx)
            if hit is not None:
                ctx.cache_status = "HIT"
                ctx.cache_source = source
                return hit
        if not route.fallbacks:
            return await self._chain(ctx)
        return await self._answer_with_fallbacks(ctx, self.routes.with_fallbacks(route))

    async def _answer_with_fallbacks(self, ctx: RequestContext, routes: list[Route]) -> ProviderResponse:
        """Try each route in turn while the previous one failed with a retriable error, an open
        circuit or a missing provider key.

        A stream counts as answered once its first chunk is in hand: after that the client may
        have bytes, and a failure ends the stream instead of moving to another route.
        """
        for index, route in enumerate(routes):
            ctx.route, ctx.provider = route, route.provider
            try:
                response = await self._chain(ctx)
                if isinstance(response, CompletionStream):
                    response = await with_first_chunk(response)
                return response
            except GatewayError as error:
                if index == len(routes) - 1 or not should_fall_back(error):
                    raise
                log.warning("route_fallback", request_id=ctx.request_id, failed=route.model, next=routes[index + 1].model, status=error.status)
        raise AssertionError("unreachable")  # pragma: no cover

    async def finish(self, ctx: RequestContext, completion: Completion) -> None:
        """Hand the complete answer to ``after_response``."""
        await self.runner.each("after_response", ctx=ctx, response=completion)

    async def fail(self, ctx: RequestContext, error: GatewayError) -> None:
        """Tell the ``on_error`` observers; their failures are logged, never raised."""
        ctx.status = error.status
        await self.runner.notify("on_error", ctx=ctx, error=error)


async def _call_routed_provider(ctx: RequestContext) -> ProviderResponse:
    """The innermost end of the middleware chain; the time spent here is upstream time."""
    started = perf_counter()
    try:
        return await ctx.provider.complete(ctx)  # type: ignore[union-attr]
    finally:
        ctx.upstream_seconds += perf_counter() - started


def as_gateway_error(exc: BaseException, request_id: str) -> GatewayError:
    """What the client is told about ``exc``: itself if it is a GatewayError, else a 500 that
    names the request id (the traceback goes to the server log only)."""
    if isinstance(exc, GatewayError):
        return exc
    return InternalError(f"The gateway failed to process this request (request id {request_id}).")
