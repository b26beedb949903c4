"""What a provider returns: a complete answer, or a stream of chunks.

Both carry OpenAI's wire shapes as plain dicts (``chat.completion`` and ``chat.completion.chunk``)
so that a body parsed once from the upstream's bytes goes to the client without being rebuilt
from models. Providers that speak another API translate into these shapes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson

__all__ = [
    "Completion",
    "CompletionStream",
    "ProviderResponse",
    "with_first_chunk",
    "assemble_stream",
    "completion_to_chunks",
    "is_complete",
]


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
    chunks wraps the stream: ``CompletionStream(my_generator(stream), close=stream.aclose)``.
    """

    __slots__ = ("_chunks", "_close", "first_chunk_received")

    def __init__(
        self,
        chunks: AsyncIterator[dict[str, Any]],
        close: Callable[[], Awaitable[None]] | None = None,
        *,
        first_chunk_received: bool = False,
    ) -> None:
        self._chunks = chunks
        self._close = close
        self.first_chunk_received = first_chunk_received
        """True once :func:`with_first_chunk` has the first chunk in hand (nothing sent yet)."""

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._chunks

    async def aclose(self) -> None:
        """Release the upstream call. Safe to call more than once."""
        close, self._close = self._close, None
        try:
            if close is not None:
                await close()
        finally:
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()


ProviderResponse = Completion | CompletionStream


async def with_first_chunk(stream: CompletionStream) -> CompletionStream:
    """Wait for a stream's first chunk, and return a stream that yields it and then the rest.

    Until the first chunk reaches the client a stream can still be retried or turned into a
    plain HTTP error, so reliability middlewares call this inside their attempt: an upstream that
    accepted the request and then failed or stalled before its first chunk fails *here*. The
    upstream is closed when that happens. Idempotent: a stream already primed is returned as is.
    """
    if stream.first_chunk_received:
        return stream
    iterator = stream.__aiter__()
    try:
        first: dict[str, Any] | None = await anext(iterator)
    except StopAsyncIteration:
        first = None
    except BaseException:
        await stream.aclose()
        raise

    async def replay() -> AsyncIterator[dict[str, Any]]:
        if first is not None:
            yield first
        async for chunk in iterator:
            yield chunk

    return CompletionStream(replay(), close=stream.aclose, first_chunk_received=True)


def assemble_stream(chunks: list[dict[str, Any]]) -> Completion:
    """Build the ``chat.completion`` that a list of stream chunks amounts to.

    ``after_response`` hooks and caches see streamed answers in this form: content and tool-call
    arguments concatenated per choice, the last finish reason, and the usage chunk if one came.
    """
    first = chunks[0] if chunks else {}
    if first.get("object") == "text_completion":
        return _assemble_text(chunks)
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            slot = choices.get(index)
            if slot is None:
                slot = choices[index] = {
                    "index": index,
                    "message": {"role": "assistant", "content": None, "refusal": None},
                    "finish_reason": None,
                    "logprobs": None,
                }
            delta = choice.get("delta") or {}
            message = slot["message"]
            if delta.get("content") is not None:
                message["content"] = (message["content"] or "") + delta["content"]
            if delta.get("refusal") is not None:
                message["refusal"] = (message["refusal"] or "") + delta["refusal"]
            for call in delta.get("tool_calls") or ():
                _merge_tool_call(message, call)
            if choice.get("finish_reason") is not None:
                slot["finish_reason"] = choice["finish_reason"]
    body: dict[str, Any] = {
        "id": first.get("id", ""),
        "object": "chat.completion",
        "created": first.get("created", 0),
        "model": first.get("model", ""),
        "choices": [choices[i] for i in sorted(choices)],
    }
    if first.get("system_fingerprint") is not None:
        body["system_fingerprint"] = first["system_fingerprint"]
    if usage is not None:
        body["usage"] = usage
    return Completion(body)


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


def _merge_tool_call(message: dict[str, Any], call: dict[str, Any]) -> None:
    calls = message.setdefault("tool_calls", [])
    index = call.get("index", 0)
    while len(calls) <= index:
        calls.append({"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
    target = calls[index]
    if call.get("id"):
        target["id"] = call["id"]
    if call.get("type"):
        target["type"] = call["type"]
    function = call.get("function") or {}
    if function.get("name"):
        target["function"]["name"] += function["name"]
    if function.get("arguments"):
        target["function"]["arguments"] += function["arguments"]


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
