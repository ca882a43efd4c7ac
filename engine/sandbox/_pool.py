"""The supervised pool of sandbox worker processes.

Every invocation borrows one idle worker, talks frames with it under a cancel scope carrying the
script's deadline, and gives it back.  When the deadline passes the worker is SIGKILLed -- not
cancelled, because a QuickJS loop never yields -- and a warm spare takes its place at once while
a new spare starts in the background.  A worker that dies on its own (segfault, kernel OOM
killer, ``kill -9`` from an operator) is detected by its monitor task and replaced the same way;
a caller that was using it gets :class:`ScriptCrashed`.

A per-script circuit breaker counts timeouts, crashes and memory exhaustion: a script that keeps
killing workers is refused for a cool-down instead of starving everybody else.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import structlog
import trio

from engine.breaker import BreakerState, CircuitBreaker
from engine.errors import (
    HostCallError,
    Overloaded,
    ScriptCircuitOpen,
    ScriptCrashed,
    ScriptFailed,
    ScriptTimeout,
)
from engine.sandbox._frames import (
    HostCall,
    HostReply,
    InvocationPhase,
    Invoke,
    Log,
    NeedSource,
    Result,
)
from engine.sandbox._process import (
    WorkerGone,
    WorkerLimits,
    WorkerProcess,
    Zygote,
    ZygoteUnavailable,
    start_worker,
)

log = structlog.get_logger("aiwebengine.sandbox")


class InvocationHost(Protocol):
    """What the parent offers one invocation: host API calls and a log sink."""

    async def call(self, name: str, args: list[Any]) -> Any:
        """Answer a host call; raise :class:`HostCallError` to make JavaScript throw."""

    def log(self, level: str, message: str, timestamp_ms: int) -> None:
        """Record a console line written by the invocation."""

    async def finish(self, error: BaseException | None) -> None:
        """The invocation is over (``error`` says how it failed, if it did).

        Called from the pool's own task even when the caller stopped waiting, so what the
        invocation did after its caller left (log lines, its failure) is not lost.
        """


@attrs.frozen
class PoolSettings:
    size: int = 2
    warm_spares: int = 1
    memory_limit_bytes: int = 64 * 1024 * 1024
    stack_limit_bytes: int = 1024 * 1024
    address_space_bytes: int = 2 * 1024 * 1024 * 1024
    context_cache_size: int = 32
    queue_limit: int = 256
    breaker_failure_threshold: int = 5
    breaker_window_s: float = 30.0
    breaker_cooldown_s: float = 30.0
    worker_start_timeout_s: float = 20.0
    # An invocation still running after this long is moved to a low CPU priority so that
    # short handlers keep their latency next to a runaway (0 disables).
    deprioritize_after_ms: int = 200
    low_priority_nice: int = 10
    # Fork workers from a pre-started factory process instead of starting Python each time.
    use_zygote: bool = True
    # Temporary workers for nested invocations when none is idle (see _start_burst_worker).
    max_burst_workers: int = 8


@attrs.frozen
class Invocation:
    invocation_id: str
    script_uri: str
    script_key: str
    source: str
    handler: str
    phase: InvocationPhase
    context: dict[str, Any]
    timeout_ms: int
    host: InvocationHost
    # Started from a host call of another invocation that holds a worker while it waits (a
    # dispatched message's listener): it may not queue behind its own caller.
    nested: bool = False


@attrs.frozen
class InvocationResult:
    value: dict[str, Any]
    duration_ms: float


@attrs.frozen
class PoolStats:
    size: int
    live: int
    idle: int
    busy: int
    spares: int
    waiting: int
    starting: int
    restarts: int
    open_breakers: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return self.live >= self.size


class _Outcome:
    """Where an invocation's task leaves its result for the caller waiting on ``done``."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self._result: InvocationResult | None = None
        self._error: BaseException | None = None

    def succeed(self, result: InvocationResult) -> None:
        self._result = result
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self.done.set()

    @property
    def error(self) -> BaseException | None:
        return self._error

    def unwrap(self) -> InvocationResult:
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


class SandboxPool:
    """Owns the worker processes; ``run`` must be started in a nursery before ``invoke``."""

    def __init__(
        self,
        settings: PoolSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        python: str = sys.executable,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._python = python
        self._nursery: trio.Nursery | None = None
        self._idle_send, self._idle_receive = trio.open_memory_channel[WorkerProcess](float("inf"))
        self._live: set[WorkerProcess] = set()
        self._busy: set[WorkerProcess] = set()
        self._spares: list[WorkerProcess] = []
        self._idle_count = 0
        self._waiting = 0
        self._starting = 0
        self._restarts = 0
        self._closing = False
        self._breakers: dict[str, CircuitBreaker] = {}
        self._zygote: Zygote | None = None
        self._bursting = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the workers, report ready, and supervise them until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._start_zygote()
                wanted = self.settings.size + self.settings.warm_spares
                async with trio.open_nursery() as starters:
                    for index in range(wanted):
                        starters.start_soon(self._add_worker, index >= self.settings.size)
                log.info("sandbox pool ready", workers=self.settings.size, spares=len(self._spares))
                if self.settings.deprioritize_after_ms > 0:
                    nursery.start_soon(self._deprioritize_long_runs)
                task_status.started()
                await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await self._kill_all()
                if self._zygote is not None:
                    await self._zygote.aclose()

    async def _deprioritize_long_runs(self) -> None:
        """Lower the CPU priority of workers stuck in one invocation.

        A runaway burns a CPU until its deadline.  On a small machine a handful of them would
        otherwise take the CPU from every short handler (and from this process); at a high
        nice value under the SCHED_IDLE policy the kernel gives them only what the others
        leave.  The worker gets its
        priority back when the invocation ends (see :meth:`_restore_priority`).
        """
        threshold = self.settings.deprioritize_after_ms / 1000
        tick = min(0.05, threshold / 2)
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            for worker in list(self._busy):
                if worker.niced or worker.busy_since is None or worker.dead:
                    continue
                if now - worker.busy_since >= threshold:
                    try:
                        os.setpriority(os.PRIO_PROCESS, worker.pid, self.settings.low_priority_nice)
                    except OSError:
                        continue  # already gone; its monitor deals with it
                    worker.niced = True
                    # SCHED_IDLE: run only on CPU nobody else wants.  A nice value alone still
                    # lets a spinner take turns with the server process on a small machine.
                    with contextlib.suppress(OSError):
                        os.sched_setscheduler(worker.pid, os.SCHED_IDLE, os.sched_param(0))

    def _restore_priority(self, worker: WorkerProcess) -> bool:
        """Put a deprioritized worker back at normal priority; False if not permitted.

        Raising a priority again needs CAP_SYS_NICE; without it the worker is retired and
        replaced instead (a fork from the worker factory, only after a long invocation).
        """
        try:
            os.sched_setscheduler(worker.pid, os.SCHED_OTHER, os.sched_param(0))
            os.setpriority(os.PRIO_PROCESS, worker.pid, 0)
        except PermissionError:
            return False
        except OSError:
            return True  # gone already: nothing to restore, its monitor replaces it
        worker.niced = False
        return True

    async def _kill_all(self) -> None:
        """Stop every worker: close its pipe so it exits by itself (flushing what it has to),
        and SIGKILL whatever is still alive after a short grace."""
        self._closing = True
        workers = list(self._live)
        for worker in workers:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await worker.close_input()
        with trio.move_on_after(2):
            for worker in workers:
                await worker.process.wait()
        for worker in workers:
            worker.kill()
        with trio.move_on_after(5):
            for worker in workers:
                await worker.process.wait()
                self._live.discard(worker)

    def _limits(self) -> WorkerLimits:
        s = self.settings
        return WorkerLimits(
            memory_limit_bytes=s.memory_limit_bytes,
            stack_limit_bytes=s.stack_limit_bytes,
            address_space_bytes=s.address_space_bytes,
            context_cache_size=s.context_cache_size,
        )

    async def _start_zygote(self) -> None:
        if not self.settings.use_zygote:
            return
        try:
            self._zygote = await Zygote.start(self._limits(), python=self._python)
        except OSError as exc:
            log.warning(
                "sandbox worker factory unavailable; starting workers directly", error=str(exc)
            )

    async def _start_worker(self) -> WorkerProcess:
        s = self.settings
        zygote = self._zygote
        if zygote is not None and zygote.alive:
            try:
                return await zygote.spawn(s.context_cache_size, s.worker_start_timeout_s)
            except ZygoteUnavailable as exc:
                log.warning(
                    "sandbox worker factory failed; starting workers directly", error=str(exc)
                )
        return await start_worker(
            self._limits(), python=self._python, start_timeout_s=s.worker_start_timeout_s
        )

    async def _add_worker(self, as_spare: bool) -> None:
        """Start one worker (retrying with back-off) and put it in service or on the bench."""
        assert self._nursery is not None
        self._starting += 1
        try:
            delay = 0.1
            while True:
                try:
                    worker = await self._start_worker()
                    break
                except (OSError, WorkerGone, trio.TooSlowError) as exc:
                    log.error("sandbox worker failed to start", error=str(exc), retry_in_s=delay)
                    await trio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            self._starting -= 1
        self._live.add(worker)
        self._nursery.start_soon(self._monitor, worker)
        if as_spare:
            self._spares.append(worker)
        else:
            self._release(worker)

    async def _monitor(self, worker: WorkerProcess) -> None:
        await worker.process.wait()
        worker.dead = True
        self._leave_idle(worker)
        self._live.discard(worker)
        if worker.burst:
            self._bursting -= 1
            return  # a temporary worker: nothing to replace
        if worker in self._spares:
            self._spares.remove(worker)
            replace_in_service = False
        else:
            replace_in_service = True
        if self._closing:
            return
        if worker.retired:
            log.debug("sandbox worker retired", pid=worker.pid)
        else:
            self._restarts += 1
            log.warning(
                "sandbox worker exited", pid=worker.pid, returncode=worker.process.returncode
            )
        assert self._nursery is not None
        if replace_in_service and self._spares:
            # The warm spare steps in at once; a new spare starts in the background.
            self._release(self._spares.pop())
            self._nursery.start_soon(self._add_worker, True)
        else:
            self._nursery.start_soon(self._add_worker, not replace_in_service)

    def _release(self, worker: WorkerProcess) -> None:
        if worker.dead:
            return
        if worker.burst:
            worker.retired = True
            worker.kill()
            return
        if worker.niced and not self._restore_priority(worker):
            worker.retired = True
            worker.kill()
            return
        worker.idle = True
        self._idle_count += 1
        self._idle_send.send_nowait(worker)

    def _leave_idle(self, worker: WorkerProcess) -> None:
        # Whoever clears the flag does the accounting, so a worker that dies while queued as
        # idle is counted out exactly once (by its monitor), not again when it is dequeued.
        if worker.idle:
            worker.idle = False
            self._idle_count -= 1

    async def _acquire(self, nested: bool = False) -> WorkerProcess:
        if self._closing:
            raise Overloaded("the engine is shutting down", retry_after_s=5)
        if nested:
            worker = self._take_idle_now()
            if worker is not None:
                return worker
            if self._bursting < self.settings.max_burst_workers:
                return await self._start_burst_worker()
        if self._idle_count == 0 and self._waiting >= self.settings.queue_limit:
            raise Overloaded("every sandbox worker is busy and the queue is full", retry_after_s=1)
        self._waiting += 1
        try:
            while True:
                worker = await self._idle_receive.receive()
                if not worker.dead:
                    self._leave_idle(worker)
                    return worker
        finally:
            self._waiting -= 1

    def _take_idle_now(self) -> WorkerProcess | None:
        while True:
            try:
                worker = self._idle_receive.receive_nowait()
            except trio.WouldBlock:
                return None
            if not worker.dead:
                self._leave_idle(worker)
                return worker

    async def _start_burst_worker(self) -> WorkerProcess:
        """A temporary worker for a nested invocation, so that a caller holding a worker
        never waits for a worker that only it could free (a deadlock the pool would only
        break by killing it at its deadline).  It is retired after the one invocation."""
        assert self._nursery is not None
        self._bursting += 1
        try:
            worker = await self._start_worker()
        except BaseException:
            self._bursting -= 1
            raise
        worker.burst = True
        self._live.add(worker)
        self._nursery.start_soon(self._monitor, worker)
        return worker

    # -- invocations ---------------------------------------------------------------------

    def breaker_for(self, script_uri: str) -> CircuitBreaker:
        breaker = self._breakers.get(script_uri)
        if breaker is None:
            s = self.settings
            breaker = CircuitBreaker(
                s.breaker_failure_threshold, s.breaker_window_s, s.breaker_cooldown_s, self._clock
            )
            self._breakers[script_uri] = breaker
        return breaker

    def forget_script(self, script_uri: str) -> None:
        """Drop the script's breaker: it was deleted, or a new version replaced the old."""
        self._breakers.pop(script_uri, None)

    async def invoke(self, invocation: Invocation) -> InvocationResult:
        """Run one handler; raises the ``engine.errors`` value describing any failure.

        The exchange with the worker runs in the pool's nursery, not in the caller's task: a
        caller that goes away (client disconnected, proxy timeout) stops waiting, but the
        handler finishes -- or hits its deadline -- and the worker is reused.  Killing it on
        every hang-up would let any client churn the pool for free.
        """
        breaker = self.breaker_for(invocation.script_uri)
        # init() is how a fix gets deployed, so it is never refused by the breaker (and its
        # outcome does not count): an operator must be able to replace a version that trips it.
        guarded = invocation.phase != "init"
        if guarded and not breaker.allow():
            raise ScriptCircuitOpen(
                f"script '{invocation.script_uri}' is failing repeatedly and is paused",
                retry_after_s=breaker.retry_after(),
            )
        try:
            worker = await self._acquire(invocation.nested)
        except BaseException:
            if guarded:
                breaker.release_probe()
            raise
        assert self._nursery is not None
        outcome = _Outcome()
        self._nursery.start_soon(self._run, worker, invocation, breaker, guarded, outcome)
        await outcome.done.wait()
        return outcome.unwrap()

    async def _run(
        self,
        worker: WorkerProcess,
        invocation: Invocation,
        breaker: CircuitBreaker,
        guarded: bool,
        outcome: _Outcome,
    ) -> None:
        await self._run_on_worker(worker, invocation, breaker, guarded, outcome)
        try:
            await invocation.host.finish(outcome.error)
        except Exception:
            # A host's bookkeeping must never take the pool down with it.
            log.exception("invocation host failed to finish", script=invocation.script_uri)

    async def _run_on_worker(
        self,
        worker: WorkerProcess,
        invocation: Invocation,
        breaker: CircuitBreaker,
        guarded: bool,
        outcome: _Outcome,
    ) -> None:
        verdict: bool | None = None
        self._busy.add(worker)
        worker.busy_since = trio.current_time()
        try:
            with trio.move_on_after(invocation.timeout_ms / 1000) as scope:
                result = await self._exchange(worker, invocation)
            if scope.cancelled_caught:
                verdict = False
                worker.kill()
                outcome.fail(ScriptTimeout(invocation.handler or "init", invocation.timeout_ms))
                return
            self._release(worker)
            failure = result.failure
            if failure is None:
                verdict = True
                assert result.value is not None
                outcome.succeed(InvocationResult(result.value, result.duration_ms))
                return
            verdict = failure.kind != "out_of_memory"
            details = self._describe_failure(invocation, failure.kind, failure.message)
            outcome.fail(ScriptFailed(details, kind=failure.kind))
        except WorkerGone as exc:
            verdict = False
            worker.kill()
            outcome.fail(
                ScriptCrashed(
                    f"the worker running handler '{invocation.handler}' of "
                    f"'{invocation.script_uri}' died: {exc}"
                )
            )
        except BaseException as exc:
            # Shutdown cancelled us, or a bug: the worker is mid-script in an unknown state.
            worker.kill()
            if isinstance(exc, trio.Cancelled):
                outcome.fail(Overloaded("the engine is shutting down", retry_after_s=5))
            else:
                log.exception("sandbox invocation failed", script=invocation.script_uri)
                outcome.fail(ScriptCrashed(f"internal error running '{invocation.handler}'"))
            if isinstance(exc, trio.Cancelled):
                raise
        finally:
            self._busy.discard(worker)
            worker.busy_since = None
            if not guarded:
                pass
            elif verdict is True:
                breaker.record_success()
            elif verdict is False:
                breaker.record_failure()
            else:
                breaker.release_probe()

    def _describe_failure(self, invocation: Invocation, kind: str, message: str) -> str:
        if kind == "no_handler":
            return f"no handler {message}"
        if kind == "eval":
            return f"owner eval: {message}"
        if kind == "out_of_memory":
            limit_mib = self.settings.memory_limit_bytes / (1024 * 1024)
            return (
                f"call handler: the script exceeded its memory limit of {limit_mib:g} MiB "
                f"(sandbox.memory_limit_bytes): {message}"
            )
        if kind == "stack_overflow":
            return f"call handler: {message} (stack limit {self.settings.stack_limit_bytes} bytes)"
        if invocation.phase == "init":
            return f"init: {message}"
        return f"call handler: {message}"

    async def _exchange(self, worker: WorkerProcess, invocation: Invocation) -> Result:
        send_source = invocation.phase == "init" or invocation.script_key not in worker.known
        await worker.send(self._invoke_frame(invocation, with_source=send_source))
        while True:
            frame = await worker.receive()
            if isinstance(frame, Result) and frame.invocation_id == invocation.invocation_id:
                worker.remember(invocation.script_key)
                return frame
            if isinstance(frame, Log) and frame.invocation_id == invocation.invocation_id:
                invocation.host.log(frame.level, frame.message, frame.timestamp_ms)
            elif isinstance(frame, HostCall) and frame.invocation_id == invocation.invocation_id:
                await worker.send(await self._answer(invocation, frame))
            elif isinstance(frame, NeedSource) and frame.invocation_id == invocation.invocation_id:
                await worker.send(self._invoke_frame(invocation, with_source=True))
            else:
                worker.kill()
                raise WorkerGone(f"worker {worker.pid} broke protocol with {type(frame).__name__}")

    @staticmethod
    def _invoke_frame(invocation: Invocation, *, with_source: bool) -> Invoke:
        return Invoke(
            invocation_id=invocation.invocation_id,
            script_key=invocation.script_key,
            script_uri=invocation.script_uri,
            handler=invocation.handler,
            phase=invocation.phase,
            context=invocation.context,
            source=invocation.source if with_source else None,
        )

    @staticmethod
    async def _answer(invocation: Invocation, call: HostCall) -> HostReply:
        try:
            value = await invocation.host.call(call.name, call.args)
        except HostCallError as exc:
            return HostReply(call.call_id, ok=False, error=str(exc))
        except Exception:
            log.exception("host call failed", name=call.name, script=invocation.script_uri)
            return HostReply(call.call_id, ok=False, error=f"{call.name}: internal error")
        return HostReply(call.call_id, ok=True, value=value)

    # -- introspection -------------------------------------------------------------------

    def stats(self) -> PoolStats:
        live_in_service = len(self._live) - len(self._spares) - self._bursting
        return PoolStats(
            size=self.settings.size,
            live=live_in_service,
            idle=self._idle_count,
            busy=len(self._busy),
            spares=len(self._spares),
            waiting=self._waiting,
            starting=self._starting,
            restarts=self._restarts,
            open_breakers=tuple(
                uri for uri, b in self._breakers.items() if b.state is not BreakerState.CLOSED
            ),
        )

    def worker_pids(self) -> list[int]:
        return sorted(w.pid for w in self._live)

    def busy_worker_pids(self) -> list[int]:
        return sorted(w.pid for w in self._busy)
