"""Calling an Anthropic upstream for an OpenAI chat client: pure translation, no I/O.

The ``anthropic`` provider receives OpenAI chat requests and must answer in OpenAI's shapes, so
it needs three translations, all here as plain-dict functions (no pydantic on the hot path):

* :func:`to_anthropic_request`: an OpenAI chat request → a Messages API request;
* :func:`from_anthropic_message`: a Messages API ``message`` → a ``chat.completion``;
* :class:`AnthropicStreamTranslator`: Messages SSE events → ``chat.completion.chunk`` dicts.

Anthropic's error bodies are read by :func:`hookgate.wire.anthropic.error_from_anthropic`.

What does not translate, and why:

* ``temperature``, ``top_p``: API version ``2026-10-21``, which the ``anthropic`` SDK 2.x sends
  by default, rejects every sampling parameter at any value (the SDK no longer has the
  arguments), so by default they are dropped (``sampling="drop"``). A deployment that pins
  ``anthropic-version: 2023-06-01`` for a model that still samples can pass ``sampling="send"``.
* ``n`` > 1, ``logprobs``, ``response_format: json_object`` and audio output have no Anthropic
  equivalent: a 400 naming the parameter, rather than an answer that silently differs.
* ``seed``, ``presence_penalty``, ``frequency_penalty``, ``logit_bias``, ``store``,
  ``service_tier``, ``reasoning_effort`` and other hints are not sent.
* Anthropic ``thinking`` blocks are not shown to OpenAI clients (their schema has no place
  for them); their tokens still count in ``completion_tokens``.
* Cache writes: Anthropic's ``cache_creation_input_tokens`` count in ``prompt_tokens`` and are
  also ``prompt_tokens_details.cache_write_tokens`` (the name OpenAI's Responses usage uses), so
  a Messages client served through chat completions gets them back exactly.
"""
from __future__ import annotations

from typing import Any, Final, Iterable, Literal, Mapping

import orjson

from ..bounds import clip
from ..errors import InvalidRequest, UpstreamError
from ._anthropic_errors import error_from_anthropic

__all__ = [
    "FINISH_REASONS",
    "AnthropicStreamTranslator",
    "finish_reason",
    "from_anthropic_message",
    "openai_usage",
    "to_anthropic_request",
]

Sampling = Literal["drop", "send"]

FINISH_REASONS: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
"""Anthropic ``stop_reason`` → OpenAI ``finish_reason`` (anything else: ``stop``)."""

_IMAGE_MEDIA_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_EMPTY_SCHEMA: Final[Mapping[str, Any]] = {"type": "object", "properties": {}}


# ---------------------------------------------------------------------------------------------
# Requests: OpenAI chat request → Anthropic Messages request
# ---------------------------------------------------------------------------------------------


def to_anthropic_request(
    body: Mapping[str, Any],
    *,
    default_max_tokens: int,
    model: str | None = None,
    sampling: Sampling = "drop",
) -> dict[str, Any]:
    """The Messages API request for an OpenAI chat request ``body`` (already validated as one).

    ``model`` is the upstream model name (default: ``body["model"]``); ``default_max_tokens`` is
    used when the client set neither ``max_completion_tokens`` nor ``max_tokens``, since
    Anthropic requires one. System and developer messages become ``system``; consecutive turns
    of one role are merged, tool results go into the user turn that follows the tool calls.
    Raises :class:`InvalidRequest` (naming the parameter) for what Anthropic cannot do.
    """
    _reject_untranslatable(body)
    system, messages = _messages(body.get("messages") or [])
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    request: dict[str, Any] = {
        "model": model if model is not None else body["model"],
        "max_tokens": default_max_tokens if max_tokens is None else max_tokens,
        "messages": messages,
    }
    if system is not None:
        request["system"] = system
    stop = body.get("stop")
    if stop:
        request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if sampling == "send":
        for name in ("temperature", "top_p"):
            if body.get(name) is not None:
                request[name] = body[name]
    tools = body.get("tools")
    if tools:
        request["tools"] = [_tool(tool, index) for index, tool in enumerate(tools)]
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            request["tool_choice"] = choice
    output_format = _output_format(body.get("response_format"))
    if output_format is not None:
        request["output_config"] = {"format": output_format}
    if isinstance(body.get("user"), str) and body["user"]:
        request["metadata"] = {"user_id": body["user"]}
    if body.get("stream") is True:
        request["stream"] = True
    return request


def _reject_untranslatable(body: Mapping[str, Any]) -> None:
    if body.get("n") not in (None, 1):
        raise InvalidRequest("The anthropic provider answers with one choice: n must be 1.", param="n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise InvalidRequest("The anthropic provider cannot return log probabilities.", param="logprobs")
    if "audio" in (body.get("modalities") or ()) or body.get("audio") is not None:
        raise InvalidRequest("The anthropic provider cannot answer with audio.", param="modalities")


def _messages(openai_messages: Iterable[Mapping[str, Any]]) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """(system, messages): system and developer texts in order; the other turns as Anthropic
    turns with block lists, merged per role, a lone text block written as a plain string."""
    system_parts: list[str] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(openai_messages):
        role = message.get("role")
        if role in ("system", "developer"):
            system_parts.extend(_texts(message.get("content"), f"messages[{index}].content"))
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), index)
            anthropic_role = "user"
        elif role == "assistant":
            blocks = _assistant_blocks(message, index)
            anthropic_role = "assistant"
        elif role == "tool":
            blocks = [_tool_result(message, index)]
            anthropic_role = "user"
        else:
            raise InvalidRequest(f"The anthropic provider does not support messages with role {clip(role, 64)!r}.", param=f"messages[{index}].role")
        if not blocks:
            continue  # Anthropic rejects empty turns; an empty message adds nothing.
        if turns and turns[-1]["role"] == anthropic_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": anthropic_role, "content": blocks})
    if not turns:
        raise InvalidRequest("The anthropic provider needs at least one user or assistant message with content.", param="messages")
    for turn in turns:
        content = turn["content"]
        if len(content) == 1 and content[0].keys() == {"type", "text"}:
            turn["content"] = content[0]["text"]
    system: str | list[dict[str, Any]] | None = None
    if len(system_parts) == 1:
        system = system_parts[0]
    elif system_parts:
        system = [{"type": "text", "text": text} for text in system_parts]
    return system, turns


def _texts(content: Any, param: str) -> list[str]:
    """The non-empty texts of a string or of a list of text parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content else []
    texts = []
    for number, part in enumerate(content):
        if part.get("type") not in ("text", "refusal"):
            raise InvalidRequest(f"Only text parts are allowed here, not {clip(part.get('type'), 64)!r}.", param=f"{param}[{number}].type")
        text = part.get("text") if part.get("type") == "text" else part.get("refusal")
        if text:
            texts.append(text)
    return texts


def _user_blocks(content: Any, index: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for number, part in enumerate(content or ()):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url") or {}, f"messages[{index}].content[{number}].image_url.url"))
        else:
            raise InvalidRequest(
                f"The anthropic provider does not accept {clip(kind, 64)!r} content parts.", param=f"messages[{index}].content[{number}].type"
            )
    return blocks


def _image(image_url: Mapping[str, Any], param: str) -> dict[str, Any]:
    """An OpenAI ``image_url`` as an Anthropic image block: a base64 ``data:`` URL becomes a
    base64 source, an http(s) URL a url source."""
    url = image_url.get("url")
    if not isinstance(url, str):
        raise InvalidRequest("An image_url part needs a url.", param=param)
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not comma or encoding != "base64":
            raise InvalidRequest("An image data: URL must be base64-encoded (data:image/png;base64,...).", param=param)
        if media_type not in _IMAGE_MEDIA_TYPES:
            raise InvalidRequest(
                f"The anthropic provider accepts images as {', '.join(sorted(_IMAGE_MEDIA_TYPES))}, not {media_type or 'unknown'}.", param=param
            )
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest("An image URL must be an http(s) URL or a base64 data: URL.", param=param)


def _assistant_blocks(message: Mapping[str, Any], index: int) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": t} for t in _texts(message.get("content"), f"messages[{index}].content")]
    for number, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        arguments = function.get("arguments") or "{}"
        try:
            tool_input = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            tool_input = None
        if not isinstance(tool_input, dict):
            raise InvalidRequest(
                "Tool call arguments must be a JSON object.", param=f"messages[{index}].tool_calls[{number}].function.arguments"
            )
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": tool_input})
    return blocks


def _tool_result(message: Mapping[str, Any], index: int) -> dict[str, Any]:
    content = message.get("content")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
    if isinstance(content, str):
        if content:
            result["content"] = content
    else:
        texts = _texts(content, f"messages[{index}].content")
        if texts:
            result["content"] = [{"type": "text", "text": text} for text in texts]
    return result


def _tool(tool: Mapping[str, Any], index: int) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise InvalidRequest(f"The anthropic provider supports function tools only, not {clip(tool.get('type'), 64)!r}.", param=f"tools[{index}].type")
    function = tool.get("function") or {}
    translated: dict[str, Any] = {"name": function.get("name"), "input_schema": function.get("parameters") or dict(_EMPTY_SCHEMA)}
    if function.get("description"):
        translated["description"] = function["description"]
    if function.get("strict") is not None:
        translated["strict"] = function["strict"]
    return translated


def _tool_choice(choice: Any, parallel_tool_calls: Any) -> dict[str, Any] | None:
    if choice is None or choice == "auto":
        translated: dict[str, Any] | None = {"type": "auto"} if parallel_tool_calls is False else None
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        translated = {"type": "any"}
    elif isinstance(choice, Mapping) and choice.get("type") == "function":
        translated = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        raise InvalidRequest("tool_choice must be auto, none, required or a named function.", param="tool_choice")
    if translated is not None and parallel_tool_calls is False:
        translated["disable_parallel_tool_use"] = True
    return translated


def _output_format(response_format: Any) -> dict[str, Any] | None:
    if not isinstance(response_format, Mapping) or response_format.get("type") in (None, "text"):
        return None
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return {"type": "json_schema", "schema": schema if schema is not None else dict(_EMPTY_SCHEMA)}
    raise InvalidRequest(
        "The anthropic provider supports response_format json_schema, not json_object: give a schema.", param="response_format"
    )


# ---------------------------------------------------------------------------------------------
# Answers: Anthropic message → chat.completion
# ---------------------------------------------------------------------------------------------


def finish_reason(stop_reason: str | None) -> str:
    """OpenAI's ``finish_reason`` for an Anthropic ``stop_reason`` (see :data:`FINISH_REASONS`)."""
    return FINISH_REASONS.get(stop_reason or "", "stop")


def openai_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI usage for Anthropic usage. Anthropic's ``input_tokens`` excludes the prompt tokens
    read from or written to its cache, so the prompt is all three; the cache reads are also
    ``prompt_tokens_details.cached_tokens``, the cache writes (when there are any)
    ``prompt_tokens_details.cache_write_tokens``, and thinking tokens ``reasoning_tokens``."""
    cache_read = usage.get("cache_read_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + cache_read + (usage.get("cache_creation_input_tokens") or 0)
    completion = usage.get("output_tokens") or 0
    translated: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }
    cache_write = usage.get("cache_creation_input_tokens") or 0
    if cache_write:
        translated["prompt_tokens_details"]["cache_write_tokens"] = cache_write
    details = usage.get("output_tokens_details")
    if isinstance(details, Mapping) and details.get("thinking_tokens") is not None:
        translated["completion_tokens_details"] = {"reasoning_tokens": details["thinking_tokens"]}
    return translated


def from_anthropic_message(
    message: Mapping[str, Any], *, created: int, model: str | None = None, provider: str = "anthropic"
) -> dict[str, Any]:
    """The ``chat.completion`` for a Messages API ``message``: text blocks joined into
    ``content``, ``tool_use`` blocks as ``tool_calls`` (arguments as a JSON string), the mapped
    finish reason and usage. ``model`` overrides the upstream's model name in the answer.
    Raises :class:`UpstreamError` (502) when ``message`` is not a message."""
    blocks = message.get("content") if isinstance(message, Mapping) else None
    if not isinstance(blocks, list):
        raise UpstreamError(f"The {provider} provider sent an unexpected body.", code="upstream_malformed")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append({"id": block.get("id"), "type": "function", "function": {"name": block.get("name"), "arguments": arguments}})
    # OpenAI sends null content beside tool calls, and a string otherwise (even an empty one).
    content = "".join(texts) if texts else (None if calls else "")
    reply: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    body: dict[str, Any] = {
        "id": message.get("id", ""),
        "object": "chat.completion",
        "created": created,
        "model": model if model is not None else message.get("model", ""),
        "choices": [{"index": 0, "message": reply, "finish_reason": finish_reason(message.get("stop_reason")), "logprobs": None}],
    }
    if isinstance(message.get("usage"), Mapping):
        body["usage"] = openai_usage(message["usage"])
    return body


# ---------------------------------------------------------------------------------------------
# Streams: Anthropic SSE events → chat.completion.chunk dicts
# ---------------------------------------------------------------------------------------------


class AnthropicStreamTranslator:
    """Turns one Messages stream, event by event, into ``chat.completion.chunk`` dicts.

    Feed every event with :meth:`feed`; it returns the chunks to send (often none). The order
    a client sees: a role chunk (with the first content block, so that a failure before any
    content can still be retried), content and tool-call deltas, one
    finish chunk (on the first ``message_delta`` with a stop reason), and with
    ``include_usage`` a last chunk with empty ``choices`` and the usage (on ``message_stop``).
    Usage is taken from ``message_start`` and overwritten field by field by each
    ``message_delta``, whose counts are cumulative: nothing is added twice. :attr:`usage` has
    it in OpenAI's shape also when the client did not ask for the chunk.

        translator = AnthropicStreamTranslator(created=int(time.time()), include_usage=True)
        for event, data in events:
            for chunk in translator.feed(event, data):
                yield chunk
    """

    __slots__ = ("_base", "_include_usage", "_provider", "_model", "_anthropic_usage", "_tool_index", "_role_sent", "finished", "finish_reason")

    def __init__(self, *, created: int, include_usage: bool = False, model: str | None = None, provider: str = "anthropic") -> None:
        self._base: dict[str, Any] = {"id": "", "object": "chat.completion.chunk", "created": created, "model": model or ""}
        if include_usage:
            self._base["usage"] = None  # as OpenAI: null on every chunk but the last
        self._include_usage = include_usage
        self._provider = provider
        self._model = model
        self._anthropic_usage: dict[str, Any] = {}
        self._role_sent = False
        self._tool_index: dict[int, int] = {}
        """Anthropic content block index → OpenAI tool call index, for tool_use blocks."""
        self.finished = False
        """True once ``message_stop`` arrived: the answer is complete."""
        self.finish_reason: str | None = None
        """The OpenAI finish reason, once a ``message_delta`` gave the stop reason."""

    @property
    def usage(self) -> dict[str, Any] | None:
        """The usage so far in OpenAI's shape; None before ``message_start``."""
        return openai_usage(self._anthropic_usage) if self._anthropic_usage else None

    def feed(self, event: str | None, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The chunks one event amounts to. ``event`` is the SSE event name (``data["type"]``
        when None). ``ping`` and unknown events give none; an ``error`` event raises the
        :class:`GatewayError` its error type maps to."""
        kind = event or data.get("type")
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "message_start":
            return self._message_start(data.get("message") or {})
        if kind == "message_delta":
            return self._message_delta(data)
        if kind == "message_stop":
            return self._message_stop()
        if kind == "error":
            raise error_from_anthropic(self._provider, None, data)
        return []  # ping, content_block_stop, and event types added later

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**self._base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    def _message_start(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        self._base["id"] = message.get("id", "")
        if self._model is None:
            self._base["model"] = message.get("model", "")
        if isinstance(message.get("usage"), Mapping):
            self._anthropic_usage = dict(message["usage"])
        return []

    def _role_chunk(self, first: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The role chunk, sent once with the first content: as OpenAI, ``content`` is "" when
        text may follow and null when the answer opens with a tool call (which rides along)."""
        if self._role_sent:
            return []
        self._role_sent = True
        if first is not None and "tool_calls" in first:
            return [self._chunk({"role": "assistant", "content": None, **first})]
        return [self._chunk({"role": "assistant", "content": "", "refusal": None})]

    def _block_start(self, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        index = data.get("index", 0)
        block = data.get("content_block") or {}
        kind = block.get("type")
        if kind == "tool_use":
            tool_index = self._tool_index[index] = len(self._tool_index)
            arguments = orjson.dumps(block["input"]).decode() if block.get("input") else ""
            call = {"index": tool_index, "id": block.get("id"), "type": "function", "function": {"name": block.get("name"), "arguments": arguments}}
            if not self._role_sent:
                return self._role_chunk({"tool_calls": [call]})
            return [self._chunk({"tool_calls": [call]})]
        chunks = self._role_chunk()
        if kind == "text" and block.get("text"):
            chunks.append(self._chunk({"content": block["text"]}))
        return chunks

    def _delta(self, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            return [self._chunk({"content": text})] if text else []
        if kind == "input_json_delta":
            partial = delta.get("partial_json")
            tool_index = self._tool_index.get(data.get("index", 0))
            if not partial or tool_index is None:
                return []
            return [self._chunk({"tool_calls": [{"index": tool_index, "function": {"arguments": partial}}]})]
        return []  # thinking, signature and citation deltas have no OpenAI counterpart

    def _message_delta(self, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        usage = data.get("usage")
        if isinstance(usage, Mapping):
            # Cumulative totals: overwrite; fields left out keep their message_start value.
            self._anthropic_usage.update({k: v for k, v in usage.items() if v is not None})
        stop_reason = (data.get("delta") or {}).get("stop_reason")
        if stop_reason is None or self.finish_reason is not None:
            return []
        self.finish_reason = finish_reason(stop_reason)
        return [*self._role_chunk(), self._chunk({}, self.finish_reason)]

    def _message_stop(self) -> list[dict[str, Any]]:
        self.finished = True
        chunks = self._role_chunk()
        if self.finish_reason is None:
            self.finish_reason = "stop"
            chunks.append(self._chunk({}, "stop"))
        if self._include_usage:
            chunks.append({**self._base, "choices": [], "usage": self.usage or openai_usage({})})
        return chunks
