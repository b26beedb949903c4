"""The memory plugin's HTTP API: create, get, list and delete conversations.

Shaped like OpenAI's Conversations API where it has an equivalent, so the official SDK's
``client.conversations.create()``, ``.retrieve(id)`` and ``.delete(id)`` work against the gateway:

    POST   /v1/conversations          {"metadata": {...}, "messages": [...], "expires_after_seconds": 3600}
    GET    /v1/conversations          ?limit=20&after=<id>: the caller's conversations, newest first
    GET    /v1/conversations/<id>     the conversation: its turns (messages with token counts), summary
    DELETE /v1/conversations/<id>     gone everywhere, at once (nothing is left in the store)

Seed ``messages`` are chat messages (OpenAI's Responses ``items`` are not accepted here). Every
route acts for the key the request presents, like the chat endpoint; a conversation of another
key is a 404, as if it did not exist. Errors are OpenAI-shaped (:class:`~hookgate.GatewayError`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hookgate import InvalidRequest, PayloadTooLarge, RequestContext
from hookgate.conversations import (
    Conversation,
    ConversationNotFound,
    ConversationStoreUnavailable,
    StoredMessage,
    is_conversation_id,
    owner_of,
)
from hookgate.web import identify, presented_key

if TYPE_CHECKING:
    from .memory import Memory

_PATH = "/v1/conversations"
_MAX_METADATA = 16


class _Message(BaseModel):
    """A seed message: OpenAI's chat shape (other fields kept as they are)."""

    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class CreateConversation(BaseModel):
    """The body of ``POST /v1/conversations``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    metadata: dict[str, str] | None = Field(None, description="up to 16 pairs; keys up to 64 characters, values up to 512")
    messages: list[_Message] = Field([], max_length=10_000, description="turns to start with (a leading system message is the system prompt)")
    expires_after_seconds: float | None = Field(None, gt=0, description="the conversation's TTL (refreshed on use), up to the configured maximum")

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        if metadata is not None:
            if len(metadata) > _MAX_METADATA:
                raise ValueError(f"at most {_MAX_METADATA} pairs")
            if any(len(key) > 64 or len(value) > 512 for key, value in metadata.items()):
                raise ValueError("keys are at most 64 characters and values at most 512")
        return metadata


class ConversationRoutes:
    """The HTTP handlers, over the plugin's store."""

    def __init__(self, plugin: Memory) -> None:
        self.plugin = plugin

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post(_PATH, self.create)
        router.add_get(_PATH, self.list)
        router.add_get(_PATH + "/{conversation_id}", self.get)
        router.add_delete(_PATH + "/{conversation_id}", self.delete)

    async def create(self, request: web.Request) -> web.Response:
        owner = await _owner(request, self.plugin)
        body = await _json_body(request)
        if isinstance(body, dict) and "items" in body:
            raise InvalidRequest("Seed a conversation with chat 'messages'; Responses 'items' are not accepted here.", param="items")
        try:
            wanted = CreateConversation.model_validate(body)
        except ValidationError as exc:
            raise InvalidRequest.from_validation(exc) from None
        messages = [message.model_dump(exclude_none=False) for message in wanted.messages]
        leading = 0
        while leading < len(messages) and messages[leading]["role"] in ("system", "developer"):
            leading += 1
        encoding, name = self.plugin.counter.encoding_for("")
        stored = [StoredMessage(m, self.plugin.counter.count(m, encoding), name) for m in messages[leading:]]
        conversation = await self.plugin.require_store().create(
            owner, metadata=wanted.metadata, system=messages[:leading], messages=stored, ttl_seconds=wanted.expires_after_seconds
        )
        return _json(_summary_of(conversation))

    async def get(self, request: web.Request) -> web.Response:
        owner = await _owner(request, self.plugin)
        conversation = await self.plugin.require_store().load(_conversation_id(request), owner)
        return _json(_full(conversation))

    async def list(self, request: web.Request) -> web.Response:
        owner = await _owner(request, self.plugin)
        raw_limit = request.query.get("limit", "20")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
            raise InvalidRequest("'limit' must be an integer from 1 to 100.", param="limit")
        after = request.query.get("after")
        if after is not None and not is_conversation_id(after):
            raise InvalidRequest("'after' must be a conversation id from a previous page.", param="after")
        page = await self.plugin.require_store().list(owner, limit=int(raw_limit), after=after)
        data = [
            {"id": c.id, "object": "conversation", "created_at": int(c.created_at), "updated_at": int(c.updated_at),
             "metadata": dict(c.metadata), "turns": c.turns, "bytes": c.bytes}
            for c in page.data
        ]
        return _json({
            "object": "list", "data": data, "has_more": page.has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None,
        })

    async def delete(self, request: web.Request) -> web.Response:
        owner = await _owner(request, self.plugin)
        conversation_id = _conversation_id(request)
        if not await self.plugin.require_store().delete(conversation_id, owner):
            raise ConversationNotFound()
        return _json({"id": conversation_id, "object": "conversation.deleted", "deleted": True})


async def _owner(request: web.Request, plugin: Memory) -> str:
    """Who is asking, as a conversation owner: the same rule as for a chat request."""
    if plugin.store is None:
        raise ConversationStoreUnavailable("The conversation store is not open (the memory plugin did not start).")
    key = await identify(request)
    tenant = None
    if key is None:
        # The tenant a chat request with this credential gets (a hash of it): one definition.
        tenant = RequestContext(request_id="-", body={}, headers={}, api_key=presented_key(request.headers)).tenant
    return owner_of(key, tenant, scope=plugin.config.owner_scope)


def _conversation_id(request: web.Request) -> str:
    # Plugin routes get no path parameters; the id is the path's last segment.
    conversation_id = request.path.rstrip("/").rsplit("/", 1)[-1]
    if not is_conversation_id(conversation_id):
        raise ConversationNotFound()
    return conversation_id


async def _json_body(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge("The request body is over the gateway's size limit.") from None
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The body must be a JSON object.") from None


def _summary_of(conversation: Conversation) -> dict[str, Any]:
    """OpenAI's Conversation object, plus what hookgate knows about it."""
    return {
        "id": conversation.id,
        "object": "conversation",
        "created_at": int(conversation.created_at),
        "metadata": dict(conversation.metadata),
        "updated_at": int(conversation.updated_at),
        "expires_at": int(conversation.expires_at),
        "turns": conversation.turns,
        "tokens": sum(m.tokens or 0 for m in conversation.messages),
        "bytes": conversation.bytes,
    }


def _full(conversation: Conversation) -> dict[str, Any]:
    summary = conversation.summary
    return {
        **_summary_of(conversation),
        "system": list(conversation.system),
        "start": conversation.start,
        "messages": [
            {"position": conversation.start + index, "tokens": stored.tokens, "message": stored.message}
            for index, stored in enumerate(conversation.messages)
        ],
        "summary": {"text": summary.text, "covers_up_to": summary.upto, "model": summary.model} if summary else None,
    }


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")
