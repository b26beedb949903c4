"""Serving Anthropic Messages clients from chat-completions upstreams (hookgate.wire.anthropic).

Pure functions are tested on hand-written dicts; the end-to-end tests drive the official
``anthropic`` SDK (``messages.create``, ``messages.stream`` and its accumulated final message)
against a small front end that does nothing but the translations, in front of the OpenAI chat
emulator, so what the SDK accepts is what the translations produce. Every body and event is also
checked against the SDK's own types with unknown fields forbidden (``strict_sdk``).
"""
from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from anthropic.types import Message, RawMessageStreamEvent

from hookgate import InvalidRequest, UpstreamError
from hookgate.chat_request import validate_chat_request
from hookgate.responses import completion_to_chunks
from hookgate.testing.openai_emulator import EmulatorSettings, Fault, OpenAIEmulator
from hookgate.wire import WireLimits
from hookgate.wire.anthropic import (
    ChatStreamToAnthropic,
    anthropic_error_body,
    anthropic_usage,
    encode_event,
    message_events,
    openai_usage,
    to_anthropic_message,
    to_chat_request,
)
from wire_support import LAST_CHAT_REQUEST, events_app, messages_front, strict_sdk

# TODO(conformance): once tests/conformance/ vendors the OpenAI schema validator, also assert
# that every translated chat request conforms to CreateChatCompletionRequest.

WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PNG = "iVBORw0KGgo="


def request(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-6", "max_tokens": 256, "messages": list(messages), **extra}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def completion(message: dict[str, Any], finish_reason: str | None = "stop", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1,
        "model": "llama-3.3-70b",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": None, **message}, "finish_reason": finish_reason, "logprobs": None}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


# ---------------------------------------------------------------------------------------------
# Requests: Messages → chat
# ---------------------------------------------------------------------------------------------


def test_system_text_and_images_become_chat_messages() -> None:
    chat = to_chat_request(
        request(
            user("hi"),
            user([
                {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
            ]),
            system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "Be kind."}],
        )
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief.\n\nBe kind."},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ]},
    ]
    assert "cache_control" not in json.dumps(chat)  # OpenAI caches prompts by itself
    validate_chat_request(chat)  # what the gateway's chain accepts


def test_tool_use_and_results_keep_their_ids_and_come_in_chat_order() -> None:
    chat = to_chat_request(
        request(
            user("weather in Paris?"),
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Lyon"}},
            ]},
            user([
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True, "content": [
                    {"type": "text", "text": "no data"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                ]},
                {"type": "text", "text": "and tomorrow?"},
            ]),
            tools=[WEATHER],
        )
    )
    assert chat["messages"][1:] == [
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'}},
        ]},
        # Tool answers right after the calls; the result's image rides in the user message after.
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "no data"},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "text", "text": "and tomorrow?"},
        ]},
    ]
    assert chat["tools"] == [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER["input_schema"]}}]
    validate_chat_request(chat)


def test_documents_become_text_and_file_parts() -> None:
    chat = to_chat_request(request(user([
        {"type": "document", "title": "Notes", "context": "From the meeting", "source": {"type": "text", "media_type": "text/plain", "data": "Ship on Friday."}},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "Part one."}]}},
        {"type": "document", "title": "spec.pdf", "citations": {"enabled": True}, "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
    ])))
    assert chat["messages"][0]["content"] == [
        {"type": "text", "text": "Notes\n\nFrom the meeting\n\nShip on Friday."},
        {"type": "text", "text": "Part one."},
        {"type": "file", "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        ({"type": "tool", "name": "get_weather"}, {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
        ({"type": "any", "disable_parallel_tool_use": True}, {"tool_choice": "required", "parallel_tool_calls": False}),
    ],
)
def test_tool_choice_maps_to_chat(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    chat = to_chat_request(request(user("hi"), tools=[WEATHER], tool_choice=choice))
    assert {k: chat[k] for k in expected} == expected
    assert "parallel_tool_calls" in chat or "parallel_tool_calls" not in expected


def test_sampling_stops_user_format_and_stream_options_map() -> None:
    chat = to_chat_request(request(
        user("hi"),
        temperature=0.2, top_p=0.9, top_k=5, stop_sequences=["END", "STOP"], metadata={"user_id": "user-7"},
        output_config={"format": {"type": "json_schema", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}},
        stream=True, service_tier="auto",
    ))
    assert chat == {
        "model": "claude-sonnet-4-6",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,  # top_k has no chat counterpart; service_tier is a hint: both dropped
        "stop": ["END", "STOP"],
        "user": "user-7",
        "response_format": {"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}},
        "stream": True,
        "stream_options": {"include_usage": True},  # Anthropic clients need the usage at the end
    }
    assert to_chat_request(request(user("hi")), max_tokens_field="max_tokens", model="upstream-name") == {
        "model": "upstream-name", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 256,
    }


@pytest.mark.parametrize(
    ("thinking", "effort", "expected"),
    [
        ({"type": "enabled", "budget_tokens": 2048}, None, "low"),
        ({"type": "enabled", "budget_tokens": 8000}, None, "medium"),
        ({"type": "enabled", "budget_tokens": 32000}, None, "high"),
        ({"type": "adaptive"}, None, None),
        ({"type": "disabled"}, None, None),
        ({"type": "adaptive"}, "max", "xhigh"),
        (None, "low", "low"),
    ],
)
def test_thinking_becomes_reasoning_effort_only_for_reasoning_upstreams(thinking: Any, effort: Any, expected: str | None) -> None:
    extra: dict[str, Any] = {}
    if thinking is not None:
        extra["thinking"] = thinking
    if effort is not None:
        extra["output_config"] = {"effort": effort}
    body = request(user("hi"), max_tokens=64000, **extra)
    assert "reasoning_effort" not in to_chat_request(body)  # the default: non-reasoning models refuse it
    assert to_chat_request(body, thinking="reasoning_effort").get("reasoning_effort") == expected


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (request(user("hi"), tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools[0].type"),
        (request(user("hi"), mcp_servers=[{"type": "url", "url": "https://mcp.example.com", "name": "x"}]), "mcp_servers"),
        (request(user("hi"), max_tokens=0), "max_tokens"),
        (request(user([{"type": "search_result", "source": "s", "title": "t", "content": []}])), "messages[0].content[0].type"),
        (request(user([{"type": "image", "source": {"type": "file", "file_id": "file_1"}}])), "messages[0].content[0].source.type"),
        (request(user([{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}])), "messages[0].content[0].source.type"),
        (request(user("hi"), {"role": "assistant", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}), "messages[1].content[0].type"),
    ],
)
def test_what_only_anthropic_can_do_is_refused_before_any_call(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        to_chat_request(body)
    assert refused.value.param == param
    assert "Anthropic" in refused.value.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], "body"),
        ({"model": "m", "max_tokens": 10}, "messages"),
        ({"model": "m", "max_tokens": 10, "messages": []}, "messages"),
        ({"model": 5, "max_tokens": 10, "messages": [user("hi")]}, "model"),
        ({"model": "m", "messages": [user("hi")]}, "max_tokens"),
        ({"model": "m", "max_tokens": "10", "messages": [user("hi")]}, "max_tokens"),
        (request("not a message"), "messages[0]"),
        (request({"role": "tool", "content": "x"}), "messages[0].role"),
        (request(user(42)), "messages[0].content"),
        (request(user([{"text": "no type"}])), "messages[0].content[0].type"),
        (request(user([{"type": "text", "text": None}])), "messages[0].content[0].text"),
        (request(user("hi"), {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]}), "messages[1].content[0].input"),
        (request(user([{"type": "tool_result", "content": "x"}])), "messages[0].content[0].tool_use_id"),
        (request(user("hi"), system=[{"type": "image"}]), "system[0].type"),
        (request(user("hi"), tools=[{"input_schema": {}}]), "tools[0].name"),
        (request(user("hi"), tools=[{"name": "f", "input_schema": []}]), "tools[0].input_schema"),
        (request(user("hi"), tools=[WEATHER], tool_choice={"type": "sometimes"}), "tool_choice.type"),
        (request(user("hi"), stop_sequences=["ok", 3]), "stop_sequences[1]"),
        (request(user("hi"), metadata=["x"]), "metadata"),
        (request(user("hi"), temperature="hot"), "temperature"),
        (request(user("hi"), output_config={"format": {"type": "json_object"}}), "output_config.format.type"),
    ],
)
def test_malformed_requests_are_400s_naming_the_parameter(body: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        to_chat_request(body)
    assert refused.value.param == param


def test_floods_are_refused_at_the_bound_without_walking_them() -> None:
    with pytest.raises(InvalidRequest, match="100001 elements") as refused:
        to_chat_request(request(*[user("x")] * 100_001))
    assert refused.value.param == "messages"
    small = WireLimits(max_parts=3, max_tools=2, max_stop_sequences=1)
    cases = [
        (request(user([{"type": "text", "text": "x"}] * 4)), "messages[0].content"),
        (request(user([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "x"}] * 4}])), "messages[0].content[0].content"),
        (request(user("hi"), tools=[WEATHER] * 3), "tools"),
        (request(user("hi"), stop_sequences=["a", "b"]), "stop_sequences"),
    ]
    for body, param in cases:
        with pytest.raises(InvalidRequest) as refused:
            to_chat_request(body, limits=small)
        assert refused.value.param == param


# ---------------------------------------------------------------------------------------------
# Answers: chat → Messages
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("finish", "stop"), [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal"), (None, "end_turn")]
)
def test_finish_reasons_become_stop_reasons(finish: str | None, stop: str) -> None:
    assert to_anthropic_message(completion({"content": "x"}, finish))["stop_reason"] == stop


def test_a_completion_with_tool_calls_becomes_a_message() -> None:
    usage = {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129, "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 15}}
    message = to_anthropic_message(
        completion(
            {"content": "Let me look.", "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            "tool_calls",
            usage,
        ),
        model="claude-sonnet-4-6",
    )
    assert message == {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": [{"type": "text", "text": "Let me look."}, {"type": "tool_use", "id": "call_9", "name": "get_weather", "input": {"city": "Paris"}}],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        # Anthropic's input_tokens leaves out what was read from or written to the cache.
        "usage": {"input_tokens": 5, "cache_creation_input_tokens": 15, "cache_read_input_tokens": 100, "output_tokens": 9},
    }
    strict_sdk(Message, message)


def test_reasoning_text_becomes_a_thinking_block_and_a_refusal_a_refusal() -> None:
    thought = to_anthropic_message(completion({"content": "42", "reasoning_content": "Adding up."}, usage={
        "prompt_tokens": 3, "completion_tokens": 10, "total_tokens": 13, "completion_tokens_details": {"reasoning_tokens": 8},
    }))
    assert thought["content"] == [{"type": "thinking", "thinking": "Adding up.", "signature": ""}, {"type": "text", "text": "42"}]
    assert thought["usage"]["output_tokens_details"] == {"thinking_tokens": 8}
    strict_sdk(Message, thought)
    refused = to_anthropic_message(completion({"refusal": "I can't help with that."}))
    assert (refused["content"], refused["stop_reason"]) == ([{"type": "text", "text": "I can't help with that."}], "refusal")


def test_usage_round_trips_exactly_through_chat_usage() -> None:
    usage = {"input_tokens": 12, "cache_creation_input_tokens": 30, "cache_read_input_tokens": 400, "output_tokens": 50, "output_tokens_details": {"thinking_tokens": 20}}
    assert anthropic_usage(openai_usage(usage)) == usage
    assert anthropic_usage(None) == {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0}


@pytest.mark.parametrize(
    "body",
    [
        {"choices": []},
        {"choices": [{"index": 0}]},
        completion({"tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}, "tool_calls"),
        completion({"tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}]}, "tool_calls"),
    ],
)
def test_unreadable_completions_are_502s(body: dict[str, Any]) -> None:
    with pytest.raises(UpstreamError) as failed:
        to_anthropic_message(body)
    assert (failed.value.status, failed.value.code) == (502, "upstream_malformed")


def test_an_answer_with_more_tool_calls_than_the_bound_is_malformed() -> None:
    calls = [{"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}} for i in range(3)]
    with pytest.raises(UpstreamError, match="at most 2"):
        to_anthropic_message(completion({"tool_calls": calls}, "tool_calls"), limits=WireLimits(max_output_items=2))


# ---------------------------------------------------------------------------------------------
# Streams: chat chunks → Anthropic events
# ---------------------------------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1, "model": "llama", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def translate(chunks: list[dict[str, Any]], **options: Any) -> list[dict[str, Any]]:
    translator = ChatStreamToAnthropic(**options)
    events = [event for c in chunks for event in translator.feed(c)]
    return events + translator.finish()


def test_a_stream_becomes_anthropics_event_sequence() -> None:
    usage = {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27, "prompt_tokens_details": {"cached_tokens": 8}}
    events = translate([
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me "}),
        chunk({"content": "check."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
        {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1, "model": "llama", "choices": [], "usage": usage},
    ], model="claude-sonnet-4-6")
    for event in events:
        strict_sdk(RawMessageStreamEvent, event)
    assert [(e["type"], e.get("index")) for e in events] == [
        ("message_start", None),
        ("content_block_start", 0), ("content_block_delta", 0), ("content_block_delta", 0), ("content_block_stop", 0),
        ("content_block_start", 1), ("content_block_delta", 1), ("content_block_delta", 1), ("content_block_stop", 1),
        ("content_block_start", 2), ("content_block_delta", 2), ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert events[0]["message"]["model"] == "claude-sonnet-4-6" and events[0]["message"]["id"] == "msg_s1"
    assert events[5]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}
    assert [e["delta"]["partial_json"] for e in events[6:8]] == ['{"city":', ' "Paris"}']
    assert events[-2] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 8, "output_tokens": 7},
    }


def test_reasoning_deltas_stream_as_a_thinking_block_before_the_text() -> None:
    events = translate([chunk({"role": "assistant", "reasoning_content": "Hmm, "}), chunk({"reasoning_content": "yes."}), chunk({"content": "Yes."}), chunk({}, "stop")])
    starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    assert starts == [{"type": "thinking", "thinking": "", "signature": ""}, {"type": "text", "text": ""}]
    assert [e["delta"] for e in events if e["type"] == "content_block_delta"][:2] == [
        {"type": "thinking_delta", "thinking": "Hmm, "}, {"type": "thinking_delta", "thinking": "yes."},
    ]


def test_a_stream_that_goes_back_to_a_closed_tool_call_is_malformed() -> None:
    call = {"index": 0, "id": "c0", "function": {"name": "f", "arguments": "{"}}
    translator = ChatStreamToAnthropic()
    translator.feed(chunk({"tool_calls": [call]}))
    translator.feed(chunk({"content": "between"}))
    with pytest.raises(UpstreamError, match="already left"):
        translator.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}))


def test_a_stream_over_the_block_bound_is_malformed() -> None:
    calls = [chunk({"tool_calls": [{"index": i, "id": f"c{i}", "function": {"name": "f", "arguments": "{}"}}]}) for i in range(3)]
    with pytest.raises(UpstreamError, match="more than 2 content blocks"):
        translate(calls, limits=WireLimits(max_output_items=2))


def test_an_empty_stream_is_an_upstream_error_and_a_failure_an_error_event() -> None:
    with pytest.raises(UpstreamError) as failed:
        ChatStreamToAnthropic().finish()
    assert failed.value.code == "upstream_disconnected"
    translator = ChatStreamToAnthropic()
    translator.feed(chunk({"content": "partial"}))
    assert translator.fail(UpstreamError("The upstream went away.")) == [
        {"type": "error", "error": {"type": "api_error", "message": "The upstream went away.", "details": {"error_code": "upstream_error"}}}
    ]
    assert translator.finish() == []  # nothing after the error event


def test_encoded_events_are_named_sse_events() -> None:
    assert encode_event({"type": "message_stop"}) == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


# ---------------------------------------------------------------------------------------------
# End to end: the anthropic SDK, the translations, the chat emulator
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def chat_upstream():
    async with OpenAIEmulator().serve() as emu:
        yield emu


@pytest.fixture
async def front(aiohttp_client, chat_upstream):
    return await aiohttp_client(messages_front(chat_upstream.base_url))


@pytest.fixture
async def claude(front):
    client = anthropic.AsyncAnthropic(base_url=str(front.make_url("")).rstrip("/"), api_key="sk-ant-test", max_retries=0)
    yield client
    await client.close()


async def test_sdk_gets_a_message_from_a_chat_upstream(claude, front, chat_upstream) -> None:
    chat_upstream.settings = EmulatorSettings(cached_prompt_tokens=2)
    raw = await claude.messages.with_raw_response.create(
        model="claude-sonnet-4-6", max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "hello there"}]
    )
    strict_sdk(Message, await raw.json())
    message = await raw.parse()
    assert (message.content[0].text, message.stop_reason, message.model) == ("emulated: hello there", "end_turn", "claude-sonnet-4-6")
    # The emulator counted 4 prompt words (system + user), 2 of them cached, and 3 answer words.
    assert message.usage.model_dump(exclude_none=True) == {"input_tokens": 2, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2, "output_tokens": 3}
    assert front.app[LAST_CHAT_REQUEST][0]["messages"][0] == {"role": "system", "content": "Be brief."}


async def test_sdk_stream_accumulates_to_the_same_message_as_json(claude) -> None:
    ask = {"model": "claude-sonnet-4-6", "max_tokens": 100, "messages": [{"role": "user", "content": "tell me a story"}]}
    whole = await claude.messages.create(**ask)
    async with claude.messages.stream(**ask) as stream:
        texts = [text async for text in stream.text_stream]
        streamed = await stream.get_final_message()
    assert texts == ["emulated: ", "tell ", "me ", "a ", "story"]  # one delta per upstream chunk
    assert streamed.model_dump(exclude={"id"}) == whole.model_dump(exclude={"id"})


async def test_sdk_raw_stream_events_are_anthropics_types(front) -> None:
    response = await front.post("/v1/messages", json={"model": "m", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    text = await response.text()
    events = [block for block in text.split("\n\n") if block]
    for block in events:
        name, data = block.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        strict_sdk(RawMessageStreamEvent, event)
    assert len(events) == 7  # message_start, a text block of 2 words (start, 2 deltas, stop), message_delta, message_stop


async def test_sdk_tool_call_round_trip_streamed_through_a_chat_upstream(claude, front) -> None:
    ask = {"model": "claude-sonnet-4-6", "max_tokens": 100, "tools": [WEATHER]}
    first_turn = [{"role": "user", "content": "what does get_weather say for Paris"}]
    async with claude.messages.stream(**ask, messages=first_turn) as stream:
        called = await stream.get_final_message()
    assert called.stop_reason == "tool_use"
    [use] = called.content
    assert (use.type, use.name, use.input) == ("tool_use", "get_weather", {"city": "what does get_weather say for Paris"})

    second_turn = [
        *first_turn,
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in called.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 degrees"}]},
    ]
    async with claude.messages.stream(**ask, messages=second_turn) as stream:
        answered = await stream.get_final_message()
    assert (answered.content[0].text, answered.stop_reason) == ("emulated: sunny, 21 degrees", "end_turn")
    # The chat upstream saw the call and its answer under the same id (it refuses mismatches).
    sent = front.app[LAST_CHAT_REQUEST][0]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == use.id == sent[2]["tool_call_id"]


async def test_a_refused_request_reaches_the_sdk_as_a_400_without_an_upstream_call(claude, chat_upstream) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        await claude.messages.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
    assert refused.value.type == "invalid_request_error"
    assert "Anthropic's servers" in refused.value.api_message
    assert chat_upstream.stats.calls == 0


async def test_an_upstream_error_reaches_the_sdk_in_anthropics_shape(claude, chat_upstream) -> None:
    chat_upstream.script(Fault(status=429, retry_after=1))
    with pytest.raises(anthropic.RateLimitError) as limited:
        await claude.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert (limited.value.type, limited.value.error_code) == ("rate_limit_error", "rate_limit_exceeded")


async def test_a_failure_mid_stream_reaches_the_sdk_as_an_error_event(claude, chat_upstream) -> None:
    chat_upstream.script(Fault(drop_after=3))
    with pytest.raises(anthropic.APIStatusError) as failed:
        async with claude.messages.stream(model="m", max_tokens=50, messages=[{"role": "user", "content": "one two three four"}]) as stream:
            async for _ in stream:
                pass
    assert (failed.value.type, failed.value.error_code) == ("api_error", "upstream_disconnected")


@pytest.mark.parametrize(
    ("status", "exception", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (413, anthropic.ContentTooLargeError, "request_too_large"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (502, anthropic.InternalServerError, "api_error"),
        (503, anthropic.ServiceUnavailableError, "overloaded_error"),
        (504, anthropic.GatewayTimeoutError, "timeout_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
async def test_gateway_errors_reach_the_sdk_as_its_exception_classes(aiohttp_client, status: int, exception: type, error_type: str) -> None:
    from aiohttp import web

    body = anthropic_error_body(status, "Refused by the gateway.", code="budget_exceeded", request_id="req_1")

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/v1/messages", refuse)
    http = await aiohttp_client(app)
    client = anthropic.AsyncAnthropic(base_url=str(http.make_url("")).rstrip("/"), api_key="k", max_retries=0)
    with pytest.raises(exception) as raised:
        await client.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "hi"}])
    await client.close()
    assert (raised.value.status_code, raised.value.type, raised.value.api_message, raised.value.error_code) == (status, error_type, "Refused by the gateway.", "budget_exceeded")
    if error_type != "request_too_large":  # the SDK's ErrorObject union lacks this documented type
        # details.error_code is read by the SDK's exceptions, though its ErrorObject types do not declare it.
        strict_sdk(anthropic.types.ErrorResponse, {**body, "error": {k: v for k, v in body["error"].items() if k != "details"}})


async def test_a_replayed_message_accumulates_back_to_itself(aiohttp_client) -> None:
    citation = {"type": "char_location", "cited_text": "Ship on Friday.", "document_index": 0, "document_title": "Notes", "start_char_index": 0, "end_char_index": 15}
    message = {
        "id": "msg_cached", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
        "content": [
            {"type": "thinking", "thinking": "They want the date.", "signature": "sig-abc"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Ship on Friday.", "citations": [citation]},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 90, "output_tokens": 25},
    }
    strict_sdk(Message, message)
    events = message_events(message)
    for event in events:
        strict_sdk(RawMessageStreamEvent, event)
    http = await aiohttp_client(events_app("/v1/messages", events, encode_event))
    client = anthropic.AsyncAnthropic(base_url=str(http.make_url("")).rstrip("/"), api_key="k", max_retries=0)
    async with client.messages.stream(model="m", max_tokens=1, messages=[{"role": "user", "content": "hi"}]) as stream:
        final = await stream.get_final_message()
    await client.close()
    assert final.model_dump(exclude_none=True) == Message.model_validate(message).model_dump(exclude_none=True)


async def test_a_cached_chat_answer_replays_as_the_same_stream_the_upstream_would_send() -> None:
    answer = completion({"content": "Hello!"}, "stop", {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
    events = translate(completion_to_chunks(answer, include_usage=True))
    assert events[-2]["usage"]["output_tokens"] == 2
    rebuilt = to_anthropic_message(answer)
    assert [e["delta"]["text"] for e in events if e["type"] == "content_block_delta"] == ["Hello!"]
    assert rebuilt["content"] == [{"type": "text", "text": "Hello!"}]
