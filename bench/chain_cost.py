"""CPU per request of the call_provider middlewares alone, in process, without HTTP.

    python bench/chain_cost.py                      # each reliability middleware alone, then all four
    python bench/chain_cost.py --pipeline retry,timeout

Builds a Gateway from bench/configs/hookgate-reliable.toml with the given pipeline (before
``openai``), starts it, and times ``before_request`` plus the middleware chain around a terminal
that returns a fixed answer at once (no upstream, no event-loop wait), minus the cost of making
the RequestContext. Nothing fails, so nothing is retried. What it leaves out (timers firing, the
HTTP edge, the provider) is in bench/overhead.py's figures; this only says which middleware costs
what of the chain.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from pathlib import Path

from aiohttp import web

from hookgate.config import load_config
from hookgate.context import RequestContext
from hookgate.gateway import Gateway
from hookgate.responses import Completion

CONFIG = Path(__file__).parent / "configs" / "hookgate-reliable.toml"
MIDDLEWARES = ["retry", "circuit_breaker", "concurrency", "timeout"]
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64}
ANSWER = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}  # fmt: skip


async def measure(pipeline: list[str], requests: int) -> float:
    """µs of CPU-bound work per request for ``pipeline``'s before_request hooks and chain."""
    text = CONFIG.read_text().replace("UPSTREAM_PORT", "9")  # never called
    text = re.sub(r"pipeline = \[.*\]", "pipeline = [" + ", ".join(f'"{p}"' for p in [*pipeline, "openai"]) + "]", text)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chain.toml"
        path.write_text(text)
        gateway = Gateway(load_config(path))
    app = web.Application()
    await gateway.start(app)
    try:

        async def terminal(ctx: RequestContext) -> Completion:
            return Completion(dict(ANSWER))

        chain = gateway.runner.build_chain(terminal)
        route = gateway.routes.resolve("gpt-4o-mini")

        def context() -> RequestContext:
            ctx = RequestContext(request_id="req_bench", body=dict(BODY), headers={}, api_key="sk-bench")
            ctx.route, ctx.provider = route, route.provider
            return ctx

        async def one() -> None:
            ctx = context()
            await gateway.runner.each("before_request", ctx=ctx)
            await chain(ctx)

        for _ in range(requests // 10):  # warm-up
            await one()
        started = time.process_time()
        for _ in range(requests):
            context()
        base = time.process_time() - started
        started = time.process_time()
        for _ in range(requests):
            await one()
        return (time.process_time() - started - base) / requests * 1e6
    finally:
        await gateway.stop(app)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", help="comma-separated middlewares (default: each of the four alone, none, then all)")
    parser.add_argument("-n", "--requests", type=int, default=20000)
    args = parser.parse_args()
    if args.pipeline:
        pipelines = [args.pipeline.split(",")]
    else:
        pipelines = [[], *([name] for name in MIDDLEWARES), MIDDLEWARES]
    for pipeline in pipelines:
        cost = await measure(pipeline, args.requests)
        print(f"{', '.join(pipeline) or '(no middleware)':45s} {cost:7.1f} µs per request")


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
