"""Pipeline rules: what a plugin needs of the others, declared as data and checked at start-up.

Order in hookgate is configuration (``[gateway] pipeline``), so a plugin that only works in some
places says so here instead of in prose. A plugin class lists its rules in ``rules``::

    from hookgate.facts import CLIENT_KEY, COST_USD, WORST_CASE_COST_USD
    from hookgate.rules import After, Needs, Produces, Reads

    class Budget:
        rules = (
            Needs(WORST_CASE_COST_USD, "before_request", why="the worst case is what budget reserves"),
            Reads(CLIENT_KEY, "before_request", why="per-key budgets"),
        )

    class CircuitBreaker:
        rules = (After("retry", "call_provider", why="each attempt is judged, not the request"),)

The gateway checks every enabled plugin's rules whenever it builds a pipeline (start-up, reload,
``hookgate check-config``) and refuses one that breaks a rule with a message naming both plugins
and the rule. ``hookgate plugins`` and ``GET /-/plugins`` list every plugin's rules.

Fact rules order themselves: a plugin that reads a fact in a hook must come after every plugin
that produces it in that same hook (for ``call_provider``: outside it), and a fact produced only in
a later hook cannot be read at all. Facts produced in an earlier hook need no order. Plugins are
matched by the name they are enabled under or by a role they declare (``roles = ("cache",)``), so
``After("cache")`` means every enabled cache.

For a rule that depends on configuration, set ``rules`` on the instance in ``__init__`` (or use
the ``check_pipeline`` hook for anything rules cannot say).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

from .state import StateKey

__all__ = [
    "Produces",
    "Reads",
    "Needs",
    "After",
    "Before",
    "Requires",
    "Conflicts",
    "Rule",
    "PluginRules",
    "HOOK_STAGES",
    "check_rules",
    "rules_of",
    "roles_of",
]

HOOK_STAGES: Mapping[str, int] = {
    "authenticate": 0,
    "before_request": 1,
    "cache_lookup": 2,
    "call_provider": 3,
    "after_response": 4,
    "on_error": 4,
    "request_finished": 5,
}
"""When each hook runs in a request, for ordering facts: a fact produced at one stage can be read
at any later stage. ``after_response`` and ``on_error`` are alternatives at the same stage."""


def _check_hook(hook: str | None) -> None:
    if hook is not None and hook not in HOOK_STAGES:
        raise ValueError(f"unknown hook {hook!r} in a rule; one of {', '.join(HOOK_STAGES)}")


@dataclass(frozen=True, slots=True)
class Produces:
    """This plugin sets ``fact`` in ``hook``."""

    fact: StateKey[Any]
    hook: str

    def __post_init__(self) -> None:
        _check_hook(self.hook)

    def describe(self) -> str:
        return f"produces {self.fact.name} in {self.hook}"


@dataclass(frozen=True, slots=True)
class Reads:
    """This plugin reads ``fact`` in ``hook`` when some enabled plugin produces it (and copes
    without it otherwise); if one does, it must have run by then."""

    fact: StateKey[Any]
    hook: str
    why: str = ""

    def __post_init__(self) -> None:
        _check_hook(self.hook)

    def describe(self) -> str:
        return f"reads {self.fact.name} in {self.hook}" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True, slots=True)
class Needs:
    """This plugin cannot work without ``fact`` in ``hook``: an enabled plugin must produce it,
    and must have run by then."""

    fact: StateKey[Any]
    hook: str
    why: str = ""

    def __post_init__(self) -> None:
        _check_hook(self.hook)

    def describe(self) -> str:
        return f"needs {self.fact.name} in {self.hook}" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True, slots=True)
class After:
    """When ``plugin`` (a name or role) is enabled, it must be listed before this one. With a
    ``hook``, the rule is about that hook (for ``call_provider``: ``plugin`` wraps this one) and
    holds only when both implement it."""

    plugin: str
    hook: str | None = None
    why: str = ""

    def __post_init__(self) -> None:
        _check_hook(self.hook)

    def describe(self) -> str:
        where = f" in {self.hook}" if self.hook else ""
        return f"runs after {self.plugin}{where}" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True, slots=True)
class Before:
    """When ``plugin`` (a name or role) is enabled, it must be listed after this one."""

    plugin: str
    hook: str | None = None
    why: str = ""

    def __post_init__(self) -> None:
        _check_hook(self.hook)

    def describe(self) -> str:
        where = f" in {self.hook}" if self.hook else ""
        return f"runs before {self.plugin}{where}" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True, slots=True)
class Requires:
    """``plugin`` (a name or role) must be enabled too."""

    plugin: str
    why: str = ""

    def describe(self) -> str:
        return f"requires {self.plugin}" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True, slots=True)
class Conflicts:
    """``plugin`` (a name or role) must not be enabled at the same time."""

    plugin: str
    why: str = ""

    def describe(self) -> str:
        return f"conflicts with {self.plugin}" + (f" ({self.why})" if self.why else "")


Rule = Union[Produces, Reads, Needs, After, Before, Requires, Conflicts]


def rules_of(plugin: object) -> tuple[Rule, ...]:
    """The rules a plugin (class or instance) declares: its ``rules`` attribute."""
    rules = tuple(getattr(plugin, "rules", ()) or ())
    for rule in rules:
        if not isinstance(rule, (Produces, Reads, Needs, After, Before, Requires, Conflicts)):
            raise TypeError(f"{rule!r} is not a hookgate.rules rule")
    return rules


def roles_of(plugin: object) -> tuple[str, ...]:
    """The roles a plugin declares (``roles = ("cache",)``)."""
    return tuple(getattr(plugin, "roles", ()) or ())


@dataclass(frozen=True, slots=True)
class PluginRules:
    """One enabled plugin as the checker sees it."""

    name: str
    roles: tuple[str, ...]
    rules: tuple[Rule, ...]
    hooks: frozenset[str]
    """The hooks the plugin implements."""

    def answers_to(self, target: str) -> bool:
        return target == self.name or target in self.roles


def check_rules(pipeline: Sequence[PluginRules], *, suggest: Callable[[str], Sequence[str]] | None = None) -> list[str]:
    """Every broken rule of ``pipeline`` (in order), as one sentence each naming both plugins.

    :param suggest: fact name → installed plugins that could produce it, to name a plugin to
        enable when nobody produces a needed fact (called only then).
    """
    position = {plugin.name: index for index, plugin in enumerate(pipeline)}
    producers: dict[int, list[tuple[PluginRules, Produces]]] = {}
    for plugin in pipeline:
        for rule in plugin.rules:
            if isinstance(rule, Produces):
                producers.setdefault(id(rule.fact), []).append((plugin, rule))
    problems: list[str] = []
    for plugin in pipeline:
        for rule in plugin.rules:
            if isinstance(rule, (Reads, Needs)):
                problems.extend(_check_fact(plugin, rule, producers.get(id(rule.fact), []), position, suggest))
            elif isinstance(rule, (After, Before)):
                problems.extend(_check_order(plugin, rule, pipeline, position))
            elif isinstance(rule, Requires):
                if not any(other.answers_to(rule.plugin) for other in pipeline if other is not plugin):
                    problems.append(f"{plugin.name} requires {rule.plugin}, which is not enabled{_because(rule.why)}")
            elif isinstance(rule, Conflicts):
                clashing = [other.name for other in pipeline if other is not plugin and other.answers_to(rule.plugin)]
                if clashing:
                    problems.append(f"{plugin.name} conflicts with {', '.join(clashing)}{_because(rule.why)}: enable only one")
    return problems


def _check_fact(
    plugin: PluginRules,
    rule: Reads | Needs,
    producers: list[tuple[PluginRules, Produces]],
    position: Mapping[str, int],
    suggest: Callable[[str], Sequence[str]] | None,
) -> Iterable[str]:
    fact, stage = rule.fact.name, HOOK_STAGES[rule.hook]
    others = [(producer, produced) for producer, produced in producers if producer is not plugin]
    if not others:
        if isinstance(rule, Needs) and not any(p is plugin for p, _ in producers):
            hint = suggest(fact) if suggest is not None else ()
            suggestion = f"; enable {' or '.join(hint)}" if hint else ""
            yield f"{plugin.name} needs {fact} in {rule.hook}, which no enabled plugin produces{suggestion}{_because(rule.why)}"
        return
    late_here = [producer for producer, produced in others if produced.hook == rule.hook and position[producer.name] > position[plugin.name]]
    if late_here:
        # Every producer in the same hook must have run: the fact may come from any of them.
        producer = late_here[0]
        yield (
            f"{plugin.name} reads {fact} in {rule.hook}, which {producer.name} produces there: "
            f"list {producer.name} before {plugin.name}{_because(rule.why)}"
        )
        return
    if all(HOOK_STAGES[produced.hook] > stage for _, produced in others):
        producer, produced = others[0]
        yield (
            f"{plugin.name} reads {fact} in {rule.hook}, but {producer.name} produces it only later, "
            f"in {produced.hook}{_because(rule.why)}"
        )


def _check_order(plugin: PluginRules, rule: After | Before, pipeline: Sequence[PluginRules], position: Mapping[str, int]) -> Iterable[str]:
    for other in pipeline:
        if other is plugin or not other.answers_to(rule.plugin):
            continue
        if rule.hook is not None and not (rule.hook in plugin.hooks and rule.hook in other.hooks):
            continue
        where = f" in {rule.hook}" if rule.hook else ""
        if isinstance(rule, After) and position[other.name] > position[plugin.name]:
            yield f"{plugin.name} must run after {other.name}{where}{_because(rule.why)}: list {other.name} before {plugin.name}"
        if isinstance(rule, Before) and position[other.name] < position[plugin.name]:
            yield f"{plugin.name} must run before {other.name}{where}{_because(rule.why)}: list {plugin.name} before {other.name}"


def _because(why: str) -> str:
    return f" ({why})" if why else ""
