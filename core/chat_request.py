"""Validation of the chat request at the edge.

The models check what the gateway and providers rely on, with the error naming the parameter at
fault (``messages[0].role``). Fields they do not know pass through untouched (``extra="allow"``):
the client's JSON, not the model, is what goes upstream, so new OpenAI parameters work without a
gateway release.

Before the models look at anything, one iterative pass over the body bounds what no model
checks and what recursive code further on (the cache key's canonical form, orjson, plugins that
walk the messages) would choke on: nesting deeper than :data:`MAX_NESTING` levels, and numbers
outside the signed 64-bit range (a ``1e300`` or a 30-digit integer in a field the gateway does
not know), each a 400 naming the parameter.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import NotRequired, TypedDict

from .bounds import clip
from .errors import InvalidRequest

__all__ = ["ChatCompletionRequest", "validate_chat_request", "check_json_bounds", "MAX_NESTING"]

MAX_NESTING = 64
"""Deepest nesting of arrays and objects a request may have (a real one has under ten levels;
orjson cannot write more than 255, Python cannot recurse through a thousand)."""
_LIMIT = 2**63

_STRICT_OPEN = ConfigDict(extra="allow", strict=True)

# TypedDicts rather than models: the body is checked, never kept as an object (the client's JSON
# is what goes upstream), and validating into dicts took half the time of building models
# (1.3 µs against 3.0 for the bench's request, measured alone).


@with_config(_STRICT_OPEN)
class ContentPart(TypedDict):
    type: Annotated[str, Field(min_length=1)]
    text: NotRequired[str | None]


@with_config(_STRICT_OPEN)
class ChatMessage(TypedDict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: NotRequired[str | list[ContentPart] | None]
    name: NotRequired[str | None]


@with_config(_STRICT_OPEN)
class StreamOptions(TypedDict):
    include_usage: NotRequired[bool | None]


@with_config(_STRICT_OPEN)
class ChatCompletionRequest(TypedDict):
    """The parts of OpenAI's ``CreateChatCompletionRequest`` the gateway checks."""

    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: NotRequired[bool | None]
    stream_options: NotRequired[StreamOptions | None]
    temperature: NotRequired[Annotated[float, Field(ge=0, le=2)] | None]
    top_p: NotRequired[Annotated[float, Field(ge=0, le=1)] | None]
    n: NotRequired[Annotated[int, Field(ge=1, le=128)] | None]
    max_tokens: NotRequired[Annotated[int, Field(ge=1)] | None]
    max_completion_tokens: NotRequired[Annotated[int, Field(ge=1)] | None]
    stop: NotRequired[str | list[str] | None]
    seed: NotRequired[int | None]
    presence_penalty: NotRequired[Annotated[float, Field(ge=-2, le=2)] | None]
    frequency_penalty: NotRequired[Annotated[float, Field(ge=-2, le=2)] | None]
    tools: NotRequired[list[dict[str, Any]] | None]
    tool_choice: NotRequired[str | dict[str, Any] | None]
    response_format: NotRequired[dict[str, Any] | None]
    user: NotRequired[str | None]


_validator = TypeAdapter(ChatCompletionRequest)


def validate_chat_request(body: Any) -> None:
    """Raise :class:`InvalidRequest` naming the first bad parameter, or return if ``body`` is fine."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    check_json_bounds(body)
    try:
        _validator.validate_python(body)
    except ValidationError as exc:
        # The deepest error is the most specific: for a union (a string, or a list of parts) it
        # names the part at fault, not the first branch that did not match.
        error = max(exc.errors(include_url=False), key=lambda e: len(e["loc"]))
        param = _param_path(error["loc"])
        if error["type"] == "missing":
            raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param) from None
        raise InvalidRequest(f"Invalid value for '{param}': {error['msg']}.", param=param) from None


def check_json_bounds(body: dict[str, Any] | list[Any], max_nesting: int = MAX_NESTING) -> None:
    """Raise :class:`InvalidRequest` naming the parameter when ``body`` nests deeper than
    ``max_nesting`` levels or holds a number outside the signed 64-bit range.

    Iterative (it never recurses, whatever the depth) and touching each value once, so it can run
    before anything else looks at the body; the path of a problem is worked out only once one
    is found.
    """
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > max_nesting:
            param = clip(_param_path(_path_to(body, lambda _value, at: at > max_nesting)))
            raise InvalidRequest(
                f"The request nests arrays and objects deeper than {max_nesting} levels (at '{param}').", param=param, code="nesting_too_deep"
            )
        for value in container.values() if type(container) is dict else container:
            kind = type(value)
            if kind is dict or kind is list:
                stack.append((value, depth + 1))
            elif (kind is int or kind is float) and not -_LIMIT <= value < _LIMIT:
                param = clip(_param_path(_path_to(body, lambda found, _at: found is value)))
                raise InvalidRequest(f"Invalid value for '{param}': numbers must lie within ±2^63.", param=param, code="number_out_of_range")


def _path_to(body: Any, wanted: Any) -> tuple[Any, ...]:
    """The path of the first value in ``body`` for which ``wanted(value, depth)`` holds."""
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(body, 1, ())]
    while stack:
        container, depth, path = stack.pop()
        for key, value in container.items() if type(container) is dict else enumerate(container):
            if wanted(value, depth + 1):
                return (*path, key)
            if type(value) is dict or type(value) is list:
                stack.append((value, depth + 1, (*path, key)))
    return ()


def _param_path(loc: tuple[Any, ...]) -> str:
    """('messages', 0, 'role') -> 'messages[0].role'; union branch names are dropped."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("str", "list[ContentPart]", "list[str]", "dict[str,any]", "float", "int", "bool") or "[" in str(part):
            continue
        else:
            path += f".{part}" if path else str(part)
    return path
