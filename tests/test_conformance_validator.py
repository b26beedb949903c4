"""The validators the conformance tests rely on, tested themselves: a validator that accepts
everything would make every `assert_conforms` in the suite pass for nothing."""
from __future__ import annotations

import copy
import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from conformance import generate_anthropic_schema
from conformance.anthropic_schema import SCHEMA_PATH, STREAM_EVENTS, anthropic_errors_for, sdk_version
from conformance.openai_schema import errors_for, schema_names, spec_version
from hookgate.testing.anthropic_emulator import AnthropicEmulator, EmulatorSettings, Fault

COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}

CHUNK: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
}


def with_change(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``body`` with the dotted ``path`` set to ``value``."""
    changed = copy.deepcopy(body)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target: Any = changed
    for part in parents:
        target = target[part]
    target[last] = value
    return changed


# ---------------------------------------------------------------------------------------------
# OpenAI
# ---------------------------------------------------------------------------------------------


def test_the_vendored_description_is_spec_2_3_0() -> None:
    assert spec_version() == "2.3.0"
    assert {"CreateChatCompletionResponse", "CreateChatCompletionStreamResponse", "ErrorResponse"} <= schema_names()


def test_a_valid_completion_and_chunk_conform() -> None:
    assert errors_for("CreateChatCompletionResponse", COMPLETION) == []
    assert errors_for("CreateChatCompletionStreamResponse", CHUNK) == []


def test_a_wrong_body_is_rejected_with_the_path_and_reason() -> None:
    assert errors_for("CreateChatCompletionResponse", {"object": "chat.completion"}) == [
        "<body>: 'choices' is a required property",
        "<body>: 'created' is a required property",
        "<body>: 'id' is a required property",
        "<body>: 'model' is a required property",
    ]
    assert errors_for("CreateChatCompletionResponse", with_change(COMPLETION, "created", "yesterday")) == [
        "created: 'yesterday' is not of type 'integer'"
    ]
    assert errors_for("CreateChatCompletionResponse", with_change(COMPLETION, "choices.0.finish_reason", "done")) == [
        "choices.0.finish_reason: 'done' is not one of ['stop', 'length', 'tool_calls', 'content_filter', 'function_call']"
    ]


def test_an_error_body_needs_all_four_fields() -> None:
    good = {"error": {"message": "no", "type": "invalid_request_error", "param": None, "code": None}}
    assert errors_for("ErrorResponse", good) == []
    assert errors_for("ErrorResponse", {"error": {"message": "no", "type": "invalid_request_error"}}) == [
        "error: 'param' is a required property",
        "error: 'code' is a required property",
    ]


def test_nullable_beside_a_ref_accepts_null_and_still_checks_the_object() -> None:
    # The spec: chunk `usage` is {"$ref": CompletionUsage, "nullable": true}; null on every chunk
    # but the last when stream_options.include_usage is on.
    assert errors_for("CreateChatCompletionStreamResponse", {**CHUNK, "usage": None}) == []
    last = {**CHUNK, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
    assert errors_for("CreateChatCompletionStreamResponse", last) == []

    problems = errors_for("CreateChatCompletionStreamResponse", {**last, "usage": {"prompt_tokens": "3"}})
    assert len(problems) == 1
    assert problems[0].startswith("usage: ")
    assert "usage.prompt_tokens: '3' is not of type 'integer'" in problems[0]


def test_nullable_beside_a_type_and_enum_accepts_null_only() -> None:
    # choices[].finish_reason in a chunk: {"type": "string", "enum": [...], "nullable": true}
    assert errors_for("CreateChatCompletionStreamResponse", with_change(CHUNK, "choices.0.finish_reason", None)) == []
    assert errors_for("CreateChatCompletionStreamResponse", with_change(CHUNK, "choices.0.finish_reason", "stop")) == []
    assert errors_for("CreateChatCompletionStreamResponse", with_change(CHUNK, "choices.0.finish_reason", 0)) != []


def test_boolean_exclusive_minimum_is_read_as_openapi_3_0_meant_it() -> None:
    # {"type": "number", "minimum": 0, "exclusiveMinimum": true}: above 0, not at it. Read as
    # 2020-12 literally, `true` would be the bound 1 and reject 0.5.
    assert errors_for("FineTuneSupervisedHyperparameters", {"learning_rate_multiplier": 0.5}) == []
    assert errors_for("FineTuneSupervisedHyperparameters", {"learning_rate_multiplier": 0}) != []


def test_an_unknown_schema_name_is_an_error_not_a_pass() -> None:
    with pytest.raises(KeyError, match="CreateChatCompletionRespons"):
        errors_for("CreateChatCompletionRespons", COMPLETION)


# ---------------------------------------------------------------------------------------------
# Anthropic: the shipped shapes, checked against the emulator's native bodies
# ---------------------------------------------------------------------------------------------

HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
ASK = {"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": [{"role": "user", "content": "use get_weather in Paris"}]}
WEATHER = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def anthropic_emulator() -> AnthropicEmulator:
    """An Anthropic emulator that reports prompt-cache usage (optional fields worth checking)."""
    return AnthropicEmulator(EmulatorSettings(cache_read_input_tokens=3, cache_creation_input_tokens=2))


@pytest.fixture
async def anthropic_http(aiohttp_client, anthropic_emulator: AnthropicEmulator):
    """The emulator's app as a raw HTTP client: the bodies exactly as sent."""
    return await aiohttp_client(anthropic_emulator.make_app())


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, decoded data) of each event in an SSE body."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_the_test_install_pins_the_sdk_the_schema_came_from() -> None:
    # A new anthropic release on PyPI must not change what the suite checks against.
    pins = (Path(__file__).parent.parent / ".ci" / "constraints.txt").read_text().splitlines()
    assert f"anthropic=={sdk_version()}" in pins


def test_the_shipped_schema_is_what_the_installed_sdk_generates() -> None:
    # After an SDK upgrade: python tests/conformance/generate_anthropic_schema.py
    assert sdk_version() == version("anthropic")
    shipped = json.loads(SCHEMA_PATH.read_text())
    assert shipped == generate_anthropic_schema.generate(), "regenerate anthropic-messages.schema.json"


@pytest.mark.parametrize("body", [ASK, {**ASK, "tools": [WEATHER]}], ids=["text", "tool_use"])
async def test_emulator_messages_conform_and_an_unknown_field_does_not(anthropic_http, body) -> None:
    response = await anthropic_http.post("/v1/messages", json=body, headers=HEADERS)
    message = await response.json()
    assert response.status == 200
    assert anthropic_errors_for("Message", message) == []
    assert message["usage"]["cache_read_input_tokens"] == 3  # the optional fields were there to check

    assert anthropic_errors_for("Message", {**message, "finish_reason": "stop"}) == [
        "<body>: Additional properties are not allowed ('finish_reason' was unexpected)"
    ]
    invented = copy.deepcopy(message)
    invented["usage"]["total_tokens"] = 10
    assert anthropic_errors_for("Message", invented) == [
        "usage: Additional properties are not allowed ('total_tokens' was unexpected)"
    ]
    assert anthropic_errors_for("Message", {**message, "role": "user"}) != []


@pytest.mark.parametrize("body", [ASK, {**ASK, "tools": [WEATHER]}], ids=["text", "tool_use"])
async def test_every_emulator_stream_event_conforms_to_its_event_shape(anthropic_http, body) -> None:
    response = await anthropic_http.post("/v1/messages", json={**body, "stream": True}, headers=HEADERS)
    events = sse_events(await response.text())

    assert [name for name, _ in events][:3] == ["message_start", "content_block_start", "ping"]
    for name, data in events:
        assert data["type"] == name
        assert anthropic_errors_for(STREAM_EVENTS[name], data) == [], name
        if name != "ping":
            assert anthropic_errors_for("RawMessageStreamEvent", data) == [], name
    deltas = {data["delta"]["type"] for name, data in events if name == "content_block_delta"}
    assert deltas == ({"text_delta"} if "tools" not in body else {"text_delta", "input_json_delta"})


def test_a_stream_event_with_a_wrong_or_unknown_field_is_rejected() -> None:
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}
    assert anthropic_errors_for("RawContentBlockDeltaEvent", delta) == []
    assert anthropic_errors_for("RawContentBlockDeltaEvent", {**delta, "index": "0"}) == ["index: '0' is not of type 'integer'"]
    assert anthropic_errors_for("RawContentBlockDeltaEvent", {**delta, "delta": {"type": "text_delta", "content": "hi"}}) != []
    assert anthropic_errors_for("PingEvent", {"type": "ping"}) == []
    assert anthropic_errors_for("PingEvent", {"type": "ping", "at": 1}) != []


async def test_emulator_error_bodies_conform_for_every_status(anthropic_http, anthropic_emulator) -> None:
    for status in (400, 401, 402, 403, 404, 413, 429, 500, 504, 529):
        anthropic_emulator.script(Fault(status=status))
        response = await anthropic_http.post("/v1/messages", json=ASK, headers=HEADERS)
        assert response.status == status
        assert anthropic_errors_for("ErrorResponse", await response.json()) == [], status

    anthropic_emulator.script(Fault(status=429, code="enforced_spend_limit_reached"))
    body = await (await anthropic_http.post("/v1/messages", json=ASK, headers=HEADERS)).json()
    assert body["error"]["details"] == {"error_code": "enforced_spend_limit_reached"}
    assert anthropic_errors_for("ErrorResponse", body) == []


async def test_an_in_stream_error_event_conforms(anthropic_http, anthropic_emulator) -> None:
    anthropic_emulator.script(Fault(stream_error_after=2))
    response = await anthropic_http.post("/v1/messages", json={**ASK, "stream": True}, headers=HEADERS)
    (*_, (name, data)) = sse_events(await response.text())
    assert name == "error"
    assert anthropic_errors_for(STREAM_EVENTS[name], data) == []


def test_error_bodies_must_have_a_known_type_and_a_message() -> None:
    good = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}, "request_id": "req_1"}
    assert anthropic_errors_for("ErrorResponse", good) == []
    assert anthropic_errors_for("ErrorResponse", {**good, "error": {"type": "rate_limit_error"}}) != []
    assert anthropic_errors_for("ErrorResponse", {**good, "error": {"type": "slow_down", "message": "x"}}) != []
    # OpenAI's shape is not Anthropic's.
    openai_shaped = {"error": {"message": "no", "type": "invalid_request_error", "param": None, "code": None}}
    assert anthropic_errors_for("ErrorResponse", openai_shaped) != []


def test_count_tokens_answers_only_input_tokens() -> None:
    # The emulator serves no count_tokens; these are the API's documented answer and near misses.
    assert anthropic_errors_for("MessageTokensCount", {"input_tokens": 12}) == []
    assert anthropic_errors_for("MessageTokensCount", {"input_tokens": "12"}) == ["input_tokens: '12' is not of type 'integer'"]
    assert anthropic_errors_for("MessageTokensCount", {"input_tokens": 12, "output_tokens": 0}) != []
    assert anthropic_errors_for("MessageTokensCount", {}) == ["<body>: 'input_tokens' is a required property"]


def test_an_unknown_anthropic_shape_is_an_error_not_a_pass() -> None:
    with pytest.raises(KeyError, match="Mesage"):
        anthropic_errors_for("Mesage", {})
