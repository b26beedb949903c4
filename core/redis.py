"""The app's Redis service: one client per server, one fail-fast guard, one readiness report.

Every plugin that keeps shared state in Redis (the response cache, rate limits, budgets, keys,
the usage ledger, the distributed concurrency limit…) asks the app's :class:`RedisService` for
its server instead of opening a client of its own::

    from hookgate.redis import RedisURLConfig, RedisUnavailable, redis_service

    class MyConfig(RedisURLConfig):
        redis_timeout_seconds: float = 0.5

    @hookimpl
    async def startup(self, app):
        self.redis = await redis_service(app).connect(self.config.resolved_redis_url())

    async def count(self, key):
        try:
            return await self.redis.run(lambda: self.redis.client.incr(key), timeout=self.config.redis_timeout_seconds)
        except RedisUnavailable:
            ...  # this plugin's documented fail-open or fail-closed path

Plugins naming the same server share one connection pool and one **guard**:

* every operation has the caller's deadline, and at most ``[gateway] redis_max_connections`` run
  at once (a burst waits for a slot within its deadline instead of opening connections);
* ``[gateway] redis_failure_threshold`` consecutive connection errors or timeouts open the
  circuit: from then on every operation of every plugin fails at once with
  :class:`RedisUnavailable` (milliseconds, not a timeout per plugin per request), and a background
  probe pings the server every ``[gateway] redis_retry_interval_seconds`` until it answers, which
  closes the circuit. Error replies (``OOM``, ``READONLY``, a script error) fail the operation but
  do not open the circuit: the server is up.

``GET /readyz`` reports each server once (``redis``), pinging it only when it has been idle, and
every check runs concurrently under a timeout, so a hung Redis cannot make readiness slow.
Problems are logged at most once per interval. URLs are secrets (they may carry a password):
only their redacted form (:func:`redacted_url`) ever reaches a log or a page.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import urlsplit, urlunsplit

import structlog
from aiohttp import web
from pydantic import Field, SecretStr, field_validator, model_validator

from .config import PluginConfig
from .health import Readiness
from .logs import IntervalLog
from .tasks import stop_task

__all__ = [
    "RedisURLConfig",
    "RedisService",
    "SharedRedis",
    "RedisUnavailable",
    "REDIS_SERVICE",
    "REDIS_SCHEMES",
    "redis_service",
    "redacted_url",
]

log = structlog.get_logger("hookgate.redis")

T = TypeVar("T")

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_CONNECT_BACKSTOP_SECONDS = 30.0
"""The shared pool's connect timeout. Every operation has its caller's (much shorter) deadline;
this only ends a connection attempt that a cancelled operation could not."""


class RedisUnavailable(Exception):
    """Redis was not asked (its circuit is open) or did not answer in time; the caller takes its
    documented fail-open or fail-closed path. The message never contains the URL."""


class RedisURLConfig(PluginConfig):
    """Base of the config of a plugin that uses Redis: adds ``redis_url``."""

    redis_url: SecretStr | None = Field(
        None,
        description="redis://[user:password@]host:port/db, rediss:// for TLS, or unix:///path/redis.sock; unset: $REDIS_URL",
    )

    @model_validator(mode="before")
    @classmethod
    def _url_is_secret_from_the_start(cls, values: Any) -> Any:
        # Wrapped before validation, a bad value is reported as SecretStr('**********') rather
        # than echoed by the configuration error.
        if isinstance(values, dict) and isinstance(values.get("redis_url"), str):
            values = {**values, "redis_url": SecretStr(values["redis_url"])}
        return values

    @field_validator("redis_url")
    @classmethod
    def _known_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not url.get_secret_value().startswith(REDIS_SCHEMES):
            raise ValueError("must start with redis://, rediss:// (TLS) or unix://")
        return url

    def resolved_redis_url(self, default: str | None = None) -> str | None:
        """``redis_url``, else ``$REDIS_URL``, else ``default``."""
        if self.redis_url is not None:
            return self.redis_url.get_secret_value()
        return os.environ.get("REDIS_URL") or default


@dataclass(frozen=True, slots=True)
class _Identity:
    """What makes two plugins' Redis the same client."""

    url: str
    cluster: bool
    tls_ca_file: str | None
    tls_cert_file: str | None
    tls_key_file: str | None


class SharedRedis:
    """One Redis server as every plugin of the app sees it: the client and its guard.

    Use :attr:`client` to build commands, pipelines and scripts (``client.register_script``), and
    run each through :meth:`run`, never directly: the guard is what keeps a hung Redis from
    slowing every request.
    """

    def __init__(self, identity: _Identity, client: Any, *, max_operations: int, failure_threshold: int, retry_interval: float) -> None:
        self.where = redacted_url(identity.url)
        """The server, for logs and pages (password masked)."""
        self.client = client
        self._identity = identity
        self._slots = asyncio.Semaphore(max_operations)
        from redis.exceptions import ResponseError

        self._refused = ResponseError  # imported once, not on every operation
        self._threshold = failure_threshold
        self._interval = retry_interval
        self._failures = 0
        self._opened_at: float | None = None
        self._last_error = ""
        self._last_success = 0.0
        self._probe: asyncio.Task[None] | None = None
        self._errors = IntervalLog(log, "redis_error", retry_interval)

    @property
    def available(self) -> bool:
        """False while the circuit is open: every operation fails at once."""
        return self._opened_at is None

    @property
    def down_seconds(self) -> float:
        """How long the circuit has been open (0 while closed)."""
        return 0.0 if self._opened_at is None else time.monotonic() - self._opened_at

    @property
    def last_error(self) -> str:
        return self._last_error

    async def run(self, operation: Callable[[], Awaitable[T]], *, timeout: float) -> T:
        """Await ``operation()`` within ``timeout`` seconds through the guard.

        Raises :class:`RedisUnavailable` at once while the circuit is open, and when the operation
        fails or times out (which counts towards opening it).
        """
        if self._opened_at is not None:
            raise RedisUnavailable(f"Redis is unavailable ({self._last_error})")
        try:
            async with asyncio.timeout(timeout), self._slots:
                result = await operation()
        except self._refused as exc:
            self._last_error = _describe(exc)
            self._errors.warning(redis=self.where, error=self._last_error)
            raise RedisUnavailable(f"Redis refused the operation ({type(exc).__name__})") from exc
        except Exception as exc:  # connection errors, timeouts, and anything redis-py may raise
            self._failed(exc)
            raise RedisUnavailable(f"Redis did not answer ({type(exc).__name__})") from exc
        self._failures = 0
        self._last_success = time.monotonic()
        return result

    def readiness(self, *, detail_when_down: str, fail_closed: bool = False) -> Readiness:
        """A plugin's readiness from the guard's state (no ping): ``ok``, or ``degraded`` (or
        ``unavailable`` when the plugin fails closed) with ``detail_when_down``."""
        if self._opened_at is None and not self._failures:
            return Readiness("ok", f"Redis at {self.where}")
        status = "unavailable" if fail_closed else "degraded"
        return Readiness(status, f"Redis at {self.where} unavailable ({self._last_error}); {detail_when_down}")

    async def check(self, timeout: float) -> Readiness:
        """The server's own readiness: one ping within ``timeout`` (a failure counts like any
        other) while the circuit is closed, else the guard's state."""
        if self._opened_at is None:
            try:
                await self.run(self.client.ping, timeout=timeout)
            except RedisUnavailable:
                pass
        if self._opened_at is not None:
            return Readiness(
                "degraded",
                f"Redis at {self.where} unavailable for {self.down_seconds:.0f} s ({self._last_error}); "
                f"retrying every {self._interval:g} s",
            )
        if self._failures:
            return Readiness("degraded", f"the last operation on Redis at {self.where} failed ({self._last_error})")
        return Readiness("ok", f"Redis at {self.where}")

    async def _connect(self, timeout: float) -> None:
        """Ping once when first asked for; an unreachable server opens the circuit instead of
        failing start-up."""
        try:
            async with asyncio.timeout(timeout):
                await self.client.ping()
        except Exception as exc:
            self._open(exc, at_startup=True)
        else:
            self._last_success = time.monotonic()
            log.info("redis_connected", redis=self.where)

    def _failed(self, exc: BaseException) -> None:
        self._last_error = _describe(exc)
        self._failures += 1
        if self._failures >= self._threshold:
            self._open(exc)
        else:
            self._errors.warning(redis=self.where, error=self._last_error)

    def _open(self, exc: BaseException, *, at_startup: bool = False) -> None:
        self._last_error = _describe(exc)
        if self._opened_at is not None:
            return
        self._opened_at = time.monotonic()
        log.warning(
            "redis_unavailable",
            redis=self.where,
            error=self._last_error,
            at_startup=at_startup,
            retry_in_s=self._interval,
            note="every Redis-backed plugin takes its fail-open or fail-closed path until Redis is back",
        )
        self._probe = asyncio.get_running_loop().create_task(self._probe_until_back(), name=f"redis-probe {self.where}")

    async def _probe_until_back(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                async with asyncio.timeout(min(self._interval, 5.0)):
                    await self.client.ping()
            except Exception as exc:
                self._last_error = _describe(exc)
                continue
            break
        assert self._opened_at is not None
        log.info("redis_recovered", redis=self.where, down_s=round(time.monotonic() - self._opened_at, 1))
        self._opened_at, self._failures, self._probe = None, 0, None
        self._last_success = time.monotonic()

    async def _close(self) -> None:
        await stop_task(self._probe)
        close = getattr(self.client, "aclose", None) or self.client.close
        try:
            await close()
            pool = getattr(self.client, "connection_pool", None)
            if pool is not None:
                await pool.disconnect()
        except Exception as exc:  # closing a client whose server is gone
            log.debug("redis_close_failed", redis=self.where, error=type(exc).__name__)


class RedisService:
    """The Redis servers of one app, by identity (URL, cluster mode, TLS files).

    :param max_operations: operations at once per server (and the pool's size).
    :param failure_threshold: consecutive failures that open a server's circuit.
    :param retry_interval: seconds between probes while a circuit is open.
    """

    def __init__(self, *, max_operations: int = 64, failure_threshold: int = 3, retry_interval: float = 1.0, connect_timeout: float = 1.0) -> None:
        self.max_operations = max_operations
        self.failure_threshold = failure_threshold
        self.retry_interval = retry_interval
        self.connect_timeout = connect_timeout
        self._servers: dict[_Identity, SharedRedis] = {}
        self._connecting: dict[_Identity, asyncio.Future[SharedRedis]] = {}

    @property
    def servers(self) -> list[SharedRedis]:
        return list(self._servers.values())

    async def connect(
        self,
        url: str,
        *,
        cluster: bool = False,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
    ) -> SharedRedis:
        """The shared client of this server, created (and pinged once) on first use."""
        if not url.startswith(REDIS_SCHEMES):
            raise ValueError("a Redis URL must start with redis://, rediss:// or unix://")
        identity = _Identity(url, cluster, tls_ca_file, tls_cert_file, tls_key_file)
        found = self._servers.get(identity)
        if found is not None:
            return found
        pending = self._connecting.get(identity)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[SharedRedis] = asyncio.get_running_loop().create_future()
        self._connecting[identity] = future
        try:
            shared = SharedRedis(
                identity,
                _open_client(identity, self.max_operations),
                max_operations=self.max_operations,
                failure_threshold=self.failure_threshold,
                retry_interval=self.retry_interval,
            )
            await shared._connect(self.connect_timeout)
            self._servers[identity] = shared
            future.set_result(shared)
            return shared
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a failure nobody else awaited is not "never retrieved"
            raise
        finally:
            del self._connecting[identity]

    async def readiness(self, timeout: float) -> dict[str, Readiness]:
        """Each server's readiness, all checked at once."""
        servers = list(self._servers.values())
        results = await asyncio.gather(*(server.check(timeout) for server in servers), return_exceptions=True)
        report: dict[str, Readiness] = {}
        for server, result in zip(servers, results):
            if isinstance(result, BaseException):
                result = Readiness("degraded", f"Redis at {server.where}: readiness check failed ({type(result).__name__})")
            report[server.where] = result
        return report

    async def close(self) -> None:
        servers, self._servers = list(self._servers.values()), {}
        await asyncio.gather(*(server._close() for server in servers), return_exceptions=True)


REDIS_SERVICE = web.AppKey("hookgate_redis_service", RedisService)
"""Where an app keeps its :class:`RedisService`."""


def redis_service(app: web.Application) -> RedisService:
    """The app's Redis service (created by ``create_app``, closed when the app stops)."""
    return app[REDIS_SERVICE]


def redacted_url(url: str) -> str:
    """The URL for logs and pages: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else "***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _open_client(identity: _Identity, max_operations: int) -> Any:
    """A client whose every timeout and retry is ours: redis-py's defaults differ between
    versions, and either would turn a Redis outage into slow requests.

    One immediate retry on a *connection* error, none on a timeout: a pooled connection that died
    with a restarted Redis fails once and reconnects at once, while a Redis that is down refuses
    the retry at once and a Redis that hangs is bounded by the caller's deadline.
    """
    from redis import asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    options: dict[str, Any] = {
        # No socket timeout of redis-py's own: every operation runs under its caller's deadline
        # (SharedRedis.run), and a cancelled command closes its connection (redis-py disconnects
        # on any exception mid-send or mid-read). With one, redis-py wraps each write in
        # asyncio.wait_for, a task per command on Python 3.11, and each read in a timeout: 63.5
        # against 43.0 µs of client CPU per GET at 32 at once (bench/redis_command_cost.py;
        # docs/performance.md, "The Redis hit").
        "socket_timeout": None,
        "socket_connect_timeout": _CONNECT_BACKSTOP_SECONDS,
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        "retry_on_error": [],
        "health_check_interval": 0,
        "max_connections": max_operations + 2,  # + the start-up and probe pings, outside the guard
    }
    if identity.url.startswith("rediss://"):
        tls = {"ssl_ca_certs": identity.tls_ca_file, "ssl_certfile": identity.tls_cert_file, "ssl_keyfile": identity.tls_key_file}
        options.update({name: value for name, value in tls.items() if value is not None})
    if identity.cluster:
        return RedisCluster.from_url(identity.url, **options)
    # The guard lets at most max_operations run at once, so this pool never runs out; it is
    # cheaper per command than redis-py's BlockingConnectionPool (measured ~65 against ~80 µs
    # CPU per GET).
    return aioredis.Redis(connection_pool=aioredis.ConnectionPool.from_url(identity.url, **options))


def _describe(exc: BaseException) -> str:
    text = str(exc) or "no detail"
    return f"{type(exc).__name__}: {text[:200]}"
