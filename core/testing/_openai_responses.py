"""The OpenAI emulator's Responses API: checking a request, answering it, storing it.

Deterministic like the rest of the emulator:

* the reply is ``"emulated: " + <the last user turn>``: the text of the last user message, or,
  when the input ends with ``function_call_output`` items (and maybe one user message after
  them), the outputs' text and that message's, joined by spaces, so a turn continuing after a
  function call is answered from its result;
* function tools are called by the rule every emulator shares (a tool named in the last user
  turn, or ``tool_choice`` ``required``/a named function; ``parallel_tool_calls: false`` keeps
  one), with arguments built from the tool's ``parameters`` schema; hosted tools (web search…)
  are accepted and never called;
* ``max_output_tokens`` cuts the reply after that many words (status ``incomplete``);
* usage: words of the instructions and of every message, function output and earlier answer
  of the conversation; ``cached_tokens`` from the emulator's settings.

Checked as the API checks: a ``function_call_output`` must answer a ``function_call`` of the
conversation (same ``call_id``), ``previous_response_id`` must name a stored response (404),
``max_output_tokens`` is at least 16. Responses are stored (``store`` defaults to true) in a
bounded table, oldest dropped first, for ``GET``/``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items``, and to continue from with ``previous_response_id``.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from ._emulation import REPLY_PREFIX, count_tokens, tool_input_for, tools_to_call
from ._openai_wire import Problem

__all__ = ["ResponseStore", "StoredResponse", "answer", "input_item_page", "request_problem"]

MIN_OUTPUT_TOKENS: Final = 16
_ITEM_TYPES: Final = frozenset({"message", "function_call", "function_call_output", "reasoning"})
_ROLES: Final = frozenset({"user", "assistant", "system", "developer"})
_ITEM_ID_PREFIXES: Final = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}
_MAX_PAGE: Final = 100


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A stored answer: the response object, its input items (with ids, as listed), and the
    whole conversation up to and including its output (what ``previous_response_id`` continues)."""

    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    conversation: list[dict[str, Any]]


class ResponseStore:
    """Stored responses by id, at most ``capacity`` of them (the oldest is dropped first)."""

    __slots__ = ("_capacity", "_items")

    def __init__(self, capacity: int = 1000) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, stored: StoredResponse) -> None:
        self._items[stored.response["id"]] = stored
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def get(self, response_id: str) -> StoredResponse | None:
        return self._items.get(response_id)

    def delete(self, response_id: str) -> bool:
        return self._items.pop(response_id, None) is not None

    def clear(self) -> None:
        self._items.clear()


# ---------------------------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------------------------


def _items(body: Mapping[str, Any]) -> list[Any]:
    input_ = body.get("input")
    if isinstance(input_, str):
        return [{"type": "message", "role": "user", "content": input_}]
    return input_ if isinstance(input_, list) else []


def _kind(item: Mapping[str, Any]) -> Any:
    return item.get("type", "message" if "role" in item else None)


def request_problem(body: Any, store: ResponseStore) -> Problem | None:
    """Why OpenAI would refuse this Responses request, or None when it is usable."""
    if not isinstance(body, dict):
        return Problem("We could not parse the JSON body of your request.")
    if not isinstance(body.get("model"), str):
        return Problem("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    input_ = body.get("input")
    if not isinstance(input_, (str, list)) or (isinstance(input_, list) and not input_):
        return Problem("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    for index, item in enumerate(_items(body)):
        problem = _item_problem(item, f"input[{index}]")
        if problem is not None:
            return problem
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(isinstance(t, dict) and isinstance(t.get("type"), str) for t in tools):
            return Problem("Invalid type for 'tools': expected an array of tool objects.", param="tools", code="invalid_type")
        for index, tool in enumerate(tools):
            if tool["type"] == "function" and not isinstance(tool.get("name"), str):
                return Problem(f"Missing required parameter: 'tools[{index}].name'.", param=f"tools[{index}].name", code="missing_required_parameter")
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < MIN_OUTPUT_TOKENS):
        return Problem(
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= {MIN_OUTPUT_TOKENS}, but got {limit} instead.",
            param="max_output_tokens",
            code="integer_below_min_value",
        )
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or store.get(previous) is None):
        return Problem(f"Previous response with id '{previous}' not found.", status=404, param="previous_response_id", code="previous_response_not_found")
    calls = {item.get("call_id") for item in conversation_before(body, store) if _kind(item) == "function_call"}
    for item in _items(body):
        if _kind(item) == "function_call_output" and item.get("call_id") not in calls:
            return Problem(f"No tool call found for function call output with call_id {item.get('call_id')}.", param="input")
        if _kind(item) == "function_call":
            calls.add(item.get("call_id"))
    return None


def _item_problem(item: Any, param: str) -> Problem | None:
    if not isinstance(item, dict):
        return Problem(f"Invalid type for '{param}': expected an object.", param=param, code="invalid_type")
    kind = _kind(item)
    if kind not in _ITEM_TYPES:
        return Problem(f"Invalid value: '{kind}'. Supported values are: {', '.join(sorted(_ITEM_TYPES))}.", param=f"{param}.type", code="invalid_value")
    if kind == "message":
        if item.get("role") not in _ROLES:
            return Problem(f"Invalid value for '{param}.role'.", param=f"{param}.role", code="invalid_value")
        content = item.get("content")
        if not isinstance(content, (str, list)) or (isinstance(content, list) and not all(isinstance(p, dict) for p in content)):
            return Problem(f"Invalid type for '{param}.content'.", param=f"{param}.content", code="invalid_type")
    elif kind == "function_call":
        for field in ("call_id", "name", "arguments"):
            if not isinstance(item.get(field), str):
                return Problem(f"Missing required parameter: '{param}.{field}'.", param=f"{param}.{field}", code="missing_required_parameter")
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id"), str) or not isinstance(item.get("output"), (str, list)):
            return Problem(f"Missing required parameter: '{param}.output'.", param=f"{param}.output", code="missing_required_parameter")
    return None


def conversation_before(body: Mapping[str, Any], store: ResponseStore) -> list[dict[str, Any]]:
    """The stored conversation ``previous_response_id`` continues (empty without one)."""
    previous = body.get("previous_response_id")
    stored = store.get(previous) if isinstance(previous, str) else None
    return list(stored.conversation) if stored is not None else []


# ---------------------------------------------------------------------------------------------
# Answering
# ---------------------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    """The text of a message content or function output: a string, or its text parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = [p.get("text") or p.get("refusal") or "" for p in content if isinstance(p, dict)]
    return " ".join(t for t in texts if isinstance(t, str) and t)


def last_turn_text(items: Sequence[Mapping[str, Any]]) -> str:
    """The last user turn's text (see the module docstring)."""
    end = len(items)
    tail: list[str] = []
    if end and _kind(items[-1]) == "message" and items[-1].get("role") == "user":
        tail.append(_text_of(items[-1].get("content")))
        end -= 1
    outputs = []
    while end and _kind(items[end - 1]) == "function_call_output":
        outputs.insert(0, _text_of(items[end - 1].get("output")))
        end -= 1
    if outputs:
        return " ".join(text for text in [*outputs, *tail] if text)
    for item in reversed(items):
        if _kind(item) == "message" and item.get("role") == "user":
            return _text_of(item.get("content"))
    return ""


def _input_tokens(body: Mapping[str, Any], conversation: Sequence[Mapping[str, Any]]) -> int:
    total = count_tokens(body["instructions"]) if isinstance(body.get("instructions"), str) else 0
    for item in conversation:
        kind = _kind(item)
        if kind == "message":
            total += count_tokens(_text_of(item.get("content")))
        elif kind == "function_call_output":
            total += count_tokens(_text_of(item.get("output")))
        elif kind == "function_call":
            total += count_tokens(str(item.get("arguments", "")))
    return total


def _listed(item: Mapping[str, Any], item_id: str) -> dict[str, Any]:
    """An input item in the long form ``GET …/input_items`` lists, with an id."""
    kind = _kind(item)
    listed: dict[str, Any] = {"id": item.get("id") or item_id, "type": kind, **{k: v for k, v in item.items() if k not in ("id", "type")}}
    if kind == "message":
        content = item.get("content")
        if isinstance(content, str):
            part = {"type": "output_text", "text": content, "annotations": []} if item.get("role") == "assistant" else {"type": "input_text", "text": content}
            listed["content"] = [part]
    if kind != "reasoning":
        listed["status"] = item.get("status") or "completed"
    return listed


def _tools_and_choice(body: Mapping[str, Any]) -> tuple[list[tuple[str, Mapping[str, Any]]], str, str | None]:
    tools = [(t["name"], t) for t in body.get("tools") or () if t.get("type") == "function"]
    choice = body.get("tool_choice", "auto")
    if isinstance(choice, dict):
        if choice.get("type") == "function":
            return tools, "tool", choice.get("name")
        return tools, "auto", None
    return tools, {"required": "any", "none": "none"}.get(choice, "auto"), None


def answer(body: Mapping[str, Any], store: ResponseStore, *, number: int, cached_tokens: int) -> StoredResponse:
    """The response to a valid request (not yet stored), with its input items and conversation."""
    suffix = f"emu{number:08d}"
    before = conversation_before(body, store)
    inputs = [_listed(item, f"{_ITEM_ID_PREFIXES[_kind(item)]}_{suffix}_in{index}") for index, item in enumerate(_items(body))]
    conversation = before + inputs
    prompt = last_turn_text(conversation)
    tools, choice, forced = _tools_and_choice(body)
    calls = tools_to_call(tools, prompt, choice=choice, forced=forced, parallel=body.get("parallel_tool_calls") is not False)
    status, incomplete = "completed", None
    output: list[dict[str, Any]] = []
    if calls:
        for index, (name, tool) in enumerate(calls):
            arguments = orjson.dumps(tool_input_for(tool.get("parameters") or {}, prompt)).decode()
            output.append(
                {"id": f"fc_{suffix}_{index}", "type": "function_call", "status": "completed", "call_id": f"call_{suffix}_{index}", "name": name, "arguments": arguments}
            )
        output_tokens = sum(count_tokens(item["arguments"]) for item in output)
    else:
        limit = body.get("max_output_tokens")
        text = REPLY_PREFIX + prompt
        if isinstance(limit, int) and count_tokens(text) > limit:
            text = " ".join(text.split()[:limit])
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        output.append({"id": f"msg_{suffix}", "type": "message", "status": status, "role": "assistant", "content": [part]})
        output_tokens = count_tokens(text)
    input_tokens = _input_tokens(body, conversation)
    now = int(time.time())
    response = _response(body, response_id=f"resp_{suffix}", created_at=now, status=status, output=output)
    response["incomplete_details"] = incomplete
    response["completed_at"] = now
    response["usage"] = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": min(cached_tokens, input_tokens), "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }
    return StoredResponse(response, inputs, conversation + [dict(item) for item in output])


def _response(body: Mapping[str, Any], *, response_id: str, created_at: int, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": body["model"],
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "service_tier": "default",
        "temperature": body.get("temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity", "medium")},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_logprobs": body.get("top_logprobs", 0),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "metadata": body.get("metadata") or {},
    }
    if isinstance(body.get("user"), str):
        response["user"] = body["user"]
    return response


def input_item_page(items: Sequence[Mapping[str, Any]], query: Mapping[str, str]) -> dict[str, Any] | Problem:
    """A page of input items as ``GET …/input_items`` lists them (``order`` desc by default,
    ``limit`` 1-100, default 20, ``after`` an item id)."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        return Problem("Invalid value for 'order': expected 'asc' or 'desc'.", param="order", code="invalid_value")
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= _MAX_PAGE:
        return Problem(f"Invalid value for 'limit': expected an integer from 1 to {_MAX_PAGE}.", param="limit", code="invalid_value")
    ordered = list(items) if order == "asc" else list(reversed(items))
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    page = [dict(item) for item in ordered[:limit]]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(ordered) > limit,
    }
