"""Encoding a typed event as one server-sent event, the way Anthropic and OpenAI's Responses
API send theirs: ``event: <type>`` then ``data: <json>``, so clients can dispatch on either."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Protocol

import orjson

__all__ = ["encode_event", "EventStream"]


def encode_event(event: Mapping[str, Any]) -> bytes:
    """``event: <event["type"]>\\ndata: <compact JSON>\\n\\n`` for one event dict."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class _EventTranslator(Protocol):
    def feed(self, chunk: dict[str, Any]) -> Iterable[Mapping[str, Any]]: ...
    def finish(self) -> Iterable[Mapping[str, Any]]: ...
    def fail(self, error: Any) -> Iterable[Mapping[str, Any]]: ...


class EventStream:
    """A surface's stream writer (:class:`hookgate.surfaces.SurfaceStream`) over a translator of
    canonical chunks into typed events (``ChatStreamToAnthropic``, ``ChatStreamToResponses``):
    each call's events, encoded with :func:`encode_event`."""

    __slots__ = ("translator",)

    def __init__(self, translator: _EventTranslator) -> None:
        self.translator = translator

    def feed(self, chunk: dict[str, Any]) -> bytes:
        return b"".join(encode_event(event) for event in self.translator.feed(chunk))

    def finish(self) -> bytes:
        return b"".join(encode_event(event) for event in self.translator.finish())

    def fail(self, error: Any) -> bytes:
        return b"".join(encode_event(event) for event in self.translator.fail(error))

