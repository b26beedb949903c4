"""What each API surface and each load-balancing strategy costs per request, through hookgate.

    python bench/paths.py                       # every case, 1,500 requests each at concurrency 16
    python bench/paths.py -n 3000 --cases chat,messages-native,responses
    python bench/paths.py --rounds 3 --json bench/results/paths.json

One ``hookgate serve`` per case (pinned to core 0), the emulators and this load generator on the
other cores; the server's CPU time per request comes from /proc (utime + stime over the load),
so it is what the gateway spent, not the client or the upstream. Cases, side by side in one run:

  chat, chat-stream                 /v1/chat/completions to the OpenAI emulator (the baseline)
  messages-native, -stream          /v1/messages (Anthropic's wire) to the Anthropic emulator: passed through
  messages-translated, -stream      /v1/messages to the OpenAI emulator: translated both ways
  responses, responses-stream       /v1/responses to the OpenAI emulator (chat completions upstream): translated
  embeddings                        /v1/embeddings to the OpenAI emulator
  balanced-1                        chat on a route of one deployment (the balancer's floor)
  balanced-weighted, -least_busy, -lowest_latency, -usage
                                    chat on a route of three deployments (one emulator each)
  balanced-weighted-redis, balanced-usage-redis
                                    the same with [gateway.balancing] redis_url (needs $REDIS_URL or
                                    --redis-url; keys under a fresh prefix)

Every case reports requests/s, p50 latency and CPU µs per request, and its ratio to ``chat`` (for
surfaces) or to ``balanced-1`` (for strategies). Bounded by counts; traffic stays on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

CLK_TCK = os.sysconf("SC_CLK_TCK")
HOOKGATE = str(Path(sys.executable).with_name("hookgate"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cores() -> tuple[set[int], set[int]]:
    """(the server's core, everyone else's): core 0 alone for the server when there are two or more."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return set(available), set(available)
    return {available[0]}, set(available[1:])


@dataclass
class Process:
    popen: subprocess.Popen
    port: int

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def spawn(argv: list[str], port: int, on: set[int], env: dict[str, str] | None = None) -> Process:
    popen = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})},
        preexec_fn=lambda: os.sched_setaffinity(0, on),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited with {popen.returncode}: {' '.join(argv)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return Process(popen, port)
        except OSError:
            time.sleep(0.05)
    popen.kill()
    raise RuntimeError(f"{' '.join(argv)} did not listen on {port}")


def emulator(kind: str, on: set[int]) -> Process:
    port = free_port()
    module = f"hookgate.testing.{kind}_emulator"
    return spawn([sys.executable, "-m", module, "--port", str(port)], port, on)


def wait_healthy(port: int) -> None:
    deadline = time.monotonic() + 30
    import urllib.request

    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"hookgate on {port} never became healthy")


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: dict[str, Any]
    config: str
    baseline: str
    headers: tuple[tuple[str, str], ...] = ()


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say something about load balancing in two sentences."}]}
MESSAGES = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Say something about load balancing."}]}
RESPONSES = {"model": "gpt-4o-mini", "input": "Say something about load balancing in two sentences.", "store": False}
EMBEDDINGS = {"model": "text-embedding-3-small", "input": ["one sentence to embed", "and another one"]}


def base_config(openai_url: str, anthropic_url: str | None = None, extra_pipeline: tuple[str, ...] = ()) -> str:
    pipeline = [*extra_pipeline, "openai"] + (["anthropic"] if anthropic_url else [])
    text = (
        "[gateway]\n"
        f"pipeline = {json.dumps(pipeline)}\n"
        'log_level = "warning"\n'
        "[plugins.openai]\n"
        f'base_url = "{openai_url}/v1"\napi_key = "sk-bench"\n'
        'models = ["gpt-4o-mini", "text-embedding-3-small"]\nkinds = ["chat", "embeddings"]\n'
    )
    if anthropic_url:
        text += f'[plugins.anthropic]\nbase_url = "{anthropic_url}"\napi_key = "sk-ant-bench"\nmodels = ["claude-haiku-4-5"]\n'
    return text


def balanced_config(urls: list[str], strategy: str, redis: tuple[str, str] | None) -> str:
    servers = ", ".join(f'"u{i}" = {{ base_url = "{url}/v1", models = ["u{i}-own"] }}' for i, url in enumerate(urls))
    deployments = ", ".join(f'{{ provider = "u{i}", model = "gpt-4o-mini" }}' for i in range(len(urls)))
    text = (
        "[gateway]\n"
        'pipeline = ["openai_compatible"]\n'
        'log_level = "warning"\n'
    )
    if redis:
        text += f'[gateway.balancing]\nredis_url = "{redis[0]}"\nkey_prefix = "{redis[1]}"\n'
    text += (
        f"[plugins.openai_compatible]\nservers = {{ {servers} }}\n"
        f'[models."pool"]\nstrategy = "{strategy}"\ndeployments = [{deployments}]\n'
    )
    return text


def cases(openai: list[str], anthropic: str, redis_url: str | None) -> list[Case]:
    first = openai[0]
    surfaces = base_config(first, anthropic)
    found = [
        Case("chat", "/v1/chat/completions", CHAT, surfaces, "chat"),
        Case("chat-stream", "/v1/chat/completions", {**CHAT, "stream": True}, surfaces, "chat-stream"),
        Case("messages-native", "/v1/messages", MESSAGES, surfaces, "chat"),
        Case("messages-native-stream", "/v1/messages", {**MESSAGES, "stream": True}, surfaces, "chat-stream"),
        Case("messages-translated", "/v1/messages", {**MESSAGES, "model": "gpt-4o-mini"}, surfaces, "chat"),
        Case("messages-translated-stream", "/v1/messages", {**MESSAGES, "model": "gpt-4o-mini", "stream": True}, surfaces, "chat-stream"),
        Case("responses", "/v1/responses", RESPONSES, surfaces, "chat"),
        Case("responses-stream", "/v1/responses", {**RESPONSES, "stream": True}, surfaces, "chat-stream"),
        Case("embeddings", "/v1/embeddings", EMBEDDINGS, surfaces, "chat"),
        Case("balanced-1", "/v1/chat/completions", {**CHAT, "model": "pool"}, balanced_config(openai[:1], "weighted", None), "balanced-1"),
    ]
    for strategy in ("weighted", "least_busy", "lowest_latency", "usage"):
        found.append(Case(f"balanced-{strategy}", "/v1/chat/completions", {**CHAT, "model": "pool"}, balanced_config(openai, strategy, None), "balanced-1"))
    if redis_url:
        for strategy in ("weighted", "usage"):
            prefix = f"bench:paths:{uuid.uuid4().hex[:8]}"
            found.append(Case(
                f"balanced-{strategy}-redis", "/v1/chat/completions", {**CHAT, "model": "pool"},
                balanced_config(openai, strategy, (redis_url, prefix)), "balanced-1",
            ))
    return found


async def load(port: int, case: Case, count: int, concurrency: int) -> list[float]:
    """Send ``count`` requests, ``concurrency`` at a time; the latencies (s). Every answer is read whole."""
    url = f"http://127.0.0.1:{port}{case.path}"
    payload = json.dumps(case.body).encode()
    headers = {"Content-Type": "application/json", **dict(case.headers)}
    latencies: list[float] = []
    remaining = iter(range(count))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def client() -> None:
            for _ in remaining:
                started = time.perf_counter()
                async with session.post(url, data=payload, headers=headers) as answer:
                    await answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"{case.name}: status {answer.status}: {(await answer.text())[:300]}")
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies


def run_case(case: Case, args: argparse.Namespace, server_cores: set[int]) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="hookgate-bench-paths-"))
    (folder / "plugins.toml").write_text(case.config)
    port = free_port()
    server = spawn([HOOKGATE, "serve", "--config", str(folder / "plugins.toml"), "--port", str(port)], port, server_cores)
    try:
        wait_healthy(port)
        asyncio.run(load(port, case, min(200, args.n), args.concurrency))  # warm-up: connections, caches of code paths
        rounds = []
        for _ in range(args.rounds):
            before, started = cpu_seconds(server.popen.pid), time.perf_counter()
            latencies = asyncio.run(load(port, case, args.n, args.concurrency))
            wall = time.perf_counter() - started
            rounds.append({
                "rps": args.n / wall,
                "p50_ms": statistics.median(latencies) * 1000,
                "cpu_us": (cpu_seconds(server.popen.pid) - before) / args.n * 1e6,
            })
        return {key: statistics.median(r[key] for r in rounds) for key in ("rps", "p50_ms", "cpu_us")}
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1500, help="requests per round and case (default 1500)")
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1, help="rounds per case; the median is reported")
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"), help="for the -redis cases (default $REDIS_URL)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    server_cores, other_cores = cores()
    os.sched_setaffinity(0, other_cores)
    upstreams = [emulator("openai", other_cores) for _ in range(3)]
    anthropic = emulator("anthropic", other_cores)
    try:
        chosen = cases([f"http://127.0.0.1:{u.port}" for u in upstreams], f"http://127.0.0.1:{anthropic.port}", args.redis_url)
        if args.cases:
            wanted = set(args.cases.split(","))
            chosen = [case for case in chosen if case.name in wanted or case.baseline in wanted and case.name == case.baseline]
        results: dict[str, dict[str, Any]] = {}
        for case in chosen:
            results[case.name] = run_case(case, args, server_cores)
            print(f"  {case.name:30} done", file=sys.stderr)
    finally:
        for process in (*upstreams, anthropic):
            process.stop()
    load_average = os.getloadavg()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, server on cores {sorted(server_cores)}, "
          f"load average {load_average[0]:.1f}; -n {args.n} -c {args.concurrency} --rounds {args.rounds}")
    print(f"  {'case':30} {'req/s':>8} {'p50 ms':>8} {'CPU µs/req':>11} {'× CPU of':>9}  baseline")
    by_name = {case.name: case for case in chosen}
    for name, r in results.items():
        base = results.get(by_name[name].baseline)
        ratio = f"{r['cpu_us'] / base['cpu_us']:.2f}" if base else "–"
        print(f"  {name:30} {r['rps']:8.0f} {r['p50_ms']:8.2f} {r['cpu_us']:11.0f} {ratio:>9}  {by_name[name].baseline}")
    if args.json:
        Path(args.json).write_text(json.dumps({"load_average": load_average, "args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
