"""hookgate overhead benchmark: the same load against the emulator, a bare forwarder and hookgate.

One run measures, side by side, with the server under test alone on one core:

  emulator          the upstream emulator itself (what any proxy in front of it adds to)
  forwarder         bench/forwarder.py, a bare aiohttp forwarder to the emulator (the baseline)
  hookgate          hookgate, openai provider -> emulator, no cache in the pipeline (all MISS)
  hookgate-cached   hookgate answering from memory_cache (same body every time: all HIT)
  hookgate-redis    hookgate answering from redis_cache (all HIT from Redis; needs redis-server)
  hookgate-tiered   memory_cache in front of redis_cache (all HIT from memory, Redis enabled)
  emulator-stream, forwarder-stream, hookgate-stream   the same with "stream": true (SSE)

and prints requests/s, p50/p99 latency, the server's CPU time per request, hookgate's ratios to
the forwarder, hookgate's idle RSS and its time from process start to GET /healthz = 200.
Results also go to bench/results/overhead-*.json. See bench/README.md.

    python bench/overhead.py                 # 2,000 requests at concurrency 32 per target
    python bench/overhead.py -n 5000 -c 64 --targets forwarder,hookgate
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.client
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

BENCH_DIR = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH_DIR / "wrk_post.lua"
CONFIG_DIR = BENCH_DIR / "configs"
HOST = "127.0.0.1"
MODEL = "gpt-4o-mini"
API_KEY = "sk-bench"
CHAT_PATH = "/v1/chat/completions"
CLK_TCK = os.sysconf("SC_CLK_TCK")

ALL_TARGETS = (
    "emulator",
    "forwarder",
    "hookgate",
    "hookgate-cached",
    "hookgate-redis",
    "hookgate-tiered",
    "emulator-stream",
    "forwarder-stream",
    "hookgate-stream",
)
DEFAULT_EMULATOR_CMD = "{python} -m hookgate.testing.openai_emulator --port {port}"
DEFAULT_HOOKGATE_CMD = "{hookgate} serve --config {config} --host {host} --port {port}"
# the server's core is "busy" above this share of one core; the load side "saturated" above it
BUSY = 0.85
# other processes on our two cores above this share of one core make a result suspect
OTHER_LOAD = 0.10


class BenchError(Exception):
    """A target cannot be measured; the message says why."""


# --------------------------------------------------------------------------- /proc readings


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    # after "pid (comm) ", fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in KiB, from /proc/PID/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def core_ticks(cores: set[int | None]) -> dict[int, tuple[int, int]]:
    """(busy, steal) clock ticks so far of each given core, from /proc/stat."""
    out: dict[int, tuple[int, int]] = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *vals = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, vals[:8])
                out[int(name[3:])] = (user + nice + system + irq + softirq, steal)
    return out


def settle_cpu(pid: int, timeout: float = 2.0) -> float:
    """Wait until a process stops using CPU (finished in-flight work), return its CPU time."""
    deadline = time.monotonic() + timeout
    last = proc_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        cur = proc_cpu_seconds(pid)
        if cur == last:
            return cur
        last = cur
    return last


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_request(
    port: int, method: str, path: str, body: bytes | None = None, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
        conn.request(method, path, body=body, headers=headers if body is not None else {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@dataclass
class Server:
    """A server process pinned to one core, its log in a file, stopped by its own PID."""

    name: str
    argv: list[str]
    port: int
    core: int | None
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    spawned_at: float = 0.0
    startup_s: float | None = None
    idle_memory: dict[str, int] = field(default_factory=dict)

    def start(self) -> None:
        prefix = ["taskset", "-c", str(self.core)] if self.core is not None else []
        self.log = open(self.log_path, "wb")
        self.spawned_at = time.monotonic()
        try:
            # taskset execs the command: the PID is the server's own
            self.proc = subprocess.Popen(
                prefix + self.argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        except OSError as e:
            raise BenchError(f"{self.name}: cannot start {shlex.join(self.argv)}: {e}") from e

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").rstrip().splitlines()
        except OSError:
            return ""
        return "\n".join("    | " + line for line in text[-lines:])

    def _failed(self, why: str) -> BenchError:
        tail = self.log_tail()
        cmd = shlex.join(self.argv)
        return BenchError(f"{self.name}: {why}\n    command: {cmd}" + (f"\n    its output:\n{tail}" if tail else ""))

    def wait_ready(self, how: str, probe_body: bytes, timeout: float) -> None:
        """how="healthz": GET /healthz until 200 (startup time measured that way);
        how="post": POST the bench body until 200 (for the emulator, whose routes we don't know)."""
        assert self.proc is not None
        deadline = self.spawned_at + timeout
        while True:
            if self.proc.poll() is not None:
                raise self._failed(f"exited with code {self.proc.returncode} before answering")
            try:
                if how == "healthz":
                    status, _, _ = http_request(self.port, "GET", "/healthz", timeout=1.0)
                else:
                    status, _, _ = http_request(self.port, "POST", CHAT_PATH, probe_body, timeout=2.0)
                if status == 200:
                    self.startup_s = time.monotonic() - self.spawned_at
                    return
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                what = "GET /healthz" if how == "healthz" else f"POST {CHAT_PATH}"
                raise self._failed(f"{what} did not answer 200 within {timeout:.0f} s")
            time.sleep(0.005)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if getattr(self, "log", None):
            self.log.close()


# --------------------------------------------------------------------------- load generators


@dataclass
class LoadResult:
    completed: int
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    non200: int
    errors: int
    cache: dict[str, int]
    generator_cpu_s: float
    # requests the server received but the generator did not wait for (wrk stops mid-flight)
    abandoned: int
    time_capped: bool
    extra: dict[str, Any] = field(default_factory=dict)


class WrkGenerator:
    name = "wrk"

    def __init__(self, core: int | None, max_seconds: float):
        self.core = core
        self.max_seconds = max_seconds
        self.wrk = shutil.which("wrk")
        if not self.wrk:
            raise BenchError("wrk not found (apt-get install -y wrk)")
        out = subprocess.run([self.wrk, "-v"], capture_output=True, text=True).stdout
        self.version = out.splitlines()[0] if out else "?"

    def run(self, port: int, body_path: Path, requests: int, concurrency: int) -> LoadResult:
        prefix = ["taskset", "-c", str(self.core)] if self.core is not None else []
        argv = prefix + [
            self.wrk, "-t1", f"-c{concurrency}", f"-d{math.ceil(self.max_seconds)}s", "--timeout", "30s",
            "-s", str(LUA_SCRIPT), f"http://{HOST}:{port}{CHAT_PATH}",
            "--", str(body_path), str(requests), API_KEY,
        ]  # fmt: skip
        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + self.max_seconds + 30
            while True:  # wait4 gives the child's own CPU time (the generator's load)
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    break
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    raise BenchError("wrk did not end in time")
                time.sleep(0.01)
            out.seek(0)
            text = out.read().decode(errors="replace")
        line = next((ln for ln in text.splitlines() if ln.startswith("BENCH_RESULT ")), None)
        if proc.returncode != 0 or line is None:
            raise BenchError(f"wrk failed (exit {proc.returncode}):\n{text}")
        r = json.loads(line.removeprefix("BENCH_RESULT "))
        capped = r["responses"] < requests
        elapsed = (r["t_end"] - r["t_start"]) if not capped else r["wrk_duration_us"] / 1e6
        errors = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
        return LoadResult(
            # the rate's window ends at the LIMITth response; a few more may land before wrk stops
            completed=r["responses"] if capped else requests,
            elapsed_s=elapsed,
            p50_ms=r["p50_us"] / 1000,
            p99_ms=r["p99_us"] / 1000,
            mean_ms=r["mean_us"] / 1000,
            max_ms=r["max_us"] / 1000,
            non200=r["non200"],
            errors=errors,
            cache={k: r[k] for k in ("hit", "miss", "bypass", "other")},
            generator_cpu_s=usage.ru_utime + usage.ru_stime,
            # wrk keeps every connection busy; at the stop the other connections each have a
            # request in flight that the server still serves (checked with a counting server)
            abandoned=0 if capped else concurrency - 1,
            time_capped=capped,
            extra={"wrk_p90_ms": r["p90_us"] / 1000},
        )


class PythonGenerator:
    """aiohttp client in this process (which is pinned to the load core). Exact count, drains."""

    name = "python-aiohttp"
    version = ""

    def __init__(self, max_seconds: float):
        import aiohttp

        self.max_seconds = max_seconds
        self.version = f"aiohttp {aiohttp.__version__}"

    def run(self, port: int, body_path: Path, requests: int, concurrency: int) -> LoadResult:
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        try:
            import uvloop

            res = uvloop.run(self._run(port, body_path.read_bytes(), requests, concurrency))
        except ImportError:
            res = asyncio.run(self._run(port, body_path.read_bytes(), requests, concurrency))
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        res.generator_cpu_s = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
        return res

    async def _run(self, port: int, body: bytes, requests: int, concurrency: int) -> LoadResult:
        import aiohttp

        url = f"http://{HOST}:{port}{CHAT_PATH}"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
        latencies: list[float] = []
        cache = {"hit": 0, "miss": 0, "bypass": 0, "other": 0}
        counts = {"issued": 0, "non200": 0, "errors": 0}
        deadline = time.monotonic() + self.max_seconds
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as s:

            async def worker() -> None:
                while counts["issued"] < requests and time.monotonic() < deadline:
                    counts["issued"] += 1
                    t0 = time.perf_counter()
                    try:
                        async with s.post(url, data=body, headers=headers) as r:
                            await r.read()
                            if r.status != 200:
                                counts["non200"] += 1
                            c = r.headers.get("x-hookgate-cache")
                            if c is not None:
                                key = c.lower()
                                cache[key if key in cache else "other"] += 1
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        counts["errors"] += 1
                        continue
                    latencies.append(time.perf_counter() - t0)

            t_start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - t_start
        latencies.sort()

        def pct(p: float) -> float:
            if not latencies:
                return float("nan")
            return latencies[min(len(latencies) - 1, math.ceil(p / 100 * len(latencies)) - 1)] * 1000

        return LoadResult(
            completed=len(latencies),
            elapsed_s=elapsed,
            p50_ms=pct(50),
            p99_ms=pct(99),
            mean_ms=(sum(latencies) / len(latencies) * 1000) if latencies else float("nan"),
            max_ms=(latencies[-1] * 1000) if latencies else float("nan"),
            non200=counts["non200"],
            errors=counts["errors"],
            cache=cache,
            generator_cpu_s=0.0,
            abandoned=0,
            time_capped=counts["issued"] < requests,
        )


# --------------------------------------------------------------------------- the benchmark


def request_body(stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Say hello in one short sentence."},
        ],
        "max_tokens": 32,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def check_answer(name: str, port: int, body: bytes, stream: bool) -> str | None:
    """One request before the load: is the answer a real chat completion? Returns its cache header."""
    try:
        status, headers, data = http_request(port, "POST", CHAT_PATH, body, timeout=30)
    except (OSError, http.client.HTTPException) as e:
        raise BenchError(f"{name}: probe request failed: {e}") from e
    snippet = data[:300].decode(errors="replace")
    if status != 200:
        raise BenchError(f"{name}: probe request answered {status}: {snippet}")
    if stream:
        if "text/event-stream" not in headers.get("content-type", ""):
            raise BenchError(f"{name}: stream=true answered {headers.get('content-type')!r}, not SSE: {snippet}")
        if b"data: " not in data:
            raise BenchError(f"{name}: SSE answer has no data: lines: {snippet}")
    else:
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise BenchError(f"{name}: answer is not JSON: {snippet}") from e
        if not isinstance(doc, dict) or not doc.get("choices"):
            raise BenchError(f"{name}: answer has no choices: {snippet}")
    return headers.get("x-hookgate-cache")


@dataclass
class Context:
    args: argparse.Namespace
    gen: WrkGenerator | PythonGenerator
    tmp: Path
    bodies: dict[bool, Path]
    upstream: Server | None = None
    redis: Server | None = None
    warnings: list[str] = field(default_factory=list)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        print(f"  WARNING: {msg}", flush=True)


def measure_round(ctx: Context, server: Server, body_path: Path) -> dict[str, Any]:
    """One measured phase, with /proc CPU readings around it."""
    a = ctx.args
    cpu0 = settle_cpu(server.pid)
    up0 = proc_cpu_seconds(ctx.upstream.pid) if ctx.upstream and ctx.upstream is not server else None
    cores = {a.server_core, a.load_core}
    ticks0, self0, wall0 = core_ticks(cores), time.process_time(), time.monotonic()
    r = ctx.gen.run(server.port, body_path, a.requests, a.concurrency)
    ticks1, self1, wall1 = core_ticks(cores), time.process_time(), time.monotonic()
    srv_at_end = proc_cpu_seconds(server.pid)
    up_at_end = proc_cpu_seconds(ctx.upstream.pid) if up0 is not None else None
    cpu1 = settle_cpu(server.pid)  # the requests in flight at the stop are still served
    up1 = settle_cpu(ctx.upstream.pid) if up0 is not None else None
    served = r.completed + r.abandoned
    cpu = cpu1 - cpu0
    upstream_cpu = (up1 - up0) if up0 is not None and up1 is not None else None
    elapsed = r.elapsed_s
    # CPU that other processes (and steal) took from the two cores during the load phase:
    # each core's busy ticks from /proc/stat minus what our own processes used on it
    other: dict[str, float | None] = {"server_core": None, "load_core": None, "steal": None}
    window = wall1 - wall0
    if a.server_core is not None and a.load_core is not None and window > 0:
        busy = {c: (ticks1[c][0] - ticks0[c][0]) / CLK_TCK for c in cores}
        steal = sum(ticks1[c][1] - ticks0[c][1] for c in cores) / CLK_TCK
        ours_on_load = r.generator_cpu_s + (up_at_end - up0 if up_at_end is not None and up0 is not None else 0.0)
        if ctx.gen.name != "python-aiohttp":  # that one's CPU is this process's own already
            ours_on_load += self1 - self0
        # ignore up to 3 clock ticks: the resolution of these counters
        slack = 3 / CLK_TCK
        other = {
            "server_core": max(0.0, busy[a.server_core] - (srv_at_end - cpu0) - slack) / window,
            "load_core": max(0.0, busy[a.load_core] - ours_on_load - slack) / window,
            "steal": max(0.0, steal - slack) / window,
        }
    return {
        "requests": r.completed,
        "elapsed_s": round(elapsed, 4),
        "rps": r.completed / elapsed if elapsed > 0 else 0.0,
        "p50_ms": r.p50_ms,
        "p99_ms": r.p99_ms,
        "mean_ms": r.mean_ms,
        "max_ms": r.max_ms,
        "server_cpu_s": round(cpu, 3),
        "server_requests_served": served,
        "cpu_us_per_request": cpu / served * 1e6 if served else None,
        "server_core_busy": cpu / elapsed if elapsed > 0 else None,
        "generator_cpu_s": round(r.generator_cpu_s, 3),
        "upstream_cpu_s": round(upstream_cpu, 3) if upstream_cpu is not None else None,
        "load_core_busy": (r.generator_cpu_s + (upstream_cpu or 0.0)) / elapsed if elapsed > 0 else None,
        "other_processes_busy": other,
        "non200": r.non200,
        "errors": r.errors,
        "cache_header": r.cache,
        "time_capped": r.time_capped,
        **r.extra,
    }


# reported per target as the median over the rounds
MEDIAN_KEYS = (
    "rps", "p50_ms", "p99_ms", "mean_ms", "max_ms", "cpu_us_per_request", "server_core_busy", "load_core_busy",
)  # fmt: skip


def median(values: list[float]) -> float | None:
    vals = sorted(v for v in values if v is not None and not math.isnan(v))
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def measure(ctx: Context, target: str, server: Server, stream: bool) -> dict[str, Any]:
    """Probe, warm up, then --rounds measured phases; each figure is the median over them."""
    a = ctx.args
    body_path = ctx.bodies[stream]
    first_cache = check_answer(target, server.port, body_path.read_bytes(), stream)
    if a.warmup:
        ctx.gen.run(server.port, body_path, a.warmup, a.concurrency)
    rounds = [measure_round(ctx, server, body_path) for _ in range(a.rounds)]
    res: dict[str, Any] = {"target": target, "stream": stream, "server_pid": server.pid}
    res.update({k: median([r[k] for r in rounds]) for k in MEDIAN_KEYS})
    res["requests"] = sum(r["requests"] for r in rounds)
    res["cache_header"] = {k: sum(r["cache_header"][k] for r in rounds) for k in rounds[0]["cache_header"]}
    res["probe_cache_header"] = first_cache
    res["memory_after_kib"] = proc_memory_kib(server.pid)
    res["rounds"] = rounds

    non200, errors = sum(r["non200"] for r in rounds), sum(r["errors"] for r in rounds)
    if non200 or errors:
        ctx.warn(f"{target}: {non200} non-200 answers and {errors} failed requests in the measured phase")
    if any(r["time_capped"] for r in rounds):
        ctx.warn(f"{target}: a round was stopped by the {a.max_seconds:.0f} s cap before {a.requests} requests")
    busy_srv, busy_load = res["server_core_busy"] or 0.0, res["load_core_busy"] or 0.0
    if busy_srv < BUSY:
        why = (
            "the load side (generator + emulator) is the bottleneck"
            if busy_load >= BUSY
            else "neither core was saturated: latency-bound, or disturbed (see other processes)"
        )
        ctx.warn(
            f"{target}: the server used {busy_srv:.0%} of its core, the load core was {busy_load:.0%} busy: "
            f"{why}; this req/s is below the server's capacity"
        )
    for key, what in (("server_core", "of the server's core"), ("load_core", "of the load core"),
                      ("steal", "(hypervisor steal) of a core")):  # fmt: skip
        share = max((r["other_processes_busy"][key] or 0.0) for r in rounds)
        if share > OTHER_LOAD:
            ctx.warn(
                f"{target}: other processes took {share:.0%} {what} during a measured phase: results "
                "disturbed (is something else running? run again when the machine is quiet)"
            )
    return res


HIT_TARGETS = ("hookgate-cached", "hookgate-redis", "hookgate-tiered")
"""Targets whose every measured answer should be a cache HIT."""


def cache_checks(ctx: Context, res: dict[str, Any]) -> None:
    c, n = res["cache_header"], res["requests"]
    if res["target"] in HIT_TARGETS:
        not_hit = (sum(c.values()) - c["hit"]) + max(0, n - sum(c.values()))
        if not_hit:
            ctx.warn(f"{res['target']}: {not_hit} of {n} answers were not x-hookgate-cache: HIT ({c})")
    elif res["target"].startswith("hookgate"):
        if c["hit"]:
            ctx.warn(f"{res['target']}: {c['hit']} answers were cache HITs although the cache is off")
        if sum(c.values()) < n:
            ctx.warn(f"{res['target']}: {n - sum(c.values())} of {n} answers had no x-hookgate-cache header")


def start_server(ctx: Context, name: str, argv: list[str], port: int, ready: str) -> Server:
    srv = Server(name, argv, port, ctx.args.server_core, ctx.tmp / f"{name}.log")
    srv.start()
    try:
        srv.wait_ready(ready, ctx.bodies[False].read_bytes(), ctx.args.startup_timeout)
        time.sleep(0.3)  # idle a moment before reading its resident memory
        srv.idle_memory = proc_memory_kib(srv.pid)
    except BaseException:
        srv.stop()
        raise
    return srv


def hookgate_argv(ctx: Context, config_name: str, port: int) -> list[str]:
    assert ctx.upstream is not None
    template = (CONFIG_DIR / config_name).read_text()
    text = template.replace("UPSTREAM_PORT", str(ctx.upstream.port))
    if "REDIS_PORT" in text:
        text = text.replace("REDIS_PORT", str(start_redis(ctx).port))
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BenchError(f"{CONFIG_DIR / config_name} is not valid TOML: {e}") from e
    config = ctx.tmp / config_name
    config.write_text(text)
    exe = find_hookgate()
    if ctx.args.hookgate_cmd == DEFAULT_HOOKGATE_CMD and exe is None:
        raise BenchError(
            "hookgate: the `hookgate` command is not installed (pip install -e '.[test,fast]' "
            "from the repo root provides it)"
        )
    if ctx.args.hookgate_cmd == DEFAULT_HOOKGATE_CMD and importlib.util.find_spec("hookgate.cli") is None:
        raise BenchError("hookgate: `hookgate serve` is not runnable yet: module hookgate.cli does not exist")
    return shlex.split(
        ctx.args.hookgate_cmd.format(
            hookgate=exe or "hookgate", python=sys.executable, config=config, host=HOST, port=port
        )
    )


def start_redis(ctx: Context) -> Server:
    """The redis-server of the redis_cache targets (one per run, started on first use), on the
    load core beside the upstream: like the emulator, it is the server's dependency, not the
    server under test."""
    if ctx.redis is not None:
        return ctx.redis
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis_cache targets need redis-server (apt-get install -y redis-server)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", str(ctx.tmp)]
    redis = Server("redis-server", argv, port, ctx.args.load_core, ctx.tmp / "redis.log")
    redis.start()
    deadline = time.monotonic() + ctx.args.startup_timeout
    while True:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            break
        except OSError:
            if (redis.proc is not None and redis.proc.poll() is not None) or time.monotonic() > deadline:
                redis.stop()
                raise redis._failed("did not accept connections") from None
            time.sleep(0.02)
    ctx.redis = redis
    return redis


def find_hookgate() -> str | None:
    beside = Path(sys.executable).parent / "hookgate"
    return str(beside) if beside.exists() else shutil.which("hookgate")


def server_info(srv: Server) -> dict[str, Any]:
    return {
        "startup_to_ready_s": round(srv.startup_s, 4) if srv.startup_s is not None else None,
        "idle_memory_kib": srv.idle_memory,
        "command": shlex.join(srv.argv),
    }


def run_group(
    ctx: Context, results: dict[str, Any], group: list[tuple[str, bool]], make: Any, info_key: str | None
) -> None:
    """Start one server (make() -> Server), measure the targets that use it, stop it.
    A failure marks each of the group's targets failed with the reason and the run goes on."""
    group = [(t, s) for t, s in group if t in ctx.args.targets]
    if not group:
        return
    srv = None
    try:
        srv = make()
        if info_key:
            results["servers"][info_key] = server_info(srv)
            print(
                f"  {info_key}: ready (GET /healthz 200) {srv.startup_s:.3f} s after start, "
                f"idle RSS {srv.idle_memory['VmRSS'] / 1024:.1f} MiB",
                flush=True,
            )
        for target, stream in group:
            if srv.proc is not None and srv.proc.poll() is not None:
                raise srv._failed(f"exited with code {srv.proc.returncode}")
            print(f"  measuring {target} ...", flush=True)
            try:
                res = measure(ctx, target, srv, stream)
            except BenchError as e:
                results["targets"][target] = {"target": target, "error": str(e)}
                ctx.warn(f"{target} FAILED: {e}")
                continue
            cache_checks(ctx, res)
            results["targets"][target] = res
    except BenchError as e:
        for target, _ in group:
            if target not in results["targets"]:
                results["targets"][target] = {"target": target, "error": str(e)}
        ctx.warn(f"{', '.join(t for t, _ in group)} FAILED: {e}")
    finally:
        if srv is not None:
            srv.stop()


# --------------------------------------------------------------------------- report


def fmt(v: Any, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def cache_summary(c: dict[str, int] | None) -> str:
    if not c or not any(c.values()):
        return "-"
    return " ".join(f"{k.upper()}:{v}" for k, v in c.items() if v)


def report(results: dict[str, Any]) -> None:
    t = results["targets"]
    print()
    head = (
        f"{'target':<17} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10} {'srv core':>8} "
        f"{'load core':>9}  x-hookgate-cache"
    )
    print(head)
    print("-" * len(head))
    for name in ALL_TARGETS:
        r = t.get(name)
        if r is None:
            continue
        if "error" in r:
            print(f"{name:<17} FAILED: {r['error'].splitlines()[0]}")
            continue
        print(
            f"{name:<17} {fmt(r['rps'], '8.0f')} {fmt(r['p50_ms'], '8.2f')} {fmt(r['p99_ms'], '8.2f')} "
            f"{fmt(r['cpu_us_per_request'], '10.0f')} {fmt(r['server_core_busy'], '8.0%')} "
            f"{fmt(r['load_core_busy'], '9.0%')}  {cache_summary(r['cache_header'])}"
        )
    rounds = results["params"]["rounds"]
    if rounds > 1:
        print(f"(each figure: the median of {rounds} rounds; every round is in the JSON)")
    print()
    if not results["ratios"] and any(k in t for k in ("hookgate", "hookgate-cached", "hookgate-stream")):
        print("hookgate relative to the forwarder: not available (a hookgate target or the forwarder failed)\n")
    if results["ratios"]:
        print("hookgate relative to the bare forwarder (throughput: >1 is faster; CPU/request: >1 costs more):")
        for ratio in results["ratios"].values():
            print(
                f"  {ratio['target']:<17} vs {ratio['baseline']:<17} throughput x{ratio['throughput']:.2f}   "
                f"CPU/request x{ratio['cpu_per_request']:.2f}   p50 latency x{ratio['p50']:.2f}"
            )
        print()
    for key, s in results["servers"].items():
        mem = s.get("idle_memory_kib") or {}
        print(
            f"{key}: start -> GET /healthz 200 in {fmt(s['startup_to_ready_s'], '.3f')} s; "
            f"idle RSS {fmt(mem.get('VmRSS', 0) / 1024, '.1f')} MiB"
        )


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    t = results["targets"]
    out: dict[str, Any] = {}
    for target, base in (
        ("hookgate", "forwarder"),
        ("hookgate-cached", "forwarder"),
        ("hookgate-redis", "forwarder"),
        ("hookgate-tiered", "forwarder"),
        ("hookgate-stream", "forwarder-stream"),
    ):
        a, b = t.get(target), t.get(base)
        if not a or not b or "error" in a or "error" in b:
            continue
        if not (b["rps"] and b["cpu_us_per_request"] and b["p50_ms"]):
            continue
        out[f"{target}/{base}"] = {
            "target": target,
            "baseline": base,
            "throughput": a["rps"] / b["rps"],
            "cpu_per_request": a["cpu_us_per_request"] / b["cpu_us_per_request"],
            "p50": a["p50_ms"] / b["p50_ms"],
            "p99": a["p99_ms"] / b["p99_ms"],
        }
    return out


def no_nan(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: no_nan(x) for k, x in v.items()}
    if isinstance(v, list):
        return [no_nan(x) for x in v]
    return v


def environment(args: argparse.Namespace, gen: Any) -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = (
            subprocess.run(
                ["git", "-C", str(BENCH_DIR), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "clk_tck": CLK_TCK,
        "git_commit": commit,
        "versions": {d: version(d) for d in ("hookgate", "aiohttp", "uvloop", "openai", "orjson", "pluggy")},
        "generator": gen.name,
        "generator_version": gen.version,
        "server_core": args.server_core,
        "load_core": args.load_core,
        "event_loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",  # forwarder's and hookgate's
        "emulator_cmd": args.emulator_cmd,
        "hookgate_cmd": args.hookgate_cmd,
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="hookgate overhead benchmark (see bench/README.md)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("-n", "--requests", type=int, default=2000, help="measured requests per target")
    p.add_argument("-c", "--concurrency", type=int, default=32, help="connections kept busy at once")
    p.add_argument("--warmup", type=int, default=300, help="requests sent to each target before measuring")
    p.add_argument("--rounds", type=int, default=1, help="measured phases per target; figures are medians")
    p.add_argument(
        "--targets", default=",".join(ALL_TARGETS), help=f"comma-separated subset of: {','.join(ALL_TARGETS)}"
    )
    p.add_argument("--no-stream", action="store_true", help="skip the *-stream targets")
    p.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto", help="auto: wrk if installed")
    p.add_argument("--server-core", type=int, default=0, help="core the server under test is pinned to")
    p.add_argument("--load-core", type=int, default=1, help="core for the load generator and the emulator")
    p.add_argument("--max-seconds", type=float, default=120, help="time cap for one load phase")
    p.add_argument("--startup-timeout", type=float, default=30, help="seconds a server may take to answer")
    p.add_argument("--emulator-cmd", default=DEFAULT_EMULATOR_CMD, help="template: {python} {port}")
    p.add_argument(
        "--hookgate-cmd", default=DEFAULT_HOOKGATE_CMD, help="template: {hookgate} {python} {config} {host} {port}"
    )
    p.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    args = p.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in ALL_TARGETS]
    if unknown:
        p.error(f"unknown targets: {', '.join(unknown)}")
    if args.no_stream:
        targets = [t for t in targets if not t.endswith("-stream")]
    args.targets = targets
    if args.requests < 1 or args.concurrency < 1 or args.rounds < 1 or args.warmup < 0:
        p.error("--requests, --concurrency and --rounds must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cores = sorted(os.sched_getaffinity(0))
    if args.server_core == args.load_core or not {args.server_core, args.load_core} <= set(cores):
        print(f"WARNING: cores {args.server_core}/{args.load_core} not usable (have {cores}); not pinning")
        args.server_core = args.load_core = None
    elif not shutil.which("taskset"):
        print("WARNING: taskset not found; not pinning")
        args.server_core = args.load_core = None
    if args.load_core is not None:
        os.sched_setaffinity(0, {args.load_core})  # this process (and the python generator) too

    gen: WrkGenerator | PythonGenerator
    if args.generator in ("auto", "wrk") and shutil.which("wrk"):
        gen = WrkGenerator(args.load_core, args.max_seconds)
    elif args.generator == "wrk":
        print("wrk not found: apt-get install -y wrk (or --generator python)")
        return 2
    else:
        if args.generator == "auto":
            print("NOTE: wrk not found (apt-get install -y wrk); using the Python aiohttp client, which")
            print("      saturates its core sooner: watch the 'load core' column and the warnings.")
        gen = PythonGenerator(args.max_seconds)

    emulator_missing = importlib.util.find_spec("hookgate.testing.openai_emulator") is None
    if args.emulator_cmd == DEFAULT_EMULATOR_CMD and emulator_missing:
        print("ERROR: the upstream emulator hookgate.testing.openai_emulator (core/testing/openai_emulator.py)")
        print("       does not exist yet; pass another one with --emulator-cmd '... --port {port}'")
        return 2

    results: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "params": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "targets": args.targets,
        },  # fmt: skip
        "environment": environment(args, gen),
        "servers": {},
        "targets": {},
        "ratios": {},
        "warnings": [],
    }
    print(
        f"hookgate overhead benchmark: {args.requests} requests at concurrency {args.concurrency} per target "
        f"(after {args.warmup} warm-up{f', median of {args.rounds} rounds' if args.rounds > 1 else ''}), "
        f"generator {gen.name}; server on core {args.server_core}, "
        f"generator + emulator on core {args.load_core}",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="hookgate-bench-") as tmpdir:
        tmp = Path(tmpdir)
        bodies = {False: tmp / "body.json", True: tmp / "body-stream.json"}
        for stream, path in bodies.items():
            path.write_bytes(request_body(stream))
        ctx = Context(args, gen, tmp, bodies)

        def emulator_argv(port: int) -> list[str]:
            return shlex.split(args.emulator_cmd.format(python=sys.executable, port=port))

        # the upstream for every proxied target, on the load core
        port = free_port()
        upstream = Server("emulator (upstream)", emulator_argv(port), port, args.load_core, tmp / "upstream.log")
        try:
            upstream.start()
            try:
                upstream.wait_ready("post", bodies[False].read_bytes(), args.startup_timeout)
            except BenchError as e:
                print(f"ERROR: the upstream emulator did not start: {e}")
                return 2
            ctx.upstream = upstream

            def make_emulator() -> Server:
                # target 1 measures the emulator itself, so it gets its own instance on the server core
                port = free_port()
                return start_server(ctx, "emulator", emulator_argv(port), port, "post")

            def make_forwarder() -> Server:
                port = free_port()
                argv = [sys.executable, str(BENCH_DIR / "forwarder.py"), "--host", HOST, "--port", str(port),
                        "--upstream", f"http://{HOST}:{upstream.port}"]  # fmt: skip
                return start_server(ctx, "forwarder", argv, port, "healthz")

            def make_hookgate(config_name: str) -> Any:
                def make() -> Server:
                    port = free_port()
                    return start_server(ctx, "hookgate", hookgate_argv(ctx, config_name, port), port, "healthz")

                return make

            run_group(ctx, results, [("emulator", False), ("emulator-stream", True)], make_emulator, None)
            run_group(ctx, results, [("forwarder", False), ("forwarder-stream", True)], make_forwarder, "forwarder")
            run_group(
                ctx, results, [("hookgate", False), ("hookgate-stream", True)],
                make_hookgate("hookgate-cache-off.toml"), "hookgate (cache off)",
            )  # fmt: skip
            run_group(
                ctx, results, [("hookgate-cached", False)],
                make_hookgate("hookgate-cache-on.toml"), "hookgate (memory_cache)",
            )  # fmt: skip
            run_group(
                ctx, results, [("hookgate-redis", False)],
                make_hookgate("hookgate-redis-hit.toml"), "hookgate (redis_cache)",
            )  # fmt: skip
            run_group(
                ctx, results, [("hookgate-tiered", False)],
                make_hookgate("hookgate-tiered-hit.toml"), "hookgate (memory_cache + redis_cache)",
            )  # fmt: skip
        finally:
            upstream.stop()
            if ctx.redis is not None:
                ctx.redis.stop()

    results["ratios"] = ratios(results)
    results["warnings"] = ctx.warnings
    fw = results["targets"].get("forwarder")
    if fw and "error" not in fw and (fw["server_core_busy"] or 0) < BUSY:
        msg = (
            f"the forwarder used only {fw['server_core_busy']:.0%} of its core at {fw['rps']:.0f} req/s: "
            "the generator or the emulator limited it, so the ratios to it are not a fair CPU-bound comparison"
        )
        print(f"  WARNING: {msg}")
        results["warnings"].append(msg)
    report(results)

    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.results_dir / f"overhead-{stamp}.json"
    out.write_text(json.dumps(no_nan(results), indent=2, allow_nan=False, default=str) + "\n")
    print(f"\nresults: {out}")
    if results["warnings"]:
        print(f"{len(results['warnings'])} warning(s), listed above and in the JSON")
    failed = [t for t, r in results["targets"].items() if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
