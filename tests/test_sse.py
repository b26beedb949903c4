"""hookgate.sse.SSEDecoder: the events of a byte stream, whatever reads it arrives in."""
from __future__ import annotations

import pytest

from hookgate.sse import SSEDecoder, SSEEventTooLarge

STREAM = (
    b'data: {"a":1}\n\n'
    b": keep-alive comment\n\n"
    b"event: message_start\ndata: {\"b\":2}\n\n"
    b"id: 7\nretry: 100\ndata: first line\ndata:second line\n\n"
    b"event: ping\n\n"  # an event without data is not an event
    b"data: [DONE]\n\n"
)
EVENTS = [(None, b'{"a":1}'), ("message_start", b'{"b":2}'), (None, b"first line\nsecond line"), (None, b"[DONE]")]


def decoded(reads: list[bytes], max_event_bytes: int = 1 << 20) -> list[tuple[str | None, bytes]]:
    decoder = SSEDecoder(max_event_bytes)
    events = [event for data in reads for event in decoder.feed(data)]
    return events + decoder.finish()


def test_one_read_holding_the_whole_stream():
    assert decoded([STREAM]) == EVENTS


@pytest.mark.parametrize("line_end", [b"\r\n", b"\r"], ids=["crlf", "cr"])
def test_every_line_ending_reads_the_same(line_end):
    assert decoded([STREAM.replace(b"\n", line_end)]) == EVENTS


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_a_stream_cut_into_reads_at_every_position_gives_the_same_events(line_end):
    stream = STREAM.replace(b"\n", line_end)
    for cut in range(1, len(stream)):
        assert decoded([stream[:cut], stream[cut:]]) == EVENTS, cut
    assert decoded([stream[i : i + 1] for i in range(len(stream))]) == EVENTS


def test_events_come_back_as_soon_as_their_blank_line_arrives():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: one\n") == []
    assert decoder.feed(b"\ndata: tw") == [(None, b"one")]
    assert decoder.feed(b"o\n\n") == [(None, b"two")]


def test_a_last_event_without_its_blank_line_is_read_at_the_end():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]\n") == []
    assert decoder.finish() == [(None, b"[DONE]")]


def test_an_event_that_never_ends_is_bounded():
    decoder = SSEDecoder(max_event_bytes=1000)
    decoder.feed(b"data: " + b"x" * 500)
    with pytest.raises(SSEEventTooLarge):
        for _ in range(10):
            decoder.feed(b"x" * 100)


def test_many_events_in_one_read_are_not_bounded_by_their_sum():
    many = b"".join(b"data: " + b"x" * 500 + b"\n\n" for _ in range(100))
    assert len(decoded([many], max_event_bytes=1000)) == 100


def test_a_read_of_whole_one_line_data_events_is_split_without_feeding():
    decoder = SSEDecoder()
    assert decoder.data_only(b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n') == [b'{"a":1}', b'{"b":2}', b"[DONE]"]


@pytest.mark.parametrize(
    "read",
    [
        b'data: {"a":1}\n\n: comment\n\n',  # a comment
        b"event: message\ndata: {}\n\n",  # an event name
        b"data: one\ndata: two\n\n",  # a multi-line data field
        b"data: {}\r\n\r\n",  # other line ends
        b'data: {"a":1}\n\ndata: {"b"',  # an event not ended in this read
        b'data: {"a":1}\n\n\n\ndata: {}\n\n',  # blank lines between events
        b'data:{"a":1}\n\n',  # no space after the colon
    ],
)
def test_any_other_read_is_left_to_feed_which_reads_it_as_before(read):
    decoder = SSEDecoder()
    assert decoder.data_only(read) is None
    assert [event for event in decoder.feed(read) + decoder.finish()] == decoded([read])


def test_a_read_after_a_part_read_event_is_left_to_feed():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: one") == []
    assert decoder.data_only(b"\n\ndata: two\n\n") is None
    assert decoder.feed(b"\n\ndata: two\n\n") == [(None, b"one"), (None, b"two")]
