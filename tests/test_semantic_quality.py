"""The semantic cache's quality gate: on fow-cache's labelled pairs, the semantic_cache plugin's
default configuration serves few wrong answers and still serves paraphrases (bench/semantic_quality.py prints the full
tables). The vectors are embedded once and kept in the temp folder, keyed by the model id and the
dataset version: the first run embeds ~1,400 texts (tens of seconds), later runs take seconds."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from hookgate.plugins.semantic_cache import SemanticCacheConfig

BENCH = Path(__file__).resolve().parents[1] / "bench" / "semantic_quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("semantic_quality", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module's annotations through it
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def run(quality):
    import asyncio

    return asyncio.run(quality.evaluate(SemanticCacheConfig().guard))


def test_the_whole_labelled_set_is_measured(run):
    assert len(run.questions) == 600 and len(run.conversations) == 240
    assert run.model_id.startswith("all-MiniLM-L6-v2/int8/")
    assert {p.group for p in run.questions} >= {"paraphrase", "near_repeat", "negation", "entity_swap", "number_date", "scope"}


def test_near_misses_rarely_get_a_wrong_answer_while_paraphrases_are_served(run, quality):
    rates = run.rates("questions: guard")
    assert rates.traps == 301 and rates.paraphrases == 199
    assert rates.wrong_rate <= quality.MAX_NEAR_MISS_WRONG, f"{rates.wrong}/{rates.traps} near-misses served"
    assert rates.paraphrase_rate >= quality.MIN_PARAPHRASES_SERVED, f"{rates.paraphrases_served}/{rates.paraphrases} paraphrases"


def test_the_guard_is_what_keeps_wrong_answers_out(run):
    plain = run.rates("questions: threshold only")
    guarded = run.rates("questions: guard")
    assert plain.wrong_rate > 0.3  # the same threshold alone serves a wrong answer to most near-misses
    assert guarded.wrong <= plain.wrong / 10


def test_conversations_get_no_wrong_answer_thanks_to_the_partition(run):
    last_message_only = run.rates("conversations: last message, threshold only")
    partitioned = run.rates("conversations: partition + guard")
    assert last_message_only.wrong_rate > 0.9  # identical final messages after different chats
    assert partitioned.traps == 121 and partitioned.wrong == 0
    for pair, outcome in zip(*run.strategies["conversations: partition + guard"]):
        if outcome.served:
            assert pair.same_prefix


def test_every_category_appears_in_the_printed_report(run, quality, capsys):
    assert quality.print_report(run, [0.7, run.guard_config.similarity_threshold, 0.9])
    printed = capsys.readouterr().out
    for group in ("negation", "entity_swap", "number_date", "scope", "paraphrase", "near_repeat", "context_swap", "intent_flip"):
        assert f"  {group}" in printed
    assert "PASS  near-miss questions given a wrong answer" in printed and "FAIL" not in printed
