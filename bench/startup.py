"""How long `hookgate serve` takes to answer, how much memory it holds idle, and which heavy
modules it imported to get there.

    python bench/startup.py                       # the repository's plugins.toml, 5 starts
    python bench/startup.py --config bench/configs/hookgate-anthropic.toml --runs 3

Each run spawns `hookgate serve --config CONFIG --port P` (the config's own host), polls
`GET /healthz` every 5 ms until it answers 200 (the figure includes interpreter start-up and
every import), reads VmRSS from /proc 0.3 s later (idle), and stops the server with SIGTERM.
The medians are printed. One more start under `python -X importtime` lists the heavy modules
the server had imported by then (the SDKs, tokenizers, metrics and tracing libraries…): a
module in that list is loaded although no enabled plugin may need it. Configs with
UPSTREAM_PORT/ANTHROPIC_PORT/REDIS_PORT placeholders (bench/configs) get an unused port: the
server starts without its upstream, which start-up does not need.
"""
from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "openai", "anthropic", "groq", "httpx", "httpx2", "tiktoken", "prometheus_client", "opentelemetry",
    "numpy", "onnxruntime", "tokenizers", "redis", "asyncpg", "re2", "phonenumbers", "stdnum", "jsonschema",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hookgate_command() -> list[str]:
    beside = Path(sys.executable).parent / "hookgate"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "hookgate"]


def prepared_config(path: Path, tmp: Path) -> Path:
    text = path.read_text()
    for placeholder in ("UPSTREAM_PORT", "ANTHROPIC_PORT", "REDIS_PORT"):
        text = text.replace(placeholder, str(free_port()))
    out = tmp / path.name
    out.write_text(text)
    return out


def healthz(port: int) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start_once(argv: list[str], port: int, timeout: float, stderr: int | None = subprocess.DEVNULL) -> tuple[float, int, subprocess.Popen[bytes]]:
    started = time.monotonic()
    proc = subprocess.Popen(argv + ["--port", str(port)], stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL)
    while healthz(port) != 200:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}: {' '.join(argv)}")
        if time.monotonic() - started > timeout:
            proc.kill()
            raise SystemExit(f"no GET /healthz 200 within {timeout} s")
        time.sleep(0.005)
    ready = time.monotonic() - started
    time.sleep(0.3)
    return ready, vm_rss_kib(proc.pid), proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def imported_heavy_modules(argv: list[str], timeout: float) -> list[str]:
    with tempfile.TemporaryFile() as err:
        env_argv = [sys.executable, "-X", "importtime", "-m", "hookgate", *argv[1:]]
        _, _, proc = start_once(env_argv, free_port(), timeout, stderr=err.fileno())
        stop(proc)
        err.seek(0)
        names = set()
        for line in err.read().decode(errors="replace").splitlines():
            if line.startswith("import time:") and "|" in line:
                name = line.rsplit("|", 1)[1].strip()
                top = name.split(".")[0]
                if top in HEAVY:
                    names.add(top)
    return sorted(names)


def main() -> int:
    p = argparse.ArgumentParser(description="hookgate serve: time to GET /healthz 200, idle RSS, heavy imports")
    p.add_argument("--config", type=Path, default=ROOT / "plugins.toml")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="hookgate-startup-") as tmpdir:
        config = prepared_config(args.config, Path(tmpdir))
        argv = [*hookgate_command(), "serve", "--config", str(config)]
        readies, rss = [], []
        for _ in range(args.runs):
            ready, kib, proc = start_once(argv, free_port(), args.timeout)
            stop(proc)
            readies.append(ready)
            rss.append(kib)
        heavy = imported_heavy_modules(argv, args.timeout)
    load = os.getloadavg()
    print(f"config: {args.config}")
    print(f"start -> GET /healthz 200: median {statistics.median(readies):.3f} s (min {min(readies):.3f}, max {max(readies):.3f}, {args.runs} runs)")
    print(f"idle RSS: median {statistics.median(rss) / 1024:.1f} MiB")
    print(f"heavy modules imported by then: {', '.join(heavy) or 'none'}")
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
