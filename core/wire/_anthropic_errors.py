"""Anthropic's error shape, both ways: reading an Anthropic upstream's errors, and writing the
gateway's errors for Anthropic clients.

Anthropic's body is ``{"type": "error", "error": {"type", "message", "details"?},
"request_id"?}``. Its SDK picks the exception class by HTTP status (400 ``BadRequestError``,
401 ``AuthenticationError``, 403 ``PermissionDeniedError``, 404 ``NotFoundError``, 413
``ContentTooLargeError``, 429 ``RateLimitError``, 503 ``ServiceUnavailableError``, 529
``OverloadedError``, other 5xx ``InternalServerError``…), refined by ``details.error_code`` for a
few causes; ``error.type`` is informational. So the gateway keeps its own status (what its logs
and metrics count) and writes the ``error.type`` Anthropic uses for that status.
"""
from __future__ import annotations

from typing import Any, Final, Mapping

from ..errors import GatewayError
from ..upstream import error_from_upstream

__all__ = ["ERROR_STATUS", "ERROR_TYPES", "anthropic_error_body", "anthropic_error_type", "error_from_anthropic"]

ERROR_STATUS: Final[Mapping[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
"""The HTTP status Anthropic uses for each ``error.type``: an in-stream ``error`` event, which
arrives after a 200, is judged as if it had come with this status."""

ERROR_TYPES: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
"""The ``error.type`` written for a gateway status; any other 4xx is ``invalid_request_error``
and any other 5xx ``api_error``. 503 (the gateway or its upstream cannot serve now) is
``overloaded_error``, Anthropic's word for that condition, though its SDK raises
``ServiceUnavailableError`` for the status rather than ``OverloadedError`` (529)."""

_SPEND_LIMIT_CODES: Final = frozenset({"enforced_spend_limit_reached", "contract_spend_limit_reached"})
_MAX_MESSAGE_CHARS: Final = 4096


def anthropic_error_type(status: int) -> str:
    """The Anthropic ``error.type`` for an HTTP status (see :data:`ERROR_TYPES`)."""
    known = ERROR_TYPES.get(status)
    if known is not None:
        return known
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_error_body(
    status: int, message: str, *, code: str | None = None, request_id: str | None = None
) -> dict[str, Any]:
    """The Anthropic error body for a gateway failure with ``status``, ``message`` and ``code``
    (e.g. a :class:`~hookgate.GatewayError`'s), as an HTTP body or an in-stream ``error`` event.

    ``code``, the gateway's stable cause (``rate_limit_exceeded``, ``budget_exceeded``…), goes in
    ``error.details.error_code``, where Anthropic puts its own. The message is cut to 4096
    characters: it may quote client input.

        anthropic_error_body(429, "Rate limit reached.", code="rate_limit_exceeded")
        # {"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached.",
        #                             "details": {"error_code": "rate_limit_exceeded"}}}
    """
    error: dict[str, Any] = {"type": anthropic_error_type(status), "message": message[:_MAX_MESSAGE_CHARS]}
    if code:
        error["details"] = {"error_code": code}
    body: dict[str, Any] = {"type": "error", "error": error}
    if request_id:
        body["request_id"] = request_id
    return body


def error_from_anthropic(
    provider: str, status: int | None, body: Any, headers: Mapping[str, str] | None = None
) -> GatewayError:
    """The client-facing error for an Anthropic error body ``{"type": "error", "error":
    {"type", "message", "details"}}``, through the shared table of
    :func:`hookgate.upstream.error_from_upstream`. ``status`` None means an in-stream ``error``
    event: the status is the one Anthropic uses for its ``error.type`` (:data:`ERROR_STATUS`).
    A spend limit (``details.error_code``) is reported as OpenAI's ``insufficient_quota``, so
    clients and the retry plugin know waiting will not help."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        error = {}
    if status is None:
        status = ERROR_STATUS.get(error.get("type"), 500)
    details = error.get("details")
    code = details.get("error_code") if isinstance(details, Mapping) else None
    if code in _SPEND_LIMIT_CODES:
        code = "insufficient_quota"
    shared = {"message": error.get("message"), "type": error.get("type"), "code": code if isinstance(code, str) else None}
    return error_from_upstream(provider, status, {"error": shared}, headers)
