"""Hook specifications: everything a hookgate plugin can implement.

A plugin implements any subset of these, marked with ``@hookimpl`` (``from hookgate import
hookimpl``), taking only the arguments it needs: pluggy matches them by name.

Two kinds of hooks:

* **Start-up hooks** are plain functions called once while the app is built
  (``register_providers``, ``register_routes``).
* **Phase hooks** are ``async def`` and run on every request or at app start/stop. The core awaits
  them itself, in the order ``plugins.toml`` lists the plugins: pluggy's own calling convention
  cannot short-circuit or re-invoke coroutines (see docs/architecture.md). A synchronous
  implementation of a phase hook, a ``wrapper``/``hookwrapper``, or ``tryfirst``/``trylast``
  is rejected at start-up: order is configuration.

Every hook is documented with a runnable example in ``docs/plugin_hooks.md``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Callable

from .markers import hookspec

if TYPE_CHECKING:
    from aiohttp import web

    from .context import RequestContext
    from .errors import GatewayError
    from .health import Readiness
    from .provider import Provider
    from .responses import Completion, ProviderResponse

# -------------------------------------------------------------------------------------------------
# Start-up hooks (synchronous, called once while the app is built)
# -------------------------------------------------------------------------------------------------


@hookspec
def register_providers(register: Callable[[Provider], None]) -> None:
    """Register the providers this plugin contributes.

    :param register: call it once per :class:`~hookgate.Provider`. A model name served by two
        enabled providers is a start-up error naming both.

    Called for every enabled plugin, in pipeline order, while the app is built; the provider's
    network resources should be opened in :func:`startup`, not here.

    Example::

        @hookimpl
        def register_providers(self, register):
            register(self)
    """


@hookspec
def register_routes(router: web.UrlDispatcher, app: web.Application) -> None:
    """Add HTTP routes to the gateway (``/metrics``, admin endpoints…).

    :param router: where to add them: ``router.add_get("/metrics", self.metrics)``. It belongs to
        this pipeline, so a live reload that switches the plugin off removes its routes.
    :param app: the aiohttp application, for its ``AppKey`` state.

    Routes added here bypass the chat pipeline and answer only paths the core does not serve.
    Raise a :class:`~hookgate.GatewayError` for a failure: the core formats it in OpenAI's error
    shape. Call :func:`authorize_admin` hooks first when the route is for administrators.
    """


@hookspec
def check_pipeline(pipeline: list[str], name: str) -> None:
    """Refuse, at start-up, a pipeline this plugin cannot work in.

    :param pipeline: the enabled plugins' names, in order.
    :param name: the name this plugin is enabled under (an entry point may be renamed).

    Called once per pipeline while it is built (at start-up and on every reload), before any
    request. Raise ``ValueError`` with the reason (e.g. "list cost before budget"): the gateway
    does not start (a reload is rejected) with that reason, naming ``[gateway] pipeline`` and this
    plugin. Prefer this to discovering a misordered pipeline on the first request.
    """


@hookspec
def register_hook_observers(register: Callable[[Callable[[str, str, float, str], None]], None]) -> None:
    """Ask to be told how long every phase-hook call takes (metrics, tracing, profilers).

    :param register: call it with ``observer(hook, plugin, seconds, outcome)``; the observer is
        called synchronously after every call of a phase hook by any plugin, with ``outcome``
        ``"ok"``, ``"hit"`` (a cache answered) or the exception's class name. For a
        ``call_provider`` middleware, the time spent in ``call_next`` is left out.

    Timing is wired in only when at least one observer is registered. Observers must be cheap and
    must not raise (an exception is logged and ignored).
    """


# -------------------------------------------------------------------------------------------------
# Lifecycle hooks (async, once per app)
# -------------------------------------------------------------------------------------------------


@hookspec
async def startup(app: web.Application) -> None:
    """Open this plugin's resources (connection pools, SDK clients) when the app starts.

    :param app: the aiohttp application; keep per-app state on your plugin instance or under an
        ``aiohttp.web.AppKey``, never in module globals.

    Awaited for every enabled plugin, in pipeline order, before the server accepts requests. If one
    raises, start-up fails and :func:`shutdown` runs for the plugins that had started.
    """


@hookspec
async def shutdown(app: web.Application) -> None:
    """Close what :func:`startup` opened.

    :param app: the aiohttp application.

    Awaited in reverse pipeline order, only for plugins whose ``startup`` completed. An exception
    is logged and does not stop the other plugins from shutting down.
    """


@hookspec
async def check_ready(app: web.Application) -> Readiness | None:
    """Report whether this plugin's dependencies (Redis, provider credentials…) are usable.

    :param app: the aiohttp application.
    :return: a :class:`~hookgate.Readiness`, or None when the plugin has nothing to report.

    Awaited for every enabled plugin on each ``GET /readyz``. The answer is 503 when any plugin is
    ``unavailable``, else 200 (``degraded`` plugins are listed). Keep it fast and bounded: a load
    balancer may call it every second. An exception counts as ``unavailable``.
    """


# -------------------------------------------------------------------------------------------------
# Request phases (async, per request)
# -------------------------------------------------------------------------------------------------


@hookspec
async def authorize_admin(request: web.Request) -> None:
    """Decide whether an HTTP request may use an administrative endpoint (``/-/plugins``, usage
    of all keys…).

    :param request: the aiohttp request (its headers carry the credential).

    Awaited for every enabled plugin in pipeline order by every admin endpoint, the core's and
    plugins' alike: raise :class:`~hookgate.AuthenticationFailed` or
    :class:`~hookgate.PermissionDenied` to refuse. With no implementation at all, admin
    endpoints are open: bind the gateway to a private address, or enable an auth plugin.
    """


@hookspec
async def before_request(ctx: RequestContext) -> None:
    """Inspect, enrich or reject a validated chat request before anything else happens.

    :param ctx: the request; ``ctx.body`` is the validated JSON body, ``ctx.headers`` the
        client's headers, ``ctx.api_key`` its bearer token (a secret: never log it).

    Awaited for every enabled plugin, in pipeline order. Raise a :class:`~hookgate.GatewayError`
    (``AuthenticationFailed``, ``RateLimited``…) to reject the request; the remaining plugins are
    not called and the client gets that error. The return value is ignored. The model may be
    rewritten here (``ctx.body["model"] = ...``): routing to a provider happens afterwards.
    """


@hookspec
async def cache_lookup(ctx: RequestContext) -> Completion | None:
    """Answer the request from a cache, or return None to let the next cache (or the provider) try.

    :param ctx: the request, already routed (``ctx.provider`` is set).
    :return: a :class:`~hookgate.Completion` on a hit; None on a miss.

    **Stops at the first non-None result**: later caches are not asked (their coroutines are not
    even created). On a hit the provider is not called, ``ctx.cache_status`` becomes ``HIT`` and a
    streaming client gets the answer replayed as SSE. Before the lookup the core sets
    ``ctx.cache_status`` to ``MISS``; a cache that decides not to look sets ``BYPASS``. Storing
    belongs in :func:`after_response`.
    """


@hookspec
async def call_provider(
    ctx: RequestContext, call_next: Callable[[RequestContext], Awaitable[ProviderResponse]]
) -> ProviderResponse:
    """Middleware around the provider call: wrap, retry, time out or hold the call.

    :param ctx: the request.
    :param call_next: awaits the rest of the chain (inner middlewares, then the provider).
    :return: what ``call_next`` returned, or a replacement.

    The chain is built once at start-up; the first plugin listed in ``plugins.toml`` is the
    outermost. A retry middleware may call ``call_next`` several times, a timeout may cancel it, a
    semaphore may hold a slot around it. For a stream, ``call_next`` returns a
    :class:`~hookgate.CompletionStream` once the upstream accepted the request; a middleware that
    must act on chunks or hold a resource until the stream ends wraps it.

    Example::

        @hookimpl
        async def call_provider(self, ctx, call_next):
            async with self.semaphore:
                return await call_next(ctx)
    """


@hookspec
async def after_response(ctx: RequestContext, response: Completion) -> None:
    """Observe a complete answer: log it, count its tokens, store it in a cache.

    :param ctx: the request; ``ctx.cache_status`` says whether the answer came from a cache.
    :param response: the complete answer. For a stream, the chunks assembled into one
        ``chat.completion`` after the last chunk (with its usage, if the upstream sent it).

    Awaited for every enabled plugin in pipeline order, once per successful request. For a JSON
    answer it runs before the response is sent, so it may still set ``ctx.response_headers``; for
    a stream the client already has every chunk. Not called for errors (see :func:`on_error`) or
    for a stream cut off before its end.
    """


@hookspec
async def on_error(ctx: RequestContext, error: GatewayError) -> None:
    """Observe a failed request (rejected, upstream failure, timeout, client gone mid-stream).

    :param ctx: the request.
    :param error: what the client was told (an unexpected exception appears here as an
        :class:`~hookgate.InternalError`).

    Awaited for every enabled plugin in pipeline order. For observers only: it cannot change the
    error, and an exception raised here is logged and ignored.
    """


PHASE_HOOKS = ("startup", "shutdown", "check_ready", "authorize_admin", "before_request", "cache_lookup", "call_provider", "after_response", "on_error")
"""The hooks the core awaits itself; their implementations must be ``async def``."""

STARTUP_HOOKS = ("register_providers", "register_routes", "register_hook_observers", "check_pipeline")
"""The hooks called synchronously while the app is built."""
