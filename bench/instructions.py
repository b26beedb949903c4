"""Instructions per request of one server under load, counted by valgrind's callgrind.

A shared machine's CPU time per request moves by 10-15 % between runs (docs/performance.md); the
number of instructions a server executes per request moves by about 2 % at most (the forwarder read
591k-615k in seven runs of a day, other load on the machine or not). It is the measure to A/B a
change of several per cent on the request path before confirming it with bench/overhead.py. It
counts user-space instructions only: system calls, cache misses and the kernel's share are not in
it, so it says which build does less work, not how many requests per second either serves.

    python bench/instructions.py                             # forwarder and the default pipeline
    python bench/instructions.py --targets hookgate-reliable,hookgate-cache-off --stream
    python bench/instructions.py --targets forwarder,hookgate-redis-hit -n 2000

Each target runs under ``valgrind --tool=callgrind --instr-atstart=no``, through bench/overhead.py's
machinery (its servers, pinning, configs, request body and wrk): ``forwarder`` (bench/forwarder.py)
or a config of bench/configs by name (``hookgate-reliable``). wrk warms it up with ``--warmup``
requests, counting is switched on (``callgrind_control -i on``) for ``-n`` requests at
concurrency 32, and the counted total is divided by the responses wrk saw. Under valgrind a server
runs some 30 times slower, so a target takes 20-40 s. Needs valgrind and wrk (Debian:
``apt-get install valgrind wrk``); the ``redis_cache`` targets also redis-server, of which
overhead.py starts a throwaway one on the load core. All traffic stays on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead as ov  # noqa: E402  (bench/ is not a package)

STARTUP_SECONDS = 180.0
"""How long a server under valgrind may take to answer GET /healthz."""
SLOW_ENV = {"HOOKGATE_REDIS_CACHE__OPERATION_TIMEOUT_SECONDS": "5"}
"""Under valgrind a Redis operation takes some 30 times longer: with redis_cache's 0.1 s deadline,
one late answer opens its circuit and every later request is a MISS that goes upstream (seen:
42 hits of 1,000), so the count would be of misses. The deadline is raised for the counted run."""


def server_argv(ctx: ov.Context, target: str, port: int) -> list[str]:
    if target == "forwarder":
        assert ctx.upstream is not None
        return [sys.executable, str(ov.BENCH_DIR / "forwarder.py"), "--host", ov.HOST, "--port", str(port),
                "--upstream", f"http://{ov.HOST}:{ctx.upstream.port}"]  # fmt: skip
    return ov.hookgate_argv(ctx, f"{target}.toml", port)


def count(ctx: ov.Context, target: str, stream: bool) -> tuple[int, ov.LoadResult]:
    """(instructions counted, wrk's result) for ``ctx.args.requests`` requests to ``target``."""
    port = ov.free_port()
    dumps = ctx.tmp / f"callgrind.{port}"
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={dumps}.%p", *server_argv(ctx, target, port)]
    server = ov.Server(target, argv, port, ctx.args.server_core, ctx.tmp / f"{target}-{port}.log")
    body = ctx.bodies[(ov.OPENAI_API, stream)]
    server.start()
    try:
        server.wait_ready("healthz", b"", STARTUP_SECONDS)
        ctx.gen.run(port, ov.OPENAI_API, body, ctx.args.warmup, 32)
        control = ["callgrind_control", "-i", "on", str(server.pid)]
        subprocess.run(control, capture_output=True, check=True, timeout=60)
        result = ctx.gen.run(port, ov.OPENAI_API, body, ctx.args.requests, 32)
        for command in (["-i", "off"], ["-d"]):
            subprocess.run(["callgrind_control", *command, str(server.pid)], capture_output=True, check=True, timeout=60)
    finally:
        server.stop()
    total = sum(
        int(line.split()[1])
        for dump in ctx.tmp.glob(f"{dumps.name}.*")
        for line in dump.read_text(errors="replace").splitlines()
        if line.startswith("totals:")
    )
    return total, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="forwarder,hookgate-reliable", help="comma-separated: forwarder or a bench/configs name")
    parser.add_argument("--stream", action="store_true", help='ask for "stream": true (the forwarder relays SSE too)')
    parser.add_argument("-n", "--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=300)
    a = parser.parse_args()
    os.environ.update(SLOW_ENV)  # the servers under test inherit it
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (Debian: apt-get install valgrind)")
    args = ov.parse_args(["-n", str(a.requests), "--warmup", str(a.warmup), "--max-seconds", "600"])
    with tempfile.TemporaryDirectory(prefix="hookgate-instructions-") as name:
        tmp = Path(name)
        bodies = {(ov.OPENAI_API, stream): tmp / f"body{'-stream' if stream else ''}.json" for stream in (False, True)}
        for (api, stream), path in bodies.items():
            path.write_bytes(ov.request_body(api, stream, args.prompt_words))
        try:
            ctx = ov.Context(args, ov.WrkGenerator(args.load_core, args.max_seconds), tmp, bodies)
        except ov.BenchError as exc:
            raise SystemExit(str(exc)) from None
        port = ov.free_port()
        ctx.upstream = ov.Server("emulator (upstream)", [sys.executable, "-m", "hookgate.testing.openai_emulator", "--port", str(port)],
                                 port, args.load_core, tmp / "upstream.log")  # fmt: skip
        ctx.upstream.start()
        try:
            ctx.upstream.wait_ready("post", bodies[(ov.OPENAI_API, False)].read_bytes(), args.startup_timeout)
            print(f"{'target':32s} {'instructions/request':>22s}  {'cache HITs':>10s}  {'not 200':>8s}  ({a.requests} requests at c32{', streamed' if a.stream else ''})")
            for target in a.targets.split(","):
                total, result = count(ctx, target, a.stream)
                hits = result.cache.get("hit", 0)
                print(f"{target:32s} {total // max(result.completed, 1):>22,d}  {hits:>10,d}  {result.non200:>8,d}", flush=True)
        finally:
            for server in (ctx.upstream, ctx.redis):
                if server is not None:
                    server.stop()


if __name__ == "__main__":
    main()
