"""A real Redis for tests: the one in ``$REDIS_URL``, or a ``redis-server`` started on a free port.

Why real: the gateway's Redis users (caches, rate limits, ledgers) rely on Lua scripts, TTLs and
pipelines that fakes get subtly wrong. Why it fails under CI: a test suite whose Redis tests skip
when the server is missing passes without testing anything; with ``CI=true`` a missing server is
an error that says how to install it.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Final, Self, final
from urllib.parse import urlsplit

__all__ = ["INSTALL_HINT", "RedisServer", "RedisUnavailable", "free_port", "in_ci", "reachable"]

INSTALL_HINT: Final = "install redis-server (Debian/Ubuntu: apt-get install redis-server) or set REDIS_URL"


class RedisUnavailable(RuntimeError):
    """No Redis can be had: ``redis-server`` is not installed, or ``$REDIS_URL`` does not answer."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reachable(url: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at the host and port of ``url``."""
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=timeout).close()
    except OSError:
        return False
    return True


@final
class RedisServer:
    """A ``redis-server`` process owned by the caller: no persistence, bound to 127.0.0.1.

    It can be stopped and started again on the same port (to test what a client does while
    Redis is down).
    """

    __slots__ = ("_process", "_workdir", "port")

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir = tempfile.mkdtemp(prefix="hookgate-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> Self:
        """Start the server and wait until it accepts connections.

        :raises RedisUnavailable: ``redis-server`` is not on ``PATH`` or did not come up.
        """
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailable(f"redis-server is not installed: {INSTALL_HINT}")
        self._process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self._workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not reachable(self.url, timeout=0.2):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RedisUnavailable(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)  # polling a port: there is no event to wait on
        return self

    def stop(self) -> None:
        """Kill the server (idempotent)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def in_ci() -> bool:
    """Whether this is a CI run (``CI=true``), where a missing server must fail, not skip."""
    return os.environ.get("CI", "").lower() == "true"
