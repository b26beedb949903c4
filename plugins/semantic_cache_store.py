"""The semantic cache in Redis: the entries (the source of truth), the stream of changes, and
each namespace's shadow observations.

Keys (``<base>`` is ``[<key_prefix>:]hookgate:semcache:v1``; ``<ns>`` a namespace's hash, in a
Redis Cluster hash tag so that a namespace's keys meet in one script)::

    <base>:{<ns>}:e:<id>     hash: partition, prompt, vector (float32 bytes), answer (JSON),
                             stored_at, expires_at; expires with the entry's TTL
    <base>:{<ns>}:ids        sorted set of the namespace's entry ids by expiry (bounds and rebuilds)
    <base>:{<ns>}:shadow     list of the latest shadow comparisons, newest first ("1" agreed)
    <base>:namespaces        hash: <ns> -> the namespace's name (what a rebuild walks)
    <base>:stream            stream of adds and deletes, for the instances' local indexes

Every operation goes through the app's Redis service with a deadline (``SharedRedis.run``) and
raises :class:`~hookgate.redis.RedisUnavailable` when Redis does not answer; the plugin then turns
its semantic tier off for that request (a lookup misses, a store is dropped).
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar, final

from hookgate.redis import SharedRedis

from .semantic_cache_backend import IndexedEntry

__all__ = ["EntryStore", "StoredAnswer", "StreamChange", "StreamPosition", "new_entry_id"]

T = TypeVar("T")

_ENTRY_FIELDS: Final = ("partition", "prompt", "vector", "expires_at")
"""What a rebuild reads of each entry (never the answer: the index does not hold answers)."""


def new_entry_id() -> str:
    """A random entry id (16 hex digits)."""
    return secrets.token_hex(8)


@final
@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """A candidate confirmed in Redis at hit time, with its namespace's shadow record."""

    answer: bytes
    stored_at: float
    observations: tuple[bool, ...]
    """The namespace's latest shadow comparisons, newest first (True: the answers agreed)."""


@final
@dataclass(frozen=True, slots=True)
class StreamChange:
    """One message of the stream: an entry added (with what the index needs) or deleted."""

    message_id: str
    op: str
    """``add``, ``del``, or ``skip`` (a message this version cannot read)."""
    entry: IndexedEntry | None
    """For ``add``."""
    namespace_id: str
    entry_id: str
    partition: str


@final
@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where the stream stands, to tell whether an index fell behind."""

    exists: bool
    last_id: str
    """The last message id written (``0-0`` for none)."""
    added: int
    """Messages ever added (drops when Redis lost the stream: a restart without persistence)."""
    length: int
    """Messages still in the stream; ``added - length`` were trimmed (the oldest first)."""

    @property
    def trimmed(self) -> int:
        return max(0, self.added - self.length)


class EntryStore:
    """Reads and writes the semantic cache's keys (module docstring)."""

    _ADD = """
        -- KEYS[1] entry, KEYS[2] ids; ARGV: now_ms, expires_ms, ttl_ms, max_entries, entry prefix, id, fields...
        local fields = {}
        for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
        redis.call('HSET', KEYS[1], unpack(fields))
        redis.call('PEXPIRE', KEYS[1], ARGV[3])
        redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
        redis.call('ZADD', KEYS[2], ARGV[2], ARGV[6])
        local ttl = redis.call('PTTL', KEYS[2])
        if ttl < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
        local evicted = {}
        local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
        if excess > 0 then
            local oldest = redis.call('ZPOPMIN', KEYS[2], excess)
            for i = 1, #oldest, 2 do
                evicted[#evicted + 1] = oldest[i]
                redis.call('DEL', ARGV[5] .. oldest[i])
            end
        end
        return evicted
    """
    _CONFIRM = """
        -- KEYS[1] entry, KEYS[2] shadow; ARGV: now_ms
        local found = redis.call('HMGET', KEYS[1], 'answer', 'stored_at', 'expires_at')
        local shadow = redis.call('LRANGE', KEYS[2], 0, -1)
        if not found[1] or not found[3] or tonumber(found[3]) <= tonumber(ARGV[1]) then return {false, false, shadow} end
        return {found[1], found[2], shadow}
    """
    _DELETE = """
        -- KEYS[1] entry, KEYS[2] ids; ARGV: id
        local partition = redis.call('HGET', KEYS[1], 'partition')
        redis.call('DEL', KEYS[1])
        redis.call('ZREM', KEYS[2], ARGV[1])
        return partition or false
    """

    def __init__(
        self,
        redis: SharedRedis,
        *,
        key_prefix: str,
        operation_timeout: float,
        scan_timeout: float,
        stream_max_len: int,
        max_entries_per_namespace: int,
        shadow_window: int,
        shadow_ttl_seconds: float,
    ) -> None:
        self.redis = redis
        self.base = f"{key_prefix}:hookgate:semcache:v1" if key_prefix else "hookgate:semcache:v1"
        self.stream = f"{self.base}:stream"
        self.namespaces = f"{self.base}:namespaces"
        self._timeout = operation_timeout
        self._scan_timeout = scan_timeout
        self._stream_max_len = stream_max_len
        self._max_entries = max_entries_per_namespace
        self._shadow_window = shadow_window
        self._shadow_ttl_ms = int(shadow_ttl_seconds * 1000)
        client = redis.client
        self._add = client.register_script(self._ADD)
        self._confirm = client.register_script(self._CONFIRM)
        self._delete = client.register_script(self._DELETE)

    # -- keys

    def entry_key(self, namespace_id: str, entry_id: str) -> str:
        return f"{self.base}:{{{namespace_id}}}:e:{entry_id}"

    def _ids_key(self, namespace_id: str) -> str:
        return f"{self.base}:{{{namespace_id}}}:ids"

    def _shadow_key(self, namespace_id: str) -> str:
        return f"{self.base}:{{{namespace_id}}}:shadow"

    async def _run(self, operation: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        return await self.redis.run(operation, timeout=timeout or self._timeout)

    # -- entries

    async def add(self, entry: IndexedEntry, namespace: str, answer: bytes, ttl_seconds: float) -> list[str]:
        """Store an entry and tell the stream; returns the ids evicted to keep the namespace
        within ``max_entries_per_namespace`` (already deleted, their deletions streamed)."""
        now = time.time()
        ttl_ms = max(1, int(ttl_seconds * 1000))
        fields = [
            "partition", entry.partition,
            "prompt", entry.prompt,
            "vector", entry.vector.astype("<f4").tobytes(),
            "answer", answer,
            "stored_at", repr(now),
            "expires_at", str(int(entry.expires_at * 1000)),
            "namespace", namespace,
        ]  # fmt: skip
        keys = [self.entry_key(entry.namespace_id, entry.entry_id), self._ids_key(entry.namespace_id)]
        args = [int(now * 1000), int(entry.expires_at * 1000), ttl_ms, self._max_entries, self.entry_key(entry.namespace_id, ""), entry.entry_id, *fields]
        evicted = await self._run(lambda: self._add(keys=keys, args=args))
        evicted_ids = [_text(item) for item in evicted or ()]

        async def announce() -> None:
            pipe = self.redis.client.pipeline(transaction=False)
            pipe.hset(self.namespaces, entry.namespace_id, namespace)
            pipe.xadd(self.stream, _add_message(entry), maxlen=self._stream_max_len, approximate=True)
            for entry_id in evicted_ids:
                pipe.xadd(self.stream, _del_message(entry.namespace_id, entry_id, ""), maxlen=self._stream_max_len, approximate=True)
            await pipe.execute()

        await self._run(announce)
        return evicted_ids

    async def confirm(self, namespace_id: str, entry_id: str) -> tuple[StoredAnswer | None, tuple[bool, ...]]:
        """The entry's answer if it is still there and unexpired (None otherwise), and the
        namespace's shadow record, in one round trip."""
        keys = [self.entry_key(namespace_id, entry_id), self._shadow_key(namespace_id)]
        answer, stored_at, shadow = await self._run(lambda: self._confirm(keys=keys, args=[int(time.time() * 1000)]))
        observations = tuple(_text(item) == "1" for item in shadow or ())
        if not answer:
            return None, observations
        return StoredAnswer(bytes(answer), _float(stored_at), observations), observations

    async def delete(self, namespace_id: str, entry_id: str) -> bool:
        """Delete an entry and stream the deletion; True when it existed."""
        keys = [self.entry_key(namespace_id, entry_id), self._ids_key(namespace_id)]
        partition = await self._run(lambda: self._delete(keys=keys, args=[entry_id]))
        message = _del_message(namespace_id, entry_id, _text(partition) if partition else "")
        await self._run(lambda: self.redis.client.xadd(self.stream, message, maxlen=self._stream_max_len, approximate=True))
        return bool(partition)

    # -- shadow observations

    async def observe(self, namespace_id: str, agreed: bool) -> None:
        """Record one shadow comparison (the list keeps the latest ``shadow_window``)."""
        key = self._shadow_key(namespace_id)

        async def push() -> None:
            pipe = self.redis.client.pipeline(transaction=True)
            pipe.lpush(key, "1" if agreed else "0")
            pipe.ltrim(key, 0, self._shadow_window - 1)
            pipe.pexpire(key, self._shadow_ttl_ms)
            await pipe.execute()

        await self._run(push)

    async def observations(self, namespace_id: str) -> tuple[bool, ...]:
        shadow = await self._run(lambda: self.redis.client.lrange(self._shadow_key(namespace_id), 0, -1))
        return tuple(_text(item) == "1" for item in shadow)

    async def namespace_names(self) -> dict[str, str]:
        """Namespace hash -> name, of every namespace that stored an entry."""
        found = await self._run(lambda: self.redis.client.hgetall(self.namespaces), self._scan_timeout)
        return {_text(k): _text(v) for k, v in found.items()}

    async def forget_namespace_if_empty(self, namespace_id: str) -> bool:
        """Drop a namespace from ``<base>:namespaces`` once none of its entries is left (its ids
        set expired with its last entry): the hash stays as small as the live namespaces."""
        _FORGET = """
            if redis.call('EXISTS', KEYS[1]) == 0 then return redis.call('HDEL', KEYS[2], ARGV[1]) end
            return 0
        """
        keys = [self._ids_key(namespace_id), self.namespaces]
        return bool(await self._run(lambda: self.redis.client.eval(_FORGET, 2, *keys, namespace_id), self._scan_timeout))

    # -- the stream

    async def position(self) -> StreamPosition:
        """Where the stream stands (see :class:`StreamPosition`)."""

        async def info() -> Any:
            pipe = self.redis.client.pipeline(transaction=False)
            pipe.exists(self.stream)
            pipe.xinfo_stream(self.stream)
            return await pipe.execute(raise_on_error=False)

        exists, details = await self._run(info)
        if not exists or isinstance(details, Exception):
            return StreamPosition(False, "0-0", 0, 0)
        length = int(details.get("length") or 0)
        # entries-added exists since Redis 7.0; before it, trimming cannot be told from the stream
        added = int(details.get("entries-added") or length)
        return StreamPosition(True, _text(details.get("last-generated-id") or "0-0"), added, length)

    async def read(self, after: str, *, count: int, block_ms: int) -> list[StreamChange]:
        """Stream messages after ``after`` (waiting up to ``block_ms`` for one; 0: not at all)."""
        timeout = self._timeout + block_ms / 1000
        block = block_ms or None  # Redis reads BLOCK 0 as "forever"
        found = await self._run(lambda: self.redis.client.xread({self.stream: after}, count=count, block=block), timeout)
        changes: list[StreamChange] = []
        for _stream, messages in found or ():
            for message_id, fields in messages:
                changes.append(_change_of(_text(message_id), fields) or StreamChange(_text(message_id), "skip", None, "", "", ""))
        return changes

    async def scan(self, namespace_id: str, *, page: int = 500) -> list[IndexedEntry]:
        """Every live entry of a namespace (for a rebuild), without their answers."""
        ids_key = self._ids_key(namespace_id)
        now_ms = int(time.time() * 1000)
        entries: list[IndexedEntry] = []
        start = 0
        while True:
            ids = await self._run(
                lambda: self.redis.client.zrangebyscore(ids_key, now_ms, "+inf", start=start, num=page), self._scan_timeout
            )
            if not ids:
                return entries
            entry_ids = [_text(i) for i in ids]

            async def fetch() -> Any:
                pipe = self.redis.client.pipeline(transaction=False)
                for entry_id in entry_ids:
                    pipe.hmget(self.entry_key(namespace_id, entry_id), *_ENTRY_FIELDS)
                return await pipe.execute()

            rows = await self._run(fetch, self._scan_timeout)
            for entry_id, row in zip(entry_ids, rows):
                entry = _entry_of(namespace_id, entry_id, row)
                if entry is not None:
                    entries.append(entry)
            if len(ids) < page:
                return entries
            start += page


# --- encoding -------------------------------------------------------------------------------------


def _add_message(entry: IndexedEntry) -> dict[str, Any]:
    return {
        "op": "add",
        "ns": entry.namespace_id,
        "id": entry.entry_id,
        "partition": entry.partition,
        "prompt": entry.prompt,
        "vector": entry.vector.astype("<f4").tobytes(),
        "expires_at": str(int(entry.expires_at * 1000)),
    }


def _del_message(namespace_id: str, entry_id: str, partition: str) -> dict[str, Any]:
    return {"op": "del", "ns": namespace_id, "id": entry_id, "partition": partition}


def _change_of(message_id: str, raw: dict[Any, Any]) -> StreamChange | None:
    fields = {_text(k): v for k, v in raw.items()}
    op, namespace_id, entry_id = _text(fields.get("op", b"")), _text(fields.get("ns", b"")), _text(fields.get("id", b""))
    partition = _text(fields.get("partition", b""))
    if op == "del" and namespace_id and entry_id:
        return StreamChange(message_id, "del", None, namespace_id, entry_id, partition)
    if op != "add":
        return None
    entry = _entry_of(namespace_id, entry_id, [fields.get("partition"), fields.get("prompt"), fields.get("vector"), fields.get("expires_at")])
    if entry is None:
        return None
    return StreamChange(message_id, "add", entry, namespace_id, entry_id, partition)


def _entry_of(namespace_id: str, entry_id: str, row: Sequence[Any]) -> IndexedEntry | None:
    """An entry from its stored fields (partition, prompt, vector, expires_at); None if unreadable."""
    import numpy as np

    if len(row) != 4 or any(value is None for value in row) or not namespace_id or not entry_id:
        return None
    partition, prompt, vector, expires_at = row
    try:
        array = np.frombuffer(bytes(vector), dtype="<f4").astype(np.float32)
        return IndexedEntry(namespace_id, entry_id, _text(partition), _text(prompt), array, int(_text(expires_at)) / 1000)
    except (ValueError, TypeError):
        return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def _float(value: Any) -> float:
    try:
        return float(_text(value))
    except (TypeError, ValueError):
        return 0.0

