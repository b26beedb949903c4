"""Plugin mistakes caught while a pipeline is built, each in one sentence naming what to change.

Without these checks the commonest mistakes of a plugin author are silent or cryptic:

* a hook method without ``@hookimpl`` is never called (pluggy registers only marked methods),
  and nothing says so;
* a class whose ``__init__`` takes no ``config`` fails deep inside start-up with a bare
  ``TypeError``; one whose ``Config`` is not the model its ``__init__`` expects gets the wrong
  settings object and fails on the first request;
* a hook annotated to return what the core cannot use (``authenticate -> str``,
  ``cache_lookup -> dict``, ``before_request -> bool``, whose result is ignored) fails, or does
  nothing, only when a request reaches it;
* ``register()`` given something that is not a provider (or a collector, or an observer).

The functions return the problems as sentences (an empty list when there are none); the registry
and the hook runner put the plugin's name in front and refuse the pipeline. Annotations are read
where they can be resolved (``from __future__ import annotations`` included); a name imported
only for type checking cannot be, and is skipped rather than guessed.
"""
from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from . import hookspecs
from .health import Readiness
from .identity import ClientKey
from .markers import PROJECT_NAME
from .provider import Provider
from .responses import Completion, CompletionStream

__all__ = [
    "HOOK_NAMES",
    "constructor_problems",
    "unmarked_hook_problems",
    "return_annotation_problem",
    "registered_object_problem",
    "RETURNS",
]

HOOK_NAMES: frozenset[str] = frozenset((*hookspecs.STARTUP_HOOKS, *hookspecs.PHASE_HOOKS, *hookspecs.EVENT_HOOKS))
"""Every hook a plugin can implement: a method of one of these names is a hook."""

_MARKER = PROJECT_NAME + "_impl"

RETURNS: dict[str, tuple[type, ...]] = {
    "authenticate": (ClientKey, type(None)),
    "cache_lookup": (Completion, type(None)),
    "check_ready": (Readiness, type(None)),
    "call_provider": (Completion, CompletionStream),
}
"""What the core does with each hook's result; every other hook's result is ignored (``None``)."""

_ADVICE = {
    "authenticate": "return a hookgate.ClientKey, or None to let the next plugin decide; raise AuthenticationFailed to refuse",
    "cache_lookup": "return a hookgate.Completion on a hit (Completion(body) for a dict), None on a miss",
    "check_ready": "return a hookgate.Readiness, or None",
    "call_provider": "return what call_next returned (a Completion or a CompletionStream), or a replacement of the same kind",
    "before_request": "its result is ignored: raise a GatewayError (InvalidRequest, PermissionDenied...) to reject a request",
    "authorize_admin": "its result is ignored: raise AuthenticationFailed or PermissionDenied to refuse",
    "check_pipeline": "its result is ignored: raise ValueError with the reason to refuse the pipeline",
}


def _name(kind: type) -> str:
    return "None" if kind is type(None) else kind.__name__


def _expected(hook: str) -> str:
    return " | ".join(_name(kind) for kind in RETURNS.get(hook, (type(None),)))


# ------------------------------------------------------------------------------ the class ---


def constructor_problems(target: type, config_model: type, name: str = "NAME") -> list[str]:
    """What is wrong with how ``target`` takes its config: the core calls ``target(config)``
    with ``config`` an instance of ``config_model`` (its ``Config``, else ``PluginConfig``), the
    validated ``[plugins.<name>]`` table."""
    from .config import PluginConfig

    model = config_model.__name__
    wanted = model if config_model is not PluginConfig else f"{target.__name__}Config"
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return []  # a builtin or C type: nothing to read
    parameters = list(signature.parameters.values())
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional and not any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return [
            f"{target.__name__}.__init__ takes no config: write `def __init__(self, config: {wanted})` "
            f"(the gateway calls {target.__name__}(config) with the validated [plugins.{name}] table)"
        ]
    problems = []
    extra = [p.name for p in positional[1:] if p.default is p.empty]
    extra += [p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if extra:
        problems.append(
            f"{target.__name__}.__init__ requires {', '.join(extra)} besides config, and the gateway passes only config: "
            f"give {'them' if len(extra) > 1 else 'it'} a default, or make {'them settings' if len(extra) > 1 else 'it a setting'} of {model}"
        )
    if positional:
        annotation = _resolved(positional[0].annotation, _init_globals(target))
        if isinstance(annotation, type) and annotation not in (object, typing.Any) and not issubclass(config_model, annotation):
            if config_model is PluginConfig and issubclass(annotation, PluginConfig):
                problems.append(
                    f"{target.__name__}.__init__ takes config: {annotation.__name__}, but the class declares no "
                    f"`Config = {annotation.__name__}`, so [plugins.{name}] would be validated against the bare PluginConfig: "
                    f"add `Config = {annotation.__name__}` to the class"
                )
            else:
                problems.append(
                    f"{target.__name__}.__init__ takes config: {annotation.__name__}, but it is given a {model} "
                    f"(its Config): make them agree"
                )
    return problems


def _init_globals(target: type) -> dict[str, Any]:
    init = getattr(target, "__init__", None)
    return getattr(init, "__globals__", None) or vars(inspect.getmodule(target) or types.ModuleType("unknown"))


# ------------------------------------------------------------------------------ the hooks ---


def unmarked_hook_problems(plugin: object) -> list[str]:
    """Methods (or, for a module, functions) named like a hook but not marked ``@hookimpl``:
    pluggy would register none of them, silently."""
    marked, unmarked, foreign = [], [], []
    for name in sorted(HOOK_NAMES):
        member = inspect.getattr_static(plugin, name, None)
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if not callable(member):
            continue
        if isinstance(plugin, types.ModuleType) and getattr(member, "__module__", None) != plugin.__name__:
            continue  # imported into the module, not defined there
        attributes = getattr(member, "__dict__", {})
        if _MARKER in attributes:
            marked.append(name)
        else:
            unmarked.append(name)
            foreign += [f"{name} is marked for {attribute[: -len('_impl')]!r}" for attribute in attributes if attribute.endswith("_impl")]
    if not unmarked:
        return []
    names = ", ".join(unmarked)
    fix = "decorate it with @hookimpl (from hookgate import hookimpl)" if len(unmarked) == 1 else "decorate them with @hookimpl (from hookgate import hookimpl)"
    if foreign:
        fix += f"; {'; '.join(foreign)}, not hookgate"
    if marked:
        verb = "is" if len(unmarked) == 1 else "are"
        return [f"{names} {verb} not marked @hookimpl ({', '.join(marked)} {'is' if len(marked) == 1 else 'are'}), so it would never run: {fix}"]
    if len(unmarked) == 1:
        return [f"{names} looks like a hook but is not marked @hookimpl, so it would never run: {fix}"]
    return [f"{names} look like hooks but none is marked @hookimpl, so none would ever run: {fix}"]


def return_annotation_problem(hook: str, function: Callable[..., Any]) -> str | None:
    """Whether ``function``'s return annotation, where it can be resolved, promises something the
    core cannot use as the result of ``hook``."""
    annotation = inspect.signature(function).return_annotation if callable(function) else inspect.Signature.empty
    if annotation is inspect.Signature.empty:
        return None
    resolved = _resolved(annotation, getattr(function, "__globals__", {}))
    if resolved is None:
        return None  # unresolvable here (a TYPE_CHECKING import): not guessed
    allowed = RETURNS.get(hook, (type(None),))
    wrong = [member for member in _members(resolved) if not _fits(member, allowed)]
    if not wrong:
        return None
    shown = " | ".join(_name(kind) if isinstance(kind, type) else str(kind) for kind in wrong)
    advice = _ADVICE.get(hook)
    if advice is None:
        advice = "its result is ignored" if hook in hookspecs.PHASE_HOOKS else "the core ignores what it returns"
    if dict in wrong and Completion in allowed:
        advice = _ADVICE[hook]
    return f"{hook} is annotated to return {shown}, but the core takes {_expected(hook)}: {advice}"


def _resolved(annotation: Any, namespace: dict[str, Any]) -> Any:
    """The annotation as an object: strings (``from __future__ import annotations``) evaluated in
    the function's module; None when that cannot be done here."""
    if annotation is inspect.Parameter.empty:
        return None
    if annotation is None:
        return type(None)
    if isinstance(annotation, str):
        try:
            annotation = eval(annotation, {"typing": typing, **namespace})  # noqa: S307 - the plugin's own annotation, already imported code
        except Exception:
            return None
        if annotation is None:
            return type(None)
    return annotation


def _members(annotation: Any) -> list[Any]:
    """A union's members; ``Optional[X]`` is ``X | None``; ``dict[str, Any]`` is ``dict``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [member for arg in typing.get_args(annotation) for member in _members(arg)]
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if annotation is None:
        return [type(None)]
    if isinstance(origin, type):
        return [origin]
    return [annotation]


def _fits(member: Any, allowed: tuple[type, ...]) -> bool:
    if member is typing.Any or member is object or not isinstance(member, type):
        return True  # says nothing checkable (a TypeVar, a Protocol alias...)
    return any(issubclass(member, kind) for kind in allowed)


# ---------------------------------------------------------------------------- register() ---


def registered_object_problem(hook: str, value: object) -> str | None:
    """Whether what a plugin passed to ``register`` in a start-up hook can be used."""
    if hook == "register_providers":
        if not isinstance(value, Provider):
            missing = [name for name in ("name", "models", "complete") if not hasattr(value, name)]
            return (
                f"register() was given {_described(value)}, which is not a hookgate.Provider "
                f"(it needs name, models() and async complete(ctx); missing: {', '.join(missing)})"
            )
        if not isinstance(value.name, str) or not value.name:
            return f"register() was given a provider whose name is {value.name!r}; it must be a non-empty string"
        if not inspect.iscoroutinefunction(value.complete):
            return f"register() was given provider {value.name!r}, whose complete() is not 'async def' (the core awaits it)"
        return None
    if hook == "register_metrics":
        if not callable(getattr(value, "collect", None)):
            return f"register() was given {_described(value)}, which is not a Prometheus collector (it needs collect())"
        return None
    if hook == "register_hook_observers":
        if not callable(value):
            return f"register() was given {_described(value)}, which cannot be called as observer(hook, plugin, seconds, outcome)"
        if inspect.iscoroutinefunction(value):
            return "register() was given an 'async def' observer; observers are plain functions, called after every hook"
    return None


def _described(value: object) -> str:
    kind = type(value)
    text = repr(value)
    return f"a {kind.__name__}" + (f" ({text[:60]})" if isinstance(value, (str, int, float, bytes)) else "")
