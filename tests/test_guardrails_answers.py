"""The guardrails' answer side as one client receives it: restored values, masked or withheld
findings, the same outcome for a JSON answer, a live stream and a replayed one, several choices,
tool calls, streams cut off, and detectors that fail under fail-closed."""
from __future__ import annotations

import copy

import pytest

from hookgate import assemble_stream, completion_to_chunks
from hookgate.detectors import Finding
from hookgate.plugins.guardrails_answers import BLOCKED_REFUSAL, UNCHECKED_REFUSAL, AnswerGuard
from hookgate.plugins.guardrails_detectors import EmailDetector, PaymentCardDetector
from hookgate.plugins.guardrails_masking import ChatStreamRestorer, restore_chat_completion
from hookgate.plugins.guardrails_metrics import Tally
from hookgate.plugins.guardrails_policies import DetectorFailure, GuardedDetector

CARD = "4111 1111 1111 1111"
RESTORATIONS = {"<EMAIL_1>": "jane@example.org"}


class FailingAfter:
    """Detects nothing for ``calls`` calls, then raises."""

    name = "flaky"
    kinds = frozenset({"SECRET"})

    def __init__(self, calls: int) -> None:
        self.calls = calls

    def detect(self, text: str) -> list[Finding]:
        self.calls -= 1
        if self.calls < 0:
            raise RuntimeError(f"broken on {text}")
        return []


def make_guard(detectors=(PaymentCardDetector(),), *, action="mask", hold_back=32, fail_open=False, include_usage=False):
    failures: list[DetectorFailure] = []
    guarded = [GuardedDetector(d, d.name, min_confidence=0.0, fail_open=fail_open, failures=failures) for d in detectors]
    tally = Tally("answer")
    guard = AnswerGuard(
        make_stream=lambda redact: ChatStreamRestorer(RESTORATIONS, detectors=guarded, redact=redact, hold_back_chars=hold_back, scan_step_chars=8),
        restore_complete=lambda body, redact: restore_chat_completion(body, RESTORATIONS, detectors=guarded, redact=redact),
        action_for=lambda kind: action,
        tally=tally,
        include_usage=include_usage,
    )
    return guard, tally


def answer(*contents: str, finish: str = "stop") -> dict:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": i, "message": {"role": "assistant", "content": c, "refusal": None}, "finish_reason": finish, "logprobs": None}
                    for i, c in enumerate(contents)],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }  # fmt: skip


def stream_of(text: str, pieces: int, *, choice: int = 0, finish: str | None = "stop") -> list[dict]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    chunks = [{**base, "choices": [{"index": choice, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    chunks += [{**base, "choices": [{"index": choice, "delta": {"content": text[i : i + pieces]}, "finish_reason": None}]} for i in range(0, len(text), pieces)]
    if finish:
        chunks.append({**base, "choices": [{"index": choice, "delta": {}, "finish_reason": finish}]})
    return chunks


def through(guard: AnswerGuard, chunks: list[dict]) -> list[dict]:
    out = [c for chunk in chunks for c in guard.chunk(copy.deepcopy(chunk))]
    return out + guard.end()


def text_of(chunks: list[dict], choice: int = 0) -> str:
    return assemble_stream(chunks).body["choices"][choice]["message"]["content"] or ""


MODEL_TEXT = f"Dear <EMAIL_1>, your card {CARD} was charged; regards"


@pytest.mark.parametrize("pieces", [1, 4, 200])
def test_a_json_answer_a_live_stream_and_a_replay_get_the_same_masked_text(pieces):
    expected = "Dear jane@example.org, your card <PAYMENT_CARD> was charged; regards"
    guard, tally = make_guard()
    guard.prepare_body(answer(MODEL_TEXT))
    assert guard.body(answer(MODEL_TEXT))["choices"][0]["message"]["content"] == expected
    live, _ = make_guard()
    assert text_of(through(live, stream_of(MODEL_TEXT, pieces))) == expected
    replayed, _ = make_guard()
    chunks = completion_to_chunks(answer(MODEL_TEXT), include_usage=True)
    replayed.prepare_replay(chunks)
    out = through(replayed, chunks)
    assert text_of(out) == expected and out[-1]["usage"]["total_tokens"] == 3
    assert dict(tally.counts) == {("PAYMENT_CARD", "mask"): 1}


def test_a_replay_reshaped_by_an_earlier_filter_is_handled_live():
    guard, _ = make_guard()
    guard.prepare_replay(completion_to_chunks(answer(MODEL_TEXT), include_usage=False))
    assert text_of(through(guard, stream_of(MODEL_TEXT, 5))) == "Dear jane@example.org, your card <PAYMENT_CARD> was charged; regards"


def test_the_guard_never_changes_the_chunks_or_the_body_it_is_given():
    guard, _ = make_guard(action="block")
    chunks = stream_of(MODEL_TEXT, 3)
    pristine = copy.deepcopy(chunks)
    for chunk in chunks:
        guard.chunk(chunk)
    guard.end()
    body = answer(MODEL_TEXT)
    other, _ = make_guard(action="block")
    other.prepare_body(body)
    assert chunks == pristine and body == answer(MODEL_TEXT)


def test_a_blocked_choice_ends_with_content_filter_and_the_other_choices_go_on():
    guard, tally = make_guard(action="block")
    first, second = stream_of(f"pay {CARD} now please", 2, choice=0), stream_of("nothing to see here at all", 2, choice=1)
    interleaved = [chunk for pair in zip(first, second) for chunk in pair] + first[len(second):] + second[len(first):]
    out = through(guard, interleaved)
    body = assemble_stream(out).body
    blocked, clean = body["choices"]
    assert blocked["finish_reason"] == "content_filter" and blocked["message"]["refusal"] == BLOCKED_REFUSAL.format(kinds="PAYMENT_CARD")
    assert blocked["message"]["content"] == "pay " and "1111" not in str(out)
    assert clean["finish_reason"] == "stop" and clean["message"]["content"] == "nothing to see here at all"
    assert dict(tally.counts) == {("PAYMENT_CARD", "block"): 1} and guard.blocked


def test_a_json_answer_with_a_blocked_finding_has_that_choice_withheld_whole():
    guard, _ = make_guard(action="block")
    body = guard.body(answer(f"card {CARD}", "all clear"))
    assert body["choices"][0] == {
        "index": 0, "message": {"role": "assistant", "content": None, "refusal": BLOCKED_REFUSAL.format(kinds="PAYMENT_CARD")},
        "finish_reason": "content_filter", "logprobs": None,
    }  # fmt: skip
    assert body["choices"][1]["message"]["content"] == "all clear" and body["usage"]["total_tokens"] == 3


def test_tool_call_arguments_are_restored_json_escaped_and_scanned():
    guard, tally = make_guard((EmailDetector(), PaymentCardDetector()))
    arguments = f'{{"to": "<EMAIL_1>", "note": "\\n{CARD}"}}'
    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    calls = [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "pay", "arguments": ""}}]
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": calls}, "finish_reason": None}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": arguments[i : i + 5]}}]}, "finish_reason": None}]}
               for i in range(0, len(arguments), 5)]  # fmt: skip
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    out = through(guard, chunks)
    assert assemble_stream(out).body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == '{"to": "jane@example.org", "note": "\\n<PAYMENT_CARD>"}'
    assert dict(tally.counts) == {("PAYMENT_CARD", "mask"): 1}


def test_a_stream_cut_off_before_its_finish_still_gets_its_held_text():
    guard, _ = make_guard(hold_back=64)
    out = through(guard, stream_of("short <EMAIL_1> note", 3, finish=None))
    assert text_of(out) == "short jane@example.org note"


def test_a_detector_failing_mid_stream_under_fail_closed_ends_the_answer_unchecked():
    guard, _ = make_guard((FailingAfter(3),), hold_back=16)
    out = through(guard, stream_of("x" * 200, 4))
    body = assemble_stream(out).body["choices"][0]
    assert body["finish_reason"] == "content_filter" and body["message"]["refusal"] == UNCHECKED_REFUSAL
    assert len(body["message"]["content"] or "") < 200 and guard.unchecked


def test_a_detector_failing_under_fail_open_is_left_out_and_the_answer_goes_on():
    guard, _ = make_guard((FailingAfter(0), PaymentCardDetector()), fail_open=True)
    out = through(guard, stream_of(f"card {CARD} ok", 3))
    assert text_of(out) == "card <PAYMENT_CARD> ok" and assemble_stream(out).body["choices"][0]["finish_reason"] == "stop"


def test_log_lets_the_finding_through_and_counts_it():
    guard, tally = make_guard(action="log")
    assert text_of(through(guard, stream_of(f"card {CARD}", 2))) == f"card {CARD}"
    assert dict(tally.counts) == {("PAYMENT_CARD", "log"): 1}


def test_a_reshaped_replay_forgets_what_was_prepared():
    guard, _ = make_guard(action="block")
    guard.prepare_replay(completion_to_chunks(answer(f"card {CARD}"), include_usage=False))
    out = through(guard, stream_of("an answer reshaped by another filter", 4))
    assert text_of(out) == "an answer reshaped by another filter" and assemble_stream(out).body["choices"][0]["finish_reason"] == "stop"
