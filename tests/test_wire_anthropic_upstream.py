"""Calling an Anthropic upstream for a chat client (hookgate.wire.anthropic): requests, answers,
streams and errors.

Pure functions are tested on hand-written dicts; the round trips send the translated request to
the Anthropic emulator (which checks it as the API would) and translate its answers back,
JSON and streamed, checking every body and chunk against OpenAI's published schema and that a
streamed answer assembles to exactly the JSON one.
"""
from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import assert_conforms
from hookgate import InvalidRequest, RateLimited, ServiceUnavailable, UpstreamError, assemble_stream
from hookgate.wire.anthropic import (
    AnthropicStreamTranslator,
    error_from_anthropic,
    finish_reason,
    from_anthropic_message,
    openai_usage,
    to_anthropic_request,
)
from hookgate.testing.anthropic_emulator import AnthropicEmulator, EmulatorSettings
from hookgate.upstream import is_retriable

PNG = "iVBORw0KGgoAAAANSUhEUg=="
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
HEADERS = {"Authorization": "Bearer sk-ant-test", "anthropic-version": "2026-10-21"}


def translate(body: dict[str, Any], **options: Any) -> dict[str, Any]:
    return to_anthropic_request({"model": "claude-sonnet-4-6", **body}, default_max_tokens=4096, **options)


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-6", "messages": list(messages), **extra}


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------


def test_system_and_developer_messages_become_the_system_prompt() -> None:
    one = translate({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]})
    assert one == {"model": "claude-sonnet-4-6", "max_tokens": 4096, "system": "Be brief.", "messages": [{"role": "user", "content": "hi"}]}

    several = translate({"messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}]},
        {"role": "user", "content": "hi"},
        {"role": "developer", "content": "Answer in French."},
    ]})
    assert several["system"] == [{"type": "text", "text": t} for t in ("Be brief.", "Be kind.", "Answer in French.")]
    assert several["messages"] == [{"role": "user", "content": "hi"}]


def test_consecutive_turns_of_one_role_are_merged() -> None:
    request = translate({"messages": [
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "three"},
        {"role": "assistant", "content": ""},  # empty: dropped, Anthropic rejects empty blocks
        {"role": "user", "content": "four"},
    ]})
    assert request["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "three"},
        {"role": "user", "content": "four"},
    ]


def test_images_become_base64_or_url_sources() -> None:
    request = translate({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "compare"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]}]})
    assert request["messages"][0]["content"] == [
        {"type": "text", "text": "compare"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    ("url", "problem"),
    [("data:image/bmp;base64,AAAA", "not image/bmp"), ("data:image/png,raw", "base64"), ("ftp://x/a.png", "http")],
)
def test_unusable_images_are_a_400_naming_the_part(url: str, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem) as caught:
        translate({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]})
    assert caught.value.param == "messages[0].content[0].image_url.url"


def test_max_tokens_stop_and_user() -> None:
    assert translate(chat({"role": "user", "content": "x"}))["max_tokens"] == 4096
    assert translate(chat({"role": "user", "content": "x"}, max_tokens=50))["max_tokens"] == 50
    assert translate(chat({"role": "user", "content": "x"}, max_tokens=50, max_completion_tokens=70))["max_tokens"] == 70
    assert translate(chat({"role": "user", "content": "x"}, stop="END"))["stop_sequences"] == ["END"]
    assert translate(chat({"role": "user", "content": "x"}, stop=["a", "b"]))["stop_sequences"] == ["a", "b"]
    assert translate(chat({"role": "user", "content": "x"}, user="u-1"))["metadata"] == {"user_id": "u-1"}
    assert translate(chat({"role": "user", "content": "x"}, stream=True))["stream"] is True
    assert translate(chat({"role": "user", "content": "x"}), model="claude-upstream-id")["model"] == "claude-upstream-id"


def test_sampling_parameters_are_dropped_unless_asked_for() -> None:
    body = chat({"role": "user", "content": "x"}, temperature=0.2, top_p=0.9, seed=7, presence_penalty=1)
    dropped = translate(body)
    assert not {"temperature", "top_p", "seed", "presence_penalty"} & dropped.keys()
    sent = translate(body, sampling="send")
    assert (sent["temperature"], sent["top_p"]) == (0.2, 0.9)


def test_tools_translate_to_input_schemas() -> None:
    bare = {"type": "function", "function": {"name": "now"}}
    request = translate(chat({"role": "user", "content": "x"}, tools=[WEATHER, bare]))
    assert request["tools"] == [
        {"name": "get_weather", "description": "Weather in a city", "input_schema": WEATHER["function"]["parameters"]},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in request  # auto is Anthropic's default too


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, None),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: dict | None) -> None:
    extra = {"tool_choice": choice} if parallel is None else {"tool_choice": choice, "parallel_tool_calls": parallel}
    request = translate(chat({"role": "user", "content": "x"}, tools=[WEATHER], **extra))
    assert request.get("tool_choice") == expected


def test_tool_calls_and_results_make_tool_use_and_tool_result_turns() -> None:
    request = translate({"messages": [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rain"}]},
        {"role": "user", "content": "so?"},
    ]})
    assert request["messages"] == [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "rain"}]},
            {"type": "text", "text": "so?"},
        ]},
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat({"role": "user", "content": "x"}, n=2), "n"),
        (chat({"role": "user", "content": "x"}, logprobs=True), "logprobs"),
        (chat({"role": "user", "content": "x"}, response_format={"type": "json_object"}), "response_format"),
        (chat({"role": "user", "content": "x"}, tools=[{"type": "custom", "custom": {"name": "g"}}]), "tools[0].type"),
        (chat({"role": "system", "content": "only a system prompt"}), "messages"),
        (chat({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}), "messages[0].content[0].type"),
        (
            chat({"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1"}}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
)
def test_what_anthropic_cannot_do_is_a_400_naming_the_parameter(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_anthropic_request(body, default_max_tokens=100)
    assert caught.value.param == param


def test_a_json_schema_response_format_becomes_an_output_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    request = translate(chat({"role": "user", "content": "x"}, response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}))
    assert request["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "output_config" not in translate(chat({"role": "user", "content": "x"}, response_format={"type": "text"}))


# ---------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------

USAGE = {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5, "output_tokens": 7}


def message(*content: dict[str, Any], stop_reason: str = "end_turn", usage: dict | None = None) -> dict[str, Any]:
    return {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6", "content": list(content),
        "stop_reason": stop_reason, "stop_sequence": None, "usage": usage or USAGE,
    }


def test_a_text_message_becomes_a_chat_completion_with_cache_usage() -> None:
    body = from_anthropic_message(message({"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}), created=123)
    assert_conforms("CreateChatCompletionResponse", body)
    assert body == {
        "id": "msg_1", "object": "chat.completion", "created": 123, "model": "claude-sonnet-4-6",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there", "refusal": None}, "finish_reason": "stop", "logprobs": None}],
        # Anthropic's input_tokens leaves out cached tokens; OpenAI's prompt_tokens counts them.
        "usage": {"prompt_tokens": 115, "completion_tokens": 7, "total_tokens": 122, "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 5}},
    }
    assert from_anthropic_message(message({"type": "text", "text": "x"}), created=1, model="public-name")["model"] == "public-name"


def test_tool_use_blocks_become_tool_calls() -> None:
    body = from_anthropic_message(
        message(
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
            stop_reason="tool_use",
        ),
        created=1,
    )
    assert_conforms("CreateChatCompletionResponse", body)
    reply = body["choices"][0]["message"]
    assert reply["content"] is None and body["choices"][0]["finish_reason"] == "tool_calls"
    assert reply["tool_calls"] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "toolu_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
     ("refusal", "content_filter"), ("model_context_window_exceeded", "length"), ("pause_turn", "stop"), (None, "stop"), ("new_reason", "stop")],
)
def test_stop_reasons_map_to_finish_reasons(stop_reason: str | None, expected: str) -> None:
    assert finish_reason(stop_reason) == expected


def test_thinking_is_not_shown_but_counted() -> None:
    usage = {"input_tokens": 3, "output_tokens": 40, "output_tokens_details": {"thinking_tokens": 30}}
    body = from_anthropic_message(
        message({"type": "thinking", "thinking": "hmm", "signature": "s"}, {"type": "text", "text": "42"}, usage=usage), created=1
    )
    assert_conforms("CreateChatCompletionResponse", body)
    assert body["choices"][0]["message"]["content"] == "42"
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 30}
    assert openai_usage({"input_tokens": 3, "output_tokens": 1})["prompt_tokens_details"] == {"cached_tokens": 0}


def test_a_body_that_is_not_a_message_is_a_502() -> None:
    for broken in ({"type": "message"}, {"content": "text"}, []):
        with pytest.raises(UpstreamError) as caught:
            from_anthropic_message(broken, created=1)  # type: ignore[arg-type]
        assert (caught.value.status, caught.value.code) == (502, "upstream_malformed")


# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------

START = {"type": "message_start", "message": {**message(usage={"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5, "output_tokens": 1}), "content": [], "stop_reason": None}}


def feed_all(translator: AnthropicStreamTranslator, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    chunks = []
    for event in events:
        chunks.extend(translator.feed(event["type"], event))
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)
    return chunks


def text_events(*pieces: str, stop_reason: str = "end_turn", final_usage: dict | None = None) -> list[dict[str, Any]]:
    return [
        START,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}} for p in pieces),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": final_usage or {"output_tokens": 7}},
        {"type": "message_stop"},
    ]


def test_a_text_stream_sends_role_deltas_finish_and_usage() -> None:
    chunks = feed_all(AnthropicStreamTranslator(created=5, include_usage=True), text_events("Hello", " there"))
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas == [{"role": "assistant", "content": "", "refusal": None}, {"content": "Hello"}, {"content": " there"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, None, "stop"]
    assert all(c["id"] == "msg_1" and c["created"] == 5 and c["model"] == "claude-sonnet-4-6" for c in chunks)
    assert all(c["usage"] is None for c in chunks[:-1])  # as OpenAI: null until the last chunk
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 115, "completion_tokens": 7, "total_tokens": 122, "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 5}}


@pytest.mark.parametrize(
    "final_usage",
    [
        {"output_tokens": 7},  # the classic message_delta: output only
        {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5, "output_tokens": 7},  # cumulative
    ],
)
def test_stream_usage_is_not_counted_twice(final_usage: dict) -> None:
    translator = AnthropicStreamTranslator(created=5, include_usage=True)
    chunks = feed_all(translator, text_events("x", final_usage=final_usage))
    assert chunks[-1]["usage"]["prompt_tokens"] == 115 and chunks[-1]["usage"]["completion_tokens"] == 7
    assert translator.usage == chunks[-1]["usage"]


def test_without_include_usage_no_usage_is_sent_but_it_is_known() -> None:
    translator = AnthropicStreamTranslator(created=5)
    chunks = feed_all(translator, text_events("x"))
    assert all("usage" not in c for c in chunks) and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert translator.usage is not None and translator.usage["total_tokens"] == 122
    assert (translator.finished, translator.finish_reason) == (True, "stop")


def test_a_tool_use_stream_sends_tool_call_deltas() -> None:
    events = [
        START,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"city": "Pa'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": 'ris"}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 20}},
        {"type": "message_stop"},
    ]
    chunks = feed_all(AnthropicStreamTranslator(created=5), events)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert calls == [
        {"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"city": "Pa'}},  # the empty first piece sends nothing
        {"index": 0, "function": {"arguments": 'ris"}'}},
        {"index": 1, "id": "toolu_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        {"index": 1, "function": {"arguments": "{}"}},
    ]
    assembled = assemble_stream(chunks).body["choices"][0]
    assert assembled["finish_reason"] == "tool_calls"
    assert assembled["message"]["content"] == "Checking."
    assert [json.loads(c["function"]["arguments"]) for c in assembled["message"]["tool_calls"]] == [{"city": "Paris"}, {}]


def test_an_answer_opening_with_a_tool_call_has_null_content() -> None:
    translator = AnthropicStreamTranslator(created=5)
    assert translator.feed("message_start", START) == []  # nothing until there is content
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}
    [first] = translator.feed("content_block_start", block)
    assert_conforms("CreateChatCompletionStreamResponse", first)
    assert first["choices"][0]["delta"] == {
        "role": "assistant", "content": None,
        "tool_calls": [{"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": ""}}],
    }


def test_thinking_deltas_and_unknown_events_send_nothing() -> None:
    translator = AnthropicStreamTranslator(created=5)
    translator.feed("message_start", START)
    [role] = translator.feed("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}})
    assert role["choices"][0]["delta"]["role"] == "assistant"
    assert translator.feed("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}}) == []
    assert translator.feed("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}}) == []
    assert translator.feed("brand_new_event", {"type": "brand_new_event"}) == []
    assert translator.feed(None, {"type": "ping"}) == []
    # A stream that ends without a stop reason still ends with a finish chunk.
    [finish] = translator.feed("message_stop", {"type": "message_stop"})
    assert finish["choices"][0]["finish_reason"] == "stop"
    # One without any content block still starts with the role chunk.
    empty = AnthropicStreamTranslator(created=5)
    empty.feed("message_start", START)
    chunks = empty.feed("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 0}})
    assert [c["choices"][0]["delta"].get("role") for c in chunks] == ["assistant", None]


@pytest.mark.parametrize(
    ("error_type", "error_class", "status"),
    [("overloaded_error", ServiceUnavailable, 503), ("rate_limit_error", RateLimited, 429), ("api_error", UpstreamError, 502)],
)
def test_an_error_event_raises_the_mapped_error(error_type: str, error_class: type, status: int) -> None:
    translator = AnthropicStreamTranslator(created=5)
    translator.feed("message_start", START)
    with pytest.raises(error_class) as caught:
        translator.feed("error", {"type": "error", "error": {"type": error_type, "message": "Overloaded"}})
    assert caught.value.status == status
    assert is_retriable(caught.value)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def anthropic_error(error_type: str, message: str = "m", code: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if code:
        error["details"] = {"error_code": code}
    return {"type": "error", "error": error, "request_id": "req_1"}


def test_http_errors_go_through_the_shared_table() -> None:
    overloaded = error_from_anthropic("anthropic", 529, anthropic_error("overloaded_error"), {"retry-after": "4"})
    assert (type(overloaded), overloaded.status, overloaded.upstream_status, overloaded.headers) == (ServiceUnavailable, 503, 529, {"retry-after": "4"})
    limited = error_from_anthropic("anthropic", 429, anthropic_error("rate_limit_error", "slow down"), {"retry-after": "7"})
    assert (limited.status, limited.message, limited.headers["retry-after"], limited.code) == (429, "slow down", "7", "rate_limit_exceeded")
    refused = error_from_anthropic("anthropic", 401, anthropic_error("authentication_error", "invalid x-api-key"))
    assert (refused.status, refused.code) == (502, "upstream_auth_failed")
    bad = error_from_anthropic("anthropic", 400, anthropic_error("invalid_request_error", "messages.0: bad"))
    assert (bad.status, bad.type, bad.message) == (400, "invalid_request_error", "messages.0: bad")
    assert error_from_anthropic("anthropic", 500, "not json").status == 502


def test_a_spend_limit_is_insufficient_quota_and_not_retried() -> None:
    spent = error_from_anthropic("anthropic", 429, anthropic_error("rate_limit_error", code="enforced_spend_limit_reached"))
    assert (spent.status, spent.code) == (429, "insufficient_quota")
    assert not is_retriable(spent)


# ---------------------------------------------------------------------------------------------
# Round trips through the emulator: JSON and streamed answers agree
# ---------------------------------------------------------------------------------------------


def parse_sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields["event"], json.loads(fields["data"])))
    return events


ROUND_TRIPS = {
    "plain": chat({"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello brave world"}, temperature=0.3),
    "stop": chat({"role": "user", "content": "one two three four"}, stop=["three"]),
    "max_tokens": chat({"role": "user", "content": "one two three four"}, max_tokens=2),
    "image": chat({"role": "user", "content": [
        {"type": "text", "text": "describe"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]}),
    "tools": chat({"role": "user", "content": "call get_weather please"}, tools=[WEATHER]),
    "forced_tool": chat({"role": "user", "content": "Paris"}, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}),
    "tool_results": chat(
        {"role": "user", "content": "call get_weather please"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "toolu_x", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_x", "content": "sunny and warm"},
        tools=[WEATHER],
    ),
}


@pytest.mark.parametrize("case", list(ROUND_TRIPS))
async def test_round_trip_through_the_emulator(case: str, aiohttp_client) -> None:
    emulator = AnthropicEmulator(EmulatorSettings(cache_read_input_tokens=50, cache_creation_input_tokens=3))
    http = await aiohttp_client(emulator.make_app())
    body = ROUND_TRIPS[case]
    request = to_anthropic_request(body, default_max_tokens=1024)

    response = await http.post("/v1/messages", json=request, headers=HEADERS)
    assert response.status == 200, await response.text()  # the emulator accepted the translation
    completion = from_anthropic_message(await response.json(), created=1, model=body["model"])
    assert_conforms("CreateChatCompletionResponse", completion)

    response = await http.post("/v1/messages", json={**request, "stream": True}, headers=HEADERS)
    translator = AnthropicStreamTranslator(created=1, include_usage=True, model=body["model"])
    chunks = [chunk for event, data in parse_sse(await response.text()) for chunk in translator.feed(event, data)]
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)
    streamed = assemble_stream(chunks).body
    assert translator.finished

    for answer in (completion, streamed):
        answer.pop("id")
        for call in answer["choices"][0]["message"].get("tool_calls") or ():
            call.pop("id")
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    assert streamed == completion
    usage = completion["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 50, "cache_write_tokens": 3}
    assert usage["prompt_tokens"] > 53  # the uncached words, plus 50 read from and 3 written to the cache
    expected_finish = {"max_tokens": "length", "tools": "tool_calls", "forced_tool": "tool_calls"}.get(case, "stop")
    assert completion["choices"][0]["finish_reason"] == expected_finish
    if case == "plain":
        # 2 + 3 words of prompt; temperature was dropped (the emulator would have said 400).
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (5 + 53, 4)
        assert "temperature" not in emulator.stats.requests[0].body
    if case == "stop":
        assert completion["choices"][0]["message"]["content"] == "emulated: one two "
    if case == "tool_results":
        assert completion["choices"][0]["message"]["content"] == "emulated: sunny and warm"
    if case == "forced_tool":
        assert completion["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
