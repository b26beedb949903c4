"""CPU per redis-py GET with and without redis-py's own socket timeout, side by side in one run.

With ``socket_timeout`` set, redis-py (8.x) wraps every write in ``asyncio.wait_for`` (on Python
3.11 a task per command) and every read in a timeout. hookgate's shared pool runs each operation
under its caller's deadline instead (``SharedRedis.run``), so it sets none (core/redis.py); this
shows what that saves per command, in the client process, with nothing else on its loop.

    python bench/redis_command_cost.py                      # $REDIS_URL, else a local Redis
    python bench/redis_command_cost.py --requests 40000 --rounds 5

Runs on uvloop when it is installed (as ``hookgate serve`` does); pin it to a core
(``taskset -c 0``) for steadier figures. Writes one key under ``hookgate-bench:`` and deletes it.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from redis import asyncio as aioredis

KEY = "hookgate-bench:redis-command-cost"
VALUE = b"x" * 554  # the size of a stored cache entry in bench/overhead.py's redis_cache HIT


def client(url: str, socket_timeout: float | None) -> Any:
    pool = aioredis.ConnectionPool.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=30, health_check_interval=0, max_connections=64)
    return aioredis.Redis(connection_pool=pool)


async def cpu_per_get(redis: Any, requests: int, concurrency: int) -> float:
    async def worker(count: int) -> None:
        for _ in range(count):
            await redis.get(KEY)

    each = requests // concurrency
    started = time.process_time()
    await asyncio.gather(*(worker(each) for _ in range(concurrency)))
    return 1e6 * (time.process_time() - started) / (each * concurrency)


async def main(a: argparse.Namespace) -> None:
    clients = {"socket_timeout=30 s": client(a.redis_url, 30.0), "socket_timeout=None": client(a.redis_url, None)}
    first = next(iter(clients.values()))
    await first.set(KEY, VALUE)
    try:
        readings: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(a.rounds):  # alternating, so a disturbed second hits both alike
            for name, redis in clients.items():
                assert await redis.get(KEY) == VALUE
                readings[name].append(await cpu_per_get(redis, a.requests, a.concurrency))
        print(f"CPU µs per GET, {a.requests} GETs at {a.concurrency} at once, median of {a.rounds} rounds:")
        for name, values in readings.items():
            print(f"  {name:22s} {statistics.median(values):6.1f}   (rounds: {', '.join(f'{v:.1f}' for v in values)})")
        with_timeout, without = (statistics.median(values) for values in readings.values())
        print(f"  without / with: x{without / with_timeout:.2f}")
    finally:
        await first.delete(KEY)
        for redis in clients.values():
            await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("-n", "--requests", type=int, default=20000)
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args))
    else:
        uvloop.run(main(args))
