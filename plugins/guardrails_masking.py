"""Masking and restoring: typed placeholders before the provider sees a request, the original
values back in the answer the client gets, streams included.

**Request side.** A :class:`Masker` replaces each finding with a typed placeholder
(``<EMAIL_1>``, ``<PAYMENT_CARD_2>``), the same placeholder for the same value within one request,
so the model can still tell "the same address" from "another address". Its ``restorations``
(placeholder → original) live only as long as the request; they are never logged.

**Answer side.** The model answers with the placeholders it was given; :func:`restore_answer`
(a complete text) and :class:`StreamRestorer` (a stream of deltas) put the originals back. The
answer can also be scanned by detectors of its own (the model may produce personal data it was
never sent); ``redact`` decides what replaces each such finding, if anything. Scanning happens on
the model's text *before* restoration, so the client's own values coming back are never taken
for new findings.

**Streams.** A placeholder can arrive split over chunks (``<EMA`` + ``IL_1>``), and so can a
finding (``4111 1111`` + `` 1111 1111``). The restorer releases text only once it can no longer
change: it holds back a possible placeholder prefix (a few characters, only while one is open)
and, when it scans the answer, the last ``hold_back_chars`` characters, so that any finding up to
that long is seen whole whatever the chunk boundaries. It never holds more than
``max_held_chars``, which is the added latency a client sees before its first token, in
characters (see ``bench/guardrails_overhead.py``).

The OpenAI chat-completions shapes are handled as plain dicts (:func:`mask_chat_request`,
:func:`restore_chat_completion`, :class:`ChatStreamRestorer`); underneath, everything takes and
returns text (:class:`TextField`, :func:`with_texts`), so another surface only has to say where
its texts are.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Sequence

from hookgate.detectors import Detector, Finding, non_overlapping, scan

__all__ = [
    "PLACEHOLDER_PATTERN",
    "Masker",
    "TextField",
    "Path",
    "Redact",
    "Released",
    "StreamRestorer",
    "ChatStreamRestorer",
    "MaskedRequest",
    "chat_request_fields",
    "prompt_fields",
    "request_fields",
    "chat_completion_fields",
    "with_texts",
    "json_scan_view",
    "mask_chat_request",
    "restore_text",
    "restore_answer",
    "restore_chat_completion",
]

PLACEHOLDER_PATTERN = re.compile(r"<[A-Z][A-Z0-9_]{0,31}_\d{1,6}>")
"""What a placeholder looks like: ``<`` kind ``_`` number ``>``."""

CONTEXT_CHARS = 256
"""Already-released text a stream scan still sees, for detectors that look behind a value
(``order #`` before a number, ``https://user:`` before a password)."""

Path = tuple[str | int, ...]
"""Where a text is in a JSON body: ``("messages", 2, "content", 0, "text")``."""

Redact = Callable[[Finding], "str | None"]
"""What replaces an answer-side finding for the client; None lets it through (record only)."""


# --- request side --------------------------------------------------------------------------------


class Masker:
    """Typed placeholders for one request, stable per value.

    ``texts`` are every text of the request: placeholder-shaped tokens already in them
    (a user quoting ``<EMAIL_1>``) are never issued, so restoring cannot turn the user's own
    literal into someone's address.
    """

    __slots__ = ("_reserved", "_by_value", "_originals", "_counts")

    def __init__(self, texts: Iterable[str] = ()) -> None:
        self._reserved = {m.group() for text in texts for m in PLACEHOLDER_PATTERN.finditer(text)}
        self._by_value: dict[tuple[str, str], str] = {}
        self._originals: dict[str, str] = {}
        self._counts: Counter[str] = Counter()

    def placeholder(self, kind: str, value: str) -> str:
        """The placeholder of ``value``: the one it already has in this request, or the next free."""
        known = self._by_value.get((kind, value))
        if known is not None:
            return known
        while True:
            self._counts[kind] += 1
            placeholder = f"<{kind}_{self._counts[kind]}>"
            if placeholder not in self._reserved:
                break
        self._by_value[(kind, value)] = placeholder
        self._originals[placeholder] = value
        return placeholder

    def mask(self, text: str, findings: Iterable[Finding], *, json_text: bool = False) -> str:
        """``text`` with every finding replaced by its placeholder (overlaps resolved first).

        With ``json_text`` the text is a JSON document (tool-call arguments): the value is
        remembered decoded, so it is restored correctly into plain text as well as into JSON.
        """
        parts: list[str] = []
        position = 0
        for finding in non_overlapping(findings):
            raw = text[finding.start : finding.end]
            parts += [text[position : finding.start], self.placeholder(finding.kind, _json_decoded(raw) if json_text else raw)]
            position = finding.end
        parts.append(text[position:])
        return "".join(parts)

    @property
    def restorations(self) -> Mapping[str, str]:
        """Placeholder → original value, for restoring the answer (read-only)."""
        return MappingProxyType(self._originals)


@dataclass(frozen=True, slots=True)
class TextField:
    """One text of a JSON body: where it is, what it says, and whether it is itself JSON."""

    path: Path
    text: str
    json_text: bool = False
    """The text is a JSON document (tool-call arguments): detectors see :func:`json_scan_view`
    and restored values are JSON-escaped."""

    @property
    def scan_text(self) -> str:
        """What detectors should read: the text, or its JSON view (same length, same offsets)."""
        return json_scan_view(self.text) if self.json_text else self.text


def chat_request_fields(body: Mapping[str, Any]) -> list[TextField]:
    """The texts of an OpenAI chat-completions request that a provider would read.

    Message ``content`` (a string, or the ``text`` of each text part) and the ``arguments`` of an
    assistant message's ``tool_calls``. Images, audio and files carry no text.
    """
    fields: list[TextField] = []
    messages = body.get("messages")
    if not isinstance(messages, list):
        return fields
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        fields += _content_fields(("messages", i), message.get("content"))
        fields += _tool_call_fields(("messages", i), message.get("tool_calls"))
    return fields


def prompt_fields(body: Mapping[str, Any], key: str) -> list[TextField]:
    """The texts of a legacy completions ``prompt`` or an embeddings ``input`` (``key``): a
    string, or each string of a list. Token arrays carry no text a detector could read."""
    value = body.get(key)
    if isinstance(value, str):
        return [TextField((key,), value)]
    if isinstance(value, list):
        return [TextField((key, i), text) for i, text in enumerate(value) if isinstance(text, str)]
    return []


def request_fields(kind: str, body: Mapping[str, Any]) -> list[TextField]:
    """The texts of a canonical request of ``kind`` (``ctx.kind``): a chat request's messages
    (every chat-like surface), a legacy completion's ``prompt``, an embeddings ``input``."""
    if kind == "completions":
        return prompt_fields(body, "prompt")
    if kind == "embeddings":
        return prompt_fields(body, "input")
    return chat_request_fields(body)


def chat_completion_fields(body: Mapping[str, Any]) -> list[TextField]:
    """The texts of an OpenAI chat completion (non-streamed): each choice's message content and
    tool-call arguments."""
    fields: list[TextField] = []
    choices = body.get("choices")
    if not isinstance(choices, list):
        return fields
    for i, choice in enumerate(choices):
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            fields += _content_fields(("choices", i, "message"), message.get("content"))
            fields += _tool_call_fields(("choices", i, "message"), message.get("tool_calls"))
    return fields


def _content_fields(at: Path, content: Any) -> list[TextField]:
    if isinstance(content, str):
        return [TextField((*at, "content"), content)]
    if isinstance(content, list):
        return [
            TextField((*at, "content", j, "text"), part["text"])
            for j, part in enumerate(content)
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        ]
    return []


def _tool_call_fields(at: Path, tool_calls: Any) -> list[TextField]:
    if not isinstance(tool_calls, list):
        return []
    return [
        TextField((*at, "tool_calls", k, "function", "arguments"), call["function"]["arguments"], json_text=True)
        for k, call in enumerate(tool_calls)
        if isinstance(call, dict)
        and isinstance(call.get("function"), dict)
        and isinstance(call["function"].get("arguments"), str)
    ]


def with_texts(body: Mapping[str, Any], texts: Mapping[Path, str]) -> dict[str, Any]:
    """A copy of ``body`` with the texts at the given paths replaced; ``body`` is not changed.

    Only the containers on the way to a replaced text are copied; everything else is shared.
    """
    copy: dict[str, Any] = dict(body)
    copied = {id(copy)}
    for path, text in texts.items():
        node: Any = copy
        for key in path[:-1]:
            child = node[key]
            if id(child) not in copied:
                child = list(child) if isinstance(child, list) else dict(child)
                copied.add(id(child))
                node[key] = child
            node = child
        node[path[-1]] = text
    return copy


@dataclass(frozen=True, slots=True)
class MaskedRequest:
    """A request with its findings replaced by placeholders."""

    body: dict[str, Any]
    """What the provider is sent."""
    restorations: Mapping[str, str]
    """Placeholder → original value, for the answer; never logged."""
    findings: tuple[Finding, ...]
    """What was masked (offsets are into the field each was found in)."""


def mask_chat_request(body: Mapping[str, Any], find: Callable[[str], list[Finding]]) -> MaskedRequest:
    """Mask what ``find`` reports in every text of a chat-completions request.

    ``find`` is the policy's choice of findings to mask for one text (typically :func:`scan` over
    the masking detectors, filtered by kind and confidence). CPU-bound: the caller runs it on a
    worker thread for a large body.
    """
    fields = chat_request_fields(body)
    masker = Masker(f.text for f in fields)
    replaced: dict[Path, str] = {}
    masked: list[Finding] = []
    for text_field in fields:
        findings = non_overlapping(find(text_field.scan_text))
        if findings:
            replaced[text_field.path] = masker.mask(text_field.text, findings, json_text=text_field.json_text)
            masked += findings
    return MaskedRequest(with_texts(body, replaced) if replaced else dict(body), masker.restorations, tuple(masked))


# --- answer side ---------------------------------------------------------------------------------


def restore_text(text: str, restorations: Mapping[str, str], *, json_text: bool = False) -> str:
    """``text`` with every known placeholder replaced by its original value; unknown ones stay."""
    if not restorations or "<" not in text:
        return text

    def original(match: re.Match[str]) -> str:
        value = restorations.get(match.group())
        if value is None:
            return match.group()
        return _json_escaped(value) if json_text else value

    return PLACEHOLDER_PATTERN.sub(original, text)


@dataclass(frozen=True, slots=True)
class Released:
    """Text a restorer lets through: restored, with answer-side findings handled."""

    text: str = ""
    findings: tuple[Finding, ...] = ()
    """Answer-side findings in this text (offsets into the model's whole answer, before
    restoration), whether ``redact`` replaced them or let them through."""
    restored: int = 0
    """How many placeholders were replaced by their original value."""

    def __add__(self, other: Released) -> Released:
        return Released(self.text + other.text, self.findings + other.findings, self.restored + other.restored)


class StreamRestorer:
    """Restores placeholders in, and scans, one answer text that arrives in pieces.

    Feed it each delta; it returns what may be sent now and holds back only what could still
    change: a trailing ``<EMAI`` that may become a placeholder, and, when ``detectors`` are given,
    the last ``hold_back_chars`` characters, so that any finding up to that long is caught whole
    wherever the chunks split it. Scans run once ``scan_step_chars`` new characters have
    arrived, so a stream of one-token deltas is not rescanned per token. A finding still growing
    at the end of the held text extends the hold, up to ``max_held_chars``; past that the text is
    released (a finding longer than ``hold_back_chars`` is then redacted only from where it was
    first seen).

    A :class:`~hookgate.detectors.DetectorError` from a detector propagates with the delta kept
    held; a fail-open caller calls :meth:`disable_detection` and feeds on.
    """

    __slots__ = (
        "_restorations", "_prefixes", "_detectors", "_redact", "_json_text", "hold_back_chars", "scan_step_chars",
        "_pending", "_context", "_offset", "peak_held_chars",
    )

    def __init__(
        self,
        restorations: Mapping[str, str],
        *,
        detectors: Sequence[Detector] = (),
        redact: Redact | None = None,
        hold_back_chars: int = 128,
        scan_step_chars: int = 32,
        json_text: bool = False,
    ) -> None:
        if hold_back_chars < 0 or scan_step_chars < 1:
            raise ValueError("hold_back_chars must be >= 0 and scan_step_chars >= 1")
        self._restorations = restorations
        # Every proper prefix of a known placeholder: what a delta may end with mid-placeholder.
        self._prefixes = frozenset(p[:i] for p in restorations for i in range(1, len(p)))
        self._detectors = tuple(detectors)
        self._redact = redact
        self._json_text = json_text
        self.hold_back_chars = hold_back_chars if self._detectors else 0
        self.scan_step_chars = scan_step_chars
        self._pending = ""
        self._context = ""
        self._offset = 0
        self.peak_held_chars = 0
        """The most characters held at once so far: the latency this stream actually added."""

    @property
    def max_held_chars(self) -> int:
        """The most characters ever held back: the worst added latency, in characters."""
        longest = max(map(len, self._restorations), default=1) - 1
        if not self._detectors:
            return longest
        return max(2 * self.hold_back_chars + self.scan_step_chars, longest)

    @property
    def held_chars(self) -> int:
        """Characters received and not yet released."""
        return len(self._pending)

    def disable_detection(self) -> None:
        """Stop scanning for the rest of the stream (fail-open after a detector error); held text
        is released by the next call."""
        self._detectors = ()
        self.hold_back_chars = 0

    def feed(self, delta: str) -> Released:
        """Take the next piece of the answer; return what can be sent now."""
        self._pending += delta
        if self._detectors and len(self._pending) < self.hold_back_chars + self.scan_step_chars:
            released = Released()  # not worth a scan yet
        else:
            released = self._release(final=False)
        self.peak_held_chars = max(self.peak_held_chars, len(self._pending))
        return released

    def finish(self) -> Released:
        """The answer is complete: release everything still held."""
        return self._release(final=True)

    def _release(self, *, final: bool) -> Released:
        pending = self._pending
        if not pending:
            return Released()
        placeholders = [
            (m.start(), m.end()) for m in PLACEHOLDER_PATTERN.finditer(pending) if m.group() in self._restorations
        ]
        findings = self._scan(pending, placeholders) if self._detectors else []
        cut = len(pending) if final else self._cut(pending, placeholders, findings)
        if cut <= 0:
            return Released()
        released = self._render(pending, cut, placeholders, findings)
        self._context = (self._context + pending[:cut])[-CONTEXT_CHARS:]
        self._pending = pending[cut:]
        self._offset += cut
        return released

    def _scan(self, pending: str, placeholders: list[tuple[int, int]]) -> list[Finding]:
        window = self._context + pending
        base = len(self._context)
        found = []
        for finding in scan(json_scan_view(window) if self._json_text else window, self._detectors):
            if finding.end <= base:
                continue  # wholly in text already released (and already handled)
            start, end = max(finding.start - base, 0), finding.end - base
            if any(s < end and start < e for s, e in placeholders):
                continue  # our own placeholder, not the model's data
            found.append(Finding(finding.kind, start, end, finding.detector, finding.confidence))
        return non_overlapping(found)

    def _cut(self, pending: str, placeholders: list[tuple[int, int]], findings: list[Finding]) -> int:
        cut = len(pending) - self.hold_back_chars
        opening = pending.rfind("<", max(0, len(pending) - 40))
        if opening >= 0 and pending[opening:] in self._prefixes:
            cut = min(cut, opening)
        spans = placeholders + [(f.start, f.end) for f in findings]
        growing = [(f.start, f.end) for f in findings if f.end == len(pending)]
        moved = True
        while moved:  # never split a placeholder or a finding, nor release one that may still grow
            moved = False
            for start, end in spans:
                if start < cut < end or ((start, end) in growing and start < cut):
                    cut, moved = start, True
        if len(pending) - cut > self.max_held_chars:
            cut = len(pending) - self.hold_back_chars  # the bound wins over a finding longer than the window
            for start, end in placeholders:
                if start < cut < end:
                    cut = start
        return cut

    def _render(self, pending: str, cut: int, placeholders: list[tuple[int, int]], findings: list[Finding]) -> Released:
        events = [(s, e, None) for s, e in placeholders if e <= cut] + [(f.start, min(f.end, cut), f) for f in findings if f.start < cut]
        events.sort(key=lambda event: event[0])
        parts: list[str] = []
        reported: list[Finding] = []
        restored = 0
        position = 0
        for start, end, finding in events:
            parts.append(pending[position:start])
            if finding is None:
                value = self._restorations[pending[start:end]]
                parts.append(_json_escaped(value) if self._json_text else value)
                restored += 1
            else:
                absolute = Finding(finding.kind, self._offset + start, self._offset + end, finding.detector, finding.confidence)
                reported.append(absolute)
                replacement = self._redact(absolute) if self._redact else None
                parts.append(pending[start:end] if replacement is None else replacement)
            position = end
        parts.append(pending[position:cut])
        return Released("".join(parts), tuple(reported), restored)


def restore_answer(
    text: str,
    restorations: Mapping[str, str],
    *,
    detectors: Sequence[Detector] = (),
    redact: Redact | None = None,
    json_text: bool = False,
) -> Released:
    """A complete answer text restored, and scanned by ``detectors`` when given."""
    restorer = StreamRestorer(restorations, detectors=detectors, redact=redact, json_text=json_text)
    restorer._pending = text  # one scan of the whole text: a complete answer needs no hold-back
    return restorer.finish()


def restore_chat_completion(
    body: Mapping[str, Any],
    restorations: Mapping[str, str],
    *,
    detectors: Sequence[Detector] = (),
    redact: Redact | None = None,
) -> tuple[dict[str, Any], tuple[Finding, ...]]:
    """A chat completion with its placeholders restored and its answer-side findings handled;
    ``body`` is not changed."""
    texts: dict[Path, str] = {}
    findings: list[Finding] = []
    for text_field in chat_completion_fields(body):
        released = restore_answer(
            text_field.text, restorations, detectors=detectors, redact=redact, json_text=text_field.json_text
        )
        if released.text != text_field.text:
            texts[text_field.path] = released.text
        findings += released.findings
    return (with_texts(body, texts) if texts else dict(body)), tuple(findings)


@dataclass(slots=True)
class ChatStreamRestorer:
    """:class:`StreamRestorer` over OpenAI chat-completion chunks: one per choice's content and
    per tool call's arguments.

    :meth:`process` returns each chunk rewritten (the input is not changed): deltas carry what
    may be released, possibly an empty string while text is held; a choice's held text goes out
    in the chunk that carries its ``finish_reason``. A stream that ends without one gets the rest
    from :meth:`finish`.
    """

    restorations: Mapping[str, str]
    detectors: Sequence[Detector] = ()
    redact: Redact | None = None
    hold_back_chars: int = 128
    scan_step_chars: int = 32
    _restorers: dict[tuple[int, int | None], StreamRestorer] = field(default_factory=dict, init=False)
    _last_chunk: Mapping[str, Any] | None = field(default=None, init=False)

    def restorer(self, choice: int, tool_call: int | None = None) -> StreamRestorer:
        """The restorer of one choice's content (``tool_call=None``) or of one tool call's arguments."""
        key = (choice, tool_call)
        if key not in self._restorers:
            self._restorers[key] = StreamRestorer(
                self.restorations,
                detectors=self.detectors,
                redact=self.redact,
                hold_back_chars=self.hold_back_chars,
                scan_step_chars=self.scan_step_chars,
                json_text=tool_call is not None,
            )
        return self._restorers[key]

    @property
    def held_chars(self) -> int:
        return sum(r.held_chars for r in self._restorers.values())

    @property
    def peak_held_chars(self) -> int:
        return max((r.peak_held_chars for r in self._restorers.values()), default=0)

    def disable_detection(self) -> None:
        """Fail open: stop scanning every field of this stream."""
        self.detectors = ()
        for restorer in self._restorers.values():
            restorer.disable_detection()

    def process(self, chunk: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[Finding, ...]]:
        """The chunk to send instead of ``chunk``, and the answer-side findings released with it."""
        self._last_chunk = chunk
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return dict(chunk), ()
        found: list[Finding] = []
        rewritten = []
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                rewritten.append(choice)
                continue
            index = choice.get("index", 0)
            finishing = choice.get("finish_reason") is not None
            new_delta = dict(delta)
            if isinstance(delta.get("content"), str) or (finishing and (index, None) in self._restorers):
                released = self.restorer(index).feed(delta.get("content") or "")
                if finishing:
                    released += self.restorer(index).finish()
                if "content" in delta or released.text:
                    new_delta["content"] = released.text
                found += released.findings
            calls = delta.get("tool_calls")
            seen_calls: set[int] = set()
            if isinstance(calls, list):
                new_calls = []
                for call in calls:
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                        call_index = call.get("index", 0)
                        seen_calls.add(call_index)
                        released = self.restorer(index, call_index).feed(function["arguments"])
                        if finishing:
                            released += self.restorer(index, call_index).finish()
                        call = {**call, "function": {**function, "arguments": released.text}}
                        found += released.findings
                    new_calls.append(call)
                new_delta["tool_calls"] = new_calls
            if finishing:
                flushed = []
                for (choice_index, call_index), restorer in self._restorers.items():
                    if choice_index == index and call_index is not None and call_index not in seen_calls and restorer.held_chars:
                        released = restorer.finish()
                        flushed.append({"index": call_index, "function": {"arguments": released.text}})
                        found += released.findings
                if flushed:
                    new_delta["tool_calls"] = [*new_delta.get("tool_calls", []), *flushed]
            rewritten.append({**choice, "delta": new_delta})
        return {**chunk, "choices": rewritten}, tuple(found)

    def finish(self) -> tuple[list[dict[str, Any]], tuple[Finding, ...]]:
        """Chunks carrying whatever is still held when the stream ended without a ``finish_reason``
        for some choice (an upstream cut off), and their findings."""
        base = {k: v for k, v in (self._last_chunk or {}).items() if k in ("id", "object", "created", "model", "system_fingerprint")}
        chunks: list[dict[str, Any]] = []
        found: list[Finding] = []
        for (choice, call), restorer in sorted(self._restorers.items(), key=lambda item: (item[0][0], item[0][1] or -1)):
            if not restorer.held_chars:
                continue
            released = restorer.finish()
            found += released.findings
            delta: dict[str, Any] = (
                {"content": released.text}
                if call is None
                else {"tool_calls": [{"index": call, "function": {"arguments": released.text}}]}
            )
            chunks.append({**base, "choices": [{"index": choice, "delta": delta, "finish_reason": None}]})
        return chunks, tuple(found)


# --- JSON text -----------------------------------------------------------------------------------

JSON_ESCAPE = re.compile(r"\\(?:u[0-9A-Fa-f]{0,4}|.?)", re.DOTALL)


def json_scan_view(text: str) -> str:
    """``text`` (JSON) with each escape sequence blanked, same length and offsets.

    In tool-call arguments a newline is the two characters ``\\n``; without this a card number
    right after one would read as ``n4111…`` and be missed.
    """
    if "\\" not in text:
        return text
    return JSON_ESCAPE.sub(lambda m: " " * len(m.group()), text)


def _json_decoded(raw: str) -> str:
    try:
        value = json.loads(f'"{raw}"')
    except ValueError:
        return raw
    return value if isinstance(value, str) else raw


def _json_escaped(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)[1:-1]
