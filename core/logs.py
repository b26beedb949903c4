"""Logging: the structlog set-up, and a log for recurring problems that cannot flood.

:func:`configure_logging` is called once by the command line, not by ``create_app``: logging is
the process's business, and tests or embedding applications keep their own. :class:`IntervalLog`
is for plugins: a problem that may recur on every request (Redis unreachable, a full queue) is
logged at most once per interval, with how many times it happened in between.
:class:`ConnectionFloodLog` does the same for the event loop's own reports of failed
``accept()`` calls and broken connections, which a connection flood makes by the thousand.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import sys
from time import monotonic
from typing import Any, Literal

import orjson
import structlog

try:  # imported now: a process out of file descriptors cannot open the module's file later
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

__all__ = ["configure_logging", "redact_secrets", "IntervalLog", "ConnectionFloodLog"]

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


_ACCEPT_MESSAGES = ("socket.accept() out of system resource", "Error on transport creation for incoming connection")
"""What asyncio says when it could not take a new connection."""
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
_ACCEPT_CALLBACKS = frozenset({"_start_serving", "_accept_connection"})


class ConnectionFloodLog:
    """An event loop exception handler for a server: failed ``accept()`` calls and broken
    connections are logged at most once per ``interval_seconds`` each (``accept_failed``,
    ``connection_failed``), with how many were suppressed in between and no traceback; anything
    else goes to the loop's default handler, as without it.

    With more connections than the open-file limit, asyncio reports every ``accept()`` that fails
    with EMFILE (and, on CPython, schedules a retry per failure, each reporting again), and every
    connection that breaks: tens of thousands of tracebacks a minute. The line says what failed
    and why (the errno and, when out of file descriptors, the process's limit), never what the
    connection carried.

    ``hookgate serve`` installs it on each worker's loop: ``loop.set_exception_handler(ConnectionFloodLog(log))``.
    """

    def __init__(self, logger: Any, interval_seconds: float = 10.0) -> None:
        self.accept = IntervalLog(logger, "accept_failed", interval_seconds)
        self.connection = IntervalLog(logger, "connection_failed", interval_seconds)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        where = str(context.get("message") or "")
        if _is_accept_failure(exc, context):
            fields: dict[str, Any] = {"where": where, "error": _describe(exc)}
            if isinstance(exc, OSError) and exc.errno in _OUT_OF_DESCRIPTORS:
                fields["open_file_limit"] = _open_file_limit()
            self.accept.error(**fields)
        elif isinstance(exc, ConnectionError) or (isinstance(exc, OSError) and ("transport" in where or "socket" in where)):
            self.connection.warning(where=where, error=_describe(exc))
        else:
            loop.default_exception_handler(context)


def _is_accept_failure(exc: BaseException | None, context: dict[str, Any]) -> bool:
    where = str(context.get("message") or "")
    if where.startswith(_ACCEPT_MESSAGES) or (isinstance(exc, OSError) and exc.errno in _OUT_OF_DESCRIPTORS):
        return True
    # The accept retries CPython scheduled fire after the listening socket closed (at shutdown).
    callback = getattr(context.get("handle"), "_callback", None)
    return getattr(callback, "__name__", "") in _ACCEPT_CALLBACKS


def _describe(exc: BaseException | None) -> str:
    """The exception's class and errno, never its text beyond the OS's own (no client data)."""
    if exc is None:
        return "unknown"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__} {errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"
    return type(exc).__name__


def _open_file_limit() -> int | None:
    if resource is None:
        return None
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
