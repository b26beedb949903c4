"""``responses``: OpenAI's Responses API, ``POST /v1/responses`` and the stored responses.

For openai-agents (its default model uses this API), LangChain's ``use_responses_api=True`` and
the openai SDK's ``client.responses``, through the same chain as chat completions: the request is
translated to the canonical chat request (:mod:`hookgate.wire.responses`: instructions, items,
function tools and their outputs, ``text.format`` JSON schemas…) and the answer back to a
``response`` object, or to the typed Responses events with their ``sequence_number`` when the
client streams. Any chat upstream answers it (OpenAI, Groq, vLLM, Anthropic through its
provider's translation). Built-in tools that only OpenAI's servers run (web search, file search,
code interpreter…) are refused with a 400 naming the tool.

**State.** ``store`` (true unless the client says false) keeps the response;
``previous_response_id`` continues from a stored response, so a client sends only the new turn;
``GET /v1/responses/{id}``, ``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items``
read and delete them. A stored response belongs to the key (cache namespace) that made it: any
other key gets a 404, never its content. Where responses live:

* **With the** ``memory`` **plugin** (serving the ``responses`` surface), in its shared
  conversation store (:mod:`hookgate.conversations`; Redis: every instance continues every
  chain). The surface sends only the new input down the chain and names the conversation with
  facts; memory loads, fits, leases and appends the turn. ``previous_response_id`` continues the
  conversation of that response from its position (a branch when it has moved on),
  ``conversation`` (an id from ``POST /v1/conversations``) continues that conversation, and a
  request naming neither starts one when it stores (at the key's ``max_conversations_per_key``,
  in place of its least recently used implicit conversation: see
  :meth:`hookgate.conversations.ConversationStore.create`). ``store: false`` reads and stores nothing.
  A response's input items are its conversation's messages before it
  (:mod:`.surface_responses_items`). When the store cannot answer, a request naming a stored
  response or conversation gets 503 ``conversation_store_unavailable``; any other is answered,
  unstored.
* **Without it**, in this plugin's store in the process, bounded (``max_responses``,
  ``ttl_seconds``, ``max_items_per_chain``): one instance only; ``conversation`` is a 400.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from pydantic import Field

import structlog

from hookgate import Completion, GatewayError, InvalidRequest, NotFound, PluginConfig, RequestContext, StateKey, hookimpl
from hookgate.chat_request import validate_chat_request
from hookgate.conversations import (
    NEW_CONVERSATION,
    ConversationNotFound,
    ResponseRecord,
    SurfaceConversations,
    conversation_of_response,
    conversations_for,
    is_conversation_id,
    new_response_id,
)
from hookgate.facts import CONVERSATION_APPENDED, CONVERSATION_ID, CONVERSATION_OPTIONAL, CONVERSATION_POSITION, CONVERSATION_READ_ONLY
from hookgate.surfaces import CHAT, ExtraRoute, ParsedRequest
from hookgate.web import identify, presented_key, tenant_of
from hookgate.wire import responses as wire

from .surface_responses_items import conversation_items

log = structlog.get_logger("hookgate.responses")

_MAX_ID_CHARS = 128


class ResponsesConfig(PluginConfig):
    """Settings of the Responses surface."""

    ttl_seconds: float = Field(30 * 86400.0, gt=0, description="how long a stored response can be read or continued")
    max_responses: int = Field(10_000, ge=1, description="stored responses kept in this process; the oldest go first")
    max_items_per_chain: int = Field(2_000, ge=1, description="input and output items a chain of responses may hold")


@dataclass(slots=True)
class StoredResponse:
    """One stored response: its object, the items of its whole chain, and whose it is."""

    owner: str
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    """The input items of this turn and of every turn before it, oldest first."""
    expires_at: float

    @property
    def chain(self) -> list[dict[str, Any]]:
        """Every item of the conversation so far: inputs and outputs, oldest first."""
        return [*self.input_items, *self.response.get("output", [])]


class ResponseStore:
    """Stored responses in this process, bounded in number and in time."""

    def __init__(self, max_responses: int, ttl_seconds: float) -> None:
        self.max_responses, self.ttl_seconds = max_responses, ttl_seconds
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def get(self, response_id: str, owner: str) -> StoredResponse | None:
        entry = self._entries.get(response_id)
        if entry is None or entry.owner != owner:
            return None
        if entry.expires_at <= time.monotonic():
            del self._entries[response_id]
            return None
        return entry

    def put(self, response_id: str, entry: StoredResponse) -> None:
        self._entries[response_id] = entry
        self._entries.move_to_end(response_id)
        while len(self._entries) > self.max_responses:
            self._entries.popitem(last=False)

    def delete(self, response_id: str, owner: str) -> bool:
        if self.get(response_id, owner) is None:
            return False
        del self._entries[response_id]
        return True


@dataclass(slots=True)
class _Turn:
    """This surface's view of one request, from parse to the stored answer."""

    request: dict[str, Any]
    owner: str
    stores: bool
    """The client's ``store`` (true unless it said false)."""
    shared: SurfaceConversations | None = None
    """The conversations the turn is kept in; None: this plugin's store in the process."""
    input_items: list[dict[str, Any]] = field(default_factory=list)
    """In the process: the input items of the chain so far and of this turn."""
    response_id: str | None = None
    """Made when first needed (the first event, or the answer), after ``before_request``: the
    id of a shared response names its conversation, which memory may only then have made (a new
    one, or a branch)."""


_TURN: StateKey[_Turn] = StateKey("responses.turn", _Turn, "the response being made for this request")


class Responses:
    """OpenAI's Responses API (POST /v1/responses, stored responses), served by any chat upstream."""

    Config = ResponsesConfig

    def __init__(self, config: ResponsesConfig) -> None:
        self.config = config
        self.store = ResponseStore(config.max_responses, config.ttl_seconds)
        self.surface = ResponsesSurface(self)
        self.app: web.Application | None = None

    @hookimpl
    def register_surfaces(self, register):
        register(self.surface)

    @hookimpl
    async def startup(self, app: web.Application) -> None:
        self.app = app

    def shared(self) -> SurfaceConversations | None:
        """The memory plugin's conversations, when it serves this surface (asked per request:
        a live reload may enable or disable it)."""
        return conversations_for(self.app, ResponsesSurface.name) if self.app is not None else None


class ResponsesSurface:
    """The surface itself (see :class:`hookgate.surfaces.Surface`)."""

    name = "responses"
    kind = CHAT
    wire = "openai.responses"
    path = "/v1/responses"
    content_type = "text/event-stream"

    def __init__(self, plugin: Responses) -> None:
        self.plugin = plugin

    async def parse(self, ctx: RequestContext, body: Any) -> ParsedRequest:
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        hosted = wire.hosted_tools(body)
        if hosted:
            raise InvalidRequest(
                f"The built-in tool '{hosted[0]}' runs only on OpenAI's servers, which this gateway does not pass Responses requests to.",
                param="tools",
                code="unsupported_tool",
            )
        previous = body.get("previous_response_id")
        if previous is not None and (not isinstance(previous, str) or len(previous) > _MAX_ID_CHARS):
            raise InvalidRequest("previous_response_id must be a response id.", param="previous_response_id")
        shared = self.plugin.shared()
        if shared is None:
            canonical = await self._in_process(ctx, body, previous)
        else:
            canonical = await self._in_conversation(ctx, body, previous, shared)
        if body.get("stream") is True:
            canonical["stream"] = True
            canonical["stream_options"] = {"include_usage": True}
        validate_chat_request(canonical)
        return ParsedRequest(canonical)

    async def _in_process(self, ctx: RequestContext, body: dict[str, Any], previous: str | None) -> dict[str, Any]:
        """The canonical request with the whole chain from this plugin's store in it."""
        if body.get("conversation") is not None:
            raise InvalidRequest(
                "The conversation parameter needs the memory plugin's conversation store, which is not enabled here; chain turns with previous_response_id.",
                param="conversation",
            )
        owner = ctx.tenant or "anonymous"
        history: list[dict[str, Any]] = []
        if previous is not None:
            stored = self.plugin.store.get(previous, owner)
            if stored is None:
                raise _response_not_found(previous, "previous_response_id")
            history = stored.chain
        canonical = wire.to_chat_request(body, history=history)
        current = _input_items(body.get("input"))
        if len(history) + len(current) > self.plugin.config.max_items_per_chain:
            raise InvalidRequest(f"A chain of responses may hold at most {self.plugin.config.max_items_per_chain} items.", param="input")
        ctx[_TURN] = _Turn(body, owner, body.get("store", True) is not False, input_items=[*history_inputs(history), *current])
        return canonical

    async def _in_conversation(self, ctx: RequestContext, body: dict[str, Any], previous: str | None, shared: SurfaceConversations) -> dict[str, Any]:
        """The canonical request with only the new input: memory adds the conversation, named
        here by facts."""
        conversation = _conversation_param(body.get("conversation"))
        if conversation is not None and previous is not None:
            raise InvalidRequest("previous_response_id and conversation cannot both be given.", param="conversation")
        canonical = wire.to_chat_request(body, history=())
        owner = shared.owner(ctx)
        stores = body.get("store", True) is not False
        if previous is not None:
            record = await shared.store.get_response(owner, previous)
            if record is None:
                raise _response_not_found(previous, "previous_response_id")
            ctx[CONVERSATION_ID] = record.conversation_id
            ctx[CONVERSATION_POSITION] = record.position
        elif conversation is not None:
            if not is_conversation_id(conversation):
                raise ConversationNotFound(param="conversation")  # as memory answers an unknown id: never echoed
            ctx[CONVERSATION_ID] = conversation
        elif stores:
            ctx[CONVERSATION_ID] = NEW_CONVERSATION
            ctx[CONVERSATION_OPTIONAL] = True  # the client asked for no conversation: never refused for want of one
        if not stores and CONVERSATION_ID in ctx:
            ctx[CONVERSATION_READ_ONLY] = True
        ctx[_TURN] = _Turn(body, owner, stores, shared=shared)
        return canonical

    async def completed(self, ctx: RequestContext, completion: Completion) -> None:
        turn = ctx[_TURN]
        if not turn.stores:
            return
        response = self._response(ctx, completion)
        if turn.shared is None:
            config = self.plugin.config
            self.plugin.store.put(response["id"], StoredResponse(turn.owner, response, turn.input_items, time.monotonic() + config.ttl_seconds))
            return
        appended = ctx.get(CONVERSATION_APPENDED)
        if appended is None:
            return  # served without a conversation: none could be made (see CONVERSATION_OPTIONAL)
        if conversation_of_response(response["id"]) != appended.conversation_id:
            log.error("response_not_stored", reason="the turn went to another conversation than its id names", request_id=ctx.request_id)
            return
        # The answer is the turn's last message: the response's input items are the ones before it.
        body = {"response": response, "inputs_end": appended.end - 1}
        await turn.shared.store.put_response(turn.owner, ResponseRecord(response["id"], appended.conversation_id, appended.end, body, time.time()))

    def render(self, ctx: RequestContext, completion: Completion) -> dict[str, Any]:
        return self._response(ctx, completion)

    def open_stream(self, ctx: RequestContext) -> wire.EventStream:
        turn = ctx[_TURN]
        return wire.EventStream(wire.ChatStreamToResponses(turn.request, response_id=_response_id(ctx, turn), model=turn.request.get("model")))

    def replay_native(self, ctx: RequestContext, native: dict[str, Any]) -> bytes | None:
        return None

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        return error.to_body()

    def extra_routes(self) -> list[ExtraRoute]:
        return [
            ExtraRoute("GET", "/v1/responses/{response_id}", self.retrieve),
            ExtraRoute("DELETE", "/v1/responses/{response_id}", self.delete),
            ExtraRoute("GET", "/v1/responses/{response_id}/input_items", self.input_items),
        ]

    # ------------------------------------------------------------------------ stored responses

    async def retrieve(self, request: web.Request) -> web.Response:
        """``GET /v1/responses/{id}``: a stored response of the caller's."""
        shared = self.plugin.shared()
        if shared is not None:
            _, record = await self._record(request, shared)
            return _json(record.body["response"])
        stored = await self._stored(request)
        return _json(stored.response)

    async def delete(self, request: web.Request) -> web.Response:
        """``DELETE /v1/responses/{id}``: forget a stored response of the caller's."""
        shared = self.plugin.shared()
        if shared is not None:
            owner, record = await self._record(request, shared)
            if not await shared.store.delete_response(owner, record.id):
                raise _response_not_found(record.id, "response_id")
            return _json({"id": record.id, "object": "response.deleted", "deleted": True})
        stored = await self._stored(request)
        response_id = stored.response["id"]
        self.plugin.store.delete(response_id, stored.owner)
        return _json({"id": response_id, "object": "response.deleted", "deleted": True})

    async def input_items(self, request: web.Request) -> web.Response:
        """``GET /v1/responses/{id}/input_items``: the input items of a stored response's chain,
        newest first unless ``order=asc``, paginated with ``limit`` (1-100) and ``after``."""
        order, after, limit = _page_query(request)
        shared = self.plugin.shared()
        if shared is not None:
            owner, record = await self._record(request, shared)
            try:
                conversation = await shared.store.load(record.conversation_id, owner)
            except ConversationNotFound:
                raise _response_not_found(record.id, "response_id") from None  # deleted meanwhile
            end = int(record.body.get("inputs_end", record.position - 1))
            kept = conversation.messages[: max(0, end - conversation.start)]
            items = conversation_items(((conversation.start + i, m.message) for i, m in enumerate(kept)), conversation.id)
        else:
            stored = await self._stored(request)
            items = [{"id": item.get("id") or f"msg_{index:06d}", **item} for index, item in enumerate(stored.input_items)]
        return _json(_item_page(items, order, after, limit))

    async def _stored(self, request: web.Request) -> StoredResponse:
        owner = await tenant_of(request) or "anonymous"
        response_id = request.match_info.get("response_id", "")[:_MAX_ID_CHARS]
        stored = self.plugin.store.get(response_id, owner)
        if stored is None:
            raise _response_not_found(response_id, "response_id")
        return stored

    async def _record(self, request: web.Request, shared: SurfaceConversations) -> tuple[str, ResponseRecord]:
        """The caller (as an owner) and its stored response; another owner's is a 404 too."""
        key = await identify(request)
        # Without a gateway key, the tenant a request of the chain with this credential gets.
        tenant = None if key is not None else RequestContext(request_id="-", body={}, headers={}, api_key=presented_key(request.headers)).tenant
        owner = shared.owner_of(key, tenant)
        response_id = request.match_info.get("response_id", "")[:_MAX_ID_CHARS]
        record = await shared.store.get_response(owner, response_id)
        if record is None or not isinstance(record.body.get("response"), dict):
            raise _response_not_found(response_id, "response_id")
        return owner, record

    def _response(self, ctx: RequestContext, completion: Completion) -> dict[str, Any]:
        turn = ctx[_TURN]
        return wire.to_response(
            completion.body, request=turn.request, response_id=_response_id(ctx, turn), model=turn.request.get("model"), provider=ctx.provider_name
        )



def _input_items(input_: Any) -> list[dict[str, Any]]:
    if isinstance(input_, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": input_}]}]
    return [dict(item) for item in input_ or () if isinstance(item, dict)]


def history_inputs(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items of earlier turns, as the input items of this one (outputs included: they are
    the conversation the new turn continues)."""
    return [dict(item) for item in history]


def _response_id(ctx: RequestContext, turn: _Turn) -> str:
    """The turn's response id, made once: in a conversation the turn is stored in, one that
    names it (memory has set ``CONVERSATION_ID`` to it by now), else a random one."""
    if turn.response_id is None:
        conversation = ctx.get(CONVERSATION_ID)
        keeps = turn.shared is not None and turn.stores and not ctx.get(CONVERSATION_READ_ONLY)
        turn.response_id = new_response_id(conversation) if keeps and is_conversation_id(conversation) else wire.new_response_id()
    return turn.response_id


def _conversation_param(value: Any) -> str | None:
    """The id in ``conversation``: a string, or ``{"id": ...}`` as OpenAI's API accepts."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str) or not value:
        raise InvalidRequest("conversation must be a conversation id, or an object with its id.", param="conversation")
    return value


def _response_not_found(response_id: str, param: str) -> NotFound:
    return NotFound(f"No response with id '{response_id[:_MAX_ID_CHARS]}' was found.", param=param, code="response_not_found")


def _page_query(request: web.Request) -> tuple[str, str | None, int]:
    """``order`` (``desc`` unless ``asc``), ``after`` and ``limit`` (1-100) of a listing."""
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        raise InvalidRequest("limit must be a number from 1 to 100.", param="limit") from None
    if not 1 <= limit <= 100:
        raise InvalidRequest("limit must be a number from 1 to 100.", param="limit")
    return request.query.get("order", "desc"), request.query.get("after"), limit


def _item_page(items: list[dict[str, Any]], order: str, after: str | None, limit: int) -> dict[str, Any]:
    """One page of input items, as OpenAI's API lists them."""
    if order != "asc":
        items = items[::-1]
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")
