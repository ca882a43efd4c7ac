"""``GET /engine/openapi.json``: a valid OpenAPI 3.1 document that tells the truth.

The document is checked three ways: it validates as OpenAPI 3.1; its ``/engine`` operations are
exactly the application's ``/engine`` URL rules, each stating what its view requires; and
schemathesis calls every non-streaming operation of a running engine with generated requests
(a bounded number per operation) and checks each answer against the document -- no server
error, a documented status code and content type, a body matching the documented schema.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import hypothesis
import schemathesis
import trio
from hypothesis import strategies
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from handlers._access import REQUIREMENT_ATTR
from handlers.openapi import ENGINE_OPERATIONS, EXAMPLE_SCRIPT, openapi_path
from security import generate_key_text
from tests.conftest import Engine, make_config, running_engine
from tests.test_authorization_matrix import engine_endpoints

TOKEN = secrets.token_urlsafe(36)
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
SCRIPT = "https://t/documented"
SOURCE = """
function item(req) { return { status: 200, body: "item " + req.params.id }; }
function create(req) { return { status: 201, body: "made" }; }
function init() {
  routeRegistry.registerRoute("/items/:id", "item", "GET", {
    summary: "One item", description: "Reads an item by id", tags: ["Items"],
  });
  routeRegistry.registerRoute("/items", "create", "POST", { summary: "Make an item" });
  routeRegistry.registerRoute("/plain", "create", "GET");
  routeRegistry.registerStreamRoute("/items/feed", null, {
    summary: "Item changes", tags: ["Feeds"],
  });
}
"""
# Event streams never end: schemathesis would wait for the whole body.
STREAMING = {"/engine/script_logs/stream", "/engine/script_updates"}


def engine_in(tmp_path: Path, profile: str = "development") -> Any:
    overrides: dict[str, Any] = {"profile": profile, "security.admin_token": TOKEN}
    if profile == "production":
        overrides["security.secret_encryption_key"] = generate_key_text()
    return running_engine(make_config(tmp_path / "data", **overrides), headers=ADMIN)


async def fetch_document(engine: Engine) -> dict[str, Any]:
    response = await engine.client.get("/engine/openapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    document: dict[str, Any] = response.json()
    return document


def test_every_engine_endpoint_is_described_and_nothing_else() -> None:
    assert set(ENGINE_OPERATIONS) == set(engine_endpoints())


def test_operation_ids_are_unique() -> None:
    ids = [operation["operationId"] for operation in ENGINE_OPERATIONS.values()]
    assert len(ids) == len(set(ids))


def test_route_paths_become_path_templates() -> None:
    assert openapi_path("/items/:id/parts/:part") == (
        "/items/{id}/parts/{part}",
        [
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "part", "in": "path", "required": True, "schema": {"type": "string"}},
        ],
    )
    assert openapi_path("/plain") == ("/plain", [])
    assert openapi_path("/files/*") == ("/files/*", [])
    # Braces in a literal path must not read as a template.
    assert openapi_path("/a{b}") == ("/a%7Bb%7D", [])
    # A bare ":" is a literal segment, and a repeated name is one parameter.
    assert openapi_path("/:/x") == ("/:/x", [])
    assert openapi_path("/:a/:a")[1] == [
        {"name": "a", "in": "path", "required": True, "schema": {"type": "string"}}
    ]


async def test_the_document_is_valid_openapi_3_1_with_the_script_routes(tmp_path: Path) -> None:
    async with engine_in(tmp_path) as engine:
        await engine.deploy(SCRIPT, SOURCE)
        document = await fetch_document(engine)

    # Raises on any violation of the OpenAPI 3.1 schema.
    schemathesis.openapi.from_dict(document).validate()
    assert document["openapi"] == "3.1.0"
    paths = document["paths"]
    item = paths["/items/{id}"]["get"]
    assert item["summary"] == "One item"
    assert item["description"] == "Reads an item by id"
    assert item["tags"] == ["Items"]
    assert item["parameters"] == [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    assert item["x-script-uri"] == SCRIPT
    assert item["x-handler"] == "item"
    assert paths["/items"]["post"]["summary"] == "Make an item"
    assert "summary" not in paths["/plain"]["get"]
    feed = paths["/items/feed"]["get"]
    assert feed["summary"] == "Item changes" and feed["tags"] == ["Feeds"]
    assert "text/event-stream" in feed["responses"]["200"]["content"]


async def test_the_document_follows_the_scripts(tmp_path: Path) -> None:
    async with engine_in(tmp_path) as engine:
        before = await fetch_document(engine)
        await engine.deploy(SCRIPT, SOURCE)
        during = await fetch_document(engine)
        await engine.client.post("/engine/delete_script", data={"uri": SCRIPT})
        after = await fetch_document(engine)

    assert "/items/{id}" not in before["paths"]
    assert "/items/{id}" in during["paths"]
    assert after["paths"] == before["paths"]


async def test_each_operation_states_what_its_view_requires(tmp_path: Path) -> None:
    async with engine_in(tmp_path) as engine:
        document = await fetch_document(engine)

    for (method, rule), view in engine_endpoints().items():
        operation = document["paths"][rule][method.lower()]
        requirement = getattr(view, REQUIREMENT_ATTR)
        stated = operation.get("x-required-capability") or operation.get("x-required-role")
        if requirement == "public":
            assert stated is None and operation["security"] == [{}], rule
        else:
            assert stated == requirement.name, rule
            assert {"401", "403", "429"} <= set(operation["responses"]), rule
    assert document["paths"]["/engine/openapi.json"]["get"]["x-required-capability"] == (
        "ReadScripts"
    )


async def test_errors_are_documented_with_the_engine_error_shape(tmp_path: Path) -> None:
    async with engine_in(tmp_path) as engine:
        document = await fetch_document(engine)
        missing = await engine.client.get("/engine/read_script", params={"uri": "https://t/none"})

    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "timestamp"]
    assert missing.status_code == 404
    assert set(error["required"]) <= set(missing.json())
    responses = document["paths"]["/engine/read_script"]["get"]["responses"]
    assert responses["404"] == {"$ref": "#/components/responses/NotFound"}


async def test_production_asks_the_token_for_the_document(tmp_path: Path) -> None:
    async with engine_in(tmp_path, "production") as engine:
        anonymous = await engine.client.get("/engine/openapi.json", headers={"Authorization": ""})
        admin = await engine.client.get("/engine/openapi.json")

    assert anonymous.status_code == 401
    assert admin.status_code == 200


# -- schemathesis against a running engine --------------------------------------------------

CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def exercise_operation(operation: Any, base_url: str) -> set[int]:
    """Call one operation with generated requests (failing on any check); the statuses seen."""
    seen: set[int] = set()
    # The document's examples (which name a deployed script, so writes can succeed) and
    # generated requests.
    examples = operation.get_strategies_from_examples()

    @hypothesis.settings(
        max_examples=10,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=strategies.one_of(*examples, operation.as_strategy()))
    def call(case: Any) -> None:
        response = case.call_and_validate(
            base_url=base_url, headers=ADMIN, checks=CHECKS, timeout=30
        )
        seen.add(response.status_code)

    call()
    return seen


def exercise(document: dict[str, Any], base_url: str) -> tuple[dict[str, set[int]], list[str]]:
    """Call every non-streaming /engine operation: the statuses each answered with, and the
    failures found."""
    schema = schemathesis.openapi.from_dict(document)
    statuses: dict[str, set[int]] = {}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in STREAMING or not operation.path.startswith("/engine/"):
            continue
        name = f"{operation.method.upper()} {operation.path}"
        try:
            statuses[name] = exercise_operation(operation, base_url)
        # Every operation's failures, not only the first (schemathesis raises a group).
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{name}: {exc}")
    return statuses, failures


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    tmp_path: Path,
) -> None:
    async with engine_in(tmp_path) as engine:
        await engine.deploy(SCRIPT, SOURCE)
        # The script the document's examples name, so that they can succeed.
        await engine.deploy(EXAMPLE_SCRIPT, SOURCE.replace("/items", "/example"))
        document = await fetch_document(engine)
        # The calls are synchronous: make them from a thread while the engine serves here.
        statuses, failures = await trio.to_thread.run_sync(exercise, document, engine.base_url)

    assert failures == []

    # Every operation was called, and generated requests reached success and refusal alike.
    assert len(statuses) == len(ENGINE_OPERATIONS) - len(STREAMING)
    assert all(statuses.values()), statuses
    assert {200, 201, 400, 404} <= set().union(*statuses.values())


async def test_route_metadata_parameters_and_request_body_are_documented(engine: Engine) -> None:
    source = """
function init() {
  routeRegistry.registerRoute("/items/:id", "item", "POST", {
    summary: "Update an item",
    parameters: JSON.stringify([{name: "dry", in: "query", schema: {type: "boolean"}}]),
    requestBody: {content: {"application/json": {schema: {type: "object"}}}},
  });
  routeRegistry.registerRoute("/broken", "item", "GET", {parameters: "[not json", requestBody: 3});
}
function item() { return "ok"; }
"""
    await engine.deploy("meta", source)
    document = (await engine.client.get("/engine/openapi.json")).json()
    operation = document["paths"]["/items/{id}"]["post"]
    assert operation["summary"] == "Update an item"
    names = [(p["name"], p["in"]) for p in operation["parameters"]]
    assert names == [("id", "path"), ("dry", "query")]
    assert operation["requestBody"] == {
        "content": {"application/json": {"schema": {"type": "object"}}}
    }
    broken = document["paths"]["/broken"]["get"]
    assert "parameters" not in broken and "requestBody" not in broken
