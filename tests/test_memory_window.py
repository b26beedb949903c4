"""The memory plugin's fitting rules (plugins/memory_window.py): which stored turns go upstream."""
from __future__ import annotations

import itertools
import random

from hookgate.plugins.memory_window import Counted, fit_history

SYSTEM = [Counted({"role": "system", "content": "You are terse."}, 10)]


def user(text: str, tokens: int = 10) -> Counted:
    return Counted({"role": "user", "content": text}, tokens)


def assistant(text: str, tokens: int = 10) -> Counted:
    return Counted({"role": "assistant", "content": text}, tokens)


def call(*ids: str, tokens: int = 10) -> Counted:
    calls = [{"id": i, "type": "function", "function": {"name": "lookup", "arguments": "{}"}} for i in ids]
    return Counted({"role": "assistant", "content": None, "tool_calls": calls}, tokens)


def result(call_id: str, tokens: int = 10) -> Counted:
    return Counted({"role": "tool", "tool_call_id": call_id, "content": "42"}, tokens)


def texts(messages):
    """Each message as a word: its text, a call's ids, a result's call id."""
    return [m["tool_call_id"] if m["role"] == "tool" else m.get("content") or ",".join(c["id"] for c in m["tool_calls"]) for m in messages]


HISTORY = [user("u0"), assistant("a0"), user("u1"), call("c1"), result("c1"), assistant("a1"), user("u2"), assistant("a2")]


def test_everything_fits_the_whole_history_is_sent_in_order():
    fitted = fit_history(system=SYSTEM, history=HISTORY, start=0, new=[user("u3")], budget=10_000)
    assert texts(fitted.messages) == ["You are terse.", "u0", "a0", "u1", "c1", "c1", "a1", "u2", "a2", "u3"]
    assert (fitted.history, fitted.turns_sent, fitted.turns_dropped) == ("full", 3, 0)
    assert fitted.tokens == 3 + 10 + 80 + 10, "priming, system, history, new"


def test_the_oldest_whole_turns_are_dropped_and_the_system_prompt_stays():
    budget = 3 + 10 + 10 + 20 + 40  # priming, system, new, room for turns u2 (20) and u1 (40)
    fitted = fit_history(system=SYSTEM, history=HISTORY, start=0, new=[user("u3")], budget=budget)
    assert texts(fitted.messages) == ["You are terse.", "u1", "c1", "c1", "a1", "u2", "a2", "u3"]
    assert (fitted.history, fitted.turns_sent, fitted.turns_dropped) == ("trimmed", 2, 1)
    smaller = fit_history(system=SYSTEM, history=HISTORY, start=0, new=[user("u3")], budget=budget - 1)
    assert texts(smaller.messages) == ["You are terse.", "u2", "a2", "u3"], "u1's turn does not fit whole: it goes whole"


def test_no_budget_at_all_still_sends_the_system_prompt_and_the_new_turn():
    fitted = fit_history(system=SYSTEM, history=HISTORY, start=0, new=[user("u3")], budget=-5)
    assert texts(fitted.messages) == ["You are terse.", "u3"] and fitted.turns_dropped == 3


def test_tool_results_sent_as_the_new_turn_keep_the_call_they_answer():
    history = [*HISTORY, user("u3"), call("c3a", "c3b")]
    new = [result("c3a"), result("c3b")]
    fitted = fit_history(system=SYSTEM, history=history, start=0, new=new, budget=3 + 10 + 20 + 20)
    assert texts(fitted.messages) == ["You are terse.", "u3", "c3a,c3b", "c3a", "c3b"]
    assert fitted.turns_sent == 1


def test_a_tool_call_is_never_separated_from_its_results_whatever_the_budget():
    rng = random.Random(7)
    for trial in range(200):
        history = []
        for turn in range(rng.randint(1, 8)):
            history.append(user(f"u{turn}", rng.randint(1, 30)))
            for step in range(rng.randint(0, 2)):
                ids = [f"t{turn}.{step}.{k}" for k in range(rng.randint(1, 3))]
                history.append(call(*ids, tokens=rng.randint(1, 20)))
                history.extend(result(i, rng.randint(1, 20)) for i in ids)
            history.append(assistant(f"a{turn}", rng.randint(1, 30)))
        start = rng.choice([0, 0, 3])
        fitted = fit_history(system=SYSTEM, history=history, start=start, new=[user("next")], budget=rng.randint(-10, 400))
        sent = fitted.messages
        answered: set[str] = set()
        open_calls: list[str] = []
        for message in sent:
            if message["role"] == "tool":
                assert message["tool_call_id"] in open_calls, f"trial {trial}: a result without its call"
                open_calls.remove(message["tool_call_id"])
                answered.add(message["tool_call_id"])
            else:
                assert not open_calls, f"trial {trial}: a call without all its results"
                open_calls = [c["id"] for c in message.get("tool_calls") or ()]
        assert not open_calls
        assert sent[0] == SYSTEM[0].message and sent[-1]["content"] == "next"


def test_tool_results_left_at_the_front_by_an_eviction_are_not_sent():
    evicted_front = [result("gone"), assistant("after the result"), user("u1"), assistant("a1")]
    fitted = fit_history(system=SYSTEM, history=evicted_front, start=12, new=[user("u2")], budget=10_000)
    assert texts(fitted.messages) == ["You are terse.", "after the result", "u1", "a1", "u2"]
    assert fitted.history == "trimmed", "the conversation's oldest messages are gone"


def test_a_summary_stands_in_for_the_turns_it_covers():
    summary = Counted({"role": "system", "content": "Summary: u0 and u1 happened."}, 12)
    budget = 3 + 10 + 10 + 20 + 12  # room for the summary and u2's turn only
    fitted = fit_history(system=SYSTEM, history=HISTORY, start=0, new=[user("u3")], budget=budget, summary=summary, summary_upto=6)
    assert texts(fitted.messages) == ["You are terse.", "Summary: u0 and u1 happened.", "u2", "a2", "u3"]
    assert (fitted.history, fitted.turns_sent, fitted.turns_dropped) == ("summarised", 1, 2)
    assert fitted.tokens == budget


def test_a_summary_is_not_sent_when_everything_fits():
    summary = Counted({"role": "system", "content": "Summary"}, 12)
    fitted = fit_history(system=SYSTEM, history=HISTORY, start=0, new=[user("u3")], budget=10_000, summary=summary, summary_upto=2)
    assert fitted.history == "full" and "Summary" not in texts(fitted.messages)


def test_with_room_the_verbatim_turns_after_the_summary_are_kept_too():
    summary = Counted({"role": "system", "content": "Summary of u0"}, 5)
    fitted = fit_history(system=SYSTEM, history=HISTORY, start=0, new=[user("u3")], budget=3 + 10 + 10 + 5 + 60, summary=summary, summary_upto=2)
    assert texts(fitted.messages)[:3] == ["You are terse.", "Summary of u0", "u1"], "nothing the summary does not cover is dropped"


def test_a_summary_is_asked_for_when_turns_are_dropped_reaching_half_the_room():
    full = fit_history(system=SYSTEM, history=HISTORY, start=0, new=[user("u3")], budget=10_000, want_summary=True)
    assert full.summarise_upto is None, "nothing dropped, nothing to summarise"
    fixed = 3 + 10 + 10
    wide = fit_history(system=SYSTEM, history=HISTORY, start=0, new=[user("u3")], budget=fixed + 60, want_summary=True, keep_ratio=0.5)
    assert texts(wide.messages)[1] == "u1", "u0's turn is dropped now"
    assert (wide.summarise_from, wide.summarise_upto) == (0, 6), "u0 and u1: what is left (u2, 20 tokens) takes at most half of 60"
    narrow = fit_history(system=SYSTEM, history=HISTORY, start=0, new=[user("u3")], budget=fixed + 25, want_summary=True, keep_ratio=0.5)
    assert (narrow.summarise_from, narrow.summarise_upto) == (0, 8), "not even u2 fits in half of 25: everything"
    fresh = fit_history(
        system=SYSTEM, history=HISTORY, start=0, new=[user("u3")], budget=3 + 10 + 10 + 20 + 12, want_summary=True,
        summary=Counted({"role": "system", "content": "S"}, 12), summary_upto=6,
    )
    assert fresh.history == "summarised" and fresh.summarise_upto is None, "the summary covers what was dropped"
    stale = fit_history(
        system=SYSTEM, history=[*HISTORY, user("u3"), assistant("a3")], start=0, new=[user("u4")], budget=3 + 10 + 10 + 20 + 12,
        want_summary=True, summary=Counted({"role": "system", "content": "S"}, 12), summary_upto=6,
    )
    assert stale.summarise_from == 6 and stale.summarise_upto == 10, "u2's turn fell out: a new summary builds on the old one"


def test_budgets_never_make_the_fit_exceed_them_when_a_fit_is_possible():
    for budget, with_summary in itertools.product(range(33, 140), (False, True)):
        summary = Counted({"role": "system", "content": "S"}, 7) if with_summary else None
        fitted = fit_history(system=SYSTEM, history=HISTORY, start=0, new=[user("u3")], budget=budget, summary=summary, summary_upto=2 if summary else 0)
        assert fitted.tokens <= budget, (budget, with_summary, fitted)
