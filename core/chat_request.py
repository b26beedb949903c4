"""Validation of the chat request at the edge.

The models check what the gateway and providers rely on, with the error naming the parameter at
fault (``messages[0].role``). Fields they do not know pass through untouched (``extra="allow"``):
the client's JSON, not the model, is what goes upstream, so new OpenAI parameters work without a
gateway release.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .errors import InvalidRequest

__all__ = ["ChatCompletionRequest", "validate_chat_request"]

_STRICT_OPEN = ConfigDict(extra="allow", strict=True)


class ContentPart(BaseModel):
    model_config = _STRICT_OPEN
    type: str = Field(min_length=1)


class ChatMessage(BaseModel):
    model_config = _STRICT_OPEN
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    model_config = _STRICT_OPEN
    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    """The parts of OpenAI's ``CreateChatCompletionRequest`` the gateway checks."""

    model_config = _STRICT_OPEN
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None


_validator = TypeAdapter(ChatCompletionRequest)


def validate_chat_request(body: Any) -> None:
    """Raise :class:`InvalidRequest` naming the first bad parameter, or return if ``body`` is fine."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        _validator.validate_python(body)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        param = _param_path(error["loc"])
        if error["type"] == "missing":
            raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param) from None
        raise InvalidRequest(f"Invalid value for '{param}': {error['msg']}.", param=param) from None


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
