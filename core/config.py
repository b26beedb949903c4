"""Loading plugins.toml: the gateway's own settings and each plugin's validated config.

The file has a ``[gateway]`` table (listen address, the ordered ``pipeline`` of enabled plugins,
limits, logging) and one ``[plugins.NAME]`` table per plugin, validated by that plugin's own
:class:`PluginConfig` model. Environment variables override the file, and only variables with the
``HOOKGATE_`` prefix are ever read, so a container needs no file edits and a stray ``BASE_URL`` or
``API_KEY`` in the environment changes nothing:

* ``HOOKGATE_<KEY>`` or ``HOOKGATE_GATEWAY__<KEY>`` for a ``[gateway]`` key (``HOOKGATE_PORT=9000``);
* ``HOOKGATE_<PLUGIN>__<KEY>`` for a plugin's (``HOOKGATE_MEMORY_CACHE__TTL_SECONDS=60``), with
  ``__`` between the levels of a nested table and JSON for lists and tables.

A ``HOOKGATE_`` variable that names no setting is an error (a misspelt variable must not be
silently ignored, as a misspelt key in the file is not). Every problem is raised as one
:class:`ConfigError` naming the file and the section and key, or the variable, and the reason,
which the command line prints before exiting non-zero; credential values are never echoed.
"""
from __future__ import annotations

import json
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .balancing import RouteBalancingConfig
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
    "DEFAULT_SURFACES",
]

DEFAULT_PIPELINE = ("request_log", "memory_cache", "echo")
"""What runs when there is no plugins.toml at all: logging, an in-memory cache, the demo model."""

DEFAULT_SURFACES = ("chat_completions", "anthropic_messages", "responses", "embeddings", "completions")
"""The client-facing APIs served unless ``[gateway] surfaces`` says otherwise."""


ENV_PREFIX = "HOOKGATE_"
NOT_SETTINGS = frozenset({"HOOKGATE_CONFIG"})
"""``HOOKGATE_`` variables the command line reads that are not settings."""


class ConfigError(Exception):
    """A configuration problem, located as precisely as possible: the file, section and key, or
    the environment ``variable`` the bad value came from."""

    def __init__(
        self, source: str, reason: str, *, section: str | None = None, key: str | None = None, variable: str | None = None
    ) -> None:
        self.source, self.section, self.key, self.reason, self.variable = source, section, key, reason, variable
        if variable:
            where = f"environment variable {variable}"
        else:
            where = source
            if section:
                where += f": [{section}]"
            if key:
                where += f" {key}"
        super().__init__(f"{where}: {reason}")


class _FileOnlySettings(BaseSettings):
    """Settings validated from the values the loader gives them, and nothing else.

    The loader (:func:`load_config`) merges the file with the ``HOOKGATE_``-prefixed variables
    itself, so no model, nested ones included, ever reads the environment on its own: a model
    nested in a plugin's config (a named server) cannot pick up an unprefixed ``BASE_URL``.
    """

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


class PluginConfig(_FileOnlySettings):
    """Base of every plugin's config model: subclass it and add typed fields with defaults.

    Unknown keys are errors (``extra="forbid"``), so a typo in plugins.toml fails at start-up
    instead of being silently ignored. Each field can be overridden by the environment variable
    ``HOOKGATE_<PLUGIN>__<FIELD>`` (upper case; ``__`` between nested levels; JSON for lists and
    tables). Use ``Field(description=...)``: descriptions are shown by ``hookgate plugins``.
    """

    model_config = SettingsConfigDict(extra="forbid", env_nested_delimiter="__", validate_default=True)

    enabled: bool = Field(True, description="false switches the plugin off while keeping its place in the pipeline")


class BalancingSettings(BaseModel):
    """The ``[gateway.balancing]`` table: shared or per-instance state of load-balanced routes."""

    model_config = ConfigDict(extra="forbid")

    redis_url: SecretStr | None = Field(
        None,
        description="share in-flight counts and per-deployment limits through this Redis (redis://, rediss://, unix://); unset: per instance",
    )
    key_prefix: str = Field("hookgate:balancing", min_length=1, max_length=128, description="prefix of the Redis keys")
    share_latency: bool = Field(False, description="share latency averages too (one more Redis write per attempt)")
    timeout_seconds: float = Field(
        0.25, gt=0, le=10, description="a slower Redis operation switches this instance to per-instance figures for a while"
    )

    @field_validator("redis_url", mode="before")
    @classmethod
    def _url_is_secret(cls, url: Any) -> Any:
        if isinstance(url, str):
            if not url.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError("must start with redis://, rediss:// (TLS) or unix://")
            return SecretStr(url)
        return url


class GatewaySettings(_FileOnlySettings):
    """The ``[gateway]`` table."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8080, ge=0, le=65535, description="port to listen on (0: any free port)")
    pipeline: list[str] = Field(
        list(DEFAULT_PIPELINE),
        description="the enabled plugins, in order: hooks run in this order; the first call_provider middleware is outermost",
    )
    surfaces: list[str] = Field(
        list(DEFAULT_SURFACES),
        description="the client-facing APIs served (surface plugins: chat_completions, anthropic_messages, responses, embeddings, completions…)",
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="largest request body accepted (413 above)")
    body_read_timeout_seconds: float = Field(
        10.0, gt=0, le=600, description="time a client has to send its request body once its headers arrived (408 after)"
    )
    max_anonymous_body_reads: int = Field(
        64, ge=1, description="request bodies read at once from clients no authenticate hook recognised (503 past it)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="lowest level logged")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="json for machines, console for people; auto picks console on a terminal"
    )
    trace_hooks: bool = Field(False, description="log every hook call with its duration (for plugin authors)")
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="on SIGTERM (or a reload), how long running requests and streams may take to finish"
    )
    readiness_timeout_seconds: float = Field(
        1.0, gt=0, le=30, description="GET /readyz: each plugin's check runs at once with the others, within this"
    )
    redis_max_connections: int = Field(
        64, ge=1, le=10_000, description="per Redis server: operations at once (a burst waits for a slot), shared by every plugin"
    )
    redis_failure_threshold: int = Field(
        3, ge=1, description="consecutive Redis failures that make every Redis-backed plugin stop asking it (fail fast)"
    )
    redis_retry_interval_seconds: float = Field(
        1.0, gt=0, le=300, description="while a Redis server is unavailable, how often it is probed; also the least time between two error logs"
    )
    balancing: BalancingSettings = Field(
        default_factory=lambda: BalancingSettings(), description="where load-balanced routes keep their figures ([gateway.balancing])"
    )
    max_background_tasks: int = Field(
        10_000, ge=1, description="accounting writes after the answer (settling budgets, the ledger…) in flight at once; past it they are dropped and counted"
    )
    background_drain_seconds: float = Field(
        5.0, ge=0, description="on shutdown, how long background writes may take to finish"
    )
    upstream_max_connections: int = Field(
        256, ge=1, le=100_000, description="connections open at once to every upstream together (the http transport's shared pool); a call beyond it waits for one"
    )
    upstream_max_connections_per_host: int = Field(
        0, ge=0, le=100_000, description="connections open at once to one upstream host; 0: only upstream_max_connections bounds them"
    )
    upstream_keepalive_seconds: float = Field(
        30.0, gt=0, le=3600, description="how long an idle upstream connection is kept open for the next call"
    )

    @field_validator("pipeline", "surfaces")
    @classmethod
    def _no_duplicates(cls, names: list[str]) -> list[str]:
        seen = set()
        for name in names:
            if name in seen:
                raise ValueError(f"plugin {name!r} is listed twice")
            seen.add(name)
        return names


class ModelRouteConfig(RouteBalancingConfig):
    """One ``[models.NAME]`` table: where a public model name goes.

    ``NAME`` may end in ``/*`` for a pattern route: ``[models."groq/*"]`` sends
    ``groq/llama-3.1-8b-instant`` to the groq provider as ``llama-3.1-8b-instant``. Instead of
    one ``provider``, a route may list ``deployments`` balanced by its ``strategy``
    (:class:`~hookgate.balancing.RouteBalancingConfig`, docs/load_balancing.md).
    """

    model_config = ConfigDict(extra="forbid")

    provider: str | None = Field(None, description="name of the enabled provider that serves it (unless it lists deployments)")
    model: str | None = Field(None, min_length=1, description="the upstream model name (default: the public name)")
    params: dict[str, Any] = Field(default_factory=dict, description="default request parameters; the client's own values win")
    aliases: list[str] = Field(default_factory=list, description="further public names for this route")
    fallbacks: list[str] = Field(default_factory=list, description="public model names tried in order when this route fails")

    @model_validator(mode="after")
    def _one_way_to_serve(self) -> ModelRouteConfig:
        if self.deployments and self.provider is not None:
            raise ValueError("give either `provider` or `deployments` (each deployment names its provider), not both")
        if not self.deployments and self.provider is None:
            raise ValueError("`provider` is required (or a list of `deployments`)")
        return self


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
    unused_tables: tuple[str, ...] = ()
    """``[plugins.NAME]`` tables of installed plugins that are not in the pipeline (a warning at
    start-up, an error for ``hookgate check-config --strict``)."""
    unused_variables: tuple[str, ...] = ()
    """``HOOKGATE_<PLUGIN>__…`` variables of installed plugins that are not in the pipeline."""
    surfaces: tuple[EnabledPlugin, ...] = ()
    """The surface plugins of ``[gateway] surfaces`` (client-facing APIs), after the pipeline's."""

    @property
    def warnings(self) -> list[str]:
        """What is accepted but probably a mistake, one sentence each."""
        found = [
            f"{self.source}: [plugins.{name}] configures a plugin that is in neither [gateway] pipeline nor surfaces (it has no effect)"
            for name in self.unused_tables
        ]
        found += [f"environment variable {variable}: configures a plugin that is in neither [gateway] pipeline nor surfaces (it has no effect)" for variable in self.unused_variables]
        return found

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

    available = installed_plugins() if available is None else available
    environment = _environment(os.environ, available)

    gateway = _validate(GatewaySettings, gateway_table, source, "gateway", environment.get(None, []))
    if overrides:
        gateway = gateway.model_copy(update={k: v for k, v in overrides.items() if v is not None})

    for name, section in plugins_table.items():
        if name not in available:
            raise ConfigError(source, f"unknown plugin {name!r}; installed: {', '.join(sorted(available))}", section=f"plugins.{name}")
        if not isinstance(section, dict):
            raise ConfigError(source, "must be a table", section=f"plugins.{name}")
    for key in ("pipeline", "surfaces"):
        for name in getattr(gateway, key):
            if name not in available:
                raise ConfigError(source, f"unknown plugin {name!r}; installed: {', '.join(sorted(available))}", section="gateway", key=key)
    for name in gateway.surfaces:
        if name in gateway.pipeline:
            raise ConfigError(source, f"plugin {name!r} is listed in both pipeline and surfaces", section="gateway", key="surfaces")

    enabled: list[EnabledPlugin] = []
    surfaces: list[EnabledPlugin] = []
    disabled: list[str] = []
    for key, names, target in (("pipeline", gateway.pipeline, enabled), ("surfaces", gateway.surfaces, surfaces)):
        for name in names:
            installed = available[name]
            try:
                model = installed.config_model()
            except PluginLoadError as exc:
                raise ConfigError(source, str(exc), section="gateway", key=key) from exc
            variables = environment.get(name, [])
            _check_variables(model, variables)
            config = _validate(model, plugins_table.get(name, {}), source, f"plugins.{name}", variables)
            if config.enabled:
                target.append(EnabledPlugin(name, installed, config))
            else:
                disabled.append(name)
    listed = set(gateway.pipeline) | set(gateway.surfaces)
    unused_tables = tuple(sorted(name for name in plugins_table if name not in listed))
    unused_variables = tuple(
        sorted(variable.name for name, variables in environment.items() if name is not None and name not in listed for variable in variables)
    )
    return GatewayConfig(source, gateway, tuple(enabled), tuple(disabled), models, unused_tables, unused_variables, tuple(surfaces))


def plugin_env_prefix(name: str) -> str:
    """The environment prefix of a plugin's settings, e.g. ``HOOKGATE_MEMORY_CACHE__``."""
    return f"{ENV_PREFIX}{_env_name(name)}__"


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


@dataclass(frozen=True, slots=True)
class _Variable:
    """One ``HOOKGATE_`` variable: its name and the setting path it gives (field, then nested keys)."""

    name: str
    path: tuple[str, ...]


def _environment(env: Mapping[str, str], available: Mapping[str, InstalledPlugin]) -> dict[str | None, list[_Variable]]:
    """Every ``HOOKGATE_`` variable, by whom it configures: ``None`` for ``[gateway]``, else the
    plugin name. A variable that fits no installed plugin and no gateway key is an error naming it."""
    plugins_by_env = {_env_name(name): name for name in available}
    gateway_fields = {_env_name(field): field for field in GatewaySettings.model_fields}
    found: dict[str | None, list[_Variable]] = {}
    for variable in sorted(env):
        upper = variable.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NOT_SETTINGS:
            continue
        parts = upper[len(ENV_PREFIX) :].split("__")
        if len(parts) == 1 or parts[0] == "GATEWAY":
            fields = parts if len(parts) == 1 else parts[1:]
            if not fields or fields[0] not in gateway_fields:
                raise ConfigError(
                    "environment", f"names no [gateway] setting; known: {', '.join(sorted(gateway_fields))}", variable=variable
                )
            found.setdefault(None, []).append(_Variable(variable, (gateway_fields[fields[0]], *(p.lower() for p in fields[1:]))))
            continue
        if parts[0] not in plugins_by_env:
            raise ConfigError(
                "environment",
                f"names no installed plugin ({parts[0].lower()!r}); use HOOKGATE_<PLUGIN>__<KEY> with PLUGIN one of: "
                f"{', '.join(sorted(plugins_by_env))}",
                variable=variable,
            )
        found.setdefault(plugins_by_env[parts[0]], []).append(_Variable(variable, tuple(p.lower() for p in parts[1:] if p)))
    return found


def _check_variables(model: type[BaseModel], variables: list[_Variable]) -> None:
    for variable in variables:
        if not variable.path or variable.path[0] not in model.model_fields:
            raise ConfigError(
                "environment", f"names no setting of this plugin; allowed: {', '.join(sorted(model.model_fields))}", variable=variable.name
            )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {_short(str(exc))}") from None
    except UnicodeDecodeError as exc:
        # Its text would quote the file's bytes, secrets included: say where, never what.
        raise ConfigError(str(path), f"not valid UTF-8 (byte {exc.start} of the file)") from None
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


def _validate(model: type[BaseModel], values: dict[str, Any], source: str, section: str, variables: list[_Variable] | None = None):
    """Validate the file's ``values`` with the environment's ``variables`` over them."""
    merged = dict(values)
    if variables:
        merged = _deep_merge(merged, _from_environment(model, variables, source))
    try:
        return model(**merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or None
        reason = first["msg"]
        if first["type"] == "extra_forbidden":
            reason = f"unknown key; allowed: {', '.join(sorted(model.model_fields))}"
        elif "input" in first and first["type"] != "missing" and not _looks_secret(key or ""):
            reason += f" (got {_short(repr(first['input']))})"
        more = len(exc.errors()) - 1
        if more:
            reason += f" (and {more} more problem{'s' if more > 1 else ''})"
        loc = tuple(str(part).lower() for part in first["loc"])
        blamed = [v for v in variables or () if loc[: len(v.path)] == v.path or v.path[: len(loc)] == loc]
        if blamed:
            raise ConfigError(source, reason, variable=blamed[0].name) from None
        raise ConfigError(source, reason, section=section, key=key) from None


def _from_environment(model: type[BaseModel], variables: list[_Variable], source: str) -> dict[str, Any]:
    """The values ``variables`` give: ``__`` separates nested tables (keys in lower case), and a
    list or table field's value is JSON."""
    values: dict[str, Any] = {}
    for variable in variables:
        raw: Any = os.environ[variable.name]
        field, *nested = variable.path
        if not nested and _is_complex(model.model_fields[field].annotation):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise ConfigError(source, "must be JSON (a list or a table)", variable=variable.name) from None
        target = values
        for part in variable.path[:-1]:
            existing = target.get(part)
            target = existing if isinstance(existing, dict) else target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(source, "conflicts with another variable setting the same table", variable=variable.name)
        target[variable.path[-1]] = raw
    return values


def _is_complex(annotation: Any) -> bool:
    """Whether a field holds a list, set, tuple, table or model (given as JSON in a variable)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_complex(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    if origin is typing.Annotated:
        return _is_complex(typing.get_args(annotation)[0])
    kind = origin or annotation
    return isinstance(kind, type) and (issubclass(kind, (list, set, tuple, dict, frozenset)) or issubclass(kind, BaseModel))


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _short(text: str, limit: int = 200) -> str:
    """Bound an echoed value: a configuration error must stay one readable line."""
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def _looks_secret(key: str) -> bool:
    """Never echo a value that may be a credential back into an error message."""
    return any(word in key.lower() for word in ("key", "secret", "token", "password"))
