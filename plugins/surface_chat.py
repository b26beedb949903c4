"""``chat_completions``: OpenAI's chat completions API, ``POST /v1/chat/completions``.

The canonical surface: its request is the canonical request as it is (validated at the edge,
the error naming the parameter at fault), its answer the canonical ``chat.completion``, its
stream the ``chat.completion.chunk`` events followed by ``data: [DONE]``, its errors OpenAI's
``{"error": {"message", "type", "param", "code"}}``, so the official SDKs raise the right
exception class. Fields the gateway does not check pass through to the upstream untouched.
"""
from __future__ import annotations

from typing import Any

import orjson

from hookgate import GatewayError, PluginConfig, RequestContext, hookimpl
from hookgate.chat_request import validate_chat_request
from hookgate.surfaces import CHAT, OpenAIShapedSurface, ParsedRequest

_DONE = b"data: [DONE]\n\n"


class ChatCompletions:
    """OpenAI's chat completions API (POST /v1/chat/completions), JSON and SSE."""

    Config = PluginConfig

    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        self.surface = ChatCompletionsSurface()

    @hookimpl
    def register_surfaces(self, register):
        register(self.surface)


class ChatCompletionsSurface(OpenAIShapedSurface):
    """The surface itself (see :class:`hookgate.surfaces.Surface`)."""

    name = "chat.completions"
    kind = CHAT
    wire = "openai.chat"
    path = "/v1/chat/completions"
    content_type = "text/event-stream"

    async def parse(self, ctx: RequestContext, body: Any) -> ParsedRequest:
        validate_chat_request(body)
        return ParsedRequest(body)

    def open_stream(self, ctx: RequestContext) -> ChatStream:
        return ChatStream()


class ChatStream:
    """``data: <chunk>`` per chunk, ``data: [DONE]`` at the end; an error is one more event whose
    data is OpenAI's error body (the openai SDK raises it as an ``APIError``)."""

    __slots__ = ()

    def feed(self, chunk: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def finish(self) -> bytes:
        return _DONE

    def fail(self, error: GatewayError) -> bytes:
        return b"data: " + orjson.dumps(error.to_body()) + b"\n\n" + _DONE
