"""What the guardrails' detectors and masking cost in CPU, per request and per streamed chunk.

    python bench/guardrails_overhead.py [--repeat 5] [--regions US]

1. Each built-in detector alone, then all of them through ``scan`` + ``non_overlapping``, on
   1 KB and 100 KB prompts, both plain prose and "dense" (a finding every ~250 characters).
   CPU time of the calling thread (``time.thread_time``), median of ``--repeat`` runs.
2. ``mask_chat_request`` end to end (fields, scan, placeholders, copy) on the same prompts.
3. A streamed answer of 4 KB in 4-character deltas through ``StreamRestorer`` with every
   detector: CPU per delta, and the characters held back before the first release (the added
   time to first token is that many characters' worth of generation).
Single-threaded, no network; the run takes well under a minute.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

from hookgate.detectors import installed_detectors, non_overlapping, scan
from hookgate.plugins.guardrails_masking import StreamRestorer, mask_chat_request

PROSE = (
    "The quarterly review covered the migration plan, the budget for the new region and the "
    "hiring schedule. Every team reported its progress, risks and the help it needs next month. "
)
FINDINGS = [
    "jane.doe@example.org", "+44 20 7946 0958", "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32",
    "10.20.30.40", "536-22-8726", "sk-proj-AbCdEf1234567890abcdefGHIJKLmnopqrstuv12", "postgres://app:s3cret@db/x",
]


def prompt(chars: int, dense: bool) -> str:
    parts, size, i = [], 0, 0
    while size < chars:
        piece = PROSE + (f"Contact {FINDINGS[i % len(FINDINGS)]} today. " if dense else "")
        parts.append(piece)
        size += len(piece)
        i += 1
    return "".join(parts)[:chars]


def cpu_ms(work: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.thread_time()
        work()
        times.append(time.thread_time() - started)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure, median reported (default 5)")
    parser.add_argument("--regions", default="US", help="phone regions, comma-separated (default US)")
    args = parser.parse_args()
    if not 1 <= args.repeat <= 50:
        parser.error("--repeat must be 1..50")

    detectors = [
        installed.create({"regions": args.regions.split(",")} if name == "phone" else None)
        for name, installed in sorted(installed_detectors().items())
        if installed.entry_point.value.startswith("hookgate.plugins.guardrails_detectors:") and name != "custom_patterns"
    ]
    prompts = {(size, dense): prompt(size, dense) for size in (1_000, 100_000) for dense in (False, True)}
    print(f"CPU ms per scan (median of {args.repeat}, calling thread; phone regions: {args.regions})")
    header = "".join(f"{size // 1000:>10} KB {'dense' if dense else 'prose'}" for size, dense in prompts)
    print(f"{'':<24}{header}")
    for detector in detectors:
        row = "".join(f"{cpu_ms(lambda: detector.detect(text), args.repeat):>16.2f}" for text in prompts.values())
        print(f"{detector.name:<24}{row}")
    row = "".join(f"{cpu_ms(lambda: non_overlapping(scan(text, detectors)), args.repeat):>16.2f}" for text in prompts.values())
    print(f"{'all (scan)':<24}{row}")
    row = "".join(
        f"{cpu_ms(lambda: mask_chat_request(body(text), lambda t: scan(t, detectors)), args.repeat):>16.2f}"
        for text in prompts.values()
    )
    print(f"{'mask_chat_request':<24}{row}")
    counts = "".join(f"{len(non_overlapping(scan(text, detectors))):>16}" for text in prompts.values())
    print(f"{'findings':<24}{counts}")

    print()
    answer = prompt(4_000, dense=True)
    deltas = [answer[i : i + 4] for i in range(0, len(answer), 4)]
    print(f"stream: {len(answer)} chars in {len(deltas)} deltas of 4 chars, every detector on the answer")
    for hold_back, step in ((0, 1), (64, 16), (128, 32), (256, 64)):
        restorer = StreamRestorer({}, detectors=detectors if hold_back else (), hold_back_chars=hold_back, scan_step_chars=step)
        first_release = None
        started = time.thread_time()
        received = 0
        for delta in deltas:
            received += len(delta)
            if restorer.feed(delta).text and first_release is None:
                first_release = received
        restorer.finish()
        spent = time.thread_time() - started
        label = "placeholders only" if not hold_back else f"hold_back {hold_back}, step {step}"
        print(
            f"  {label:<24} {spent * 1e6 / len(deltas):8.1f} us CPU/delta   first text after {first_release or len(answer):>4} chars"
            f"   peak held {restorer.peak_held_chars:>4} (bound {restorer.max_held_chars})"
        )
    return 0


def body(text: str) -> dict:
    return {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]}


if __name__ == "__main__":
    sys.exit(main())
