"""hookgate overhead benchmark: the same load against the emulator, a bare forwarder and hookgate.

One run measures, side by side, with the server under test alone on one core:

  emulator          the upstream emulator itself (what any proxy in front of it adds to)
  forwarder         bench/forwarder.py, a bare aiohttp forwarder to the emulator (the baseline)
  hookgate          hookgate, openai provider -> emulator, no cache in the pipeline (all MISS)
  hookgate-reliable the same behind retry, circuit_breaker, concurrency and timeout (all MISS)
  hookgate-http, hookgate-sdk  the "hookgate" pipeline with the openai provider's transport set
                    explicitly: the shared aiohttp pool, or the official openai SDK (all MISS)
  hookgate-cached   hookgate answering from memory_cache (same body every time: all HIT)
  hookgate-redis    hookgate answering from redis_cache (all HIT from Redis; needs redis-server)
  hookgate-tiered   memory_cache in front of redis_cache (all HIT from memory, Redis enabled)
  hookgate-anthropic  hookgate, anthropic provider -> Anthropic emulator (the same client body,
                    routed to claude-haiku-4-5 and translated both ways)
  emulator-stream, forwarder-stream, hookgate-stream, hookgate-reliable-stream, hookgate-http-stream, hookgate-sdk-stream,
  hookgate-anthropic-stream
                    the same with "stream": true (SSE)
  anthropic-emulator-stream  the Anthropic emulator itself, streaming (Messages API body)

and prints requests/s, p50/p99 latency, the server's CPU time per request, SSE chunks per streamed
answer, hookgate's ratios to the forwarder (and of one hookgate configuration to another), the
streaming cost per chunk, hookgate's idle RSS and its time from process start to GET /healthz = 200.
Results also go to bench/results/overhead-*.json. See bench/README.md.

    python bench/overhead.py                 # 2,000 requests at concurrency 32 per target
    python bench/overhead.py -n 5000 -c 64 --targets forwarder,hookgate
    python bench/overhead.py --targets hookgate-stream,hookgate-anthropic-stream --prompt-words 120
    python bench/overhead.py --compare        # issue 13's goals as ratios, LiteLLM included (bench/compare.py)
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
# what the hookgate-anthropic* configs route MODEL to, and the model of anthropic-emulator-stream
ANTHROPIC_MODEL = "claude-haiku-4-5"
API_KEY = "sk-bench"
CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"
# the anthropic-version header the installed anthropic SDK (2.14) sends; the Anthropic emulator
# requires one, so anthropic-emulator-stream sends the same as hookgate's anthropic provider
ANTHROPIC_VERSION = "2026-10-21"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# the user prompt of every request: its words are echoed back one SSE chunk per word, so the
# prompt's length sets how many chunks a streamed answer has (--prompt-words; 30 by default)
PROMPT = (
    "Summarise in a few sentences why a gateway in front of several language model providers "
    "should retry failed calls, cache repeated answers, and keep each provider's errors in one shape."
)
PROMPT_WORDS = PROMPT.split()  # 30

ALL_TARGETS = (
    "emulator",
    "forwarder",
    "hookgate",
    "hookgate-reliable",
    "hookgate-http",
    "hookgate-sdk",
    "hookgate-cached",
    "hookgate-redis",
    "hookgate-tiered",
    "hookgate-anthropic",
    "emulator-stream",
    "anthropic-emulator-stream",
    "forwarder-stream",
    "hookgate-stream",
    "hookgate-reliable-stream",
    "hookgate-http-stream",
    "hookgate-sdk-stream",
    "hookgate-anthropic-stream",
)
DEFAULT_EMULATOR_CMD = "{python} -m hookgate.testing.openai_emulator --port {port}"
DEFAULT_ANTHROPIC_EMULATOR_CMD = "{python} -m hookgate.testing.anthropic_emulator --port {port}"
DEFAULT_HOOKGATE_CMD = "{hookgate} serve --config {config} --host {host} --port {port}"
# the server's core is "busy" above this share of one core; the load side "saturated" above it
BUSY = 0.85
# other processes on our two cores above this share of one core make a result suspect
OTHER_LOAD = 0.10


class BenchError(Exception):
    """A target cannot be measured; the message says why."""


@dataclass(frozen=True)
class Api:
    """The API a client speaks to a target: the path it POSTs to and its extra headers
    (every request also sends Content-Type: application/json and Authorization: Bearer)."""

    name: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()


OPENAI_API = Api("openai", CHAT_PATH)
ANTHROPIC_API = Api("anthropic", MESSAGES_PATH, (("anthropic-version", ANTHROPIC_VERSION),))


def target_api(target: str) -> Api:
    """Only the Anthropic emulator measured directly is spoken to in the Messages API."""
    return ANTHROPIC_API if target.startswith("anthropic-emulator") else OPENAI_API


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
    port: int, method: str, path: str, body: bytes | None = None, timeout: float = 10.0, api: Api = OPENAI_API
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}", **dict(api.headers)}
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

    def wait_ready(self, how: str, probe_body: bytes, timeout: float, api: Api = OPENAI_API) -> None:
        """how="healthz": GET /healthz until 200 (startup time measured that way);
        how="post": POST the bench body to api.path until 200 (for an emulator, which has no
        /healthz)."""
        assert self.proc is not None
        deadline = self.spawned_at + timeout
        while True:
            if self.proc.poll() is not None:
                raise self._failed(f"exited with code {self.proc.returncode} before answering")
            try:
                if how == "healthz":
                    status, _, _ = http_request(self.port, "GET", "/healthz", timeout=1.0)
                else:
                    status, _, _ = http_request(self.port, "POST", api.path, probe_body, timeout=2.0, api=api)
                if status == 200:
                    self.startup_s = time.monotonic() - self.spawned_at
                    return
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                what = "GET /healthz" if how == "healthz" else f"POST {api.path}"
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

    def run(self, port: int, api: Api, body_path: Path, requests: int, concurrency: int) -> LoadResult:
        prefix = ["taskset", "-c", str(self.core)] if self.core is not None else []
        argv = prefix + [
            self.wrk, "-t1", f"-c{concurrency}", f"-d{math.ceil(self.max_seconds)}s", "--timeout", "30s",
            "-s", str(LUA_SCRIPT), f"http://{HOST}:{port}{api.path}",
            "--", str(body_path), str(requests), API_KEY, *(f"{k}: {v}" for k, v in api.headers),
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

    def run(self, port: int, api: Api, body_path: Path, requests: int, concurrency: int) -> LoadResult:
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        try:
            import uvloop

            res = uvloop.run(self._run(port, api, body_path.read_bytes(), requests, concurrency))
        except ImportError:
            res = asyncio.run(self._run(port, api, body_path.read_bytes(), requests, concurrency))
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        res.generator_cpu_s = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
        return res

    async def _run(self, port: int, api: Api, body: bytes, requests: int, concurrency: int) -> LoadResult:
        import aiohttp

        url = f"http://{HOST}:{port}{api.path}"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}", **dict(api.headers)}
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


def prompt(words: int) -> str:
    """The user prompt: PROMPT_WORDS, repeated as needed, cut to `words` words."""
    return " ".join(PROMPT_WORDS[i % len(PROMPT_WORDS)] for i in range(words))


def request_body(api: Api, stream: bool, words: int) -> bytes:
    """The body every request of a target sends. Both emulators answer "emulated: " + the user
    prompt, one SSE chunk per word, so a streamed answer has words + 1 text chunks. For the
    Messages API it is the body hookgate's anthropic provider sends for the OpenAI one (same
    keys, in the same order), so anthropic-emulator-stream is the floor of hookgate-anthropic-stream."""
    system, user = "You are a concise assistant.", prompt(words)
    max_tokens = max(64, 2 * words)  # room for the whole echo: the Anthropic emulator cuts at max_tokens
    body: dict[str, Any]
    if api is ANTHROPIC_API:
        body = {"model": ANTHROPIC_MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": user}],
                "system": system}  # fmt: skip
    else:
        body = {"model": MODEL, "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
                "max_tokens": max_tokens}  # fmt: skip
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def sse_events(data: bytes) -> list[tuple[str | None, str]]:
    """(event name or None, data) of each SSE event in a whole answer."""
    events: list[tuple[str | None, str]] = []
    for block in data.decode(errors="replace").replace("\r\n", "\n").split("\n\n"):
        name, lines = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                lines.append(line[5:].removeprefix(" "))
        if lines:
            events.append((name, "\n".join(lines)))
    return events


# a streamed answer with fewer text chunks than this is not the answer the bench means to measure
MIN_TEXT_CHUNKS = 2


def check_stream(name: str, api: Api, data: bytes) -> dict[str, int]:
    """Is this SSE a whole streamed answer? Returns its chunk counts: `events`, the SSE events
    with data (OpenAI's closing [DONE] not counted), and `text`, those carrying answer text."""
    snippet = data[:300].decode(errors="replace")
    events = sse_events(data)
    if not events:
        raise BenchError(f"{name}: SSE answer has no data: lines: {snippet}")
    text = 0
    try:
        if api is ANTHROPIC_API:
            docs = [json.loads(d) for _, d in events]
            kinds = [doc.get("type") for doc in docs]
            if kinds[0] != "message_start" or kinds[-1] != "message_stop":
                raise BenchError(f"{name}: the Messages stream does not run message_start .. message_stop: {kinds}")
            text = sum(1 for doc in docs if doc.get("type") == "content_block_delta"
                       and doc["delta"].get("type") == "text_delta" and doc["delta"].get("text"))  # fmt: skip
            count = len(events)
        else:
            if events[-1][1] != "[DONE]":
                raise BenchError(f"{name}: the stream does not end with data: [DONE]: {data[-200:]!r}")
            chunks = [json.loads(d) for _, d in events[:-1]]
            if any(c.get("object") != "chat.completion.chunk" for c in chunks):
                raise BenchError(f"{name}: an SSE event is not a chat.completion.chunk: {snippet}")
            text = sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content"))
            if not any(c["choices"] and c["choices"][0].get("finish_reason") for c in chunks):
                raise BenchError(f"{name}: no chunk has a finish_reason: {snippet}")
            count = len(chunks)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise BenchError(f"{name}: malformed SSE answer ({e!r}): {snippet}") from e
    if text < MIN_TEXT_CHUNKS:
        raise BenchError(f"{name}: the streamed answer has {text} text chunks (expected >= {MIN_TEXT_CHUNKS}): {snippet}")
    return {"events": count, "text": text}


# targets whose point is one provider: their answers must carry this x-hookgate-provider (the
# other templates may be edited to measure any pipeline, so their provider is not checked)
EXPECTED_PROVIDER = {"hookgate-anthropic": "anthropic", "hookgate-anthropic-stream": "anthropic"}


def check_answer(name: str, port: int, api: Api, body: bytes, stream: bool) -> dict[str, Any]:
    """One request before the load: is the answer a real chat completion (a Messages API answer
    for the Anthropic emulator)? Returns its cache header and, for a stream, its chunk counts."""
    try:
        status, headers, data = http_request(port, "POST", api.path, body, timeout=30, api=api)
    except (OSError, http.client.HTTPException) as e:
        raise BenchError(f"{name}: probe request failed: {e}") from e
    snippet = data[:300].decode(errors="replace")
    if status != 200:
        raise BenchError(f"{name}: probe request answered {status}: {snippet}")
    expected = EXPECTED_PROVIDER.get(name)
    if expected is not None:
        if headers.get("x-hookgate-provider") != expected:
            raise BenchError(
                f"{name}: answered by provider {headers.get('x-hookgate-provider')!r}, expected {expected!r}"
            )
    chunks = None
    if stream:
        if "text/event-stream" not in headers.get("content-type", ""):
            raise BenchError(f"{name}: stream=true answered {headers.get('content-type')!r}, not SSE: {snippet}")
        chunks = check_stream(name, api, data)
    else:
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise BenchError(f"{name}: answer is not JSON: {snippet}") from e
        if api is ANTHROPIC_API:
            if not isinstance(doc, dict) or doc.get("type") != "message" or not doc.get("content"):
                raise BenchError(f"{name}: answer is not a Messages API message: {snippet}")
        elif (
            not isinstance(doc, dict)
            or not doc.get("choices")
            or not isinstance(doc["choices"][0].get("message"), dict)
            or not doc["choices"][0]["message"].get("content")
        ):
            raise BenchError(f"{name}: answer has no choices with content: {snippet}")
    return {"cache": headers.get("x-hookgate-cache"), "chunks": chunks}


@dataclass
class Context:
    args: argparse.Namespace
    gen: WrkGenerator | PythonGenerator
    tmp: Path
    bodies: dict[tuple[Api, bool], Path]
    upstream: Server | None = None
    anthropic: Server | None = None  # the Anthropic emulator upstream, started on first use
    redis: Server | None = None
    warnings: list[str] = field(default_factory=list)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        print(f"  WARNING: {msg}", flush=True)

    def upstream_of(self, target: str) -> Server | None:
        """The upstream whose CPU counts as load-side for this target (on the load core)."""
        return self.anthropic if target.startswith("hookgate-anthropic") else self.upstream


def measure_round(ctx: Context, server: Server, api: Api, body_path: Path, upstream: Server | None) -> dict[str, Any]:
    """One measured phase, with /proc CPU readings around it."""
    a = ctx.args
    cpu0 = settle_cpu(server.pid)
    up0 = proc_cpu_seconds(upstream.pid) if upstream is not None and upstream is not server else None
    cores = {a.server_core, a.load_core}
    ticks0, self0, wall0 = core_ticks(cores), time.process_time(), time.monotonic()
    r = ctx.gen.run(server.port, api, body_path, a.requests, a.concurrency)
    ticks1, self1, wall1 = core_ticks(cores), time.process_time(), time.monotonic()
    srv_at_end = proc_cpu_seconds(server.pid)
    up_at_end = proc_cpu_seconds(upstream.pid) if upstream is not None and up0 is not None else None
    cpu1 = settle_cpu(server.pid)  # the requests in flight at the stop are still served
    up1 = settle_cpu(upstream.pid) if upstream is not None and up0 is not None else None
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
    api = target_api(target)
    body_path = ctx.bodies[(api, stream)]
    upstream = ctx.upstream_of(target)
    probe = check_answer(target, server.port, api, body_path.read_bytes(), stream)
    if a.warmup:
        ctx.gen.run(server.port, api, body_path, a.warmup, a.concurrency)
    rounds = [measure_round(ctx, server, api, body_path, upstream) for _ in range(a.rounds)]
    res: dict[str, Any] = {"target": target, "stream": stream, "server_pid": server.pid, "api": api.name,
                           "path": api.path}  # fmt: skip
    res.update({k: median([r[k] for r in rounds]) for k in MEDIAN_KEYS})
    res["requests"] = sum(r["requests"] for r in rounds)
    res["cache_header"] = {k: sum(r["cache_header"][k] for r in rounds) for k in rounds[0]["cache_header"]}
    res["probe_cache_header"] = probe["cache"]
    # a streamed answer's SSE events with data ([DONE] not counted) and those carrying text; the
    # answer is deterministic, so the probe's counts are every measured answer's
    chunks = probe["chunks"] or {}
    res["chunks_per_answer"] = chunks.get("events")
    res["text_chunks_per_answer"] = chunks.get("text")
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


def start_server(ctx: Context, name: str, argv: list[str], port: int, ready: str, api: Api = OPENAI_API) -> Server:
    srv = Server(name, argv, port, ctx.args.server_core, ctx.tmp / f"{name}.log")
    srv.start()
    try:
        srv.wait_ready(ready, ctx.bodies[(api, False)].read_bytes(), ctx.args.startup_timeout, api=api)
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
    if "ANTHROPIC_PORT" in text:
        text = text.replace("ANTHROPIC_PORT", str(start_anthropic(ctx).port))
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


def anthropic_emulator_argv(ctx: Context, port: int) -> list[str]:
    return shlex.split(ctx.args.anthropic_emulator_cmd.format(python=sys.executable, port=port))


def start_anthropic(ctx: Context) -> Server:
    """The Anthropic emulator upstream of the hookgate-anthropic* targets (one per run, started
    on first use), on the load core like the OpenAI emulator upstream."""
    if ctx.anthropic is not None:
        return ctx.anthropic
    if (
        ctx.args.anthropic_emulator_cmd == DEFAULT_ANTHROPIC_EMULATOR_CMD
        and importlib.util.find_spec("hookgate.testing.anthropic_emulator") is None
    ):
        raise BenchError("the Anthropic emulator hookgate.testing.anthropic_emulator is not installed")
    port = free_port()
    srv = Server("anthropic emulator (upstream)", anthropic_emulator_argv(ctx, port), port, ctx.args.load_core,
                 ctx.tmp / "anthropic-upstream.log")  # fmt: skip
    srv.start()
    try:
        srv.wait_ready("post", ctx.bodies[(ANTHROPIC_API, False)].read_bytes(), ctx.args.startup_timeout, api=ANTHROPIC_API)
    except BaseException:
        srv.stop()
        raise
    ctx.anthropic = srv
    return srv


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


NAME_W = 25  # the longest target name


def report(results: dict[str, Any]) -> None:
    t = results["targets"]
    print()
    head = (
        f"{'target':<{NAME_W}} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10} {'srv core':>8} "
        f"{'load core':>9} {'chunks':>6}  x-hookgate-cache"
    )
    print(head)
    print("-" * len(head))
    for name in ALL_TARGETS:
        r = t.get(name)
        if r is None:
            continue
        if "error" in r:
            print(f"{name:<{NAME_W}} FAILED: {r['error'].splitlines()[0]}")
            continue
        print(
            f"{name:<{NAME_W}} {fmt(r['rps'], '8.0f')} {fmt(r['p50_ms'], '8.2f')} {fmt(r['p99_ms'], '8.2f')} "
            f"{fmt(r['cpu_us_per_request'], '10.0f')} {fmt(r['server_core_busy'], '8.0%')} "
            f"{fmt(r['load_core_busy'], '9.0%')} {fmt(r.get('chunks_per_answer'), '6d')}  "
            f"{cache_summary(r['cache_header'])}"
        )
    rounds = results["params"]["rounds"]
    if rounds > 1:
        print(f"(each figure: the median of {rounds} rounds; every round is in the JSON)")
    print("(chunks: SSE events with data per streamed answer, OpenAI's closing [DONE] not counted)")
    print()
    if not results["ratios"] and any(k in t for k in ("hookgate", "hookgate-cached", "hookgate-stream")):
        print("hookgate relative to the forwarder: not available (a hookgate target or the forwarder failed)\n")
    for title, to_forwarder in (
        ("hookgate relative to the bare forwarder (throughput: >1 is faster; CPU/request: >1 costs more):", True),
        ("one hookgate configuration relative to another (what the difference costs):", False),
    ):
        rows = [r for r in results["ratios"].values() if r["baseline"].startswith("forwarder") == to_forwarder]
        if not rows:
            continue
        print(title)
        for ratio in rows:
            print(
                f"  {ratio['target']:<{NAME_W}} vs {ratio['baseline']:<19} throughput x{ratio['throughput']:.2f}   "
                f"CPU/request x{ratio['cpu_per_request']:.2f} ({ratio['cpu_delta_us']:+.0f} us)   "
                f"p50 latency x{ratio['p50']:.2f}"
            )
        print()
    st = results.get("streaming") or {}
    if st.get("answers"):
        print("streamed answers: SSE events (text chunks) per answer, server CPU per request and per text chunk:")
        for a in st["answers"]:
            print(
                f"  {a['target']:<{NAME_W}} {a['chunks']:>4} events ({a['text_chunks']} text)  "
                f"{a['cpu_us_per_request']:6.0f} us/request  {a['cpu_us_per_text_chunk']:5.1f} us per text chunk"
            )
        print()
    if st.get("streaming_cost"):
        print("cost of streaming an answer, per text chunk: (CPU/request streamed - unstreamed) / text chunks:")
        for c in st["streaming_cost"]:
            print(
                f"  {c['target']:<{NAME_W}} ({c['stream_cpu_us']:.0f} - {c['plain_cpu_us']:.0f}) / {c['text_chunks']}"
                f" = {c['us_per_text_chunk']:.1f} us per text chunk"
            )
        print()
    tr = st.get("translation")
    if tr:
        print(
            f"Anthropic translation per streamed answer: {tr['target']} - {tr['baseline']} = "
            f"{tr['cpu_delta_us']:+.0f} us CPU/request, {tr['us_per_text_chunk']:+.1f} us per text chunk "
            f"({tr['text_chunks']} text chunks; includes the SDKs' per-request difference)"
        )
        print()
    for key, s in results["servers"].items():
        mem = s.get("idle_memory_kib") or {}
        print(
            f"{key}: start -> GET /healthz 200 in {fmt(s['startup_to_ready_s'], '.3f')} s; "
            f"idle RSS {fmt(mem.get('VmRSS', 0) / 1024, '.1f')} MiB"
        )


RATIOS = (
    ("hookgate", "forwarder"),
    ("hookgate-reliable", "forwarder"),
    ("hookgate-cached", "forwarder"),
    ("hookgate-redis", "forwarder"),
    ("hookgate-tiered", "forwarder"),
    ("hookgate-anthropic", "forwarder"),
    ("hookgate-http", "forwarder"),
    ("hookgate-sdk", "forwarder"),
    ("hookgate-stream", "forwarder-stream"),
    ("hookgate-reliable-stream", "forwarder-stream"),
    ("hookgate-http-stream", "forwarder-stream"),
    ("hookgate-sdk-stream", "forwarder-stream"),
    ("hookgate-anthropic-stream", "forwarder-stream"),
    # what one part of hookgate costs: the reliability chain, the Anthropic provider, a transport
    ("hookgate-reliable", "hookgate"),
    ("hookgate-http", "hookgate-sdk"),
    ("hookgate-http-stream", "hookgate-sdk-stream"),
    ("hookgate-anthropic", "hookgate"),
    ("hookgate-anthropic-stream", "hookgate-stream"),
)


def measured(t: dict[str, Any], name: str) -> dict[str, Any] | None:
    r = t.get(name)
    return r if r and "error" not in r else None


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    t = results["targets"]
    out: dict[str, Any] = {}
    for target, base in RATIOS:
        a, b = measured(t, target), measured(t, base)
        if not a or not b:
            continue
        if not (b["rps"] and b["cpu_us_per_request"] and b["p50_ms"]):
            continue
        out[f"{target}/{base}"] = {
            "target": target,
            "baseline": base,
            "throughput": a["rps"] / b["rps"],
            "cpu_per_request": a["cpu_us_per_request"] / b["cpu_us_per_request"],
            "cpu_delta_us": a["cpu_us_per_request"] - b["cpu_us_per_request"],
            "p50": a["p50_ms"] / b["p50_ms"],
            "p99": a["p99_ms"] / b["p99_ms"],
        }
    return out


# a streamed target and the target answering the same request unstreamed
STREAM_PAIRS = (
    ("emulator-stream", "emulator"),
    ("forwarder-stream", "forwarder"),
    ("hookgate-stream", "hookgate"),
    ("hookgate-reliable-stream", "hookgate-reliable"),
    ("hookgate-http-stream", "hookgate-http"),
    ("hookgate-sdk-stream", "hookgate-sdk"),
    ("hookgate-anthropic-stream", "hookgate-anthropic"),
)


def streaming(results: dict[str, Any]) -> dict[str, Any]:
    """Per streamed target: chunks per answer, CPU per request and per text chunk; the cost of
    streaming per text chunk (streamed minus unstreamed CPU, over the text chunks); and the
    Anthropic path's extra CPU per streamed answer over the OpenAI path's."""
    t = results["targets"]
    out: dict[str, Any] = {"answers": [], "streaming_cost": [], "translation": None}
    for name in ALL_TARGETS:
        r = measured(t, name)
        if not r or not r.get("stream") or not r.get("text_chunks_per_answer") or r["cpu_us_per_request"] is None:
            continue
        out["answers"].append({
            "target": name,
            "chunks": r["chunks_per_answer"],
            "text_chunks": r["text_chunks_per_answer"],
            "cpu_us_per_request": r["cpu_us_per_request"],
            "cpu_us_per_text_chunk": r["cpu_us_per_request"] / r["text_chunks_per_answer"],
        })  # fmt: skip
    for stream_name, plain_name in STREAM_PAIRS:
        a, b = measured(t, stream_name), measured(t, plain_name)
        if not a or not b or not a.get("text_chunks_per_answer") or None in (a["cpu_us_per_request"], b["cpu_us_per_request"]):
            continue
        n = a["text_chunks_per_answer"]
        out["streaming_cost"].append({
            "target": stream_name,
            "unstreamed": plain_name,
            "stream_cpu_us": a["cpu_us_per_request"],
            "plain_cpu_us": b["cpu_us_per_request"],
            "text_chunks": n,
            "us_per_text_chunk": (a["cpu_us_per_request"] - b["cpu_us_per_request"]) / n,
        })  # fmt: skip
    a, b = measured(t, "hookgate-anthropic-stream"), measured(t, "hookgate-stream")
    if a and b and a.get("text_chunks_per_answer") and None not in (a["cpu_us_per_request"], b["cpu_us_per_request"]):
        delta = a["cpu_us_per_request"] - b["cpu_us_per_request"]
        n = a["text_chunks_per_answer"]
        out["translation"] = {
            "target": a["target"], "baseline": b["target"], "cpu_delta_us": delta, "text_chunks": n,
            "us_per_text_chunk": delta / n,
        }  # fmt: skip
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
        "versions": {
            d: version(d) for d in ("hookgate", "aiohttp", "uvloop", "openai", "anthropic", "orjson", "pluggy")
        },
        "generator": gen.name,
        "generator_version": gen.version,
        "server_core": args.server_core,
        "load_core": args.load_core,
        "event_loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",  # forwarder's and hookgate's
        "emulator_cmd": args.emulator_cmd,
        "anthropic_emulator_cmd": args.anthropic_emulator_cmd,
        "anthropic_version": ANTHROPIC_VERSION,
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
    p.add_argument(
        "--prompt-words", type=int, default=30,
        help="words in the user prompt; the emulators echo it, one SSE chunk per word (+1)",
    )  # fmt: skip
    p.add_argument("--emulator-cmd", default=DEFAULT_EMULATOR_CMD, help="template: {python} {port}")
    p.add_argument(
        "--anthropic-emulator-cmd", default=DEFAULT_ANTHROPIC_EMULATOR_CMD,
        help="template: {python} {port}; the Anthropic upstream of the *anthropic* targets",
    )  # fmt: skip
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
    if args.prompt_words < MIN_TEXT_CHUNKS:
        p.error(f"--prompt-words must be >= {MIN_TEXT_CHUNKS}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--compare" in argv:  # issue 13's goals in one table: bench/compare.py (its own flags)
        import compare

        return compare.main([arg for arg in argv if arg != "--compare"])
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
            "prompt_words": args.prompt_words,
        },  # fmt: skip
        "environment": environment(args, gen),
        "servers": {},
        "targets": {},
        "ratios": {},
        "streaming": {},
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
        bodies = {
            (api, stream): tmp / f"body-{api.name}{'-stream' if stream else ''}.json"
            for api in (OPENAI_API, ANTHROPIC_API)
            for stream in (False, True)
        }
        for (api, stream), path in bodies.items():
            path.write_bytes(request_body(api, stream, args.prompt_words))
        ctx = Context(args, gen, tmp, bodies)

        def emulator_argv(port: int) -> list[str]:
            return shlex.split(args.emulator_cmd.format(python=sys.executable, port=port))

        # the upstream for every proxied target, on the load core
        port = free_port()
        upstream = Server("emulator (upstream)", emulator_argv(port), port, args.load_core, tmp / "upstream.log")
        try:
            upstream.start()
            try:
                upstream.wait_ready("post", bodies[(OPENAI_API, False)].read_bytes(), args.startup_timeout)
            except BenchError as e:
                print(f"ERROR: the upstream emulator did not start: {e}")
                return 2
            ctx.upstream = upstream

            def make_emulator() -> Server:
                # target 1 measures the emulator itself, so it gets its own instance on the server core
                port = free_port()
                return start_server(ctx, "emulator", emulator_argv(port), port, "post")

            def make_anthropic_emulator() -> Server:
                # measured directly, like the emulator: its own instance on the server core
                port = free_port()
                argv = anthropic_emulator_argv(ctx, port)
                return start_server(ctx, "anthropic-emulator", argv, port, "post", ANTHROPIC_API)

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
                ctx, results, [("hookgate-reliable", False), ("hookgate-reliable-stream", True)],
                make_hookgate("hookgate-reliable.toml"), "hookgate (retry, circuit_breaker, concurrency, timeout)",
            )  # fmt: skip
            for transport in ("http", "sdk"):
                run_group(
                    ctx, results, [(f"hookgate-{transport}", False), (f"hookgate-{transport}-stream", True)],
                    make_hookgate(f"hookgate-{transport}.toml"), f"hookgate (openai provider, transport = {transport})",
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
            run_group(ctx, results, [("anthropic-emulator-stream", True)], make_anthropic_emulator, None)
            run_group(
                ctx, results, [("hookgate-anthropic", False), ("hookgate-anthropic-stream", True)],
                make_hookgate("hookgate-anthropic.toml"), "hookgate (anthropic provider)",
            )  # fmt: skip
        finally:
            upstream.stop()
            if ctx.anthropic is not None:
                ctx.anthropic.stop()
            if ctx.redis is not None:
                ctx.redis.stop()

    results["ratios"] = ratios(results)
    results["streaming"] = streaming(results)
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
