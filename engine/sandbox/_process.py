"""One sandbox worker process as the parent sees it: a pipe pair speaking frames.

:func:`start_worker` launches ``python -m engine.sandbox._worker`` with its limits and waits for
its ``Ready`` frame; :class:`WorkerProcess` sends and receives frames and kills the process.
What the pool does with workers -- lending, deadlines, replacement -- lives in ``_pool``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections import OrderedDict, deque
from pathlib import Path

import attrs
import trio

from engine.sandbox._frames import Frame, FrameDecoder, FrameError, Ready, encode_frame

# The directory holding the ``engine`` package: workers must import the same code as the
# parent even when it runs from a checkout that is not installed.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


@attrs.frozen
class WorkerLimits:
    memory_limit_bytes: int
    stack_limit_bytes: int
    address_space_bytes: int
    context_cache_size: int


class WorkerGone(Exception):
    """The worker's pipe closed: it exited or was killed."""


class WorkerProcess:
    """The parent's handle on one worker process."""

    def __init__(self, process: trio.Process, cache_size: int) -> None:
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        self._stdin = process.stdin
        self._stdout = process.stdout
        self._decoder = FrameDecoder()
        self._pending: deque[Frame] = deque()
        self.dead = False
        self.idle = False  # queued in the pool's idle channel
        self.busy_since: float | None = None  # trio time the current invocation started
        self.niced = False  # running at low CPU priority (see _deprioritize_long_runs)
        self.retired = False  # stopped on purpose, not crashed
        # Versions this worker has been sent, mirroring its LRU so the source is sent rarely.
        self.known: OrderedDict[str, None] = OrderedDict()
        self.cache_size = cache_size

    @property
    def pid(self) -> int:
        return self.process.pid

    async def send(self, frame: Frame) -> None:
        try:
            await self._stdin.send_all(encode_frame(frame))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise WorkerGone(f"worker {self.pid} stopped reading") from exc

    async def receive(self) -> Frame:
        while not self._pending:
            try:
                chunk = await self._stdout.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise WorkerGone(f"worker {self.pid} pipe broke") from exc
            if not chunk:
                raise WorkerGone(f"worker {self.pid} exited")
            try:
                self._pending.extend(self._decoder.feed(bytes(chunk)))
            except FrameError as exc:
                self.kill()
                raise WorkerGone(f"worker {self.pid} sent garbage: {exc}") from exc
        return self._pending.popleft()

    async def close_input(self) -> None:
        await self._stdin.aclose()

    def remember(self, script_key: str) -> None:
        self.known[script_key] = None
        self.known.move_to_end(script_key)
        while len(self.known) > self.cache_size:
            self.known.popitem(last=False)

    def kill(self) -> None:
        self.dead = True
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()


def worker_command(limits: WorkerLimits, *, python: str = sys.executable) -> list[str]:
    return [
        python,
        "-m",
        "engine.sandbox._worker",
        "--parent-pid",
        str(os.getpid()),
        "--memory-limit",
        str(limits.memory_limit_bytes),
        "--stack-limit",
        str(limits.stack_limit_bytes),
        "--address-space",
        str(limits.address_space_bytes),
        "--cache-size",
        str(limits.context_cache_size),
    ]


async def start_worker(
    limits: WorkerLimits, *, python: str = sys.executable, start_timeout_s: float = 20.0
) -> WorkerProcess:
    """Launch a worker and wait for its greeting; kills it again if the greeting fails."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
    process = await trio.lowlevel.open_process(
        worker_command(limits, python=python),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    worker = WorkerProcess(process, limits.context_cache_size)
    try:
        with trio.fail_after(start_timeout_s):
            frame = await worker.receive()
        if not isinstance(frame, Ready):
            raise WorkerGone(f"worker {worker.pid} greeted with {type(frame).__name__}")
    except BaseException:
        worker.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
        raise
    return worker
