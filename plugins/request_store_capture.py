"""What ``request_store`` keeps of a finished request, taken from the ``request_finished`` event.

:func:`record_of` runs on the event loop for every request, so it only copies what the core and
the other plugins already worked out (the context's facts and the :class:`~hookgate.Outcome`):
no serialization, no I/O; :class:`~.request_store_record.RequestRecord` bounds every field.

Bodies are the exception, and opt-in: :func:`with_bodies` serializes and bounds them, after
passing them through the request's :data:`~hookgate.facts.BODY_REDACTOR` when a plugin (the
guardrails plugin) set one. That is CPU work proportional to the body, so the plugin runs it on
a worker thread, never on the event loop. The request body is the canonical one the pipeline
worked on (``ctx.body``, already masked when guardrails masks requests); the response body is the
canonical answer (before per-client output filters) or, for a failure, the error the client got.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from hookgate import Outcome, RequestContext
from hookgate.facts import CLIENT_KEY

from .request_store_record import AttemptRecord, RequestRecord, Timings, TokenCounts, bounded_body

__all__ = ["record_of", "bodies_of", "with_bodies"]

Redactor = Callable[[str, Any], Any]


def record_of(ctx: RequestContext, outcome: Outcome, *, now: datetime | None = None) -> RequestRecord:
    """The row of one finished request (without bodies). ``now`` is when it finished."""
    finished = now or datetime.now(timezone.utc)
    key = ctx.get(CLIENT_KEY)
    route = ctx.route
    error = outcome.error
    ttfb = outcome.time_to_first_byte_seconds
    return RequestRecord(
        time=finished - timedelta(seconds=outcome.total_seconds),
        request_id=ctx.request_id,
        status=outcome.status,
        key_id=key.id if key is not None else None,
        model=ctx.body.get("model") if isinstance(ctx.body, dict) else None,  # a JSON array fails validation later
        upstream_model=route.upstream_model if route is not None else None,
        provider=ctx.provider.name if ctx.provider is not None else None,
        surface=ctx.surface,
        error_code=(error.code or error.type) if error is not None else None,
        cache_status=ctx.cache_status,
        cache_source=ctx.cache_source,
        attempts=tuple(AttemptRecord(a.outcome, a.status, a.duration_ms) for a in ctx.attempts),
        timings=Timings(
            total_ms=outcome.total_seconds * 1000.0,
            upstream_ms=outcome.upstream_seconds * 1000.0 if ctx.attempts or outcome.upstream_seconds else None,
            ttft_ms=ttfb * 1000.0 if ttfb is not None else None,
            phases={phase: seconds * 1000.0 for phase, seconds in outcome.phases.items()},
        ),
        tokens=TokenCounts.from_usage(outcome.usage),
        cost_usd=outcome.cost_usd,
    )


def bodies_of(ctx: RequestContext, outcome: Outcome) -> tuple[Any, Any]:
    """The request and response bodies to keep (not yet serialized): the canonical request, and
    the canonical answer or the error body the client got."""
    response: Any = None
    if outcome.response is not None:
        response = outcome.response.body
    elif outcome.error is not None:
        response = outcome.error.to_body()
    return (ctx.body or None), response


def with_bodies(record: RequestRecord, request: Any, response: Any, *, max_bytes: int, redactor: Redactor | None) -> RequestRecord:
    """``record`` with its bodies redacted (when ``redactor`` is given), serialized and bounded to
    ``max_bytes`` each. CPU work: call it on a worker thread."""
    if redactor is not None:
        request = redactor("request", request) if request is not None else None
        response = redactor("response", response) if response is not None else None
    request_text, request_cut = bounded_body(request, max_bytes)
    response_text, response_cut = bounded_body(response, max_bytes)
    return dataclasses.replace(record, request_body=request_text, response_body=response_text, bodies_truncated=request_cut or response_cut)
