"""One sandbox worker process as the parent sees it: a pipe pair speaking frames.

:func:`start_worker` launches ``python -m engine.sandbox._worker`` with its limits and waits for
its ``Ready`` frame; :class:`WorkerProcess` sends and receives frames and kills the process.
What the pool does with workers -- lending, deadlines, replacement -- lives in ``_pool``.
"""

from __future__ import annotations

import array
import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
from collections import OrderedDict, deque
from pathlib import Path
from typing import Protocol

import attrs
import trio

from engine.sandbox._frames import Frame, FrameDecoder, FrameError, Ready, encode_frame

# The directory holding the ``engine`` package: workers must import the same code as the
# parent even when it runs from a checkout that is not installed.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_PID = struct.Struct("!q")  # the zygote's answer: the forked worker's pid, or -1


class ChildProcess(Protocol):
    """What the pool needs of a worker's process, however it was started."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def kill(self) -> None: ...

    async def wait(self) -> object: ...


class ForkedChild:
    """A worker forked by the zygote: not our child, so it is watched through a pidfd."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._pidfd: int | None = os.pidfd_open(pid)
        self._exited = False

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        # The exit status belongs to the zygote (its parent); we only know that it exited.
        return -1 if self._exited else None

    def kill(self) -> None:
        if self._pidfd is not None and not self._exited:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    async def wait(self) -> object:
        if self._pidfd is not None:
            await trio.lowlevel.wait_readable(self._pidfd)
            self._exited = True
            fd, self._pidfd = self._pidfd, None
            os.close(fd)
        return self.returncode


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

    def __init__(
        self,
        process: ChildProcess,
        cache_size: int,
        stdin: trio.abc.SendStream,
        stdout: trio.abc.ReceiveStream,
    ) -> None:
        self.process = process
        self._stdin = stdin
        self._stdout = stdout
        self._decoder = FrameDecoder()
        self._pending: deque[Frame] = deque()
        self.dead = False
        self.idle = False  # queued in the pool's idle channel
        self.busy_since: float | None = None  # trio time the current invocation started
        self.niced = False  # running at low CPU priority (see _deprioritize_long_runs)
        self.retired = False  # stopped on purpose, not crashed
        self.burst = False  # a temporary worker for one nested invocation
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


def worker_command(
    limits: WorkerLimits, *, python: str = sys.executable, module: str = "engine.sandbox._worker"
) -> list[str]:
    return [
        python,
        "-m",
        module,
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


def worker_environment() -> dict[str, str]:
    """The environment of sandbox processes: the engine's, without its own settings.

    Workers get their limits as arguments and need no configuration; leaving out every
    ``AIWEBENGINE_*`` variable keeps the admin token and the secret encryption key out of a
    process that runs untrusted code, should a script ever escape the interpreter.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIWEBENGINE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
    return env


async def start_worker(
    limits: WorkerLimits, *, python: str = sys.executable, start_timeout_s: float = 20.0
) -> WorkerProcess:
    """Launch a worker and wait for its greeting; kills it again if the greeting fails."""
    env = worker_environment()
    process = await trio.lowlevel.open_process(
        worker_command(limits, python=python),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None
    worker = WorkerProcess(process, limits.context_cache_size, process.stdin, process.stdout)
    return await _greeted(worker, start_timeout_s)


async def _greeted(worker: WorkerProcess, start_timeout_s: float) -> WorkerProcess:
    """Wait for the worker's ``Ready``; kill it (and reap it) if it does not come."""
    try:
        with trio.fail_after(start_timeout_s):
            frame = await worker.receive()
        if not isinstance(frame, Ready):
            raise WorkerGone(f"worker {worker.pid} greeted with {type(frame).__name__}")
    except BaseException:
        worker.kill()
        with trio.CancelScope(shield=True):
            await worker.process.wait()
        raise
    return worker


class Zygote:
    """The parent's side of the worker factory (see ``_zygote``).

    ``spawn`` asks for a forked worker; :class:`ZygoteUnavailable` means the factory is gone
    and the caller should start a worker the slow way.
    """

    def __init__(self, process: trio.Process, sock: trio.socket.SocketType) -> None:
        self._process = process
        self._sock = sock
        self._lock = trio.Lock()
        self.alive = True

    @classmethod
    async def start(cls, limits: WorkerLimits, *, python: str = sys.executable) -> Zygote:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            env = worker_environment()
            command = worker_command(limits, python=python, module="engine.sandbox._zygote")
            process = await trio.lowlevel.open_process(
                [*command, "--socket-fd", str(child_end.fileno())],
                pass_fds=(child_end.fileno(),),
                env=env,
            )
        finally:
            child_end.close()
        return cls(process, trio.socket.from_stdlib_socket(parent_end))

    async def spawn(self, cache_size: int, start_timeout_s: float) -> WorkerProcess:
        worker_in, to_worker = os.pipe()
        from_worker, worker_out = os.pipe()
        try:
            async with self._lock:
                try:
                    with trio.fail_after(start_timeout_s):
                        await self._sock.sendmsg(
                            [b"spawn"],
                            [
                                (
                                    socket.SOL_SOCKET,
                                    socket.SCM_RIGHTS,
                                    array.array("i", [worker_in, worker_out]),
                                )
                            ],
                        )
                        reply = await self._receive_exactly(_PID.size)
                except (OSError, trio.TooSlowError, EOFError) as exc:
                    self.alive = False
                    raise ZygoteUnavailable(str(exc)) from exc
        except BaseException:
            for fd in (to_worker, from_worker):
                os.close(fd)
            raise
        finally:
            os.close(worker_in)
            os.close(worker_out)
        (pid,) = _PID.unpack(reply)
        if pid <= 0:
            for fd in (to_worker, from_worker):
                os.close(fd)
            raise ZygoteUnavailable("the zygote refused to fork")
        worker = WorkerProcess(
            ForkedChild(pid),
            cache_size,
            trio.lowlevel.FdStream(to_worker),
            trio.lowlevel.FdStream(from_worker),
        )
        return await _greeted(worker, start_timeout_s)

    async def _receive_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = await self._sock.recv(size - len(data))
            if not chunk:
                raise EOFError("the zygote closed its socket")
            data += chunk
        return data

    async def aclose(self) -> None:
        self.alive = False
        self._sock.close()
        with trio.move_on_after(2):
            await self._process.wait()
        if self._process.returncode is None:
            self._process.kill()
            with trio.CancelScope(shield=True):
                await self._process.wait()


class ZygoteUnavailable(Exception):
    """The worker factory cannot fork any more; start workers directly."""
