"""Masking before the provider, restoring for the client: placeholders stable per value, originals
back in JSON and in streams whatever the chunk boundaries, answer-side findings caught across
chunks within a bounded hold-back."""
from __future__ import annotations

import copy
import itertools
import json

import pytest

from hookgate.detectors import DetectorError, Finding, scan
from hookgate.plugins.guardrails_detectors import CredentialsDetector, EmailDetector, PaymentCardDetector
from hookgate.plugins.guardrails_masking import (
    ChatStreamRestorer,
    Masker,
    StreamRestorer,
    chat_request_fields,
    json_scan_view,
    mask_chat_request,
    restore_answer,
    restore_chat_completion,
    restore_text,
)

DETECTORS = [EmailDetector(), PaymentCardDetector(), CredentialsDetector()]
CARD = "4111 1111 1111 1111"


def find(text: str) -> list[Finding]:
    return scan(text, DETECTORS)


def redact(finding: Finding) -> str:
    return f"[{finding.kind}]"


def request(*contents, tool_arguments: str | None = None) -> dict:
    messages = [{"role": "user", "content": content} for content in contents]
    if tool_arguments is not None:
        call = {"id": "call_1", "type": "function", "function": {"name": "send", "arguments": tool_arguments}}
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    return {"model": "gpt-4o-mini", "messages": messages, "temperature": 0}


def restorer_output(restorer: StreamRestorer, pieces) -> str:
    out = "".join(restorer.feed(piece).text for piece in pieces)
    return out + restorer.finish().text


# --- request side --------------------------------------------------------------------------------


def test_the_provider_sees_typed_placeholders_stable_per_value():
    body = request(f"mail jane@example.org, then bob@example.com, then jane@example.org again; card {CARD}")
    masked = mask_chat_request(body, find)
    assert masked.body["messages"][0]["content"] == "mail <EMAIL_1>, then <EMAIL_2>, then <EMAIL_1> again; card <PAYMENT_CARD_1>"
    assert dict(masked.restorations) == {"<EMAIL_1>": "jane@example.org", "<EMAIL_2>": "bob@example.com", "<PAYMENT_CARD_1>": CARD}
    assert [f.kind for f in masked.findings] == ["EMAIL", "EMAIL", "EMAIL", "PAYMENT_CARD"]


def test_each_kind_is_numbered_on_its_own():
    masker = Masker()
    assert [masker.placeholder(kind, value) for kind, value in [("EMAIL", "a@x.io"), ("IBAN", "GB82"), ("EMAIL", "b@x.io"), ("EMAIL", "a@x.io")]] == [
        "<EMAIL_1>", "<IBAN_1>", "<EMAIL_2>", "<EMAIL_1>",
    ]
    with pytest.raises(TypeError):
        masker.restorations["<EMAIL_3>"] = "c@x.io"  # read-only: only the masker issues placeholders


def test_placeholders_are_stable_across_messages_and_text_parts():
    body = request("I am jane@example.org", [{"type": "text", "text": "reply to jane@example.org"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}])
    masked = mask_chat_request(body, find)
    parts = masked.body["messages"][1]["content"]
    assert masked.body["messages"][0]["content"] == "I am <EMAIL_1>"
    assert parts == [{"type": "text", "text": "reply to <EMAIL_1>"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]


def test_masking_does_not_change_the_clients_body():
    body = request(f"card {CARD}", tool_arguments='{"to": "jane@example.org"}')
    before = copy.deepcopy(body)
    masked = mask_chat_request(body, find)
    assert body == before and masked.body != before
    assert masked.body["temperature"] == 0 and masked.body["model"] == "gpt-4o-mini"


def test_a_body_without_findings_is_sent_as_it_came():
    body = request("nothing to see here")
    masked = mask_chat_request(body, find)
    assert masked.body == body and masked.findings == () and not masked.restorations


def test_a_placeholder_the_user_typed_is_never_issued_nor_restored():
    body = request("the template says <EMAIL_1>; my address is jane@example.org")
    masked = mask_chat_request(body, find)
    assert masked.body["messages"][0]["content"] == "the template says <EMAIL_1>; my address is <EMAIL_2>"
    answer = "Your template has <EMAIL_1> and your address is <EMAIL_2>."
    assert restore_text(answer, masked.restorations) == "Your template has <EMAIL_1> and your address is jane@example.org."


def test_tool_call_arguments_are_masked_and_restored_as_json():
    arguments = json.dumps({"to": 'o"hara@example.org', "note": f"line\n{CARD}"})
    masked = mask_chat_request(request("hi", tool_arguments=arguments), find)
    sent = masked.body["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(sent) == {"to": 'o"<EMAIL_1>', "note": "line\n<PAYMENT_CARD_1>"}
    # The value is restored JSON-escaped into arguments, and plain into content.
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Sent to <EMAIL_1>", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "send", "arguments": json.dumps({"card": "<PAYMENT_CARD_1>", "to": "<EMAIL_1>"})}}]}, "finish_reason": "tool_calls"}]}
    restored, _ = restore_chat_completion(answer, masked.restorations)
    message = restored["choices"][0]["message"]
    assert message["content"] == "Sent to hara@example.org"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"card": CARD, "to": "hara@example.org"}


def test_the_json_view_keeps_offsets_and_hides_escapes():
    raw = json.dumps({"a": f"x\n{CARD}\t\u00e9"}, ensure_ascii=True)
    view = json_scan_view(raw)
    assert len(view) == len(raw) and "\\" not in view and CARD in view
    assert [f.kind for f in find(view)] == ["PAYMENT_CARD"]
    assert chat_request_fields(request("a", tool_arguments=raw))[1].scan_text == view


# --- answer side, complete -----------------------------------------------------------------------


def test_the_client_gets_the_originals_back_and_unknown_placeholders_stay():
    restorations = {"<EMAIL_1>": "jane@example.org"}
    assert restore_text("Hi <EMAIL_1>, not <EMAIL_9> nor <email_1>", restorations) == "Hi jane@example.org, not <EMAIL_9> nor <email_1>"


def test_the_answer_is_scanned_before_restoring_so_the_clients_values_are_not_findings():
    released = restore_answer(
        "To <EMAIL_1>: your key is sk-proj-AbCdEf1234567890abcdefGHIJKLmnopqrstuv12.",
        {"<EMAIL_1>": "jane@example.org"},
        detectors=DETECTORS,
        redact=redact,
    )
    assert released.text == "To jane@example.org: your key is [API_KEY]."
    assert [f.kind for f in released.findings] == ["API_KEY"] and released.restored == 1


def test_a_finding_is_reported_but_kept_when_redact_lets_it_through():
    released = restore_answer("write to bob@example.com", {}, detectors=DETECTORS, redact=lambda f: None)
    assert released.text == "write to bob@example.com"
    assert [(f.kind, f.start, f.end) for f in released.findings] == [("EMAIL", 9, 24)]


# --- streams -------------------------------------------------------------------------------------

RESTORATIONS = {"<EMAIL_1>": "jane@example.org", "<PAYMENT_CARD_12>": CARD, "<IBAN_1>": "GB82 WEST 1234 5698 7654 32"}
ANSWER = "Dear <EMAIL_1>, card <PAYMENT_CARD_12> <ok> a<b <EMAIL_1><IBAN_1>. <EMAIL_"


def test_placeholders_split_at_every_boundary_restore_exactly():
    expected = restore_text(ANSWER, RESTORATIONS)
    for cut in range(len(ANSWER) + 1):
        assert restorer_output(StreamRestorer(RESTORATIONS), [ANSWER[:cut], ANSWER[cut:]]) == expected, cut


def test_placeholders_split_at_every_pair_of_boundaries_restore_exactly():
    expected = restore_text(ANSWER, RESTORATIONS)
    for first, second in itertools.combinations(range(len(ANSWER) + 1), 2):
        pieces = [ANSWER[:first], ANSWER[first:second], ANSWER[second:]]
        assert restorer_output(StreamRestorer(RESTORATIONS), pieces) == expected, (first, second)


def test_character_by_character_only_an_open_placeholder_is_held():
    restorer = StreamRestorer(RESTORATIONS)
    held = []
    for char in "ab <EMAI":
        restorer.feed(char)
        held.append(restorer.held_chars)
    assert held == [0, 0, 0, 1, 2, 3, 4, 5]
    assert restorer.feed("L_1> done").text == "jane@example.org done"
    assert restorer.max_held_chars == len("<PAYMENT_CARD_12>") - 1


def test_text_that_cannot_become_a_placeholder_is_released_at_once():
    restorer = StreamRestorer(RESTORATIONS)
    assert restorer.feed("a <b> <EMAIL_2").text == "a <b> <EMAIL_2"
    assert restorer.feed("<x").text == "<x" and restorer.held_chars == 0


STREAMED = f"Write to bob@example.com or pay with {CARD} today. Thanks <EMAIL_1>!"


def streamed_expected() -> str:
    return restore_answer(STREAMED, RESTORATIONS, detectors=DETECTORS, redact=redact).text


@pytest.mark.parametrize("hold_back, step", [(32, 1), (32, 8), (64, 32)])
def test_findings_split_at_every_boundary_are_caught_within_the_hold_back(hold_back, step):
    expected = streamed_expected()
    assert expected == "Write to [EMAIL] or pay with [PAYMENT_CARD] today. Thanks jane@example.org!"
    for cut in range(len(STREAMED) + 1):
        restorer = StreamRestorer(RESTORATIONS, detectors=DETECTORS, redact=redact, hold_back_chars=hold_back, scan_step_chars=step)
        assert restorer_output(restorer, [STREAMED[:cut], STREAMED[cut:]]) == expected, cut


def test_one_token_at_a_time_the_stream_holds_no_more_than_its_bound():
    restorer = StreamRestorer(RESTORATIONS, detectors=DETECTORS, redact=redact, hold_back_chars=24, scan_step_chars=4)
    pieces = [STREAMED[i : i + 3] for i in range(0, len(STREAMED), 3)]
    released, findings = [], []
    for piece in pieces:
        out = restorer.feed(piece)
        released.append(out.text)
        findings += out.findings
        assert restorer.held_chars <= restorer.max_held_chars
    final = restorer.finish()
    assert "".join(released) + final.text == streamed_expected()
    assert [f.kind for f in findings + list(final.findings)] == ["EMAIL", "PAYMENT_CARD"]
    # The first text goes out once hold_back + step characters have arrived, not at the end.
    first = next(i for i, text in enumerate(released) if text)
    assert (first + 1) * 3 >= 24 + 4 and first < len(pieces) - 1
    assert 24 <= restorer.peak_held_chars <= restorer.max_held_chars == 2 * 24 + 4


def test_findings_offsets_are_into_the_whole_answer():
    restorer = StreamRestorer({}, detectors=DETECTORS, redact=redact, hold_back_chars=32, scan_step_chars=8)
    text = "x" * 100 + " jane@example.org " + "y" * 100
    findings = [f for i in range(0, len(text), 7) for f in restorer.feed(text[i : i + 7]).findings] + list(restorer.finish().findings)
    assert [(f.start, f.end) for f in findings] == [(101, 117)]


def test_a_finding_longer_than_the_bound_is_released_redacted_from_where_it_was_seen():
    key = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(["A" * 64] * 8) + "\n-----END PRIVATE KEY-----"
    restorer = StreamRestorer({}, detectors=DETECTORS, redact=redact, hold_back_chars=40, scan_step_chars=8)
    out = []
    for i in range(0, len(key), 5):
        out.append(restorer.feed(key[i : i + 5]).text)
        assert restorer.held_chars <= restorer.max_held_chars
    out.append(restorer.finish().text)
    assert "-----BEGIN PRIVATE KEY-----" not in "".join(out) and "[PRIVATE_KEY]" in "".join(out)


def test_a_crashing_detector_stops_the_stream_until_the_caller_fails_open():
    class Broken:
        name, kinds = "broken", frozenset({"X"})

        def detect(self, text):
            raise RuntimeError(text)

    restorer = StreamRestorer(RESTORATIONS, detectors=[Broken()], hold_back_chars=4, scan_step_chars=1)
    with pytest.raises(DetectorError) as error:
        restorer.feed("secret text <EMAIL_1>")
    assert "secret" not in str(error.value)
    restorer.disable_detection()
    assert restorer.feed("").text == "secret text jane@example.org"


# --- chat-completion chunks ----------------------------------------------------------------------


def chunk(content=None, finish=None, index=0, tool_args=None, tool_index=0):
    delta = {}
    if content is not None:
        delta["content"] = content
    if tool_args is not None:
        delta["tool_calls"] = [{"index": tool_index, "function": {"arguments": tool_args}}]
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def test_stream_chunks_restore_split_placeholders_and_flush_on_finish():
    restorer = ChatStreamRestorer(RESTORATIONS)
    chunks = [chunk("Hello <EM"), chunk("AIL_1"), chunk("> and <PAY"), chunk(None, "stop")]
    before = copy.deepcopy(chunks)
    out = [restorer.process(c)[0] for c in chunks]
    assert [c["choices"][0]["delta"].get("content") for c in out] == ["Hello ", "", "jane@example.org and ", "<PAY"]
    assert out[-1]["choices"][0]["finish_reason"] == "stop" and out[0]["id"] == "chatcmpl-1"
    assert chunks == before


def test_stream_choices_and_tool_calls_are_restored_independently():
    restorer = ChatStreamRestorer(RESTORATIONS)
    out = [
        restorer.process(chunk("<EMAIL", index=0))[0],
        restorer.process(chunk("<PAYMENT_CA", index=1))[0],
        restorer.process(chunk(tool_args='{"to": "<EMA', index=1))[0],
        restorer.process(chunk("_1>", index=0, finish="stop"))[0],
        restorer.process(chunk("RD_12>", index=1))[0],
        restorer.process(chunk(tool_args='IL_1>"}', index=1, finish="tool_calls"))[0],
    ]
    contents = [c["choices"][0]["delta"].get("content") for c in out]
    assert contents == ["", "", None, "jane@example.org", CARD, None]
    arguments = "".join(c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in out if "tool_calls" in c["choices"][0]["delta"])
    assert json.loads(arguments) == {"to": "jane@example.org"}


def test_stream_usage_chunk_passes_and_a_cut_off_stream_is_flushed_by_finish():
    restorer = ChatStreamRestorer(RESTORATIONS, detectors=DETECTORS, redact=redact, hold_back_chars=16, scan_step_chars=4)
    first, _ = restorer.process(chunk("Mail bob@example.com to <EMAIL_1>"))
    usage = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [], "usage": {"total_tokens": 3}}
    assert restorer.process(usage)[0] == usage
    rest, findings = restorer.finish()
    text = first["choices"][0]["delta"]["content"] + "".join(c["choices"][0]["delta"]["content"] for c in rest)
    assert text == "Mail [EMAIL] to jane@example.org"
    assert rest[0]["id"] == "chatcmpl-1" and rest[0]["choices"][0]["finish_reason"] is None
    assert restorer.held_chars == 0


def test_every_chunk_boundary_in_a_chat_stream_gives_the_complete_answers_text():
    text = f"Card {CARD} for <EMAIL_1>, and <IBAN_1>."
    expected = restore_answer(text, RESTORATIONS, detectors=DETECTORS, redact=redact).text
    for cut in range(len(text) + 1):
        restorer = ChatStreamRestorer(RESTORATIONS, detectors=DETECTORS, redact=redact, hold_back_chars=32, scan_step_chars=4)
        out = [restorer.process(chunk(text[:cut]))[0], restorer.process(chunk(text[cut:]))[0], restorer.process(chunk(None, "stop"))[0]]
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in out) == expected, cut
