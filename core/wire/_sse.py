"""Encoding a typed event as one server-sent event, the way Anthropic and OpenAI's Responses
API send theirs: ``event: <type>`` then ``data: <json>``, so clients can dispatch on either."""
from __future__ import annotations

from typing import Any, Mapping

import orjson

__all__ = ["encode_event"]


def encode_event(event: Mapping[str, Any]) -> bytes:
    """``event: <event["type"]>\\ndata: <compact JSON>\\n\\n`` for one event dict."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
