"""CPU per request with request_store on (SQLite, PostgreSQL) against off, and its queue at
2,000 requests/s.

    python bench/request_store_cpu.py [-n 2000] [--rounds 3] [--seconds 3] [--postgres-url URL]

1. **CPU per request**: N sequential POST /v1/chat/completions (echo provider, api_keys, cost,
   token_counter) through aiohttp's test client on 127.0.0.1, for each of: no request_store,
   request_store on SQLite (a temp file), on PostgreSQL (``--postgres-url``, else
   ``$DATABASE_URL``, else postgresql://postgres@127.0.0.1:5432/test, in a fresh schema dropped
   afterwards). CPU is ``time.process_time()`` of this whole process (client, server, the SQLite
   thread, asyncpg), divided by N, after the writer flushed every row; the PostgreSQL server's
   own CPU is another process and not counted. The configurations are interleaved over
   ``--rounds`` rounds and the median is shown, with its difference to "off".
2. **The queue at 2,000 requests/s**: the plugin's ``request_finished`` event is fed 20 finished
   requests every 10 ms for ``--seconds`` (the request path's share of a 2,000 req/s load, the
   HTTP part left out so one process can offer it), with ``queue_capacity = 1000``: against
   SQLite, PostgreSQL, and a PostgreSQL that is down (a closed port). The queue's depth is
   sampled every tick: it must never pass its capacity; what the database cannot take is dropped
   and counted, never waited for.

Bounded: part 1 starts no new round after ``--budget-seconds`` (40), part 2 takes
``3 x --seconds``: under 60 s with the defaults, also on a busy shared machine. Exits non-zero
when the queue passed its bound.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from hookgate import ClientKey, Outcome, RequestContext
from hookgate.config import load_config
from hookgate.facts import CLIENT_KEY
from hookgate.plugins.api_keys import key_digest
from hookgate.plugins.request_store import RequestStorePlugin
from hookgate.server import create_app, current_gateway

KEY = "hg-bench-request-store-cpu-0123456789"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
BODY = {"model": "echo", "messages": [{"role": "user", "content": "how much does keeping a record cost"}]}


def config_text(store: dict[str, Any] | None) -> str:
    pipeline = ["request_store"] if store is not None else []
    pipeline += ["api_keys", "token_counter", "cost", "echo"]
    text = f"""
        [gateway]
        log_level = "warning"
        pipeline = {pipeline!r}
        [plugins.api_keys.keys.bench]
        hash = "{key_digest(KEY)}"
        [plugins.cost.prices.echo]
        input = "1"
        output = "2"
    """.replace("'", '"')
    if store is not None:
        text += "[plugins.request_store]\nretention_days = 0\ndashboard = false\n" + "".join(f'{k} = "{v}"\n' for k, v in store.items())
    return textwrap.dedent(text)


async def cpu_per_request(store: dict[str, Any] | None, requests: int, workdir: Path) -> tuple[float, float]:
    """Microseconds of CPU per request, the rows written included: the whole process's, and the
    event-loop thread's alone (client and server share it; SQLite's thread is the difference)."""
    path = workdir / f"{uuid.uuid4().hex}.toml"
    path.write_text(config_text(store))
    app = create_app(load_config(path))
    async with TestClient(TestServer(app)) as client:
        headers = {"Authorization": f"Bearer {KEY}"}
        for _ in range(50):  # warm up: connections, caches, the first batch
            await (await client.post("/v1/chat/completions", json=BODY, headers=headers)).read()
        plugin = current_gateway(app).runner.plugins.get("request_store") if store is not None else None
        written_before = plugin.store.writer_stats().written if plugin is not None else 0
        started, started_loop = time.process_time(), time.thread_time()
        for _ in range(requests):
            response = await client.post("/v1/chat/completions", json=BODY, headers=headers)
            await response.read()
        if plugin is not None:  # the rows are part of the cost: wait until they are written
            while plugin.store.writer_stats().written < written_before + requests:
                await asyncio.sleep(0.005)
        return (time.process_time() - started) / requests * 1e6, (time.thread_time() - started_loop) / requests * 1e6


def finished_request(i: int) -> tuple[RequestContext, Outcome]:
    ctx = RequestContext(request_id=f"req_{i:032x}", body=dict(BODY), headers={})
    ctx[CLIENT_KEY] = ClientKey(id="bench")
    ctx.cache_status = "MISS"
    outcome = Outcome(
        status=200, error=None, response=None,
        usage={"prompt_tokens": 812, "completion_tokens": 164, "prompt_tokens_details": {"cached_tokens": 512}},
        cost_usd=None, total_seconds=0.4312, upstream_seconds=0.4125, time_to_first_byte_seconds=0.1203,
        phases={"authenticate": 0.00002, "before_request": 0.0002, "cache_lookup": 0.00005, "call_provider": 0.4125, "after_response": 0.0003},
    )
    return ctx, outcome


async def offered_load(store: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Feed ``request_finished`` at 2,000/s; the deepest queue, drops and writes."""
    from hookgate.plugins.request_store import RequestStoreConfig

    config = RequestStoreConfig(retention_days=0, queue_capacity=1000, connect_timeout_s=1.0, connect_retry_s=60, dashboard=False, **store)
    plugin = RequestStorePlugin(config)
    await plugin.store.start_or_keep_trying(config.connect_retry_s)
    events = [finished_request(i) for i in range(20)]
    deepest = sent = 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    cpu = time.process_time()
    tick = 0
    while loop.time() - started < seconds:
        tick += 1
        for ctx, outcome in events:
            plugin.request_finished(ctx, outcome)
        sent += len(events)
        stats = plugin.store.writer_stats()
        deepest = max(deepest, stats.queued + stats.in_flight)
        await asyncio.sleep(max(0.0, started + tick * 0.01 - loop.time()))
    elapsed = loop.time() - started
    cpu = time.process_time() - cpu
    await plugin.store.close()
    stats = plugin.store.writer_stats()
    return {"rate": sent / elapsed, "deepest": deepest, "capacity": 1000, "written": stats.written,
            "dropped": stats.dropped, "sent": sent, "cpu_us": cpu / sent * 1e6}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=1000, help="requests per configuration and round")
    parser.add_argument("--rounds", type=int, default=5, help="at most this many rounds (fewer when --budget-seconds runs out)")
    parser.add_argument("--budget-seconds", type=float, default=40.0, help="no new round of part 1 starts after this long")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each 2,000 req/s run")
    parser.add_argument("--postgres-url", default=os.environ.get("DATABASE_URL") or DEFAULT_POSTGRES)
    args = parser.parse_args()

    schema = f"bench_rs_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        stores: dict[str, dict[str, Any] | None] = {
            "off": None,
            "sqlite": {"url": f"sqlite:///{workdir / 'requests.db'}"},
            "postgresql": {"url": args.postgres_url, "postgres_schema": schema},
        }
        try:
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in stores}
            began = time.monotonic()
            for done in range(args.rounds):
                if done and time.monotonic() - began > args.budget_seconds:
                    break  # a busy shared machine: fewer rounds rather than an unbounded run
                for name, store in stores.items():
                    samples[name].append(await cpu_per_request(store, args.n, workdir))
            args.rounds = len(samples["off"])
            off = statistics.median(p for p, _ in samples["off"])
            off_loop = statistics.median(t for _, t in samples["off"])
            print(f"CPU per request, {args.n} sequential HTTP requests, median of {args.rounds} rounds (rows written included):")
            print(f"  {'':<25} {'process':>10} {'vs off':>9} {'loop thread':>12} {'vs off':>9}")
            for name, values in samples.items():
                process = statistics.median(p for p, _ in values)
                loop_thread = statistics.median(t for _, t in values)
                extra = ("", "") if name == "off" else (f"{process - off:+8.1f}", f"{loop_thread - off_loop:+8.1f}")
                print(f"  request_store {name:<11} {process:8.1f} µs {extra[0]:>9} {loop_thread:9.1f} µs {extra[1]:>9}")

            dead = socket.socket()
            dead.bind(("127.0.0.1", 0))
            dead_port = dead.getsockname()[1]
            dead.close()  # nothing listens there: connections are refused
            loads = {
                "sqlite": {"url": f"sqlite:///{workdir / 'load.db'}"},
                "postgresql": {"url": args.postgres_url, "postgres_schema": schema},
                "postgresql down": {"url": f"postgresql://postgres@127.0.0.1:{dead_port}/test"},
            }
            print(f"\nrequest_finished fed at 2,000/s for {args.seconds:g} s, queue_capacity 1000:")
            bounded = True
            for name, store in loads.items():
                result = await offered_load(store, args.seconds)
                bounded = bounded and result["deepest"] <= result["capacity"]
                print(f"  {name:<16} offered {result['rate']:6.0f}/s  deepest queue {result['deepest']:5d}/{result['capacity']}"
                      f"  sent {result['sent']:6d}  written {result['written']:6d}  dropped {result['dropped']:6d}  CPU {result['cpu_us']:5.1f} µs/request")
            print("\nthe queue stayed within its bound" if bounded else "\nTHE QUEUE PASSED ITS BOUND")
            return 0 if bounded else 1
        finally:
            try:
                conn = await asyncpg.connect(args.postgres_url, timeout=5)
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                await conn.close()
            except (OSError, asyncpg.PostgresError):
                pass


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
