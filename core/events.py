"""What observers are told when a request ends: its :class:`Outcome`.

The core emits lifecycle events (``request_started``, ``phase_finished``, ``attempt_started``,
``attempt_finished``, ``request_finished``; see :mod:`hookgate.hookspecs`) at fixed points of every
request, whatever the pipeline's order, so an observer (metrics, traces, logs, the request store)
sees the same numbers wherever it is listed. ``request_finished`` comes once per request, after
every ``after_response``/``on_error`` hook has run and the answer has been sent, so the facts other
plugins produced (usage, cost…) are all there.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from .errors import GatewayError
    from .responses import Completion

__all__ = ["Outcome", "PHASES"]

PHASES = ("authenticate", "before_request", "cache_lookup", "call_provider", "after_response", "on_error")
"""The phases ``phase_finished`` reports, in the order a request goes through them."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one request ended, as ``request_finished`` observers see it."""

    status: int
    """The HTTP status the client got (499 when it went away first)."""
    error: GatewayError | None
    """What the client was told when the request failed (an unexpected exception appears as an
    :class:`~hookgate.InternalError`); None on success."""
    response: Completion | None
    """The complete answer on success (a stream: its chunks assembled), else None."""
    usage: Mapping[str, Any] | None
    """The answer's token usage in OpenAI's shape: :data:`~hookgate.facts.USAGE` when a plugin
    produced it, else what the answer carried; for a cache HIT, the cached answer's usage (nothing
    was spent upstream: check ``ctx.cache_status``)."""
    cost_usd: Decimal | None
    """:data:`~hookgate.facts.COST_USD` when a plugin produced it (0 for a HIT), else None."""
    total_seconds: float
    """From the request's arrival to its last byte (a stream: its last chunk)."""
    upstream_seconds: float
    """Time spent waiting for providers: every attempt, and a stream's chunks."""
    time_to_first_byte_seconds: float | None
    """From arrival to the first byte of the answer (a stream: its first chunk); None when
    nothing was sent."""
    phases: Mapping[str, float]
    """Seconds spent in each phase the request went through (see :data:`PHASES`)."""

    @property
    def ok(self) -> bool:
        return self.error is None
