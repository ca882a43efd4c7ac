"""Who may call which ``/engine`` endpoint: every endpoint, identity and profile, as a table.

The endpoints are enumerated from the application's URL map, so an endpoint added without a
row here fails :func:`test_every_engine_endpoint_has_a_row`.  Each row names what the endpoint
requires (a capability, a role, or nothing) and how to call it so that it succeeds; the
expected status of every identity follows from ``security``'s capability table and the
``/engine`` door, so adding an identity (the login work: users, editors, owners) is adding a
column, not rewriting rows.

Identities: anonymous and the admin token, in both profiles; and, in development, a logged-in
user and an editor, identified through a stand-in for the sessions login will add (the gate's
``identify`` is where they plug in).  In production the door still asks the admin token of
everyone until login exists.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

from engine.app import create_app
from handlers._access import PUBLIC, REQUIREMENT_ATTR, Requirement
from handlers._gate import Caller, Gate
from security import AuthMethod, Capability, Role, UserContext, can, generate_key_text
from tests.conftest import Engine, make_config, running_engine

TOKEN = secrets.token_urlsafe(36)
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
SCRIPT = "https://t/matrix"
DOOMED = "https://t/doomed"
SOURCE = (
    'function ping() { return "pong"; }\n'
    'function init() { routeRegistry.registerRoute("/matrix-ping", "ping", "GET"); }\n'
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@attrs.frozen
class Call:
    """One way to call an endpoint that succeeds with ``ok`` when the caller is allowed."""

    options: dict[str, Any] = attrs.field(factory=dict)
    ok: int = 200
    stream: bool = False  # an event stream: read the status, then leave
    # Admin-side preparation before each call (what a write consumes: a script to delete...).
    prepare: Callable[[Engine], Any] | None = None


async def deploy_doomed(engine: Engine) -> None:
    response = await engine.client.post(
        "/engine/upsert_script", data={"uri": DOOMED, "content": SOURCE}, headers=ADMIN
    )
    assert response.status_code == 200, response.text


async def upload_asset(engine: Engine) -> None:
    response = await engine.client.post(
        "/engine/assets",
        params={"script": SCRIPT},
        json={"asset": "a.txt", "mimetype": "text/plain", "content": b64("hello")},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text


# (method, URL rule) -> (requirement, call).  The requirement must match the view's declaration.
ROWS: dict[tuple[str, str], tuple[Requirement, Call]] = {
    ("POST", "/engine/upsert_script"): (
        Capability.WriteScripts,
        Call({"data": {"uri": SCRIPT, "content": SOURCE}}),
    ),
    ("POST", "/engine/delete_script"): (
        Capability.DeleteScripts,
        Call({"data": {"uri": DOOMED}}, prepare=deploy_doomed),
    ),
    ("GET", "/engine/read_script"): (Capability.ReadScripts, Call({"params": {"uri": SCRIPT}})),
    ("GET", "/engine/scripts"): (Capability.ReadScripts, Call()),
    ("GET", "/engine/script_init_status"): (Capability.ReadScripts, Call()),
    ("GET", "/engine/script_logs"): (Capability.ViewLogs, Call()),
    ("DELETE", "/engine/script_logs"): (
        Capability.DeleteLogs,
        Call({"params": {"uri": SCRIPT}}),
    ),
    ("GET", "/engine/script_logs/stream"): (Capability.ViewLogs, Call(stream=True)),
    ("GET", "/engine/routes"): (Capability.ReadScripts, Call()),
    ("GET", "/engine/types/aiwebengine.d.ts"): (PUBLIC, Call()),
    ("GET", "/engine/types/v0.1.0/aiwebengine.d.ts"): (PUBLIC, Call()),
    ("GET", "/engine/installed"): (PUBLIC, Call()),
    ("GET", "/engine/openapi.json"): (Capability.ReadScripts, Call()),
    ("GET", "/engine/assets"): (Capability.ReadAssets, Call({"params": {"script": SCRIPT}})),
    ("POST", "/engine/assets"): (
        Capability.WriteAssets,
        Call(
            {
                "params": {"script": SCRIPT},
                "json": {"asset": "b.txt", "mimetype": "text/plain", "content": b64("x")},
            },
            ok=201,
        ),
    ),
    ("PATCH", "/engine/assets"): (
        Capability.WriteAssets,
        Call(
            {
                "json": {
                    "script": SCRIPT,
                    "asset": "a.txt",
                    "edits": [{"old_string": "hello", "new_string": "howdy"}],
                    "reinit": "never",
                }
            },
            prepare=upload_asset,
        ),
    ),
    ("POST", "/engine/assets/batch"): (
        Capability.WriteAssets,
        Call({"json": {"script": SCRIPT, "files": [{"name": "c.txt", "content": "c"}]}}),
    ),
    ("DELETE", "/engine/assets"): (
        Capability.DeleteAssets,
        Call({"params": {"script": SCRIPT, "asset": "a.txt"}}, prepare=upload_asset),
    ),
    ("GET", "/engine/script_updates"): (Capability.ReadScripts, Call(stream=True)),
    ("GET", "/engine/graphql/schema"): (Capability.ReadScripts, Call()),
    ("GET", "/engine/audit"): (Role.Administrator, Call()),
    ("GET", "/engine/secrets"): (Capability.WriteScripts, Call({"params": {"script": SCRIPT}})),
    ("POST", "/engine/secrets"): (
        Capability.WriteScripts,
        Call({"params": {"script": SCRIPT}, "json": {"key": "K", "value": "v"}}),
    ),
    ("DELETE", "/engine/secrets"): (
        Capability.WriteScripts,
        Call({"params": {"script": SCRIPT}}),
    ),
}


def engine_endpoints() -> dict[tuple[str, str], Any]:
    """Every (method, rule) the application serves under /engine, with its view."""
    app = create_app(make_config(Path("/nonexistent-matrix-data")))
    found = {}
    for rule in app.url_map.iter_rules():
        if rule.rule == "/engine" or rule.rule.startswith("/engine/"):
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                found[(method, rule.rule)] = app.view_functions[rule.endpoint]
    return found


def test_every_engine_endpoint_has_a_row() -> None:
    assert set(engine_endpoints()) == set(ROWS)


def test_each_endpoint_declares_the_requirement_of_its_row() -> None:
    declared = {
        key: getattr(view, REQUIREMENT_ATTR, None) for key, view in engine_endpoints().items()
    }
    assert declared == {key: requirement for key, (requirement, _) in ROWS.items()}


# -- identities and expectations ------------------------------------------------------------


@attrs.frozen
class Identity:
    name: str
    headers: dict[str, str]
    user: UserContext


ANONYMOUS = Identity("anonymous", {}, UserContext.anonymous())
ADMIN_TOKEN = Identity("admin token", ADMIN, UserContext.admin_token())
# Stand-ins for login sessions (development only; see stand_in_sessions).
USER = Identity("user", {"x-matrix-user": "alice"}, UserContext.user("alice"))
EDITOR = Identity("editor", {"x-matrix-user": "erin"}, UserContext.user("erin", [Role.Editor]))
STAND_INS = {"alice": USER.user, "erin": EDITOR.user}


def expected_status(
    identity: Identity, requirement: Requirement, call: Call, *, production: bool
) -> int:
    if requirement == PUBLIC:
        return call.ok
    if production and identity.user.method is not AuthMethod.ADMIN_TOKEN:
        return 401  # the door: production asks the admin token of everyone until login
    if isinstance(requirement, Role):
        return call.ok if requirement in identity.user.roles else 403
    assert isinstance(requirement, Capability)
    return call.ok if can(identity.user, requirement, development=not production) else 403


async def observed_status(
    engine: Engine, identity: Identity, method: str, path: str, call: Call
) -> int:
    if call.prepare is not None:
        await call.prepare(engine)
    client = engine.client
    if call.stream:
        async with client.stream(method, path, headers=identity.headers, **call.options) as r:
            return r.status_code
    response = await client.request(method, path, headers=identity.headers, **call.options)
    if response.status_code in (401, 403):
        # Every refusal is JSON naming what is missing.
        body = response.json()
        assert body["error"], body
    return response.status_code


async def run_matrix(engine: Engine, identities: list[Identity], *, production: bool) -> None:
    await engine.client.post(
        "/engine/upsert_script", data={"uri": SCRIPT, "content": SOURCE}, headers=ADMIN
    )
    await upload_asset(engine)
    mismatches = []
    for (method, path), (requirement, call) in ROWS.items():
        for identity in identities:
            want = expected_status(identity, requirement, call, production=production)
            got = await observed_status(engine, identity, method, path, call)
            if got != want:
                mismatches.append(f"{identity.name} {method} {path}: {got}, expected {want}")
    assert mismatches == []


@pytest.fixture
def stand_in_sessions(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Identify ``x-matrix-user`` callers as logged-in users, where login sessions will be."""
    identify = Gate.identify

    def with_sessions(self: Gate, scope: Any) -> Caller:
        caller = identify(self, scope)
        for name, value in scope.get("headers", ()):
            if name == b"x-matrix-user":
                return Caller(STAND_INS[value.decode()], caller.client_ip)
        return caller

    monkeypatch.setattr(Gate, "identify", with_sessions)
    yield


@asynccontextmanager
async def engine_in(tmp_path: Path, profile: str) -> AsyncIterator[Engine]:
    overrides: dict[str, Any] = {"profile": profile, "security.admin_token": TOKEN}
    if profile == "production":
        overrides["security.secret_encryption_key"] = generate_key_text()
    async with running_engine(make_config(tmp_path / "data", **overrides)) as engine:
        yield engine


async def test_the_matrix_in_development_on_loopback(
    tmp_path: Path, stand_in_sessions: None
) -> None:
    async with engine_in(tmp_path, "development") as engine:
        await run_matrix(engine, [ANONYMOUS, ADMIN_TOKEN, USER, EDITOR], production=False)


async def test_the_matrix_in_production(tmp_path: Path) -> None:
    async with engine_in(tmp_path, "production") as engine:
        await run_matrix(engine, [ANONYMOUS, ADMIN_TOKEN], production=True)


def test_the_expectations_are_not_all_alike() -> None:
    # Guards the table against a degenerate expectation function: each profile has allowed
    # and refused cells, and refusals of both kinds.
    development = {
        expected_status(identity, requirement, call, production=False)
        for identity in (ANONYMOUS, ADMIN_TOKEN, USER, EDITOR)
        for requirement, call in ROWS.values()
    }
    production = {
        expected_status(identity, requirement, call, production=True)
        for identity in (ANONYMOUS, ADMIN_TOKEN)
        for requirement, call in ROWS.values()
    }
    assert {200, 201, 403} <= development and 401 not in development
    assert {200, 201, 401} <= production and 403 not in production


# -- the refusals themselves ----------------------------------------------------------------


async def test_a_missing_capability_is_a_403_naming_it(
    tmp_path: Path, stand_in_sessions: None
) -> None:
    async with engine_in(tmp_path, "development") as engine:
        response = await engine.client.post(
            "/engine/delete_script", data={"uri": SCRIPT}, headers=USER.headers
        )

    assert response.status_code == 403
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == "Insufficient capabilities: required [DeleteScripts]"
    assert body["capability"] == "DeleteScripts"
    assert body["required"] == ["DeleteScripts"]
    assert body["timestamp"].endswith("Z")


async def test_creating_a_script_needs_editor_while_updating_needs_write(
    tmp_path: Path, stand_in_sessions: None
) -> None:
    async with engine_in(tmp_path, "development") as engine:
        refused = await engine.client.post(
            "/engine/upsert_script",
            data={"uri": "https://t/new", "content": SOURCE},
            headers=USER.headers,
        )
        created = await engine.client.post(
            "/engine/upsert_script",
            data={"uri": "https://t/new", "content": SOURCE},
            headers=EDITOR.headers,
        )
        updated = await engine.client.post(
            "/engine/upsert_script",
            data={"uri": "https://t/new", "content": SOURCE + "\n"},
            headers=USER.headers,
        )

    assert refused.status_code == 403
    assert refused.json()["capability"] == "CreateScripts"
    assert created.status_code == 200 and created.json()["created"] is True
    assert updated.status_code == 200 and updated.json()["created"] is False


async def test_the_audit_trail_needs_the_administrator_role_not_only_capabilities(
    tmp_path: Path,
) -> None:
    async with engine_in(tmp_path, "development") as engine:
        anonymous = await engine.client.get("/engine/audit")
        admin = await engine.client.get("/engine/audit", headers=ADMIN)

    # The development profile's anonymous callers hold every capability, but no role.
    assert anonymous.status_code == 403
    assert anonymous.json()["error"] == "Insufficient role: required [Administrator]"
    assert anonymous.json()["role"] == "Administrator"
    assert admin.status_code == 200


async def test_a_refused_write_changes_nothing(tmp_path: Path, stand_in_sessions: None) -> None:
    async with engine_in(tmp_path, "development") as engine:
        await engine.deploy(SCRIPT, SOURCE)
        refused = await engine.client.post(
            "/engine/delete_script", data={"uri": SCRIPT}, headers=USER.headers
        )
        still = await engine.client.get("/engine/read_script", params={"uri": SCRIPT})
        ping = await engine.client.get("/matrix-ping")

    assert refused.status_code == 403
    assert still.status_code == 200 and still.text == SOURCE
    assert ping.text == "pong"
