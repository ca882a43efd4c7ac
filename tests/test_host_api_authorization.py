"""Capabilities inside the sandbox: every host API that checks one, for every kind of caller.

A script's route handler runs as its HTTP caller and its ``init()`` as the engine's admin
principal (UPSTREAM_API §6.1); host APIs answer a missing capability with the original's refusal
(§2.0, §2.3, §3).  The table below is {caller} x {host API} -> the exact answer, over real
sockets: anonymous callers on a production engine, anonymous callers on a development engine,
the admin token's holder on a production engine, and ``init()``.  The login work adds columns
(users, editors, owners) to :data:`ANSWERS`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.invocation_host import InvocationHost
from security import Capability, Role, UserContext, generate_key_text, insufficient
from tests.conftest import Engine, make_config, running_engine

TOKEN = secrets.token_urlsafe(36)
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
URI = "https://t/host-api"
GQL_DENIED = '{"errors":[{"message":"Insufficient capabilities: required [ManageGraphQL]"}]}'
ASSET_DENIED = "Access denied: Insufficient capabilities: required [WriteAssets]"

# Each host API as one JavaScript expression; `who` names the caller (unique script URIs).
CALLS: dict[str, str] = {
    "listAssets": (
        "JSON.parse(assetStorage.listAssets()).map(function (a) { return a.name; })"
        '.indexOf("a.txt") >= 0'
    ),
    "fetchAsset": 'assetStorage.fetchAsset("a.txt")',
    "upsertAsset": 'assetStorage.upsertAsset("b.txt", "text/plain", "aGk=")',
    "deleteAsset": 'assetStorage.deleteAsset("missing.txt")',
    "registerAssetRoute": 'routeRegistry.registerAssetRoute("/hx-asset", "a.txt")',
    "registerStreamRoute": 'routeRegistry.registerStreamRoute("/hx-stream")',
    "sendStreamMessage": 'routeRegistry.sendStreamMessage("/hx-stream", "m")',
    "sendStreamMessage /system/": 'routeRegistry.sendStreamMessage("/system/hx", "m")',
    "sendStreamMessageFiltered": (
        'routeRegistry.sendStreamMessageFiltered("/hx-stream", "m", null, null)'
    ),
    "registerQuery": 'graphQLRegistry.registerQuery("hxPing", "hxPing: String", "ping", "engine")',
    "sendSubscriptionMessage": 'graphQLRegistry.sendSubscriptionMessage("hxNone", "m")',
    "executeGraphQL": 'graphQLRegistry.executeGraphQL("{ __typename }", null)',
    "listScripts": "listScripts().indexOf(" + json.dumps(URI) + ") >= 0",
    "getScript": "typeof getScript(" + json.dumps(URI) + ")",
    "listLogs": "listLogs().length > 0",
    "listLogsForUri": "listLogsForUri(" + json.dumps(URI) + ").length > 0",
    "upsertScript": 'upsertScript("https://t/made-by-" + who, "function init() {}")',
    "deleteScript": 'deleteScript("https://t/never-there")',
    "writeLog": 'writeLog("written by " + who)',
}

SOURCE = (
    "var CALLS = {\n"
    + ",\n".join(
        f"  {json.dumps(name)}: function (who) {{ return {js}; }}" for name, js in CALLS.items()
    )
    + "\n};\n"
    + """
function ping() { return "pong"; }
function runAll(who) {
  var results = {};
  for (var name in CALLS) {
    try { results[name] = CALLS[name](who); } catch (e) { results[name] = "threw: " + e.message; }
  }
  return results;
}
function hx(context) {
  var who = context.request.query.who;
  console.log("console line of " + who);
  return ResponseBuilder.json(runAll(who));
}
function initResults(context) { return sharedStorage.getItem("init"); }
function init() {
  console.log("init ran");
  assetStorage.upsertAsset("a.txt", "text/plain", "aGk=");
  routeRegistry.registerRoute("/hx", "hx", "GET");
  routeRegistry.registerRoute("/hx-init", "initResults", "GET");
  sharedStorage.setItem("init", JSON.stringify(runAll("init")));
}
"""
)


def not_in_phase(api: str, name: str) -> str:
    return (
        f"{api}: '{name}' not registered - registration only takes effect during script "
        "startup and init()"
    )


def sent(path: str, *, filtered: bool = False) -> str:
    kind = "filtered message" if filtered else "message"
    return f"Successfully sent {kind} to 0 connections on path '{path}'"


# What every caller holding the capabilities gets from a route handler.
HANDLER_ALLOWED: dict[str, Any] = {
    "listAssets": True,
    "fetchAsset": "aGk=",
    "upsertAsset": "Asset 'b.txt' upserted successfully",
    "deleteAsset": "Asset 'missing.txt' not found",
    "registerAssetRoute": not_in_phase("routeRegistry.registerAssetRoute", "/hx-asset"),
    "registerStreamRoute": not_in_phase("routeRegistry.registerStreamRoute", "/hx-stream"),
    "sendStreamMessage": sent("/hx-stream"),
    "sendStreamMessage /system/": sent("/system/hx"),
    "sendStreamMessageFiltered": sent("/hx-stream", filtered=True),
    "registerQuery": not_in_phase("graphQLRegistry.registerQuery", "hxPing"),
    "sendSubscriptionMessage": "GraphQL subscription message sent to 'hxNone' (0 connections) "
    "successfully",
    "executeGraphQL": '{"data":{"__typename":"Query"}}',
    "listScripts": True,
    "getScript": "string",
    "listLogs": True,
    "listLogsForUri": True,
    "upsertScript": "Script 'https://t/made-by-{who}' upserted successfully",
    "deleteScript": False,
    "writeLog": "Log written successfully",
}

# Anonymous production callers hold ReadScripts and ReadAssets only.
ANONYMOUS_PRODUCTION: dict[str, Any] = {
    **HANDLER_ALLOWED,
    "upsertAsset": ASSET_DENIED,
    "deleteAsset": insufficient(Capability.DeleteAssets),
    "registerAssetRoute": ASSET_DENIED,
    "sendStreamMessage": insufficient(Capability.ManageStreams),
    "sendStreamMessageFiltered": insufficient(Capability.ManageStreams),
    "sendSubscriptionMessage": insufficient(Capability.ManageGraphQL),
    "executeGraphQL": GQL_DENIED,
    "listLogs": False,  # [] without ViewLogs
    "listLogsForUri": False,
    "upsertScript": insufficient(Capability.WriteScripts),
    "deleteScript": insufficient(Capability.DeleteScripts),
}

# init() runs as the engine's admin principal, with the registration phase open.
INIT: dict[str, Any] = {
    **HANDLER_ALLOWED,
    "registerAssetRoute": "Asset path '/hx-asset' registered to asset 'a.txt'",
    "registerStreamRoute": "Web stream '/hx-stream' registered successfully",
    "registerQuery": "GraphQL query 'hxPing' registered successfully",
}

# caller -> (expected answers, whether its console lines are recorded)
ANSWERS: dict[str, tuple[dict[str, Any], bool]] = {
    "anonymous-production": (ANONYMOUS_PRODUCTION, False),
    "anonymous-development": (HANDLER_ALLOWED, True),
    "admin-production": (HANDLER_ALLOWED, True),
    "init": (INIT, True),
}


def expected(who: str) -> dict[str, Any]:
    answers, _ = ANSWERS[who]
    return {
        name: value.replace("{who}", who) if isinstance(value, str) else value
        for name, value in answers.items()
    }


@asynccontextmanager
async def engine_in(tmp_path: Path, profile: str) -> AsyncIterator[Engine]:
    overrides: dict[str, Any] = {"profile": profile, "security.admin_token": TOKEN}
    if profile == "production":
        overrides["security.secret_encryption_key"] = generate_key_text()
    config = make_config(tmp_path / profile, **overrides)
    async with running_engine(config, headers=ADMIN) as engine:
        # Deployed twice: the second init() finds the first one's log lines.
        await engine.deploy(URI, SOURCE)
        report = await engine.deploy(URI, SOURCE + "\n// again\n")
        assert report["init"]["success"] is True, report
        yield engine


async def answers_of(engine: Engine, who: str, headers: dict[str, str]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=engine.base_url, headers=headers) as client:
        response = await client.get("/hx", params={"who": who})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def console_lines(engine: Engine) -> list[str]:
    return [entry["message"] for entry in await engine.logs(uri=URI)]


def assert_console(lines: list[str], who: str) -> None:
    """``writeLog`` (every caller) and ``console.log`` (route handlers) lines are recorded only
    for callers holding ViewLogs."""
    _, recorded = ANSWERS[who]
    assert (f"written by {who}" in lines) is recorded
    if who != "init":
        assert (f"console line of {who}" in lines) is recorded


async def test_host_apis_in_production(tmp_path: Path) -> None:
    async with engine_in(tmp_path, "production") as engine:
        for who, headers in (("anonymous-production", {}), ("admin-production", ADMIN)):
            assert await answers_of(engine, who, headers) == expected(who), who
        response = await engine.client.get("/hx-init")
        assert json.loads(response.text) == expected("init")
        lines = await console_lines(engine)
        for who in ("anonymous-production", "admin-production", "init"):
            assert_console(lines, who)
        # Every refusal is in the audit trail, as the anonymous caller's; nothing for the admin.
        audit = await engine.client.get("/engine/audit", params={"action": "host_api.denied"})
        entries = audit.json()["entries"]
        assert entries, audit.text
        assert {entry["method"] for entry in entries} == {"anonymous"}
        assert {entry["outcome"] for entry in entries} == {"denied"}
        assert {entry["target"] for entry in entries} == {URI}
        refused = {entry["detail"]["api"] for entry in entries}
        assert "assetStorage.upsertAsset" in refused, refused


async def test_host_apis_in_development(tmp_path: Path) -> None:
    async with engine_in(tmp_path, "development") as engine:
        who = "anonymous-development"
        assert await answers_of(engine, who, {}) == expected(who)
        assert_console(await console_lines(engine), who)


def test_every_host_api_has_an_answer_for_every_caller() -> None:
    for who, (answers, _) in ANSWERS.items():
        assert answers.keys() == CALLS.keys(), who
    # The table is no tautology: production refuses anonymous callers something.
    assert ANONYMOUS_PRODUCTION != HANDLER_ALLOWED


class _Writes:
    """The script service as ``upsertScript`` sees it: which scripts exist, what was written."""

    def __init__(self, existing: set[str]) -> None:
        self.existing = existing
        self.upserted: list[str] = []

    async def exists(self, uri: str) -> bool:
        return uri in self.existing

    async def upsert(self, uri: str, content: str, *, held: tuple[str, ...] = ()) -> None:
        self.upserted.append(uri)


@pytest.mark.parametrize(
    ("user", "uri", "answer"),
    [
        # A logged-in user may change scripts but not create them (CreateScripts).
        (UserContext.user("ann"), "new", insufficient(Capability.CreateScripts)),
        (UserContext.user("ann"), "old", "Script 'old' upserted successfully"),
        (UserContext.user("ed", [Role.Editor]), "new", "Script 'new' upserted successfully"),
        (UserContext.anonymous(), "old", insufficient(Capability.WriteScripts)),
    ],
)
async def test_upsert_script_needs_create_scripts_for_a_new_uri(
    user: UserContext, uri: str, answer: str
) -> None:
    writes = _Writes({"old"})
    host = make_host(user, writes)
    assert await host.call("upsertScript", [uri, "function init() {}"]) == answer
    assert writes.upserted == ([uri] if answer.startswith("Script") else [])


def make_host(user: UserContext, writes: _Writes) -> InvocationHost:
    build: Callable[..., InvocationHost] = InvocationHost
    return build(
        script_uri="s",
        request_id="req_1",
        kind="httpRoute",
        route="/r",
        registering=False,
        storage=None,
        writes=writes,
        user=user,
        development=False,
    )


async def test_engine_invocations_run_as_admin_whoever_triggered_them() -> None:
    host = InvocationHost(
        script_uri="s",
        request_id="r",
        kind="messageListener",
        route=None,
        registering=False,
        storage=None,  # type: ignore[arg-type]
        user=UserContext.anonymous(),
        development=False,
    )
    assert host.user.is_admin and host.may(Capability.DeleteScripts)
    host.log("LOG", "kept", 0)
    assert [line.message for line in host.lines] == ["kept"]
