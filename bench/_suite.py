"""The whole run: every benchmark, each against a baseline measured in the same run."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import attrs

from bench import _servers as servers
from bench._graphql import GraphQLResult, graphql_benchmark
from bench._live import LiveSettings, raise_open_files_limit, without_rate_limits
from bench._loadgen import LoadResult
from bench._measure import Comparison, Run, Settings, alternate, measure, say
from bench._runaways import runaway_comparison, spinning_comparison
from bench._scripts import hello_script, padded_script
from bench._streams import StreamsResult, streams_benchmark
from bench._wrk import WRK, wrk_version

__all__ = ["SuiteResult", "code_fingerprint", "run_suite"]


@attrs.frozen
class SuiteResult:
    settings: Settings
    environment: dict[str, str]
    ceiling: Run
    js_vs_bare: Comparison
    sizes: Comparison
    runaway: Comparison
    runaway_loads: tuple[LoadResult, ...]
    spinning: Comparison  # the runaways' spinning alone, without kills
    round_trip: dict[str, float]  # bench.pool_probe's numbers
    live: LiveSettings
    streams: StreamsResult
    graphql: GraphQLResult
    elapsed_s: float


def code_fingerprint() -> str:
    """A digest of the code the servers run: a change during a run invalidates the run.

    Servers import their code at start, but every sandbox worker started later imports it again
    from disk; on a tree others are editing, a run can mix two versions of the engine.
    """
    digest = hashlib.sha256()
    for package in ("engine", "handlers", "security"):
        root = servers.REPO_ROOT / package
        for path in sorted(root.rglob("*")):
            if path.suffix in (".py", ".js") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(servers.REPO_ROOT)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _git_revision() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=servers.REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip()


def _probe_round_trip(seconds: float, concurrency: int = 8) -> dict[str, float]:
    """bench.pool_probe's numbers; NaN (shown as n/a) if the probe fails, as it uses the
    pool's Python API, which moves faster than the HTTP surface the rest of the suite uses."""
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "bench.pool_probe", str(seconds), str(concurrency)],
            cwd=servers.REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        numbers: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        stderr = getattr(exc, "stderr", "") or ""
        say(f"  the round-trip probe failed: {exc}\n{stderr[-2000:]}")
        nan = float("nan")
        return {"calls": nan, "calls_per_s": nan, "parent_cpu_us": nan, "worker_cpu_us": nan}
    return numbers


def _environment(settings: Settings) -> dict[str, str]:
    import platform
    from importlib.metadata import version

    cpus = os.cpu_count() or 1
    start_cpu, start_wall = servers.worker_start_cost()
    from engine.config import default_config

    sandbox = default_config().sandbox
    return {
        "revision": _git_revision(),
        "code": code_fingerprint(),
        "deprioritize_after_ms": str(getattr(sandbox, "deprioritize_after_ms", "not available")),
        "cpus": str(cpus),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hypercorn": version("hypercorn"),
        "quart-trio": version("quart-trio"),
        "trio": version("trio"),
        "quickjs": version("quickjs"),
        "default_pool_size": str(max(2, cpus)),
        "generator": wrk_version() if WRK else "",
        "worker_start_cpu_ms": f"{start_cpu * 1000:.0f}",
        "worker_start_wall_ms": f"{start_wall * 1000:.0f}",
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def run_suite(settings: Settings, work: Path) -> SuiteResult:
    started = time.monotonic()
    environment = _environment(settings)
    say(
        f"bench: {environment['cpus']} CPUs, load average {environment['load_before']}, "
        f"{'quick' if settings.quick else 'full'} run"
    )

    say("generator ceiling: the load generator against a trivial static responder")
    static = servers.start_static(work)
    try:
        ceiling = measure(
            static,
            "static responder",
            1,
            "/",
            connections=settings.connections,
            processes=settings.processes,
            duration_s=min(3.0, settings.duration_s),
            warmup_s=settings.warmup_s,
            engine=False,
        )
    finally:
        static.stop()

    bare = servers.start_bare(work)
    engine = servers.start_engine("engine", work / "data", work, without_rate_limits())
    try:
        servers.deploy(engine, "https://bench.local/hello", hello_script("/bench/hello"))
        servers.deploy(
            engine, "https://bench.local/small", padded_script("/bench/small", settings.small_bytes)
        )
        servers.deploy(
            engine, "https://bench.local/big", padded_script("/bench/big", settings.big_bytes)
        )
        say("1. JS route vs bare Quart-Trio route")
        js_vs_bare = alternate(
            settings,
            ("bare Quart-Trio /hello", bare, "/hello", False),
            ("engine JS /bench/hello", engine, "/bench/hello", True),
        )
        bare.stop()
        say("2. handler in a 1 KB script vs in a 1 MB script")
        sizes = alternate(
            settings,
            ("1 KB script", engine, "/bench/small", True),
            ("1 MB script", engine, "/bench/big", True),
        )
    finally:
        bare.stop()
        engine.stop()

    say("the sandbox round trip alone (SandboxPool.invoke, no HTTP)")
    # A few short probes and the median of each number: one probe is at the machine's mercy.
    probes = [_probe_round_trip(seconds=2.0) for _ in range(1 if settings.quick else 3)]
    round_trip = {key: statistics.median(p[key] for p in probes) for key in probes[0]}
    say(
        f"  {round_trip['calls_per_s']:.0f} calls/s, parent {round_trip['parent_cpu_us']:.0f} "
        f"us/call, worker {round_trip['worker_cpu_us']:.0f} us/call"
    )

    say("3. healthy route with and without 10 runaway handlers")
    runaway, runaway_loads = runaway_comparison(settings, work)
    say("3b. the same, with the handlers spinning but never killed")
    spinning = spinning_comparison(settings, work)

    live = LiveSettings.of(settings)
    environment["open_files_limit"] = str(raise_open_files_limit(live.open_files_needed()))
    say("4. streams: SSE fan-out and WebSocket echo")
    streams = streams_benchmark(settings, live, work)
    say("5. GraphQL: queries and subscription fan-out")
    graphql = graphql_benchmark(settings, live, work)
    environment["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    environment["code_after"] = code_fingerprint()
    if environment["code_after"] != environment["code"]:
        say("bench: WARNING: the engine's code changed during the run; its numbers mix versions")
    return SuiteResult(
        settings=settings,
        environment=environment,
        ceiling=ceiling,
        js_vs_bare=js_vs_bare,
        sizes=sizes,
        runaway=runaway,
        runaway_loads=runaway_loads,
        spinning=spinning,
        round_trip=round_trip,
        live=live,
        streams=streams,
        graphql=graphql,
        elapsed_s=time.monotonic() - started,
    )
