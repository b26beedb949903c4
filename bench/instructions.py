"""Instructions per request of one server under load, counted by valgrind's callgrind.

A shared machine's CPU time per request moves by 10-15 % between runs (docs/performance.md); the
number of instructions a server executes per request moves by well under 1 % (repeat runs of the
same build agree to about 0.1 %, other load on the machine or not). It is the measure to A/B a
change of a few per cent on the request path before confirming it with bench/overhead.py. It
counts user-space instructions only: system calls, cache misses and the kernel's share are not in
it, so it says which build does less work, not how many requests per second either serves.

    python bench/instructions.py                             # forwarder and the default pipeline
    python bench/instructions.py --targets hookgate-reliable,hookgate-cache-off --stream
    python bench/instructions.py --targets forwarder,configs/my.toml -n 2000

Each target runs under ``valgrind --tool=callgrind --instr-atstart=no`` (pinned to core 0 when
there are two): a config in bench/configs (by name, ``hookgate-reliable``), any plugins.toml path,
or ``forwarder`` (bench/forwarder.py). wrk (on core 1, with the OpenAI emulator) warms it up
with ``--warmup`` requests, instrumentation is switched on (``callgrind_control -i on``) for
``-n`` requests at concurrency 32, and the counted total is divided by the responses wrk saw.
Under valgrind a server runs some 30 times slower, so a target takes 20-40 s. Needs valgrind and
wrk (Debian: ``apt-get install valgrind wrk``); the ``redis_cache`` targets also redis-server, of
which a throwaway one is started on the load core. Every process is stopped at the end; all traffic
stays on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": " ".join(["word"] * 30)}], "max_tokens": 64}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(port: int, seconds: float, *, health: bool = True) -> None:
    """Until the server on ``port`` answers ``GET /healthz`` (or, ``health=False``, accepts a connection)."""
    give_up = time.monotonic() + seconds
    while time.monotonic() < give_up:
        try:
            if not health:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                return
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the server on port {port} did not answer within {seconds:g} s")


def pinned(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None and shutil.which("taskset") else []


def wrk(port: int, body: Path, count: int, core: int | None) -> dict:
    command = [
        *pinned(core), "wrk", "-t1", "-c32", "-d600s", "-s", str(BENCH / "wrk_post.lua"),
        f"http://127.0.0.1:{port}/v1/chat/completions", "--", str(body), str(count),
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, timeout=660).stdout
    line = next((ln for ln in output.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no result: {output[-500:]}")
    return json.loads(line.removeprefix("BENCH_RESULT "))


def server_command(target: str, upstream: int, port: int, tmp: Path, redis: int | None) -> list[str]:
    if target == "forwarder":
        return [sys.executable, str(BENCH / "forwarder.py"), "--port", str(port), "--upstream", f"http://127.0.0.1:{upstream}"]
    path = Path(target) if target.endswith(".toml") else BENCH / "configs" / f"{target}.toml"
    if not path.is_file():
        raise SystemExit(f"no config {path}")
    config = tmp / f"{path.stem}.toml"
    text = path.read_text().replace("UPSTREAM_PORT", str(upstream))
    if "REDIS_PORT" in text:
        if redis is None:
            raise SystemExit(f"{path.name} needs Redis: install redis-server")
        text = text.replace("REDIS_PORT", str(redis))
    config.write_text(text)
    return [sys.executable, "-m", "hookgate", "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]


def count(target: str, body: Path, args: argparse.Namespace, upstream: int, tmp: Path, redis: int | None) -> tuple[int, int]:
    """(instructions counted, responses) for ``args.requests`` requests to ``target``."""
    port = free_port()
    out = tmp / f"callgrind.{port}.%p"
    command = [*pinned(args.server_core), "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
               *server_command(target, upstream, port, tmp, redis)]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(port, 120)
        wrk(port, body, args.warmup, args.load_core)
        subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], capture_output=True, check=True, timeout=60)
        result = wrk(port, body, args.requests, args.load_core)
        subprocess.run(["callgrind_control", "-i", "off", str(server.pid)], capture_output=True, check=True, timeout=60)
        subprocess.run(["callgrind_control", "-d", str(server.pid)], capture_output=True, check=True, timeout=60)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    total = 0
    for dump in tmp.glob(f"callgrind.{port}.*"):
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total, result["responses"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="forwarder,hookgate-reliable", help="comma-separated: forwarder, a bench/configs name, or a .toml path")
    parser.add_argument("--stream", action="store_true", help='ask for "stream": true (the forwarder relays SSE too)')
    parser.add_argument("-n", "--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (Debian: apt-get install valgrind wrk)")
    if (os.cpu_count() or 1) < 2:
        args.server_core = args.load_core = None
    with tempfile.TemporaryDirectory(prefix="hookgate-instructions-") as name:
        tmp = Path(name)
        body = tmp / "body.json"
        body.write_text(json.dumps({**BODY, "stream": True} if args.stream else BODY))
        upstream = free_port()
        emulator = subprocess.Popen(
            [*pinned(args.load_core), sys.executable, "-m", "hookgate.testing.openai_emulator", "--port", str(upstream)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        redis = free_port() if shutil.which("redis-server") else None
        redis_server = None
        if redis is not None:  # a throwaway server for the redis_cache targets, on the load core, keeping nothing on disk
            redis_server = subprocess.Popen(
                [*pinned(args.load_core), "redis-server", "--port", str(redis), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        try:
            wait_ready(upstream, 30, health=False)
            if redis is not None:
                wait_ready(redis, 30, health=False)
            print(f"{'target':32s} {'instructions/request':>22s}  ({args.requests} requests at c32{', streamed' if args.stream else ''})")
            for target in args.targets.split(","):
                total, responses = count(target, body, args, upstream, tmp, redis)
                print(f"{target:32s} {total // max(responses, 1):>22,d}", flush=True)
        finally:
            for process in (emulator, redis_server):
                if process is not None:
                    process.terminate()
                    process.wait(30)


if __name__ == "__main__":
    main()
