"""A closed-loop HTTP/1.1 load generator: several processes, keep-alive connections, raw sockets.

Each connection sends one ``GET``, waits for the whole response, records the latency and sends
the next one at once (closed loop: the offered load is the number of connections).  The
connections of one process share a ``selectors`` loop, so a process costs a few tens of
microseconds of CPU per request -- far below the server's hundreds -- and the work is spread
over several processes so the generator never waits on its own interpreter.

All processes share one start time on the system-wide monotonic clock.  A run has a warm-up
(connections open, caches fill, nothing recorded) and then a measurement window; a request
counts when it *completes* inside the window.
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

import attrs

from bench._http import ProtocolError, ResponseReader, build_request

__all__ = [
    "REPORTED_PERCENTILES",
    "LoadResult",
    "LoadSpec",
    "RunningLoad",
    "percentile",
    "run_load",
    "start_load",
]

# fork: the children need nothing but this module, and spawning would add an interpreter start
# per process to every run.
_MP = multiprocessing.get_context("fork")
_START_SLACK_S = 0.3
REPORTED_PERCENTILES = (50.0, 75.0, 90.0, 99.0)


@attrs.frozen
class LoadSpec:
    host: str
    port: int
    path: str
    connections: int
    processes: int
    duration_s: float
    warmup_s: float = 1.0
    # Connection i sends its first request i * stagger_s after the start, so requests that all
    # take the same long time (runaways) do not all end and restart together.
    stagger_s: float = 0.0
    # After the window no new request is sent, and the ones in flight get this long to finish,
    # so that a run leaves no work in the server for the next run to compete with.
    drain_s: float = 5.0


@attrs.frozen
class LoadResult:
    spec: LoadSpec
    statuses: dict[int, int]  # completed in the window, by status
    total_completed: int  # warm-up and drain included: what the server did during the run
    reconnects: int  # connections the server closed between requests (and were reopened)
    # Latency percentiles of the requests completed in the window, {percent: seconds}: those
    # of REPORTED_PERCENTILES (wrk reports no others).
    latency_percentiles: dict[float, float]
    window_s: float
    generator_cpu_s: float  # all generator processes, whole run
    run_s: float
    problems: dict[str, int]  # connection errors, protocol errors

    @property
    def completed(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def throughput(self) -> float:
        return self.completed / self.window_s

    @property
    def generator_cores(self) -> float:
        """CPU the generator itself used, in cores (1.0 = one core busy all the time)."""
        return self.generator_cpu_s / self.run_s

    def latency(self, p: float) -> float:
        """Seconds at percentile ``p`` (one of REPORTED_PERCENTILES); NaN if nothing completed."""
        return self.latency_percentiles.get(p, float("nan"))


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (``p`` in 0..100); NaN when empty."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


class _Connection:
    __slots__ = ("begin_at", "busy", "reader", "sent_at", "sock")

    def __init__(self, begin_at: float) -> None:
        self.begin_at = begin_at
        self.sock: socket.socket | None = None
        self.reader = ResponseReader()
        self.sent_at = 0.0
        self.busy = False  # a request is in flight


def _open(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def _generate(
    spec: LoadSpec,
    first: int,
    count: int,
    start_at: float,
    results: multiprocessing.connection.Connection,
) -> None:
    """One generator process: ``count`` connections, numbered from ``first`` for staggering."""
    # The parent's SIGTERM handler came with the fork; here SIGTERM (``terminate()``) just ends.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    cpu_before = time.process_time()
    request = build_request(spec.host, spec.port, spec.path)
    window_start = start_at + spec.warmup_s
    window_end = window_start + spec.duration_s
    latencies = array("d")
    statuses: Counter[int] = Counter()
    problems: Counter[str] = Counter()
    total = 0
    reconnects = 0
    selector = selectors.DefaultSelector()
    waiting = [_Connection(start_at + (first + i) * spec.stagger_s) for i in range(count)]

    def send(conn: _Connection, now: float) -> None:
        try:
            if conn.sock is None:
                conn.sock = _open(spec.host, spec.port)
                conn.reader = ResponseReader()
                selector.register(conn.sock, selectors.EVENT_READ, conn)
            conn.sent_at = now
            conn.busy = True
            conn.sock.send(request)  # a few dozen bytes: always fits the empty send buffer
        except OSError as exc:
            problems[f"send: {errno.errorcode.get(exc.errno or 0, type(exc).__name__)}"] += 1
            drop(conn)

    def drop(conn: _Connection, retry_after_s: float = 0.01) -> None:
        """Close the connection; it reconnects and sends again after ``retry_after_s``."""
        conn.busy = False
        if conn.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(conn.sock)
            conn.sock.close()
            conn.sock = None
        waiting.append(conn)
        conn.begin_at = time.monotonic() + retry_after_s  # after an error: soon, not spinning

    try:
        while time.monotonic() < start_at:
            time.sleep(min(0.01, max(0.0, start_at - time.monotonic())))
        while True:
            now = time.monotonic()
            if now >= window_end:
                break
            if waiting:
                due = [conn for conn in waiting if conn.begin_at <= now]
                for conn in due:
                    waiting.remove(conn)
                    send(conn, now)
            timeout = min(0.05, window_end - now)
            if waiting:
                timeout = max(0.0, min(timeout, min(c.begin_at for c in waiting) - now))
            if not selector.get_map():
                time.sleep(timeout)
                continue
            for key, _ in selector.select(timeout):
                conn = key.data
                try:
                    data = conn.sock.recv(1 << 16)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    problems[
                        f"recv: {errno.errorcode.get(exc.errno or 0, type(exc).__name__)}"
                    ] += 1
                    drop(conn)
                    continue
                if not data:
                    # hypercorn closes a keep-alive connection after keep_alive_max_requests
                    # (1000 by default) responses, both servers alike: reconnect at once.
                    reconnects += 1
                    drop(conn, retry_after_s=0.0)
                    continue
                try:
                    done = conn.reader.feed(data)
                except ProtocolError as exc:
                    problems[f"protocol: {exc}"] += 1
                    drop(conn)
                    continue
                if done:
                    total += len(done)
                    conn.busy = False
                    finished = time.monotonic()
                    if window_start <= finished <= window_end:
                        statuses[done[-1]] += len(done)
                        latencies.append(finished - conn.sent_at)
                    send(conn, finished)
        drain_end = window_end + spec.drain_s
        while time.monotonic() < drain_end:
            busy = [key for key in selector.get_map().values() if key.data.busy]
            if not busy:
                break
            for key, _ in selector.select(min(0.05, max(0.0, drain_end - time.monotonic()))):
                conn = key.data
                try:
                    data = conn.sock.recv(1 << 16)
                    if not data:
                        conn.busy = False
                    elif conn.reader.feed(data):
                        conn.busy = False
                        total += 1
                except BlockingIOError:
                    continue
                except (OSError, ProtocolError):
                    conn.busy = False
                if not conn.busy:
                    selector.unregister(conn.sock)
                    conn.sock.close()
        unfinished = sum(1 for key in selector.get_map().values() if key.data.busy)
        if unfinished:
            problems["requests cut off after the drain time"] += unfinished
    except KeyboardInterrupt:
        pass
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
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
    results.close()


class RunningLoad:
    """A load run in progress; :meth:`result` waits for it and merges the processes' numbers."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.start_at = time.monotonic() + _START_SLACK_S
        self.end_at = self.start_at + spec.warmup_s + spec.duration_s
        self._children: list[
            tuple[multiprocessing.process.BaseProcess, multiprocessing.connection.Connection]
        ] = []
        processes = max(1, min(spec.processes, spec.connections))
        first = 0
        for index in range(processes):
            count = spec.connections // processes + (index < spec.connections % processes)
            receive, send = _MP.Pipe(duplex=False)
            child = _MP.Process(
                target=_generate,
                args=(spec, first, count, self.start_at, send),
                name=f"bench-load-{index}",
                daemon=True,
            )
            child.start()
            send.close()
            self._children.append((child, receive))
            first += count

    def result(self) -> LoadResult:
        statuses: Counter[int] = Counter()
        problems: Counter[str] = Counter()
        latencies = array("d")
        cpu = 0.0
        total = reconnects = 0
        deadline = self.end_at + self.spec.drain_s + 15
        for child, receive in self._children:
            if not receive.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"load generator {child.name} did not report in time")
            (
                child_statuses,
                child_total,
                child_reconnects,
                child_latencies,
                child_problems,
                child_cpu,
            ) = receive.recv()
            total += child_total
            reconnects += child_reconnects
            statuses.update(child_statuses)
            problems.update(child_problems)
            latencies.frombytes(child_latencies)
            cpu += child_cpu
            child.join(5)
        ordered = sorted(latencies)
        return LoadResult(
            spec=self.spec,
            statuses=dict(statuses),
            total_completed=total,
            reconnects=reconnects,
            latency_percentiles={p: percentile(ordered, p) for p in REPORTED_PERCENTILES}
            if ordered
            else {},
            window_s=self.spec.duration_s,
            generator_cpu_s=cpu,
            run_s=self.spec.warmup_s + self.spec.duration_s,
            problems=dict(problems),
        )

    def stop(self) -> None:
        for child, receive in self._children:
            if child.is_alive():
                child.terminate()
            child.join(5)
            receive.close()


def start_load(spec: LoadSpec) -> RunningLoad:
    return RunningLoad(spec)


def run_load(spec: LoadSpec) -> LoadResult:
    running = start_load(spec)
    try:
        return running.result()
    finally:
        running.stop()
