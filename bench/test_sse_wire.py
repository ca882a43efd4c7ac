"""The subscribers' SSE response reader: ``python -m pytest bench/test_sse_wire.py``.

The reference is the engine's own encoder (``handlers.sse``): whatever it writes, wrapped in a
chunked response cut anywhere, must come out as the events that went in.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench._http import MAX_HEAD_BYTES, ProtocolError
from bench._sse_wire import SseResponseReader
from handlers.sse import sse_comment, sse_event

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"

names = st.one_of(st.none(), st.text(max_size=12))
datas = st.text(max_size=80)
items = st.one_of(
    st.builds(lambda n, d, i: ("event", n, d, i), names, datas, st.one_of(st.none(), st.text())),
    st.builds(lambda c: ("comment", c), st.text(max_size=20)),
)


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, rest = b"", body
    for size in sizes:
        if not rest:
            break
        piece, rest = rest[:size], rest[size:]
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    if rest:
        out += f"{len(rest):X};ext=1\r\n".encode() + rest + b"\r\n"
    return out + b"0\r\n\r\n"


def feed_in_pieces(
    reader: SseResponseReader, wire: bytes, cuts: list[int]
) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    start = 0
    for cut in [*sorted(cuts), len(wire)]:
        events += reader.feed(wire[start:cut])
        start = cut
    return events


def expected_event(name: str | None, data: str) -> tuple[str, str]:
    # The encoder writes one data line per line of the text (CR, LF and CRLF all end a line);
    # a name with line breaks is made single-line, and an empty name means "message".
    shown = (name or "").replace("\r", " ").replace("\n", " ")
    return (shown or "message", data.replace("\r\n", "\n").replace("\r", "\n"))


@given(
    st.lists(items, max_size=8),
    st.lists(st.integers(1, 40), max_size=10),
    st.lists(st.integers(0, 4000), max_size=12),
)
def test_what_the_engine_encodes_comes_out_however_the_bytes_are_cut(
    stream: list[tuple[object, ...]], sizes: list[int], cuts: list[int]
) -> None:
    body = b""
    expected = []
    for item in stream:
        if item[0] == "comment":
            body += sse_comment(str(item[1]))
        else:
            _, name, data, event_id = item
            body += sse_event(name, data, event_id=event_id)  # type: ignore[arg-type]
            expected.append(expected_event(name, data))  # type: ignore[arg-type]
    wire = HEAD + chunked(body, sizes)
    reader = SseResponseReader()
    assert feed_in_pieces(reader, wire, [min(c, len(wire)) for c in cuts]) == expected
    assert reader.status == 200
    assert reader.ended


lines_of_events = st.lists(
    st.lists(
        st.text(max_size=20).map(lambda t: t.replace("\r", "").replace("\n", "")),
        min_size=1,
        max_size=3,
    ),
    max_size=5,
)


@given(lines_of_events, st.sampled_from(["\n", "\r\n", "\r"]))
def test_every_line_ending_the_standard_allows_is_one(events: list[list[str]], end: str) -> None:
    # A lone CR may be the first half of a CRLF, so the reader waits for the byte after it;
    # the closing LF lets the last event through (after a blank line it is one more blank).
    text = "".join("".join(f"data: {line}{end}" for line in lines) + end for lines in events)
    wire = b"HTTP/1.1 200 OK\r\n\r\n" + (text + "\n").encode()
    got = feed_in_pieces(SseResponseReader(), wire, list(range(0, len(wire), 3)))
    assert got == [("message", "\n".join(lines)) for lines in events]


def test_an_unchunked_body_is_read_until_the_connection_ends() -> None:
    reader = SseResponseReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: 1\n") == []
    assert reader.feed(b"\ndata: 2\n\n") == [("message", "1"), ("message", "2")]
    assert not reader.ended


def test_field_rules_of_the_standard() -> None:
    body = (
        b": a comment\n"
        b"event: only a name\n\n"  # no data: nothing is dispatched
        b"data\n\n"  # a field name alone has an empty value
        b"data:  two spaces\n"  # only one leading space is dropped
        b"data:x\n"
        b"retry: 10\nid: 7\nunknown: y\n\n"
    )
    events = SseResponseReader().feed(b"HTTP/1.1 200 OK\r\n\r\n" + body)
    assert events == [("message", ""), ("message", " two spaces\nx")]


def test_a_refusal_has_a_status_and_no_events() -> None:
    reader = SseResponseReader()
    body = b'{"error":{"code":"STREAM_FULL"}}'
    head = f"HTTP/1.1 503 Service Unavailable\r\ncontent-length: {len(body)}\r\n\r\n"
    assert reader.feed(head.encode() + body) == []
    assert reader.status == 503


@pytest.mark.parametrize(
    "wire",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        HEAD + b"zz\r\n",
        HEAD + b"-1\r\n",
        HEAD + b"2\r\nabcd\r\n",  # more data than the chunk size said
    ],
)
def test_unframeable_responses_are_refused(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        SseResponseReader().feed(wire)


def test_an_endless_head_is_refused() -> None:
    with pytest.raises(ProtocolError):
        SseResponseReader().feed(b"HTTP/1.1 200 OK\r\n" + b"x" * (MAX_HEAD_BYTES + 1))


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_give_events_or_protocol_error(wire: bytes) -> None:
    try:
        for name, data in SseResponseReader().feed(HEAD + wire):
            assert isinstance(name, str) and isinstance(data, str)
    except ProtocolError:
        pass
