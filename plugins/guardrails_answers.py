"""The answer side of the guardrails: what one client receives of an answer.

:class:`AnswerGuard` is a :class:`hookgate.output.OutputFilter`. The core applies it while writing
the answer for this client only, after caches stored and observers saw the canonical answer (the
one with placeholders), so a restored value is never cached and a cached answer is restored with
the values of whoever receives it. It does three things:

1. puts back the values the request side masked (``<EMAIL_1>`` → the client's own address);
2. runs the answer-side detectors on the model's text (before restoring, so the client's own
   values are never taken for new findings) and, per kind, lets a finding through (``log``),
   replaces it with its kind (``mask``: ``<PAYMENT_CARD>``) or withholds the answer (``block``);
3. counts what it found (``tally``), which the plugin publishes.

**A withheld answer** is not an HTTP error: the choice ends with ``finish_reason:
"content_filter"`` and a ``refusal`` naming the kinds found, never the values. That is how
OpenAI itself reports an answer its filters stopped (and what the Anthropic and Responses
surfaces translate to ``stop_reason: "refusal"`` and ``status: "incomplete"``), it is the same
for a JSON answer, a live stream, whose status line and first chunks are already out, and a
cached answer replayed; the provider's usage is still accounted. A JSON answer (and a cached one)
has the whole choice withheld; a live stream keeps what it already sent, up to the finding, which
the hold-back window kept from going out. A detector that crashes under fail-closed withholds the
answer the same way, with a refusal saying it could not be checked.

Three ways in, told apart by when the plugin's ``after_response`` runs:

- **a live stream**: :meth:`chunk` runs before ``after_response``, restoring and scanning as
  chunks arrive with a bounded hold-back (:class:`ChatStreamRestorer`);
- **a JSON answer**: ``after_response`` calls :meth:`prepare_body` (on a worker thread for a large
  answer) and :meth:`body` hands the result out;
- **a complete answer replayed as a stream** (a cache hit): ``after_response`` runs the live
  algorithm over the chunks the core will replay (:meth:`prepare_replay`, off the loop when
  large); :meth:`chunk` then hands out the prepared chunks.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Literal, Protocol, Sequence

import orjson

from hookgate.detectors import DetectorError, Finding

__all__ = [
    "AnswerGuard",
    "TextCompletionGuard",
    "StreamRestoring",
    "Counting",
    "withheld_choice",
    "text_completion_as_chat",
    "text_chunk_as_chat",
    "BLOCKED_REFUSAL",
    "UNCHECKED_REFUSAL",
]

Redact = Callable[[Finding], "str | None"]

BLOCKED_REFUSAL = "The answer was withheld by the gateway's guardrails: it contained {kinds}."
UNCHECKED_REFUSAL = "The answer was withheld: the gateway's guardrails could not check it."

# What a blocked finding is replaced by, so the guard can find where its choice must end: private
# use characters around the kind, which no model emits and no JSON escaping changes.
_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"
_MARK = re.compile(f"{_MARK_OPEN}([A-Z][A-Z0-9_]{{0,31}}){_MARK_CLOSE}")


class StreamRestoring(Protocol):
    """What the guard needs of :class:`~hookgate.plugins.guardrails_masking.ChatStreamRestorer`."""

    def process(self, chunk: dict[str, Any]) -> tuple[dict[str, Any], tuple[Finding, ...]]: ...
    def finish(self) -> tuple[list[dict[str, Any]], tuple[Finding, ...]]: ...


class Counting(Protocol):
    """Where findings are counted (the plugin's ``Tally`` for the answer side)."""

    def add(self, kind: str, action: str, count: int = 1) -> None: ...


class AnswerGuard:
    """Restores, scans and, per policy, masks or withholds one answer for one client.

    :param make_stream: builds the stream restorer, given the guard's ``redact``.
    :param restore_complete: ``(body, redact) -> (body, findings)`` for a complete answer
        (:func:`~hookgate.plugins.guardrails_masking.restore_chat_completion` bound to the
        request's restorations and detectors).
    :param action_for: the policy's action for a kind of finding.
    :param tally: where the answer's findings are counted.
    """

    __slots__ = (
        "_make_stream", "_restore_complete", "_action_for", "tally", "_stream", "_include_usage", "live",
        "withheld", "blocked", "unchecked", "_seen", "_prepared", "_replay", "_replay_end", "_replayed", "_base",
    )

    def __init__(
        self,
        *,
        make_stream: Callable[[Redact], StreamRestoring],
        restore_complete: Callable[[dict[str, Any], Redact], tuple[dict[str, Any], tuple[Finding, ...]]],
        action_for: Callable[[str], Literal["block", "mask", "log"]],
        tally: Counting,
        include_usage: bool,
    ) -> None:
        self._make_stream = make_stream
        self._restore_complete = restore_complete
        self._action_for = action_for
        self.tally = tally
        self._include_usage = include_usage
        self._stream = make_stream(self.redact)
        self.live = False
        """Chunks went through before ``after_response``: a live stream."""
        self.withheld: set[int] = set()
        """Choices whose rest is not sent (blocked, or not checkable under fail-closed)."""
        self.blocked = False
        """Some choice was withheld because of a finding."""
        self.unchecked = False
        """Some choice was withheld because a detector failed (fail-closed)."""
        self._seen: set[int] = set()
        self._prepared: dict[str, Any] | None = None
        self._replay: list[tuple[dict[str, Any], list[dict[str, Any]]]] | None = None
        self._replay_end: list[dict[str, Any]] = []
        self._replayed = 0
        self._base: dict[str, Any] = {}

    # -- what redaction puts in place of an answer-side finding ---------------------------------

    def redact(self, finding: Finding) -> str | None:
        """The text that replaces ``finding`` for the client (None: the finding is let through)."""
        action = self._action_for(finding.kind)
        self.tally.add(finding.kind, action)
        if action == "block":
            return f"{_MARK_OPEN}{finding.kind}{_MARK_CLOSE}"
        if action == "mask":
            return f"<{finding.kind}>"
        return None

    # -- OutputFilter -----------------------------------------------------------------------------

    def body(self, body: dict[str, Any]) -> dict[str, Any]:
        if self._prepared is None:
            self._prepared = self._client_body(body)
        return self._prepared

    def chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if self._replay is not None:
            index = self._replayed
            if index < len(self._replay) and self._replay[index][0] == chunk:
                self._replayed += 1
                return self._replay[index][1]
            # An earlier output filter reshaped the replay (no built-in one does): go live from
            # here, as if nothing had been prepared; the findings already counted stay counted.
            self._replay = None
            self._stream = self._make_stream(self.redact)
            self.withheld, self._seen, self._base = set(), set(), {}
            self.blocked = self.unchecked = False
        self.live = True
        return self._live_chunk(chunk)

    def end(self) -> list[dict[str, Any]]:
        if self._replay is not None:
            return self._replay_end if self._replayed == len(self._replay) else []
        if not self.live:
            return []
        return self._live_end()

    # -- complete answers, prepared in after_response ---------------------------------------------

    def prepare_body(self, body: dict[str, Any]) -> None:
        """Prepare what a JSON client gets of the complete answer ``body`` (not changed).
        CPU-bound: the plugin runs it on a worker thread for a large answer."""
        self._prepared = self._client_body(orjson.loads(orjson.dumps(body)))

    def prepare_replay(self, chunks: Sequence[dict[str, Any]]) -> None:
        """Prepare what a streaming client gets of a complete answer the core replays as
        ``chunks`` (``completion_to_chunks`` of it): the live algorithm, run ahead of time."""
        replay = [(chunk, self._live_chunk(chunk)) for chunk in chunks]  # the guard never changes its input
        self._replay_end = self._live_end()
        self._replay = replay

    # -- live streams -----------------------------------------------------------------------------

    def _live_chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if not self._base:
            self._base = {k: chunk[k] for k in ("id", "object", "created", "model", "system_fingerprint") if k in chunk}
        choices = chunk.get("choices")
        if isinstance(choices, list):
            if self.withheld:
                kept = [c for c in choices if not (isinstance(c, dict) and c.get("index", 0) in self.withheld)]
                if not kept and choices and not chunk.get("usage"):
                    return []
                chunk = {**chunk, "choices": kept}
            self._seen.update(c.get("index", 0) for c in chunk["choices"] if isinstance(c, dict))
        try:
            processed, _ = self._stream.process(chunk)
        except DetectorError:
            return self._withhold_unchecked()
        return [self._end_marked_choices(processed)]

    def _live_end(self) -> list[dict[str, Any]]:
        try:
            held, _ = self._stream.finish()
        except DetectorError:
            return self._withhold_unchecked()
        out = []
        for chunk in held:
            choices = [c for c in chunk.get("choices") or () if c.get("index", 0) not in self.withheld]
            if choices:
                out.append(self._end_marked_choices({**chunk, "choices": choices}))
        return out

    def _end_marked_choices(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """End every choice of ``chunk`` in which a blocked finding was released."""
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return chunk
        rewritten = None
        for position, choice in enumerate(choices):
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            content = delta.get("content")
            kinds = set(_MARK.findall(content)) if isinstance(content, str) and _MARK_OPEN in content else set()
            for call in delta.get("tool_calls") or ():
                arguments = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
                if isinstance(arguments, str) and _MARK_OPEN in arguments:
                    kinds.update(_MARK.findall(arguments))
            if not kinds:
                continue
            ended = {k: v for k, v in delta.items() if k not in ("content", "tool_calls")}
            if isinstance(content, str):
                ended["content"] = content.split(_MARK_OPEN, 1)[0]
            ended["refusal"] = BLOCKED_REFUSAL.format(kinds=", ".join(sorted(kinds)))
            if rewritten is None:
                rewritten = list(choices)
            rewritten[position] = {**choice, "delta": ended, "finish_reason": "content_filter"}
            self.withheld.add(choice.get("index", 0))
            self.blocked = True
        return chunk if rewritten is None else {**chunk, "choices": rewritten}

    def _withhold_unchecked(self) -> list[dict[str, Any]]:
        """Fail-closed: end every choice still open with a refusal; send nothing more of them."""
        self.unchecked = True
        ending = sorted(self._seen - self.withheld) or ([0] if not self.withheld else [])
        self.withheld.update(ending)
        if not ending:
            return []
        choices = [
            {"index": index, "delta": {"refusal": UNCHECKED_REFUSAL}, "finish_reason": "content_filter", "logprobs": None}
            for index in ending
        ]
        return [{**self._base, "object": "chat.completion.chunk", "choices": choices}]

    # -- JSON ---------------------------------------------------------------------------------------

    def _client_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` (a copy the guard may change) as the client gets it."""
        try:
            restored, _ = self._restore_complete(body, self.redact)
        except DetectorError:
            self.unchecked = True
            choices = body.get("choices") or ()
            body["choices"] = [withheld_choice(c, UNCHECKED_REFUSAL) for c in choices if isinstance(c, dict)]
            self.withheld.update(c.get("index", 0) for c in body["choices"])
            return body
        choices = restored.get("choices")
        if not isinstance(choices, list):
            return restored
        ended = []
        for choice in choices:
            kinds = _marked_kinds(choice.get("message")) if isinstance(choice, dict) else set()
            if kinds:
                self.withheld.add(choice.get("index", 0))
                self.blocked = True
                choice = withheld_choice(choice, BLOCKED_REFUSAL.format(kinds=", ".join(sorted(kinds))))
            ended.append(choice)
        return {**restored, "choices": ended}


def withheld_choice(choice: dict[str, Any], refusal: str) -> dict[str, Any]:
    """A complete answer's choice with its content withheld: the refusal instead, no tool calls."""
    return {
        "index": choice.get("index", 0),
        "message": {"role": "assistant", "content": None, "refusal": refusal},
        "finish_reason": "content_filter",
        "logprobs": None,
    }


def _marked_kinds(message: Any) -> set[str]:
    if not isinstance(message, dict):
        return set()
    texts = [message.get("content")]
    texts += [(call.get("function") or {}).get("arguments") for call in message.get("tool_calls") or () if isinstance(call, dict)]
    return {kind for text in texts if isinstance(text, str) and _MARK_OPEN in text for kind in _MARK.findall(text)}


# --- legacy text completions ---------------------------------------------------------------------


class TextCompletionGuard:
    """The :class:`AnswerGuard` of a legacy completions answer (``text_completion``): each
    choice's ``text`` is handed to the guard as a chat choice's content and back, so restoring,
    scanning and withholding work exactly as for chat. A withheld choice ends with
    ``finish_reason: "content_filter"`` (the legacy API has no ``refusal`` field: its text stops
    before the finding in a live stream, and is empty in a complete answer)."""

    __slots__ = ("guard",)

    def __init__(self, guard: AnswerGuard) -> None:
        self.guard = guard

    def body(self, body: dict[str, Any]) -> dict[str, Any]:
        return _chat_as_text_completion(self.guard.body(text_completion_as_chat(body)))

    def chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        return [_chat_chunk_as_text(out) for out in self.guard.chunk(text_chunk_as_chat(chunk))]

    def end(self) -> list[dict[str, Any]]:
        return [_chat_chunk_as_text(out) for out in self.guard.end()]


def text_completion_as_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A ``text_completion`` as the guard reads a chat completion: each ``text`` a message's content."""
    choices = [
        {"index": c.get("index", 0), "message": {"role": "assistant", "content": c.get("text")}, "finish_reason": c.get("finish_reason"), "logprobs": None}
        for c in body.get("choices") or ()
        if isinstance(c, dict)
    ]
    return {**body, "choices": choices}


def text_chunk_as_chat(chunk: dict[str, Any]) -> dict[str, Any]:
    """A legacy completions stream chunk as the guard reads a chat chunk: ``text`` as the delta's content."""
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return chunk
    return {
        **chunk,
        "choices": [
            {"index": c.get("index", 0), "delta": {"content": c["text"]} if isinstance(c.get("text"), str) else {}, "finish_reason": c.get("finish_reason")}
            for c in choices
            if isinstance(c, dict)
        ],
    }


def _chat_as_text_completion(body: dict[str, Any]) -> dict[str, Any]:
    choices = [
        {"text": (c.get("message") or {}).get("content") or "", "index": c.get("index", 0), "logprobs": None, "finish_reason": c.get("finish_reason")}
        for c in body.get("choices") or ()
        if isinstance(c, dict)
    ]
    return {**body, "choices": choices}


def _chat_chunk_as_text(chunk: dict[str, Any]) -> dict[str, Any]:
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return chunk
    return {
        **chunk,
        "object": "text_completion",
        "choices": [
            {"text": (c.get("delta") or {}).get("content") or "", "index": c.get("index", 0), "logprobs": None, "finish_reason": c.get("finish_reason")}
            for c in choices
            if isinstance(c, dict)
        ],
    }
