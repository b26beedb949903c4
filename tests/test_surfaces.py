"""The API surfaces clients use, each through its official SDK and the whole chain: Anthropic
Messages (native to an Anthropic upstream, translated to a chat one), OpenAI Responses (with
stored responses), embeddings (OpenAI and the offline model), legacy completions and the models
API. Every body and stream event is checked against the published shapes."""
from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import agents
import anthropic
import openai
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from accounting_support import bearer, keys_section, new_key
from conftest import assert_anthropic_conforms, assert_conforms, eventually, pipeline_config
from hookgate import hookimpl
from hookgate.server import create_app
from hookgate.testing.anthropic_emulator import AnthropicEmulator, thinking_signature
from hookgate.testing.groq_emulator import groq_emulator
from hookgate.testing.openai_emulator import Fault, OpenAIEmulator

pytestmark = pytest.mark.usefixtures("upstream_transport")  # every upstream provider on both transports

ANTHROPIC_KEY = "sk-ant-upstream-secret-456"
UPSTREAM_KEY = "sk-upstream-secret-123"


@pytest.fixture
async def claude():
    async with AnthropicEmulator().serve() as emu:
        yield emu


@pytest.fixture
async def groq_upstream():
    async with groq_emulator().serve() as emu:
        yield emu


def providers(emulator: OpenAIEmulator | None = None, claude: AnthropicEmulator | None = None, groq: OpenAIEmulator | None = None) -> dict[str, Any]:
    sections: dict[str, Any] = {}
    if emulator is not None:
        sections["openai"] = {
            "base_url": emulator.base_url, "api_key": UPSTREAM_KEY,
            "models": ["gpt-4o-mini", "text-embedding-3-small", "gpt-3.5-turbo-instruct"],
        }  # fmt: skip
    if claude is not None:
        sections["anthropic"] = {"base_url": claude.base_url, "api_key": ANTHROPIC_KEY, "models": ["claude-sonnet-4-6"]}
    if groq is not None:
        sections["groq"] = {"base_url": groq.base_url, "api_key": "gsk-upstream-secret-789", "models": ["llama-3.1-8b-instant"]}
    return sections


def config(pipeline: list[str], **sections: Any) -> str:
    return pipeline_config(pipeline, **sections)


@pytest.fixture
async def start(aiohttp_client, make_config):
    """An in-process gateway from plugins.toml text, with handler cancellation as `hookgate serve` has it."""

    async def start(toml: str, *, local: dict[str, Any] | None = None):
        return await aiohttp_client(create_app(make_config(toml, local=local)), server_kwargs={"handler_cancellation": True})

    return start


def anthropic_client(client, key: str = "sk-client-test", **options: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=str(client.make_url("")), api_key=key, max_retries=options.pop("max_retries", 0), **options)


def openai_client(client, key: str = "sk-client-test", **options: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key=key, max_retries=options.pop("max_retries", 0), **options)


def assert_anthropic_error(body: dict[str, Any]) -> None:
    """Anthropic's error shape. The gateway's own cause rides in ``error.details.error_code``,
    which the SDK reads (``exc.body``); the SDK's types list only Anthropic's own codes there, so
    the shape is checked without it."""
    error = {key: value for key, value in body["error"].items() if key != "details"}
    assert_anthropic_conforms("ErrorResponse", {**body, "error": error})
    assert isinstance(body["error"].get("details", {}).get("error_code", ""), str)


def sse_events(raw: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    """(event name, data) of every SSE event of a body, ``[DONE]`` left out."""
    events = []
    for block in raw.split(b"\n\n"):
        name, data = None, None
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                data = line[6:]
        if data is not None and data != b"[DONE]":
            events.append((name, orjson.loads(data)))
    return events


# --------------------------------------------------------------------- Anthropic Messages ---


async def test_anthropic_clients_pass_through_to_an_anthropic_upstream_losing_nothing(start, claude):
    client = await start(config(["token_counter", "cost", "memory_cache", "anthropic"], **providers(claude=claude)))
    sdk = anthropic_client(client)
    ask = {
        "model": "claude-sonnet-4-6", "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "why is the sky blue"}],
    }  # fmt: skip
    message = await sdk.messages.create(**ask, extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.signature == thinking_signature(thinking.thinking), "the signature arrives intact"
    assert text.text == "emulated: why is the sky blue"
    received = claude.stats.requests[-1]
    assert received.body["system"][0]["cache_control"] == {"type": "ephemeral"}, "cache_control reaches the upstream"
    assert received.body["thinking"] == ask["thinking"] and received.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    raw = await client.post("/v1/messages", json=ask, headers={"x-api-key": "sk-client-test"})
    assert raw.headers["x-hookgate-cache"] == "HIT", "a repeat is a cache hit"
    body = await raw.json()
    assert_anthropic_conforms("Message", body)
    assert body["content"][0]["signature"] == thinking.signature, "the cached native answer is replayed as it was"

    # Streamed: the upstream's events, byte for byte; the SDK accumulates the same message.
    async with sdk.messages.stream(**{**ask, "messages": [{"role": "user", "content": "stream it"}]}) as stream:
        final = await stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].signature == thinking_signature(final.content[0].thinking)
    assert final.content[1].text == "emulated: stream it" and final.stop_reason == "end_turn"
    raw = await client.post("/v1/messages", json={**ask, "stream": True, "messages": [{"role": "user", "content": "raw stream"}]}, headers={"x-api-key": "k"})
    for name, event in sse_events(await raw.read()):
        assert_anthropic_conforms({"content_block_delta": "RawContentBlockDeltaEvent", "content_block_start": "RawContentBlockStartEvent",
                                   "content_block_stop": "RawContentBlockStopEvent", "message_delta": "RawMessageDeltaEvent",
                                   "message_start": "RawMessageStartEvent", "message_stop": "RawMessageStopEvent", "ping": "PingEvent"}[name], event)  # fmt: skip
    await sdk.close()


async def test_anthropic_clients_are_translated_to_a_chat_upstream_with_a_tool_round_trip_streamed(start, groq_upstream):
    client = await start(config(["token_counter", "groq"], **providers(groq=groq_upstream)))
    sdk = anthropic_client(client)
    weather = {"name": "get_weather", "description": "Weather in a city", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    async with sdk.messages.stream(
        model="llama-3.1-8b-instant", max_tokens=200, tools=[weather], messages=[{"role": "user", "content": "call get_weather for Paris"}]
    ) as stream:
        first = await stream.get_final_message()
    assert first.stop_reason == "tool_use"
    call = next(block for block in first.content if block.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input, dict)
    sent = groq_upstream.stats.requests[-1].body
    assert sent["tools"][0]["function"]["name"] == "get_weather" and sent["stream"] is True
    follow_up = [
        {"role": "user", "content": "call get_weather for Paris"},
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"}]},
    ]
    async with sdk.messages.stream(model="llama-3.1-8b-instant", max_tokens=200, tools=[weather], messages=follow_up) as stream:
        second = await stream.get_final_message()
    sent = groq_upstream.stats.requests[-1].body
    assert sent["messages"][-1] == {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}, "the result answers the call by its id"
    assert second.stop_reason == "end_turn" and second.content[0].text.startswith("emulated: ")
    assert second.usage.input_tokens > 0 and second.usage.output_tokens > 0
    await sdk.close()


async def test_a_plugin_that_rewrites_the_request_turns_pass_through_into_translation(start, claude):
    class Polite:
        def __init__(self, config):
            pass

        @hookimpl
        async def before_request(self, ctx):
            ctx.body["messages"][-1]["content"] = "please " + ctx.body["messages"][-1]["content"]

    client = await start(config(["polite", "anthropic"], **providers(claude=claude)), local={"polite": Polite})
    sdk = anthropic_client(client)
    message = await sdk.messages.create(model="claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": "help"}])
    assert message.content[0].text == "emulated: please help", "the plugin's change reached the upstream"
    await sdk.close()


async def test_anthropic_errors_have_anthropic_shape_and_sdk_classes(start, claude):
    key = new_key("anthropic-limited")
    client = await start(
        config(["api_keys", "rate_limit", "anthropic"], api_keys=keys_section({"team": (key, {"requests_per_minute": 1})}), **providers(claude=claude))
    )
    with pytest.raises(anthropic.AuthenticationError) as wrong:
        await anthropic_client(client, key="hg-wrong").messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert_anthropic_error(wrong.value.body)
    sdk = anthropic_client(client, key=key)
    await sdk.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "one"}])
    with pytest.raises(anthropic.RateLimitError) as limited:
        await sdk.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "two"}])
    assert limited.value.body["error"]["type"] == "rate_limit_error" and int(limited.value.response.headers["Retry-After"]) >= 1
    unlimited_key = new_key("anthropic-unlimited")
    client = await start(config(["api_keys", "anthropic"], api_keys=keys_section({"other": (unlimited_key, {})}), **providers(claude=claude)))
    await sdk.close()
    sdk = anthropic_client(client, key=unlimited_key)
    with pytest.raises(anthropic.NotFoundError):
        await sdk.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError) as bad:
        await sdk.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=[])
    assert_anthropic_error(bad.value.body)
    await sdk.close()


async def test_count_tokens_and_surfaces_never_share_cached_answers(start, emulator):
    client = await start(config(["memory_cache", "openai"], **providers(emulator)))
    prompt = [{"role": "user", "content": "the same words"}]
    count = await client.post("/v1/messages/count_tokens", json={"model": "gpt-4o-mini", "messages": prompt})
    assert count.status == 200 and (await count.json())["input_tokens"] > 0
    assert_anthropic_conforms("MessageTokensCount", await count.json())
    chat = {"model": "gpt-4o-mini", "messages": prompt, "max_tokens": 50}
    messages = {"model": "gpt-4o-mini", "messages": prompt, "max_tokens": 50}
    assert (await client.post("/v1/chat/completions", json=chat)).headers["x-hookgate-cache"] == "MISS"
    answer = await client.post("/v1/messages", json=messages)
    assert answer.headers["x-hookgate-cache"] == "MISS", "the chat answer is never served to an Anthropic client"
    assert (await answer.json())["type"] == "message"
    assert (await client.post("/v1/messages", json=messages)).headers["x-hookgate-cache"] == "HIT"
    assert emulator.stats.calls == 2


async def test_a_client_that_leaves_a_messages_stream_cancels_the_upstream(start, claude):
    client = await start(config(["anthropic"], **providers(claude=claude)))
    claude.settings.chunk_latency = 0.2
    response = await client.post(
        "/v1/messages", json={"model": "claude-sonnet-4-6", "max_tokens": 500, "stream": True, "messages": [{"role": "user", "content": "a long answer please"}]}
    )
    await response.content.readany()
    response.close()
    await eventually(lambda: claude.stats.in_flight == 0, timeout=3)


# ------------------------------------------------------------------------------ Responses ---


async def test_responses_chain_store_and_events_through_the_sdk(start, emulator):
    client = await start(config(["token_counter", "cost", "memory_cache", "openai"], cost={"prices": {"gpt-4o-mini": {"input": "0.15", "output": "0.60"}}}, **providers(emulator)))
    sdk = openai_client(client)
    first = await sdk.responses.create(model="gpt-4o-mini", input="hello there", instructions="Be brief.")
    assert first.output_text == "emulated: hello there"
    raw = await client.post("/v1/responses", json={"model": "gpt-4o-mini", "input": "check my shape", "store": False}, headers={"Authorization": "Bearer sk-client-test"})
    assert_conforms("Response", await raw.json())
    second = await sdk.responses.create(model="gpt-4o-mini", input="and now?", previous_response_id=first.id)
    sent = emulator.stats.requests[-1].body["messages"]
    # As OpenAI's API does, a previous response's instructions are not carried over.
    assert [m["role"] for m in sent] == ["user", "assistant", "user"], "the stored turn is sent upstream before the new one"
    assert (await sdk.responses.retrieve(second.id)).id == second.id
    items = await sdk.responses.input_items.list(second.id, order="asc")
    assert [item.role for item in items.data if item.type == "message"] == ["user", "assistant", "user"]
    raw = await client.post("/v1/responses", json={"model": "gpt-4o-mini", "input": "stream it", "stream": True}, headers={"Authorization": "Bearer sk-client-test"})
    events = sse_events(await raw.read())
    assert [event["sequence_number"] for _, event in events] == list(range(len(events)))
    assert events[0][1]["type"] == "response.created" and events[-1][1]["type"] == "response.completed"
    for _, event in events:
        assert_conforms("ResponseStreamEvent", event)
    completed = events[-1][1]["response"]
    assert completed["usage"]["input_tokens"] > 0 and Decimal(raw.headers.get("x-hookgate-cost-usd", "0")) >= 0
    other = openai_client(client, key="sk-another-client")
    with pytest.raises(openai.NotFoundError):
        await other.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        await other.responses.create(model="gpt-4o-mini", input="steal it", previous_response_id=first.id)
    assert (await sdk.responses.delete(first.id)) is None
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as hosted:
        await sdk.responses.create(model="gpt-4o-mini", input="search", tools=[{"type": "web_search"}])
    assert hosted.value.body["param"] == "tools"
    await sdk.close()
    await other.close()


async def test_responses_to_an_anthropic_upstream_with_a_function_call_streamed(start, claude):
    client = await start(config(["anthropic"], **providers(claude=claude)))
    sdk = openai_client(client)
    tool = {"type": "function", "name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    stream = await sdk.responses.create(model="claude-sonnet-4-6", input="call get_weather for Oslo", tools=[tool], stream=True)
    final = None
    async for event in stream:
        if event.type == "response.completed":
            final = event.response
    assert final is not None
    call = next(item for item in final.output if item.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments)
    answered = await sdk.responses.create(
        model="claude-sonnet-4-6", previous_response_id=final.id, tools=[tool],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "cloudy"}],
    )  # fmt: skip
    sent = claude.stats.requests[-1].body["messages"]
    assert sent[-1]["content"][0]["type"] == "tool_result" and sent[-1]["content"][0]["tool_use_id"] == call.call_id
    assert answered.output_text.startswith("emulated: ")
    await sdk.close()


# ----------------------------------------------------------------------------- embeddings ---


async def test_embeddings_offline_and_upstream_cached_counted_and_limited(start, emulator):
    key = new_key("embedder")
    client = await start(
        config(
            ["api_keys", "token_counter", "rate_limit", "cost", "memory_cache", "openai", "local_embeddings"],
            api_keys=keys_section({"team": (key, {"tokens_per_minute": 40})}),
            cost={"prices": {"text-embedding-3-small": {"input": "0.02", "output": "0"}}},
            **providers(emulator),
        )
    )
    sdk = openai_client(client, key=key)
    local = await sdk.embeddings.create(model="all-minilm-l6-v2", input=["a cat sat on the mat", "a cat was sitting on the mat", "stock prices fell"])
    vectors = [item.embedding for item in local.data]
    assert len(vectors[0]) == 384 and local.usage.prompt_tokens > 0
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert dot(vectors[0], vectors[1]) > dot(vectors[0], vectors[2]), "paraphrases are closer than unrelated text"
    raw = await client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "a cat sat on the mat"}, headers=bearer(key))
    assert_conforms("CreateEmbeddingResponse", await raw.json())
    again = await client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "a cat sat on the mat", "encoding_format": "base64"}, headers=bearer(key))
    assert again.headers["x-hookgate-cache"] == "HIT", "one cached answer serves both encodings"
    assert isinstance((await again.json())["data"][0]["embedding"], str)
    upstream = await sdk.embeddings.with_raw_response.create(model="text-embedding-3-small", input="price me")
    assert upstream.headers["x-hookgate-cost-usd"] and Decimal(upstream.headers["x-hookgate-cost-usd"]) > 0
    assert emulator.stats.requests[-1].body.get("encoding_format") is None, "the upstream is asked for floats"
    with pytest.raises(openai.RateLimitError):
        await sdk.embeddings.create(model="text-embedding-3-small", input=["word " * 30])
    with pytest.raises(openai.NotFoundError):
        await sdk.embeddings.create(model="gpt-3.5-turbo-instruct-not-routed", input="x")
    with pytest.raises(openai.BadRequestError):
        await sdk.embeddings.create(model="all-minilm-l6-v2", input=[])
    await sdk.close()


# ------------------------------------------------------------- legacy completions, models ---


async def test_legacy_completions_and_the_models_api(start, emulator, groq_upstream):
    key = new_key("models")
    client = await start(
        config(["api_keys", "openai", "groq"], api_keys=keys_section({"team": (key, {"models": ["gpt-3.5-turbo-instruct", "gpt-4o-mini"]})}), **providers(emulator, groq=groq_upstream))
    )
    sdk = openai_client(client, key=key)
    text = await sdk.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi")
    assert text.choices[0].text == "emulated: say hi"
    raw = await client.post("/v1/completions", json={"model": "gpt-3.5-turbo-instruct", "prompt": "say hi"}, headers=bearer(key))
    assert_conforms("CreateCompletionResponse", await raw.json())
    streamed = await sdk.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi", stream=True)
    assert "".join([chunk.choices[0].text async for chunk in streamed if chunk.choices]) == "emulated: say hi"
    listed = [model.id async for model in sdk.models.list()]
    assert sorted(listed) == ["gpt-3.5-turbo-instruct", "gpt-4o-mini"], "only what the key may use"
    assert (await sdk.models.retrieve("gpt-4o-mini")).id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        await sdk.models.retrieve("llama-3.1-8b-instant")
    everyone = openai_client(client, key=new_key("any"))
    with pytest.raises(openai.AuthenticationError):
        await everyone.models.list()
    admin_key = new_key("models-all")
    client_all = await start(config(["api_keys", "openai", "groq"], api_keys=keys_section({"all": (admin_key, {})}), **providers(emulator, groq=groq_upstream)))
    all_models = [model.id async for model in openai_client(client_all, key=admin_key).models.list()]
    assert "llama-3.1-8b-instant" in all_models
    not_served = openai_client(client_all, key=admin_key)
    with pytest.raises(openai.NotFoundError) as missing:
        await not_served.completions.create(model="llama-3.1-8b-instant", prompt="x")
    assert "does not serve completions" in missing.value.message
    await sdk.close()
    await everyone.close()
    await not_served.close()


# ------------------------------------------------------------------------- one retry owner ---


@pytest.mark.parametrize("surface", ["messages", "responses", "embeddings"])
async def test_the_gateway_owns_retries_on_every_surface(start, emulator, surface):
    client = await start(config(["retry", "openai"], retry={"max_attempts": 2, "backoff_base_seconds": 0.01}, **providers(emulator)))
    emulator.script(Fault(status=503), Fault(status=503), Fault(status=503), Fault(status=503), Fault(status=503), Fault(status=503))
    if surface == "messages":
        sdk: Any = anthropic_client(client, max_retries=2)
        with pytest.raises(anthropic.APIStatusError) as caught:
            await sdk.messages.create(model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    else:
        sdk = openai_client(client, max_retries=2)
        with pytest.raises(openai.APIStatusError) as caught:
            if surface == "responses":
                await sdk.responses.create(model="gpt-4o-mini", input="x")
            else:
                await sdk.embeddings.create(model="text-embedding-3-small", input="x")
    assert caught.value.status_code == 503 and caught.value.response.headers["x-should-retry"] == "false"
    assert emulator.stats.calls == 2, "the gateway's two attempts, not the SDK's retries on top"
    await sdk.close()


# --------------------------------------------------------------------- clients in the wild ---


async def test_openai_agents_runs_a_tool_using_turn_through_the_responses_api(start, emulator):
    client = await start(config(["openai"], **providers(emulator)))
    called: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        called.append(city)
        return "sunny"

    sdk = openai_client(client)
    model = agents.OpenAIResponsesModel(model="gpt-4o-mini", openai_client=sdk)
    agent = agents.Agent(name="weather", instructions="Use tools.", tools=[get_weather], model=model)
    result = await agents.Runner.run(agent, "call get_weather for Rome", run_config=agents.RunConfig(tracing_disabled=True))
    assert called, "the agent called its tool through the gateway"
    assert str(result.final_output).startswith("emulated: ")
    await sdk.close()


async def test_langchain_on_the_responses_api_and_openai_embeddings(start, emulator):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    client = await start(config(["openai", "local_embeddings"], **providers(emulator)))
    base = str(client.make_url("/v1"))

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    chat = ChatOpenAI(model="gpt-4o-mini", base_url=base, api_key="sk-client-test", max_retries=0, use_responses_api=True)
    reply = await chat.bind_tools([get_weather]).ainvoke("call get_weather for Lima")
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "get_weather"
    embeddings = OpenAIEmbeddings(model="all-minilm-l6-v2", base_url=base, api_key="sk-client-test", max_retries=0, check_embedding_ctx_length=False)
    vectors = await embeddings.aembed_documents(["one text", "another text"])
    assert len(vectors) == 2 and len(vectors[0]) == 384


# ------------------------------------------------------------------ a third party's surface ---


class GenerateContent:
    """A third party's surface: a Gemini-style ``generateContent`` body, through the same chain."""

    name, kind, wire, path, content_type = "gemini.generate", "chat", "gemini", "/v1beta/generate", "text/event-stream"

    def __init__(self, config) -> None:
        pass

    @hookimpl
    def register_surfaces(self, register):
        register(self)

    async def parse(self, ctx, body):
        from hookgate import InvalidRequest
        from hookgate.surfaces import ParsedRequest

        try:
            texts = [part["text"] for content in body["contents"] for part in content["parts"]]
        except (KeyError, TypeError):
            raise InvalidRequest("contents[].parts[].text is required.", param="contents") from None
        return ParsedRequest({"model": body.get("model", "gpt-4o-mini"), "messages": [{"role": "user", "content": " ".join(texts)}]})

    async def completed(self, ctx, completion):
        pass

    def render(self, ctx, completion):
        return {"candidates": [{"content": {"parts": [{"text": completion.body["choices"][0]["message"]["content"]}]}}]}

    def open_stream(self, ctx):
        raise AssertionError("not streamed in this test")

    def replay_native(self, ctx, native):
        return None

    def error_body(self, error):
        return {"error": {"code": error.status, "message": error.message, "status": error.code}}

    def extra_routes(self):
        return []


async def test_a_third_party_adds_a_surface_that_gets_the_whole_chain(start, emulator, make_config):
    key = new_key("gemini")
    toml = config(["api_keys", "token_counter", "memory_cache", "openai"], api_keys=keys_section({"g": (key, {})}), **providers(emulator))
    toml = toml.replace("[gateway]\n", '[gateway]\nsurfaces = ["chat_completions", "gemini"]\n', 1)
    client = await start(toml, local={"gemini": GenerateContent})
    body = {"model": "gpt-4o-mini", "contents": [{"parts": [{"text": "hello"}, {"text": "world"}]}]}
    answer = await client.post("/v1beta/generate", json=body, headers=bearer(key))
    assert (await answer.json()) == {"candidates": [{"content": {"parts": [{"text": "emulated: hello world"}]}}]}
    assert (await client.post("/v1beta/generate", json=body, headers=bearer(key))).headers["x-hookgate-cache"] == "HIT"
    refused = await client.post("/v1beta/generate", json=body, headers=bearer("hg-not-a-key"))
    assert refused.status == 401 and (await refused.json())["error"]["status"] == "invalid_api_key", "its own error shape"
    assert (await client.post("/v1/messages", json={"model": "gpt-4o-mini", "max_tokens": 5, "messages": []})).status == 404, "only the surfaces listed"


def test_surfaces_are_checked_at_start_up(make_config):
    from hookgate.config import ConfigError
    from hookgate.gateway import Gateway
    from hookgate.runner import PipelineError

    class Twin(GenerateContent):
        path = "/v1/chat/completions"

    with pytest.raises(PipelineError, match="two surfaces are served on /v1/chat/completions"):
        Gateway(make_config('[gateway]\npipeline = ["echo"]\nsurfaces = ["chat_completions", "twin"]', local={"twin": Twin}))

    class Meddling(GenerateContent):
        @hookimpl
        async def before_request(self, ctx):
            pass

    with pytest.raises(PipelineError, match="enabled as a surface but implements before_request"):
        Gateway(make_config('[gateway]\npipeline = ["echo"]\nsurfaces = ["meddling"]', local={"meddling": Meddling}))
    with pytest.raises(ConfigError, match="listed in both pipeline and surfaces"):
        make_config('[gateway]\npipeline = ["echo", "chat_completions"]\nsurfaces = ["chat_completions"]')
