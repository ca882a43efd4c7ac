"""Thousands of subscribers in a few client processes, and when each broadcast reached them.

The subscribers never run in the server's process: :class:`Subscribers` forks client processes,
each holding its share of connections on one ``selectors`` loop with a
:class:`~bench._dialogues.Subscriber` per connection.  Connections are opened a few dozen at a
time, below hypercorn's listen backlog (100), so none waits for a SYN retransmission.

A broadcast is timed across processes on the system-wide monotonic clock: the parent reads the
clock just before it asks the server to broadcast, each client reads it when the bytes carrying
the broadcast's tag arrive (once per ``recv``).  The parent first tells the clients which tag to
expect; a client answers with its arrival times once every live connection has the tag, or
when the wait it was given runs out.  Client processes also end by themselves when their
parent goes away or their lifetime is over.
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
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from bench._dialogues import Subscriber
from bench._http import ProtocolError
from bench._loadgen import percentile

__all__ = ["Broadcast", "FanoutSpec", "Subscribers", "spread"]

_MP = multiprocessing.get_context("fork")


@attrs.frozen
class FanoutSpec:
    host: str
    port: int
    connections: int
    processes: int
    make: Callable[[], Subscriber]  # one connection's dialogue, built in the client process
    opening_at_once: int = 64
    connect_within_s: float = 120.0
    lifetime_s: float = 900.0  # no client process outlives this, whatever its parent does


@attrs.frozen
class Broadcast:
    """One broadcast: what the server said it reached, and when each subscriber had it."""

    tag: int
    reported: int  # subscribers the server said it sent to
    answered_s: float  # until the broadcasting request was answered
    delays: tuple[float, ...]  # seconds from the request to each arrival, ascending

    @property
    def reached(self) -> int:
        return len(self.delays)

    @property
    def all_s(self) -> float:
        """Until the last subscriber had it; NaN if some never did."""
        return self.delays[-1] if self.delays and self.reached >= self.reported else float("nan")

    def delay(self, p: float) -> float:
        return percentile(list(self.delays), p)


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(p50, p99, max) of ``values`` by nearest rank; NaN for each when there are none."""
    ordered = sorted(values)
    if not ordered:
        nan = float("nan")
        return nan, nan, nan
    return percentile(ordered, 50), percentile(ordered, 99), ordered[-1]


class _Connection:
    __slots__ = ("dialogue", "ready", "sock")

    def __init__(self, sock: socket.socket, dialogue: Subscriber) -> None:
        self.sock = sock
        self.dialogue = dialogue
        self.ready = False


def _errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def _subscribe(spec: FanoutSpec, count: int, pipe: multiprocessing.connection.Connection) -> None:
    """One client process: ``count`` subscribers, driven by commands from ``pipe``."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us in order
    cpu_before = time.process_time()
    started = time.monotonic()
    end_of_life = started + spec.lifetime_s
    connect_deadline = started + spec.connect_within_s
    selector = selectors.DefaultSelector()
    selector.register(pipe, selectors.EVENT_READ, None)
    to_open, opening, live = count, 0, 0
    problems: Counter[str] = Counter()
    arrivals: dict[int, array[float]] = {}
    expected: dict[int, float] = {}  # tag -> until when to wait for it
    reported_connected = False

    def drop(conn: _Connection, why: str) -> None:
        nonlocal opening, live
        problems[why] += 1
        if conn.ready:
            live -= 1
        else:
            opening -= 1
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(conn.sock)
        conn.sock.close()

    def connected(conn: _Connection) -> None:
        error = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            drop(conn, f"connect: {_errno_name(error)}")
            return
        conn.sock.send(conn.dialogue.opening())
        selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def received(conn: _Connection) -> None:
        nonlocal opening, live
        try:
            data = conn.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError as exc:
            drop(conn, f"recv: {_errno_name(exc.errno or 0)}")
            return
        now = time.monotonic()
        if not data:
            drop(conn, "closed by the server")
            return
        try:
            tags, reply = conn.dialogue.feed(data)
        except (ProtocolError, ValueError) as exc:
            drop(conn, f"protocol: {exc}"[:120])
            return
        for tag in tags:
            arrivals.setdefault(tag, array("d")).append(now)
        if reply:
            conn.sock.send(reply)  # a few bytes; the send buffer is never full here
        if not conn.ready and conn.dialogue.ready:
            conn.ready = True
            opening -= 1
            live += 1
        if conn.dialogue.ended is not None:
            drop(conn, f"ended: {conn.dialogue.ended}")

    try:
        while (now := time.monotonic()) < end_of_life:
            while to_open and opening < spec.opening_at_once and now < connect_deadline:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                code = sock.connect_ex((spec.host, spec.port))
                if code not in (0, errno.EINPROGRESS):
                    problems[f"connect: {_errno_name(code)}"] += 1
                    sock.close()
                else:
                    selector.register(sock, selectors.EVENT_WRITE, _Connection(sock, spec.make()))
                    opening += 1
                to_open -= 1
            if not reported_connected and (
                (to_open == 0 and opening == 0) or now >= connect_deadline
            ):
                for key in list(selector.get_map().values()):
                    if key.data is not None and not key.data.ready:
                        drop(key.data, "not subscribed in time")
                if to_open:
                    problems["never opened (no time left)"] += to_open
                to_open = 0
                pipe.send(("connected", live, dict(problems)))
                reported_connected = True
            for key, events in selector.select(0.02):
                if key.data is None:
                    command = pipe.recv()
                    if command[0] == "expect":
                        expected[command[1]] = time.monotonic() + command[2]
                    elif command[0] == "stop":
                        return
                elif events & selectors.EVENT_WRITE:
                    connected(key.data)
                else:
                    received(key.data)
            now = time.monotonic()
            for tag, until in list(expected.items()):
                got = arrivals.get(tag)
                if (got is not None and len(got) >= live) or now >= until:
                    pipe.send(("arrivals", tag, (got or array("d")).tobytes()))
                    del expected[tag]
                    arrivals.pop(tag, None)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        return  # the parent is gone
    finally:
        for key in list(selector.get_map().values()):
            if key.data is not None:
                key.data.sock.close()
        selector.close()
        with contextlib.suppress(OSError):
            pipe.send(("stopped", dict(problems), time.process_time() - cpu_before))


class Subscribers:
    """The client processes of one fan-out run; use as a context manager."""

    def __init__(self, spec: FanoutSpec) -> None:
        self.spec = spec
        self._children: list[
            tuple[multiprocessing.process.BaseProcess, multiprocessing.connection.Connection]
        ] = []

    def __enter__(self) -> Subscribers:
        spec = self.spec
        processes = max(1, min(spec.processes, spec.connections))
        for index in range(processes):
            count = spec.connections // processes + (index < spec.connections % processes)
            parent_end, child_end = _MP.Pipe(duplex=True)
            process = _MP.Process(
                target=_subscribe,
                args=(spec, count, child_end),
                name=f"bench-subscribers-{index}",
                daemon=True,
            )
            process.start()
            child_end.close()
            self._children.append((process, parent_end))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _receive(
        self, pipe: multiprocessing.connection.Connection, kind: str, within_s: float
    ) -> tuple[Any, ...]:
        if not pipe.poll(within_s):
            raise RuntimeError(f"a subscriber process did not send {kind!r} in {within_s:.0f} s")
        message: tuple[Any, ...] = pipe.recv()
        if message[0] != kind:
            raise RuntimeError(f"a subscriber process sent {message[0]!r}, not {kind!r}")
        return message

    def wait_connected(self) -> tuple[int, dict[str, int]]:
        """How many subscribers are in place, and what went wrong with the others."""
        live = 0
        problems: Counter[str] = Counter()
        for _, pipe in self._children:
            _, count, found = self._receive(pipe, "connected", self.spec.connect_within_s + 30)
            live += count
            problems.update(found)
        return live, dict(problems)

    def expect(self, tag: int, within_s: float) -> None:
        for _, pipe in self._children:
            pipe.send(("expect", tag, within_s))

    def arrivals(self, tag: int, within_s: float) -> list[float]:
        """Every subscriber's arrival time of ``tag`` (after :meth:`expect`), unsorted."""
        times = array("d")
        for _, pipe in self._children:
            _, got, raw = self._receive(pipe, "arrivals", within_s + 30)
            if got != tag:
                raise RuntimeError(f"arrivals of {got} while waiting for {tag}")
            times.frombytes(raw)
        return list(times)

    def stop(self) -> tuple[dict[str, int], float]:
        """End every client process; what went wrong on the way and their CPU seconds."""
        problems: Counter[str] = Counter()
        cpu = 0.0
        for child, pipe in self._children:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
            try:
                while pipe.poll(10):
                    message = pipe.recv()
                    if message[0] == "stopped":
                        problems.update(message[1])
                        cpu += message[2]
                        break
            except (EOFError, OSError):
                pass
            child.join(10)
            if child.is_alive():
                child.terminate()
                child.join(5)
            pipe.close()
        self._children = []
        return dict(problems), cpu
