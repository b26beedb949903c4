"""What the metrics (and tracing) plugins add to each request, measured in one process.

    python bench/observability_overhead.py [-n 5000] [--rounds 5]

Two measurements per pipeline, each the median of ``--rounds`` rounds, the pipelines interleaved
so that drift (CPU frequency, caches) hits them alike:

* **pipeline**: ``Gateway.answer`` + ``finish`` called directly, N JSON requests to the echo
  provider: every hook and metric update, no HTTP. This isolates the plugin's own cost.
* **http**: N sequential POST /v1/chat/completions through aiohttp's test client on 127.0.0.1:
  what one client sees, socket and JSON included.

No network beyond the loopback, and every loop stops after its N requests.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path
from time import perf_counter

from aiohttp.test_utils import TestClient, TestServer

from hookgate import RequestContext
from hookgate.config import load_config
from hookgate.server import create_app, current_gateway

PIPELINES = {
    "echo": '["echo"]',
    "metrics, echo": '["metrics", "echo"]',
    "metrics (no hook timings), echo": '["metrics", "echo"]\n[plugins.metrics]\nhook_timings = false',
    "tracing (memory, every request sampled), echo": '["tracing", "echo"]\n[plugins.tracing]\nexporter = "memory"',
    "tracing (same, hook_spans = false), echo": '["tracing", "echo"]\n[plugins.tracing]\nexporter = "memory"\nhook_spans = false',
}
BODY = {"model": "echo", "messages": [{"role": "user", "content": "how much does observing cost"}]}


def app_for(pipeline: str, workdir: Path):
    path = workdir / f"{abs(hash(pipeline))}.toml"
    path.write_text(textwrap.dedent(f"[gateway]\nlog_level = \"warning\"\npipeline = {pipeline}\n"))
    return create_app(load_config(path))


async def time_pipeline(client: TestClient, requests: int) -> float:
    """Microseconds per request through the phases, without HTTP."""
    gateway = current_gateway(client.server.app)
    tracing = gateway.runner.plugins.get("tracing")
    started = perf_counter()
    for i in range(requests):
        ctx = RequestContext(request_id=f"bench-{i}", body=dict(BODY), headers={})
        await gateway.finish(ctx, await gateway.answer(ctx))
    elapsed = perf_counter() - started
    if tracing is not None:
        tracing.memory_exporter.clear()  # keep memory flat across rounds
    return elapsed / requests * 1e6


async def time_http(client: TestClient, requests: int) -> float:
    """Microseconds per request as a client sees it (sequential, keep-alive)."""
    started = perf_counter()
    for _ in range(requests):
        async with client.post("/v1/chat/completions", json=BODY) as response:
            await response.read()
            assert response.status == 200, response.status
    return (perf_counter() - started) / requests * 1e6


async def main(requests: int, rounds: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="hookgate-obs-bench-"))
    clients = {name: TestClient(TestServer(app_for(pipeline, workdir))) for name, pipeline in PIPELINES.items()}
    for client in clients.values():
        await client.start_server()
    results: dict[str, dict[str, list[float]]] = {name: {"pipeline": [], "http": []} for name in clients}
    try:
        for client in clients.values():  # warm-up: label children, code paths, connections
            await time_pipeline(client, 200)
            await time_http(client, 200)
        for _ in range(rounds):
            for name, client in clients.items():
                results[name]["pipeline"].append(await time_pipeline(client, requests))
                results[name]["http"].append(await time_http(client, max(requests // 5, 100)))
    finally:
        for client in clients.values():
            await client.close()
    base = {kind: statistics.median(results["echo"][kind]) for kind in ("pipeline", "http")}
    print(f"{requests} requests per pipeline round ({max(requests // 5, 100)} over HTTP), median of {rounds} rounds, Python {sys.version.split()[0]}")
    print(f"{'pipeline':<48} {'phases µs/req':>14} {'added':>8} {'HTTP µs/req':>12} {'added':>8}")
    for name, kinds in results.items():
        phases, http = statistics.median(kinds["pipeline"]), statistics.median(kinds["http"])
        print(f"{name:<48} {phases:>14.1f} {phases - base['pipeline']:>+8.1f} {http:>12.1f} {http - base['http']:>+8.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--requests", type=int, default=5000, help="requests per pipeline round (HTTP rounds use a fifth)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each figure is the median")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
