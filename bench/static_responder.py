"""A trivial HTTP responder, to measure how much load the generator can push at all.

It answers every request head it sees with the same fixed response and does nothing else: no
parsing, no framework.  Whatever rate the generator reaches against it is a floor on the
generator's own capacity (the responder, single-threaded Python, may well be the limit).  Run as
``python -m bench.static_responder``; it prints ``serving on <url>`` on stderr.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"


def main() -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    port = listener.getsockname()[1]
    print(f"static: serving on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    pending: dict[socket.socket, bytes] = {}
    while True:
        for key, _ in selector.select():
            if key.data is None:
                conn, _ = listener.accept()
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                selector.register(conn, selectors.EVENT_READ, True)
                pending[conn] = b""
                continue
            client = key.fileobj
            assert isinstance(client, socket.socket)
            try:
                data = client.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(client)
                pending.pop(client, None)
                client.close()
                continue
            buffered = pending[client] + data
            heads = buffered.count(b"\r\n\r\n")
            pending[client] = buffered[buffered.rfind(b"\r\n\r\n") + 4 :] if heads else buffered
            if heads:
                try:
                    client.sendall(RESPONSE * heads)
                except OSError:
                    selector.unregister(client)
                    pending.pop(client, None)
                    client.close()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
