"""Reading server-sent events from an upstream, for providers that relay streams.

Two readers of the same format: :class:`SSEDecoder` takes the raw bytes of a response in the
reads they arrive in and hands back the events each read completed (what a provider on the
``http`` transport uses: no line splitting, no text decoding of the data); :func:`iter_sse_data`
takes a stream already split into text lines.
"""
from __future__ import annotations

from typing import AsyncIterator

__all__ = ["SSEDecoder", "SSEEventTooLarge", "iter_sse_data"]


class SSEEventTooLarge(ValueError):
    """An event grew past the decoder's bound before its blank line arrived."""


class SSEDecoder:
    """Server-sent events from raw bytes, fed one read at a time.

    :meth:`feed` returns ``(event name or None, data bytes)`` for each event the read completed;
    a multi-line ``data:`` field is joined with ``\\n`` as the specification says, comments
    (``:``) and ``id:``/``retry:`` fields are skipped, ``\\r\\n`` and ``\\r`` line ends are read
    like ``\\n`` (also when a ``\\r\\n`` is split between two reads). An event whose data has not
    ended within ``max_event_bytes`` raises :class:`SSEEventTooLarge`, so an upstream that never
    sends a blank line cannot grow memory without end. The OpenAI terminator ``[DONE]`` is an
    event like any other: the caller decides what it means.

    One read usually holds whole events: they are split in one pass over the bytes, and a single
    ``data:`` line (every OpenAI chunk) is returned without being parsed further.
    """

    __slots__ = ("max_event_bytes", "_parts", "_size", "_cr")

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_event_bytes = max_event_bytes
        self._parts: list[bytes] = []  # an event begun in earlier reads, without "\n\n" inside
        self._size = 0
        self._cr = False  # the last read ended in "\r": its "\n" may open the next one

    def feed(self, data: bytes) -> list[tuple[str | None, bytes]]:
        """The events completed by this read, in order."""
        if self._cr:
            data, self._cr = b"\r" + data, False
        if b"\r" in data:
            if data.endswith(b"\r"):
                data, self._cr = data[:-1], True
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[tuple[str | None, bytes]] = []
        if self._parts:
            if self._parts[-1].endswith(b"\n") and data.startswith(b"\n"):
                block, data = b"".join(self._parts)[:-1], data[1:]
            else:
                end = data.find(b"\n\n")
                if end < 0:
                    self._keep(data)
                    return events
                block, data = b"".join(self._parts) + data[:end], data[end + 2 :]
            self._parts.clear()
            self._size = 0
            _dispatch(block, events)
        blocks = data.split(b"\n\n")
        rest = blocks.pop()
        for block in blocks:
            _dispatch(block, events)
        if rest:
            self._keep(rest)
        return events

    def finish(self) -> list[tuple[str | None, bytes]]:
        """At the end of the response: an event whose closing blank line never came (read
        leniently, as :func:`iter_sse_data` does)."""
        events: list[tuple[str | None, bytes]] = []
        if self._parts:
            _dispatch(b"".join(self._parts), events)
            self._parts.clear()
            self._size = 0
        return events

    def _keep(self, data: bytes) -> None:
        if not data:
            return
        self._size += len(data)
        if self._size > self.max_event_bytes:
            raise SSEEventTooLarge(f"an event is longer than {self.max_event_bytes} bytes")
        self._parts.append(data)


def _dispatch(block: bytes, events: list[tuple[str | None, bytes]]) -> None:
    if block.startswith(b"data: ") and b"\n" not in block:
        events.append((None, block[6:]))
        return
    event: str | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line.startswith(b"data: ") else line[5:])
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode("utf-8", "replace")
    if data:
        events.append((event, b"\n".join(data)))


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
