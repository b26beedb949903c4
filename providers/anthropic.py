"""The ``anthropic`` provider: Anthropic's Messages API through the official ``anthropic`` SDK,
translated both ways so clients keep speaking OpenAI's chat completions.

Built on :mod:`hookgate.provider_kit`: the SDK client has ``max_retries=0`` and runs on
its aiohttp transport; requests are translated (:mod:`hookgate.wire.anthropic`),
serialised once with orjson and sent through the SDK's raw ``post("/v1/messages")``, which adds
the key (``Authorization: Bearer``) and the ``anthropic-version`` header the SDK was built for.
Answers are parsed once and translated as plain dicts; a stream is translated event by event.
"""
from __future__ import annotations

import time
from typing import Any, AsyncIterator

import anthropic
import httpx2
import orjson
from pydantic import Field

from hookgate import Completion, CompletionStream, GatewayError, RequestContext, UpstreamError, check_chunk, check_completion
from hookgate.wire.anthropic import (
    AnthropicStreamTranslator,
    error_from_anthropic,
    from_anthropic_message,
    to_anthropic_request,
)
from hookgate.provider_kit import SDKProviderConfig, SDKProviderPlugin, SDKTransport
from hookgate.routing import upstream_body

_MESSAGES_PATH = "/v1/messages"


class AnthropicConfig(SDKProviderConfig):
    """Settings of the anthropic provider."""

    base_url: str | None = Field("https://api.anthropic.com", description="API base URL (the SDK adds /v1/messages)")
    api_key_env: str = Field("ANTHROPIC_API_KEY", description="environment variable holding the API key")
    models: list[str] = Field(
        ["claude-opus-4-8", "claude-sonnet-5", "claude-sonnet-4-6", "claude-haiku-4-5"],
        description="model names this provider serves (more via [models])",
    )
    default_max_tokens: int = Field(
        4096, ge=1, description="max_tokens sent when the client sets neither max_tokens nor max_completion_tokens (Anthropic requires one)"
    )


class AnthropicTransport(SDKTransport):
    """The SDK transport, reading Anthropic's error bodies (``details.error_code`` included)."""

    def translate(self, exc: Exception) -> GatewayError:
        if isinstance(exc, anthropic.APIStatusError):
            return error_from_anthropic(self.provider, exc.status_code, exc.body, exc.response.headers)
        return super().translate(exc)


class AnthropicChat:
    """The registered provider: OpenAI chat requests answered by the Messages API."""

    def __init__(self, name: str, transport: SDKTransport, config: AnthropicConfig) -> None:
        self.name, self.transport, self.config = name, transport, config

    def models(self) -> list[str]:
        return list(self.config.models)

    async def complete(self, ctx: RequestContext) -> Completion | CompletionStream:
        # Translated before anything is sent: what Anthropic cannot do is a 400 without a call.
        request = to_anthropic_request(upstream_body(ctx), default_max_tokens=self.config.default_max_tokens)
        payload = orjson.dumps(request)
        created = int(time.time())
        if ctx.stream:
            response = await self.transport.post_stream(_MESSAGES_PATH, payload)
            translator = AnthropicStreamTranslator(created=created, include_usage=ctx.include_usage, provider=self.name)
            return CompletionStream(self._chunks(response, translator), close=response.aclose)
        message = await self.transport.post_json(_MESSAGES_PATH, payload)
        try:
            return Completion(check_completion(from_anthropic_message(message, created=created, provider=self.name), self.name))
        except (AttributeError, TypeError, KeyError):  # a field of an unexpected type
            raise self._malformed("body") from None

    async def _chunks(self, response: Any, translator: AnthropicStreamTranslator) -> AsyncIterator[dict[str, Any]]:
        async for event, data in self.transport.events(response, ends_with_done=False):
            if not isinstance(data, dict):
                raise self._malformed("stream event")
            try:
                chunks = translator.feed(event, data)
            except (AttributeError, TypeError, KeyError):
                raise self._malformed("stream event") from None
            for chunk in chunks:
                yield check_chunk(chunk, self.name)
        if not translator.finished:
            raise UpstreamError(f"The {self.name} provider ended the stream before message_stop.", code="upstream_disconnected")

    def _malformed(self, what: str) -> UpstreamError:
        return UpstreamError(f"The {self.name} provider sent an unexpected {what}.", code="upstream_malformed")


class AnthropicProvider(SDKProviderPlugin):
    """Anthropic's Messages API (official SDK, max_retries=0), translated to and from OpenAI's shapes."""

    Config = AnthropicConfig

    def __init__(self, config: AnthropicConfig) -> None:
        self.config = config

        self.transport = AnthropicTransport("anthropic", config, sdk=anthropic, client_class=anthropic.AsyncAnthropic, response_type=httpx2.Response)
        self.chat = AnthropicChat("anthropic", self.transport, config)
        self.providers, self.transports = [self.chat], [self.transport]
