"""Repairs to hypercorn (0.18) so that one client cannot stop or stall the server.

Reproduced here, and known upstream as hypercorn issue #225 (open): a WebSocket upgrade
request followed at once by more bytes ("trailing data") makes hypercorn answer 400 while the
application may be accepting the same connection.  The two writes interleave, h11 enters its
error state, and the next write raises ``LocalProtocolError`` in the connection's reading task,
an exception nothing catches: it ends the *whole server*.  When the 400 does win the race, the
application is never told the connection is gone and waits for it forever (for a stream: a
subscriber that never leaves and counts against the caps).

* :func:`_refuse_early_frames` replaces the handling of data that arrives before the handshake
  is accepted: the stream is marked closed *before* the 400 is written (so an ``accept`` that
  comes meanwhile is ignored, as hypercorn ignores any send on a closed stream), the
  application receives ``websocket.disconnect``, and the connection is closed as the 400's
  ``connection: close`` promises.
* :func:`_contain_connection_failures` is the safety net for whatever else a peer can provoke:
  an exception escaping one connection's handling is logged and ends that connection only.
  Cancellation still propagates.
* :func:`_wake_pings_on_close`: hypercorn's WebSocket ping task sleeps a whole ping interval
  between pings and only then sees that the connection closed, keeping the socket (and a
  graceful shutdown) waiting up to ``streams.ping_interval_s`` after every close.  The repaired
  task wakes as soon as the stream closes.

They are installed once per process by :func:`install` (from ``handlers.register``), and only
when the hypercorn internals they wrap look as expected; otherwise the server runs unrepaired
and a warning says so (``tests/test_stream_faults.py`` would then fail).
"""

from __future__ import annotations

from typing import Any

import sniffio
import structlog
import trio

log = structlog.get_logger("aiwebengine.server")

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    try:
        from hypercorn.protocol import ws_stream
        from hypercorn.trio import tcp_server
    except ImportError:  # served by something else: nothing to repair
        return
    expected = (
        *(hasattr(ws_stream, name) for name in ("WSStream", "Body", "Data", "StreamClosed")),
        hasattr(getattr(ws_stream, "WSStream", None), "_send_error_response"),
        hasattr(getattr(tcp_server, "TCPServer", None), "run"),
    )
    if not all(expected):
        log.warning("hypercorn internals changed; protocol-fault repairs not installed")
        return
    _refuse_early_frames(ws_stream)
    _contain_connection_failures(tcp_server)
    if hasattr(ws_stream.WSStream, "_send_pings") and hasattr(ws_stream, "Ping"):
        _wake_pings_on_close(ws_stream)


def _refuse_early_frames(ws_stream: Any) -> None:
    stream_class = ws_stream.WSStream
    original = stream_class.handle
    early = (ws_stream.Body, ws_stream.Data)

    async def handle(self: Any, event: Any) -> None:
        handshake = getattr(self, "handshake", None)
        if self.closed or not isinstance(event, early) or handshake is None or handshake.accepted:
            await original(self, event)
            return
        # Closed first: nothing the application sends from now on reaches h11.
        self.closed = True
        await self._send_error_response(400)
        if self.app_put is not None:
            await self.app_put({"type": "websocket.disconnect", "code": 1002})
        await self.send(ws_stream.StreamClosed(stream_id=self.stream_id))

    stream_class.handle = handle


def _contain_connection_failures(tcp_server: Any) -> None:
    server_class = tcp_server.TCPServer
    original = server_class.run

    async def run(self: Any) -> None:
        # The original closes the socket in its ``finally``; only the exception must not reach
        # the listener's nursery, which would end every connection.
        try:
            await original(self)
        except BaseExceptionGroup as group:
            failures, rest = group.split(Exception)
            if failures is not None:
                log.error("a connection failed inside the server; it was closed", exc_info=failures)
            if rest is not None:
                raise rest from None  # cancellation, KeyboardInterrupt: not ours to stop
        except Exception:
            log.exception("a connection failed inside the server; it was closed")

    server_class.run = run


def _wake_pings_on_close(ws_stream: Any) -> None:
    stream_class = ws_stream.WSStream
    original = stream_class._send_pings

    # ``closed`` becomes a property so that every place hypercorn sets it wakes the ping task.
    def get_closed(self: Any) -> bool:
        return bool(self.__dict__.get("_guard_closed", False))

    def set_closed(self: Any, value: bool) -> None:
        self.__dict__["_guard_closed"] = value
        woken = self.__dict__.get("_guard_woken")
        if value and woken is not None:
            woken.set()

    async def send_pings(self: Any) -> None:
        if sniffio.current_async_library() != "trio":
            await original(self)
            return
        woken = self.__dict__.setdefault("_guard_woken", trio.Event())
        while not self.closed:
            await self._send_wsproto_event(ws_stream.Ping())
            with trio.move_on_after(self.config.websocket_ping_interval):
                await woken.wait()

    stream_class.closed = property(get_closed, set_closed)
    stream_class._send_pings = send_pings
