"""The memory plugin as a client sees it: conversations through the gateway, against the OpenAI
emulator (which records what the upstream received), with the store in this process and in Redis."""
from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import openai
import pytest
from redis import asyncio as aioredis

from conftest import eventually, upstream_config
from hookgate import RequestContext, hookimpl
from hookgate.config import ConfigError
from hookgate.conversations import NEW_CONVERSATION, ResponseRecord, conversation_store, new_response_id, owner_of_request
from hookgate.facts import CONVERSATION_APPENDED, CONVERSATION_ID, CONVERSATION_POSITION, CONVERSATION_READ_ONLY
from hookgate.gateway import Gateway
from hookgate.pipelines import PIPELINES
from hookgate.plugins.memory_window import SUMMARY_PREAMBLE
from hookgate.rules import Reads
from hookgate.tasks import background
from hookgate.testing.openai_emulator import Fault

MODEL = "gpt-4o-mini"
ALICE, BOB = "sk-alice-test", "sk-bob-test"
LOOKUP = {"type": "function", "function": {"name": "lookup", "description": "look a word up", "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}}}


@pytest.fixture(params=["memory", "redis"])
def store_kind(request) -> str:
    return request.param


@pytest.fixture
def memory_section(store_kind, request) -> dict[str, Any]:
    """The [plugins.memory] table for the store under test (Redis: the test's own prefix)."""
    if store_kind == "memory":
        return {}
    return {"store": "redis", "redis_url": request.getfixturevalue("redis_url"), "key_prefix": request.getfixturevalue("redis_prefix")}


@pytest.fixture
def start(gateway, emulator, memory_section):
    """Start a gateway whose pipeline is ``memory`` (with these options), ``extra`` and openai."""

    async def make(extra: list[str] | None = None, **options: Any):
        return await gateway(upstream_config(emulator, ["memory", *(extra or [])], memory={**memory_section, **options}))

    return make


async def ask(client, conversation: str | None, content: Any = None, *, key: str = ALICE, messages: list[dict] | None = None, **body: Any):
    """One turn: (status, headers, JSON answer)."""
    headers = {"Authorization": f"Bearer {key}"}
    if conversation is not None:
        headers["x-hookgate-conversation"] = conversation
    request = {"model": MODEL, "messages": messages if messages is not None else [{"role": "user", "content": content}], **body}
    response = await client.post("/v1/chat/completions", json=request, headers=headers)
    return response.status, response.headers, await response.json()


def upstream_messages(emulator, index: int = -1) -> list[dict]:
    return emulator.stats.requests[index].body["messages"]


def words(messages: list[dict]) -> list[str]:
    return [m.get("content") or "<tool call>" for m in messages]


# ------------------------------------------------------------------------------ conversations ---


async def test_each_turn_sends_the_whole_conversation_upstream_and_says_so(start, emulator):
    client = await start()
    status, headers, answer = await ask(client, NEW_CONVERSATION, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "one"}])
    assert status == 200 and answer["choices"][0]["message"]["content"] == "emulated: one"
    conversation = headers["x-hookgate-conversation"]
    assert conversation.startswith("conv_") and headers["x-hookgate-conversation-history"] == "full"
    for content in ("two", "three"):
        status, headers, _ = await ask(client, conversation, content)
        assert status == 200 and headers["x-hookgate-conversation"] == conversation
    assert words(upstream_messages(emulator)) == ["Be brief.", "one", "emulated: one", "two", "emulated: two", "three"]
    assert headers["x-hookgate-conversation-turns"] == "2" and headers["x-hookgate-conversation-turns-dropped"] == "0"
    assert int(headers["x-hookgate-conversation-tokens"]) > 20
    stored = await (await client.get(f"/v1/conversations/{conversation}", headers={"Authorization": f"Bearer {ALICE}"})).json()
    assert [m["message"]["content"] for m in stored["messages"]] == ["one", "emulated: one", "two", "emulated: two", "three", "emulated: three"]
    assert stored["turns"] == 3 and stored["system"] == [{"role": "system", "content": "Be brief."}]
    assert all(m["tokens"] > 0 for m in stored["messages"]) and stored["tokens"] == sum(m["tokens"] for m in stored["messages"])


async def test_a_new_system_prompt_replaces_the_stored_one(start, emulator):
    client = await start()
    _, headers, _ = await ask(client, NEW_CONVERSATION, messages=[{"role": "system", "content": "old"}, {"role": "user", "content": "a"}])
    conversation = headers["x-hookgate-conversation"]
    await ask(client, conversation, messages=[{"role": "system", "content": "new"}, {"role": "user", "content": "b"}])
    await ask(client, conversation, "c")
    assert words(upstream_messages(emulator)) == ["new", "a", "emulated: a", "b", "emulated: b", "c"]


async def test_a_streamed_turn_is_stored_and_carries_the_headers(start, emulator):
    client = await start()
    _, headers, _ = await ask(client, NEW_CONVERSATION, "first")
    conversation = headers["x-hookgate-conversation"]
    response = await client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "streamed words"}], "stream": True},
        headers={"Authorization": f"Bearer {ALICE}", "x-hookgate-conversation": conversation},
    )
    assert response.status == 200 and response.headers["x-hookgate-conversation-turns"] == "1"
    assert b"[DONE]" in await response.read()
    await ask(client, conversation, "after")
    assert words(upstream_messages(emulator))[-3:] == ["streamed words", "emulated: streamed words", "after"]


async def test_tool_calls_and_their_results_are_stored_with_the_turn(start, emulator):
    client = await start()
    _, headers, answer = await ask(client, NEW_CONVERSATION, "please lookup the word", tools=[LOOKUP])
    conversation = headers["x-hookgate-conversation"]
    [call] = answer["choices"][0]["message"]["tool_calls"]
    status, _, answer = await ask(client, conversation, messages=[{"role": "tool", "tool_call_id": call["id"], "content": "a small word"}], tools=[LOOKUP])
    assert status == 200 and answer["choices"][0]["message"]["content"] == "emulated: a small word"
    sent = upstream_messages(emulator)
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"] and sent[1]["tool_calls"][0]["id"] == call["id"]
    stored = await (await client.get(f"/v1/conversations/{conversation}", headers={"Authorization": f"Bearer {ALICE}"})).json()
    assert [m["message"]["role"] for m in stored["messages"]] == ["user", "assistant", "tool", "assistant"]


async def test_a_failed_turn_stores_nothing_and_frees_the_conversation(start, emulator):
    client = await start()
    _, headers, _ = await ask(client, NEW_CONVERSATION, "one")
    conversation = headers["x-hookgate-conversation"]
    emulator.script(Fault(status=400, message="bad"))
    status, _, _ = await ask(client, conversation, "fails")
    assert status == 400
    status, _, _ = await ask(client, conversation, "two")
    assert status == 200, "the lease was released"
    assert words(upstream_messages(emulator)) == ["one", "emulated: one", "two"], "the failed turn left no trace"


async def test_a_stream_cut_off_by_its_client_stores_nothing(start, emulator):
    client = await start()
    _, headers, _ = await ask(client, NEW_CONVERSATION, "one")
    conversation = headers["x-hookgate-conversation"]
    emulator.settings.chunk_latency = 0.05
    response = await client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "a long answer of many words indeed"}], "stream": True},
        headers={"Authorization": f"Bearer {ALICE}", "x-hookgate-conversation": conversation},
    )
    await response.content.readline()
    response.close()
    await eventually(lambda: emulator.stats.in_flight == 0, timeout=5)
    emulator.settings.chunk_latency = 0.0

    async def free() -> bool:
        return (await ask(client, conversation, "two"))[0] == 200

    deadline = asyncio.get_running_loop().time() + 5
    while not await free():
        assert asyncio.get_running_loop().time() < deadline, "the cancelled turn's lease was never released"
        await asyncio.sleep(0.05)
    assert words(upstream_messages(emulator)) == ["one", "emulated: one", "two"]


async def test_a_second_request_on_a_busy_conversation_gets_409_and_no_turn_is_lost(start, emulator):
    client = await start()
    _, headers, _ = await ask(client, NEW_CONVERSATION, "one")
    conversation = headers["x-hookgate-conversation"]
    emulator.settings.latency = 0.5
    first = asyncio.ensure_future(ask(client, conversation, "slow"))
    await eventually(lambda: emulator.stats.in_flight == 1, timeout=5)
    status, headers, error = await ask(client, conversation, "meanwhile")
    assert status == 409 and error["error"]["code"] == "conversation_busy" and headers["Retry-After"] == "1"
    assert (await first)[0] == 200
    emulator.settings.latency = 0.0
    assert (await ask(client, conversation, "after"))[0] == 200
    assert words(upstream_messages(emulator)) == ["one", "emulated: one", "slow", "emulated: slow", "after"]


async def test_the_official_sdk_retries_a_busy_conversation_by_itself(start, emulator, sdk):
    client = await start()
    api = sdk(client, api_key=ALICE).with_options(max_retries=3)
    _, headers, _ = await ask(client, NEW_CONVERSATION, "one")
    conversation = headers["x-hookgate-conversation"]
    emulator.settings.latency = 0.3
    first = asyncio.ensure_future(ask(client, conversation, "slow"))
    await eventually(lambda: emulator.stats.in_flight == 1, timeout=5)
    answer = await api.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "queued"}], extra_headers={"x-hookgate-conversation": conversation})
    assert answer.choices[0].message.content == "emulated: queued"
    assert (await first)[0] == 200
    assert words(upstream_messages(emulator))[-3:] == ["slow", "emulated: slow", "queued"], "the retried turn came after the first"


async def test_a_long_turn_keeps_its_lease_past_lease_seconds(gateway, emulator, redis_url, redis_prefix):
    memory = {"store": "redis", "redis_url": redis_url, "key_prefix": redis_prefix, "lease_seconds": 1}
    client = await gateway(upstream_config(emulator, ["memory"], memory=memory))
    _, headers, _ = await ask(client, NEW_CONVERSATION, "one")
    conversation = headers["x-hookgate-conversation"]
    emulator.settings.latency = 3.0
    slow = asyncio.ensure_future(ask(client, conversation, "slow"))
    await eventually(lambda: emulator.stats.in_flight == 1, timeout=5)
    await asyncio.sleep(1.5)  # the time passing is what is tested: past the lease's own life
    status, _, error = await ask(client, conversation, "meanwhile")
    assert status == 409, "the lease was renewed while its request ran"
    assert (await slow)[0] == 200, "and its turn was stored"
    emulator.settings.latency = 0.0
    assert (await ask(client, conversation, "after"))[0] == 200
    assert words(upstream_messages(emulator)) == ["one", "emulated: one", "slow", "emulated: slow", "after"]


class FailsAfterTheAnswer:
    """A plugin whose after_response fails: the client gets an error, so the turn must not be kept."""

    def __init__(self, config) -> None:
        pass

    @hookimpl
    async def after_response(self, ctx, response):
        raise RuntimeError("broken plugin")


async def test_a_turn_another_plugin_failed_after_the_answer_is_not_stored_and_frees_the_conversation(gateway, emulator, memory_section):
    client = await gateway(upstream_config(emulator, ["broken", "memory"], memory=memory_section), local={"broken": FailsAfterTheAnswer})
    status, headers, _ = await ask(client, NEW_CONVERSATION, "one")
    assert status == 500
    listed = await (await client.get("/v1/conversations", headers={"Authorization": f"Bearer {ALICE}"})).json()
    [made] = listed["data"]
    assert made["turns"] == 0, "nothing stored"
    await background(client.server.app).idle()  # the lease is released off the request's path
    status, _, _ = await ask(client, made["id"], "two")
    assert status == 500 and headers["x-hookgate-conversation"] == made["id"]
    assert len(emulator.stats.requests) == 2, "not refused as busy: the lease was released"


async def test_the_plugin_counts_its_turns_at_metrics(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["metrics", "memory"]))
    _, headers, _ = await ask(client, NEW_CONVERSATION, "one")
    await ask(client, "conv_" + "1" * 32, "unknown")
    text = await (await client.get("/metrics")).text()
    assert 'hookgate_memory_turns_total{outcome="stored"} 1.0' in text
    assert 'hookgate_memory_turns_total{outcome="conversation_not_found"} 1.0' in text
    assert 'hookgate_memory_requests_total{history="full"} 1.0' in text


async def test_a_live_reload_keeps_the_in_process_conversations(gateway, emulator, make_config):
    client = await gateway(upstream_config(emulator, ["memory"], memory={"ttl_seconds": 600}))
    _, headers, _ = await ask(client, NEW_CONVERSATION, "before the reload")
    conversation = headers["x-hookgate-conversation"]
    await client.server.app[PIPELINES].reload(client.server.app, make_config(upstream_config(emulator, ["memory"], memory={"ttl_seconds": 900})))
    assert (await ask(client, conversation, "after"))[0] == 200
    assert words(upstream_messages(emulator)) == ["before the reload", "emulated: before the reload", "after"]
    alice = {"Authorization": f"Bearer {ALICE}"}
    kept = await (await client.get(f"/v1/conversations/{conversation}", headers=alice)).json()
    made = await (await client.post("/v1/conversations", headers=alice)).json()
    assert kept["expires_at"] - kept["updated_at"] < 610, "a conversation keeps the TTL it was made with"
    assert made["expires_at"] - made["created_at"] >= 899, "a new one gets the new default"


# ------------------------------------------------------------------------------- ownership ---


async def test_another_key_can_neither_read_continue_list_nor_delete(start, emulator):
    client = await start()
    _, headers, _ = await ask(client, NEW_CONVERSATION, "alice's secret")
    conversation = headers["x-hookgate-conversation"]
    bob = {"Authorization": f"Bearer {BOB}"}
    read = await client.get(f"/v1/conversations/{conversation}", headers=bob)
    status, _, continued = await ask(client, conversation, "what did alice say?", key=BOB)
    deleted = await client.delete(f"/v1/conversations/{conversation}", headers=bob)
    listed = await (await client.get("/v1/conversations", headers=bob)).json()
    assert (read.status, status, deleted.status) == (404, 404, 404)
    assert continued["error"]["code"] == "conversation_not_found" and "secret" not in str(continued)
    assert "secret" not in await read.text() and listed["data"] == []
    assert len(emulator.stats.requests) == 1, "bob's turn never reached the upstream"
    assert (await ask(client, conversation, "still mine"))[0] == 200


async def test_an_id_that_was_never_made_and_a_malformed_one_are_refused_without_echo(start):
    client = await start()
    status, _, error = await ask(client, "conv_" + "0" * 32, "hello")
    assert status == 404 and error["error"]["param"] is None
    status, _, error = await ask(client, "<script>alert(1)</script>", "hello")
    assert status == 400 and error["error"]["code"] == "invalid_conversation_id" and "script" not in error["error"]["message"]
    status, _, error = await ask(client, NEW_CONVERSATION, "hello", n=2)
    assert status == 400 and error["error"]["param"] == "n"


async def test_a_request_without_a_conversation_is_left_alone(start, emulator):
    client = await start()
    status, headers, _ = await ask(client, None, messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}])
    assert status == 200 and "x-hookgate-conversation" not in headers
    assert words(upstream_messages(emulator)) == ["a", "b", "c"]


# ---------------------------------------------------------------------------- context window ---


async def test_the_history_is_trimmed_to_the_window_without_splitting_a_tool_call(start, emulator):
    client = await start(context_windows={MODEL: 420}, reserve_tokens=0)
    _, headers, _ = await ask(client, NEW_CONVERSATION, messages=[{"role": "system", "content": "Stay on topic."}, {"role": "user", "content": "start"}], max_tokens=100)
    conversation = headers["x-hookgate-conversation"]
    for turn in range(6):
        _, _, answer = await ask(client, conversation, f"please lookup word{turn} " + "filler " * 30, tools=[LOOKUP], max_tokens=100)
        [call] = answer["choices"][0]["message"]["tool_calls"]
        status, headers, _ = await ask(client, conversation, messages=[{"role": "tool", "tool_call_id": call["id"], "content": f"meaning {turn}"}], tools=[LOOKUP], max_tokens=100)
        assert status == 200, "the upstream accepted it: every tool result follows its call"
    assert headers["x-hookgate-conversation-history"] == "trimmed" and int(headers["x-hookgate-conversation-turns-dropped"]) > 0
    sent = upstream_messages(emulator)
    assert sent[0] == {"role": "system", "content": "Stay on topic."}, "the system prompt always goes"
    assert sent[1]["role"] == "user", "history starts at a whole turn"
    assert sent[-1] == {"role": "tool", "tool_call_id": call["id"], "content": "meaning 5"}
    assert int(headers["x-hookgate-conversation-tokens"]) <= 420 - 100


async def test_a_configured_summary_replaces_the_dropped_turns(start, emulator, gateway):
    client = await start(context_windows={MODEL: 300}, reserve_tokens=0, summary_model=MODEL)
    app = client.server.app
    _, headers, _ = await ask(client, NEW_CONVERSATION, "my name is Ada " + "and more " * 20, max_tokens=50)
    conversation = headers["x-hookgate-conversation"]
    for turn in range(4):
        _, headers, _ = await ask(client, conversation, f"turn {turn} " + "words " * 20, max_tokens=50)
    assert headers["x-hookgate-conversation-history"] == "trimmed"
    await background(app).idle()  # the summary is made off the request's path
    summary_requests = [r for r in emulator.stats.requests if r.body["messages"][0]["content"].startswith("You maintain the memory")]
    assert summary_requests and "my name is Ada" in summary_requests[0].body["messages"][1]["content"]
    stored = await (await client.get(f"/v1/conversations/{conversation}", headers={"Authorization": f"Bearer {ALICE}"})).json()
    assert stored["summary"]["covers_up_to"] > 0 and stored["summary"]["model"] == MODEL
    _, headers, _ = await ask(client, conversation, "do you remember my name?", max_tokens=50)
    assert headers["x-hookgate-conversation-history"] == "summarised"
    [sent] = [r.body["messages"] for r in emulator.stats.requests if r.body["messages"][-1]["content"] == "do you remember my name?"]
    assert sent[0]["role"] == "system" and sent[0]["content"].startswith(SUMMARY_PREAMBLE)
    assert "my name is Ada" in sent[0]["content"], "the emulator's summary echoes the turns it was given"
    assert sent[-1]["content"] == "do you remember my name?"


# --------------------------------------------------------------------------------- caches ---


async def test_the_cache_key_covers_the_whole_conversation_and_a_hit_is_still_a_turn(start, emulator):
    client = await start(extra=["memory_cache"])
    _, first, _ = await ask(client, NEW_CONVERSATION, "hello")
    _, second, _ = await ask(client, NEW_CONVERSATION, "hello")
    assert (first["x-hookgate-cache"], second["x-hookgate-cache"]) == ("MISS", "HIT"), "the same conversation so far: the same answer"
    one, two = first["x-hookgate-conversation"], second["x-hookgate-conversation"]
    _, cached, _ = await ask(client, two, "and then?")
    assert cached["x-hookgate-cache"] == "MISS"
    assert words(upstream_messages(emulator)) == ["hello", "emulated: hello", "and then?"], "the HIT was stored as a turn"
    _, other, _ = await ask(client, NEW_CONVERSATION, "and then?")
    assert other["x-hookgate-cache"] == "MISS", "the same new turn after another history is another request"
    _, again, _ = await ask(client, one, "and then?")
    assert again["x-hookgate-cache"] == "HIT", "conversation one now has exactly two's history"
    assert len(emulator.stats.requests) == 3


def test_memory_must_come_before_the_caches_and_the_token_counter(make_config, emulator):
    for pipeline, other in ((["memory_cache", "memory"], "memory_cache"), (["token_counter", "memory"], "token_counter")):
        with pytest.raises(ConfigError) as caught:
            Gateway(make_config(upstream_config(emulator, pipeline)))
        assert f"memory must run before {other}" in caught.value.reason


# --------------------------------------------------------------------------------- the API ---


async def test_conversations_are_listed_per_key_page_by_page(start):
    client = await start()
    alice = {"Authorization": f"Bearer {ALICE}"}
    made = []
    for index in range(5):
        response = await client.post("/v1/conversations", json={"metadata": {"n": str(index)}}, headers=alice)
        made.append((await response.json())["id"])
        await asyncio.sleep(0.002)  # distinct creation milliseconds, so the order is defined
    await client.post("/v1/conversations", headers={"Authorization": f"Bearer {BOB}"})
    seen, after = [], None
    while True:
        page = await (await client.get("/v1/conversations", params={"limit": 2, **({"after": after} if after else {})}, headers=alice)).json()
        seen.extend(c["id"] for c in page["data"])
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == made[::-1]
    bad = await client.get("/v1/conversations", params={"limit": 1000}, headers=alice)
    assert bad.status == 400 and (await bad.json())["error"]["param"] == "limit"


async def test_a_conversation_is_seeded_and_the_sdk_speaks_the_api(start, emulator, sdk):
    client = await start()
    api = sdk(client, api_key=ALICE)
    seeded = await client.post(
        "/v1/conversations",
        json={"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}]},
        headers={"Authorization": f"Bearer {ALICE}"},
    )
    conversation = (await seeded.json())["id"]
    await api.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "next"}], extra_headers={"x-hookgate-conversation": conversation})
    assert words(upstream_messages(emulator)) == ["Be kind.", "hi", "hello!", "next"]
    created = await api.conversations.create(metadata={"topic": "sdk"})
    retrieved = await api.conversations.retrieve(created.id)
    assert retrieved.id == created.id and retrieved.metadata == {"topic": "sdk"}
    assert (await api.conversations.delete(created.id)).deleted
    with pytest.raises(openai.NotFoundError):
        await api.conversations.retrieve(created.id)
    with pytest.raises(openai.BadRequestError):
        await api.conversations.create(items=[{"type": "message", "role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        await api.conversations.create(metadata={f"k{i}": "v" for i in range(17)})


# ---------------------------------------------------------------------------- the surfaces ---


class NamesTheConversation:
    """What the Responses surface does before the pipeline: name the conversation (``conversation``,
    or the one a ``previous_response_id`` belongs to) as a fact instead of a header."""

    conversation: str = NEW_CONVERSATION
    position: int | None = None
    read_only = False

    def __init__(self, config) -> None:
        pass

    @hookimpl
    async def before_request(self, ctx):
        ctx[CONVERSATION_ID] = type(self).conversation
        if type(self).position is not None:
            ctx[CONVERSATION_POSITION] = type(self).position
        if type(self).read_only:
            ctx[CONVERSATION_READ_ONLY] = True


class RecordsTheResponse:
    """What the Responses surface does after the answer: store it at the position memory reports."""

    rules = (Reads(CONVERSATION_APPENDED, "after_response", why="the response's position"),)
    records: list[ResponseRecord] = []

    def __init__(self, config) -> None:
        self.app = None

    @hookimpl
    async def startup(self, app):
        self.app = app

    @hookimpl
    async def after_response(self, ctx, response):
        appended = ctx.get(CONVERSATION_APPENDED)
        if appended is None:
            return  # store: false
        record = ResponseRecord(new_response_id(appended.conversation_id), appended.conversation_id, appended.end, {"output": response.body["choices"]})
        await conversation_store(self.app).put_response(owner_of_request(ctx), record)
        type(self).records.append(record)


async def test_a_surface_continues_conversations_through_the_fact_and_stores_responses(gateway, make_config, emulator, memory_section):
    NamesTheConversation.conversation, NamesTheConversation.position, NamesTheConversation.read_only = NEW_CONVERSATION, None, False
    RecordsTheResponse.records = []
    local = {"names": NamesTheConversation, "records": RecordsTheResponse}
    client = await gateway(upstream_config(emulator, ["names", "memory", "records"], memory=memory_section), local=local)
    assert (await ask(client, None, "first"))[0] == 200
    [record] = RecordsTheResponse.records
    NamesTheConversation.conversation = record.conversation_id
    assert (await ask(client, None, "second"))[0] == 200
    assert words(upstream_messages(emulator)) == ["first", "emulated: first", "second"]
    found = await conversation_store(client.server.app).get_response("tenant:" + _tenant(ALICE), RecordsTheResponse.records[-1].id)
    assert found is not None and found.position == 4 and found.conversation_id == record.conversation_id
    store = conversation_store(client.server.app)
    alice = "tenant:" + _tenant(ALICE)

    NamesTheConversation.position = record.position  # previous_response_id = the first response: a branch
    assert (await ask(client, None, "branch"))[0] == 200
    assert words(upstream_messages(emulator)) == ["first", "emulated: first", "branch"]
    branch = RecordsTheResponse.records[-1]
    assert branch.conversation_id != record.conversation_id and branch.position == 4
    assert (await store.load(record.conversation_id, alice)).end == 4, "the original is left as it was"

    NamesTheConversation.conversation, NamesTheConversation.position = record.conversation_id, 4
    NamesTheConversation.read_only = True  # store: false
    assert (await ask(client, None, "not kept"))[0] == 200
    assert words(upstream_messages(emulator)) == ["first", "emulated: first", "second", "emulated: second", "not kept"]
    assert (await store.load(record.conversation_id, alice)).end == 4 and len(RecordsTheResponse.records) == 3

    with pytest.raises(ConfigError, match="records reads conversation_appended in after_response, which memory produces there"):
        Gateway(make_config(upstream_config(emulator, ["names", "records", "memory"], memory=memory_section), local=local))


async def test_two_requests_from_one_stored_response_at_once_both_succeed_as_branches(gateway, emulator, memory_section):
    NamesTheConversation.conversation, NamesTheConversation.position, NamesTheConversation.read_only = NEW_CONVERSATION, None, False
    RecordsTheResponse.records = []
    local = {"names": NamesTheConversation, "records": RecordsTheResponse}
    client = await gateway(upstream_config(emulator, ["names", "memory", "records"], memory=memory_section), local=local)
    assert (await ask(client, None, "root"))[0] == 200
    [root] = RecordsTheResponse.records
    NamesTheConversation.conversation, NamesTheConversation.position = root.conversation_id, root.position
    emulator.settings.latency = 0.3
    results = await asyncio.gather(ask(client, None, "left"), ask(client, None, "right"))
    assert [status for status, _, _ in results] == [200, 200], "previous_response_id may branch: no 409"
    left, right = RecordsTheResponse.records[1:]
    assert left.conversation_id != right.conversation_id and root.conversation_id in (left.conversation_id, right.conversation_id)
    assert sorted(words(r.body["messages"]) for r in emulator.stats.requests[1:]) == [
        ["root", "emulated: root", "left"], ["root", "emulated: root", "right"],
    ]


def _tenant(key: str) -> str:
    return RequestContext(request_id="-", body={}, headers={}, api_key=key).tenant


# ------------------------------------------------------------------------------------ Redis ---


@pytest.fixture
async def redis_raw(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_delete_leaves_no_key_in_redis(gateway, emulator, redis_url, redis_prefix, redis_raw):
    memory = {"store": "redis", "redis_url": redis_url, "key_prefix": redis_prefix, "encryption_keys": [base64.urlsafe_b64encode(os.urandom(32)).decode()]}
    client = await gateway(upstream_config(emulator, ["memory"], memory=memory))
    _, headers, _ = await ask(client, NEW_CONVERSATION, "private one")
    conversation = headers["x-hookgate-conversation"]
    await ask(client, conversation, "private two")
    keys = [key async for key in redis_raw.scan_iter(match=f"{redis_prefix}:*")]
    assert len(keys) == 4, keys  # meta, msgs; the owner's index and its use order (made with 'new': implicit)
    assert all(b"private" not in value for value in await redis_raw.lrange(next(k for k in keys if k.endswith(b":msgs")), 0, -1))
    deleted = await client.delete(f"/v1/conversations/{conversation}", headers={"Authorization": f"Bearer {ALICE}"})
    assert deleted.status == 200 and (await deleted.json())["deleted"] is True
    assert [key async for key in redis_raw.scan_iter(match=f"{redis_prefix}:*")] == []
    assert (await ask(client, conversation, "three"))[0] == 404


async def test_a_conversation_expires_after_its_ttl(gateway, emulator, redis_url, redis_prefix):
    client = await gateway(upstream_config(emulator, ["memory"], memory={"store": "redis", "redis_url": redis_url, "key_prefix": redis_prefix}))
    alice = {"Authorization": f"Bearer {ALICE}"}
    created = await (await client.post("/v1/conversations", json={"expires_after_seconds": 0.3}, headers=alice)).json()
    assert (await ask(client, created["id"], "quick"))[0] == 200

    async def gone() -> bool:  # listing is not a use (a GET would keep it alive)
        listed = await (await client.get("/v1/conversations", headers=alice)).json()
        return created["id"] not in [c["id"] for c in listed["data"]]

    deadline = asyncio.get_running_loop().time() + 5
    while not await gone():
        assert asyncio.get_running_loop().time() < deadline, "the conversation never expired"
        await asyncio.sleep(0.05)
    assert (await client.get(f"/v1/conversations/{created['id']}", headers=alice)).status == 404
    assert (await ask(client, created["id"], "too late"))[0] == 404


async def test_redis_down_is_a_503_for_conversations_only(gateway, emulator, redis_server, redis_prefix):
    memory = {"store": "redis", "redis_url": redis_server.url, "key_prefix": redis_prefix, "operation_timeout_seconds": 0.5}
    client = await gateway(upstream_config(emulator, ["memory", "memory_cache"], memory=memory))
    _, headers, _ = await ask(client, NEW_CONVERSATION, "before")
    conversation = headers["x-hookgate-conversation"]
    redis_server.stop()
    loop = asyncio.get_running_loop()
    for attempt in range(3):
        began = loop.time()
        status, headers, error = await ask(client, conversation, f"during {attempt}")
        assert status == 503 and error["error"]["code"] == "conversation_store_unavailable", error
        assert headers["Retry-After"] == "1" and loop.time() - began < 2
    assert (await ask(client, NEW_CONVERSATION, "a new one"))[0] == 503
    assert (await client.get(f"/v1/conversations/{conversation}", headers={"Authorization": f"Bearer {ALICE}"})).status == 503
    status, _, answer = await ask(client, None, "no conversation")
    assert status == 200 and answer["choices"][0]["message"]["content"] == "emulated: no conversation"
    ready = await client.get("/readyz")
    report = await ready.json()
    assert ready.status == 200 and report["checks"]["memory"]["status"] == "degraded"
    assert "other requests are unaffected" in report["checks"]["memory"]["detail"]


async def test_an_answer_whose_turn_cannot_be_stored_reaches_the_client_as_a_503(gateway, emulator, redis_server, redis_prefix):
    memory = {"store": "redis", "redis_url": redis_server.url, "key_prefix": redis_prefix, "operation_timeout_seconds": 0.5}
    client = await gateway(upstream_config(emulator, ["memory"], memory=memory))
    _, headers, _ = await ask(client, NEW_CONVERSATION, "before")
    emulator.settings.latency = 0.5
    during = asyncio.ensure_future(ask(client, headers["x-hookgate-conversation"], "Redis goes away now"))
    await eventually(lambda: emulator.stats.in_flight == 1, timeout=5)
    redis_server.stop()
    status, _, error = await during
    assert status == 503 and error["error"]["code"] == "conversation_store_unavailable", "never a 200 for a turn that was not kept"


class MasksEmails:
    """A stand-in for guardrails' masking: rewrites what the upstream receives, after memory."""

    def __init__(self, config) -> None:
        pass

    @hookimpl
    async def before_request(self, ctx):
        for message in ctx.body["messages"]:
            if isinstance(message.get("content"), str):
                message["content"] = message["content"].replace("ada@example.com", "<EMAIL_1>")


async def test_a_turn_is_stored_as_the_upstream_received_it(gateway, emulator, memory_section):
    client = await gateway(upstream_config(emulator, ["memory", "masks"], memory=memory_section), local={"masks": MasksEmails})
    system = {"role": "system", "content": "The user is ada@example.com."}
    _, headers, _ = await ask(client, NEW_CONVERSATION, messages=[system, {"role": "user", "content": "mail me at ada@example.com"}])
    conversation = headers["x-hookgate-conversation"]
    await ask(client, conversation, "thanks")
    assert words(upstream_messages(emulator)) == ["The user is <EMAIL_1>.", "mail me at <EMAIL_1>", "emulated: mail me at <EMAIL_1>", "thanks"]
    stored = await (await client.get(f"/v1/conversations/{conversation}", headers={"Authorization": f"Bearer {ALICE}"})).json()
    assert "ada@example.com" not in str(stored), "a masked value is never stored"
    assert stored["messages"][0]["tokens"] > 0
