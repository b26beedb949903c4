"""Live reload: the pipeline requests use now, and replacing it without dropping a request.

A reload builds and starts a new :class:`Gateway` from the configuration file; only when that
worked does it become current. Requests already running finish on the pipeline they started
with, which is shut down once its last request ends (or after the grace period). An invalid file,
a plugin whose start-up fails, or a new listen address (``[gateway] host``/``port``: the socket is
bound once, a change needs a restart) leaves the current pipeline in place and says why in the log.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from time import monotonic
from typing import Any, Callable

import structlog
from aiohttp import web

from .config import ConfigError, GatewayConfig, load_config
from .gateway import Gateway
from .registry import PluginLoadError
from .runner import PipelineError

__all__ = ["Pipelines", "ReloadFailed", "PIPELINES"]

log = structlog.get_logger("hookgate.reload")


class ReloadFailed(Exception):
    """The new configuration was not applied; the message says why."""


class Pipelines:
    """Holds the current :class:`Gateway` of an app and swaps it on reload."""

    def __init__(self, gateway: Gateway, *, load: Callable[[], GatewayConfig] | None = None, grace_seconds: float = 30.0) -> None:
        self.current = gateway
        self._load = load
        self.grace_seconds = grace_seconds
        self._lock = asyncio.Lock()
        self._draining: set[asyncio.Task[None]] = set()

    @classmethod
    def from_file(cls, gateway: Gateway, path: str | Path | None, overrides: dict[str, Any] | None = None, **kwargs: Any) -> Pipelines:
        """Reload from ``path`` with the same command-line ``overrides`` as at start."""
        return cls(gateway, load=lambda: load_config(path, overrides=overrides), **kwargs)

    async def reload(self, app: web.Application, config: GatewayConfig | None = None) -> Gateway:
        """Build, start and switch to a new pipeline; raise :class:`ReloadFailed` (keeping the
        current one) when the configuration is invalid or a plugin fails to start."""
        async with self._lock:
            try:
                if config is None:
                    if self._load is None:
                        raise ReloadFailed("this app was not started from a configuration file")
                    config = self._load()
                _same_address(self.current.config, config)
                gateway = Gateway(config)
                gateway.add_routes(app)
            except (ConfigError, PipelineError, PluginLoadError) as exc:
                log.error("reload_rejected", reason=str(exc))
                raise ReloadFailed(str(exc)) from None
            try:
                await gateway.start(app)
            except Exception as exc:
                log.error("reload_rejected", reason=f"a plugin failed to start: {type(exc).__name__}: {exc}")
                raise ReloadFailed(f"a plugin failed to start: {type(exc).__name__}") from None
            old, self.current = self.current, gateway
            task = asyncio.create_task(self._retire(app, old))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
            log.info("reloaded", pipeline=list(config.pipeline), config=config.source)
            return gateway

    async def _retire(self, app: web.Application, old: Gateway) -> None:
        """Shut a replaced pipeline down once its last request has finished."""
        give_up = monotonic() + self.grace_seconds
        while old.in_flight and monotonic() < give_up:
            await asyncio.sleep(0.05)
        if old.in_flight:
            log.warning("retired_pipeline_still_busy", in_flight=old.in_flight)
        await old.stop(app)

    async def close(self, app: web.Application) -> None:
        """Stop the current pipeline, after any being retired (by then the server has let its
        requests finish, so they stop at once)."""
        await asyncio.gather(*list(self._draining), return_exceptions=True)
        await self.current.stop(app)


def _same_address(running: GatewayConfig, new: GatewayConfig) -> None:
    """Refuse a configuration that moves the listen address: the socket was bound at start."""
    old, wanted = (running.gateway.host, running.gateway.port), (new.gateway.host, new.gateway.port)
    if old != wanted:
        key = "host" if old[0] != wanted[0] else "port"
        raise ConfigError(
            new.source,
            f"the server listens on {old[0]}:{old[1]}; a reload cannot move it to {wanted[0]}:{wanted[1]} (restart the server)",
            section="gateway",
            key=key,
        )


PIPELINES = web.AppKey("hookgate_pipelines", Pipelines)
"""The app's current pipeline (``.current``), replaced by live reload."""
