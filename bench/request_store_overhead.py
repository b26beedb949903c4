"""What request_store costs a request, and how many rows per second each backend sustains.

    python bench/request_store_overhead.py [--seconds 2] [--postgres-url postgresql://…]

1. On the request path: building a full ``RequestRecord`` (its nested timings, tokens and
   attempt included; every field bounded), median of 5 runs of 20,000, and ``submit()`` when the
   record is queued and when the queue is full (dropped), median of 5 runs of 50,000 calls.
2. Per backend (SQLite in a temp file; PostgreSQL from ``--postgres-url``, else ``$DATABASE_URL``,
   else postgresql://postgres@127.0.0.1:5432/test, in a fresh schema dropped afterwards):
   - raw ``insert()`` of 500-row batches for ``--seconds``: rows/s;
   - an offered load of 2,000 requests/s through ``RequestStore`` for ``--seconds``: deepest
     queue, rows dropped, CPU seconds of the whole process per stored row (the SQLite thread and
     asyncpg included) and of the event-loop thread alone;
   - saturation: records submitted as fast as the loop turns for ``--seconds``: rows/s written.
Everything stays on this machine; the run is bounded (about 8 x ``--seconds`` plus set-up).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import asyncpg

from hookgate.plugins.request_store import RequestStore, RequestStoreConfig
from hookgate.plugins.request_store_record import AttemptRecord, RequestRecord, Timings, TokenCounts
from hookgate.plugins.request_store_writer import RequestWriter

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


NOW = datetime.now(timezone.utc)
COST = Decimal("0.0002202")


def make_record(i: int, *, request_id: str | None = None) -> RequestRecord:
    """What the glue builds per request (time and cost are values the request already has)."""
    return RequestRecord(
        time=NOW, request_id=request_id or f"req_{i:032x}", status=200, key_id="team-a", model="gpt-4o-mini",
        upstream_model="gpt-4o-mini-2024-07-18", provider="openai", surface="openai.chat", cache_status="MISS",
        attempts=(AttemptRecord("ok", 200, 412.5),),
        timings=Timings(total_ms=431.2, upstream_ms=412.5, ttft_ms=120.3,
                        phases={"before_request": 0.21, "cache_lookup": 0.05, "call_provider": 412.5, "after_response": 0.3}),
        tokens=TokenCounts(prompt=812, completion=164, cached=512, reasoning=0), cost_usd=COST,
    )


def per_call_ns(run, calls: int = 50_000, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        run(calls)
        times.append((time.perf_counter_ns() - started) / calls)
    return statistics.median(times)


async def request_path() -> None:
    print("request path (ns per call, median of 5 runs of 20,000 / 50,000):")

    def build(n: int) -> None:
        request_id = "req_0123456789abcdef0123456789abcdef"
        for i in range(n):
            make_record(i, request_id=request_id)

    print(f"  RequestRecord(...) with every field  {per_call_ns(build, calls=20_000):8.0f}")
    record = make_record(0)

    async def noop(_batch) -> None:
        return None

    def accepted(n: int) -> None:
        writer = RequestWriter(noop, capacity=n + 1, batch_size=n + 1)  # never started: every call queues
        submit = writer.submit
        for _ in range(n):
            submit(record)

    full = RequestWriter(noop, capacity=1, batch_size=10, drop_log_interval_s=3600)
    full.submit(record)

    def dropped(n: int) -> None:
        submit = full.submit
        for _ in range(n):
            submit(record)

    print(f"  submit(), queued                     {per_call_ns(accepted):8.0f}")
    print(f"  submit(), queue full (dropped)       {per_call_ns(dropped):8.0f}")


async def backend_figures(name: str, config: RequestStoreConfig, seconds: float) -> None:
    print(f"\n{name}:")
    records = [make_record(i) for i in range(2_000)]

    store = RequestStore(config)
    await store.start()
    try:
        batch, rows, started = records[:500], 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            await store.backend.insert(batch)
            rows += len(batch)
        print(f"  insert(), 500-row batches            {rows / (time.perf_counter() - started):10,.0f} rows/s")
    finally:
        await store.close()

    store = RequestStore(config)
    await store.start()
    try:
        loop_thread, process = time.thread_time(), time.process_time()
        deepest, sent, started = 0, 0, time.perf_counter()
        tick = 0.01  # 20 requests every 10 ms = 2,000/s
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * 2_000) + 20
            while sent < due:
                store.submit(records[sent % len(records)])
                sent += 1
            deepest = max(deepest, store.writer_stats().queued)
            await asyncio.sleep(tick)
        await store.writer.close()  # flush the tail, within shutdown_timeout_s
        stats = store.writer_stats()
        cpu, loop_cpu = time.process_time() - process, time.thread_time() - loop_thread
        print(f"  2,000 req/s offered for {seconds:g} s          {stats.written:,} written, {stats.dropped:,} dropped, "
              f"deepest queue {deepest:,} of {config.queue_capacity:,}")
        print(f"  CPU per stored row (incl. submitting) {cpu / max(stats.written, 1) * 1e6:8.1f} µs process, "
              f"{loop_cpu / max(stats.written, 1) * 1e6:.1f} µs event-loop thread")
    finally:
        await store.close()

    store = RequestStore(config)
    await store.start()
    try:
        started = time.perf_counter()
        sent = 0
        while time.perf_counter() - started < seconds:
            for _ in range(1_000):
                store.submit(records[sent % len(records)])
                sent += 1
            await asyncio.sleep(0)
        before_flush = store.writer_stats().written
        elapsed = time.perf_counter() - started
        await store.writer.close()
        stats = store.writer_stats()
        print(f"  saturated for {seconds:g} s                    {before_flush / elapsed:10,.0f} rows/s written "
              f"({stats.dropped:,} of {stats.submitted:,} dropped at the queue bound)")
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each timed phase (max 3)")
    parser.add_argument("--postgres-url", default=os.environ.get("DATABASE_URL") or DEFAULT_POSTGRES)
    args = parser.parse_args()
    seconds = min(args.seconds, 3.0)

    await request_path()
    with tempfile.TemporaryDirectory(prefix="hookgate-bench-") as folder:
        sqlite = RequestStoreConfig(url=f"sqlite:///{Path(folder) / 'requests.db'}", retention_days=0, shutdown_timeout_s=10)
        await backend_figures("SQLite (WAL, synchronous=NORMAL, temp file)", sqlite, seconds)

    schema = f"hgbench_{uuid.uuid4().hex[:10]}"
    postgres = RequestStoreConfig(url=args.postgres_url, postgres_schema=schema, retention_days=0, shutdown_timeout_s=10)
    try:
        await backend_figures(f"PostgreSQL (binary COPY, schema {schema})", postgres, seconds)
    except OSError as exc:
        print(f"\nPostgreSQL skipped: {type(exc).__name__}")
    finally:
        try:
            conn = await asyncpg.connect(args.postgres_url, timeout=5)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()
        except (OSError, asyncpg.PostgresError):
            pass


if __name__ == "__main__":
    asyncio.run(main())
