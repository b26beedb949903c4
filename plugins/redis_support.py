"""What the Redis-backed plugins share: the ``redis_url`` setting, a client that fails fast, and
a log that reports a recurring Redis problem once per interval.

Every plugin that keeps shared state in Redis (limits, budgets, keys, the usage ledger, the
distributed concurrency limit, the response cache) reads its server from ``redis_url``, else
``$REDIS_URL``. The URL may carry a password, so it is a secret: masked in ``hookgate plugins``,
``GET /-/plugins`` and configuration errors.
"""
from __future__ import annotations

import os
from time import monotonic
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from hookgate import PluginConfig, Readiness, hookimpl

__all__ = ["RedisURLConfig", "RedisBacked", "open_redis", "IntervalLog", "REDIS_SCHEMES"]

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


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


def open_redis(url: str, timeout_seconds: float, max_connections: int = 32) -> Any:
    """A ``redis.asyncio`` client that fails fast: every call is bounded by ``timeout_seconds``
    and never retried by the client, so each plugin decides what Redis trouble means.

    Its pool holds at most ``max_connections``; a burst of requests waits (within the timeout)
    for one of them rather than opening a connection each: connecting dozens at once from a busy
    event loop is what made calls time out under load, far more than Redis itself.
    """
    import redis.asyncio as aioredis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_seconds,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    return aioredis.Redis.from_pool(pool)


class IntervalLog:
    """Logs a recurring problem (Redis unreachable…) at most once per interval, with how many
    times it happened in between, so an outage cannot flood the log."""

    def __init__(self, logger: Any, event: str, interval_seconds: float = 30.0) -> None:
        self.logger, self.event, self.interval = logger, event, interval_seconds
        self._last = float("-inf")
        self._suppressed = 0

    def warning(self, **fields: Any) -> None:
        now = monotonic()
        if now - self._last < self.interval:
            self._suppressed += 1
            return
        self.logger.warning(self.event, suppressed=self._suppressed, **fields)
        self._last, self._suppressed = now, 0


class RedisBacked:
    """Base of a plugin whose shared state lives in Redis when one is configured, else in the
    process: opens the client at start-up, closes it at shutdown, and reports it to ``/readyz``.

    Subclasses set ``Config`` (with ``redis_timeout_seconds``, optionally
    ``redis_max_connections``), register their Lua scripts in :meth:`redis_opened`, and say what
    running without Redis means in :attr:`without_redis` and :meth:`redis_down`.
    """

    without_redis: str | None = "no Redis: state is per instance"
    """``/readyz`` detail when no Redis is configured (None: report nothing)."""
    default_redis_url: str | None = None
    """Used when neither ``redis_url`` nor ``$REDIS_URL`` is set (None: run without Redis)."""

    config: Any
    redis: Any = None

    def use_redis(self) -> bool:
        """Whether to connect at all (e.g. only in a distributed mode)."""
        return True

    def redis_opened(self, client: Any) -> None:
        """Register scripts on the new client."""

    def redis_down(self, error: BaseException) -> Readiness:
        """``/readyz`` while Redis does not answer."""
        return Readiness("degraded", f"Redis unreachable ({type(error).__name__})")

    @hookimpl
    async def startup(self) -> None:
        url = self.config.resolved_redis_url(default=self.default_redis_url) if self.use_redis() else None
        if url is not None:
            max_connections = getattr(self.config, "redis_max_connections", 32)
            self.redis = open_redis(url, self.config.redis_timeout_seconds, max_connections)
            self.redis_opened(self.redis)

    @hookimpl
    async def shutdown(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    @hookimpl
    async def check_ready(self) -> Readiness | None:
        if self.redis is None:
            return Readiness("ok", self.without_redis) if self.without_redis else None
        try:
            await self.redis.ping()
        except Exception as exc:
            return self.redis_down(exc)
        return Readiness("ok")
