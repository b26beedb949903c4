"""Fitting a conversation into a model's context window: which stored turns are sent upstream.

Pure (messages and token counts in, the messages to send out), so every rule is tested on its own:

* The system prompt and the request's new messages are always sent; so is the turn the new
  messages continue when they are tool results (they answer that turn's tool calls).
* The rest of the history is sent from the most recent turn backwards, whole turns only, while it
  fits the budget (the window minus the answer's ``max_tokens`` minus the tools' schemas minus a
  reserve). A turn starts at a ``user`` message, so an assistant's tool calls and their results,
  which come before the next user message, are kept or dropped together.
* A summary of the oldest part (covering every message before its ``upto`` position) is sent in
  place of what it covers, right after the system prompt, when something of the conversation is
  not sent verbatim. When the summary is missing or no longer covers what had to be dropped, the
  fit says up to where a new one should reach: far enough that the verbatim history left takes at
  most ``keep_ratio`` of the room, so a summary is not asked for on every turn.
* Tool results at the very start of the stored history (their call was evicted) are never sent:
  an upstream refuses a tool message that answers no call.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .memory_tokens import TOKENS_REPLY_PRIMING

SUMMARY_PREAMBLE = "Summary of the earlier part of this conversation (those turns are not repeated below):\n"


@dataclass(frozen=True, slots=True)
class Counted:
    """A message and the tokens it costs."""

    message: dict[str, Any]
    tokens: int


@dataclass(frozen=True, slots=True)
class _Group:
    """Consecutive stored messages that are kept or dropped together: one turn (or the prologue
    before the first user message)."""

    first: int
    """Index of its first message in the history."""
    end: int
    tokens: int
    is_turn: bool


@dataclass(frozen=True, slots=True)
class Fitted:
    """What to send upstream, and what the response headers say about it."""

    messages: list[dict[str, Any]]
    tokens: int
    """Estimated prompt tokens of ``messages``."""
    turns_sent: int
    """Stored turns sent (verbatim)."""
    turns_dropped: int
    """Stored turns not sent (covered by the summary, or dropped)."""
    history: Literal["full", "trimmed", "summarised"]
    summarise_from: int | None = None
    """When a new summary is wanted: the absolute position its input starts at (the old summary
    covers what is before it)."""
    summarise_upto: int | None = None
    """When a new summary is wanted: the absolute position it should cover up to (a turn start)."""


def fit_history(
    *,
    system: Sequence[Counted],
    history: Sequence[Counted],
    start: int,
    new: Sequence[Counted],
    budget: int,
    summary: Counted | None = None,
    summary_upto: int = 0,
    want_summary: bool = False,
    keep_ratio: float = 0.5,
) -> Fitted:
    """Fit ``history`` (stored messages from absolute position ``start``) between ``system`` and
    ``new`` within ``budget`` prompt tokens; ``summary`` (a message, covering positions before
    ``summary_upto``) may stand in for its oldest part. See the module docstring."""
    skip = 0
    while skip < len(history) and history[skip].message.get("role") == "tool":
        skip += 1
    groups = _groups(history, skip)
    mandatory: _Group | None = None
    if groups and new and new[0].message.get("role") != "user":
        mandatory = groups.pop()

    def position(index: int) -> int:
        """Absolute position of the first message of ``groups[index]`` (past the end: of what follows)."""
        if index < len(groups):
            return start + groups[index].first
        return start + (mandatory.first if mandatory is not None else len(history))

    fixed = TOKENS_REPLY_PRIMING + sum(c.tokens for c in system) + sum(c.tokens for c in new) + (mandatory.tokens if mandatory else 0)
    available = budget - fixed
    kept = _keep_from(groups, available)
    history_kind: Literal["full", "trimmed", "summarised"] = "full" if start + skip == 0 and kept == 0 else "trimmed"
    if history_kind != "full" and summary is not None and 0 < summary_upto <= position(len(groups)) and summary.tokens <= available:
        # The summary stands in for what it covers (never for the turn being continued).
        covered = next((i for i in range(len(groups)) if position(i) >= summary_upto), len(groups))
        kept = max(_keep_from(groups, available - summary.tokens), covered)
        history_kind = "summarised"
    sent = [*groups[kept:], *([mandatory] if mandatory else [])]
    messages = [c.message for c in system]
    tokens = fixed + sum(g.tokens for g in groups[kept:])
    if history_kind == "summarised":
        assert summary is not None
        messages.append(summary.message)
        tokens += summary.tokens
    for group in sent:
        messages.extend(c.message for c in history[group.first : group.end])
    messages.extend(c.message for c in new)
    summarise_from = summarise_upto = None
    if want_summary and history_kind != "full":
        # What is not sent verbatim and no summary covers: ask for one reaching far enough that
        # the verbatim history left takes at most keep_ratio of the room.
        covered_from = max(summary_upto if summary is not None else 0, start + skip)
        target = position(max(kept, _keep_from(groups, int(available * keep_ratio))))
        if covered_from < position(kept) and covered_from < target:
            summarise_from, summarise_upto = covered_from, target
    return Fitted(
        messages=messages,
        tokens=tokens,
        turns_sent=sum(g.is_turn for g in sent),
        turns_dropped=sum(g.is_turn for g in groups[:kept]),
        history=history_kind,
        summarise_from=summarise_from,
        summarise_upto=summarise_upto,
    )


def _groups(history: Sequence[Counted], skip: int) -> list[_Group]:
    groups: list[_Group] = []
    first, tokens = skip, 0
    for index in range(skip, len(history)):
        counted = history[index]
        if counted.message.get("role") == "user" and index > first:
            groups.append(_Group(first, index, tokens, history[first].message.get("role") == "user"))
            first, tokens = index, 0
        tokens += counted.tokens
    if first < len(history):
        groups.append(_Group(first, len(history), tokens, history[first].message.get("role") == "user"))
    return groups


def _keep_from(groups: Sequence[_Group], available: int) -> int:
    """Index of the oldest group kept when the newest are kept while they fit in ``available``."""
    index, total = len(groups), 0
    while index > 0 and total + groups[index - 1].tokens <= available:
        total += groups[index - 1].tokens
        index -= 1
    return index
