"""How much client input a wire translation walks through before it refuses the request.

The edge already bounds a body's bytes; these bounds keep the translation itself linear and
small whatever a body of that size holds (a million one-character messages, ten thousand tools),
and bound what a translating stream tracks of an upstream's answer. A request over a bound is a
400 naming the parameter; an upstream answer over one is a 502, before anything is built from it.

Defaults follow the APIs' own published limits where there are some (Anthropic: 100,000
messages; OpenAI: 2,048 embedding inputs); elsewhere they are far above what real clients send
(Claude Code sends tens of tools, a long agent session a few thousand messages).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Final, final

__all__ = ["DEFAULT_LIMITS", "WireLimits"]


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class WireLimits:
    """Bounds on what a translation reads; pass your own to tighten them for a surface."""

    max_messages: int = 100_000
    """Messages (Anthropic ``messages``, Responses ``input`` items, earlier turns included)."""
    max_parts: int = 10_000
    """Content blocks or parts in one message, tool result or function output."""
    max_tools: int = 1_024
    """Tool definitions in one request."""
    max_stop_sequences: int = 64
    """Stop sequences in one request."""
    max_output_items: int = 1_024
    """Content blocks, tool calls or output items a translating stream tracks in one upstream
    answer; an upstream sending more is malformed (502)."""

    def __post_init__(self) -> None:
        for name in ("max_messages", "max_parts", "max_tools", "max_stop_sequences", "max_output_items"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


DEFAULT_LIMITS: Final = WireLimits()
"""The bounds every translation uses unless given others."""
