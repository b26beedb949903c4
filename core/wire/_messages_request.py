"""Serving an Anthropic Messages client from a chat-completions upstream: the request.

:func:`to_chat_request` turns a ``POST /v1/messages`` body into the OpenAI chat request that
asks the same thing, so the gateway's chain (which reads chat requests) and any OpenAI-wire
upstream (OpenAI, Groq, vLLM, Ollama…) can serve it.

Mapped:

* ``system`` (a string or text blocks) → a leading ``system`` message, blocks joined by a blank
  line; ``system`` turns inside ``messages`` (API 2026-10-21) → ``system`` messages in place.
* user turns: ``text`` → text parts; ``image`` (base64 or url source) → ``image_url`` parts (a
  ``data:`` URL for base64); ``document``: plain-text and content sources → text (title and
  context first) and image parts, base64 PDF → a ``file`` part (OpenAI reads those; others
  refuse them upstream); ``tool_result`` → one ``tool`` message each (``tool_call_id`` =
  ``tool_use_id``, text joined by newlines), placed before the turn's other content, as chat
  completions wants tool answers right after the call. Images and documents inside a tool result
  go into a user message right after the tool messages: a tool message carries text only.
* assistant turns: text blocks → ``content`` (joined); ``tool_use`` → ``tool_calls`` (ids kept,
  so the next turn's ``tool_result`` still matches, ``input`` as a JSON string).
* ``tools`` (custom tools) → function tools (``input_schema`` → ``parameters``, ``strict`` kept);
  ``tool_choice`` ``auto``/``any``/``tool``/``none`` → ``auto``/``required``/named
  function/``none``; ``disable_parallel_tool_use`` → ``parallel_tool_calls: false``.
* ``max_tokens`` → ``max_completion_tokens`` (or ``max_tokens``, see ``max_tokens_field``);
  ``stop_sequences`` → ``stop``; ``temperature``/``top_p`` (sent by clients on older API
  versions) → the same; ``metadata.user_id`` → ``user``; ``output_config.format``
  (``json_schema``) → ``response_format`` ``json_schema`` named ``response``, not strict (an
  Anthropic schema need not meet OpenAI's strict-mode rules); ``stream`` → ``stream`` with
  ``stream_options.include_usage`` (usage comes only that way, and Anthropic clients need it).
* ``thinking`` and ``output_config.effort``: with ``thinking="reasoning_effort"`` (for
  reasoning-model upstreams) → ``reasoning_effort`` (budget under 4,096 → low, under 16,384 →
  medium, else high; ``effort`` as given, ``max`` → ``xhigh``); by default dropped, since
  chat models without reasoning refuse the parameter.

Dropped, because chat completions has no place for them and they do not change what is asked:
``cache_control`` (OpenAI caches prompts by itself), ``citations`` settings and the citations of
earlier answers, ``thinking``/``redacted_thinking`` blocks of earlier turns (a chat upstream
cannot verify or reuse their signatures), ``is_error`` on tool results (their text says it),
``top_k``, ``service_tier``, ``speed``, ``inference_geo``, ``container``, ``diagnostics``,
``context_management``.

Refused with a 400 naming the parameter, because the answer would silently differ: server tools
(``web_search``, ``bash``, ``code_execution``…, which only Anthropic runs), ``mcp_servers``,
content blocks chat completions cannot carry (``search_result``, ``server_tool_use``, file-id
and URL document sources…), and ``max_tokens: 0`` (a cache warm-up only Anthropic can do).
"""
from __future__ import annotations

from typing import Any, Final, Literal, Mapping, Sequence

import orjson

from ..bounds import clip
from ..errors import InvalidRequest
from ._checks import as_bool, as_int, as_list, as_mapping, as_number, as_str, optional_str
from .limits import DEFAULT_LIMITS, WireLimits

__all__ = ["ThinkingMode", "MaxTokensField", "to_chat_request"]

ThinkingMode = Literal["drop", "reasoning_effort"]
MaxTokensField = Literal["max_completion_tokens", "max_tokens"]

_EFFORTS: Final[Mapping[str, str]] = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "xhigh"}
_PASSTHROUGH_NUMBERS: Final = ("temperature", "top_p")
_CHAT_MESSAGE_TYPES: Final = ("text", "image", "document")


def to_chat_request(
    body: Mapping[str, Any],
    *,
    model: str | None = None,
    thinking: ThinkingMode = "drop",
    max_tokens_field: MaxTokensField = "max_completion_tokens",
    limits: WireLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """The OpenAI chat request asking what the Messages request ``body`` asks.

    ``model`` replaces ``body["model"]`` (the upstream's name for it). Raises
    :class:`~hookgate.InvalidRequest` naming the parameter for a body that is malformed, over
    ``limits``, or asks for what a chat upstream cannot do (see the module docstring).

        to_chat_request({"model": "m", "max_tokens": 64, "system": "Be brief.",
                         "messages": [{"role": "user", "content": "hi"}]})
        # {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
        #                             {"role": "user", "content": "hi"}],
        #  "max_completion_tokens": 64}
    """
    body = as_mapping(body, "body")
    if body.get("mcp_servers"):
        raise InvalidRequest("mcp_servers can be used only with an Anthropic upstream.", param="mcp_servers")
    name = model if model is not None else as_str(body.get("model"), "model")
    max_tokens = as_int(body.get("max_tokens"), "max_tokens", minimum=0)
    if max_tokens == 0:
        raise InvalidRequest(
            "max_tokens 0 (warming the prompt cache) can be served only by an Anthropic upstream.", param="max_tokens"
        )
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        text = _system_text(system, "system", limits)
        if text:
            messages.append({"role": "system", "content": text})
    turns = as_list(body.get("messages"), "messages", limits.max_messages)
    if not turns:
        raise InvalidRequest("messages: at least one message is required.", param="messages")
    for index, turn in enumerate(turns):
        messages.extend(_turn(turn, f"messages[{index}]", limits))

    request: dict[str, Any] = {"model": name, "messages": messages, max_tokens_field: max_tokens}
    for field in _PASSTHROUGH_NUMBERS:
        if body.get(field) is not None:
            request[field] = as_number(body[field], field)
    stop = body.get("stop_sequences")
    if stop is not None:
        sequences = [as_str(s, f"stop_sequences[{i}]") for i, s in enumerate(as_list(stop, "stop_sequences", limits.max_stop_sequences))]
        if sequences:
            request["stop"] = sequences
    tools = body.get("tools")
    if tools is not None:
        translated = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(as_list(tools, "tools", limits.max_tools))]
        if translated:
            request["tools"] = translated
            _tool_choice(body.get("tool_choice"), request)
    metadata = body.get("metadata")
    if metadata is not None:
        user = optional_str(as_mapping(metadata, "metadata").get("user_id"), "metadata.user_id")
        if user:
            request["user"] = user
    output_config = as_mapping(body["output_config"], "output_config") if body.get("output_config") is not None else {}
    response_format = _response_format(output_config.get("format"))
    if response_format is not None:
        request["response_format"] = response_format
    if thinking == "reasoning_effort":
        effort = _reasoning_effort(body.get("thinking"), output_config.get("effort"))
        if effort is not None:
            request["reasoning_effort"] = effort
    if body.get("stream") is not None and as_bool(body["stream"], "stream"):
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    return request


# ---------------------------------------------------------------------------------------------
# Turns
# ---------------------------------------------------------------------------------------------


def _blocks(content: Any, param: str, limits: WireLimits) -> list[Mapping[str, Any]]:
    """A turn's content as blocks: a string is one text block."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks = as_list(content, param, limits.max_parts)
    for number, block in enumerate(blocks):
        as_str(as_mapping(block, f"{param}[{number}]").get("type"), f"{param}[{number}].type")
    return list(blocks)


def _system_text(content: Any, param: str, limits: WireLimits) -> str:
    texts = []
    for number, block in enumerate(_blocks(content, param, limits)):
        if block["type"] != "text":
            raise InvalidRequest(f"A system prompt holds text blocks only, not {clip(block['type'], 64)!r}.", param=f"{param}[{number}].type")
        texts.append(as_str(block.get("text"), f"{param}[{number}].text"))
    return "\n\n".join(text for text in texts if text)


def _turn(turn: Any, param: str, limits: WireLimits) -> list[dict[str, Any]]:
    turn = as_mapping(turn, param)
    role = turn.get("role")
    if role == "user":
        return _user_turn(_blocks(turn.get("content"), f"{param}.content", limits), f"{param}.content", limits)
    if role == "assistant":
        message = _assistant_turn(_blocks(turn.get("content"), f"{param}.content", limits), f"{param}.content")
        return [message] if message is not None else []
    if role == "system":
        text = _system_text(turn.get("content"), f"{param}.content", limits)
        return [{"role": "system", "content": text}] if text else []
    raise InvalidRequest(f"{param}.role must be 'user', 'assistant' or 'system'.", param=f"{param}.role")


def _user_turn(blocks: Sequence[Mapping[str, Any]], param: str, limits: WireLimits) -> list[dict[str, Any]]:
    """Tool messages for the turn's tool results, then one user message with the rest."""
    tool_messages: list[dict[str, Any]] = []
    carried: list[dict[str, Any]] = []  # images and documents of tool results
    parts: list[dict[str, Any]] = []
    for number, block in enumerate(blocks):
        where = f"{param}[{number}]"
        if block["type"] == "tool_result":
            text, attachments = _tool_result(block, where, limits)
            tool_messages.append({"role": "tool", "tool_call_id": as_str(block.get("tool_use_id"), f"{where}.tool_use_id"), "content": text})
            carried.extend(attachments)
        elif block["type"] in _CHAT_MESSAGE_TYPES:
            parts.extend(_content_parts(block, where, limits))
        else:
            raise _untranslatable_block(block["type"], where)
    messages = tool_messages
    content = carried + parts
    if content:
        if len(content) == 1 and content[0]["type"] == "text":
            messages.append({"role": "user", "content": content[0]["text"]})
        else:
            messages.append({"role": "user", "content": content})
    return messages


def _assistant_turn(blocks: Sequence[Mapping[str, Any]], param: str) -> dict[str, Any] | None:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for number, block in enumerate(blocks):
        where = f"{param}[{number}]"
        kind = block["type"]
        if kind == "text":
            texts.append(as_str(block.get("text"), f"{where}.text"))
        elif kind == "tool_use":
            tool_input = as_mapping(block.get("input"), f"{where}.input")
            calls.append(
                {
                    "id": as_str(block.get("id"), f"{where}.id"),
                    "type": "function",
                    "function": {"name": as_str(block.get("name"), f"{where}.name"), "arguments": orjson.dumps(tool_input).decode()},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # a chat upstream cannot take reasoning back (see the module docstring)
        else:
            raise _untranslatable_block(kind, where)
    text = "".join(texts)
    if not text and not calls:
        return None
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_result(block: Mapping[str, Any], param: str, limits: WireLimits) -> tuple[str, list[dict[str, Any]]]:
    """(the text for the tool message, the image and file parts for the user message after)."""
    content = block.get("content")
    if content is None:
        return "", []
    texts: list[str] = []
    attachments: list[dict[str, Any]] = []
    for number, inner in enumerate(_blocks(content, f"{param}.content", limits)):
        where = f"{param}.content[{number}]"
        if inner["type"] not in _CHAT_MESSAGE_TYPES:
            raise _untranslatable_block(inner["type"], where)
        for part in _content_parts(inner, where, limits):
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                attachments.append(part)
    return "\n".join(texts), attachments


# ---------------------------------------------------------------------------------------------
# Content blocks
# ---------------------------------------------------------------------------------------------


def _content_parts(block: Mapping[str, Any], param: str, limits: WireLimits) -> list[dict[str, Any]]:
    """Chat content parts for a text, image or document block."""
    kind = block["type"]
    if kind == "text":
        return [{"type": "text", "text": as_str(block.get("text"), f"{param}.text")}]
    if kind == "image":
        return [_image(as_mapping(block.get("source"), f"{param}.source"), f"{param}.source")]
    return _document(block, param, limits)


def _image(source: Mapping[str, Any], param: str) -> dict[str, Any]:
    kind = source.get("type")
    if kind == "base64":
        media_type = as_str(source.get("media_type"), f"{param}.media_type")
        data = as_str(source.get("data"), f"{param}.data")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if kind == "url":
        return {"type": "image_url", "image_url": {"url": as_str(source.get("url"), f"{param}.url")}}
    raise InvalidRequest(f"Image sources of type {clip(kind, 64)!r} can be read only by an Anthropic upstream.", param=f"{param}.type")


def _document(block: Mapping[str, Any], param: str, limits: WireLimits) -> list[dict[str, Any]]:
    source = as_mapping(block.get("source"), f"{param}.source")
    kind = source.get("type")
    title = optional_str(block.get("title"), f"{param}.title")
    context = optional_str(block.get("context"), f"{param}.context")
    heading = "\n\n".join(text for text in (title, context) if text)
    if kind == "text":
        data = as_str(source.get("data"), f"{param}.source.data")
        return [{"type": "text", "text": f"{heading}\n\n{data}" if heading else data}]
    if kind == "content":
        inner = source.get("content")
        parts = [{"type": "text", "text": heading}] if heading else []
        if isinstance(inner, str):
            return [*parts, {"type": "text", "text": inner}]
        for number, piece in enumerate(as_list(inner, f"{param}.source.content", limits.max_parts)):
            where = f"{param}.source.content[{number}]"
            piece = as_mapping(piece, where)
            if piece.get("type") not in ("text", "image"):
                raise _untranslatable_block(piece.get("type"), where)
            parts.extend(_content_parts(piece, where, limits))
        return parts
    if kind == "base64" and source.get("media_type") == "application/pdf":
        data = as_str(source.get("data"), f"{param}.source.data")
        return [{"type": "file", "file": {"filename": title or "document.pdf", "file_data": f"data:application/pdf;base64,{data}"}}]
    raise InvalidRequest(
        f"Documents with a {clip(kind, 64)!r} source can be read only by an Anthropic upstream.", param=f"{param}.source.type"
    )


def _untranslatable_block(kind: Any, param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Content blocks of type {clip(kind, 64)!r} can be served only by an Anthropic upstream.", param=f"{param}.type"
    )


# ---------------------------------------------------------------------------------------------
# Tools, formats, reasoning
# ---------------------------------------------------------------------------------------------


def _tool(tool: Any, param: str) -> dict[str, Any]:
    tool = as_mapping(tool, param)
    kind = tool.get("type")
    if kind not in (None, "custom"):
        raise InvalidRequest(
            f"The {clip(kind, 64)!r} tool is run by Anthropic's servers: it needs an Anthropic upstream.", param=f"{param}.type"
        )
    function: dict[str, Any] = {
        "name": as_str(tool.get("name"), f"{param}.name"),
        "parameters": dict(as_mapping(tool.get("input_schema"), f"{param}.input_schema")),
    }
    description = optional_str(tool.get("description"), f"{param}.description")
    if description:
        function["description"] = description
    if tool.get("strict") is not None:
        function["strict"] = as_bool(tool["strict"], f"{param}.strict")
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, request: dict[str, Any]) -> None:
    """Set ``tool_choice`` and ``parallel_tool_calls`` on ``request`` (which has tools)."""
    if choice is None:
        return
    choice = as_mapping(choice, "tool_choice")
    kind = choice.get("type")
    if kind == "auto":
        request["tool_choice"] = "auto"
    elif kind == "any":
        request["tool_choice"] = "required"
    elif kind == "none":
        request["tool_choice"] = "none"
    elif kind == "tool":
        request["tool_choice"] = {"type": "function", "function": {"name": as_str(choice.get("name"), "tool_choice.name")}}
    else:
        raise InvalidRequest("tool_choice.type must be auto, any, tool or none.", param="tool_choice.type")
    if choice.get("disable_parallel_tool_use") is not None and as_bool(choice["disable_parallel_tool_use"], "tool_choice.disable_parallel_tool_use"):
        request["parallel_tool_calls"] = False


def _response_format(output_format: Any) -> dict[str, Any] | None:
    if output_format is None:
        return None
    output_format = as_mapping(output_format, "output_config.format")
    if output_format.get("type") != "json_schema":
        raise InvalidRequest("output_config.format.type must be json_schema.", param="output_config.format.type")
    schema = as_mapping(output_format.get("schema"), "output_config.format.schema")
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": dict(schema)}}


def _reasoning_effort(thinking: Any, effort: Any) -> str | None:
    if effort is not None:
        mapped = _EFFORTS.get(effort) if isinstance(effort, str) else None
        if mapped is None:
            raise InvalidRequest(f"output_config.effort must be one of {', '.join(_EFFORTS)}.", param="output_config.effort")
        return mapped
    if thinking is None:
        return None
    thinking = as_mapping(thinking, "thinking")
    if thinking.get("type") != "enabled":
        return None  # adaptive: the model's default; disabled: nothing to ask for
    budget = as_int(thinking.get("budget_tokens"), "thinking.budget_tokens", minimum=0)
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"
