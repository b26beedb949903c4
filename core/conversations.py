"""Server-side conversations: the store every gateway instance shares, and how to use it.

A client that names a conversation sends only its new turn; the gateway keeps the rest. The
``memory`` plugin does that for chat completions and Anthropic messages
(``x-hookgate-conversation``); the Responses surface uses the same store for ``conversation``,
``previous_response_id`` and stored responses. Both go through one interface,
:class:`ConversationStore`, with two implementations that pass one test suite:
:class:`InMemoryConversationStore` (this process, bounded: the embedded default) and
:class:`hookgate.conversations_redis.RedisConversationStore` (the source of truth when several
instances serve one conversation).

**What a conversation holds.** Its owner (:func:`owner_of`: the gateway key that created it,
stored as a digest), an optional system prompt, its messages in order (each with its token
count), an optional :class:`Summary` of its oldest part, free-form ``metadata`` and, for the
Responses API, stored responses. Positions are absolute: a message keeps its position when older
ones are evicted (``Conversation.start`` is the position of the first one still stored), so a
summary or a stored response can say "everything before position N".

**Turns.** A turn starts at a ``user`` message and runs to the next one: the assistant's answer,
its tool calls and their results belong to the turn that asked. Limits (``max_turns``,
``max_bytes``) evict the oldest *whole* turns, so a tool call is never separated from its result.

**One request at a time.** A request that continues a conversation takes its lease
(:meth:`ConversationStore.begin_turn`, which also loads it in the same atomic step), and stores
its turn with :meth:`ConversationStore.append`, which checks the lease, appends atomically and
releases it. A second request arriving meanwhile gets :class:`ConversationBusy` (409, with
``Retry-After``) rather than waiting: it was written without seeing the first one's answer, and
only the client knows whether it still means it. A lease expires after ``lease_seconds`` unless
renewed (:meth:`ConversationStore.renew`), so a crashed instance cannot hold one for ever.

**How many.** An owner has at most ``max_conversations_per_owner``. At the limit, a conversation
created through the conversations API is refused, and one the gateway creates for a request
(``implicit``: a stored Responses answer, a branch, ``x-hookgate-conversation: new``) replaces the
owner's least recently used implicit conversation, so a long-running client never runs out.

**Ownership.** Every operation names the owner; a conversation of another owner is
:class:`ConversationNotFound`, exactly like one that does not exist, so ids cannot be probed. Ids
made by :func:`new_conversation_id` are 128 random bits.

**Failures.** A store that cannot answer raises :class:`ConversationStoreUnavailable` (503); a
request that names a conversation cannot be served without it, every other request is
unaffected. The errors are :class:`~hookgate.GatewayError` subclasses, so they can be raised to a
client as they are.

A plugin or surface finds the app's store with :func:`conversation_store` (the memory plugin
opens it; None without it); a surface that keeps its state in conversations uses
:func:`conversations_for`, which also gives the owner rule the memory plugin applies.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, final

import orjson
from aiohttp import web

from .errors import GatewayError, InvalidRequest, NotFound, ServiceUnavailable
from .facts import CLIENT_KEY
from .health import Readiness
from .identity import ClientKey

if TYPE_CHECKING:
    from pydantic import SecretStr

    from .context import RequestContext

__all__ = [
    "StoredMessage",
    "Summary",
    "Conversation",
    "ConversationInfo",
    "ConversationPage",
    "Lease",
    "Appended",
    "ResponseRecord",
    "ConversationLimits",
    "ConversationStore",
    "InMemoryConversationStore",
    "ConversationCipher",
    "ConversationNotFound",
    "ConversationBusy",
    "ConversationLimitExceeded",
    "ConversationStoreUnavailable",
    "NEW_CONVERSATION",
    "new_conversation_id",
    "new_response_id",
    "is_conversation_id",
    "conversation_of_response",
    "owner_of",
    "owner_of_request",
    "owner_digest",
    "conversation_store",
    "conversations_for",
    "SurfaceConversations",
    "CONVERSATION_STORE_SLOT",
    "StoreSlot",
]

NEW_CONVERSATION = "new"
"""The conversation id a client (``x-hookgate-conversation: new``) or a surface passes to have the
gateway create one for this request; the answer carries the new id."""

_ID_HEX = 32
_CONVERSATION_ID = re.compile(r"conv_[0-9a-f]{32}")
_RESPONSE_ID = re.compile(r"resp_([0-9a-f]{32})[0-9a-f]{16}")


def new_conversation_id() -> str:
    """A fresh conversation id: ``conv_`` and 128 random bits in hex (unguessable)."""
    return "conv_" + secrets.token_hex(_ID_HEX // 2)


def new_response_id(conversation_id: str) -> str:
    """A fresh id for a response stored in ``conversation_id``: ``resp_``, the conversation's
    random part and 64 more random bits. The store finds a response's conversation from its id
    alone (:func:`conversation_of_response`), so a response lives, expires and is deleted with
    its conversation (in Redis: in the conversation's own hash slot)."""
    if not is_conversation_id(conversation_id):
        raise ValueError("not a conversation id")
    return "resp_" + conversation_id[5:] + secrets.token_hex(8)


def is_conversation_id(value: object) -> bool:
    """Whether ``value`` has the shape of an id :func:`new_conversation_id` makes (anything else
    is refused before it reaches a store key)."""
    return isinstance(value, str) and _CONVERSATION_ID.fullmatch(value) is not None


def conversation_of_response(response_id: object) -> str | None:
    """The conversation a response id made by :func:`new_response_id` belongs to; None for any
    other string."""
    if not isinstance(response_id, str):
        return None
    match = _RESPONSE_ID.fullmatch(response_id)
    return "conv_" + match.group(1) if match else None


# -------------------------------------------------------------------------------------- owners ---


def owner_of(key: ClientKey | None, tenant: str | None, *, scope: Literal["key", "namespace"] = "key") -> str:
    """Who a conversation belongs to: the gateway key's id (``scope="namespace"``: its cache
    namespace, so keys sharing one share conversations), else the tenant (a hash of an
    unregistered credential), else ``anonymous`` (then the unguessable id is the only protection)."""
    if key is not None:
        return f"namespace:{key.cache_namespace or key.id}" if scope == "namespace" else f"key:{key.id}"
    if tenant:
        return f"tenant:{tenant}"
    return "anonymous"


def owner_of_request(ctx: RequestContext, *, scope: Literal["key", "namespace"] = "key") -> str:
    """:func:`owner_of` for a request: its ``CLIENT_KEY`` and ``tenant``."""
    return owner_of(ctx.get(CLIENT_KEY), ctx.tenant, scope=scope)


def owner_digest(owner: str) -> str:
    """What a store keeps of an owner: a digest, so Redis never holds key names."""
    return hashlib.sha256(owner.encode()).hexdigest()[:32]


# --------------------------------------------------------------------------------------- values ---


@final
@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One chat message of a conversation (OpenAI's chat shape) and its token count."""

    message: dict[str, Any]
    tokens: int | None = None
    """Tokens the message costs in a prompt, counted with ``encoding`` when it was stored."""
    encoding: str | None = None
    """The tiktoken encoding ``tokens`` was counted with (a count for another is recounted)."""

    @property
    def starts_turn(self) -> bool:
        """A ``user`` message begins a turn."""
        return self.message.get("role") == "user"

    def to_json(self) -> dict[str, Any]:
        return {"m": self.message, "t": self.tokens, "e": self.encoding}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> StoredMessage:
        return cls(value["m"], value.get("t"), value.get("e"))


@final
@dataclass(frozen=True, slots=True)
class Summary:
    """A model's summary of a conversation's oldest part: it stands in for every message before
    position ``upto`` (evicted ones included)."""

    text: str
    upto: int
    model: str = ""
    created_at: float = 0.0


@final
@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation as loaded: everything the store keeps, decrypted."""

    id: str
    created_at: float
    """Unix time."""
    updated_at: float
    """Unix time of the last append."""
    expires_at: float
    """Unix time it expires unless used again (each use moves it ``ttl_seconds`` ahead)."""
    ttl_seconds: float
    metadata: Mapping[str, str]
    system: tuple[dict[str, Any], ...]
    """The system prompt (system/developer messages), sent before the history on every turn."""
    messages: tuple[StoredMessage, ...]
    start: int
    """Absolute position of ``messages[0]``: how many messages were evicted before it."""
    turns: int
    """Turns stored (user messages)."""
    bytes: int
    """Stored size of the messages, as the limits count it."""
    summary: Summary | None = None

    @property
    def end(self) -> int:
        """Absolute position after the last message: where the next append goes."""
        return self.start + len(self.messages)


@final
@dataclass(frozen=True, slots=True)
class ConversationInfo:
    """One conversation in a listing (no content)."""

    id: str
    created_at: float
    updated_at: float
    turns: int
    bytes: int
    metadata: Mapping[str, str]


@final
@dataclass(frozen=True, slots=True)
class ConversationPage:
    """One page of an owner's conversations, newest first; pass the last id as ``after`` for the next."""

    data: tuple[ConversationInfo, ...]
    has_more: bool


@final
@dataclass(frozen=True, slots=True)
class Lease:
    """The right to add the next turn to a conversation, held by one request."""

    conversation_id: str
    owner: str
    token: str = field(repr=False)


@final
@dataclass(frozen=True, slots=True)
class Appended:
    """What :meth:`ConversationStore.append` stored: the messages took positions ``[first, end)``."""

    conversation_id: str
    first: int
    end: int
    """The conversation's length after the append (a stored response's ``position``)."""
    turns: int
    """Turns stored now."""
    evicted: int
    """Messages evicted (oldest whole turns) to respect ``max_turns`` and ``max_bytes``."""


@final
@dataclass(frozen=True, slots=True)
class ResponseRecord:
    """A stored answer of the Responses API: the surface's JSON, and where in its conversation
    it ends (``previous_response_id`` continues from ``position``)."""

    id: str
    """Made by :func:`new_response_id` for ``conversation_id``."""
    conversation_id: str
    position: int
    body: dict[str, Any]
    """Whatever the surface needs to answer ``GET /v1/responses/{id}`` and its input items."""
    created_at: float = 0.0


@final
@dataclass(frozen=True, slots=True)
class ConversationLimits:
    """The bounds every store enforces."""

    ttl_seconds: float = 7 * 86_400.0
    """Default lifetime after the last use (a conversation may ask for less or more, up to ``max_ttl_seconds``)."""
    max_ttl_seconds: float = 30 * 86_400.0
    max_turns: int = 200
    """Turns kept; the oldest whole turns are evicted past it."""
    max_bytes: int = 2 * 1024 * 1024
    """Stored bytes of messages kept; the oldest whole turns are evicted past it (the newest turn
    is always kept)."""
    max_conversations_per_owner: int = 1000
    """Live conversations one owner may have. At the limit, creating one more through the
    conversations API is refused; one the gateway creates for a request (``implicit``) takes the
    place of the owner's least recently used implicit conversation instead."""
    max_responses_per_conversation: int = 1000
    lease_seconds: float = 30.0
    """How long a lease lasts without renewal (a crashed instance's lease frees itself)."""

    def ttl_for(self, requested: float | None) -> float:
        """The TTL of a conversation that asked for ``requested`` seconds (None: the default)."""
        return self.ttl_seconds if requested is None else min(float(requested), self.max_ttl_seconds)


# --------------------------------------------------------------------------------------- errors ---


class ConversationNotFound(NotFound):
    """404: no such conversation for this owner (another owner's is reported the same way)."""

    default_code = "conversation_not_found"

    def __init__(self, message: str = "No such conversation.", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class ConversationBusy(GatewayError):
    """409: another request is adding a turn to this conversation; retry after it."""

    status = 409
    type = "invalid_request_error"
    default_code = "conversation_busy"

    def __init__(self, message: str = "Another request is adding a turn to this conversation; retry when it is answered.", **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"Retry-After": "1"})
        super().__init__(message, **kwargs)


class ConversationLimitExceeded(InvalidRequest):
    """400: the owner has as many conversations (or the conversation as many stored responses)
    as the store allows."""

    default_code = "conversation_limit_exceeded"


class ConversationStoreUnavailable(ServiceUnavailable):
    """503: the conversation store (Redis) did not answer; requests naming a conversation cannot
    be served until it does."""

    default_code = "conversation_store_unavailable"

    def __init__(self, message: str = "The conversation store is unavailable; retry shortly.", **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"Retry-After": "1"})
        super().__init__(message, **kwargs)


# ---------------------------------------------------------------------------------- encryption ---


@final
class ConversationCipher:
    """AES-256-GCM for what a store keeps at rest (messages, system prompt, metadata, summary,
    stored responses); counters, timestamps and the owner's digest stay readable.

    Each value is sealed with the conversation's id as associated data, so a value copied into
    another conversation does not open. The first key seals; every key opens, so keys can be
    rotated: add the new key first, keep the old one until its conversations expired. A key is
    32 random bytes in URL-safe base64 (``python -c "import base64, os;
    print(base64.urlsafe_b64encode(os.urandom(32)).decode())"``; a Fernet key works as well).
    """

    __slots__ = ("_sealer", "_sealer_id", "_openers")

    _SEALED = b"e"

    def __init__(self, keys: Sequence[bytes]) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not keys:
            raise ValueError("at least one key is needed")
        ciphers = [(hashlib.sha256(b"hookgate-conversations" + key).digest()[:4], AESGCM(key)) for key in keys]
        self._sealer_id, self._sealer = ciphers[0]
        self._openers = dict(ciphers)

    @classmethod
    def from_secrets(cls, keys: Sequence[SecretStr]) -> ConversationCipher:
        """From configured keys (URL-safe base64 of 32 bytes). The error never shows a key."""
        decoded = []
        for index, key in enumerate(keys):
            try:
                raw = base64.urlsafe_b64decode(key.get_secret_value().encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                raise ValueError(f"encryption key #{index + 1} is not URL-safe base64") from None
            if len(raw) != 32:
                raise ValueError(f"encryption key #{index + 1} must decode to 32 bytes, not {len(raw)}")
            decoded.append(raw)
        return cls(decoded)

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = os.urandom(12)
        return self._SEALED + self._sealer_id + nonce + self._sealer.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        from cryptography.exceptions import InvalidTag

        opener = self._openers.get(sealed[1:5])
        if sealed[:1] != self._SEALED or opener is None:
            raise ValueError("sealed with a key that is not configured")
        try:
            return opener.decrypt(sealed[5:17], sealed[17:], context.encode())
        except InvalidTag:
            raise ValueError("a stored value does not open with its key (tampered, or moved from another conversation)") from None


def encode_value(value: Any, cipher: ConversationCipher | None, context: str) -> bytes:
    """A stored value: ``j`` + JSON, or sealed JSON when a cipher is configured."""
    payload = orjson.dumps(value)
    return cipher.seal(payload, context) if cipher is not None else b"j" + payload


def decode_value(blob: bytes, cipher: ConversationCipher | None, context: str) -> Any:
    """The value :func:`encode_value` stored. A sealed value without a cipher is an error (the
    configuration lost its key), never a silent empty conversation."""
    if blob[:1] == b"j":
        return orjson.loads(blob[1:])
    if cipher is None:
        raise ValueError("the conversation store holds encrypted values but no encryption key is configured")
    return orjson.loads(cipher.open(blob, context))


# ----------------------------------------------------------------------------------- interface ---


class ConversationStore(ABC):
    """Where conversations live. Every method is a coroutine, raises
    :class:`ConversationStoreUnavailable` when the store cannot answer, and treats another
    owner's conversation as one that does not exist."""

    limits: ConversationLimits

    @property
    def renew_every(self) -> float | None:
        """Seconds between lease renewals for a request that holds one (None: leases do not
        expire in this store)."""
        return self.limits.lease_seconds / 3

    @abstractmethod
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
        """A new conversation of ``owner`` with a fresh id, optionally seeded.

        ``implicit``: the gateway makes it for a request (a stored Responses answer, a branch,
        ``x-hookgate-conversation: new``) rather than the client through the conversations API.
        When the owner has ``max_conversations_per_owner``, an implicit conversation takes the
        place of the owner's least recently used implicit one (last created or last given a
        turn: :meth:`begin_turn`, :meth:`append`), which is deleted with everything it holds, in
        one atomic step; conversations created explicitly are never evicted. Raises
        :class:`ConversationLimitExceeded` at the limit for an explicit conversation, and for an
        implicit one when the owner has no implicit conversation to give up."""

    @abstractmethod
    async def load(self, conversation_id: str, owner: str) -> Conversation:
        """The conversation (its TTL refreshed), or :class:`ConversationNotFound`."""

    @abstractmethod
    async def begin_turn(self, conversation_id: str, owner: str) -> tuple[Conversation, Lease]:
        """Take the conversation's lease and load it, in one atomic step (TTL refreshed).
        Raises :class:`ConversationBusy` while another request holds the lease."""

    @abstractmethod
    async def append(self, lease: Lease, messages: Sequence[StoredMessage], *, system: Sequence[dict[str, Any]] | None = None) -> Appended:
        """Add ``messages`` (and, when given, replace the system prompt) atomically, evict the
        oldest whole turns past the limits, release the lease. Raises :class:`ConversationBusy`
        when the lease was lost (expired and taken) and :class:`ConversationNotFound` when the
        conversation was deleted meanwhile: nothing is stored then."""

    @abstractmethod
    async def release(self, lease: Lease) -> None:
        """Give the lease back without storing anything (a failed or cancelled turn)."""

    @abstractmethod
    async def renew(self, lease: Lease) -> bool:
        """Extend the lease by ``lease_seconds``; False when it is no longer held."""

    @abstractmethod
    async def list(self, owner: str, *, limit: int = 20, after: str | None = None) -> ConversationPage:
        """The owner's conversations, newest first, ``limit`` (1..100) at a time, starting after
        the conversation ``after``. Raises :class:`~hookgate.InvalidRequest` for an ``after`` that
        is not in the listing."""

    @abstractmethod
    async def delete(self, conversation_id: str, owner: str) -> bool:
        """Remove the conversation everywhere (messages, summary, responses, lease, index entry);
        False when there was none for this owner."""

    @abstractmethod
    async def save_summary(self, conversation_id: str, owner: str, summary: Summary) -> bool:
        """Keep ``summary`` unless the stored one covers as much or more; False when not kept."""

    @abstractmethod
    async def put_response(self, owner: str, record: ResponseRecord) -> None:
        """Store a response record in its conversation (:func:`new_response_id` made its id).
        Raises :class:`ConversationNotFound` when the conversation is gone."""

    @abstractmethod
    async def get_response(self, owner: str, response_id: str) -> ResponseRecord | None:
        """The stored response, or None (missing, expired, another owner's, or not an id)."""

    @abstractmethod
    async def delete_response(self, owner: str, response_id: str) -> bool:
        """Remove one stored response; False when there was none for this owner."""

    async def fork(self, conversation_id: str, owner: str, position: int) -> Conversation:
        """A new conversation holding this one's system prompt and messages before ``position``:
        how ``previous_response_id`` continues from a response that is not the latest. The
        gateway makes it, so it is ``implicit`` (see :meth:`create`)."""
        source = await self.load(conversation_id, owner)
        kept = source.messages[: max(0, position - source.start)]
        return await self.create(
            owner, metadata=source.metadata, system=source.system, messages=kept, ttl_seconds=source.ttl_seconds, implicit=True
        )

    def readiness(self) -> Readiness | None:
        """This store's part of ``/readyz`` (None: nothing to report)."""
        return None

    async def close(self) -> None:
        """Release what the store holds (connections); the default has nothing."""


def message_bytes(message: StoredMessage) -> int:
    """What a stored message counts towards ``max_bytes`` in the in-memory store (its JSON)."""
    return len(orjson.dumps(message.to_json()))


def evict_oldest_turns(sizes: Sequence[tuple[bool, int]], turns: int, limits: ConversationLimits) -> int:
    """How many leading messages to evict so that ``turns`` and the bytes fit the limits, whole
    turns at a time, the newest turn always kept. ``sizes`` is (starts a turn, bytes) per message.
    The Redis store runs the same rule in Lua."""
    total = sum(size for _, size in sizes)
    evicted = 0
    while (turns > limits.max_turns or total > limits.max_bytes) and turns > 1 and evicted < len(sizes):
        starts, size = sizes[evicted]
        turns -= 1 if starts else 0
        total -= size
        evicted += 1
        while evicted < len(sizes) and not sizes[evicted][0]:
            total -= sizes[evicted][1]
            evicted += 1
    return evicted


# ------------------------------------------------------------------------------ in this process ---


@dataclass(slots=True, eq=False)
class _Entry:
    owner: str
    created_at: float
    updated_at: float
    used_at: float
    ttl_seconds: float
    metadata: dict[str, str]
    system: list[dict[str, Any]]
    messages: list[StoredMessage]
    sizes: list[int]
    start: int = 0
    turns: int = 0
    summary: Summary | None = None
    lease: tuple[str, float] | None = None
    """(token, expires at)."""
    responses: dict[str, ResponseRecord] = field(default_factory=dict)
    implicit: bool = False

    def expired(self, now: float) -> bool:
        return now >= self.used_at + self.ttl_seconds


@final
class InMemoryConversationStore(ConversationStore):
    """Conversations in this process: the embedded default, for one instance.

    Bounded: at most ``max_conversations`` in all (the least recently used is evicted first,
    whoever owns it) and the per-conversation and per-owner limits of :class:`ConversationLimits`
    (with the same eviction of an owner's implicit conversations as the Redis store).
    Values are copied in and out, so no caller can change what another loads. Nothing is
    encrypted: it never leaves the process.

    :param clock: Unix time (tests pass their own to expire conversations without waiting).
    """

    def __init__(self, limits: ConversationLimits | None = None, *, max_conversations: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits or ConversationLimits()
        self.max_conversations = max_conversations
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        """By last use, least recent first."""
        self._by_owner: dict[str, dict[str, None]] = {}
        """Owner digest -> ids, oldest created first."""
        self._implicit: dict[str, OrderedDict[str, None]] = {}
        """Owner digest -> ids of its implicit conversations, least recently used first."""

    def __len__(self) -> int:
        return len(self._entries)

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
        digest = owner_digest(owner)
        self._sweep(now)
        self._prune_owner(digest, now)
        owned = self._by_owner.setdefault(digest, {})
        if len(owned) >= self.limits.max_conversations_per_owner:
            evictable = self._implicit.get(digest)
            if not implicit or not evictable:
                raise ConversationLimitExceeded(
                    f"This key has {len(owned)} conversations, the most allowed; delete some first.", param="conversation"
                )
            self._drop(next(iter(evictable)))
            owned = self._by_owner.setdefault(digest, {})
        while len(self._entries) >= self.max_conversations:
            self._drop(next(iter(self._entries)))
        kept = [_copied(message) for message in messages]
        entry = _Entry(
            owner=digest,
            created_at=now,
            updated_at=now,
            used_at=now,
            ttl_seconds=self.limits.ttl_for(ttl_seconds),
            metadata=dict(metadata or {}),
            system=orjson.loads(orjson.dumps(list(system))),
            messages=kept,
            sizes=[message_bytes(message) for message in kept],
            turns=sum(message.starts_turn for message in kept),
            implicit=implicit,
        )
        conversation_id = new_conversation_id()
        self._entries[conversation_id] = entry
        owned[conversation_id] = None
        if implicit:
            self._implicit.setdefault(digest, OrderedDict())[conversation_id] = None
        self._evict(entry)
        return self._view(conversation_id, entry)

    async def load(self, conversation_id: str, owner: str) -> Conversation:
        entry = self._used(conversation_id, owner)
        return self._view(conversation_id, entry)

    async def begin_turn(self, conversation_id: str, owner: str) -> tuple[Conversation, Lease]:
        now = self._clock()
        entry = self._find(conversation_id, owner, now)
        if entry.lease is not None and entry.lease[1] > now:
            raise ConversationBusy()
        token = secrets.token_hex(16)
        entry.lease = (token, float("inf"))  # held until its request ends: nothing here can crash alone
        self._touch(conversation_id, entry, now)
        self._turned(conversation_id, entry)
        return self._view(conversation_id, entry), Lease(conversation_id, owner, token)

    async def append(self, lease: Lease, messages: Sequence[StoredMessage], *, system: Sequence[dict[str, Any]] | None = None) -> Appended:
        now = self._clock()
        entry = self._find(lease.conversation_id, lease.owner, now)
        if entry.lease is None or entry.lease[0] != lease.token:
            raise ConversationBusy("This request's lease on the conversation expired and another request took it; its turn was not stored.")
        first = entry.start + len(entry.messages)
        added = [_copied(message) for message in messages]
        entry.messages.extend(added)
        entry.sizes.extend(message_bytes(message) for message in added)
        entry.turns += sum(message.starts_turn for message in added)
        if system is not None:
            entry.system = orjson.loads(orjson.dumps(list(system)))
        evicted = self._evict(entry)
        entry.lease = None
        entry.updated_at = now
        self._touch(lease.conversation_id, entry, now)
        self._turned(lease.conversation_id, entry)
        return Appended(lease.conversation_id, first, entry.start + len(entry.messages), entry.turns, evicted)

    async def release(self, lease: Lease) -> None:
        entry = self._entries.get(lease.conversation_id)
        if entry is not None and entry.lease is not None and entry.lease[0] == lease.token:
            entry.lease = None

    async def renew(self, lease: Lease) -> bool:
        entry = self._entries.get(lease.conversation_id)
        if entry is None or entry.lease is None or entry.lease[0] != lease.token:
            return False
        return True

    async def list(self, owner: str, *, limit: int = 20, after: str | None = None) -> ConversationPage:
        now = self._clock()
        self._sweep(now)
        digest = owner_digest(owner)
        self._prune_owner(digest, now)
        owned = list(reversed(self._by_owner.get(digest, {})))
        begin = 0
        if after is not None:
            if after not in owned:
                raise InvalidRequest("'after' is not a conversation of this listing.", param="after")
            begin = owned.index(after) + 1
        limit = max(1, min(limit, 100))
        page = owned[begin : begin + limit]
        infos = []
        for conversation_id in page:
            entry = self._entries[conversation_id]
            infos.append(ConversationInfo(conversation_id, entry.created_at, entry.updated_at, entry.turns, sum(entry.sizes), dict(entry.metadata)))
        return ConversationPage(tuple(infos), begin + limit < len(owned))

    async def delete(self, conversation_id: str, owner: str) -> bool:
        entry = self._entries.get(conversation_id)
        if entry is None or entry.owner != owner_digest(owner):
            return False
        self._drop(conversation_id)
        return True

    async def save_summary(self, conversation_id: str, owner: str, summary: Summary) -> bool:
        entry = self._entries.get(conversation_id)
        if entry is None or entry.owner != owner_digest(owner) or entry.expired(self._clock()):
            return False
        if entry.summary is not None and entry.summary.upto >= summary.upto:
            return False
        entry.summary = summary
        return True

    async def put_response(self, owner: str, record: ResponseRecord) -> None:
        if conversation_of_response(record.id) != record.conversation_id:
            raise ValueError("a response id must be made by new_response_id for its conversation")
        entry = self._used(record.conversation_id, owner)
        if record.id not in entry.responses and len(entry.responses) >= self.limits.max_responses_per_conversation:
            raise ConversationLimitExceeded("This conversation stores as many responses as allowed.", param="store")
        entry.responses[record.id] = replace(record, body=orjson.loads(orjson.dumps(record.body)))

    async def get_response(self, owner: str, response_id: str) -> ResponseRecord | None:
        conversation_id = conversation_of_response(response_id)
        entry = self._entries.get(conversation_id) if conversation_id else None
        if entry is None or entry.owner != owner_digest(owner) or entry.expired(self._clock()):
            return None
        record = entry.responses.get(response_id)
        return replace(record, body=orjson.loads(orjson.dumps(record.body))) if record is not None else None

    async def delete_response(self, owner: str, response_id: str) -> bool:
        conversation_id = conversation_of_response(response_id)
        entry = self._entries.get(conversation_id) if conversation_id else None
        if entry is None or entry.owner != owner_digest(owner):
            return False
        return entry.responses.pop(response_id, None) is not None

    @property
    def renew_every(self) -> float | None:
        return None  # a lease lives exactly as long as its request in this process

    # -------------------------------------------------------------------------- internals ---

    def _find(self, conversation_id: str, owner: str, now: float) -> _Entry:
        entry = self._entries.get(conversation_id)
        if entry is not None and entry.expired(now):
            self._drop(conversation_id)
            entry = None
        if entry is None or entry.owner != owner_digest(owner):
            raise ConversationNotFound()
        return entry

    def _used(self, conversation_id: str, owner: str) -> _Entry:
        now = self._clock()
        entry = self._find(conversation_id, owner, now)
        self._touch(conversation_id, entry, now)
        return entry

    def _touch(self, conversation_id: str, entry: _Entry, now: float) -> None:
        entry.used_at = now
        self._entries.move_to_end(conversation_id)

    def _turned(self, conversation_id: str, entry: _Entry) -> None:
        """A turn started or was stored: an implicit conversation becomes its owner's most
        recently used (the Redis store keeps the same order in the owner's slot)."""
        if entry.implicit:
            self._implicit[entry.owner].move_to_end(conversation_id)

    def _evict(self, entry: _Entry) -> int:
        sizes = [(message.starts_turn, size) for message, size in zip(entry.messages, entry.sizes)]
        evicted = evict_oldest_turns(sizes, entry.turns, self.limits)
        if evicted:
            entry.turns -= sum(message.starts_turn for message in entry.messages[:evicted])
            del entry.messages[:evicted], entry.sizes[:evicted]
            entry.start += evicted
        return evicted

    def _sweep(self, now: float) -> None:
        """Drop expired conversations from the least recently used end (bounded work: it stops
        at the first live one)."""
        while self._entries:
            conversation_id, entry = next(iter(self._entries.items()))
            if not entry.expired(now):
                break
            self._drop(conversation_id)

    def _prune_owner(self, digest: str, now: float) -> None:
        """Drop the owner's expired conversations (TTLs differ, so the sweep may not have)."""
        for conversation_id in [cid for cid in self._by_owner.get(digest, {}) if self._entries[cid].expired(now)]:
            self._drop(conversation_id)

    def _drop(self, conversation_id: str) -> None:
        entry = self._entries.pop(conversation_id)
        owned = self._by_owner.get(entry.owner)
        if owned is not None:
            owned.pop(conversation_id, None)
            if not owned:
                del self._by_owner[entry.owner]
        implicit = self._implicit.get(entry.owner)
        if implicit is not None:
            implicit.pop(conversation_id, None)
            if not implicit:
                del self._implicit[entry.owner]

    def _view(self, conversation_id: str, entry: _Entry) -> Conversation:
        return Conversation(
            id=conversation_id,
            created_at=entry.created_at,
            updated_at=entry.updated_at,
            expires_at=entry.used_at + entry.ttl_seconds,
            ttl_seconds=entry.ttl_seconds,
            metadata=dict(entry.metadata),
            system=tuple(orjson.loads(orjson.dumps(entry.system))),
            messages=tuple(_copied(message) for message in entry.messages),
            start=entry.start,
            turns=entry.turns,
            bytes=sum(entry.sizes),
            summary=entry.summary,
        )


def _copied(message: StoredMessage) -> StoredMessage:
    return StoredMessage(orjson.loads(orjson.dumps(message.message)), message.tokens, message.encoding)


# ---------------------------------------------------------------------------- the app's store ---


@final
class StoreSlot:
    """Where an app keeps the conversation store its memory plugin opened, for the surfaces
    (Responses) and plugins that need the same conversations."""

    __slots__ = ("store", "embedded", "owner_scope", "surfaces")

    def __init__(self) -> None:
        self.store: ConversationStore | None = None
        """The store of the current pipeline's memory plugin (None: not enabled)."""
        self.embedded: InMemoryConversationStore | None = None
        """The in-memory store, kept across live reloads so a reload does not forget conversations."""
        self.owner_scope: Literal["key", "namespace"] = "key"
        """How the memory plugin names owners (its ``owner_scope``): whatever a surface stores in
        a conversation must be stored for the conversation's own owner."""
        self.surfaces: frozenset[str] = frozenset()
        """The surfaces on which the memory plugin serves conversations (its ``surfaces``)."""


CONVERSATION_STORE_SLOT = web.AppKey("hookgate_conversation_store", StoreSlot)
"""Where an app keeps its :class:`StoreSlot` (made while the app is built)."""


def conversation_store(app: web.Application) -> ConversationStore | None:
    """The app's conversation store, opened by the memory plugin; None when it is not enabled."""
    slot = app.get(CONVERSATION_STORE_SLOT)
    return slot.store if slot is not None else None


@final
@dataclass(frozen=True, slots=True)
class SurfaceConversations:
    """The app's conversation store, and whose conversations a request's are, for a surface.

    For a surface with server-side state (the Responses API's stored responses): the owner rule
    is the memory plugin's (``owner_scope``), so what the surface stores in a conversation is
    stored, and read, as the conversation's own owner."""

    store: ConversationStore
    owner_scope: Literal["key", "namespace"] = "key"

    def owner(self, ctx: RequestContext) -> str:
        """The owner of a request's conversations (after authentication)."""
        return owner_of_request(ctx, scope=self.owner_scope)

    def owner_of(self, key: ClientKey | None, tenant: str | None) -> str:
        """The owner for a route outside the chain (``GET /v1/responses/{id}``): the key the
        request presents (``hookgate.web.identify``), else its tenant."""
        return owner_of(key, tenant, scope=self.owner_scope)


def conversations_for(app: web.Application, surface: str) -> SurfaceConversations | None:
    """Where the surface named ``surface`` keeps its server-side state; None without memory.

    None when the memory plugin is not enabled, or does not serve that surface (its
    ``surfaces``): the surface then keeps its state as it would without it. Ask per request: a
    live reload can change it."""
    slot = app.get(CONVERSATION_STORE_SLOT)
    if slot is None or slot.store is None or surface not in slot.surfaces:
        return None
    return SurfaceConversations(slot.store, slot.owner_scope)
