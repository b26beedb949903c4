"""Guardrails policies: which detectors look at which side of a request, what happens to each kind
of finding, what a crashed detector means, and which policy a request gets.

A **policy** has a ``request`` side (what the client sends, checked before any cache or provider
sees it) and an ``answer`` side (what the model says, checked before the client sees it); either
may be absent. Each side names its detectors and an **action** per kind of finding:

- ``block``: the request is refused with a 400 naming the kind (request side), or the answer is
  withheld (answer side);
- ``mask``: the value is replaced by a typed placeholder (request side: restored in the answer
  for the client; answer side: the client gets the placeholder);
- ``log``: nothing changes; the finding is recorded (the fact, metrics, the request log).

A detector that raises (or returns nonsense) follows the side's ``on_error``: ``open`` goes on
without that detector for the rest of the request, ``closed`` refuses what could not be checked.

**Which policy**: the request's key by id (``keys``), else the policy its key's metadata names
(``metadata_field``), else its model (``models``: exact name first, then the longest matching
glob such as ``"local/*"``), else ``default_policy``. The first match wins, so a key's exception
holds whatever model it asks for.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hookgate import ClientKey
from hookgate.detectors import KIND_PATTERN, Detector, DetectorError, Finding, scan

__all__ = [
    "Action",
    "FailMode",
    "SidePolicy",
    "RequestPolicy",
    "AnswerPolicy",
    "Policy",
    "DetectorSettings",
    "PolicyChooser",
    "UnknownPolicy",
    "DetectorFailure",
    "GuardedDetector",
    "DEFAULT_REQUEST_DETECTORS",
]

Action = Literal["block", "mask", "log"]
FailMode = Literal["open", "closed"]

DEFAULT_REQUEST_DETECTORS = ("email", "phone", "payment_card", "iban", "national_id", "credentials")
"""What the default policy masks in requests: personal data that names a person or their money,
and credentials. ``ip_address`` is left out: in the prompts developers send, addresses are mostly
their own servers', and masking them breaks the question being asked."""


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SidePolicy(_Table):
    """What one side of a request is checked for, and what each finding leads to."""

    detectors: tuple[str, ...] = Field(
        min_length=1,
        max_length=64,
        description="detectors to run: names from [plugins.guardrails.detectors] or [plugins.guardrails.judges], "
        "or any installed detector entry point (email, phone, payment_card, iban, ip_address, national_id, credentials…)",
    )
    action: Action = Field("mask", description="what happens to a finding: block, mask or log")
    actions: dict[str, Action] = Field(
        {}, description="per kind of finding, instead of action: { API_KEY = \"block\", IP_ADDRESS = \"log\" }"
    )
    min_confidence: float = Field(0.0, ge=0.0, le=1.0, description="findings a detector is less sure of are ignored")
    on_error: FailMode = Field(
        "closed",
        description="a detector that crashes: open = go on without it for this request (recorded); "
        "closed = refuse what could not be checked (request: 503; answer: withheld)",
    )

    @field_validator("actions")
    @classmethod
    def _kinds_look_like_kinds(cls, actions: dict[str, Action]) -> dict[str, Action]:
        for kind in actions:
            if not KIND_PATTERN.fullmatch(kind):
                raise ValueError(f"{kind[:40]!r} is not a finding kind (upper case, like EMAIL or API_KEY)")
        return actions

    def action_for(self, kind: str) -> Action:
        """The action for findings of ``kind``."""
        return self.actions.get(kind, self.action)


class RequestPolicy(SidePolicy):
    """The request side: checked in ``before_request``, before caches, limits on content and the
    provider see anything."""

    on_judge_error: FailMode = Field(
        "open",
        description="a judge that times out or fails: open = go on unjudged (recorded); closed = 503. "
        "Separate from on_error because a model is far likelier to be slow than a regular expression to crash",
    )


class AnswerPolicy(SidePolicy):
    """The answer side: checked for each client as its answer is written (a cached answer too)."""

    hold_back_chars: int = Field(
        128,
        ge=16,
        le=16384,
        description="streams: characters held back so that a finding split across chunks is seen whole; "
        "findings longer than this (PEM keys, long JWTs) are caught only from where they are first seen",
    )
    scan_step_chars: int = Field(32, ge=1, le=4096, description="streams: new characters between two scans")


class Policy(_Table):
    """A named policy: a request side, an answer side, both or neither (``{}`` checks nothing)."""

    request: RequestPolicy | None = Field(None, description="what the client sends")
    answer: AnswerPolicy | None = Field(None, description="what the model answers")


class DetectorSettings(_Table):
    """A detector under a name of the operator's choice, with options."""

    entry_point: str | None = Field(
        None, description="the installed detector (hookgate.detectors entry point) this is; default: the table's name"
    )
    options: dict[str, Any] = Field({}, description="the detector's own options, checked by its Config model")


class UnknownPolicy(Exception):
    """A key's metadata names a policy this gateway does not have."""

    def __init__(self, name: str) -> None:
        super().__init__(f"guardrails policy {name[:64]!r} is not configured")
        self.name = name


class PolicyChooser:
    """Picks the policy of a request: key id, key metadata, model, default (first match wins)."""

    __slots__ = ("default", "keys", "models", "metadata_field", "known", "_globs")

    def __init__(
        self,
        default: str,
        *,
        keys: Mapping[str, str] | None = None,
        models: Mapping[str, str] | None = None,
        metadata_field: str | None = None,
        known: frozenset[str] = frozenset(),
    ) -> None:
        self.default = default
        self.keys = dict(keys or {})
        self.models = dict(models or {})
        self.metadata_field = metadata_field
        self.known = known
        # The most specific (longest) glob first.
        self._globs = sorted((p for p in self.models if any(c in p for c in "*?[")), key=len, reverse=True)

    def choose(self, key: ClientKey | None, model: str | None) -> str:
        """The name of the policy for a request by ``key`` for ``model``; raises
        :class:`UnknownPolicy` when a key's metadata names a policy that does not exist."""
        if key is not None:
            if key.id in self.keys:
                return self.keys[key.id]
            if self.metadata_field is not None:
                named = key.metadata.get(self.metadata_field)
                if named is not None:
                    if named not in self.known:
                        raise UnknownPolicy(named)
                    return named
        if isinstance(model, str):
            exact = self.models.get(model)
            if exact is not None:
                return exact
            for pattern in self._globs:
                if fnmatch.fnmatchcase(model, pattern):
                    return self.models[pattern]
        return self.default


@dataclass(frozen=True, slots=True)
class DetectorFailure:
    """A detector that failed during one request: its configured name and the reason (an
    exception type, never its message, which may quote the text)."""

    detector: str
    reason: str


class GuardedDetector:
    """One request's view of a configured detector: weak findings dropped, a failure recorded, and
    under fail-open the detector left out for the rest of the request.

    Made per request (it records that request's failures), around a detector shared by all.
    """

    __slots__ = ("inner", "name", "kinds", "min_confidence", "fail_open", "failures", "disabled")

    def __init__(self, inner: Detector, name: str, *, min_confidence: float, fail_open: bool, failures: list[DetectorFailure]) -> None:
        self.inner = inner
        self.name = name
        self.kinds = inner.kinds
        self.min_confidence = min_confidence
        self.fail_open = fail_open
        self.failures = failures
        self.disabled = False

    def detect(self, text: str) -> list[Finding]:
        if self.disabled:
            return []
        try:
            found = scan(text, (self.inner,))  # checks what the detector returned, too
        except DetectorError as error:
            self.failures.append(DetectorFailure(self.name, error.reason))
            if self.fail_open:
                self.disabled = True
                return []
            raise
        if self.min_confidence:
            found = [f for f in found if f.confidence >= self.min_confidence]
        return found
