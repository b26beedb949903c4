"""Streams as the client sees them: errors before the first chunk are plain HTTP errors, errors
after it end the stream with an error event, and a client that leaves is noticed and cleaned up."""
from __future__ import annotations

import asyncio

import orjson
from structlog.testing import capture_logs

from conftest import assert_conforms, eventually, provider_plugin
from hookgate import CompletionStream, GatewayError, RateLimited, UpstreamError, hookimpl

CHUNK = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "scripted", "choices": [
    {"index": 0, "delta": {"role": "assistant", "content": "part"}, "finish_reason": None, "logprobs": None}
]}


def scripted_provider(fail_after: int | None, error: GatewayError, closed: list[str], delay: float = 0.0):
    """A provider streaming five chunks and a finish, raising ``error`` before chunk ``fail_after``."""

    async def complete(ctx):
        async def chunks():
            for i in range(5):
                if fail_after is not None and i == fail_after:
                    raise error
                await asyncio.sleep(delay)
                yield CHUNK
            yield {**CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}]}

        async def close():
            closed.append("closed")

        return CompletionStream(chunks(), close=close)

    return provider_plugin("scripted", complete)


class Observer:
    errors: list[GatewayError] = []

    def __init__(self, config):
        self.errors = Observer.errors

    @hookimpl
    async def on_error(self, ctx, error):
        self.errors.append(error)


BODY = {"model": "scripted", "messages": [{"role": "user", "content": "x"}], "stream": True}


async def test_an_error_before_the_first_chunk_is_a_plain_http_error(gateway):
    closed: list[str] = []
    provider = scripted_provider(0, RateLimited("upstream busy", headers={"Retry-After": "2"}), closed)
    client = await gateway('[gateway]\npipeline = ["scripted"]', local={"scripted": provider})
    response = await client.post("/v1/chat/completions", json=BODY)
    assert response.status == 429
    assert response.headers["Retry-After"] == "2"
    assert_conforms("ErrorResponse", await response.json())
    assert closed == ["closed"]


async def test_an_error_after_the_first_chunk_ends_the_stream_with_an_error_event(gateway):
    closed: list[str] = []
    provider = scripted_provider(2, UpstreamError("upstream broke"), closed)
    client = await gateway('[gateway]\npipeline = ["scripted"]', local={"scripted": provider})
    response = await client.post("/v1/chat/completions", json=BODY)
    assert response.status == 200
    events = [line[6:] for line in (await response.text()).split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = orjson.loads(events[-2])
    assert_conforms("ErrorResponse", error)
    assert error["error"]["message"] == "upstream broke"
    assert len(events) == 4  # two chunks, the error, [DONE]
    assert closed == ["closed"]


async def test_a_client_that_leaves_mid_stream_is_reported_and_the_upstream_closed(gateway):
    closed: list[str] = []
    Observer.errors = []
    provider = scripted_provider(None, UpstreamError("unused"), closed, delay=0.2)
    client = await gateway('[gateway]\npipeline = ["observer", "scripted"]', local={"scripted": provider, "observer": Observer})
    response = await client.post("/v1/chat/completions", json=BODY)
    await response.content.readline()
    response.close()
    await eventually(lambda: closed == ["closed"] and len(Observer.errors) == 1, timeout=5)
    assert Observer.errors[0].status == 499


async def test_trace_hooks_logs_every_hook_call(gateway):
    client = await gateway('[gateway]\npipeline = ["memory_cache", "echo"]\ntrace_hooks = true')
    with capture_logs() as logs:
        await client.post("/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "x"}]})
    traces = [(e["hook"], e["plugin"], e["outcome"]) for e in logs if e["event"] == "hook_trace"]
    assert traces == [("cache_lookup", "memory_cache", "ok"), ("after_response", "memory_cache", "ok")]
    assert all(e["ms"] >= 0 for e in logs if e["event"] == "hook_trace")
