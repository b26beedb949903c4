"""What every endpoint of the OpenAI emulator writes the same way: error bodies, SSE framing,
and the split of a reply into one streamed piece per word."""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web

__all__ = ["SSE_DONE", "Problem", "error_response", "pieces", "problem_response", "sse_data", "sse_event"]

SSE_DONE: Final = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class Problem:
    """Why OpenAI would refuse a request: the status and the error fields it sends."""

    message: str
    status: int = 400
    param: str | None = None
    code: str | None = None


def _error_defaults(status: int) -> tuple[str, str | None, str]:
    """(type, code, message) as OpenAI sends them for a status, so SDK error parsing and any
    gateway logic keyed on ``error.type``/``error.code`` see realistic values."""
    match status:
        case 400:
            return ("invalid_request_error", None, "Invalid request (emulated).")
        case 401:
            return ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (emulated).")
        case 403:
            return ("invalid_request_error", "unsupported_country_region_territory", "Forbidden (emulated).")
        case 404:
            return ("invalid_request_error", "model_not_found", "The model does not exist (emulated).")
        case 429:
            return ("requests", "rate_limit_exceeded", "Rate limit reached for requests (emulated).")
        case 503:
            return ("server_error", None, "The engine is currently overloaded (emulated).")
        case _ if status >= 500:
            return ("server_error", None, "The server had an error while processing your request (emulated).")
        case _:
            return ("invalid_request_error", None, f"Request failed with status {status} (emulated).")


def error_response(
    status: int,
    *,
    message: str | None = None,
    error_type: str | None = None,
    code: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
    defaults: bool = True,
) -> web.Response:
    """An OpenAI error ``{"error": {"message", "type", "param", "code"}}`` with ``status``;
    fields left None take OpenAI's usual values for the status (``defaults``; a
    :class:`Problem` passes ``defaults=False`` so its ``code`` None stays null)."""
    default_type, default_code, default_message = _error_defaults(status)
    error = {
        "message": message if message is not None else default_message,
        "type": error_type if error_type is not None else default_type,
        "param": param,
        "code": code if code is not None or not defaults else default_code,
    }
    sent = dict(headers or {})
    if retry_after is not None:
        sent["retry-after"] = str(math.ceil(retry_after))
        sent["retry-after-ms"] = str(int(retry_after * 1000))
    return web.Response(status=status, body=orjson.dumps({"error": error}), content_type="application/json", headers=sent)


def problem_response(problem: Problem) -> web.Response:
    """The error response for a refused request."""
    return error_response(problem.status, message=problem.message, param=problem.param, code=problem.code, defaults=False)


def pieces(text: str) -> list[str]:
    """Split a reply into one piece per word, trailing whitespace kept, so the pieces join back
    to the exact text and their number equals ``count_tokens`` (at least one piece)."""
    return re.findall(r"\S+\s*", text) or [text]


def sse_data(payload: Mapping[str, Any]) -> bytes:
    """A ``data:``-only event, as chat and legacy completions stream."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_event(payload: Mapping[str, Any]) -> bytes:
    """A typed event (``event: <type>`` and ``data:``), as the Responses API streams."""
    return b"event: " + str(payload["type"]).encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
