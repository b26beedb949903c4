"""One resolved pipeline: its plugins in order, its rules checked, its routes and provider chain.

Built once per configuration (at start-up, and again on each live reload) and only read by
requests. A request's own run through it is an :class:`~hookgate.exchange.Exchange`.
"""
from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any, AsyncIterator, Iterable

import structlog
from aiohttp import web

from .accounting import TokenUsage
from .balancing import Balancer, BalancingState, Lease, LocalBalancingState, outcome_of
from .config import ConfigError, GatewayConfig
from .context import Attempt, RequestContext
from .errors import GatewayError
from .exchange import Exchange
from .facts import ATTEMPT_DEADLINE, DEPLOYMENT, UPSTREAM_GATE, prompt_estimate
from .provider import Provider, kinds_of, passes_through
from .registry import PluginLoadError
from .responses import Completion, CompletionStream, ProviderResponse, with_first_chunk
from .routing import Route, RoutingError, RoutingTable
from .rules import check_rules, rules_of
from .runner import HookRunner, PipelineError
from .state import StateKey
from .surfaces import Surface, native_intact, native_wire
from .tasks import BackgroundTasks, background
from .upstream import should_fall_back

log = structlog.get_logger("hookgate.gateway")

_TRIED: StateKey[list[str]] = StateKey(
    "gateway.deployments_tried", list, "Deployments (route/name) of balanced routes this request has tried, in order."
)

__all__ = ["Gateway"]


class Gateway:
    """One resolved pipeline: hooks in config order, the provider chain and the routing table."""

    __slots__ = (
        "config", "runner", "providers", "routes", "plugin_router", "surfaces", "route_surfaces", "in_flight", "has_cache", "collectors",
        "balancing_state", "_started", "_chain", "_variants", "_tasks",
    )  # fmt: skip

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.runner = HookRunner(config)
        self.providers: dict[str, Provider] = {}
        self._check_rules(config)
        self._check_pipeline(config)
        self.runner.call_startup_hook("register_providers", register=self._register_provider)
        self.surfaces: dict[str, Surface] = {}
        """The surfaces served, by the path of their chain route."""
        self.route_surfaces: dict[str, Surface] = {}
        """The surface owning each extra route (by its path template), for the error shape."""
        self.runner.call_startup_hook("register_surfaces", register=self._register_surface)
        self.balancing_state: BalancingState = LocalBalancingState()
        """Where the load-balanced routes keep their figures: this instance, or Redis once
        :meth:`start` connected to ``[gateway.balancing] redis_url``."""
        try:
            self.routes = RoutingTable(self.providers, config.models, balancing_state=self.balancing_state)
        except RoutingError as exc:
            raise ConfigError(config.source, exc.reason, section=exc.section, key=exc.key) from None
        self.plugin_router = web.UrlDispatcher()
        """Routes the plugins added (``register_routes``), served while this pipeline is current."""
        self.in_flight = 0
        """Requests being served by this pipeline: a replaced pipeline shuts down once it is 0."""
        self.has_cache = bool(self.runner.calls("cache_lookup"))
        self.collectors: list[object] = []
        """Prometheus collectors the plugins offered (``register_metrics``)."""
        self.runner.call_startup_hook("register_metrics", register=self.collectors.append)
        self._started: list[str] = []
        self._variants: list[Provider] = self.routes.endpoint_variants()
        self._tasks: BackgroundTasks | None = None
        self._chain = self.runner.build_chain(self._call_routed_provider)

    # ------------------------------------------------------------------------- building ---

    def add_routes(self, app: web.Application) -> None:
        """Let plugins add their HTTP routes to :attr:`plugin_router`, with the surfaces' extra
        routes (answered in their surface's error shape)."""
        for surface in self.surfaces.values():
            for extra in surface.extra_routes():
                route = self.plugin_router.add_route(extra.method, extra.path, extra.handler)
                self.route_surfaces[route.resource.canonical] = surface  # type: ignore[union-attr]
        self.runner.call_startup_hook("register_routes", router=self.plugin_router, app=app)

    def _check_rules(self, config: GatewayConfig) -> None:
        """Refuse a pipeline that breaks an enabled plugin's declared rules (hookgate.rules)."""
        problems = check_rules(self.runner.plugin_rules(), suggest=_producers_installed)
        if problems:
            more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
            raise ConfigError(config.source, problems[0] + more, section="gateway", key="pipeline")

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

    def _register_surface(self, surface: Surface) -> None:
        if not isinstance(surface, Surface):
            raise PipelineError(f"{surface!r} is not a hookgate Surface (see hookgate.surfaces)")
        other = self.surfaces.get(surface.path)
        if other is not None and other is not surface:
            raise PipelineError(f"two surfaces are served on {surface.path}: {other.name!r} and {surface.name!r}")
        self.surfaces[surface.path] = surface

    def model_ids(self) -> Iterable[tuple[str, str]]:
        """(model, provider name) for every routable model name."""
        return self.routes.listed()

    # ------------------------------------------------------------------------ lifecycle ---

    async def start(self, app: web.Application) -> None:
        """Await each plugin's ``startup`` in order; if one fails, shut down those that started
        and raise."""
        startups = {call.plugin: call for call in self.runner.calls("startup")}
        try:
            for name in self.runner.plugins:
                if name in startups:
                    await startups[name].function(*[{"app": app}[a] for a in startups[name].argnames])
                self._started.append(name)
            for variant in self._variants:
                await variant.start(app)  # type: ignore[attr-defined]
            if self.routes.balanced:
                await self._share_balancing(app)
        except BaseException:
            await self.stop(app)
            raise

    async def _share_balancing(self, app: web.Application) -> None:
        """Switch the balanced routes to Redis-shared state when ``balancing_redis_url`` is set."""
        self._tasks = background(app)
        settings = self.config.gateway.balancing
        if settings.redis_url is None:
            return
        from .balancing_redis import RedisBalancingState
        from .redis import redis_service

        shared = await redis_service(app).connect(settings.redis_url.get_secret_value())
        state = RedisBalancingState(
            shared.client,
            key_prefix=settings.key_prefix,
            timeout_seconds=settings.timeout_seconds,
            share_latency=settings.share_latency,
            fallback=self.balancing_state,  # type: ignore[arg-type]
        )
        self.balancing_state = state
        for route in self.routes.balanced:
            route.balancer.state = state  # type: ignore[union-attr]

    async def stop(self, app: web.Application) -> None:
        """Await ``shutdown`` in reverse order for exactly the plugins that started; a failing
        plugin is logged and the others still shut down."""
        for variant in self._variants:
            try:
                await variant.close()  # type: ignore[attr-defined]
            except Exception:
                log.exception("provider_close_failed", provider=variant.name)
        closing = getattr(self.balancing_state, "aclose", None)
        if closing is not None:
            await closing()
        shutdowns = {call.plugin: call for call in self.runner.calls("shutdown")}
        started, self._started = self._started, []
        for name in reversed(started):
            if name in shutdowns:
                try:
                    await shutdowns[name].function(*[{"app": app}[a] for a in shutdowns[name].argnames])
                except Exception:
                    log.exception("plugin_shutdown_failed", plugin=name)

    # ------------------------------------------------------------------------- requests ---

    def exchange(self, ctx: RequestContext, kind: str | None = None) -> Exchange:
        """Begin a request of ``kind`` (default ``ctx.kind``) on this pipeline (observers are told it started)."""
        return Exchange(self, ctx, kind)

    async def call_provider(self, ctx: RequestContext, route: Route, kind: str = "chat") -> ProviderResponse:
        """The middleware chain for ``route``, then its fallbacks while the previous one failed
        with a retriable error, an open circuit or a missing provider key.

        A stream counts as answered once its first chunk is in hand: after that the client may
        have bytes, and a failure ends the stream instead of moving to another route.
        """
        if not route.fallbacks:
            return await self._chain(ctx)
        routes = [candidate for candidate in self.routes.with_fallbacks(route) if kind in candidate.kinds]
        for index, candidate in enumerate(routes):
            ctx.route, ctx.provider = candidate, candidate.provider
            try:
                return await self._chain(ctx)
            except GatewayError as error:
                if index == len(routes) - 1 or not should_fall_back(error):
                    raise
                log.warning("route_fallback", request_id=ctx.request_id, failed=candidate.model, next=routes[index + 1].model, status=error.status)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call_routed_provider(self, ctx: RequestContext) -> ProviderResponse:
        """The innermost end of the middleware chain: one upstream attempt, on the deployment
        the route's balancer picks when the route is load-balanced."""
        route = ctx.route
        if route is not None and (route.balancer is not None or route.parent is not None):
            return await self._call_balanced(ctx, route.balanced)  # type: ignore[arg-type]
        return await self._attempt(ctx)

    async def _call_balanced(self, ctx: RequestContext, balanced: Route) -> ProviderResponse:
        """Pick a deployment, make the attempt on it, and release the lease with how it went
        (for a stream: when the stream ends). ``ctx.route`` is the deployment's member route
        while the attempt runs and once it answered, the balanced route again after a failure (a
        retry picks afresh, without the deployments this request already tried)."""
        lease = await self._pick(ctx, balanced)
        name = lease.deployment.name
        member = balanced.members[name]
        ctx.route, ctx.provider = member, member.provider
        ctx[DEPLOYMENT] = name
        ctx.response_headers["x-hookgate-deployment"] = name
        try:
            response = await self._attempt(ctx)
        except BaseException as error:
            ctx.route, ctx.provider = balanced, balanced.provider
            await self._settle(lease, error, None)
            raise
        if isinstance(response, CompletionStream):
            lease.mark_first_token()
            return CompletionStream.of_batches(self._leased_batches(response, lease), close=response.aclose, first_chunk_received=True)
        usage = response.usage if isinstance(response, Completion) else None
        await self._settle(lease, None, TokenUsage.of(usage).total if usage else None)
        return response

    async def _pick(self, ctx: RequestContext, balanced: Route) -> Lease:
        """Reserve a deployment for this attempt: not one this request already tried (unless
        every one was), one that serves the request's kind, whose provider has its key and that
        the circuit breaker (``UPSTREAM_GATE``) lets through."""
        balancer: Balancer = balanced.balancer  # type: ignore[assignment]
        members = balanced.members
        tried_anywhere = ctx.setdefault(_TRIED, [])
        tried = [name for route, _, name in (key.rpartition("/") for key in tried_anywhere) if route == balanced.model]  # this route's
        kind = ctx.kind
        unsuited = {name for name, member in members.items() if kind not in kinds_of(member.provider)}
        exclude = unsuited | set(tried)
        if len(exclude) >= len(members) and tried:
            exclude = unsuited | ({tried[-1]} if len(members) - len(unsuited) > 1 else set())
        gate = ctx.get(UPSTREAM_GATE)

        def healthy(deployment: Any) -> bool:
            if not getattr(members[deployment.name].provider, "configured", True):
                return False
            return gate is None or gate.usable(deployment.breaker_key)

        tokens = prompt_estimate(ctx).prompt_tokens
        while True:
            lease = await balancer.pick(exclude=exclude, healthy=healthy, tokens=tokens, stream=ctx.stream)
            if gate is None or gate.claim(lease.deployment.breaker_key):
                tried_anywhere.append(lease.deployment.key)
                return lease
            await lease.release("abandoned")
            exclude = exclude | {lease.deployment.name}

    async def _settle(self, lease: Lease, error: BaseException | None, tokens: int | None) -> None:
        """Release ``lease`` with the attempt's outcome; a shared state's release is written in
        the background, so the answer never waits for Redis."""
        outcome, cooldown = outcome_of(error)
        release = lease.release(outcome, tokens=tokens, cooldown=cooldown)
        if lease.backend == "redis" and self._tasks is not None:
            self._tasks.spawn(release, name="balancing_release")
        else:
            await release

    async def _leased_batches(self, stream: CompletionStream, lease: Lease) -> AsyncIterator[list[dict[str, Any]]]:
        """Relay a balanced stream, releasing its lease when it ends: its usage (the last chunk
        that reports one) corrects the tokens reserved; a stream closed before its end (the
        client went away) says nothing about the deployment."""
        error: BaseException | None = asyncio.CancelledError()
        usage: Any = None
        try:
            async for batch in stream.batches():
                for chunk in batch:
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                yield batch
            error = None
        except GeneratorExit:
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            await self._settle(lease, error, TokenUsage.of(usage).total if isinstance(usage, dict) else None)

    async def _attempt(self, ctx: RequestContext) -> ProviderResponse:
        """One upstream attempt on ``ctx.provider``.

        The core records it (``ctx.attempts``, ``attempt_started``/``attempt_finished``) and waits
        for a stream's first chunk inside it, so an upstream that accepts and then fails before
        its first chunk fails the attempt (and may be retried) rather than the stream. The time
        spent here is upstream time.
        """
        runner = self.runner
        number = len(ctx.attempts) + 1
        if runner.calls("attempt_started"):
            runner.emit("attempt_started", ctx=ctx, number=number)
        started = perf_counter()
        outcome, status = "ok", None
        provider = ctx.provider
        try:
            wire = native_wire(ctx)
            if wire is not None and passes_through(provider, wire) and not ctx.route.params and native_intact(ctx):  # type: ignore[union-attr]
                response = await provider.complete_native(ctx)  # type: ignore[union-attr]
            else:
                response = await provider.complete(ctx)  # type: ignore[union-attr]
            if isinstance(response, CompletionStream):
                response = await with_first_chunk(response)
            return response
        except GatewayError as error:
            status = error.upstream_status
            outcome = f"http_{status}" if status else (error.code or type(error).__name__)
            raise
        except asyncio.CancelledError:
            deadline = ctx.get(ATTEMPT_DEADLINE)
            outcome = "timeout" if deadline is not None and perf_counter() >= deadline - 0.001 else "cancelled"
            raise
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            ended = perf_counter()
            ctx.upstream_seconds += ended - started
            member = ctx.route.deployment if ctx.route is not None else None
            attempt = Attempt(outcome, status, (ended - started) * 1000.0, started, number, member.name if member is not None else None)
            ctx.attempts.append(attempt)
            if runner.calls("attempt_finished"):
                runner.emit("attempt_finished", ctx=ctx, attempt=attempt)


def _producers_installed(fact: str) -> list[str]:
    """Installed plugins (enabled or not) that declare they produce ``fact``: the hint of a
    "nobody produces this" error. Only called for that error, since it imports every plugin."""
    from .registry import installed_plugins
    from .rules import Produces

    found = []
    for name, plugin in sorted(installed_plugins().items()):
        try:
            rules = rules_of(plugin.load())
        except (PluginLoadError, TypeError):
            continue
        if any(isinstance(rule, Produces) and rule.fact.name == fact for rule in rules):
            found.append(name)
    return found
