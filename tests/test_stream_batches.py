"""CompletionStream's batches: a provider may hand over the chunks of one upstream read together
(``CompletionStream.of_batches``). Every middleware still sees one chunk at a time when it
iterates the stream; one that only watches time can take the batches instead. Either way the
client gets the same chunks."""
from __future__ import annotations

from typing import Any, AsyncIterator

import pytest
from hookgate import CompletionStream, UpstreamError, assemble_stream, with_first_chunk


def chunk(text: str) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


class Source:
    """Batches of chunks, and whether the stream closed this iterator."""

    def __init__(self, batches: list[list[dict[str, Any]]]) -> None:
        self.batches, self.closed = batches, False

    def __aiter__(self) -> Source:
        return self

    async def __anext__(self) -> list[dict[str, Any]]:
        if not self.batches:
            raise StopAsyncIteration
        return self.batches.pop(0)

    async def aclose(self) -> None:
        self.closed = True


async def chunks_of(batches: list[list[dict[str, Any]]]) -> AsyncIterator[dict[str, Any]]:
    for batch in batches:
        for item in batch:
            yield item


def texts(items: list[dict[str, Any]]) -> list[str]:
    return [item["choices"][0]["delta"]["content"] for item in items]


GROUPS = [[chunk("a"), chunk("b")], [chunk("c")]]


async def test_a_batched_stream_iterated_gives_one_chunk_at_a_time():
    stream = CompletionStream.of_batches(Source([list(batch) for batch in GROUPS]))
    assert stream.batched
    assert texts([item async for item in stream]) == ["a", "b", "c"]


async def test_the_batches_of_a_stream_made_from_chunks_are_one_chunk_each():
    stream = CompletionStream(chunks_of(GROUPS))
    assert not stream.batched
    assert [texts(batch) async for batch in stream.batches()] == [["a"], ["b"], ["c"]]


@pytest.mark.parametrize("batched", [True, False])
async def test_waiting_for_the_first_chunk_keeps_the_streams_grouping(batched):
    stream = CompletionStream.of_batches(Source([list(batch) for batch in GROUPS])) if batched else CompletionStream(chunks_of(GROUPS))
    primed = await with_first_chunk(stream)
    assert primed.first_chunk_received and primed.batched is batched
    assert texts([item async for item in primed]) == ["a", "b", "c"]


async def test_with_close_keeps_the_batches_and_runs_the_new_close_which_closes_the_source():
    source = Source([list(batch) for batch in GROUPS])
    stream = CompletionStream.of_batches(source)
    released: list[str] = []

    async def release() -> None:
        await stream.aclose()
        released.append("slot")

    held = stream.with_close(release)
    assert held.batched
    assert [texts(batch) async for batch in held.batches()] == [["a", "b"], ["c"]]
    await held.aclose()
    await held.aclose()  # idempotent
    assert released == ["slot"] and source.closed


async def test_closing_a_batched_stream_read_chunk_by_chunk_closes_its_source():
    source = Source([list(batch) for batch in GROUPS])
    stream = CompletionStream.of_batches(source)
    assert texts([await anext(stream.__aiter__())]) == ["a"]
    await stream.aclose()
    assert source.closed


def test_chunks_known_to_be_checked_are_not_checked_again_and_the_rest_are():
    bad = {"id": "c", "choices": [{"index": 0, "delta": {"content": 5}}]}
    ok = [chunk("a"), {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    with pytest.raises(UpstreamError, match="delta.content is not a string"):
        assemble_stream([*ok, bad])
    with pytest.raises(UpstreamError, match="delta.content is not a string"):
        assemble_stream([bad, *ok], checked=0)
    with pytest.raises(UpstreamError, match="delta.content is not a string"):
        assemble_stream([*ok, bad], checked=2)
    assert assemble_stream(ok, checked=2).body["choices"][0]["message"]["content"] == "a"
