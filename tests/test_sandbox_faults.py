"""One bad script never takes the server down: fault tolerance over real sockets.

Every test runs a real engine on 127.0.0.1 and drives it with HTTP; the faults are the ones a
script author (or an operator with ``kill -9``) can cause: runaway loops, killed workers, memory
bombs, deep recursion, repeated timeouts and an ``init()`` that never returns.  Every load is
small and bounded in time.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from engine.sandbox import SandboxPool
from tests.conftest import Engine, make_config, running_engine
from tests.test_sandbox_pool import wait_until

MiB = 1024 * 1024

HEALTHY = """
function ok(ctx) { return "ok"; }
function init() { routeRegistry.registerRoute("/ok", "ok", "GET"); }
"""


def script(path: str, body: str) -> str:
    """A script whose handler ``h`` (defined by ``body``) is served at ``path``."""
    return f'{body}\nfunction init() {{ routeRegistry.registerRoute("{path}", "h", "GET"); }}\n'


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json"), response.text
    payload: dict[str, Any] = response.json()
    assert payload["status"] == response.status_code
    error: dict[str, Any] = payload["error"]
    assert "Traceback" not in response.text
    return error


def pool_of(engine: Engine) -> SandboxPool:
    return engine.runtime.pool


async def assert_pool_recovers(pool: SandboxPool, *, within_s: float = 5.0) -> None:
    size = pool.settings.size
    spares = pool.settings.warm_spares
    await wait_until(
        lambda: pool.stats().live == size and pool.stats().spares == spares, within_s=within_s
    )


async def get_many_ok(client: httpx.AsyncClient, count: int, done_at: list[float]) -> None:
    """``count`` concurrent GET /ok; every one must answer 200 "ok"."""

    async def one() -> None:
        response = await client.get("/ok")
        assert response.status_code == 200, response.text
        assert response.text == "ok"
        done_at.append(time.monotonic())

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    assert len(done_at) == count


# ---------------------------------------------------------------------------------------------
# Runaway handlers


async def test_a_runaway_handler_gets_504_on_time_while_other_requests_are_served(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path / "d", **{"sandbox.handler_timeout_ms": 1000})
    async with running_engine(config) as engine:
        await engine.deploy("/runaway", script("/spin", "function h() { while (true) {} }"))
        await engine.deploy("/healthy", HEALTHY)
        pool = pool_of(engine)
        runaway: dict[str, Any] = {}
        healthy_done: list[float] = []

        async def spin() -> None:
            started = time.monotonic()
            response = await engine.client.get("/spin")
            runaway["elapsed"] = time.monotonic() - started
            runaway["done_at"] = time.monotonic()
            runaway["response"] = response

        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(spin)
                await wait_until(lambda: bool(pool.busy_worker_pids()))
                nursery.start_soon(get_many_ok, engine.client, 20, healthy_done)

        response = runaway["response"]
        assert response.status_code == 504
        error = error_of(response)
        assert error["code"] == "SCRIPT_TIMEOUT"
        assert error["details"] == "Handler 'h' exceeded its 1000ms budget and was stopped"
        assert 0.9 <= runaway["elapsed"] < 1.0 + 1.0
        # The healthy requests were answered during the runaway, not queued behind it.
        assert max(healthy_done) < runaway["done_at"]
        await assert_pool_recovers(pool)
        assert (await engine.client.get("/ok")).status_code == 200


async def test_a_worker_killed_from_outside_gives_502_and_the_pool_refills_within_a_second(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path / "d", **{"sandbox.handler_timeout_ms": 20_000})
    async with running_engine(config) as engine:
        await engine.deploy("/runaway", script("/spin", "function h() { while (true) {} }"))
        await engine.deploy("/healthy", HEALTHY)
        pool = pool_of(engine)
        size = pool.settings.size
        before = set(pool.worker_pids())
        assert len(before) == size + pool.settings.warm_spares
        result: dict[str, Any] = {}

        async def spin() -> None:
            result["response"] = await engine.client.get("/spin")

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(spin)
                await wait_until(lambda: bool(pool.busy_worker_pids()))
                (victim,) = pool.busy_worker_pids()
                os.kill(victim, signal.SIGKILL)
                killed_at = time.monotonic()
                await wait_until(
                    lambda: pool.stats().live == size and victim not in pool.worker_pids(),
                    within_s=1.0,
                )
                refilled_after = time.monotonic() - killed_at

        assert refilled_after < 1.0
        response = result["response"]
        assert response.status_code == 502
        error = error_of(response)
        assert error["code"] == "SCRIPT_CRASHED"
        assert "'/runaway'" in error["details"]
        await assert_pool_recovers(pool)
        after = set(pool.worker_pids())
        assert victim not in after
        assert after - before, "no new worker was started"
        assert pool.stats().restarts >= 1
        assert (await engine.client.get("/ok")).status_code == 200


# ---------------------------------------------------------------------------------------------
# Memory


MEMORY_BOMBS = {
    "sparse-arrays": "function h() { let a = []; for (;;) a.push(new Array(1e6)); }",
    "filled-arrays": "function h() { let a = []; for (;;) a.push(new Array(1e5).fill(1)); }",
}


@pytest.mark.parametrize("bomb", MEMORY_BOMBS.values(), ids=MEMORY_BOMBS.keys())
async def test_a_memory_bomb_is_contained_and_other_scripts_keep_answering(
    tmp_path: Path, bomb: str
) -> None:
    config = make_config(
        tmp_path / "d",
        **{"sandbox.memory_limit_bytes": 16 * MiB, "sandbox.handler_timeout_ms": 5000},
    )
    async with running_engine(config) as engine:
        await engine.deploy("/bomb", script("/bomb", bomb))
        await engine.deploy("/healthy", HEALTHY)
        pool = pool_of(engine)
        responses: list[httpx.Response] = []
        healthy_done: list[float] = []

        async def explode() -> None:
            responses.append(await engine.client.get("/bomb"))

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(explode)
                nursery.start_soon(get_many_ok, engine.client, 10, healthy_done)

        for response in responses:
            assert response.status_code in (500, 504), response.text
            error = error_of(response)
            assert error["code"] in ("SCRIPT_EXECUTION_FAILED", "SCRIPT_TIMEOUT")
        await assert_pool_recovers(pool)
        assert (await engine.client.get("/ok")).status_code == 200


@pytest.mark.parametrize(
    "bomb",
    [
        pytest.param(
            MEMORY_BOMBS["sparse-arrays"],
            id="sparse-arrays",
        ),
        pytest.param(MEMORY_BOMBS["filled-arrays"], id="filled-arrays"),
    ],
)
async def test_a_memory_bomb_is_a_500_naming_the_memory_limit(tmp_path: Path, bomb: str) -> None:
    config = make_config(tmp_path / "d", **{"sandbox.memory_limit_bytes": 16 * MiB})
    async with running_engine(config) as engine:
        await engine.deploy("/bomb", script("/bomb", bomb))
        response = await engine.client.get("/bomb")
        assert response.status_code == 500
        error = error_of(response)
        assert error["code"] == "SCRIPT_EXECUTION_FAILED"
        assert "memory limit of 16 MiB" in error["details"]
        assert "sandbox.memory_limit_bytes" in error["details"]
        # Memory exhaustion is handled inside the worker: nobody was killed.
        assert pool_of(engine).stats().restarts == 0


async def test_deep_recursion_is_a_500_naming_the_stack(engine: Engine) -> None:
    await engine.deploy(
        "/deep", script("/deep", "function h() { function r(n) { return r(n + 1) + 1; } r(0); }")
    )
    await engine.deploy("/healthy", HEALTHY)
    response = await engine.client.get("/deep")
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "SCRIPT_EXECUTION_FAILED"
    assert "stack overflow" in error["details"]
    assert "stack limit" in error["details"]
    assert (await engine.client.get("/ok")).status_code == 200
    assert pool_of(engine).stats().restarts == 0


# ---------------------------------------------------------------------------------------------
# The per-script breaker

FLAKY = """
function h(ctx) {
    if (ctx.request.query.loop) { while (true) {} }
    return "fine";
}
"""


def breaker_config(tmp_path: Path) -> Any:
    return make_config(
        tmp_path / "d",
        **{
            "sandbox.handler_timeout_ms": 300,
            "sandbox.breaker_failure_threshold": 3,
            "sandbox.breaker_cooldown_s": 1.0,
        },
    )


async def open_breaker(engine: Engine) -> None:
    for _ in range(3):
        response = await engine.client.get("/flaky", params={"loop": "1"})
        assert response.status_code == 504
        assert error_of(response)["code"] == "SCRIPT_TIMEOUT"


async def test_repeated_timeouts_open_the_breaker_and_a_success_after_the_cool_down_closes_it(
    tmp_path: Path,
) -> None:
    async with running_engine(breaker_config(tmp_path)) as engine:
        await engine.deploy("/flaky", script("/flaky", FLAKY))
        await engine.deploy("/healthy", HEALTHY)
        pool = pool_of(engine)
        with trio.fail_after(20):
            await open_breaker(engine)
            opened_at = time.monotonic()

            refused = await engine.client.get("/flaky")
            assert refused.status_code == 503
            error = error_of(refused)
            assert error["code"] == "SCRIPT_CIRCUIT_OPEN"
            assert "/flaky" in error["message"]
            assert int(refused.headers["Retry-After"]) >= 1
            assert pool.stats().open_breakers == ("/flaky",)

            # Another script is not affected.
            assert (await engine.client.get("/ok")).status_code == 200

            await trio.sleep(max(0.0, 1.0 - (time.monotonic() - opened_at)) + 0.1)
            probe = await engine.client.get("/flaky")
            assert probe.status_code == 200
            assert probe.text == "fine"
            assert pool.stats().open_breakers == ()
            assert (await engine.client.get("/flaky")).status_code == 200
            # Closed means counting afresh: one more timeout is a 504, not a 503.
            again = await engine.client.get("/flaky", params={"loop": "1"})
            assert again.status_code == 504
            assert (await engine.client.get("/flaky")).status_code == 200
        await assert_pool_recovers(pool)


async def test_a_failed_probe_reopens_the_breaker_for_another_cool_down(tmp_path: Path) -> None:
    async with running_engine(breaker_config(tmp_path)) as engine:
        await engine.deploy("/flaky", script("/flaky", FLAKY))
        with trio.fail_after(20):
            await open_breaker(engine)
            await trio.sleep(1.1)
            probe = await engine.client.get("/flaky", params={"loop": "1"})
            assert probe.status_code == 504
            refused = await engine.client.get("/flaky")
            assert refused.status_code == 503
            assert error_of(refused)["code"] == "SCRIPT_CIRCUIT_OPEN"
        await assert_pool_recovers(pool_of(engine))


async def test_a_fixed_version_can_be_deployed_while_the_breaker_is_open(tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "d",
        **{
            "sandbox.handler_timeout_ms": 300,
            "sandbox.breaker_failure_threshold": 3,
            "sandbox.breaker_cooldown_s": 60.0,
        },
    )
    async with running_engine(config) as engine:
        await engine.deploy("/flaky", script("/flaky", FLAKY))
        with trio.fail_after(20):
            await open_breaker(engine)
            fixed = await engine.deploy("/flaky", script("/flaky", 'function h() { return "v2"; }'))
            assert fixed["init"]["success"] is True, fixed["init"]
            response = await engine.client.get("/flaky", params={"loop": "1"})
            assert response.status_code == 200
            assert response.text == "v2"
        await assert_pool_recovers(pool_of(engine))


# ---------------------------------------------------------------------------------------------
# init()


async def test_an_init_that_never_returns_is_stopped_and_the_previous_version_keeps_serving(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path / "d", **{"sandbox.init_timeout_ms": 1000})
    async with running_engine(config) as engine:
        first = await engine.deploy("/app", script("/v", 'function h() { return "v1"; }'))
        assert first["init"]["success"] is True
        looping = """
        function h() { return "v2"; }
        function init() {
            routeRegistry.registerRoute("/v", "h", "GET");
            routeRegistry.registerRoute("/v2-only", "h", "GET");
            while (true) {}
        }
        """
        started = time.monotonic()
        with trio.fail_after(10):
            report = await engine.deploy("/app", looping)
        assert time.monotonic() - started < 1.0 + 1.0
        init = report["init"]
        assert init["ran"] is True
        assert init["success"] is False
        assert "1000ms budget" in init["error"]
        assert init["durationMs"] >= 900

        served = await engine.client.get("/v")
        assert served.status_code == 200
        assert served.text == "v1"
        # Nothing the failed init registered was installed.
        assert (await engine.client.get("/v2-only")).status_code == 404

        status = await engine.client.get("/engine/script_init_status", params={"uri": "/app"})
        assert status.status_code == 200
        assert "1000ms budget" in status.text
        await assert_pool_recovers(pool_of(engine))
