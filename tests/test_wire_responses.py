"""Serving OpenAI Responses clients from chat-completions upstreams (hookgate.wire.responses).

Pure functions are tested on hand-written dicts; the end-to-end tests drive the official
``openai`` SDK (``responses.create``, ``responses.create(stream=True)`` and ``responses.stream``
with its accumulated final response) against a small front end that does nothing but the
translations, in front of the OpenAI chat emulator. Every response and event is also checked
against the SDK's types with unknown fields forbidden (``strict_sdk``).
"""
from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from hookgate import InvalidRequest, RateLimited, UpstreamError
from hookgate.chat_request import validate_chat_request
from hookgate.responses import completion_to_chunks
from hookgate.testing.openai_emulator import EmulatorSettings, Fault, OpenAIEmulator
from hookgate.wire import WireLimits
from hookgate.wire.responses import (
    ChatStreamToResponses,
    encode_event,
    hosted_tools,
    response_events,
    responses_usage,
    to_chat_request,
    to_response,
)
from wire_support import LAST_CHAT_REQUEST, events_app, responses_front, strict_sdk

# TODO(conformance): once tests/conformance/ vendors the OpenAI schema validator, also assert
# that every response conforms to "Response", every event to "ResponseStreamEvent" and every
# translated chat request to "CreateChatCompletionRequest".

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False},
    "strict": True,
}
CHAT_WEATHER = {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}


def ask(input_: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "input": input_, **extra}


def completion(message: dict[str, Any], finish_reason: str = "stop", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-abc", "object": "chat.completion", "created": 1_700_000_000, "model": "llama-3.3-70b",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": None, **message}, "finish_reason": finish_reason, "logprobs": None}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


USAGE = {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62, "prompt_tokens_details": {"cached_tokens": 40}, "completion_tokens_details": {"reasoning_tokens": 4}}


# ---------------------------------------------------------------------------------------------
# Requests: Responses → chat
# ---------------------------------------------------------------------------------------------


def test_instructions_and_a_string_input_become_system_and_user_messages() -> None:
    chat = to_chat_request(ask("hi", instructions="Be brief."))
    assert chat == {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}
    validate_chat_request(chat)


def test_message_items_and_their_parts_map_to_chat_messages() -> None:
    chat = to_chat_request(ask([
        {"role": "developer", "content": "Answer in French."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
            {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        ]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed", "content": [{"type": "output_text", "text": "A cat.", "annotations": []}]},
    ]))
    assert chat["messages"] == [
        {"role": "system", "content": "Answer in French."},  # every chat upstream takes system; not all take developer
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        ]},
        {"role": "assistant", "content": "A cat."},
    ]
    validate_chat_request(chat)


def test_function_calls_and_outputs_keep_their_call_ids_in_chat_order() -> None:
    chat = to_chat_request(ask([
        {"role": "user", "content": "Weather in Paris and Lyon?"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
        {"type": "message", "role": "assistant", "content": "Checking both."},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": '{"city":"Lyon"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2", "output": [
            {"type": "input_text", "text": "rain"}, {"type": "input_image", "image_url": "data:image/png;base64,iVBO"},
        ]},
    ], tools=[WEATHER]))
    assert chat["messages"] == [
        {"role": "user", "content": "Weather in Paris and Lyon?"},
        {"role": "assistant", "content": "Checking both.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]},
    ]
    assert chat["tools"] == [CHAT_WEATHER]
    validate_chat_request(chat)


def test_earlier_turns_come_first_and_are_required_for_stateful_requests() -> None:
    history = [{"role": "user", "content": "My name is Ada."}, {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello Ada."}]}]
    chat = to_chat_request(ask("What is my name?", previous_response_id="resp_1", instructions="Be brief."), history=history)
    assert [m["content"] for m in chat["messages"]] == ["Be brief.", "My name is Ada.", "Hello Ada.", "What is my name?"]
    for field, value in (("previous_response_id", "resp_1"), ("conversation", "conv_1")):
        with pytest.raises(InvalidRequest) as refused:
            to_chat_request(ask("hi", **{field: value}))  # the caller did not look the turns up
        assert refused.value.param == field


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("required", "required"),
        ("none", "none"),
        ({"type": "function", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
        (
            {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_weather"}]},
            {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "get_weather"}}]}},
        ),
    ],
)
def test_tool_choice_maps_to_chat(choice: Any, expected: Any) -> None:
    assert to_chat_request(ask("hi", tools=[WEATHER], tool_choice=choice))["tool_choice"] == expected


def test_output_and_sampling_options_map_and_storage_options_are_dropped() -> None:
    chat = to_chat_request(ask(
        "hi",
        tools=[WEATHER], parallel_tool_calls=False, max_output_tokens=300, temperature=0.3, top_p=0.8, user="u-1",
        text={"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True, "description": "The answer"}, "verbosity": "low"},
        reasoning={"effort": "high", "summary": "auto"}, stream=True,
        store=False, metadata={"team": "a"}, truncation="auto", include=["reasoning.encrypted_content"],
        prompt_cache_key="k", safety_identifier="s", service_tier="flex", max_tool_calls=3,
    ))
    assert chat == {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [CHAT_WEATHER],
        "parallel_tool_calls": False,
        "max_completion_tokens": 300,
        "temperature": 0.3,
        "top_p": 0.8,
        "user": "u-1",
        "verbosity": "low",
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "description": "The answer", "strict": True}},
        "reasoning_effort": "high",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert to_chat_request(ask("hi", text={"format": {"type": "json_object"}}))["response_format"] == {"type": "json_object"}
    assert "response_format" not in to_chat_request(ask("hi", text={"format": {"type": "text"}}))


def test_hosted_tools_are_listed_for_routing_and_refused_for_chat_upstreams() -> None:
    body = ask("hi", tools=[{"type": "web_search"}, WEATHER, {"type": "file_search", "vector_store_ids": ["vs_1"]}, {"type": "web_search"}])
    assert hosted_tools(body) == ["web_search", "file_search"]
    assert hosted_tools(ask("hi", tools=[WEATHER])) == [] and hosted_tools(ask("hi")) == []
    with pytest.raises(InvalidRequest) as refused:
        to_chat_request(body)
    assert refused.value.param == "tools[0].type"
    assert "web_search tool is run by OpenAI's servers and is not available for gpt-4o" in refused.value.message
    with pytest.raises(InvalidRequest) as refused:
        to_chat_request(ask("hi", tools=[WEATHER], tool_choice={"type": "web_search_preview"}))
    assert refused.value.param == "tool_choice.type"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (ask("hi", background=True), "background"),
        (ask("hi", prompt={"id": "pmpt_1"}), "prompt"),
        (ask("hi", include=["message.output_text.logprobs"]), "include"),
        (ask([{"type": "item_reference", "id": "msg_1"}]), "input[0].type"),
        (ask([{"type": "web_search_call", "id": "ws_1", "status": "completed"}]), "input[0].type"),
        (ask([{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]), "input[0].content[0].file_id"),
        (ask([{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}]), "input[0].content[0].file_url"),
    ],
)
def test_what_needs_openais_servers_is_refused(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        to_chat_request(body)
    assert refused.value.param == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ("text", "body"),
        ({"input": "hi"}, "model"),
        (ask(None), "input"),
        (ask([]), "input"),
        (ask(5), "input"),
        (ask(["hi"]), "input[0]"),
        (ask([{"role": "robot", "content": "x"}]), "input[0].role"),
        (ask([{"role": "user", "content": 3}]), "input[0].content"),
        (ask([{"role": "user", "content": [{"type": "input_video"}]}]), "input[0].content[0].type"),
        (ask([{"role": "system", "content": [{"type": "input_image", "image_url": "x"}]}]), "input[0].content[0].type"),
        (ask([{"type": "function_call", "name": "f", "arguments": "{}"}]), "input[0].call_id"),
        (ask([{"type": "function_call_output", "call_id": "c", "output": 7}]), "input[0].output"),
        (ask("hi", tools=[{"type": "function"}]), "tools[0].name"),
        (ask("hi", tools=[WEATHER], tool_choice="sometimes"), "tool_choice"),
        (ask("hi", max_output_tokens=0), "max_output_tokens"),
        (ask("hi", text={"format": {"type": "json_schema", "schema": {}}}), "text.format.name"),
        (ask("hi", temperature="warm"), "temperature"),
    ],
)
def test_malformed_requests_are_400s_naming_the_parameter(body: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        to_chat_request(body)
    assert refused.value.param == param


def test_floods_are_refused_at_the_bound() -> None:
    with pytest.raises(InvalidRequest, match="100001 elements"):
        to_chat_request(ask([{"role": "user", "content": "x"}] * 100_001))
    small = WireLimits(max_messages=3, max_parts=2, max_tools=1)
    cases = [
        (ask([{"role": "user", "content": "x"}] * 2), [{"role": "user", "content": "y"}] * 2, "input"),  # history counts
        (ask([{"role": "user", "content": [{"type": "input_text", "text": "x"}] * 3}]), [], "input[0].content"),
        (ask("hi", tools=[WEATHER, WEATHER]), [], "tools"),
    ]
    for body, history, param in cases:
        with pytest.raises(InvalidRequest) as refused:
            to_chat_request(body, history=history, limits=small)
        assert refused.value.param == param


# ---------------------------------------------------------------------------------------------
# Answers: chat → response
# ---------------------------------------------------------------------------------------------


def test_a_completion_with_tool_calls_becomes_a_response_echoing_the_request() -> None:
    request = ask("weather?", instructions="Be brief.", tools=[WEATHER], temperature=0.2, metadata={"team": "a"})
    response = to_response(
        completion({"content": "Checking.", "tool_calls": [{"id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}, "tool_calls", USAGE),
        request=request,
        response_id="resp_r1",
        model="gpt-4o",
    )
    strict_sdk(Response, response)
    assert response["output"] == [
        {"id": "msg_r1_0", "type": "message", "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}]},
        {"id": "fc_r1_1", "type": "function_call", "status": "completed", "call_id": "call_7", "name": "get_weather", "arguments": '{"city":"Paris"}'},
    ]
    assert {k: response[k] for k in ("id", "object", "status", "model", "instructions", "tools", "temperature", "metadata", "created_at")} == {
        "id": "resp_r1", "object": "response", "status": "completed", "model": "gpt-4o", "instructions": "Be brief.",
        "tools": [WEATHER], "temperature": 0.2, "metadata": {"team": "a"}, "created_at": 1_700_000_000,
    }
    assert response["usage"] == {
        "input_tokens": 50, "input_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 0},
        "output_tokens": 12, "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 62,
    }


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_a_cut_answer_is_an_incomplete_response(finish: str, reason: str) -> None:
    response = to_response(completion({"content": "Once upon"}, finish), request=ask("story"))
    strict_sdk(Response, response)
    assert (response["status"], response["incomplete_details"], response["output"][0]["status"]) == ("incomplete", {"reason": reason}, "incomplete")


def test_reasoning_and_refusals_become_their_items_and_parts() -> None:
    response = to_response(completion({"content": "42", "reasoning_content": "Six times seven."}), request=ask("q"), response_id="resp_x")
    assert response["output"][0] == {"id": "rs_x_0", "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "Six times seven."}], "status": "completed"}
    strict_sdk(Response, response)
    refused = to_response(completion({"refusal": "No."}), request=ask("q"))
    assert refused["output"][0]["content"] == [{"type": "refusal", "refusal": "No."}]
    assert to_response(completion({"content": "x"}), request=ask("q"))["id"].startswith("resp_")
    assert to_response(completion({"content": "x"}), request=ask("q"))["id"] != to_response(completion({"content": "x"}), request=ask("q"))["id"]


def test_usage_maps_cache_reads_and_writes_and_absent_usage_stays_absent() -> None:
    assert responses_usage({"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10, "prompt_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 5}})["input_tokens_details"] == {"cached_tokens": 3, "cache_write_tokens": 5}
    assert responses_usage(None) is None
    assert "usage" not in to_response(completion({"content": "x"}), request=ask("q"))


def test_unreadable_completions_are_502s() -> None:
    for body in ({"choices": []}, {"choices": ["x"]}, {"choices": [{"message": None}]}):
        with pytest.raises(UpstreamError):
            to_response(body, request=ask("q"))
    calls = [{"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}} for i in range(3)]
    with pytest.raises(UpstreamError, match="at most 2"):
        to_response(completion({"tool_calls": calls}, "tool_calls"), request=ask("q"), limits=WireLimits(max_output_items=2))


# ---------------------------------------------------------------------------------------------
# Streams: chat chunks → Responses events
# ---------------------------------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "llama", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def translate(chunks: list[dict[str, Any]], request: dict[str, Any], **options: Any) -> tuple[list[dict[str, Any]], ChatStreamToResponses]:
    translator = ChatStreamToResponses(request, **options)
    events = [event for c in chunks for event in translator.feed(c)]
    return events + translator.finish(), translator


def test_a_stream_becomes_the_typed_event_sequence() -> None:
    answer = completion({"content": "Checking.", "tool_calls": [{"id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}, "tool_calls", USAGE)
    request = ask("weather?", tools=[WEATHER])
    events, translator = translate(completion_to_chunks(answer, include_usage=True), request, response_id="resp_r1", model="gpt-4o")
    for event in events:
        strict_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    # The streamed answer is the JSON one: same items, ids and usage.
    whole = to_response(answer, request=request, response_id="resp_r1", model="gpt-4o")
    final = events[-1]["response"]
    assert {k: v for k, v in final.items() if k != "completed_at"} == {k: v for k, v in whole.items() if k != "completed_at"}
    assert translator.response is not None and translator.finished


def test_refusal_and_reasoning_deltas_stream_as_their_parts() -> None:
    events, _ = translate([chunk({"reasoning_content": "Think."}), chunk({"content": "Hi."}), chunk({"refusal": "But no."}), chunk({}, "stop")], ask("q"))
    for event in events:
        strict_event(event)
    deltas = [(e["type"], e.get("output_index"), e.get("content_index")) for e in events if e["type"].endswith(".delta")]
    assert deltas == [("response.reasoning_text.delta", 0, 0), ("response.output_text.delta", 1, 0), ("response.refusal.delta", 1, 1)]
    assert [p["type"] for p in events[-1]["response"]["output"][1]["content"]] == ["output_text", "refusal"]


def test_a_stream_cut_by_the_token_limit_ends_incomplete() -> None:
    events, _ = translate([chunk({"content": "Once upon"}), chunk({}, "length")], ask("story"))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_stream_going_back_to_a_closed_call_or_over_the_bound_is_malformed() -> None:
    translator = ChatStreamToResponses(ask("q"))
    translator.feed(chunk({"tool_calls": [{"index": 0, "id": "c0", "function": {"name": "f", "arguments": "{"}}]}))
    translator.feed(chunk({"tool_calls": [{"index": 1, "id": "c1", "function": {"name": "f", "arguments": "{}"}}]}))
    with pytest.raises(UpstreamError, match="already left"):
        translator.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}))
    calls = [chunk({"tool_calls": [{"index": i, "id": f"c{i}", "function": {"name": "f", "arguments": "{}"}}]}) for i in range(3)]
    with pytest.raises(UpstreamError, match="more than 2 output items"):
        translate(calls, ask("q"), limits=WireLimits(max_output_items=2))


def test_a_failure_is_a_failed_response_even_before_the_first_chunk() -> None:
    translator = ChatStreamToResponses(ask("q"))
    events = translator.fail(RateLimited("Slow down."))
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.failed"]
    assert events[-1]["response"]["error"] == {"code": "rate_limit_exceeded", "message": "Slow down."}
    for event in events:
        strict_event(event)
    assert translator.finish() == []
    with pytest.raises(UpstreamError):
        ChatStreamToResponses(ask("q")).finish()


# ---------------------------------------------------------------------------------------------
# End to end: the openai SDK, the translations, the chat emulator
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def chat_upstream():
    async with OpenAIEmulator().serve() as emu:
        yield emu


@pytest.fixture
async def front(aiohttp_client, chat_upstream):
    return await aiohttp_client(responses_front(chat_upstream.base_url))


@pytest.fixture
async def client(front):
    sdk = openai.AsyncOpenAI(base_url=str(front.make_url("/v1")), api_key="sk-test", max_retries=0)
    yield sdk
    await sdk.close()


def plain(response: Response) -> dict[str, Any]:
    """A response as data, without what the SDK's stream helper adds (``parsed`` fields)."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("parsed", "output_parsed")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(response.model_dump(exclude_none=True))


def without_ids(response: Response) -> dict[str, Any]:
    body = plain(response)
    for field in ("id", "created_at", "completed_at"):
        body.pop(field)
    for item in body["output"]:
        item.pop("id", None)
    return body


def strict_event(event: dict[str, Any]) -> None:
    """An event checked against the SDK's types. The published spec requires ``name`` in
    ``response.function_call_arguments.done``, which the SDK's type does not declare (it
    ignores it): the events carry it, for clients that follow the spec."""
    if event.get("type") == "response.function_call_arguments.done":
        event = {k: v for k, v in event.items() if k != "name"}
    strict_sdk(ResponseStreamEvent, event)


async def test_sdk_gets_a_response_from_a_chat_upstream(client, front, chat_upstream) -> None:
    chat_upstream.settings = EmulatorSettings(cached_prompt_tokens=3)
    raw = await client.responses.with_raw_response.create(model="gpt-4o", instructions="Be brief.", input="hello there")
    strict_sdk(Response, raw.http_response.json())
    response = raw.parse()
    assert (response.output_text, response.status, response.instructions) == ("emulated: hello there", "completed", "Be brief.")
    # 4 prompt words (instructions + input), 3 of them cached; 3 answer words.
    assert (response.usage.input_tokens, response.usage.input_tokens_details.cached_tokens, response.usage.output_tokens) == (4, 3, 3)
    assert front.app[LAST_CHAT_REQUEST][0]["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]


async def test_sdk_stream_helper_accumulates_to_the_json_response(client) -> None:
    whole = await client.responses.create(model="gpt-4o", input="tell me a story")
    async with client.responses.stream(model="gpt-4o", input="tell me a story") as stream:
        deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        streamed = await stream.get_final_response()
    assert deltas == ["emulated: ", "tell ", "me ", "a ", "story"]
    assert without_ids(streamed) == without_ids(whole)


async def test_sdk_raw_stream_events_are_the_sdks_types_in_sequence(client) -> None:
    stream = await client.responses.create(model="gpt-4o", input="hi", stream=True)
    events = [event async for event in stream]
    for event in events:
        strict_event(event.model_dump(exclude_unset=True, by_alias=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert (events[0].type, events[-1].type, events[-1].response.output_text) == ("response.created", "response.completed", "emulated: hi")


async def test_sdk_function_call_round_trip_streamed_through_a_chat_upstream(client, front) -> None:
    first_input = [{"role": "user", "content": "what does get_weather say for Paris"}]
    async with client.responses.stream(model="gpt-4o", input=first_input, tools=[WEATHER]) as stream:
        called = await stream.get_final_response()
    [call] = called.output
    assert (call.type, call.name, call.arguments) == ("function_call", "get_weather", '{"city":"what does get_weather say for Paris"}')

    second_input = [*first_input, call.model_dump(exclude_none=True), {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 degrees"}]
    async with client.responses.stream(model="gpt-4o", input=second_input, tools=[WEATHER]) as stream:
        answered = await stream.get_final_response()
    assert answered.output_text == "emulated: sunny, 21 degrees"
    # The chat upstream (which refuses unmatched ids) saw the call and its output under one id.
    sent = front.app[LAST_CHAT_REQUEST][0]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.call_id == sent[2]["tool_call_id"]


async def test_sdk_structured_output_reaches_the_chat_upstream_as_response_format(client, front) -> None:
    await client.responses.create(
        model="gpt-4o", input="hi", text={"format": {"type": "json_schema", "name": "greeting", "schema": {"type": "object", "properties": {}, "additionalProperties": False}, "strict": True}}
    )
    assert front.app[LAST_CHAT_REQUEST][0]["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "greeting", "schema": {"type": "object", "properties": {}, "additionalProperties": False}, "strict": True},
    }


async def test_a_hosted_tool_reaches_the_sdk_as_a_400_without_an_upstream_call(client, chat_upstream) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(model="gpt-4o", input="news?", tools=[{"type": "web_search"}])
    assert refused.value.param == "tools[0].type"
    assert chat_upstream.stats.calls == 0


async def test_an_upstream_rate_limit_reaches_the_sdk(client, chat_upstream) -> None:
    chat_upstream.script(Fault(status=429, retry_after=1))
    with pytest.raises(openai.RateLimitError):
        await client.responses.create(model="gpt-4o", input="hi")


async def test_a_failure_mid_stream_is_a_failed_response(client, chat_upstream) -> None:
    chat_upstream.script(Fault(drop_after=3))
    stream = await client.responses.create(model="gpt-4o", input="one two three four five", stream=True)
    events = [event async for event in stream]
    assert events[-1].type == "response.failed"
    assert events[-1].response.error.code == "server_error"
    chat_upstream.script(Fault(drop_after=3))
    with pytest.raises(RuntimeError, match="response.completed"):  # what the SDK helper says when it has no final answer
        async with client.responses.stream(model="gpt-4o", input="one two three four five") as helper:
            await helper.get_final_response()


async def test_a_replayed_response_accumulates_back_to_itself(aiohttp_client) -> None:
    stored = to_response(
        completion({"content": "Done.", "reasoning_content": "Easy.", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}, "tool_calls", USAGE),
        request=ask("q", tools=[WEATHER]),
        response_id="resp_stored",
    )
    events = response_events(stored)
    for event in events:
        strict_event(event)
    http = await aiohttp_client(events_app("/v1/responses", events, encode_event))
    sdk = openai.AsyncOpenAI(base_url=str(http.make_url("/v1")), api_key="k", max_retries=0)
    async with sdk.responses.stream(model="gpt-4o", input="q") as stream:
        final = await stream.get_final_response()
    await sdk.close()
    assert plain(final) == plain(Response.model_validate(stored))
