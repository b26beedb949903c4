"""End to end through the official `openai` SDK, as an application uses the gateway: JSON,
streams, usage and errors, every body and chunk checked against OpenAI's published schema."""
from __future__ import annotations

import asyncio

import openai
import pytest

from conftest import ECHO_CACHED, ECHO_ONLY, assert_conforms, eventually, openai_upstream
from hookgate.testing.openai_emulator import Fault

# Every test runs once per transport of the openai provider (http, sdk): the same behaviour under both.
pytestmark = pytest.mark.usefixtures("upstream_transport")


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello brave new world"}]


def conforms_json(completion) -> dict:
    body = completion.model_dump(mode="json", exclude_unset=True)
    assert_conforms("CreateChatCompletionResponse", body)
    return body


# --------------------------------------------------------------------------------------- echo ---


async def test_echo_answers_through_the_sdk(gateway, sdk):
    client = sdk(await gateway(ECHO_ONLY))
    raw = await client.chat.completions.with_raw_response.create(model="echo", messages=MESSAGES)
    completion = raw.parse()
    conforms_json(completion)
    assert completion.choices[0].message.content == "echo: hello brave new world"
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (6, 5, 11)
    assert raw.headers["x-hookgate-provider"] == "echo"
    assert raw.headers["x-request-id"]


async def test_echo_streams_with_and_without_usage(gateway, sdk):
    client = sdk(await gateway(ECHO_ONLY))
    stream = await client.chat.completions.create(model="echo", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk.model_dump(mode="json", exclude_unset=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello brave new world"
    assert len(chunks) > 3, "the answer arrives in several chunks"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 11
    plain = [chunk async for chunk in await client.chat.completions.create(model="echo", messages=MESSAGES, stream=True)]
    assert all(c.usage is None for c in plain)
    assert plain[-1].choices[0].finish_reason == "stop"


# ------------------------------------------------------------------------------ the cache path ---


async def test_second_identical_request_is_a_cache_hit(gateway, sdk, emulator):
    client = sdk(await gateway(openai_upstream(emulator, pipeline='"memory_cache", "openai"')))
    first = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    second = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert first.headers["x-hookgate-cache"] == "MISS"
    assert second.headers["x-hookgate-cache"] == "HIT"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    conforms_json(second.parse())
    assert emulator.stats.calls == 1


async def test_cache_switched_off_in_config_means_no_hit(gateway, sdk, emulator):
    toml = openai_upstream(emulator, pipeline='"memory_cache", "openai"', extra="[plugins.memory_cache]\nenabled = false")
    client = sdk(await gateway(toml))
    for _ in range(2):
        raw = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
        assert raw.headers["x-hookgate-cache"] == "BYPASS"
    assert emulator.stats.calls == 2


async def test_a_cached_answer_is_replayed_as_sse_to_a_streaming_client(gateway, sdk):
    client = sdk(await gateway(ECHO_CACHED))
    await client.chat.completions.create(model="echo", messages=MESSAGES)
    raw = await client.chat.completions.with_raw_response.create(
        model="echo", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-hookgate-cache"] == "HIT"
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = [chunk async for chunk in raw.parse()]
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk.model_dump(mode="json", exclude_unset=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello brave new world"
    assert chunks[-1].usage.total_tokens == 11


async def test_a_completed_stream_is_cached_for_a_json_client(gateway, sdk, emulator):
    client = sdk(await gateway(openai_upstream(emulator, pipeline='"memory_cache", "openai"')))
    streamed = [c async for c in await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)]
    raw = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.headers["x-hookgate-cache"] == "HIT"
    assert raw.parse().choices[0].message.content == "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert emulator.stats.calls == 1


# ------------------------------------------------------------------------ the openai provider ---


async def test_openai_provider_relays_json_and_usage(gateway, sdk, emulator):
    client = sdk(await gateway(openai_upstream(emulator)))
    raw = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0.2, seed=7)
    completion = raw.parse()
    conforms_json(completion)
    assert completion.choices[0].message.content == "emulated: hello brave new world"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens > 0
    assert raw.headers["x-hookgate-provider"] == "openai"
    upstream = emulator.stats.requests[-1]
    assert upstream.body["temperature"] == 0.2 and upstream.body["seed"] == 7
    # The gateway's own key goes upstream, never the client's.
    assert upstream.headers["Authorization"] == "Bearer sk-upstream-secret-123"


async def test_openai_provider_relays_streams_chunk_by_chunk(gateway, sdk, emulator):
    client = sdk(await gateway(openai_upstream(emulator)))
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk.model_dump(mode="json", exclude_unset=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "emulated: hello brave new world"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


async def test_unknown_parameters_reach_the_upstream(gateway, sdk, emulator):
    client = sdk(await gateway(openai_upstream(emulator)))
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_body={"brand_new_param": [1, 2]})
    assert emulator.stats.requests[-1].body["brand_new_param"] == [1, 2]


@pytest.mark.parametrize(
    ("fault", "exception", "status"),
    [
        (Fault(status=400, message="bad tool schema"), openai.BadRequestError, 400),
        (Fault(status=404), openai.NotFoundError, 404),
        (Fault(status=422), openai.UnprocessableEntityError, 422),
        (Fault(status=429, retry_after=3), openai.RateLimitError, 429),
        (Fault(status=500), openai.APIStatusError, 502),
        (Fault(status=503), openai.APIStatusError, 503),
        (Fault(status=401), openai.APIStatusError, 502),
        (Fault(malformed=True), openai.APIStatusError, 502),
    ],
)
async def test_upstream_errors_map_to_openai_errors(gateway, sdk, emulator, fault, exception, status):
    client = sdk(await gateway(openai_upstream(emulator)))
    emulator.script(fault)
    with pytest.raises(exception) as caught:
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    error = caught.value
    assert error.status_code == status
    assert_conforms("ErrorResponse", error.body if "error" in (error.body or {}) else {"error": error.body})
    assert "sk-upstream-secret-123" not in str(error.body)
    if status == 429:
        assert error.response.headers["retry-after"] == "3"
    if fault.status == 400:
        assert "bad tool schema" in error.message


async def test_upstream_errors_before_a_stream_are_plain_http_errors(gateway, sdk, emulator):
    client = sdk(await gateway(openai_upstream(emulator)))
    emulator.script(Fault(status=429, retry_after=2))
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)


async def test_a_stream_that_breaks_midway_ends_with_an_error_event(gateway, sdk, emulator):
    client = sdk(await gateway(openai_upstream(emulator)))
    emulator.script(Fault(drop_after=2))
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError, match="broke mid-stream"):
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 2
    assert (await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)).choices


async def test_unreachable_upstream_is_502(gateway, sdk, unused_tcp_port):
    client = sdk(await gateway(f"""
        [gateway]
        pipeline = ["openai"]
        [plugins.openai]
        base_url = "http://127.0.0.1:{unused_tcp_port}/v1"
        api_key = "sk-upstream"
        models = ["gpt-4o-mini"]
    """))
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert caught.value.status_code == 502


async def test_missing_provider_key_is_503_naming_the_variable(gateway, sdk, monkeypatch):
    monkeypatch.delenv("HG_TEST_MISSING_KEY", raising=False)
    client = sdk(await gateway("""
        [gateway]
        pipeline = ["echo", "openai"]
        [plugins.openai]
        api_key_env = "HG_TEST_MISSING_KEY"
    """))
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert caught.value.status_code == 503
    assert "HG_TEST_MISSING_KEY" in caught.value.message
    assert (await client.chat.completions.create(model="echo", messages=MESSAGES)).choices, "other providers still serve"


async def test_provider_key_from_the_environment(gateway, sdk, emulator, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-456")
    client = sdk(await gateway(f"""
        [gateway]
        pipeline = ["openai"]
        [plugins.openai]
        base_url = "{emulator.base_url}"
        models = ["gpt-4o-mini"]
    """))
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert emulator.stats.requests[-1].headers["Authorization"] == "Bearer sk-from-env-456"


async def test_client_disconnect_mid_stream_cancels_the_upstream_call(gateway, emulator):
    client = await gateway(openai_upstream(emulator))
    emulator.settings.chunk_latency = 0.2
    response = await client.post(
        "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    )
    assert response.status == 200
    await response.content.readline()
    response.close()  # the client goes away mid-stream
    await eventually(lambda: emulator.stats.cancelled == 1 and emulator.stats.in_flight == 0, timeout=5)


async def test_concurrent_requests_do_not_mix(gateway, sdk, emulator):
    client = sdk(await gateway(openai_upstream(emulator)))

    async def ask(i: int) -> str:
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"number {i}"}])
        return completion.choices[0].message.content

    answers = await asyncio.gather(*(ask(i) for i in range(50)))
    assert answers == [f"emulated: number {i}" for i in range(50)]


async def test_overhead_header_excludes_upstream_time(gateway, emulator):
    client = await gateway(openai_upstream(emulator))
    emulator.settings.latency = 0.3
    for body in ({"model": "gpt-4o-mini", "messages": MESSAGES}, {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}):
        response = await client.post("/v1/chat/completions", json=body)
        await response.read()
        overhead = float(response.headers["x-hookgate-overhead-ms"])
        assert 0 < overhead < 100, overhead
    bad = await client.post("/v1/chat/completions", json={"model": "nope", "messages": MESSAGES})
    assert float(bad.headers["x-hookgate-overhead-ms"]) >= 0
