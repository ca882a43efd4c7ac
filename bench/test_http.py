"""The load generator's response framing: ``python -m pytest bench/test_http.py``.

Outside ``tests/`` on purpose: the suite's own tool, not the engine's behaviour.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench._http import MAX_HEAD_BYTES, ProtocolError, ResponseReader, build_request
from bench._loadgen import percentile

statuses = st.integers(min_value=200, max_value=599)
bodies = st.binary(max_size=300)


def content_length(status: int, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def chunked(status: int, body: bytes, sizes: list[int]) -> bytes:
    out = f"HTTP/1.1 {status} \r\ntransfer-encoding: chunked\r\n\r\n".encode()
    rest = body
    for size in sizes:
        if not rest:
            break
        piece, rest = rest[: max(1, size)], rest[max(1, size) :]
        out += f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n"
    if rest:
        out += f"{len(rest):X}\r\n".encode() + rest + b"\r\n"
    return out + b"0\r\nX-Trailer: y\r\n\r\n"


responses = st.one_of(
    st.builds(content_length, statuses, bodies),
    st.builds(chunked, statuses, bodies, st.lists(st.integers(1, 64), max_size=8)),
)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@given(st.lists(responses, min_size=1, max_size=6), st.data())
def test_statuses_come_out_in_order_however_the_bytes_are_split(
    stream: list[bytes], data: st.DataObject
) -> None:
    wire = b"".join(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    reader = ResponseReader()
    seen: list[int] = []
    start = 0
    for cut in [*cuts, len(wire)]:
        seen += reader.feed(wire[start:cut])
        start = cut
    assert seen == [status_of(response) for response in stream]


@given(responses)
def test_a_response_is_not_complete_before_its_last_byte(response: bytes) -> None:
    reader = ResponseReader()
    assert reader.feed(response[:-1]) == []
    assert reader.feed(response[-1:]) == [status_of(response)]


def test_interim_responses_do_not_end_the_request() -> None:
    wire = b"HTTP/1.1 100 Continue\r\n\r\n" + content_length(201, b"ok")
    assert ResponseReader().feed(wire) == [201]


def test_an_empty_204_needs_no_length() -> None:
    assert ResponseReader().feed(b"HTTP/1.1 204 No Content\r\n\r\n") == [204]


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 200 OK\r\n\r\nhello",  # delimited by close
        b"garbage\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 \xb200 OK\r\ncontent-length: 0\r\n\r\n",  # a digit, but not ASCII
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_unframeable_responses_are_refused(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        ResponseReader().feed(wire)


def test_an_endless_head_is_refused() -> None:
    with pytest.raises(ProtocolError):
        ResponseReader().feed(b"HTTP/1.1 200 OK\r\n" + b"x" * (MAX_HEAD_BYTES + 1))


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_give_statuses_or_protocol_error(wire: bytes) -> None:
    try:
        for status in ResponseReader().feed(wire):
            assert isinstance(status, int)
    except ProtocolError:
        pass


def test_request_is_a_keep_alive_get() -> None:
    assert build_request("127.0.0.1", 8080, "/a?b=1") == (
        b"GET /a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
    )


@given(st.lists(st.floats(0, 10), min_size=1, max_size=200), st.floats(0, 100))
def test_percentile_is_an_element_with_enough_values_at_or_below_it(
    values: list[float], p: float
) -> None:
    ordered = sorted(values)
    result = percentile(ordered, p)
    assert result in ordered
    at_or_below = sum(1 for v in ordered if v <= result)
    assert at_or_below >= p / 100 * len(ordered)
    assert sum(1 for v in ordered if v < result) < max(1, p / 100 * len(ordered))


def test_percentile_of_nothing_is_nan() -> None:
    assert percentile([], 99) != percentile([], 99)
