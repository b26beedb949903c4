"""Summaries of a conversation's oldest turns, made by a model through the gateway itself.

When the history no longer fits, the memory plugin sends the request trimmed at once and asks
for a summary in the background; later turns send the summary in place of the turns it covers.
A summary is asked with :func:`hookgate.dispatch.complete`, so it takes the pipeline a client's
request takes (routing, caches, retries, limits, accounting), counted against the conversation's
own key. It is cached in the conversation (one per conversation, kept only when it covers more
than the stored one), so every instance uses it.

At most one summary per conversation is being made in this process at a time, and at most
``max_in_flight`` in all: past that a request goes on trimmed and a later turn asks again. Each
new summary is made from the previous one and the turns after it, so its input stays bounded.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from hookgate import ClientKey, GatewayError, RequestContext
from hookgate.conversations import ConversationStore, Summary
from hookgate.dispatch import complete
from hookgate.logs import IntervalLog
from hookgate.messages import message_text
from hookgate.tasks import background

log = structlog.get_logger("hookgate.memory")

DEFAULT_PROMPT = (
    "You maintain the memory of a conversation between a user and an assistant. Write a summary "
    "that lets the assistant continue the conversation without seeing the turns it covers: keep "
    "every fact, name, number, preference, decision, commitment and open question, and what tools "
    "were called with which results; drop greetings and small talk. Merge the previous summary, if "
    "any, with the new turns. Write plain prose in the conversation's language, at most 250 words."
)
_PER_MESSAGE_CHARS = 4_000
"""A single message is cut to this in the summariser's input (its start and its end are kept)."""


@dataclass(frozen=True, slots=True)
class SummaryRequest:
    """What one summary needs: the conversation, whose it is, and the part to cover."""

    conversation_id: str
    owner: str
    key: ClientKey | None
    previous: Summary | None
    messages: Sequence[dict[str, Any]]
    """The messages from where ``previous`` ends (or the oldest stored) up to ``upto``."""
    upto: int


class Summariser:
    """Makes summaries in the background, one per conversation at a time, bounded in all."""

    def __init__(
        self,
        *,
        model: str,
        prompt: str,
        max_tokens: int,
        timeout: float,
        max_in_flight: int,
        max_input_chars: int,
        store: Callable[[], ConversationStore | None],
        on_outcome: Callable[[str], None],
    ) -> None:
        self.model = model
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.max_input_chars = max_input_chars
        self._store = store
        self._outcome = on_outcome
        self._in_flight: set[str] = set()
        self._failures = IntervalLog(log, "memory_summary_failed", 60.0)

    def request(self, app: web.Application, wanted: SummaryRequest, parent: RequestContext) -> bool:
        """Start making ``wanted`` in the background; False when one is already being made for
        this conversation or ``max_in_flight`` are."""
        if wanted.conversation_id in self._in_flight or len(self._in_flight) >= self.max_in_flight:
            self._outcome("skipped")
            return False
        self._in_flight.add(wanted.conversation_id)
        started = background(app).spawn(self._make(app, wanted, parent), name="memory.summarise")
        if not started:
            self._in_flight.discard(wanted.conversation_id)
            self._outcome("skipped")
        return started

    def body(self, wanted: SummaryRequest) -> dict[str, Any]:
        """The chat request that asks for the summary."""
        parts = []
        if wanted.previous is not None:
            parts.append("Previous summary:\n" + wanted.previous.text)
        parts.append("Turns to add to it:\n" + transcript(wanted.messages, self.max_input_chars))
        return {
            "model": self.model,
            "messages": [{"role": "system", "content": self.prompt}, {"role": "user", "content": "\n\n".join(parts)}],
            "max_tokens": self.max_tokens,
            "temperature": 0,
        }

    async def _make(self, app: web.Application, wanted: SummaryRequest, parent: RequestContext) -> None:
        try:
            answer = await complete(app, self.body(wanted), caller="memory", key=wanted.key, parent=parent, timeout=self.timeout)
            choices = answer.body.get("choices") or [{}]
            text = (choices[0].get("message") or {}).get("content")
            if not isinstance(text, str) or not text.strip():
                raise ValueError("the summary model answered without text")
            store = self._store()
            if store is None:
                return  # the plugin stopped meanwhile
            summary = Summary(text.strip()[: self.max_input_chars], wanted.upto, self.model, time.time())
            await store.save_summary(wanted.conversation_id, wanted.owner, summary)
            self._outcome("made")
        except (GatewayError, ValueError) as exc:
            self._outcome("failed")
            self._failures.warning(model=self.model, error=type(exc).__name__, status=getattr(exc, "status", None))
        finally:
            self._in_flight.discard(wanted.conversation_id)


def transcript(messages: Sequence[dict[str, Any]], max_chars: int) -> str:
    """The messages as plain lines for the summariser, at most ``max_chars`` (the most recent
    lines are kept: what came before is in the previous summary)."""
    lines = []
    for message in messages:
        role = str(message.get("role", ""))
        text = _clipped(message_text(message.get("content")))
        if text:
            lines.append(f"{role}: {text}")
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {} if isinstance(call, dict) else {}
            lines.append(f"{role} called {function.get('name', '?')}({_clipped(str(function.get('arguments', '')))})")
    text = "\n".join(lines)
    return text if len(text) <= max_chars else "…" + text[-max_chars:]


def _clipped(text: str) -> str:
    if len(text) <= _PER_MESSAGE_CHARS:
        return text
    half = _PER_MESSAGE_CHARS // 2
    return text[:half] + " … " + text[-half:]
