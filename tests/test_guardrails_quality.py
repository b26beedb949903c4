"""The built-in detectors are good enough to gate on: each finds at least 95% of its kind in a
Faker-generated set (16 locales) and fires on at most 2% of the hard negatives (order numbers
that pass Luhn, version strings that are valid IPv4, digests, UUIDs, dates…).

``python bench/guardrails_quality.py`` prints the same figures, per detector and per source."""
from __future__ import annotations

import pytest

from guardrails_eval_set import PHONE_REGIONS, build_eval_set, evaluate
from hookgate.detectors import installed_detectors

MIN_RECALL = 0.95
MAX_FALSE_POSITIVE_RATE = 0.02
OPTIONS = {"phone": {"regions": list(PHONE_REGIONS)}}
"""The phone detector knows every locale's region: the hardest setting for its false positives."""


@pytest.fixture(scope="module")
def scores():
    detectors = [
        installed.create(OPTIONS.get(name))
        for name, installed in sorted(installed_detectors().items())
        if installed.entry_point.value.startswith("hookgate.plugins.guardrails_detectors:") and name != "custom_patterns"
    ]
    return evaluate(detectors, build_eval_set(per_locale=10))


BUILT_IN = ["credentials", "email", "iban", "ip_address", "national_id", "payment_card", "phone"]


def test_every_built_in_detector_is_scored(scores):
    assert sorted(scores) == BUILT_IN
    assert all(score.labels >= 100 for score in scores.values()), {n: s.labels for n, s in scores.items()}
    assert all(score.negatives >= 300 for score in scores.values())


@pytest.mark.parametrize("name", BUILT_IN)
def test_recall_on_its_kind(scores, name):
    score = scores[name]
    assert score.recall >= MIN_RECALL, f"{name}: recall {score.recall:.3f}, missed {dict(score.missed.most_common(5))}"


@pytest.mark.parametrize("name", BUILT_IN)
def test_false_positives_on_hard_negatives(scores, name):
    score = scores[name]
    assert score.false_positive_rate <= MAX_FALSE_POSITIVE_RATE, f"{name}: fired on {score.fired_on[:10]}"
