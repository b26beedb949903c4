"""The ``openai`` provider: OpenAI's API through the official SDK, used the cheap way.

The SDK is created with ``max_retries=0`` (the retry plugin owns retries) on its aiohttp
transport, and called through ``with_raw_response`` / ``with_streaming_response`` so that a body
is parsed once with orjson and stream chunks are relayed as dicts, never rebuilt from models.
"""
from __future__ import annotations

import inspect
import os
from typing import Any, AsyncIterator

import openai
import orjson
from pydantic import Field, SecretStr

from hookgate import (
    Completion,
    CompletionStream,
    GatewayError,
    GatewayTimeout,
    PluginConfig,
    RequestContext,
    ServiceUnavailable,
    UpstreamError,
    hookimpl,
)
from hookgate.sse import iter_sse_data
from hookgate.upstream import error_from_upstream

# Parameters the SDK's create() takes by name; anything else a client sends goes in extra_body,
# so new API parameters pass through without waiting for an SDK release.
_CREATE_PARAMS = frozenset(inspect.signature(openai.resources.chat.AsyncCompletions.create).parameters) - {
    "self",
    "extra_headers",
    "extra_query",
    "extra_body",
    "timeout",
}


class OpenAIConfig(PluginConfig):
    """Settings of the openai provider."""

    base_url: str = Field("https://api.openai.com/v1", description="API base URL (any server speaking OpenAI's API)")
    api_key: SecretStr | None = Field(None, description="API key; prefer the environment variable named by api_key_env")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    organization: str | None = Field(None, description="OpenAI organization id, if any")
    models: list[str] = Field(
        ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o4-mini"],
        description="model names this provider serves",
    )
    request_timeout_seconds: float = Field(
        600.0, gt=0, description="last-resort limit per upstream call; the timeout plugin sets the real deadlines"
    )


class OpenAIProvider:
    """OpenAI's chat completions API (official SDK, max_retries=0)."""

    Config = OpenAIConfig
    name = "openai"

    def __init__(self, config: OpenAIConfig) -> None:
        self.config = config
        self.client: openai.AsyncOpenAI | None = None

    @hookimpl
    def register_providers(self, register):
        register(self)

    def models(self) -> list[str]:
        return list(self.config.models)

    @hookimpl
    async def startup(self):
        key = self.config.api_key.get_secret_value() if self.config.api_key else os.environ.get(self.config.api_key_env)
        if not key:
            return  # still serve other providers; requests for our models get a clear 503
        self.client = openai.AsyncOpenAI(
            api_key=key,
            base_url=self.config.base_url,
            organization=self.config.organization,
            max_retries=0,
            timeout=self.config.request_timeout_seconds,
            http_client=openai.DefaultAioHttpClient(),
        )

    @hookimpl
    async def shutdown(self):
        if self.client is not None:
            await self.client.close()

    async def complete(self, ctx: RequestContext) -> Completion | CompletionStream:
        client = self.client
        if client is None:
            raise ServiceUnavailable(
                f"The {self.name} provider has no API key: set the environment variable {self.config.api_key_env} "
                f"or [plugins.{self.name}] api_key.",
                code="provider_not_configured",
            )
        params, extra = _split_params(ctx.body)
        try:
            if ctx.stream:
                return await self._stream(client, params, extra)
            raw = await client.chat.completions.with_raw_response.create(**params, extra_body=extra or None)
            content = raw.http_response.content
        except openai.APIError as exc:
            raise self._translate(exc) from None
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"The {self.name} provider sent a body that is not JSON.", code="upstream_malformed") from None
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
            raise UpstreamError(f"The {self.name} provider sent an unexpected body.", code="upstream_malformed")
        return Completion(body)

    async def _stream(self, client: openai.AsyncOpenAI, params: dict[str, Any], extra: dict[str, Any]) -> CompletionStream:
        manager = client.chat.completions.with_streaming_response.create(**params, extra_body=extra or None)
        try:
            response = await manager.__aenter__()  # raises for a non-2xx status, before any byte reaches the client
        except openai.APIError as exc:
            raise self._translate(exc) from None

        async def close() -> None:
            await manager.__aexit__(None, None, None)

        return CompletionStream(self._chunks(response), close=close)

    async def _chunks(self, response: Any) -> AsyncIterator[dict[str, Any]]:
        try:
            async for _event, data in iter_sse_data(response.iter_lines()):
                if data == "[DONE]":
                    return
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise UpstreamError(f"The {self.name} provider sent an unreadable stream chunk.", code="upstream_malformed") from None
                if "error" in chunk:
                    raise error_from_upstream(self.name, 500, chunk)
                yield chunk
        except GatewayError:
            raise
        except Exception as exc:
            # The SDK does not wrap transport errors raised while a streamed body is read (they
            # arrive as its HTTP library's ReadError, which differs between SDK versions).
            raise UpstreamError(
                f"The connection to the {self.name} provider broke mid-stream ({type(exc).__name__}).", code="upstream_disconnected"
            ) from None
        raise UpstreamError(f"The {self.name} provider ended the stream without [DONE].", code="upstream_disconnected")

    def _translate(self, exc: openai.APIError) -> GatewayError:
        """The client-facing error for an SDK exception."""
        if isinstance(exc, openai.APIStatusError):
            body = exc.body if isinstance(exc.body, dict) else {}
            if "error" not in body:
                body = {"error": body}  # the SDK hands over the inner error object
            return error_from_upstream(self.name, exc.status_code, body, exc.response.headers)
        if isinstance(exc, openai.APITimeoutError) and not _refused(exc):
            return GatewayTimeout(f"The {self.name} provider did not answer in time.")
        if isinstance(exc, openai.APIConnectionError):
            return UpstreamError(f"Could not connect to the {self.name} provider.", code="upstream_unreachable")
        return UpstreamError(f"The {self.name} provider failed ({type(exc).__name__}).")


def _refused(exc: BaseException) -> bool:
    """True when a 'timeout' is really a refused connection.

    The SDK's aiohttp transport maps every aiohttp connection error, a refused connection
    included, to a connect *timeout*; the cause chain still tells them apart.
    """
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, ConnectionError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _split_params(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    params: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in body.items():
        (params if key in _CREATE_PARAMS else extra)[key] = value
    return params, extra
