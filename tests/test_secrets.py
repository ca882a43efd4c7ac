"""Secrets and ``fetch`` in a running engine: ``/engine/secrets``, ``secretStorage``, secrets at
rest, the script log, restarts, the production key, and the SSRF suite through real scripts."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.fetch import FetchOutcome
from engine.invocation_host import InvocationHost
from engine.secrets import NEEDS_LOGIN, SecretHostApi, SecretService
from engine.storage import AuditQuery, Database, SecretOwner
from security import SecretBox, generate_key_text, key_from_text
from tests._fetch_target import serving
from tests.conftest import Engine, make_config, running_engine

SCRIPT = "https://example.com/fetcher"
VALUE = "sk-live-7f3a9c2e5b1d"  # what must never show up anywhere
FETCHER = """
function go(context) {
  const q = context.request.query;
  try {
    const options = q.options ? q.options : {headers: {"X-Key": "Key {{secret:tok}}"}};
    const result = fetch(q.url, options);
    console.log("fetched " + result);
    return {status: 200, body: result, contentType: "application/json"};
  } catch (e) {
    console.log("failed " + e.message);
    return {status: 502, body: e.message};
  }
}
function storage(context) {
  return JSON.stringify({
    set: secretStorage.setSecret("k", "v"),
    removed: secretStorage.removeSecret("k"),
    cleared: secretStorage.clear(),
    exists: secretStorage.exists(context.request.query.key || "tok"),
    blank: secretStorage.exists(""),
  });
}
routeRegistry.registerRoute("/go", "go", "GET");
routeRegistry.registerRoute("/storage", "storage", "GET");
"""


@pytest.fixture
async def target() -> AsyncIterator[str]:
    async with serving() as base:
        yield base


@pytest.fixture
async def fetching(tmp_path: Path) -> AsyncIterator[Engine]:
    """An engine whose scripts may fetch from loopback (where the target server runs)."""
    config = make_config(tmp_path / "data", **{"fetch.allow_networks": "127.0.0.0/8"})
    async with running_engine(config) as engine:
        await engine.deploy(SCRIPT, FETCHER)
        yield engine


async def set_secret(engine: Engine, key: str, value: str, **extra: Any) -> dict[str, Any]:
    response = await engine.client.post(
        "/engine/secrets", params={"script": SCRIPT}, json={"key": key, "value": value, **extra}
    )
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    return payload


# --- /engine/secrets -----------------------------------------------------------------------


async def test_the_secrets_api_lists_keys_and_never_values(engine: Engine) -> None:
    seen: list[str] = []
    first = await set_secret(engine, " tok ", VALUE)
    assert {k: first[k] for k in ("success", "script", "key", "created")} == {
        "success": True,
        "script": SCRIPT,
        "key": "tok",
        "created": True,
    }
    again = await set_secret(engine, "tok", VALUE + "2", allowed_hosts=["API.example.com"])
    assert again["created"] is False and again["allowedHosts"] == ["api.example.com"]
    await set_secret(engine, "other", VALUE + "3", allowedHosts="a.example, *.b.example")
    listing = await engine.client.get("/engine/secrets", params={"script": SCRIPT})
    seen.append(listing.text)
    payload = listing.json()
    assert (payload["keys"], payload["count"]) == (["other", "tok"], 2)
    assert payload["secrets"][0]["allowedHosts"] == ["a.example", "*.b.example"]
    assert set(payload["secrets"][1]) == {"key", "allowedHosts", "createdAt", "updatedAt"}
    removed = await engine.client.delete("/engine/secrets", params={"script": SCRIPT, "key": "tok"})
    assert removed.json()["success"] is True and removed.json()["key"] == "tok"
    missing = await engine.client.delete("/engine/secrets", params={"script": SCRIPT, "key": "tok"})
    assert missing.status_code == 404 and missing.json()["error"] == "Secret not found"
    cleared = await engine.client.delete("/engine/secrets", params={"script": SCRIPT})
    assert (cleared.json()["cleared"], cleared.json()["count"]) == (True, 1)
    empty = await engine.client.get("/engine/secrets", params={"script": SCRIPT})
    seen += [json.dumps(first), json.dumps(again), removed.text, missing.text, cleared.text]
    assert empty.json()["keys"] == []
    assert not any(VALUE in text for text in seen)


@pytest.mark.parametrize(
    ("params", "body", "parameter"),
    [
        ({}, {"key": "k", "value": "v"}, "script"),
        ({"script": SCRIPT}, {"value": "v"}, "key"),
        ({"script": SCRIPT}, {"key": "k"}, "value"),
        ({"script": SCRIPT}, {"key": "k", "value": 5}, "value"),
        ({"script": SCRIPT}, {"key": "k", "value": "v", "allowed_hosts": []}, "allowed_hosts"),
        ({"script": SCRIPT}, {"key": "k", "value": "v", "allowed_hosts": "x y"}, "allowed_hosts"),
        ({"script": SCRIPT}, ["k", "v"], "body"),
    ],
)
async def test_the_secrets_api_names_what_is_missing_or_wrong(
    engine: Engine, params: dict[str, str], body: Any, parameter: str
) -> None:
    response = await engine.client.post("/engine/secrets", params=params, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["parameter"] == parameter


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("   ", "v", "key: Key cannot be empty"),
        ("a{b}", "v", "key: Key must not contain '{', '}' or control characters"),
        ("k", "x" * 1_000_001, "value: Value too large (>1MB)"),
    ],
    # Short ids: pytest puts the id in the environment, which worker processes inherit.
    ids=["blank-key", "braces", "too-large"],
)
async def test_the_secrets_api_applies_the_storage_rules(
    engine: Engine, key: str, value: str, error: str
) -> None:
    response = await engine.client.post(
        "/engine/secrets", params={"script": SCRIPT}, json={"key": key, "value": value}
    )
    assert response.status_code == 400
    assert response.json()["error"] == error


async def test_secrets_are_encrypted_at_rest(engine: Engine) -> None:
    await set_secret(engine, "tok", VALUE)
    data_dir = engine.runtime.config.server.data_dir
    stored = b"".join(path.read_bytes() for path in data_dir.iterdir() if path.is_file())
    assert VALUE.encode() not in stored
    with sqlite3.connect(data_dir / "aiwebengine.db") as db:
        (sealed,) = db.execute("SELECT sealed FROM script_secrets WHERE key = 'tok'").fetchone()
    assert len(sealed) >= len(VALUE) + 28  # version, nonce and tag around the ciphertext


async def test_deleting_a_script_deletes_its_secrets(fetching: Engine) -> None:
    await set_secret(fetching, "tok", VALUE)
    response = await fetching.client.post("/engine/delete_script", data={"uri": SCRIPT})
    assert response.status_code == 200
    listing = await fetching.client.get("/engine/secrets", params={"script": SCRIPT})
    assert listing.json()["keys"] == []


# --- fetch from scripts --------------------------------------------------------------------


async def test_a_script_fetch_injects_the_secret_and_nothing_shows_it(
    fetching: Engine, target: str
) -> None:
    await set_secret(fetching, "tok", VALUE)
    response = await fetching.client.get("/go", params={"url": f"{target}/echo"})
    assert response.status_code == 200, response.text
    result = json.loads(response.text)
    assert (result["status"], result["ok"]) == (200, True)
    echo = json.loads(result["body"])
    # Replaced (the placeholder is gone), and masked in what the script got back.
    assert echo["headers"]["x-key"] == "Key ********"
    logs = await fetching.logs(uri=SCRIPT)
    assert any(entry["message"].startswith("fetched ") for entry in logs)
    assert not any(VALUE in entry["message"] for entry in logs)
    assert VALUE not in response.text


async def test_fetch_options_reach_the_server_as_text_or_object(
    fetching: Engine, target: str
) -> None:
    options = json.dumps({"method": "DELETE", "headers": {"X-A": "1"}})
    response = await fetching.client.get(
        "/go", params={"url": f"{target}/echo", "options": options}
    )
    echo = json.loads(json.loads(response.text)["body"])
    assert (echo["method"], echo["headers"]["x-a"]) == ("DELETE", "1")


async def test_fetch_failures_are_thrown_into_the_script(fetching: Engine, target: str) -> None:
    cases = [
        (
            "http://10.0.0.1/",
            "{}",
            "Fetch error: Blocked URL: 10.0.0.1 is not allowed (private address)",
        ),
        (f"{target}/echo", "", "Fetch error: Secret not found: tok"),
        (
            f"{target}/binary",
            "{}",
            "Fetch error: Response encoding error: the body is not valid utf-8 text",
        ),
        (
            f"{target}/slow?s=5",
            '{"timeout_ms": 100}',
            "Fetch error: Request failed: timed out after 100 ms",
        ),
    ]
    for url, options, message in cases:
        response = await fetching.client.get("/go", params={"url": url, "options": options})
        assert (response.status_code, response.text) == (502, message)
    bad_options = await fetching.client.get("/go", params={"url": target, "options": "{oops"})
    assert bad_options.text.startswith("Invalid fetch options: not valid JSON")


SSRF = [
    "http://127.0.0.1/",
    "http://0.0.0.0/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://10.0.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",
    "http://[fd00::1]/",
    "http://localhost/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:25/_HELO",
]


async def test_the_ssrf_suite_is_refused_and_audited(engine: Engine) -> None:
    await engine.deploy(SCRIPT, FETCHER)
    for url in SSRF:
        response = await engine.client.get("/go", params={"url": url, "options": "{}"})
        assert response.status_code == 502, (url, response.text)
        assert response.text.startswith("Fetch error: Blocked URL: "), (url, response.text)
    entries = await engine.runtime.audit.query(AuditQuery(action="fetch.blocked", limit=100))
    assert sorted(entry.target or "" for entry in entries) == sorted(SSRF)
    assert {entry.outcome for entry in entries} == {"denied"}
    assert all(json.loads(entry.detail or "{}")["script"] == SCRIPT for entry in entries)


async def test_a_host_name_that_resolves_to_loopback_is_refused(engine: Engine) -> None:
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, 80)}
    except OSError:
        pytest.skip("this machine's name does not resolve")
    if not addresses or not all(a.startswith("127.") or a == "::1" for a in addresses):
        pytest.skip(f"{name} does not resolve to loopback only here")
    await engine.deploy(SCRIPT, FETCHER)
    response = await engine.client.get("/go", params={"url": f"http://{name}/", "options": "{}"})
    assert response.text.startswith(f"Fetch error: Blocked URL: {name.lower()} resolves to ")
    assert "loopback address" in response.text


async def test_a_public_looking_url_that_redirects_to_loopback_is_refused(
    tmp_path: Path, target: str
) -> None:
    # Only the target's own address is allowed: it stands in for a public server.
    config = make_config(tmp_path / "data", **{"fetch.allow_networks": "127.0.0.1/32"})
    async with running_engine(config) as engine:
        await engine.deploy(SCRIPT, FETCHER)
        port = target.rsplit(":", 1)[1]
        hop = f"http://127.0.0.2:{port}/echo"
        url = f"{target}/redirect?to={hop}"
        response = await engine.client.get("/go", params={"url": url, "options": "{}"})
        assert response.text == (
            "Fetch error: Blocked URL (reached by a redirect): 127.0.0.2 is not allowed "
            "(loopback address)"
        )
        (entry,) = await engine.runtime.audit.query(AuditQuery(action="fetch.blocked"))
        assert entry.target == hop


# --- secretStorage -------------------------------------------------------------------------


async def test_secret_storage_answers_anonymous_callers_as_the_original(engine: Engine) -> None:
    await engine.deploy(SCRIPT, FETCHER)
    answers = (await engine.client.get("/storage")).json()
    assert answers == {
        "set": NEEDS_LOGIN,
        "removed": False,
        "cleared": NEEDS_LOGIN,
        "exists": False,
        "blank": False,
    }
    await set_secret(engine, "tok", VALUE)
    assert (await engine.client.get("/storage")).json()["exists"] is True


@pytest.fixture
async def user_secrets(tmp_path: Path) -> AsyncIterator[tuple[SecretHostApi, list[Any]]]:
    database = await Database.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    events: list[dict[str, Any]] = []

    async def record(event: dict[str, Any]) -> None:
        events.append(event)

    service = SecretService(database.secrets, SecretBox(key_from_text(generate_key_text())))
    await service.set(SecretOwner(SCRIPT), "shared", "script-level")
    try:
        yield SecretHostApi(service, audit=record), events
    finally:
        await database.aclose()


async def test_secret_storage_keeps_each_users_secrets(
    user_secrets: tuple[SecretHostApi, list[Any]],
) -> None:
    api, events = user_secrets

    async def call(method: str, *args: Any, user: str | None = "alice") -> Any:
        return await api.call(
            f"secretStorage.{method}", list(args), script_uri=SCRIPT, user_id=user
        )

    assert await call("setSecret", "token", VALUE) == "Secret set successfully"
    assert await call("exists", "token") is True
    assert await call("exists", "token", user="bob") is False
    assert await call("exists", "shared", user="bob") is True  # the script's own
    assert await call("setSecret", " ", "v") == "Error: Key cannot be empty"
    assert await call("setSecret", "big", "x" * 1_000_001) == "Error: Value too large (>1MB)"
    assert (await call("setSecret", "h", "v", ["no host!"])).startswith("Error: allowedHosts ")
    assert await call("setSecret", "h", "v", ["api.example.com"]) == "Secret set successfully"
    assert await call("removeSecret", "token") is True
    assert await call("removeSecret", "token") is False
    assert await call("clear") == "Secrets cleared successfully"
    assert await call("exists", "h") is False
    assert [event["action"] for event in events] == [
        "secret.set",
        "secret.set",
        "secret.delete",
        "secret.clear",
    ]
    assert {event["actor"] for event in events} == {"alice"}
    assert not any(VALUE in json.dumps(event) for event in events)


# --- the script log ------------------------------------------------------------------------


class _FakeFetch:
    async def call(self, args: list[Any], **_: Any) -> FetchOutcome:
        return FetchOutcome('{"status":200}', (VALUE,))


async def test_an_invocation_masks_the_secret_values_it_handled_in_every_log_line() -> None:
    host = InvocationHost(
        script_uri=SCRIPT,
        request_id="req_1",
        kind="httpRoute",
        route="/go",
        registering=False,
        storage=None,  # type: ignore[arg-type]
        fetch=_FakeFetch(),  # type: ignore[arg-type]
    )
    host.log("LOG", f"before: {VALUE}", 1)
    await host.call("fetch", ["https://example.com/", None])
    host.log("LOG", f"after: {VALUE}!", 2)
    host.lines.append(host.entry("FATAL", f"threw {VALUE}"))
    assert [line.message for line in host.lines] == [
        "before: ********",
        "after: ********!",
        "threw ********",
    ]


# --- keys and restarts ---------------------------------------------------------------------


async def test_secrets_survive_a_restart_with_the_development_key(
    tmp_path: Path, target: str
) -> None:
    config = make_config(tmp_path / "data", **{"fetch.allow_networks": "127.0.0.0/8"})
    async with running_engine(config) as engine:
        await engine.deploy(SCRIPT, FETCHER)
        await set_secret(engine, "tok", VALUE)
    key_file = tmp_path / "data" / "secret_encryption_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key_text = key_file.read_text()
    async with running_engine(config) as engine:
        response = await engine.client.get("/go", params={"url": f"{target}/echo"})
        echo = json.loads(json.loads(response.text)["body"])
        assert echo["headers"]["x-key"] == "Key ********"
    assert key_file.read_text() == key_text


async def test_a_configured_key_is_used_instead_of_a_development_key(
    tmp_path: Path, target: str
) -> None:
    key = generate_key_text()
    overrides = {"fetch.allow_networks": "127.0.0.0/8", "security.secret_encryption_key": key}
    config = make_config(tmp_path / "data", **overrides)
    async with running_engine(config) as engine:
        await engine.deploy(SCRIPT, FETCHER)
        await set_secret(engine, "tok", VALUE)
    assert not (tmp_path / "data" / "secret_encryption_key").exists()
    async with running_engine(config) as engine:
        response = await engine.client.get("/go", params={"url": f"{target}/echo"})
        assert json.loads(json.loads(response.text)["body"])["headers"]["x-key"] == "Key ********"
    other = make_config(
        tmp_path / "data",
        **{**overrides, "security.secret_encryption_key": generate_key_text()},
    )
    async with running_engine(other) as engine:
        response = await engine.client.get("/go", params={"url": f"{target}/echo"})
        assert response.text == "Fetch error: Secret 'tok' cannot be opened with the configured key"


def test_production_refuses_to_start_without_the_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIWEBENGINE_")}
    env["AIWEBENGINE_SECURITY__ADMIN_TOKEN"] = "p" * 48
    data_dir = tmp_path / "data"
    command = [sys.executable, "-m", "engine.cli", "serve", "--profile", "production"]
    completed = subprocess.run(
        [*command, "--port", "0", "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 2, output
    assert "security.secret_encryption_key: required in production" in output
    assert "AIWEBENGINE_SECURITY__SECRET_ENCRYPTION_KEY" in output
    assert "from security import generate_key_text; print(generate_key_text())" in output
    assert not data_dir.exists()
