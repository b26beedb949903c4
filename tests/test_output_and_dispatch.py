"""Output filters change what one client receives, never what the pipeline keeps; a plugin asks a
model through the gateway itself with hookgate.dispatch.complete."""
from __future__ import annotations

import orjson
import pytest

from hookgate import hookimpl
from hookgate.dispatch import complete
from hookgate.output import add_output_filter


class Shout:
    """Upper-cases what the client receives; holds the last chunk back until the end."""

    def __init__(self) -> None:
        self.held: list[dict] = []

    def body(self, body):
        for choice in body["choices"]:
            choice["message"]["content"] = choice["message"]["content"].upper()
        return body

    def chunk(self, chunk):
        for choice in chunk.get("choices") or ():
            if choice.get("delta", {}).get("content"):
                choice["delta"]["content"] = choice["delta"]["content"].upper()
        released, self.held = self.held, [chunk]
        return released

    def end(self):
        released, self.held = self.held, []
        return released


class Shouting:
    def __init__(self, config) -> None:
        self.stored: list[str] = []

    @hookimpl
    async def before_request(self, ctx):
        add_output_filter(ctx, Shout())

    @hookimpl
    async def after_response(self, ctx, response):
        self.stored.append(response.body["choices"][0]["message"]["content"])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_an_output_filter_changes_the_clients_answer_not_the_cached_one(gateway, stream):
    client = await gateway('[gateway]\npipeline = ["shouting", "memory_cache", "echo"]', local={"shouting": Shouting})
    body = {"model": "echo", "messages": [{"role": "user", "content": "quiet words"}], "stream": stream}
    for attempt in ("miss", "hit"):
        response = await client.post("/v1/chat/completions", json=body)
        assert response.status == 200
        if stream:
            events = [line[6:] for line in (await response.read()).split(b"\n") if line.startswith(b"data: ")]
            assert events[-1] == b"[DONE]"
            text = "".join(c["choices"][0]["delta"].get("content") or "" for c in map(orjson.loads, events[:-1]) if c["choices"])
        else:
            text = (await response.json())["choices"][0]["message"]["content"]
        assert text == "ECHO: QUIET WORDS", attempt
    plugin = client.server.app  # the pipeline kept the canonical answer: the cache serves it unfiltered to others
    from hookgate.server import current_gateway

    assert current_gateway(plugin).runner.plugins["shouting"].stored == ["echo: quiet words"] * 2


class Asker:
    """Asks the echo model through the gateway while answering."""

    def __init__(self, config) -> None:
        self.app = None

    @hookimpl
    async def startup(self, app):
        self.app = app

    @hookimpl
    async def before_request(self, ctx):
        if ctx.headers.get("x-hookgate-internal"):
            return
        answer = await complete(self.app, {"model": "echo", "messages": [{"role": "user", "content": "inner"}]}, caller="asker", parent=ctx)
        ctx.response_headers["x-inner"] = answer.body["choices"][0]["message"]["content"]


async def test_a_plugin_asks_a_model_through_the_gateway_itself(gateway):
    client = await gateway('[gateway]\npipeline = ["asker", "memory_cache", "echo"]', local={"asker": Asker})
    response = await client.post("/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "outer"}]})
    assert response.status == 200 and response.headers["x-inner"] == "echo: inner"
    assert (await response.json())["choices"][0]["message"]["content"] == "echo: outer"


async def test_internal_requests_cannot_nest_without_end(gateway):
    class Loop(Asker):
        @hookimpl
        async def before_request(self, ctx):
            await complete(self.app, {"model": "echo", "messages": [{"role": "user", "content": "again"}]}, caller="loop", parent=ctx)

    client = await gateway('[gateway]\npipeline = ["loop", "echo"]', local={"loop": Loop})
    response = await client.post("/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "x"}]})
    assert response.status == 400 and (await response.json())["error"]["code"] == "internal_recursion"
