"""Threat: the gateway and the official SDK both retry an upstream's refusal, and the attempts
multiply.

Issue 10 item 9: an upstream 429 made the gateway try 3 times and the openai SDK (default
``max_retries=2``) send the whole request three times: 9 upstream calls and 8.1 s for one
``create()``. The gateway now sends ``x-should-retry: false`` on every error it has already
retried (or decided not to), and the SDKs obey it. Here each SDK keeps its default
``max_retries`` against an upstream answering only 429s: the upstream sees exactly the gateway's
own attempts, and ``create()`` returns within the gateway's backoff, not the SDK's on top.
"""
from __future__ import annotations

from time import perf_counter

import anthropic
import openai
import pytest

from conftest import upstream_config
from hookgate.server import create_app
from hookgate.testing.openai_emulator import Fault

ATTEMPTS = 3
RETRY = {"max_attempts": ATTEMPTS, "backoff_base_seconds": 0.05, "backoff_cap_seconds": 0.1}
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def gateway_url(aiohttp_client, make_config, emulator):
    emulator.script(*[Fault(status=429, retry_after=0.1)] * 20)  # more than anyone would try
    client = await aiohttp_client(create_app(make_config(upstream_config(emulator, ["retry"], retry=RETRY))))
    return str(client.make_url(""))


async def test_the_openai_sdk_does_not_repeat_what_the_gateway_retried(gateway_url, emulator):
    sdk = openai.AsyncOpenAI(base_url=gateway_url + "/v1", api_key="sk-client-test")  # the SDK's default max_retries
    assert sdk.max_retries == 2
    started = perf_counter()
    with pytest.raises(openai.RateLimitError) as refused:
        await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    elapsed = perf_counter() - started
    await sdk.close()
    assert emulator.stats.calls == ATTEMPTS, "the gateway's attempts only, not three times as many"
    assert elapsed < 2.0, f"{elapsed:.2f} s: the SDK waited and retried on top"
    assert refused.value.response.headers["x-should-retry"] == "false"


async def test_the_anthropic_sdk_does_not_repeat_what_the_gateway_retried(gateway_url, emulator):
    sdk = anthropic.AsyncAnthropic(base_url=gateway_url, api_key="sk-client-test")
    assert sdk.max_retries == 2
    started = perf_counter()
    with pytest.raises(anthropic.RateLimitError) as refused:
        await sdk.messages.create(model="gpt-4o-mini", max_tokens=16, messages=MESSAGES)
    elapsed = perf_counter() - started
    await sdk.close()
    assert emulator.stats.calls == ATTEMPTS, "the gateway's attempts only, not three times as many"
    assert elapsed < 2.0, f"{elapsed:.2f} s: the SDK waited and retried on top"
    assert refused.value.response.headers["x-should-retry"] == "false"
