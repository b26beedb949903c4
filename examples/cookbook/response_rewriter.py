"""response_rewriter: a middleware that replaces terms in every answer, JSON and streams alike.

It wraps the provider call (``call_provider``), so what it returns is the answer for everyone: the
caches store the rewritten text and the observers see it. (To change the answer for one client
only, add a ``hookgate.output`` filter instead: the core applies it while writing, after caches and
observers have seen the canonical answer.)

A complete answer is rewritten choice by choice. A stream is wrapped: a term may arrive split
across chunks ("Glo" + "bex Corp"), so each choice holds back the last ``longest term - 1``
characters it has not matched yet, and sends them with the next chunk or its finish chunk. The
client sees the same text the JSON answer would have had, a few characters later. Tool calls, the
role and the usage pass through untouched.

    [gateway]
    pipeline = ["request_log", "memory_cache", "response_rewriter", "retry", "openai"]

    [plugins.response_rewriter]
    replacements = { "Globex Corporation" = "[a competitor]", "Initech" = "[a competitor]" }
"""
from __future__ import annotations

import re
from typing import Any, AsyncIterator, Awaitable, Callable

from pydantic import Field, field_validator

from hookgate import Completion, CompletionStream, PluginConfig, ProviderResponse, RequestContext, hookimpl

__all__ = ["ResponseRewriter", "ResponseRewriterConfig", "Rewriter"]


class ResponseRewriterConfig(PluginConfig):
    """Settings of ``[plugins.response_rewriter]``."""

    replacements: dict[str, str] = Field(default_factory=dict, max_length=500, description="term -> what the answer says instead (case-sensitive)")

    @field_validator("replacements")
    @classmethod
    def _bounded_terms(cls, replacements: dict[str, str]) -> dict[str, str]:
        for term in replacements:
            if not 1 <= len(term) <= 200:
                raise ValueError(f"term {term[:40]!r}…: a term has 1 to 200 characters")
        return replacements


class Rewriter:
    """Replaces terms in text, all at once or as a stream of pieces."""

    def __init__(self, replacements: dict[str, str]) -> None:
        self.replacements = replacements
        # Longest first, so that a term that starts another one never wins over it.
        self.pattern = re.compile("|".join(re.escape(term) for term in sorted(replacements, key=len, reverse=True)))
        self.hold = max(map(len, replacements)) - 1

    def all(self, text: str) -> str:
        return self.pattern.sub(lambda match: self.replacements[match.group(0)], text)

    def feed(self, pending: str) -> tuple[str, str]:
        """What of ``pending`` (text not sent yet) can be sent now, rewritten, and what must wait.

        A term not yet complete starts within the last ``hold`` characters, so everything before
        them is final; a term that starts before them is complete, and is sent whole.
        """
        cut = len(pending) - self.hold
        if cut <= 0:
            return "", pending
        pieces, position = [], 0
        for match in self.pattern.finditer(pending):
            if match.start() >= cut:
                break
            pieces += [pending[position : match.start()], self.replacements[match.group(0)]]
            position = match.end()
        if position < cut:
            pieces.append(pending[position:cut])
            position = cut
        return "".join(pieces), pending[position:]


class ResponseRewriter:
    """Replaces configured terms in every answer, JSON and streamed (terms split across chunks too)."""

    Config = ResponseRewriterConfig

    def __init__(self, config: ResponseRewriterConfig) -> None:
        self.config = config
        self.rewriter = Rewriter(config.replacements) if config.replacements else None

    @hookimpl
    async def call_provider(
        self, ctx: RequestContext, call_next: Callable[[RequestContext], Awaitable[ProviderResponse]]
    ) -> ProviderResponse:
        response = await call_next(ctx)
        if self.rewriter is None:
            return response
        if isinstance(response, CompletionStream):
            # The inner stream's first chunk is in hand, and rewriting yields one chunk per chunk.
            return CompletionStream(
                _rewritten(response, self.rewriter), close=response.aclose, first_chunk_received=response.first_chunk_received
            )
        return Completion({**response.body, "choices": [_rewrite_choice(choice, self.rewriter) for choice in response.body.get("choices") or ()]})


def _rewrite_choice(choice: dict[str, Any], rewriter: Rewriter) -> dict[str, Any]:
    message = choice.get("message") or {}
    if not isinstance(message.get("content"), str):
        return choice
    return {**choice, "message": {**message, "content": rewriter.all(message["content"])}}


async def _rewritten(stream: CompletionStream, rewriter: Rewriter) -> AsyncIterator[dict[str, Any]]:
    pending: dict[int, str] = {}  # per choice: text received, not sent yet
    last: dict[str, Any] | None = None
    async for chunk in stream:
        last = chunk
        choices = []
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            delta = choice.get("delta") or {}
            text = pending.get(index, "") + (delta.get("content") or "")
            if choice.get("finish_reason") is not None:
                ready, pending[index] = rewriter.all(text), ""
            else:
                ready, pending[index] = rewriter.feed(text)
            if "content" in delta or ready:
                delta = {**delta, "content": ready}
            choices.append({**choice, "delta": delta})
        yield {**chunk, "choices": choices} if chunk.get("choices") else chunk
    leftovers = [{"index": index, "delta": {"content": rewriter.all(text)}, "finish_reason": None, "logprobs": None}
                 for index, text in pending.items() if text]
    if leftovers and last is not None:
        # A stream cut off before its finish chunk: what was held back is still the answer's.
        yield {key: value for key, value in last.items() if key != "usage"} | {"choices": leftovers}
