"""The ``#mock:`` directive: how a request scripts the ``mock`` provider's answer.

Why it exists: an application's test wants a 429, a slow answer, a long stream or a fixed reply
*from the request it sends*, without reaching into the gateway. A directive is one line in a
message::

    #mock: status=429 retry_after=2
    #mock: delay_ms=300 stream_chunks=50
    #mock: content="The answer is 42." finish_reason=length
    #mock: tool_calls=get_weather arguments={"city": "Paris"}

Grammar (a line, leading whitespace allowed)::

    line   := "#mock:" pair*
    pair   := key "=" value
    key    := [a-z_]+                           one of the fields of MockDirectives
    value  := JSON string | JSON object | JSON array | bare
    bare   := any run of characters but whitespace

Directives are read from every ``system`` and ``developer`` message, then from the last ``user``
message; a later value of a key wins. Directive lines are removed from the text the mock answers
to. An unknown key or a bad value is an error (400, ``param: "messages"``), never ignored: a typo
must not silently change what a test exercises.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["DIRECTIVE_PREFIX", "DirectiveError", "MockDirectives", "directives_for", "parse_directive_line", "strip_directives"]

DIRECTIVE_PREFIX: Final = "#mock:"

_LINE: Final = re.compile(r"^[ \t]*#mock:(.*)$", re.MULTILINE)
_KEY: Final = re.compile(r"\s*([a-z_]+)=")
_DECODER: Final = json.JSONDecoder()

MAX_DIRECTIVE_CHARS: Final = 20_000
"""Longest directive line read (a ``content`` value included); longer ones are refused."""


class DirectiveError(ValueError):
    """A ``#mock:`` line that cannot be read; the message names the key and the reason."""


class MockDirectives(BaseModel):
    """What one request asked of the mock provider (every field optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    content: Annotated[str, Field(max_length=MAX_DIRECTIVE_CHARS)] | None = Field(
        None, description="the answer's text (each choice), instead of 'mock: <prompt>'; a JSON object or array is sent as its JSON text"
    )
    refusal: Annotated[str, Field(max_length=MAX_DIRECTIVE_CHARS)] | None = Field(
        None, description="answer with this refusal (message.refusal) and no content"
    )
    finish_reason: Literal["stop", "length", "content_filter"] | None = Field(
        None, description="report this finish reason whatever ended the answer"
    )
    tool_calls: tuple[str, ...] | None = Field(
        None, description="comma-separated names of offered tools to call, or 'none' for a text answer"
    )
    arguments: dict[str, Any] | None = Field(
        None, description="a JSON object merged over the generated arguments of every tool call"
    )
    status: int | None = Field(None, ge=400, le=599, description="fail as an upstream answering this HTTP status")
    message: Annotated[str, Field(max_length=1000)] | None = Field(None, description="with status: the upstream's error message")
    code: Annotated[str, Field(max_length=100)] | None = Field(None, description="with status: the upstream's error code")
    retry_after: float | None = Field(None, ge=0, le=3600, description="with status: seconds in the Retry-After header")
    delay_ms: int | None = Field(None, ge=0, description="wait this long before answering (a stream: before its first chunk)")
    chunk_delay_ms: int | None = Field(None, ge=0, description="wait this long between stream chunks")
    stream_chunks: int | None = Field(
        None, ge=1, description="send exactly this many content chunks per choice (the answer is lengthened if needed)"
    )
    stream_error_after: int | None = Field(
        None, ge=0, description="break the stream after this many chunks (0: before the first); a non-streamed answer fails"
    )

    @field_validator("content", mode="before")
    @classmethod
    def _json_content(cls, value: Any) -> Any:
        # content={"name": "Ada"} scripts a JSON answer without escaping it into a string.
        return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value

    @field_validator("tool_calls", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, str):
            names = tuple(name.strip() for name in value.split(",") if name.strip())
            return () if names == ("none",) else names
        return value

    def merged(self, later: MockDirectives) -> MockDirectives:
        """These directives with ``later``'s set values winning."""
        return self.model_copy(update=later.model_dump(exclude_unset=True))


def parse_directive_line(text: str) -> dict[str, Any]:
    """The ``key: value`` pairs of what follows ``#mock:`` on one line (values decoded, not yet
    checked against :class:`MockDirectives`)."""
    if len(text) > MAX_DIRECTIVE_CHARS:
        raise DirectiveError(f"a #mock: line is limited to {MAX_DIRECTIVE_CHARS} characters")
    pairs: dict[str, Any] = {}
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _KEY.match(text, position)
        if match is None:
            rest = text[position:].strip()[:40]
            raise DirectiveError(f"expected key=value, got {rest!r}")
        key, position = match.group(1), match.end()
        if position < len(text) and text[position] in '"{[':
            try:
                value, position = _DECODER.raw_decode(text, position)
            except json.JSONDecodeError as exc:
                raise DirectiveError(f"{key}: not valid JSON ({exc.msg})") from None
        else:
            end = position
            while end < len(text) and not text[end].isspace():
                end += 1
            value, position = text[position:end], end
        if position < len(text) and not text[position].isspace():
            raise DirectiveError(f"{key}: separate pairs with spaces")
        pairs[key] = value
    return pairs


def directives_for(messages: Iterable[Mapping[str, Any]]) -> MockDirectives:
    """The directives of a chat request: its system/developer messages, then its last user
    message (later values win).

    :raises DirectiveError: a line that does not parse, an unknown key or a bad value.
    """
    messages = list(messages)
    sources = [m for m in messages if m.get("role") in ("system", "developer")]
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    if last_user is not None:
        sources.append(last_user)
    pairs: dict[str, Any] = {}
    for message in sources:
        for line in _LINE.findall(_text(message.get("content"))):
            pairs.update(parse_directive_line(line))
    try:
        return MockDirectives.model_validate(pairs)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        key = ".".join(str(part) for part in error["loc"])
        reason = "unknown key; known: " + ", ".join(MockDirectives.model_fields) if error["type"] == "extra_forbidden" else error["msg"]
        raise DirectiveError(f"{key}: {reason}") from None


def strip_directives(text: str) -> str:
    """``text`` without its ``#mock:`` lines (and without the blank edges they leave)."""
    if DIRECTIVE_PREFIX not in text:
        return text
    return _LINE.sub("", text).strip()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")
    return ""
