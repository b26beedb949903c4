"""The input items of a stored response, read back from its conversation.

A response stored in the shared conversation store keeps only its own ``response`` object; the
items that made it (``GET /v1/responses/{id}/input_items``: every earlier turn of its chain or
conversation, then its own input, as OpenAI's API lists them) are the conversation's messages
before its answer. Those are kept in the canonical chat shape, as the upstream received them
(after masking and every other plugin's rewriting, so nothing is stored twice or unmasked), and
are turned back into Responses items here: a user/system/developer message into an input
``message`` (text, images, files), an assistant message into an output ``message`` and one
``function_call`` per tool call, a tool result into a ``function_call_output``.

The way back is not byte for byte: the item ids are the gateway's (stable per conversation and
position, so ``after`` pagination works), parts a chat message cannot carry were never stored,
and a text output with images was stored as text plus a user message of the images.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["conversation_items"]


def conversation_items(messages: Iterable[tuple[int, dict[str, Any]]], conversation_id: str) -> list[dict[str, Any]]:
    """The Responses items for ``(position, chat message)`` pairs of a conversation, oldest first."""
    tag = conversation_id.removeprefix("conv_")
    items: list[dict[str, Any]] = []
    for position, message in messages:
        role = message.get("role")
        where = f"{tag}_{position}"
        if role in ("user", "system", "developer"):
            content = _input_content(message.get("content"))
            if content:
                items.append({"id": f"msg_{where}", "type": "message", "role": role, "status": "completed", "content": content})
        elif role == "assistant":
            text = _text(message.get("content")) or (message.get("refusal") if isinstance(message.get("refusal"), str) else "")
            if text:
                part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                items.append({"id": f"msg_{where}", "type": "message", "role": "assistant", "status": "completed", "content": [part]})
            for number, call in enumerate(message.get("tool_calls") or ()):
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(call.get("id"), str):
                    items.append({
                        "id": f"fc_{where}_{number}", "type": "function_call", "status": "completed", "call_id": call["id"],
                        "name": str(function.get("name") or ""), "arguments": str(function.get("arguments") or ""),
                    })  # fmt: skip
        elif role == "tool" and isinstance(message.get("tool_call_id"), str):
            output = _text(message.get("content"))
            items.append({"id": f"fco_{where}", "type": "function_call_output", "status": "completed", "call_id": message["tool_call_id"], "output": output})
    return items


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def _input_content(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}]
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "input_text", "text": part["text"]})
        elif kind == "image_url" and isinstance(part.get("image_url"), dict):
            image = part["image_url"]
            parts.append({"type": "input_image", "image_url": image.get("url"), "detail": image.get("detail") or "auto"})
        elif kind == "file" and isinstance(part.get("file"), dict):
            parts.append({"type": "input_file", **{k: v for k, v in part["file"].items() if k in ("file_data", "file_id", "filename")}})
    return parts
