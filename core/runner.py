"""The pipeline of one app: pluggy as the registry, the core awaiting the hooks itself.

pluggy calls hooks synchronously: an ``async def`` implementation returns a coroutine, which
``firstresult`` takes for an answer and a wrapper can never await twice. So pluggy registers,
validates and introspects, and :class:`HookRunner` awaits each phase hook over
``get_hookimpls()`` in the order plugins.toml gives (docs/architecture.md explains why).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Awaitable, Callable

import pluggy
import structlog

from . import hookspecs
from .config import GatewayConfig
from .errors import GatewayError
from .markers import PROJECT_NAME
from .plugin_checks import RETURNS, registered_object_problem, return_annotation_problem, unmarked_hook_problems
from .rules import PluginRules, roles_of, rules_of

__all__ = ["HookRunner", "PipelineError", "PluginCrashed"]

log = structlog.get_logger("hookgate.runner")

Call = Callable[..., Awaitable[Any]]


class PipelineError(Exception):
    """The enabled plugins cannot form a pipeline (bad hook implementation, unknown hook…)."""


class PluginCrashed(Exception):
    """A plugin's hook raised something that is not a GatewayError, or returned what the core
    cannot use: a bug, reported as a 500 (the log names the plugin and the reason)."""

    def __init__(self, hook: str, plugin: str, reason: str = "raised") -> None:
        super().__init__(f"plugin {plugin!r} {reason} in {hook}")
        self.hook, self.plugin = hook, plugin


@dataclass(frozen=True, slots=True)
class HookCall:
    """One implementation of one hook, ready to call with positional arguments."""

    plugin: str
    function: Call
    argnames: tuple[str, ...]


class HookRunner:
    """Registers the enabled plugins with pluggy and runs their hooks in pipeline order."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, object] = {}
        self.surface_plugins = frozenset(plugin.name for plugin in config.surfaces)
        """Plugins enabled only as surfaces (``[gateway] surfaces``): they take no part in requests."""
        for plugin in (*config.plugins, *config.surfaces):
            instance = plugin.installed.instantiate(plugin.config)
            unmarked = unmarked_hook_problems(instance)
            if unmarked:
                raise PipelineError(f"plugin {plugin.name!r} ({plugin.installed.reference}): {unmarked[0]}")
            try:
                self.pm.register(instance, name=plugin.name)
            except pluggy.PluginValidationError as exc:
                raise PipelineError(f"plugin {plugin.name!r}: {exc}") from None
            self.plugins[plugin.name] = instance
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PipelineError(str(exc)) from None
        position = {name: i for i, name in enumerate(self.plugins)}
        self._calls: dict[str, tuple[HookCall, ...]] = {}
        for hook_name in (*hookspecs.PHASE_HOOKS, *hookspecs.STARTUP_HOOKS, *hookspecs.EVENT_HOOKS):
            impls = getattr(self.pm.hook, hook_name).get_hookimpls()
            for impl in impls:
                _check_impl(hook_name, impl)
                if impl.plugin_name in self.surface_plugins and hook_name in hookspecs.REQUEST_HOOKS:
                    raise PipelineError(
                        f"plugin {impl.plugin_name!r} is enabled as a surface but implements {hook_name}: "
                        "list it in [gateway] pipeline to let it take part in requests"
                    )
            ordered = sorted(impls, key=lambda impl: position[impl.plugin_name])
            self._calls[hook_name] = tuple(HookCall(i.plugin_name, i.function, tuple(i.argnames)) for i in ordered)
        observers: list[HookObserver] = []
        self.call_startup_hook("register_hook_observers", register=observers.append)
        if config.gateway.trace_hooks:
            observers.append(_log_hook_call)
        if observers:
            # Timing costs two clock reads per hook call, so it is wired in only when asked for.
            for hook_name in hookspecs.PHASE_HOOKS:
                self._calls[hook_name] = tuple(_observed(hook_name, call, tuple(observers)) for call in self._calls[hook_name])

    def calls(self, hook: str) -> tuple[HookCall, ...]:
        """The implementations of ``hook``, in pipeline order."""
        return self._calls[hook]

    def plugin_rules(self) -> list[PluginRules]:
        """Each enabled plugin's declared rules and roles, and the hooks it implements, in order."""
        implemented: dict[str, set[str]] = {name: set() for name in self.plugins}
        for hook, calls in self._calls.items():
            for call in calls:
                implemented[call.plugin].add(hook)
        found = []
        for name, instance in self.plugins.items():
            try:
                rules = rules_of(instance)
            except TypeError as exc:
                raise PipelineError(f"plugin {name!r}: {exc}") from None
            found.append(PluginRules(name, roles_of(instance), rules, frozenset(implemented[name])))
        return found

    def order(self) -> dict[str, list[str]]:
        """For each hook, the plugins that implement it, in the order they run."""
        return {hook: [c.plugin for c in calls] for hook, calls in self._calls.items()}

    async def each(self, hook: str, **kwargs: Any) -> None:
        """Await every implementation of ``hook`` in turn.

        A :class:`GatewayError` stops the loop and propagates (a rejection); anything else is
        wrapped in :class:`PluginCrashed` naming the plugin.
        """
        for call in self._calls[hook]:
            try:
                await call.function(*[kwargs[name] for name in call.argnames])
            except GatewayError:
                raise
            except Exception as exc:
                raise PluginCrashed(hook, call.plugin) from exc

    async def first(self, hook: str, **kwargs: Any) -> tuple[str | None, Any]:
        """Await implementations in turn until one returns non-None; later ones are never called.

        Returns ``(plugin name, result)``, or ``(None, None)`` when every implementation said None.
        """
        for call in self._calls[hook]:
            try:
                result = await call.function(*[kwargs[name] for name in call.argnames])
            except GatewayError:
                raise
            except Exception as exc:
                raise PluginCrashed(hook, call.plugin) from exc
            if result is not None:
                expected = RETURNS.get(hook)
                if expected is not None and not isinstance(result, expected):
                    # What no annotation could say at start-up: a 500 whose log names the plugin.
                    wanted = " or ".join(kind.__name__ for kind in expected if kind is not type(None))
                    raise PluginCrashed(hook, call.plugin, f"returned a {type(result).__name__}, not a {wanted},")
                return call.plugin, result
        return None, None

    async def collect(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Await every implementation; return ``(plugin, result or exception)`` for each, in order."""
        results: list[tuple[str, Any]] = []
        for call in self._calls[hook]:
            try:
                results.append((call.plugin, await call.function(*[kwargs[name] for name in call.argnames])))
            except Exception as exc:
                results.append((call.plugin, exc))
        return results

    async def notify(self, hook: str, *, reverse: bool = False, **kwargs: Any) -> None:
        """Await every implementation, logging and ignoring failures (observers, shutdown)."""
        calls = reversed(self._calls[hook]) if reverse else self._calls[hook]
        for call in calls:
            try:
                await call.function(*[kwargs[name] for name in call.argnames])
            except Exception:
                log.exception("plugin_hook_failed", hook=hook, plugin=call.plugin)

    def call_startup_hook(self, hook: str, **kwargs: Any) -> None:
        """Call a synchronous start-up hook for every plugin in order.

        What a plugin hands to ``register`` is checked first, and any failure, the core's
        (two providers of one name) or the plugin's own, becomes one :class:`PipelineError`
        naming the plugin.
        """
        register = kwargs.get("register")
        for call in self._calls[hook]:
            given = kwargs if register is None else {**kwargs, "register": _checked_register(hook, call.plugin, register)}
            try:
                call.function(*[given[name] for name in call.argnames])
            except PipelineError as exc:
                message = str(exc)
                raise PipelineError(message if message.startswith("plugin ") else f"plugin {call.plugin!r}, {hook}: {message}") from None
            except Exception as exc:
                raise PipelineError(f"plugin {call.plugin!r}, {hook}: raised {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from exc

    def emit(self, event: str, **kwargs: Any) -> None:
        """Tell every observer of ``event``; an observer that raises is logged and skipped, so no
        observer can break a request or keep the others from being told."""
        for call in self._calls[event]:
            try:
                call.function(*[kwargs[name] for name in call.argnames])
            except Exception:
                log.exception("plugin_event_failed", hook=event, plugin=call.plugin)  # not event=: structlog's own argument

    def build_chain(self, terminal: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
        """Compose the ``call_provider`` middlewares around ``terminal``; first listed is outermost."""
        call_next = terminal
        for call in reversed(self._calls["call_provider"]):
            call_next = _bind_middleware(call, call_next)
        return call_next


def _bind_middleware(call: HookCall, call_next: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
    function, argnames = call.function, call.argnames
    if argnames == ("ctx", "call_next"):
        return lambda ctx: function(ctx, call_next)
    return lambda ctx: function(*[{"ctx": ctx, "call_next": call_next}[name] for name in argnames])


def _checked_register(hook: str, plugin: str, register: Callable[[Any], None]) -> Callable[[Any], None]:
    def checked(value: Any) -> None:
        problem = registered_object_problem(hook, value)
        if problem is not None:
            raise PipelineError(f"plugin {plugin!r}, {hook}: {problem}")
        register(value)

    return checked


def _check_impl(hook_name: str, impl: pluggy.HookImpl) -> None:
    where = f"plugin {impl.plugin_name!r}, hook {hook_name}"
    if impl.hookwrapper or impl.wrapper:
        raise PipelineError(f"{where}: wrappers are not supported; implement call_provider middleware instead")
    if impl.tryfirst or impl.trylast:
        raise PipelineError(f"{where}: tryfirst/trylast are not supported; order plugins in [gateway] pipeline")
    is_async = inspect.iscoroutinefunction(impl.function) or inspect.isasyncgenfunction(impl.function)
    if hook_name in hookspecs.PHASE_HOOKS and not is_async:
        raise PipelineError(f"{where}: must be 'async def' (the core awaits it)")
    if hook_name in hookspecs.STARTUP_HOOKS and is_async:
        raise PipelineError(f"{where}: must be a plain 'def' (it runs once while the app is built)")
    if hook_name in hookspecs.EVENT_HOOKS and is_async:
        raise PipelineError(f"{where}: must be a plain 'def' (an event is told, not awaited; start a task for I/O)")
    problem = return_annotation_problem(hook_name, impl.function)
    if problem is not None:
        raise PipelineError(f"plugin {impl.plugin_name!r}: {problem}")


HookObserver = Callable[[str, str, float, str], None]
"""``observer(hook, plugin, seconds, outcome)``, called after every phase-hook call."""


def _log_hook_call(hook: str, plugin: str, seconds: float, outcome: str) -> None:
    log.info("hook_trace", hook=hook, plugin=plugin, ms=round(seconds * 1000, 3), outcome=outcome)


def _observed(hook_name: str, call: HookCall, observers: tuple[HookObserver, ...]) -> HookCall:
    """Wrap a hook call to time it and tell the observers. For a ``call_provider`` middleware
    the time spent in ``call_next`` (the rest of the chain) is not the plugin's and is left out."""
    function, plugin = call.function, call.plugin
    next_at = call.argnames.index("call_next") if "call_next" in call.argnames else None

    async def observed(*args: Any) -> Any:
        started = perf_counter()
        inner = 0.0
        if next_at is not None:
            call_next = args[next_at]

            async def timed_next(ctx: Any) -> Any:
                nonlocal inner
                entered = perf_counter()
                try:
                    return await call_next(ctx)
                finally:
                    inner += perf_counter() - entered

            args = (*args[:next_at], timed_next, *args[next_at + 1 :])
        outcome = "ok"
        try:
            result = await function(*args)
            if result is not None and hook_name == "cache_lookup":
                outcome = "hit"
            return result
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            seconds = perf_counter() - started - inner
            for observer in observers:
                try:
                    observer(hook_name, plugin, seconds, outcome)
                except Exception:
                    log.exception("hook_observer_failed", observer=repr(observer))

    return HookCall(plugin, observed, call.argnames)
