"""Benchmark 3: a healthy route while runaway handlers hold sandbox workers.

Each comparison uses its own engine, configured the way an operator expecting runaways would
configure it (see :meth:`Settings.runaway_engine_settings`).
"""

from __future__ import annotations

import time
from pathlib import Path

from bench import _servers as servers
from bench._loadgen import LoadResult, LoadSpec, start_load
from bench._measure import Comparison, Run, Settings, Side, measure, say
from bench._scripts import hello_script, runaway_script

__all__ = ["runaway_comparison", "spinning_comparison"]


def wait_until_quiet(server: servers.ServerProcess, settings: Settings, limit_s: float) -> None:
    """Wait until no worker is busy and every kill has been replaced (spares included)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        state = servers.sandbox_state(server)
        if (
            state["busy"] == 0
            and state["workers"] >= settings.runaway_pool_size
            and state["spares"] >= settings.runaway_warm_spares
        ):
            return
        time.sleep(0.2)
    say(f"  (the pool was still recovering after {limit_s:.0f} s: {state})")


def measure_healthy(
    engine: servers.ServerProcess, settings: Settings, label: str, round_: int, duration_s: float
) -> Run:
    """One run of the healthy route's load, as both runaway benchmarks measure it."""
    return measure(
        engine,
        label,
        round_,
        "/bench/ok",
        connections=settings.healthy_connections,
        processes=settings.processes,
        duration_s=duration_s,
        warmup_s=settings.runaway_settle_s,
        engine=True,
        sample_pool=True,
    )


def runaway_comparison(settings: Settings, work: Path) -> tuple[Comparison, tuple[LoadResult, ...]]:
    engine = servers.start_engine(
        "engine-runaway", work / "data-runaway", work, settings.runaway_engine_settings()
    )
    try:
        servers.deploy(engine, "https://bench.local/ok", hello_script("/bench/ok"))
        servers.deploy(engine, "https://bench.local/spin", runaway_script("/bench/spin"))
        timeout_s = settings.runaway_timeout_ms / 1000

        def healthy(label: str, round_: int, duration_s: float) -> Run:
            return measure_healthy(engine, settings, label, round_, duration_s)

        wait_until_quiet(engine, settings, limit_s=30)
        healthy("healthy alone (warm-up)", 0, 1.0)
        quiet: list[Run] = []
        loud: list[Run] = []
        runaway_loads: list[LoadResult] = []
        for round_ in range(1, settings.runaway_rounds + 1):
            # Both sides start from a full, idle pool.
            wait_until_quiet(engine, settings, limit_s=15)
            quiet.append(healthy("healthy alone", round_, settings.runaway_duration_s))
            wait_until_quiet(engine, settings, limit_s=15)
            runaways = start_load(
                LoadSpec(
                    host=engine.host,
                    port=engine.port,
                    path="/bench/spin",
                    connections=settings.runaways,
                    processes=1,
                    duration_s=settings.runaway_duration_s,
                    warmup_s=settings.runaway_settle_s,
                    stagger_s=timeout_s / settings.runaways,
                    # Let the last runaways meet their deadline rather than hang up on them.
                    drain_s=timeout_s + 2.0,
                )
            )
            try:
                loud.append(healthy("healthy + 10 runaways", round_, settings.runaway_duration_s))
                runaway_loads.append(runaways.result())
            finally:
                runaways.stop()
            statuses = runaway_loads[-1].statuses
            say(f"    runaway requests answered in the window: {statuses}")
        comparison = Comparison(
            Side("healthy alone", tuple(quiet)), Side("healthy + 10 runaways", tuple(loud))
        )
        return comparison, tuple(runaway_loads)
    finally:
        engine.stop()


def spinning_comparison(settings: Settings, work: Path) -> Comparison:
    """The runaways' spinning without their kills, to split benchmark 3's cost in two.

    The same configuration with a deadline far beyond the run: the handlers spin for the whole
    measurement (deprioritized, if the engine does that) and no worker is killed or started.
    The spinners cannot be stopped without killing their workers, so the sides are not
    alternated: every "alone" round runs first, then every round with the spinners.
    """
    config = {**settings.runaway_engine_settings(), "sandbox.handler_timeout_ms": 600_000}
    engine = servers.start_engine("engine-spinning", work / "data-spinning", work, config)
    spinners = None
    try:
        servers.deploy(engine, "https://bench.local/ok", hello_script("/bench/ok"))
        servers.deploy(engine, "https://bench.local/spin", runaway_script("/bench/spin"))

        def healthy(label: str, round_: int, duration_s: float) -> Run:
            return measure_healthy(engine, settings, label, round_, duration_s)

        wait_until_quiet(engine, settings, limit_s=30)
        healthy("healthy alone (warm-up)", 0, 1.0)
        rounds = range(1, settings.spin_rounds + 1)
        quiet = [healthy("healthy alone", r, settings.runaway_duration_s) for r in rounds]
        per_round = settings.runaway_settle_s + settings.runaway_duration_s + 5
        spinners = start_load(
            LoadSpec(
                host=engine.host,
                port=engine.port,
                path="/bench/spin",
                connections=settings.runaways,
                processes=1,
                duration_s=per_round * settings.spin_rounds + 30,
                warmup_s=0.0,
                drain_s=0.0,
            )
        )
        deadline = time.monotonic() + 15
        while servers.sandbox_state(engine)["busy"] < settings.runaways:
            if time.monotonic() > deadline:
                raise RuntimeError("the spinning handlers did not all start within 15 s")
            time.sleep(0.2)
        loud = [healthy("healthy + 10 spinning", r, settings.runaway_duration_s) for r in rounds]
        return Comparison(
            Side("healthy alone", tuple(quiet)), Side("healthy + 10 spinning", tuple(loud))
        )
    finally:
        if spinners is not None:
            spinners.stop()
        engine.stop()
