"""Test support for the wire translations: checking bodies against the official SDKs' types,
and two small translating front ends that put the pure translations of ``hookgate.wire``
between an official SDK and the chat-completions emulator.

The front ends are test harnesses, not the gateway's surfaces: they show the few lines of glue
a surface needs (translate the request, call the chat upstream, translate the answer or the
stream, write Anthropic's or OpenAI's error shape) so the SDKs can be driven end to end through
nothing but the translations.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from functools import cache
from typing import Any

import aiohttp
import orjson
import pydantic
from aiohttp import web

from hookgate import GatewayError, UpstreamError
from hookgate.sse import iter_sse_data
from hookgate.upstream import error_from_upstream
from hookgate.wire import anthropic as wire_anthropic
from hookgate.wire import responses as wire_responses

UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)
LAST_CHAT_REQUEST = web.AppKey("last_chat_request", list)


# ---------------------------------------------------------------------------------------------
# The SDKs' types, with unknown fields forbidden
# ---------------------------------------------------------------------------------------------


def strict_sdk(sdk_type: Any, data: Any) -> Any:
    """``data`` validated as the SDK type ``sdk_type`` (a model or a union of models), failing
    on any field the SDK does not declare: the SDK models accept unknown fields silently, so a
    misspelt or invented field would otherwise pass."""
    value = _adapter(sdk_type).validate_python(data)
    extras = list(_extra_fields(value, "$"))
    assert extras == [], f"fields the SDK's {getattr(sdk_type, '__name__', sdk_type)} does not declare: {extras}"
    return value


@cache
def _adapter(sdk_type: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(sdk_type)  # building one for a big union takes a good fraction of a second


def _extra_fields(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, pydantic.BaseModel):
        for name in value.model_extra or {}:
            yield f"{path}.{name}"
        for name in type(value).model_fields:
            yield from _extra_fields(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _extra_fields(item, f"{path}[{index}]")


# ---------------------------------------------------------------------------------------------
# Translating front ends
# ---------------------------------------------------------------------------------------------


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    app[SESSION] = aiohttp.ClientSession()
    yield
    await app[SESSION].close()


def _front(upstream_base_url: str, path: str, handler: Any) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream_base_url
    app[LAST_CHAT_REQUEST] = []
    app.cleanup_ctx.append(_session_ctx)
    app.router.add_post(path, handler)
    return app


async def _upstream_call(request: web.Request, chat: dict[str, Any]) -> aiohttp.ClientResponse:
    """POST the chat request upstream; raise the gateway's error for an upstream error."""
    request.app[LAST_CHAT_REQUEST][:] = [chat]
    response = await request.app[SESSION].post(f"{request.app[UPSTREAM]}/chat/completions", data=orjson.dumps(chat), headers={"Authorization": "Bearer sk-upstream"})
    if response.status >= 400:
        body = await response.json()
        response.release()
        raise error_from_upstream("chat", response.status, body, response.headers)
    return response


async def _chunks(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    async def lines() -> AsyncIterator[str]:
        async for raw in response.content:
            yield raw.decode().rstrip("\r\n")

    try:
        async for _, data in iter_sse_data(lines()):
            if data == "[DONE]":
                return
            yield orjson.loads(data)
    except aiohttp.ClientPayloadError:
        raise UpstreamError("The chat upstream dropped the stream.", code="upstream_disconnected") from None
    raise UpstreamError("The chat upstream ended the stream before [DONE].", code="upstream_disconnected")


def messages_front(upstream_base_url: str) -> web.Application:
    """``POST /v1/messages`` served by a chat-completions upstream through ``hookgate.wire.anthropic``."""

    async def messages(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        try:
            chat = wire_anthropic.to_chat_request(body)
            upstream = await _upstream_call(request, chat)
        except GatewayError as error:
            return web.json_response(wire_anthropic.anthropic_error_body(error.status, error.message, code=error.code), status=error.status)
        if not chat.get("stream"):
            completion = await upstream.json()
            return web.json_response(wire_anthropic.to_anthropic_message(completion, model=body["model"]))
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        translator = wire_anthropic.ChatStreamToAnthropic(model=body["model"])
        try:
            async for chunk in _chunks(upstream):
                for event in translator.feed(chunk):
                    await out.write(wire_anthropic.encode_event(event))
            events = translator.finish()
        except GatewayError as error:
            events = translator.fail(error)
        for event in events:
            await out.write(wire_anthropic.encode_event(event))
        return out

    return _front(upstream_base_url, "/v1/messages", messages)


def responses_front(upstream_base_url: str) -> web.Application:
    """``POST /v1/responses`` served by a chat-completions upstream through ``hookgate.wire.responses``
    (no store: clients send the whole conversation as input)."""

    async def responses(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        try:
            chat = wire_responses.to_chat_request(body)
            upstream = await _upstream_call(request, chat)
        except GatewayError as error:
            return web.json_response(error.to_body(), status=error.status)
        if not chat.get("stream"):
            completion = await upstream.json()
            return web.json_response(wire_responses.to_response(completion, request=body, model=body["model"]))
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        translator = wire_responses.ChatStreamToResponses(body, model=body["model"])
        try:
            async for chunk in _chunks(upstream):
                for event in translator.feed(chunk):
                    await out.write(wire_responses.encode_event(event))
            events = translator.finish()
        except GatewayError as error:
            events = translator.fail(error)
        for event in events:
            await out.write(wire_responses.encode_event(event))
        return out

    return _front(upstream_base_url, "/v1/responses", responses)


def events_app(path: str, events: list[dict[str, Any]], encode: Any) -> web.Application:
    """An app answering ``POST path`` with ``events`` as one SSE stream (``encode`` each)."""

    async def stream(request: web.Request) -> web.StreamResponse:
        await request.read()
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        await out.write(b"".join(encode(event) for event in events))
        return out

    app = web.Application()
    app.router.add_post(path, stream)
    return app
