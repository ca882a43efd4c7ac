"""``wrk`` as the load generator, when it is on PATH.

wrk (C, event loop per thread) is cheaper per request than the suite's Python generator, so
it is preferred for the throughput runs.  Its report is parsed for the request count, the
rate, the non-2xx count and the ``--latency`` distribution (50/75/90/99 %).  wrk has no warm-up
and no drain, so a run is two invocations: the warm-up (counted only for the CPU per request)
and the measured window.
"""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import time

from bench._loadgen import LoadResult, LoadSpec

__all__ = ["WRK", "WrkReport", "parse_report", "run_wrk", "wrk_version"]

WRK = shutil.which("wrk")

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(\d+(?:\.\d+)?)(us|ms|s|m|h)\s*$", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in (\d+(?:\.\d+)?)(us|ms|s|m|h)", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class WrkReport:
    """What one wrk run printed, in seconds and counts."""

    def __init__(
        self,
        requests: int,
        elapsed_s: float,
        non_2xx: int,
        percentiles: dict[float, float],
        socket_errors: dict[str, int],
    ) -> None:
        self.requests = requests
        self.elapsed_s = elapsed_s
        self.non_2xx = non_2xx
        self.percentiles = percentiles
        self.socket_errors = socket_errors


def parse_report(text: str) -> WrkReport:
    requests = _REQUESTS.search(text)
    if requests is None:
        raise ValueError(f"no request count in wrk's output:\n{text[-2000:]}")
    non_2xx = _NON_2XX.search(text)
    errors = _SOCKET_ERRORS.search(text)
    return WrkReport(
        requests=int(requests.group(1)),
        elapsed_s=float(requests.group(2)) * _UNITS[requests.group(3)],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        percentiles={
            float(p): float(value) * _UNITS[unit] for p, value, unit in _PERCENTILE.findall(text)
        },
        socket_errors=(
            {
                kind: int(count)
                for kind, count in zip(
                    ("connect", "read", "write", "timeout"), errors.groups(), strict=True
                )
                if int(count)
            }
            if errors
            else {}
        ),
    )


def wrk_version() -> str:
    if WRK is None:
        return ""
    done = subprocess.run([WRK, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return (done.stdout + done.stderr).split("\n", 1)[0].strip()


def _wrk(spec: LoadSpec, seconds: float) -> WrkReport:
    assert WRK is not None
    command = [
        WRK,
        f"-t{max(1, min(spec.processes, spec.connections))}",
        f"-c{spec.connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "30s",
        f"http://{spec.host}:{spec.port}{spec.path}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return parse_report(done.stdout)


def run_wrk(spec: LoadSpec) -> LoadResult:
    """The same run as :func:`bench._loadgen.run_load`, driven by wrk (whole seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    warmup = _wrk(spec, spec.warmup_s) if spec.warmup_s > 0 else None
    measured = _wrk(spec, spec.duration_s)
    run_s = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    problems = {f"socket {kind} errors": n for kind, n in measured.socket_errors.items()}
    return LoadResult(
        spec=spec,
        # wrk counts non-2xx answers without saying which; 0 stands for "some non-2xx".
        statuses={
            status: n
            for status, n in ((200, measured.requests - measured.non_2xx), (0, measured.non_2xx))
            if n
        },
        total_completed=measured.requests + (warmup.requests if warmup else 0),
        reconnects=0,
        latency_percentiles=measured.percentiles,
        window_s=measured.elapsed_s,
        generator_cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        run_s=run_s,
        problems=problems,
    )
