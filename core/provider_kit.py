"""Building blocks for provider plugins: two transports to an upstream HTTP API, and the
OpenAI-shaped chat provider that the ``openai``, ``groq`` and ``openai_compatible`` plugins (and
any provider of an OpenAI-compatible server) share. A public module: a third-party provider uses
it exactly as the built-ins do.

**The http transport** (:class:`HTTPTransport`, the default of OpenAI-wire providers) posts the
body, serialised once with orjson, through the app's one shared ``aiohttp`` session
(:mod:`hookgate.http`), parses a JSON answer once with orjson and reads a stream as SSE events
straight from the response's bytes. It is what a gateway needs of an API it relays: a URL, a key
and the error table; it costs a fraction of an SDK call per request (docs/performance.md).

**The sdk transport** (:class:`SDKTransport`) is an official, Stainless-generated SDK client
(``openai``, ``groq``, ``anthropic``) created with ``max_retries=0`` (the retry plugin is the one
owner of retries) on the SDK's aiohttp transport, and called through its public low-level
``post()`` with the same pre-serialised body: the typed ``create()`` methods walk each request
through a TypedDict transform that measured 1,144 µs of CPU per call against 686 µs for
``post()``. Auth, base URL, SDK headers and the SDK's error classes apply. The Anthropic provider
uses it; the OpenAI-wire providers offer it as ``transport = "sdk"``.

Both map every failure through :func:`hookgate.upstream.error_from_upstream` (the same status,
code and ``Retry-After`` for the same upstream answer, tested under both) and read streams with
the same :class:`~hookgate.sse.SSEDecoder`, so retry, breaker and fallback plugins cannot tell
them apart.
"""
from __future__ import annotations

import os
from types import ModuleType
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterable, Literal, Mapping, Protocol

import aiohttp
import orjson

from pydantic import Field, SecretStr
from yarl import URL

from .config import PluginConfig
from .context import RequestContext
from .errors import GatewayError, GatewayTimeout, ServiceUnavailable, UpstreamError
from .health import Readiness
from .http import HTTPService, env_proxy, http_service
from .markers import hookimpl
from .responses import Completion, CompletionStream, StreamAssembly, check_chunk, check_completion
from .routing import upstream_body
from .sse import SSE_RELAY, SSEDecoder, SSEEventTooLarge, SSERelay
from .upstream import error_from_upstream

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "SDKProviderConfig",
    "OpenAIWireConfig",
    "UpstreamTransport",
    "SDKTransport",
    "HTTPTransport",
    "HTTPStream",
    "SDKProviderPlugin",
    "OpenAIShapedProvider",
    "openai_transport",
    "openai_wire_transport",
    "TransportConfig",
    "endpoint_config",
]

# Tells a Stainless SDK not to read the body: the switch its own with_streaming_response uses.
_RAW_STREAM_HEADER = {"X-Stainless-Raw-Response": "stream"}
_ERROR_BODY_BYTES = 1024 * 1024
"""An error answer longer than this is not read further: its status still decides the error."""


class SDKProviderConfig(PluginConfig):
    """Settings every provider of an upstream HTTP API shares (SDK-based or not)."""

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


class TransportConfig(SDKProviderConfig):
    """Settings of a provider that can call its upstream over the shared pool or its SDK: which transport."""

    transport: Literal["http", "sdk"] = Field(
        "http",
        description='"http": the shared aiohttp pool, bytes in and out (fastest); "sdk": the official SDK client',
    )
    max_response_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="http transport: largest upstream answer (or stream event) read; a larger one is a 502"
    )


class OpenAIWireConfig(TransportConfig):
    """Settings of a provider whose upstream speaks OpenAI's wire format: which transport."""


class UpstreamTransport(Protocol):
    """What :class:`OpenAIShapedProvider` and :class:`SDKProviderPlugin` need of a transport
    (:class:`HTTPTransport` and :class:`SDKTransport` are the two built in)."""

    provider: str
    config: SDKProviderConfig

    @property
    def configured(self) -> bool:
        """False when the transport has no key and needs one: its calls fail with a 503."""
        ...

    async def start(self, http: HTTPService | None = None) -> None: ...

    async def close(self) -> None: ...

    async def post_json(self, path: str, payload: bytes, headers: Mapping[str, str] | None = None) -> Any:
        """POST ``payload`` and return the parsed JSON answer; every failure is a GatewayError.
        ``headers`` are sent as well, winning over the transport's own."""
        ...

    async def post_stream(self, path: str, payload: bytes, headers: Mapping[str, str] | None = None) -> Any:
        """POST and return the unread answer (with an ``aclose()``) once the upstream accepted it."""
        ...

    def events(self, response: Any, *, ends_with_done: bool = True) -> AsyncIterator[tuple[str | None, Any]]:
        """``(event name, parsed data)`` for each SSE event of a streamed answer."""
        ...


def _api_key(config: SDKProviderConfig) -> str | None:
    if config.api_key is not None:
        return config.api_key.get_secret_value()
    return os.environ.get(config.api_key_env) if config.api_key_env else None


def _not_configured(provider: str, config: SDKProviderConfig) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"The {provider} provider has no API key: set the environment variable {config.api_key_env} "
        f"or [plugins.{provider}] api_key.",
        code="provider_not_configured",
    )


# ------------------------------------------------------------------------------------ sdk ---


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

    @property
    def configured(self) -> bool:
        return self.client is not None

    def copy_for(self, config: SDKProviderConfig) -> SDKTransport:
        """The same transport for another endpoint (a load-balanced deployment's own base URL or
        key); not started."""
        return type(self)(
            self.provider, config, sdk=self.sdk, client_class=self.client_class, response_type=self.response_type,
            client_options=self.client_options, key_required=self.key_required,
        )

    def _key(self) -> str | None:
        return _api_key(self.config)

    async def start(self, http: HTTPService | None = None) -> None:
        """Build the SDK client (``http`` is not used: the SDK keeps its own pool)."""
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
            raise _not_configured(self.provider, self.config)
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

    def events(
        self, response: Any, *, ends_with_done: bool = True, relay: SSERelay | None = None, check: Callable[[Any], Any] | None = None,
        batched: bool = False,
    ) -> AsyncIterator[Any]:
        """``(event name, parsed data)`` for each SSE event of a streamed response (with
        ``check``: what ``check(parsed data)`` returns, or raises, for each; with ``batched``:
        those of each read as one list, for :meth:`hookgate.CompletionStream.of_batches`).

        With ``ends_with_done`` (OpenAI's convention) the stream must end with ``data: [DONE]``:
        ending without it means the connection was cut. A broken connection or an unreadable
        event is a GatewayError. The SDK's body is read as bytes and split by
        :class:`~hookgate.sse.SSEDecoder`, as the http transport does. With a ``relay``, each
        read's parsed events and bytes are registered with it before they are yielded (the
        ``[DONE]`` event's bytes left out: the surface writes its own end).
        """
        return _decoded_events(
            self.provider, response.aiter_bytes(), ends_with_done=ends_with_done, max_event_bytes=16 * 1024 * 1024, relay=relay,
            check=check, batched=batched,
        )

    def translate(self, exc: Exception) -> GatewayError:
        """The client-facing error for an SDK exception (never containing a key)."""
        if isinstance(exc, self.sdk.APIStatusError):
            body = exc.body if isinstance(exc.body, dict) else {}
            if "error" not in body:
                body = {"error": body}  # some SDKs hand over only the inner error object
            return error_from_upstream(self.provider, exc.status_code, body, exc.response.headers)
        if isinstance(exc, self.sdk.APITimeoutError) and not _connection_failed(exc):
            return _timed_out(self.provider)
        if isinstance(exc, self.sdk.APIConnectionError):
            return _unreachable(self.provider)
        return UpstreamError(f"The {self.provider} provider failed ({type(exc).__name__}).")


def openai_transport(name: str, config: SDKProviderConfig, *, organization: str | None = None, key_required: bool = True) -> SDKTransport:
    """An :class:`SDKTransport` over the official ``openai`` SDK's ``AsyncOpenAI``: what the
    ``openai`` and ``openai_compatible`` providers (and a provider of any OpenAI-compatible
    server) use with ``transport = "sdk"``. The SDK is imported here, when the first such
    provider is built."""
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


# ----------------------------------------------------------------------------------- http ---


class HTTPStream:
    """A streamed answer being read from the shared pool; :meth:`aclose` gives its connection
    back for reuse when the whole body was read, and closes it otherwise (so an upstream whose
    stream we abandon sees the call cancelled)."""

    __slots__ = ("response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def aclose(self) -> None:
        if self.response.content.is_eof():
            self.response.release()
        else:
            self.response.close()


class HTTPTransport:
    """An upstream HTTP API over the app's shared ``aiohttp`` session: bytes out, bytes in.
    OpenAI's wire by default; a subclass reads another API's error bodies (:meth:`status_error`).

    :param default_base_url: the API's base URL when the config sets none.
    :param headers: further headers for every call (``OpenAI-Organization``…); never logged.
    :param key_required: whether a call without a key configured fails with a 503 (a local
        OpenAI-compatible server often needs none: it is then called without ``Authorization``).

    The key and the proxy (``HTTPS_PROXY``… and ``NO_PROXY``, as the SDKs read them) are read at
    :meth:`start`. Every call has ``request_timeout_seconds`` as its limit
    to connect and between two reads (the SDKs' meaning of their timeout); the timeout plugin's
    deadlines cancel the call, which closes its connection.
    """

    def __init__(
        self,
        provider: str,
        config: SDKProviderConfig,
        *,
        default_base_url: str | None = None,
        headers: dict[str, str] | None = None,
        key_required: bool = True,
        max_response_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        base_url = config.base_url or default_base_url
        if not base_url:
            raise ValueError(f"the {provider} provider needs a base_url")
        self.provider, self.config, self.key_required = provider, config, key_required
        self.base_url = base_url.rstrip("/")
        self.max_response_bytes = max_response_bytes
        self._extra_headers = dict(headers or {})
        self._headers: dict[str, str] | None = None
        self._stream_headers: dict[str, str] = {}
        self._urls: dict[str, URL] = {}
        self._session: aiohttp.ClientSession | None = None
        self._timeout: aiohttp.ClientTimeout | None = None
        self._proxy: str | None = None

    @property
    def configured(self) -> bool:
        return self._headers is not None

    def copy_for(self, config: SDKProviderConfig) -> HTTPTransport:
        """The same transport for another endpoint (a load-balanced deployment's own base URL or
        key); not started."""
        return type(self)(
            self.provider, config, default_base_url=self.base_url, headers=self._extra_headers,
            key_required=self.key_required, max_response_bytes=self.max_response_bytes,
        )

    async def start(self, http: HTTPService | None = None) -> None:
        """Take the session of ``http`` (the app's pool) and read the key."""
        from . import __version__

        if http is None:
            raise RuntimeError("HTTPTransport.start needs the app's HTTPService (SDKProviderPlugin passes it)")
        timeout = self.config.request_timeout_seconds
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=timeout, sock_read=timeout)
        self._session = http.session()
        self._proxy = env_proxy(self.base_url)
        key = _api_key(self.config)
        if key or not self.key_required:
            headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": f"hookgate/{__version__}"}
            if key:
                headers["Authorization"] = f"Bearer {key}"
            headers.update(self._extra_headers)
            self._headers = headers
            self._stream_headers = {**headers, "Accept": "text/event-stream"}

    async def close(self) -> None:
        """Nothing of its own to close: the pool belongs to the app."""
        self._session = None

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self.base_url + path)
        return url

    async def _post(self, path: str, payload: bytes, headers: dict[str, str] | None) -> aiohttp.ClientResponse:
        """The upstream's answer with a 2xx status; any other status is its GatewayError."""
        if headers is None or self._session is None:
            raise _not_configured(self.provider, self.config)
        try:
            response = await self._session.post(
                self._url(path), data=payload, headers=headers, timeout=self._timeout, proxy=self._proxy, allow_redirects=False
            )
        except Exception as exc:  # aiohttp's connection errors and timeouts; CancelledError passes
            raise self.translate(exc) from None
        if 200 <= response.status < 300:
            return response
        try:
            raw = await self._read(response, _ERROR_BODY_BYTES)
            body = orjson.loads(raw)
        except Exception:  # an unreadable error body: the status alone decides
            body = {}
        finally:
            response.release()
        raise self.status_error(response.status, body, response.headers)

    def status_error(self, status: int, body: Any, headers: Mapping[str, str]) -> GatewayError:
        """The client-facing error for a non-2xx answer and its parsed body (``{}`` when it had
        none), through :func:`hookgate.upstream.error_from_upstream`'s shared table."""
        if not isinstance(body, dict):
            body = {}
        elif not isinstance(body.get("error"), dict):
            body = {"error": body}  # the inner error object alone, as some servers send it
        return error_from_upstream(self.provider, status, body, headers)

    async def post_json(self, path: str, payload: bytes, headers: Mapping[str, str] | None = None) -> Any:
        """POST and return the parsed JSON body; every failure is a GatewayError. ``headers``
        are sent as well (they win over the transport's own)."""
        sent = self._headers if not headers or self._headers is None else {**self._headers, **headers}
        response = await self._post(path, payload, sent)
        try:
            raw = await self._read(response, self.max_response_bytes)
        except GatewayError:
            raise
        except Exception as exc:
            raise self.translate(exc) from None
        finally:
            response.release()
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"The {self.provider} provider sent a body that is not JSON.", code="upstream_malformed") from None

    async def post_stream(self, path: str, payload: bytes, headers: Mapping[str, str] | None = None) -> HTTPStream:
        """POST and return the unread answer once the upstream accepted the request."""
        sent = None if self._headers is None else self._stream_headers if not headers else {**self._stream_headers, **headers}
        return HTTPStream(await self._post(path, payload, sent))

    def events(
        self, response: HTTPStream, *, ends_with_done: bool = True, relay: SSERelay | None = None, check: Callable[[Any], Any] | None = None,
        batched: bool = False,
    ) -> AsyncIterator[Any]:
        """``(event name, parsed data)`` for each SSE event, decoded from the bytes of each read
        as they arrive; the same contract as :meth:`SDKTransport.events`."""
        return _decoded_events(
            self.provider, response.response.content.iter_any(), ends_with_done=ends_with_done,
            max_event_bytes=self.max_response_bytes, relay=relay, check=check, batched=batched,
        )

    async def _read(self, response: aiohttp.ClientResponse, limit: int) -> bytes:
        length = response.content_length
        if length is not None and length > limit:
            raise _too_large(self.provider, limit)
        if length is not None and "Content-Encoding" not in response.headers:
            return await response.read()
        parts, size = [], 0  # chunked or compressed: bounded as it is read
        async for data in response.content.iter_any():
            size += len(data)
            if size > limit:
                raise _too_large(self.provider, limit)
            parts.append(data)
        return b"".join(parts)

    def translate(self, exc: BaseException) -> GatewayError:
        """The client-facing error for an aiohttp failure, as :meth:`SDKTransport.translate`
        gives it for the same failure."""
        if isinstance(exc, GatewayError):
            return exc
        if isinstance(exc, aiohttp.ClientConnectorError):
            return _unreachable(self.provider)
        if isinstance(exc, TimeoutError):
            return _timed_out(self.provider)
        if isinstance(exc, aiohttp.ClientConnectionError):
            return _unreachable(self.provider)
        return UpstreamError(f"The {self.provider} provider failed ({type(exc).__name__}).")


def openai_wire_transport(
    name: str,
    config: OpenAIWireConfig,
    *,
    default_base_url: str = "https://api.openai.com/v1",
    organization: str | None = None,
    project: str | None = None,
    key_required: bool = True,
) -> UpstreamTransport:
    """The transport ``config.transport`` names for an OpenAI-compatible upstream: an
    :class:`HTTPTransport` sending OpenAI's ``OpenAI-Organization``/``OpenAI-Project`` headers
    when given, or the ``openai`` SDK (:func:`openai_transport`, imported only then)."""
    if config.transport == "sdk":
        return openai_transport(name, config, organization=organization, key_required=key_required)
    headers = {}
    if organization:
        headers["OpenAI-Organization"] = organization
    if project:
        headers["OpenAI-Project"] = project
    return HTTPTransport(
        name, config, default_base_url=default_base_url, headers=headers, key_required=key_required, max_response_bytes=config.max_response_bytes
    )


# ---------------------------------------------------------------------------- the plugin ---


class SDKProviderPlugin:
    """Base of a provider plugin: registers :attr:`providers` and starts, checks and closes the
    transports in :attr:`transports` with the app.

    The http transports use the app's :class:`~hookgate.http.HTTPService`; in an app built
    without one, the plugin opens a pool of its own at start-up and closes it at shutdown.
    """

    providers: list[Any]
    transports: list[Any]
    _own_http: HTTPService | None = None

    @hookimpl
    def register_providers(self, register: Callable[[Any], None]) -> None:
        for provider in self.providers:
            register(provider)

    @hookimpl
    async def startup(self, app: web.Application) -> None:
        http = http_service(app)
        if http is None and any(isinstance(t, HTTPTransport) for t in self.transports):
            http = self._own_http = HTTPService()
        for transport in self.transports:
            await transport.start(http)

    @hookimpl
    async def check_ready(self) -> Readiness:
        missing = [t for t in self.transports if not t.configured]
        if not missing:
            return Readiness("ok")
        names = ", ".join(f"{t.provider} (set {t.config.api_key_env})" for t in missing)
        return Readiness("degraded", f"no API key for {names}; requests for their models get 503")

    @hookimpl
    async def shutdown(self) -> None:
        for transport in self.transports:
            await transport.close()
        own, self._own_http = self._own_http, None
        if own is not None:
            await own.close()


class OpenAIShapedProvider:
    """A provider whose upstream speaks OpenAI's API (OpenAI, Groq, vLLM, Ollama…): chat
    completions, and where the upstream serves them embeddings and legacy completions. Bodies go
    through unchanged but for the route's model and defaults; chunks are relayed as they come.

    :param path: the chat completions path; the other kinds' paths are its siblings
        (``…/embeddings``, ``…/completions``).
    :param kinds: the kinds of request it answers.
    """

    def __init__(self, name: str, transport: UpstreamTransport, path: str, models: list[str], kinds: Iterable[str] = ("chat",)) -> None:
        self.name, self.transport, self.path, self._models = name, transport, path, models
        self.kinds = frozenset(kinds)
        base = path.removesuffix("chat/completions")
        self._paths = {"chat": path, "embeddings": base + "embeddings", "completions": base + "completions"}

    def models(self) -> list[str]:
        return list(self._models)

    @property
    def configured(self) -> bool:
        """False while it has no key it needs: a load-balanced route skips it."""
        return self.transport.configured

    def with_endpoint(self, *, base_url: str | None = None, api_key_env: str | None = None) -> OpenAIShapedProvider:
        """This provider at another endpoint: a load-balanced deployment with its own base URL or
        key variable (``[models.X] deployments``). The core starts and closes it (:meth:`start`)."""
        return OpenAIShapedProvider(
            self.name, self.transport.copy_for(endpoint_config(self.transport.config, base_url, api_key_env)),  # type: ignore[attr-defined]
            self.path, self._models, self.kinds,
        )

    async def start(self, app: web.Application) -> None:
        """Start an endpoint copy's transport on the app's pool (the plugin starts the original)."""
        await self.transport.start(http_service(app))

    async def close(self) -> None:
        await self.transport.close()

    async def complete(self, ctx: RequestContext) -> Completion | CompletionStream:
        path = self._paths[ctx.kind]
        payload = orjson.dumps(upstream_body(ctx))
        if ctx.stream:
            response = await self.transport.post_stream(path, payload)
            if isinstance(self.transport, (HTTPTransport, SDKTransport)):
                # The chunks go to the client as the upstream's bytes, one write per read, when
                # nothing in the chain changes them (hookgate.sse.SSERelay).
                relay = ctx[SSE_RELAY] = SSERelay(_WIRES[ctx.kind])
                # Each chunk is checked inside the transport's own generator, and assembled into
                # the answer as it is (the core's, while the relay vouches for every chunk); the
                # chunks of one read are handed on together: the chain takes one step per read.
                assembly = relay.assembly = StreamAssembly(self.name, error_event=self._error_event)
                batches = self.transport.events(response, relay=relay, check=assembly.checked, batched=True)
                return CompletionStream.of_batches(batches, close=response.aclose, relay=relay)
            return CompletionStream(self._chunks(response), close=response.aclose)
        body = await self.transport.post_json(path, payload)
        if ctx.kind == "embeddings":
            if not isinstance(body, dict) or not isinstance(body.get("data"), list) or not all(isinstance(a, dict) for a in body["data"]):
                raise UpstreamError(f"The {self.name} provider sent an unexpected body.", code="upstream_malformed")
            return Completion(body)
        return Completion(check_completion(body, self.name))

    async def _chunks(self, response: Any) -> AsyncIterator[dict[str, Any]]:
        """The checked chunks of a transport that knows nothing of relays and checks."""
        async for _event, chunk in self.transport.events(response):
            yield self._checked_chunk(chunk)

    def _checked_chunk(self, chunk: Any) -> dict[str, Any]:
        """``chunk`` if it is a ``chat.completion.chunk`` (its choices, when present, a list of
        objects, and the rest as :func:`check_chunk` says); an error event is the upstream's
        error. (:class:`~hookgate.responses.StreamAssembly` checks the same way.)"""
        if type(chunk) is not dict or "error" in chunk:
            if isinstance(chunk, dict):
                raise self._error_event(chunk)
            raise UpstreamError(f"The {self.name} provider sent an unexpected stream chunk.", code="upstream_malformed")
        return check_chunk(chunk, self.name)

    def _error_event(self, event: dict[str, Any]) -> GatewayError:
        """The upstream's error sent as a stream event."""
        return error_from_upstream(self.name, 500, event)


# ------------------------------------------------------------------------------- helpers ---


_WIRES = {"chat": "openai.chat", "completions": "openai.completions", "embeddings": "openai.embeddings"}
"""The surface wire of an OpenAI-shaped stream, per kind of request."""


async def _decoded_events(
    provider: str, reads: AsyncIterator[bytes], *, ends_with_done: bool, max_event_bytes: int, relay: SSERelay | None = None,
    check: Callable[[Any], Any] | None = None, batched: bool = False,
) -> AsyncIterator[Any]:
    """The SSE events of a response body given in reads, parsed; see :meth:`SDKTransport.events`.
    With ``check``, each event's data is passed to it and what it returns is yielded instead of
    ``(event name, data)``. With ``batched``, the items of each read are yielded as one list (a
    read that completed no event yields nothing)."""
    decoder = SSEDecoder(max_event_bytes)
    try:
        async for data in reads:
            payloads = decoder.data_only(data)
            if payloads is not None:
                # The usual read: whole one-line data events and nothing else, whose bytes are
                # already framed as the surface frames a chunk.
                events: list[tuple[str | None, bytes]] | None = None
            else:
                events = decoder.feed(data)
                payloads = [payload for _, payload in events]
            values, done, failure = _parsed_payloads(provider, payloads)
            if relay is not None and not relay.broken:
                if failure is not None:
                    relay.abandon()
                elif values:
                    relayed = payloads[: len(values)]
                    if events is None:
                        relay.add(values, data if len(relayed) == len(payloads) else _framed(relayed), relayed)
                    elif not any(b"\n" in payload for payload in relayed):
                        # The read's events as the upstream wrote their data, framed as the
                        # surface frames a chunk (comments, event names and ids are not relayed).
                        relay.add(values, _framed(relayed), relayed)
                    else:
                        relay.abandon()  # a multi-line data field: rendered from here
            if batched:
                if check is None:
                    batch = _named(events, values)
                else:
                    batch = []
                    try:
                        for value in values:
                            batch.append(check(value))
                    except GatewayError as exc:
                        failure, done = exc, False  # raised once the chunks before it are passed on
                if batch:
                    yield batch
            elif check is not None:
                for value in values:
                    yield check(value)
            else:
                for item in _named(events, values):
                    yield item
            if failure is not None:
                raise failure
            if done:
                return
        # The body ended: an event whose closing blank line never came is read leniently.
        last: list[Any] = []
        ended = False
        for event, payload in decoder.finish():
            if payload == b"[DONE]":
                ended = True
                break
            value = _parsed_event(provider, payload)
            last.append((event, value) if check is None else check(value))
        if last and batched:
            yield last
        else:
            for item in last:
                yield item
        if not ended and ends_with_done:
            raise UpstreamError(f"The {provider} provider ended the stream without [DONE].", code="upstream_disconnected")
    except GatewayError:
        raise
    except SSEEventTooLarge:
        raise _too_large(provider, max_event_bytes) from None
    except Exception:
        # A transport error while the body is read (a ReadError, a payload error, a read
        # timeout): whichever library raised it, the stream was cut.
        raise UpstreamError(f"The connection to the {provider} provider broke mid-stream.", code="upstream_disconnected") from None


def _parsed_payloads(provider: str, payloads: list[bytes]) -> tuple[list[Any], bool, UpstreamError | None]:
    """The events' data of one read parsed, up to ``[DONE]`` (and whether it came) or to the
    first unreadable one (returned, to be raised once the events before it were passed on)."""
    values: list[Any] = []
    loads = orjson.loads
    for payload in payloads:
        if payload == b"[DONE]":
            return values, True, None
        try:
            values.append(loads(payload))
        except orjson.JSONDecodeError:
            return values, False, UpstreamError(f"The {provider} provider sent an unreadable stream event.", code="upstream_malformed")
    return values, False, None


def _named(events: list[tuple[str | None, bytes]] | None, values: list[Any]) -> list[tuple[str | None, Any]]:
    """``(event name, value)`` for each parsed value (``events`` None: all data-only events)."""
    if events is None:
        return [(None, value) for value in values]
    return [(event, value) for (event, _), value in zip(events, values)]


def _framed(payloads: list[bytes]) -> bytes:
    """Events' data framed as a surface frames a chunk: ``data: …`` and a blank line each."""
    return b"data: " + b"\n\ndata: ".join(payloads) + b"\n\n"


def _parsed_event(provider: str, payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"The {provider} provider sent an unreadable stream event.", code="upstream_malformed") from None


def endpoint_config(config: SDKProviderConfig, base_url: str | None, api_key_env: str | None) -> SDKProviderConfig:
    """``config`` with another base URL and/or key variable (a key given inline is dropped when
    the variable changes: the deployment's variable is its key)."""
    changes: dict[str, Any] = {}
    if base_url is not None:
        changes["base_url"] = base_url
    if api_key_env is not None:
        changes["api_key_env"] = api_key_env
        changes["api_key"] = None
    return config.model_copy(update=changes)


def _unreachable(provider: str) -> UpstreamError:
    return UpstreamError(f"Could not connect to the {provider} provider.", code="upstream_unreachable")


def _timed_out(provider: str) -> GatewayTimeout:
    return GatewayTimeout(f"The {provider} provider did not answer in time.")


def _too_large(provider: str, limit: int) -> UpstreamError:
    return UpstreamError(f"The {provider} provider sent an answer larger than {limit} bytes.", code="upstream_too_large")


def _connection_failed(exc: BaseException) -> bool:
    """True when an SDK's 'timeout' is really a connection that failed: refused, a name that
    does not resolve, a server that closed the connection without answering.

    The SDKs' aiohttp transport maps every aiohttp connection error to a connect *timeout*; the
    cause chain still holds the original, which tells them apart (and makes the sdk transport
    answer what the http transport answers for the same failure).
    """
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, ConnectionError):
            return True
        if isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(cause, TimeoutError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False
