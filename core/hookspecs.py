"""Hook specifications: everything a hookgate plugin can implement.

A plugin implements any subset of these, marked with ``@hookimpl`` (``from hookgate import
hookimpl``), taking only the arguments it needs: pluggy matches them by name.

Three kinds of hooks:

* **Start-up hooks** are plain functions called once while a pipeline is built
  (``register_providers``, ``register_routes``…).
* **Phase hooks** are ``async def`` and run on every request or at app start/stop. The core awaits
  them itself, in the order ``plugins.toml`` lists the plugins: pluggy's own calling convention
  cannot short-circuit or re-invoke coroutines (see docs/architecture.md). Where a plugin needs a
  position relative to others, it declares it as data (:mod:`hookgate.rules`).
* **Events** are plain functions the core calls at fixed points of every request (it started, a
  phase ended, an upstream attempt started and ended, it finished). They are for observers
  (metrics, traces, logs): every observer sees the same thing wherever it is listed, and
  ``request_finished`` comes after every phase hook, so the facts other plugins produced are there.

A synchronous implementation of a phase hook (or an ``async def`` event or start-up hook), a
``wrapper``/``hookwrapper``, or ``tryfirst``/``trylast`` is rejected at start-up: order is
configuration.

Every hook is documented with a runnable example in ``docs/plugin_hooks.md``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Callable, Mapping

from .markers import hookspec

__all__ = [
    "register_providers",
    "register_surfaces",
    "register_routes",
    "check_pipeline",
    "register_hook_observers",
    "register_metrics",
    "startup",
    "shutdown",
    "check_ready",
    "authenticate",
    "authorize_admin",
    "before_request",
    "cache_lookup",
    "call_provider",
    "after_response",
    "on_error",
    "request_started",
    "phase_started",
    "phase_finished",
    "attempt_started",
    "attempt_finished",
    "request_finished",
    "PHASE_HOOKS",
    "STARTUP_HOOKS",
    "REQUEST_HOOKS",
    "EVENT_HOOKS",
]

if TYPE_CHECKING:
    from aiohttp import web

    from .context import Attempt, RequestContext
    from .errors import GatewayError
    from .events import Outcome
    from .health import Readiness
    from .identity import ClientKey
    from .provider import Provider
    from .responses import Completion, ProviderResponse
    from .surfaces import Surface

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
def register_surfaces(register: Callable[[Surface], None]) -> None:
    """Register the client-facing APIs this plugin serves.

    :param register: call it once per :class:`~hookgate.surfaces.Surface` (its route, its request
        and answer shapes, its error shape). Two surfaces on one path is a start-up error.

    Called while a pipeline is built, for the plugins in ``[gateway] surfaces`` (the built-in
    ones: chat completions, Anthropic Messages, Responses, embeddings, legacy completions) and any
    pipeline plugin. Every surface's requests run through the same chain.

    Example::

        @hookimpl
        def register_surfaces(self, register):
            register(GeminiGenerateContent())
    """


@hookspec
def check_pipeline(pipeline: list[str], name: str) -> None:
    """Refuse, at start-up, a pipeline this plugin cannot work in.

    :param pipeline: the enabled plugins' names, in order.
    :param name: the name this plugin is enabled under (an entry point may be renamed).

    Called once per pipeline while it is built (at start-up and on every reload), before any
    request. Raise ``ValueError`` with the reason: the gateway does not start (a reload is
    rejected) with that reason, naming ``[gateway] pipeline`` and this plugin. For order and
    dependencies, declare :mod:`hookgate.rules` instead: they are checked the same way and shown by
    ``hookgate plugins``; this hook is for what rules cannot say (a check that depends on your
    own config and another plugin's presence, say).
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


@hookspec
def register_metrics(register: Callable[[object], None]) -> None:
    """Offer Prometheus metrics of this plugin's own to whatever serves ``/metrics``.

    :param register: call it with a prometheus-client *collector*: an object whose ``collect()``
        returns metric families (``prometheus_client.core.CounterMetricFamily``…), built from
        your plugin's own counters when a scrape asks.

    Called once per pipeline while it is built. The ``metrics`` plugin adds every registered
    collector to the app's registry, so a plugin exports numbers without importing it (and
    without knowing whether it is enabled). Keep label values bounded. Under ``--workers N`` a
    collector reports the scraped worker's numbers only (the built-in families are summed).

    Example::

        @hookimpl
        def register_metrics(self, register):
            register(self.collector)   # collect() yields CounterMetricFamily("myplugin_hits", ...)
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

    Awaited for every enabled plugin on each ``GET /readyz``, all of them at once, each within
    ``[gateway] readiness_timeout_seconds`` (a check that takes longer counts as ``unavailable``).
    The answer is 503 when any plugin is ``unavailable``, else 200 (``degraded`` plugins are
    listed). Keep it fast: a load balancer may call it every second. Do not ping Redis here: the
    core's Redis service reports each server once (``hookgate.redis``); report what its state means
    for your plugin. An exception counts as ``unavailable``.
    """


# -------------------------------------------------------------------------------------------------
# Request phases (async, per request)
# -------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
async def authenticate(credential: str | None, headers: Mapping[str, str]) -> ClientKey | None:
    """Say which gateway key a request presents, from its headers alone.

    :param credential: the client's key, from ``Authorization: Bearer <key>`` or ``x-api-key``
        (None when it sent neither). A secret: never log it or put it in an error.
    :param headers: the request's headers.
    :return: the :class:`~hookgate.ClientKey` the credential belongs to, or None to let the next
        implementation decide.

    **Stops at the first non-None result.** Awaited for every chat request *before its body is
    read*, so an unauthenticated client costs no body read, JSON parsing or validation; and by
    :func:`hookgate.web.identify` for plugin routes. Raise
    :class:`~hookgate.AuthenticationFailed` to refuse (say the same thing for a missing and a wrong
    key). The core stores the key as :data:`hookgate.facts.CLIENT_KEY` and scopes caches to its
    ``cache_namespace`` (or ``id``). With no implementation, requests are anonymous.

    Example::

        @hookimpl
        async def authenticate(self, credential):
            if credential != self.config.secret.get_secret_value():
                raise AuthenticationFailed("Incorrect or missing API key.")
            return ClientKey(id="only-client")
    """


@hookspec
async def authorize_admin(request: web.Request) -> None:
    """Decide whether an HTTP request may use an administrative endpoint (``/-/plugins``, usage
    of all keys…).

    :param request: the aiohttp request (its headers carry the credential).

    Awaited for every enabled plugin in pipeline order by every admin endpoint, the core's and
    plugins' alike (a plugin's route calls :func:`hookgate.web.require_admin`): raise
    :class:`~hookgate.AuthenticationFailed` or :class:`~hookgate.PermissionDenied` to refuse.
    With no implementation at all, admin endpoints are open: bind the gateway to a private
    address, or enable an auth plugin.
    """


@hookspec
async def before_request(ctx: RequestContext) -> None:
    """Inspect, enrich or reject a validated chat request before anything else happens.

    :param ctx: the request; ``ctx.body`` is the validated JSON body, ``ctx.headers`` the
        client's headers, ``ctx[CLIENT_KEY]`` the authenticated key if any.

    Awaited for every enabled plugin, in pipeline order. Raise a :class:`~hookgate.GatewayError`
    (``PermissionDenied``, ``RateLimited``…) to reject the request; the remaining plugins are
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

    Awaited for every enabled plugin in pipeline order, once per successful request: a request
    gets either ``after_response`` or :func:`on_error`, never both. For a JSON answer it runs
    before the response is sent, so it may still set ``ctx.response_headers``, and an exception
    here becomes the client's error (with no ``on_error`` after it); for a stream the client
    already has every chunk and an exception ends the stream with an error event. Not called for
    errors or for a stream cut off before its end. To observe every request whatever its
    outcome, implement :func:`request_finished` instead.
    """


@hookspec
async def on_error(ctx: RequestContext, error: GatewayError) -> None:
    """Observe a failed request (rejected, upstream failure, timeout, client gone mid-stream).

    :param ctx: the request.
    :param error: what the client was told (an unexpected exception appears here as an
        :class:`~hookgate.InternalError`).

    Awaited for every enabled plugin in pipeline order, once per failed request that did not get
    :func:`after_response`. It cannot change the error, and an exception raised here is logged and
    ignored.
    """


# -------------------------------------------------------------------------------------------------
# Events (synchronous, for observers; called by the core at fixed points of every request)
# -------------------------------------------------------------------------------------------------


@hookspec
def request_started(ctx: RequestContext) -> None:
    """A request arrived (its headers are read; its body not yet).

    :param ctx: the request: ``request_id``, ``headers`` and ``started_at`` are set, ``body`` is
        still empty.

    Called for every enabled plugin, before any phase hook, exactly once per request, and always
    followed by exactly one :func:`request_finished`: an in-flight gauge may count on it. Events
    must be cheap and must not raise (an exception is logged and ignored).
    """


@hookspec
def phase_started(ctx: RequestContext, phase: str, started_at: float) -> None:
    """A phase of the request begins (``authenticate``, ``before_request``, ``cache_lookup``,
    ``call_provider``, ``after_response`` or ``on_error``).

    :param ctx: the request.
    :param phase: the phase (:data:`hookgate.events.PHASES`).
    :param started_at: now, on the ``perf_counter()`` clock.

    Always followed by :func:`phase_finished` for the same phase; phases do not nest.
    """


@hookspec
def phase_finished(ctx: RequestContext, phase: str, started_at: float, seconds: float, outcome: str) -> None:
    """A phase of the request ended.

    :param ctx: the request.
    :param phase: one of ``authenticate``, ``before_request``, ``cache_lookup``, ``call_provider``,
        ``after_response``, ``on_error`` (:data:`hookgate.events.PHASES`).
    :param started_at: when it began, on the ``perf_counter()`` clock.
    :param seconds: how long every plugin's hook of that phase took together (``call_provider``:
        the whole middleware chain, upstream included).
    :param outcome: ``ok``, ``hit`` (a cache answered), or the exception's class name.

    Called only for phases the request went through, whether or not any plugin implements them.
    """


@hookspec
def attempt_started(ctx: RequestContext, number: int) -> None:
    """The core is about to call the provider (innermost end of the middleware chain).

    :param ctx: the request; ``ctx.route`` and ``ctx.provider`` say where it goes.
    :param number: 1 for the first attempt, 2 for the first retry…

    Called in the task that makes the call, right before it, so an observer may make something
    current for the call's duration (an OpenTelemetry span) and undo it in
    :func:`attempt_finished`, which always follows.
    """


@hookspec
def attempt_finished(ctx: RequestContext, attempt: Attempt) -> None:
    """An upstream attempt ended: the provider answered (a stream: sent its first chunk), failed,
    or was cancelled.

    :param ctx: the request.
    :param attempt: how it ended (``ok``, ``http_503``, ``timeout``, ``cancelled``…), its upstream
        status, duration and number; also appended to ``ctx.attempts``.
    """


@hookspec
def request_finished(ctx: RequestContext, outcome: Outcome) -> None:
    """The request is over: answered, failed, or abandoned by its client.

    :param ctx: the request, with every fact the pipeline's plugins produced.
    :param outcome: its final status, error or answer, usage, cost and timings
        (:class:`hookgate.events.Outcome`).

    Called exactly once per request for which :func:`request_started` was called, after every
    ``after_response`` or ``on_error`` hook and after the last byte was sent (or the client went
    away), whatever the plugins' order. This is where logs, metrics and traces record a request,
    and where an accounting plugin settles what it reserved (hand any I/O to a background task:
    ``hookgate.tasks.background(app)``). Must be cheap and must not raise (an exception is
    logged and ignored).

    Example::

        @hookimpl
        def request_finished(self, ctx, outcome):
            self.latencies.append(outcome.total_seconds)
    """


PHASE_HOOKS = (
    "startup",
    "shutdown",
    "check_ready",
    "authenticate",
    "authorize_admin",
    "before_request",
    "cache_lookup",
    "call_provider",
    "after_response",
    "on_error",
)
"""The hooks the core awaits itself; their implementations must be ``async def``."""

STARTUP_HOOKS = (
    "register_providers",
    "register_surfaces",
    "register_routes",
    "register_hook_observers",
    "register_metrics",
    "check_pipeline",
)
"""The hooks called synchronously while a pipeline is built."""

REQUEST_HOOKS = ("before_request", "cache_lookup", "call_provider", "after_response", "on_error")
"""The hooks that take part in a request (a plugin enabled only as a surface implements none)."""

EVENT_HOOKS = ("request_started", "phase_started", "phase_finished", "attempt_started", "attempt_finished", "request_finished")
"""The events the core emits during every request; their implementations must be plain ``def``."""
