"""The Anthropic emulator, seen the way its users see it: through the official `anthropic` SDK.

The SDK parses every answer into its own models and its `messages.stream()` helper rebuilds the
final message from the events, so these tests prove the emulator speaks the wire format the
real API speaks: JSON messages, the SSE event sequence, tool use, and Anthropic-shaped errors
that the SDK turns into the right exception classes.
"""
from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import anthropic
import httpx2
import pytest

from conftest import eventually
from hookgate.testing.anthropic_emulator import (
    DEFAULT_MODELS,
    REPLY_PREFIX,
    AnthropicEmulator,
    EmulatorSettings,
    SAMPLING_REMOVED_IN,
    Fault,
    reply_for,
    tool_input_for,
)

MODEL = "claude-sonnet-4-6"
MESSAGES = [{"role": "user", "content": "hello there brave world"}]
REPLY = "emulated: hello there brave world"
WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
}
TIME = {"name": "get_time", "description": "Local time", "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}}}
HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}


@pytest.fixture
async def emulator() -> AsyncIterator[AnthropicEmulator]:
    async with AnthropicEmulator().serve() as emu:
        yield emu


@pytest.fixture
async def client(emulator: AnthropicEmulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    sdk = anthropic.AsyncAnthropic(base_url=emulator.base_url, api_key="sk-ant-test", max_retries=0)
    yield sdk
    await sdk.close()


async def create(client: anthropic.AsyncAnthropic, **params):
    return await client.messages.create(**{"model": MODEL, "max_tokens": 256, "messages": MESSAGES, **params})


async def streamed(client: anthropic.AsyncAnthropic, **params):
    """The final message the SDK's stream helper accumulates, and the event types it saw."""
    async with client.messages.stream(**{"model": MODEL, "max_tokens": 256, "messages": MESSAGES, **params}) as stream:
        types = [event.type async for event in stream]
        return await stream.get_final_message(), types


def parse_sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


# ---------------------------------------------------------------------------------------------
# Normal answers
# ---------------------------------------------------------------------------------------------


async def test_json_message_is_deterministic(client: anthropic.AsyncAnthropic) -> None:
    raw = await client.messages.with_raw_response.create(
        model=MODEL, max_tokens=256, system="Be brief.", messages=MESSAGES
    )
    message = await raw.parse()
    assert (message.type, message.role, message.model) == ("message", "assistant", MODEL)
    assert message.id.startswith("msg_")
    assert [(b.type, b.text) for b in message.content] == [("text", REPLY)]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    # Tokens are words: 2 of system + 4 of the user turn; 5 in the reply.
    assert (message.usage.input_tokens, message.usage.output_tokens) == (6, 5)
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (0, 0)
    assert raw.headers["request-id"].startswith("req_")
    assert message._request_id == raw.headers["request-id"]


async def test_stream_helper_rebuilds_the_same_message(emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic) -> None:
    emulator.settings.cache_read_input_tokens = 100
    emulator.settings.cache_creation_input_tokens = 20
    whole = await create(client)
    final, types = await streamed(client)

    assert final.model_dump(exclude={"id"}) == whole.model_dump(exclude={"id"})
    assert final.usage.model_dump(exclude_none=True) == {
        "input_tokens": 4,
        "output_tokens": 5,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20,
        "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 0},
        "service_tier": "standard",
    }
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert types.count("text") == 5  # the helper's per-delta event: one text_delta per word


async def test_stream_piece_chars_cuts_words_across_text_deltas(emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic) -> None:
    emulator.settings.stream_piece_chars = 4
    async with client.messages.stream(model=MODEL, max_tokens=100, messages=MESSAGES) as stream:
        texts = [event.delta.text async for event in stream if event.type == "content_block_delta"]
    assert texts[:3] == ["emul", "ated", ": he"] and "".join(texts) == REPLY


async def test_stream_wire_format_is_anthropics_event_sequence(aiohttp_client) -> None:
    emu = AnthropicEmulator(EmulatorSettings(cache_read_input_tokens=7))
    http = await aiohttp_client(emu.make_app())
    request = {"model": MODEL, "max_tokens": 100, "messages": MESSAGES, "stream": True}
    response = await http.post("/v1/messages", json=request, headers=HEADERS)
    assert response.status == 200
    assert response.content_type == "text/event-stream"
    events = parse_sse(await response.text())

    names = [name for name, _ in events]
    assert names == [
        "message_start", "content_block_start", "ping",
        *["content_block_delta"] * 5,
        "content_block_stop", "message_delta", "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert (start["content"], start["stop_reason"], start["stop_sequence"]) == ([], None, None)
    assert start["usage"]["input_tokens"] == 4 and start["usage"]["cache_read_input_tokens"] == 7
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta") == REPLY
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    # message_delta usage is cumulative, as the live API sends it: repeating the input counts.
    assert delta["usage"] == {"input_tokens": 4, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 7, "output_tokens": 5}


async def test_reply_uses_the_last_user_turn_and_tool_results() -> None:
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "22 degrees"}]},
                {"type": "text", "text": "and so?"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            ],
        },
    ]
    assert reply_for(messages) == REPLY_PREFIX + "22 degrees and so?"
    assert reply_for([{"role": "assistant", "content": "no user"}]) == REPLY_PREFIX


async def test_stop_sequences_cut_the_reply(client: anthropic.AsyncAnthropic) -> None:
    message = await create(client, stop_sequences=["zzz", "brave"])
    assert message.content[0].text == "emulated: hello there "
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "brave")
    final, _ = await streamed(client, stop_sequences=["brave"])
    assert final.content[0].text == "emulated: hello there "
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "brave")


async def test_max_tokens_truncates_the_reply(client: anthropic.AsyncAnthropic) -> None:
    message = await create(client, max_tokens=2)
    assert message.content[0].text == "emulated: hello"
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 2)
    # A stop sequence beyond the cut does not count: max_tokens was reached first.
    final, _ = await streamed(client, max_tokens=3, stop_sequences=["world"])
    assert (final.content[0].text, final.stop_reason, final.stop_sequence) == ("emulated: hello there", "max_tokens", None)


async def test_sampling_parameters_follow_the_api_version(emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic) -> None:
    # The SDK 2.x has no temperature argument and sends anthropic-version 2026-10-21, on which
    # the API rejects any sampling parameter; 2023-06-01 still takes them.
    for name in ("temperature", "top_p", "top_k"):
        with pytest.raises(anthropic.BadRequestError, match=name):
            await create(client, extra_body={name: 1})
    old = await create(client, extra_body={"temperature": 0.2}, extra_headers={"anthropic-version": "2023-06-01"})
    assert old.content[0].text == REPLY
    assert emulator.stats.requests[-1].body["temperature"] == 0.2
    # The current version also takes system messages among the turns.
    inline = await create(client, messages=[{"role": "system", "content": "Be brief."}, *MESSAGES])
    assert (inline.content[0].text, inline.usage.input_tokens) == (REPLY, 6)


async def test_max_tokens_zero_only_warms_the_cache(client: anthropic.AsyncAnthropic) -> None:
    message = await create(client, max_tokens=0)
    assert (message.content, message.stop_reason, message.usage.output_tokens) == ([], "max_tokens", 0)


async def test_models_are_listed(client: anthropic.AsyncAnthropic) -> None:
    assert [m.id async for m in client.models.list()] == list(DEFAULT_MODELS)


# ---------------------------------------------------------------------------------------------
# Tool use
# ---------------------------------------------------------------------------------------------


async def test_a_named_tool_is_called_after_a_short_text(client: anthropic.AsyncAnthropic) -> None:
    ask = [{"role": "user", "content": "please use get_weather for Paris"}]
    message = await create(client, messages=ask, tools=[WEATHER, TIME])
    assert message.stop_reason == "tool_use"
    text, call = message.content
    assert text.text == "emulated: calling get_weather"
    assert (call.type, call.name) == ("tool_use", "get_weather")
    assert call.id.startswith("toolu_")
    assert call.input == {"city": "please use get_weather for Paris", "unit": "celsius"}

    final, types = await streamed(client, messages=ask, tools=[WEATHER, TIME])
    assert final.stop_reason == "tool_use"
    assert final.content[1].input == call.input  # rebuilt from input_json_delta pieces
    assert "input_json" in types


async def test_tool_choice_decides_what_is_called(client: anthropic.AsyncAnthropic) -> None:
    both = [{"role": "user", "content": "use get_weather and get_time"}]
    parallel = await create(client, messages=both, tools=[WEATHER, TIME])
    assert [b.name for b in parallel.content if b.type == "tool_use"] == ["get_weather", "get_time"]
    single = await create(client, messages=both, tools=[WEATHER, TIME], tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert [b.name for b in single.content if b.type == "tool_use"] == ["get_weather"]

    # Forced tool use answers with the call alone, as Claude does (no text before it).
    forced = await create(client, tools=[WEATHER, TIME], tool_choice={"type": "tool", "name": "get_time"})
    assert [(b.type, b.name) for b in forced.content] == [("tool_use", "get_time")]
    assert forced.content[0].input == {"tz": REPLY.removeprefix(REPLY_PREFIX)}
    anything = await create(client, tools=[WEATHER], tool_choice={"type": "any"})
    assert [b.type for b in anything.content] == ["tool_use"] and anything.stop_reason == "tool_use"

    unnamed = await create(client, tools=[WEATHER])
    assert (unnamed.content[0].text, unnamed.stop_reason) == (REPLY, "end_turn")
    refused = await create(client, messages=both, tools=[WEATHER], tool_choice={"type": "none"})
    assert refused.stop_reason == "end_turn"


async def test_a_tool_result_turn_is_answered_from_the_result(client: anthropic.AsyncAnthropic) -> None:
    ask = [{"role": "user", "content": "use get_weather for Paris"}]
    call = (await create(client, messages=ask, tools=[WEATHER])).content[1]
    follow_up = [
        *ask,
        {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"}]},
    ]
    answer = await create(client, messages=follow_up, tools=[WEATHER])
    assert (answer.content[0].text, answer.stop_reason) == ("emulated: sunny, 21 C", "end_turn")


def test_tool_input_follows_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "q": {"type": "string"}, "n": {"type": "integer"}, "x": {"type": ["null", "number"]},
            "ok": {"type": "boolean"}, "tags": {"type": "array"}, "opts": {"type": "object"},
            "mode": {"enum": ["fast", "slow"]}, "any": {},
        },
    }
    assert tool_input_for(schema, "two words") == {
        "q": "two words", "n": 2, "x": 2.0, "ok": True, "tags": [], "opts": {}, "mode": "fast", "any": None,
    }
    assert tool_input_for({**schema, "required": ["n"]}, "a b c") == {"n": 3}
    assert tool_input_for({}, "x") == {}


# ---------------------------------------------------------------------------------------------
# Errors and faults
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "sdk_error", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
async def test_error_status_maps_to_the_sdk_error(
    emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic, status, sdk_error, error_type
) -> None:
    emulator.script(Fault(status=status))
    with pytest.raises(sdk_error) as caught:
        await create(client)
    error = caught.value
    assert error.status_code == status
    body = error.response.json()
    assert body["type"] == "error" and body["request_id"] == error.request_id
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == error_type == error.type


async def test_429_carries_retry_after_and_streaming_calls_get_errors_before_any_event(
    emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emulator.script(Fault(status=429, retry_after=1.5), Fault(status=529))
    with pytest.raises(anthropic.RateLimitError) as caught:
        await create(client)
    assert caught.value.response.headers["retry-after"] == "2"  # whole seconds, as Anthropic sends
    with pytest.raises(anthropic.OverloadedError):
        await streamed(client)


async def test_error_fields_and_details_can_be_chosen(emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic) -> None:
    emulator.script(Fault(status=429, message="spend limit", code="enforced_spend_limit_reached", headers={"x-should-retry": "false"}))
    with pytest.raises(anthropic.RateLimitError) as caught:
        await create(client)
    # The SDK picks its class by error.details.error_code.
    assert type(caught.value) is anthropic.EnforcedSpendLimitReachedError
    assert (caught.value.api_message, caught.value.error_code) == ("spend limit", "enforced_spend_limit_reached")
    assert caught.value.response.headers["x-should-retry"] == "false"


async def test_an_error_event_ends_a_stream_after_the_200(emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic) -> None:
    emulator.script(Fault(stream_error_after=4), Fault(stream_error_after=0, error_type="api_error", message="boom"))
    with pytest.raises(anthropic.APIStatusError) as caught:
        await streamed(client)
    assert caught.value.status_code == 200  # the HTTP status had already gone out
    assert caught.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded (emulated)"}}
    # A non-streaming call gets the same failure as its HTTP status.
    with pytest.raises(anthropic.InternalServerError) as caught:
        await create(client)
    assert (caught.value.status_code, caught.value.api_message) == (500, "boom")


async def test_an_unusable_request_gets_anthropics_400_or_401(client: anthropic.AsyncAnthropic, aiohttp_client) -> None:
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        await client.messages.create(model=MODEL, max_tokens=-1, messages=MESSAGES)
    with pytest.raises(anthropic.BadRequestError, match="at least one message"):
        await client.messages.create(model=MODEL, max_tokens=5, messages=[])

    http = await aiohttp_client(AnthropicEmulator().make_app())
    request = {"model": MODEL, "max_tokens": 5, "messages": MESSAGES}
    no_version = await http.post("/v1/messages", json=request, headers={"x-api-key": "k"})
    assert no_version.status == 400
    assert (await no_version.json())["error"] == {"type": "invalid_request_error", "message": "anthropic-version: header is required"}
    no_key = await http.post("/v1/messages", json=request, headers={"anthropic-version": "2023-06-01"})
    assert no_key.status == 401 and (await no_key.json())["error"]["type"] == "authentication_error"
    not_json = await http.post("/v1/messages", data=b"{nope", headers=HEADERS)
    assert not_json.status == 400


async def test_script_applies_in_order_then_the_standing_fault(emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic) -> None:
    emulator.settings.fault = Fault(status=529)
    emulator.script(Fault(status=500), None)
    assert emulator.scripted_remaining == 2
    with pytest.raises(anthropic.InternalServerError):
        await create(client)
    assert (await create(client)).content[0].text == REPLY
    with pytest.raises(anthropic.OverloadedError):
        await create(client)
    emulator.settings.fault = None
    await create(client)
    assert (emulator.scripted_remaining, emulator.stats.calls) == (0, 4)


async def test_latency_and_chunk_latency_slow_the_answer(emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic) -> None:
    emulator.settings.latency = 0.03
    emulator.script(Fault(delay=0.03, chunk_delay=0.005))
    started = time.monotonic()
    await streamed(client)
    assert time.monotonic() - started >= 0.06 + 10 * 0.005 * 0.9  # 11 events, 10 gaps


async def test_hang_times_out_the_client_and_counts_as_cancelled(emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic) -> None:
    emulator.script(Fault(hang=True))
    with pytest.raises(anthropic.APITimeoutError):
        await create(client, timeout=0.2)
    await eventually(lambda: emulator.stats.cancelled == 1)
    assert emulator.stats.in_flight == 0


async def test_drop_mid_stream_after_n_events(emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic) -> None:
    emulator.script(Fault(drop_after=4), Fault(drop_after=0))
    seen = []
    # The SDK lets its HTTP library's incomplete-read error escape from a stream unwrapped.
    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        async with client.messages.stream(model=MODEL, max_tokens=50, messages=MESSAGES) as stream:
            async for event in stream:
                seen.append(event.type)
    assert seen[:2] == ["message_start", "content_block_start"]  # then ping (hidden) and one delta
    with pytest.raises(anthropic.APIConnectionError):
        await create(client)
    await eventually(lambda: emulator.stats.in_flight == 0)
    assert emulator.stats.cancelled == 0  # the emulator hung up, not the client


async def test_stall_mid_stream_trips_the_read_timeout(emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic) -> None:
    emulator.script(Fault(stall_after=2))
    with pytest.raises((anthropic.APITimeoutError, httpx2.TimeoutException)):
        async with client.messages.stream(model=MODEL, max_tokens=50, messages=MESSAGES, timeout=0.2) as stream:
            async for _ in stream:
                pass
    await eventually(lambda: emulator.stats.cancelled == 1)


async def test_malformed_bodies_are_not_json(emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic) -> None:
    emulator.script(Fault(malformed=True), Fault(malformed=True))
    with pytest.raises(json.JSONDecodeError):
        await create(client)
    with pytest.raises(json.JSONDecodeError):
        await streamed(client)


def test_a_fault_has_at_most_one_outcome() -> None:
    with pytest.raises(ValueError, match="at most one"):
        Fault(status=529, stream_error_after=1)
    with pytest.raises(ValueError, match="need a status"):
        Fault(retry_after=1)
    with pytest.raises(ValueError, match="need a status or stream_error_after"):
        Fault(error_type="api_error")
    with pytest.raises(ValueError, match="400-599"):
        Fault(status=200)
    Fault(stream_error_after=2, error_type="api_error", message="m", delay=0.1)


# ---------------------------------------------------------------------------------------------
# Observability
# ---------------------------------------------------------------------------------------------


async def test_requests_are_recorded_with_headers_and_bodies(emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic) -> None:
    before = time.monotonic()
    await create(client, stop_sequences=["x"])
    [request] = emulator.stats.requests
    assert request.headers["authorization"] == "Bearer sk-ant-test"  # how the SDK 2.x sends the key
    assert request.headers["anthropic-version"] == SAMPLING_REMOVED_IN
    assert request.body == {"model": MODEL, "max_tokens": 256, "messages": MESSAGES, "stop_sequences": ["x"]}
    assert request.received_at >= before


async def test_recording_can_be_turned_off_while_counting_continues() -> None:
    async with AnthropicEmulator(EmulatorSettings(record_requests=False)).serve() as emu:
        async with aiohttp.ClientSession() as http:
            request = {"model": MODEL, "max_tokens": 5, "messages": MESSAGES}
            async with http.post(f"{emu.base_url}/v1/messages", json=request, headers=HEADERS) as response:
                assert response.status == 200
    assert (emu.stats.calls, emu.stats.requests) == (1, [])


async def test_in_flight_and_peak_track_concurrent_calls(emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic) -> None:
    emulator.settings.latency = 0.1
    calls = [asyncio.create_task(create(client)) for _ in range(4)]
    await eventually(lambda: emulator.stats.in_flight == 4)
    await asyncio.gather(*calls)
    assert (emulator.stats.in_flight, emulator.stats.peak_in_flight, emulator.stats.calls) == (0, 4, 4)


async def test_a_client_closing_a_stream_early_counts_as_cancelled(emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic) -> None:
    emulator.settings.chunk_latency = 0.05
    async with client.messages.stream(model=MODEL, max_tokens=50, messages=MESSAGES) as stream:
        async for _ in stream:
            break
    await eventually(lambda: emulator.stats.cancelled == 1)
    assert emulator.stats.in_flight == 0


async def test_reset_clears_counters_and_script(emulator: AnthropicEmulator, client: anthropic.AsyncAnthropic) -> None:
    await create(client)
    emulator.script(Fault(status=500))
    emulator.reset()
    assert (emulator.stats.calls, emulator.stats.requests, emulator.scripted_remaining) == (0, [], 0)
    await create(client)
    assert emulator.stats.calls == 1


async def test_base_url_exists_only_while_serving() -> None:
    emu = AnthropicEmulator()
    async with emu.serve():
        assert emu.base_url.startswith("http://127.0.0.1:")
    with pytest.raises(RuntimeError):
        emu.base_url


async def test_command_line_serves_until_stopped() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "hookgate.testing.anthropic_emulator", "--port", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        banner = await asyncio.to_thread(process.stdout.readline)
        assert f"127.0.0.1:{port}" in banner
        sdk = anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{port}", api_key="sk-ant-test", max_retries=0)
        try:
            answer = await create(sdk)
        finally:
            await sdk.close()
        assert answer.content[0].text == REPLY
    finally:
        process.terminate()
        process.wait(timeout=5)
