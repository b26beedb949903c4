"""The row ``request_store`` keeps for every request, bounded when it is built.

A :class:`RequestRecord` is what the gateway knows about one request once it is over: who asked
(the key's public id, never the key), what was asked for and who answered, how it ended, the
cache, the upstream attempts, where the time went, the tokens and the cost, and (only when the
operator asked for them) the request and response bodies.

Much of it comes from the client (the model name, the request id, the bodies) or from an
upstream (error codes, token counts), so every field is bounded in ``__post_init__``, whoever
builds the record: text is cut to a fixed length and made storable (no NUL, which PostgreSQL's
``text`` refuses; no lone surrogate, which neither driver can encode), numbers are clamped to
what the columns hold, the attempts and phases lists are capped, and the cost is quantized to
:data:`COST_QUANTUM` so SQLite and PostgreSQL store and sum the same value.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

import orjson

__all__ = [
    "RequestRecord",
    "AttemptRecord",
    "Timings",
    "TokenCounts",
    "bounded_text",
    "bounded_body",
    "COST_QUANTUM",
    "MAX_ID_CHARS",
    "MAX_NAME_CHARS",
    "MAX_LABEL_CHARS",
    "MAX_ATTEMPTS",
    "MAX_PHASES",
    "MAX_BODY_BYTES",
]

MAX_ID_CHARS = 128
"""Request ids and key ids (the core accepts a client's ``x-request-id`` up to 128 characters)."""
MAX_NAME_CHARS = 256
"""Model names, which the client chooses."""
MAX_LABEL_CHARS = 64
"""Provider, surface, cache source, error codes, attempt outcomes, phase names."""
MAX_ATTEMPTS = 16
"""Attempt outcomes kept per request; ``attempt_count`` still tells how many there were."""
MAX_PHASES = 32
"""Per-phase timings kept per request."""
MAX_BODY_BYTES = 1 << 20
"""Hard ceiling of one stored body (UTF-8), whatever the configuration says."""
COST_QUANTUM = Decimal("1e-10")
"""Cost resolution in USD: $0.0001 per million tokens is 1e-10 per token. SQLite keeps the cost
as an integer count of this quantum (exact sums up to $922M), PostgreSQL as NUMERIC(20,10)."""
_MAX_COST = Decimal("9999999999.9999999999")
_MAX_TOKENS = 2**53  # exact as a JSON number and far beyond any real request
_MAX_MS = 1e12  # ~31 years: any finite timing fits, inf/NaN do not


def bounded_text(value: object, limit: int) -> str | None:
    """``value`` as text of at most ``limit`` characters that every backend can store.

    None stays None. NUL characters become U+FFFD (PostgreSQL rejects them) and lone surrogates
    become ``?`` (a JSON body may carry ``"\\ud800"``; UTF-8 cannot encode it).
    """
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit]
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def bounded_body(value: Any, max_bytes: int) -> tuple[str | None, bool]:
    """A request or response body as storable JSON text of at most ``max_bytes`` UTF-8 bytes.

    Returns ``(text, truncated)``. A ``str`` is kept as it is (already serialized); anything else
    is serialized with orjson (non-JSON values via ``str``). A truncated body is cut on a
    character boundary and is no longer valid JSON: ``truncated`` says so.
    """
    if value is None:
        return None, False
    max_bytes = max(0, min(max_bytes, MAX_BODY_BYTES))
    if isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value, default=str).decode()
        except (TypeError, orjson.JSONEncodeError):
            # orjson refuses lone surrogates and over-deep nesting: fall back to a lossy repr
            # rather than losing the row.
            text = repr(value)[: max_bytes + 1]
    encoded = text.encode("utf-8", "replace")
    truncated = len(encoded) > max_bytes
    if truncated:
        encoded = encoded[:max_bytes]
    text = encoded.decode("utf-8", "ignore")  # "ignore" drops a multi-byte character cut in half
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text, truncated


def _count(value: object) -> int | None:
    """A token count as a non-negative int within range, or None when unknown/garbage."""
    if type(value) is int and 0 <= value <= _MAX_TOKENS:  # the usual case, without a call
        return value
    if value is None or isinstance(value, bool):
        return None
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return None
    return min(max(number, 0), _MAX_TOKENS)


def _millis(value: object) -> float | None:
    """A duration as a finite, non-negative float of milliseconds, or None."""
    if type(value) is float and 0.0 <= value <= _MAX_MS:  # NaN fails the comparison
        return value
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(number):
        return None
    return min(max(number, 0.0), _MAX_MS)


def _cost(value: object) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
        if not amount.is_finite():
            return None
        amount = amount.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN)
    except (InvalidOperation, ValueError):
        return None
    return min(max(amount, _ZERO_COST), _MAX_COST)


_ZERO_COST = Decimal(0).quantize(COST_QUANTUM)
_set = object.__setattr__
"""How the ``__post_init__`` methods replace a field of their frozen instance. Each replaces a
field only when bounding changed it: records are built on the request path, so the common case
(short ASCII text, sane numbers) costs a few comparisons and no extra assignment."""


def _storable(value: object, limit: int) -> bool:
    return type(value) is str and len(value) <= limit and value.isascii() and "\x00" not in value


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One upstream attempt: how it ended (``ok``, ``timeout``, ``http_503``…), the upstream's
    HTTP status if it answered, and how long it took."""

    outcome: str
    status: int | None = None
    duration_ms: float | None = None

    def __post_init__(self) -> None:
        if not _storable(self.outcome, MAX_LABEL_CHARS):
            _set(self, "outcome", bounded_text(self.outcome, MAX_LABEL_CHARS) or "")
        status = self.status
        if status is not None and not (type(status) is int and 0 <= status <= 999):
            status = _count(status)
            _set(self, "status", None if status is None or status > 999 else status)
        if self.duration_ms is not None and _millis(self.duration_ms) is not self.duration_ms:
            _set(self, "duration_ms", _millis(self.duration_ms))


@dataclass(frozen=True, slots=True)
class Timings:
    """Where the request's time went, in milliseconds.

    ``total_ms``: from arrival to the last byte. ``upstream_ms``: waiting for providers (every
    attempt). ``ttft_ms``: to the first byte sent to the client. ``phases``: time per named phase
    (``before_request``, ``cache_lookup``, ``call_provider``…), at most :data:`MAX_PHASES`.
    """

    total_ms: float = 0.0
    upstream_ms: float | None = None
    ttft_ms: float | None = None
    phases: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        total = _millis(self.total_ms)
        if total is not self.total_ms:
            _set(self, "total_ms", total or 0.0)
        upstream, ttft = self.upstream_ms, self.ttft_ms
        if upstream is not None and _millis(upstream) is not upstream:
            _set(self, "upstream_ms", _millis(upstream))
        if ttft is not None and _millis(ttft) is not ttft:
            _set(self, "ttft_ms", _millis(ttft))
        given = self.phases
        phases: dict[str, float] = {}
        for name, ms in (given.items() if len(given) <= MAX_PHASES else list(given.items())[:MAX_PHASES]):
            value = ms if type(ms) is float and 0.0 <= ms <= _MAX_MS else _millis(ms)
            if value is not None:
                if not (type(name) is str and len(name) <= MAX_LABEL_CHARS and name.isascii() and "\x00" not in name):
                    name = bounded_text(name, MAX_LABEL_CHARS) or ""
                phases[name] = value
        _set(self, "phases", MappingProxyType(phases))


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """Token usage as the provider reported it (None: unknown, e.g. a request refused early)."""

    prompt: int | None = None
    completion: int | None = None
    cached: int | None = None
    """Prompt tokens served from the provider's prompt cache."""
    reasoning: int | None = None
    """Completion tokens spent on hidden reasoning."""

    def __post_init__(self) -> None:
        for name in ("prompt", "completion", "cached", "reasoning"):
            value = getattr(self, name)
            if value is not None and not (type(value) is int and 0 <= value <= _MAX_TOKENS):
                _set(self, name, _count(value))

    @classmethod
    def from_usage(cls, usage: Mapping[str, Any] | None) -> TokenCounts:
        """From OpenAI's ``usage`` object (``prompt_tokens``, ``completion_tokens``,
        ``prompt_tokens_details.cached_tokens``, ``completion_tokens_details.reasoning_tokens``)."""
        if not isinstance(usage, Mapping):
            return cls()
        prompt_details = usage.get("prompt_tokens_details")
        completion_details = usage.get("completion_tokens_details")
        return cls(
            prompt=usage.get("prompt_tokens"),
            completion=usage.get("completion_tokens"),
            cached=prompt_details.get("cached_tokens") if isinstance(prompt_details, Mapping) else None,
            reasoning=completion_details.get("reasoning_tokens") if isinstance(completion_details, Mapping) else None,
        )


_TEXT_FIELDS = (
    ("key_id", MAX_ID_CHARS), ("model", MAX_NAME_CHARS), ("upstream_model", MAX_NAME_CHARS), ("provider", MAX_LABEL_CHARS),
    ("surface", MAX_LABEL_CHARS), ("error_code", MAX_LABEL_CHARS), ("cache_source", MAX_LABEL_CHARS),
)
"""The optional text fields of a record and their bounds."""


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """Everything ``request_store`` keeps about one finished request.

    Build it from plain values (the lifecycle event's fields); every field is bounded on
    construction. ``time`` is when the request arrived (a naive datetime is taken as UTC).
    ``key_id`` is the gateway key's public id (``ClientKey.id``), never the secret.
    ``attempt_count`` defaults to the number of ``attempts`` given, before they are capped.
    The bodies are stored only when given: pass them through :func:`bounded_body` with the
    configured limit (the record caps them again at :data:`MAX_BODY_BYTES`).
    """

    time: datetime
    request_id: str
    status: int
    key_id: str | None = None
    model: str | None = None
    """The model the client asked for."""
    upstream_model: str | None = None
    """The model name sent upstream (after routing and fallback)."""
    provider: str | None = None
    surface: str | None = None
    """The client-facing API (``openai.chat``, ``anthropic.messages``…)."""
    error_code: str | None = None
    cache_status: str = "BYPASS"
    """``HIT``, ``MISS`` or ``BYPASS``."""
    cache_source: str | None = None
    attempts: tuple[AttemptRecord, ...] = ()
    attempt_count: int | None = None
    timings: Timings = field(default_factory=Timings)
    tokens: TokenCounts = field(default_factory=TokenCounts)
    cost_usd: Decimal | None = None
    request_body: str | None = None
    response_body: str | None = None
    bodies_truncated: bool = False

    def __post_init__(self) -> None:
        moment = self.time
        if type(moment) is not datetime or moment.tzinfo is not timezone.utc:
            if not isinstance(moment, datetime):
                raise TypeError("RequestRecord.time must be a datetime")
            _set(self, "time", moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc))
        if not _storable(self.request_id, MAX_ID_CHARS):
            _set(self, "request_id", bounded_text(self.request_id, MAX_ID_CHARS) or "")
        status = self.status
        if not (type(status) is int and 0 <= status <= 999):
            counted = _count(status)
            _set(self, "status", 0 if counted is None or counted > 999 else counted)
        for name, limit in _TEXT_FIELDS:
            value = getattr(self, name)
            # _storable() inlined: this loop runs for every request.
            if value is not None and not (type(value) is str and len(value) <= limit and value.isascii() and "\x00" not in value):
                _set(self, name, bounded_text(value, limit))
        if not _storable(self.cache_status, 16):
            _set(self, "cache_status", bounded_text(self.cache_status, 16) or "BYPASS")
        attempts = self.attempts
        if self.attempt_count is None:
            _set(self, "attempt_count", min(len(attempts), 32767))
        else:
            _set(self, "attempt_count", min(_count(self.attempt_count) or 0, 32767))  # a SMALLINT column
        if type(attempts) is not tuple or len(attempts) > MAX_ATTEMPTS or not all(type(a) is AttemptRecord for a in attempts):
            _set(self, "attempts", tuple(a if isinstance(a, AttemptRecord) else AttemptRecord(str(a)) for a in tuple(attempts)[:MAX_ATTEMPTS]))
        if not isinstance(self.timings, Timings):
            raise TypeError("RequestRecord.timings must be a Timings")
        if not isinstance(self.tokens, TokenCounts):
            raise TypeError("RequestRecord.tokens must be a TokenCounts")
        if self.cost_usd is not None:
            _set(self, "cost_usd", _cost(self.cost_usd))
        if self.request_body is not None or self.response_body is not None or type(self.bodies_truncated) is not bool:
            truncated = bool(self.bodies_truncated)
            for name in ("request_body", "response_body"):
                body = getattr(self, name)
                if body is not None:
                    text, cut = bounded_body(body, MAX_BODY_BYTES)
                    _set(self, name, text)
                    truncated = truncated or cut
            _set(self, "bodies_truncated", truncated)

    @property
    def is_error(self) -> bool:
        """Whether the client was sent an error status (>= 400)."""
        return self.status >= 400
