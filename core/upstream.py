"""Turning a provider's HTTP failure into the error the client should see.

One table for every provider plugin, so that the same upstream condition means the same thing
to clients whichever provider served them.
"""
from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Mapping

from .bounds import clip
from .errors import GatewayError, GatewayTimeout, RateLimited, ServiceUnavailable, UpstreamError

__all__ = ["error_from_upstream", "is_retriable", "is_upstream_failure", "should_fall_back", "retry_after_seconds", "PASSTHROUGH_HEADERS"]

RETRIABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
"""Upstream statuses worth another attempt."""
TRANSIENT_CODES = frozenset({"upstream_unreachable", "upstream_disconnected", "timeout"})
"""Error codes meaning the upstream could not be reached or did not answer in time."""
EXHAUSTED_CODES = frozenset({"insufficient_quota", "budget_exceeded"})
"""429 codes meaning quota or spend is used up: waiting does not help."""

PASSTHROUGH_HEADERS = ("retry-after", "retry-after-ms")
"""Upstream response headers a client needs to see on a 429/503."""
_MAX_MESSAGE_CHARS = 2048
"""Longest upstream error message passed on to the client (and the log)."""


def error_from_upstream(provider: str, status: int, body: Any, headers: Mapping[str, str] | None = None) -> GatewayError:
    """Map an upstream status and error body to a client-facing :class:`GatewayError`.

    * 400, 404, 409, 422: the request itself is wrong; pass status and message through.
    * 401, 403: the *gateway's* provider credentials were refused: 502, without any key.
    * 408 → 504; 429 keeps its code (``insufficient_quota``…) and ``Retry-After``.
    * 503 and 529 (overloaded) → 503; other 5xx → 502.
    """
    client_error = _client_error(provider, status, body, headers)
    client_error.upstream_status = status
    return client_error


def _client_error(provider: str, status: int, body: Any, headers: Mapping[str, str] | None) -> GatewayError:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {}
    # An upstream's error often quotes the request (a 4 MB model name): what is passed on is bounded.
    message = clip(error["message"], _MAX_MESSAGE_CHARS) if isinstance(error.get("message"), str) else None
    code = clip(error["code"], 64) if isinstance(error.get("code"), str) else None
    param = clip(error["param"]) if isinstance(error.get("param"), str) else None
    kept = {name: headers[name] for name in PASSTHROUGH_HEADERS if headers and name in headers}
    if status in (400, 404, 409, 422):
        passed = GatewayError(message or f"The {provider} provider rejected the request (status {status}).", param=param, code=code, status=status)
        passed.type = clip(error["type"], 64) if isinstance(error.get("type"), str) else "invalid_request_error"  # type: ignore[misc]
        return passed
    if status in (401, 403):
        return UpstreamError(
            f"The {provider} provider refused the gateway's credentials (upstream status {status}); "
            "the operator must check the provider key configured for the gateway.",
            code="upstream_auth_failed",
        )
    if status == 408:
        return GatewayTimeout(f"The {provider} provider timed out (upstream status 408).")
    if status == 429:
        return RateLimited(message or f"The {provider} provider is rate limiting requests.", code=code or "rate_limit_exceeded", headers=kept)
    if status in (503, 529):
        return ServiceUnavailable(f"The {provider} provider is unavailable or overloaded (upstream status {status}).", headers=kept)
    return UpstreamError(f"The {provider} provider failed (upstream status {status}).", code="upstream_error")


def is_retriable(error: GatewayError) -> bool:
    """Whether another attempt may succeed: a transient upstream status (408, 429, 5xx, 529),
    a connection failure or a timeout; never a 4xx about the request, never exhausted quota."""
    if error.code in EXHAUSTED_CODES:
        return False
    if error.upstream_status is not None:
        return error.upstream_status in RETRIABLE_STATUSES
    return error.code in TRANSIENT_CODES


FALLBACK_CODES = frozenset({"circuit_open", "provider_not_configured", "no_deployment_available"})
"""Gateway-side refusals that another route may not share: a paused route, a provider without a
key, a load-balanced route none of whose deployments can take the request."""


def should_fall_back(error: GatewayError) -> bool:
    """Whether another route may answer where this one failed: a retriable upstream failure, an
    open circuit, or a provider that is not configured."""
    return is_retriable(error) or error.code in FALLBACK_CODES


def is_upstream_failure(error: GatewayError) -> bool:
    """Whether ``error`` says the upstream itself is failing (for circuit breakers): transient
    errors other than rate limiting, which is the upstream working as designed."""
    return is_retriable(error) and error.upstream_status != 429


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait an upstream asked for: ``retry-after-ms``, else ``Retry-After`` in seconds or as
    an HTTP date; None when absent or unreadable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None
