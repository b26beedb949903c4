"""What load balancing costs per attempt, and how lowest_latency's exploration settings behave.

    python bench/balancing_overhead.py [-n 20000] [--redis-n 2000] [--redis-url redis://127.0.0.1:6379/0]
    python bench/balancing_overhead.py --exploration      # only the exploration study

1. CPU (``time.process_time``) and wall time per ``pick`` + ``release`` for each strategy over a
   route of three deployments (one with per-minute limits), against a one-deployment route, with
   per-instance state.
2. The same with state shared through Redis (``$REDIS_URL`` or ``--redis-url``; keys under a
   fresh prefix, deleted afterwards): this process's CPU, the wall time (two round trips per
   attempt) and Redis's own CPU (``INFO cpu``; approximate if others use the same server).
3. ``--exploration`` (also part of a full run): simulated traffic on a fake clock, three
   deployments of 0.3 s, one of them 3 s for a minute: the share it still gets while slow (the cost
   of exploring) and the seconds until it gets half its share back after recovering, for several
   exploration / alpha / half-life settings and request rates.
Everything is bounded by its counts; a full run takes about 25 s. Traffic stays on this machine.
"""
from __future__ import annotations

import argparse
import asyncio
import heapq
import os
import random
import statistics
import sys
import time
import uuid

from hookgate.balancing import Balancer, Deployment, LatencyTuning, LocalBalancingState, StrategyName

STRATEGIES: tuple[StrategyName, ...] = ("weighted", "least_busy", "lowest_latency", "usage")


def route(size: int) -> list[Deployment]:
    limits = [{"requests_per_minute": 10**9, "tokens_per_minute": 10**12}, {}, {"max_in_flight": 10**6}]
    return [Deployment("bench", f"d{i}", "openai", "gpt-4o", weight=1 + i, **limits[i % 3]) for i in range(size)]


async def time_attempts(balancer: Balancer, n: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per pick + release, median of three rounds of ``n``."""
    for _ in range(min(n, 200)):  # warm up caches and script loading
        await (await balancer.pick(tokens=100)).release("success", ttft=0.1, total=0.5, tokens=120)
    cpus, walls = [], []
    for _ in range(3):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            lease = await balancer.pick(tokens=100)
            await lease.release("success", ttft=0.1, total=0.5, tokens=120)
        cpus.append((time.process_time() - cpu) / n * 1e6)
        walls.append((time.perf_counter() - wall) / n * 1e6)
    return statistics.median(cpus), statistics.median(walls)


async def local_costs(n: int) -> None:
    print(f"per-instance state: µs per pick + release (median of 3 x {n:,})")
    print(f"  {'route':<30}{'CPU µs':>9}{'wall µs':>9}")
    cpu, wall = await time_attempts(Balancer("bench", route(1)), n)
    print(f"  {'1 deployment':<30}{cpu:9.1f}{wall:9.1f}")
    for strategy in STRATEGIES:
        cpu, wall = await time_attempts(Balancer("bench", route(3), strategy=strategy, rng=random.Random(1)), n)
        print(f"  {'3 deployments, ' + strategy:<30}{cpu:9.1f}{wall:9.1f}")


async def redis_costs(url: str, n: int) -> None:
    import redis.asyncio as aioredis

    from hookgate.balancing_redis import RedisBalancingState

    client = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    prefix = f"hookgate-bench:balancing:{uuid.uuid4().hex[:8]}"
    try:
        await client.ping()
    except Exception as exc:
        print(f"Redis-shared state: not measured, {url.split('@')[-1]} unreachable ({type(exc).__name__})")
        await client.aclose()
        return
    print(f"Redis-shared state ({url.split('@')[-1]}): µs per pick + release (median of 3 x {n:,})")
    print(f"  {'route':<30}{'CPU µs':>9}{'wall µs':>9}{'Redis CPU µs':>14}")
    try:
        cpu, wall = await time_pings(client, n)
        print(f"  {'(redis-py floor: 2 PINGs)':<30}{cpu:9.1f}{wall:9.1f}")
        cases: list[tuple[str, int, StrategyName]] = [("1 deployment", 1, "weighted")]
        cases += [(f"3 deployments, {strategy}", 3, strategy) for strategy in STRATEGIES]
        for label, size, strategy in cases:
            state = RedisBalancingState(client, key_prefix=prefix, timeout_seconds=2)
            balancer = Balancer("bench", route(size), strategy=strategy, state=state, rng=random.Random(1))
            before = await redis_cpu(client)
            cpu, wall = await time_attempts(balancer, n)
            server = (await redis_cpu(client) - before) / (n * 3 + min(n, 200)) * 1e6
            await state.aclose()
            print(f"  {label:<30}{cpu:9.1f}{wall:9.1f}{server:14.1f}")
    finally:
        async for key in client.scan_iter(match=f"{prefix}:*"):
            await client.delete(key)
        await client.aclose()


async def time_pings(client, n: int) -> tuple[float, float]:
    """What two round trips of this client cost (an attempt makes two: acquire, release)."""
    cpus, walls = [], []
    for _ in range(3):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            await client.ping()
            await client.ping()
        cpus.append((time.process_time() - cpu) / n * 1e6)
        walls.append((time.perf_counter() - wall) / n * 1e6)
    return statistics.median(cpus), statistics.median(walls)


async def redis_cpu(client) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def simulate(exploration: float, alpha: float, half_life: float, rate: float, seed: int = 7) -> tuple[float, float, float | None]:
    """(share of the slow deployment while slow, its share while all are equal, seconds to
    recover half its share or None within 75 s)."""
    clock = [0.0]

    def now() -> float:
        return clock[0]

    tuning = LatencyTuning(exploration=exploration, alpha=alpha, half_life_seconds=half_life)
    deployments = [Deployment("sim", name, "p", "m") for name in "abc"]
    balancer = Balancer("sim", deployments, strategy="lowest_latency", latency=tuning,
                        state=LocalBalancingState(clock=now), rng=random.Random(seed), clock=now)
    rng = random.Random(seed + 1)
    events: list[tuple[float, int, object]] = []
    t, seq = 0.0, 0
    while t < 200:
        t += rng.expovariate(rate)
        events.append((t, seq, None))
        seq += 1
    heapq.heapify(events)
    picks: list[tuple[float, str]] = []
    while events:
        t, _, lease = heapq.heappop(events)
        clock[0] = t
        if lease is not None:
            await lease.release("success")  # type: ignore[attr-defined]
            continue
        lease = await balancer.pick()
        name = lease.deployment.name
        picks.append((t, name))
        latency = (3.0 if name == "c" and 60 <= t < 120 else 0.3) * rng.uniform(0.8, 1.2)
        heapq.heappush(events, (t + latency, seq, lease))
        seq += 1

    def share(start: float, end: float) -> float:
        names = [n for at, n in picks if start <= at < end]
        return names.count("c") / max(1, len(names))

    recovered = next((start + 5 - 120 for start in (120 + i * 0.5 for i in range(140)) if share(start, start + 5) >= 1 / 6), None)
    return share(70, 120), share(10, 60), recovered


async def exploration_study() -> None:
    print("lowest_latency exploration (simulated; 3 deployments of 0.3 s, 'c' 3 s from t=60 to t=120):")
    print(f"  {'req/s':>5} {'explore':>7} {'alpha':>5} {'half-life':>9} {'c share equal':>13} {'c share slow':>12} {'recovery s':>10}")
    settings = [(0.0, 0.5, 10.0), (0.05, 0.2, 30.0), (0.05, 0.5, 10.0), (0.1, 0.5, 10.0)]
    for rate in (5.0, 20.0, 100.0):
        for exploration, alpha, half_life in settings:
            slow, equal, recovered = await simulate(exploration, alpha, half_life, rate)
            shown = f"{recovered:.1f}" if recovered is not None else "> 75"
            print(f"  {rate:5.0f} {exploration:7.2f} {alpha:5.2f} {half_life:9.0f} {equal:13.3f} {slow:12.3f} {shown:>10}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5_000, help="attempts per round, per-instance state")
    parser.add_argument("--redis-n", type=int, default=300, help="attempts per round, Redis-shared state")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--exploration", action="store_true", help="only the exploration study")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    started = time.perf_counter()
    if not args.exploration:
        await local_costs(max(1, min(args.n, 100_000)))
        await redis_costs(args.redis_url, max(1, min(args.redis_n, 5_000)))
    await exploration_study()
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
