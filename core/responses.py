"""What a provider returns: a complete answer, or a stream of chunks.

Both carry OpenAI's wire shapes as plain dicts (``chat.completion`` and ``chat.completion.chunk``)
so that a body parsed once from the upstream's bytes goes to the client without being rebuilt
from models. Providers that speak another API translate into these shapes.

Those dicts come from an upstream, so a provider checks each with :func:`check_completion` or
:func:`check_chunk` before handing it on: a non-object choice, an integer ``delta.content`` or
a choice index of a billion is a 502 ``upstream_malformed`` (or, mid-stream, an SSE error event),
never a TypeError in whatever plugin reads the answer next.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable

import orjson
from .errors import UpstreamError

if TYPE_CHECKING:
    from .sse import SSERelay

__all__ = [
    "Completion",
    "CompletionStream",
    "ProviderResponse",
    "with_first_chunk",
    "assemble_stream",
    "completion_to_chunks",
    "is_complete",
    "check_chunk",
    "check_completion",
    "MAX_CHOICES",
    "MAX_TOOL_CALLS",
]

MAX_CHOICES = 128
"""Highest choice count an answer may have (OpenAI's ``n`` is at most 128): a choice index must
be below it."""
MAX_TOOL_CALLS = 1024
"""Highest tool-call count of one choice: a tool call's index must be below it."""


@dataclass(slots=True)
class Completion:
    """A complete answer: for chat-like surfaces a ``chat.completion`` body, for embeddings
    OpenAI's embeddings list, for legacy completions a ``text_completion``.

    ``native`` is the upstream's own answer when it spoke the client's surface natively (an
    Anthropic ``message`` for an Anthropic client): what that surface sends, losslessly, while the
    chain's plugins read ``body``. Caches keep both.
    """

    body: dict[str, Any]
    native: dict[str, Any] | None = None

    def to_bytes(self) -> bytes:
        """The answer serialised for a cache: ``{"body": …}``, with ``"native"`` when it has one."""
        if self.native is None:
            return b'{"body":' + orjson.dumps(self.body) + b"}"
        return orjson.dumps({"body": self.body, "native": self.native})

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> Completion | None:
        """An answer :meth:`to_bytes` wrote, or None for anything else (a cache treats it as a miss)."""
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return cls.from_entry(entry)

    @classmethod
    def from_entry(cls, entry: Any) -> Completion | None:
        """An answer from the parsed form of :meth:`to_bytes`, or None when it is not one."""
        if not isinstance(entry, dict):
            return None
        body, native = entry.get("body"), entry.get("native")
        if not isinstance(body, dict) or not (isinstance(body.get("choices"), list) or isinstance(body.get("data"), list)):
            return None
        return cls(body, native if isinstance(native, dict) else None)

    @property
    def usage(self) -> dict[str, Any] | None:
        """The provider's token usage (``prompt_tokens``, ``completion_tokens``…), if it sent any."""
        return self.body.get("usage")


class CompletionStream:
    """An upstream answer arriving as ``chat.completion.chunk`` dicts.

    Iterate it once. ``aclose()`` releases the upstream connection; the core always calls it,
    also when the client went away mid-stream. A middleware that wants to watch or transform
    chunks wraps the stream: ``CompletionStream(my_generator(stream), close=stream.aclose)``, and
    yields the chunks it wants sent, new dicts or the received ones edited (the core's byte relay
    of a pass-through stream, :class:`hookgate.sse.SSERelay`, notices either and renders from there).

    **Batches.** A provider that reads its upstream in reads of many chunks can hand them over
    as they came: ``CompletionStream.of_batches(batches)``, an iterator of non-empty lists of
    chunks, one per read. Iterating the stream still gives one chunk at a time, so a middleware
    written as above sees no difference. A middleware that only needs to know *when* chunks come
    can wrap :meth:`batches` instead and build its stream with :meth:`of_batches`: the chunks
    of one read arrive together anyway, and the stream then costs it one step per read rather
    than per chunk. One that touches no chunk uses :meth:`with_close` (a slot held until the
    end) or :meth:`with_guard` (a limit on each wait): the stream then stays the provider's
    own (:attr:`relay`). :meth:`batches` of a stream
    made from chunks gives each chunk as a list of one.
    """

    __slots__ = ("_chunks", "_batches", "_close", "first_chunk_received", "relay")

    def __init__(
        self,
        chunks: AsyncIterator[dict[str, Any]],
        close: Callable[[], Awaitable[None]] | None = None,
        *,
        first_chunk_received: bool = False,
    ) -> None:
        self._chunks: AsyncIterator[dict[str, Any]] | None = chunks
        self._batches: AsyncIterator[list[dict[str, Any]]] | None = None
        self._close = close
        self.first_chunk_received = first_chunk_received
        """True once :func:`with_first_chunk` has the first chunk in hand (nothing sent yet)."""
        self.relay: SSERelay | None = None
        """The provider's :class:`~hookgate.sse.SSERelay` while this stream is its chunk objects as
        it made them, passed on only by :meth:`with_close`, :meth:`with_guard` and
        :func:`with_first_chunk`: no plugin code had them, so the core writes the relay's bytes
        without comparing each chunk with them. Any stream a middleware builds has None."""

    @classmethod
    def of_batches(
        cls,
        batches: AsyncIterator[list[dict[str, Any]]],
        close: Callable[[], Awaitable[None]] | None = None,
        *,
        first_chunk_received: bool = False,
        relay: SSERelay | None = None,
    ) -> CompletionStream:
        """A stream whose chunks come in groups (see Batches above): each item of ``batches`` a
        non-empty list of chunks that arrived together. ``relay``: for a provider, the relay
        its ``batches`` register their reads with (see :attr:`relay`)."""
        stream = cls.__new__(cls)
        stream._chunks, stream._batches, stream._close = None, batches, close
        stream.first_chunk_received = first_chunk_received
        stream.relay = relay
        return stream

    @property
    def batched(self) -> bool:
        """Whether the chunks come in groups (:meth:`of_batches`): :meth:`batches` then costs
        nothing per chunk."""
        return self._batches is not None

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        if self._chunks is None:
            assert self._batches is not None
            self._chunks = _flattened(self._batches)
        return self._chunks

    def batches(self) -> AsyncIterator[list[dict[str, Any]]]:
        """The chunks in the groups they arrived in; one list per chunk for a stream made from
        chunks. Iterate the stream one way only."""
        if self._batches is None:
            assert self._chunks is not None
            self._batches = _singletons(self._chunks)
        return self._batches

    def with_close(self, close: Callable[[], Awaitable[None]]) -> CompletionStream:
        """The same chunks, in the same groups, with ``close`` as what :meth:`aclose` runs
        (which must close this stream in turn): for a middleware that holds something until
        the stream ends and watches nothing else."""
        if self._batches is not None and self._chunks is None:
            return CompletionStream.of_batches(self._batches, close, first_chunk_received=self.first_chunk_received, relay=self.relay)
        return CompletionStream(self.__aiter__(), close, first_chunk_received=self.first_chunk_received)

    def with_guard(self, guard: Callable[[], AbstractContextManager[Any]], *, done: Callable[[], None] | None = None) -> CompletionStream:
        """The same chunks, in the same groups, each wait for the next chunk (or group) made
        inside ``with guard():``, left with the wait's exception if it raised (which
        ``__exit__`` may replace by raising its own); ``done()`` is called once the stream
        ended or was closed. For a middleware that limits or measures the waits and touches no
        chunk: ``timeout`` watches a stream's gaps this way. The stream stays its provider's
        own (:attr:`relay`), and closing it closes this one."""
        if self._batches is not None and self._chunks is None:
            guarded = CompletionStream.of_batches(_guarded(self._batches, guard, done), self.aclose, first_chunk_received=self.first_chunk_received)
            guarded.relay = self.relay
            return guarded
        return CompletionStream(_guarded(self.__aiter__(), guard, done), self.aclose, first_chunk_received=self.first_chunk_received)

    async def aclose(self) -> None:
        """Release the upstream call. Safe to call more than once."""
        close, self._close = self._close, None
        try:
            if close is not None:
                await close()
        finally:
            for iterator in (self._chunks, self._batches):
                aclose = getattr(iterator, "aclose", None)
                if aclose is not None:
                    await aclose()


async def _flattened(batches: AsyncIterator[list[dict[str, Any]]]) -> AsyncIterator[dict[str, Any]]:
    async for batch in batches:
        for chunk in batch:
            yield chunk


async def _singletons(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[list[dict[str, Any]]]:
    async for chunk in chunks:
        yield [chunk]


async def _guarded(items: AsyncIterator[Any], guard: Callable[[], AbstractContextManager[Any]], done: Callable[[], None] | None) -> AsyncIterator[Any]:
    """``items`` (chunks or batches), each wait for the next inside ``guard()``."""
    try:
        while True:
            with guard():
                try:
                    item = await items.__anext__()
                except StopAsyncIteration:
                    return
            yield item
    finally:
        if done is not None:
            done()


ProviderResponse = Completion | CompletionStream


async def with_first_chunk(stream: CompletionStream) -> CompletionStream:
    """Wait for a stream's first chunk, and return a stream that yields it and then the rest.

    Until the first chunk reaches the client a stream can still be retried or turned into a
    plain HTTP error, so reliability middlewares call this inside their attempt: an upstream that
    accepted the request and then failed or stalled before its first chunk fails *here*. The
    upstream is closed when that happens. Idempotent: a stream already primed is returned as is.
    A batched stream stays batched: its first batch is what is waited for.
    """
    if stream.first_chunk_received:
        return stream
    batched = stream.batched
    iterator: Any = stream.batches() if batched else stream.__aiter__()
    try:
        first: Any = await anext(iterator)
    except StopAsyncIteration:
        first = None
    except BaseException:
        await stream.aclose()
        raise
    if batched:
        return CompletionStream.of_batches(_Replayed(first, iterator), close=stream.aclose, first_chunk_received=True, relay=stream.relay)
    return CompletionStream(_Replayed(first, iterator), close=stream.aclose, first_chunk_received=True)


class _Replayed:
    """A stream's first chunk (or batch) again, then the rest straight from its iterator: each
    later one costs one method call here, not a hop through a generator of its own."""

    __slots__ = ("_first", "_rest")

    def __init__(self, first: Any, rest: AsyncIterator[Any]) -> None:
        self._first, self._rest = first, rest

    def __aiter__(self) -> _Replayed:
        return self

    def __anext__(self) -> Awaitable[Any]:
        first = self._first
        if first is None:
            return self._rest.__anext__()
        self._first = None
        return _ready(first)

    async def aclose(self) -> None:
        self._first = None
        aclose = getattr(self._rest, "aclose", None)
        if aclose is not None:
            await aclose()


async def _ready(value: Any) -> Any:
    return value


# -------------------------------------------------------------------------------------------------
# Checking what an upstream sent
# -------------------------------------------------------------------------------------------------


def check_completion(body: Any, provider: str = "upstream") -> dict[str, Any]:
    """Return ``body`` if it is a ``chat.completion`` the gateway can work with, else raise
    :class:`~hookgate.UpstreamError` (502, code ``upstream_malformed``) naming what is wrong.

    Checked: an object with a list ``choices`` of objects, each with an integer ``index`` below
    :data:`MAX_CHOICES` (when present), an object ``message`` whose ``content`` and ``refusal``
    are strings or null and whose ``tool_calls`` are objects, a string-or-null ``finish_reason``,
    and an object-or-null ``usage``. What the gateway never reads passes untouched.
    """
    if not isinstance(body, dict):
        raise _malformed(provider, "the answer is not a JSON object")
    choices = body.get("choices")
    if not isinstance(choices, list):
        raise _malformed(provider, "'choices' is not an array")
    if len(choices) > MAX_CHOICES:
        raise _malformed(provider, f"more than {MAX_CHOICES} choices")
    for number, choice in enumerate(choices):
        where = f"choices[{number}]"
        if not isinstance(choice, dict):
            raise _malformed(provider, f"{where} is not an object")
        _check_index(choice, MAX_CHOICES, where, provider)
        message = choice.get("message")
        if message is not None:
            if not isinstance(message, dict):
                raise _malformed(provider, f"{where}.message is not an object")
            _check_text(message, f"{where}.message", provider)
            calls = message.get("tool_calls")
            if calls is not None and not (isinstance(calls, list) and len(calls) <= MAX_TOOL_CALLS and all(isinstance(c, dict) for c in calls)):
                raise _malformed(provider, f"{where}.message.tool_calls is not an array of objects")
        _check_finish(choice, where, provider)
    _check_usage(body, provider)
    return body


def check_chunk(chunk: Any, provider: str = "upstream") -> dict[str, Any]:
    """Return ``chunk`` if it is a ``chat.completion.chunk`` the gateway can assemble, else raise
    :class:`~hookgate.UpstreamError` (502, code ``upstream_malformed``).

    Checked: an object whose ``choices`` (when present) is a list of objects, each with an
    integer ``index`` below :data:`MAX_CHOICES`, an object-or-null ``delta`` whose ``content``
    and ``refusal`` are strings or null and whose ``tool_calls`` are objects with an integer
    ``index`` below :data:`MAX_TOOL_CALLS` and string-or-null ``id``, ``type``,
    ``function.name`` and ``function.arguments``; a string-or-null ``finish_reason``; an
    object-or-null ``usage``. Called by providers on every chunk: a few type checks.
    """
    _check_chunk(chunk, provider, None)
    return chunk


def _check_chunk(chunk: Any, provider: str, assembling: dict[int, _Assembling] | None) -> Any:
    """:func:`check_chunk`'s checks, each choice also added to ``assembling`` when given
    (:class:`StreamAssembly`); the chunk's usage."""
    if not isinstance(chunk, dict):
        raise _malformed(provider, "a stream chunk is not a JSON object")
    choices = chunk.get("choices")
    if choices is not None:
        if not isinstance(choices, list) or len(choices) > MAX_CHOICES:
            raise _malformed(provider, "a chunk's 'choices' is not an array (of at most 128)")
        for choice in choices:
            _check_chunk_choice(choice, provider, assembling)
    usage = chunk.get("usage")
    if usage is not None and not isinstance(usage, dict):
        raise _malformed(provider, "'usage' is not an object")
    return usage


def _check_chunk_choice(choice: Any, provider: str, assembling: dict[int, _Assembling] | None = None) -> None:
    """One choice of a chunk, as :func:`check_chunk` says; the checks of a usual text delta are
    written out here rather than called (this runs for every chunk of every stream). With
    ``assembling``, the choice is also added to its answer (:class:`StreamAssembly`)."""
    if not isinstance(choice, dict):
        raise _malformed(provider, "a chunk's choice is not an object")
    index = choice.get("index", 0)
    if type(index) is not int or not 0 <= index < MAX_CHOICES:
        raise _malformed(provider, f"a chunk's choice has an index that is not an integer from 0 to {MAX_CHOICES - 1}")
    delta = choice.get("delta")
    if delta is not None:
        if not isinstance(delta, dict):
            raise _malformed(provider, "a chunk's delta is not an object")
        content, refusal = delta.get("content"), delta.get("refusal")
        if content is not None and not isinstance(content, str):
            raise _malformed(provider, "a chunk's delta.content is not a string")
        if refusal is not None and not isinstance(refusal, str):
            raise _malformed(provider, "a chunk's delta.refusal is not a string")
        calls = delta.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list):
                raise _malformed(provider, "a chunk's delta.tool_calls is not an array")
            for call in calls:
                _check_tool_call_delta(call, provider)
    reason = choice.get("finish_reason")
    if reason is not None and not isinstance(reason, str):
        raise _malformed(provider, "a chunk's choice.finish_reason is not a string")
    if assembling is not None:
        slot = assembling.get(index)
        if slot is None:
            slot = assembling[index] = _Assembling()
        if delta:
            if content is not None:
                slot.content.append(content)
            if refusal is not None:
                slot.refusal.append(refusal)
            for call in calls or ():
                slot.merge_tool_call(call)
        if reason is not None:
            slot.finish_reason = reason


def _check_index(item: dict[str, Any], bound: int, where: str, provider: str) -> None:
    index = item.get("index", 0)
    if type(index) is not int or not 0 <= index < bound:
        raise _malformed(provider, f"{where} has an index that is not an integer from 0 to {bound - 1}")


def _check_text(item: dict[str, Any], where: str, provider: str) -> None:
    for name in ("content", "refusal"):
        value = item.get(name)
        if value is not None and not isinstance(value, str):
            raise _malformed(provider, f"{where}.{name} is not a string")


def _check_finish(choice: dict[str, Any], where: str, provider: str) -> None:
    reason = choice.get("finish_reason")
    if reason is not None and not isinstance(reason, str):
        raise _malformed(provider, f"{where}.finish_reason is not a string")


def _check_usage(body: dict[str, Any], provider: str) -> None:
    usage = body.get("usage")
    if usage is not None and not isinstance(usage, dict):
        raise _malformed(provider, "'usage' is not an object")


def _check_tool_call_delta(call: Any, provider: str) -> None:
    if not isinstance(call, dict):
        raise _malformed(provider, "a chunk's tool call is not an object")
    _check_index(call, MAX_TOOL_CALLS, "a chunk's tool call", provider)
    function = call.get("function")
    if function is not None and not isinstance(function, dict):
        raise _malformed(provider, "a chunk's tool call function is not an object")
    for value in (call.get("id"), call.get("type"), *((function.get("name"), function.get("arguments")) if function else ())):
        if value is not None and not isinstance(value, str):
            raise _malformed(provider, "a chunk's tool call has a field that is not a string")


def _malformed(provider: str, problem: str) -> UpstreamError:
    return UpstreamError(f"The {provider} provider sent a malformed answer: {problem}.", code="upstream_malformed")


# -------------------------------------------------------------------------------------------------
# Assembling and replaying
# -------------------------------------------------------------------------------------------------


def assemble_stream(chunks: list[dict[str, Any]], *, checked: int = 0) -> Completion:
    """Build the ``chat.completion`` that a list of stream chunks amounts to.

    ``after_response`` hooks and caches see streamed answers in this form: content and tool-call
    arguments concatenated per choice, the last finish reason, and the usage chunk if one came.
    Each chunk is checked (:func:`check_chunk`) first: a malformed one raises
    :class:`~hookgate.UpstreamError`, never a TypeError. ``checked`` says how many of the first
    chunks are known to have passed that check unchanged (the core knows it of the chunks it
    relayed as their provider's bytes): they are not checked again.
    """
    for index in range(checked, len(chunks)):
        check_chunk(chunks[index])
    first = chunks[0] if chunks else {}
    if first.get("object") == "text_completion":
        return _assemble_text(chunks)
    choices: dict[int, _Assembling] = {}
    usage = None
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            slot = choices.get(index)
            if slot is None:
                slot = choices[index] = _Assembling()
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content is not None:
                slot.content.append(content)
            refusal = delta.get("refusal")
            if refusal is not None:
                slot.refusal.append(refusal)
            for call in delta.get("tool_calls") or ():
                slot.merge_tool_call(call)
            if choice.get("finish_reason") is not None:
                slot.finish_reason = choice["finish_reason"]
    return _assembled(first, choices, usage)


def _assembled(first: dict[str, Any], choices: dict[int, _Assembling], usage: Any) -> Completion:
    body: dict[str, Any] = {
        "id": first.get("id", ""),
        "object": "chat.completion",
        "created": first.get("created", 0),
        "model": first.get("model", ""),
        "choices": [choices[i].choice(i) for i in sorted(choices)],
    }
    if first.get("system_fingerprint") is not None:
        body["system_fingerprint"] = first["system_fingerprint"]
    if usage is not None:
        body["usage"] = usage
    return Completion(body)


class StreamAssembly:
    """A chat stream's answer, assembled as its chunks are checked (:meth:`checked`, a provider's
    check of each chunk): what :func:`assemble_stream` of the same chunks gives, without a second
    walk through them at the end. It holds only while the chunks that reach the core are those
    it checked, as they were: the core uses it when the provider's relay vouched for every one,
    and assembles the chunks it has otherwise.
    """

    __slots__ = ("provider", "count", "_error_event", "_first", "_assembling", "_usage")

    def __init__(self, provider: str = "upstream", *, error_event: Callable[[dict[str, Any]], Exception] | None = None) -> None:
        """``error_event``: the exception for an event that is an ``{"error": …}`` object (the
        upstream's own error mid-stream), raised instead of checking it as a chunk."""
        self.provider = provider
        self._error_event = error_event
        self.count = 0
        """Chunks checked and assembled so far."""
        self._first: dict[str, Any] | None = None
        self._assembling: dict[int, _Assembling] | None = {}
        """The choices so far; None for a text completion, whose chunks are only checked."""
        self._usage: Any = None

    def checked(self, chunk: Any) -> dict[str, Any]:
        """:func:`check_chunk` of ``chunk``, which is then part of the answer. A text
        completion's chunks are only checked: :meth:`completion` is then None."""
        if isinstance(chunk, dict):
            if "error" in chunk and self._error_event is not None:
                raise self._error_event(chunk)
            if self._first is None:  # the first chunk says what the answer is
                self._first = chunk
                if chunk.get("object") == "text_completion":
                    self._assembling = None
        usage = _check_chunk(chunk, self.provider, self._assembling)
        if usage:
            self._usage = usage
        self.count += 1
        return chunk

    def completion(self) -> Completion | None:
        """The ``chat.completion`` the chunks checked so far amount to (None for none, or for a
        text completion)."""
        if not self.count or self._first is None or self._assembling is None:
            return None
        return _assembled(self._first, self._assembling, self._usage)


class _Assembling:
    """One choice of a stream being assembled: its text kept in pieces and joined once at the
    end (``+=`` on a string held in a dict copies it every time: assembling 80,000 chunks took
    12 s of the event loop that way, measured)."""

    __slots__ = ("content", "refusal", "finish_reason", "tool_calls")

    def __init__(self) -> None:
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.finish_reason: Any = None
        self.tool_calls: list[dict[str, Any]] = []  # id, type, and the name and arguments in pieces

    def merge_tool_call(self, call: dict[str, Any]) -> None:
        calls, index = self.tool_calls, call.get("index", 0)
        while len(calls) <= index:
            calls.append({"id": "", "type": "function", "name": [], "arguments": []})
        target = calls[index]
        if call.get("id"):
            target["id"] = call["id"]
        if call.get("type"):
            target["type"] = call["type"]
        function = call.get("function") or {}
        if function.get("name"):
            target["name"].append(function["name"])
        if function.get("arguments"):
            target["arguments"].append(function["arguments"])

    def choice(self, index: int) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.content) if self.content else None,
            "refusal": "".join(self.refusal) if self.refusal else None,
        }
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": call["id"], "type": call["type"], "function": {"name": "".join(call["name"]), "arguments": "".join(call["arguments"])}}
                for call in self.tool_calls
            ]
        return {"index": index, "message": message, "finish_reason": self.finish_reason, "logprobs": None}


def _assemble_text(chunks: list[dict[str, Any]]) -> Completion:
    """The ``text_completion`` a legacy completions stream amounts to."""
    first = chunks[0]
    texts: dict[int, list[str]] = {}
    reasons: dict[int, Any] = {}
    usage = None
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            index = index if isinstance(index, int) and 0 <= index < 128 else 0
            if isinstance(choice.get("text"), str):
                texts.setdefault(index, []).append(choice["text"])
            if choice.get("finish_reason") is not None:
                reasons[index] = choice["finish_reason"]
    indices = sorted(set(texts) | set(reasons))
    body: dict[str, Any] = {
        "id": first.get("id", ""),
        "object": "text_completion",
        "created": first.get("created", 0),
        "model": first.get("model", ""),
        "choices": [{"index": i, "text": "".join(texts.get(i, ())), "finish_reason": reasons.get(i), "logprobs": None} for i in indices],
    }
    if usage is not None:
        body["usage"] = usage
    return Completion(body)

def is_complete(completion: Completion) -> bool:
    """True when every choice has a finish reason (the answer was not cut off mid-stream), or the
    answer is an embeddings list."""
    body = completion.body
    if body.get("object") == "list":
        return isinstance(body.get("data"), list) and bool(body["data"])
    choices = body.get("choices") or []
    return bool(choices) and all(isinstance(c, dict) and c.get("finish_reason") for c in choices)


def completion_to_chunks(body: dict[str, Any], *, include_usage: bool) -> list[dict[str, Any]]:
    """Replay a complete answer as stream chunks (a cached answer sent to a streaming client)."""
    if body.get("object") == "text_completion":
        head = {key: body.get(key) for key in ("id", "created", "model")}
        texts = [{**head, "object": "text_completion", "choices": [{**c, "finish_reason": None}]} for c in body.get("choices") or ()]
        final = [{**head, "object": "text_completion", "choices": [{**c, "text": ""} for c in body.get("choices") or ()]}]
        usage = [{**head, "object": "text_completion", "choices": [], "usage": body["usage"]}] if include_usage and body.get("usage") else []
        return [*texts, *final, *usage]
    base = {
        "id": body.get("id", ""),
        "object": "chat.completion.chunk",
        "created": body.get("created", 0),
        "model": body.get("model", ""),
    }
    if body.get("system_fingerprint") is not None:
        base["system_fingerprint"] = body["system_fingerprint"]
    content_choices = []
    final_choices = []
    for choice in body.get("choices") or ():
        message = choice.get("message") or {}
        delta: dict[str, Any] = {"role": message.get("role", "assistant"), "content": message.get("content")}
        if message.get("refusal") is not None:
            delta["refusal"] = message["refusal"]
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        index = choice.get("index", 0)
        content_choices.append({"index": index, "delta": delta, "finish_reason": None, "logprobs": None})
        final_choices.append({"index": index, "delta": {}, "finish_reason": choice.get("finish_reason"), "logprobs": None})
    chunks = [{**base, "choices": content_choices}, {**base, "choices": final_choices}]
    if include_usage and body.get("usage") is not None:
        chunks.append({**base, "choices": [], "usage": body["usage"]})
    return chunks
