"""What the memory plugin adds to a turn of a 50-turn conversation, and what it saves on the wire.

    python bench/memory_overhead.py [--turns 50] [--iterations 300] [--redis-url redis://127.0.0.1:6379/0]

1. Added latency per turn, measured around the plugin's own hooks (the upstream call is not in
   it): ``before_request`` (take the lease and load the conversation in one script, count what is
   new, fit the history to the window) and ``after_response`` (append the new user message and the
   answer atomically, evicting the oldest turn so the conversation stays at ``--turns``, and
   release the lease), for the in-process store and for Redis (plain and AES-GCM encrypted).
   Median and p95 of ``--iterations`` turns, after 20 warm-up turns, and the gateway process's
   CPU time per turn (what contention on a shared machine does not inflate). The load average and
   the Redis reply parser in use are printed first.
2. Bytes on the wire: the client's request body for one turn when the gateway keeps the history
   against resending it, at ``--turns`` turns and summed over a whole conversation.

User messages are about 40 words, answers about 120 (a chat assistant's). Redis is
``--redis-url``, else ``$REDIS_URL``, else the local default; keys live under a fresh prefix and
are deleted afterwards. The run is bounded (well under 30 s on a shared 2-core machine).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import os
import statistics
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from hookgate import Completion, RequestContext
from hookgate.conversations import CONVERSATION_STORE_SLOT, StoreSlot
from hookgate.plugins.memory import Memory, MemoryConfig
from hookgate.redis import REDIS_SERVICE, RedisService
from hookgate.tasks import BACKGROUND_TASKS, BackgroundTasks

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jolly brave zebras".split()


def sentence(words: int, seed: int) -> str:
    return " ".join(WORDS[(seed * 7 + i) % len(WORDS)] for i in range(words))


def user_message(turn: int) -> dict[str, Any]:
    return {"role": "user", "content": sentence(40, turn)}


def answer(turn: int) -> Completion:
    return Completion({
        "id": f"chatcmpl-{turn}", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": sentence(120, turn + 1), "refusal": None}, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    })


async def started_plugin(options: dict[str, Any]) -> tuple[Memory, web.Application]:
    app = web.Application()
    app[REDIS_SERVICE] = RedisService()
    app[BACKGROUND_TASKS] = BackgroundTasks()
    app[CONVERSATION_STORE_SLOT] = StoreSlot()
    plugin = Memory(MemoryConfig.model_validate(options))
    await plugin.startup(app)
    return plugin, app


def context(conversation: str, turn: int) -> RequestContext:
    body = {"model": "gpt-4o-mini", "messages": [user_message(turn)]}
    return RequestContext(request_id=f"bench-{turn}", body=body, headers={"x-hookgate-conversation": conversation}, api_key="sk-bench")


async def measure(label: str, options: dict[str, Any], turns: int, iterations: int) -> dict[str, float]:
    plugin, app = await started_plugin({**options, "max_turns": turns})
    conversation = "new"
    for turn in range(turns):  # build the conversation up to its size (these turns are not measured)
        ctx = context(conversation, turn)
        await plugin.before_request(ctx)
        await plugin.after_response(ctx, answer(turn))
        conversation = ctx.response_headers["x-hookgate-conversation"]
    loads, saves, cpu, sent = [], [], [], 0
    for turn in range(turns, turns + 20 + iterations):
        ctx = context(conversation, turn)
        began, began_cpu = time.perf_counter(), time.process_time()
        await plugin.before_request(ctx)
        loaded = time.perf_counter()
        await plugin.after_response(ctx, answer(turn))
        saved, saved_cpu = time.perf_counter(), time.process_time()
        if turn >= turns + 20:
            loads.append((loaded - began) * 1000)
            saves.append((saved - loaded) * 1000)
            cpu.append((saved_cpu - began_cpu) * 1000)
            sent = len(ctx.body["messages"])
    await plugin.shutdown()
    await app[REDIS_SERVICE].close()
    row = {
        "load_median_ms": statistics.median(loads),
        "load_p95_ms": statistics.quantiles(loads, n=20)[-1],
        "save_median_ms": statistics.median(saves),
        "save_p95_ms": statistics.quantiles(saves, n=20)[-1],
        "gateway_cpu_ms": sum(cpu) / len(cpu),
        "messages_sent": sent,
    }
    print(
        f"{label:<24} load+fit {row['load_median_ms']:6.3f} ms (p95 {row['load_p95_ms']:6.3f})   "
        f"append {row['save_median_ms']:6.3f} ms (p95 {row['save_p95_ms']:6.3f})   "
        f"gateway CPU {row['gateway_cpu_ms']:5.3f} ms/turn   messages upstream {sent}"
    )
    return row


def wire_bytes(turns: int) -> None:
    history: list[dict[str, Any]] = []
    resend_total = memory_total = 0
    for turn in range(turns + 1):
        new = user_message(turn)
        resend = len(orjson.dumps({"model": "gpt-4o-mini", "messages": [*history, new]}))
        kept = len(orjson.dumps({"model": "gpt-4o-mini", "messages": [new]}))
        resend_total += resend
        memory_total += kept
        history += [new, answer(turn).body["choices"][0]["message"]]
    print(f"\nclient request body at turn {turns + 1}: resending the history {resend:,} B, with memory {kept:,} B ({resend / kept:.0f}x less)")
    print(f"a whole {turns + 1}-turn conversation:   resending {resend_total:,} B, with memory {memory_total:,} B ({resend_total / memory_total:.0f}x less)")
    print("(the upstream still receives the whole fitted history: memory saves the client's bytes and its bookkeeping, not prompt tokens)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    prefix = f"bench:{uuid.uuid4().hex[:8]}"
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    parser_name = "hiredis" if importlib.util.find_spec("hiredis") else "redis-py's Python parser (pip install hiredis: faster)"
    print(f"a {args.turns}-turn conversation (about {args.turns * 160} words), {args.iterations} measured turns each")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; Redis replies parsed by {parser_name}\n")
    await measure("memory store", {}, args.turns, args.iterations)
    redis = {"store": "redis", "redis_url": args.redis_url, "key_prefix": prefix}
    try:
        await measure("redis store", redis, args.turns, args.iterations)
        await measure("redis store, encrypted", {**redis, "encryption_keys": [key]}, args.turns, args.iterations)
    finally:
        from redis import asyncio as aioredis

        client = aioredis.Redis.from_url(args.redis_url)
        async for name in client.scan_iter(match=f"{prefix}:*"):
            await client.delete(name)
        await client.aclose()
    wire_bytes(args.turns)


if __name__ == "__main__":
    asyncio.run(main())
