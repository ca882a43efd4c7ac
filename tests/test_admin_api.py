"""The ``/engine`` management API for scripts: upsert, delete, read, list, init status, routes.

Shapes and status codes follow the original engine (UPSTREAM_API §4.1, §4.2); on top of it the
upsert answer carries the outcome of ``init()`` (``init``) and whether the script is new
(``created``), and bad input is a 400 naming the parameter and the rule instead of the
original's 500.  Every answer is ``application/json`` (``read_script`` aside) and no error ever
carries a Python traceback.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Engine, EngineProcess

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
EXAMPLE_URI = "https://example.com/hello"
MAX_SCRIPT_BYTES = 1_000_000
MAX_BODY_BYTES = 1024 * 1024

GREETER = """
function greet(context) {
  return "hi " + (context.request.query.name || "there");
}
function shout(context) {
  return "HI " + context.request.params.who;
}
function init() {
  routeRegistry.registerRoute("/greet", "greet", "GET", {
    summary: "Greets", description: "Says hi to whoever asks", tags: ["demo", "greeting"]
  });
  routeRegistry.registerRoute("/shout/:who", "shout", "POST");
}
"""


def versioned(tag: str) -> str:
    """A script answering ``GET /version`` with ``tag``."""
    return (
        f'function version() {{ return "{tag}"; }}\n'
        'function init() { routeRegistry.registerRoute("/version", "version", "GET"); }\n'
    )


def management_json(response: httpx.Response, status: int) -> dict[str, Any]:
    """The body of a management answer, checked for status, type, timestamp and no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "Traceback" not in response.text
    body: dict[str, Any] = response.json()
    assert ISO_MS.match(body["timestamp"]), body
    return body


def management_error(response: httpx.Response, status: int) -> dict[str, Any]:
    body = management_json(response, status)
    assert isinstance(body["error"], str) and body["error"]
    return body


def now_ms() -> int:
    return int(time.time() * 1000)


async def listed_uris(engine: Engine) -> set[str]:
    body = management_json(await engine.client.get("/engine/scripts"), 200)
    return {entry["uri"] for entry in body["scripts"]}


# -- upsert_script ---------------------------------------------------------------------


async def test_upsert_with_an_urlencoded_form_answers_the_upstream_shape_plus_init(
    engine: Engine,
) -> None:
    response = await engine.client.post(
        "/engine/upsert_script", data={"uri": "https://t/greeter", "content": GREETER}
    )

    body = management_json(response, 200)
    assert set(body) == {
        "success",
        "message",
        "uri",
        "contentLength",
        "created",
        "init",
        "timestamp",
    }
    assert body["success"] is True
    assert body["message"] == "Script upserted successfully"
    assert body["uri"] == "https://t/greeter"
    assert body["contentLength"] == len(GREETER.encode())
    assert body["created"] is True
    init = body["init"]
    assert set(init) == {"ran", "success", "durationMs", "error"}
    assert init["ran"] is True and init["success"] is True and init["error"] is None
    assert isinstance(init["durationMs"], int) and init["durationMs"] >= 0
    # The upsert answers after init, so the routes serve at once.
    greeting = await engine.client.get("/greet", params={"name": "ada"})
    assert (greeting.status_code, greeting.text) == (200, "hi ada")


async def test_upsert_takes_its_parameters_from_the_query_string(engine: Engine) -> None:
    response = await engine.client.post(
        "/engine/upsert_script", params={"uri": "q-script", "content": versioned("from-query")}
    )

    assert management_json(response, 200)["uri"] == "q-script"
    assert (await engine.client.get("/version")).text == "from-query"


async def test_upsert_takes_its_parameters_from_a_multipart_form(engine: Engine) -> None:
    response = await engine.client.post(
        "/engine/upsert_script",
        files={"uri": (None, "mp-script"), "content": (None, versioned("from-multipart"))},
    )

    body = management_json(response, 200)
    assert body["uri"] == "mp-script"
    assert body["contentLength"] == len(versioned("from-multipart").encode())
    assert (await engine.client.get("/version")).text == "from-multipart"


async def test_upsert_takes_its_parameters_from_a_json_object_body(engine: Engine) -> None:
    response = await engine.client.post(
        "/engine/upsert_script", json={"uri": "json-script", "content": versioned("from-json")}
    )

    assert management_json(response, 200)["uri"] == "json-script"
    assert (await engine.client.get("/version")).text == "from-json"


async def test_a_json_body_that_is_not_an_object_is_400_naming_the_body(engine: Engine) -> None:
    for payload in (b"[1, 2]", b"{not json"):
        response = await engine.client.post(
            "/engine/upsert_script",
            content=payload,
            headers={"content-type": "application/json"},
        )
        body = management_error(response, 400)
        assert body["parameter"] == "body"


async def test_form_fields_win_over_query_parameters(engine: Engine) -> None:
    response = await engine.client.post(
        "/engine/upsert_script",
        params={"uri": "both", "content": versioned("query")},
        data={"content": versioned("form")},
    )

    management_json(response, 200)
    source = await engine.client.get("/engine/read_script", params={"uri": "both"})
    assert source.text == versioned("form")


async def test_upserting_an_existing_script_replaces_it_and_says_it_was_not_created(
    engine: Engine,
) -> None:
    first = await engine.deploy("evolving", versioned("v1"))
    await trio.sleep(0.01)  # distinct millisecond timestamps
    second = await engine.deploy("evolving", versioned("v2"))

    assert first["created"] is True
    assert second["created"] is False
    assert (await engine.client.get("/version")).text == "v2"
    listing = management_json(await engine.client.get("/engine/scripts"), 200)
    (entry,) = [s for s in listing["scripts"] if s["uri"] == "evolving"]
    assert entry["updatedAt"] > entry["createdAt"]


async def test_content_length_counts_utf8_bytes_not_characters(engine: Engine) -> None:
    content = versioned("héllo wörld ✓")
    body = await engine.deploy("unicode", content)

    assert body["contentLength"] == len(content.encode()) > len(content)
    assert (await engine.client.get("/version")).text == "héllo wörld ✓"


async def test_a_failing_init_is_reported_and_the_previous_version_keeps_serving(
    engine: Engine,
) -> None:
    await engine.deploy("fragile", versioned("good"))
    broken = (
        'function version() { return "bad"; }\n'
        'function init() { routeRegistry.registerRoute("/version", "version", "GET");'
        ' throw new Error("init exploded"); }\n'
    )

    response = await engine.client.post(
        "/engine/upsert_script", data={"uri": "fragile", "content": broken}
    )

    body = management_json(response, 200)
    assert body["success"] is True
    assert body["init"]["ran"] is True
    assert body["init"]["success"] is False
    assert "init exploded" in body["init"]["error"]
    assert (await engine.client.get("/version")).text == "good"
    status = management_json(
        await engine.client.get("/engine/script_init_status", params={"uri": "fragile"}), 200
    )["status"]
    assert status["initialized"] is False
    assert "init exploded" in status["initError"]


async def test_a_script_that_does_not_evaluate_is_stored_and_its_error_reported(
    engine: Engine,
) -> None:
    response = await engine.client.post(
        "/engine/upsert_script", data={"uri": "syntax", "content": "function ( {"}
    )

    body = management_json(response, 200)
    assert body["init"]["success"] is False
    assert body["init"]["ran"] is False
    assert body["init"]["error"]
    stored = await engine.client.get("/engine/read_script", params={"uri": "syntax"})
    assert stored.text == "function ( {"


@pytest.mark.parametrize(
    ("fields", "missing"),
    [
        ({"content": "function init() {}"}, "uri"),
        ({"uri": "", "content": "function init() {}"}, "uri"),
        ({"uri": "no-content"}, "content"),
        ({}, "uri"),
    ],
)
async def test_upsert_without_a_required_parameter_is_400_naming_it(
    engine: Engine, fields: dict[str, str], missing: str
) -> None:
    response = await engine.client.post("/engine/upsert_script", data=fields)

    body = management_error(response, 400)
    assert body["error"] == f"Missing required parameter: {missing}"
    assert body["parameter"] == missing


@pytest.mark.parametrize("content", ["", "   \n\t  "])
async def test_upsert_of_empty_content_is_400_naming_the_field_and_rule(
    engine: Engine, content: str
) -> None:
    response = await engine.client.post(
        "/engine/upsert_script", data={"uri": "empty", "content": content}
    )

    body = management_error(response, 400)
    assert body["field"] == "content"
    assert "must not be empty" in body["error"]
    assert body["code"] == "BAD_REQUEST"
    assert "empty" not in await listed_uris(engine), "a refused upsert must not store anything"


async def test_upsert_of_content_over_one_million_bytes_is_400_naming_the_field_and_rule(
    engine: Engine,
) -> None:
    content = "//" + "x" * (MAX_SCRIPT_BYTES - 1)
    assert len(content.encode()) == MAX_SCRIPT_BYTES + 1

    response = await engine.client.post(
        "/engine/upsert_script", files={"uri": (None, "huge"), "content": (None, content)}
    )

    body = management_error(response, 400)
    assert body["field"] == "content"
    assert f"at most {MAX_SCRIPT_BYTES} bytes" in body["error"]
    assert "huge" not in await listed_uris(engine)


async def test_the_script_size_limit_counts_bytes_of_multibyte_text(engine: Engine) -> None:
    # 500,001 two-byte characters: well under a million characters, over a million bytes.
    content = "//" + "é" * 500_000

    response = await engine.client.post(
        "/engine/upsert_script", files={"uri": (None, "wide"), "content": (None, content)}
    )

    assert management_error(response, 400)["field"] == "content"


async def test_a_script_of_exactly_one_million_bytes_is_accepted(engine: Engine) -> None:
    content = versioned("big")
    content += "//" + "x" * (MAX_SCRIPT_BYTES - len(content) - 2)
    assert len(content.encode()) == MAX_SCRIPT_BYTES

    # Urlencoded: the limit for the upsert body leaves room for a maximum-size script.
    response = await engine.client.post(
        "/engine/upsert_script", data={"uri": "exactly", "content": content}
    )

    assert management_json(response, 200)["contentLength"] == MAX_SCRIPT_BYTES
    assert (await engine.client.get("/version")).text == "big"


# -- body limit ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/engine/delete_script", "/engine/upsert_script"])
async def test_a_body_over_the_limit_is_413_json(engine: Engine, path: str) -> None:
    # upsert_script accepts up to about three maximum-size scripts (percent-encoding room).
    size = MAX_BODY_BYTES + 1 if path.endswith("delete_script") else 3 * MAX_SCRIPT_BYTES + 8192
    async with httpx.AsyncClient(base_url=engine.base_url, timeout=30) as client:
        response = await client.post(
            path,
            content=b"uri=" + b"x" * size,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )

    body = management_error(response, 413)
    assert body["error"] == "Request body too large"
    assert isinstance(body["limit"], int) and body["limit"] < size


async def test_after_a_413_the_connection_is_closed_or_keeps_answering(engine: Engine) -> None:
    for _ in range(5):
        async with httpx.AsyncClient(base_url=engine.base_url, timeout=30) as client:
            refused = await client.post(
                "/engine/delete_script",
                content=b"x" * (MAX_BODY_BYTES + 1),
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            assert refused.status_code == 413
            # Either the server said it closes the connection (httpx then opens a new one),
            # or the kept-alive connection must serve the next request.
            with trio.fail_after(5):
                follow_up = await client.get("/engine/scripts")
            assert follow_up.status_code == 200


# -- read_script -----------------------------------------------------------------------


async def test_read_script_returns_the_raw_source_as_javascript(engine: Engine) -> None:
    await engine.deploy("https://t/greeter", GREETER)

    response = await engine.client.get("/engine/read_script", params={"uri": "https://t/greeter"})

    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == "application/javascript"
    assert response.text == GREETER


async def test_read_script_of_an_unknown_uri_is_404_json(engine: Engine) -> None:
    response = await engine.client.get("/engine/read_script", params={"uri": "nope"})

    body = management_error(response, 404)
    assert body == {
        "error": "Script not found",
        "message": "No script with the specified URI was found",
        "uri": "nope",
        "timestamp": body["timestamp"],
    }


async def test_read_script_without_uri_is_400_naming_it(engine: Engine) -> None:
    body = management_error(await engine.client.get("/engine/read_script"), 400)
    assert body["error"] == "Missing required parameter: uri"


# -- delete_script ---------------------------------------------------------------------


async def test_delete_script_removes_the_script_and_its_routes(engine: Engine) -> None:
    await engine.deploy("https://t/greeter", GREETER)

    response = await engine.client.post("/engine/delete_script", data={"uri": "https://t/greeter"})

    body = management_json(response, 200)
    assert body == {
        "success": True,
        "message": "Script deleted successfully",
        "uri": "https://t/greeter",
        "timestamp": body["timestamp"],
    }
    assert (await engine.client.get("/greet")).status_code == 404
    assert "https://t/greeter" not in await listed_uris(engine)
    read = await engine.client.get("/engine/read_script", params={"uri": "https://t/greeter"})
    management_error(read, 404)
    routes = management_json(await engine.client.get("/engine/routes"), 200)
    assert "https://t/greeter" not in [r["script_uri"] for r in routes["routes"]]


async def test_delete_script_takes_the_uri_from_the_query_string(engine: Engine) -> None:
    await engine.deploy("by-query", versioned("x"))

    response = await engine.client.post("/engine/delete_script", params={"uri": "by-query"})

    assert management_json(response, 200)["uri"] == "by-query"


async def test_deleting_an_unknown_script_is_404_json(engine: Engine) -> None:
    response = await engine.client.post("/engine/delete_script", data={"uri": "ghost"})

    body = management_error(response, 404)
    assert body == {
        "error": "Script not found",
        "message": "No script with the specified URI was found",
        "uri": "ghost",
        "timestamp": body["timestamp"],
    }


async def test_delete_script_without_uri_is_400_naming_it(engine: Engine) -> None:
    body = management_error(await engine.client.post("/engine/delete_script"), 400)
    assert body["parameter"] == "uri"


# -- scripts and script_init_status ----------------------------------------------------


async def test_scripts_lists_every_script_with_size_times_and_init_state(engine: Engine) -> None:
    before = now_ms()
    await engine.deploy("https://t/greeter", GREETER)
    await engine.client.post(
        "/engine/upsert_script",
        data={"uri": "broken", "content": 'function init() { throw new Error("nope"); }'},
    )

    body = management_json(await engine.client.get("/engine/scripts"), 200)

    assert set(body) == {"scripts", "count", "timestamp"}
    assert body["count"] == len(body["scripts"])
    by_uri = {entry["uri"]: entry for entry in body["scripts"]}
    assert set(by_uri) == {EXAMPLE_URI, "https://t/greeter", "broken"}
    greeter = by_uri["https://t/greeter"]
    assert set(greeter) == {
        "uri",
        "name",
        "size",
        "updatedAt",
        "createdAt",
        "initialized",
        "initError",
    }
    assert greeter["name"] == "https://t/greeter"
    assert greeter["size"] == len(GREETER.encode())
    assert before <= greeter["createdAt"] <= greeter["updatedAt"] <= now_ms()
    assert greeter["initialized"] is True and greeter["initError"] is None
    assert by_uri["broken"]["initialized"] is False
    assert "nope" in by_uri["broken"]["initError"]


async def test_init_status_of_one_script(engine: Engine) -> None:
    before = now_ms()
    await engine.deploy("https://t/greeter", GREETER)

    response = await engine.client.get(
        "/engine/script_init_status", params={"uri": "https://t/greeter"}
    )

    body = management_json(response, 200)
    assert set(body) == {"uri", "status", "timestamp"}
    assert body["uri"] == "https://t/greeter"
    status = body["status"]
    assert set(status) == {
        "scriptName",
        "initialized",
        "initError",
        "lastInitTime",
        "createdAt",
        "updatedAt",
    }
    assert status["scriptName"] == "https://t/greeter"
    assert status["initialized"] is True and status["initError"] is None
    assert before <= status["createdAt"] <= status["lastInitTime"] <= now_ms()


async def test_init_status_of_an_unknown_script_is_null(engine: Engine) -> None:
    response = await engine.client.get("/engine/script_init_status", params={"uri": "ghost"})

    body = management_json(response, 200)
    assert body["uri"] == "ghost" and body["status"] is None


async def test_init_status_without_uri_lists_every_script(engine: Engine) -> None:
    await engine.deploy("https://t/greeter", GREETER)

    body = management_json(await engine.client.get("/engine/script_init_status"), 200)

    assert set(body) == {"statuses", "count", "timestamp"}
    assert body["count"] == len(body["statuses"]) == 2
    assert {s["scriptName"] for s in body["statuses"]} == {EXAMPLE_URI, "https://t/greeter"}
    assert all(s["initialized"] is True for s in body["statuses"])


# -- routes ----------------------------------------------------------------------------


async def test_routes_lists_every_registered_route_with_its_metadata(engine: Engine) -> None:
    await engine.deploy("https://t/greeter", GREETER)

    response = await engine.client.get("/engine/routes")

    body = management_json(response, 200)
    assert set(body) == {"host", "routes", "count", "timestamp"}
    assert body["host"] == engine.base_url.removeprefix("http://")
    assert body["count"] == len(body["routes"])
    mine = sorted(
        (r for r in body["routes"] if r["script_uri"] == "https://t/greeter"),
        key=lambda r: r["path"],
    )
    assert mine == [
        {
            "path": "/greet",
            "method": "GET",
            "handler": "greet",
            "script_uri": "https://t/greeter",
            "summary": "Greets",
            "description": "Says hi to whoever asks",
            "tags": ["demo", "greeting"],
        },
        {
            "path": "/shout/:who",
            "method": "POST",
            "handler": "shout",
            "script_uri": "https://t/greeter",
            "summary": None,
            "description": None,
            "tags": [],
        },
    ]
    example_paths = {r["path"] for r in body["routes"] if r["script_uri"] == EXAMPLE_URI}
    assert example_paths == {"/hello", "/hello.json"}
    shouted = await engine.client.post("/shout/bob")
    assert (shouted.status_code, shouted.text) == (200, "HI bob")


async def test_routes_follow_a_new_version_of_a_script(engine: Engine) -> None:
    await engine.deploy("https://t/greeter", GREETER)
    await engine.deploy("https://t/greeter", versioned("now"))

    body = management_json(await engine.client.get("/engine/routes"), 200)

    mine = [r["path"] for r in body["routes"] if r["script_uri"] == "https://t/greeter"]
    assert mine == ["/version"]
    assert (await engine.client.get("/greet")).status_code == 404


# -- unknown paths and error hygiene ---------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/engine/unknown"),
        ("POST", "/engine/unknown"),
        ("GET", "/engine"),
        ("DELETE", "/engine/scripts/extra"),
    ],
)
async def test_unknown_engine_paths_are_404_json(engine: Engine, method: str, path: str) -> None:
    response = await engine.client.request(method, path)

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert "Traceback" not in response.text
    body = response.json()
    assert body["status"] == 404
    assert body["error"]["code"] == "NOT_FOUND"
    assert body["error"]["path"] == path


async def test_a_known_engine_endpoint_under_the_wrong_method_is_405_json(engine: Engine) -> None:
    response = await engine.client.get("/engine/upsert_script")

    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"
    assert "POST" in response.headers["allow"]
    assert response.json()["error"] == "Method Not Allowed"


async def test_engine_paths_are_not_dispatched_to_scripts(engine: Engine) -> None:
    # Scripts cannot claim the engine's namespace, so /engine/* stays the engine's.
    response = await engine.client.post(
        "/engine/upsert_script",
        data={
            "uri": "squatter",
            "content": 'function s() { return "mine"; }\n'
            'function init() { routeRegistry.registerRoute("/engine/mine", "s", "GET"); }',
        },
    )
    body = management_json(response, 200)
    assert body["init"]["success"] is False
    assert "reserved" in body["init"]["error"]
    assert (await engine.client.get("/engine/mine")).status_code == 404


async def test_no_provoked_error_carries_a_traceback_and_all_are_json(engine: Engine) -> None:
    provoked = [
        await engine.client.post("/engine/upsert_script"),
        await engine.client.post("/engine/upsert_script", data={"uri": "a", "content": ""}),
        await engine.client.post(
            "/engine/upsert_script",
            content=b"\xff\xfe not a form",
            headers={"content-type": "multipart/form-data; boundary=zzz"},
        ),
        await engine.client.post(
            "/engine/upsert_script", content=b"{", headers={"content-type": "application/json"}
        ),
        await engine.client.post("/engine/delete_script"),
        await engine.client.get("/engine/read_script"),
        await engine.client.get("/engine/script_logs", params={"limit": "zero"}),
        await engine.client.get("/engine/nothing-here"),
    ]
    for response in provoked:
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"] == "application/json", response.text
        assert "Traceback" not in response.text
        assert 'File "' not in response.text
        json.loads(response.text)


async def test_every_answer_carries_a_request_id(engine: Engine) -> None:
    first = await engine.client.get("/engine/scripts")
    second = await engine.client.get("/engine/nothing-here")

    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(re.fullmatch(r"req_\d+_\d+", value) for value in ids)
    assert ids[0] != ids[1]


# -- properties over a long-lived server -------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    process = EngineProcess(Path(tmp_path_factory.mktemp("admin-props")) / "data")
    try:
        with httpx.Client(base_url=process.base_url, timeout=30) as client:
            yield client
    finally:
        process.close()


uris = st.text(
    alphabet=st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=80
).filter(lambda uri: uri.strip() != "")
payloads = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=300)


@settings(max_examples=40, deadline=None)
@given(uri=uris, payload=payloads, multipart=st.booleans())
def test_any_stored_script_reads_back_byte_for_byte(
    server: httpx.Client, uri: str, payload: str, multipart: bool
) -> None:
    content = f"var payload = {json.dumps(payload)};\nfunction init() {{}}\n"
    request: dict[str, Any] = (
        {"files": {"uri": (None, uri), "content": (None, content)}}
        if multipart
        else {"data": {"uri": uri, "content": content}}
    )

    upserted = server.post("/engine/upsert_script", **request)

    body = management_json(upserted, 200)
    assert body["uri"] == uri
    assert body["contentLength"] == len(content.encode())
    read = server.get("/engine/read_script", params={"uri": uri})
    assert read.status_code == 200
    assert read.text == content
    status = server.get("/engine/script_init_status", params={"uri": uri}).json()["status"]
    assert status["scriptName"] == uri


@settings(max_examples=40, deadline=None)
@given(uri=uris)
def test_any_unknown_uri_is_a_clean_404(server: httpx.Client, uri: str) -> None:
    unknown = "never-deployed/" + uri

    read = server.get("/engine/read_script", params={"uri": unknown})
    deleted = server.post("/engine/delete_script", data={"uri": unknown})

    for response in (read, deleted):
        body = management_error(response, 404)
        assert body["uri"] == unknown
