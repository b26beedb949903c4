"""Threat: client input picks the keys of an in-memory table, and the table grows without end.

Issue 10 item 3: 400 unique 1 MB prompts took the default pipeline from 94 to 521 MiB (a cache
bounded in entries only); 60,000 bearer tokens left +74 MiB in the local rate-limit windows and
the local usage ledger, never freed; the circuit-breaker table grew by one per invented model
name under a pattern route. Each structure is flooded here through its plugin's own hooks with
20,000 invented keys, the process's resident memory read from /proc/self/statm, and must stay
within its bound, and give the memory back once the entries expire (the clock is moved, not
waited for): a second flood after expiry then costs nothing more. (Not tracemalloc: it counts
orjson's serialised answers at the size of the buffer they were grown in, 16 times too much.)
"""
from __future__ import annotations

import gc
import os
from decimal import Decimal
from typing import Any

import pytest

from hookgate import Completion, Outcome, RequestContext
from hookgate.facts import WORST_CASE_COST_USD
from hookgate.plugins.budget import Budget, BudgetConfig
from hookgate.plugins.circuit_breaker import CircuitBreaker, CircuitBreakerConfig
from hookgate.plugins.memory_cache import MemoryCache, MemoryCacheConfig
from hookgate.plugins.rate_limit import RateLimit, RateLimitConfig
from hookgate.plugins.usage import Usage, UsageConfig
from hookgate.routing import Route

MiB = 1 << 20
TOKENS = 20_000
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """Resident bytes of this process now."""
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


@pytest.fixture(autouse=True)
def no_redis(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)  # every plugin here keeps its state in the process


class _Provider:
    name = "echo"


ROUTE = Route("echo", _Provider(), "echo")  # type: ignore[arg-type]


def request(token: str | None, body: dict[str, Any] | None = None) -> RequestContext:
    ctx = RequestContext(request_id="r", body=body or {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}, headers={}, api_key=token)
    ctx.route, ctx.provider = ROUTE, ROUTE.provider
    return ctx


def answered(ctx: RequestContext, cost: str | None = "0.000001") -> Outcome:
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    response = Completion({"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}], "usage": usage})
    ctx.attempts.append(object())  # type: ignore[arg-type]  # it reached the provider
    return Outcome(200, None, response, usage, Decimal(cost) if cost else None, 0.001, 0.0, None, {})


def answer(content: str) -> Completion:
    return Completion({
        "id": "c", "object": "chat.completion", "created": 0, "model": "echo",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    })


async def test_memory_cache_keeps_to_its_byte_budget_under_unique_large_prompts():
    cache = MemoryCache(MemoryCacheConfig(max_bytes=16 * MiB))
    before = rss()
    for i in range(100):  # 100 unique answers of 512 KiB: 50 MiB offered
        ctx = request(None, {"model": "echo", "messages": [{"role": "user", "content": f"{i}"}]})
        assert await cache.cache_lookup(ctx) is None
        await cache.after_response(ctx, answer(f"{i}:" + "a" * (512 * 1024)))
    assert cache.bytes <= 16 * MiB and 25 <= len(cache) < 32
    grown = rss() - before
    print(f"memory_cache: 50 MiB of unique answers offered, {len(cache)} kept, RSS +{grown / MiB:.1f} MiB")
    assert grown < 16 * MiB + 16 * MiB  # entries and allocator slack only (max_entries alone: 50 MiB and more)
    # the most recent answers are the ones kept
    ctx = request(None, {"model": "echo", "messages": [{"role": "user", "content": "99"}]})
    assert await cache.cache_lookup(ctx) is not None


def test_memory_cache_budget_defaults_to_256_mib():
    assert MemoryCacheConfig().max_bytes == 256 * MiB


_RATE_LIMIT_FLOOD = """
import asyncio, gc, json, os, sys
sys.path.insert(0, sys.argv[1])
from test_memory_floods import TOKENS, answered, request, rss
from hookgate.plugins import rate_limit as module
from hookgate.plugins.rate_limit import RateLimit, RateLimitConfig

now = [1_000_000.0]
module.monotonic_ms = lambda: now[0]
limiter = RateLimit(RateLimitConfig(requests_per_minute=100, tokens_per_minute=100_000))

async def flood(prefix):
    for i in range(TOKENS):  # one request per invented bearer token (no api_keys)
        ctx = request(f"{prefix}-{i}")
        await limiter.before_request(ctx)
        limiter.request_finished(ctx, answered(ctx))

async def main():
    figures = {"before": rss()}
    await flood("first")
    figures["first"], figures["scopes_after_first"] = rss(), len(limiter.local)
    now[0] += 61_000  # a minute later the first flood's windows hold nothing
    await flood("second")
    figures["second"], figures["scopes_after_second"] = rss(), len(limiter.local)
    now[0] += 61_000
    await limiter.before_request(request("late"))
    figures["scopes_at_the_end"] = len(limiter.local)
    print(json.dumps(figures))

asyncio.run(main())
"""


def test_local_rate_limit_windows_of_a_token_flood_are_freed_after_the_window():
    """In a fresh interpreter: memory freed by earlier tests would hide the flood's growth."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", _RATE_LIMIT_FLOOD, str(Path(__file__).parent)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    first, second = figures["first"] - figures["before"], figures["second"] - figures["before"]
    print(f"rate_limit: {TOKENS} tokens RSS +{first / MiB:.1f} MiB; a second flood after the window: +{second / MiB:.1f} MiB in all")
    assert figures["scopes_after_first"] == TOKENS and figures["scopes_after_second"] == TOKENS and figures["scopes_at_the_end"] == 1
    assert first > 4 * MiB  # the flood is visible: this measurement can fail
    assert second < first * 1.25, "the first flood's memory was not given back"


async def test_local_rate_limit_windows_are_capped_even_within_the_window():
    limiter = RateLimit(RateLimitConfig(requests_per_minute=100, max_local_scopes=1000))
    before = rss()
    for i in range(TOKENS):
        await limiter.before_request(request(f"tok-{i}"))
    assert len(limiter.local) == 1000
    assert rss() - before < 4 * MiB


async def test_local_usage_ledger_of_a_token_flood_is_capped_and_expires():
    usage = Usage(UsageConfig(max_local_rows=1000, retention_days=1))
    before = rss()
    for i in range(TOKENS):
        ctx = request(f"tok-{i}")
        usage.request_finished(ctx, answered(ctx))
    assert len(usage.local) == 1000
    assert rss() - before < 4 * MiB
    later = usage.local.clock() + 2 * 86400  # past retention_days
    usage.local.clock = lambda: later
    usage.local.expire()
    assert len(usage.local) == 0


async def test_local_budget_accounts_of_a_token_flood_are_capped_and_expire():
    budget = Budget(BudgetConfig(daily_budget_usd=Decimal("1"), max_local_accounts=1000))
    before = rss()
    for i in range(TOKENS):  # without api_keys, a default budget applies per bearer token
        ctx = request(f"tok-{i}")
        ctx[WORST_CASE_COST_USD] = Decimal("0.001")
        await budget.before_request(ctx)
        budget.request_finished(ctx, answered(ctx))
    assert len(budget.local) == 1000
    assert rss() - before < 4 * MiB
    accounts = budget.local._accounts
    later = accounts.clock() + 33 * 86400  # the month is over
    accounts.clock = lambda: later
    accounts.expire()
    assert len(budget.local) == 0


async def test_circuit_breakers_of_invented_model_names_are_capped_and_dropped_when_idle():
    breaker = CircuitBreaker(CircuitBreakerConfig(max_routes=1000))
    before = rss()

    async def upstream(ctx):
        return answer("ok")

    for i in range(TOKENS):  # a pattern route passes any name through to the upstream
        ctx = request(None, {"model": f"groq/invented-{i}", "messages": [{"role": "user", "content": "hi"}]})
        ctx.route = Route(f"groq/invented-{i}", _Provider(), f"invented-{i}")  # type: ignore[arg-type]
        await breaker.call_provider(ctx, upstream)
    assert len(breaker.breakers) == 1000
    assert rss() - before < 4 * MiB
    table = breaker.breakers
    later = table.clock() + 31  # idle for longer than window_seconds and open_seconds (30 s)
    table.clock = lambda: later
    table.expire()
    assert len(table) == 0
