"""Reading server-sent events from an upstream, for providers that relay streams.

Two readers of the same format: :class:`SSEDecoder` takes the raw bytes of a response in the
reads they arrive in and hands back the events each read completed (what a provider on the
``http`` transport uses: no line splitting, no text decoding of the data); :func:`iter_sse_data`
takes a stream already split into text lines.

:class:`SSERelay` lets the core write a pass-through stream as the upstream's own bytes, one
write per upstream read, while the chain still sees every chunk parsed.
"""
from __future__ import annotations

from collections import deque
from typing import Any, AsyncIterator, Sequence

import orjson

from .state import StateKey

__all__ = ["SSEDecoder", "SSEEventTooLarge", "SSERelay", "SSE_RELAY", "iter_sse_data"]


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

    def data_only(self, data: bytes) -> list[bytes] | None:
        """The data of each event in ``data`` when it is nothing but whole one-line ``data:``
        events (``data: …\n\n`` after ``data: …\n\n``, what an OpenAI-wire upstream sends) and
        no event is part-read; else None, and nothing is consumed: :meth:`feed` it then.

        The fast case of :meth:`feed`, without a tuple per event. JSON cannot hold a raw line
        break, so a newline in such a stream is always framing: a read has only one-line
        ``data:`` events exactly when no newline is left once it is split at the events'
        boundaries. (Looking for one in the joined payloads is a ``memchr``; counting a read's
        newlines took as long as the split itself.)
        """
        if self._parts or self._cr or not (data.startswith(b"data: ") and data.endswith(b"\n\n")):
            return None
        payloads = data[6:-2].split(b"\n\ndata: ")
        if b"\r" in data or b"\n" in b"".join(payloads):
            return None
        return payloads

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


class SSERelay:
    """The upstream's bytes of a pass-through stream, read by read, for the core to write as
    they came: one write per upstream read instead of one per chunk, and no chunk serialised again.

    The provider registers each read with :meth:`add` (the chunks it parsed from that read, in
    order, and the read's bytes) before it yields those chunks, and puts the relay on the request
    as :data:`SSE_RELAY`. The core gets the chunks through the provider middleware chain and hands
    each to :meth:`accept`. When the chunks of a read have all come through, as the very objects
    the provider yielded and in its order, the core gets that read's bytes to write. Any other
    chunk (a middleware made, dropped, reordered or replaced one: token_counter hiding a usage
    chunk, a rewriter) *breaks* the relay. :meth:`release` then returns the chunks accepted but
    not yet written, for the core to render as it renders any chunk, and so does every later
    chunk. A chunk changed in place (a middleware editing the provider's dict instead of yielding
    a new one) breaks it too: each chunk is serialised when it comes through and compared with
    its JSON when its read was registered (the upstream's own text, when the provider passes it
    and it is what orjson writes), so an edit always reaches the client, whichever way a plugin
    makes it (about 0.5 µs for a usual chunk, against a write saved per chunk).

    :param wire: the wire format of the bytes (``openai.chat``…): the core relays them only to a
        surface of that wire.
    :param max_pending_bytes: bytes registered and not yet written past which the relay gives up
        (a middleware holding chunks back cannot make it keep a whole stream).
    """

    __slots__ = ("wire", "max_pending_bytes", "broken", "assembly", "_groups", "_held", "_size")

    def __init__(self, wire: str, *, max_pending_bytes: int = 4 * 1024 * 1024) -> None:
        self.wire = wire
        self.max_pending_bytes = max_pending_bytes
        self.broken = False
        """True once a chunk came that the relay cannot account for: render from then on."""
        self.assembly: Any = None
        """The provider's :class:`hookgate.responses.StreamAssembly` of the chunks it registers,
        if it keeps one: the answer, when the relay vouched for every chunk the core got."""
        self._groups: deque[tuple[Sequence[Any], list[bytes], bytes]] = deque()
        self._held: list[Any] = []
        self._size = 0

    def add(self, chunks: Sequence[Any], raw: bytes, payloads: Sequence[bytes] | None = None) -> None:
        """Register one upstream read: the chunks made from it, in order, and its bytes (whole
        events only). A read that made no chunk (only comments) has nothing to relay. The chunks
        are the ones the provider hands on, so checked (:func:`hookgate.check_chunk`): the core
        does not check again those that come through unchanged.

        ``payloads``, when given, are the JSON texts the chunks were parsed from, one per chunk:
        they serve as the chunks' snapshots instead of serialising each chunk here. (A chunk
        whose serialisation differs from its text, an upstream that writes spaces, is then
        compared as it was parsed: parsed and serialised again when it comes through.)
        """
        if self.broken or not chunks:
            return
        self._size += len(raw)
        if self._size > self.max_pending_bytes:
            self.abandon()
            return
        if payloads is None or len(payloads) != len(chunks):
            payloads = [orjson.dumps(chunk) for chunk in chunks]
        self._groups.append((chunks, payloads, raw))

    def abandon(self) -> None:
        """Give up relaying bytes (a read the provider cannot account for): render from here."""
        self.broken = True
        self._groups.clear()
        self._size = 0

    def accept(self, chunk: Any) -> bytes:
        """The bytes to write now for ``chunk``: its read's, once that read's last chunk came,
        else ``b""``. Check :attr:`broken` after each call."""
        held = self._held
        held.append(chunk)
        if self.broken:
            return b""
        groups = self._groups
        if groups:
            chunks, snapshots, raw = groups[0]
            index = len(held) - 1
            if chunks[index] is chunk and _unchanged(chunk, snapshots[index]):
                if len(held) < len(chunks):
                    return b""
                groups.popleft()
                self._size -= len(raw)
                held.clear()
                return raw
        self.abandon()
        return b""

    def accept_all(self, chunks: Sequence[Any], *, intact: bool = False) -> bytes:
        """:meth:`accept` of each of ``chunks`` (a batch, :meth:`hookgate.CompletionStream.batches`),
        their bytes together. A batch that is a whole registered read, unchanged, is one check.

        ``intact``: the chunks came in a stream no plugin code could reach into
        (:attr:`hookgate.CompletionStream.relay` is this relay), so they can only have been
        edited by having been iterated, which makes another stream: they are then only checked
        to be the registered objects, in order, not compared with their snapshots."""
        groups = self._groups
        if groups and not self._held and not self.broken:
            registered, snapshots, raw = groups[0]
            if len(registered) == len(chunks):
                for mine, theirs, snapshot in zip(registered, chunks, snapshots):
                    if mine is not theirs or not (intact or _unchanged(theirs, snapshot)):
                        break
                else:
                    groups.popleft()
                    self._size -= len(raw)
                    return raw
        return b"".join([self.accept(chunk) for chunk in chunks])

    def release(self) -> list[Any]:
        """The chunks accepted whose bytes were not written (the core renders them)."""
        held, self._held = self._held, []
        return held


def _unchanged(chunk: Any, snapshot: bytes) -> bool:
    """Whether ``chunk`` still is what ``snapshot`` (its JSON when it was registered) says."""
    now = orjson.dumps(chunk)
    if now == snapshot:
        return True
    try:  # an upstream's text that is not orjson's own (spaces, escapes): as it was parsed
        return orjson.dumps(orjson.loads(snapshot)) == now
    except orjson.JSONDecodeError:
        return False


SSE_RELAY: StateKey[SSERelay] = StateKey(
    "core.sse_relay",
    SSERelay,
    "the upstream bytes of the current attempt's stream, read by read; set by a provider that relays them",
)


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
