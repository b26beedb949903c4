"""Building blocks for provider plugins: the official, Stainless-generated SDKs (``openai``,
``groq``, ``anthropic``) used as a transport, and the OpenAI-shaped chat provider that the
``openai``, ``groq`` and ``openai_compatible`` plugins (and any provider of an OpenAI-compatible
server) share. A public module: a third-party provider uses it exactly as the built-ins do.

Every SDK client is created with ``max_retries=0`` (the retry plugin is the one owner of retries)
on the SDK's aiohttp transport, and called through its public low-level ``post()`` with a body
already serialised by orjson: the typed ``create()`` methods walk each request through a
TypedDict transform that measured 1,144 µs of CPU per call against 686 µs for ``post()``
(docs/performance.md). Responses come back raw, parsed once with orjson; streams are read line
by line and relayed as dicts. Auth, base URL, SDK headers and the SDK's error classes still apply.
"""
from __future__ import annotations

import os
from types import ModuleType
from typing import Any, AsyncIterator, Callable, Iterable, Literal, Mapping

import orjson

from pydantic import Field, SecretStr

from .config import PluginConfig
from .context import RequestContext
from .errors import GatewayError, GatewayTimeout, ServiceUnavailable, UpstreamError
from .health import Readiness
from .markers import hookimpl
from .responses import Completion, CompletionStream, check_chunk, check_completion
from .routing import upstream_body
from .sse import iter_sse_data
from .upstream import error_from_upstream

__all__ = ["SDKProviderConfig", "SDKTransport", "SDKProviderPlugin", "OpenAIShapedProvider", "openai_transport"]

# Tells a Stainless SDK not to read the body: the switch its own with_streaming_response uses.
_RAW_STREAM_HEADER = {"X-Stainless-Raw-Response": "stream"}


class SDKProviderConfig(PluginConfig):
    """Settings every SDK-based provider shares."""

    base_url: str | None = Field(None, description="API base URL (default: the SDK's own)")
    api_key: SecretStr | None = Field(None, description="API key; prefer the environment variable named by api_key_env")
    api_key_env: str = Field("", description="environment variable holding the API key")
    models: list[str] = Field(default_factory=list, description="public model names this provider serves (more via [models])")
    kinds: list[Literal["chat", "embeddings", "completions"]] = Field(
        ["chat"], min_length=1, description="what the upstream answers: chat completions, embeddings, legacy completions"
    )
    request_timeout_seconds: float = Field(
        600.0, gt=0, description="last-resort limit per upstream call; the timeout plugin sets the real deadlines"
    )


class SDKTransport:
    """One SDK client used as a raw HTTP transport, with the SDK's errors translated.

    :param sdk: the SDK module (its exception classes and aiohttp transport).
    :param client_class: the SDK's async client (``openai.AsyncOpenAI``…), built here, and only
        here, with ``max_retries=0``: the retry plugin is the one owner of retries.
    :param response_type: the HTTP response class the SDK's ``post()`` returns raw.
    :param client_options: further keyword arguments for the client (``organization``…).
    :param key_required: whether a request without a key configured should fail with a 503 (a
        local OpenAI-compatible server often needs none).
    """

    def __init__(
        self,
        provider: str,
        config: SDKProviderConfig,
        *,
        sdk: ModuleType,
        client_class: type,
        response_type: type,
        client_options: dict[str, Any] | None = None,
        key_required: bool = True,
    ) -> None:
        self.provider, self.config, self.sdk = provider, config, sdk
        self.client_class, self.client_options = client_class, client_options or {}
        self.response_type, self.key_required = response_type, key_required
        self.client: Any = None

    def _key(self) -> str | None:
        if self.config.api_key is not None:
            return self.config.api_key.get_secret_value()
        return os.environ.get(self.config.api_key_env) if self.config.api_key_env else None

    async def start(self) -> None:
        key = self._key()
        if key or not self.key_required:
            self.client = self.client_class(
                api_key=key or "no-key-needed",
                base_url=self.config.base_url,
                max_retries=0,
                timeout=self.config.request_timeout_seconds,
                http_client=self.sdk.DefaultAioHttpClient(),
                **self.client_options,
            )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


    def _ready_client(self) -> Any:
        if self.client is None:
            raise ServiceUnavailable(
                f"The {self.provider} provider has no API key: set the environment variable {self.config.api_key_env} "
                f"or [plugins.{self.provider}] api_key.",
                code="provider_not_configured",
            )
        return self.client

    async def post_json(self, path: str, payload: bytes, headers: Mapping[str, str] | None = None) -> Any:
        """POST and return the parsed JSON body; every failure is a GatewayError. ``headers`` are
        sent as well (they win over the SDK's own)."""
        client = self._ready_client()
        try:
            options = {"headers": {"Content-Type": "application/json", **(headers or {})}}
            response = await client.post(path, cast_to=self.response_type, content=payload, options=options)
            content = response.content
        except self.sdk.APIError as exc:
            raise self.translate(exc) from None
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"The {self.provider} provider sent a body that is not JSON.", code="upstream_malformed") from None

    async def post_stream(self, path: str, payload: bytes, headers: Mapping[str, str] | None = None) -> Any:
        """POST and return the unread response once the upstream accepted the request."""
        client = self._ready_client()
        sent = {"Content-Type": "application/json", **(headers or {}), **_RAW_STREAM_HEADER}
        try:
            return await client.post(path, cast_to=self.response_type, content=payload, options={"headers": sent})
        except self.sdk.APIError as exc:
            raise self.translate(exc) from None

    async def events(self, response: Any, *, ends_with_done: bool = True) -> AsyncIterator[tuple[str | None, Any]]:
        """``(event name, parsed data)`` for each SSE event of a streamed response.

        With ``ends_with_done`` (OpenAI's convention) the stream must end with ``data: [DONE]``:
        ending without it means the connection was cut. A broken connection or an unreadable
        event is a GatewayError.
        """
        try:
            async for event, data in iter_sse_data(response.aiter_lines()):
                if data == "[DONE]":
                    return
                try:
                    yield event, orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise UpstreamError(f"The {self.provider} provider sent an unreadable stream event.", code="upstream_malformed") from None
        except GatewayError:
            raise
        except Exception as exc:
            # SDKs do not wrap transport errors raised while a streamed body is read; they arrive
            # as their HTTP library's ReadError, which differs between SDK versions.
            raise UpstreamError(
                f"The connection to the {self.provider} provider broke mid-stream ({type(exc).__name__}).", code="upstream_disconnected"
            ) from None
        if ends_with_done:
            raise UpstreamError(f"The {self.provider} provider ended the stream without [DONE].", code="upstream_disconnected")

    def translate(self, exc: Exception) -> GatewayError:
        """The client-facing error for an SDK exception (never containing a key)."""
        if isinstance(exc, self.sdk.APIStatusError):
            body = exc.body if isinstance(exc.body, dict) else {}
            if "error" not in body:
                body = {"error": body}  # some SDKs hand over only the inner error object
            return error_from_upstream(self.provider, exc.status_code, body, exc.response.headers)
        if isinstance(exc, self.sdk.APITimeoutError) and not _refused(exc):
            return GatewayTimeout(f"The {self.provider} provider did not answer in time.")
        if isinstance(exc, self.sdk.APIConnectionError):
            return UpstreamError(f"Could not connect to the {self.provider} provider.", code="upstream_unreachable")
        return UpstreamError(f"The {self.provider} provider failed ({type(exc).__name__}).")


def openai_transport(name: str, config: SDKProviderConfig, *, organization: str | None = None, key_required: bool = True) -> SDKTransport:
    """An :class:`SDKTransport` over the official ``openai`` SDK's ``AsyncOpenAI``: what the
    ``openai`` and ``openai_compatible`` providers (and a provider of any OpenAI-compatible
    server) use. The SDK is imported here, when the first such provider is built."""
    import httpx2
    import openai

    return SDKTransport(
        name,
        config,
        sdk=openai,
        client_class=openai.AsyncOpenAI,
        response_type=httpx2.Response,
        client_options={"organization": organization},
        key_required=key_required,
    )


class SDKProviderPlugin:
    """Base of a provider plugin: registers :attr:`providers` and starts, checks and closes the
    SDK clients in :attr:`transports` with the app."""

    providers: list[Any]
    transports: list[SDKTransport]

    @hookimpl
    def register_providers(self, register: Callable[[Any], None]) -> None:
        for provider in self.providers:
            register(provider)

    @hookimpl
    async def startup(self) -> None:
        for transport in self.transports:
            await transport.start()

    @hookimpl
    async def check_ready(self) -> Readiness:
        missing = [t for t in self.transports if t.client is None]
        if not missing:
            return Readiness("ok")
        names = ", ".join(f"{t.provider} (set {t.config.api_key_env})" for t in missing)
        return Readiness("degraded", f"no API key for {names}; requests for their models get 503")

    @hookimpl
    async def shutdown(self) -> None:
        for transport in self.transports:
            await transport.close()


class OpenAIShapedProvider:
    """A provider whose upstream speaks OpenAI's API (OpenAI, Groq, vLLM, Ollama…): chat
    completions, and where the upstream serves them embeddings and legacy completions. Bodies go
    through unchanged but for the route's model and defaults; chunks are relayed as they come.

    :param path: the chat completions path; the other kinds' paths are its siblings
        (``…/embeddings``, ``…/completions``).
    :param kinds: the kinds of request it answers.
    """

    def __init__(self, name: str, transport: SDKTransport, path: str, models: list[str], kinds: Iterable[str] = ("chat",)) -> None:
        self.name, self.transport, self.path, self._models = name, transport, path, models
        self.kinds = frozenset(kinds)
        base = path.removesuffix("chat/completions")
        self._paths = {"chat": path, "embeddings": base + "embeddings", "completions": base + "completions"}

    def models(self) -> list[str]:
        return list(self._models)

    async def complete(self, ctx: RequestContext) -> Completion | CompletionStream:
        path = self._paths[ctx.kind]
        payload = orjson.dumps(upstream_body(ctx))
        if ctx.stream:
            response = await self.transport.post_stream(path, payload)
            return CompletionStream(self._chunks(response), close=response.aclose)
        body = await self.transport.post_json(path, payload)
        if ctx.kind == "embeddings":
            if not isinstance(body, dict) or not isinstance(body.get("data"), list) or not all(isinstance(a, dict) for a in body["data"]):
                raise UpstreamError(f"The {self.name} provider sent an unexpected body.", code="upstream_malformed")
            return Completion(body)
        return Completion(check_completion(body, self.name))

    async def _chunks(self, response: Any) -> AsyncIterator[dict[str, Any]]:
        async for _event, chunk in self.transport.events(response):
            if not isinstance(chunk, dict):
                raise UpstreamError(f"The {self.name} provider sent an unexpected stream chunk.", code="upstream_malformed")
            if "error" in chunk:
                raise error_from_upstream(self.name, 500, chunk)
            yield check_chunk(chunk, self.name)


def _refused(exc: BaseException) -> bool:
    """True when a 'timeout' is really a refused connection.

    The SDKs' aiohttp transport maps every aiohttp connection error, a refused connection
    included, to a connect *timeout*; the cause chain still tells them apart.
    """
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, ConnectionError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False
