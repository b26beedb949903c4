"""Real servers for tests: Redis servers the test owns, and gateway processes.

Redis tests use a real server: the one in ``REDIS_URL`` when it is set, else one started here on
a free port. Tests that must kill and restart Redis always start their own. In CI (``CI=true``) a
missing ``redis-server`` is a failure, never a skip.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HOOKGATE = str(Path(sys.executable).with_name("hookgate"))

PROCESS_LOGS: list[tuple[str, str]] = []
"""(command, stderr) of every gateway process the tests stopped, for the suite-wide secret scan."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


@dataclass
class RedisServer:
    """A redis-server owned by one test: it can be stopped and started again on the same port."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="hookgate-redis-"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            message = "redis-server is not installed (Debian package redis-server); .ci/run installs it"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not _wait_port(self.port, 10):
            raise RuntimeError(f"redis-server did not start on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@dataclass
class PgvectorServer:
    """A PostgreSQL 16 with pgvector for the semantic cache's pgvector backend.

    Debian 12 packages no pgvector, so the server is the one the PyPI wheel ``pgserver`` ships
    (its binaries only, run here directly). As root (CI), the binaries are copied where the
    ``postgres`` system user can read them and the server runs as that user. In CI a missing
    wheel is a failure, never a skip.
    """

    port: int = field(default_factory=free_port)
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="hookgate-pgvector-"))
    user: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> PgvectorServer:
        from importlib.metadata import PackageNotFoundError, distribution

        try:
            installed = Path(str(distribution("pgserver").locate_file("pgserver")))
        except PackageNotFoundError:
            message = "the pgserver wheel (PostgreSQL with pgvector) is not installed: pip install -e '.[test]'"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        root = Path(self.workdir)
        os.chmod(root, 0o755)
        # The binaries find their libraries at $ORIGIN/../../../pgserver.libs: keep that layout.
        shutil.copytree(installed / "pginstall", root / "pgserver" / "pginstall")
        shutil.copytree(installed.parent / "pgserver.libs", root / "pgserver.libs")
        data, run = root / "data", root / "run"
        data.mkdir()
        run.mkdir()
        if os.geteuid() == 0:
            self.user = "postgres"
            for path in (data, run):
                shutil.chown(path, self.user)
        bin_dir = root / "pgserver" / "pginstall" / "bin"
        self._pg_ctl = str(bin_dir / "pg_ctl")
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "utf8", "--no-sync"],
            check=True, capture_output=True, user=self.user,
        )  # fmt: skip
        options = f"-p {self.port} -h 127.0.0.1 -k {run} -c fsync=off"
        subprocess.run(
            [self._pg_ctl, "-D", str(data), "-o", options, "-l", str(run / "log"), "-w", "-t", "30", "start"],
            check=True, capture_output=True, user=self.user,
        )  # fmt: skip
        return self

    def stop(self) -> None:
        subprocess.run([self._pg_ctl, "-D", str(Path(self.workdir) / "data"), "-m", "immediate", "stop"], capture_output=True, user=self.user)
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class GatewayProcess:
    """A ``hookgate serve`` process on its own port."""

    port: int
    process: subprocess.Popen
    log_path: Path | None = None
    """Where its stderr goes, when it goes to a file (``start_gateway(log_to_file=True)``)."""
    _logged: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGINT) -> str:
        """Stop the process and return what it logged."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._logged is None:
            if self.log_path is not None:
                self._logged = self.log_path.read_text(errors="replace")
            else:
                self._logged = self.process.stderr.read() if self.process.stderr else ""
            PROCESS_LOGS.append((f"hookgate serve --port {self.port}", self._logged))
        return self._logged


def start_gateway(
    config_text: str,
    *,
    env: dict[str, str] | None = None,
    port: int | None = None,
    open_file_limit: int | None = None,
    log_to_file: bool = False,
    workers: int = 1,
) -> GatewayProcess:
    """Write ``config_text`` to a temp file and run ``hookgate serve`` on it until /healthz is 200.

    :param open_file_limit: the process's RLIMIT_NOFILE (soft and hard), to flood it past it;
        with ``workers``, each worker's.
    :param log_to_file: stderr to a file (``GatewayProcess.log_path``, readable while it runs)
        instead of a pipe, which a process logging faster than the test reads would block on.
    """
    port = port or free_port()
    directory = Path(tempfile.mkdtemp(prefix="hookgate-gw-"))
    config = directory / "plugins.toml"
    config.write_text(config_text)
    log_path = directory / "stderr.log" if log_to_file else None

    def limit_open_files() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (open_file_limit, open_file_limit))

    log = log_path.open("w") if log_path is not None else None
    process = subprocess.Popen(
        [HOOKGATE, "serve", "--config", str(config), "--port", str(port), "--workers", str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=log if log is not None else subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        preexec_fn=limit_open_files if open_file_limit is not None else None,
    )
    if log is not None:
        log.close()  # the child has its own copy
    gateway = GatewayProcess(port, process, log_path)
    try:
        wait_healthy(port, process)
    except AssertionError:
        raise AssertionError(f"gateway did not become healthy: {gateway.stop(signal.SIGKILL)}") from None
    return gateway


def wait_healthy(port: int, process: subprocess.Popen, timeout: float = 20.0) -> None:
    """Wait until ``GET /healthz`` on ``port`` answers 200; fail if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"server did not become healthy within {timeout} s")
