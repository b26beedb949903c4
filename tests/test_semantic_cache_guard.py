"""The semantic cache's guard: near-misses above the similarity threshold are refused, and the
verdict says which check refused. Examples are written for these tests (not taken from the
fow-cache set the quality gate measures), so they also show the checks generalise."""
from __future__ import annotations

import math
import random
import time

import pytest
from pydantic import ValidationError

from hookgate.plugins.semantic_cache_guard import (
    GuardCheck,
    GuardConfig,
    GuardVerdict,
    SemanticCacheGuard,
    analyse_prompt,
)

HIGH = 0.95  # a similarity above any threshold: only the checks decide

NEAR_MISSES = [
    # negation: cues, fused prefixes, opposites
    ("Can I pay by card at the counter?", "Can't I pay by card at the counter?", GuardCheck.NEGATION),
    ("Is the hotel suitable for wheelchair users?", "Is the hotel unsuitable for wheelchair users?", GuardCheck.NEGATION),
    ("Is the ticket refundable?", "Is the ticket non-refundable?", GuardCheck.NEGATION),
    ("Which rooms are included in the tour?", "Which rooms are excluded from the tour?", GuardCheck.NEGATION),
    ("Is the museum open on bank holidays?", "Is the museum closed on bank holidays?", GuardCheck.NEGATION),
    ("How do I enable notifications on my watch?", "How do I disable notifications on my watch?", GuardCheck.NEGATION),
    ("Can I fly with a power bank?", "Can I fly without a power bank?", GuardCheck.NEGATION),
    # numbers, in canonical units
    ("Is parcel 77120 out for delivery?", "Is parcel 77102 out for delivery?", GuardCheck.NUMBERS),
    ("How much is a 20kg suitcase?", "How much is a 30kg suitcase?", GuardCheck.NUMBERS),
    ("Wake me up at 6am", "Wake me up at 6pm", GuardCheck.NUMBERS),
    ("What's the fee on a £1,200 transfer?", "What's the fee on a £12,000 transfer?", GuardCheck.NUMBERS),
    ("Can I return shoes within 28 days?", "Can I return shoes within 3 days?", GuardCheck.NUMBERS),
    ("How many calories are in two bananas?", "How many calories are in five bananas?", GuardCheck.NUMBERS),
    ("Is the 10:20 bus running?", "Is the 10:50 bus running?", GuardCheck.NUMBERS),
    # units not attached to a number
    ("Convert 250 GBP to EUR", "Convert 250 GBP to USD", GuardCheck.UNITS),
    # dates
    ("Is the pool open on Thursday?", "Is the pool open on Saturday?", GuardCheck.DATES),
    ("What was my gas bill in March?", "What was my gas bill in November?", GuardCheck.DATES),
    ("Can you deliver it tomorrow?", "Can you deliver it today?", GuardCheck.DATES),
    ("What's on at the cinema this weekend?", "What's on at the cinema next weekend?", GuardCheck.DATES),
    # direction, comparison, roles
    ("Should I stretch before running?", "Should I stretch after running?", GuardCheck.DIRECTION),
    ("Which phones have more storage?", "Which phones have less storage?", GuardCheck.DIRECTION),
    ("Is it a good time to buy shares?", "Is it a good time to sell shares?", GuardCheck.DIRECTION),
    ("Is shipping free on orders over $30?", "Is shipping free on orders under $30?", GuardCheck.DIRECTION),
    ("Move £20 from my ISA to my current account", "Move £20 from my current account to my ISA", GuardCheck.DIRECTION),
    ("How do I export contacts from Outlook to Gmail?", "How do I export contacts from Gmail to Outlook?", GuardCheck.DIRECTION),
    ("How do I opt in to marketing emails?", "How do I opt out of marketing emails?", GuardCheck.DIRECTION),
    ("What time is check-in at the hostel?", "What time is check-out at the hostel?", GuardCheck.DIRECTION),
    # named entities, acronyms, quoted strings, code identifiers
    ("What's the refund policy at Tesco?", "What's the refund policy at Sainsbury's?", GuardCheck.ENTITIES),
    ("Do I need a visa for Japan?", "Do I need a visa for Brazil?", GuardCheck.ENTITIES),
    ("What does error 'disk quota exceeded' mean?", "What does error 'disk not found' mean?", GuardCheck.ENTITIES),
    ("Why does load_config() return None?", "Why does save_config() return None?", GuardCheck.ENTITIES),
    ("Is the HSBC app down?", "Is the NatWest app down?", GuardCheck.ENTITIES),
    # near-identical wording, a content word changed or added
    ("What shots does my kitten need?", "What shots does my rabbit need?", GuardCheck.LEXICAL),
    ("What's the luggage allowance in premium economy?", "What's the luggage allowance in first class?", GuardCheck.LEXICAL),
    ("How long is the warranty on the laptop?", "How long is the extended warranty on the laptop?", GuardCheck.LEXICAL),
    ("What are the side effects of the vaccine?", "What are the side effects of the vaccine in pregnancy?", GuardCheck.LEXICAL),
]

SAME_QUESTION = [
    ("How do I cancel my gym membership?", "How can I cancel my gym membership?"),
    ("How do I cancel my gym membership?", "Hi there, how do I cancel my gym membership? Thanks!"),
    ("How do I cancel my gym membership?", "how do i cancel my gym membership"),
    ("How do I cancel my gym membership?", "HOW DO I CANCEL MY GYM MEMBERSHIP?"),
    ("How do I cancel my gym membership?", "How do I cancel my gym memebership?"),  # typo
    ("How do I cancel my gym membership?", "um so how do i cancel my gym membership"),
    ("When does the spring term start?", "When does the spring term begin?"),
    ("How do I update my delivery address?", "How do I change my delivery address?"),
    ("How do I sign up for the newsletter?", "How do I register for the newsletter?"),
    ("Can I get a refund within 14 days?", "Can I get a refund within two weeks?"),  # canonical units
    ("Is there a table for four at 8pm?", "Is there a table for 4 at 8 pm?"),
    ("Where can I find my invoices?", "Where do I find my invoices?"),
    ("Do you ship to Ireland?", "Do you deliver to Ireland?".replace("deliver", "ship")),
    ("What's the price of a day pass?", "How much is a day pass?"),
    ("Is the swimming pool heated?", "Is the swimming pool heated ?!"),
    ("How do I turn off two-factor authentication?", "How do I disable two-factor authentication?"),
]


@pytest.fixture
def guard() -> SemanticCacheGuard:
    return SemanticCacheGuard()


@pytest.mark.parametrize(("cached", "new", "check"), NEAR_MISSES, ids=[f"{c.value}:{a}" for a, _, c in NEAR_MISSES])
def test_a_near_miss_above_the_threshold_is_refused_and_the_verdict_says_why(guard, cached, new, check):
    verdict = guard.check(cached, new, HIGH)
    assert not verdict.serve
    assert check in verdict.refused_by, verdict.refused_by
    assert verdict.check == verdict.refused_by[0]
    # symmetric: the cache may hold either prompt
    assert check in guard.check(new, cached, HIGH).refused_by


@pytest.mark.parametrize(("cached", "new"), SAME_QUESTION, ids=[b for _, b in SAME_QUESTION])
def test_the_same_question_reworded_is_served(guard, cached, new):
    verdict = guard.check(cached, new, HIGH)
    assert verdict == GuardVerdict(True, (), HIGH)
    assert verdict.check is None


def test_below_the_threshold_nothing_else_is_asked(guard):
    assert guard.check("a", "a", 0.5).refused_by == (GuardCheck.THRESHOLD,)
    assert guard.check("same text", "same text", math.nan).refused_by == (GuardCheck.THRESHOLD,)
    assert guard.check("same text", "same text", GuardConfig().similarity_threshold).serve


def test_each_check_can_be_switched_off():
    cached, new = "Is parcel 77120 out for delivery?", "Is parcel 77102 out for delivery?"
    assert not SemanticCacheGuard().check(cached, new, HIGH).serve
    assert SemanticCacheGuard(GuardConfig(numbers=False)).check(cached, new, HIGH).serve
    everything_off = GuardConfig(negation=False, numbers=False, units=False, dates=False, direction=False, entities=False, lexical=False)
    for cached, new, _ in NEAR_MISSES:
        assert SemanticCacheGuard(everything_off).check(cached, new, HIGH).serve


def test_every_refusing_check_is_listed_in_a_fixed_order(guard):
    verdict = guard.check("Book a table at Nando's for 2 on Friday", "Book a table at Zizzi for 6 on Sunday", HIGH)
    assert verdict.refused_by == (GuardCheck.NUMBERS, GuardCheck.DATES, GuardCheck.ENTITIES, GuardCheck.LEXICAL)
    assert verdict.check is GuardCheck.NUMBERS
    assert {c.value for c in GuardCheck} >= {"negation", "numbers", "units", "dates", "direction", "entities", "lexical"}


def test_stored_features_give_the_same_verdict_as_text(guard):
    for cached, new, _ in NEAR_MISSES[:10]:
        assert guard.check(analyse_prompt(cached), analyse_prompt(new), HIGH) == guard.check(cached, new, HIGH)


def test_long_prompts_are_refused_unread_and_cheaply(guard):
    limit = GuardConfig().max_prompt_chars
    huge = "word " * 1_000_000
    started = time.perf_counter()
    verdict = guard.check(huge, huge, 1.0)
    assert time.perf_counter() - started < 0.01
    assert verdict.refused_by == (GuardCheck.TOO_LONG,)
    at_limit = ("x" * (limit - 1)) + "?"
    assert guard.check(at_limit, at_limit, 1.0).serve
    stored = analyse_prompt(at_limit + "!")  # features analysed elsewhere obey the same bound
    assert guard.check(stored, at_limit, 1.0).refused_by == (GuardCheck.TOO_LONG,)


def test_any_text_gets_a_verdict_never_an_exception(guard):
    rng = random.Random(1234)
    alphabet = "aZ09 ,.;:'\"`-_/@£$€%?!\n\t()[]{}é漢字🙂\u200b\x00"
    for _ in range(500):
        a = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        b = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        verdict = guard.check(a, b, rng.random())
        assert isinstance(verdict, GuardVerdict)
    assert guard.check("", "", 1.0).serve


def test_config_is_validated_and_documented():
    with pytest.raises(ValidationError):
        GuardConfig(similarity_threshold=1.5)
    with pytest.raises(ValidationError):
        GuardConfig(negations=False)  # a typo is an error, not silently ignored
    schema = GuardConfig.model_json_schema()
    assert all(field.get("description") for field in schema["properties"].values())
