"""The semantic cache's hard partition for conversations: only the last user turn is compared by meaning.

"Yes, cancel it" after a chat about a streaming subscription and "yes, cancel it" after a chat
about a gym membership are the same string and embed identically; a cache that compares only the
last message serves one's answer for the other every time (fow-cache's conversation traps: 98%
wrong). So every message before the last user turn, the system prompt included, is hashed
exactly into the partition: a candidate is only ever looked for among entries whose earlier
turns were identical, and only the last user turn's text goes to the embedder and the guard.

The price is plain: a conversation whose earlier turns were merely reworded never hits. That is
the trade the cache makes on purpose (a miss costs one upstream call; a wrong hit is a wrong
answer).

The rest of the partition (tenant, surface, route and upstream model, generation parameters,
tools, response format, the embedding model's id, the entry schema) is the semantic cache
plugin's to add; this module owns the conversation part.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, final

from hookgate import canonical_json

__all__ = ["ConversationPartition", "conversation_partition", "PARTITION_VERSION"]

PARTITION_VERSION = "conv-v1"
"""Part of every prefix hash: bumped when what is hashed changes, so old partitions are never reused."""


@final
@dataclass(frozen=True, slots=True)
class ConversationPartition:
    """A conversation split for the semantic cache."""

    prefix_hash: str
    """sha256 (hex) of every message before the last user turn and of that turn's other fields
    (role, name…): two conversations share it only if all of it is identical."""
    last_user_text: str
    """The last user turn's text: what is embedded and compared by meaning."""


def conversation_partition(messages: Sequence[Mapping[str, Any]]) -> ConversationPartition | None:
    """Split chat ``messages`` (OpenAI shape: ``role``, ``content`` as a string or a list of parts)
    into the exact prefix hash and the last user turn's text.

    Returns None when the request cannot be compared by meaning, so only an exact cache may serve
    it: no messages, a last message that is not the user's (a tool result, a prefilled assistant
    turn), or a last user turn with anything but text (images, audio, files) or no text at all.
    """
    if not messages or not all(isinstance(message, Mapping) for message in messages):
        return None
    last = messages[-1]
    if last.get("role") != "user":
        return None
    text = _text_of(last.get("content"))
    if text is None or not text.strip():
        return None
    material = {
        "version": PARTITION_VERSION,
        "prefix": [dict(message) for message in messages[:-1]],
        "last": {key: value for key, value in last.items() if key != "content"},
    }
    return ConversationPartition(hashlib.sha256(canonical_json(material)).hexdigest(), text)


def _text_of(content: Any) -> str | None:
    """A message's text: the string itself, or its text parts joined; None if any part is not text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts: list[str] = []
    for part in content:
        if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            return None
        texts.append(part["text"])
    return "\n".join(texts)
