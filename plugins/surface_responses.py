"""``responses``: OpenAI's Responses API, ``POST /v1/responses`` and the stored responses.

For openai-agents (its default model uses this API), LangChain's ``use_responses_api=True`` and
the openai SDK's ``client.responses``, through the same chain as chat completions: the request is
translated to the canonical chat request (:mod:`hookgate.wire.responses`: instructions, items,
function tools and their outputs, ``text.format`` JSON schemas…) and the answer back to a
``response`` object, or to the typed Responses events with their ``sequence_number`` when the
client streams. Any chat upstream answers it (OpenAI, Groq, vLLM, Anthropic through its
provider's translation). Built-in tools that only OpenAI's servers run (web search, file search,
code interpreter…) are refused with a 400 naming the tool.

**State.** ``store`` (true unless the client says false) keeps the response, with the input items
of its turn and of the turns before it, in this plugin's response store for ``ttl_seconds``;
``previous_response_id`` continues from a stored response, so a client sends only the new turn.
``GET /v1/responses/{id}``, ``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items``
read and delete them. A stored response belongs to the key (cache namespace) that made it: any
other key gets a 404, never its content. The store is in the process and bounded
(``max_responses``); shared across instances it needs the conversation store of the ``memory``
plugin (docs/api_surfaces.md). The ``conversation`` parameter is not served yet: a 400.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from pydantic import Field

from hookgate import Completion, GatewayError, InvalidRequest, NotFound, PluginConfig, RequestContext, StateKey, hookimpl
from hookgate.chat_request import validate_chat_request
from hookgate.surfaces import CHAT, ExtraRoute, ParsedRequest
from hookgate.web import tenant_of
from hookgate.wire import responses as wire

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


@dataclass(frozen=True, slots=True)
class _Turn:
    """This surface's view of one request, from parse to the stored answer."""

    response_id: str
    request: dict[str, Any]
    input_items: list[dict[str, Any]]
    owner: str


_TURN: StateKey[_Turn] = StateKey("responses.turn", _Turn, "the response being made for this request")


class Responses:
    """OpenAI's Responses API (POST /v1/responses, stored responses), served by any chat upstream."""

    Config = ResponsesConfig

    def __init__(self, config: ResponsesConfig) -> None:
        self.config = config
        self.store = ResponseStore(config.max_responses, config.ttl_seconds)
        self.surface = ResponsesSurface(self)

    @hookimpl
    def register_surfaces(self, register):
        register(self.surface)


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
        if body.get("conversation") is not None:
            raise InvalidRequest("The conversation parameter is not supported here; chain turns with previous_response_id.", param="conversation")
        owner = ctx.tenant or "anonymous"
        history: list[dict[str, Any]] = []
        previous = body.get("previous_response_id")
        if previous is not None:
            if not isinstance(previous, str) or len(previous) > _MAX_ID_CHARS:
                raise InvalidRequest("previous_response_id must be a response id.", param="previous_response_id")
            stored = self.plugin.store.get(previous, owner)
            if stored is None:
                raise NotFound(f"No response with id '{previous}' was found.", param="previous_response_id", code="response_not_found")
            history = stored.chain
        canonical = wire.to_chat_request(body, history=history)
        if body.get("stream") is True:
            canonical["stream"] = True
            canonical["stream_options"] = {"include_usage": True}
        validate_chat_request(canonical)
        current = _input_items(body.get("input"))
        if len(history) + len(current) > self.plugin.config.max_items_per_chain:
            raise InvalidRequest(f"A chain of responses may hold at most {self.plugin.config.max_items_per_chain} items.", param="input")
        ctx[_TURN] = _Turn(wire.new_response_id(), body, [*history_inputs(history), *current], owner)
        return ParsedRequest(canonical)

    async def completed(self, ctx: RequestContext, completion: Completion) -> None:
        turn = ctx[_TURN]
        if turn.request.get("store", True) is False:
            return
        response = self._response(ctx, completion)
        config = self.plugin.config
        self.plugin.store.put(turn.response_id, StoredResponse(turn.owner, response, turn.input_items, time.monotonic() + config.ttl_seconds))

    def render(self, ctx: RequestContext, completion: Completion) -> dict[str, Any]:
        return self._response(ctx, completion)

    def open_stream(self, ctx: RequestContext) -> ResponsesStream:
        turn = ctx[_TURN]
        return ResponsesStream(wire.ChatStreamToResponses(turn.request, response_id=turn.response_id, model=turn.request.get("model")))

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
        stored = await self._stored(request)
        return _json(stored.response)

    async def delete(self, request: web.Request) -> web.Response:
        """``DELETE /v1/responses/{id}``: forget a stored response of the caller's."""
        stored = await self._stored(request)
        response_id = stored.response["id"]
        self.plugin.store.delete(response_id, stored.owner)
        return _json({"id": response_id, "object": "response.deleted", "deleted": True})

    async def input_items(self, request: web.Request) -> web.Response:
        """``GET /v1/responses/{id}/input_items``: the input items of a stored response's chain,
        newest first unless ``order=asc``, paginated with ``limit`` (1-100) and ``after``."""
        stored = await self._stored(request)
        items = [{"id": item.get("id") or f"msg_{index:06d}", **item} for index, item in enumerate(stored.input_items)]
        if request.query.get("order", "desc") != "asc":
            items.reverse()
        after = request.query.get("after")
        if after:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            raise InvalidRequest("limit must be a number from 1 to 100.", param="limit") from None
        if not 1 <= limit <= 100:
            raise InvalidRequest("limit must be a number from 1 to 100.", param="limit")
        page = items[:limit]
        return _json(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit,
            }
        )

    async def _stored(self, request: web.Request) -> StoredResponse:
        owner = await tenant_of(request) or "anonymous"
        response_id = request.match_info.get("response_id", "")[:_MAX_ID_CHARS]
        stored = self.plugin.store.get(response_id, owner)
        if stored is None:
            raise NotFound(f"No response with id '{response_id}' was found.", param="response_id", code="response_not_found")
        return stored

    def _response(self, ctx: RequestContext, completion: Completion) -> dict[str, Any]:
        turn = ctx[_TURN]
        return wire.to_response(completion.body, request=turn.request, response_id=turn.response_id, model=turn.request.get("model"), provider=ctx.provider_name)


class ResponsesStream:
    """The Responses typed events, from canonical chunks."""

    __slots__ = ("translator",)

    def __init__(self, translator: wire.ChatStreamToResponses) -> None:
        self.translator = translator

    def feed(self, chunk: dict[str, Any]) -> bytes:
        return b"".join(wire.encode_event(event) for event in self.translator.feed(chunk))

    def finish(self) -> bytes:
        return b"".join(wire.encode_event(event) for event in self.translator.finish())

    def fail(self, error: GatewayError) -> bytes:
        return b"".join(wire.encode_event(event) for event in self.translator.fail(error))


def _input_items(input_: Any) -> list[dict[str, Any]]:
    if isinstance(input_, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": input_}]}]
    return [dict(item) for item in input_ or () if isinstance(item, dict)]


def history_inputs(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items of earlier turns, as the input items of this one (outputs included: they are
    the conversation the new turn continues)."""
    return [dict(item) for item in history]


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")
