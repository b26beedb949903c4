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


class Guard:
    """Counts the waits it was entered for, and turns a ValueError raised by one into a
    LookupError, as a timeout turns its own cancellation into a 504."""

    def __init__(self) -> None:
        self.entered = self.left = 0
        self.done = 0

    def __call__(self) -> Guard:
        return self

    def __enter__(self) -> None:
        self.entered += 1

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        self.left += 1
        if kind is ValueError:
            raise LookupError("replaced") from None

    def finished(self) -> None:
        self.done += 1


@pytest.mark.parametrize("batched", [True, False], ids=["batches", "chunks"])
async def test_a_guarded_stream_gives_the_same_chunks_in_the_same_groups_each_wait_inside_the_guard(batched):
    groups = [[chunk("a"), chunk("b")], [chunk("c")]]
    stream = CompletionStream.of_batches(Source([list(g) for g in groups])) if batched else CompletionStream(chunks_of(groups))
    guard = Guard()
    guarded = stream.with_guard(guard, done=guard.finished)
    assert guarded.batched is batched
    got = [batch async for batch in guarded.batches()]
    assert got == (groups if batched else [[c] for g in groups for c in g])
    waits = len(got) + 1  # the last wait is the one that finds the end
    assert (guard.entered, guard.left, guard.done) == (waits, waits, 1)


async def test_a_guard_may_replace_what_a_wait_raised_and_is_done_when_the_stream_is_closed_early():
    async def failing() -> AsyncIterator[list[dict[str, Any]]]:
        yield [chunk("a")]
        raise ValueError("the upstream broke")

    guard = Guard()
    guarded = CompletionStream.of_batches(failing()).with_guard(guard, done=guard.finished)
    iterator = guarded.batches()
    assert await anext(iterator) == [chunk("a")]
    with pytest.raises(LookupError, match="replaced"):
        await anext(iterator)
    assert guard.done == 1

    early = Guard()
    source = Source([[chunk("a")], [chunk("b")]])
    stream = CompletionStream.of_batches(source, close=source.aclose).with_guard(early, done=early.finished)
    assert await anext(stream.batches()) == [chunk("a")]
    await stream.aclose()
    assert source.closed and early.done == 1


async def test_only_the_core_and_guards_pass_a_providers_relay_on():
    from hookgate.sse import SSERelay

    relay = SSERelay("openai.chat")
    provider_stream = CompletionStream.of_batches(Source([[chunk("a")], [chunk("b")]]), relay=relay)
    primed = await with_first_chunk(provider_stream)
    assert primed.relay is relay
    assert primed.with_close(primed.aclose).relay is relay
    assert primed.with_guard(Guard()).relay is relay
    rebuilt = CompletionStream.of_batches(primed.batches(), close=primed.aclose, first_chunk_received=True)
    assert rebuilt.relay is None, "a stream a middleware builds is not the provider's own"
    assert CompletionStream(chunks_of([[chunk("a")]])).relay is None


def tool_chunk(index: int, **function: str) -> dict[str, Any]:
    call = {"index": index, "function": function}
    if "name" in function:
        call.update(id=f"call_{index}", type="function")
    return {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}


STREAMS = {
    "text": [chunk("hel"), chunk("lo"), {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}],
    "two choices, usage": [
        {"id": "c", "object": "chat.completion.chunk", "created": 7, "model": "m", "system_fingerprint": "fp",
         "choices": [{"index": 1, "delta": {"content": "b"}, "finish_reason": None}, {"index": 0, "delta": {"refusal": "no"}, "finish_reason": None}]},
        {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}, {"index": 1, "delta": None, "finish_reason": "length"}]},
        {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
    ],
    "tool calls": [tool_chunk(0, name="get_", arguments=""), tool_chunk(0, name="weather", arguments='{"city"'), tool_chunk(1, name="now"),
                   tool_chunk(0, arguments=': "Oslo"}'),
                   {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}],
}


@pytest.mark.parametrize("name", list(STREAMS))
def test_a_stream_assembled_as_it_is_checked_is_the_answer_its_chunks_amount_to(name):
    from hookgate.responses import StreamAssembly

    assembly = StreamAssembly()
    for item in STREAMS[name]:
        assert assembly.checked(item) is item
    assert assembly.count == len(STREAMS[name])
    assert assembly.completion() == assemble_stream(STREAMS[name])


def test_a_stream_assembly_checks_as_check_chunk_does_and_leaves_text_completions_to_assemble_stream():
    from hookgate.responses import StreamAssembly

    with pytest.raises(UpstreamError):
        StreamAssembly().checked({"choices": [{"index": 0, "delta": {"content": 5}}]})
    with pytest.raises(UpstreamError):
        StreamAssembly().checked(["not", "an", "object"])
    text = StreamAssembly()
    text.checked({"id": "t", "object": "text_completion", "choices": [{"index": 0, "text": "hi", "finish_reason": "stop"}]})
    assert text.completion() is None and StreamAssembly().completion() is None
