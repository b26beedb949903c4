"""The anthropic provider end to end: the official `openai` SDK talks to an in-process gateway
whose anthropic provider talks to the Anthropic emulator, each test once per transport (the
shared pool, and the official `anthropic` SDK).

Every body and chunk the client receives is checked against OpenAI's published schema; the
emulator checks what the gateway sends as Anthropic's API would.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anthropic
import openai
import pytest
from aiohttp import web

from conftest import assert_conforms, pipeline_config
from hookgate.providers.anthropic import ANTHROPIC_API_VERSION, AnthropicProvider
from hookgate.testing.anthropic_emulator import AnthropicEmulator, Fault

pytestmark = pytest.mark.usefixtures("upstream_transport")

MODEL = "claude-sonnet-4-6"
KEY = "sk-ant-upstream-secret-123"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello brave new world"}]
REPLY = "emulated: hello brave new world"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
async def upstream() -> AsyncIterator[AnthropicEmulator]:
    async with AnthropicEmulator().serve() as emu:
        yield emu


def config(emu: AnthropicEmulator, pipeline: tuple[str, ...] = ("anthropic",), **extra) -> str:
    section = {"base_url": emu.base_url, "api_key": KEY, "models": [MODEL], **extra}
    return pipeline_config(list(pipeline), anthropic=section)


@pytest.fixture
async def client(gateway, sdk, upstream) -> openai.AsyncOpenAI:
    return sdk(await gateway(config(upstream)))


def conforms_json(completion) -> dict:
    body = completion.model_dump(mode="json", exclude_unset=True)
    assert_conforms("CreateChatCompletionResponse", body)
    return body


async def collect(stream) -> list:
    chunks = [chunk async for chunk in stream]
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk.model_dump(mode="json", exclude_unset=True))
    return chunks


# ---------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------


async def test_json_answer_with_usage_and_what_goes_upstream(client: openai.AsyncOpenAI, upstream: AnthropicEmulator) -> None:
    upstream.settings.cache_read_input_tokens = 40
    upstream.settings.cache_creation_input_tokens = 2
    raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, temperature=0.3)
    completion = raw.parse()
    conforms_json(completion)
    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL and completion.id.startswith("msg_")
    # 2 + 4 uncached prompt words, 40 read from and 2 written to the prompt cache.
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (48, 5, 53)
    assert usage.prompt_tokens_details.cached_tokens == 40
    assert raw.headers["x-hookgate-provider"] == "anthropic"

    [sent] = upstream.stats.requests
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.headers["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
    # Sampling parameters are dropped: the SDK's API version rejects them at any value.
    assert sent.body == {"model": MODEL, "max_tokens": 4096, "system": "Be brief.", "messages": [{"role": "user", "content": "hello brave new world"}]}


async def test_stream_with_and_without_include_usage(client: openai.AsyncOpenAI) -> None:
    chunks = await collect(await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (6, 5)
    assert all(c.usage is None for c in chunks[:-1])

    plain = await collect(await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert all(c.usage is None and c.choices for c in plain)
    assert "".join(c.choices[0].delta.content or "" for c in plain) == REPLY
    assert plain[-1].choices[0].finish_reason == "stop"


async def test_stop_and_max_tokens(client: openai.AsyncOpenAI, upstream: AnthropicEmulator) -> None:
    stopped = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stop=["brave"])
    assert (stopped.choices[0].message.content, stopped.choices[0].finish_reason) == ("emulated: hello ", "stop")
    assert upstream.stats.requests[-1].body["stop_sequences"] == ["brave"]
    cut = await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_completion_tokens=2)
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("emulated: hello", "length")
    assert upstream.stats.requests[-1].body["max_tokens"] == 2


async def test_tool_calls_json_and_streamed_then_the_result(client: openai.AsyncOpenAI, upstream: AnthropicEmulator) -> None:
    ask = [{"role": "user", "content": "use get_weather for Paris"}]
    completion = await client.chat.completions.create(model=MODEL, messages=ask, tools=[WEATHER], tool_choice="required")
    conforms_json(completion)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert (call.type, call.function.name, json.loads(call.function.arguments)) == ("function", "get_weather", {"city": "use get_weather for Paris"})
    sent = upstream.stats.requests[-1].body
    assert sent["tool_choice"] == {"type": "any"}
    assert sent["tools"] == [{"name": "get_weather", "description": "Weather in a city", "input_schema": WEATHER["function"]["parameters"]}]

    chunks = await collect(await client.chat.completions.create(model=MODEL, messages=ask, tools=[WEATHER], stream=True))
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or ())]
    assert deltas[0].id.startswith("toolu_") and deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "use get_weather for Paris"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "emulated: calling get_weather"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    follow_up = [
        *ask,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    answer = await client.chat.completions.create(model=MODEL, messages=follow_up, tools=[WEATHER])
    assert (answer.choices[0].message.content, answer.choices[0].finish_reason) == ("emulated: sunny, 21 C", "stop")
    assert upstream.stats.requests[-1].body["messages"][-1] == {
        "role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"}],
    }


async def test_an_untranslatable_request_is_a_400_without_an_upstream_call(client: openai.AsyncOpenAI, upstream: AnthropicEmulator) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=MODEL, messages=MESSAGES, n=2)
    assert caught.value.param == "n"
    assert upstream.stats.calls == 0


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        (Fault(status=529), 503),
        (Fault(status=429, retry_after=3), 429),
        (Fault(status=401), 502),
        (Fault(status=500), 502),
        (Fault(malformed=True), 502),
        (Fault(status=400, message="messages.0.content: bad"), 400),
    ],
)
async def test_upstream_errors_map_to_openai_errors(client: openai.AsyncOpenAI, upstream: AnthropicEmulator, fault: Fault, status: int) -> None:
    upstream.script(fault)
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    error = caught.value
    assert error.status_code == status
    assert_conforms("ErrorResponse", error.body if "error" in (error.body or {}) else {"error": error.body})
    assert KEY not in str(error.body) and KEY not in error.response.text
    if status == 429:
        assert error.response.headers["retry-after"] == "3"
    if status == 400:
        assert "messages.0.content: bad" in error.message
    assert upstream.stats.calls == 1, "the SDK does not retry by itself"


async def test_a_spend_limit_is_insufficient_quota(client: openai.AsyncOpenAI, upstream: AnthropicEmulator) -> None:
    upstream.script(Fault(status=429, code="enforced_spend_limit_reached"))
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert caught.value.code == "insufficient_quota"


async def test_errors_before_any_content_are_plain_http_errors(client: openai.AsyncOpenAI, upstream: AnthropicEmulator) -> None:
    upstream.script(Fault(status=429, retry_after=2), Fault(stream_error_after=1), Fault(malformed=True))
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    # An overloaded error event right after message_start: no chunk had been sent yet, so the
    # client gets a status (and a retry plugin could still have tried again).
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert caught.value.status_code == 503
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert (caught.value.status_code, caught.value.code) == (502, "upstream_malformed")


@pytest.mark.parametrize(("fault", "message"), [(Fault(stream_error_after=5), "overloaded"), (Fault(drop_after=5), "broke mid-stream")])
async def test_a_stream_failing_midway_ends_with_an_error_event(client: openai.AsyncOpenAI, upstream: AnthropicEmulator, fault: Fault, message: str) -> None:
    upstream.script(fault)
    stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError, match=message):
        async for chunk in stream:
            received.append(chunk)
    # message_start, block start, ping, 2 deltas: the role chunk and two words got through.
    assert len(received) == 3
    assert (await client.chat.completions.create(model=MODEL, messages=MESSAGES)).choices


async def test_missing_key_is_503_naming_the_variable(gateway, sdk, monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    client = sdk(await gateway('[gateway]\npipeline = ["echo", "anthropic"]\n'))
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(model="claude-haiku-4-5", messages=MESSAGES)
    assert caught.value.status_code == 503 and "ANTHROPIC_API_KEY" in caught.value.message


async def test_key_from_the_environment(gateway, sdk, upstream, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    toml = pipeline_config(["anthropic"], anthropic={"base_url": upstream.base_url, "models": [MODEL]})
    client = sdk(await gateway(toml))
    await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert upstream.stats.requests[-1].headers["Authorization"] == "Bearer sk-ant-from-env"


async def test_the_sdk_client_is_built_with_max_retries_0(upstream: AnthropicEmulator) -> None:
    # The behaviour is proven above (one upstream call per failed request, where the SDK's
    # default would make three); this pins the setting itself.
    provider = AnthropicProvider(AnthropicProvider.Config(base_url=upstream.base_url, api_key=KEY, transport="sdk"))
    await provider.startup(web.Application())
    try:
        client = provider.transport.client
        assert isinstance(client, anthropic.AsyncAnthropic)
        assert client.max_retries == 0
        assert str(client.base_url).rstrip("/") == upstream.base_url
    finally:
        await provider.shutdown()


def test_the_http_transport_sends_the_api_version_the_sdk_sends() -> None:
    # After an SDK upgrade that moves it, ANTHROPIC_API_VERSION follows (and the emulator's rules).
    assert ANTHROPIC_API_VERSION == anthropic._constants.ANTHROPIC_API_VERSION
