"""Reading server-sent events from an upstream, for providers that relay streams."""
from __future__ import annotations

from typing import AsyncIterator

__all__ = ["iter_sse_data"]


async def iter_sse_data(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str | None, str]]:
    """Yield ``(event, data)`` for each event of an SSE stream given line by line.

    Multi-line ``data:`` fields are joined with newlines as the SSE specification says; comment
    lines (``:``) and ``id:``/``retry:`` fields are skipped. The OpenAI terminator ``[DONE]`` is
    yielded like any other data: the caller decides what it means.
    """
    event: str | None = None
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
            continue
        if line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
        elif line.startswith("event:"):
            event = line[6:].strip()
    if data:
        yield event, "\n".join(data)
