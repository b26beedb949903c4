"""A pass-through stream reaches the client as the upstream wrote it, one write per upstream read
(hookgate.sse.SSERelay), while the chain still sees every chunk: what a middleware changes, drops
or adds reaches the client, usage and finish reasons are read on the way, and a stream that
breaks mid-read still delivers the chunks before the break."""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import orjson
import pytest
from aiohttp import web
from conftest import UPSTREAM_TRANSPORTS, pipeline_config
from hookgate import CompletionStream, hookimpl
from hookgate.sse import SSERelay
from test_transports import raw_upstream

USER = [{"role": "user", "content": "relay this"}]
ASKED = {"model": "gpt-4o-mini", "messages": USER, "stream": True}
# Spaces after the colons: what the upstream wrote, which re-serialising each chunk would not keep.
ROLE = b'{"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}'
HELLO = b'{"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [{"index": 0, "delta": {"content": "hello "}, "finish_reason": null}]}'
WORLD = b'{"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [{"index": 0, "delta": {"content": "world"}, "finish_reason": "stop"}]}'
USAGE = b'{"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}'
DONE = b"data: [DONE]\n\n"


def sse(*events: bytes) -> bytes:
    return b"".join(b"data: " + event + b"\n\n" for event in events)


async def streamed(gateway: Any, aiohttp_server: Any, reads: list[bytes], transport: str = "http", *, pipeline: tuple[str, ...] = (),
                   local: dict[str, Any] | None = None, body: dict[str, Any] | None = None, **sections: Any) -> tuple[Any, bytes]:  # fmt: skip
    server = await aiohttp_server(raw_upstream(b"", chunks=reads))  # one write per read
    openai = {"base_url": str(server.make_url("/v1")), "api_key": "sk-upstream", "models": ["gpt-4o-mini"], "transport": transport}
    client = await gateway(pipeline_config([*pipeline, "openai"], **sections, openai=openai), local=local)
    response = await client.post("/v1/chat/completions", json=body or ASKED)
    return response, await response.read()


def data_of(body: bytes) -> list[Any]:
    return [orjson.loads(block[6:]) if block != b"data: [DONE]" else "[DONE]" for block in body.split(b"\n\n") if block]


@pytest.mark.parametrize("transport", UPSTREAM_TRANSPORTS)
async def test_the_client_gets_the_upstreams_own_bytes_read_by_read(gateway, aiohttp_server, transport):
    reads = [sse(ROLE, HELLO), b"data: " + WORLD[:40], WORLD[40:] + b"\n\n" + DONE]  # an event split between two reads
    response, body = await streamed(gateway, aiohttp_server, reads, transport)
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    assert body == sse(ROLE, HELLO, WORLD) + DONE


async def test_usage_and_finish_reason_are_read_from_the_relayed_events(gateway, aiohttp_server):
    server = await aiohttp_server(raw_upstream(b"", chunks=[sse(ROLE, HELLO, WORLD, USAGE) + DONE]))
    openai = {"base_url": str(server.make_url("/v1")), "api_key": "sk-upstream", "models": ["gpt-4o-mini"]}
    client = await gateway(pipeline_config(["memory_cache", "openai"], openai=openai))
    first = await client.post("/v1/chat/completions", json={**ASKED, "stream_options": {"include_usage": True}})
    assert await first.read() == sse(ROLE, HELLO, WORLD, USAGE) + DONE
    again = await client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": USER})
    answer = await again.json()
    assert again.headers["x-hookgate-cache"] == "HIT"
    assert answer["choices"][0]["message"]["content"] == "hello world"
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


async def test_a_usage_chunk_the_client_did_not_ask_for_is_not_relayed(gateway, aiohttp_server):
    """token_counter asks the upstream for usage and hides it from a client that did not ask:
    the relay gives way to the chain's chunks."""
    response, body = await streamed(gateway, aiohttp_server, [sse(ROLE, HELLO, WORLD, USAGE) + DONE], pipeline=("token_counter",))
    assert response.status == 200
    events = data_of(body)
    assert events[-1] == "[DONE]"
    assert [event["choices"][0]["delta"].get("content") for event in events[:-1]] == ["", "hello ", "world"]
    assert not any("usage" in event for event in events[:-1])


async def test_the_usage_chunk_is_relayed_when_the_client_asked_for_it(gateway, aiohttp_server):
    response, body = await streamed(
        gateway, aiohttp_server, [sse(ROLE, HELLO), sse(WORLD, USAGE) + DONE], pipeline=("token_counter",),
        body={**ASKED, "stream_options": {"include_usage": True}},
    )
    assert body == sse(ROLE, HELLO, WORLD, USAGE) + DONE


def rewriting(rewrite: Any, *, batched: bool = False) -> type:
    """A middleware plugin that passes every streamed chunk through ``rewrite(chunk) -> chunk``;
    with ``batched``, it watches the stream batch by batch (``CompletionStream.batches``) and
    passes each batch through ``rewrite(batch) -> batch``."""

    class Rewriting:
        def __init__(self, config: Any) -> None:
            pass

        @hookimpl
        async def call_provider(self, ctx, call_next):
            response = await call_next(ctx)
            if not isinstance(response, CompletionStream):
                return response

            async def rewritten() -> AsyncIterator[Any]:
                async for item in (response.batches() if batched else response):
                    yield rewrite(item)

            make = CompletionStream.of_batches if batched else CompletionStream
            return make(rewritten(), close=response.aclose, first_chunk_received=response.first_chunk_received)

    return Rewriting


def shouted_copy(chunk: dict[str, Any]) -> dict[str, Any]:
    """Every chunk's text upper-cased, as new dicts."""
    choices = [{**c, "delta": {**c["delta"], "content": (c["delta"].get("content") or "").upper()}} for c in chunk["choices"]]
    return {**chunk, "choices": choices}


def shouted_in_place(chunk: dict[str, Any]) -> dict[str, Any]:
    """The same, made by editing the provider's own dict, nested fields included."""
    for choice in chunk["choices"]:
        choice["delta"]["content"] = (choice["delta"].get("content") or "").upper()
    return chunk


Shouting = rewriting(shouted_copy)
ShoutingInPlace = rewriting(shouted_in_place)


async def test_what_a_middleware_changes_reaches_the_client(gateway, aiohttp_server):
    response, body = await streamed(gateway, aiohttp_server, [sse(ROLE, HELLO, WORLD) + DONE], pipeline=("shouting",), local={"shouting": Shouting})
    assert response.status == 200
    assert [event["choices"][0]["delta"]["content"] for event in data_of(body)[:-1]] == ["", "HELLO ", "WORLD"]


@pytest.mark.parametrize("transport", UPSTREAM_TRANSPORTS)
async def test_a_chunk_edited_in_place_reaches_the_client_edited(gateway, aiohttp_server, transport):
    reads = [sse(ROLE, HELLO), sse(WORLD) + DONE]
    response, body = await streamed(gateway, aiohttp_server, reads, transport, pipeline=("shouting",), local={"shouting": ShoutingInPlace})
    assert response.status == 200
    assert [event["choices"][0]["delta"]["content"] for event in data_of(body)[:-1]] == ["", "HELLO ", "WORLD"]


@pytest.mark.parametrize("transport", UPSTREAM_TRANSPORTS)
async def test_a_broken_event_mid_read_ends_the_stream_after_the_chunks_before_it(gateway, aiohttp_server, transport):
    response, body = await streamed(gateway, aiohttp_server, [sse(ROLE), sse(HELLO, b'{"id": "c1", "choi') + DONE], transport)
    assert response.status == 200  # the first chunk was sent: the error is an event of the stream
    events = data_of(body)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[1]["choices"][0]["delta"]["content"] == "hello "
    assert events[2]["error"]["code"] == "upstream_malformed"
    assert events[3] == "[DONE]"


async def test_comments_event_names_and_ids_are_not_relayed(gateway, aiohttp_server):
    reads = [b": keep-alive\n\n" + sse(ROLE), b"event: message\nid: 7\ndata: " + HELLO + b"\n\n" + sse(WORLD) + DONE]
    _, body = await streamed(gateway, aiohttp_server, reads)
    assert [event["choices"][0]["delta"].get("content") for event in data_of(body)[:-1]] == ["", "hello ", "world"]
    assert b"keep-alive" not in body and b"event:" not in body and b"id: 7" not in body


# ----------------------------------------------------------------------------- SSERelay itself ---


def test_a_reads_bytes_are_given_once_its_last_chunk_came_through():
    relay = SSERelay("openai.chat")
    first, second, third = {"n": 1}, {"n": 2}, {"n": 3}
    relay.add([first, second], b"one-two")
    relay.add([third], b"three")
    assert relay.accept(first) == b""
    assert relay.accept(second) == b"one-two"
    assert relay.accept(third) == b"three"
    assert not relay.broken and relay.release() == []


def test_a_chunk_the_relay_did_not_register_breaks_it_and_hands_back_what_it_held():
    relay = SSERelay("openai.chat")
    first, second = {"n": 1}, {"n": 2}
    relay.add([first, second], b"one-two")
    assert relay.accept(first) == b""
    copy = {**second}
    assert relay.accept(copy) == b""
    assert relay.broken
    assert relay.release() == [first, copy]
    relay.add([{"n": 3}], b"three")  # ignored once broken
    assert relay.accept({"n": 4}) == b"" and relay.release() == [{"n": 4}]


def test_the_bytes_a_relay_holds_are_bounded():
    relay = SSERelay("openai.chat", max_pending_bytes=100)
    for n in range(20):
        relay.add([{"n": n}], b"x" * 10)
    assert relay.broken


# ------------------------------------------------------- compact upstreams and batched streams ---

# What OpenAI and most servers write: orjson's own serialisation, so the relay's snapshot of a
# chunk is the upstream's text itself.
COMPACT = [orjson.dumps(orjson.loads(event)) for event in (ROLE, HELLO, WORLD)]


def shout_batch_in_place(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for chunk in batch:
        shouted_in_place(chunk)
    return batch


def without_hello(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [chunk for chunk in batch if chunk["choices"][0]["delta"].get("content") != "hello "]


@pytest.mark.parametrize("transport", UPSTREAM_TRANSPORTS)
async def test_a_compact_upstreams_bytes_are_relayed_as_they_came(gateway, aiohttp_server, transport):
    response, body = await streamed(gateway, aiohttp_server, [sse(*COMPACT[:2]), sse(COMPACT[2]) + DONE], transport)
    assert response.status == 200 and body == sse(*COMPACT) + DONE


@pytest.mark.parametrize("transport", UPSTREAM_TRANSPORTS)
async def test_a_compact_chunk_edited_in_place_reaches_the_client_edited(gateway, aiohttp_server, transport):
    reads = [sse(*COMPACT[:2]), sse(COMPACT[2]) + DONE]
    response, body = await streamed(gateway, aiohttp_server, reads, transport, pipeline=("shouting",), local={"shouting": ShoutingInPlace})
    assert response.status == 200
    assert [event["choices"][0]["delta"]["content"] for event in data_of(body)[:-1]] == ["", "HELLO ", "WORLD"]


@pytest.mark.parametrize("raw", [False, True], ids=["spaced", "compact"])
async def test_a_batch_edited_in_place_by_a_batch_watching_middleware_reaches_the_client(gateway, aiohttp_server, raw):
    events = COMPACT if raw else [ROLE, HELLO, WORLD]
    reads = [sse(*events[:2]), sse(events[2]) + DONE]
    local = {"watching": rewriting(shout_batch_in_place, batched=True)}
    response, body = await streamed(gateway, aiohttp_server, reads, pipeline=("watching", "timeout"), local=local)
    assert response.status == 200
    assert [event["choices"][0]["delta"]["content"] for event in data_of(body)[:-1]] == ["", "HELLO ", "WORLD"]


async def test_a_chunk_a_batch_watching_middleware_drops_does_not_reach_the_client(gateway, aiohttp_server):
    local = {"watching": rewriting(without_hello, batched=True)}
    response, body = await streamed(gateway, aiohttp_server, [sse(*COMPACT) + DONE], pipeline=("watching",), local=local)
    assert response.status == 200
    assert [event["choices"][0]["delta"].get("content") for event in data_of(body)[:-1]] == ["", "world"]


@pytest.mark.parametrize("transport", UPSTREAM_TRANSPORTS)
async def test_a_malformed_chunk_mid_read_ends_the_stream_after_the_chunks_before_it(gateway, aiohttp_server, transport):
    """The chunk parses but fails the provider's check (its text is a number)."""
    bad = b'{"id":"c1","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{"content":5}}]}'
    response, body = await streamed(gateway, aiohttp_server, [sse(COMPACT[0]), sse(COMPACT[1], bad, COMPACT[2]) + DONE], transport, pipeline=("timeout",))
    assert response.status == 200
    events = data_of(body)
    assert [event["choices"][0]["delta"].get("content") for event in events[:2]] == ["", "hello "]
    assert events[2]["error"]["code"] == "upstream_malformed" and events[3] == "[DONE]"
    assert len(events) == 4


def test_a_whole_registered_read_is_accepted_at_once_and_an_edited_one_is_not():
    relay = SSERelay("openai.chat")
    first, second = orjson.loads(COMPACT[1]), orjson.loads(COMPACT[2])
    relay.add([first, second], b"both", [COMPACT[1], COMPACT[2]])
    assert relay.accept_all([first, second]) == b"both" and not relay.broken
    third = orjson.loads(COMPACT[1])
    relay.add([third], b"third", [COMPACT[1]])
    third["choices"][0]["delta"]["content"] = "changed"
    assert relay.accept_all([third]) == b"" and relay.broken
    assert relay.release() == [third]


def test_a_snapshot_in_another_spelling_is_compared_as_parsed():
    relay = SSERelay("openai.chat")
    chunk = orjson.loads(HELLO)
    relay.add([chunk], b"spaced", [HELLO])  # not orjson's own text: compared by what it parses to
    assert relay.accept(chunk) == b"spaced" and not relay.broken


# ------------------------------------------------------------------- headers with the first bytes ---


class HoldingEverything:
    """An output filter that sends nothing until the stream's end."""

    def __init__(self) -> None:
        self.held: list[dict[str, Any]] = []

    def body(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        self.held.append(chunk)
        return []

    def end(self) -> list[dict[str, Any]]:
        return self.held


class Holding:
    def __init__(self, config: Any) -> None:
        pass

    @hookimpl
    async def before_request(self, ctx):
        from hookgate.output import add_output_filter

        add_output_filter(ctx, HoldingEverything())


async def test_the_headers_go_out_with_the_first_chunk_even_when_nothing_of_it_is_sent_yet(gateway, aiohttp_server):
    """The answer's headers are written with its first bytes; a first chunk that an output filter
    holds back still sends them, so the client knows the stream began while the upstream is slow."""
    import asyncio

    from aiohttp import web

    release = asyncio.Event()

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse(*COMPACT[:2]))
        await release.wait()  # until the client has the headers
        await response.write(sse(COMPACT[2]) + DONE)
        return response

    upstream = web.Application()
    upstream.router.add_post("/v1/chat/completions", answer)
    server = await aiohttp_server(upstream)
    openai = {"base_url": str(server.make_url("/v1")), "api_key": "sk-upstream", "models": ["gpt-4o-mini"]}
    client = await gateway(pipeline_config(["holding", "openai"], openai=openai), local={"holding": Holding})
    try:
        response = await asyncio.wait_for(client.post("/v1/chat/completions", json=ASKED), 10)
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    finally:
        release.set()
    body = await response.read()
    assert [event["choices"][0]["delta"].get("content") for event in data_of(body)[:-1]] == ["", "hello ", "world"]


@pytest.mark.parametrize("transport", UPSTREAM_TRANSPORTS)
async def test_a_stream_that_ends_without_done_ends_with_an_error_after_its_chunks(gateway, aiohttp_server, transport):
    response, body = await streamed(gateway, aiohttp_server, [sse(*COMPACT)], transport)
    assert response.status == 200
    events = data_of(body)
    assert [event["choices"][0]["delta"].get("content") for event in events[:3]] == ["", "hello ", "world"]
    assert events[3]["error"]["code"] == "upstream_disconnected" and events[4] == "[DONE]"


@pytest.mark.parametrize("transport", UPSTREAM_TRANSPORTS)
async def test_a_last_event_without_its_blank_line_is_read(gateway, aiohttp_server, transport):
    """``[DONE]`` (and the chunk before it) with no closing blank line: read when the body ends."""
    response, body = await streamed(gateway, aiohttp_server, [sse(*COMPACT[:2]), b"data: " + COMPACT[2] + b"\n\ndata: [DONE]"], transport)
    assert response.status == 200
    assert body == sse(*COMPACT) + DONE


def eating_the_first_read() -> tuple[type, Any]:
    """A middleware that takes the stream's first read for itself (edited in place) and passes
    the same stream on with ``with_close``: what reaches the core descends from the provider's
    stream, but it is not every chunk the relay registered. And an upstream whose second read
    waits until the first was eaten, so the two are never one read."""
    eaten = asyncio.Event()

    class EatsTheFirstRead:
        def __init__(self, config: Any) -> None:
            pass

        @hookimpl
        async def call_provider(self, ctx, call_next):
            response = await call_next(ctx)
            if isinstance(response, CompletionStream):
                shout_batch_in_place(await anext(response.batches()))
                eaten.set()
                return response.with_close(response.aclose)
            return response

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse(*COMPACT[:2]))
        await eaten.wait()
        await response.write(sse(COMPACT[2]) + DONE)
        return response

    upstream = web.Application()
    upstream.router.add_post("/v1/chat/completions", answer)
    return EatsTheFirstRead, upstream


async def test_a_read_a_middleware_took_from_an_intact_stream_never_reaches_the_client_as_bytes(gateway, aiohttp_server):
    plugin, upstream = eating_the_first_read()
    server = await aiohttp_server(upstream)
    openai = {"base_url": str(server.make_url("/v1")), "api_key": "sk-upstream", "models": ["gpt-4o-mini"]}
    client = await gateway(pipeline_config(["eats", "timeout", "openai"], openai=openai), local={"eats": plugin})
    response = await client.post("/v1/chat/completions", json=ASKED)
    body = await response.read()
    assert response.status == 200
    assert [event["choices"][0]["delta"]["content"] for event in data_of(body)[:-1]] == ["world"]


@pytest.mark.parametrize("order", [("watching", "concurrency", "timeout"), ("concurrency", "timeout", "watching")], ids=["outside", "inside"])
async def test_an_in_place_edit_reaches_the_client_wherever_the_editor_sits_among_stream_guards(gateway, aiohttp_server, order):
    reads = [sse(*COMPACT[:2]), sse(COMPACT[2]) + DONE]
    local = {"watching": rewriting(shout_batch_in_place, batched=True)}
    response, body = await streamed(gateway, aiohttp_server, reads, pipeline=order, local=local)
    assert response.status == 200
    assert [event["choices"][0]["delta"]["content"] for event in data_of(body)[:-1]] == ["", "HELLO ", "WORLD"]


async def test_the_default_reliability_chain_relays_the_upstreams_bytes_as_they_came(gateway, aiohttp_server):
    reads = [sse(*COMPACT[:2]), sse(COMPACT[2]) + DONE]
    response, body = await streamed(gateway, aiohttp_server, reads, pipeline=("retry", "circuit_breaker", "concurrency", "timeout"))
    assert response.status == 200 and body == sse(*COMPACT) + DONE


@pytest.mark.parametrize("editor", ["chunks", "batches"])
async def test_the_answer_after_response_sees_is_what_the_client_got_after_an_in_place_edit(gateway, aiohttp_server, editor):
    server = await aiohttp_server(raw_upstream(b"", chunks=[sse(*COMPACT) + DONE]))
    openai = {"base_url": str(server.make_url("/v1")), "api_key": "sk-upstream", "models": ["gpt-4o-mini"]}
    local = {"watching": rewriting(shout_batch_in_place, batched=True) if editor == "batches" else ShoutingInPlace}
    client = await gateway(pipeline_config(["memory_cache", "watching", "timeout", "openai"], openai=openai), local=local)
    streamed_body = await (await client.post("/v1/chat/completions", json=ASKED)).read()
    assert [event["choices"][0]["delta"]["content"] for event in data_of(streamed_body)[:-1]] == ["", "HELLO ", "WORLD"]
    again = await client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": USER})
    assert again.headers["x-hookgate-cache"] == "HIT"
    assert (await again.json())["choices"][0]["message"]["content"] == "HELLO WORLD", "the cache holds what was sent, not what the upstream said"


async def test_an_untouched_streams_answer_is_assembled_for_after_response(gateway, aiohttp_server):
    server = await aiohttp_server(raw_upstream(b"", chunks=[sse(*COMPACT[:2]), sse(COMPACT[2], orjson.dumps(orjson.loads(USAGE))) + DONE]))
    openai = {"base_url": str(server.make_url("/v1")), "api_key": "sk-upstream", "models": ["gpt-4o-mini"]}
    client = await gateway(pipeline_config(["memory_cache", "retry", "concurrency", "timeout", "openai"], openai=openai))
    body = await (await client.post("/v1/chat/completions", json={**ASKED, "stream_options": {"include_usage": True}})).read()
    assert body == sse(*COMPACT, orjson.dumps(orjson.loads(USAGE))) + DONE
    answer = await (await client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": USER})).json()
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "hello world", "refusal": None}
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


@pytest.mark.parametrize("transport", UPSTREAM_TRANSPORTS)
async def test_an_error_event_mid_stream_ends_it_with_the_upstreams_error_after_the_chunks_before_it(gateway, aiohttp_server, transport):
    failure = b'{"error": {"message": "The engine is overloaded.", "type": "server_error", "code": "overloaded"}}'
    response, body = await streamed(gateway, aiohttp_server, [sse(*COMPACT[:2]), sse(failure)], transport)
    assert response.status == 200
    events = data_of(body)
    assert body.startswith(sse(*COMPACT[:2])), "the chunks before the error went out as the upstream wrote them"
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]
    assert error["message"] == "The openai provider failed (upstream status 500)." and error["type"] != "invalid_request_error"
