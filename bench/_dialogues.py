"""What one benchmark connection says and hears, without I/O.

The socket loops (:mod:`bench._fanout`, :mod:`bench._exchanges`) only move bytes and read the
clock; everything protocol-specific is here, in objects that take bytes in and give back what
was heard and what to send.

* **Subscribers** stay connected and count broadcasts.  Every broadcast of a fan-out benchmark
  carries its number (``tag``); probes carry none and are not counted.  ``ready`` says the
  subscription is in place as far as the client can tell; ``ended`` says why the connection
  is over, once it is.
* **Exchanges** run a closed loop: each answer sends the next request at once.  ``feed`` gives
  the status of every exchange the bytes completed (200 for a WebSocket echo that came back
  intact, 0 for one that did not) and the bytes to send; ``timed`` says those bytes start the
  next measured exchange (a handshake or a pong does not).
"""

from __future__ import annotations

import json
import os
from typing import Any, Protocol

from bench._http import ResponseReader
from bench._sse_wire import SseResponseReader
from bench._ws_wire import (
    CLOSE,
    PING,
    PONG,
    TEXT,
    WebSocketReader,
    client_frame,
    close_code,
    handshake_request,
    new_key,
)

__all__ = [
    "GRAPHQL_WS",
    "Exchange",
    "GraphQLSubscriber",
    "HttpExchange",
    "SseSubscriber",
    "Subscriber",
    "WebSocketEcho",
    "post_request",
]

GRAPHQL_WS = "graphql-transport-ws"


class Subscriber(Protocol):
    ready: bool
    ended: str | None

    def opening(self) -> bytes: ...

    def feed(self, data: bytes) -> tuple[list[int], bytes]:
        """The broadcast tags heard in ``data``, and the bytes to answer with."""
        ...


class Exchange(Protocol):
    ended: str | None

    def opening(self) -> tuple[bytes, bool]: ...

    def feed(self, data: bytes) -> tuple[list[int], bytes, bool]:
        """Statuses of the exchanges ``data`` completed, bytes to send, whether they are timed."""
        ...


def post_request(host: str, port: int, path: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class SseSubscriber:
    """``GET`` a stream path; every event whose data is a decimal number is a broadcast tag."""

    __slots__ = ("_reader", "_request", "ended", "ready")

    def __init__(self, host: str, port: int, path: str) -> None:
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode("ascii")
        self._reader = SseResponseReader()
        self.ready = False
        self.ended: str | None = None

    def opening(self) -> bytes:
        return self._request

    def feed(self, data: bytes) -> tuple[list[int], bytes]:
        reader = self._reader
        events = reader.feed(data)
        if not self.ready and reader.status:
            if reader.status != 200:
                self.ended = f"HTTP {reader.status}"
                return [], b""
            self.ready = True
        if reader.ended:
            self.ended = "the server ended the stream"
        return [int(text) for _, text in events if text.isdecimal()], b""


class GraphQLSubscriber:
    """One ``graphql-transport-ws`` connection with one subscription on ``field``.

    The handshake, then ``connection_init``; on ``connection_ack`` the ``subscribe``.  Every
    ``next`` whose ``payload.data[field].n`` is a non-negative integer is a broadcast tag (the
    benchmark probes with ``n = -1``).  Protocol pings are answered with pongs, WebSocket
    pings with pongs.  ``ready`` once the subscribe is sent: the protocol has no answer to it,
    so whether the server has registered it is for the broadcaster to find out.
    """

    __slots__ = ("_field", "_key", "_mask", "_reader", "_subscribe", "ended", "ready", "request")

    def __init__(self, host: str, port: int, path: str, field: str, query: str) -> None:
        self._key = new_key()
        self._mask = os.urandom(4)
        self._reader = WebSocketReader(self._key)
        self._field = field
        self._subscribe = self._text({"id": "1", "type": "subscribe", "payload": {"query": query}})
        self.request = handshake_request(host, port, path, key=self._key, subprotocol=GRAPHQL_WS)
        self.ready = False
        self.ended: str | None = None

    def opening(self) -> bytes:
        return self.request

    def _text(self, message: dict[str, Any]) -> bytes:
        return client_frame(TEXT, json.dumps(message).encode(), self._mask)

    def feed(self, data: bytes) -> tuple[list[int], bytes]:
        reader = self._reader
        was_open = reader.open
        frames = reader.feed(data)
        out = bytearray()
        if reader.open and not was_open:
            if reader.subprotocol != GRAPHQL_WS:
                self.ended = f"subprotocol {reader.subprotocol!r} chosen"
                return [], b""
            out += self._text({"type": "connection_init"})
        tags: list[int] = []
        for opcode, payload in frames:
            if opcode == TEXT:
                self._message(json.loads(payload), tags, out)
            elif opcode == PING:
                out += client_frame(PONG, payload, self._mask)
            elif opcode == CLOSE:
                self.ended = f"closed with {close_code(payload)}"
        return tags, bytes(out)

    def _message(self, message: Any, tags: list[int], out: bytearray) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "next":
            try:
                n = message["payload"]["data"][self._field]["n"]
            except (KeyError, TypeError):
                return
            if isinstance(n, int) and n >= 0:
                tags.append(n)
        elif kind == "connection_ack":
            out += self._subscribe
            self.ready = True
        elif kind == "ping":
            out += self._text({"type": "pong"})
        elif kind in ("error", "complete"):
            self.ended = f"the server sent {kind}: {json.dumps(message)[:200]}"


class HttpExchange:
    """The same request again and again on one keep-alive connection."""

    __slots__ = ("_reader", "_request", "ended")

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._reader = ResponseReader()
        self.ended: str | None = None

    def opening(self) -> tuple[bytes, bool]:
        return self._request, True

    def feed(self, data: bytes) -> tuple[list[int], bytes, bool]:
        done = self._reader.feed(data)
        return (done, self._request, True) if done else (done, b"", False)


class WebSocketEcho:
    """One text message, sent again each time the server has echoed it back."""

    __slots__ = ("_frame", "_mask", "_message", "_reader", "_request", "ended")

    def __init__(self, host: str, port: int, path: str, message: str) -> None:
        key = new_key()
        self._mask = os.urandom(4)
        self._message = message.encode()
        self._frame = client_frame(TEXT, self._message, self._mask)
        self._reader = WebSocketReader(key)
        self._request = handshake_request(host, port, path, key=key)
        self.ended: str | None = None

    def opening(self) -> tuple[bytes, bool]:
        return self._request, False

    def feed(self, data: bytes) -> tuple[list[int], bytes, bool]:
        reader = self._reader
        was_open = reader.open
        frames = reader.feed(data)
        done: list[int] = []
        out = bytearray()
        timed = False
        for opcode, payload in frames:
            if opcode == TEXT:
                done.append(200 if payload == self._message else 0)
            elif opcode == PING:
                out += client_frame(PONG, payload, self._mask)
            elif opcode == CLOSE:
                self.ended = f"closed with {close_code(payload)}"
        timed = bool(done) or (reader.open and not was_open)
        if timed and self.ended is None:
            out += self._frame
        return done, bytes(out), timed
