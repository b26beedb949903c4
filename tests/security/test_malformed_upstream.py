"""Threat: a broken (or hostile) upstream sends an answer of the wrong shape.

Issue 10 item 4: a chunk with a non-object choice, an integer ``delta.content`` or a mixed-type
``index`` crashed ``assemble_stream`` with a TypeError after the 200 was sent, and a JSON answer
whose ``choices`` is not an array was a 500. Providers now check every answer and chunk
(``hookgate.check_completion`` / ``check_chunk``): the client gets a 502 ``upstream_malformed``
before the stream starts, or an SSE error event and a clean end of stream after; the assembly
itself never raises anything but that UpstreamError (and a tool-call index of a billion
allocates nothing).
"""
from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiohttp import web

from hookgate import UpstreamError, assemble_stream, check_chunk, check_completion

from conftest import pipeline_config

GOOD_CHUNK = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
              "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}]}
END_CHUNK = {**GOOD_CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


def with_choice(choice) -> dict:
    return {**GOOD_CHUNK, "choices": [choice]}


MALFORMED_CHUNKS = {
    "non-object chunk": ["not a chunk"],
    "non-object choice": {**GOOD_CHUNK, "choices": ["nope"]},
    "choices not an array": {**GOOD_CHUNK, "choices": {"0": {}}},
    "integer content": with_choice({"index": 0, "delta": {"content": 5}}),
    "mixed-type index": with_choice({"index": "0", "delta": {"content": "x"}}),
    "boolean index": with_choice({"index": True, "delta": {"content": "x"}}),
    "huge choice index": with_choice({"index": 10**12, "delta": {"content": "x"}}),
    "huge tool-call index": with_choice({"index": 0, "delta": {"tool_calls": [{"index": 10**9, "function": {"arguments": "{"}}]}}),
    "non-string tool arguments": with_choice({"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": {}}}]}}),
    "non-object delta": with_choice({"index": 0, "delta": "hi"}),
    "non-string finish reason": with_choice({"index": 0, "delta": {}, "finish_reason": 1}),
    "non-object usage": {**GOOD_CHUNK, "usage": 7},
}


@pytest.mark.parametrize("name", MALFORMED_CHUNKS)
def test_assembling_a_malformed_chunk_is_an_upstream_error_not_a_type_error(name):
    started = time.perf_counter()
    with pytest.raises(UpstreamError) as raised:
        assemble_stream([GOOD_CHUNK, MALFORMED_CHUNKS[name], END_CHUNK])  # type: ignore[list-item]
    assert raised.value.code == "upstream_malformed" and raised.value.status == 502
    assert time.perf_counter() - started < 0.5  # nothing sized by the index was built
    with pytest.raises(UpstreamError):
        check_chunk(MALFORMED_CHUNKS[name])


def test_well_formed_chunks_and_answers_pass_unchanged():
    assert check_chunk(GOOD_CHUNK) is GOOD_CHUNK
    assert assemble_stream([GOOD_CHUNK, END_CHUNK]).body["choices"][0]["message"]["content"] == "hi"
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [{"id": "t"}]}, "finish_reason": "tool_calls"}]}
    assert check_completion(body) is body


@pytest.mark.parametrize(
    "body",
    [[], {"choices": "x"}, {"choices": ["x"]}, {"choices": [{"message": "x"}]}, {"choices": [{"message": {"content": 1}}]},
     {"choices": [{"index": -1, "message": {}}]}, {"choices": [], "usage": []}],
)
def test_malformed_complete_answers_are_rejected(body):
    with pytest.raises(UpstreamError) as raised:
        check_completion(body, "openai")
    assert raised.value.code == "upstream_malformed"


# ------------------------------------------------------------------ through a real gateway ---


@pytest.fixture
async def broken_upstream(aiohttp_server):
    """An OpenAI-compatible upstream that answers with whatever the test sets."""
    state: dict = {"json": None, "chunks": []}

    async def answer(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response(state["json"])
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in state["chunks"]:
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    server = await aiohttp_server(app)
    state["url"] = str(server.make_url("/v1"))
    return state


async def gateway_on(gateway, upstream):
    return await gateway(pipeline_config(["request_log", "openai"], openai={"base_url": upstream["url"], "api_key": "sk-upstream-secret-123", "models": ["gpt-4o-mini"]}))


REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_a_json_answer_with_non_object_choices_is_502_upstream_malformed(gateway, broken_upstream):
    client = await gateway_on(gateway, broken_upstream)
    for broken in ({"choices": "nope"}, {"choices": [1, 2]}, {"choices": [{"message": {"content": 3}, "finish_reason": "stop"}]}):
        broken_upstream["json"] = broken
        response = await client.post("/v1/chat/completions", json=REQUEST)
        assert response.status == 502
        assert (await response.json())["error"]["code"] == "upstream_malformed"


async def test_a_malformed_first_chunk_is_a_plain_502(gateway, broken_upstream):
    client = await gateway_on(gateway, broken_upstream)
    broken_upstream["chunks"] = [MALFORMED_CHUNKS["integer content"], END_CHUNK]
    response = await client.post("/v1/chat/completions", json={**REQUEST, "stream": True})
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "upstream_malformed"


@pytest.mark.parametrize("name", ["non-object choice", "integer content", "mixed-type index", "huge tool-call index"])
async def test_a_malformed_chunk_mid_stream_ends_it_with_an_error_event_on_the_wire(gateway, broken_upstream, name):
    """Read with a raw socket: one HTTP response, its chunked body ending cleanly after the error
    event, no second status line written inside it."""
    client = await gateway_on(gateway, broken_upstream)
    broken_upstream["chunks"] = [GOOD_CHUNK, MALFORMED_CHUNKS[name], END_CHUNK]
    body = orjson.dumps({**REQUEST, "stream": True})
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
    )
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(-1), timeout=10)  # returns: the response ended
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200") and raw.count(b"HTTP/1.1") == 1
    assert b"upstream_malformed" in raw and raw.rstrip().endswith(b"0")  # the chunked body's last chunk
    assert b"data: [DONE]" in raw
    # and the gateway goes on serving
    broken_upstream["chunks"] = [GOOD_CHUNK, END_CHUNK]
    response = await client.post("/v1/chat/completions", json={**REQUEST, "stream": True})
    assert response.status == 200 and b"[DONE]" in await response.read()
