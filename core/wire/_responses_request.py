"""Serving an OpenAI Responses client from a chat-completions upstream: the request.

:func:`to_chat_request` turns a ``POST /v1/responses`` body (plus the items of earlier turns,
which the caller resolves from its store for ``previous_response_id`` or ``conversation``) into
the chat request that asks the same thing. :func:`hosted_tools` lists the tools only OpenAI's
servers run, so a surface can pass such a request through to OpenAI or refuse it.

Mapped:

* ``instructions`` → a leading ``system`` message (the instructions of earlier turns are not
  carried over, as the Responses API does not carry them);
* ``input`` (a string: one user message; or items): ``message`` items of role user, system,
  developer (→ ``system``, the role every chat upstream takes) and assistant; ``input_text`` and
  ``output_text`` → text, ``input_image`` (URL or ``data:`` URL) → ``image_url`` (``detail``
  kept), ``input_file`` (``file_data`` or ``file_id``) → a ``file`` part, ``input_audio`` →
  ``input_audio``, ``refusal`` → the assistant's text; ``function_call`` items → the assistant
  message's ``tool_calls`` (consecutive calls, and the assistant text before them, in one
  message; ``call_id`` → the call ``id``); ``function_call_output`` → ``tool`` messages (text
  outputs; images and files of an output go into a user message right after the tool messages,
  as a tool message carries text only);
* function ``tools`` (``strict`` kept when set), ``tool_choice`` (``auto``/``none``/``required``,
  a named function, ``allowed_tools`` of functions), ``parallel_tool_calls``;
* ``text.format`` ``json_schema``/``json_object`` → ``response_format``; ``text.verbosity`` →
  ``verbosity``; ``reasoning.effort`` → ``reasoning_effort``; ``max_output_tokens`` →
  ``max_completion_tokens``; ``temperature``, ``top_p``, ``user``; ``stream`` → ``stream`` with
  ``stream_options.include_usage`` (the usage events need it).

Dropped, because they are about storage or OpenAI's servers, not about what the model is asked:
``store``, ``metadata`` (both kept on the response by the surface), ``reasoning`` items of
earlier turns (a chat upstream cannot take them back; their ``encrypted_content`` is OpenAI's),
``reasoning.summary``, ``include`` values other than logprobs (``reasoning.encrypted_content``
and the hosted-tool outputs have nothing to include here), ``truncation`` (the upstream refuses
an overlong prompt instead of trimming it), ``max_tool_calls`` (hosted tools only),
``prompt_cache_key``, ``prompt_cache_retention``, ``safety_identifier``, ``service_tier``,
``stream_options``, ``top_logprobs`` without logprobs in ``include``.

Refused with a 400 naming the parameter: hosted tools and their calls in ``input``
(``web_search``, ``file_search``, ``code_interpreter``, ``computer_use``, ``mcp``, ``shell``,
custom tools… see :func:`hosted_tools`), ``item_reference`` items (the caller resolves them),
``input_image`` by ``file_id`` and ``input_file`` by ``file_url`` (OpenAI fetches those),
``background``, ``prompt`` templates, logprobs (``include: message.output_text.logprobs``:
the answer would lack them), and ``previous_response_id``/``conversation`` when the caller did
not resolve the earlier turns (``history=None``).
"""
from __future__ import annotations

from typing import Any, Final, Literal, Mapping, Sequence

from ..bounds import clip
from ..errors import InvalidRequest
from ._checks import as_bool, as_int, as_list, as_mapping, as_number, as_str, optional_str
from .limits import DEFAULT_LIMITS, WireLimits

__all__ = ["hosted_tools", "to_chat_request"]

_SYSTEM_ROLES: Final = frozenset({"system", "developer"})
_TOOL_CHOICE_WORDS: Final = frozenset({"auto", "none", "required"})


def hosted_tools(body: Mapping[str, Any], *, limits: WireLimits = DEFAULT_LIMITS) -> list[str]:
    """The types of the tools in ``body["tools"]`` that OpenAI's servers run (every type but
    ``function``: ``web_search``, ``file_search``, ``code_interpreter``, ``mcp``…), in order,
    each once. A surface sends a request with any of them to an OpenAI upstream as is, or
    refuses it (``to_chat_request`` raises the 400) when the model is served elsewhere."""
    tools = body.get("tools") if isinstance(body, Mapping) else None
    if not isinstance(tools, list):
        return []
    found: list[str] = []
    for tool in tools[: limits.max_tools + 1]:
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if isinstance(kind, str) and kind != "function" and kind not in found:
            found.append(kind)
    return found


def to_chat_request(
    body: Mapping[str, Any],
    *,
    model: str | None = None,
    history: Sequence[Mapping[str, Any]] | None = None,
    max_tokens_field: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens",
    limits: WireLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """The chat request asking what the Responses request ``body`` asks, after the items of
    ``history`` (the input and output items of earlier turns, oldest first).

    ``model`` replaces ``body["model"]`` (the upstream's name for it). Raises
    :class:`~hookgate.InvalidRequest` naming the parameter for a body that is malformed, over
    ``limits``, or asks for what a chat upstream cannot do (see the module docstring).

        to_chat_request({"model": "m", "instructions": "Be brief.", "input": "hi"})
        # {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
        #                             {"role": "user", "content": "hi"}]}
    """
    body = as_mapping(body, "body")
    _refuse_stateful(body, history)
    name = model if model is not None else as_str(body.get("model"), "model")
    messages: list[dict[str, Any]] = []
    instructions = optional_str(body.get("instructions"), "instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    items = _items(body.get("input"), history or (), limits)
    messages.extend(_MessageBuilder(limits).build(items))
    if not any(m["role"] != "system" for m in messages):
        raise InvalidRequest("input: at least one message or item is required.", param="input")

    request: dict[str, Any] = {"model": name, "messages": messages}
    tools = body.get("tools")
    if tools is not None:
        translated = [_tool(tool, f"tools[{i}]", name) for i, tool in enumerate(as_list(tools, "tools", limits.max_tools))]
        if translated:
            request["tools"] = translated
            if body.get("tool_choice") is not None:
                request["tool_choice"] = _tool_choice(body["tool_choice"], name, limits)
            if body.get("parallel_tool_calls") is not None:
                request["parallel_tool_calls"] = as_bool(body["parallel_tool_calls"], "parallel_tool_calls")
    if body.get("max_output_tokens") is not None:
        request[max_tokens_field] = as_int(body["max_output_tokens"], "max_output_tokens", minimum=1)
    for field in ("temperature", "top_p"):
        if body.get(field) is not None:
            request[field] = as_number(body[field], field)
    user = optional_str(body.get("user"), "user")
    if user:
        request["user"] = user
    _text_options(body.get("text"), request)
    reasoning = body.get("reasoning")
    if reasoning is not None:
        effort = as_mapping(reasoning, "reasoning").get("effort")
        if effort is not None:
            request["reasoning_effort"] = as_str(effort, "reasoning.effort")
    if body.get("stream") is not None and as_bool(body["stream"], "stream"):
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    return request


def _refuse_stateful(body: Mapping[str, Any], history: Sequence[Mapping[str, Any]] | None) -> None:
    if history is None:
        for field in ("previous_response_id", "conversation"):
            if body.get(field) is not None:
                raise InvalidRequest(f"{field} needs the earlier turns, which this gateway route cannot look up.", param=field)
    if body.get("background"):
        raise InvalidRequest("Background responses are not supported for this model.", param="background")
    if body.get("prompt") is not None:
        raise InvalidRequest("Prompt templates are stored by OpenAI: they need an OpenAI upstream.", param="prompt")
    include = body.get("include")
    if include is not None and "message.output_text.logprobs" in as_list(include, "include", 64):
        raise InvalidRequest("Log probabilities are not available for this model.", param="include")


def _items(input_: Any, history: Sequence[Mapping[str, Any]], limits: WireLimits) -> list[tuple[str, Mapping[str, Any]]]:
    """(param, item) for every item of ``history`` then of ``input``, within the bound."""
    if isinstance(input_, str):
        current: Sequence[Any] = [{"type": "message", "role": "user", "content": input_}]
    elif input_ is None:
        current = []
    else:
        current = as_list(input_, "input", limits.max_messages)
    if len(history) + len(current) > limits.max_messages:
        raise InvalidRequest(
            f"The conversation has {len(history) + len(current)} items; at most {limits.max_messages} are accepted.", param="input"
        )
    pairs = [(f"history[{i}]", as_mapping(item, f"history[{i}]")) for i, item in enumerate(history)]
    pairs.extend((f"input[{i}]", as_mapping(item, f"input[{i}]")) for i, item in enumerate(current))
    return pairs


class _MessageBuilder:
    """Chat messages from Responses items, in one pass: function calls join the assistant
    message before them; the images of a run of function outputs follow the run."""

    __slots__ = ("_carried", "_limits", "_messages", "_open_assistant")

    def __init__(self, limits: WireLimits) -> None:
        self._limits = limits
        self._messages: list[dict[str, Any]] = []
        self._carried: list[dict[str, Any]] = []
        self._open_assistant: dict[str, Any] | None = None

    def build(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
        for param, item in items:
            kind = item.get("type", "message" if "role" in item else None)
            if kind != "function_call_output":
                self._flush_carried()
            if kind == "message":
                self._message(item, param)
            elif kind == "function_call":
                self._function_call(item, param)
            elif kind == "function_call_output":
                self._function_output(item, param)
            elif kind == "reasoning":
                continue  # see the module docstring
            elif kind == "item_reference":
                raise InvalidRequest("Item references must be resolved before this model can be asked.", param=f"{param}.type")
            else:
                raise InvalidRequest(
                    f"Input items of type {clip(kind, 64)!r} belong to tools only OpenAI's servers run.", param=f"{param}.type"
                )
        self._flush_carried()
        return self._messages

    def _push(self, message: dict[str, Any]) -> None:
        self._messages.append(message)
        self._open_assistant = message if message["role"] == "assistant" else None

    def _message(self, item: Mapping[str, Any], param: str) -> None:
        role = item.get("role")
        content = item.get("content")
        if role == "assistant":
            text = "".join(self._texts(content, f"{param}.content", assistant=True))
            self._push({"role": "assistant", "content": text or None})
        elif role in _SYSTEM_ROLES:
            text = "\n\n".join(t for t in self._texts(content, f"{param}.content", assistant=False) if t)
            self._push({"role": "system", "content": text})
        elif role == "user":
            parts = self._parts(content, f"{param}.content")
            if len(parts) == 1 and parts[0]["type"] == "text":
                self._push({"role": "user", "content": parts[0]["text"]})
            else:
                self._push({"role": "user", "content": parts})
        else:
            raise InvalidRequest(f"{param}.role must be user, assistant, system or developer.", param=f"{param}.role")

    def _function_call(self, item: Mapping[str, Any], param: str) -> None:
        call = {
            "id": as_str(item.get("call_id"), f"{param}.call_id"),
            "type": "function",
            "function": {"name": as_str(item.get("name"), f"{param}.name"), "arguments": as_str(item.get("arguments"), f"{param}.arguments")},
        }
        if self._open_assistant is None:
            self._push({"role": "assistant", "content": None})
        assert self._open_assistant is not None
        self._open_assistant.setdefault("tool_calls", []).append(call)

    def _function_output(self, item: Mapping[str, Any], param: str) -> None:
        output = item.get("output")
        call_id = as_str(item.get("call_id"), f"{param}.call_id")
        if isinstance(output, str):
            text = output
        else:
            texts = []
            for part in self._parts(output, f"{param}.output"):
                if part["type"] == "text":
                    texts.append(part["text"])
                else:
                    self._carried.append(part)
            text = "\n".join(texts)
        self._push({"role": "tool", "tool_call_id": call_id, "content": text})

    def _flush_carried(self) -> None:
        if self._carried:
            self._push({"role": "user", "content": self._carried})
            self._carried = []

    # -- Content ----------------------------------------------------------------------------

    def _content(self, content: Any, param: str) -> Sequence[Mapping[str, Any]]:
        if isinstance(content, str):
            return [{"type": "input_text", "text": content}]
        parts = as_list(content, param, self._limits.max_parts)
        return [as_mapping(part, f"{param}[{i}]") for i, part in enumerate(parts)]

    def _texts(self, content: Any, param: str, *, assistant: bool) -> list[str]:
        texts = []
        for number, part in enumerate(self._content(content, param)):
            kind = part.get("type")
            where = f"{param}[{number}]"
            if kind in ("input_text", "output_text", "text"):
                texts.append(as_str(part.get("text"), f"{where}.text"))
            elif kind == "refusal" and assistant:
                texts.append(as_str(part.get("refusal"), f"{where}.refusal"))
            else:
                raise InvalidRequest(f"Only text can be given here, not {clip(kind, 64)!r}.", param=f"{where}.type")
        return texts

    def _parts(self, content: Any, param: str) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        for number, part in enumerate(self._content(content, param)):
            parts.append(_chat_part(part, f"{param}[{number}]"))
        return parts


def _chat_part(part: Mapping[str, Any], param: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": as_str(part.get("text"), f"{param}.text")}
    if kind == "input_image":
        if part.get("image_url") is None:
            raise InvalidRequest("Images by file_id are stored by OpenAI: give an image_url (or a data: URL).", param=f"{param}.file_id")
        image: dict[str, Any] = {"url": as_str(part["image_url"], f"{param}.image_url")}
        if part.get("detail") is not None:
            image["detail"] = as_str(part["detail"], f"{param}.detail")
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        if part.get("file_url") is not None:
            raise InvalidRequest("Files by URL are fetched by OpenAI: give file_data instead.", param=f"{param}.file_url")
        file: dict[str, Any] = {}
        for field in ("file_data", "file_id", "filename"):
            if part.get(field) is not None:
                file[field] = as_str(part[field], f"{param}.{field}")
        if "file_data" not in file and "file_id" not in file:
            raise InvalidRequest("An input_file needs file_data or file_id.", param=f"{param}.file_data")
        return {"type": "file", "file": file}
    if kind == "input_audio":
        audio = as_mapping(part.get("input_audio"), f"{param}.input_audio")
        return {"type": "input_audio", "input_audio": {"data": as_str(audio.get("data"), f"{param}.input_audio.data"), "format": as_str(audio.get("format"), f"{param}.input_audio.format")}}
    raise InvalidRequest(f"Content parts of type {clip(kind, 64)!r} cannot be given to this model.", param=f"{param}.type")


# ---------------------------------------------------------------------------------------------
# Tools and output options
# ---------------------------------------------------------------------------------------------


def _hosted(kind: Any, param: str, model: str) -> InvalidRequest:
    return InvalidRequest(
        f"The {clip(kind, 64)} tool is run by OpenAI's servers and is not available for {clip(model)}: "
        "only function tools can be used with this model.",
        param=param,
    )


def _tool(tool: Any, param: str, model: str) -> dict[str, Any]:
    tool = as_mapping(tool, param)
    if tool.get("type") != "function":
        raise _hosted(tool.get("type"), f"{param}.type", model)
    function: dict[str, Any] = {"name": as_str(tool.get("name"), f"{param}.name")}
    description = optional_str(tool.get("description"), f"{param}.description")
    if description:
        function["description"] = description
    if tool.get("parameters") is not None:
        function["parameters"] = dict(as_mapping(tool["parameters"], f"{param}.parameters"))
    if tool.get("strict") is not None:
        function["strict"] = as_bool(tool["strict"], f"{param}.strict")
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, model: str, limits: WireLimits) -> str | dict[str, Any]:
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICE_WORDS:
            raise InvalidRequest("tool_choice must be auto, none, required or a function.", param="tool_choice")
        return choice
    choice = as_mapping(choice, "tool_choice")
    kind = choice.get("type")
    if kind == "function":
        return {"type": "function", "function": {"name": as_str(choice.get("name"), "tool_choice.name")}}
    if kind == "allowed_tools":
        mode = as_str(choice.get("mode"), "tool_choice.mode")
        allowed = []
        for number, tool in enumerate(as_list(choice.get("tools"), "tool_choice.tools", limits.max_tools)):
            tool = as_mapping(tool, f"tool_choice.tools[{number}]")
            if tool.get("type") != "function":
                raise _hosted(tool.get("type"), f"tool_choice.tools[{number}].type", model)
            allowed.append({"type": "function", "function": {"name": as_str(tool.get("name"), f"tool_choice.tools[{number}].name")}})
        return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": allowed}}
    raise _hosted(kind, "tool_choice.type", model)


def _text_options(text: Any, request: dict[str, Any]) -> None:
    if text is None:
        return
    text = as_mapping(text, "text")
    if text.get("verbosity") is not None:
        request["verbosity"] = as_str(text["verbosity"], "text.verbosity")
    output_format = text.get("format")
    if output_format is None:
        return
    output_format = as_mapping(output_format, "text.format")
    kind = output_format.get("type")
    if kind == "text":
        return
    if kind == "json_object":
        request["response_format"] = {"type": "json_object"}
        return
    if kind != "json_schema":
        raise InvalidRequest("text.format.type must be text, json_object or json_schema.", param="text.format.type")
    schema: dict[str, Any] = {
        "name": as_str(output_format.get("name"), "text.format.name"),
        "schema": dict(as_mapping(output_format.get("schema"), "text.format.schema")),
    }
    description = optional_str(output_format.get("description"), "text.format.description")
    if description:
        schema["description"] = description
    if output_format.get("strict") is not None:
        schema["strict"] = as_bool(output_format["strict"], "text.format.strict")
    request["response_format"] = {"type": "json_schema", "json_schema": schema}
