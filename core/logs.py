"""Logging: the structlog set-up, and a log for recurring problems that cannot flood.

:func:`configure_logging` is called once by the command line, not by ``create_app``: logging is
the process's business, and tests or embedding applications keep their own. :class:`IntervalLog`
is for plugins: a problem that may recur on every request (Redis unreachable, a full queue) is
logged at most once per interval, with how many times it happened in between.
"""
from __future__ import annotations

import logging
import sys
from time import monotonic
from typing import Any, Literal

import orjson
import structlog

__all__ = ["configure_logging", "redact_secrets", "IntervalLog"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_SECRET_WORDS = ("authorization", "api_key", "apikey", "secret", "password", "token")


def redact_secrets(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Mask any field whose name says it holds a credential: a last line of defence."""
    for key in event:
        lowered = key.lower()
        if any(word in lowered for word in _SECRET_WORDS) and not lowered.endswith("tokens"):
            event[key] = "***"
    return event


def configure_logging(level: str = "info", fmt: Literal["auto", "json", "console"] = "auto") -> None:
    """Route structlog (and the stdlib loggers of aiohttp and the SDKs) to stderr."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    numeric = _LEVELS[level]
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    if use_console:
        processors = [*shared, structlog.dev.ConsoleRenderer()]
        factory: Any = structlog.PrintLoggerFactory(sys.stderr)
    else:
        processors = [*shared, structlog.processors.format_exc_info, structlog.processors.JSONRenderer(serializer=orjson.dumps)]
        factory = structlog.BytesLoggerFactory(sys.stderr.buffer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


class IntervalLog:
    """Logs a recurring problem at most once per ``interval_seconds``, with how many times it
    happened in between (``suppressed``), so an outage cannot flood the log."""

    def __init__(self, logger: Any, event: str, interval_seconds: float = 30.0) -> None:
        self.logger, self.event, self.interval = logger, event, interval_seconds
        self._last = float("-inf")
        self._suppressed = 0

    def warning(self, **fields: Any) -> None:
        self._emit(self.logger.warning, fields)

    def error(self, **fields: Any) -> None:
        self._emit(self.logger.error, fields)

    def _emit(self, method: Any, fields: dict[str, Any]) -> None:
        now = monotonic()
        if now - self._last < self.interval:
            self._suppressed += 1
            return
        method(self.event, suppressed=self._suppressed, **fields)
        self._last, self._suppressed = now, 0
