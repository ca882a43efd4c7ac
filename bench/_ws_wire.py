"""The client side of a WebSocket (RFC 6455), without I/O: just what the benchmarks need.

:func:`handshake_request` is the upgrade request, :func:`client_frame` one masked frame, and
:class:`WebSocketReader` takes the server's bytes as they arrive -- the ``101`` head, then
frames -- and gives back every complete message, fragmented ones reassembled and control
frames passed through as they come.  Thousands of connections share one process in the
fan-out benchmark, so a reader holds only the frame in progress.

Masking: RFC 6455 wants an unpredictable key per frame, to protect proxies from cache poisoning
by hostile scripts in browsers.  A benchmark on loopback has neither, so callers may build a
frame once and send it many times; servers do not check.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct

from bench._http import MAX_HEAD_BYTES, ProtocolError

__all__ = [
    "BINARY",
    "CLOSE",
    "CONTINUATION",
    "MAX_MESSAGE_BYTES",
    "PING",
    "PONG",
    "TEXT",
    "Frame",
    "WebSocketReader",
    "accept_key",
    "client_frame",
    "close_code",
    "handshake_request",
    "new_key",
]

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Larger messages than the engine accepts by default (64 KiB), with room to spare.
MAX_MESSAGE_BYTES = 1 << 20

Frame = tuple[int, bytes]  # (opcode, payload); a reassembled message has its first opcode


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def handshake_request(
    host: str, port: int, path: str, *, key: str, subprotocol: str | None = None
) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


def client_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final frame from client to server (clients must mask every frame)."""
    mask = os.urandom(4) if mask is None else mask
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return head + mask + _unmask(payload, mask)


def close_code(payload: bytes) -> int:
    """The status code of a close frame's payload; 1005 (none given) when it has none."""
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005


def _unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR with the repeated 4-byte key (masking and unmasking are the same operation)."""
    if not payload:
        return b""
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class WebSocketReader:
    """Feed the server's bytes; get the messages and control frames they complete.

    ``subprotocol`` is what the server chose (``None`` if nothing), known once ``open``.
    A handshake answered with anything but ``101`` or with the wrong accept key raises
    :class:`~bench._http.ProtocolError`, as does a frame that breaks the framing rules.
    """

    __slots__ = ("_buffer", "_expected_accept", "_fragments", "_opcode", "open", "subprotocol")

    def __init__(self, key: str) -> None:
        self._expected_accept = accept_key(key)
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._opcode = 0  # of the fragmented message in progress
        self.open = False
        self.subprotocol: str | None = None

    def feed(self, data: bytes) -> list[Frame]:
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        start = 0
        if not self.open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise ProtocolError("handshake response too large")
                return frames
            self._handshake(bytes(buffer[:end]).decode("latin-1"))
            start = end + 4
        while True:
            frame, end = self._frame(buffer, start)
            if end == start:
                break  # the next frame is incomplete
            start = end
            if frame is not None:
                frames.append(frame)
        del buffer[:start]
        return frames

    def _handshake(self, head: str) -> None:
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or parts[1] != "101":
            raise ProtocolError(f"handshake refused: {lines[0][:80]!r}")
        accept = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "sec-websocket-accept":
                accept = value.strip()
            elif name == "sec-websocket-protocol":
                self.subprotocol = value.strip()
        if accept != self._expected_accept:
            raise ProtocolError("handshake answered with the wrong Sec-WebSocket-Accept")
        self.open = True

    def _frame(self, buffer: bytearray, start: int) -> tuple[Frame | None, int]:
        """The frame at ``start`` and where the next one begins; the same ``start`` back when the
        frame is incomplete, ``None`` for a fragment that completes no message yet."""
        available = len(buffer) - start
        if available < 2:
            return None, start
        first, second = buffer[start], buffer[start + 1]
        if first & 0x70:
            raise ProtocolError("reserved bits set (no extension was negotiated)")
        fin, opcode, masked, length = first & 0x80, first & 0x0F, second & 0x80, second & 0x7F
        at = start + 2
        if length == 126:
            if available < 4:
                return None, start
            (length,) = struct.unpack_from("!H", buffer, at)
            at += 2
        elif length == 127:
            if available < 10:
                return None, start
            (length,) = struct.unpack_from("!Q", buffer, at)
            at += 8
        if length > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"frame of {length} bytes")
        mask = b""
        if masked:
            if len(buffer) < at + 4:
                return None, start
            mask = bytes(buffer[at : at + 4])
            at += 4
        if len(buffer) < at + length:
            return None, start
        payload = bytes(buffer[at : at + length])
        if mask:
            payload = _unmask(payload, mask)
        end = at + length
        if opcode >= CLOSE:  # control frames: never fragmented, may come between fragments
            if not fin or length > 125:
                raise ProtocolError("fragmented or oversized control frame")
            return (opcode, payload), end
        if opcode == CONTINUATION:
            if not self._fragments:
                raise ProtocolError("continuation frame without a message in progress")
        elif self._fragments:
            raise ProtocolError("new message before the fragmented one ended")
        elif opcode not in (TEXT, BINARY):
            raise ProtocolError(f"reserved opcode {opcode:#x}")
        else:
            self._opcode = opcode
        if not fin:
            self._fragments.append(payload)
            if sum(map(len, self._fragments)) > MAX_MESSAGE_BYTES:
                raise ProtocolError("fragmented message too large")
            return None, end
        if self._fragments:
            payload = b"".join(self._fragments) + payload
            self._fragments = []
        return (self._opcode, payload), end
