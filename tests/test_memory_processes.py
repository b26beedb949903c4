"""Conversations shared by gateway processes behind a load balancer: any instance continues any
conversation, and the one-request-at-a-time rule holds across them (Redis is the store)."""
from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from redis import asyncio as aioredis

from conftest import eventually, pipeline_config

MODEL = "gpt-4o-mini"
ALICE = {"Authorization": "Bearer sk-alice-test"}


def config(emulator, redis_url: str, redis_prefix: str) -> str:
    return pipeline_config(
        ["memory", "token_counter", "openai"],
        memory={"store": "redis", "redis_url": redis_url, "key_prefix": redis_prefix},
        openai={"base_url": emulator.base_url, "api_key": "sk-upstream-secret-123", "models": [MODEL]},
    )


async def turn(session: aiohttp.ClientSession, url: str, conversation: str, content: str) -> tuple[int, Any, dict]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    async with session.post(f"{url}/v1/chat/completions", json=body, headers={**ALICE, "x-hookgate-conversation": conversation}) as response:
        return response.status, response.headers, await response.json()


@pytest.fixture
async def two_gateways(gateway_process, emulator, redis_url, redis_prefix):
    text = config(emulator, redis_url, redis_prefix)
    return await asyncio.gather(asyncio.to_thread(gateway_process, text), asyncio.to_thread(gateway_process, text))


async def test_three_turns_alternating_between_two_processes_send_exactly_the_whole_history(two_gateways, emulator, redis_url, redis_prefix):
    first, second = two_gateways
    urls = [first.url, second.url, first.url]
    async with aiohttp.ClientSession() as session:
        status, headers, _ = await turn(session, urls[0], "new", "my name is Ada")
        assert status == 200, headers
        conversation = headers["x-hookgate-conversation"]
        for url, content in zip(urls[1:], ("what is my name?", "and spell it")):
            status, headers, _ = await turn(session, url, conversation, content)
            assert status == 200 and headers["x-hookgate-conversation"] == conversation
        async with session.delete(f"{second.url}/v1/conversations/{conversation}", headers=ALICE) as response:
            assert response.status == 200
        status, _, error = await turn(session, first.url, conversation, "still there?")
        assert status == 404 and error["error"]["code"] == "conversation_not_found", "a delete on one is seen by the other"
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert [key async for key in client.scan_iter(match=f"{redis_prefix}:*")] == [], "and leaves nothing in Redis"
    finally:
        await client.aclose()
    sent = [request.body["messages"] for request in emulator.stats.requests]
    assert sent == [
        [{"role": "user", "content": "my name is Ada"}],
        [
            {"role": "user", "content": "my name is Ada"},
            {"role": "assistant", "content": "emulated: my name is Ada"},
            {"role": "user", "content": "what is my name?"},
        ],
        [
            {"role": "user", "content": "my name is Ada"},
            {"role": "assistant", "content": "emulated: my name is Ada"},
            {"role": "user", "content": "what is my name?"},
            {"role": "assistant", "content": "emulated: what is my name?"},
            {"role": "user", "content": "and spell it"},
        ],
    ]


async def test_a_turn_on_one_process_makes_the_other_answer_409_until_it_is_stored(two_gateways, emulator):
    first, second = two_gateways
    async with aiohttp.ClientSession() as session:
        _, headers, _ = await turn(session, first.url, "new", "one")
        conversation = headers["x-hookgate-conversation"]
        emulator.settings.latency = 1.0
        slow = asyncio.ensure_future(turn(session, first.url, conversation, "slow"))
        await eventually(lambda: emulator.stats.in_flight == 1, timeout=10)
        status, headers, error = await turn(session, second.url, conversation, "meanwhile")
        assert status == 409 and error["error"]["code"] == "conversation_busy" and headers["Retry-After"] == "1"
        assert (await slow)[0] == 200
        emulator.settings.latency = 0.0
        status, _, _ = await turn(session, second.url, conversation, "after")
    assert status == 200
    assert [m["content"] for m in emulator.stats.requests[-1].body["messages"]] == ["one", "emulated: one", "slow", "emulated: slow", "after"]
