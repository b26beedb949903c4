"""Loading plugins.toml: the gateway's own settings and each plugin's validated config.

The file has a ``[gateway]`` table (listen address, the ordered ``pipeline`` of enabled plugins,
limits, logging) and one ``[plugins.NAME]`` table per plugin, validated by that plugin's own
:class:`PluginConfig` model. Environment variables override the file (pydantic-settings):
``HOOKGATE_PORT=9000`` for a gateway key, ``HOOKGATE_MEMORY_CACHE__TTL_SECONDS=60`` for a plugin's,
so a container needs no file edits.

Every problem is raised as one :class:`ConfigError` naming the file, the section, the key and the
reason, which the command line prints before exiting non-zero.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .registry import InstalledPlugin, PluginLoadError, installed_plugins

__all__ = [
    "PluginConfig",
    "GatewaySettings",
    "GatewayConfig",
    "EnabledPlugin",
    "ModelRouteConfig",
    "ConfigError",
    "load_config",
    "DEFAULT_PIPELINE",
]

DEFAULT_PIPELINE = ("request_log", "memory_cache", "echo")
"""What runs when there is no plugins.toml at all: logging, an in-memory cache, the demo model."""


class ConfigError(Exception):
    """A configuration problem, located as precisely as possible."""

    def __init__(self, source: str, reason: str, *, section: str | None = None, key: str | None = None) -> None:
        self.source, self.section, self.key, self.reason = source, section, key, reason
        where = source
        if section:
            where += f": [{section}]"
        if key:
            where += f" {key}"
        super().__init__(f"{where}: {reason}")


class _EnvFirstSettings(BaseSettings):
    """Settings where the environment overrides values given by the file."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings


class PluginConfig(_EnvFirstSettings):
    """Base of every plugin's config model: subclass it and add typed fields with defaults.

    Unknown keys are errors (``extra="forbid"``), so a typo in plugins.toml fails at start-up
    instead of being silently ignored. Each field can be overridden by the environment variable
    ``HOOKGATE_<PLUGIN>__<FIELD>`` (upper case). Use ``Field(description=...)``: descriptions are
    shown by ``hookgate plugins``.
    """

    model_config = SettingsConfigDict(extra="forbid", env_nested_delimiter="__", validate_default=True)

    enabled: bool = Field(True, description="false switches the plugin off while keeping its place in the pipeline")


class GatewaySettings(_EnvFirstSettings):
    """The ``[gateway]`` table."""

    model_config = SettingsConfigDict(env_prefix="HOOKGATE_", extra="forbid", validate_default=True)

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8080, ge=0, le=65535, description="port to listen on (0: any free port)")
    pipeline: list[str] = Field(
        list(DEFAULT_PIPELINE),
        description="the enabled plugins, in order: hooks run in this order; the first call_provider middleware is outermost",
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="largest request body accepted (413 above)")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="lowest level logged")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="json for machines, console for people; auto picks console on a terminal"
    )
    trace_hooks: bool = Field(False, description="log every hook call with its duration (for plugin authors)")
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="on SIGTERM (or a reload), how long running requests and streams may take to finish"
    )

    @field_validator("pipeline")
    @classmethod
    def _no_duplicates(cls, names: list[str]) -> list[str]:
        seen = set()
        for name in names:
            if name in seen:
                raise ValueError(f"plugin {name!r} is listed twice")
            seen.add(name)
        return names


class ModelRouteConfig(BaseModel):
    """One ``[models.NAME]`` table: where a public model name goes.

    ``NAME`` may end in ``/*`` for a pattern route: ``[models."groq/*"]`` sends
    ``groq/llama-3.1-8b-instant`` to the groq provider as ``llama-3.1-8b-instant``.
    """

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(description="name of the enabled provider that serves it")
    model: str | None = Field(None, min_length=1, description="the upstream model name (default: the public name)")
    params: dict[str, Any] = Field(default_factory=dict, description="default request parameters; the client's own values win")
    aliases: list[str] = Field(default_factory=list, description="further public names for this route")
    fallbacks: list[str] = Field(default_factory=list, description="public model names tried in order when this route fails")


@dataclass(frozen=True, slots=True)
class EnabledPlugin:
    """One plugin of the resolved pipeline."""

    name: str
    installed: InstalledPlugin
    config: PluginConfig


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """A validated configuration: the gateway settings and the enabled plugins, in order."""

    source: str
    gateway: GatewaySettings
    plugins: tuple[EnabledPlugin, ...]
    disabled: tuple[str, ...]
    """Plugins listed in the pipeline but switched off with ``enabled = false``."""
    models: dict[str, ModelRouteConfig] = field(default_factory=dict)
    """The ``[models]`` routes, by public name (or ``prefix/*`` pattern)."""

    @property
    def pipeline(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.plugins)


def load_config(
    path: str | Path | None,
    *,
    overrides: dict[str, Any] | None = None,
    available: dict[str, InstalledPlugin] | None = None,
) -> GatewayConfig:
    """Read and validate a plugins.toml (or the built-in defaults when ``path`` is None).

    :param overrides: gateway keys given on the command line (``host``, ``port``); they win over
        the file and the environment.
    :param available: the installed plugins; discovered from entry points when omitted.
    """
    source = str(path) if path is not None else "<built-in defaults>"
    document = _read_toml(Path(path)) if path is not None else {}
    for section in document:
        if section not in ("gateway", "plugins", "models"):
            raise ConfigError(source, "unknown section (expected [gateway], [plugins.NAME] and [models.NAME] tables)", section=section)
    gateway_table = _table(document, "gateway", source)
    plugins_table = _table(document, "plugins", source)
    models = {
        name: _validate_model(ModelRouteConfig, values, source, f"models.{name}")
        for name, values in _table(document, "models", source).items()
    }

    gateway = _validate(GatewaySettings, gateway_table, source, "gateway")
    if overrides:
        gateway = gateway.model_copy(update={k: v for k, v in overrides.items() if v is not None})

    available = installed_plugins() if available is None else available
    for name, section in plugins_table.items():
        if name not in available:
            raise ConfigError(source, f"unknown plugin {name!r}; installed: {', '.join(sorted(available))}", section=f"plugins.{name}")
        if not isinstance(section, dict):
            raise ConfigError(source, "must be a table", section=f"plugins.{name}")
    for name in gateway.pipeline:
        if name not in available:
            raise ConfigError(
                source, f"unknown plugin {name!r}; installed: {', '.join(sorted(available))}", section="gateway", key="pipeline"
            )

    enabled: list[EnabledPlugin] = []
    disabled: list[str] = []
    for name in gateway.pipeline:
        installed = available[name]
        try:
            model = installed.config_model()
        except PluginLoadError as exc:
            raise ConfigError(source, str(exc), section="gateway", key="pipeline") from exc
        config = _validate(model, plugins_table.get(name, {}), source, f"plugins.{name}", env_prefix=plugin_env_prefix(name))
        if config.enabled:
            enabled.append(EnabledPlugin(name, installed, config))
        else:
            disabled.append(name)
    return GatewayConfig(source, gateway, tuple(enabled), tuple(disabled), models)


def plugin_env_prefix(name: str) -> str:
    """The environment prefix of a plugin's settings, e.g. ``HOOKGATE_MEMORY_CACHE__``."""
    return f"HOOKGATE_{name.upper().replace('-', '_')}__"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read: {exc.strerror}") from None


def _table(document: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    value = document.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(source, "must be a table", section=name)
    return value


def _validate_model(model: type[BaseModel], values: Any, source: str, section: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(source, "must be a table", section=section)
    return _validate(model, values, source, section)


def _validate(model: type[BaseModel], values: dict[str, Any], source: str, section: str, **settings_kwargs: Any):
    try:
        kwargs = {f"_{k}": v for k, v in settings_kwargs.items()}
        return model(**kwargs, **values)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or None
        reason = first["msg"]
        if first["type"] == "extra_forbidden":
            reason = f"unknown key; allowed: {', '.join(sorted(model.model_fields))}"
        elif "input" in first and first["type"] != "missing" and not _looks_secret(key or ""):
            reason += f" (got {first['input']!r})"
        more = len(exc.errors()) - 1
        if more:
            reason += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ConfigError(source, reason, section=section, key=key) from None


def _looks_secret(key: str) -> bool:
    """Never echo a value that may be a credential back into an error message."""
    return any(word in key.lower() for word in ("key", "secret", "token", "password"))
