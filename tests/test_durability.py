"""Durability: what the engine acknowledged survives ``kill -9``, and workers never outlive it.

A 2xx from ``upsert_script``/``delete_script`` means the change is committed (DESIGN: "store in
DB, durable before 2xx").  The server is killed with SIGKILL right after the last
acknowledgement -- no shutdown code runs -- and a new server on the same data directory must
serve exactly what was acknowledged.  The sandbox workers watch their parent and exit when it is
gone, so they go with it -- and only then: an idle server keeps its workers.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.conftest import EngineProcess

SCRIPTS = 12


def routed(index: int, version: str) -> str:
    return (
        f'function answer() {{ return "script {index} {version}"; }}\n'
        f'function init() {{ routeRegistry.registerRoute("/d/{index}", "answer", "GET"); }}\n'
    )


LOGGER = """
function note(context) { console.log("noted " + context.request.query.text); return "ok"; }
function init() { routeRegistry.registerRoute("/note", "note", "GET"); }
"""


def is_alive(pid: int) -> bool:
    """Running.  A zombie counts as dead: an orphaned worker is adopted by pid 1, and a pid 1
    that does not reap (as in some containers) leaves the exited worker in /proc as a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def still_alive_after(pids: list[int], within_s: float) -> list[int]:
    deadline = time.monotonic() + within_s
    alive = [pid for pid in pids if is_alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [pid for pid in alive if is_alive(pid)]
    return alive


def kill_9(server: EngineProcess) -> None:
    os.kill(server.process.pid, signal.SIGKILL)
    assert server.wait(10) == -signal.SIGKILL


def upsert(client: httpx.Client, uri: str, content: str) -> None:
    response = client.post("/engine/upsert_script", data={"uri": uri, "content": content})
    assert response.status_code == 200, response.text


def test_acknowledged_upserts_survive_a_sigkill(
    engine_process: type[EngineProcess], tmp_path: Path
) -> None:
    first = engine_process(tmp_path / "data")
    expected: dict[int, str] = {}
    with httpx.Client(base_url=first.base_url, timeout=30) as client:
        for index in range(SCRIPTS):
            expected[index] = routed(index, "v1")
            upsert(client, f"https://t/durable/{index}", expected[index])
        for index in range(0, SCRIPTS, 3):
            expected[index] = routed(index, "v2")
            upsert(client, f"https://t/durable/{index}", expected[index])
        kill_9(first)  # at once: nothing gets a chance to flush after the last answer

    second = engine_process(tmp_path / "data")

    with httpx.Client(base_url=second.base_url, timeout=30) as client:
        for index, content in expected.items():
            read = client.get("/engine/read_script", params={"uri": f"https://t/durable/{index}"})
            assert read.status_code == 200, index
            assert read.text == content
            version = "v2" if index % 3 == 0 else "v1"
            assert client.get(f"/d/{index}").text == f"script {index} {version}"
        listed = {s["uri"] for s in client.get("/engine/scripts").json()["scripts"]}
        assert {f"https://t/durable/{index}" for index in expected} <= listed


def test_an_acknowledged_delete_survives_a_sigkill(
    engine_process: type[EngineProcess], tmp_path: Path
) -> None:
    first = engine_process(tmp_path / "data")
    with httpx.Client(base_url=first.base_url, timeout=30) as client:
        upsert(client, "https://t/kept", routed(1, "kept"))
        upsert(client, "https://t/removed", routed(2, "removed"))
        deleted = client.post("/engine/delete_script", data={"uri": "https://t/removed"})
        assert deleted.status_code == 200
        kill_9(first)

    second = engine_process(tmp_path / "data")

    with httpx.Client(base_url=second.base_url, timeout=30) as client:
        listed = {s["uri"] for s in client.get("/engine/scripts").json()["scripts"]}
        assert "https://t/kept" in listed
        assert "https://t/removed" not in listed
        assert client.get("/d/1").text == "script 1 kept"
        assert client.get("/d/2").status_code == 404


def test_log_lines_of_an_answered_request_survive_a_sigkill(
    engine_process: type[EngineProcess], tmp_path: Path
) -> None:
    first = engine_process(tmp_path / "data")
    with httpx.Client(base_url=first.base_url, timeout=30) as client:
        upsert(client, "https://t/logger", LOGGER)
        answered = client.get("/note", params={"text": "remember me"})
        assert answered.status_code == 200
        request_id = answered.headers["x-request-id"]
        kill_9(first)

    second = engine_process(tmp_path / "data")

    with httpx.Client(base_url=second.base_url, timeout=30) as client:
        lines = client.get("/engine/script_logs", params={"request_id": request_id}).json()
        assert [line["message"] for line in lines["logs"]] == ["noted remember me"]


def test_workers_die_within_two_seconds_of_a_sigkilled_server(
    engine_process: type[EngineProcess], tmp_path: Path
) -> None:
    server = engine_process(tmp_path / "data")
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        # A script loaded in the workers: they are in use, not just started.
        upsert(client, "https://t/warm", routed(7, "warm"))
        assert client.get("/d/7").text == "script 7 warm"
    workers = server.worker_pids()
    assert len(workers) == 4, "the worker factory, two in service and one warm spare"

    kill_9(server)

    assert still_alive_after(workers, within_s=2.0) == []


def test_idle_workers_live_as_long_as_the_server(
    engine_process: type[EngineProcess], tmp_path: Path
) -> None:
    # Regression: with PR_SET_PDEATHSIG the kernel kills a worker when the *thread* that
    # forked it exits, and trio forks from a cached thread that exits after 10 s idle.
    server = engine_process(tmp_path / "data")
    workers = server.worker_pids()
    assert workers

    time.sleep(12)

    assert [pid for pid in workers if is_alive(pid)] == workers
    ready = httpx.get(server.base_url + "/health/ready", timeout=30).json()
    assert ready["sandbox"]["restarts"] == 0
