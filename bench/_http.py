"""HTTP/1.1 response framing for the load generator, without I/O.

The generator keeps connections alive, so it must know where each response ends: after the
``Content-Length`` bytes, or after the last chunk of a chunked body (the engine's solution
responses are chunked, the bare app's are not).  :class:`ResponseReader` takes bytes in as they
arrive and gives back the status of every response completed so far; it keeps no more state
than the one response in progress, so it costs little per request.
"""

from __future__ import annotations

__all__ = ["MAX_HEAD_BYTES", "ProtocolError", "ResponseReader", "build_request"]

MAX_HEAD_BYTES = 64 * 1024

_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _TRAILERS = range(5)


class ProtocolError(Exception):
    """The server sent something this reader cannot frame (the benchmark stops on it)."""


def build_request(host: str, port: int, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode("ascii")


class ResponseReader:
    """Feed received bytes; get the statuses of the responses they complete."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._state = _HEAD
        self._status = 0
        self._remaining = 0  # body or chunk bytes still expected (chunk data includes CRLF)

    def feed(self, data: bytes) -> list[int]:
        self._buffer += data
        done: list[int] = []
        while self._step(done):
            pass
        return done

    def _step(self, done: list[int]) -> bool:
        """Advance one state if the buffer allows; False when more bytes are needed."""
        buffer = self._buffer
        if self._state == _HEAD:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise ProtocolError("response head too large")
                return False
            head = bytes(buffer[:end]).decode("latin-1")
            del buffer[: end + 4]
            self._start_body(head)
            if self._state == _BODY and self._remaining == 0:
                self._finish(done)
            return True
        if self._state == _BODY:
            take = min(self._remaining, len(buffer))
            del buffer[:take]
            self._remaining -= take
            if self._remaining:
                return False
            self._finish(done)
            return True
        if self._state in (_CHUNK_SIZE, _TRAILERS):
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise ProtocolError("chunk line too large")
                return False
            line = bytes(buffer[:end])
            del buffer[: end + 2]
            if self._state == _TRAILERS:
                if not line:
                    self._finish(done)
                return True
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size line {line[:40]!r}") from None
            if size < 0:
                raise ProtocolError("negative chunk size")
            if size == 0:
                self._state = _TRAILERS
            else:
                self._state, self._remaining = _CHUNK_DATA, size + 2
            return True
        # _CHUNK_DATA
        take = min(self._remaining, len(buffer))
        del buffer[:take]
        self._remaining -= take
        if self._remaining:
            return False
        self._state = _CHUNK_SIZE
        return True

    def _start_body(self, head: str) -> None:
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if (
            len(parts) < 2
            or not parts[0].startswith("HTTP/1.")
            or not (parts[1].isascii() and parts[1].isdigit())
        ):
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        self._status = int(parts[1])
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    raise ProtocolError(f"bad content-length {value.strip()[:40]!r}") from None
                if length < 0:
                    raise ProtocolError("negative content-length")
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            self._state = _CHUNK_SIZE
        elif length is not None:
            self._state, self._remaining = _BODY, length
        elif self._status in (204, 304) or 100 <= self._status < 200:
            self._state, self._remaining = _BODY, 0
        else:
            # A body delimited by closing the connection cannot be told apart from a dropped
            # keep-alive connection; the servers measured here never send one.
            raise ProtocolError("response without content-length or chunked encoding")

    def _finish(self, done: list[int]) -> None:
        if not 100 <= self._status < 200:  # an interim response does not end the request
            done.append(self._status)
        self._state = _HEAD
        self._remaining = 0
