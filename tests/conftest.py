"""Shared fixtures: real engines on loopback ports, real HTTP clients.

``running_engine(config)`` starts the real application under hypercorn (trio worker) on
127.0.0.1 with an ephemeral port inside the test's Trio run, waits until it is ready, and stops
it afterwards.  ``EngineProcess`` runs ``aiwebengine serve`` as a separate process for the tests
that must kill or signal the server itself.

An autouse fixture checks after every test that no sandbox worker process this test run started
is still alive.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from engine.app import create_app
from engine.config import Config, load_config
from engine.runtime import EngineRuntime

# Sandbox processes: workers started directly, the zygote, and the workers it forks (which
# carry the zygote's command line).
SANDBOX_MARK = "engine.sandbox._"


def make_config(data_dir: Path, **overrides: Any) -> Config:
    """A development config on an ephemeral loopback port with a small pool.

    ``overrides`` use dotted keys: ``make_config(tmp_path, **{"sandbox.handler_timeout_ms": 500})``.
    """
    values: dict[str, Any] = {
        "server.data_dir": str(data_dir),
        "server.port": 0,
        "server.shutdown_grace_s": 5.0,
        "sandbox.pool_size": 2,
        "sandbox.warm_spares": 1,
        "database.sqlite_synchronous": "NORMAL",
        "logging.level": "warning",
    }
    values.update(overrides)
    return load_config(None, env={}, overrides=values)


@attrs.define
class Engine:
    base_url: str
    runtime: EngineRuntime
    client: httpx.AsyncClient

    async def deploy(self, uri: str, content: str) -> dict[str, Any]:
        response = await self.client.post(
            "/engine/upsert_script", data={"uri": uri, "content": content}
        )
        assert response.status_code == 200, response.text
        payload: dict[str, Any] = response.json()
        return payload

    async def logs(self, **params: str) -> list[dict[str, Any]]:
        """``GET /engine/script_logs`` with these filters; the entries."""
        response = await self.client.get("/engine/script_logs", params=params)
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()["logs"]
        return entries


@asynccontextmanager
async def running_engine(
    config: Config, *, headers: dict[str, str] | None = None
) -> AsyncIterator[Engine]:
    app = create_app(config)
    runtime: EngineRuntime = app.extensions["aiwebengine"]
    hypercorn_config = HypercornConfig()
    hypercorn_config.bind = ["127.0.0.1:0"]
    hypercorn_config.graceful_timeout = 5
    hypercorn_config.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: serve(
                app, hypercorn_config, shutdown_trigger=stop.wait, task_status=task_status
            )
        )
        base_url = binds[0]
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
            with trio.fail_after(30):
                await runtime.wait_started()
            try:
                yield Engine(base_url, runtime, client)
            finally:
                # As `aiwebengine serve` drains: streams end first, or hypercorn would wait
                # for them.
                runtime.begin_shutdown()
                stop.set()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path / "data")


@pytest.fixture
async def engine(config: Config) -> AsyncIterator[Engine]:
    async with running_engine(config) as running:
        yield running


# -- a server in its own process -----------------------------------------------------------

_SERVING = re.compile(r"serving on (\S+)")


class EngineProcess:
    """``aiwebengine serve`` in a child process; ``base_url`` once it reports its address."""

    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.log_path = data_dir.parent / f"server-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("AIWEBENGINE_")}
        full_env.update(env or {})
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.cli",
                "serve",
                "--port",
                "0",
                "--data-dir",
                str(data_dir),
                *extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )
        self.base_url = self._wait_for_address()

    def _wait_for_address(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _SERVING.search(self.output())
            if match:
                return match.group(1).rstrip(",")
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.output()}")
            time.sleep(0.05)
        raise RuntimeError(f"server did not start:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def worker_pids(self) -> list[int]:
        return sandbox_pids(self.process.pid)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@pytest.fixture
def engine_process(tmp_path: Path) -> Iterator[type[EngineProcess]]:
    started: list[EngineProcess] = []

    class _Tracked(EngineProcess):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    yield _Tracked
    for process in started:
        process.close()


# -- no orphaned workers -------------------------------------------------------------------


def _processes() -> list[tuple[int, str, int]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        found.append((int(entry.name), cmd, ppid))
    return found


def sandbox_pids(parent: int) -> list[int]:
    """Live (not zombie) sandbox processes below ``parent``: its children and theirs."""
    table = _processes()
    found: list[int] = []
    frontier = {parent}
    while frontier:
        children = {pid for pid, cmd, ppid in table if ppid in frontier and SANDBOX_MARK in cmd}
        found.extend(children)
        frontier = children
    live = []
    for pid in found:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            live.append(pid)
    return sorted(live)


def live_worker_pids(parent: int | None = None) -> list[int]:
    return sandbox_pids(os.getpid() if parent is None else parent)


@pytest.fixture(autouse=True)
def no_worker_left_behind() -> Iterator[None]:
    yield
    deadline = time.monotonic() + 5
    while live_worker_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    leftover = live_worker_pids()
    for pid in leftover:
        os.kill(pid, signal.SIGKILL)
    assert not leftover, f"sandbox workers outlived the test: {leftover}"
