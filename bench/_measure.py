"""Measuring one side of a comparison, and comparing two sides.

The machine is shared and noisy, so no number here is judged on its own.  Every comparison
alternates its two sides round by round (baseline, candidate, baseline, candidate, ...) so slow
phases of the machine hit both, and reports the ratio of the medians over the rounds together
with the spread of the per-round ratios.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
from collections.abc import Callable

import attrs

from bench import _servers as servers
from bench._loadgen import LoadResult, LoadSpec, start_load
from bench._wrk import WRK, run_wrk

__all__ = [
    "Comparison",
    "PoolSummary",
    "Run",
    "Settings",
    "Side",
    "alternate",
    "cpu_us",
    "measure",
    "p50_ms",
    "p99_ms",
    "say",
    "throughput",
    "time_per_request_us",
]


@attrs.frozen
class Settings:
    quick: bool
    rounds: int
    duration_s: float
    warmup_s: float
    connections: int
    processes: int
    runaway_rounds: int
    runaway_duration_s: float
    # Before a "with runaways" window opens, the runaways must have reached their steady state
    # (all in flight, some already killed and re-issued); both sides wait the same time.
    runaway_settle_s: float
    healthy_connections: int
    spin_rounds: int  # rounds per side of the spinning-only split (not alternated)
    runaways: int = 10
    runaway_timeout_ms: int = 2000
    # An operator expecting 10 runaways at once sizes the pool for them plus the real traffic
    # (one worker per healthy connection, and two more), and keeps spares for the
    # replacements the kills cause (one per runaway every 2 s).
    runaway_pool_size: int = 20
    runaway_warm_spares: int = 4
    # Left at its default (5 failures in 30 s) the per-script breaker would pause the runaway
    # script after five kills, and the scenario would measure the breaker, not the isolation.
    runaway_breaker_threshold: int = 1000
    small_bytes: int = 1024
    big_bytes: int = 1_000_000  # the engine's default sandbox.max_script_bytes

    @classmethod
    def full(cls) -> Settings:
        return cls(
            quick=False,
            rounds=4,
            duration_s=6.0,
            warmup_s=1.0,
            connections=32,
            processes=2,
            runaway_rounds=3,
            runaway_duration_s=6.0,
            runaway_settle_s=3.0,
            healthy_connections=8,
            spin_rounds=2,
        )

    @classmethod
    def quick_run(cls) -> Settings:
        return cls(
            quick=True,
            rounds=1,
            duration_s=3.0,
            warmup_s=0.5,
            connections=32,
            processes=2,
            runaway_rounds=1,
            runaway_duration_s=3.0,
            runaway_settle_s=2.5,
            healthy_connections=8,
            spin_rounds=1,
        )

    def runaway_engine_settings(self) -> dict[str, object]:
        return {
            "sandbox.pool_size": self.runaway_pool_size,
            "sandbox.warm_spares": self.runaway_warm_spares,
            "sandbox.handler_timeout_ms": self.runaway_timeout_ms,
            "sandbox.breaker_failure_threshold": self.runaway_breaker_threshold,
            # Every benchmark client comes from one loopback address: the per-client rate
            # limits would measure themselves.
            "rate_limits.enabled": False,
        }


@attrs.frozen
class PoolSummary:
    """The sandbox pool as ``/health/ready`` showed it, sampled every half second of a run."""

    samples: int
    min_workers: int  # in service (busy or idle), spares not counted
    min_idle: int
    max_waiting: int  # requests queued for a worker


class _PoolSampler:
    """Polls the engine's readiness endpoint from a thread while a run is in progress."""

    def __init__(self, server: servers.ServerProcess, every_s: float = 0.5) -> None:
        self._server = server
        self._every_s = every_s
        self._stop = threading.Event()
        self._states: list[dict[str, int]] = []
        self._thread = threading.Thread(target=self._poll, name="bench-pool-sampler", daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self._states.append(servers.sandbox_state(self._server))
            except (OSError, ValueError, KeyError):
                continue  # a slow or refused poll is a missing sample, not a failed run

    def __enter__(self) -> _PoolSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def summary(self) -> PoolSummary | None:
        if not self._states:
            return None
        return PoolSummary(
            samples=len(self._states),
            min_workers=min(state["workers"] for state in self._states),
            min_idle=min(state["idle"] for state in self._states),
            max_waiting=max(state["waiting"] for state in self._states),
        )


@attrs.frozen
class Run:
    """One measurement of one side."""

    label: str
    round: int
    load: LoadResult
    leader_cpu_s: float  # the server process (hypercorn + app)
    worker_cpu_s: float  # the rest of its group: the engine's sandbox workers
    restarts: int | None  # sandbox worker restarts during the run (engine only)
    pool: PoolSummary | None = None  # the sandbox pool as sampled during the run, if sampled

    def cpu_per_request_us(self, part: str = "all") -> float:
        seconds = {
            "all": self.leader_cpu_s + self.worker_cpu_s,
            "leader": self.leader_cpu_s,
            "workers": self.worker_cpu_s,
        }[part]
        total = self.load.total_completed
        return seconds / total * 1e6 if total else float("nan")

    @property
    def failures(self) -> int:
        return self.load.completed - self.load.ok


def _divide(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@attrs.frozen
class Side:
    label: str
    runs: tuple[Run, ...]

    def median(self, metric: Callable[[Run], float]) -> float:
        return _median([metric(run) for run in self.runs])


def throughput(run: Run) -> float:
    return run.load.throughput


def time_per_request_us(run: Run) -> float:
    """Server wall time per request at saturation: what one more request costs."""
    return 1e6 / run.load.throughput if run.load.throughput else float("nan")


def p50_ms(run: Run) -> float:
    return run.load.latency(50) * 1e3


def p99_ms(run: Run) -> float:
    return run.load.latency(99) * 1e3


def cpu_us(run: Run) -> float:
    return run.cpu_per_request_us()


@attrs.frozen
class Comparison:
    baseline: Side
    candidate: Side

    def ratio(self, metric: Callable[[Run], float]) -> float:
        """Median of the candidate over median of the baseline."""
        return _divide(self.candidate.median(metric), self.baseline.median(metric))

    def round_ratios(self, metric: Callable[[Run], float]) -> list[float]:
        return [
            _divide(metric(c), metric(b))
            for b, c in zip(self.baseline.runs, self.candidate.runs, strict=True)
        ]


def say(message: str) -> None:
    print(message, flush=True)


def measure(
    server: servers.ServerProcess,
    label: str,
    round_: int,
    path: str,
    *,
    connections: int,
    processes: int,
    duration_s: float,
    warmup_s: float,
    engine: bool,
    sample_pool: bool = False,
) -> Run:
    spec = LoadSpec(
        host=server.host,
        port=server.port,
        path=path,
        connections=connections,
        processes=processes,
        duration_s=duration_s,
        warmup_s=warmup_s,
    )
    restarts_before = servers.sandbox_state(server)["restarts"] if engine else None
    cpu_before = server.cpu_snapshot()
    sampler = _PoolSampler(server) if sample_pool else None
    if WRK is not None:
        with sampler or contextlib.nullcontext():
            load = run_wrk(spec)
    else:
        running = start_load(spec)
        try:
            # The sampler's thread starts after the generator processes are forked, not before.
            with sampler or contextlib.nullcontext():
                load = running.result()
        finally:
            running.stop()
    cpu_after = server.cpu_snapshot()
    restarts = (
        servers.sandbox_state(server)["restarts"] - restarts_before
        if restarts_before is not None
        else None
    )
    # A process that died during the run took its CPU figure with it; one born during the run
    # (a replacement worker) counts from zero.
    leader = server.process.pid
    deltas = {pid: cpu_after[pid] - cpu_before.get(pid, 0.0) for pid in cpu_after}
    run = Run(
        label=label,
        round=round_,
        load=load,
        leader_cpu_s=deltas.get(leader, 0.0),
        worker_cpu_s=sum(v for pid, v in deltas.items() if pid != leader),
        restarts=restarts,
        pool=sampler.summary() if sampler else None,
    )
    problems = f" problems={load.problems}" if load.problems else ""
    failures = f" non-2xx={run.failures}" if run.failures else ""
    restarted = f" worker-restarts={restarts}" if restarts else ""
    say(
        f"  {label:<28} round {round_}: {load.throughput:8.0f} req/s  "
        f"p50 {p50_ms(run):7.2f} ms  p99 {p99_ms(run):7.2f} ms  "
        f"cpu {cpu_us(run):6.0f} us/req  generator {load.generator_cores:.2f} cores"
        f"{failures}{restarted}{problems}"
    )
    return run


def alternate(
    settings: Settings,
    baseline: tuple[str, servers.ServerProcess, str, bool],
    candidate: tuple[str, servers.ServerProcess, str, bool],
) -> Comparison:
    """Warm both sides up, then measure them in turn, ``settings.rounds`` times each."""
    sides: tuple[list[Run], list[Run]] = ([], [])
    for label, server, path, engine in (baseline, candidate):
        measure(
            server,
            f"{label} (warm-up)",
            0,
            path,
            connections=settings.connections,
            processes=settings.processes,
            duration_s=1.0,
            warmup_s=settings.warmup_s,
            engine=engine,
        )
    for round_ in range(1, settings.rounds + 1):
        for runs, (label, server, path, engine) in zip(sides, (baseline, candidate), strict=True):
            runs.append(
                measure(
                    server,
                    label,
                    round_,
                    path,
                    connections=settings.connections,
                    processes=settings.processes,
                    duration_s=settings.duration_s,
                    warmup_s=settings.warmup_s,
                    engine=engine,
                )
            )
    return Comparison(Side(baseline[0], tuple(sides[0])), Side(candidate[0], tuple(sides[1])))
