"""The ``anthropic`` provider: Anthropic's Messages API, translated both ways so clients keep
speaking OpenAI's chat completions, and passed through as it is for Anthropic's own clients.

Built on :mod:`hookgate.provider_kit`, with the same two transports as the OpenAI-wire
providers: ``transport = "http"`` (the default) sends the bytes over the app's shared aiohttp
pool with the key (``Authorization: Bearer``) and the ``anthropic-version`` the official SDK
sends (:data:`ANTHROPIC_API_VERSION`, checked against the installed SDK by a test);
``transport = "sdk"`` goes through the official ``anthropic`` SDK's raw ``post("/v1/messages")``
(``max_retries=0``, on its aiohttp transport; the SDK is imported only then). Either way
requests are translated (:mod:`hookgate.wire.anthropic`) and serialised once with orjson,
answers are parsed once and translated as plain dicts, a stream event by event, and Anthropic's
error bodies are read by :func:`~hookgate.wire.anthropic.error_from_anthropic`.
"""
from __future__ import annotations

import time
from typing import Any, AsyncIterator, Mapping

import orjson
from pydantic import Field

from hookgate import Completion, CompletionStream, GatewayError, RequestContext, UpstreamError, check_chunk, check_completion
from hookgate.wire.anthropic import (
    AnthropicStreamTranslator,
    error_from_anthropic,
    from_anthropic_message,
    to_anthropic_request,
)
from hookgate.provider_kit import HTTPTransport, SDKTransport, SDKProviderPlugin, TransportConfig, UpstreamTransport, endpoint_config
from hookgate.http import http_service
from hookgate.routing import upstream_body
from hookgate.surfaces import NATIVE_EVENTS

_MESSAGES_PATH = "/v1/messages"
_PASSED_HEADERS = ("anthropic-version", "anthropic-beta")
"""Client headers an Anthropic client's request takes upstream on pass-through."""
ANTHROPIC_API_VERSION = "2026-10-21"
"""The ``anthropic-version`` the http transport sends: the one the supported SDK sends (an
Anthropic client's own header wins on pass-through)."""


class AnthropicConfig(TransportConfig):
    """Settings of the anthropic provider."""

    base_url: str | None = Field("https://api.anthropic.com", description="API base URL (/v1/messages is added to it)")
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
        if isinstance(exc, self.sdk.APIStatusError):
            return error_from_anthropic(self.provider, exc.status_code, exc.body, exc.response.headers)
        return super().translate(exc)


class AnthropicHTTPTransport(HTTPTransport):
    """The http transport, reading Anthropic's error bodies as the SDK transport does."""

    def status_error(self, status: int, body: Any, headers: Mapping[str, str]) -> GatewayError:
        return error_from_anthropic(self.provider, status, body, headers)


def anthropic_transport(name: str, config: AnthropicConfig) -> UpstreamTransport:
    """The transport ``config.transport`` names; the SDK is imported only for ``"sdk"``."""
    if config.transport == "sdk":
        import anthropic
        import httpx2

        return AnthropicTransport(name, config, sdk=anthropic, client_class=anthropic.AsyncAnthropic, response_type=httpx2.Response)
    return AnthropicHTTPTransport(
        name, config, headers={"anthropic-version": ANTHROPIC_API_VERSION}, max_response_bytes=config.max_response_bytes
    )


class AnthropicChat:
    """The registered provider: OpenAI chat requests answered by the Messages API, and Messages
    requests of Anthropic clients passed through (``wires``)."""

    wires = frozenset({"anthropic.messages"})
    """Anthropic clients' requests (``/v1/messages``) go through as they are (``complete_native``)."""

    def __init__(self, name: str, transport: UpstreamTransport, config: AnthropicConfig) -> None:
        self.name, self.transport, self.config = name, transport, config

    def models(self) -> list[str]:
        return list(self.config.models)

    @property
    def configured(self) -> bool:
        """False while it has no key: a load-balanced route skips it."""
        return self.transport.configured

    def with_endpoint(self, *, base_url: str | None = None, api_key_env: str | None = None) -> AnthropicChat:
        """This provider at another endpoint (a load-balanced deployment's own base URL or key)."""
        config = endpoint_config(self.config, base_url, api_key_env)
        return AnthropicChat(self.name, self.transport.copy_for(config), config)  # type: ignore[arg-type]

    async def start(self, app: Any) -> None:
        await self.transport.start(http_service(app))

    async def close(self) -> None:
        await self.transport.close()

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

    async def complete_native(self, ctx: RequestContext) -> Completion | CompletionStream:
        """An Anthropic client's own request, sent as it is (the route's upstream model name put
        in): the answer comes back as the canonical completion plus the native message, or a
        stream whose canonical chunks carry the upstream's SSE events, byte for byte."""
        native = dict(ctx.native or {})
        if ctx.route is not None:
            native["model"] = ctx.route.upstream_model
        headers = {name: ctx.headers[name] for name in _PASSED_HEADERS if name in ctx.headers and len(ctx.headers[name]) <= 1024}
        payload = orjson.dumps(native)
        created = int(time.time())
        if native.get("stream") is True:
            response = await self.transport.post_stream(_MESSAGES_PATH, payload, headers)
            translator = AnthropicStreamTranslator(created=created, include_usage=ctx.include_usage, provider=self.name)
            return CompletionStream(self._native_chunks(response, translator), close=response.aclose)
        message = await self.transport.post_json(_MESSAGES_PATH, payload, headers)
        try:
            return Completion(from_anthropic_message(message, created=created, provider=self.name), native=message)
        except (AttributeError, TypeError, KeyError):
            raise self._malformed("body") from None

    async def _native_chunks(self, response: Any, translator: AnthropicStreamTranslator) -> AsyncIterator[dict[str, Any]]:
        """Canonical chunks, each carrying the native events that made it (events that make no
        chunk, such as ``content_block_start`` or ``ping``, ride on the next one; what is left at
        the end rides on an empty chunk)."""
        pending: list[bytes] = []
        last: dict[str, Any] = {}
        async for event, data in self.transport.events(response, ends_with_done=False):
            if not isinstance(data, dict):
                raise self._malformed("stream event")
            pending.append(b"event: " + (event or str(data.get("type", "message"))).encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")
            try:
                chunks = translator.feed(event, data)
            except (AttributeError, TypeError, KeyError):
                raise self._malformed("stream event") from None
            for chunk in chunks:
                if pending:
                    chunk[NATIVE_EVENTS] = b"".join(pending)
                    pending = []
                last = chunk
                yield chunk
        if not translator.finished:
            raise UpstreamError(f"The {self.name} provider ended the stream before message_stop.", code="upstream_disconnected")
        if pending:
            head = {key: last[key] for key in ("id", "object", "created", "model") if key in last}
            yield {**head, "choices": [], NATIVE_EVENTS: b"".join(pending)}

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
    """Anthropic's Messages API (shared pool or official SDK, never retrying), translated to and
    from OpenAI's shapes, and passed through for Anthropic's clients."""

    Config = AnthropicConfig

    def __init__(self, config: AnthropicConfig) -> None:
        self.config = config

        self.transport = anthropic_transport("anthropic", config)
        self.chat = AnthropicChat("anthropic", self.transport, config)
        self.providers, self.transports = [self.chat], [self.transport]
