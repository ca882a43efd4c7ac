"""The sandbox round trip alone: ``SandboxPool.invoke`` in a loop, no HTTP in front of it.

Run as ``python -m bench.pool_probe SECONDS CONCURRENCY`` (its own process, so the CPU it
reads is its own).  It starts a pool of two workers with the engine's defaults, warms both up
with the benchmark's hello script, then keeps ``CONCURRENCY`` invocations in flight for
``SECONDS`` with the context a real ``GET /bench/hello`` produces, and prints one JSON line:
calls per second and the CPU per call in this (parent) process and in the workers.  Set
against the HTTP benchmark, it splits the engine's cost into the round trip and the rest.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from typing import Any

import trio

from bench._scripts import hello_script
from engine.http_contract import ParsedForm, anonymous_auth, build_request
from engine.sandbox import Invocation, PoolSettings, SandboxPool
from engine.scripts import version_key

_TICKS = os.sysconf("SC_CLK_TCK")
URI = "https://bench.local/hello"
SOURCE = hello_script("/bench/hello")


class _Host:
    async def call(self, name: str, args: list[Any]) -> Any:
        raise AssertionError(f"the hello handler makes no host call ({name})")

    def log(self, level: str, message: str, timestamp_ms: int) -> None:
        pass

    async def finish(self, error: BaseException | None) -> None:
        pass


def _cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def _invocation(ids: itertools.count[int]) -> Invocation:
    request_id = f"req_probe_{next(ids)}"
    request = build_request(
        path="/bench/hello",
        method="GET",
        raw_query=b"",
        raw_headers=[(b"host", b"127.0.0.1:8000")],
        body=b"",
        params={},
        form=ParsedForm(),
        auth=anonymous_auth(),
    )
    return Invocation(
        invocation_id=request_id,
        script_uri=URI,
        script_key=version_key(URI, SOURCE),
        source=SOURCE,
        handler="hello",
        phase="handler",
        context={
            "kind": "httpRoute",
            "invocationId": request_id,
            "scriptUri": URI,
            "handlerName": "hello",
            "request": request,
            "args": None,
        },
        timeout_ms=5000,
        host=_Host(),
    )


async def probe(seconds: float, concurrency: int) -> dict[str, float]:
    pool = SandboxPool(PoolSettings(size=2, warm_spares=0))
    ids = itertools.count(1)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        for _ in range(20):  # every worker evaluates the script once
            await pool.invoke(_invocation(ids))
        calls = 0
        workers = pool.worker_pids()
        cpu_parent, cpu_workers = time.process_time(), _cpu_of(workers)
        started = time.monotonic()
        stop_at = started + seconds

        async def caller() -> None:
            nonlocal calls
            while time.monotonic() < stop_at:
                await pool.invoke(_invocation(ids))
                calls += 1

        async with trio.open_nursery() as callers:
            for _ in range(concurrency):
                callers.start_soon(caller)
        elapsed = time.monotonic() - started
        parent = time.process_time() - cpu_parent
        children = _cpu_of(workers) - cpu_workers
        nursery.cancel_scope.cancel()
    return {
        "calls": calls,
        "calls_per_s": calls / elapsed,
        "parent_cpu_us": parent / calls * 1e6,
        "worker_cpu_us": children / calls * 1e6,
    }


if __name__ == "__main__":
    print(json.dumps(trio.run(probe, float(sys.argv[1]), int(sys.argv[2]))), flush=True)
