"""The sandbox pool driven directly: real worker processes, no HTTP.

Each test starts its own small ``SandboxPool`` in a nursery it owns and gives every invocation a
fake ``InvocationHost`` that records what the script asked of the parent.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from engine.breaker import BreakerState
from engine.errors import (
    HostCallError,
    Overloaded,
    ScriptCircuitOpen,
    ScriptCrashed,
    ScriptFailed,
    ScriptTimeout,
)
from engine.sandbox import (
    Invocation,
    InvocationResult,
    PoolSettings,
    PoolStats,
    SandboxPool,
    _process,
)
from engine.sandbox._frames import Frame, Invoke

MiB = 1024 * 1024
_ids = itertools.count(1)


@attrs.define
class FakeHost:
    """Answers ``routeRegistry.registerRoute`` (the host API scripts can reach) from a table."""

    answer: Callable[[list[Any]], Awaitable[Any]] | None = None
    calls: list[tuple[str, list[Any]]] = attrs.field(factory=list)
    lines: list[tuple[str, str, int]] = attrs.field(factory=list)
    finished: list[BaseException | None] = attrs.field(factory=list)

    async def call(self, name: str, args: list[Any]) -> Any:
        self.calls.append((name, args))
        if self.answer is None:
            return {"name": name, "args": args}
        return await self.answer(args)

    def log(self, level: str, message: str, timestamp_ms: int) -> None:
        self.lines.append((level, message, timestamp_ms))

    async def finish(self, error: BaseException | None) -> None:
        self.finished.append(error)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def running_pool(
    *, clock: Callable[[], float] = time.monotonic, **settings: Any
) -> AsyncIterator[SandboxPool]:
    values: dict[str, Any] = {"size": 1, "warm_spares": 0}
    values.update(settings)
    pool = SandboxPool(PoolSettings(**values), clock=clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        try:
            yield pool
        finally:
            nursery.cancel_scope.cancel()


def invocation(
    source: str,
    handler: str = "h",
    *,
    uri: str = "/s",
    phase: str = "handler",
    timeout_ms: int = 5000,
    context: dict[str, Any] | None = None,
    host: FakeHost | None = None,
) -> Invocation:
    key = f"{uri}#{hashlib.sha256(source.encode()).hexdigest()[:16]}"
    return Invocation(
        invocation_id=f"inv_{next(_ids)}",
        script_uri=uri,
        script_key=key,
        source=source,
        handler=handler,
        phase=phase,  # type: ignore[arg-type]
        context={"request": {"query": {}}} if context is None else context,
        timeout_ms=timeout_ms,
        host=FakeHost() if host is None else host,
    )


def text_of(result: InvocationResult) -> Any:
    assert result.value["type"] == "string", result.value
    return result.value["value"]


async def wait_until(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    """Poll ``predicate`` (the pool offers no events to wait on) until true or fail."""
    with trio.fail_after(within_s):
        while True:
            if predicate():
                return
            await trio.sleep(0.01)


def spy_on_sent_frames(monkeypatch: pytest.MonkeyPatch) -> list[Frame]:
    """Record every frame the parent sends to any worker."""
    sent: list[Frame] = []
    original = _process.WorkerProcess.send

    async def send(self: Any, frame: Frame) -> None:
        sent.append(frame)
        await original(self, frame)

    monkeypatch.setattr(_process.WorkerProcess, "send", send)
    return sent


GREETER = """
function h(ctx) { return "hello " + ctx.request.query.name; }
"""
RUNAWAY = "function h() { while (true) {} }"
HEALTHY = 'function h() { return "ok"; }'


def busy_for(ms: int) -> str:
    """A handler that keeps its worker busy (without yielding) for ``ms`` milliseconds."""
    return (
        f"function h() {{ var end = Date.now() + {ms}; while (Date.now() < end) {{}} return 'x'; }}"
    )


# ---------------------------------------------------------------------------------------------
# Normal invocations


async def test_a_handler_runs_and_its_result_comes_back_normalized() -> None:
    async with running_pool() as pool:
        result = await pool.invoke(
            invocation(GREETER, context={"request": {"query": {"name": "ada"}}})
        )
        assert result.value == {"type": "string", "value": "hello ada"}
        assert result.duration_ms >= 0
        response = await pool.invoke(
            invocation('function h() { return {status: 201, body: "made"}; }')
        )
        assert response.value["status"] == 201
        assert response.value["body"] == "made"


async def test_init_phase_reports_whether_an_init_function_ran() -> None:
    async with running_pool() as pool:
        with_init = await pool.invoke(
            invocation("var x = 0; function init() { x = 1; }", "init", phase="init")
        )
        assert with_init.value == {"type": "init", "ran": True}
        without = await pool.invoke(invocation("var x = 0;", "init", phase="init"))
        assert without.value == {"type": "init", "ran": False}


async def test_host_calls_are_answered_by_the_invocation_host() -> None:
    host = FakeHost()
    source = """
    function h() {
        var reply = routeRegistry.registerRoute("/p", "other", "POST", {tags: ["t"]});
        return JSON.stringify(reply);
    }
    """
    async with running_pool() as pool:
        result = await pool.invoke(invocation(source, host=host))
    expected_args = ["/p", "other", "POST", {"tags": ["t"]}]
    assert host.calls == [("routeRegistry.registerRoute", expected_args)]
    # The value went back into JavaScript intact.
    assert json.loads(text_of(result)) == {
        "name": "routeRegistry.registerRoute",
        "args": expected_args,
    }


async def test_a_refused_host_call_throws_in_javascript_with_the_hosts_message() -> None:
    async def refuse(args: list[Any]) -> Any:
        raise HostCallError(f"no route for {args[0]}")

    source = """
    function h() {
        try { routeRegistry.registerRoute("/nope", "x"); return "no throw"; }
        catch (e) { return "caught: " + e.message; }
    }
    """
    async with running_pool() as pool:
        result = await pool.invoke(invocation(source, host=FakeHost(answer=refuse)))
    assert text_of(result) == "caught: no route for /nope"


async def test_a_host_bug_reaches_javascript_as_an_internal_error_without_details() -> None:
    async def broken(args: list[Any]) -> Any:
        raise RuntimeError("secret database detail")

    source = """
    function h() {
        try { routeRegistry.registerRoute("/x", "y"); return "no throw"; }
        catch (e) { return e.message; }
    }
    """
    async with running_pool() as pool:
        result = await pool.invoke(invocation(source, host=FakeHost(answer=broken)))
    assert text_of(result) == "routeRegistry.registerRoute: internal error"


async def test_console_lines_reach_the_host_in_order_with_their_levels() -> None:
    host = FakeHost()
    source = """
    function h() {
        console.log("one", 2, {three: 3});
        console.warn("careful");
        console.error(new Error("bad"));
        writeLog("legacy");
        return "done";
    }
    """
    async with running_pool() as pool:
        await pool.invoke(invocation(source, host=host))
    levels = [level for level, _, _ in host.lines]
    messages = [message for _, message, _ in host.lines]
    assert levels == ["LOG", "WARN", "ERROR", "LOG"]
    assert messages[0] == 'one 2 {"three":3}'
    assert messages[1] == "careful"
    assert messages[2].startswith("Error: bad")
    assert messages[3] == "legacy"
    assert all(ts > 1_600_000_000_000 for _, _, ts in host.lines)


async def test_lines_logged_before_a_failure_are_still_delivered() -> None:
    host = FakeHost()
    source = 'function h() { console.info("before"); throw new Error("after"); }'
    async with running_pool() as pool:
        with pytest.raises(ScriptFailed):
            await pool.invoke(invocation(source, host=host))
    assert [(level, message) for level, message, _ in host.lines] == [("INFO", "before")]


async def test_globals_survive_between_invocations_of_one_loaded_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = spy_on_sent_frames(monkeypatch)
    counter = "var n = 0; function h() { n += 1; return String(n); }"
    async with running_pool() as pool:
        answers = [text_of(await pool.invoke(invocation(counter))) for _ in range(3)]
    assert answers == ["1", "2", "3"]
    invokes = [f for f in sent if isinstance(f, Invoke)]
    # The source travels once; afterwards the worker uses its cached context.
    assert [f.source is not None for f in invokes] == [True, False, False]


async def test_with_a_cache_of_one_alternating_scripts_are_reloaded_and_keep_answering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = spy_on_sent_frames(monkeypatch)
    first = 'var n = 0; function h() { n += 1; return "a" + n; }'
    second = 'var n = 0; function h() { n += 1; return "b" + n; }'
    async with running_pool(context_cache_size=1) as pool:
        answers = []
        for source in [first, second, first, second, first]:
            answers.append(text_of(await pool.invoke(invocation(source))))
    # Each call found its version evicted and evaluated it afresh: the counter restarts.
    assert answers == ["a1", "b1", "a1", "b1", "a1"]
    assert all(f.source is not None for f in sent if isinstance(f, Invoke))


async def test_a_version_the_worker_dropped_is_fetched_again_through_need_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = spy_on_sent_frames(monkeypatch)
    # A stack overflow makes the worker discard the context, which the parent cannot see: the
    # next invocation goes out without source, the worker answers NeedSource, the parent resends.
    source = """
    var n = 0;
    function h(ctx) {
        if (ctx.request.query.deep) { var r = function (k) { return r(k + 1) + 1; }; return r(0); }
        n += 1; return String(n);
    }
    """
    async with running_pool() as pool:
        assert text_of(await pool.invoke(invocation(source))) == "1"
        with pytest.raises(ScriptFailed):
            await pool.invoke(invocation(source, context={"request": {"query": {"deep": "1"}}}))
        before = len(sent)
        last = invocation(source)
        assert text_of(await pool.invoke(last)) == "1"  # a fresh context
    resent = [f for f in sent[before:] if isinstance(f, Invoke)]
    assert [(f.invocation_id, f.source is not None) for f in resent] == [
        (last.invocation_id, False),
        (last.invocation_id, True),
    ]


async def test_two_workers_run_two_invocations_at_the_same_time() -> None:
    slow = busy_for(300)
    async with running_pool(size=2) as pool:
        with trio.fail_after(10):
            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(pool.invoke, invocation(slow))
                await wait_until(lambda: pool.stats().busy == 2)
            elapsed = trio.current_time() - started
    assert elapsed < 0.6 + 0.5


# ---------------------------------------------------------------------------------------------
# Script failures that leave the worker usable


async def test_a_missing_handler_is_a_script_failure_naming_it() -> None:
    async with running_pool() as pool:
        with pytest.raises(ScriptFailed) as missing:
            await pool.invoke(invocation(HEALTHY, "absent"))
        with pytest.raises(ScriptFailed) as not_function:
            await pool.invoke(invocation("var notfn = 3;" + HEALTHY, "notfn"))
    assert missing.value.kind == "no_handler"
    assert missing.value.details == "no handler absent: not defined"
    assert not_function.value.kind == "no_handler"
    assert not_function.value.details == "no handler notfn: not a function"


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("function h( {", "SyntaxError"),
        ('throw new Error("top-level failure"); function h() {}', "top-level failure"),
    ],
    ids=["syntax", "top-level-throw"],
)
async def test_a_script_that_does_not_evaluate_is_an_eval_failure(
    source: str, fragment: str
) -> None:
    async with running_pool() as pool:
        with pytest.raises(ScriptFailed) as failed:
            await pool.invoke(invocation(source))
        assert failed.value.kind == "eval"
        assert failed.value.details is not None
        assert failed.value.details.startswith("owner eval: ")
        assert fragment in failed.value.details
        # A second try evaluates again and fails the same way (nothing half-loaded was kept).
        with pytest.raises(ScriptFailed) as again:
            await pool.invoke(invocation(source))
        assert again.value.kind == "eval"


async def test_a_thrown_error_is_a_script_failure_with_its_message() -> None:
    async with running_pool() as pool:
        with pytest.raises(ScriptFailed) as failed:
            await pool.invoke(invocation('function h() { throw new TypeError("nope"); }'))
        with pytest.raises(ScriptFailed) as in_init:
            await pool.invoke(
                invocation('function init() { throw new Error("bad init"); }', "init", phase="init")
            )
    assert failed.value.kind == "exception"
    assert failed.value.details is not None
    assert failed.value.details.startswith("call handler: TypeError: nope")
    assert in_init.value.details is not None
    assert in_init.value.details.startswith("init: Error: bad init")


async def test_a_stack_overflow_names_the_stack_limit_and_the_worker_keeps_serving() -> None:
    source = "function h() { function r(n) { return r(n + 1) + 1; } return r(0); }"
    async with running_pool(stack_limit_bytes=256 * 1024) as pool:
        pids = pool.worker_pids()
        with pytest.raises(ScriptFailed) as failed:
            await pool.invoke(invocation(source))
        assert failed.value.kind == "stack_overflow"
        assert failed.value.details is not None
        assert "stack overflow" in failed.value.details
        assert "stack limit 262144 bytes" in failed.value.details
        assert text_of(await pool.invoke(invocation(HEALTHY))) == "ok"
        assert pool.worker_pids() == pids
        assert pool.stats().restarts == 0


async def test_running_out_of_js_memory_names_the_limit_and_the_worker_keeps_serving() -> None:
    bomb = "function h() { var a = []; for (;;) a.push(new Array(1e5).fill(1)); }"
    async with running_pool(memory_limit_bytes=8 * MiB) as pool:
        pids = pool.worker_pids()
        with trio.fail_after(10):
            with pytest.raises(ScriptFailed) as failed:
                await pool.invoke(invocation(bomb))
        assert failed.value.kind == "out_of_memory"
        assert failed.value.details is not None
        assert "memory limit of 8 MiB" in failed.value.details
        assert "sandbox.memory_limit_bytes" in failed.value.details
        assert text_of(await pool.invoke(invocation(HEALTHY))) == "ok"
        # The same script is evaluated afresh (its context was discarded) and fails the same way.
        with pytest.raises(ScriptFailed) as again:
            await pool.invoke(invocation(bomb))
        assert again.value.kind == "out_of_memory"
        assert pool.worker_pids() == pids
        assert pool.stats().restarts == 0


async def test_a_sparse_array_memory_bomb_is_reported_as_out_of_memory() -> None:
    bomb = "function h() { var a = []; for (;;) a.push(new Array(1e6)); }"
    async with running_pool(memory_limit_bytes=8 * MiB) as pool:
        with pytest.raises(ScriptFailed) as failed:
            await pool.invoke(invocation(bomb))
    assert failed.value.kind == "out_of_memory"
    assert "memory limit of 8 MiB" in (failed.value.details or "")


async def test_a_result_with_a_lone_surrogate_does_not_crash_the_worker() -> None:
    async with running_pool() as pool:
        with suppress(ScriptFailed):
            await pool.invoke(invocation('function h() { return "a\\ud800b"; }'))
        assert pool.stats().restarts == 0


# ---------------------------------------------------------------------------------------------
# Failures that cost a worker


async def test_a_runaway_handler_times_out_and_its_worker_is_replaced() -> None:
    async with running_pool(warm_spares=1) as pool:
        before = pool.worker_pids()
        started = trio.current_time()
        with pytest.raises(ScriptTimeout) as timed_out:
            await pool.invoke(invocation(RUNAWAY, timeout_ms=300))
        assert trio.current_time() - started < 0.3 + 1.0
        assert timed_out.value.details == "Handler 'h' exceeded its 300ms budget and was stopped"
        # The spare steps in at once; a new spare is started in the background.
        assert text_of(await pool.invoke(invocation(HEALTHY))) == "ok"
        await wait_until(lambda: pool.stats().spares == 1)
        after = pool.worker_pids()
        assert len(after) == 2
        assert len(set(before) & set(after)) == 1
        assert pool.stats().restarts == 1


SLOW = "function h() { var t = Date.now(); while (Date.now() - t < 600) {} return 'done'; }"


async def test_a_caller_that_gives_up_leaves_the_handler_to_finish_on_its_worker() -> None:
    # A client hanging up must not cost a worker: the handler runs to its end, the worker is
    # reused, and nothing is held against the script.
    async with running_pool(breaker_failure_threshold=1) as pool:
        (pid,) = pool.worker_pids()
        with trio.move_on_after(0.2) as gave_up:
            await pool.invoke(invocation(SLOW, timeout_ms=10_000))
        assert gave_up.cancelled_caught
        assert pool.stats().busy == 1
        await wait_until(lambda: pool.stats().idle == 1)
        assert text_of(await pool.invoke(invocation(HEALTHY))) == "ok"
        assert pool.worker_pids() == [pid]
        assert pool.stats().restarts == 0
        assert pool.breaker_for("/s").state is BreakerState.CLOSED


async def test_an_abandoned_runaway_is_still_stopped_at_its_deadline() -> None:
    async with running_pool() as pool:
        (pid,) = pool.worker_pids()
        with trio.move_on_after(0.1):
            await pool.invoke(invocation(RUNAWAY, timeout_ms=500))
        await wait_until(lambda: pid not in pool.worker_pids() and pool.stats().live == 1)
        assert text_of(await pool.invoke(invocation(HEALTHY))) == "ok"
        assert pool.stats().restarts == 1


async def test_a_worker_killed_from_outside_mid_invocation_is_a_crash() -> None:
    async with running_pool() as pool:
        async with trio.open_nursery() as nursery:

            async def kill_when_busy() -> None:
                await wait_until(lambda: bool(pool.busy_worker_pids()))
                os.kill(pool.busy_worker_pids()[0], 9)

            nursery.start_soon(kill_when_busy)
            with pytest.raises(ScriptCrashed) as crashed:
                await pool.invoke(invocation(RUNAWAY, timeout_ms=10_000))
        assert crashed.value.details is not None
        assert "handler 'h' of '/s' died" in crashed.value.details
        await wait_until(lambda: pool.stats().live == 1)
        assert text_of(await pool.invoke(invocation(HEALTHY))) == "ok"


# ---------------------------------------------------------------------------------------------
# Back-pressure and breakers


async def test_with_no_queue_a_request_finding_every_worker_busy_is_overloaded() -> None:
    async with running_pool(queue_limit=0) as pool:
        async with trio.open_nursery() as nursery:

            async def runaway() -> None:
                with pytest.raises(ScriptTimeout):
                    await pool.invoke(invocation(RUNAWAY, uri="/busy", timeout_ms=1500))

            nursery.start_soon(runaway)
            await wait_until(lambda: pool.stats().busy == 1)
            started = trio.current_time()
            with pytest.raises(Overloaded) as refused:
                await pool.invoke(invocation(HEALTHY))
            assert trio.current_time() - started < 0.2
            assert type(refused.value) is Overloaded
            assert refused.value.status == 503
            assert refused.value.retry_after_s > 0
        # Once a worker is free again the same call goes through.
        await wait_until(lambda: pool.stats().idle == 1)
        assert text_of(await pool.invoke(invocation(HEALTHY))) == "ok"


async def test_the_queue_holds_up_to_its_limit_and_refuses_the_next_caller() -> None:
    async with running_pool(queue_limit=1) as pool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.invoke, invocation(busy_for(500)))
            await wait_until(lambda: pool.stats().busy == 1)
            queued: list[InvocationResult] = []

            async def wait_in_queue() -> None:
                queued.append(await pool.invoke(invocation(HEALTHY)))

            nursery.start_soon(wait_in_queue)
            await wait_until(lambda: pool.stats().waiting == 1)
            with pytest.raises(Overloaded):
                await pool.invoke(invocation(HEALTHY))
        assert [text_of(r) for r in queued] == ["ok"]


async def test_repeated_timeouts_open_the_scripts_breaker_until_the_cool_down_passes() -> None:
    clock = FakeClock()
    async with running_pool(
        clock=clock, warm_spares=1, breaker_failure_threshold=2, breaker_cooldown_s=10.0
    ) as pool:
        flaky = """
        function h(ctx) { if (ctx.request.query.loop) { while (true) {} } return "fine"; }
        """
        looping = {"request": {"query": {"loop": "1"}}}
        for _ in range(2):
            with pytest.raises(ScriptTimeout):
                await pool.invoke(invocation(flaky, uri="/flaky", timeout_ms=200, context=looping))
        assert pool.stats().open_breakers == ("/flaky",)
        with pytest.raises(ScriptCircuitOpen) as refused:
            await pool.invoke(invocation(flaky, uri="/flaky"))
        assert refused.value.status == 503
        assert refused.value.retry_after_s == pytest.approx(10.0)
        # Other scripts are not affected.
        assert text_of(await pool.invoke(invocation(HEALTHY, uri="/other"))) == "ok"

        clock.now += 10.0
        # Half-open: one probe goes through; its success closes the breaker.
        assert text_of(await pool.invoke(invocation(flaky, uri="/flaky"))) == "fine"
        assert pool.stats().open_breakers == ()
        assert text_of(await pool.invoke(invocation(flaky, uri="/flaky"))) == "fine"


async def test_a_script_that_merely_throws_never_opens_its_breaker() -> None:
    async with running_pool(breaker_failure_threshold=2) as pool:
        for _ in range(4):
            with pytest.raises(ScriptFailed):
                await pool.invoke(invocation('function h() { throw new Error("x"); }'))
        assert pool.stats().open_breakers == ()


# ---------------------------------------------------------------------------------------------
# Stats


async def test_stats_describe_the_pool_at_rest_and_under_load() -> None:
    async with running_pool(size=2, warm_spares=1) as pool:
        assert pool.stats() == PoolStats(
            size=2,
            live=2,
            idle=2,
            busy=0,
            spares=1,
            waiting=0,
            starting=0,
            restarts=0,
            open_breakers=(),
        )
        assert pool.stats().ready
        assert len(pool.worker_pids()) == 3
        assert pool.busy_worker_pids() == []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.invoke, invocation(busy_for(400)))
            await wait_until(lambda: pool.stats().busy == 1)
            busy = pool.stats()
            assert (busy.live, busy.idle, busy.busy) == (2, 1, 1)
            assert len(pool.busy_worker_pids()) == 1
            assert pool.busy_worker_pids()[0] in pool.worker_pids()
        assert pool.stats().idle == 2
        assert pool.stats().busy == 0


# ---------------------------------------------------------------------------------------------
# CPU priority of long invocations


def nice_of(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


async def test_a_long_invocation_runs_at_low_priority_and_gets_its_priority_back() -> None:
    async with running_pool(deprioritize_after_ms=100) as pool:
        (pid,) = pool.worker_pids()
        assert nice_of(pid) == 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.invoke, invocation(SLOW, timeout_ms=10_000))
            await wait_until(lambda: nice_of(pid) == 10)
        # The run ended: the same worker serves on at normal priority.
        assert nice_of(pid) == 0
        assert text_of(await pool.invoke(invocation(HEALTHY))) == "ok"
        assert pool.worker_pids() == [pid]
        assert pool.stats().restarts == 0


async def test_a_short_invocation_keeps_its_priority() -> None:
    async with running_pool(deprioritize_after_ms=2000) as pool:
        (pid,) = pool.worker_pids()
        for _ in range(20):
            assert text_of(await pool.invoke(invocation(HEALTHY))) == "ok"
        assert nice_of(pid) == 0


async def test_without_the_right_to_raise_priority_a_deprioritized_worker_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = os.setpriority

    def unprivileged(which: int, who: int, priority: int) -> None:
        if priority < nice_of(who):
            raise PermissionError(1, "Operation not permitted")
        real(which, who, priority)

    monkeypatch.setattr(os, "setpriority", unprivileged)
    async with running_pool(deprioritize_after_ms=100) as pool:
        (pid,) = pool.worker_pids()
        assert text_of(await pool.invoke(invocation(SLOW, timeout_ms=10_000))) == "done"
        await wait_until(lambda: pool.stats().live == 1 and pool.worker_pids() != [pid])
        assert nice_of(pool.worker_pids()[0]) == 0
        assert text_of(await pool.invoke(invocation(HEALTHY))) == "ok"
        # Retiring a worker on purpose is not a crash.
        assert pool.stats().restarts == 0


async def test_a_console_line_with_a_lone_surrogate_is_logged_with_the_replacement_character() -> (
    None
):
    host = FakeHost()
    source = 'function h() { console.log("a\\uD800b", "\\uD83D\\uDE00"); return "ok"; }'
    async with running_pool() as pool:
        assert text_of(await pool.invoke(invocation(source, host=host))) == "ok"
    assert [line[1] for line in host.lines] == ["a\ufffdb \U0001f600"]


async def test_the_host_hears_how_every_invocation_ended_even_without_its_caller() -> None:
    ok, failing, abandoned = FakeHost(), FakeHost(), FakeHost()
    async with running_pool() as pool:
        await pool.invoke(invocation(HEALTHY, host=ok))
        with pytest.raises(ScriptFailed):
            await pool.invoke(invocation("function h() { throw new Error('x'); }", host=failing))
        with trio.move_on_after(0.1):
            await pool.invoke(invocation(SLOW, host=abandoned, timeout_ms=10_000))
        await wait_until(lambda: bool(abandoned.finished))
    assert ok.finished == [None]
    assert [type(error) for error in failing.finished] == [ScriptFailed]
    assert abandoned.finished == [None]


# ---------------------------------------------------------------------------------------------
# The worker factory


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def command_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


async def test_workers_are_forked_by_the_factory_and_replacements_too() -> None:
    async with running_pool(size=1, warm_spares=0) as pool:
        (first,) = pool.worker_pids()
        factory = parent_of(first)
        assert factory != os.getpid()
        assert "engine.sandbox._zygote" in command_of(factory)
        with pytest.raises(ScriptTimeout):
            await pool.invoke(invocation(RUNAWAY, timeout_ms=200))
        await wait_until(lambda: pool.stats().live == 1 and pool.worker_pids() != [first])
        (second,) = pool.worker_pids()
        assert parent_of(second) == factory
        assert text_of(await pool.invoke(invocation(HEALTHY))) == "ok"


async def test_without_the_factory_workers_are_started_directly() -> None:
    async with running_pool(size=1, warm_spares=0) as pool:
        (first,) = pool.worker_pids()
        os.kill(parent_of(first), signal.SIGKILL)  # the factory dies; its worker follows
        await wait_until(lambda: pool.stats().live == 1 and pool.worker_pids() != [first])
        (replacement,) = pool.worker_pids()
        assert parent_of(replacement) == os.getpid()
        assert text_of(await pool.invoke(invocation(HEALTHY))) == "ok"


async def test_the_factory_can_be_turned_off() -> None:
    async with running_pool(size=1, warm_spares=0, use_zygote=False) as pool:
        (pid,) = pool.worker_pids()
        assert parent_of(pid) == os.getpid()
        assert text_of(await pool.invoke(invocation(HEALTHY))) == "ok"


async def test_a_long_invocation_runs_under_the_idle_scheduling_policy_until_it_ends() -> None:
    async with running_pool(deprioritize_after_ms=100) as pool:
        (pid,) = pool.worker_pids()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.invoke, invocation(SLOW, timeout_ms=10_000))
            await wait_until(lambda: os.sched_getscheduler(pid) == os.SCHED_IDLE)
        assert os.sched_getscheduler(pid) == os.SCHED_OTHER
        assert nice_of(pid) == 0


async def test_a_console_line_keeps_characters_after_a_nul() -> None:
    host = FakeHost()
    source = 'function h() { console.log("before\\u0000after"); return "ok"; }'
    async with running_pool() as pool:
        assert text_of(await pool.invoke(invocation(source, host=host))) == "ok"
    assert [line[1] for line in host.lines] == ["before\x00after"]
