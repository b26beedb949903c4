"""The OpenAI emulator's other surfaces, through the official openai SDK: the Responses API
(JSON, typed SSE, function calls, the store), embeddings, legacy completions, the models API,
and tool calls in chat completions. Bodies are checked against the SDK's types with unknown
fields forbidden."""
from __future__ import annotations

import math
from typing import Any

import openai
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from hookgate.testing.openai_emulator import (
    EmulatorSettings,
    Fault,
    OpenAIEmulator,
    embedding_for,
    reply_for,
)
from wire_support import strict_sdk

# TODO(conformance): once tests/conformance/ vendors the OpenAI schema validator, also assert
# the bodies conform to Response, ResponseItemList, CreateEmbeddingResponse and
# CreateCompletionResponse.

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False},
    "strict": True,
}
CHAT_WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER["parameters"]}}


@pytest.fixture
async def emulator():
    async with OpenAIEmulator().serve() as emu:
        yield emu


@pytest.fixture
async def client(emulator):
    sdk = openai.AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0)
    yield sdk
    await sdk.close()


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------


async def test_a_response_is_deterministic_and_the_sdks_type(client: openai.AsyncOpenAI, emulator: OpenAIEmulator) -> None:
    emulator.settings = EmulatorSettings(cached_prompt_tokens=2)
    raw = await client.responses.with_raw_response.create(model="gpt-4o", instructions="Be brief.", input="hello there", metadata={"run": "1"})
    strict_sdk(Response, raw.http_response.json())
    response = raw.parse()
    assert (response.output_text, response.status, response.metadata, response.instructions) == ("emulated: hello there", "completed", {"run": "1"}, "Be brief.")
    usage = response.usage
    assert (usage.input_tokens, usage.input_tokens_details.cached_tokens, usage.output_tokens, usage.total_tokens) == (4, 2, 3, 7)
    assert emulator.stats.calls_by_path == {"/v1/responses": 1}


async def test_a_streamed_response_is_the_stored_one(client: openai.AsyncOpenAI) -> None:
    async with client.responses.stream(model="gpt-4o", input="stream this please") as stream:
        types = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert types.count("response.output_text.delta") == 1  # the whole text in one delta
    stored = await client.responses.retrieve(final.id)
    assert (stored.output_text, stored.usage, [item.id for item in stored.output]) == (final.output_text, final.usage, [item.id for item in final.output])
    assert stored.output_text == "emulated: stream this please"


async def test_a_function_call_is_answered_through_previous_response_id(client: openai.AsyncOpenAI) -> None:
    called = await client.responses.create(model="gpt-4o", input="ask get_weather about Paris", tools=[WEATHER])
    [call] = called.output
    assert (call.type, call.name, call.arguments, call.status) == ("function_call", "get_weather", '{"city":"ask get_weather about Paris"}', "completed")
    answered = await client.responses.create(
        model="gpt-4o", previous_response_id=called.id, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )
    assert answered.output_text == "emulated: sunny"
    assert answered.previous_response_id == called.id
    # The first turn's input (4 words) and call arguments (4 words), then the output (1 word).
    assert answered.usage.input_tokens == 9


async def test_function_choices_decide_what_is_called(client: openai.AsyncOpenAI) -> None:
    forced = await client.responses.create(model="gpt-4o", input="hi", tools=[WEATHER], tool_choice="required")
    assert forced.output[0].type == "function_call"
    named = await client.responses.create(model="gpt-4o", input="hi", tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"})
    assert named.output[0].name == "get_weather"
    none = await client.responses.create(model="gpt-4o", input="use get_weather", tools=[WEATHER], tool_choice="none")
    assert none.output_text == "emulated: use get_weather"
    hosted = await client.responses.create(model="gpt-4o", input="news", tools=[{"type": "web_search"}])
    assert hosted.output_text == "emulated: news"  # hosted tools are accepted and never called


@pytest.mark.parametrize(
    ("extra", "status", "param"),
    [
        ({"input": [{"type": "function_call_output", "call_id": "call_nope", "output": "x"}]}, 400, "input"),
        ({"input": "hi", "previous_response_id": "resp_missing"}, 404, "previous_response_id"),
        ({"input": "hi", "max_output_tokens": 5}, 400, "max_output_tokens"),
        ({"input": [{"type": "message", "role": "robot", "content": "x"}]}, 400, "input[0].role"),
        ({"input": []}, 400, "input"),
    ],
)
async def test_unusable_responses_requests_are_refused_as_openai_does(client: openai.AsyncOpenAI, extra: dict[str, Any], status: int, param: str) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        await client.responses.create(model="gpt-4o", **extra)
    assert (refused.value.status_code, refused.value.param) == (status, param)


async def test_max_output_tokens_cuts_the_answer_into_an_incomplete_response(client: openai.AsyncOpenAI) -> None:
    words = " ".join(f"w{i}" for i in range(30))
    response = await client.responses.create(model="gpt-4o", input=words, max_output_tokens=16)
    assert (response.status, response.incomplete_details.reason, response.usage.output_tokens) == ("incomplete", "max_output_tokens", 16)
    assert response.output_text == "emulated: " + " ".join(f"w{i}" for i in range(15))


async def test_stored_responses_are_retrieved_listed_and_deleted(client: openai.AsyncOpenAI) -> None:
    items = [
        {"role": "user", "content": "first"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok", "annotations": []}]},
        {"role": "user", "content": [{"type": "input_text", "text": "second"}]},
    ]
    response = await client.responses.create(model="gpt-4o", input=items)
    listed = await client.responses.input_items.list(response.id)
    assert [item.content[0].text for item in listed.data] == ["second", "ok", "first"]  # newest first by default
    ascending = [item.content[0].text async for item in client.responses.input_items.list(response.id, order="asc", limit=1)]
    assert ascending == ["first", "ok", "second"]  # the SDK follows has_more/after page by page
    await client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(response.id)


async def test_a_stored_response_can_be_streamed_again(client: openai.AsyncOpenAI, emulator: OpenAIEmulator, aiohttp_client) -> None:
    response = await client.responses.create(model="gpt-4o", input="replay me")
    http = await aiohttp_client(emulator.make_app())
    replayed = await http.get(f"/v1/responses/{response.id}", params={"stream": "true"})
    events = [block for block in (await replayed.text()).split("\n\n") if block]
    assert events[0].startswith("event: response.created") and events[-1].startswith("event: response.completed")
    assert response.id in events[-1]


async def test_unstored_responses_cannot_be_retrieved_and_the_store_is_bounded() -> None:
    async with OpenAIEmulator(stored_responses=2).serve() as emu:
        sdk = openai.AsyncOpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
        unstored = await sdk.responses.create(model="gpt-4o", input="x", store=False)
        first, second, third = [await sdk.responses.create(model="gpt-4o", input=str(i)) for i in range(3)]
        for missing in (unstored.id, first.id):
            with pytest.raises(openai.NotFoundError):
                await sdk.responses.retrieve(missing)
        assert [(await sdk.responses.retrieve(r.id)).id for r in (second, third)] == [second.id, third.id]
        assert len(emu.responses) == 2
        emu.reset()
        assert len(emu.responses) == 0
        await sdk.close()


async def test_faults_apply_to_every_api_call(client: openai.AsyncOpenAI, emulator: OpenAIEmulator) -> None:
    emulator.script(Fault(status=429, retry_after=1), Fault(status=503), Fault(drop_after=3), None)
    with pytest.raises(openai.RateLimitError):
        await client.responses.create(model="gpt-4o", input="hi")
    with pytest.raises(openai.InternalServerError):
        await client.embeddings.create(model="text-embedding-3-small", input="hi")
    with pytest.raises(openai.APIError):
        async with client.responses.stream(model="gpt-4o", input="one two three") as stream:
            await stream.get_final_response()
    assert (await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="fine")).choices[0].text == "emulated: fine"
    assert emulator.stats.calls_by_path == {"/v1/responses": 2, "/v1/embeddings": 1, "/v1/completions": 1}
    assert emulator.scripted_remaining == 0


# ---------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------


async def test_embeddings_are_deterministic_unit_vectors_that_rank_like_embeddings(client: openai.AsyncOpenAI) -> None:
    raw = await client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["the cat sat on the mat", "the cat sat on a mat", "quarterly revenue grew"], encoding_format="float"
    )
    strict_sdk(CreateEmbeddingResponse, raw.http_response.json())
    result = raw.parse()
    cat, cat_again, revenue = (item.embedding for item in result.data)
    assert [item.index for item in result.data] == [0, 1, 2] and len(cat) == 1536
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0) for v in (cat, cat_again, revenue))
    assert cosine(cat, cat_again) > 0.5 > abs(cosine(cat, revenue))
    assert cat == embedding_for("the cat sat on the mat", 1536)  # what a test can compute itself
    assert (result.usage.prompt_tokens, result.usage.total_tokens, result.model) == (15, 15, "text-embedding-3-small")


async def test_base64_and_float_encodings_carry_the_same_vector(client: openai.AsyncOpenAI) -> None:
    floats = await client.embeddings.create(model="text-embedding-3-large", input="hello", encoding_format="float", dimensions=64)
    decoded = await client.embeddings.create(model="text-embedding-3-large", input="hello", dimensions=64)  # the SDK asks for base64
    assert len(floats.data[0].embedding) == len(decoded.data[0].embedding) == 64
    assert all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7) for a, b in zip(floats.data[0].embedding, decoded.data[0].embedding, strict=True))


async def test_token_arrays_and_batches_are_embedded(client: openai.AsyncOpenAI) -> None:
    one = await client.embeddings.create(model="text-embedding-3-small", input=[101, 202, 303], dimensions=8)
    many = await client.embeddings.create(model="text-embedding-3-small", input=[[101, 202, 303], [7]], dimensions=8)
    assert one.data[0].embedding == many.data[0].embedding
    assert (len(many.data), many.usage.prompt_tokens) == (2, 4)


@pytest.mark.parametrize(
    ("extra", "status", "param"),
    [
        ({"model": "text-embedding-ada-002", "input": "x", "dimensions": 8}, 400, "dimensions"),
        ({"model": "text-embedding-3-small", "input": "x", "dimensions": 4000}, 400, "dimensions"),
        ({"model": "text-embedding-3-small", "input": ""}, 400, "input"),
        ({"model": "text-embedding-3-small", "input": ["ok", ""]}, 400, "input"),
        ({"model": "text-embedding-3-small", "input": ["x"] * 2049}, 400, "input"),
        ({"model": "text-embedding-3-small", "input": " ".join(["w"] * 8193)}, 400, "input"),
        ({"model": "no-such-embedder", "input": "x"}, 404, None),
    ],
)
async def test_unusable_embedding_requests_are_refused_as_openai_does(client: openai.AsyncOpenAI, extra: dict[str, Any], status: int, param: str | None) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        await client.embeddings.create(encoding_format="float", **extra)
    assert (refused.value.status_code, refused.value.param) == (status, param)


# ---------------------------------------------------------------------------------------------
# Legacy completions, models
# ---------------------------------------------------------------------------------------------


async def test_legacy_completions_cut_stop_echo_and_choose(client: openai.AsyncOpenAI) -> None:
    long = " ".join(f"w{i}" for i in range(20))
    cut = await client.completions.create(model="gpt-3.5-turbo-instruct", prompt=long)
    assert (cut.choices[0].finish_reason, len(cut.choices[0].text.split())) == ("length", 16)  # OpenAI's default max_tokens
    stopped = await client.completions.create(model="davinci-002", prompt="say hello STOP there", stop=["STOP"])
    assert (stopped.choices[0].text, stopped.choices[0].finish_reason) == ("emulated: say hello ", "stop")
    echoed = await client.completions.create(model="babbage-002", prompt=["a", "b"], echo=True, n=2, max_tokens=50)
    assert [c.text for c in echoed.choices] == ["aemulated: a", "aemulated: a", "bemulated: b", "bemulated: b"]
    assert [c.index for c in echoed.choices] == [0, 1, 2, 3]
    assert (echoed.usage.prompt_tokens, echoed.usage.completion_tokens) == (2, 8)


async def test_a_streamed_legacy_completion_ends_with_usage_and_done(client: openai.AsyncOpenAI) -> None:
    stream = await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="stream me", stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "emulated: stream me"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert (chunks[-1].choices, chunks[-1].usage.total_tokens) == ([], 5)


async def test_chat_models_have_no_legacy_completions_unless_configured(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await client.completions.create(model="gpt-4o", prompt="x")
    assert "gpt-4o" in missing.value.message and missing.value.code == "model_not_found"
    async with OpenAIEmulator(completion_models=None).serve() as vllm_like:
        sdk = openai.AsyncOpenAI(base_url=vllm_like.base_url, api_key="k", max_retries=0)
        assert (await sdk.completions.create(model="any-model", prompt="x")).choices[0].text == "emulated: x"
        await sdk.close()


async def test_a_listed_model_is_found_and_another_is_not(client: openai.AsyncOpenAI) -> None:
    model = await client.models.retrieve("gpt-4o")
    assert (model.id, model.object, model.owned_by) == ("gpt-4o", "model", "hookgate")
    with pytest.raises(openai.NotFoundError) as missing:
        await client.models.retrieve("gpt-9")
    assert missing.value.code == "model_not_found"


# ---------------------------------------------------------------------------------------------
# Chat completions with tools
# ---------------------------------------------------------------------------------------------


async def test_a_named_tool_is_called_in_chat_json_and_stream(client: openai.AsyncOpenAI) -> None:
    ask = {"model": "gpt-4o", "messages": [{"role": "user", "content": "use get_weather for Paris"}], "tools": [CHAT_WEATHER]}
    raw = await client.chat.completions.with_raw_response.create(**ask)
    strict_sdk(ChatCompletion, raw.http_response.json())
    whole = raw.parse()
    [call] = whole.choices[0].message.tool_calls
    assert (whole.choices[0].finish_reason, whole.choices[0].message.content, call.function.arguments) == ("tool_calls", None, '{"city":"use get_weather for Paris"}')
    async with client.chat.completions.stream(**ask) as stream:
        streamed = await stream.get_final_completion()
    streamed_call = streamed.choices[0].message.tool_calls[0]
    assert (streamed_call.id.startswith("call_emu"), streamed_call.function.name, streamed_call.function.arguments) == (True, call.function.name, call.function.arguments)
    assert whole.usage.completion_tokens == 4  # the words of the arguments: {"city":"use get_weather for Paris"}


async def test_parallel_calls_and_tool_choice_follow_the_request(client: openai.AsyncOpenAI) -> None:
    other = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
    both = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "get_weather and get_time"}], tools=[CHAT_WEATHER, other])
    assert [c.function.name for c in both.choices[0].message.tool_calls] == ["get_weather", "get_time"]
    one = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "get_weather and get_time"}], tools=[CHAT_WEATHER, other], parallel_tool_calls=False)
    assert len(one.choices[0].message.tool_calls) == 1
    forced = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], tools=[CHAT_WEATHER, other], tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert forced.choices[0].message.tool_calls[0].function.name == "get_time"


async def test_a_tool_answer_is_answered_and_mismatched_ids_are_refused(client: openai.AsyncOpenAI) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    answered = await client.chat.completions.create(model="m", tools=[CHAT_WEATHER], messages=[
        {"role": "user", "content": "weather?"}, {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ])
    assert answered.choices[0].message.content == "emulated: sunny"
    for messages in (
        [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_1", "content": "stray"}],
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": [call]}, {"role": "user", "content": "no answer"}],
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": [call]}, {"role": "tool", "tool_call_id": "call_2", "content": "wrong"}],
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="m", tools=[CHAT_WEATHER], messages=messages)
        assert refused.value.param.startswith("messages.[")


def test_the_last_user_turn_includes_trailing_tool_answers() -> None:
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "a"}, {"id": "b"}]},
        {"role": "tool", "tool_call_id": "a", "content": "one"},
        {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "two"}]},
        {"role": "user", "content": "and?"},
    ]
    assert reply_for(messages) == "emulated: one two and?"
    assert reply_for(messages[:-1]) == "emulated: one two"
    assert reply_for([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]) == "emulated: b"  # unchanged without tools


async def test_cached_prompt_tokens_show_in_chat_usage(client: openai.AsyncOpenAI, emulator: OpenAIEmulator) -> None:
    emulator.settings = EmulatorSettings(cached_prompt_tokens=100)
    answer = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "three small words"}])
    assert (answer.usage.prompt_tokens, answer.usage.prompt_tokens_details.cached_tokens) == (3, 3)  # never more than the prompt
