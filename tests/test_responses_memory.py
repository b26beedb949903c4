"""The Responses API's stored responses in the memory plugin's shared conversation store, as a
client sees them through the official openai SDK: ``previous_response_id`` chains and
``conversation`` continue server-side conversations (any instance, with Redis), ``store: false``
reads without storing, streams store the finished response, another key sees nothing, and a
Redis outage refuses only the requests that need it."""
from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import pytest

from accounting_support import keys_section, new_key
from conftest import assert_conforms, pipeline_config, upstream_config

MODEL = "gpt-4o-mini"
ALICE, BOB = "sk-alice-test", "sk-bob-test"


@pytest.fixture(params=["memory", "redis"])
def memory_section(request) -> dict[str, Any]:
    """``[plugins.memory]`` for each store (Redis: this test's own key prefix)."""
    if request.param == "memory":
        return {}
    return {"store": "redis", "redis_url": request.getfixturevalue("redis_url"), "key_prefix": request.getfixturevalue("redis_prefix")}


@pytest.fixture
def start(gateway, emulator, memory_section):
    """A gateway with memory (these options) before the token counter and the openai provider."""

    async def make(**options: Any):
        return await gateway(upstream_config(emulator, ["memory", "token_counter"], memory={**memory_section, **options}))

    return make


def sent(emulator, index: int = -1) -> list[tuple[str, str]]:
    """(role, text) of every message the upstream received in one request."""
    return [(m["role"], m.get("content") or "") for m in emulator.stats.requests[index].body["messages"]]


def alternating(*texts: str) -> list[tuple[str, str]]:
    """The history a conversation of these user turns has, each answered by the emulator."""
    history = []
    for text in texts:
        history += [("user", text), ("assistant", f"emulated: {text}")]
    return history


async def raw_items(client, response_id: str, key: str = ALICE, **query: str) -> dict[str, Any]:
    answer = await client.get(f"/v1/responses/{response_id}/input_items", params=query, headers={"Authorization": f"Bearer {key}"})
    assert answer.status == 200, await answer.text()
    return await answer.json()


# ------------------------------------------------------------------------- chains and reads ---


async def test_a_chain_of_responses_sends_the_whole_history_and_is_read_back(start, emulator, sdk):
    client = await start()
    api = sdk(client, api_key=ALICE)
    first = await api.responses.create(model=MODEL, input="my name is Ada", instructions="Be brief.")
    assert first.output_text == "emulated: my name is Ada" and first.id.startswith("resp_")
    assert sent(emulator) == [("system", "Be brief."), ("user", "my name is Ada")]
    second = await api.responses.create(model=MODEL, input="what is my name?", previous_response_id=first.id)
    assert sent(emulator) == [*alternating("my name is Ada"), ("user", "what is my name?")], "instructions are not carried over"
    third = await api.responses.create(model=MODEL, input="spell it", previous_response_id=second.id)
    assert sent(emulator) == [*alternating("my name is Ada", "what is my name?"), ("user", "spell it")]
    assert third.previous_response_id == second.id

    retrieved = await api.responses.retrieve(third.id)
    assert retrieved.id == third.id and retrieved.output_text == "emulated: spell it"
    assert_conforms("Response", retrieved.model_dump(mode="json", exclude_unset=True))
    items = await api.responses.input_items.list(third.id, order="asc")
    assert [(item.role, item.content[0].text) for item in items.data] == [*alternating("my name is Ada", "what is my name?"), ("user", "spell it")]
    page = await raw_items(client, third.id, limit="2")  # newest first, two at a time
    assert_conforms("ResponseItemList", page)
    assert [item["content"][0]["text"] for item in page["data"]] == ["spell it", "emulated: what is my name?"] and page["has_more"]
    rest = await raw_items(client, third.id, limit="10", after=page["last_id"])
    assert [item["content"][0]["text"] for item in rest["data"]] == ["what is my name?", "emulated: my name is Ada", "my name is Ada"]
    assert not rest["has_more"]

    branch = await api.responses.create(model=MODEL, input="no, call me Grace", previous_response_id=first.id)
    assert sent(emulator) == [*alternating("my name is Ada"), ("user", "no, call me Grace")], "a chain may branch from an earlier response"
    after_third = await api.responses.create(model=MODEL, input="again", previous_response_id=third.id)
    assert sent(emulator) == [*alternating("my name is Ada", "what is my name?", "spell it"), ("user", "again")], "the branch left it alone"
    assert branch.id != after_third.id

    assert (await api.responses.delete(second.id)) is None
    with pytest.raises(openai.NotFoundError):
        await api.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        await api.responses.create(model=MODEL, input="from a deleted one", previous_response_id=second.id)
    assert (await api.responses.retrieve(third.id)).id == third.id, "deleting one response leaves the others"


async def test_a_conversation_of_the_conversations_api_is_continued_and_named_on_the_response(start, emulator, sdk):
    client = await start()
    api = sdk(client, api_key=ALICE)
    seeded = await api.conversations.create(
        extra_body={"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}]}
    )
    first = await api.responses.create(model=MODEL, input="next", conversation=seeded.id, instructions="Answer in English.")
    assert sent(emulator) == [("system", "Be kind."), ("system", "Answer in English."), ("user", "hi"), ("assistant", "hello!"), ("user", "next")]
    assert first.conversation is not None and first.conversation.id == seeded.id
    second = await api.responses.create(model=MODEL, input="and then", conversation={"id": seeded.id})
    assert sent(emulator) == [("system", "Be kind."), ("user", "hi"), ("assistant", "hello!"), *alternating("next"), ("user", "and then")]
    assert (await api.responses.retrieve(second.id)).conversation.id == seeded.id
    stored = await (await client.get(f"/v1/conversations/{seeded.id}", headers={"Authorization": f"Bearer {ALICE}"})).json()
    assert stored["turns"] == 3 and stored["system"] == [{"role": "system", "content": "Be kind."}], "instructions are never stored"
    items = await api.responses.input_items.list(second.id, order="asc")
    assert [item.content[0].text for item in items.data] == ["hi", "hello!", "next", "emulated: next", "and then"]

    for unknown in ("conv_" + "0" * 32, "not-an-id"):
        with pytest.raises(openai.NotFoundError):
            await api.responses.create(model=MODEL, input="hello?", conversation=unknown)
    with pytest.raises(openai.BadRequestError) as both:
        await api.responses.create(model=MODEL, input="both", conversation=seeded.id, previous_response_id=second.id)
    assert both.value.body["param"] == "conversation"
    assert len(emulator.stats.requests) == 2, "refused requests never reached the upstream"


async def test_another_key_can_neither_read_continue_nor_delete_a_response_or_conversation(start, emulator, sdk):
    client = await start()
    alice, bob = sdk(client, api_key=ALICE), sdk(client, api_key=BOB)
    mine = await alice.responses.create(model=MODEL, input="a secret")
    conversation = await alice.conversations.create()
    calls = [
        lambda: bob.responses.retrieve(mine.id),
        lambda: bob.responses.input_items.list(mine.id),
        lambda: bob.responses.delete(mine.id),
        lambda: bob.responses.create(model=MODEL, input="tell me", previous_response_id=mine.id),
        lambda: bob.responses.create(model=MODEL, input="tell me", conversation=conversation.id),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as refused:
            await call()
        assert "secret" not in str(refused.value.body)
    assert len(emulator.stats.requests) == 1
    theirs = await bob.responses.create(model=MODEL, input="mine now")
    with pytest.raises(openai.NotFoundError):
        await alice.responses.retrieve(theirs.id)
    assert (await alice.responses.retrieve(mine.id)).output_text == "emulated: a secret", "still there for its owner"


async def test_keys_sharing_a_namespace_share_responses_when_memory_owns_by_namespace(gateway, emulator, sdk, memory_section):
    """The surface stores a response in its conversation as the conversation's owner: the owner
    rule is memory's (``owner_scope``), not the surface's own."""
    team_a, team_b, outsider = new_key("team-a"), new_key("team-b"), new_key("outsider")
    keys = keys_section({"a": (team_a, {"cache_namespace": "team"}), "b": (team_b, {"cache_namespace": "team"}), "c": (outsider, {})})
    client = await gateway(upstream_config(emulator, ["api_keys", "memory"], api_keys=keys, memory={**memory_section, "owner_scope": "namespace"}))
    first = await sdk(client, api_key=team_a).responses.create(model=MODEL, input="shared plan")
    second = await sdk(client, api_key=team_b).responses.create(model=MODEL, input="go on", previous_response_id=first.id)
    assert sent(emulator) == [*alternating("shared plan"), ("user", "go on")]
    assert (await sdk(client, api_key=team_a).responses.retrieve(second.id)).id == second.id
    with pytest.raises(openai.NotFoundError):
        await sdk(client, api_key=outsider).responses.retrieve(second.id)


async def test_store_false_reads_the_chain_and_stores_nothing(start, emulator, sdk, client_conversations):
    client = await start()
    api = sdk(client, api_key=ALICE)
    first = await api.responses.create(model=MODEL, input="remember 7")
    assert await client_conversations(client) == 1
    peek = await api.responses.create(model=MODEL, input="what number?", previous_response_id=first.id, store=False)
    assert sent(emulator) == [*alternating("remember 7"), ("user", "what number?")]
    with pytest.raises(openai.NotFoundError):
        await api.responses.retrieve(peek.id)
    later = await api.responses.create(model=MODEL, input="and now?", previous_response_id=first.id)
    assert sent(emulator) == [*alternating("remember 7"), ("user", "and now?")], "the unstored turn left no trace"
    assert (await api.responses.retrieve(later.id)).id == later.id
    alone = await api.responses.create(model=MODEL, input="just this", store=False)
    assert sent(emulator) == [("user", "just this")]
    with pytest.raises(openai.NotFoundError):
        await api.responses.retrieve(alone.id)
    assert await client_conversations(client) == 1, "neither the peek nor the lone request made a conversation"


@pytest.fixture
def client_conversations():
    async def count(client, key: str = ALICE) -> int:
        listed = await (await client.get("/v1/conversations", params={"limit": "100"}, headers={"Authorization": f"Bearer {key}"})).json()
        return len(listed["data"])

    return count


async def test_a_streamed_turn_stores_the_finished_response(start, emulator, sdk):
    client = await start()
    api = sdk(client, api_key=ALICE)

    async def streamed(**request: Any):
        final, events = None, []
        async with await api.responses.create(model=MODEL, stream=True, **request) as stream:
            async for event in stream:
                events.append(event)
                if event.type == "response.completed":
                    final = event.response
        assert final is not None and events[0].type == "response.created" and events[0].response.id == final.id
        for event in events:
            assert_conforms("ResponseStreamEvent", event.model_dump(mode="json", exclude_unset=True))
        return final

    first = await streamed(input="stream one")
    stored = await api.responses.retrieve(first.id)
    assert stored.status == "completed" and stored.output_text == first.output_text == "emulated: stream one"
    assert stored.usage is not None and stored.usage.model_dump() == first.usage.model_dump()
    assert [item.id for item in stored.output] == [item.id for item in first.output]
    second = await streamed(input="stream two", previous_response_id=first.id)
    assert sent(emulator) == [*alternating("stream one"), ("user", "stream two")]
    third = await api.responses.create(model=MODEL, input="plain", previous_response_id=second.id)
    assert sent(emulator) == [*alternating("stream one", "stream two"), ("user", "plain")]
    assert third.output_text == "emulated: plain"


async def test_a_request_that_asked_for_no_conversation_is_answered_when_none_can_be_made(start, emulator, sdk):
    client = await start(max_conversations_per_key=1)
    api = sdk(client, api_key=ALICE)
    kept = await api.conversations.create()  # explicit: the key's one conversation, never evicted
    unstored = await api.responses.create(model=MODEL, input="second")
    assert unstored.output_text == "emulated: second" and sent(emulator) == [("user", "second")]
    with pytest.raises(openai.NotFoundError):
        await api.responses.retrieve(unstored.id)
    assert (await api.responses.create(model=MODEL, input="on", conversation=kept.id)).output_text == "emulated: on"
    with pytest.raises(openai.BadRequestError) as asked:  # asking for a conversation outright is still refused
        await api.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], extra_headers={"x-hookgate-conversation": "new"})
    assert asked.value.code == "conversation_limit_exceeded"


async def test_a_key_at_its_limit_keeps_storing_in_place_of_its_least_recently_used_chain(start, emulator, sdk, client_conversations):
    limit = 3
    client = await start(max_conversations_per_key=limit)
    api = sdk(client, api_key=ALICE)
    explicit = await api.conversations.create()
    chains = []
    for i in range(limit + 5):
        made = await api.responses.with_raw_response.create(model=MODEL, input=f"chain {i}", store=True)
        response = made.parse()
        assert made.headers.get("x-hookgate-conversation", "").startswith("conv_"), "served in a conversation"
        assert (await api.responses.retrieve(response.id)).output_text == f"emulated: chain {i}", "stored, at the limit too"
        chains.append(response)
        if i == 1:  # a turn on the oldest chain makes it the most recently used
            chains[0] = await api.responses.create(model=MODEL, input="chain 0 goes on", previous_response_id=chains[0].id)
    assert await client_conversations(client) == limit

    with pytest.raises(openai.NotFoundError) as evicted:
        await api.responses.create(model=MODEL, input="and then?", previous_response_id=chains[1].id)
    assert (evicted.value.body["code"], evicted.value.body["param"]) == ("response_not_found", "previous_response_id")
    with pytest.raises(openai.NotFoundError):
        await api.responses.retrieve(chains[1].id)
    newest = await api.responses.create(model=MODEL, input="and then?", previous_response_id=chains[-1].id)
    assert sent(emulator) == [*alternating(f"chain {limit + 4}"), ("user", "and then?")]
    branch = await api.responses.create(model=MODEL, input="or else?", previous_response_id=chains[-1].id)  # a branch is made at the limit too
    assert sent(emulator) == [*alternating(f"chain {limit + 4}"), ("user", "or else?")] and branch.id != newest.id
    chat = await api.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], extra_headers={"x-hookgate-conversation": "new"}
    )
    assert chat.http_response.status_code == 200 and chat.headers["x-hookgate-conversation"].startswith("conv_")

    on = await api.responses.create(model=MODEL, input="still mine?", conversation=explicit.id)
    assert on.output_text == "emulated: still mine?" and sent(emulator) == [("user", "still mine?")]
    listed = await (await client.get("/v1/conversations", params={"limit": "100"}, headers={"Authorization": f"Bearer {ALICE}"})).json()
    assert explicit.id in [c["id"] for c in listed["data"]] and len(listed["data"]) == limit


async def test_memory_that_does_not_serve_the_surface_leaves_it_its_own_store(gateway, emulator, sdk):
    client = await gateway(upstream_config(emulator, ["memory"], memory={"surfaces": ["chat.completions"]}))
    api = sdk(client, api_key=ALICE)
    first = await api.responses.create(model=MODEL, input="one")
    await api.responses.create(model=MODEL, input="two", previous_response_id=first.id)
    assert sent(emulator) == [*alternating("one"), ("user", "two")]
    with pytest.raises(openai.BadRequestError) as refused:
        await api.responses.create(model=MODEL, input="x", conversation="conv_" + "0" * 32)
    assert refused.value.body["param"] == "conversation"


# ------------------------------------------------------------------------------ Redis down ---


async def test_redis_down_is_a_503_for_stored_responses_only(gateway, emulator, redis_server, redis_prefix):
    memory = {"store": "redis", "redis_url": redis_server.url, "key_prefix": redis_prefix, "operation_timeout_seconds": 0.5}
    client = await gateway(upstream_config(emulator, ["memory"], memory=memory))
    alice = {"Authorization": f"Bearer {ALICE}"}
    first = await (await client.post("/v1/responses", json={"model": MODEL, "input": "before"}, headers=alice)).json()
    conversation = await (await client.post("/v1/conversations", json={}, headers=alice)).json()
    redis_server.stop()
    loop = asyncio.get_running_loop()
    needs_the_store = [
        ("POST", "/v1/responses", {"model": MODEL, "input": "during", "previous_response_id": first["id"]}),
        ("POST", "/v1/responses", {"model": MODEL, "input": "during", "previous_response_id": first["id"], "store": False}),
        ("POST", "/v1/responses", {"model": MODEL, "input": "during", "conversation": conversation["id"]}),
        ("GET", f"/v1/responses/{first['id']}", None),
        ("GET", f"/v1/responses/{first['id']}/input_items", None),
        ("DELETE", f"/v1/responses/{first['id']}", None),
    ]
    for method, path, body in needs_the_store:
        began = loop.time()
        answer = await client.request(method, path, json=body, headers=alice)
        error = await answer.json()
        assert answer.status == 503 and answer.headers["Retry-After"] == "1", (path, error)
        assert set(error) == {"error"} and error["error"]["code"] == "conversation_store_unavailable" and error["error"]["type"], error
        assert loop.time() - began < 2.5
    for body in ({"model": MODEL, "input": "no chain"}, {"model": MODEL, "input": "no chain", "store": False}):
        answer = await client.post("/v1/responses", json=body, headers=alice)
        answered = await answer.json()
        assert answer.status == 200 and answered["output"][0]["content"][0]["text"] == "emulated: no chain", answered
        assert "x-hookgate-conversation" not in answer.headers
    assert [r.body["messages"][-1]["content"] for r in emulator.stats.requests] == ["before", "no chain", "no chain"]


# -------------------------------------------------------------------- two gateway processes ---


@pytest.fixture
async def two_gateways(gateway_process, emulator, redis_url, redis_prefix):
    text = pipeline_config(
        ["memory", "token_counter", "openai"],
        memory={"store": "redis", "redis_url": redis_url, "key_prefix": redis_prefix},
        openai={"base_url": emulator.base_url, "api_key": "sk-upstream-secret-123", "models": [MODEL]},
    )
    return await asyncio.gather(asyncio.to_thread(gateway_process, text), asyncio.to_thread(gateway_process, text))


async def test_a_chain_alternating_between_two_processes_sends_exactly_the_whole_history(two_gateways, emulator):
    first, second = two_gateways
    a, b = (openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=ALICE, max_retries=0) for gateway in (first, second))
    try:
        one = await a.responses.create(model=MODEL, input="my name is Ada")
        two = await b.responses.create(model=MODEL, input="what is my name?", previous_response_id=one.id)
        three = await a.responses.create(model=MODEL, input="and spell it", previous_response_id=two.id)
        assert [sent(emulator, index) for index in range(3)] == [
            [("user", "my name is Ada")],
            [*alternating("my name is Ada"), ("user", "what is my name?")],
            [*alternating("my name is Ada", "what is my name?"), ("user", "and spell it")],
        ]
        assert (await b.responses.retrieve(three.id)).output_text == "emulated: and spell it"
        items = await b.responses.input_items.list(three.id, order="asc")
        assert [item.content[0].text for item in items.data] == ["my name is Ada", "emulated: my name is Ada", "what is my name?", "emulated: what is my name?", "and spell it"]
        assert (await a.responses.retrieve(two.id)).id == two.id
        await b.responses.delete(one.id)
        with pytest.raises(openai.NotFoundError):
            await a.responses.retrieve(one.id)
        assert (await a.responses.retrieve(three.id)).id == three.id
    finally:
        await a.close()
        await b.close()
    async with aiohttp.ClientSession() as session:  # the conversation is there for both, under one id
        conversations = []
        for gateway in (first, second):
            async with session.get(f"{gateway.url}/v1/conversations", headers={"Authorization": f"Bearer {ALICE}"}) as listed:
                conversations.append([c["id"] for c in (await listed.json())["data"]])
    assert conversations[0] == conversations[1] and len(conversations[0]) == 1
