"""A closed-loop generator for any request/answer dialogue: HTTP ``POST``, WebSocket echo.

The suite's GET generator (:mod:`bench._loadgen`) and ``wrk`` only send ``GET``; the GraphQL and
WebSocket benchmarks need a body and a handshake.  This is the same loop -- processes sharing
one start time on the system-wide monotonic clock, keep-alive connections on one ``selectors``
loop each, a warm-up, a measured window, a drain -- with the protocol left to an
:class:`~bench._dialogues.Exchange` per connection.  A connection whose dialogue ends (the
server closed it) is reopened with a fresh dialogue.  The result is a
:class:`~bench._loadgen.LoadResult`, so runs compare and report like the HTTP ones.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import multiprocessing.connection
import selectors
import signal
import socket
import time
from array import array
from collections import Counter
from collections.abc import Callable

from bench._dialogues import Exchange
from bench._http import ProtocolError
from bench._loadgen import REPORTED_PERCENTILES, LoadResult, LoadSpec, percentile

__all__ = ["run_exchanges"]

_MP = multiprocessing.get_context("fork")
_START_SLACK_S = 0.3

MakeExchange = Callable[[], Exchange]
_Pipe = multiprocessing.connection.Connection


class _Connection:
    __slots__ = ("busy", "dialogue", "sent_at", "sock")

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.dialogue: Exchange | None = None
        self.sent_at = 0.0
        self.busy = False  # a timed exchange is in flight


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def _drive(
    spec: LoadSpec,
    make: MakeExchange,
    count: int,
    start_at: float,
    results: multiprocessing.connection.Connection,
) -> None:
    """One generator process with ``count`` connections; reports through ``results``."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    cpu_before = time.process_time()
    window_start = start_at + spec.warmup_s
    window_end = window_start + spec.duration_s
    latencies = array("d")
    statuses: Counter[int] = Counter()
    problems: Counter[str] = Counter()
    total = reconnects = 0
    selector = selectors.DefaultSelector()
    connections = [_Connection() for _ in range(count)]
    closed: list[_Connection] = []

    def send(conn: _Connection, data: bytes, timed: bool, now: float) -> None:
        if timed:
            conn.sent_at, conn.busy = now, True
        if data and conn.sock is not None:
            conn.sock.sendall(data)  # small messages into a send buffer that is never full

    def open_(conn: _Connection, now: float) -> None:
        try:
            conn.sock = socket.create_connection((spec.host, spec.port), timeout=5)
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.dialogue = make()
            data, timed = conn.dialogue.opening()
            send(conn, data, timed, now)
            conn.sock.setblocking(False)
            selector.register(conn.sock, selectors.EVENT_READ, conn)
        except OSError as exc:
            problems[f"connect: {_errno_name(exc)}"] += 1
            close(conn)

    def close(conn: _Connection) -> None:
        conn.busy = False
        if conn.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(conn.sock)
            conn.sock.close()
            conn.sock = None
        closed.append(conn)

    def receive(conn: _Connection, now: float, counting: bool) -> None:
        """Read what arrived; record completed exchanges if ``counting``, answer if needed."""
        assert conn.sock is not None and conn.dialogue is not None
        try:
            data = conn.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError as exc:
            problems[f"recv: {_errno_name(exc)}"] += 1
            close(conn)
            return
        if not data:
            nonlocal reconnects
            reconnects += 1  # hypercorn ends keep-alive connections after 1000 requests
            close(conn)
            return
        try:
            done, out, timed = conn.dialogue.feed(data)
        except (ProtocolError, ValueError) as exc:
            problems[f"protocol: {exc}"[:120]] += 1
            close(conn)
            return
        if done:
            nonlocal total
            total += len(done)
            conn.busy = False
            if counting and window_start <= now <= window_end:
                statuses.update(done)
                latencies.append(now - conn.sent_at)
        if conn.dialogue.ended is not None:
            problems[f"ended: {conn.dialogue.ended}"] += 1
            close(conn)
            return
        if counting or not timed:
            try:
                send(conn, out, timed, now)
            except OSError as exc:
                problems[f"send: {_errno_name(exc)}"] += 1
                close(conn)

    try:
        while time.monotonic() < start_at:
            time.sleep(min(0.01, max(0.0, start_at - time.monotonic())))
        for conn in connections:
            open_(conn, time.monotonic())
        while (now := time.monotonic()) < window_end:
            while closed:
                open_(closed.pop(), now)
            for key, _ in selector.select(min(0.05, window_end - now)):
                receive(key.data, time.monotonic(), counting=True)
        # The drain: nothing new is sent; what is in flight may finish.
        drain_end = window_end + spec.drain_s
        while any(c.busy for c in connections) and (now := time.monotonic()) < drain_end:
            for key, _ in selector.select(min(0.05, drain_end - now)):
                receive(key.data, time.monotonic(), counting=False)
        unfinished = sum(1 for c in connections if c.busy)
        if unfinished:
            problems["exchanges cut off after the drain time"] += unfinished
    except KeyboardInterrupt:
        pass
    finally:
        for conn in connections:
            if conn.sock is not None:
                conn.sock.close()
        selector.close()
    results.send(
        (
            dict(statuses),
            total,
            reconnects,
            latencies.tobytes(),
            dict(problems),
            time.process_time() - cpu_before,
        )
    )


def run_exchanges(spec: LoadSpec, make: MakeExchange) -> LoadResult:
    """Run ``spec.connections`` closed-loop connections speaking ``make()``'s dialogue."""
    start_at = time.monotonic() + _START_SLACK_S
    children: list[tuple[multiprocessing.process.BaseProcess, _Pipe]] = []
    processes = max(1, min(spec.processes, spec.connections))
    try:
        for index in range(processes):
            count = spec.connections // processes + (index < spec.connections % processes)
            receive, send = _MP.Pipe(duplex=False)
            process = _MP.Process(
                target=_drive,
                args=(spec, make, count, start_at, send),
                name=f"bench-exchanges-{index}",
                daemon=True,
            )
            process.start()
            send.close()
            children.append((process, receive))
        statuses: Counter[int] = Counter()
        problems: Counter[str] = Counter()
        latencies = array("d")
        cpu = 0.0
        total = reconnects = 0
        deadline = start_at + spec.warmup_s + spec.duration_s + spec.drain_s + 15
        for child, receive in children:
            if not receive.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"generator {child.name} did not report in time")
            got_statuses, got_total, got_reconnects, got_latencies, got_problems, got_cpu = (
                receive.recv()
            )
            statuses.update(got_statuses)
            total += got_total
            reconnects += got_reconnects
            latencies.frombytes(got_latencies)
            problems.update(got_problems)
            cpu += got_cpu
    finally:
        for child, receive in children:
            if child.is_alive():
                child.join(5)
            if child.is_alive():
                child.terminate()
                child.join(5)
            receive.close()
    ordered = sorted(latencies)
    return LoadResult(
        spec=spec,
        statuses=dict(statuses),
        total_completed=total,
        reconnects=reconnects,
        latency_percentiles=(
            {p: percentile(ordered, p) for p in REPORTED_PERCENTILES} if ordered else {}
        ),
        window_s=spec.duration_s,
        generator_cpu_s=cpu,
        run_s=spec.warmup_s + spec.duration_s,
        problems=dict(problems),
    )
