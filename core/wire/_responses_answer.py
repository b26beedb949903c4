"""Serving an OpenAI Responses client from a chat-completions upstream: the answer.

* :func:`to_response`: a ``chat.completion`` → a Responses ``response`` object;
* :class:`ChatStreamToResponses` / :func:`responses_events`: ``chat.completion.chunk`` dicts →
  the typed Responses stream events, each with its ``sequence_number``: ``response.created``,
  ``response.in_progress``, per output item ``response.output_item.added``, its content part
  (``response.content_part.added``/``.done``) and deltas (``response.output_text.delta``/
  ``.done``, ``response.refusal.delta``/``.done``, ``response.reasoning_text.delta``/``.done``,
  ``response.function_call_arguments.delta``/``.done``), ``response.output_item.done``, then
  ``response.completed`` (or ``response.incomplete``, or ``response.failed``);
* :func:`response_events`: a complete ``response`` replayed as that event sequence (a cached or
  stored answer sent to a streaming client).

Mapped: the text → a ``message`` item with one ``output_text`` part (a refusal → a ``refusal``
part); ``tool_calls`` → ``function_call`` items (``id`` → ``call_id``, so the next turn's
``function_call_output`` matches); the ``reasoning_content``/``reasoning`` text some upstreams
send → a ``reasoning`` item with a ``reasoning_text`` part (no ``encrypted_content``: there is
none); ``finish_reason`` ``length`` → status ``incomplete`` with reason ``max_output_tokens``,
``content_filter`` → ``incomplete`` with reason ``content_filter``; usage → ``input_tokens``
(cache reads ``input_tokens_details.cached_tokens``, writes ``cache_write_tokens``),
``output_tokens`` (reasoning ``output_tokens_details.reasoning_tokens``), ``total_tokens``.
The request's settings (instructions, tools, tool_choice, temperature, text format, metadata…)
are echoed on the response, as the Responses API does.

Not mapped: logprobs and annotations (always empty lists: chat completions gives no URL
citations, and logprobs are refused in the request). Item ids are derived from the response id and
the item's position (``msg_…_0``, ``fc_…_1``, ``rs_…_0``), the same whether the answer was
streamed or not; the response id defaults to a fresh random ``resp_…``: stored responses
need ids that never repeat, which upstream ids do not promise.
"""
from __future__ import annotations

import secrets
import time
from typing import Any, AsyncIterable, AsyncIterator, Final, Mapping

from ..errors import GatewayError, UpstreamError
from ._checks import malformed
from .limits import DEFAULT_LIMITS, WireLimits

__all__ = [
    "ChatStreamToResponses",
    "new_response_id",
    "response_events",
    "responses_events",
    "responses_usage",
    "to_response",
]

_INCOMPLETE_REASONS: Final[Mapping[str, str]] = {"length": "max_output_tokens", "content_filter": "content_filter"}
_FINAL_EVENTS: Final[Mapping[str, str]] = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}
_PART_EVENTS: Final[Mapping[str, tuple[str, str]]] = {
    # part type → (event name prefix, the part's text field)
    "output_text": ("response.output_text", "text"),
    "refusal": ("response.refusal", "refusal"),
    "reasoning_text": ("response.reasoning_text", "text"),
}


def new_response_id() -> str:
    """A fresh ``resp_…`` id (24 random bytes, hex): unique enough to key a store."""
    return "resp_" + secrets.token_hex(24)


def responses_usage(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Responses usage for OpenAI chat usage (None when there is none)."""
    if not isinstance(usage, dict):
        return None
    prompt_details = usage.get("prompt_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    completion_details = usage.get("completion_tokens_details")
    completion_details = completion_details if isinstance(completion_details, dict) else {}
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": _count(prompt_details.get("cached_tokens")),
            "cache_write_tokens": _count(prompt_details.get("cache_write_tokens")),
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": _count(completion_details.get("reasoning_tokens"))},
        "total_tokens": _count(usage.get("total_tokens")) or prompt + completion,
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _reasoning_text(message: Mapping[str, Any]) -> str | None:
    for field in ("reasoning_content", "reasoning"):
        text = message.get(field)
        if isinstance(text, str) and text:
            return text
    return None


def _shell(request: Mapping[str, Any], *, response_id: str, created_at: int, model: str) -> dict[str, Any]:
    """The response object with the request's settings echoed, before any output."""
    text = request.get("text") if isinstance(request.get("text"), dict) else {}
    reasoning = request.get("reasoning") if isinstance(request.get("reasoning"), dict) else {}
    shell = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "model": model,
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "temperature": request.get("temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity", "medium")},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": list(request.get("tools") or ()),
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation", "disabled"),
        "metadata": dict(request.get("metadata") or {}),
    }
    if isinstance(request.get("user"), str):
        shell["user"] = request["user"]
    conversation = request.get("conversation")
    if isinstance(conversation, dict):
        conversation = conversation.get("id")
    if isinstance(conversation, str):
        shell["conversation"] = {"id": conversation}  # the conversation the answer was added to
    return shell


def _finish(response: dict[str, Any], finish_reason: str | None, usage: Mapping[str, Any] | None) -> None:
    reason = _INCOMPLETE_REASONS.get(finish_reason or "")
    response["status"] = "incomplete" if reason else "completed"
    response["incomplete_details"] = {"reason": reason} if reason else None
    response["completed_at"] = int(time.time())
    translated = responses_usage(usage)
    if translated is not None:  # the schema has no null usage: absent until known
        response["usage"] = translated


# ---------------------------------------------------------------------------------------------
# Complete answers
# ---------------------------------------------------------------------------------------------


def to_response(
    completion: Mapping[str, Any],
    *,
    request: Mapping[str, Any],
    response_id: str | None = None,
    model: str | None = None,
    provider: str = "chat",
    limits: WireLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """The Responses ``response`` for a ``chat.completion`` (its first choice) answering the
    Responses ``request``. ``model`` defaults to the upstream's model name; ``response_id`` to
    :func:`new_response_id`. Raises :class:`~hookgate.UpstreamError` (502) for a completion that
    is not one."""
    choices = completion.get("choices") if isinstance(completion, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise malformed(provider, "a completion without choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise malformed(provider, "a choice without a message")
    response_id = response_id or new_response_id()
    suffix = response_id.removeprefix("resp_")
    created = completion.get("created")
    response = _shell(
        request,
        response_id=response_id,
        created_at=created if isinstance(created, int) else int(time.time()),
        model=model if model is not None else str(completion.get("model") or request.get("model") or ""),
    )
    _finish(response, choice.get("finish_reason"), completion.get("usage"))
    item_status = "completed" if response["status"] == "completed" else "incomplete"
    output: list[dict[str, Any]] = response["output"]
    reasoning = _reasoning_text(message)
    if reasoning is not None:
        output.append({"id": f"rs_{suffix}_{len(output)}", "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": reasoning}], "status": item_status})
    parts: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    if isinstance(content, str) and content:
        parts.append({"type": "output_text", "text": content, "annotations": [], "logprobs": []})
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        output.append({"id": f"msg_{suffix}_{len(output)}", "type": "message", "status": item_status, "role": "assistant", "content": parts})
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list) or len(calls) > limits.max_output_items:
        raise malformed(provider, f"tool calls that are not a list of at most {limits.max_output_items}")
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise malformed(provider, "a tool call without a function")
        number = len(output)
        output.append(
            {
                "id": f"fc_{suffix}_{number}",
                "type": "function_call",
                "status": "completed",
                "call_id": str(call.get("id") or f"call_{suffix}_{number}"),
                "name": str(function.get("name") or ""),
                "arguments": function.get("arguments") if isinstance(function.get("arguments"), str) else "",
            }
        )
    return response


# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------


class ChatStreamToResponses:
    """Turns one chat completion stream, chunk by chunk, into the Responses stream events.

    :meth:`feed` each chunk and send the events it returns; when the upstream stream ends, send
    :meth:`finish`'s (the open item's closing events, then ``response.completed`` or
    ``response.incomplete`` with the usage); if it fails mid-stream, :meth:`fail`'s
    (``response.failed`` with the error). :attr:`response` is then the final ``response``
    object, to store or log. Output items follow one another: a new kind of delta (text,
    refusal, reasoning, another tool call) closes the open item or part first; an upstream
    returning to a tool call it left is malformed (502).

        translator = ChatStreamToResponses(request)
        async for chunk in upstream_chunks:
            for event in translator.feed(chunk):
                yield encode_event(event)
        for event in translator.finish():
            yield encode_event(event)
    """

    __slots__ = (
        "_finish_reason", "_limits", "_model", "_open", "_open_part", "_pieces", "_provider", "_request", "_seq", "_suffix",
        "_tools", "_usage", "finished", "response", "started",
    )

    def __init__(
        self,
        request: Mapping[str, Any],
        *,
        response_id: str | None = None,
        model: str | None = None,
        provider: str = "chat",
        limits: WireLimits = DEFAULT_LIMITS,
    ) -> None:
        self._request, self._model, self._provider, self._limits = request, model, provider, limits
        response_id = response_id or new_response_id()
        self._suffix = response_id.removeprefix("resp_")
        self.response: dict[str, Any] = _shell(request, response_id=response_id, created_at=int(time.time()), model=model or str(request.get("model") or ""))
        """The response object as it stands; final once :attr:`finished`."""
        self._seq = 0
        self._open: tuple[str, Any] | None = None  # ("message" | "reasoning" | "function_call", tool key)
        self._open_part: str | None = None  # the open content part's type, in a message or reasoning item
        self._pieces: list[str] = []  # the open part's text or the open call's arguments so far, joined on close
        self._tools: set[Any] = set()
        self._finish_reason: str | None = None
        self._usage: Mapping[str, Any] | None = None
        self.started = False
        """True once ``response.created`` was produced."""
        self.finished = False
        """True once :meth:`finish` or :meth:`fail` ran."""

    @property
    def finish_reason(self) -> str | None:
        """The upstream's ``finish_reason``, once it sent one."""
        return self._finish_reason

    def feed(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The events one ``chat.completion.chunk`` amounts to."""
        if not isinstance(chunk, dict):
            raise malformed(self._provider, "a stream chunk that is not an object")
        events = self._start(chunk)
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
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
        _finish(self.response, self._finish_reason, self._usage)
        events = self._close(incomplete=self.response["status"] == "incomplete")
        events.append(self._event(_FINAL_EVENTS[self.response["status"]], response=self.response))
        return events

    def fail(self, error: GatewayError) -> list[dict[str, Any]]:
        """``response.failed`` for a failure after the response started (``response.created``
        first if nothing was sent yet), the error's code mapped to the Responses codes."""
        if self.finished:
            return []
        events = self._start(None)
        self.finished = True
        self._flush()
        self.response["status"] = "failed"
        code = "rate_limit_exceeded" if error.status == 429 else "invalid_prompt" if error.status == 400 else "server_error"
        self.response["error"] = {"code": code, "message": error.message}
        events.append(self._event("response.failed", response=self.response))
        return events

    # -- Events ------------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, **fields, "sequence_number": self._seq}
        self._seq += 1
        if "response" in fields:  # a snapshot: later changes must not show in events already sent
            event["response"] = {**fields["response"], "output": [dict(item) for item in fields["response"]["output"]]}
        return event

    def _start(self, chunk: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        if self.started:
            return []
        self.started = True
        if chunk is not None and self._model is None and isinstance(chunk.get("model"), str):
            self.response["model"] = chunk["model"]
        if chunk is not None and isinstance(chunk.get("created"), int):
            self.response["created_at"] = chunk["created"]
        return [self._event("response.created", response=self.response), self._event("response.in_progress", response=self.response)]

    @property
    def _output(self) -> list[dict[str, Any]]:
        return self.response["output"]

    def _delta(self, delta: Mapping[str, Any], events: list[dict[str, Any]]) -> None:
        reasoning = _reasoning_text(delta)
        if reasoning is not None:
            self._text("reasoning", "reasoning_text", reasoning, events)
        if isinstance(delta.get("content"), str) and delta["content"]:
            self._text("message", "output_text", delta["content"], events)
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:
            self._text("message", "refusal", delta["refusal"], events)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for position, call in enumerate(calls):
                if isinstance(call, dict):
                    self._tool_call(call, position, events)

    def _open_item(self, kind: str, key: Any, item: dict[str, Any], events: list[dict[str, Any]]) -> None:
        events.extend(self._close(incomplete=False))
        if len(self._output) >= self._limits.max_output_items:
            raise malformed(self._provider, f"more than {self._limits.max_output_items} output items")
        self._open = (kind, key)
        self._output.append(item)
        events.append(self._event("response.output_item.added", output_index=len(self._output) - 1, item=_copy_item(item)))

    def _text(self, kind: str, part_type: str, text: str, events: list[dict[str, Any]]) -> None:
        if self._open is None or self._open[0] != kind:
            number = len(self._output)
            item_id = f"{'rs' if kind == 'reasoning' else 'msg'}_{self._suffix}_{number}"
            item: dict[str, Any] = (
                {"id": item_id, "type": "reasoning", "summary": [], "content": [], "status": "in_progress"}
                if kind == "reasoning"
                else {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
            )
            self._open_item(kind, None, item, events)
        item = self._output[-1]
        if self._open_part != part_type:
            events.extend(self._close_part())
            part = _empty_part(part_type)
            item["content"].append(part)
            self._open_part = part_type
            events.append(self._part_event("response.content_part.added", part=dict(part)))
        prefix, _ = _PART_EVENTS[part_type]
        self._pieces.append(text)  # joined once on close: += on a shared string copies it every time
        extra = {"logprobs": []} if part_type == "output_text" else {}
        events.append(self._part_event(f"{prefix}.delta", delta=text, **extra))

    def _part_event(self, kind: str, **fields: Any) -> dict[str, Any]:
        item = self._output[-1]
        return self._event(kind, item_id=item["id"], output_index=len(self._output) - 1, content_index=len(item["content"]) - 1, **fields)

    def _flush(self) -> None:
        """Write the pieces received so far into the open part or function call."""
        if self._open is None:
            return
        item = self._output[-1]
        if item["type"] == "function_call":
            item["arguments"] = "".join(self._pieces)
        elif self._open_part is not None:
            item["content"][-1][_PART_EVENTS[self._open_part][1]] = "".join(self._pieces)

    def _close_part(self) -> list[dict[str, Any]]:
        if self._open_part is None:
            return []
        self._flush()
        self._pieces = []
        part = self._output[-1]["content"][-1]
        prefix, field = _PART_EVENTS[self._open_part]
        self._open_part = None
        extra = {"logprobs": []} if part["type"] == "output_text" else {}
        return [self._part_event(f"{prefix}.done", **{field: part[field]}, **extra), self._part_event("response.content_part.done", part=dict(part))]

    def _tool_call(self, call: Mapping[str, Any], position: int, events: list[dict[str, Any]]) -> None:
        key = call["index"] if isinstance(call.get("index"), int) else position
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        if self._open != ("function_call", key):
            if key in self._tools:
                raise malformed(self._provider, "a tool call delta for a call it had already left")
            self._tools.add(key)
            number = len(self._output)
            item = {
                "id": f"fc_{self._suffix}_{number}",
                "type": "function_call",
                "status": "in_progress",
                "call_id": str(call.get("id") or f"call_{self._suffix}_{number}"),
                "name": str(function.get("name") or ""),
                "arguments": "",
            }
            self._open_item("function_call", key, item, events)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item = self._output[-1]
            self._pieces.append(arguments)
            events.append(self._event("response.function_call_arguments.delta", item_id=item["id"], output_index=len(self._output) - 1, delta=arguments))

    def _close(self, *, incomplete: bool) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        events = self._close_part()
        item = self._output[-1]
        index = len(self._output) - 1
        if item["type"] == "function_call":
            self._flush()
            self._pieces = []
            events.append(self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index, name=item["name"], arguments=item["arguments"]))
            item["status"] = "completed"
        else:
            item["status"] = "incomplete" if incomplete else "completed"
        self._open = None
        events.append(self._event("response.output_item.done", output_index=index, item=_copy_item(item)))
        return events


def _empty_part(part_type: str) -> dict[str, Any]:
    if part_type == "output_text":
        return {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    if part_type == "refusal":
        return {"type": "refusal", "refusal": ""}
    return {"type": "reasoning_text", "text": ""}


def _copy_item(item: Mapping[str, Any]) -> dict[str, Any]:
    copied = dict(item)
    if isinstance(item.get("content"), list):
        copied["content"] = [dict(part) for part in item["content"]]
    return copied


async def responses_events(
    chunks: AsyncIterable[Mapping[str, Any]],
    *,
    request: Mapping[str, Any],
    response_id: str | None = None,
    model: str | None = None,
    provider: str = "chat",
    limits: WireLimits = DEFAULT_LIMITS,
) -> AsyncIterator[dict[str, Any]]:
    """The Responses stream events for a chat completion stream, through
    :class:`ChatStreamToResponses`. An upstream failure propagates as raised: the caller
    sends ``ChatStreamToResponses.fail``'s events, or an HTTP error if nothing was sent yet."""
    translator = ChatStreamToResponses(request, response_id=response_id, model=model, provider=provider, limits=limits)
    async for chunk in chunks:
        for event in translator.feed(chunk):
            yield event
    for event in translator.finish():
        yield event


def response_events(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A complete ``response`` as the event sequence that streams it, each text and argument
    string in one delta; items other than messages and function calls (reasoning, hosted tool
    calls) are sent whole in ``output_item.added`` and ``.done``. For replaying a cached or
    stored answer to a streaming client; the SDKs accumulate it back to ``response``."""
    events: list[dict[str, Any]] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append({"type": kind, **fields, "sequence_number": len(events)})

    opening = {**response, "status": "in_progress", "output": [], "completed_at": None, "incomplete_details": None}
    opening.pop("usage", None)
    emit("response.created", response=opening)
    emit("response.in_progress", response=opening)
    for index, item in enumerate(response.get("output") or ()):
        kind = item.get("type")
        if kind == "message":
            emit("response.output_item.added", output_index=index, item={**item, "status": "in_progress", "content": []})
            for number, part in enumerate(item.get("content") or ()):
                where = {"item_id": item["id"], "output_index": index, "content_index": number}
                prefix, field = _PART_EVENTS.get(part.get("type"), ("", ""))
                if not prefix:
                    emit("response.content_part.added", **where, part=part)
                    emit("response.content_part.done", **where, part=part)
                    continue
                extra = {"logprobs": []} if part["type"] == "output_text" else {}
                emit("response.content_part.added", **where, part={**part, field: ""})
                emit(f"{prefix}.delta", **where, delta=part.get(field, ""), **extra)
                emit(f"{prefix}.done", **where, **{field: part.get(field, "")}, **extra)
                emit("response.content_part.done", **where, part=part)
        elif kind == "function_call":
            emit("response.output_item.added", output_index=index, item={**item, "status": "in_progress", "arguments": ""})
            where = {"item_id": item.get("id", ""), "output_index": index}
            emit("response.function_call_arguments.delta", **where, delta=item.get("arguments", ""))
            emit("response.function_call_arguments.done", **where, name=item.get("name", ""), arguments=item.get("arguments", ""))
        else:
            emit("response.output_item.added", output_index=index, item=item)
        emit("response.output_item.done", output_index=index, item=item)
    emit(_FINAL_EVENTS.get(str(response.get("status")), "response.completed"), response=response)
    return events
