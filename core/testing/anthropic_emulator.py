"""A local stand-in for Anthropic's Messages API (``POST /v1/messages``), with faults on demand.

The sibling of :mod:`hookgate.testing.openai_emulator`, with the same fault-injection API
(:class:`Fault`, :class:`EmulatorSettings`, ``stats``, ``script()``, ``serve()``,
``make_app()``), so that a provider translating OpenAI requests to Anthropic's can be tested
against the wire format the official ``anthropic`` SDK expects: JSON messages, the SSE event
sequence (``message_start``, ``content_block_*``, ``ping``, ``message_delta``, ``message_stop``,
in-stream ``error`` events) and Anthropic-shaped errors (``{"type": "error", "error": {...}}``).

Answers are deterministic:

* the reply is ``"emulated: " + <text of the last user turn>`` (a ``tool_result`` block counts
  as text, so a conversation continuing after a tool call is answered from the tool's output);
* tokens are whitespace-separated words; a streamed reply sends one ``text_delta`` per word;
* ``stop_sequences``: the reply is cut before the first one that occurs in it
  (``stop_reason: "stop_sequence"``); ``max_tokens``: cut after that many words
  (``stop_reason: "max_tokens"``), whichever comes first, as a model generating left to right;
* tool use: when the request has ``tools`` and either ``tool_choice`` forces one (``any`` or
  ``tool``) or the last user turn names a tool, the answer calls it (every named tool, unless
  ``disable_parallel_tool_use``) with an input built from the tool's ``input_schema``
  (see :func:`tool_input_for`) and ``stop_reason: "tool_use"``; with ``tool_choice: auto`` a
  short text block comes first, as Claude does;
* cache tokens come from :attr:`EmulatorSettings.cache_read_input_tokens` and
  :attr:`EmulatorSettings.cache_creation_input_tokens`; ``input_tokens`` counts the rest
  (text documents included);
* extended thinking (``thinking: {"type": "enabled", "budget_tokens": …}`` or ``adaptive``):
  the answer opens with a ``thinking`` block (``"emulated thinking: " + <prompt>``, streamed one
  ``thinking_delta`` per word, then a ``signature_delta``) whose ``signature`` is
  :func:`thinking_signature`'s; its words count in ``output_tokens`` and
  ``output_tokens_details.thinking_tokens``. As the API does, a thinking block sent back with a
  signature that does not match is a 400, and so is a last assistant turn with ``tool_use`` that
  does not start with its thinking block (so a gateway that drops or edits thinking on the way
  is caught); ``budget_tokens`` must be >= 1024 and below ``max_tokens``, and a ``tool_choice``
  forcing a tool is refused with thinking on;
* documents with ``citations: {"enabled": true}`` in the last user turn: after the reply, one
  text block per such document quoting its first line, with a ``char_location`` citation
  (``content_block_location`` for content sources, ``page_location`` for PDFs; streamed as a
  ``citations_delta``);
* ``POST /v1/messages/count_tokens`` answers ``{"input_tokens": N}``, N being the
  ``input_tokens`` a Messages call with the same body reports.

Requests are checked as the API checks them, per ``anthropic-version``: from ``2026-10-21``
(what the ``anthropic`` SDK 2.x sends) ``temperature``, ``top_p`` and ``top_k`` are a 400 at any
value and ``system`` messages may appear in ``messages``; ``2023-06-01`` accepts sampling
parameters. A key is required (``Authorization: Bearer``, as the SDK sends it, or ``x-api-key``)
but any key is accepted.

    async with AnthropicEmulator().serve() as emu:
        client = anthropic.AsyncAnthropic(base_url=emu.base_url, api_key="sk-ant-test", max_retries=0)
        emu.script(Fault(status=529), Fault(status=429, retry_after=1), None)
        ...  # the next three calls get a 529, a 429, then a normal answer
        assert emu.stats.calls == 3

For pytest-aiohttp's ``aiohttp_client`` use ``await aiohttp_client(emu.make_app())`` instead.
Standalone: ``python -m hookgate.testing.anthropic_emulator --port 8002``.
"""
from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, final

import orjson
from aiohttp import web

# Counters, recorded requests, scripting and serving mean the same thing for every emulator.
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
    stream_pieces,
    tool_input_for,
    tools_to_call,
    unstreamed_fault_response,
)

__all__ = [
    "DEFAULT_MODELS",
    "REPLY_PREFIX",
    "SAMPLING_PARAMETERS",
    "SAMPLING_REMOVED_IN",
    "AnthropicEmulator",
    "EmulatorSettings",
    "EmulatorStats",
    "Fault",
    "RecordedRequest",
    "count_tokens",
    "THINKING_PREFIX",
    "main",
    "reply_for",
    "thinking_signature",
    "tool_input_for",
]

DEFAULT_MODELS: Final[tuple[str, ...]] = (
    "claude-opus-4-6",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
)
"""Model ids listed by ``GET /v1/models``. Messages accept any model id; the answer echoes it."""

ERROR_TYPES: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
"""``error.type`` Anthropic sends for each status (other 4xx: ``invalid_request_error``,
other 5xx: ``api_error``)."""

SAMPLING_PARAMETERS: Final = ("temperature", "top_p", "top_k")
"""Request fields the API no longer accepts from version :data:`SAMPLING_REMOVED_IN` on."""
SAMPLING_REMOVED_IN: Final = "2026-10-21"
"""The ``anthropic-version`` from which any sampling parameter, at any value, is a 400."""

THINKING_PREFIX: Final = "emulated thinking: "
"""Prepended to the prompt to form a thinking block's text."""

_STATUS_OF_ERROR_TYPE: Final = {error_type: status for status, error_type in ERROR_TYPES.items()}
_MIN_THINKING_BUDGET: Final = 1024
_CITED_CHARS: Final = 200
_JSON_PIECE: Final = 12  # characters of tool input per input_json_delta
_MALFORMED_BODY: Final = b'{"id": "msg_emu_broken", "type": "message", "role": "assistant", "cont'
_MALFORMED_EVENT: Final = b"event: message_start\ndata: {this is not json\n\n"


# ---------------------------------------------------------------------------------------------
# Configuration: what the emulator does, set by tests at runtime
# ---------------------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """How one Messages call misbehaves.

    Delays combine with any one outcome (``status``, ``hang``, ``drop_after``, ``stall_after``,
    ``stream_error_after``, ``malformed``); with no outcome the call is answered normally, just
    slower. Script faults with :meth:`AnthropicEmulator.script`, or set a standing one in
    :attr:`EmulatorSettings.fault`.

    Example: ``Fault(status=529)``, ``Fault(status=429, retry_after=2)``,
    ``Fault(stream_error_after=4)``, ``Fault(drop_after=3)``, ``Fault(hang=True)``.
    """

    delay: float = 0.0
    """Seconds to wait before the response starts, on top of ``EmulatorSettings.latency``."""
    chunk_delay: float = 0.0
    """Seconds between SSE events, on top of ``EmulatorSettings.chunk_latency``."""

    status: int | None = None
    """Answer with this HTTP error status (400-599) and an Anthropic error body
    ``{"type": "error", "error": {"type", "message"}, "request_id"}``; streaming requests get it
    too, as JSON, before any event, as Anthropic does."""
    retry_after: float | None = None
    """With ``status``: seconds sent in ``retry-after``, rounded up to a whole number as
    Anthropic sends it (it sends no ``retry-after-ms``; put one in ``headers`` to pace faster)."""
    message: str | None = None
    """With ``status`` or ``stream_error_after``: ``error.message``; realistic by default."""
    error_type: str | None = None
    """With ``status`` or ``stream_error_after``: ``error.type``; by default the one Anthropic
    uses for the status (``overloaded_error`` for 529…), ``overloaded_error`` mid-stream."""
    code: str | None = None
    """With ``status``: ``error.details.error_code``, the stable cause the SDK picks its
    exception class by, e.g. ``"enforced_spend_limit_reached"`` on a 429."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra response headers, e.g. ``{"x-should-retry": "false"}`` to steer the SDK."""

    hang: bool = False
    """Never answer: the call stays in flight until the client disconnects (counted in
    ``stats.cancelled``) or the server shuts down."""
    drop_after: int | None = None
    """Close the connection abruptly after sending this many SSE events (0: right after the
    headers). A non-streaming call has its connection closed with no response at all."""
    stall_after: int | None = None
    """Streaming calls only: send this many events, then go silent without closing, to exercise
    idle-read timeouts. A non-streaming call hangs like ``hang``."""
    stream_error_after: int | None = None
    """Streaming calls: send this many events, then an ``error`` event (``error_type``, default
    ``overloaded_error``) and end the stream, as Anthropic does when it fails after the 200.
    A non-streaming call gets that error as its HTTP status instead (529 for overloaded_error)."""
    malformed: bool = False
    """Answer 200 with a body that is not valid JSON (a streaming call gets one
    ``message_start`` event whose data is not JSON)."""

    def __post_init__(self) -> None:
        check_fault_outcome(self, ("status", "hang", "drop_after", "stall_after", "stream_error_after", "malformed"))
        if self.status is None and (self.retry_after is not None or self.code is not None):
            raise ValueError("retry_after and code need a status")
        if self.status is None and self.stream_error_after is None and (self.message or self.error_type):
            raise ValueError("message and error_type need a status or stream_error_after")
        check_fault_counts(self, ("drop_after", "stall_after", "stream_error_after"))


@final
@dataclass(slots=True, kw_only=True)
class EmulatorSettings:
    """Standing behaviour for every Messages call; tests may change it at any time and the next
    call sees the change."""

    latency: float = 0.0
    """Seconds before every response starts, like a model's time to first token."""
    chunk_latency: float = 0.0
    """Seconds between SSE events. At 0 a whole stream goes out in one write (fastest)."""
    fault: Fault | None = None
    """Applies to every call not covered by a scripted entry."""
    record_requests: bool = True
    """Keep each request's headers and body in ``stats.requests``; counters are always kept."""
    cache_read_input_tokens: int = 0
    """Reported in every answer's usage as prompt tokens read from Anthropic's prompt cache."""
    cache_creation_input_tokens: int = 0
    """Reported in every answer's usage as prompt tokens written to the prompt cache."""
    stream_piece_chars: int = 0
    """0: a streamed reply sends one ``text_delta`` per word; N: the text is cut every N characters
    instead, so that a word (a placeholder, a card number) arrives split across chunks. Token
    counts are the same either way."""


# ---------------------------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------------------------


@final
class AnthropicEmulator(Emulator[Fault, EmulatorSettings]):
    """An Anthropic Messages API upstream with scripted faults and call counters.

    One instance holds its settings, script and stats; every app it makes shares them, so a test
    can serve it, point a client at :attr:`base_url` (the bare host: the ``anthropic`` SDK adds
    ``/v1/messages`` itself, as it does to ``https://api.anthropic.com``), and inspect
    :attr:`stats` afterwards. Scripting, counting and serving are shared with the other
    emulators (``_emulation``).
    """

    __slots__ = ()

    _CALL_PATH = "/messages"

    def __init__(
        self, settings: EmulatorSettings | None = None, *, models: Sequence[str] = DEFAULT_MODELS
    ) -> None:
        listed = [
            {"type": "model", "id": model, "display_name": model, "created_at": "2025-01-01T00:00:00Z"}
            for model in models
        ]
        models_body = orjson.dumps(
            {
                "data": listed,
                "has_more": False,
                "first_id": models[0] if models else None,
                "last_id": models[-1] if models else None,
            }
        )
        super().__init__(
            settings if settings is not None else EmulatorSettings(),
            models_body=models_body,
            api_prefix="/v1",
            base_path="",
        )

    # -- Handlers ------------------------------------------------------------------------------

    def _counted_routes(self) -> Sequence[tuple[str, Any]]:
        return [("/messages", self._answer), ("/messages/count_tokens", self._count_tokens)]

    async def _count_tokens(self, request: web.Request, stats: EmulatorStats) -> web.StreamResponse:
        """``POST /v1/messages/count_tokens``: the ``input_tokens`` a Messages call with this
        body would report. Faults apply as to a Messages call (only status, hang and drop)."""
        settings = self.settings
        body, fault = await self._receive(request, stats, settings)
        if fault is not None and fault.status is not None:
            return _error_response(
                fault.status, fault.error_type, fault.message, code=fault.code,
                retry_after=fault.retry_after, headers=fault.headers,
            )
        if fault is not None:
            faulty = await unstreamed_fault_response(request, fault, _MALFORMED_BODY)
            if faulty is not None:
                return faulty
        problem = _request_problem(request.headers, body, counting=True)
        if problem is not None:
            return _error_response(problem[0], None, problem[1])
        return web.Response(body=orjson.dumps({"input_tokens": _prompt_tokens(body)}), content_type="application/json")

    async def _answer(self, request: web.Request, stats: EmulatorStats) -> web.StreamResponse:
        """Answer a Messages call under its fault. Faults come before request validation, as a
        real rate limiter or outage answers whatever the client sent."""
        settings = self.settings
        body, fault = await self._receive(request, stats, settings)
        if fault is not None and fault.status is not None:
            return _error_response(
                fault.status, fault.error_type, fault.message, code=fault.code,
                retry_after=fault.retry_after, headers=fault.headers,
            )

        problem = _request_problem(request.headers, body)
        if problem is not None:
            return _error_response(problem[0], None, problem[1])

        stream = body.get("stream") is True
        if fault is not None and not stream:
            faulty = await unstreamed_fault_response(request, fault, _MALFORMED_BODY)
            if faulty is not None:
                return faulty
            if fault.stream_error_after is not None:
                error_type = fault.error_type or "overloaded_error"
                status = _STATUS_OF_ERROR_TYPE.get(error_type, 500)
                return _error_response(status, error_type, fault.message, headers=fault.headers)

        message = self._message(body)
        headers = {"request-id": _request_id(message["id"]), **(fault.headers if fault else {})}
        if not stream:
            return web.Response(body=orjson.dumps(message), content_type="application/json", headers=headers)
        events = _sse_events(message, settings.stream_piece_chars)
        if fault is not None and fault.stream_error_after is not None:
            # Anthropic fails mid-stream with an `error` event, then ends the stream.
            events = events[: fault.stream_error_after] + [_in_stream_error(fault)]
        response = web.StreamResponse(headers={**SSE_HEADERS, **headers})
        return await stream_events(
            request, response, stats, events, settings=settings, fault=fault, malformed_event=_MALFORMED_EVENT
        )

    def _message(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The complete answer to a valid request, as a Messages API ``message`` object."""
        messages = body["messages"]
        settings = self.settings
        number = next(self._ids)
        content: list[dict[str, Any]] = []
        stop_sequence = None
        calls = _tools_to_call(body)
        thinking = _thinking_block(body) if body["max_tokens"] else None
        if thinking is not None:
            content.append(thinking)
        if body["max_tokens"] == 0:
            # Only warms the prompt cache: nothing is generated.
            stop_reason = "max_tokens"
        elif calls:
            if _tool_choice_type(body) == "auto":
                content.append({"type": "text", "text": f"{REPLY_PREFIX}calling {', '.join(t['name'] for t in calls)}"})
            prompt = _last_user_text(messages)
            for index, tool in enumerate(calls):
                content.append(
                    {
                        "type": "tool_use",
                        "id": f"toolu_emu{number:08d}{index:02d}",
                        "name": tool["name"],
                        "input": tool_input_for(tool.get("input_schema") or {}, prompt),
                    }
                )
            stop_reason = "tool_use"
        else:
            text, stop_reason, stop_sequence = _generate(
                reply_for(messages), body.get("stop_sequences") or (), body["max_tokens"]
            )
            content.append({"type": "text", "text": text})
            if stop_reason == "end_turn":
                content.extend(_cited_blocks(messages))
        thinking_tokens = count_tokens(_thinking_text(body)) if thinking is not None else 0
        output_tokens = thinking_tokens + sum(
            count_tokens(block["text"]) if block["type"] == "text" else count_tokens(orjson.dumps(block["input"]).decode())
            for block in content
            if block["type"] != "thinking"
        )
        usage = {
            "input_tokens": _prompt_tokens(body),
            "cache_creation_input_tokens": settings.cache_creation_input_tokens,
            "cache_read_input_tokens": settings.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": settings.cache_creation_input_tokens,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }
        if thinking is not None:
            usage["output_tokens_details"] = {"thinking_tokens": thinking_tokens}
        return {
            "id": f"msg_emu{number:08d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": usage,
        }


# ---------------------------------------------------------------------------------------------
# Answers: text, tool calls, tokens
# ---------------------------------------------------------------------------------------------


def reply_for(messages: Sequence[Mapping[str, Any]]) -> str:
    """The emulator's deterministic answer: ``REPLY_PREFIX`` + the last user turn's text
    (its text blocks and the text of its ``tool_result`` blocks, joined by spaces)."""
    return REPLY_PREFIX + _last_user_text(messages)


def _block_text(content: Any) -> str:
    """The text of a message's content: a string, or its text and tool_result blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            parts.append(_block_text(block.get("content")))
    return " ".join(part for part in parts if part)


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _block_text(message.get("content"))
    return ""


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    """Words of the system prompt, of every message's text and of its text documents (images
    and PDFs count nothing)."""
    system = body.get("system")
    total = count_tokens(_block_text(system))
    for message in body["messages"]:
        total += count_tokens(_block_text(message.get("content")))
        for _, document in _documents([message]):
            total += count_tokens(_document_text(document))
    return total


# ---------------------------------------------------------------------------------------------
# Extended thinking
# ---------------------------------------------------------------------------------------------


def thinking_signature(thinking: str) -> str:
    """The signature the emulator gives a thinking block with this text: opaque to clients, as
    Anthropic's, but checkable, so a thinking block sent back altered is refused. It carries the
    text, so a block whose text was omitted from the answer (``display: "omitted"``) is still
    recognised when sent back."""
    encoded = base64.urlsafe_b64encode(thinking.encode()).decode()
    return f"emu1.{encoded}.{hashlib.blake2b(thinking.encode(), digest_size=8).hexdigest()}"


def _signed_text(signature: Any) -> str | None:
    """The text a signature was made for, or None when it is not one of the emulator's."""
    if not isinstance(signature, str) or not signature.startswith("emu1."):
        return None
    _, _, rest = signature.partition(".")
    encoded, _, mac = rest.partition(".")
    try:
        text = base64.urlsafe_b64decode(encoded.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return text if thinking_signature(text).endswith("." + mac) and mac else None


def _thinking_config(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The request's thinking settings when thinking is on (enabled or adaptive), else None."""
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
        return thinking
    return None


def _thinking_text(body: Mapping[str, Any]) -> str:
    return THINKING_PREFIX + _last_user_text(body["messages"])


def _thinking_block(body: Mapping[str, Any]) -> dict[str, Any] | None:
    config = _thinking_config(body)
    if config is None:
        return None
    text = _thinking_text(body)
    shown = "" if config.get("display") == "omitted" else text
    return {"type": "thinking", "thinking": shown, "signature": thinking_signature(text)}


def _thinking_problem(body: Mapping[str, Any]) -> str | None:
    """Why Anthropic would refuse this request's thinking settings or thinking blocks."""
    thinking = body.get("thinking")
    if thinking is not None:
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        if kind not in ("enabled", "adaptive", "disabled"):
            return "thinking.type: Input should be 'enabled', 'adaptive' or 'disabled'"
        if kind == "enabled":
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int) or isinstance(budget, bool) or budget < _MIN_THINKING_BUDGET:
                return f"thinking.enabled.budget_tokens: Input should be greater than or equal to {_MIN_THINKING_BUDGET}"
            if isinstance(body.get("max_tokens"), int) and body["max_tokens"] <= budget:
                return "`max_tokens` must be greater than `thinking.budget_tokens`."
    messages = body.get("messages") or []
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if message.get("role") != "assistant" or not isinstance(content, list):
            continue
        for number, block in enumerate(content):
            if isinstance(block, dict) and block.get("type") == "thinking":
                signed = _signed_text(block.get("signature"))
                if signed is None or block.get("thinking") not in (signed, ""):
                    return f"messages.{index}.content.{number}: Invalid `signature` in `thinking` block"
    if _thinking_config(body) is None:
        return None
    if _tool_choice_type(body) in ("any", "tool"):
        return "Thinking may not be enabled when tool_choice forces tool use."
    assistants = [(i, m) for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"]
    if assistants:
        index, last = assistants[-1]
        blocks = [b for b in last.get("content") or () if isinstance(b, dict)] if isinstance(last.get("content"), list) else []
        if any(b.get("type") == "tool_use" for b in blocks) and blocks[0].get("type") not in ("thinking", "redacted_thinking"):
            return (
                f"messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                f"`{blocks[0].get('type')}`. When `thinking` is enabled, a final `assistant` message must start with a "
                "thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks)."
            )
    return None


# ---------------------------------------------------------------------------------------------
# Documents and citations
# ---------------------------------------------------------------------------------------------


def _documents(messages: Sequence[Mapping[str, Any]]) -> list[tuple[int, Mapping[str, Any]]]:
    """(document index, block) of every document block in ``messages``, counted in request order."""
    found = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else ():
            if isinstance(block, dict) and block.get("type") == "document":
                found.append((len(found), block))
    return found


def _document_text(document: Mapping[str, Any]) -> str:
    source = document.get("source") if isinstance(document.get("source"), dict) else {}
    if source.get("type") == "text" and isinstance(source.get("data"), str):
        return source["data"]
    if source.get("type") == "content":
        return _block_text(source.get("content"))
    return ""


def _cited_blocks(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A text block quoting each citable document of the last user turn, with its citation."""
    user_turns = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not user_turns:
        return []
    earlier = len(_documents(messages[: user_turns[-1]]))
    blocks = []
    for offset, document in _documents([messages[user_turns[-1]]]):
        citations = document.get("citations")
        if not (isinstance(citations, dict) and citations.get("enabled")):
            continue
        index = earlier + offset
        source = document.get("source") if isinstance(document.get("source"), dict) else {}
        title = document.get("title") if isinstance(document.get("title"), str) else None
        quoted = _document_text(document).split("\n", 1)[0][:_CITED_CHARS]
        citation: dict[str, Any] = {"type": "char_location", "cited_text": quoted, "document_index": index, "document_title": title}
        if source.get("type") == "content":
            citation.update(type="content_block_location", start_block_index=0, end_block_index=1)
        elif source.get("type") == "text":
            citation.update(start_char_index=0, end_char_index=len(quoted))
        else:
            citation.update(type="page_location", start_page_number=1, end_page_number=2)
        blocks.append({"type": "text", "text": quoted, "citations": [citation]})
    return blocks


def _tool_choice_type(body: Mapping[str, Any]) -> str:
    choice = body.get("tool_choice")
    return choice.get("type", "auto") if isinstance(choice, dict) else "auto"


def _tools_to_call(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The tools this request's answer calls, in the order of ``tools``; empty for a text answer."""
    tools = [(t["name"], t) for t in body.get("tools") or () if isinstance(t, dict) and isinstance(t.get("name"), str)]
    choice = body.get("tool_choice") if isinstance(body.get("tool_choice"), dict) else {}
    chosen = tools_to_call(
        tools,
        _last_user_text(body["messages"]),
        choice=choice.get("type", "auto"),
        forced=choice.get("name"),
        parallel=not choice.get("disable_parallel_tool_use"),
    )
    return [tool for _, tool in chosen]


def _generate(text: str, stop_sequences: Sequence[str], max_tokens: int) -> tuple[str, str, str | None]:
    """(text, stop_reason, stop_sequence) for a reply cut by a stop sequence or ``max_tokens``."""
    stop_reason, matched = "end_turn", None
    cuts = [(text.find(s), s) for s in stop_sequences if isinstance(s, str) and s and s in text]
    if cuts:
        position, matched = min(cuts)
        text, stop_reason = text[:position], "stop_sequence"
    pieces = _pieces(text)
    if count_tokens(text) > max_tokens:
        text, stop_reason, matched = "".join(pieces[:max_tokens]).rstrip(), "max_tokens", None
    return text, stop_reason, matched


def _pieces(text: str) -> list[str]:
    """One piece per word with its trailing whitespace, joining back to ``text`` exactly."""
    return re.findall(r"\s*\S+\s*", text) if text.strip() else [text]


# ---------------------------------------------------------------------------------------------
# Wire format
# ---------------------------------------------------------------------------------------------


def _sse(event: str, payload: Mapping[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _sse_events(message: Mapping[str, Any], piece_chars: int = 0) -> list[bytes]:
    """The whole answer as Anthropic streams it: ``message_start`` (empty content, input and
    cache usage, ``output_tokens`` 1), per block ``content_block_start``, its deltas (one
    ``text_delta`` per word; ``input_json_delta`` pieces of the tool input's JSON after an empty
    one) and ``content_block_stop``, a ``ping`` after the first block starts, ``message_delta``
    with the stop reason and the cumulative usage, and ``message_stop``."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
    events = [_sse("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append(_sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}))
            deltas = [{"type": "citations_delta", "citation": citation} for citation in block.get("citations") or ()]
            deltas.extend({"type": "text_delta", "text": piece} for piece in stream_pieces(block["text"], _pieces, piece_chars) if piece)
        elif block["type"] == "thinking":
            opened_thinking = {"type": "thinking", "thinking": "", "signature": ""}
            events.append(_sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": opened_thinking}))
            deltas = [{"type": "thinking_delta", "thinking": piece} for piece in _pieces(block["thinking"]) if piece and block["thinking"]]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            opened = {**block, "input": {}}
            events.append(_sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": opened}))
            json_text = orjson.dumps(block["input"]).decode()
            pieces = [json_text[i : i + _JSON_PIECE] for i in range(0, len(json_text), _JSON_PIECE)]
            deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in ["", *pieces]]
        if index == 0:
            events.append(_sse("ping", {"type": "ping"}))
        events.extend(_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas)
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    final_usage = {k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")}
    if "output_tokens_details" in usage:
        final_usage["output_tokens_details"] = usage["output_tokens_details"]
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events.append(_sse("message_delta", {"type": "message_delta", "delta": delta, "usage": final_usage}))
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events


def _in_stream_error(fault: Fault) -> bytes:
    error_type = fault.error_type or "overloaded_error"
    return _sse("error", {"type": "error", "error": {"type": error_type, "message": fault.message or _default_message(error_type)}})


def _request_id(seed: str) -> str:
    return "req_" + seed.removeprefix("msg_")


def _request_problem(headers: Mapping[str, str], body: Any, *, counting: bool = False) -> tuple[int, str] | None:
    """The (status, message) Anthropic answers an unusable request with, or None; ``counting``
    for ``count_tokens``, which takes no ``max_tokens``.

    API versions from ``2026-10-21`` (what the ``anthropic`` SDK 2.x sends) reject every sampling
    parameter at any value and accept ``system`` messages inside ``messages``; ``2023-06-01``
    takes sampling parameters and only ``user``/``assistant`` turns."""
    if not (headers.get("x-api-key") or headers.get("authorization")):
        return (401, "x-api-key or Authorization header is required")
    version = headers.get("anthropic-version")
    if not version:
        return (400, "anthropic-version: header is required")
    if not isinstance(body, dict):
        return (400, "There was an issue with the JSON body of your request.")
    if not isinstance(body.get("model"), str):
        return (400, "model: Field required")
    max_tokens = body.get("max_tokens")
    if not counting and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0):
        return (400, "max_tokens: Field required (an integer >= 0)")
    current = version >= SAMPLING_REMOVED_IN
    if current:
        for name in SAMPLING_PARAMETERS:
            if name in body:
                return (400, f"{name}: sampling parameters are not accepted on anthropic-version {version}")
    roles = ("user", "assistant", "system") if current else ("user", "assistant")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return (400, "messages: at least one message is required")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in roles:
            return (400, f"messages.{index}.role: Input should be one of {', '.join(repr(r) for r in roles)}")
        if not isinstance(message.get("content"), (str, list)):
            return (400, f"messages.{index}.content: Field required")
    stop = body.get("stop_sequences")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        return (400, "stop_sequences: Input should be a valid list of strings")
    thinking = _thinking_problem(body)
    if thinking is not None:
        return (400, thinking)
    return None


def _default_message(error_type: str) -> str:
    return {
        "invalid_request_error": "Invalid request (emulated).",
        "authentication_error": "invalid x-api-key (emulated)",
        "billing_error": "Your credit balance is too low (emulated).",
        "permission_error": "Your API key does not have permission to use the specified resource (emulated).",
        "not_found_error": "Not found (emulated).",
        "request_too_large": "Request exceeds the maximum allowed number of bytes (emulated).",
        "rate_limit_error": "Number of requests has exceeded your rate limit (emulated).",
        "api_error": "Internal server error (emulated).",
        "timeout_error": "Request timed out (emulated).",
        "overloaded_error": "Overloaded (emulated)",
    }.get(error_type, f"{error_type} (emulated)")


def _error_response(
    status: int,
    error_type: str | None,
    message: str | None,
    *,
    code: str | None = None,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    if error_type is None:
        error_type = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    error: dict[str, Any] = {"type": error_type, "message": message if message is not None else _default_message(error_type)}
    if code is not None:
        error["details"] = {"error_code": code}
    request_id = f"req_emu_error_{status}"
    sent = {"request-id": request_id, **(headers or {})}
    if retry_after is not None:
        sent["retry-after"] = str(math.ceil(retry_after))
    body = orjson.dumps({"type": "error", "error": error, "request_id": request_id})
    return web.Response(status=status, body=body, content_type="application/json", headers=sent)


# ---------------------------------------------------------------------------------------------
# Command line: a standalone upstream for benchmarks and manual tests
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the emulator until interrupted; records no request bodies so memory stays flat."""
    options = parse_command_line(
        argv,
        prog="python -m hookgate.testing.anthropic_emulator",
        description="Serve an emulated Anthropic Messages API.",
        default_port=8002,
        chunk_unit="events",
    )
    settings = EmulatorSettings(latency=options.latency, chunk_latency=options.chunk_latency, record_requests=False)
    serve_until_interrupted(
        AnthropicEmulator(settings).make_app(),
        host=options.host,
        port=options.port,
        banner=f"Anthropic emulator on http://{options.host}:{options.port}",
    )


if __name__ == "__main__":
    main()
