"""Finding installed plugins: every entry point in the ``hookgate`` group, built-ins included.

Built-in plugins are declared in hookgate's own pyproject.toml exactly as a third party declares
theirs, so there is one mechanism. Nothing is imported until a plugin is actually needed.
"""
from __future__ import annotations

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
        """Import the plugin (once)."""
        if self._target is None:
            assert self.entry_point is not None
            try:
                self._target = self.entry_point.load()
            except Exception as exc:  # an import error in someone's plugin must not read as ours
                raise PluginLoadError(
                    f"plugin {self.name!r} ({self.reference}, from {self.distribution}) failed to import: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        return self._target

    def config_model(self) -> type[PluginConfig]:
        """The plugin's config model: its ``Config`` attribute, or the bare base model."""
        from .config import PluginConfig

        model = getattr(self.load(), "Config", PluginConfig)
        if not (isinstance(model, type) and issubclass(model, PluginConfig)):
            raise PluginLoadError(f"plugin {self.name!r}: Config must subclass hookgate.PluginConfig")
        return model

    def instantiate(self, config: PluginConfig) -> object:
        """The object to register with pluggy for one app."""
        target = self.load()
        return target(config) if isinstance(target, type) else target

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
