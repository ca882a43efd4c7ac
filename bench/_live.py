"""What the streams and GraphQL benchmarks share: their settings, fan-out runs, and closed-loop
comparisons driven by :mod:`bench._exchanges`.

A fan-out run connects the subscribers (in client processes), checks through a probe broadcast
that the server counts every one of them, reads the server's memory, then times a series of
broadcasts one at a time (the next one starts after every subscriber had the last, or its wait
ran out).  A comparison measures its sides in turn, round after round, like
:func:`bench._measure.alternate`, and yields the same :class:`~bench._measure.Run` values.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import httpx

from bench import _servers as servers
from bench._exchanges import MakeExchange, run_exchanges
from bench._fanout import Broadcast, FanoutSpec, Subscribers
from bench._loadgen import LoadSpec
from bench._measure import Run, Settings, Side, cpu_us, p50_ms, p99_ms, say

__all__ = [
    "ExchangeSide",
    "FanoutResult",
    "LiveSettings",
    "alternate_exchanges",
    "raise_open_files_limit",
    "rss_bytes",
    "run_fanout",
    "start_bare_live",
    "without_rate_limits",
]

# broadcast(client, tag) -> how many subscribers the server says it sent to; tag None = probe.
Broadcaster = Callable[[httpx.Client, int | None], int]


@attrs.frozen
class LiveSettings:
    sse_subscribers: int
    graphql_subscribers: int
    broadcasts: int  # timed broadcasts per fan-out run
    subscriber_processes: int
    exchange_connections: int  # closed-loop connections of the echo and query comparisons
    exchange_processes: int
    broadcast_wait_s: float = 30.0  # longest wait for one broadcast to reach everybody
    pause_s: float = 0.5  # between broadcasts, so each starts from a quiet server

    @classmethod
    def of(cls, settings: Settings) -> LiveSettings:
        if settings.quick:
            return cls(
                sse_subscribers=1_000,
                graphql_subscribers=100,
                broadcasts=5,
                subscriber_processes=1,
                exchange_connections=16,
                exchange_processes=1,
            )
        return cls(
            sse_subscribers=10_000,
            graphql_subscribers=1_000,
            broadcasts=15,
            subscriber_processes=1,
            exchange_connections=16,
            exchange_processes=1,
        )

    def open_files_needed(self) -> int:
        """Descriptors the engine needs (one socket per subscriber, and its own), and so does
        the one client process holding them all."""
        return max(self.sse_subscribers, self.graphql_subscribers) + 1_000

    def stream_caps(self) -> dict[str, object]:
        """Engine settings with room for every subscriber of a run (the defaults allow 100 per
        stream and 1,000 in all)."""
        room = max(self.sse_subscribers, self.graphql_subscribers) + 100
        return {"streams.max_per_stream": room, "streams.max_total": room, **without_rate_limits()}


def without_rate_limits() -> dict[str, object]:
    """Engine settings that turn its per-client rate limits off: every benchmark client comes
    from one loopback address, so the limits would measure themselves."""
    return {"rate_limits.enabled": False}


@attrs.frozen
class FanoutResult:
    subscribers: int  # requested
    connected: int  # subscribed, as the clients saw it
    counted: int  # as the server counted them (probe broadcast)
    connect_s: float
    rss_before: int  # bytes, the server process alone
    rss_after: int  # with every subscriber connected and idle
    broadcasts: tuple[Broadcast, ...]
    server_cpu_s: tuple[float, ...]  # the server process's CPU during each broadcast
    client_cpu_s: float
    problems: dict[str, int]

    @property
    def bytes_per_subscriber(self) -> float:
        return (self.rss_after - self.rss_before) / self.counted if self.counted else float("nan")

    def cpu_per_delivery_us(self) -> list[float]:
        return [
            cpu / b.reported * 1e6 if b.reported else float("nan")
            for cpu, b in zip(self.server_cpu_s, self.broadcasts, strict=True)
        ]


def raise_open_files_limit(needed: int) -> int:
    """Raise this process's soft limit on open files towards ``needed`` (as far as the hard
    limit allows); the servers and client processes started afterwards inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        say(f"  warning: at most {soft} open files per process; {needed} wanted")
    return soft


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (not its children), from ``/proc``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def run_fanout(
    server: servers.ServerProcess, spec: FanoutSpec, broadcast: Broadcaster, live: LiveSettings
) -> FanoutResult:
    pid = server.process.pid
    rss_before = rss_bytes(pid)
    started = time.monotonic()
    broadcasts: list[Broadcast] = []
    cpu: list[float] = []
    with Subscribers(spec) as subscribers, httpx.Client(base_url=server.base_url) as client:
        connected, problems = subscribers.wait_connected()
        connect_s = time.monotonic() - started
        # SSE subscribers are registered before their response starts; GraphQL ones only
        # some time after their subscribe: wait until the server counts them all.
        deadline = time.monotonic() + 30
        while (counted := broadcast(client, None)) < connected and time.monotonic() < deadline:
            time.sleep(0.2)
        say(
            f"  {connected:,} of {spec.connections:,} subscribers in {connect_s:.1f} s, "
            f"{counted:,} counted by the server" + (f"; problems: {problems}" if problems else "")
        )
        time.sleep(1.0)  # let the accept and subscribe work settle before reading memory
        rss_after = rss_bytes(pid)
        for tag in range(1, live.broadcasts + 1):
            subscribers.expect(tag, live.broadcast_wait_s)
            before = server.cpu_snapshot().get(pid, 0.0)
            sent = time.monotonic()
            reported = broadcast(client, tag)
            answered = time.monotonic() - sent
            arrivals = subscribers.arrivals(tag, live.broadcast_wait_s)
            cpu.append(server.cpu_snapshot().get(pid, 0.0) - before)
            done = Broadcast(tag, reported, answered, tuple(sorted(t - sent for t in arrivals)))
            broadcasts.append(done)
            say(
                f"  broadcast {tag}: {done.reached:,}/{reported:,} reached, all in "
                f"{done.all_s * 1e3:.0f} ms (median subscriber {done.delay(50) * 1e3:.0f} ms, "
                f"request answered in {answered * 1e3:.0f} ms)"
            )
            time.sleep(live.pause_s)
        client_problems, client_cpu = subscribers.stop()
    for name, count in client_problems.items():
        problems[name] = problems.get(name, 0) + count
    return FanoutResult(
        subscribers=spec.connections,
        connected=connected,
        counted=counted,
        connect_s=connect_s,
        rss_before=rss_before,
        rss_after=rss_after,
        broadcasts=tuple(broadcasts),
        server_cpu_s=tuple(cpu),
        client_cpu_s=client_cpu,
        problems=problems,
    )


@attrs.frozen
class ExchangeSide:
    label: str
    server: servers.ServerProcess
    make: MakeExchange
    engine: bool  # has a sandbox pool to watch for restarts


def _measure(side: ExchangeSide, round_: int, settings: Settings, live: LiveSettings) -> Run:
    server = side.server
    spec = LoadSpec(
        host=server.host,
        port=server.port,
        path=side.label,
        connections=live.exchange_connections,
        processes=live.exchange_processes,
        duration_s=settings.duration_s if round_ else 1.0,
        warmup_s=settings.warmup_s,
    )
    restarts_before = servers.sandbox_state(server)["restarts"] if side.engine else None
    cpu_before = server.cpu_snapshot()
    load = run_exchanges(spec, side.make)
    cpu_after = server.cpu_snapshot()
    restarts = (
        servers.sandbox_state(server)["restarts"] - restarts_before
        if restarts_before is not None
        else None
    )
    leader = server.process.pid
    deltas = {p: cpu_after[p] - cpu_before.get(p, 0.0) for p in cpu_after}
    run = Run(
        label=side.label,
        round=round_,
        load=load,
        leader_cpu_s=deltas.get(leader, 0.0),
        worker_cpu_s=sum(v for p, v in deltas.items() if p != leader),
        restarts=restarts,
    )
    problems = f" problems={load.problems}" if load.problems else ""
    failures = f" failed={run.failures}" if run.failures else ""
    say(
        f"  {side.label:<34} round {round_}: {load.throughput:8.0f}/s  "
        f"p50 {p50_ms(run):7.2f} ms  p99 {p99_ms(run):7.2f} ms  cpu {cpu_us(run):6.0f} us  "
        f"generator {load.generator_cores:.2f} cores{failures}{problems}"
    )
    return run


def alternate_exchanges(
    settings: Settings, live: LiveSettings, sides: Sequence[ExchangeSide]
) -> tuple[Side, ...]:
    """Warm every side up, then measure them in turn, ``settings.rounds`` times each."""
    for side in sides:
        _measure(side, 0, settings, live)
    runs: list[list[Run]] = [[] for _ in sides]
    for round_ in range(1, settings.rounds + 1):
        for side, side_runs in zip(sides, runs, strict=True):
            side_runs.append(_measure(side, round_, settings, live))
    return tuple(Side(side.label, tuple(r)) for side, r in zip(sides, runs, strict=True))


def start_bare_live(work: Path) -> servers.ServerProcess:
    """The Quart-Trio baseline of the streams and GraphQL benchmarks (bench.bare_live_app)."""
    # bench._servers has no public starter for other apps; its private one is the same path.
    return servers._start(
        "bare-live", [sys.executable, "-m", "bench.bare_live_app"], work, servers._clean_env()
    )
