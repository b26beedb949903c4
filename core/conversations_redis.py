"""Conversations in Redis: the store every gateway instance shares.

One conversation's keys share its id as a Redis Cluster hash tag, so every operation on it is one
Lua script in one slot, atomic and one round trip::

    [<prefix>:]hookgate:conv:v1:{conv_<id>}:meta    hash: owner digest, times, TTL, counters,
                                                     metadata, system prompt, summary
    [<prefix>:]hookgate:conv:v1:{conv_<id>}:msgs    list: one element per message
    [<prefix>:]hookgate:conv:v1:{conv_<id>}:lease   the lease of the request adding a turn
    [<prefix>:]hookgate:conv:v1:{conv_<id>}:resp    hash: stored Responses API answers

Each message element is one flag byte (``U`` when it starts a turn, ``M`` otherwise: the eviction
script finds turn boundaries without reading, or decrypting, the message) and the value,
``j`` + JSON or AES-GCM sealed (:class:`~hookgate.conversations.ConversationCipher`). Every use
moves every key's expiry ``ttl`` ahead.

An owner's listing lives in its own slot (the owner's digest is its hash tag)::

    [<prefix>:]hookgate:conv:v1:owner:{<digest>}:created   zset: id -> created (ms)
    [<prefix>:]hookgate:conv:v1:owner:{<digest>}:used      zset: implicit id -> last use

They hold ids only, never content, and a delete removes the id from both. ``created`` counts the
owner's conversations; ``used`` orders the implicit ones (made by the gateway for a request, not
through the conversations API) by their last creation, turn started or turn stored, on a
per-owner clock that follows wall time but never repeats a score (so the order is the order of
use, even within a millisecond). Creating a conversation is one script in this slot: it admits
the id, or, for an implicit conversation at ``max_conversations_per_owner``, takes the least
recently used implicit id out of both sets in the same atomic step and admits the new one in its
place; a second script then deletes the evicted conversation's keys (its own slot: a Redis
Cluster script cannot reach two slots). The index is not read on every turn: an id whose
conversation expired is dropped when a listing meets it, and when a creation would be refused
the owner's ids are checked first. The index's expiry (``max_ttl_seconds``) and the use order
move with every creation and every turn, alongside the turn's own script (same round trip).

Redis is the source of truth, so the store fails closed: any Redis trouble raises
:class:`~hookgate.conversations.ConversationStoreUnavailable` (503) through the app's shared
guard (:mod:`hookgate.redis`); the circuit it shares with the other Redis plugins makes that
immediate during an outage.
"""
from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, final

import orjson
import structlog

from .conversations import (
    Appended,
    Conversation,
    ConversationBusy,
    ConversationCipher,
    ConversationInfo,
    ConversationLimitExceeded,
    ConversationLimits,
    ConversationNotFound,
    ConversationPage,
    ConversationStore,
    ConversationStoreUnavailable,
    Lease,
    ResponseRecord,
    StoredMessage,
    Summary,
    conversation_of_response,
    decode_value,
    encode_value,
    evict_oldest_turns,
    new_conversation_id,
    owner_digest,
)
from .errors import InvalidRequest
from .health import Readiness
from .logs import IntervalLog
from .redis import RedisUnavailable, SharedRedis

__all__ = ["RedisConversationStore"]

log = structlog.get_logger("hookgate.conversations")

T = TypeVar("T")

_OFF_LOOP_BYTES = 256 * 1024
"""A conversation larger than this is decoded (and decrypted) in a worker thread."""
_TURN, _MESSAGE = b"U", b"M"

# Every script takes the conversation's keys in this order: meta, msgs, lease, resp.
_LOAD = """
local m = redis.call('HMGET', KEYS[1], 'o', 'x')
if m[1] ~= ARGV[1] then return {0} end
if ARGV[2] ~= '' and not redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3]) then return {2} end
redis.call('HSET', KEYS[1], 'a', ARGV[4])
redis.call('PEXPIRE', KEYS[1], m[2]); redis.call('PEXPIRE', KEYS[2], m[2]); redis.call('PEXPIRE', KEYS[4], m[2])
-- The messages go back as one string of length-framed elements: one reply to parse, not one per message.
local framed = {}
for i, element in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  framed[i] = string.format('%08x', #element) .. element
end
return {1, redis.call('HGETALL', KEYS[1]), table.concat(framed)}
"""
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'o', ARGV[1], 'c', ARGV[2], 'u', ARGV[2], 'a', ARGV[2], 'x', ARGV[3],
           's', ARGV[4], 't', ARGV[5], 'b', ARGV[6], 'm', ARGV[7], 'y', ARGV[8])
for i = 9, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3]); redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""
# Append, evict the oldest whole turns past the limits (a turn starts at an element whose first
# byte is 'U' = 85; the newest turn is always kept), release the lease: one atomic step.
_APPEND = """
local m = redis.call('HMGET', KEYS[1], 'o', 'x', 's')
if m[1] ~= ARGV[1] then return {0} end
if redis.call('GET', KEYS[3]) ~= ARGV[2] then return {2} end
local first = tonumber(m[3]) + redis.call('LLEN', KEYS[2])
for i = 10, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'y', ARGV[7]) end
local turns = tonumber(redis.call('HINCRBY', KEYS[1], 't', ARGV[8]))
local bytes = tonumber(redis.call('HINCRBY', KEYS[1], 'b', ARGV[9]))
local max_turns, max_bytes = tonumber(ARGV[4]), tonumber(ARGV[5])
local evicted = 0
while (turns > max_turns or bytes > max_bytes) and turns > 1 do
  local head = redis.call('LPOP', KEYS[2])
  if not head then break end
  if string.byte(head, 1) == 85 then turns = turns - 1 end
  bytes = bytes - #head
  evicted = evicted + 1
  while true do
    local nxt = redis.call('LINDEX', KEYS[2], 0)
    if not nxt or string.byte(nxt, 1) == 85 then break end
    redis.call('LPOP', KEYS[2])
    bytes = bytes - #nxt
    evicted = evicted + 1
  end
end
local start = tonumber(redis.call('HINCRBY', KEYS[1], 's', evicted))
redis.call('HSET', KEYS[1], 't', turns, 'b', bytes, 'u', ARGV[3], 'a', ARGV[3])
redis.call('DEL', KEYS[3])
redis.call('PEXPIRE', KEYS[1], m[2]); redis.call('PEXPIRE', KEYS[2], m[2]); redis.call('PEXPIRE', KEYS[4], m[2])
return {1, first, start + redis.call('LLEN', KEYS[2]), turns, evicted}
"""
# Compare-and-delete / compare-and-extend: never touches a lease another request holds now.
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_DELETE = """
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
"""
_SUMMARY = """
local m = redis.call('HMGET', KEYS[1], 'o', 'zu')
if m[1] ~= ARGV[1] then return 0 end
if m[2] and tonumber(m[2]) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'z', ARGV[3], 'zu', ARGV[2])
return 1
"""
# Responses: ARGV owner, response id, [blob, max].
_PUT_RESPONSE = """
local m = redis.call('HMGET', KEYS[1], 'o', 'x')
if m[1] ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[4], ARGV[2]) == 0 and redis.call('HLEN', KEYS[4]) >= tonumber(ARGV[4]) then return 2 end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], m[2]); redis.call('PEXPIRE', KEYS[2], m[2]); redis.call('PEXPIRE', KEYS[4], m[2])
return 1
"""
_GET_RESPONSE = """
local m = redis.call('HMGET', KEYS[1], 'o', 'x')
if m[1] ~= ARGV[1] then return false end
local found = redis.call('HGET', KEYS[4], ARGV[2])
if found then
  redis.call('PEXPIRE', KEYS[1], m[2]); redis.call('PEXPIRE', KEYS[2], m[2]); redis.call('PEXPIRE', KEYS[4], m[2])
end
return found
"""
_DELETE_RESPONSE = """
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return 0 end
return redis.call('HDEL', KEYS[4], ARGV[2])
"""

# The owner's index: KEYS created, used. A use score is the later of now and one more than the
# newest score, so two uses in one millisecond keep their order.
_NEXT_USE = """
local function next_use(used, now)
  local top = redis.call('ZREVRANGE', used, 0, 0, 'WITHSCORES')[2]
  if top and tonumber(top) >= now then return tonumber(top) + 1 end
  return now
end
"""
# ARGV id, created (ms), max, ttl (ms), implicit ('1'/'0'). Returns {0} (refused) or {1, evicted id or ''}.
_ADMIT = _NEXT_USE + """
local evicted = ''
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  if ARGV[5] ~= '1' then return {0} end
  evicted = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not evicted then return {0} end
  redis.call('ZREM', KEYS[1], evicted); redis.call('ZREM', KEYS[2], evicted)
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if ARGV[5] == '1' then redis.call('ZADD', KEYS[2], next_use(KEYS[2], tonumber(ARGV[2])), ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[4]); redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {1, evicted}
"""
# A turn started or was stored: ARGV id, now (ms), ttl (ms). XX: an explicit id, or one evicted
# meanwhile, never enters the use order.
_USED = _NEXT_USE + """
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  redis.call('ZADD', KEYS[2], 'XX', next_use(KEYS[2], tonumber(ARGV[2])), ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3]); redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""
_LIST = """
local begin = 0
if ARGV[1] ~= '' then
  local rank = redis.call('ZREVRANK', KEYS[1], ARGV[1])
  if not rank then return {0} end
  begin = rank + 1
end
return {1, redis.call('ZREVRANGE', KEYS[1], begin, begin + tonumber(ARGV[2]))}
"""
_UNINDEX = "redis.call('ZREM', KEYS[2], ARGV[1]) return redis.call('ZREM', KEYS[1], ARGV[1])"


@final
class RedisConversationStore(ConversationStore):
    """Conversations in Redis, shared by every gateway instance (see the module docstring).

    :param redis: the app's shared server (``await redis_service(app).connect(url)``).
    :param key_prefix: prepended with ``:`` to every key, to share one Redis between deployments.
    :param cipher: seals values at rest; None stores them as JSON.
    :param timeout: seconds each operation may take before the request gets a 503.
    """

    def __init__(
        self,
        redis: SharedRedis,
        limits: ConversationLimits | None = None,
        *,
        key_prefix: str = "",
        cipher: ConversationCipher | None = None,
        timeout: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = limits or ConversationLimits()
        self.redis = redis
        self.cipher = cipher
        self.timeout = timeout
        self._clock = clock
        self._prefix = f"{key_prefix}:" if key_prefix else ""
        client = redis.client
        self._scripts = {name: client.register_script(source) for name, source in _SCRIPTS.items()}
        self._unreadable = IntervalLog(log, "conversation_unreadable", 60.0)

    # ------------------------------------------------------------------------------- keys ---

    def keys_of(self, conversation_id: str) -> list[str]:
        """The conversation's keys: meta, msgs, lease, resp (all in one hash slot)."""
        base = f"{self._prefix}hookgate:conv:v1:{{{conversation_id}}}"
        return [base + ":meta", base + ":msgs", base + ":lease", base + ":resp"]

    def index_of(self, owner: str) -> list[str]:
        """The owner's index keys: every conversation by creation, the implicit ones by last use
        (one hash slot)."""
        base = f"{self._prefix}hookgate:conv:v1:owner:{{{owner_digest(owner)}}}"
        return [base + ":created", base + ":used"]

    # -------------------------------------------------------------------------- interface ---

    async def create(
        self,
        owner: str,
        *,
        metadata: Mapping[str, str] | None = None,
        system: Sequence[dict[str, Any]] = (),
        messages: Sequence[StoredMessage] = (),
        ttl_seconds: float | None = None,
        implicit: bool = False,
    ) -> Conversation:
        now = self._clock()
        ttl = self.limits.ttl_for(ttl_seconds)
        conversation_id = new_conversation_id()
        elements = [self._element(conversation_id, message) for message in messages]
        evicted = evict_oldest_turns([(e[:1] == _TURN, len(e)) for e in elements], sum(m.starts_turn for m in messages), self.limits)
        elements, kept = elements[evicted:], list(messages[evicted:])
        turns = sum(message.starts_turn for message in kept)
        size = sum(len(element) for element in elements)
        args: list[Any] = [
            owner_digest(owner), _ms(now), _ms(ttl), evicted, turns, size,
            encode_value(dict(metadata or {}), self.cipher, conversation_id),
            encode_value(list(system), self.cipher, conversation_id),
            *elements,
        ]
        # Written before it is admitted: an id in the owner's index always has its keys, so a
        # concurrent creation that evicts it deletes them (written after, they would outlive
        # their eviction, uncounted). Refused, they are deleted again; a failure in between
        # leaves keys whose id nobody was given, gone with their TTL.
        keys = self.keys_of(conversation_id)
        await self._run(lambda: self._scripts["create"](keys=keys[:2], args=args))
        admit_args = [
            conversation_id, _ms(now), self.limits.max_conversations_per_owner, _ms(self.limits.max_ttl_seconds), "1" if implicit else "0"
        ]
        admitted = await self._run(lambda: self._scripts["admit"](keys=self.index_of(owner), args=admit_args))
        if not admitted[0] and await self._forget_expired(owner):
            admitted = await self._run(lambda: self._scripts["admit"](keys=self.index_of(owner), args=admit_args))
        if not admitted[0]:
            await self._advisory(lambda: self._scripts["delete"](keys=keys, args=[owner_digest(owner)]))
            raise ConversationLimitExceeded(
                f"This key has {self.limits.max_conversations_per_owner} conversations, the most allowed; delete some first.", param="conversation"
            )
        evicted_id = admitted[1].decode() if isinstance(admitted[1], bytes) else admitted[1]
        if evicted_id:
            # Out of the owner's index already, atomically with this admission; now its keys.
            await self._run(lambda: self._scripts["delete"](keys=self.keys_of(evicted_id), args=[owner_digest(owner)]))
        return Conversation(
            id=conversation_id, created_at=now, updated_at=now, expires_at=now + ttl, ttl_seconds=ttl,
            metadata=dict(metadata or {}), system=tuple(system), messages=tuple(kept), start=evicted,
            turns=turns, bytes=size,
        )

    async def load(self, conversation_id: str, owner: str) -> Conversation:
        return await self._load(conversation_id, owner, token="")

    async def begin_turn(self, conversation_id: str, owner: str) -> tuple[Conversation, Lease]:
        token = secrets.token_hex(16)
        conversation, _ = await asyncio.gather(self._load(conversation_id, owner, token=token), self._used(conversation_id, owner))
        return conversation, Lease(conversation_id, owner, token)

    async def append(self, lease: Lease, messages: Sequence[StoredMessage], *, system: Sequence[dict[str, Any]] | None = None) -> Appended:
        conversation_id = lease.conversation_id
        elements = [self._element(conversation_id, message) for message in messages]
        system_blob = encode_value(list(system), self.cipher, conversation_id) if system is not None else b""
        now = self._clock()
        args: list[Any] = [
            owner_digest(lease.owner), lease.token, _ms(now), self.limits.max_turns, self.limits.max_bytes,
            "1" if system is not None else "0", system_blob,
            sum(message.starts_turn for message in messages), sum(len(element) for element in elements),
            *elements,
        ]
        outcome, _ = await asyncio.gather(
            self._run(lambda: self._scripts["append"](keys=self.keys_of(conversation_id), args=args)),
            self._used(conversation_id, lease.owner),
        )
        if outcome[0] == 0:
            raise ConversationNotFound("The conversation was deleted or expired while this request ran; its turn was not stored.")
        if outcome[0] == 2:
            raise ConversationBusy("This request's lease on the conversation expired and another request took it; its turn was not stored.")
        _, first, end, turns, evicted = (int(value) for value in outcome)
        return Appended(conversation_id, first, end, turns, evicted)

    async def release(self, lease: Lease) -> None:
        await self._run(lambda: self._scripts["release"](keys=[self.keys_of(lease.conversation_id)[2]], args=[lease.token]))

    async def renew(self, lease: Lease) -> bool:
        lease_key = self.keys_of(lease.conversation_id)[2]
        renewed = await self._run(lambda: self._scripts["renew"](keys=[lease_key], args=[lease.token, _ms(self.limits.lease_seconds)]))
        return bool(renewed)

    async def list(self, owner: str, *, limit: int = 20, after: str | None = None) -> ConversationPage:
        limit = max(1, min(int(limit), 100))
        outcome = await self._run(lambda: self._scripts["list"](keys=self.index_of(owner), args=[after or "", limit]))
        if outcome[0] == 0:
            raise InvalidRequest("'after' is not a conversation of this listing.", param="after")
        ids = [raw.decode() if isinstance(raw, bytes) else raw for raw in outcome[1]]
        page_ids, has_more = ids[:limit], len(ids) > limit
        client = self.redis.client

        async def fetch() -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for conversation_id in page_ids:
                pipe.hmget(self.keys_of(conversation_id)[0], "o", "c", "u", "t", "b", "m")
            return await pipe.execute()

        rows = await self._run(fetch) if page_ids else []
        digest = owner_digest(owner).encode()
        infos, gone = [], []
        for conversation_id, row in zip(page_ids, rows):
            if row[0] != digest:
                gone.append(conversation_id)  # expired (or left behind by an instance that died mid-delete)
                continue
            metadata = self._decoded(lambda: decode_value(row[5], self.cipher, conversation_id))
            infos.append(ConversationInfo(conversation_id, int(row[1]) / 1000, int(row[2]) / 1000, int(row[3]), int(row[4]), metadata))
        if gone:
            await self._advisory(lambda: self._unindex(owner, gone))
        return ConversationPage(tuple(infos), has_more)

    async def delete(self, conversation_id: str, owner: str) -> bool:
        deleted = await self._run(lambda: self._scripts["delete"](keys=self.keys_of(conversation_id), args=[owner_digest(owner)]))
        if not deleted:
            return False
        await self._run(lambda: self._scripts["unindex"](keys=self.index_of(owner), args=[conversation_id]))
        return True

    async def save_summary(self, conversation_id: str, owner: str, summary: Summary) -> bool:
        blob = encode_value({"text": summary.text, "upto": summary.upto, "model": summary.model, "at": summary.created_at}, self.cipher, conversation_id)
        saved = await self._run(
            lambda: self._scripts["summary"](keys=self.keys_of(conversation_id)[:1], args=[owner_digest(owner), summary.upto, blob])
        )
        return bool(saved)

    async def put_response(self, owner: str, record: ResponseRecord) -> None:
        if conversation_of_response(record.id) != record.conversation_id:
            raise ValueError("a response id must be made by new_response_id for its conversation")
        value = {"position": record.position, "body": record.body, "created_at": record.created_at}
        blob = encode_value(value, self.cipher, record.id)
        stored = await self._run(
            lambda: self._scripts["put_response"](
                keys=self.keys_of(record.conversation_id),
                args=[owner_digest(owner), record.id, blob, self.limits.max_responses_per_conversation],
            )
        )
        if stored == 0:
            raise ConversationNotFound()
        if stored == 2:
            raise ConversationLimitExceeded("This conversation stores as many responses as allowed.", param="store")

    async def get_response(self, owner: str, response_id: str) -> ResponseRecord | None:
        conversation_id = conversation_of_response(response_id)
        if conversation_id is None:
            return None
        blob = await self._run(lambda: self._scripts["get_response"](keys=self.keys_of(conversation_id), args=[owner_digest(owner), response_id]))
        if not blob:
            return None
        value = self._decoded(lambda: decode_value(blob, self.cipher, response_id))
        return ResponseRecord(response_id, conversation_id, int(value["position"]), value["body"], float(value.get("created_at") or 0.0))

    async def delete_response(self, owner: str, response_id: str) -> bool:
        conversation_id = conversation_of_response(response_id)
        if conversation_id is None:
            return False
        deleted = await self._run(
            lambda: self._scripts["delete_response"](keys=self.keys_of(conversation_id), args=[owner_digest(owner), response_id])
        )
        return bool(deleted)

    def readiness(self) -> Readiness:
        return self.redis.readiness(detail_when_down="requests naming a conversation get 503; other requests are unaffected")

    # -------------------------------------------------------------------------- internals ---

    async def _load(self, conversation_id: str, owner: str, *, token: str) -> Conversation:
        now = self._clock()
        outcome = await self._run(
            lambda: self._scripts["load"](
                keys=self.keys_of(conversation_id), args=[owner_digest(owner), token, _ms(self.limits.lease_seconds), _ms(now)]
            )
        )
        if outcome[0] == 0:
            raise ConversationNotFound()
        if outcome[0] == 2:
            raise ConversationBusy()
        flat, elements = outcome[1], _unframed(outcome[2])
        meta = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
        size = sum(map(len, elements))
        if size > _OFF_LOOP_BYTES:
            return await asyncio.to_thread(self._decoded, lambda: self._conversation(conversation_id, meta, elements, now))
        return self._decoded(lambda: self._conversation(conversation_id, meta, elements, now))

    def _conversation(self, conversation_id: str, meta: dict[str, bytes], elements: list[bytes], now: float) -> Conversation:
        cipher = self.cipher
        ttl = int(meta["x"]) / 1000
        summary = None
        if meta.get("z"):
            value = decode_value(meta["z"], cipher, conversation_id)
            summary = Summary(value["text"], int(value["upto"]), value.get("model") or "", float(value.get("at") or 0.0))
        return Conversation(
            id=conversation_id,
            created_at=int(meta["c"]) / 1000,
            updated_at=int(meta["u"]) / 1000,
            expires_at=now + ttl,
            ttl_seconds=ttl,
            metadata=decode_value(meta["m"], cipher, conversation_id),
            system=tuple(decode_value(meta["y"], cipher, conversation_id)),
            messages=tuple(StoredMessage.from_json(value) for value in self._messages(conversation_id, elements)),
            start=int(meta["s"]),
            turns=int(meta["t"]),
            bytes=int(meta["b"]),
            summary=summary,
        )

    def _messages(self, conversation_id: str, elements: list[bytes]) -> list[Any]:
        """The stored messages' values: plain JSON ones parsed in one call (a 50-turn
        conversation is one parse, not a hundred), sealed ones opened one by one."""
        if self.cipher is None and all(element[1:2] == b"j" for element in elements):
            return orjson.loads(b"[" + b",".join(element[2:] for element in elements) + b"]")  # type: ignore[no-any-return]
        return [decode_value(element[1:], self.cipher, conversation_id) for element in elements]

    def _element(self, conversation_id: str, message: StoredMessage) -> bytes:
        flag = _TURN if message.starts_turn else _MESSAGE
        return flag + encode_value(message.to_json(), self.cipher, conversation_id)

    async def _forget_expired(self, owner: str) -> bool:
        """Drop the owner's index entries whose conversation expired; True if any was dropped
        (bounded: the index holds at most ``max_conversations_per_owner`` ids)."""
        index, client = self.index_of(owner)[0], self.redis.client
        ids = [raw.decode() for raw in await self._run(lambda: client.zrange(index, 0, -1))]
        gone: list[str] = []
        for begin in range(0, len(ids), 1000):
            batch = ids[begin : begin + 1000]

            async def exists(batch: list[str] = batch) -> list[Any]:
                pipe = client.pipeline(transaction=False)
                for conversation_id in batch:
                    pipe.exists(self.keys_of(conversation_id)[0])
                return await pipe.execute()

            gone.extend(cid for cid, found in zip(batch, await self._run(exists)) if not found)
        if gone:
            await self._run(lambda: self._unindex(owner, gone))
        return bool(gone)

    async def _unindex(self, owner: str, ids: Sequence[str]) -> None:
        created, used = self.index_of(owner)
        pipe = self.redis.client.pipeline(transaction=False)
        pipe.zrem(created, *ids)
        pipe.zrem(used, *ids)
        await pipe.execute()

    async def _used(self, conversation_id: str, owner: str) -> None:
        """A turn of the conversation started or was stored: it becomes the owner's most recently
        used implicit conversation, and the owner's index lives on. Upkeep only: never fails a turn."""
        args = [conversation_id, _ms(self._clock()), _ms(self.limits.max_ttl_seconds)]
        await self._advisory(lambda: self._scripts["used"](keys=self.index_of(owner), args=args))

    async def _advisory(self, operation: Callable[[], Awaitable[Any]]) -> None:
        """An index upkeep operation: its failure only delays the upkeep, never fails a request."""
        try:
            await self._run(operation)
        except ConversationStoreUnavailable:
            pass

    def _decoded(self, decode: Callable[[], T]) -> T:
        try:
            return decode()
        except (ValueError, KeyError) as exc:
            self._unreadable.error(error=str(exc)[:200])
            raise ConversationStoreUnavailable(
                "A stored conversation cannot be read with the configured encryption keys.", code="conversation_unreadable"
            ) from None

    async def _run(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await self.redis.run(operation, timeout=self.timeout)
        except RedisUnavailable:
            raise ConversationStoreUnavailable() from None


_SCRIPTS = {
    "load": _LOAD,
    "create": _CREATE,
    "append": _APPEND,
    "release": _RELEASE,
    "renew": _RENEW,
    "delete": _DELETE,
    "summary": _SUMMARY,
    "put_response": _PUT_RESPONSE,
    "get_response": _GET_RESPONSE,
    "delete_response": _DELETE_RESPONSE,
    "admit": _ADMIT,
    "used": _USED,
    "list": _LIST,
    "unindex": _UNINDEX,
}


def _unframed(framed: bytes) -> list[bytes]:
    """The elements the load script framed (8 hex digits of length, then the bytes)."""
    elements, offset, end = [], 0, len(framed)
    while offset < end:
        size = int(framed[offset : offset + 8], 16)
        elements.append(framed[offset + 8 : offset + 8 + size])
        offset += 8 + size
    return elements


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
