"""The goals of issue 13, measured side by side in one run and printed as one table of ratios.

    python bench/overhead.py --compare                 # calls this module's main()
    python bench/compare.py --litellm-venv /tmp/litellm-venv -n 3000 --rounds 3

One run, a few minutes, everything on 127.0.0.1, each server pinned alone to core 0 with wrk and
the upstream emulator on core 1 (as bench/overhead.py measures):

* c32 throughput and CPU per request of the bare forwarder, hookgate with the default pipeline
  (``configs/hookgate-reliable.toml``: request_log, retry, circuit_breaker, concurrency,
  timeout, openai; every request a MISS), the same streaming, a memory_cache HIT, a
  redis_cache HIT, and LiteLLM's proxy (``litellm`` from ``--litellm-venv``, a throwaway venv
  outside the repository, pointed at the same emulator), JSON and streaming;
* p50 latency at concurrency 4 through the forwarder and through hookgate to an emulator that
  waits 50 ms before answering: the difference is what hookgate adds;
* start-up (spawn to ``GET /healthz`` 200) and idle RSS of hookgate with the default pipeline,
  median of three starts;
* ``--workers 2`` against ``--workers 1``, both unpinned (the whole machine, shared with wrk
  and the emulator: with two cores that is a lower bound of what two workers give), MISS and HIT.

Each goal is judged on the issue's own measure (req/s at c32, p50 ms, seconds, MiB) and, where
it is a throughput ratio, also on CPU per request (the inverse ratio of CPU µs per request),
which depends far less on what else runs on a shared machine. Exit code 0 when everything was
measured (whatever the verdicts), 1 when a target failed, 2 when the run could not start.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead as ov  # noqa: E402  (bench/ is not a package)

DEFAULT_PIPELINE = "hookgate-reliable.toml"
MEMORY_HIT = "hookgate-cache-on.toml"
REDIS_HIT = "hookgate-redis-hit.toml"
SLOW_UPSTREAM_S = 0.050
LITELLM_CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: http://127.0.0.1:{port}/v1
      api_key: {key}
litellm_settings:
  drop_params: true
  telemetry: false
general_settings:
  # the bench sends no key LiteLLM would know; local, loopback only
  dangerously_permit_weak_or_unset_master_key: true
"""

# (goal, measured key, comparison, threshold, unit)
GOALS = (
    ("miss >= 0.5x the forwarder (c32)", "miss/forwarder", ">=", 0.5, "x"),
    ("miss >= 30x LiteLLM (c32)", "miss/litellm", ">=", 30.0, "x"),
    ("stream miss >= 0.4x the forwarder", "stream/forwarder", ">=", 0.4, "x"),
    ("stream miss >= 40x LiteLLM", "stream/litellm", ">=", 40.0, "x"),
    ("c4 p50 added <= 1 ms at 50 ms upstream", "c4_added_ms", "<=", 1.0, "ms"),
    ("Redis hit >= 0.6x the forwarder", "redis/forwarder", ">=", 0.6, "x"),
    ("memory hit >= 0.9x the forwarder", "memory/forwarder", ">=", 0.9, "x"),
    ("start-up <= 1 s (default pipeline)", "startup_s", "<=", 1.0, "s"),
    ("idle RSS <= 80 MiB (default pipeline)", "idle_rss_mib", "<=", 80.0, "MiB"),
    ("--workers 2 >= 1.8x one worker (miss)", "workers_miss", ">=", 1.8, "x"),
    ("--workers 2 >= 1.8x one worker (hit)", "workers_hit", ">=", 1.8, "x"),
)
COMPARE_TARGETS = ("litellm", "litellm-stream", "forwarder-c4-50ms", "hookgate-c4-50ms")
"""Targets only this comparison measures (besides overhead.py's)."""
# the throughput ratios that also have a CPU-per-request reading: (target, baseline)
PAIRS = {
    "miss/forwarder": ("hookgate", "forwarder"),
    "miss/litellm": ("hookgate", "litellm"),
    "stream/forwarder": ("hookgate-stream", "forwarder-stream"),
    "stream/litellm": ("hookgate-stream", "litellm-stream"),
    "redis/forwarder": ("hookgate-redis", "forwarder"),
    "memory/forwarder": ("hookgate-cached", "forwarder"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="issue 13's goals as ratios, in one run (see bench/README.md)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("-n", "--requests", type=int, default=3000, help="measured requests per c32 target and round")
    p.add_argument("--rounds", type=int, default=3, help="measured phases per target; figures are medians")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--litellm-requests", type=int, default=400, help="measured requests per LiteLLM round (it is ~100x slower)")
    p.add_argument("--slow-requests", type=int, default=400, help="measured requests per round at c4, 50 ms upstream")
    p.add_argument("--litellm-venv", type=Path, default=Path("/tmp/litellm-venv"), help="a venv with litellm[proxy]; its bin/litellm is run")
    p.add_argument("--no-litellm", action="store_true", help="skip LiteLLM (its two goals are then not judged)")
    p.add_argument("--max-seconds", type=float, default=60, help="time cap of one load phase")
    p.add_argument("--hookgate-cmd", default=ov.DEFAULT_HOOKGATE_CMD, help="template: {hookgate} {python} {config} {host} {port} (another checkout's hookgate, for a before/after)")
    p.add_argument("--results-dir", type=Path, default=ov.BENCH_DIR / "results")
    return p.parse_args(argv)


def bench_args(a: argparse.Namespace) -> argparse.Namespace:
    """overhead.py's arguments for the phases run through its machinery."""
    args = ov.parse_args(["-n", str(a.requests), "--rounds", str(a.rounds), "--warmup", str(a.warmup), "--max-seconds", str(a.max_seconds)])
    args.startup_timeout = 60  # LiteLLM takes seconds
    args.hookgate_cmd = a.hookgate_cmd
    args.targets = [*ov.ALL_TARGETS, *COMPARE_TARGETS]
    return args


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    args = bench_args(a)
    cores = sorted(os.sched_getaffinity(0))
    if not {args.server_core, args.load_core} <= set(cores) or not shutil.which("taskset"):
        print(f"ERROR: --compare needs cores {args.server_core} and {args.load_core} and taskset (have {cores})")
        return 2
    if not shutil.which("wrk"):
        print("ERROR: --compare needs wrk (apt-get install -y wrk)")
        return 2
    litellm = a.litellm_venv / "bin" / "litellm"
    if not a.no_litellm and not litellm.exists():
        print(f"ERROR: no {litellm}: python3 -m venv {a.litellm_venv} && {a.litellm_venv}/bin/pip install 'litellm[proxy]' (or --no-litellm)")
        return 2
    os.sched_setaffinity(0, {args.load_core})
    gen = ov.WrkGenerator(args.load_core, args.max_seconds)
    started = time.monotonic()
    results: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "environment": ov.environment(args, gen),
        "load_average_start": os.getloadavg(),
        "targets": {},
        "servers": {},
        "warnings": [],
    }
    print(f"issue 13 goals, side by side: c32 x {a.requests} requests (LiteLLM {a.litellm_requests}), median of {a.rounds} rounds; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="hookgate-compare-") as tmpdir:
        tmp = Path(tmpdir)
        bodies = {(api, stream): tmp / f"body-{api.name}{'-stream' if stream else ''}.json"
                  for api in (ov.OPENAI_API, ov.ANTHROPIC_API) for stream in (False, True)}  # fmt: skip
        for (api, stream), path in bodies.items():
            path.write_bytes(ov.request_body(api, stream, args.prompt_words))
        ctx = ov.Context(args, gen, tmp, bodies)
        emulators: list[ov.Server] = []

        def emulator(name: str, latency: float = 0.0) -> ov.Server:
            port = ov.free_port()
            argv = shlex.split(args.emulator_cmd.format(python=sys.executable, port=port)) + (["--latency", str(latency)] if latency else [])
            srv = ov.Server(name, argv, port, args.load_core, tmp / f"{name}.log")
            srv.start()
            emulators.append(srv)
            srv.wait_ready("post", bodies[(ov.OPENAI_API, False)].read_bytes(), args.startup_timeout)
            return srv

        def forwarder() -> ov.Server:
            port = ov.free_port()
            argv = [sys.executable, str(ov.BENCH_DIR / "forwarder.py"), "--host", ov.HOST, "--port", str(port),
                    "--upstream", f"http://{ov.HOST}:{ctx.upstream.port}"]  # fmt: skip
            return ov.start_server(ctx, "forwarder", argv, port, "healthz")

        def hookgate(config: str) -> Any:
            def make() -> ov.Server:
                port = ov.free_port()
                return ov.start_server(ctx, "hookgate", ov.hookgate_argv(ctx, config, port), port, "healthz")

            return make

        def litellm_server() -> ov.Server:
            config = tmp / "litellm.yaml"
            config.write_text(LITELLM_CONFIG.format(model=ov.MODEL, port=ctx.upstream.port, key=ov.API_KEY))
            port = ov.free_port()
            argv = [str(litellm), "--config", str(config), "--host", ov.HOST, "--port", str(port), "--num_workers", "1"]
            return ov.start_server(ctx, "litellm", argv, port, "post")

        # LiteLLM reads these at import: no download of its model price map, no telemetry, quiet.
        os.environ.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False")
        try:
            try:
                ctx.upstream = emulator("emulator (upstream)")
            except ov.BenchError as e:
                print(f"ERROR: the upstream emulator did not start: {e}")
                return 2
            ov.run_group(ctx, results, [("forwarder", False), ("forwarder-stream", True)], forwarder, "forwarder")
            ov.run_group(ctx, results, [("hookgate", False), ("hookgate-stream", True)], hookgate(DEFAULT_PIPELINE), "hookgate (default pipeline)")
            ov.run_group(ctx, results, [("hookgate-cached", False)], hookgate(MEMORY_HIT), "hookgate (memory_cache)")
            ov.run_group(ctx, results, [("hookgate-redis", False)], hookgate(REDIS_HIT), "hookgate (redis_cache)")
            if not a.no_litellm:
                with_fewer(ctx, a.litellm_requests, lambda: ov.run_group(
                    ctx, results, [("litellm", False), ("litellm-stream", True)], litellm_server, "litellm"))  # fmt: skip
            # c4 against an upstream that waits 50 ms: what hookgate adds to a request's latency
            fast = ctx.upstream
            ctx.upstream = emulator("emulator (50 ms upstream)", SLOW_UPSTREAM_S)
            with_fewer(ctx, a.slow_requests, lambda: (
                ov.run_group(ctx, results, [("forwarder-c4-50ms", False)], forwarder, None),
                ov.run_group(ctx, results, [("hookgate-c4-50ms", False)], hookgate(DEFAULT_PIPELINE), None),
            ), concurrency=4, warmup=40)  # fmt: skip
            ctx.upstream = fast
            results["startup"] = startups(ctx)
            results["workers"] = workers(ctx, a)
        finally:
            for srv in emulators:
                srv.stop()
            if ctx.redis is not None:
                ctx.redis.stop()
    results["load_average_end"] = os.getloadavg()
    results["warnings"] = ctx.warnings
    results["measured"] = measured(results)
    results["goals"] = verdicts(results["measured"], a.no_litellm)
    results["seconds"] = round(time.monotonic() - started, 1)
    report(results)
    a.results_dir.mkdir(parents=True, exist_ok=True)
    out = a.results_dir / f"compare-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(ov.no_nan(results), indent=2, default=str) + "\n")
    print(f"\nresults: {out}")
    return 1 if any("error" in r for r in results["targets"].values()) else 0


def with_fewer(ctx: ov.Context, requests: int, run: Any, *, concurrency: int | None = None, warmup: int | None = None) -> None:
    """Run phases with another request count (and concurrency, warm-up), then restore them."""
    saved = ctx.args.requests, ctx.args.concurrency, ctx.args.warmup
    ctx.args.requests = requests
    ctx.args.concurrency = concurrency or saved[1]
    ctx.args.warmup = min(saved[2], requests // 4) if warmup is None else warmup
    try:
        run()
    finally:
        ctx.args.requests, ctx.args.concurrency, ctx.args.warmup = saved


def startups(ctx: ov.Context, runs: int = 3) -> dict[str, Any]:
    """Median start-up and idle RSS of hookgate with the default pipeline, pinned like the others."""
    seconds, rss = [], []
    for run in range(runs):
        port = ov.free_port()
        srv = ov.start_server(ctx, f"startup-{run}", ov.hookgate_argv(ctx, DEFAULT_PIPELINE, port), port, "healthz")
        srv.stop()
        seconds.append(srv.startup_s)
        rss.append(srv.idle_memory["VmRSS"] / 1024)
    print(f"  start-up (default pipeline): {statistics.median(seconds):.3f} s, idle RSS {statistics.median(rss):.1f} MiB "
          f"(median of {runs})", flush=True)  # fmt: skip
    return {"seconds": seconds, "rss_mib": rss, "median_s": statistics.median(seconds), "median_rss_mib": statistics.median(rss)}


def workers(ctx: ov.Context, a: argparse.Namespace) -> dict[str, Any]:
    """req/s of `hookgate serve --workers N` for N = 1, 2, unpinned, MISS (default pipeline) and
    memory HIT; the medians over the rounds."""
    out: dict[str, Any] = {}
    body = ctx.bodies[(ov.OPENAI_API, False)]
    for label, config in (("miss", DEFAULT_PIPELINE), ("hit", MEMORY_HIT)):
        for count in (1, 2):
            port = ov.free_port()
            argv = ov.hookgate_argv(ctx, config, port) + ["--workers", str(count)]
            srv = ov.Server(f"hookgate --workers {count}", argv, port, None, ctx.tmp / f"workers-{label}-{count}.log")
            srv.start()
            try:
                srv.wait_ready("healthz", b"", ctx.args.startup_timeout)
                time.sleep(1.0 * count)  # every worker up, not only the first to bind
                ov.check_answer(f"workers-{count}", port, ov.OPENAI_API, body.read_bytes(), False)
                gen = ov.WrkGenerator(None, ctx.args.max_seconds)  # unpinned too: the whole machine
                gen.run(port, ov.OPENAI_API, body, ctx.args.warmup, ctx.args.concurrency)
                rates, cpu = [], []
                for _ in range(a.rounds):
                    before = tree_cpu_seconds(srv.pid)
                    r = gen.run(port, ov.OPENAI_API, body, a.requests, ctx.args.concurrency)
                    time.sleep(0.2)  # the requests in flight at wrk's stop
                    rates.append(r.completed / r.elapsed_s)
                    cpu.append((tree_cpu_seconds(srv.pid) - before) / (r.completed + r.abandoned) * 1e6)
                out[f"{label}-{count}"] = {"rps": statistics.median(rates), "cpu_us_per_request": statistics.median(cpu), "rounds": rates}
                print(f"  hookgate --workers {count} ({label}, unpinned): {statistics.median(rates):.0f} req/s, "
                      f"{statistics.median(cpu):.0f} us CPU/request (all workers)", flush=True)  # fmt: skip
            except ov.BenchError as e:
                out[f"{label}-{count}"] = {"error": str(e)}
                ctx.warn(f"--workers {count} ({label}) FAILED: {e}")
            finally:
                srv.stop()
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants still running (the --workers processes)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += ov.proc_cpu_seconds(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(child) for child in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total


def measured(results: dict[str, Any]) -> dict[str, Any]:
    t = results["targets"]
    m: dict[str, Any] = {}
    for key, (target, base) in PAIRS.items():
        a, b = ov.measured(t, target), ov.measured(t, base)
        if a and b and a["rps"] and b["rps"]:
            m[key] = a["rps"] / b["rps"]
            if a["cpu_us_per_request"] and b["cpu_us_per_request"]:
                m[key + ":cpu"] = b["cpu_us_per_request"] / a["cpu_us_per_request"]
    fw, hg = ov.measured(t, "forwarder-c4-50ms"), ov.measured(t, "hookgate-c4-50ms")
    if fw and hg:
        m["c4_added_ms"] = hg["p50_ms"] - fw["p50_ms"]
    start = results.get("startup") or {}
    if start:
        m["startup_s"], m["idle_rss_mib"] = start["median_s"], start["median_rss_mib"]
    w = results.get("workers") or {}
    for label in ("miss", "hit"):
        one, two = w.get(f"{label}-1", {}), w.get(f"{label}-2", {})
        if one.get("rps") and two.get("rps"):
            m[f"workers_{label}"] = two["rps"] / one["rps"]
            if one.get("cpu_us_per_request") and two.get("cpu_us_per_request"):
                # on two cores of its own each CPU-bound worker serves 1/CPU-per-request: two
                # workers reach 2 x (one worker's CPU/request) / (their CPU/request) of one
                m[f"workers_{label}:cpu"] = 2 * one["cpu_us_per_request"] / two["cpu_us_per_request"]
    return m


def verdicts(m: dict[str, Any], no_litellm: bool) -> list[dict[str, Any]]:
    rows = []
    for goal, key, op, threshold, unit in GOALS:
        value = m.get(key)
        cpu = m.get(key + ":cpu")

        def judge(v: float | None) -> str | None:
            if v is None:
                return None
            return "pass" if (v >= threshold if op == ">=" else v <= threshold) else "FAIL"

        rows.append({"goal": goal, "key": key, "value": value, "unit": unit, "verdict": judge(value) or ("not run" if no_litellm and "litellm" in key else "not measured"),
                     "cpu_value": cpu, "cpu_verdict": judge(cpu)})  # fmt: skip
    return rows


def report(results: dict[str, Any]) -> None:
    ov.report({**results, "ratios": ov.ratios(results), "streaming": ov.streaming(results)})
    for name in COMPARE_TARGETS:  # not in overhead.py's table
        r = results["targets"].get(name)
        if r and "error" not in r:
            print(f"{name:<{ov.NAME_W}} {ov.fmt(r['rps'], '8.0f')} {ov.fmt(r['p50_ms'], '8.2f')} {ov.fmt(r['p99_ms'], '8.2f')} "
                  f"{ov.fmt(r['cpu_us_per_request'], '10.0f')} {ov.fmt(r['server_core_busy'], '8.0%')}")  # fmt: skip
        elif r:
            print(f"{name:<{ov.NAME_W}} FAILED: {r['error'].splitlines()[0]}")
    print(f"\nissue 13 goals (one run, {results['seconds']:.0f} s; load average {results['load_average_start'][0]:.2f} at the start, "
          f"{results['load_average_end'][0]:.2f} at the end):")  # fmt: skip
    head = f"  {'goal':<42} {'measured':>10} {'verdict':>8}   {'by CPU/request':>14} {'verdict':>8}"
    print(head)
    print("  " + "-" * (len(head) - 2))
    for row in results["goals"]:
        value = "-" if row["value"] is None else f"{row['value']:.2f} {row['unit']}" if row["unit"] != "x" else f"x{row['value']:.2f}"
        cpu = "" if row["cpu_value"] is None else f"x{row['cpu_value']:.2f}"
        print(f"  {row['goal']:<42} {value:>10} {row['verdict']:>8}   {cpu:>14} {row['cpu_verdict'] or '':>8}")
    print("  (measured: the issue's measure, req/s ratios at c32; by CPU/request: the baseline's CPU per request over")
    print("   hookgate's, which a shared machine disturbs less. --workers: both unpinned, sharing the two cores with wrk and")
    print("   the emulator, so req/s is a lower bound; by CPU: 2 x one worker's CPU/request over two workers' (all processes),")
    print("   what two CPU-bound workers on two free cores would reach.)")
    if results["warnings"]:
        print(f"{len(results['warnings'])} warning(s), listed above and in the JSON")


if __name__ == "__main__":
    sys.exit(main())
