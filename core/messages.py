"""Reading chat messages: helpers for plugins that look at what a request says."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

__all__ = ["message_text", "last_user_text"]


def message_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text parts of a multi-part list
    joined by spaces (images and audio parts carry no text)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def last_user_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """The text of the last ``user`` message, or "" when there is none."""
    text = ""
    for message in messages:
        if message.get("role") == "user":
            text = message_text(message.get("content"))
    return text
