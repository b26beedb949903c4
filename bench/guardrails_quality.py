"""Precision and recall of the guardrails' built-in detectors on the labelled evaluation set.

    python bench/guardrails_quality.py [--per-locale 10] [--regions US,GB,...] [--show-misses]

The set (``tests/guardrails_eval_set.py``) is generated with Faker, seeded, in 16 locales, plus
hand-written and Faker-made hard negatives. Per detector: recall on its kinds (every letter and
digit of the value inside a finding of its kind), precision of everything it reported (on
positives of other kinds too, before overlaps between detectors are resolved), and the share of
negatives it fired on. ``tests/test_guardrails_quality.py`` gates on recall >= 0.95 and false
positives <= 2% at ``--per-locale 10``. Runs in a few seconds; nothing leaves the machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from guardrails_eval_set import PHONE_REGIONS, build_eval_set, evaluate  # noqa: E402
from hookgate.detectors import installed_detectors  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-locale", type=int, default=10, help="values of each kind per locale (default 10)")
    parser.add_argument("--regions", default=",".join(PHONE_REGIONS), help="phone regions (default: every locale's)")
    parser.add_argument("--show-misses", action="store_true", help="list the sources of misses and false positives")
    args = parser.parse_args()
    if not 1 <= args.per_locale <= 200:
        parser.error("--per-locale must be 1..200")

    started = time.perf_counter()
    eval_set = build_eval_set(args.per_locale)
    built = time.perf_counter() - started
    detectors = [
        installed.create({"regions": args.regions.split(",")} if name == "phone" else None)
        for name, installed in sorted(installed_detectors().items())
        if installed.entry_point.value.startswith("hookgate.plugins.guardrails_detectors:") and name != "custom_patterns"
    ]
    started = time.perf_counter()
    scores = evaluate(detectors, eval_set)
    scored = time.perf_counter() - started

    print(f"Faker {version('Faker')}, phonenumbers {version('phonenumbers')}, python-stdnum {version('python-stdnum')}")
    print(f"{len(eval_set.positives)} positives, {len(eval_set.negatives)} negatives (built in {built:.1f} s, scored in {scored:.1f} s)")
    dropped = sum(eval_set.dropped.values())
    print(f"{dropped} generated values left out as not real (invalid numbering plan or checksum): {dict(eval_set.dropped.most_common(6))}")
    print()
    print(f"{'detector':<14} {'labels':>6} {'recall':>7} {'precision':>9} {'FP on negatives':>16}")
    for score in scores.values():
        fp = f"{score.negatives_fired}/{score.negatives} ({score.false_positive_rate:.1%})"
        print(f"{score.detector:<14} {score.labels:>6} {score.recall:>7.3f} {score.precision:>9.3f} {fp:>16}")
        if args.show_misses:
            if score.missed:
                print(f"    missed: {dict(score.missed.most_common(8))}")
            if score.fired_on:
                print(f"    fired on: {sorted(set(score.fired_on))[:8]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
