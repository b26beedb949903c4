"""The OpenAI emulator, seen the way its users see it: through the official `openai` SDK.

Every body and chunk is also checked against OpenAI's published schema, so tests built on the
emulator exercise the same wire format as the real API.
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
import openai
import pytest

from hookgate.testing.openai_emulator import (
    DEFAULT_MODELS,
    REPLY_PREFIX,
    EmulatorSettings,
    Fault,
    OpenAIEmulator,
    count_tokens,
    reply_for,
)

from conftest import eventually
from conformance.openai_schema import errors_for

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello there brave world"},
]
REPLY = "emulated: hello there brave world"


@pytest.fixture
async def client(emulator: OpenAIEmulator) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=0)
    yield sdk
    await sdk.close()


async def collect(stream: openai.AsyncStream[openai.types.chat.ChatCompletionChunk]) -> list[dict]:
    """Chunks exactly as received (`to_dict` leaves out fields the server did not send)."""
    return [chunk.to_dict() async for chunk in stream]


# ---------------------------------------------------------------------------------------------
# Normal answers
# ---------------------------------------------------------------------------------------------


async def test_json_completion_is_deterministic_and_conforms(client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    body = json.loads(raw.text)
    assert errors_for("CreateChatCompletionResponse", body) == []

    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.id.startswith("chatcmpl-")
    assert completion.created > 0
    choice = completion.choices[0]
    assert (choice.message.role, choice.message.content, choice.message.refusal) == ("assistant", REPLY, None)
    assert (choice.finish_reason, choice.logprobs) == ("stop", None)
    # Tokens are words: 2 + 4 in the prompt, 5 in the reply.
    assert completion.usage is not None
    assert completion.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) == {
        "prompt_tokens": 6,
        "completion_tokens": 5,
        "total_tokens": 11,
    }


async def test_stream_sends_role_then_one_chunk_per_word_then_stop(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    chunks = await collect(stream)

    for chunk in chunks:
        assert errors_for("CreateChatCompletionStreamResponse", chunk) == []
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "gpt-4o"
        assert "usage" not in chunk  # only sent when the request asks for it
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    words = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert len(words) == count_tokens(REPLY) == 5
    assert "".join(words) == REPLY
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 6 + ["stop"]
    # Like OpenAI, the finish arrives in its own chunk with an empty delta.
    assert chunks[-1]["choices"][0]["delta"] == {}


async def test_stream_piece_chars_cuts_words_across_chunks_for_chat_and_legacy_completions(emulator: OpenAIEmulator, client: openai.AsyncOpenAI) -> None:
    emulator.settings.stream_piece_chars = 4
    chunks = await collect(await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    texts = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert "".join(texts) == REPLY and texts[:3] == ["emul", "ated", ": he"]
    legacy = [c.choices[0].text async for c in await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="abcdefghij", stream=True) if c.choices]
    assert legacy[:3] == ["emul", "ated", ": ab"] and "".join(legacy) == "emulated: abcdefghij"


async def test_stream_with_include_usage_ends_with_a_usage_chunk(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = await collect(stream)

    for chunk in chunks:
        assert errors_for("CreateChatCompletionStreamResponse", chunk) == []
    *content, last = chunks
    assert last["choices"] == []
    assert last["usage"] == {"prompt_tokens": 6, "completion_tokens": 5, "total_tokens": 11}
    assert all(c["usage"] is None for c in content)  # as OpenAI: null until the last chunk
    assert content[-1]["choices"][0]["finish_reason"] == "stop"


async def test_stream_wire_format_is_sse_ending_in_done(aiohttp_client) -> None:
    http = await aiohttp_client(OpenAIEmulator().make_app())
    response = await http.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert response.status == 200
    assert response.content_type == "text/event-stream"
    text = await response.text()

    assert text.endswith("data: [DONE]\n\n")
    events = text.split("\n\n")[:-1]
    assert all(e.startswith("data: ") and "\n" not in e for e in events)
    payloads = [e.removeprefix("data: ") for e in events]
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert len(chunks) == 1 + 5 + 1 + 1  # role, words, finish, usage
    for chunk in chunks:
        assert errors_for("CreateChatCompletionStreamResponse", chunk) == []


async def test_reply_uses_the_last_user_message_and_text_parts() -> None:
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ignored"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "look at"}, {"type": "image_url", "image_url": {"url": "x"}}],
        },
    ]
    assert reply_for(messages) == REPLY_PREFIX + "look at"
    assert reply_for([{"role": "system", "content": "no user"}]) == REPLY_PREFIX


async def test_models_are_listed(client: openai.AsyncOpenAI) -> None:
    raw = await client.models.with_raw_response.list()
    assert errors_for("ListModelsResponse", json.loads(raw.text)) == []
    assert [m.id async for m in await client.models.list()] == list(DEFAULT_MODELS)


async def test_an_invalid_request_gets_openai_400(client: openai.AsyncOpenAI, aiohttp_client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="m", messages=[])
    assert errors_for("ErrorResponse", caught.value.response.json()) == []

    http = await aiohttp_client(OpenAIEmulator().make_app())
    headers = {"Content-Type": "application/json"}
    response = await http.post("/v1/chat/completions", data=b"not json", headers=headers)
    assert response.status == 400
    assert errors_for("ErrorResponse", await response.json()) == []


# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------


async def test_429_carries_retry_after_headers_and_an_openai_error(
    emulator: OpenAIEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.script(Fault(status=429, retry_after=1.5))
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="m", messages=MESSAGES)

    error = caught.value
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "2"
    assert error.response.headers["retry-after-ms"] == "1500"
    body = error.response.json()
    assert errors_for("ErrorResponse", body) == []
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert error.code == "rate_limit_exceeded"


@pytest.mark.parametrize(
    ("status", "sdk_error", "error_type"),
    [
        (400, openai.BadRequestError, "invalid_request_error"),
        (401, openai.AuthenticationError, "invalid_request_error"),
        (500, openai.InternalServerError, "server_error"),
        (503, openai.InternalServerError, "server_error"),
    ],
)
async def test_error_status_maps_to_the_sdk_error(
    emulator: OpenAIEmulator,
    client: openai.AsyncOpenAI,
    status: int,
    sdk_error: type[openai.APIStatusError],
    error_type: str,
) -> None:
    emulator.script(Fault(status=status))
    with pytest.raises(sdk_error) as caught:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.status_code == status
    body = caught.value.response.json()
    assert errors_for("ErrorResponse", body) == []
    assert body["error"]["type"] == error_type


async def test_error_fields_and_headers_can_be_chosen(
    emulator: OpenAIEmulator, client: openai.AsyncOpenAI
) -> None:
    quota = Fault(
        status=429,
        message="quota gone",
        error_type="insufficient_quota",
        code="insufficient_quota",
        headers={"x-should-retry": "false"},
    )
    emulator.script(quota)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.body == {
        "message": "quota gone",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
    assert caught.value.response.headers["x-should-retry"] == "false"


async def test_a_streaming_request_gets_its_error_before_any_chunk(
    emulator: OpenAIEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.script(Fault(status=503))
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)


async def test_script_applies_in_order_then_the_default(
    emulator: OpenAIEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.script(Fault(status=429, retry_after=1), Fault(status=500), None)
    assert emulator.scripted_remaining == 3

    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="m", messages=MESSAGES)
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="m", messages=MESSAGES)
    for _ in range(2):  # the scripted None, then the default
        answer = await client.chat.completions.create(model="m", messages=MESSAGES)
        assert answer.choices[0].message.content == REPLY
    assert emulator.scripted_remaining == 0
    assert emulator.stats.calls == 4


async def test_sdk_retries_follow_retry_after_ms(emulator: OpenAIEmulator) -> None:
    emulator.script(Fault(status=429, retry_after=0.05), Fault(status=500, retry_after=0.05))
    retrying = openai.AsyncOpenAI(base_url=emulator.base_url, api_key="sk-test", max_retries=2)
    try:
        started = time.monotonic()
        answer = await retrying.chat.completions.create(model="m", messages=MESSAGES)
        elapsed = time.monotonic() - started
    finally:
        await retrying.close()
    assert answer.choices[0].message.content == REPLY
    assert emulator.stats.calls == 3
    assert 0.1 <= elapsed < 1.0  # paced by the 50 ms headers; the SDK's own backoff would take > 1.1 s


async def test_a_standing_fault_applies_to_unscripted_calls(
    emulator: OpenAIEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.settings.fault = Fault(status=503)
    emulator.script(None)  # one clean call despite the outage
    await client.chat.completions.create(model="m", messages=MESSAGES)
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="m", messages=MESSAGES)
    emulator.settings.fault = None
    await client.chat.completions.create(model="m", messages=MESSAGES)


async def test_latency_delays_the_response_and_fault_delay_adds_to_it(
    emulator: OpenAIEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.settings.latency = 0.05
    emulator.script(Fault(delay=0.05))
    started = time.monotonic()
    await client.chat.completions.create(model="m", messages=MESSAGES)
    assert time.monotonic() - started >= 0.1


async def test_chunk_latency_spaces_out_stream_chunks(
    emulator: OpenAIEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.settings.chunk_latency = 0.01
    emulator.script(Fault(chunk_delay=0.01))
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    arrivals = []
    async for _ in stream:
        arrivals.append(time.monotonic())
    assert len(arrivals) == 7
    assert arrivals[-1] - arrivals[0] >= 6 * 0.02 * 0.9  # 6 gaps of 20 ms, minus timer slack


async def test_hang_times_out_the_client_and_counts_as_cancelled(
    emulator: OpenAIEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.script(Fault(hang=True))
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(model="m", messages=MESSAGES, timeout=0.2)
    await eventually(lambda: emulator.stats.cancelled == 1)
    assert emulator.stats.in_flight == 0


async def test_drop_mid_stream_after_n_chunks(emulator: OpenAIEmulator, client: openai.AsyncOpenAI) -> None:
    emulator.script(Fault(drop_after=3))
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    received = []
    # The SDK wraps httpx's "incomplete chunked read" as a connection error.
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 3
    await eventually(lambda: emulator.stats.in_flight == 0)
    assert emulator.stats.cancelled == 0  # the emulator hung up, not the client


async def test_drop_on_a_json_call_closes_without_answering(
    emulator: OpenAIEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.script(Fault(drop_after=0))
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="m", messages=MESSAGES)


async def test_stall_mid_stream_trips_the_read_timeout(
    emulator: OpenAIEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.script(Fault(stall_after=2))
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True, timeout=0.2)
    received = []
    with pytest.raises(openai.APITimeoutError):
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 2
    await stream.close()
    await eventually(lambda: emulator.stats.cancelled == 1)


async def test_malformed_bodies_are_not_json(emulator: OpenAIEmulator, client: openai.AsyncOpenAI) -> None:
    # The SDK lets the decoder's error escape unwrapped, for JSON bodies and stream events alike.
    emulator.script(Fault(malformed=True), Fault(malformed=True))
    with pytest.raises(json.JSONDecodeError):
        await client.chat.completions.create(model="m", messages=MESSAGES)
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    with pytest.raises(json.JSONDecodeError):
        await collect(stream)


def test_a_fault_has_at_most_one_outcome() -> None:
    with pytest.raises(ValueError, match="at most one"):
        Fault(status=500, hang=True)
    with pytest.raises(ValueError, match="need a status"):
        Fault(retry_after=1)
    with pytest.raises(ValueError, match="400-599"):
        Fault(status=200)
    Fault(delay=0.1, drop_after=2)  # delays combine with an outcome


# ---------------------------------------------------------------------------------------------
# Observability
# ---------------------------------------------------------------------------------------------


async def test_requests_are_recorded_with_headers_and_bodies(
    emulator: OpenAIEmulator, client: openai.AsyncOpenAI
) -> None:
    await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, temperature=0)
    [request] = emulator.stats.requests
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body == {"model": "gpt-4o", "messages": MESSAGES, "temperature": 0}


async def test_recording_can_be_turned_off_while_counting_continues() -> None:
    async with OpenAIEmulator(EmulatorSettings(record_requests=False)).serve() as emu:
        async with aiohttp.ClientSession() as http:
            request = {"model": "m", "messages": MESSAGES}
            async with http.post(f"{emu.base_url}/chat/completions", json=request) as response:
                assert response.status == 200
    assert (emu.stats.calls, emu.stats.requests) == (1, [])


async def test_in_flight_and_peak_track_concurrent_calls(
    emulator: OpenAIEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.settings.latency = 0.1
    create = client.chat.completions.create
    calls = [asyncio.create_task(create(model="m", messages=MESSAGES)) for _ in range(5)]
    await eventually(lambda: emulator.stats.in_flight == 5)
    await asyncio.gather(*calls)
    assert (emulator.stats.in_flight, emulator.stats.peak_in_flight, emulator.stats.calls) == (0, 5, 5)


async def test_a_client_closing_a_stream_early_counts_as_cancelled(
    emulator: OpenAIEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.settings.chunk_latency = 0.05
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    async for _ in stream:
        break
    await stream.close()
    await eventually(lambda: emulator.stats.cancelled == 1)
    assert emulator.stats.in_flight == 0


async def test_reset_clears_counters_and_script(emulator: OpenAIEmulator, client: openai.AsyncOpenAI) -> None:
    await client.chat.completions.create(model="m", messages=MESSAGES)
    emulator.script(Fault(status=500))
    emulator.reset()
    assert (emulator.stats.calls, emulator.stats.requests, emulator.scripted_remaining) == (0, [], 0)
    await client.chat.completions.create(model="m", messages=MESSAGES)
    assert emulator.stats.calls == 1


async def test_base_url_exists_only_while_serving() -> None:
    emu = OpenAIEmulator()
    async with emu.serve():
        assert emu.base_url.startswith("http://127.0.0.1:")
        assert emu.base_url.endswith("/v1")
    with pytest.raises(RuntimeError):
        emu.base_url


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


async def test_command_line_serves_until_stopped() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "hookgate.testing.openai_emulator", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = await asyncio.to_thread(process.stdout.readline)
        assert f"127.0.0.1:{port}" in banner
        sdk = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", max_retries=0)
        try:
            answer = await sdk.chat.completions.create(model="m", messages=MESSAGES)
        finally:
            await sdk.close()
        assert answer.choices[0].message.content == REPLY
    finally:
        process.terminate()
        process.wait(timeout=5)
