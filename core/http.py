"""The app's HTTP client for upstream calls: one ``aiohttp.ClientSession``, one keep-alive pool.

Every provider that talks HTTP itself (the ``http`` transport of :mod:`hookgate.provider_kit`)
asks the app's :class:`HTTPService` for its session instead of opening one of its own, so all
upstream calls of a process share one connection pool, sized once in ``[gateway]``:

* ``upstream_max_connections``: connections open at once to every upstream together; a call
  beyond it waits for one to free up (inside its attempt's time, so the timeout plugin bounds it);
* ``upstream_max_connections_per_host``: the same per upstream host (0: only the total bound);
* ``upstream_keepalive_seconds``: how long an idle connection is kept for the next call.

The session is made on first use, by the first provider that needs it, and closed with the app
after every plugin has shut down (so a live reload, whose new providers start before the old
ones stop, keeps using the same pool). :class:`hookgate.provider_kit.SDKProviderPlugin` does this
for its http transports; a provider of its own asks the same way::

    from hookgate.http import HTTPService, http_service

    @hookimpl
    async def startup(self, app):
        service = http_service(app)
        if service is None:  # an app built without one: a pool of this plugin's own
            service = self.own_pool = HTTPService()
        self.session = service.session()

Proxies: ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` from the environment are honoured, as the
official SDKs do, but read once per upstream (:func:`env_proxy`, when a provider starts) rather
than on every call, which aiohttp's ``trust_env`` does at a cost of some 800 µs of CPU per call
(measured with bench/sdk_call_cost.py). Nothing here retries: the retry plugin is the one owner
of retries.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, AsyncIterator
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from .config import GatewaySettings

__all__ = ["HTTPService", "HTTP_SERVICE", "http_service", "install_http_service", "env_proxy"]


class HTTPService:
    """One keep-alive pool for every upstream call of an app.

    :param max_connections: connections open at once, every host together.
    :param max_connections_per_host: connections open at once to one host; 0 for no such bound.
    :param keepalive_seconds: how long an idle connection stays open for reuse.
    """

    def __init__(self, *, max_connections: int = 256, max_connections_per_host: int = 0, keepalive_seconds: float = 30.0) -> None:
        if max_connections < 1 or max_connections_per_host < 0 or keepalive_seconds <= 0:
            raise ValueError("max_connections must be >= 1, max_connections_per_host >= 0 and keepalive_seconds > 0")
        self.max_connections = max_connections
        self.max_connections_per_host = max_connections_per_host
        self.keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> HTTPService:
        """The service sized by ``[gateway]``'s ``upstream_*`` settings."""
        return cls(
            max_connections=settings.upstream_max_connections,
            max_connections_per_host=settings.upstream_max_connections_per_host,
            keepalive_seconds=settings.upstream_keepalive_seconds,
        )

    @property
    def opened(self) -> bool:
        """Whether a provider has asked for the session yet (and it is not closed)."""
        return self._session is not None and not self._session.closed

    def session(self) -> aiohttp.ClientSession:
        """The shared session, made on first call (from a coroutine: it binds the running loop).

        Raises :class:`RuntimeError` once the service is closed: the app is stopping.
        """
        if self._session is None:
            if self._closed:
                raise RuntimeError("the app's HTTP service is closed")
            connector = aiohttp.TCPConnector(
                limit=self.max_connections,
                limit_per_host=self.max_connections_per_host,
                keepalive_timeout=self.keepalive_seconds,
            )
            # Per-call timeouts come from each provider (and the timeout plugin's cancellation);
            # the session's own 5-minute total would cut long streams.
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                trust_env=False,  # proxies come from env_proxy(), once per upstream
                raise_for_status=False,
                auto_decompress=True,
            )
        return self._session

    async def close(self) -> None:
        """Close the pool; calls still running fail with a connection error."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """An ``app.cleanup_ctx`` entry: nothing to open (the session is made on first use),
        the pool closed when the app stops."""
        try:
            yield
        finally:
            await self.close()


HTTP_SERVICE = web.AppKey("hookgate_http_service", HTTPService)
"""Where an app keeps its :class:`HTTPService`."""


def install_http_service(app: web.Application, settings: GatewaySettings) -> HTTPService:
    """Give ``app`` its HTTP service, closed when the app stops.

    Call it while building the app and before the plugins' own ``cleanup_ctx`` entry, so that
    the pool outlives every provider's shutdown (cleanup contexts end in reverse order).
    """
    service = HTTPService.from_settings(settings)
    app[HTTP_SERVICE] = service
    app.cleanup_ctx.append(service.lifecycle)
    return service


def http_service(app: web.Application) -> HTTPService | None:
    """The app's HTTP service, or None for an app built without one (a provider then keeps a
    pool of its own, closed at its shutdown)."""
    return app.get(HTTP_SERVICE)


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY`` for https, ``HTTP_PROXY``
    for http; None when there is none or ``NO_PROXY`` covers its host): pass it as each call's
    ``proxy``."""
    parts = urlsplit(url)
    proxy = getproxies().get(parts.scheme)
    if not proxy or (parts.hostname and proxy_bypass(parts.hostname)):
        return None
    return proxy
