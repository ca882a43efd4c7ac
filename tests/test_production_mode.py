"""Production protection: the admin bearer token on ``/engine``, and refusing to start unsafe.

With ``profile = production`` every ``/engine`` call needs ``Authorization: Bearer <token>``;
without it (or with a wrong one) the answer is 401 JSON with ``WWW-Authenticate``.  The landing
page ``/engine/installed``, ``/health*`` and the solution routes stay public.  A configuration
that would expose the admin API without protection is refused by ``aiwebengine serve`` before
it binds a port, listing every problem at once.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from security import generate_key_text
from tests.conftest import EngineProcess

TOKEN = secrets.token_urlsafe(36)
assert len(TOKEN) == 48
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLE_URI = "https://example.com/hello"
SCRIPT = (
    'function ping() { return "pong"; }\n'
    'function init() { routeRegistry.registerRoute("/ping", "ping", "GET"); }\n'
)

# (method, path, request options): every /engine endpoint with arguments that succeed (200)
# when the token is right.
ENDPOINTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/engine/upsert_script", {"data": {"uri": "https://t/ping", "content": SCRIPT}}),
    ("POST", "/engine/delete_script", {"data": {"uri": "https://t/doomed"}}),
    ("GET", "/engine/read_script", {"params": {"uri": EXAMPLE_URI}}),
    ("GET", "/engine/scripts", {}),
    ("GET", "/engine/script_init_status", {}),
    ("GET", "/engine/script_init_status", {"params": {"uri": EXAMPLE_URI}}),
    ("GET", "/engine/script_logs", {}),
    ("DELETE", "/engine/script_logs", {"params": {"uri": EXAMPLE_URI}}),
    ("GET", "/engine/script_logs/stream", {}),
    ("GET", "/engine/routes", {}),
]
ENDPOINT_IDS = [f"{method} {path}" for method, path, _ in ENDPOINTS]
UNKNOWN_ENGINE_PATHS = ["/engine", "/engine/nope", "/engine/scripts/extra"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    data_dir = Path(tmp_path_factory.mktemp("production")) / "data"
    process = EngineProcess(
        data_dir,
        "--profile",
        "production",
        env={
            "AIWEBENGINE_SECURITY__ADMIN_TOKEN": TOKEN,
            "AIWEBENGINE_SECURITY__SECRET_ENCRYPTION_KEY": generate_key_text(),
        },
    )
    try:
        with httpx.Client(base_url=process.base_url, timeout=30) as client:
            yield client
    finally:
        process.close()


def send(
    client: httpx.Client, method: str, path: str, options: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    """One request; an event stream is only opened, its status read, and closed again.

    Requests without the right token ask for the connection to be closed: a refusal answered
    before the body is read leaves a kept-alive connection unusable (see
    ``test_a_connection_keeps_answering_after_a_refused_request_with_a_body``).
    """
    if headers != AUTHORIZED:
        headers = {**headers, "Connection": "close"}
    if path.endswith("/stream"):
        with client.stream(method, path, headers=headers, **options) as response:
            if response.status_code != 200:
                response.read()
            return response
    return client.request(method, path, headers=headers, **options)


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["error"] == "Unauthorized"
    assert TOKEN not in response.text


def assert_refused(response: httpx.Response) -> None:
    """Whatever the status, the caller got no data and no traceback."""
    assert not 200 <= response.status_code < 300, response.text
    assert response.headers["content-type"] == "application/json"
    assert "Traceback" not in response.text
    assert EXAMPLE_URI not in response.text
    assert "scripts" not in response.json()


# -- the token on /engine --------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "options"), ENDPOINTS, ids=ENDPOINT_IDS)
def test_without_a_token_no_engine_endpoint_acts_or_answers_data(
    server: httpx.Client, method: str, path: str, options: dict[str, Any]
) -> None:
    assert_refused(send(server, method, path, options, {}))


def test_a_refused_upsert_stores_nothing(server: httpx.Client) -> None:
    refused = send(
        server,
        "POST",
        "/engine/upsert_script",
        {"data": {"uri": "https://t/intruder", "content": SCRIPT}},
        {},
    )

    assert_refused(refused)
    listing = server.get("/engine/scripts", headers=AUTHORIZED).json()
    assert "https://t/intruder" not in [s["uri"] for s in listing["scripts"]]


@pytest.mark.parametrize(("method", "path", "options"), ENDPOINTS, ids=ENDPOINT_IDS)
def test_without_a_token_every_engine_endpoint_is_401_json(
    server: httpx.Client, method: str, path: str, options: dict[str, Any]
) -> None:
    assert_unauthorized(send(server, method, path, options, {}))


def test_a_connection_keeps_answering_after_a_refused_request_with_a_body(
    server: httpx.Client,
) -> None:
    with httpx.Client(base_url=server.base_url, timeout=5) as client:
        refused = client.post(
            "/engine/upsert_script", data={"uri": "https://t/x", "content": "x" * 2_000_000}
        )
        assert_refused(refused)
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer " + "x" * len(TOKEN),
        "Bearer " + TOKEN[:-1],
        "Bearer " + TOKEN + "x",
        "Bearer " + TOKEN.swapcase(),
        "Basic " + TOKEN,
        TOKEN,
        "Bearer",
    ],
    ids=["other", "prefix", "longer", "case", "basic-scheme", "no-scheme", "empty"],
)
def test_a_wrong_token_is_401(server: httpx.Client, authorization: str) -> None:
    response = send(server, "GET", "/engine/scripts", {}, {"Authorization": authorization})

    assert_unauthorized(response)


@pytest.mark.parametrize("path", UNKNOWN_ENGINE_PATHS)
def test_unknown_engine_paths_are_401_before_they_are_404(server: httpx.Client, path: str) -> None:
    # Answering 404 to anonymous callers would let them map the admin API.
    assert_unauthorized(send(server, "GET", path, {}, {}))


@pytest.mark.parametrize(("method", "path", "options"), ENDPOINTS, ids=ENDPOINT_IDS)
def test_with_the_token_every_engine_endpoint_answers(
    server: httpx.Client, method: str, path: str, options: dict[str, Any]
) -> None:
    if path == "/engine/delete_script":
        prepared = server.post(
            "/engine/upsert_script",
            data={"uri": "https://t/doomed", "content": SCRIPT},
            headers=AUTHORIZED,
        )
        assert prepared.status_code == 200

    response = send(server, method, path, options, AUTHORIZED)

    assert response.status_code == 200, response.text


def test_the_bearer_scheme_is_case_insensitive(server: httpx.Client) -> None:
    response = server.get("/engine/scripts", headers={"Authorization": f"bearer {TOKEN}"})

    assert response.status_code == 200


@pytest.mark.parametrize("path", UNKNOWN_ENGINE_PATHS)
def test_with_the_token_unknown_engine_paths_are_404(server: httpx.Client, path: str) -> None:
    response = server.get(path, headers=AUTHORIZED)

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"


# -- what stays public -----------------------------------------------------------------


def test_the_landing_page_is_public(server: httpx.Client) -> None:
    response = server.get("/engine/installed")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/health", "/health/ready"])
def test_health_is_public(server: httpx.Client, path: str) -> None:
    assert server.get(path).status_code == 200


def test_solution_routes_are_public(server: httpx.Client) -> None:
    deployed = server.post(
        "/engine/upsert_script",
        data={"uri": "https://t/ping", "content": SCRIPT},
        headers=AUTHORIZED,
    )
    assert deployed.status_code == 200

    assert server.get("/ping").text == "pong"
    assert server.get("/hello", params={"name": "x"}).text == "Hello, x!"


def test_a_valid_token_on_a_solution_route_changes_nothing(server: httpx.Client) -> None:
    assert server.get("/hello", params={"name": "y"}, headers=AUTHORIZED).text == "Hello, y!"


# -- configurations refused before binding ---------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serve(tmp_path: Path, *args: str, env: dict[str, str]) -> tuple[int, str, Path, int]:
    """Run ``aiwebengine serve``; return its exit code, output, data dir and port."""
    data_dir = tmp_path / "never-created"
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AIWEBENGINE_")}
    full_env.update(env)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "serve",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            *args,
        ],
        env=full_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return completed.returncode, completed.stdout + completed.stderr, data_dir, port


def assert_refused_before_binding(code: int, output: str, data_dir: Path, port: int) -> None:
    assert code == 2, output
    assert "invalid configuration" in output
    assert "serving on" not in output and "Running on" not in output
    assert not data_dir.exists(), "nothing may be created before the configuration is valid"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # still free: nobody bound it


def test_production_without_a_token_is_refused(tmp_path: Path) -> None:
    code, output, data_dir, port = serve(tmp_path, "--profile", "production", env={})

    assert_refused_before_binding(code, output, data_dir, port)
    assert "security.admin_token" in output
    assert "required in production" in output


@pytest.mark.parametrize("profile", ["production", "development"])
def test_a_token_shorter_than_32_characters_is_refused(tmp_path: Path, profile: str) -> None:
    short = "short-secret-" + "s" * 18
    assert len(short) == 31

    code, output, data_dir, port = serve(
        tmp_path,
        "--profile",
        profile,
        env={"AIWEBENGINE_SECURITY__ADMIN_TOKEN": short},
    )

    assert_refused_before_binding(code, output, data_dir, port)
    assert "security.admin_token" in output
    assert "shorter than 32 characters" in output
    assert short not in output, "the token itself must never be printed"


def test_development_on_a_public_address_without_a_token_is_refused(tmp_path: Path) -> None:
    code, output, data_dir, port = serve(tmp_path, "--host", "0.0.0.0", env={})

    assert_refused_before_binding(code, output, data_dir, port)
    assert "server.host" in output
    assert "'0.0.0.0'" in output
    assert "non-loopback" in output


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    code, output, data_dir, port = serve(
        tmp_path,
        "--profile",
        "production",
        env={
            "AIWEBENGINE_SANDBOX__POOL_SIZE": "0",
            "AIWEBENGINE_SANDBOX__HANDLER_TIMEOUT_MS": "soon",
        },
    )

    assert_refused_before_binding(code, output, data_dir, port)
    assert "4 problems" in output
    for key in (
        "sandbox.pool_size",
        "sandbox.handler_timeout_ms",
        "security.admin_token",
        "security.secret_encryption_key",
    ):
        assert key in output


def test_a_public_address_with_a_long_token_is_accepted(tmp_path: Path) -> None:
    # The counterpart of the refusals: the same address is fine once a token guards /engine.
    process = EngineProcess(
        tmp_path / "data",
        "--host",
        "0.0.0.0",
        env={"AIWEBENGINE_SECURITY__ADMIN_TOKEN": TOKEN},
    )
    try:
        port = process.base_url.rsplit(":", 1)[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            assert client.get("/health").status_code == 200
            authorized = client.get("/engine/scripts", headers=AUTHORIZED)
            assert authorized.status_code == 200
            wrong = client.get("/engine/scripts", headers={"Authorization": "Bearer nope"})
            assert_refused(wrong)
    finally:
        process.close()
