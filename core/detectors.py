"""Detectors: what finds sensitive text (PII, credentials) for the guardrails plugin, and how a
third party adds one.

A detector is any object with a ``name``, the ``kinds`` it reports and a
``detect(text) -> list[Finding]`` method (:class:`Detector`). A :class:`Finding` says *where* a
sensitive value is and *what kind* it is, never the value itself, so findings can be logged,
counted in metrics and put in error messages as they are.

``detect`` is synchronous and CPU-bound on purpose: detectors are regular expressions, checksums
and library look-ups, with nothing to await. The guardrails plugin calls them on a worker thread
when a text is large (so the event loop never waits on a 100 KB scan) and inline when it is small
(where the thread hop would cost more than the scan). A detector must therefore keep no
per-request state and be safe to call from several threads at once.

A third party ships a detector as an entry point in the ``hookgate.detectors`` group::

    # pyproject.toml of the third party's package
    [project.entry-points."hookgate.detectors"]
    employee_id = "acme_detectors:EmployeeIdDetector"

The target is a class (or any callable). When it has a ``Config`` attribute that is a pydantic
model, the options an operator gives it in plugins.toml are validated by that model and passed as
the one argument (``EmployeeIdDetector(config)``); without one it is called with no argument and
accepts no options. hookgate's own detectors are declared the same way in its pyproject.toml.

    from hookgate.detectors import Finding

    class EmployeeIdDetector:
        name = "employee_id"
        kinds = frozenset({"EMPLOYEE_ID"})

        def detect(self, text: str) -> list[Finding]:
            return [Finding("EMPLOYEE_ID", m.start(), m.end(), self.name, 0.9)
                    for m in EMPLOYEE_ID.finditer(text)]
"""
from __future__ import annotations

import bisect
import re
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Iterable, Mapping, Protocol, final, runtime_checkable

from pydantic import BaseModel, ValidationError

__all__ = [
    "ENTRY_POINT_GROUP",
    "KIND_PATTERN",
    "Finding",
    "Detector",
    "DetectorError",
    "DetectorLoadError",
    "InstalledDetector",
    "installed_detectors",
    "scan",
    "non_overlapping",
    "count_by_kind",
]

ENTRY_POINT_GROUP = "hookgate.detectors"
"""The entry-point group hookgate looks in for detectors, built-in ones included."""

KIND_PATTERN = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
"""What a finding's kind looks like (``EMAIL``, ``US_SSN``). Kinds become placeholders
(``<EMAIL_1>``) and metric labels, so they are short, upper case and from a fixed set."""


@final
@dataclass(frozen=True, slots=True)
class Finding:
    """One sensitive value found in a text: its kind and where it is, never the value.

    ``start``/``end`` are offsets into the text given to :meth:`Detector.detect`
    (``text[start:end]`` is the value). ``detector`` names the detector that found it;
    ``confidence`` (0..1) says how sure it is (a checksum match is 1.0, a format match less), so
    a policy can ignore weak findings.
    """

    kind: str
    start: int
    end: int
    detector: str
    confidence: float = 1.0

    def __post_init__(self) -> None:
        if not KIND_PATTERN.fullmatch(self.kind):
            raise ValueError(f"finding kind {self.kind[:40]!r} does not match {KIND_PATTERN.pattern}")
        if not 0 <= self.start < self.end:
            raise ValueError(f"finding span [{self.start}, {self.end}) is empty or negative")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"finding confidence {self.confidence} is outside 0..1")

    @property
    def length(self) -> int:
        return self.end - self.start

    def shifted(self, offset: int) -> Finding:
        """The same finding with its offsets moved by ``offset`` (for a text scanned in parts)."""
        return Finding(self.kind, self.start + offset, self.end + offset, self.detector, self.confidence)


@runtime_checkable
class Detector(Protocol):
    """What the guardrails plugin needs from a detector.

    ``detect`` is synchronous and CPU-bound; it may run on a worker thread (the plugin moves large
    texts off the event loop), concurrently for several requests, so it keeps no per-request
    state. It returns every finding in ``text``, in any order, overlapping ones included (the
    plugin resolves overlaps between detectors with :func:`non_overlapping`). It may raise on a
    bug; the plugin then applies the policy's fail-open or fail-closed rule, and the error it
    records names the detector and the exception type only.
    """

    name: str
    """Stable name, used in findings, logs and metrics (``email``, ``credentials``)."""
    kinds: frozenset[str]
    """Every kind its findings may have; policies are checked against it at start-up."""

    def detect(self, text: str) -> list[Finding]: ...


class DetectorError(Exception):
    """A detector raised, or returned a finding that is not a valid answer for the text.

    The message names the detector and the exception type, never the text or the exception's own
    message, which may quote the value (``ValueError: invalid literal '4111…'``).
    """

    def __init__(self, detector: str, reason: str) -> None:
        self.detector, self.reason = detector, reason
        super().__init__(f"detector {detector!r} failed: {reason}")


class DetectorLoadError(Exception):
    """A detector could not be imported, configured or built (a start-up error)."""


@dataclass(frozen=True)
class InstalledDetector:
    """An entry point in the ``hookgate.detectors`` group: a detector class and its options model."""

    name: str
    entry_point: EntryPoint
    distribution: str

    def load(self) -> Callable[..., Any]:
        """Import the detector's class (or factory)."""
        try:
            return self.entry_point.load()
        except Exception as exc:  # someone's import error must not read as ours
            raise DetectorLoadError(
                f"detector {self.name!r} ({self.entry_point.value}, from {self.distribution}) failed to import: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def config_model(self) -> type[BaseModel] | None:
        """The pydantic model of the detector's options, or None when it takes none."""
        model = getattr(self.load(), "Config", None)
        return model if isinstance(model, type) and issubclass(model, BaseModel) else None

    def create(self, options: Mapping[str, Any] | None = None) -> Detector:
        """Build the detector from the options an operator gave it (validated by its ``Config``)."""
        factory, model, options = self.load(), self.config_model(), dict(options or {})
        if not callable(factory):
            raise DetectorLoadError(f"detector {self.name!r} ({self.entry_point.value}) has no name, kinds and detect()")
        if model is None:
            if options:
                raise DetectorLoadError(f"detector {self.name!r} takes no options (given: {', '.join(sorted(options))})")
            config: BaseModel | None = None
        else:
            try:
                config = model.model_validate(options)
            except ValidationError as exc:
                # Without the input values: an option may be a pattern or a word list an operator
                # would rather not see echoed into logs.
                problems = "; ".join(
                    f"{'.'.join(str(part) for part in error['loc']) or '(options)'}: {error['msg']}"
                    for error in exc.errors(include_input=False, include_url=False)
                )
                raise DetectorLoadError(f"detector {self.name!r}: invalid options: {problems}") from None
        try:
            detector = factory() if config is None else factory(config)
        except Exception as exc:
            raise DetectorLoadError(f"detector {self.name!r} could not be built: {type(exc).__name__}: {exc}") from exc
        if not isinstance(detector, Detector):
            raise DetectorLoadError(f"detector {self.name!r} ({self.entry_point.value}) has no name, kinds and detect()")
        for kind in detector.kinds:
            if not KIND_PATTERN.fullmatch(kind):
                raise DetectorLoadError(f"detector {self.name!r}: kind {kind[:40]!r} does not match {KIND_PATTERN.pattern}")
        return detector


def installed_detectors() -> dict[str, InstalledDetector]:
    """Every detector installed in this environment, by entry-point name."""
    found: dict[str, InstalledDetector] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else "?"
        if ep.name in found and found[ep.name].entry_point.value != ep.value:
            raise DetectorLoadError(
                f"detector name {ep.name!r} is installed twice: by {found[ep.name].distribution} and by {dist}"
            )
        found[ep.name] = InstalledDetector(ep.name, ep, dist)
    return found


def scan(text: str, detectors: Iterable[Detector]) -> list[Finding]:
    """Every finding of every detector in ``text``, checked and sorted by position.

    Raises :class:`DetectorError` when a detector raises or returns a finding outside the text or
    of a kind it did not declare; the caller decides whether that fails the request.
    """
    findings: list[Finding] = []
    for detector in detectors:
        try:
            found = detector.detect(text)
        except Exception as exc:
            raise DetectorError(detector.name, type(exc).__name__) from None
        for finding in found:
            if not isinstance(finding, Finding):
                raise DetectorError(detector.name, f"returned a {type(finding).__name__}, not a Finding")
            if finding.end > len(text):
                raise DetectorError(detector.name, "returned a finding past the end of the text")
            if finding.kind not in detector.kinds:
                raise DetectorError(detector.name, f"returned kind {finding.kind!r}, which it does not declare")
        findings.extend(found)
    findings.sort(key=lambda f: (f.start, f.end))
    return findings


def non_overlapping(findings: Iterable[Finding]) -> list[Finding]:
    """The findings to act on when several overlap: the longest wins, then the most confident.

    A phone number inside an IBAN, or a password inside a URL an e-mail pattern also matched, is
    one value to mask, not two; the longest span covers what every shorter one would. Returned
    sorted by position.
    """
    ranked = sorted(findings, key=lambda f: (-f.length, -f.confidence, f.start, f.kind))
    starts: list[int] = []
    kept: list[Finding] = []  # parallel to starts, sorted by start
    for finding in ranked:
        at = bisect.bisect_left(starts, finding.start)
        if at > 0 and kept[at - 1].end > finding.start:
            continue
        if at < len(kept) and kept[at].start < finding.end:
            continue
        starts.insert(at, finding.start)
        kept.insert(at, finding)
    return kept


def count_by_kind(findings: Iterable[Finding]) -> dict[str, int]:
    """How many findings of each kind: what the request log and metrics record."""
    return dict(Counter(f.kind for f in findings))
