"""redis_cache as clients and operators see it, against real Redis servers.

Keys and scoping, TTLs, Cache-Control, streams replayed either way, single-flight inside one
process and across gateway processes, and fail-open behaviour when Redis dies or hangs. Tests
share the session's Redis through a key prefix of their own; the ones that kill, freeze or
reconfigure Redis start a server of their own.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from conftest import assert_conforms, completion, eventually, pipeline_config, provider_plugin, upstream_config
from hookgate.config import ConfigError
from hookgate.server import create_app
from hookgate.testing.openai_emulator import Fault, OpenAIEmulator
from servers import free_port

CHAT: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "what is shared?"}], "temperature": 0.5}


def redis_cache(emulator, url: str, prefix: str, *, pipeline: tuple[str, ...] = ("redis_cache",), **settings: Any) -> str:
    """A gateway whose redis_cache (namespaced by ``prefix``) fronts the emulator.

    Redis operations get 1 s unless a test says otherwise: the production default (0.1 s) turns a
    stall of a loaded CI machine into a fail-open MISS, which only the fail-open tests are about.
    """
    settings.setdefault("operation_timeout_seconds", 1.0)
    # The circuit and the pool belong to the app's Redis service, shared by every plugin.
    service = {f"redis_{name}": settings.pop(name) for name in ("failure_threshold", "retry_interval_seconds", "max_connections") if name in settings}
    text = upstream_config(emulator, list(pipeline), redis_cache={"redis_url": url, "key_prefix": prefix, **settings})
    head, _, rest = text.partition("\n[plugins.")
    return head + "".join(f"\n{name} = {value}" for name, value in service.items()) + "\n[plugins." + rest


async def ask(client, body: dict[str, Any] = CHAT, headers: dict[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    """POST a chat request to a test app; the x-hookgate-cache value and the JSON answer."""
    response = await client.post("/v1/chat/completions", json=body, headers=headers or {})
    assert response.status == 200, await response.text()
    return response.headers["x-hookgate-cache"], await response.json()


async def ask_url(session: aiohttp.ClientSession, url: str, body: dict[str, Any] = CHAT) -> tuple[str, dict[str, Any]]:
    """The same against a gateway process."""
    async with session.post(f"{url}/v1/chat/completions", json=body) as response:
        assert response.status == 200, await response.text()
        return response.headers["x-hookgate-cache"], await response.json()


def sse_chunks(raw: bytes) -> list[dict[str, Any]]:
    """The chunks of an SSE body, checking it ends with [DONE]."""
    events = [line[len(b"data: "):] for line in raw.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    return [orjson.loads(event) for event in events[:-1]]


async def answer_text(response) -> str:
    """The assistant's text of a JSON or SSE answer."""
    if response.headers["Content-Type"].startswith("text/event-stream"):
        chunks = sse_chunks(await response.read())
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    return (await response.json())["choices"][0]["message"]["content"]


@pytest.fixture
async def redis_client(redis_url):
    """A client to look at what the gateway wrote."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def stored_keys(client: aioredis.Redis, prefix: str) -> list[str]:
    return sorted([key.decode() async for key in client.scan_iter(match=f"{prefix}:*")])


@pytest.fixture
def cancelling_gateway(aiohttp_client, make_config):
    """Like the ``gateway`` fixture, with aiohttp's handler cancellation on as ``hookgate serve``
    has it: a client that goes away cancels its request's handler."""

    async def start(toml: str):
        return await aiohttp_client(create_app(make_config(toml)), server_kwargs={"handler_cancellation": True})

    return start


# ------------------------------------------------------------------------------- the key ---


async def test_miss_then_hit_from_redis_with_its_age_and_expiry(gateway, emulator, redis_url, redis_prefix, redis_client):
    client = await gateway(redis_cache(emulator, redis_url, redis_prefix, ttl_seconds=60))
    assert (await ask(client))[0] == "MISS"
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.headers["x-hookgate-cache"] == "HIT" and response.headers["age"] == "0"
    assert emulator.stats.calls == 1
    [key] = await stored_keys(redis_client, redis_prefix)
    assert key.startswith(f"{redis_prefix}:hookgate:cache:v2:anon:")  # no API key: the anonymous namespace
    assert key.endswith("}") and ":{" in key, "the digest is a hash tag: entry and lock share a cluster slot"
    assert 55_000 < await redis_client.pttl(key) <= 60_000


@pytest.mark.parametrize(
    "change",
    [
        {"messages": [{"role": "user", "content": "what is shared!"}]},
        {"messages": [{"role": "system", "content": "be brief"}, *CHAT["messages"]]},
        {"temperature": 0.7},
        {"top_p": 0.9},
        {"max_tokens": 10},
        {"seed": 7},
        {"stop": ["\n"]},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
        {"response_format": {"type": "json_object"}},
        {"model": "gpt-4o"},
    ],
    ids=lambda change: next(iter(change)),
)
async def test_changing_what_shapes_the_answer_is_a_miss(gateway, emulator, redis_url, redis_prefix, change):
    config = redis_cache(emulator, redis_url, redis_prefix).replace('models = ["gpt-4o-mini"]', 'models = ["gpt-4o-mini", "gpt-4o"]')
    client = await gateway(config)
    await ask(client)
    assert (await ask(client, {**CHAT, **change}))[0] == "MISS"


@pytest.mark.parametrize(
    "same",
    [
        {"user": "someone-else", "metadata": {"trace": "abc"}},
        {"temperature": 0.5, "model": "gpt-4o-mini", "messages": [{"content": "what is shared?", "role": "user"}]},
        {"seed": None},
    ],
    ids=["user-and-metadata", "key-order", "null-field"],
)
async def test_what_does_not_shape_the_answer_is_a_hit(gateway, emulator, redis_url, redis_prefix, same):
    client = await gateway(redis_cache(emulator, redis_url, redis_prefix))
    await ask(client)
    body = dict(reversed(list({**CHAT, **same}.items())))
    assert (await ask(client, body))[0] == "HIT"
    assert emulator.stats.calls == 1


async def test_one_and_one_point_zero_are_the_same_request(gateway, emulator, redis_url, redis_prefix):
    client = await gateway(redis_cache(emulator, redis_url, redis_prefix))
    await ask(client, {**CHAT, "temperature": 1})
    assert (await ask(client, {**CHAT, "temperature": 1.0}))[0] == "HIT"


async def test_answers_are_scoped_per_client_key_unless_shared(gateway, emulator, redis_url, redis_prefix):
    client = await gateway(redis_cache(emulator, redis_url, redis_prefix))
    alice, bob = {"Authorization": "Bearer sk-alice"}, {"Authorization": "Bearer sk-bob"}
    assert (await ask(client, headers=alice))[0] == "MISS"
    assert (await ask(client, headers=bob))[0] == "MISS"
    assert (await ask(client, headers=alice))[0] == "HIT"
    shared = await gateway(redis_cache(emulator, redis_url, f"{redis_prefix}:shared", shared=True))
    assert (await ask(shared, headers=alice))[0] == "MISS"
    assert (await ask(shared, headers=bob))[0] == "HIT"


# ------------------------------------------------------------------------------------ TTL ---


async def test_entries_expire_after_the_ttl(gateway, emulator, redis_url, redis_prefix, redis_client):
    client = await gateway(redis_cache(emulator, redis_url, redis_prefix, ttl_seconds=0.3))
    assert (await ask(client))[0] == "MISS"
    assert (await ask(client))[0] == "HIT"
    started = time.monotonic()
    while await stored_keys(redis_client, redis_prefix):
        assert time.monotonic() - started < 2, "the entry outlived its 0.3 s TTL"
        await asyncio.sleep(0.05)
    assert (await ask(client))[0] == "MISS"
    assert emulator.stats.calls == 2


async def test_ttl_per_model_and_per_request(gateway, emulator, redis_url, redis_prefix, redis_client):
    client = await gateway(
        redis_cache(emulator, redis_url, redis_prefix, ttl_seconds=300, model_ttl_seconds={"gpt-4o-mini": 40}, max_ttl_seconds=100)
    )
    cases = [({}, 40_000), ({"x-hookgate-cache-ttl": "7"}, 7_000), ({"x-hookgate-cache-ttl": "5000"}, 100_000),
             ({"x-hookgate-cache-ttl": "soon"}, 40_000)]  # fmt: skip
    seen: set[str] = set()
    for index, (headers, expected_ms) in enumerate(cases):
        body = {**CHAT, "messages": [{"role": "user", "content": f"ttl case {index}"}]}
        await ask(client, body, headers)
        [key] = set(await stored_keys(redis_client, redis_prefix)) - seen
        seen.add(key)
        assert expected_ms - 2_000 < await redis_client.pttl(key) <= expected_ms, headers


# ------------------------------------------------------------------------- Cache-Control ---


async def test_no_cache_skips_the_lookup_and_refreshes_no_store_skips_the_write(gateway, emulator, redis_url, redis_prefix):
    client = await gateway(redis_cache(emulator, redis_url, redis_prefix))
    assert (await ask(client, headers={"Cache-Control": "no-store"}))[0] == "MISS"
    assert (await ask(client))[0] == "MISS", "no-store: nothing was written"
    _, first = await ask(client)
    status, fresh = await ask(client, headers={"Cache-Control": "no-cache"})
    assert status == "BYPASS" and fresh["id"] != first["id"]
    status, after = await ask(client)
    assert status == "HIT" and after["id"] == fresh["id"], "the fresh answer replaced the entry"
    assert emulator.stats.calls == 3


# ---------------------------------------------------------------------------------- streams ---


async def test_a_json_answer_is_replayed_as_sse(gateway, emulator, redis_url, redis_prefix):
    client = await gateway(redis_cache(emulator, redis_url, redis_prefix))
    _, answer = await ask(client)
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    assert response.headers["x-hookgate-cache"] == "HIT"
    assert response.headers["Content-Type"].startswith("text/event-stream")
    chunks = sse_chunks(await response.read())
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == answer["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == answer["usage"]
    assert emulator.stats.calls == 1


async def test_a_streamed_answer_is_stored_and_replayed_as_json(gateway, emulator, redis_url, redis_prefix):
    client = await gateway(redis_cache(emulator, redis_url, redis_prefix))
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    assert response.headers["x-hookgate-cache"] == "MISS"
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in sse_chunks(await response.read()) if c["choices"])
    status, answer = await ask(client)
    assert status == "HIT"
    assert_conforms("CreateChatCompletionResponse", answer)
    assert answer["choices"][0]["message"]["content"] == streamed
    assert answer["choices"][0]["finish_reason"] == "stop" and answer["usage"]["completion_tokens"] > 0
    assert emulator.stats.calls == 1


async def test_a_stream_whose_client_left_leaves_no_entry_and_cancels_the_upstream(
    cancelling_gateway, emulator, redis_url, redis_prefix, redis_client
):
    client = await cancelling_gateway(redis_cache(emulator, redis_url, redis_prefix))
    emulator.settings.chunk_latency = 0.2
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    await response.content.readline()
    response.close()
    await eventually(lambda: emulator.stats.cancelled == 1 and emulator.stats.in_flight == 0, timeout=5)
    assert await stored_keys(redis_client, redis_prefix) == [], "no entry, and the lock was released"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_a_stream_the_upstream_broke_is_never_stored(gateway, emulator, redis_url, redis_prefix, redis_client, stream):
    client = await gateway(redis_cache(emulator, redis_url, redis_prefix))
    emulator.script(Fault(drop_after=3) if stream else Fault(status=500))
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    await response.read()
    await eventually(lambda: emulator.stats.in_flight == 0)
    assert await stored_keys(redis_client, redis_prefix) == []
    assert (await ask(client))[0] == "MISS"


async def test_unlisted_finish_reasons_and_oversized_answers_are_not_stored(gateway, redis_url, redis_prefix, redis_client):
    async def answer(ctx):
        text = ctx.body["messages"][-1]["content"]
        return completion(text, finish_reason="content_filter" if text == "filtered" else "stop")

    config = pipeline_config(["redis_cache", "fixed"], redis_cache={"redis_url": redis_url, "key_prefix": redis_prefix, "max_entry_bytes": 600})
    client = await gateway(config, local={"fixed": provider_plugin("fixed", answer)})
    for text in ("filtered", "word " * 200, "fine"):
        await ask(client, {"model": "fixed", "messages": [{"role": "user", "content": text}]})
    assert len(await stored_keys(redis_client, redis_prefix)) == 1
    assert (await ask(client, {"model": "fixed", "messages": [{"role": "user", "content": "fine"}]}))[0] == "HIT"


# --------------------------------------------------------------------------- single-flight ---


async def test_concurrent_identical_requests_share_one_upstream_call(gateway, emulator, redis_url, redis_prefix):
    client = await gateway(redis_cache(emulator, redis_url, redis_prefix))
    emulator.settings.latency = 0.3

    async def one(stream: bool) -> tuple[str, str]:
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
        assert response.status == 200
        return response.headers["x-hookgate-cache"], await answer_text(response)

    results = await asyncio.gather(*(one(stream=i % 2 == 1) for i in range(20)))
    assert emulator.stats.calls == 1
    assert sorted(status for status, _ in results) == ["HIT"] * 19 + ["MISS"]
    assert {text for _, text in results} == {"emulated: what is shared?"}


async def test_a_burst_of_identical_requests_asks_redis_once(gateway, emulator, redis_server, redis_prefix):
    client = await gateway(redis_cache(emulator, redis_server.url, redis_prefix))
    admin = aioredis.Redis.from_url(redis_server.url)
    await admin.config_resetstat()
    emulator.settings.latency = 0.2
    await asyncio.gather(*(ask(client) for _ in range(20)))

    async def stored_and_unlocked() -> bool:
        keys = await stored_keys(admin, redis_prefix)
        return len(keys) == 1 and not keys[0].endswith(":lock")

    await wait_for(stored_and_unlocked, "the entry")
    stats = await admin.info("commandstats")
    await admin.aclose()
    # Redis counts the GETs inside scripts too: the claim's and the store-and-unlock's.
    assert stats["cmdstat_get"]["calls"] == 1 + 2, "one lookup for twenty identical requests"
    assert emulator.stats.calls == 1


async def test_the_leaders_client_leaving_does_not_fail_the_others(cancelling_gateway, emulator, redis_url, redis_prefix):
    client = await cancelling_gateway(redis_cache(emulator, redis_url, redis_prefix))
    emulator.settings.latency = 0.5
    leader = asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT))
    await eventually(lambda: emulator.stats.in_flight == 1)
    followers = [asyncio.ensure_future(ask(client, body)) for body in (CHAT, {**CHAT, "stream": False}, dict(reversed(CHAT.items())))]
    await asyncio.sleep(0.05)  # the followers have joined the flight
    leader.cancel()  # its client goes away
    results = await asyncio.gather(*followers)
    assert [status for status, _ in results] == ["HIT"] * 3
    assert len({answer["id"] for _, answer in results}) == 1
    assert emulator.stats.calls == 1 and emulator.stats.cancelled == 0


async def test_the_upstream_call_is_cancelled_when_every_client_left(cancelling_gateway, emulator, redis_url, redis_prefix, redis_client):
    client = await cancelling_gateway(redis_cache(emulator, redis_url, redis_prefix))
    emulator.settings.latency = 5
    waiting = [asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT)) for _ in range(3)]
    await eventually(lambda: emulator.stats.in_flight == 1)
    for request in waiting:
        request.cancel()
    await eventually(lambda: emulator.stats.cancelled == 1, timeout=3)
    await eventually(lambda: True)
    assert emulator.stats.calls == 1
    started = time.monotonic()
    while await stored_keys(redis_client, redis_prefix):  # the lock is released in the background
        assert time.monotonic() - started < 2
        await asyncio.sleep(0.02)


async def test_an_upstream_error_is_shared_not_multiplied(gateway, emulator, redis_url, redis_prefix):
    client = await gateway(redis_cache(emulator, redis_url, redis_prefix))
    emulator.settings.latency = 0.2
    emulator.script(Fault(status=429, retry_after=1))
    responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=CHAT) for _ in range(5)))
    assert [r.status for r in responses] == [429] * 5
    assert [(await r.json())["error"]["code"] for r in responses] == ["rate_limit_exceeded"] * 5
    assert emulator.stats.calls == 1
    assert (await ask(client))[0] == "MISS", "errors are not stored"


async def test_one_flight_carries_the_retries_of_the_reliability_pipeline(gateway, emulator, redis_url, redis_prefix):
    """redis_cache before retry/timeout: a failed first attempt is retried inside the one shared
    call, and streaming requests get their stream once its first chunk is in hand."""
    pipeline = ("memory_cache", "redis_cache", "retry", "circuit_breaker", "concurrency", "timeout")
    config = upstream_config(
        emulator, list(pipeline), redis_cache={"redis_url": redis_url, "key_prefix": redis_prefix},
        retry={"backoff_base_seconds": 0.01}, timeout={"chunk_gap_seconds": 2},
    )  # fmt: skip
    client = await gateway(config)
    emulator.settings.latency = 0.2
    emulator.script(Fault(status=503))
    responses = await asyncio.gather(*(client.post("/v1/chat/completions", json={**CHAT, "stream": i % 2 == 0}) for i in range(6)))
    assert [r.status for r in responses] == [200] * 6
    assert sorted(r.headers["x-hookgate-cache"] for r in responses) == ["HIT"] * 5 + ["MISS"]
    assert {await answer_text(response) for response in responses} == {"emulated: what is shared?"}
    assert emulator.stats.calls == 2, "one failed attempt, one retry: for all six requests"
    assert (await ask(client))[0] == "HIT"


async def test_a_fallback_routes_answer_is_stored_under_its_own_key(gateway, emulator, redis_url, redis_prefix):
    """The primary route failed and another provider answered: that answer is the backup
    model's, and must not be replayed to the next request for the primary route."""
    async with OpenAIEmulator().serve() as backup:
        config = pipeline_config(
            ["redis_cache", "openai", "openai_compatible"],
            redis_cache={"redis_url": redis_url, "key_prefix": redis_prefix},
            openai={"base_url": emulator.base_url, "api_key": "sk-primary", "models": ["gpt-4o-mini"]},
            openai_compatible={"servers": {"backup": {"base_url": backup.base_url, "models": ["backup-model"]}}},
        ) + '[models."smart"]\nprovider = "openai"\nmodel = "gpt-4o-mini"\nfallbacks = ["backup-model"]\n'
        client = await gateway(config)
        emulator.settings.fault = Fault(status=503)
        status, answer = await ask(client, {**CHAT, "model": "smart"})
        assert status == "MISS" and answer["model"] == "backup-model"
        emulator.settings.fault = None
        status, answer = await ask(client, {**CHAT, "model": "smart"})
        assert status == "MISS" and answer["model"] == "gpt-4o-mini", "the backup's answer was not stored for smart"
        assert (await ask(client, {**CHAT, "model": "backup-model"}))[0] == "HIT", "it was stored for the backup model"
        assert backup.stats.calls == 1


async def test_a_process_waits_for_the_lock_holders_answer(gateway, emulator, redis_url, redis_prefix, redis_client):
    """Another process holds the lock (set here by hand); its answer lands in Redis: a HIT."""
    client = await gateway(redis_cache(emulator, redis_url, redis_prefix))
    await ask(client)  # to learn the key
    [key] = await stored_keys(redis_client, redis_prefix)
    entry = await redis_client.get(key)
    await redis_client.delete(key)
    await redis_client.set(key + ":lock", "another-process", px=5_000)
    waiting = asyncio.ensure_future(ask(client))
    await asyncio.sleep(0.15)
    assert not waiting.done()
    await redis_client.set(key, entry, px=60_000)
    status, _ = await asyncio.wait_for(waiting, 2)
    assert status == "HIT" and emulator.stats.calls == 1
    assert await redis_client.get(key + ":lock") == b"another-process", "a foreign lock is never deleted"


async def test_a_process_takes_over_when_the_holder_gives_up_and_calls_upstream_when_it_is_too_slow(
    gateway, emulator, redis_url, redis_prefix, redis_client
):
    client = await gateway(redis_cache(emulator, redis_url, redis_prefix, lock_wait_seconds=0.4))
    await ask(client)
    [key] = await stored_keys(redis_client, redis_prefix)
    await redis_client.delete(key)
    await redis_client.set(key + ":lock", "gave-up", px=5_000)
    waiting = asyncio.ensure_future(ask(client))
    await asyncio.sleep(0.1)
    await redis_client.delete(key + ":lock")  # the holder failed and freed its lock
    assert (await asyncio.wait_for(waiting, 2))[0] == "MISS"
    assert emulator.stats.calls == 2
    assert await redis_client.exists(key) and not await redis_client.exists(key + ":lock")

    await redis_client.delete(key)
    await redis_client.set(key + ":lock", "too-slow", px=5_000)
    started = time.monotonic()
    assert (await ask(client))[0] == "MISS"
    assert 0.35 < time.monotonic() - started < 1.5, "waited lock_wait_seconds, then called upstream itself"
    assert emulator.stats.calls == 3


async def test_a_burst_beyond_the_pool_waits_for_a_connection_instead_of_failing(gateway, emulator, redis_url, redis_prefix):
    client = await gateway(redis_cache(emulator, redis_url, redis_prefix, max_connections=2, operation_timeout_seconds=2))
    bodies = [{**CHAT, "messages": [{"role": "user", "content": f"burst {i}"}]} for i in range(40)]
    with capture_logs() as logs:
        first = await asyncio.gather(*(ask(client, body) for body in bodies))
        await eventually(lambda: True)
        again = await asyncio.gather(*(ask(client, body) for body in bodies))
    assert {status for status, _ in first} == {"MISS"} and {status for status, _ in again} == {"HIT"}
    assert not [log for log in logs if log["event"].startswith("redis_")], logs
    assert await readiness(client) == "ok"


# --------------------------------------------------------------------------- two processes ---


# These prove the sharing protocol, so a starved CPU must not turn a slow Redis answer into a
# MISS here: deadlines are the fail-open tests' business.
RELAXED = {"operation_timeout_seconds": 1}


async def test_an_answer_from_one_process_is_a_hit_on_another(gateway_process, emulator, redis_url, redis_prefix):
    config = redis_cache(emulator, redis_url, redis_prefix, **RELAXED)
    first, second = gateway_process(config), gateway_process(config)
    async with aiohttp.ClientSession() as session:
        status, answer = await ask_url(session, first.url)
        assert status == "MISS"
        status, again = await ask_url(session, second.url)
    assert status == "HIT" and again == answer, redis_trouble(first, second)
    assert emulator.stats.calls == 1


async def test_fifty_concurrent_requests_over_two_processes_make_one_upstream_call(gateway_process, emulator, redis_url, redis_prefix):
    config = redis_cache(emulator, redis_url, redis_prefix, **RELAXED)
    processes = [gateway_process(config), gateway_process(config)]
    emulator.settings.latency = 1.0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        results = await asyncio.gather(*(ask_url(session, processes[i % 2].url) for i in range(50)))
    assert emulator.stats.calls == 1, redis_trouble(*processes)
    assert sorted(status for status, _ in results) == ["HIT"] * 49 + ["MISS"]
    assert all(answer == results[0][1] for _, answer in results), "50 identical answers"


def redis_trouble(*processes) -> str:
    """What the gateway processes logged about Redis, to explain a failed assertion."""
    lines = [line for process in processes for line in process.stop().splitlines() if "redis" in line]
    return "\n".join(lines) or "no redis_cache log lines"


# ------------------------------------------------------------------------------ fail-open ---


async def request_times(client, count: int, body: dict[str, Any] = CHAT) -> list[float]:
    """Send ``count`` requests one after another; each must succeed. Their durations."""
    durations = []
    for _ in range(count):
        started = time.monotonic()
        await ask(client, body)
        durations.append(time.monotonic() - started)
    return durations


async def readiness(client) -> str:
    return (await (await client.get("/readyz")).json())["checks"]["redis_cache"]["status"]


async def test_redis_killed_mid_run_then_restarted(gateway, emulator, redis_server, redis_prefix):
    settings = {"operation_timeout_seconds": 0.1, "failure_threshold": 2, "retry_interval_seconds": 0.2}
    client = await gateway(redis_cache(emulator, redis_server.url, redis_prefix, **settings))
    assert [(await ask(client))[0] for _ in range(2)] == ["MISS", "HIT"]
    assert await readiness(client) == "ok"
    redis_server.stop()
    with capture_logs() as logs:
        durations = await request_times(client, 10)
        assert await readiness(client) == "degraded"
    assert max(durations) < 0.1 + 0.2, durations
    assert [log["event"] for log in logs].count("redis_unavailable") == 1, "said once, not once per request"
    redis_server.start()
    await eventually(lambda: True)
    started = time.monotonic()
    while await readiness(client) != "ok":
        assert time.monotonic() - started < 3, "did not reconnect by itself"
        await asyncio.sleep(0.05)
    assert [(await ask(client))[0] for _ in range(2)] == ["MISS", "HIT"]


async def test_a_frozen_redis_costs_a_request_at_most_one_timeout(gateway, emulator, redis_server, redis_prefix):
    settings = {"operation_timeout_seconds": 0.1, "failure_threshold": 3, "retry_interval_seconds": 60}
    client = await gateway(redis_cache(emulator, redis_server.url, redis_prefix, **settings))
    await ask(client)
    probe = aioredis.Redis.from_url(redis_server.url)

    async def stored_and_unlocked() -> bool:  # the store runs after the answer, in the background
        keys = await stored_keys(probe, redis_prefix)
        return len(keys) == 1 and not keys[0].endswith(":lock")

    await wait_for(stored_and_unlocked, "the entry")
    await probe.aclose()
    redis_server.process.send_signal(signal.SIGSTOP)  # accepts connections, never answers
    try:

        async def timed(body: dict[str, Any]) -> float:
            started = time.monotonic()
            await ask(client, body)
            return time.monotonic() - started

        # Identical requests share one lookup: its timeout is each one's only timeout.
        together = await asyncio.gather(*(timed({**CHAT, "temperature": 0.8}) for _ in range(5)))
        one_by_one = await request_times(client, 6, {**CHAT, "temperature": 0.9})
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    assert all(0.1 <= d < 0.1 + 0.2 for d in together), together
    assert all(0.1 <= d < 0.1 + 0.2 for d in one_by_one[:2]), one_by_one
    assert all(d < 0.1 for d in one_by_one[2:]), f"the circuit is open: Redis is not asked at all: {one_by_one}"
    assert await readiness(client) == "degraded"


async def test_the_gateway_starts_and_serves_without_redis(gateway, emulator, redis_prefix):
    dead = f"redis://user:hunter2@127.0.0.1:{free_port()}/0"
    with capture_logs() as logs:
        client = await gateway(redis_cache(emulator, dead, redis_prefix))
    assert [(await ask(client))[0] for _ in range(2)] == ["MISS", "MISS"]
    ready = await (await client.get("/readyz")).json()
    assert ready["status"] == "degraded" and ready["checks"]["redis_cache"]["status"] == "degraded"
    assert "hunter2" not in str(ready) and "hunter2" not in str(logs)
    assert any(log["event"] == "redis_unavailable" and log["at_startup"] for log in logs)


def test_a_bad_url_fails_the_config_without_echoing_it(make_config):
    with pytest.raises(ConfigError) as error:
        make_config(pipeline_config(["redis_cache", "echo"], redis_cache={"redis_url": "http://user:hunter2@cache:6379"}))
    assert "[plugins.redis_cache] redis_url" in str(error.value) and "rediss://" in str(error.value)
    assert "hunter2" not in str(error.value)


# ---------------------------------------------------------------------------- connections ---


def start_redis(*args: str) -> subprocess.Popen:
    binary = shutil.which("redis-server")
    if binary is None:  # the same rule as servers.RedisServer: never a skip in CI
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)("redis-server is not installed")
    return subprocess.Popen([binary, "--save", "", "--appendonly", "no", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_for(check, what: str, timeout: float = 10) -> None:
    started = time.monotonic()
    while True:
        try:
            if await check():
                return
        except (OSError, aioredis.RedisError):
            pass
        assert time.monotonic() - started < timeout, f"{what} did not come up"
        await asyncio.sleep(0.05)


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(prefix="hookgate-redis-") as path:
        yield Path(path)


async def test_a_unix_socket(gateway, emulator, workdir, redis_prefix):
    sock = workdir / "redis.sock"
    server = start_redis("--port", "0", "--unixsocket", str(sock), "--dir", str(workdir))
    try:
        await wait_for(lambda: asyncio.sleep(0, sock.exists()), "the unix socket")
        client = await gateway(redis_cache(emulator, f"unix://{sock}?db=0", redis_prefix))
        assert [(await ask(client))[0] for _ in range(2)] == ["MISS", "HIT"]
        assert await readiness(client) == "ok"
    finally:
        server.kill()
        server.wait()


async def test_tls_with_a_private_ca(gateway, emulator, workdir, redis_prefix):
    if shutil.which("openssl") is None:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)("openssl is not installed")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(workdir / "key.pem"), "-out", str(workdir / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    server = start_redis("--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                         "--tls-cert-file", str(workdir / "cert.pem"), "--tls-key-file", str(workdir / "key.pem"),
                         "--tls-ca-cert-file", str(workdir / "cert.pem"), "--tls-auth-clients", "no")  # fmt: skip
    try:
        await wait_for(lambda: asyncio.sleep(0, _port_open(port)), "the TLS port")
        url = f"rediss://127.0.0.1:{port}/0"
        client = await gateway(redis_cache(emulator, url, redis_prefix, tls_ca_file=str(workdir / "cert.pem"), operation_timeout_seconds=1))
        assert [(await ask(client))[0] for _ in range(2)] == ["MISS", "HIT"]
        unverified = await gateway(redis_cache(emulator, url, f"{redis_prefix}:b", operation_timeout_seconds=1))
        assert await readiness(unverified) == "degraded", "a certificate from an unknown CA is refused"
    finally:
        server.kill()
        server.wait()


@pytest.mark.parametrize("cluster_client", [False, True], ids=["plain-client", "cluster-client"])
async def test_keys_work_on_redis_cluster(gateway, emulator, workdir, redis_prefix, cluster_client):
    """A cluster node refuses a script whose keys hash to different slots (CROSSSLOT), even when
    it holds every slot: the claim and store-and-unlock scripts pass only through hash tags."""
    port = free_port()
    while port + 10_000 > 65_535:  # a cluster node also listens on port + 10000 (its bus)
        port = free_port()
    server = start_redis("--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                         "--cluster-enabled", "yes", "--cluster-config-file", str(workdir / "nodes.conf"))  # fmt: skip
    try:
        admin = aioredis.Redis(host="127.0.0.1", port=port)
        await wait_for(admin.ping, "the cluster node")
        await admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        await wait_for(lambda: _cluster_ok(admin), "the cluster", timeout=15)
        url = f"redis://127.0.0.1:{port}/0"
        client = await gateway(redis_cache(emulator, url, redis_prefix, cluster=cluster_client, operation_timeout_seconds=1))
        assert [(await ask(client))[0] for _ in range(2)] == ["MISS", "HIT"]
        # A lock held elsewhere: the waiting process claims again and again (entry + lock in one script).
        [key] = await stored_keys(admin, redis_prefix)
        entry = await admin.get(key)
        await admin.delete(key)
        await admin.set(key + ":lock", "elsewhere", px=5_000)
        other = CHAT
        waiting = asyncio.ensure_future(ask(client, other))
        await asyncio.sleep(0.1)
        await admin.set(key, entry, px=60_000)
        assert (await asyncio.wait_for(waiting, 3))[0] == "HIT"
        assert emulator.stats.calls == 1
        await admin.aclose()
    finally:
        server.kill()
        server.wait()


async def _cluster_ok(admin: aioredis.Redis) -> bool:
    return b"cluster_state:ok" in await admin.execute_command("CLUSTER", "INFO")


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


# ----------------------------------------------------------------- memory in front of Redis ---


async def test_memory_first_then_redis_and_memory_fills_from_redis_hits(gateway, emulator, redis_url, redis_prefix, redis_client):
    config = redis_cache(emulator, redis_url, redis_prefix, pipeline=("memory_cache", "redis_cache"))
    first, second = await gateway(config), await gateway(config)  # two instances, one Redis
    assert (await ask(first))[0] == "MISS"
    assert (await ask(second))[0] == "HIT"  # from Redis; the second instance's memory fills
    for key in await stored_keys(redis_client, redis_prefix):
        await redis_client.delete(key)
    assert (await ask(second))[0] == "HIT", "answered from memory"
    assert (await ask(first))[0] == "HIT"
    assert emulator.stats.calls == 1
