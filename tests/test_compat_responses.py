"""Compatibility: how a handler's return value becomes the HTTP response, and how failures look.

UPSTREAM_API.md §1.2 (handler lookup), §1.6 (return value → response), §1.7 (errors), §1.8
(``ResponseBuilder``) and §8 items 6-8.  Deliberate difference: the error envelope is sent as
``application/json`` (the original labelled the same JSON text ``text/plain``).
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from tests.conftest import Engine

RESPONSES_SCRIPT = r"""
var ROUTES = {
  "/r/string": function () { return "plain words"; },
  "/r/undefined": function () { return undefined; },
  "/r/number": function () { return 42; },
  "/r/no-status": function () { return { body: "no status here" }; },
  "/r/null-status": function () { return { status: null, body: "x" }; },
  "/r/custom-status": function () { return { status: 418, body: "teapot" }; },
  "/r/no-body": function () { return { status: 200 }; },
  "/r/base64": function () { return { status: 200, bodyBase64: "AAEC/w==" }; },
  "/r/base64-typed": function () {
    return { status: 200, bodyBase64: "iVBORw==", contentType: "image/png" };
  },
  "/r/bad-base64": function () { return { status: 200, bodyBase64: "not base64!" }; },
  "/r/header-override": function () {
    return { status: 200, body: "{}", contentType: "text/plain",
             headers: { "Content-Type": "application/json", "X-Extra": "1" } };
  },
  "/r/non-string-headers": function () {
    return { status: 200, body: "ok",
             headers: { "X-Number": 7, "X-Bool": true, "X-Null": null, "X-Object": { a: 1 },
                        "X-Array": ["a"], "X-String": "kept" } };
  },
  "/r/number-body": function () { return { status: 200, body: 5 }; },
  "/r/to-string-body": function () {
    return { status: 200, body: { toString: function () { return "from toString"; } } };
  },
  "/r/html-body": function () { return { status: 200, body: { __html: "<b>safe</b>" },
                                         contentType: "text/html; charset=UTF-8" }; },
};
var handlerNames = [];
Object.keys(ROUTES).forEach(function (path, index) {
  var name = "route" + index;
  globalThis[name] = ROUTES[path];
  handlerNames.push([path, name]);
});
function init() {
  handlerNames.forEach(function (pair) { routeRegistry.registerRoute(pair[0], pair[1], "GET"); });
}
"""


def envelope_of(response: Any) -> dict[str, Any]:
    """The error envelope of a solution-route response, after checking its framing."""
    assert response.headers["content-type"] == "application/json"
    payload: dict[str, Any] = response.json()
    assert payload["status"] == response.status_code
    error: dict[str, Any] = payload["error"]
    assert error["request_id"] == response.headers["x-request-id"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", error["timestamp"])
    return error


def script_failure(response: Any) -> str:
    """Check a 500 SCRIPT_EXECUTION_FAILED envelope and return its ``details``."""
    assert response.status_code == 500, response.text
    error = envelope_of(response)
    assert error["code"] == "SCRIPT_EXECUTION_FAILED"
    assert error["message"] == "Script execution failed"
    details: str = error["details"]
    return details


@pytest.fixture
async def responses(engine: Engine) -> Engine:
    report = await engine.deploy("responses.js", RESPONSES_SCRIPT)
    assert report["init"]["success"] is True, report
    return engine


async def test_strings_and_non_objects_become_200_text(responses: Engine) -> None:
    text = await responses.client.get("/r/string")
    assert text.status_code == 200
    assert text.headers["content-type"] == "text/plain; charset=UTF-8"
    assert text.text == "plain words"

    for path in ("/r/undefined", "/r/number"):
        nothing = await responses.client.get(path)
        assert nothing.status_code == 200
        assert nothing.headers["content-type"] == "text/plain; charset=UTF-8"
        assert nothing.text == "<no response>"


async def test_object_status_and_body_are_used_and_a_missing_status_is_a_500(
    responses: Engine,
) -> None:
    teapot = await responses.client.get("/r/custom-status")
    assert (teapot.status_code, teapot.text) == (418, "teapot")
    assert teapot.headers["content-type"] == "text/plain; charset=UTF-8"

    empty = await responses.client.get("/r/no-body")
    assert (empty.status_code, empty.content) == (200, b"")

    for path in ("/r/no-status", "/r/null-status"):
        details = script_failure(await responses.client.get(path))
        assert details.startswith("missing status")


async def test_body_base64_is_sent_as_bytes_with_octet_stream_by_default(
    responses: Engine,
) -> None:
    raw = await responses.client.get("/r/base64")
    assert raw.status_code == 200
    assert raw.content == base64.b64decode("AAEC/w==")
    assert raw.headers["content-type"] == "application/octet-stream"

    typed = await responses.client.get("/r/base64-typed")
    assert typed.content == base64.b64decode("iVBORw==")
    assert typed.headers["content-type"] == "image/png"

    assert "bodyBase64" in script_failure(await responses.client.get("/r/bad-base64"))


async def test_headers_override_content_type_and_non_string_values_are_ignored(
    responses: Engine,
) -> None:
    override = await responses.client.get("/r/header-override")
    assert override.headers["content-type"] == "application/json"
    assert override.headers.get_list("content-type") == ["application/json"]
    assert override.headers["x-extra"] == "1"

    mixed = await responses.client.get("/r/non-string-headers")
    assert mixed.status_code == 200
    assert mixed.text == "ok"
    assert mixed.headers["x-string"] == "kept"
    for ignored in ("x-number", "x-bool", "x-null", "x-object", "x-array"):
        assert ignored not in mixed.headers


async def test_body_must_be_a_string_or_an_object(responses: Engine) -> None:
    details = script_failure(await responses.client.get("/r/number-body"))
    assert "Body must be a string or object with __html property" in details

    assert (await responses.client.get("/r/to-string-body")).text == "from toString"
    html = await responses.client.get("/r/html-body")
    assert html.text == "<b>safe</b>"
    assert html.headers["content-type"] == "text/html; charset=UTF-8"


# ---------------------------------------------------------------------------------------------
# ResponseBuilder

BUILDER_SCRIPT = """
var CALLS = {
  json: function () { return ResponseBuilder.json({ a: [1, "x"], b: null }); },
  jsonStatus: function () { return ResponseBuilder.json([1, 2], 201); },
  text: function () { return ResponseBuilder.text("héllo"); },
  textStatus: function () { return ResponseBuilder.text("accepted", 202); },
  html: function () { return ResponseBuilder.html("<p>hi</p>"); },
  htmlStatus: function () { return ResponseBuilder.html("<p>gone</p>", 410); },
  error: function () { return ResponseBuilder.error(422, "name is required"); },
  noContent: function () { return ResponseBuilder.noContent(); },
  redirect: function () { return ResponseBuilder.redirect("/elsewhere?x=1"); },
  redirectStatus: function () { return ResponseBuilder.redirect("https://example.com/", 301); },
};
function objects() { return { status: 200, contentType: "application/json",
  body: JSON.stringify(Object.keys(CALLS).reduce(function (all, name) {
    all[name] = CALLS[name](); return all; }, {})) }; }
function served(context) { return CALLS[context.request.params.name](); }
function init() {
  routeRegistry.registerRoute("/builder", "objects", "GET");
  routeRegistry.registerRoute("/builder/:name", "served", "GET");
}
"""

TEXT = "text/plain; charset=UTF-8"
HTML = "text/html; charset=UTF-8"
EXPECTED_OBJECTS = {
    "json": {"status": 200, "body": '{"a":[1,"x"],"b":null}', "contentType": "application/json"},
    "jsonStatus": {"status": 201, "body": "[1,2]", "contentType": "application/json"},
    "text": {"status": 200, "body": "héllo", "contentType": TEXT},
    "textStatus": {"status": 202, "body": "accepted", "contentType": TEXT},
    "html": {"status": 200, "body": "<p>hi</p>", "contentType": HTML},
    "htmlStatus": {"status": 410, "body": "<p>gone</p>", "contentType": HTML},
    "error": {
        "status": 422,
        "body": '{"error":"name is required"}',
        "contentType": "application/json",
    },
    "noContent": {"status": 204, "body": "", "contentType": ""},
    "redirect": {
        "status": 302,
        "body": "Redirecting to /elsewhere?x=1",
        "contentType": TEXT,
        "headers": {"Location": "/elsewhere?x=1"},
    },
    "redirectStatus": {
        "status": 301,
        "body": "Redirecting to https://example.com/",
        "contentType": TEXT,
        "headers": {"Location": "https://example.com/"},
    },
}


async def test_response_builder_returns_exactly_the_upstream_objects(engine: Engine) -> None:
    await engine.deploy("builder.js", BUILDER_SCRIPT)
    response = await engine.client.get("/builder")
    assert response.status_code == 200
    assert response.json() == EXPECTED_OBJECTS


async def test_response_builder_results_are_served_as_described(engine: Engine) -> None:
    await engine.deploy("builder.js", BUILDER_SCRIPT)
    for name, expected in EXPECTED_OBJECTS.items():
        response = await engine.client.get(f"/builder/{name}")
        assert response.status_code == expected["status"], name
        assert response.headers.get("content-type") == expected["contentType"], name
        assert response.text == expected["body"], name
        for header, value in expected.get("headers", {}).items():  # type: ignore[attr-defined]
            assert response.headers[header] == value, name


# ---------------------------------------------------------------------------------------------
# Failures

FAILING_SCRIPT = """
function boom(context) { throw new Error("boom: " + context.request.query.why); }
function throwsString() { throw "a bare string"; }
async function later() { return "never"; }
function thenable() { return { then: function () {} }; }
var notAFunction = 3;
function init() {
  routeRegistry.registerRoute("/fail/throw", "boom", "GET");
  routeRegistry.registerRoute("/fail/throw", "boom", "POST");
  routeRegistry.registerRoute("/fail/string", "throwsString", "GET");
  routeRegistry.registerRoute("/fail/async", "later", "GET");
  routeRegistry.registerRoute("/fail/thenable", "thenable", "GET");
  routeRegistry.registerRoute("/fail/missing", "noSuchHandler", "GET");
  routeRegistry.registerRoute("/fail/not-function", "notAFunction", "GET");
}
"""


@pytest.fixture
async def failing(engine: Engine) -> Engine:
    await engine.deploy("failing.js", FAILING_SCRIPT)
    return engine


async def fatal_lines(engine: Engine, request_id: str) -> list[dict[str, Any]]:
    response = await engine.client.get(
        "/engine/script_logs", params={"request_id": request_id, "level": "FATAL"}
    )
    assert response.status_code == 200
    lines: list[dict[str, Any]] = response.json()["logs"]
    return lines


async def test_a_thrown_error_is_a_500_envelope_and_a_fatal_log_line_under_the_request_id(
    failing: Engine,
) -> None:
    response = await failing.client.post("/fail/throw?why=testing", content=b"x")
    details = script_failure(response)
    assert details.startswith("call handler: Error: boom: testing")
    error = envelope_of(response)
    assert (error["path"], error["method"]) == ("/fail/throw", "POST")
    assert set(error) == {"code", "message", "details", "request_id", "timestamp", "path", "method"}
    # Never a Python traceback towards the client.
    assert "Traceback" not in response.text

    request_id = response.headers["x-request-id"]
    lines = await fatal_lines(failing, request_id)
    assert len(lines) == 1
    line = lines[0]
    assert line["scriptUri"] == "failing.js"
    assert line["requestId"] == request_id
    assert line["kind"] == "httpRoute"
    assert line["route"] == "/fail/throw"
    assert "boom: testing" in line["message"]


async def test_throwing_a_non_error_value_is_reported_the_same_way(failing: Engine) -> None:
    response = await failing.client.get("/fail/string")
    assert "a bare string" in script_failure(response)
    assert len(await fatal_lines(failing, response.headers["x-request-id"])) == 1


async def test_async_handlers_and_thenables_are_refused_with_the_promise_message(
    failing: Engine,
) -> None:
    for path, handler in (("/fail/async", "later"), ("/fail/thenable", "thenable")):
        response = await failing.client.get(path)
        details = script_failure(response)
        assert details.startswith(f"Handler '{handler}' returned a promise")
        assert "never" not in response.text
        assert len(await fatal_lines(failing, response.headers["x-request-id"])) == 1


async def test_a_route_whose_handler_does_not_exist_fails_naming_the_handler(
    failing: Engine,
) -> None:
    missing = script_failure(await failing.client.get("/fail/missing"))
    assert missing.startswith("no handler noSuchHandler")
    not_function = script_failure(await failing.client.get("/fail/not-function"))
    assert not_function.startswith("no handler notAFunction")


async def test_failures_do_not_break_the_script_for_the_next_request(failing: Engine) -> None:
    for _ in range(3):
        script_failure(await failing.client.get("/fail/throw?why=again"))
    await failing.deploy(
        "healthy.js",
        'function ok() { return "still fine"; }\n'
        'function init() { routeRegistry.registerRoute("/still-fine", "ok", "GET"); }',
    )
    assert (await failing.client.get("/still-fine")).text == "still fine"
