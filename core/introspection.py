"""What the gateway is running, for ``hookgate plugins`` and ``GET /-/plugins``."""
from __future__ import annotations

import json
from typing import Any

from .config import GatewayConfig
from .gateway import Gateway
from .redis import redacted_url
from .registry import InstalledPlugin, PluginLoadError
from .rules import roles_of, rules_of

__all__ = ["pipeline_report"]


def pipeline_report(config: GatewayConfig, gateway: Gateway, installed: dict[str, InstalledPlugin] | None = None) -> dict[str, Any]:
    """The pipeline in order, the hook order, and each plugin's config schema and effective values
    (secrets masked). ``installed`` adds the plugins that are installed but not enabled."""
    position = {name: i + 1 for i, name in enumerate(config.pipeline)}
    effective = {p.name: p for p in config.plugins}
    catalogue = dict(installed or {})
    for plugin in config.plugins:
        catalogue.setdefault(plugin.name, plugin.installed)
    instances = gateway.runner.plugins
    plugins = []
    for name, plugin in sorted(catalogue.items(), key=lambda item: (position.get(item[0], 10**6), item[0])):
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
        "disabled": list(config.disabled),
        "hooks": gateway.runner.order(),
        "models": sorted(model for model, _ in gateway.model_ids()),
        "plugins": plugins,
    }


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
