"""Threat: an upstream reports absurd usage (2^63 tokens) and the money counters break.

Issue 10 item 8: budget settlement released the reservation and then failed on an int64
overflow, half-way through its script (Redis does not roll a Lua script back). Costs are clamped
per request (hookgate.accounting.MAX_PICO) and the counters now saturate (``add_clamped``), so two
absurd answers settled together leave the key's budget state consistent: nothing reserved, the
spend at the cap, the next request refused with a 429, and no Redis error (before, the failed
script was logged as one, and counted by the app's Redis guard as if Redis were failing). The
usage ledger's row saturates the same way.
"""
from __future__ import annotations

import asyncio
import hashlib

import redis
from structlog.testing import capture_logs

from hookgate.accounting import MAX_PICO

from conftest import completion, provider_plugin

KEY = "hg-absurd-spender"
ABSURD = {"prompt_tokens": 2**63, "completion_tokens": 2**63, "total_tokens": 2**64 - 1}  # as big as JSON integers get


def config(redis_url: str, prefix: str) -> str:
    return f"""
        [gateway]
        pipeline = ["api_keys", "token_counter", "cost", "budget", "usage", "absurd"]
        [plugins.api_keys.keys.spender]
        hash = "{hashlib.sha256(KEY.encode()).hexdigest()}"
        daily_budget_usd = "1000000"
        [plugins.cost.prices.absurd]
        input = "1000000"
        output = "0"
        [plugins.budget]
        redis_url = "{redis_url}"
        key_prefix = "{prefix}:budget"
        [plugins.usage]
        redis_url = "{redis_url}"
        key_prefix = "{prefix}:usage"
    """


async def test_two_absurd_answers_settle_atomically_and_the_budget_holds(gateway, redis_url, redis_prefix):
    both_reserved = asyncio.Event()
    arrived = []

    async def answer(ctx):
        arrived.append(ctx)
        if len(arrived) == 2:
            both_reserved.set()
        await both_reserved.wait()  # both requests hold a reservation before either settles
        body = completion("a lot", model="absurd").body
        return type(completion("x"))({**body, "usage": ABSURD})

    client = await gateway(config(redis_url, redis_prefix), local={"absurd": provider_plugin("absurd", answer)})
    ask = {"model": "absurd", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    headers = {"Authorization": f"Bearer {KEY}"}
    with capture_logs() as logs:
        first, second = await asyncio.gather(*(client.post("/v1/chat/completions", json=ask, headers=headers) for _ in range(2)))
        assert (first.status, second.status) == (200, 200), [e for e in logs if e["log_level"] == "error"]
        store = redis.Redis.from_url(redis_url)
        state = {}
        for _ in range(200):  # the settlements run in the background, after the answers
            state = {k.decode(): int(v) for k, v in store.hgetall(f"{redis_prefix}:budget:spender").items()}
            if state.get("reserved") == 0 and state.get("day_spent") == MAX_PICO:
                break
            await asyncio.sleep(0.02)
        refused = await client.post("/v1/chat/completions", json=ask, headers=headers)
        refusal = await refused.json()
        await client.close()  # waits for the background tasks
    assert state["reserved"] == 0 and state["day_spent"] == MAX_PICO and state["month_spent"] == MAX_PICO
    assert refused.status == 429 and refusal["error"]["code"] == "budget_exceeded"
    rows = [key for key in store.scan_iter(f"{redis_prefix}:usage:row:*")]
    (row,) = [{k.decode(): int(v) for k, v in store.hgetall(key).items()} for key in rows]
    assert row["requests"] == 2 and row["cost_pico"] == MAX_PICO
    assert [entry for entry in logs if entry["log_level"] in ("warning", "error", "critical")] == []


def test_to_pico_clamps_whatever_the_amount():
    from decimal import Decimal

    from hookgate.accounting import to_pico

    assert to_pico(Decimal("1e40")) == MAX_PICO and to_pico(Decimal("Infinity")) == 0 and to_pico(Decimal("-5")) == 0
    assert to_pico(Decimal("0.000001")) == 1_000_000
