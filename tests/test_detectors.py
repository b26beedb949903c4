"""The detector contract (hookgate.detectors): findings that never carry the value, detectors found
by entry point and built from validated options, errors that name the detector but not the text."""
from __future__ import annotations

import time
from importlib.metadata import EntryPoint

import pytest
from pydantic import BaseModel

from hookgate.detectors import (
    ENTRY_POINT_GROUP,
    Detector,
    DetectorError,
    DetectorLoadError,
    Finding,
    InstalledDetector,
    count_by_kind,
    installed_detectors,
    non_overlapping,
    scan,
)
from hookgate.plugins.guardrails_detectors import CustomPatternDetector, CustomPatternOptions, EmailDetector

SECRET = "4111 1111 1111 1111"


class EmployeeIdDetector:
    """A third party's detector with options, as an entry point would name it."""

    class Config(BaseModel):
        prefix: str = "EMP"

    name = "employee_id"
    kinds = frozenset({"EMPLOYEE_ID"})

    def __init__(self, config: Config) -> None:
        self.prefix = config.prefix

    def detect(self, text: str) -> list[Finding]:
        at = text.find(self.prefix + "-")
        return [] if at < 0 else [Finding("EMPLOYEE_ID", at, at + len(self.prefix) + 6, self.name)]


class NoOptionsDetector:
    name = "plain"
    kinds = frozenset({"PLAIN"})

    def detect(self, text: str) -> list[Finding]:
        return []


class LeakyDetector:
    name = "leaky"
    kinds = frozenset({"X"})

    def detect(self, text: str) -> list[Finding]:
        raise ValueError(f"cannot parse {text!r}")


class WrongKindDetector:
    name = "wrong_kind"
    kinds = frozenset({"X"})

    def detect(self, text: str) -> list[Finding]:
        return [Finding("Y", 0, 1, self.name)]


def entry_point(attr: str, name: str = "third_party") -> InstalledDetector:
    return InstalledDetector(name, EntryPoint(name=name, value=f"{__name__}:{attr}", group=ENTRY_POINT_GROUP), "acme-detectors")


def test_a_finding_has_no_field_for_the_value():
    finding = Finding("PAYMENT_CARD", 5, 24, "payment_card", 1.0)
    assert SECRET not in repr(finding)
    assert set(Finding.__slots__) == {"kind", "start", "end", "detector", "confidence"}


@pytest.mark.parametrize(
    "kind, start, end, confidence",
    [("email", 0, 1, 1.0), ("EMAIL", 3, 3, 1.0), ("EMAIL", -1, 2, 1.0), ("EMAIL", 0, 1, 1.5), ("A" * 40, 0, 1, 1.0)],
)
def test_a_malformed_finding_is_refused(kind, start, end, confidence):
    with pytest.raises(ValueError):
        Finding(kind, start, end, "d", confidence)


def test_every_built_in_detector_is_installed_by_entry_point():
    installed = installed_detectors()
    assert {"email", "phone", "payment_card", "iban", "ip_address", "national_id", "credentials", "custom_patterns"} <= set(installed)
    for name, detector in installed.items():
        if name != "custom_patterns":
            assert isinstance(detector.create(), Detector)


def test_a_third_party_detector_is_built_from_its_validated_options():
    detector = entry_point("EmployeeIdDetector").create({"prefix": "STAFF"})
    assert detector.detect("badge STAFF-12345 ok") == [Finding("EMPLOYEE_ID", 6, 17, "employee_id")]


def test_bad_options_fail_at_start_up_without_echoing_the_value():
    with pytest.raises(DetectorLoadError) as error:
        entry_point("EmployeeIdDetector").create({"prefix": ["sk-live-secret"]})
    assert "prefix" in str(error.value) and "sk-live-secret" not in str(error.value)
    with pytest.raises(DetectorLoadError, match="takes no options"):
        entry_point("NoOptionsDetector").create({"x": 1})
    with pytest.raises(DetectorLoadError, match="custom_patterns"):
        installed_detectors()["custom_patterns"].create({"patterns": [{"kind": "X", "pattern": "(a)\\1"}]})


def test_an_entry_point_that_is_not_a_detector_is_refused():
    with pytest.raises(DetectorLoadError, match="no name, kinds and detect"):
        entry_point("SECRET").create()
    with pytest.raises(DetectorLoadError, match="failed to import"):
        InstalledDetector("gone", EntryPoint(name="gone", value="no_such_module:X", group=ENTRY_POINT_GROUP), "x").create()


def test_a_crashing_detector_is_named_without_its_message():
    with pytest.raises(DetectorError) as error:
        scan(f"card {SECRET}", [EmailDetector(), LeakyDetector()])
    assert error.value.detector == "leaky"
    assert SECRET not in str(error.value) and error.value.__cause__ is None and error.value.__suppress_context__


def test_a_detector_answering_an_undeclared_kind_is_an_error():
    with pytest.raises(DetectorError, match="does not declare"):
        scan("x", [WrongKindDetector()])


def test_overlapping_findings_keep_the_longest_then_the_most_confident():
    findings = [
        Finding("PHONE", 10, 20, "phone", 0.8),
        Finding("IBAN", 5, 30, "iban", 1.0),
        Finding("EMAIL", 40, 50, "email", 0.5),
        Finding("CUSTOM", 40, 50, "custom", 0.9),
        Finding("IP_ADDRESS", 30, 35, "ip", 0.9),
    ]
    kept = non_overlapping(findings)
    assert [(f.kind, f.start) for f in kept] == [("IBAN", 5), ("IP_ADDRESS", 30), ("CUSTOM", 40)]
    assert count_by_kind(findings) == {"PHONE": 1, "IBAN": 1, "EMAIL": 1, "CUSTOM": 1, "IP_ADDRESS": 1}


def test_a_catastrophic_custom_pattern_scans_100_kb_in_linear_time():
    detector = CustomPatternDetector(CustomPatternOptions(patterns=[{"kind": "EVIL", "pattern": r"(a+)+$"}, {"kind": "ORDER", "pattern": r"ORD-\d{6}"}]))
    text = "a" * 100_000 + "!"
    started = time.perf_counter()
    assert detector.detect(text) == []
    assert time.perf_counter() - started < 1.0


def test_custom_matches_across_window_edges_are_found_once():
    options = CustomPatternOptions(name="orders", patterns=[{"kind": "ORDER_ID", "pattern": r"ORD-\d{6}", "ignore_case": True}], window_chars=1024, max_match_chars=64)
    detector = CustomPatternDetector(options)
    text = "".join(f"{'x' * (997 + i % 13)} ord-{i:06d} " for i in range(40))
    found = detector.detect(text)
    assert [text[f.start : f.end].lower() for f in found] == [f"ord-{i:06d}" for i in range(40)]
    assert {f.detector for f in found} == {"orders"} and detector.kinds == {"ORDER_ID"}


@pytest.mark.parametrize(
    "pattern, reason",
    [(r"(\w+) \1", "RE2"), (r"(?<=x)y", "RE2"), (r"a*", "empty string"), ("[", "RE2")],
)
def test_custom_patterns_re2_cannot_run_are_refused_at_start_up(pattern, reason):
    with pytest.raises(ValueError, match=reason):
        CustomPatternOptions(patterns=[{"kind": "X", "pattern": pattern}])
