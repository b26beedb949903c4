"""Serving an Anthropic Messages client from a chat-completions upstream: the answer.

* :func:`to_anthropic_message`: a ``chat.completion`` → a Messages ``message``;
* :class:`ChatStreamToAnthropic` / :func:`anthropic_events`: ``chat.completion.chunk`` dicts →
  Anthropic's SSE event sequence: ``message_start``, per content block ``content_block_start``,
  its deltas and ``content_block_stop``, then ``message_delta`` (stop reason and usage) and
  ``message_stop``;
* :func:`message_events`: a complete ``message`` replayed as that event sequence (a cached
  answer sent to a streaming client).

Mapped: the text → a ``text`` block; ``tool_calls`` → ``tool_use`` blocks (ids kept, arguments
parsed into ``input``; streamed as ``input_json_delta`` pieces as they arrive); the
``reasoning_content``/``reasoning`` text some upstreams send (DeepSeek, vLLM, Groq) → a
``thinking`` block whose ``signature`` is empty (there is none to give; sent back, it is dropped
on the way to the chat upstream); a refusal → a text block and ``stop_reason: "refusal"``.
``finish_reason`` → ``stop_reason`` (:data:`STOP_REASONS`); usage → Anthropic's
(:func:`anthropic_usage`): ``input_tokens`` excludes cache reads and writes, as Anthropic counts.

Not mapped: ``stop_sequence`` is always null (chat completions does not say which stop sequence
matched); logprobs and ``n`` > 1 (the request never asks for them). In a stream, the input
token count is known only at the end, so ``message_start`` says 0 and ``message_delta`` carries
the real counts (the SDKs take ``message_delta``'s cumulative counts over ``message_start``'s);
an upstream that ignores ``stream_options.include_usage`` leaves them 0.
"""
from __future__ import annotations

from typing import Any, AsyncIterable, AsyncIterator, Final, Mapping

import orjson

from ..errors import GatewayError, UpstreamError
from ._anthropic_errors import anthropic_error_body
from ._checks import json_object, malformed
from .limits import DEFAULT_LIMITS, WireLimits

__all__ = [
    "STOP_REASONS",
    "ChatStreamToAnthropic",
    "anthropic_events",
    "anthropic_usage",
    "message_events",
    "stop_reason",
    "to_anthropic_message",
]

STOP_REASONS: Final[Mapping[str, str]] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
"""OpenAI ``finish_reason`` → Anthropic ``stop_reason`` (anything else: ``end_turn``)."""

_BLOCK_STARTS: Final[Mapping[str, Mapping[str, Any]]] = {
    "text": {"type": "text", "text": ""},
    "thinking": {"type": "thinking", "thinking": "", "signature": ""},
}


def stop_reason(finish_reason: str | None) -> str:
    """Anthropic's ``stop_reason`` for an OpenAI ``finish_reason`` (see :data:`STOP_REASONS`)."""
    return STOP_REASONS.get(finish_reason or "", "end_turn")


def anthropic_usage(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """Anthropic usage for OpenAI chat usage: ``prompt_tokens`` includes the tokens read from
    (``cached_tokens``) and written to (``cache_write_tokens``) the prompt cache, Anthropic's
    ``input_tokens`` does not; reasoning tokens become ``output_tokens_details.thinking_tokens``.
    The inverse of :func:`hookgate.wire.anthropic.openai_usage`."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    cache_read = _count(details.get("cached_tokens"))
    cache_write = _count(details.get("cache_write_tokens"))
    translated: dict[str, Any] = {
        "input_tokens": max(_count(usage.get("prompt_tokens")) - cache_read - cache_write, 0),
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "output_tokens": _count(usage.get("completion_tokens")),
    }
    completion_details = usage.get("completion_tokens_details")
    if isinstance(completion_details, dict) and completion_details.get("reasoning_tokens") is not None:
        translated["output_tokens_details"] = {"thinking_tokens": _count(completion_details["reasoning_tokens"])}
    return translated


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _message_id(upstream_id: Any) -> str:
    """``msg_…`` from the upstream's id, so a log line can be matched with the upstream's."""
    text = upstream_id if isinstance(upstream_id, str) else ""
    return text if text.startswith("msg_") else "msg_" + (text.removeprefix("chatcmpl-") or "gateway")


def _reasoning_text(message: Mapping[str, Any]) -> str | None:
    for field in ("reasoning_content", "reasoning"):
        text = message.get(field)
        if isinstance(text, str) and text:
            return text
    return None


# ---------------------------------------------------------------------------------------------
# Complete answers
# ---------------------------------------------------------------------------------------------


def to_anthropic_message(
    completion: Mapping[str, Any],
    *,
    model: str | None = None,
    message_id: str | None = None,
    provider: str = "chat",
    limits: WireLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """The Messages ``message`` for a ``chat.completion`` (its first choice). ``model`` is the
    name the client asked for (default: the upstream's); ``message_id`` defaults to ``msg_`` +
    the upstream id. Raises :class:`~hookgate.UpstreamError` (502) for a completion that is not
    one, or whose tool call arguments are not a JSON object (Anthropic's ``input`` must be)."""
    choices = completion.get("choices") if isinstance(completion, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise malformed(provider, "a completion without choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise malformed(provider, "a choice without a message")
    blocks: list[dict[str, Any]] = []
    reasoning = _reasoning_text(message)
    if reasoning is not None:
        blocks.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    content = message.get("content")
    if isinstance(content, list):  # a few upstreams answer with text parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    if isinstance(content, str) and content:
        blocks.append({"type": "text", "text": content})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        blocks.append({"type": "text", "text": refusal})
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list) or len(calls) > limits.max_output_items:
        raise malformed(provider, f"tool calls that are not a list of at most {limits.max_output_items}")
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise malformed(provider, "a tool call without a function")
        tool_input = json_object(function.get("arguments"))
        if tool_input is None:
            raise malformed(provider, "tool call arguments that are not a JSON object")
        blocks.append({"type": "tool_use", "id": str(call.get("id") or ""), "name": str(function.get("name") or ""), "input": tool_input})
    refused = isinstance(refusal, str) and bool(refusal)
    return {
        "id": message_id or _message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model if model is not None else str(completion.get("model") or ""),
        "content": blocks,
        "stop_reason": "refusal" if refused else stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": anthropic_usage(completion.get("usage")),
    }


# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------


class ChatStreamToAnthropic:
    """Turns one chat completion stream, chunk by chunk, into Anthropic's SSE events.

    :meth:`feed` each chunk and send the events it returns (often one); when the upstream stream
    ends, send :meth:`finish`'s (the open block's ``content_block_stop``, ``message_delta`` with
    the stop reason and usage, ``message_stop``). If the upstream fails mid-stream, send
    :meth:`fail`'s instead: Anthropic's in-stream ``error`` event. Blocks follow one another as
    Anthropic's do: a new kind of delta (text, thinking, another tool call) closes the open
    block first; an upstream returning to a tool call it left is malformed (502).

        translator = ChatStreamToAnthropic(model="claude-sonnet-4-6")
        async for chunk in upstream_chunks:
            for event in translator.feed(chunk):
                yield encode_event(event)
        for event in translator.finish():
            yield encode_event(event)
    """

    __slots__ = (
        "_finish_reason", "_index", "_limits", "_message_id", "_model", "_open", "_provider", "_refused",
        "_tools", "_usage", "finished", "started",
    )

    def __init__(
        self, *, model: str | None = None, message_id: str | None = None, provider: str = "chat", limits: WireLimits = DEFAULT_LIMITS
    ) -> None:
        self._model, self._message_id, self._provider, self._limits = model, message_id, provider, limits
        self._index = -1  # the Anthropic index of the open (or last) block
        self._open: tuple[str, Any] | None = None  # ("text" | "thinking" | "tool", tool key)
        self._tools: set[Any] = set()  # chat tool call indices already given a block
        self._finish_reason: str | None = None
        self._refused = False
        self._usage: Mapping[str, Any] | None = None
        self.started = False
        """True once ``message_start`` was produced (after the first chunk)."""
        self.finished = False
        """True once :meth:`finish` or :meth:`fail` ran."""

    def feed(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The events one ``chat.completion.chunk`` amounts to."""
        if not isinstance(chunk, dict):
            raise malformed(self._provider, "a stream chunk that is not an object")
        events: list[dict[str, Any]] = []
        if not self.started:
            events.append(self._message_start(chunk))
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]  # cumulative: the last one wins
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(delta, events)
            if isinstance(choice.get("finish_reason"), str):
                self._finish_reason = choice["finish_reason"]
        return events

    def finish(self) -> list[dict[str, Any]]:
        """The closing events, once the upstream stream has ended. Raises
        :class:`~hookgate.UpstreamError` if it ended before its first chunk."""
        if self.finished:
            return []
        if not self.started:
            raise UpstreamError(f"The {self._provider} upstream ended the stream before its first chunk.", code="upstream_disconnected")
        self.finished = True
        events = self._close()
        usage = anthropic_usage(self._usage)
        final_usage = {key: usage[key] for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")}
        if "output_tokens_details" in usage:
            final_usage["output_tokens_details"] = usage["output_tokens_details"]
        reason = "refusal" if self._refused else stop_reason(self._finish_reason)
        events.append({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None}, "usage": final_usage})
        events.append({"type": "message_stop"})
        return events

    def fail(self, error: GatewayError) -> list[dict[str, Any]]:
        """The in-stream ``error`` event for a failure after the response started."""
        self.finished = True
        return [anthropic_error_body(error.status, error.message, code=error.code)]

    @property
    def finish_reason(self) -> str | None:
        """The upstream's ``finish_reason``, once it sent one."""
        return self._finish_reason

    # -- Events ------------------------------------------------------------------------------

    def _message_start(self, chunk: Mapping[str, Any]) -> dict[str, Any]:
        self.started = True
        model = self._model if self._model is not None else str(chunk.get("model") or "")
        usage = anthropic_usage(chunk.get("usage")) if isinstance(chunk.get("usage"), dict) else {"input_tokens": 0, "output_tokens": 0}
        message = {
            "id": self._message_id or _message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return {"type": "message_start", "message": message}

    def _delta(self, delta: Mapping[str, Any], events: list[dict[str, Any]]) -> None:
        reasoning = _reasoning_text(delta)
        if reasoning is not None:
            self._open_block("thinking", None, events)
            events.append(self._block_delta({"type": "thinking_delta", "thinking": reasoning}))
        for field in ("content", "refusal"):
            text = delta.get(field)
            if isinstance(text, str) and text:
                self._refused = self._refused or field == "refusal"
                self._open_block("text", None, events)
                events.append(self._block_delta({"type": "text_delta", "text": text}))
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for position, call in enumerate(calls):
                if isinstance(call, dict):
                    self._tool_call(call, position, events)

    def _tool_call(self, call: Mapping[str, Any], position: int, events: list[dict[str, Any]]) -> None:
        key = call["index"] if isinstance(call.get("index"), int) else position
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        if self._open != ("tool", key):
            if key in self._tools:
                raise malformed(self._provider, "a tool call delta for a call it had already left")
            self._tools.add(key)
            start = {"type": "tool_use", "id": str(call.get("id") or f"toolu_{len(self._tools)}"), "name": str(function.get("name") or ""), "input": {}}
            self._open_block("tool", key, events, start)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            events.append(self._block_delta({"type": "input_json_delta", "partial_json": arguments}))

    def _open_block(self, kind: str, key: Any, events: list[dict[str, Any]], start: Mapping[str, Any] | None = None) -> None:
        if self._open == (kind, key):
            return
        events.extend(self._close())
        if self._index + 1 >= self._limits.max_output_items:
            raise malformed(self._provider, f"more than {self._limits.max_output_items} content blocks")
        self._index += 1
        self._open = (kind, key)
        block = dict(start if start is not None else _BLOCK_STARTS[kind])
        events.append({"type": "content_block_start", "index": self._index, "content_block": block})

    def _block_delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": self._index, "delta": delta}

    def _close(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        self._open = None
        return [{"type": "content_block_stop", "index": self._index}]


async def anthropic_events(
    chunks: AsyncIterable[Mapping[str, Any]],
    *,
    model: str | None = None,
    message_id: str | None = None,
    provider: str = "chat",
    limits: WireLimits = DEFAULT_LIMITS,
) -> AsyncIterator[dict[str, Any]]:
    """Anthropic's SSE events for a chat completion stream, through
    :class:`ChatStreamToAnthropic`. An upstream failure propagates as raised; the caller sends
    ``anthropic_error_body(...)`` as an ``error`` event if the response has started."""
    translator = ChatStreamToAnthropic(model=model, message_id=message_id, provider=provider, limits=limits)
    async for chunk in chunks:
        for event in translator.feed(chunk):
            yield event
    for event in translator.finish():
        yield event


def message_events(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A complete Messages ``message`` as the event sequence that streams it: each block's
    whole text, thinking, signature, citations or tool input in one delta. For replaying a
    cached answer to a streaming client; the SDKs accumulate it back to ``message``."""
    usage = dict(message.get("usage") or {})
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 0}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(message.get("content") or ()):
        kind = block.get("type")
        deltas: list[dict[str, Any]] = []
        if kind == "text":
            opened: dict[str, Any] = {"type": "text", "text": ""}
            deltas.extend({"type": "citations_delta", "citation": citation} for citation in block.get("citations") or ())
            if block.get("text"):
                deltas.append({"type": "text_delta", "text": block["text"]})
        elif kind == "thinking":
            opened = {"type": "thinking", "thinking": "", "signature": ""}
            if block.get("thinking"):
                deltas.append({"type": "thinking_delta", "thinking": block["thinking"]})
            deltas.append({"type": "signature_delta", "signature": block.get("signature", "")})
        elif kind in ("tool_use", "server_tool_use"):
            opened = {**block, "input": {}}
            deltas.append({"type": "input_json_delta", "partial_json": orjson.dumps(block.get("input") or {}).decode()})
        else:  # redacted thinking, server tool results: sent whole, as Anthropic does
            opened = dict(block)
        events.append({"type": "content_block_start", "index": index, "content_block": opened})
        events.extend({"type": "content_block_delta", "index": index, "delta": delta} for delta in deltas)
        events.append({"type": "content_block_stop", "index": index})
    final_usage = {key: usage[key] for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens") if key in usage}
    delta = {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")}
    events.append({"type": "message_delta", "delta": delta, "usage": final_usage})
    events.append({"type": "message_stop"})
    return events
