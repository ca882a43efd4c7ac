"""One server-sent-events response as the benchmark's subscribers read it, without I/O.

:class:`SseResponseReader` takes the bytes of an HTTP/1.1 response as they arrive -- the head,
then a body that is chunked (hypercorn streams responses that way) or runs until the
connection closes -- and gives back every event completed so far, parsed by the rules of the
HTML standard's event-stream format: lines end with CRLF, LF or CR; a blank line dispatches
the event; ``data`` lines are joined with LF; comments and unknown fields are ignored.

The fan-out benchmark runs thousands of these in one process, so a reader keeps only the bytes
of the line and the event in progress.
"""

from __future__ import annotations

from bench._http import MAX_HEAD_BYTES, ProtocolError

__all__ = ["MAX_LINE_BYTES", "SseEvent", "SseResponseReader"]

# A subscriber that never sees a line end must not buffer without bound.
MAX_LINE_BYTES = 1 << 20

SseEvent = tuple[str, str]  # (event type, data)

_HEAD, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _IDENTITY, _DONE = range(6)


class SseResponseReader:
    """Feed received bytes; get ``(event type, data)`` for every event they complete.

    ``status`` is 0 until the head has arrived.  A status other than 200 is not an error here:
    its body is not an event stream, so no events come out of it; callers check ``status``.
    """

    __slots__ = ("_chunk_left", "_data", "_event", "_head", "_line", "_state", "status")

    def __init__(self) -> None:
        self.status = 0
        self._state = _HEAD
        self._head = bytearray()  # the head, then the undecoded chunk framing
        self._chunk_left = 0
        self._line = bytearray()  # the event-stream line in progress
        self._data: list[str] = []
        self._event = ""

    @property
    def ended(self) -> bool:
        """The body's last chunk has arrived (an unchunked body ends only with the connection)."""
        return self._state == _DONE

    def feed(self, data: bytes) -> list[SseEvent]:
        events: list[SseEvent] = []
        if self._state == _HEAD:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_HEAD_BYTES:
                    raise ProtocolError("response head too large")
                return events
            data = bytes(self._head[end + 4 :])
            self._state = self._start(bytes(self._head[:end]).decode("latin-1"))
            self._head = bytearray()
        if self._state == _IDENTITY:
            self._lines(data, events)
        elif self._state != _DONE:
            self._dechunk(data, events)
        return events

    def _start(self, head: str) -> int:
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdecimal():
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        self.status = int(parts[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
                return _CHUNK_SIZE
        return _IDENTITY

    def _dechunk(self, data: bytes, events: list[SseEvent]) -> None:
        framing = self._head
        framing += data
        start = 0
        while start < len(framing):
            if self._state == _CHUNK_DATA:
                take = min(self._chunk_left, len(framing) - start)
                self._lines(framing[start : start + take], events)
                start += take
                self._chunk_left -= take
                if self._chunk_left == 0:
                    self._state = _CHUNK_END
                continue
            end = framing.find(b"\r\n", start)
            if end < 0:
                if len(framing) - start > MAX_HEAD_BYTES:
                    raise ProtocolError("chunk framing line too large")
                break
            line = bytes(framing[start:end])
            start = end + 2
            if self._state == _CHUNK_END:
                if line:
                    raise ProtocolError("chunk data longer than its size")
                self._state = _CHUNK_SIZE
                continue
            if self._state == _DONE:
                continue  # trailers: nothing to read in them
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size line {line[:40]!r}") from None
            if size < 0:
                raise ProtocolError("negative chunk size")
            if size == 0:
                self._state = _DONE
            else:
                self._state, self._chunk_left = _CHUNK_DATA, size
        del framing[:start]

    def _lines(self, data: bytes | bytearray, events: list[SseEvent]) -> None:
        line = self._line
        line += data
        start = 0
        while True:
            lf = line.find(b"\n", start)
            cr = line.find(b"\r", start, lf if lf >= 0 else len(line))
            if cr >= 0:
                if cr + 1 == len(line):
                    break  # CR last: it may be the first half of a CRLF
                self._field(bytes(line[start:cr]), events)
                start = cr + (2 if line[cr + 1] == 0x0A else 1)
            elif lf >= 0:
                self._field(bytes(line[start:lf]), events)
                start = lf + 1
            else:
                break
        del line[:start]
        if len(line) > MAX_LINE_BYTES:
            raise ProtocolError("event-stream line too long")

    def _field(self, raw: bytes, events: list[SseEvent]) -> None:
        if not raw:
            if self._data:
                events.append((self._event or "message", "\n".join(self._data)))
            self._data = []
            self._event = ""
            return
        text = raw.decode("utf-8", "replace")
        name, colon, value = text.partition(":")
        if not name and colon:
            return  # a comment
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
