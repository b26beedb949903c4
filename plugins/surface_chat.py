"""``chat_completions``: OpenAI's chat completions API, ``POST /v1/chat/completions``.

The canonical surface: its request is the canonical request as it is (validated at the edge,
the error naming the parameter at fault), its answer the canonical ``chat.completion``, its
stream the ``chat.completion.chunk`` events followed by ``data: [DONE]``, its errors OpenAI's
``{"error": {"message", "type", "param", "code"}}``, so the official SDKs raise the right
exception class. Fields the gateway does not check pass through to the upstream untouched.
"""
from __future__ import annotations

from typing import Any


from hookgate import PluginConfig, RequestContext, hookimpl
from hookgate.chat_request import validate_chat_request
from hookgate.surfaces import CHAT, OpenAIShapedSurface, ParsedRequest


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
