"""What the gateway is running, for ``hookgate plugins`` and ``GET /-/plugins``."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from .config import GatewayConfig
from .gateway import Gateway
from .redis import redacted_url
from .registry import InstalledPlugin, PluginLoadError
from .rules import roles_of, rules_of

__all__ = ["pipeline_report", "route_table", "live_route_table"]


def pipeline_report(config: GatewayConfig, gateway: Gateway, installed: dict[str, InstalledPlugin] | None = None) -> dict[str, Any]:
    """The pipeline in order, the hook order, and each plugin's config schema and effective values
    (secrets masked). ``installed`` adds the plugins that are installed but not enabled. A plugin
    enabled in ``[gateway] surfaces`` has no position but ``surface`` true."""
    position = {name: i + 1 for i, name in enumerate(config.pipeline)}
    surfaces = [p.name for p in config.surfaces]
    effective = {p.name: p for p in (*config.plugins, *config.surfaces)}
    catalogue = dict(installed or {})
    for plugin in (*config.plugins, *config.surfaces):
        catalogue.setdefault(plugin.name, plugin.installed)
    instances = gateway.runner.plugins
    plugins = []
    rank = {**{name: 10**5 for name in surfaces}, **position}  # the pipeline in order, then the surfaces, then the rest
    for name, plugin in sorted(catalogue.items(), key=lambda item: (rank.get(item[0], 10**6), item[0])):
        try:
            declared = instances.get(name) or plugin.load()
        except PluginLoadError as exc:
            # Installed but not enabled, and broken: listed with its reason, not a traceback.
            plugins.append(_broken(name, plugin, exc))
            continue
        plugins.append(
            {
                "name": name,
                "distribution": plugin.distribution,
                "version": plugin.version,
                "entry_point": plugin.reference,
                "enabled": name in position,
                "position": position.get(name),
                "surface": name in surfaces,
                "description": plugin.description,
                "roles": list(roles_of(declared)),
                "rules": [rule.describe() for rule in rules_of(declared)],
                "config_schema": plugin.config_model().model_json_schema(),
                # pydantic dumps SecretStr fields as '**********'; passwords inside URLs are masked here
                "config": _masked(json.loads(effective[name].config.model_dump_json())) if name in effective else None,
            }
        )
    return {
        "config": config.source,
        "pipeline": list(config.pipeline),
        "surfaces": surfaces,
        "disabled": list(config.disabled),
        "hooks": gateway.runner.order(),
        "models": sorted(model for model, _ in gateway.model_ids()),
        "routes": route_table(gateway),
        "plugins": plugins,
    }


def route_table(gateway: Gateway) -> list[dict[str, Any]]:
    """The load-balanced routes: strategy, where their figures live, and each deployment's
    configuration (no key, no base URL). ``live`` is None here: see :func:`live_route_table`."""
    table = []
    for route in gateway.routes.balanced:
        balancer = route.balancer
        assert balancer is not None
        table.append({
            "model": route.model,
            "strategy": balancer.strategy.name,
            "state": "redis" if gateway.config.gateway.balancing.redis_url is not None else "local",
            "deployments": [
                {
                    "name": d.name, "provider": d.provider, "model": d.upstream_model, "tier": d.tier, "weight": d.weight,
                    "requests_per_minute": d.requests_per_minute, "tokens_per_minute": d.tokens_per_minute,
                    "max_in_flight": d.max_in_flight, "own_endpoint": d.base_url is not None or d.api_key_env is not None,
                }
                for d in balancer.deployments
            ],
            "live": None,
        })
    return table


async def live_route_table(gateway: Gateway, timeout: float = 1.0) -> list[dict[str, Any]]:
    """:func:`route_table` with each deployment's live figures (in flight, requests and tokens in
    the window, latency averages, why it would refuse now), read from the balancing state: this
    instance's, or the shared one in Redis. A state that does not answer within ``timeout``
    leaves ``live`` None."""
    table = route_table(gateway)
    for entry, route in zip(table, gateway.routes.balanced):
        try:
            async with asyncio.timeout(timeout):
                statuses = await route.balancer.status()  # type: ignore[union-attr]
        except (TimeoutError, OSError):
            continue
        entry["live"] = [status.as_dict() for status in statuses]
    return table


_SECRET_FIELD_WORDS = ("api_key", "apikey", "password", "secret", "token", "authorization", "credential")
_MASK = "**********"


def _secret_field(name: str) -> bool:
    """A field whose name says it holds a credential (``api_key``, ``headers.Authorization``…);
    ``api_key_env`` names a variable, and ``*_tokens`` fields are counts."""
    lowered = name.lower()
    if lowered.endswith(("_env", "tokens", "_per_minute")):
        return False
    return any(word in lowered for word in _SECRET_FIELD_WORDS)


def _broken(name: str, plugin: InstalledPlugin, error: PluginLoadError) -> dict[str, Any]:
    """The entry of an installed plugin that cannot be imported: enabling it would fail the same way."""
    return {
        "name": name,
        "distribution": plugin.distribution,
        "version": plugin.version,
        "entry_point": plugin.reference,
        "enabled": False,
        "position": None,
        "surface": False,
        "description": f"(cannot be loaded) {error}",
        "error": str(error),
        "roles": [],
        "rules": [],
        "config_schema": {},
        "config": None,
    }


def _masked(value: Any) -> Any:
    """A config dump with the password of every URL masked (``http://user:***@host``) and every
    string under a credential-named field masked whole (a plugin that forgot ``SecretStr``)."""
    if isinstance(value, dict):
        return {key: _MASK if isinstance(item, str) and item and _secret_field(str(key)) else _masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    if isinstance(value, str) and "://" in value and "@" in value:
        try:
            return redacted_url(value)
        except ValueError:
            return _MASK
    return value
