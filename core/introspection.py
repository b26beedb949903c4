"""What the gateway is running, for ``hookgate plugins`` and ``GET /-/plugins``."""
from __future__ import annotations

import json
from typing import Any

from .config import GatewayConfig
from .gateway import Gateway
from .registry import InstalledPlugin

__all__ = ["pipeline_report"]


def pipeline_report(config: GatewayConfig, gateway: Gateway, installed: dict[str, InstalledPlugin] | None = None) -> dict[str, Any]:
    """The pipeline in order, the hook order, and each plugin's config schema and effective values
    (secrets masked). ``installed`` adds the plugins that are installed but not enabled."""
    position = {name: i + 1 for i, name in enumerate(config.pipeline)}
    effective = {p.name: p for p in config.plugins}
    catalogue = dict(installed or {})
    for plugin in config.plugins:
        catalogue.setdefault(plugin.name, plugin.installed)
    plugins = []
    for name, plugin in sorted(catalogue.items(), key=lambda item: (position.get(item[0], 10**6), item[0])):
        plugins.append(
            {
                "name": name,
                "distribution": plugin.distribution,
                "version": plugin.version,
                "entry_point": plugin.reference,
                "enabled": name in position,
                "position": position.get(name),
                "description": plugin.description,
                "config_schema": plugin.config_model().model_json_schema(),
                # pydantic dumps SecretStr fields as '**********'
                "config": json.loads(effective[name].config.model_dump_json()) if name in effective else None,
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
