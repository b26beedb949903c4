"""http_model_provider: a provider for a model server with an HTTP API of its own.

The server here is ``tiny_model_server`` (``POST /generate``, JSON or newline-delimited JSON); the
shape of the plugin is the same for any API that is not OpenAI's (for an OpenAI-compatible server,
use the built-in ``openai_compatible`` provider or ``hookgate.provider_kit``):

* the HTTP client is opened in ``startup`` and closed in ``shutdown``, on the app's loop;
* ``complete(ctx)`` translates the canonical request (OpenAI's chat shape, the routed upstream
  model from ``hookgate.routing.upstream_body``) into the server's, and its answer into a
  ``Completion``, or a ``CompletionStream`` of ``chat.completion.chunk`` dicts;
* it tries once: retries, deadlines and concurrency limits belong to the ``retry``, ``timeout``
  and ``concurrency`` plugins around it; its own timeout is only a last resort;
* a stream is returned only once the server accepted the request (status 200), so a failure
  before the first chunk can still be retried or sent as a clean HTTP error; closing the stream
  (the core always does, also when the client went away) releases the connection;
* the server's errors go through ``hookgate.upstream.error_from_upstream``, the gateway's one table,
  so a 429 reaches the client as a 429 with its ``Retry-After``, a 503 as a retriable 503;
* what it reads is bounded: a JSON answer of at most ``max_response_bytes``, stream lines of at
  most 64 KiB.

    [gateway]
    pipeline = ["request_log", "retry", "timeout", "http_model"]

    [plugins.http_model]
    base_url = "http://127.0.0.1:8100"
    models = ["tiny"]
"""
from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any, AsyncIterator

import aiohttp
from pydantic import Field, SecretStr

from hookgate import Completion, CompletionStream, PluginConfig, RequestContext, ServiceUnavailable, UpstreamError, hookimpl
from hookgate.messages import message_text
from hookgate.routing import upstream_body
from hookgate.upstream import error_from_upstream

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["HttpModelProvider", "HttpModelConfig"]

FINISH_REASONS = {"end": "stop", "max_tokens": "length"}
"""The server's stop reasons in OpenAI's words."""


class HttpModelConfig(PluginConfig):
    """Settings of ``[plugins.http_model]``."""

    base_url: str = Field(pattern=r"^https?://[^\s/]+", description="the model server, e.g. http://127.0.0.1:8100")
    api_key: SecretStr | None = Field(None, description="sent as a bearer token when set")
    models: list[str] = Field(["tiny"], min_length=1, description="the model names it serves")
    default_max_tokens: int = Field(512, ge=1, le=100_000, description="max_new_tokens when the client sets no limit")
    request_timeout_seconds: float = Field(600.0, gt=0, description="last-resort limit per call; the timeout plugin sets the real deadlines")
    max_response_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="largest JSON answer read from the server")


class HttpModelProvider:
    """A model server with its own HTTP API (POST /generate, JSON or NDJSON streams)."""

    Config = HttpModelConfig
    name = "http_model"

    def __init__(self, config: HttpModelConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    @hookimpl
    def register_providers(self, register) -> None:
        register(self)

    @hookimpl
    async def startup(self, app: web.Application) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout_seconds, sock_connect=10)
        self._session = aiohttp.ClientSession(base_url=self.config.base_url.rstrip("/"), timeout=timeout, read_bufsize=64 * 1024)

    @hookimpl
    async def shutdown(self, app: web.Application) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def models(self) -> list[str]:
        return list(self.config.models)

    async def complete(self, ctx: RequestContext) -> Completion | CompletionStream:
        if self._session is None:
            raise ServiceUnavailable(f"The {self.name} provider is not started.")
        body = upstream_body(ctx)
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or self.config.default_max_tokens
        payload = {"model": body["model"], "prompt": _prompt(body["messages"]), "max_new_tokens": limit, "stream": ctx.stream}
        headers = {"Authorization": f"Bearer {self.config.api_key.get_secret_value()}"} if self.config.api_key else {}
        try:
            response = await self._session.post("/generate", json=payload, headers=headers)
        except aiohttp.ClientConnectionError:
            raise UpstreamError(f"Could not connect to the {self.name} provider.", code="upstream_unreachable") from None
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": ctx.body["model"]}
        try:
            if response.status != 200:
                raise error_from_upstream(self.name, response.status, await self._json(response), response.headers)
            if ctx.stream:
                stream = CompletionStream(self._chunks(response, head, ctx.include_usage), close=_closer(response))
                response = None  # the stream owns the connection now
                return stream
            answer = await self._json(response)
        finally:
            if response is not None:
                response.release()
        return Completion(_completion(head, answer))

    async def _json(self, response: aiohttp.ClientResponse) -> Any:
        data = await response.content.read(self.config.max_response_bytes + 1)
        if len(data) > self.config.max_response_bytes:
            raise UpstreamError(f"The {self.name} provider sent an answer over {self.config.max_response_bytes} bytes.")
        try:
            return json.loads(data) if data else {}
        except ValueError:
            raise UpstreamError(f"The {self.name} provider sent an answer that is not JSON.", code="upstream_malformed") from None

    async def _chunks(self, response: aiohttp.ClientResponse, head: dict[str, Any], include_usage: bool) -> AsyncIterator[dict[str, Any]]:
        base = {**head, "object": "chat.completion.chunk"}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

        yield chunk({"role": "assistant", "content": ""})
        try:
            async for line in response.content:  # one JSON object a line; aiohttp bounds a line by read_bufsize
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("done"):
                    yield chunk({}, FINISH_REASONS.get(event.get("stop_reason"), "stop"))
                    if include_usage:
                        yield {**base, "choices": [], "usage": _usage(event)}
                    return
                yield chunk({"content": str(event.get("token", ""))})
        except (aiohttp.ClientError, ValueError) as exc:
            raise UpstreamError(f"The {self.name} provider's stream broke ({type(exc).__name__}).", code="upstream_disconnected") from None
        raise UpstreamError(f"The {self.name} provider ended the stream without its last line.", code="upstream_disconnected")


def _closer(response: aiohttp.ClientResponse):
    async def close() -> None:
        # Closed, not released: a stream the client left unread must stop the server generating.
        response.close()

    return close


def _prompt(messages: list[dict[str, Any]]) -> str:
    """The conversation as the server takes it: one ``role: text`` line per message; the model
    answers the last line."""
    return "\n".join(f"{message.get('role')}: {message_text(message.get('content'))}" for message in messages)


def _usage(answer: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(answer.get("prompt_tokens", 0)), int(answer.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(head: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
        raise UpstreamError("The http_model provider sent an answer without text.", code="upstream_malformed")
    message = {"role": "assistant", "content": answer["text"], "refusal": None}
    choice = {"index": 0, "message": message, "finish_reason": FINISH_REASONS.get(answer.get("stop_reason"), "stop"), "logprobs": None}
    return {**head, "object": "chat.completion", "choices": [choice], "usage": _usage(answer)}
