"""A local stand-in for OpenAI's chat completions HTTP API, with faults on demand.

Why it exists: the gateway's retry, timeout, streaming and cancellation behaviour can only be
tested against an upstream that misbehaves exactly when a test says so, and a throughput
benchmark needs an upstream that costs next to nothing. Tests of the gateway and of third-party
plugins both use this one emulator, so they exercise the same wire format the official `openai`
SDK expects (bodies and SSE chunks follow OpenAI's published schema).

Answers are deterministic: the reply is ``"emulated: " + <last user message>``, tokens are
whitespace-separated words, and a streamed reply sends one chunk per word.

    async with OpenAIEmulator().serve() as emu:
        client = openai.AsyncOpenAI(base_url=emu.base_url, api_key="sk-test", max_retries=0)
        emu.script(Fault(status=429, retry_after=1), Fault(status=500), None)
        ...  # the next three calls get a 429, a 500, then a normal answer
        assert emu.stats.calls == 3

For pytest-aiohttp's ``aiohttp_client`` use ``await aiohttp_client(emu.make_app())`` instead.
For a benchmark upstream: ``python -m hookgate.testing.openai_emulator --port 8001``.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, final

import orjson
from aiohttp import web
from multidict import CIMultiDict

from ..messages import last_user_text, message_text

__all__ = [
    "DEFAULT_MODELS",
    "REPLY_PREFIX",
    "EmulatorSettings",
    "EmulatorStats",
    "Fault",
    "OpenAIEmulator",
    "RecordedRequest",
    "count_tokens",
    "main",
    "reply_for",
]

DEFAULT_MODELS: Final[tuple[str, ...]] = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "o3-mini")
"""Model ids listed by ``GET /v1/models``. Chat completions accept any model id, as a proxy
in front of several deployments would; the reply echoes the requested one."""

REPLY_PREFIX: Final = "emulated: "
"""Prepended to the last user message to form the reply, so a test can tell the emulator's
answer from an echo of its own request."""

_SSE_DONE: Final = b"data: [DONE]\n\n"
_MALFORMED_BODY: Final = b'{"id": "chatcmpl-emu-broken", "object": "chat.completion", "choi'
_NEVER_ENDS: Final = float("inf")


# ---------------------------------------------------------------------------------------------
# Configuration: what the emulator does, set by tests at runtime
# ---------------------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """How one chat completion call misbehaves.

    Delays combine with any one outcome (``status``, ``hang``, ``drop_after``, ``stall_after``,
    ``malformed``); with no outcome the call is answered normally, just slower. Script faults
    with :meth:`OpenAIEmulator.script`, or set a standing one in :attr:`EmulatorSettings.fault`.

    Example: ``Fault(status=429, retry_after=0.5)``, ``Fault(drop_after=3)``, ``Fault(hang=True)``.
    """

    delay: float = 0.0
    """Seconds to wait before the response starts, on top of ``EmulatorSettings.latency``."""
    chunk_delay: float = 0.0
    """Seconds between stream chunks, on top of ``EmulatorSettings.chunk_latency``."""

    status: int | None = None
    """Answer with this HTTP error status (400-599) and an OpenAI error body
    ``{"error": {"message", "type", "param", "code"}}``; streaming requests get it too, as JSON,
    before any chunk, as OpenAI does."""
    retry_after: float | None = None
    """With ``status``: seconds sent in ``retry-after`` (rounded up) and ``retry-after-ms``,
    the headers the official SDK reads to pace its retries."""
    message: str | None = None
    """With ``status``: the error message; a realistic one for the status by default."""
    error_type: str | None = None
    """With ``status``: ``error.type``; e.g. ``"server_error"`` for 5xx by default."""
    code: str | None = None
    """With ``status``: ``error.code``; e.g. ``"rate_limit_exceeded"`` for 429 by default."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra response headers, e.g. ``{"x-should-retry": "false"}`` to steer the SDK."""

    hang: bool = False
    """Never answer: the call stays in flight until the client disconnects (counted in
    ``stats.cancelled``) or the server shuts down. Models an upstream that accepts and stalls."""
    drop_after: int | None = None
    """Close the connection abruptly after sending this many SSE chunks (0: right after the
    headers). A non-streaming call has its connection closed with no response at all."""
    stall_after: int | None = None
    """Streaming calls only: send this many chunks, then go silent without closing, to exercise
    idle-read timeouts. A non-streaming call hangs like ``hang``."""
    malformed: bool = False
    """Answer 200 with a body that is not valid JSON (a streaming call gets one SSE event whose
    data is not JSON), as a broken proxy in front of the real API might."""

    def __post_init__(self) -> None:
        outcomes = [
            self.status is not None,
            self.hang,
            self.drop_after is not None,
            self.stall_after is not None,
            self.malformed,
        ]
        if sum(outcomes) > 1:
            raise ValueError("a Fault takes at most one of status, hang, drop_after, stall_after, malformed")
        if self.delay < 0 or self.chunk_delay < 0:
            raise ValueError("delays must be >= 0")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP error (400-599), got {self.status}")
        error_details = (self.retry_after, self.message, self.error_type, self.code)
        if self.status is None and any(detail is not None for detail in error_details):
            raise ValueError("retry_after, message, error_type and code need a status")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        for name in ("drop_after", "stall_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0")


@final
@dataclass(slots=True, kw_only=True)
class EmulatorSettings:
    """Standing behaviour for every chat completion call; tests may change it at any time and
    the next call sees the change."""

    latency: float = 0.0
    """Seconds before every response starts, like a model's time to first token."""
    chunk_latency: float = 0.0
    """Seconds between stream chunks. At 0 a whole stream goes out in one write (fastest)."""
    fault: Fault | None = None
    """Applies to every call not covered by a scripted entry, e.g. ``Fault(status=503)`` for an
    upstream that is down until a test sets it back to ``None``."""
    record_requests: bool = True
    """Keep each request's headers and body in ``stats.requests``. The benchmark entry point
    turns it off so memory stays flat under load; counters are always kept."""


# ---------------------------------------------------------------------------------------------
# Observability: what the emulator saw, for assertions
# ---------------------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One chat completion request as received, to assert on what the gateway sent upstream."""

    headers: Mapping[str, str]
    """Case-insensitive: ``headers["authorization"] == "Bearer sk-test"``."""
    body: Any
    """The decoded JSON body, or None when it was not JSON."""
    received_at: float = 0.0
    """``time.monotonic()`` when the call arrived: to assert on the spacing of retries."""


@final
@dataclass(slots=True)
class EmulatorStats:
    """Counters of chat completion calls (``GET /v1/models`` is not counted)."""

    calls: int = 0
    """Calls received, whatever their outcome."""
    in_flight: int = 0
    """Calls whose handler is still running (a stream counts until its last chunk is sent)."""
    peak_in_flight: int = 0
    """Highest ``in_flight`` seen: proves a concurrency limit held, or that calls overlapped."""
    cancelled: int = 0
    """Calls abandoned by the client while in flight (disconnect or timeout), not counting
    connections the emulator dropped itself. Calls still hanging when :meth:`OpenAIEmulator.serve`
    exits are cancelled by the shutdown and counted here too."""
    requests: list[RecordedRequest] = field(default_factory=list)
    """Every call in arrival order, when ``EmulatorSettings.record_requests`` is on."""


# ---------------------------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------------------------


@final
class OpenAIEmulator:
    """An OpenAI-compatible upstream with scripted faults and call counters.

    One instance holds its settings, script and stats; every app it makes shares them, so a test
    can serve it, point a client at :attr:`base_url`, and inspect :attr:`stats` afterwards.
    """

    __slots__ = ("settings", "stats", "_script", "_ids", "_models_body", "_base_url", "_api_prefix", "_base_path")

    def __init__(
        self,
        settings: EmulatorSettings | None = None,
        *,
        models: Sequence[str] = DEFAULT_MODELS,
        api_prefix: str = "/v1",
        base_path: str = "/v1",
    ) -> None:
        """``api_prefix`` is where the routes live and ``base_path`` what :attr:`base_url` ends
        with: OpenAI's SDK takes ``…/v1``; Groq serves the same API under ``/openai/v1`` and its
        SDK takes the bare host (see ``hookgate.testing.groq_emulator``)."""
        self._api_prefix, self._base_path = api_prefix, base_path
        self.settings: EmulatorSettings = settings if settings is not None else EmulatorSettings()
        self.stats: EmulatorStats = EmulatorStats()
        self._script: deque[Fault | None] = deque()
        self._ids = itertools.count(1)
        # The model list never changes, so encode it once.
        listed = [
            {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "hookgate"} for model in models
        ]
        self._models_body = orjson.dumps({"object": "list", "data": listed})
        self._base_url: str | None = None

    # -- Scripting -----------------------------------------------------------------------------

    def script(self, *behaviours: Fault | None) -> None:
        """Queue one behaviour per upcoming chat completion call, in order.

        ``None`` means "answer normally" (settings latency still applies, the standing
        ``settings.fault`` does not). Once the queue is used up, calls follow ``settings``
        again. Calling it again appends to what is left of the queue.
        """
        self._script.extend(behaviours)

    @property
    def scripted_remaining(self) -> int:
        """Scripted behaviours not yet consumed; 0 proves every scripted call happened."""
        return len(self._script)

    def reset(self) -> None:
        """Drop the remaining script and zero the counters, keeping settings. Calls still in
        flight stay counted in ``in_flight`` so the counter cannot go negative."""
        self._script.clear()
        # In place: handlers in flight hold this object and will still decrement it.
        stats = self.stats
        stats.calls = stats.cancelled = 0
        stats.peak_in_flight = stats.in_flight
        stats.requests.clear()

    # -- Serving -------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """A fresh aiohttp application backed by this emulator's settings, script and stats."""
        app = web.Application()
        app.router.add_post(f"{self._api_prefix}/chat/completions", self._chat_completions)
        app.router.add_get(f"{self._api_prefix}/models", self._list_models)
        return app

    @asynccontextmanager
    async def serve(
        self, *, host: str = "127.0.0.1", port: int = 0, shutdown_timeout: float = 0.5
    ) -> AsyncIterator[OpenAIEmulator]:
        """Serve on ``host`` (a free port by default) for the duration of the block.

        Handler cancellation is on so a client that gives up is seen as a cancelled call.
        ``shutdown_timeout`` bounds how long leaving the block waits for calls still in flight
        (a hanging call would otherwise hold the exit for aiohttp's default 60 s).
        """
        runner = web.AppRunner(
            self.make_app(), handler_cancellation=True, access_log=None, shutdown_timeout=shutdown_timeout
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound_host, bound_port = runner.addresses[0][:2]
            if ":" in bound_host:  # IPv6 literals are bracketed in URLs
                bound_host = f"[{bound_host}]"
            self._base_url = f"http://{bound_host}:{bound_port}{self._base_path}"
            yield self
        finally:
            self._base_url = None
            await runner.cleanup()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` while inside :meth:`serve`, as the SDK's ``base_url``."""
        if self._base_url is None:
            raise RuntimeError("base_url exists only inside `async with emulator.serve()`")
        return self._base_url

    # -- Handlers ------------------------------------------------------------------------------

    async def _list_models(self, request: web.Request) -> web.Response:
        return web.Response(body=self._models_body, content_type="application/json")

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        """Count the call and its time in flight around :meth:`_answer`."""
        stats = self.stats
        stats.calls += 1
        stats.in_flight += 1
        if stats.in_flight > stats.peak_in_flight:
            stats.peak_in_flight = stats.in_flight
        try:
            return await self._answer(request, stats)
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client disconnects (handler_cancellation).
            stats.cancelled += 1
            raise
        finally:
            stats.in_flight -= 1

    async def _answer(self, request: web.Request, stats: EmulatorStats) -> web.StreamResponse:
        """Record, pick this call's fault, then answer. Faults come before request validation,
        as a real rate limiter or outage answers whatever the client sent."""
        settings = self.settings
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if settings.record_requests:
            stats.requests.append(RecordedRequest(CIMultiDict(request.headers), body, time.monotonic()))

        fault = self._script.popleft() if self._script else settings.fault
        delay = settings.latency + (fault.delay if fault else 0.0)
        if delay:
            await asyncio.sleep(delay)

        if fault is not None:
            if fault.status is not None:
                return _error_response(fault)
            if fault.hang:
                await asyncio.sleep(_NEVER_ENDS)

        problem = _request_problem(body)
        if problem is not None:
            return _error_response(Fault(status=400, message=problem[0], code=problem[1]))

        stream = body.get("stream") is True
        if fault is not None and not stream:
            if fault.drop_after is not None:
                _drop_connection(request)
                return web.Response()
            if fault.stall_after is not None:
                await asyncio.sleep(_NEVER_ENDS)
            if fault.malformed:
                return web.Response(
                    body=_MALFORMED_BODY, content_type="application/json", headers=fault.headers
                )

        completion_id = f"chatcmpl-emu{next(self._ids):08d}"
        created = int(time.time())
        text = reply_for(body["messages"])
        if not stream:
            return web.Response(
                body=orjson.dumps(_completion(completion_id, created, body, text)),
                content_type="application/json",
                headers=fault.headers if fault else None,
            )
        chunk_gap = settings.chunk_latency + (fault.chunk_delay if fault else 0.0)
        events = _sse_events(completion_id, created, body, text)
        return await self._stream(request, stats, fault, chunk_gap, events)

    async def _stream(
        self,
        request: web.Request,
        stats: EmulatorStats,
        fault: Fault | None,
        chunk_gap: float,
        events: list[bytes],
    ) -> web.StreamResponse:
        """Send ``events`` as an SSE stream, applying the fault's drop, stall or garbage."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        if fault is not None:
            response.headers.update(fault.headers)
        try:
            await response.prepare(request)
            if fault is not None and fault.malformed:
                await response.write(b"data: {this is not json\n\n")
                return response
            cut = _stream_cut(fault)
            if chunk_gap == 0 and cut is None:
                # The benchmark fast path: the whole stream in one write.
                await response.write(b"".join(events))
                return response
            for index, event in enumerate(events[:cut]):
                if index and chunk_gap:
                    await asyncio.sleep(chunk_gap)
                await response.write(event)
            if fault is not None and fault.drop_after is not None:
                _drop_connection(request)
            elif fault is not None and fault.stall_after is not None:
                await asyncio.sleep(_NEVER_ENDS)
        except ConnectionResetError:
            # Without handler cancellation a vanished client surfaces on the next write instead.
            stats.cancelled += 1
        return response


# ---------------------------------------------------------------------------------------------
# Answer, token and wire-format helpers
# ---------------------------------------------------------------------------------------------


def reply_for(messages: Sequence[Mapping[str, Any]]) -> str:
    """The emulator's deterministic answer: ``REPLY_PREFIX`` + the last user message's text."""
    return REPLY_PREFIX + last_user_text(messages)


def count_tokens(text: str) -> int:
    """Emulated token count: whitespace-separated words, so tests can predict usage exactly."""
    return len(text.split())


def _pieces(text: str) -> list[str]:
    """Split a reply into one piece per word, trailing whitespace kept, so the pieces join back
    to the exact text and their number equals ``count_tokens`` (at least one piece)."""
    return re.findall(r"\S+\s*", text) or [text]


def _usage(messages: Sequence[Mapping[str, Any]], text: str) -> dict[str, int]:
    prompt = sum(count_tokens(message_text(m.get("content"))) for m in messages)
    completion = count_tokens(text)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _request_problem(body: Any) -> tuple[str, str | None] | None:
    """The (message, code) OpenAI would answer a malformed request with, or None when usable."""
    if not isinstance(body, dict):
        return ("We could not parse the JSON body of your request.", None)
    if not isinstance(body.get("model"), str):
        return ("you must provide a model parameter", None)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return ("'messages' must be a non-empty array of message objects.", "invalid_type")
    return None


def _completion(completion_id: str, created: int, body: Mapping[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(body["messages"], text),
    }


def _sse_events(completion_id: str, created: int, body: Mapping[str, Any], text: str) -> list[bytes]:
    """The whole stream as encoded SSE events, in OpenAI's order: a role chunk with empty
    content, one chunk per word, a finish chunk with an empty delta, the usage chunk when
    ``stream_options.include_usage`` is set (every chunk then carries ``usage``, null until
    the last), and ``[DONE]``."""
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    model = body["model"]
    head = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
    no_usage_yet: dict[str, Any] = {"usage": None} if include_usage else {}

    def event(delta: dict[str, Any], finish_reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _sse({**head, "choices": [choice], **no_usage_yet})

    events = [event({"role": "assistant", "content": "", "refusal": None}, None)]
    events.extend(event({"content": piece}, None) for piece in _pieces(text))
    events.append(event({}, "stop"))
    if include_usage:
        events.append(_sse({**head, "choices": [], "usage": _usage(body["messages"], text)}))
    events.append(_SSE_DONE)
    return events


def _sse(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _stream_cut(fault: Fault | None) -> int | None:
    """How many SSE events to send before the fault's drop or stall; None to send them all."""
    if fault is None:
        return None
    return fault.drop_after if fault.drop_after is not None else fault.stall_after


def _drop_connection(request: web.Request) -> None:
    """Close the socket under the response. ``close`` (not ``abort``) flushes what was already
    written, so the client gets exactly the chunks sent before the drop."""
    transport = request.transport
    if transport is not None:
        transport.close()


def _error_defaults(status: int) -> tuple[str, str | None, str]:
    """(type, code, message) as OpenAI sends them for a status, so SDK error parsing and any
    gateway logic keyed on ``error.type``/``error.code`` see realistic values."""
    match status:
        case 400:
            return ("invalid_request_error", None, "Invalid request (emulated).")
        case 401:
            return ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (emulated).")
        case 403:
            return ("invalid_request_error", "unsupported_country_region_territory", "Forbidden (emulated).")
        case 404:
            return ("invalid_request_error", "model_not_found", "The model does not exist (emulated).")
        case 429:
            return ("requests", "rate_limit_exceeded", "Rate limit reached for requests (emulated).")
        case 503:
            return ("server_error", None, "The engine is currently overloaded (emulated).")
        case _ if status >= 500:
            return ("server_error", None, "The server had an error while processing your request (emulated).")
        case _:
            return ("invalid_request_error", None, f"Request failed with status {status} (emulated).")


def _error_response(fault: Fault) -> web.Response:
    assert fault.status is not None
    default_type, default_code, default_message = _error_defaults(fault.status)
    error = {
        "message": fault.message if fault.message is not None else default_message,
        "type": fault.error_type if fault.error_type is not None else default_type,
        "param": None,
        "code": fault.code if fault.code is not None else default_code,
    }
    headers = dict(fault.headers)
    if fault.retry_after is not None:
        headers["retry-after"] = str(math.ceil(fault.retry_after))
        headers["retry-after-ms"] = str(int(fault.retry_after * 1000))
    body = orjson.dumps({"error": error})
    return web.Response(status=fault.status, body=body, content_type="application/json", headers=headers)


# ---------------------------------------------------------------------------------------------
# Command line: a standalone upstream for benchmarks
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the emulator until interrupted; records no request bodies so memory stays flat."""
    parser = argparse.ArgumentParser(
        prog="python -m hookgate.testing.openai_emulator", description="Serve an emulated OpenAI API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each response")
    parser.add_argument("--chunk-latency", type=float, default=0.0, help="seconds between stream chunks")
    args = parser.parse_args(argv)

    settings = EmulatorSettings(latency=args.latency, chunk_latency=args.chunk_latency, record_requests=False)
    emulator = OpenAIEmulator(settings)
    loop: asyncio.AbstractEventLoop | None = None
    try:
        import uvloop  # the `fast` extra

        loop = uvloop.new_event_loop()
    except ImportError:
        pass
    web.run_app(
        emulator.make_app(),
        host=args.host,
        port=args.port,
        handler_cancellation=True,
        access_log=None,
        loop=loop,
        print=lambda _: print(f"OpenAI emulator on http://{args.host}:{args.port}/v1", flush=True),
    )


if __name__ == "__main__":
    main()
