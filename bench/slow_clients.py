"""What slow and unauthenticated clients cost a real ``hookgate serve`` (issue 10 item 1).

Starts the set-up of ``tests/security/test_slow_clients.py`` (api_keys on, a short body deadline,
RLIMIT_NOFILE limited) and prints what the test only bounds: when a body that never comes and a
trickled one get their answer, ``/healthz`` latency and the log's growth while N such clients
are open, and the server's resident memory while unauthenticated 4 MiB bodies are held open. It
uses the test's own clients, so both measure the same thing. Bounded: a few seconds plus twice
the deadline; traffic to 127.0.0.1 only.

    python bench/slow_clients.py [--clients 600] [--open-files 512] [--deadline 1] [--held-bodies 50]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "security")]

import test_slow_clients as clients  # noqa: E402
from servers import start_gateway  # noqa: E402


async def measure(args: argparse.Namespace) -> None:
    config = clients.CONFIG.replace(f"= {clients.DEADLINE}", f"= {args.deadline:g}")
    gateway = start_gateway(config, open_file_limit=args.open_files, log_to_file=True)
    assert gateway.log_path is not None
    try:
        for name, trickle in (("no body", None), ("a byte every 0.3 s", 0.3)):
            answer, seconds = await clients.slow_client(gateway.port, trickle=trickle)
            print(f"{name}: {answer.split(b' ', 2)[1].decode()} after {seconds:.2f} s")

        logged_before = len(gateway.log_path.read_bytes())
        connected: list[int] = []
        flood = [
            asyncio.create_task(clients.slow_client(gateway.port, trickle=0.3 if i % 2 else None, connected=connected))
            for i in range(args.clients)
        ]
        try:
            probes: list[float] | None = await clients.healthz_during(gateway.port, connected)
        except TimeoutError:
            probes = None  # a probe had no answer within 5 s
        answers = await asyncio.gather(*flood, return_exceptions=True)
        logged = gateway.log_path.read_bytes()[logged_before:]
        statuses = [type(got).__name__ if isinstance(got, BaseException) else got[0].split(b" ", 2)[1].decode() for got in answers]
        print(f"{args.clients} slow clients: " + ", ".join(f"{statuses.count(s)} × {s}" for s in sorted(set(statuses))))
        if probes is None:
            print("  /healthz: a probe had no answer within 5 s")
        else:
            print(f"  /healthz ms: median {statistics.median(probes):.1f}, probes {[round(p, 1) for p in probes]}")
        lines, tracebacks = logged.count(b"\n"), logged.count(b"Traceback")
        print(f"  log: {lines} lines, {len(logged)} bytes, {tracebacks} tracebacks")

        process = psutil.Process(gateway.process.pid)
        before = process.memory_info().rss
        body = b"x" * (4 * clients.MiB - 1)

        async def held() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writer.write(clients.head(key=None, length=4 * clients.MiB) + body)
            await reader.read(-1)
            writer.close()

        holding = [asyncio.create_task(held()) for _ in range(args.held_bodies)]
        peak = before
        while not all(task.done() for task in holding):
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.02)
        print(f"{args.held_bodies} held unauthenticated 4 MiB bodies: RSS {before / clients.MiB:.0f} MiB, peak +{(peak - before) / clients.MiB:.1f} MiB")
    finally:
        gateway.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=600, help="slow clients at once (half send nothing, half trickle)")
    parser.add_argument("--open-files", type=int, default=512, help="the server's RLIMIT_NOFILE")
    parser.add_argument("--deadline", type=float, default=1.0, help="[gateway] body_read_timeout_seconds")
    parser.add_argument("--held-bodies", type=int, default=50, help="unauthenticated 4 MiB bodies held open at once")
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
