"""The ``openai`` provider: OpenAI's API through the official SDK, used the cheap way.

The SDK client is created with ``max_retries=0`` (the retry plugin owns retries) on its aiohttp
transport. Requests go through its public low-level ``post()`` with the body already serialised
by orjson: ``chat.completions.create()`` would walk the whole request through its TypedDict
transform on every call, which measured 1,144 µs of CPU per call against 686 µs for ``post()``
(docs/performance.md). Responses come back raw, so a body is parsed once with orjson and stream
chunks are relayed as dicts, never rebuilt from pydantic models. Auth, base URL, headers and the
SDK's error classes still apply.
"""
from __future__ import annotations

import os
from typing import Any, AsyncIterator

import httpx2
import openai
import orjson
from pydantic import Field, SecretStr

from hookgate import (
    Completion,
    CompletionStream,
    GatewayError,
    GatewayTimeout,
    PluginConfig,
    Readiness,
    RequestContext,
    ServiceUnavailable,
    UpstreamError,
    hookimpl,
)
from hookgate.routing import upstream_body
from hookgate.sse import iter_sse_data
from hookgate.upstream import error_from_upstream

_JSON = {"Content-Type": "application/json"}
# Tells the SDK not to read the body: the same switch its own with_streaming_response uses.
_STREAMED = {"Content-Type": "application/json", "X-Stainless-Raw-Response": "stream"}


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
    async def check_ready(self):
        if self.client is None:
            return Readiness("degraded", f"no API key: set {self.config.api_key_env}; requests for its models get 503")
        return Readiness("ok")

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
        payload = orjson.dumps(upstream_body(ctx))
        try:
            if ctx.stream:
                response = await client.post("/chat/completions", cast_to=httpx2.Response, content=payload, options={"headers": _STREAMED})
                return CompletionStream(self._chunks(response), close=response.aclose)
            response = await client.post("/chat/completions", cast_to=httpx2.Response, content=payload, options={"headers": _JSON})
            content = response.content
        except openai.APIError as exc:
            raise self._translate(exc) from None
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"The {self.name} provider sent a body that is not JSON.", code="upstream_malformed") from None
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
            raise UpstreamError(f"The {self.name} provider sent an unexpected body.", code="upstream_malformed")
        return Completion(body)

    async def _chunks(self, response: Any) -> AsyncIterator[dict[str, Any]]:
        try:
            async for _event, data in iter_sse_data(response.aiter_lines()):
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
