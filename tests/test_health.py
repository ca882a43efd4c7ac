"""``/health`` (liveness) and ``/health/ready`` (readiness).

Liveness answers from memory and stays 200 while the database is failing (it only reports
``database: "degraded"``), so an orchestrator does not restart an instance for an outage it
cannot fix by restarting.  Readiness makes one database round trip and looks at the sandbox
pool: 200 ``ready`` or 503 ``degraded`` naming what is wrong, and it recovers by itself.

The database fault used here is real: another connection holds SQLite's write lock, so every
write of the engine waits out SQLite's busy timeout and fails, and the storage breaker opens.
Simpler faults do not reach a running engine: the tests run as root, so ``chmod`` on the data
directory changes nothing; the engine's pooled connections keep their open file descriptors
when files are removed or replaced; and overwriting the main file's header is invisible while
the pages live in the WAL.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from engine import __version__
from engine.config import Config
from security import generate_key_text
from tests.conftest import Engine, make_config, running_engine

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
BREAKER_THRESHOLD = 3


def health_json(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert ISO_MS.match(body["timestamp"])
    assert re.fullmatch(r"[0-9a-f]{12}", body["instance_id"])
    return body


async def test_health_reports_a_live_instance(engine: Engine) -> None:
    response = await engine.client.get("/health")

    body = health_json(response, 200)
    assert set(body) == {"status", "instance_id", "timestamp", "version", "database"}
    assert body["status"] == "healthy"
    assert body["database"] == "ok"
    assert body["version"] == {"engine": __version__, "python": sys.version.split()[0]}
    assert body["instance_id"] == engine.runtime.instance_id
    assert response.headers["x-request-id"].startswith("req_")


async def test_ready_reports_the_database_and_the_sandbox_pool(engine: Engine) -> None:
    body = health_json(await engine.client.get("/health/ready"), 200)

    assert set(body) == {"status", "instance_id", "timestamp", "database", "sandbox"}
    assert body["status"] == "ready"
    assert body["database"] == "ok"
    assert body["instance_id"] == engine.runtime.instance_id
    sandbox = body["sandbox"]
    assert set(sandbox) == {
        "status",
        "workers",
        "size",
        "idle",
        "busy",
        "spares",
        "waiting",
        "restarts",
        "openBreakers",
    }
    # The test configuration: two workers in service and one warm spare.
    assert sandbox["status"] == "ok"
    assert sandbox["size"] == sandbox["workers"] == 2
    assert sandbox["spares"] == 1
    assert sandbox["busy"] == sandbox["waiting"] == sandbox["restarts"] == 0
    assert sandbox["openBreakers"] == []


async def test_ready_shows_a_busy_worker(engine: Engine) -> None:
    await engine.deploy(
        "https://t/slow",
        "function slow() { var t = Date.now(); while (Date.now() - t < 800) {} return 'done'; }\n"
        "function init() { routeRegistry.registerRoute('/slow', 'slow', 'GET'); }",
    )
    seen: list[dict[str, Any]] = []

    async def watch() -> None:
        for _ in range(50):
            sandbox = health_json(await engine.client.get("/health/ready"), 200)["sandbox"]
            seen.append(sandbox)
            if sandbox["busy"] == 1:
                return
            await trio.sleep(0.02)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        slow = await engine.client.get("/slow")

    assert slow.text == "done"
    assert any(s["busy"] == 1 for s in seen), seen


@contextmanager
def write_lock_held(config: Config) -> Iterator[None]:
    """Hold SQLite's write lock from another connection, as a stuck process would."""
    database = Path(config.server.data_dir) / "aiwebengine.db"
    assert database.exists()
    holder = sqlite3.connect(database, isolation_level=None, timeout=10)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_ready_is_503_degraded_while_the_database_fails_and_recovers_by_itself(
    tmp_path: Path,
) -> None:
    config = make_config(
        tmp_path / "data",
        **{
            "database.breaker_failure_threshold": BREAKER_THRESHOLD,
            "database.breaker_cooldown_s": 0.5,
        },
    )
    async with running_engine(config) as engine:
        client = engine.client
        failed: list[httpx.Response] = []

        async def upsert(n: int) -> None:
            failed.append(
                await client.post(
                    "/engine/upsert_script",
                    data={"uri": f"blocked-{n}", "content": "function init() {}"},
                )
            )

        with write_lock_held(config):
            # Each write waits out SQLite's 5 s busy timeout, so they wait side by side.
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    for n in range(BREAKER_THRESHOLD):
                        nursery.start_soon(upsert, n)

            for response in failed:
                assert response.status_code == 503, response.text
                assert response.json()["code"] == "STORAGE_UNAVAILABLE"
                assert int(response.headers["retry-after"]) >= 1
                assert "Traceback" not in response.text

            ready = health_json(await client.get("/health/ready"), 503)
            assert ready["status"] == "degraded"
            assert ready["database"].startswith("error: ")
            assert ready["sandbox"]["status"] == "ok"
            live = health_json(await client.get("/health"), 200)
            assert live["status"] == "healthy"
            assert live["database"] == "degraded"
            # Requests that need storage fail fast while the breaker is open.
            with trio.fail_after(2):
                fast = await client.get("/engine/scripts")
            assert fast.status_code == 503
            # Solution routes that need no storage keep answering.
            hello = await client.get("/hello", params={"name": "x"})
            assert hello.text == "Hello, x!"

        # Lock released: after the cool-down the next probe closes the breaker.
        for _ in range(50):
            answer = await client.get("/health/ready")
            if answer.status_code == 200:
                break
            await trio.sleep(0.2)
        ready = health_json(answer, 200)
        assert ready["status"] == "ready" and ready["database"] == "ok"
        assert health_json(await client.get("/health"), 200)["database"] == "ok"
        stored = await engine.deploy("after-recovery", "function init() {}")
        assert stored["success"] is True


async def test_health_endpoints_need_no_token_even_in_production(tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "data",
        **{
            "profile": "production",
            "security.admin_token": "p" * 48,
            "security.secret_encryption_key": generate_key_text(),
        },
    )
    async with running_engine(config) as engine:
        health_json(await engine.client.get("/health"), 200)
        health_json(await engine.client.get("/health/ready"), 200)
