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

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, final

import orjson
from aiohttp import web

from ..messages import last_user_text, message_text
from ._emulation import (
    REPLY_PREFIX,
    SSE_HEADERS,
    Emulator,
    EmulatorStats,
    RecordedRequest,
    check_fault_counts,
    check_fault_outcome,
    count_tokens,
    parse_command_line,
    serve_until_interrupted,
    stream_events,
    unstreamed_fault_response,
)

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

_SSE_DONE: Final = b"data: [DONE]\n\n"
_MALFORMED_BODY: Final = b'{"id": "chatcmpl-emu-broken", "object": "chat.completion", "choi'
_MALFORMED_EVENT: Final = b"data: {this is not json\n\n"


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
        check_fault_outcome(self, ("status", "hang", "drop_after", "stall_after", "malformed"))
        error_details = (self.retry_after, self.message, self.error_type, self.code)
        if self.status is None and any(detail is not None for detail in error_details):
            raise ValueError("retry_after, message, error_type and code need a status")
        check_fault_counts(self, ("drop_after", "stall_after"))


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
# The emulator
# ---------------------------------------------------------------------------------------------


@final
class OpenAIEmulator(Emulator[Fault, EmulatorSettings]):
    """An OpenAI-compatible upstream with scripted faults and call counters.

    One instance holds its settings, script and stats; every app it makes shares them, so a test
    can serve it, point a client at :attr:`base_url`, and inspect :attr:`stats` afterwards.
    Scripting, counting and serving are shared with the other emulators (``_emulation``).
    """

    __slots__ = ()

    _CALL_PATH = "/chat/completions"

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
        listed = [
            {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "hookgate"} for model in models
        ]
        super().__init__(
            settings if settings is not None else EmulatorSettings(),
            models_body=orjson.dumps({"object": "list", "data": listed}),
            api_prefix=api_prefix,
            base_path=base_path,
        )

    # -- Handlers ------------------------------------------------------------------------------

    async def _answer(self, request: web.Request, stats: EmulatorStats) -> web.StreamResponse:
        """Answer a chat completion call under its fault. Faults come before request validation,
        as a real rate limiter or outage answers whatever the client sent."""
        settings = self.settings
        body, fault = await self._receive(request, stats, settings)
        if fault is not None and fault.status is not None:
            return _error_response(fault)

        problem = _request_problem(body)
        if problem is not None:
            return _error_response(Fault(status=400, message=problem[0], code=problem[1]))

        stream = body.get("stream") is True
        if fault is not None and not stream:
            faulty = await unstreamed_fault_response(request, fault, _MALFORMED_BODY)
            if faulty is not None:
                return faulty

        completion_id = f"chatcmpl-emu{next(self._ids):08d}"
        created = int(time.time())
        text = reply_for(body["messages"])
        if not stream:
            return web.Response(
                body=orjson.dumps(_completion(completion_id, created, body, text)),
                content_type="application/json",
                headers=fault.headers if fault else None,
            )
        response = web.StreamResponse(headers=SSE_HEADERS)
        if fault is not None:
            response.headers.update(fault.headers)
        events = _sse_events(completion_id, created, body, text)
        return await stream_events(
            request, response, stats, events, settings=settings, fault=fault, malformed_event=_MALFORMED_EVENT
        )


# ---------------------------------------------------------------------------------------------
# Answer, token and wire-format helpers
# ---------------------------------------------------------------------------------------------


def reply_for(messages: Sequence[Mapping[str, Any]]) -> str:
    """The emulator's deterministic answer: ``REPLY_PREFIX`` + the last user message's text."""
    return REPLY_PREFIX + last_user_text(messages)


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
    options = parse_command_line(
        argv,
        prog="python -m hookgate.testing.openai_emulator",
        description="Serve an emulated OpenAI API.",
        default_port=8001,
        chunk_unit="chunks",
    )
    settings = EmulatorSettings(latency=options.latency, chunk_latency=options.chunk_latency, record_requests=False)
    serve_until_interrupted(
        OpenAIEmulator(settings).make_app(),
        host=options.host,
        port=options.port,
        banner=f"OpenAI emulator on http://{options.host}:{options.port}/v1",
    )


if __name__ == "__main__":
    main()
