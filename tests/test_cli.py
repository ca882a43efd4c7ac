"""The ``aiwebengine`` command: ``deploy``, ``logs`` (one-shot and ``--follow``) and ``serve``.

Every command runs as a real child process against a real server (``EngineProcess``); waits
are bounded.  ``serve`` is also checked for its shutdown: on SIGTERM/SIGINT it stops accepting,
lets a request in flight finish, exits 0 and leaves no sandbox worker behind.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from security import generate_key_text
from tests.conftest import EngineProcess

TOKEN = "cli-test-token-" + "k" * 33
EXAMPLE_URI = "https://example.com/hello"

GREETER = """
function greet(context) { return "hello from the cli"; }
function init() { routeRegistry.registerRoute("/cli-greet", "greet", "GET"); }
"""
TOP_LEVEL_ONLY = """
function greet(context) { return "top level"; }
routeRegistry.registerRoute("/top-level", "greet", "GET");
"""
THROWING_INIT = """
function init() { throw new Error("kaboom in init"); }
"""
LOGGER = """
function say(context) {
  console.warn("said " + context.request.query.text);
  return "ok";
}
function init() { routeRegistry.registerRoute("/say", "say", "GET"); }
"""
SLOW = """
function slow(context) {
  var t = Date.now();
  while (Date.now() - t < 1500) {}
  return "finished after draining";
}
function init() { routeRegistry.registerRoute("/slow", "slow", "GET"); }
"""


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIWEBENGINE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_script(directory: Path, name: str, content: str) -> Path:
    path = directory / name
    path.write_text(content, "utf-8")
    return path


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def server(engine_process: type[EngineProcess], tmp_path: Path) -> EngineProcess:
    return engine_process(tmp_path / "data")


def get(server: EngineProcess, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(server.base_url + path, timeout=30, **kwargs)


def deploy_over_http(server: EngineProcess, uri: str, content: str) -> None:
    response = httpx.post(
        server.base_url + "/engine/upsert_script",
        data={"uri": uri, "content": content},
        timeout=30,
    )
    assert response.status_code == 200, response.text


# -- deploy ----------------------------------------------------------------------------


def test_deploy_prints_the_init_outcome_and_exits_0(server: EngineProcess, tmp_path: Path) -> None:
    script = write_script(tmp_path, "greeter.js", GREETER)

    done = cli("deploy", str(script), "--uri", "https://t/greeter", "--server", server.base_url)

    assert done.returncode == 0, done.stderr
    assert f"deployed https://t/greeter ({len(GREETER.encode())} bytes)" in done.stdout
    assert "init() ran, ok in" in done.stdout
    assert get(server, "/cli-greet").text == "hello from the cli"


def test_deploy_of_a_script_without_init_reports_its_top_level_registrations(
    server: EngineProcess, tmp_path: Path
) -> None:
    script = write_script(tmp_path, "top.js", TOP_LEVEL_ONLY)

    done = cli("deploy", str(script), "--uri", "https://t/top", "--server", server.base_url)

    assert done.returncode == 0, done.stderr
    assert "init() not defined" in done.stdout
    assert get(server, "/top-level").text == "top level"


def test_deploy_of_a_script_whose_init_throws_exits_non_zero_with_the_error(
    server: EngineProcess, tmp_path: Path
) -> None:
    script = write_script(tmp_path, "bad.js", THROWING_INIT)

    done = cli("deploy", str(script), "--uri", "https://t/bad", "--server", server.base_url)

    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "init() failed" in output
    assert "kaboom in init" in output
    assert "Traceback" not in output


def test_deploy_refused_by_the_server_prints_the_reason(
    server: EngineProcess, tmp_path: Path
) -> None:
    script = write_script(tmp_path, "empty.js", "   \n")

    done = cli("deploy", str(script), "--uri", "https://t/empty", "--server", server.base_url)

    assert done.returncode == 1
    assert "HTTP 400" in done.stderr
    assert "content" in done.stderr
    assert "Traceback" not in done.stderr


def test_deploy_of_a_file_that_does_not_exist_exits_2(tmp_path: Path) -> None:
    done = cli(
        "deploy", str(tmp_path / "missing.js"), "--uri", "u", "--server", "http://127.0.0.1:9"
    )

    assert done.returncode == 2
    assert "cannot read" in done.stderr


def test_deploy_to_a_server_that_is_not_listening_exits_1(tmp_path: Path) -> None:
    script = write_script(tmp_path, "greeter.js", GREETER)
    nowhere = f"http://127.0.0.1:{unused_port()}"

    done = cli("deploy", str(script), "--uri", "u", "--server", nowhere)

    assert done.returncode == 1
    assert "cannot reach" in done.stderr
    assert "Traceback" not in done.stderr


def test_deploy_sends_the_admin_token_to_a_production_server(
    engine_process: type[EngineProcess], tmp_path: Path
) -> None:
    server = engine_process(
        tmp_path / "data",
        "--profile",
        "production",
        env={
            "AIWEBENGINE_SECURITY__ADMIN_TOKEN": TOKEN,
            "AIWEBENGINE_SECURITY__SECRET_ENCRYPTION_KEY": generate_key_text(),
        },
    )
    script = write_script(tmp_path, "greeter.js", GREETER)
    token_file = write_script(tmp_path, "token", TOKEN + "\n")
    args = ("deploy", str(script), "--uri", "https://t/greeter", "--server", server.base_url)

    without = cli(*args)
    from_env = cli(*args, env={"AIWEBENGINE_TOKEN": TOKEN})
    from_file = cli(*args, "--token-file", str(token_file))

    assert without.returncode == 1
    assert "HTTP 401" in without.stderr
    assert from_env.returncode == 0, from_env.stderr
    assert from_file.returncode == 0, from_file.stderr
    assert TOKEN not in without.stdout + without.stderr + from_env.stdout + from_file.stdout


# -- logs ------------------------------------------------------------------------------


def test_logs_prints_a_scripts_lines_oldest_first(server: EngineProcess) -> None:
    deploy_over_http(server, "https://t/logger", LOGGER)
    ids = [get(server, "/say", params={"text": t}).headers["x-request-id"] for t in ("a", "b")]

    done = cli("logs", "--uri", "https://t/logger", "--server", server.base_url)

    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "said" in line]
    assert len(lines) == 2
    for line, request_id, text in zip(lines, ids, ("a", "b"), strict=True):
        assert line.endswith(f"said {text}")
        assert "WARN" in line
        assert "https://t/logger" in line
        assert "/say" in line
        assert f"[{request_id}]" in line


def test_logs_limit_keeps_the_newest_lines(server: EngineProcess) -> None:
    deploy_over_http(server, "https://t/logger", LOGGER)
    for text in ("old", "new"):
        get(server, "/say", params={"text": text})

    done = cli("logs", "--uri", "https://t/logger", "--limit", "1", "--server", server.base_url)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("said new")
    assert "said old" not in done.stdout


@contextmanager
def running(*args: str) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    """A CLI command in the background; its stdout lines arrive on the queue."""
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", *args],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        yield process, lines
    finally:
        process.terminate()
        process.wait(10)
        reader.join(5)


def test_logs_follow_prints_lines_written_after_it_started(server: EngineProcess) -> None:
    deploy_over_http(server, "https://t/logger", LOGGER)
    get(server, "/say", params={"text": "before-start"})

    # --limit 0: no backlog, so anything printed was written after the tail connected.
    with running(
        "logs", "--follow", "--limit", "0", "--uri", "https://t/logger", "--server", server.base_url
    ) as (process, lines):
        printed: list[str] = []
        deadline = time.monotonic() + 20
        seen_live = None
        attempt = 0
        while seen_live is None and time.monotonic() < deadline:
            # The tail connects at some point after start; keep writing until one arrives.
            attempt += 1
            get(server, "/say", params={"text": f"live-{attempt}"})
            try:
                while True:
                    line = lines.get(timeout=0.5)
                    printed.append(line)
                    if "said live-" in line:
                        seen_live = line
                        break
            except queue.Empty:
                continue
        assert seen_live is not None, (printed, process.poll())
        assert process.poll() is None, "--follow keeps running"

    assert all("before-start" not in line for line in printed)
    assert "WARN" in seen_live and "https://t/logger" in seen_live


def test_logs_against_a_server_that_is_not_listening_exits_1() -> None:
    done = cli("logs", "--server", f"http://127.0.0.1:{unused_port()}")

    assert done.returncode == 1
    assert "cannot reach" in done.stderr


# -- serve -----------------------------------------------------------------------------


def test_serve_on_an_empty_data_dir_installs_the_example(
    engine_process: type[EngineProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "fresh"
    assert not data_dir.exists()

    server = engine_process(data_dir)

    hello = get(server, "/hello", params={"name": "x"})
    assert (hello.status_code, hello.text) == (200, "Hello, x!")
    scripts = get(server, "/engine/scripts").json()["scripts"]
    assert [s["uri"] for s in scripts] == [EXAMPLE_URI]
    assert (data_dir / "aiwebengine.db").is_file()


def test_serve_keeps_scripts_across_restarts(
    engine_process: type[EngineProcess], tmp_path: Path
) -> None:
    first = engine_process(tmp_path / "data")
    deploy_over_http(first, "https://t/greeter", GREETER)
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0

    second = engine_process(tmp_path / "data")

    assert get(second, "/cli-greet").text == "hello from the cli"
    uris = {s["uri"] for s in get(second, "/engine/scripts").json()["scripts"]}
    assert uris == {EXAMPLE_URI, "https://t/greeter"}


def test_a_deleted_example_stays_deleted_after_a_restart(
    engine_process: type[EngineProcess], tmp_path: Path
) -> None:
    first = engine_process(tmp_path / "data")
    deleted = httpx.post(
        first.base_url + "/engine/delete_script", data={"uri": EXAMPLE_URI}, timeout=30
    )
    assert deleted.status_code == 200
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0

    second = engine_process(tmp_path / "data")

    assert get(second, "/engine/scripts").json()["scripts"] == []


def test_serve_refuses_a_port_that_is_already_in_use(server: EngineProcess, tmp_path: Path) -> None:
    busy_port = server.base_url.rsplit(":", 1)[1]

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "serve",
            "--port",
            busy_port,
            "--data-dir",
            str(tmp_path / "second"),
        ],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 1
    assert busy_port in done.stderr
    assert "Traceback" not in done.stderr
    assert get(server, "/health").status_code == 200, "the first server is unaffected"


def wait_until_busy(server: EngineProcess) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sandbox = get(server, "/health/ready").json()["sandbox"]
        if sandbox["busy"] >= 1:
            return
        time.sleep(0.02)
    raise AssertionError("the slow request never reached a worker")


def wait_until_gone(pids: list[int], within_s: float) -> list[int]:
    """The pids still alive after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists()]
    return alive


@pytest.mark.parametrize(
    ("signum", "whole_group"),
    [
        (signal.SIGTERM, False),
        (signal.SIGINT, False),
        # What a terminal's Ctrl-C or a service manager does: signal every process of the group.
        (signal.SIGTERM, True),
        (signal.SIGINT, True),
    ],
    ids=["SIGTERM", "SIGINT", "SIGTERM-to-group", "SIGINT-to-group"],
)
def test_a_signal_drains_the_request_in_flight_and_leaves_no_worker(
    engine_process: type[EngineProcess],
    tmp_path: Path,
    signum: signal.Signals,
    whole_group: bool,
) -> None:
    server = engine_process(
        tmp_path / "data", env={"AIWEBENGINE_SANDBOX__HANDLER_TIMEOUT_MS": "5000"}
    )
    deploy_over_http(server, "https://t/slow", SLOW)
    workers = server.worker_pids()
    assert workers

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(get, server, "/slow")
        wait_until_busy(server)
        if whole_group:
            os.killpg(server.process.pid, signum)
        else:
            server.signal(signum)
        answered = pending.result(timeout=20)

    assert (answered.status_code, answered.text) == (200, "finished after draining")
    assert server.wait(30) == 0, server.output()
    output = server.output()
    assert f"{signum.name} received, draining requests" in output
    assert "aiwebengine: stopped" in output
    assert "Traceback" not in output
    assert wait_until_gone(workers, within_s=5) == []


def test_the_console_script_is_installed() -> None:
    command = shutil.which("aiwebengine")
    assert command is not None, "pip install -e . declares the aiwebengine console script"

    done = subprocess.run(
        [command, "--help"], env=cli_env(), capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 0
    for subcommand in ("serve", "deploy", "logs"):
        assert subcommand in done.stdout
