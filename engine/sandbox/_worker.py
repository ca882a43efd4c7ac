"""The sandbox worker process: QuickJS contexts serving one invocation at a time.

Run as ``python -m engine.sandbox._worker``; it speaks frames (see ``_frames``) on stdin/stdout
and is supervised by :class:`engine.sandbox.SandboxPool`.  The worker does not enforce
deadlines: a runaway script is stopped by the parent killing this process, because QuickJS's own
time limit cannot be combined with host calls and a thread cannot be killed.  What the worker
does enforce is memory: each context has a QuickJS memory limit and a stack limit, and the
process has an address-space limit so a leak in native code ends here, not in the server.

Contexts are cached per script version (least recently used evicted).  Globals therefore
survive between invocations of one version in one worker -- documented for script authors.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import threading
import time
from collections import OrderedDict
from importlib import resources
from typing import Any

import quickjs

from engine.sandbox._frames import (
    Failure,
    FailureKind,
    Frame,
    FrameDecoder,
    FrameError,
    HostCall,
    HostReply,
    Invoke,
    Log,
    NeedSource,
    Ready,
    Result,
    encode_frame,
)

_NO_HANDLER_MARK = "__aiwe_no_handler__:"
_MAX_MESSAGE_CHARS = 4000
_WATCHDOG_INTERVAL_S = 0.2
# Allocating a large array past the limit makes QuickJS throw `null` rather than an
# "out of memory" error; an allocator this close to its limit is taken to have run out.
_EXHAUSTED_FRACTION = 0.95
# How deep a value from JavaScript (host call arguments, a handler's result) may nest.  The
# parent decodes every frame with Python's recursive JSON decoder under its own call stack; a
# value deep enough to make it give up would be a protocol error there and cost the worker, so
# it is refused here instead, as the script's own error.
MAX_VALUE_DEPTH = 256


class ProtocolViolation(Exception):
    """The parent sent something out of order; the only safe answer is to exit."""


class FrameChannel:
    """Blocking frame I/O on two file descriptors."""

    def __init__(self, fd_in: int, fd_out: int) -> None:
        self._fd_in = fd_in
        self._fd_out = fd_out
        self._decoder = FrameDecoder()
        self._pending: list[Frame] = []

    def send(self, frame: Frame) -> None:
        data = encode_frame(frame)
        view = memoryview(data)
        while view:
            written = os.write(self._fd_out, view)
            view = view[written:]

    def receive(self) -> Frame | None:
        """The next frame, or ``None`` when the parent closed the pipe."""
        while not self._pending:
            chunk = os.read(self._fd_in, 1 << 16)
            if not chunk:
                return None
            self._pending.extend(self._decoder.feed(chunk))
        return self._pending.pop(0)


def _trim(message: str) -> str:
    # The last stack frame is always the prelude's entry point; it means nothing to authors.
    lines = [line for line in message.rstrip().split("\n") if not line.startswith("    at value (")]
    message = "\n".join(lines)
    if len(message) > _MAX_MESSAGE_CHARS:
        return message[:_MAX_MESSAGE_CHARS] + "…"
    return message


class ScriptContext:
    """One QuickJS context holding one evaluated script version."""

    def __init__(self, worker: Worker, source: str) -> None:
        self.context = quickjs.Context()
        self.context.set_memory_limit(worker.memory_limit)
        self.context.set_max_stack_size(worker.stack_limit)
        # Host callables must never raise: an exception escaping a callable leaves QuickJS in a
        # state where the *next* eval fails.  They always return a value.
        self.context.add_callable("__aiwe_host", worker.host_call)
        self.context.add_callable("__aiwe_log", worker.log)
        worker._evaluating = self.context
        self.context.eval(worker.prelude)
        mark_top_level = self.context.get("__aiwe_top_level")
        mark_top_level(True)
        try:
            self.context.eval(source)
        finally:
            mark_top_level(False)
        self.invoke = self.context.get("__aiwe_invoke")


class Worker:
    def __init__(
        self, channel: FrameChannel, *, memory_limit: int, stack_limit: int, cache_size: int
    ) -> None:
        self.channel = channel
        self.memory_limit = memory_limit
        self.stack_limit = stack_limit
        self.cache_size = cache_size
        self.prelude = resources.files("engine.sandbox").joinpath("prelude.js").read_text("utf-8")
        self._contexts: OrderedDict[str, ScriptContext] = OrderedDict()
        self._invocation_id: str | None = None
        self._evaluating: Any = None  # the context whose script is being evaluated, if any
        self._next_call_id = 0

    # -- host bridges (called from inside JavaScript) -------------------------------------

    def host_call(self, name: str, args_json: str) -> str:
        if self._invocation_id is None:
            return json.dumps({"ok": False, "error": f"{name}: no invocation is running"})
        try:
            args = from_js(args_json, list)
        except ValueError as exc:
            return json.dumps({"ok": False, "error": f"{name}: invalid arguments: {exc}"})
        self._next_call_id += 1
        call_id = self._next_call_id
        try:
            self.channel.send(HostCall(self._invocation_id, call_id, str(name), args))
            reply = self.channel.receive()
        except (ValueError, FrameError, OSError) as exc:
            return json.dumps({"ok": False, "error": f"{name}: host call failed: {exc}"})
        if not isinstance(reply, HostReply) or reply.call_id != call_id:
            # Nothing sensible can follow; the parent kills us when it sees the exit.
            os._exit(3)
        if reply.ok:
            return json.dumps({"ok": True, "value": reply.value})
        return json.dumps({"ok": False, "error": reply.error or f"{name} failed"})

    def log(self, level: Any, message: Any) -> None:
        if self._invocation_id is None:
            return
        try:
            text = from_js(message, str)  # the prelude sends the line as a JSON string
        except ValueError:
            text = str(message)
        line = Log(self._invocation_id, str(level), text, int(time.time() * 1000))
        try:
            self.channel.send(line)
        except FrameError:
            # Only a raised memory limit lets one line outgrow a frame; its start is kept.
            cut = f"{text[:_MAX_MESSAGE_CHARS]}… (a line of {len(text)} characters, cut)"
            self.channel.send(Log(line.invocation_id, line.level, cut, line.timestamp_ms))

    # -- invocations ---------------------------------------------------------------------

    def serve(self) -> None:
        self.channel.send(Ready(os.getpid()))
        while True:
            frame = self.channel.receive()
            if frame is None:
                return
            if not isinstance(frame, Invoke):
                raise ProtocolViolation(f"expected Invoke, got {type(frame).__name__}")
            result = self.run(frame)
            try:
                self.channel.send(result)
            except FrameError as exc:
                # A result past the frame limit (possible only with a raised memory limit) is
                # the script's failure, not a reason to lose the worker.
                message = f"the result cannot be passed to the engine: {exc}"
                self.channel.send(
                    Result(frame.invocation_id, failure=Failure("exception", message))
                )

    def run(self, invoke: Invoke) -> Result | NeedSource:
        started = time.perf_counter()
        context = None if invoke.phase == "init" else self._contexts.get(invoke.script_key)
        if context is None:
            if invoke.source is None:
                return NeedSource(invoke.invocation_id)
            self._contexts.pop(invoke.script_key, None)
            try:
                self._invocation_id = invoke.invocation_id
                context = ScriptContext(self, invoke.source)
            except quickjs.JSException as exc:
                return self._failure(invoke, started, exc, evaluating=True)
            finally:
                self._invocation_id = None
                self._evaluating = None
            self._contexts[invoke.script_key] = context
            while len(self._contexts) > self.cache_size:
                self._contexts.popitem(last=False)
        else:
            self._contexts.move_to_end(invoke.script_key)

        self._invocation_id = invoke.invocation_id
        try:
            raw = context.invoke(invoke.handler, json.dumps(invoke.context), invoke.phase)
            value = from_js(raw, dict)
        except quickjs.JSException as exc:
            return self._failure(invoke, started, exc, evaluating=False)
        except ValueError as exc:
            failure = Failure("exception", f"the result cannot be passed to the engine: {exc}")
            return Result(invoke.invocation_id, failure=failure, duration_ms=_elapsed_ms(started))
        finally:
            self._invocation_id = None
        return Result(invoke.invocation_id, value=value, duration_ms=_elapsed_ms(started))

    def _exhausted(self, script_key: str) -> bool:
        script = self._contexts.get(script_key)
        context = script.context if script is not None else self._evaluating
        return context is not None and _near_limit(context)

    def _failure(
        self, invoke: Invoke, started: float, exc: Exception, *, evaluating: bool
    ) -> Result:
        message = str(exc)
        first_line = message.split("\n", 1)[0]
        kind: FailureKind
        if isinstance(exc, quickjs.StackOverflow):
            kind = "stack_overflow"
            message = first_line
        elif "out of memory" in first_line or self._exhausted(invoke.script_key):
            kind = "out_of_memory"
        elif first_line == "null":
            # When even the "out of memory" error object cannot be allocated QuickJS throws
            # null, and by the time we look the garbage is already freed.  A script that throws
            # null on purpose is reported the same way; it is rare and the advice still holds.
            kind = "out_of_memory"
            message = "null thrown (QuickJS throws null when an allocation fails)"
        elif first_line.startswith("Error: " + _NO_HANDLER_MARK):
            kind = "no_handler"
            message = first_line[len("Error: " + _NO_HANDLER_MARK) :]
        elif evaluating:
            kind = "eval"
        else:
            kind = "exception"
        if kind in ("out_of_memory", "stack_overflow") or evaluating:
            # A context that ran out of memory may still hold the garbage; never reuse it.
            self._contexts.pop(invoke.script_key, None)
        return Result(
            invoke.invocation_id,
            failure=Failure(kind, _trim(message)),
            duration_ms=_elapsed_ms(started),
        )


def from_js(text: Any, expected: type[Any]) -> Any:
    """The value of JSON text the prelude produced; ``ValueError`` if it is not JSON text of the
    ``expected`` type nesting at most ``MAX_VALUE_DEPTH`` levels.  A script can replace
    ``JSON.stringify`` and the prelude calls whatever is there, so nothing is taken on trust; an
    exception escaping a host callable would break the context for good."""
    if not isinstance(text, str):
        raise ValueError("not JSON text (JSON.stringify was replaced?)")
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"nested more than {MAX_VALUE_DEPTH} levels deep") from None
    if not isinstance(value, expected):
        raise ValueError(f"not {_JSON_KINDS[expected]} (JSON.stringify was replaced?)")
    # Only a text with more brackets than the limit can nest deeper than it.
    brackets = text.count("[") + text.count("{")
    if brackets > MAX_VALUE_DEPTH and _deeper_than(value, MAX_VALUE_DEPTH):
        raise ValueError(f"nested more than {MAX_VALUE_DEPTH} levels deep")
    return value


_JSON_KINDS: dict[type[Any], str] = {
    list: "a JSON array",
    dict: "a JSON object",
    str: "a JSON string",
}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` (decoded JSON) nests more than ``limit`` containers deep."""
    if type(value) is not dict and type(value) is not list:
        return False
    level = [value]
    for _ in range(limit):
        below: list[Any] = []
        add = below.append
        for item in level:
            for child in item.values() if type(item) is dict else item:
                if type(child) is dict or type(child) is list:
                    add(child)
        if not below:
            return False
        level = below
    return True


def _near_limit(context: Any) -> bool:
    stats = context.memory()
    limit = stats.get("malloc_limit") or 0
    return bool(limit) and stats.get("malloc_size", 0) >= _EXHAUSTED_FRACTION * limit


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _die_with_parent(parent_pid: int) -> None:
    """Exit as soon as the parent is gone, so no worker is ever orphaned.

    An idle worker notices on its own (its stdin reaches end-of-file); a busy one is inside
    QuickJS, so a watchdog thread checks the parent's pid.  ``PR_SET_PDEATHSIG`` is not used:
    it fires when the *thread* that forked us exits, and the parent starts workers from
    short-lived threads.
    """
    if os.getppid() != parent_pid:
        os._exit(0)

    def watch() -> None:
        while True:
            time.sleep(_WATCHDOG_INTERVAL_S)
            if os.getppid() != parent_pid:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aiwebengine-sandbox-worker")
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--memory-limit", type=int, required=True)
    parser.add_argument("--stack-limit", type=int, required=True)
    parser.add_argument("--address-space", type=int, required=True)
    parser.add_argument("--cache-size", type=int, required=True)
    return parser.parse_args(argv)


def ignore_group_signals() -> None:
    """Ctrl-C and service managers signal the whole process group; the engine decides when
    sandbox processes stop (and they go when it goes), so a signal must not cut short a
    request being drained."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def run_worker(args: argparse.Namespace, fd_in: int, fd_out: int) -> int:
    """Serve frames on ``fd_in``/``fd_out`` until the parent closes the pipe; the exit status."""
    _die_with_parent(args.parent_pid)
    ignore_group_signals()
    resource.setrlimit(resource.RLIMIT_AS, (args.address_space, args.address_space))
    channel = FrameChannel(fd_in, fd_out)
    worker = Worker(
        channel,
        memory_limit=args.memory_limit,
        stack_limit=args.stack_limit,
        cache_size=args.cache_size,
    )
    try:
        worker.serve()
    except (FrameError, ProtocolViolation, BrokenPipeError) as exc:
        print(f"sandbox worker {os.getpid()}: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    fd_in, fd_out = os.dup(0), os.dup(1)
    # Nothing but frames may reach the parent's pipe: stray prints go to stderr.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.exit(run_worker(args, fd_in, fd_out))


if __name__ == "__main__":
    main()
