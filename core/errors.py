"""Errors a client may see, each mapped to OpenAI's error shape and HTTP status.

A plugin rejects a request by raising one of these; the core turns it into
``{"error": {"message", "type", "param", "code"}}`` with the right status, so the official SDKs
raise the matching exception class (``BadRequestError`` for 400, ``RateLimitError`` for 429…).
Anything else a plugin raises is a bug: the client gets a 500 naming the request id, and the
traceback goes to the server log only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "GatewayError",
    "InvalidRequest",
    "AuthenticationFailed",
    "PermissionDenied",
    "NotFound",
    "ModelNotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "RateLimited",
    "InternalError",
    "UpstreamError",
    "ServiceUnavailable",
    "GatewayTimeout",
    "ClientDisconnected",
]


class GatewayError(Exception):
    """Base of every error the gateway reports to a client.

    Subclasses fix ``status`` and ``type``; each instance carries the human-readable message, the
    request parameter at fault (``param``, e.g. ``"messages[0].role"``), a machine-readable
    ``code`` and extra response ``headers`` (``Retry-After``…). Messages must never contain a
    secret: they are sent to the client and logged.
    """

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
        upstream_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        """The provider's own HTTP status when this error reports an upstream answer: what the
        retry and circuit-breaker plugins judge, since e.g. an upstream 401 is sent as a 502."""
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers: dict[str, str] = dict(headers) if headers else {}
        if status is not None:
            # An upstream status passed through (e.g. a provider's 422) keeps its own number.
            self.status = status  # type: ignore[misc]

    def to_body(self) -> dict[str, Any]:
        """The OpenAI-shaped error body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.message!r}, code={self.code!r})"


class InvalidRequest(GatewayError):
    """400: the request is malformed or has a bad parameter (name it in ``param``)."""

    status = 400
    type = "invalid_request_error"

    @classmethod
    def from_validation(cls, exc: ValidationError, *, what: str = "body") -> InvalidRequest:
        """The first problem pydantic found in a client's ``what`` (``body``, ``query``), as a 400
        naming its parameter (``invalid_parameter``; the name clipped: a client chose it)."""
        problem = exc.errors(include_url=False, include_input=False)[0]
        param = ".".join(str(part) for part in problem["loc"])[:64] or None
        return cls(f"{param or what}: {problem['msg']}", param=param, code="invalid_parameter")


class AuthenticationFailed(GatewayError):
    """401: no valid credentials. Say the same thing for a missing and a wrong key."""

    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(GatewayError):
    """403: the caller is known but may not do this."""

    status = 403
    type = "permission_error"


class NotFound(GatewayError):
    """404: no such resource."""

    status = 404
    type = "invalid_request_error"


class ModelNotFound(NotFound):
    """404 ``model_not_found``: no enabled provider serves the requested model."""

    default_code = "model_not_found"


class PayloadTooLarge(GatewayError):
    """413: the body is over the configured size limit."""

    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class RequestTimeout(GatewayError):
    """408: the client did not send its request body in time."""

    status = 408
    type = "invalid_request_error"
    default_code = "request_timeout"


class RateLimited(GatewayError):
    """429: slow down. Put ``Retry-After`` in ``headers`` when the wait is known."""

    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class InternalError(GatewayError):
    """500: a bug in the gateway or one of its plugins."""

    status = 500
    type = "server_error"
    default_code = "internal_error"


class UpstreamError(GatewayError):
    """502: the provider failed or answered something unusable."""

    status = 502
    type = "upstream_error"
    default_code = "upstream_error"


class ServiceUnavailable(GatewayError):
    """503: the gateway cannot serve this now (provider not configured, overloaded…)."""

    status = 503
    type = "service_unavailable"
    default_code = "service_unavailable"


class GatewayTimeout(GatewayError):
    """504: the provider did not answer in time."""

    status = 504
    type = "timeout_error"
    default_code = "timeout"


class ClientDisconnected(GatewayError):
    """499 (nginx's convention): the client went away before the answer was complete.

    Never sent (there is nobody to send it to); ``on_error`` observers see it so that logs and
    metrics account for abandoned requests.
    """

    status = 499
    type = "client_closed_request"
    default_code = "client_closed_request"
