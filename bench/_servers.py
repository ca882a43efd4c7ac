"""The servers under test, each in its own process group, and their cleanup.

Every server is started in a new session (so a Ctrl-C in the terminal reaches the benchmark,
which then stops the servers in order, instead of reaching everything at once) and is recorded
here until stopped.  :func:`stop_all` terminates each recorded group -- SIGTERM, a short grace,
then SIGKILL -- and runs on normal exit, on exceptions, on Ctrl-C and on SIGTERM.  The group
also holds the engine's sandbox workers, so they go with it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import httpx

__all__ = [
    "ServerProcess",
    "deploy",
    "get",
    "group_cpu_seconds",
    "sandbox_state",
    "start_bare",
    "start_engine",
    "start_static",
    "stop_all",
    "worker_start_cost",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
_SERVING = re.compile(r"serving on (http://[^\s,]+)")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_started: dict[int, ServerProcess] = {}


@attrs.define
class ServerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    base_url: str = ""
    stopped: bool = False

    @property
    def host(self) -> str:
        return self.base_url.split("://", 1)[1].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def output(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def cpu_snapshot(self) -> dict[int, float]:
        """CPU used so far by each live process of the server's group (leader and workers)."""
        return group_cpu_seconds(self.process.pid)

    def stop(self, grace_s: float = 10.0) -> None:
        # Once only: after the group is gone its id may be reused by somebody else's process.
        if self.stopped:
            return
        self.stopped = True
        _started.pop(self.process.pid, None)
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace_s)
        # Whatever the leader left behind in its group (workers mid-exit) goes too.
        _signal_group(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def group_cpu_seconds(pgid: int) -> dict[int, float]:
    """User+system CPU seconds of every live process in group ``pgid``, by pid."""
    found: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        # After the command: state, ppid, pgrp, ..., utime (14th field), stime (15th).
        if int(fields[2]) == pgid:
            found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return found


def _start(name: str, argv: list[str], log_dir: Path, env: dict[str, str]) -> ServerProcess:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    server = ServerProcess(name, process, log_path)
    _started[process.pid] = server
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = _SERVING.search(server.output())
        if match:
            server.base_url = match.group(1)
            return server
        if process.poll() is not None:
            server.stop()
            raise RuntimeError(f"{name} exited before serving:\n{server.output()[-3000:]}")
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{name} did not start within 60 s:\n{server.output()[-3000:]}")


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # The operator's own AIWEBENGINE_* settings would change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIWEBENGINE_")}
    env.update(extra or {})
    return env


def start_engine(
    name: str, data_dir: Path, log_dir: Path, settings: dict[str, Any] | None = None
) -> ServerProcess:
    """``aiwebengine serve`` on a free port; ``settings`` are dotted config keys."""
    env = _clean_env(
        {
            "AIWEBENGINE_" + key.replace(".", "__").upper(): str(value)
            for key, value in (settings or {}).items()
        }
    )
    argv = [sys.executable, "-m", "engine.cli", "serve", "--port", "0", "--data-dir", str(data_dir)]
    return _start(name, argv, log_dir, env)


def start_bare(log_dir: Path) -> ServerProcess:
    return _start("bare", [sys.executable, "-m", "bench.bare_app"], log_dir, _clean_env())


def start_static(log_dir: Path) -> ServerProcess:
    return _start("static", [sys.executable, "-m", "bench.static_responder"], log_dir, _clean_env())


def worker_start_cost(samples: int = 3) -> tuple[float, float]:
    """Median (CPU seconds, wall seconds) for one replacement worker to be ready.

    Measured the way the pool makes replacements: a worker factory (``engine.sandbox._zygote``)
    is started once, then asked to fork a worker, whose greeting is awaited; the CPU is what
    the forked worker itself used up to that point (from ``/proc``).
    """
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    factory = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.sandbox._zygote",
            "--socket-fd",
            str(child_end.fileno()),
            "--parent-pid",
            str(os.getpid()),
            "--memory-limit",
            str(64 * 1024 * 1024),
            "--stack-limit",
            str(1024 * 1024),
            "--address-space",
            str(2 * 1024 * 1024 * 1024),
            "--cache-size",
            "32",
        ],
        cwd=REPO_ROOT,
        pass_fds=(child_end.fileno(),),
        env=_clean_env(),
    )
    child_end.close()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu: list[float] = []
    wall: list[float] = []
    try:
        for _ in range(samples):
            worker_in, to_worker = os.pipe()
            from_worker, worker_out = os.pipe()
            started = time.monotonic()
            socket.send_fds(parent_end, [b"spawn"], [worker_in, worker_out])
            os.close(worker_in)
            os.close(worker_out)
            (pid,) = struct.unpack("!q", parent_end.recv(8))
            os.read(from_worker, 1)  # the first byte of its Ready frame
            wall.append(time.monotonic() - started)
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu.append((int(fields[11]) + int(fields[12])) / ticks)
            os.close(to_worker)  # the worker exits when its input closes
            os.close(from_worker)
    finally:
        parent_end.close()
        try:
            factory.wait(5)
        except subprocess.TimeoutExpired:
            factory.kill()
            factory.wait(5)
    return statistics.median(cpu), statistics.median(wall)


def stop_all() -> None:
    for server in list(_started.values()):
        server.stop(grace_s=5)


def deploy(server: ServerProcess, uri: str, content: str) -> dict[str, Any]:
    """Upsert a script and insist that its init() succeeded."""
    response = httpx.post(
        server.base_url + "/engine/upsert_script",
        files={"uri": (None, uri), "content": (None, content)},
        timeout=120,
    )
    response.raise_for_status()
    report: dict[str, Any] = response.json()
    if not (report.get("init") or {}).get("success"):
        raise RuntimeError(f"deploying {uri} failed: {report}")
    return report


def sandbox_state(server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(server.base_url + "/health/ready", timeout=30)
    sandbox: dict[str, Any] = response.json()["sandbox"]
    return sandbox


def get(server: ServerProcess, path: str) -> httpx.Response:
    return httpx.get(server.base_url + path, timeout=30)
