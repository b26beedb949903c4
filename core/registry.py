"""Finding installed plugins: every entry point in the ``hookgate`` group, built-ins included.

Built-in plugins are declared in hookgate's own pyproject.toml exactly as a third party declares
theirs, so there is one mechanism. Nothing is imported until a plugin is actually needed.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import traceback
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .markers import PROJECT_NAME

if TYPE_CHECKING:
    from .config import PluginConfig

__all__ = ["InstalledPlugin", "PluginLoadError", "installed_plugins"]


class PluginLoadError(Exception):
    """A plugin could not be imported or is not a valid plugin."""


@dataclass(eq=False)
class InstalledPlugin:
    """An entry point in the ``hookgate`` group: a plugin class, or a module of hook functions.

    A class is instantiated once per app with its validated config (``Plugin(config)``), so its
    state lives with the app; a module is registered as it is and must keep no state.
    """

    name: str
    entry_point: EntryPoint | None
    distribution: str
    version: str
    _target: Any = field(default=None, repr=False)

    @classmethod
    def local(cls, name: str, target: type | ModuleType) -> InstalledPlugin:
        """A plugin given as an object rather than an entry point (tests, embedding applications)."""
        return cls(name, None, "<local>", "-", target)

    @property
    def reference(self) -> str:
        """Where the plugin comes from: ``module:attribute`` of its entry point."""
        if self.entry_point is not None:
            return self.entry_point.value
        return f"{getattr(self._target, '__module__', '?')}:{getattr(self._target, '__qualname__', self._target)}"

    def load(self) -> type | ModuleType:
        """Import the plugin (once).

        :raises PluginLoadError: in one line naming the plugin and its entry point: the module or
            the attribute it names does not exist, the module failed to import (where), or it
            names something that cannot be a plugin.
        """
        if self._target is None:
            assert self.entry_point is not None
            self._target = _resolve(self.name, self.entry_point, self._origin)
        return self._target

    @property
    def _origin(self) -> str:
        return f"entry point {self.name} = {self.reference!r} of {self.distribution} {self.version}"

    def config_model(self) -> type[PluginConfig]:
        """The plugin's config model: its ``Config`` attribute, or the bare base model."""
        from .config import PluginConfig

        model = getattr(self.load(), "Config", PluginConfig)
        if not (isinstance(model, type) and issubclass(model, PluginConfig)):
            raise PluginLoadError(f"plugin {self.name!r}: Config must subclass hookgate.PluginConfig")
        return model

    def instantiate(self, config: PluginConfig) -> object:
        """The object to register with pluggy for one app.

        :raises PluginLoadError: the class cannot take its config (no ``config`` parameter,
            other required parameters, a ``Config`` that is not the model ``__init__`` expects),
            or its ``__init__`` raised: one line naming the plugin, never a bare ``TypeError``.
        """
        from .config import ConfigError
        from .plugin_checks import constructor_problems

        target = self.load()
        if not isinstance(target, type):
            return target
        problems = constructor_problems(target, type(config), self.name)
        if problems:
            raise PluginLoadError(f"plugin {self.name!r} ({self.reference}): {'; '.join(problems)}")
        try:
            return target(config)
        except (ConfigError, PluginLoadError):
            raise
        except Exception as exc:  # a bug in someone's plugin must say whose, in one line
            raise PluginLoadError(
                f"plugin {self.name!r} ({self.reference}): {target.__qualname__}(config) raised {_one_line(exc)}"
            ) from exc

    @property
    def description(self) -> str:
        doc = (getattr(self.load(), "__doc__", None) or "").strip()
        return doc.splitlines()[0] if doc else ""


def installed_plugins() -> dict[str, InstalledPlugin]:
    """Every plugin installed in this environment, by entry-point name."""
    found: dict[str, InstalledPlugin] = {}
    for ep in entry_points(group=PROJECT_NAME):
        dist = ep.dist
        plugin = InstalledPlugin(ep.name, ep, dist.name if dist else "?", dist.version if dist else "?")
        if ep.name in found and found[ep.name].reference != ep.value:
            other = found[ep.name]
            raise PluginLoadError(
                f"plugin name {ep.name!r} is installed twice: by {other.distribution} and by {plugin.distribution}"
            )
        found[ep.name] = plugin
    return found


def _resolve(name: str, entry_point: EntryPoint, origin: str) -> type | ModuleType:
    """Import what an entry point names, saying in one line which part does not resolve.

    ``EntryPoint.load()`` would do the same import, but its errors do not tell "the module the
    entry point names is missing" (a renamed package, an install from another checkout) from
    "the plugin's module imports something missing" (a dependency), nor show where an import
    failed without a traceback.
    """
    module_name, attribute = entry_point.module, entry_point.attr
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise PluginLoadError(
                f"plugin {name!r}: {origin} does not resolve: there is no module {missing!r} "
                f"(renamed, or installed from elsewhere? reinstall the package: pip install -e DIR)"
            ) from None
        raise PluginLoadError(f"plugin {name!r}: {origin} failed to import: {_one_line(exc)}{_where(exc)}") from exc
    except Exception as exc:  # an import error in someone's plugin must not read as ours
        raise PluginLoadError(f"plugin {name!r}: {origin} failed to import: {_one_line(exc)}{_where(exc)}") from exc
    target: object = module
    for part in attribute.split(".") if attribute else ():
        try:
            target = getattr(target, part)
        except AttributeError:
            close = difflib.get_close_matches(part, [n for n in dir(target) if not n.startswith("_")], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PluginLoadError(
                f"plugin {name!r}: {origin} does not resolve: module {module_name!r} has no attribute {part!r}{hint}"
            ) from None
    if not isinstance(target, (type, ModuleType)) and (inspect.isfunction(target) or inspect.isbuiltin(target)):
        raise PluginLoadError(
            f"plugin {name!r}: {origin} names a function; a plugin is a class (made once per app with its config) "
            "or a module of @hookimpl functions"
        )
    return target  # type: ignore[return-value]


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one bounded line (an exception's text may span lines)."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[:limit] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _where(exc: BaseException) -> str:
    """Where an import failed: the file and line (a syntax error's own, else the innermost frame)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return ""  # its message already names the file and line
    frames = traceback.extract_tb(exc.__traceback__)
    frames = [frame for frame in frames if "importlib" not in frame.filename]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
