"""rate_limit: requests and tokens per minute held exactly across gateway processes sharing
Redis; tokens reserved before the call and corrected after it, on success and failure alike."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from accounting_support import (  # noqa: F401  (captured_logs: autouse)
    DEBUG_LOGS,
    bearer,
    captured_logs,
    emulated_usage,
    keys_section,
    new_key,
    stop_and_check,
)
from conftest import CHAT, assert_conforms, eventually, upstream_config
from hookgate.plugins.rate_limit import duration
from hookgate.testing.openai_emulator import Fault
from servers import free_port

OPENAI_HEADERS = [f"x-ratelimit-{kind}-{unit}" for unit in ("requests", "tokens") for kind in ("limit", "remaining", "reset")]


def limited(emulator, key: str, redis: dict | None = None, *, extra: list[str] = (), **settings) -> str:
    return upstream_config(
        emulator,
        ["api_keys", "token_counter", "rate_limit", *extra],
        api_keys=keys_section({"team": (key, settings)}),
        rate_limit=redis or {},
    )


async def start_processes(gateway_process, config: str, count: int):
    """Start ``count`` gateway processes at once (each takes about a second to boot)."""
    return await asyncio.gather(*(asyncio.to_thread(gateway_process, config, env=DEBUG_LOGS) for _ in range(count)))


@pytest.fixture
def local_only(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)


# ---------------------------------------------------------------------------- across processes


async def test_60_per_minute_over_3_processes_admits_exactly_60_of_200(gateway_process, emulator, redis_url, redis_prefix):
    key = new_key("rpm")
    config = limited(emulator, key, {"redis_url": redis_url, "key_prefix": redis_prefix}, requests_per_minute=60)
    gateways = await start_processes(gateway_process, config, 3)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def ask(url: str):
            async with session.post(f"{url}/v1/chat/completions", json=CHAT, headers=bearer(key)) as response:
                return response.status, dict(response.headers), await response.json()

        results = await asyncio.gather(*(ask(gateways[i % 3].url) for i in range(200)))
    admitted = [headers for status, headers, _ in results if status == 200]
    refused = [(headers, body) for status, headers, body in results if status == 429]
    logs = stop_and_check(*gateways)
    assert not any("rate_limit_redis_unavailable" in text for text in logs), "Redis decided every request"
    assert (len(admitted), len(refused)) == (60, 140)
    assert emulator.stats.calls == 60
    for headers, body in refused:
        assert 1 <= int(headers["Retry-After"]) <= 60
        assert body["error"]["code"] == "rate_limit_exceeded" and headers["x-ratelimit-remaining-requests"] == "0"
        assert_conforms("ErrorResponse", body)
    assert {h["x-ratelimit-limit-requests"] for h in admitted} == {"60"}
    assert sorted(int(h["x-ratelimit-remaining-requests"]) for h in admitted) == list(range(60)), "each admission saw its own count"


async def test_a_10k_token_limit_holds_an_8k_reservation_until_it_is_corrected(gateway_process, emulator, redis_url, redis_prefix):
    key = new_key("tpm")
    config = limited(emulator, key, {"redis_url": redis_url, "key_prefix": redis_prefix}, tokens_per_minute=10_000)
    first_gateway, second_gateway = await start_processes(gateway_process, config, 2)
    big = {**CHAT, "max_tokens": 8000}
    emulator.script(Fault(delay=0.5))
    async with aiohttp.ClientSession() as session:

        async def ask(url: str):
            async with session.post(f"{url}/v1/chat/completions", json=big, headers=bearer(key)) as response:
                return response.status, dict(response.headers), await response.json()

        first = asyncio.ensure_future(ask(first_gateway.url))
        await eventually(lambda: emulator.stats.in_flight == 1, timeout=5)
        status, headers, body = await ask(second_gateway.url)
        assert status == 429 and int(headers["Retry-After"]) >= 1, "8k reserved + 8k asked > 10k"
        assert emulator.stats.calls == 1

        status, first_headers, _ = await first
        assert status == 200
        # The correction is written right after the answer, off its path: a refusal asks nothing
        # of the limit, so asking again until it lands costs nothing.
        deadline = time.monotonic() + 2
        while (answer := await ask(second_gateway.url))[0] == 429 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        status, third_headers, _ = answer
        assert status == 200, "the first reservation was corrected to its actual usage"
    actual = sum(emulated_usage(CHAT["messages"]))
    reserved = 10_000 - int(first_headers["x-ratelimit-remaining-tokens"])
    assert reserved > 8000
    assert int(third_headers["x-ratelimit-remaining-tokens"]) == 10_000 - actual - reserved
    stop_and_check(first_gateway, second_gateway)


# ----------------------------------------------------------------------- corrections and leaks


async def test_a_failed_call_gives_its_reserved_tokens_back(gateway, emulator, redis_url, redis_prefix):
    key = new_key("fail")
    client = await gateway(limited(emulator, key, {"redis_url": redis_url, "key_prefix": redis_prefix}, tokens_per_minute=10_000))
    big = {**CHAT, "max_tokens": 8000}
    emulator.script(Fault(status=500))
    assert (await client.post("/v1/chat/completions", json=big, headers=bearer(key))).status == 502
    assert (await client.post("/v1/chat/completions", json=big, headers=bearer(key))).status == 200


async def test_a_client_leaving_mid_stream_frees_the_reservation_but_pays_for_what_was_sent(gateway, emulator, redis_url, redis_prefix):
    key = new_key("leave")
    client = await gateway(limited(emulator, key, {"redis_url": redis_url, "key_prefix": redis_prefix}, tokens_per_minute=10_000))
    big = {**CHAT, "max_tokens": 8000}
    emulator.settings.chunk_latency = 0.2
    response = await client.post("/v1/chat/completions", json={**big, "stream": True}, headers=bearer(key))
    assert response.headers["x-ratelimit-limit-tokens"] == "10000", "stream headers are set before the first chunk"
    await response.content.readline()
    response.close()
    await eventually(lambda: emulator.stats.cancelled == 1, timeout=2)
    emulator.settings.chunk_latency = 0.0

    async def admitted() -> bool:
        return (await client.post("/v1/chat/completions", json=big, headers=bearer(key))).status == 200

    deadline = time.monotonic() + 2
    while not await admitted():
        assert time.monotonic() < deadline, "the abandoned stream's reservation was never corrected"
        await asyncio.sleep(0.05)


async def test_a_cache_hit_uses_no_tokens(gateway, emulator, local_only):
    key = new_key("hit")
    client = await gateway(limited(emulator, key, extra=["memory_cache"], tokens_per_minute=10_000))
    await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
    hit = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
    after = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1}, headers=bearer(key))
    assert hit.headers["x-hookgate-cache"] == "HIT"
    # The third reserves 1023 tokens less than the hit did (max_tokens 1 instead of the default
    # 1024); everything else in the window is the same only if the hit was corrected to zero.
    assert int(after.headers["x-ratelimit-remaining-tokens"]) == int(hit.headers["x-ratelimit-remaining-tokens"]) + 1023


# ------------------------------------------------------------------------------ scopes, headers


async def test_every_admitted_response_carries_openais_headers_streams_too(gateway, emulator, local_only):
    key = new_key("headers")
    client = await gateway(limited(emulator, key, requests_per_minute=10, tokens_per_minute=50_000))
    for body in (CHAT, {**CHAT, "stream": True}):
        response = await client.post("/v1/chat/completions", json=body, headers=bearer(key))
        await response.read()
        assert all(name in response.headers for name in OPENAI_HEADERS)
    assert response.headers["x-ratelimit-remaining-requests"] == "8"
    assert response.headers["x-ratelimit-reset-requests"].endswith("s")


async def test_a_model_limit_is_shared_by_every_key(gateway, emulator, local_only):
    alice, bob = new_key("m-alice"), new_key("m-bob")
    config = upstream_config(
        emulator,
        ["api_keys", "token_counter", "rate_limit"],
        api_keys=keys_section({"alice": (alice, {}), "bob": (bob, {})}),
        rate_limit={"models": {"gpt-4o-mini": {"requests_per_minute": 2}}},
    )
    client = await gateway(config)
    statuses = [(await client.post("/v1/chat/completions", json=CHAT, headers=bearer(k))).status for k in (alice, bob, alice)]
    assert statuses == [200, 200, 429]


async def test_keys_get_the_plugins_default_limit_unless_they_have_their_own(gateway, emulator, local_only):
    own, default = new_key("own"), new_key("default")
    config = upstream_config(
        emulator,
        ["api_keys", "token_counter", "rate_limit"],
        api_keys=keys_section({"own": (own, {"requests_per_minute": 3}), "default": (default, {})}),
        rate_limit={"requests_per_minute": 1},
    )
    client = await gateway(config)
    own_statuses = [(await client.post("/v1/chat/completions", json=CHAT, headers=bearer(own))).status for _ in range(4)]
    default_statuses = [(await client.post("/v1/chat/completions", json=CHAT, headers=bearer(default))).status for _ in range(2)]
    assert own_statuses == [200, 200, 200, 429] and default_statuses == [200, 429]


async def test_a_request_that_can_never_fit_is_told_so(gateway, emulator, local_only):
    key = new_key("huge")
    client = await gateway(limited(emulator, key, tokens_per_minute=1000))
    response = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 5000}, headers=bearer(key))
    assert response.status == 429 and "reduce max_tokens" in (await response.json())["error"]["message"]
    assert emulator.stats.calls == 0


# ---------------------------------------------------------------------------- without Redis


async def test_without_redis_each_instance_limits_on_its_own(gateway, emulator, local_only):
    key = new_key("local")
    config = limited(emulator, key, requests_per_minute=2)
    first, second = await gateway(config), await gateway(config)
    statuses = [(await c.post("/v1/chat/completions", json=CHAT, headers=bearer(key))).status for c in (first, first, first, second)]
    assert statuses == [200, 200, 429, 200], "per instance: two instances admit up to twice the limit"
    ready = await (await first.get("/readyz")).json()
    assert ready["checks"]["rate_limit"] == {"status": "ok", "detail": "no Redis: limits are per instance"}


async def test_an_unreachable_redis_falls_back_to_local_limits_or_rejects(gateway, emulator):
    key = new_key("down")
    dead = {"redis_url": f"redis://127.0.0.1:{free_port()}/0"}
    fallback = await gateway(limited(emulator, key, dead, requests_per_minute=1))
    statuses = [(await fallback.post("/v1/chat/completions", json=CHAT, headers=bearer(key))).status for _ in range(2)]
    assert statuses == [200, 429]
    assert (await (await fallback.get("/readyz")).json())["checks"]["rate_limit"]["status"] == "degraded"
    strict = await gateway(limited(emulator, key, {**dead, "on_redis_error": "reject"}, requests_per_minute=1))
    refused = await strict.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
    assert refused.status == 503 and (await refused.json())["error"]["code"] == "rate_limiter_unavailable"


def test_reset_durations_read_like_openais():
    assert [duration(ms) for ms in (0, 250, 1000, 1500, 59_999, 60_000, 361_000)] == ["0ms", "250ms", "1s", "1.5s", "59.999s", "1m0s", "6m1s"]
