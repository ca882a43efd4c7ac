"""The benchmarks' WebSocket client framing: ``python -m pytest bench/test_ws_wire.py``.

The reference is wsproto (the library hypercorn serves WebSockets with): a server connection
accepts our handshake, reads our frames, and whatever it sends -- fragmented or not, with
pings in between -- must come out of :class:`WebSocketReader` as the messages that went in.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from bench._http import ProtocolError
from bench._ws_wire import (
    BINARY,
    CLOSE,
    PING,
    TEXT,
    WebSocketReader,
    accept_key,
    client_frame,
    close_code,
    handshake_request,
    new_key,
)


def server_for(key: str, subprotocol: str | None = None) -> tuple[WSConnection, bytes]:
    """A wsproto server that has read our handshake and accepted it; and its answer."""
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(
        handshake_request("127.0.0.1", 8080, "/ws", key=key, subprotocol=subprotocol)
    )
    (request,) = list(server.events())
    assert isinstance(request, Request)
    assert request.target == "/ws"
    assert request.subprotocols == ([subprotocol] if subprotocol else [])
    return server, server.send(AcceptConnection(subprotocol=subprotocol))


# A message as the server sends it: text or bytes, in one or more fragments, with an
# optional ping before each fragment.
fragments = st.lists(st.tuples(st.binary(max_size=300), st.booleans()), min_size=1, max_size=4)
messages = st.tuples(st.booleans(), fragments)


def send_message(server: WSConnection, is_text: bool, parts: list[tuple[bytes, bool]]) -> bytes:
    out = b""
    for index, (part, ping) in enumerate(parts):
        if ping:
            out += server.send(Ping(payload=b"p"))
        last = index == len(parts) - 1
        if is_text:
            text = part.decode("latin-1")  # any code points; wsproto encodes UTF-8
            out += server.send(TextMessage(data=text, message_finished=last))
        else:
            out += server.send(BytesMessage(data=part, message_finished=last))
    return out


def expected_frames(is_text: bool, parts: list[tuple[bytes, bool]]) -> list[tuple[int, bytes]]:
    frames: list[tuple[int, bytes]] = [(PING, b"p") for _, ping in parts if ping]
    data = b"".join(part.decode("latin-1").encode() if is_text else part for part, _ in parts)
    return [*frames, (TEXT if is_text else BINARY, data)]


@given(st.lists(messages, max_size=5), st.lists(st.integers(0, 3000), max_size=12))
def test_what_wsproto_sends_comes_out_however_the_bytes_are_cut(
    stream: list[tuple[bool, list[tuple[bytes, bool]]]], cuts: list[int]
) -> None:
    key = new_key()
    server, wire = server_for(key, "graphql-transport-ws")
    expected: list[tuple[int, bytes]] = []
    for is_text, parts in stream:
        wire += send_message(server, is_text, parts)
        expected += expected_frames(is_text, parts)
    wire += server.send(CloseConnection(code=4400, reason="bye"))
    expected.append((CLOSE, struct.pack("!H", 4400) + b"bye"))
    reader = WebSocketReader(key)
    frames = []
    start = 0
    for cut in [*sorted(min(c, len(wire)) for c in cuts), len(wire)]:
        frames += reader.feed(wire[start:cut])
        start = cut
    # Pings between fragments come out as they arrive, before the message they interrupt.
    assert frames == expected
    assert reader.subprotocol == "graphql-transport-ws"
    assert close_code(frames[-1][1]) == 4400


@given(st.text(max_size=300))
def test_our_text_frames_are_what_wsproto_reads(text: str) -> None:
    key = new_key()
    server, _ = server_for(key)
    server.receive_data(client_frame(TEXT, text.encode()))
    events = list(server.events())
    assert events == [TextMessage(data=text)]


def test_long_payloads_use_16_and_64_bit_lengths() -> None:
    for size in (125, 126, 65_535, 65_536, 100_000):
        key = new_key()
        server, _ = server_for(key)
        server.receive_data(client_frame(BINARY, b"x" * size, mask=b"\x01\x02\x03\x04"))
        (event,) = list(server.events())
        assert isinstance(event, BytesMessage) and event.data == b"x" * size


def test_a_masked_frame_from_the_server_is_unmasked() -> None:
    key = new_key()
    reader = WebSocketReader(key)
    head = f"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
    frame = client_frame(TEXT, b"hello", mask=b"\xaa\xbb\xcc\xdd")
    assert reader.feed(head.encode() + frame) == [(TEXT, b"hello")]
    assert reader.subprotocol is None


def test_a_refused_handshake_is_a_protocol_error() -> None:
    key = new_key()
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(handshake_request("h", 1, "/", key=key))
    list(server.events())
    refusal = server.send(RejectConnection(status_code=403))
    with pytest.raises(ProtocolError, match="refused"):
        WebSocketReader(key).feed(refusal)


def test_the_wrong_accept_key_is_a_protocol_error() -> None:
    _, answer = server_for(new_key())
    with pytest.raises(ProtocolError, match="Accept"):
        WebSocketReader(new_key()).feed(answer)


@pytest.mark.parametrize(
    "frame",
    [
        b"\xc1\x00",  # RSV1 set
        b"\x80\x00",  # a continuation with no message in progress
        b"\x09\x00",  # a fragmented ping
        b"\x83\x00",  # reserved opcode 3
        b"\x01\x00\x81\x00",  # a new text message while the fragmented one is unfinished
        b"\x89\x7e\x00\x80" + b"x" * 128,  # a ping longer than 125 bytes
    ],
)
def test_framing_violations_are_protocol_errors(frame: bytes) -> None:
    key = new_key()
    _, answer = server_for(key)
    with pytest.raises(ProtocolError):
        WebSocketReader(key).feed(answer + frame)


def test_close_codes() -> None:
    assert close_code(struct.pack("!H", 1001) + b"going away") == 1001
    assert close_code(b"") == 1005


@given(st.binary(max_size=500))
def test_arbitrary_bytes_after_the_handshake_give_frames_or_protocol_error(data: bytes) -> None:
    key = new_key()
    _, answer = server_for(key)
    try:
        for opcode, payload in WebSocketReader(key).feed(answer + data):
            assert isinstance(opcode, int) and isinstance(payload, bytes)
    except ProtocolError:
        pass
