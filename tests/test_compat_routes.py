"""Compatibility: how registered routes are served, and how the route table follows a script.

UPSTREAM_API.md §1.3 (registration phase, init, upsert, delete), §1.4 (dispatch order), §2.1
(``registerRoute``) and §8 items 1-3, 9 and 10.  Every test runs a real engine and speaks HTTP
to it; the scripts are written the way a solution developer writes them.
"""

from __future__ import annotations

import json
from typing import Any

from engine.config import Config
from tests.conftest import Engine, running_engine

RESERVED_PATHS = [
    "/engine/x",
    "/engine",
    "/auth",
    "/auth/login",
    "/health",
    "/graphql",
    "/mcp",
    "/.well-known/x",
]
NOT_IN_PHASE = (
    "routeRegistry.registerRoute: '{path}' not registered - registration only takes effect"
    " during script startup and init()"
)


def envelope_of(response: Any) -> dict[str, Any]:
    """The error envelope of a solution-route response, after checking its framing."""
    assert response.headers["content-type"] == "application/json"
    payload: dict[str, Any] = response.json()
    assert payload["status"] == response.status_code
    assert payload["error"]["request_id"] == response.headers["x-request-id"]
    return payload


async def init_status(engine: Engine, uri: str) -> Any:
    """The script's ``status`` object, ``None`` for an unknown script."""
    response = await engine.client.get("/engine/script_init_status", params={"uri": uri})
    assert response.status_code == 200
    return response.json()["status"]


# ---------------------------------------------------------------------------------------------
# Serving: methods, HEAD, 404/405, the root redirect

METHODS_SCRIPT = """
function hello(context) {
  return { status: 200, body: "hello " + context.request.method,
           contentType: "text/plain; charset=UTF-8", headers: { "X-Hello": "yes" } };
}
function explicitHead(context) {
  return { status: 200, body: "", headers: { "X-Head": "explicit" } };
}
function explicitGet(context) { return "get body"; }
function created(context) { return { status: 201, body: "created" }; }
function init(context) {
  routeRegistry.registerRoute("/greet", "hello", "GET");
  routeRegistry.registerRoute("/both", "explicitGet", "GET");
  routeRegistry.registerRoute("/both", "explicitHead", "HEAD");
  routeRegistry.registerRoute("/items", "created", "POST");
}
"""


async def test_get_route_answers_head_without_a_body_unless_head_is_registered(
    engine: Engine,
) -> None:
    await engine.deploy("methods.js", METHODS_SCRIPT)

    get = await engine.client.get("/greet")
    assert get.status_code == 200
    assert get.text == "hello GET"
    assert get.headers["content-type"] == "text/plain; charset=UTF-8"
    assert get.headers["x-hello"] == "yes"

    head = await engine.client.head("/greet")
    assert head.status_code == 200
    assert head.content == b""
    # The GET handler ran (seeing the request's own method, HEAD) and its headers are kept.
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["x-hello"] == "yes"
    assert head.headers["content-length"] == str(len("hello HEAD"))

    # An explicit HEAD registration wins over the fallback.
    explicit = await engine.client.head("/both")
    assert explicit.status_code == 200
    assert explicit.headers["x-head"] == "explicit"
    both_get = await engine.client.get("/both")
    assert both_get.text == "get body"
    assert "x-head" not in both_get.headers


async def test_wrong_method_is_405_and_unknown_path_is_404_as_json_envelopes(
    engine: Engine,
) -> None:
    await engine.deploy("methods.js", METHODS_SCRIPT)

    assert (await engine.client.post("/items")).status_code == 201

    wrong = await engine.client.delete("/greet")
    assert wrong.status_code == 405
    error = envelope_of(wrong)["error"]
    assert (error["code"], error["message"]) == ("METHOD_NOT_ALLOWED", "Method not allowed")
    assert (error["path"], error["method"]) == ("/greet", "DELETE")

    missing = await engine.client.get("/nowhere")
    assert missing.status_code == 404
    error = envelope_of(missing)["error"]
    assert (error["code"], error["message"]) == ("NOT_FOUND", "Resource not found")
    assert error["path"] == "/nowhere"
    assert set(error) == {"code", "message", "request_id", "timestamp", "path", "method"}


async def test_unclaimed_root_redirects_to_the_landing_page_and_a_claimed_root_is_served(
    engine: Engine,
) -> None:
    root = await engine.client.get("/")
    assert root.status_code == 307
    assert root.headers["location"] == "/engine/installed"
    landing = await engine.client.get("/engine/installed")
    assert landing.status_code == 200
    assert landing.headers["content-type"].startswith("text/html")

    await engine.deploy(
        "home.js",
        'function home() { return "home page"; }\n'
        'function init() { routeRegistry.registerRoute("/", "home", "GET"); }',
    )
    claimed = await engine.client.get("/")
    assert claimed.status_code == 200
    assert claimed.text == "home page"


# ---------------------------------------------------------------------------------------------
# Matching

MATCHING_SCRIPT = """
function tag(name) { return function (context) {
  return JSON.stringify({ route: name, params: context.request.params }); }; }
var exactMe = tag("exact"), userById = tag("param"), usersAny = tag("wildcard"),
    apiAny = tag("api"), nested = tag("nested"), trailing = tag("trailing");
function init() {
  routeRegistry.registerRoute("/users/me", "exactMe", "GET");
  routeRegistry.registerRoute("/users/:id", "userById", "GET");
  routeRegistry.registerRoute("/users/*", "usersAny", "GET");
  routeRegistry.registerRoute("/api/*", "apiAny", "GET");
  routeRegistry.registerRoute("/orgs/:org/repos/:repo", "nested", "GET");
  routeRegistry.registerRoute("/slash/", "trailing", "GET");
}
"""


async def test_exact_beats_param_beats_wildcard_params_stay_raw_and_slashes_do_not_matter(
    engine: Engine,
) -> None:
    await engine.deploy("matching.js", MATCHING_SCRIPT)

    async def served(path: str) -> dict[str, Any]:
        response = await engine.client.get(path)
        assert response.status_code == 200, (path, response.text)
        payload: dict[str, Any] = json.loads(response.text)
        return payload

    assert await served("/users/me") == {"route": "exact", "params": {}}
    assert await served("/users/42") == {"route": "param", "params": {"id": "42"}}
    # Params are handed over as they were sent: percent-encoding is not decoded.
    assert await served("/users/a%20b") == {"route": "param", "params": {"id": "a%20b"}}
    assert await served("/users/42/posts") == {"route": "wildcard", "params": {}}
    assert await served("/orgs/acme/repos/engine") == {
        "route": "nested",
        "params": {"org": "acme", "repo": "engine"},
    }

    # A wildcard matches below its prefix only.
    assert (await served("/api/a/b"))["route"] == "api"
    assert (await served("/api/a"))["route"] == "api"
    assert (await engine.client.get("/api")).status_code == 404
    # Trailing slashes do not matter, on the pattern or on the request.
    assert (await served("/slash"))["route"] == "trailing"
    assert (await served("/slash/"))["route"] == "trailing"
    assert await served("/users/42/") == {"route": "param", "params": {"id": "42"}}


# ---------------------------------------------------------------------------------------------
# The registration phase

PHASE_SCRIPT = """
function late(context) {
  var result = routeRegistry.registerRoute("/late", "late", "GET");
  return JSON.stringify({ type: typeof result, result: result });
}
function first() { return "first"; }
function second() { return "second"; }
function init() {
  console.log(routeRegistry.registerRoute("/register-now", "late", "GET"));
  console.log(routeRegistry.registerRoute("/default-method", "first"));
  console.log(routeRegistry.registerRoute("/null-method", "first", null));
  routeRegistry.registerRoute("/twice", "first", "GET");
  routeRegistry.registerRoute("/twice", "second", "GET");
}
"""


async def test_registering_during_init_answers_the_upstream_message_and_the_last_one_wins(
    engine: Engine,
) -> None:
    await engine.deploy("phase.js", PHASE_SCRIPT)

    lines = await engine.logs(uri="phase.js", kind="init", level="LOG")
    assert [line["message"] for line in lines] == [
        "Route 'GET /register-now' registered to handler 'late'",
        "Route 'GET /default-method' registered to handler 'first'",
        "Route 'GET /null-method' registered to handler 'first'",
    ]
    assert (await engine.client.get("/default-method")).text == "first"
    assert (await engine.client.get("/null-method")).text == "first"
    assert (await engine.client.get("/twice")).text == "second"


async def test_registering_from_a_handler_returns_the_upstream_message_and_registers_nothing(
    engine: Engine,
) -> None:
    await engine.deploy("phase.js", PHASE_SCRIPT)

    response = await engine.client.get("/register-now")
    assert response.status_code == 200
    assert json.loads(response.text) == {
        "type": "string",
        "result": NOT_IN_PHASE.format(path="/late"),
    }
    assert (await engine.client.get("/late")).status_code == 404


RESERVED_SCRIPT = """
var RESERVED = __RESERVED__;
function tryReserved() {
  return RESERVED.map(function (path) {
    try {
      return "returned: " + routeRegistry.registerRoute(path, "fromHandler", "GET");
    } catch (e) {
      return "threw: " + e.message;
    }
  });
}
function fromHandler(context) { return JSON.stringify(tryReserved()); }
function mine() { return "mine"; }
function init() {
  tryReserved().forEach(function (outcome) { console.log("init " + outcome); });
  routeRegistry.registerRoute("/reserved-check", "fromHandler", "GET");
  routeRegistry.registerRoute("/engineering", "mine", "GET");
  routeRegistry.registerRoute("/healthy/x", "mine", "GET");
}
""".replace("__RESERVED__", json.dumps(RESERVED_PATHS))


def reserved_message(path: str) -> str:
    prefix = "/" + path.split("/")[1]
    return f"threw: Path '{path}' is reserved for the engine (prefix '{prefix}')"


async def test_reserved_prefixes_throw_during_init_and_inside_handlers(engine: Engine) -> None:
    deployed = await engine.deploy("reserved.js", RESERVED_SCRIPT)
    assert deployed["init"]["success"] is True

    init_lines = [
        entry["message"]
        for entry in await engine.logs(uri="reserved.js", kind="init")
        if entry["level"] == "LOG"
    ]
    assert init_lines == [f"init {reserved_message(path)}" for path in RESERVED_PATHS]

    response = await engine.client.get("/reserved-check")
    assert response.status_code == 200
    assert json.loads(response.text) == [reserved_message(path) for path in RESERVED_PATHS]
    # Nothing under the reserved prefixes was taken from the engine.
    assert (await engine.client.get("/health")).status_code == 200
    assert (await engine.client.get("/engine/installed")).status_code == 200
    # Only whole segments are reserved: look-alikes belong to scripts.
    assert (await engine.client.get("/engineering")).text == "mine"
    assert (await engine.client.get("/healthy/x")).text == "mine"


# ---------------------------------------------------------------------------------------------
# The route table follows the script: upsert, broken redeploy, delete

V1 = """
function a() { return "a from v1"; }
function b() { return "b from v1"; }
function init() {
  routeRegistry.registerRoute("/lifecycle/a", "a", "GET");
  routeRegistry.registerRoute("/lifecycle/b", "b", "GET");
}
"""
V2 = """
function a() { return "a from v2"; }
function c() { return "c from v2"; }
function init() {
  routeRegistry.registerRoute("/lifecycle/a", "a", "GET");
  routeRegistry.registerRoute("/lifecycle/c", "c", "POST");
}
"""
BROKEN = """
function a() { return "a from broken"; }
function init() {
  routeRegistry.registerRoute("/lifecycle/broken", "a", "GET");
  throw new Error("database not ready");
}
"""


async def test_upsert_reruns_init_so_new_routes_appear_and_removed_ones_disappear(
    engine: Engine,
) -> None:
    first = await engine.deploy("life.js", V1)
    assert first["init"]["ran"] is True and first["init"]["success"] is True
    assert (await engine.client.get("/lifecycle/a")).text == "a from v1"
    assert (await engine.client.get("/lifecycle/b")).text == "b from v1"

    second = await engine.deploy("life.js", V2)
    assert second["init"]["success"] is True
    assert (await engine.client.get("/lifecycle/a")).text == "a from v2"
    assert (await engine.client.get("/lifecycle/b")).status_code == 404
    assert (await engine.client.post("/lifecycle/c")).text == "c from v2"
    # The path now exists only under POST.
    assert (await engine.client.get("/lifecycle/c")).status_code == 405

    routes = (await engine.client.get("/engine/routes")).json()["routes"]
    assert sorted((r["method"], r["path"]) for r in routes if r["script_uri"] == "life.js") == [
        ("GET", "/lifecycle/a"),
        ("POST", "/lifecycle/c"),
    ]


async def test_a_broken_redeploy_keeps_the_old_routes_and_records_the_init_error(
    engine: Engine,
) -> None:
    await engine.deploy("life.js", V1)
    before = await init_status(engine, "life.js")
    assert before["initialized"] is True
    assert before["initError"] is None

    broken = await engine.deploy("life.js", BROKEN)
    assert broken["init"]["ran"] is True
    assert broken["init"]["success"] is False
    assert "database not ready" in broken["init"]["error"]

    # The previous version keeps serving, routes and code alike.
    assert (await engine.client.get("/lifecycle/a")).text == "a from v1"
    assert (await engine.client.get("/lifecycle/b")).text == "b from v1"
    assert (await engine.client.get("/lifecycle/broken")).status_code == 404

    after = await init_status(engine, "life.js")
    assert after["initialized"] is False
    assert "database not ready" in after["initError"]
    assert after["lastInitTime"] >= before["lastInitTime"]

    fatal = await engine.logs(uri="life.js", level="FATAL")
    assert len(fatal) == 1
    assert "database not ready" in fatal[0]["message"]
    assert fatal[0]["kind"] == "init"

    # The new source is stored all the same: the author can read back what failed.
    stored = await engine.client.get("/engine/read_script", params={"uri": "life.js"})
    assert stored.text == BROKEN

    # A redeploy that does not even evaluate is refused the same way.
    unparsable = await engine.deploy("life.js", "function init( {")
    assert (unparsable["init"]["ran"], unparsable["init"]["success"]) == (False, False)
    assert "SyntaxError" in unparsable["init"]["error"]
    assert "SyntaxError" in (await init_status(engine, "life.js"))["initError"]
    assert (await engine.client.get("/lifecycle/a")).text == "a from v1"


async def test_a_first_deploy_whose_init_throws_installs_the_routes_registered_before_the_throw(
    engine: Engine,
) -> None:
    report = await engine.deploy("fresh.js", BROKEN)
    assert report["init"]["success"] is False
    assert (await engine.client.get("/lifecycle/broken")).text == "a from broken"
    assert "database not ready" in (await init_status(engine, "fresh.js"))["initError"]


async def test_fixing_a_broken_script_clears_its_init_error(engine: Engine) -> None:
    await engine.deploy("life.js", BROKEN)
    await engine.deploy("life.js", V2)
    status = await init_status(engine, "life.js")
    assert status["initialized"] is True
    assert status["initError"] is None
    assert (await engine.client.get("/lifecycle/broken")).status_code == 404
    assert (await engine.client.get("/lifecycle/a")).text == "a from v2"


INIT_CONTEXT_SCRIPT = """
function served() { return "still registered"; }
function init(context) {
  console.log(JSON.stringify({
    keys: Object.keys(context), context: context, isGlobal: globalThis.context === context,
  }));
  routeRegistry.registerRoute("/after-restart", "served", "GET");
}
"""


async def init_contexts(engine: Engine) -> list[dict[str, Any]]:
    lines = await engine.logs(uri="init-context.js", kind="init", level="LOG")
    return [json.loads(line["message"]) for line in lines]


async def test_init_receives_an_init_context_and_runs_again_at_startup(config: Config) -> None:
    async with running_engine(config) as engine:
        await engine.deploy("init-context.js", INIT_CONTEXT_SCRIPT)
        [seen] = await init_contexts(engine)
    assert seen["keys"] == [
        "kind",
        "invocationId",
        "scriptUri",
        "handlerName",
        "request",
        "args",
        "meta",
    ]
    context = seen["context"]
    assert context["kind"] == "init"
    assert context["scriptUri"] == "init-context.js"
    assert context["request"] == {"query": {}}
    assert context["args"] is None
    assert seen["isGlobal"] is True
    meta = context["meta"]["init"]
    assert (meta["scriptName"], meta["isStartup"]) == ("init-context.js", False)
    assert isinstance(meta["timestamp"], int)

    # A restart loads the stored script and runs its init() again, marked as startup.
    async with running_engine(config) as engine:
        assert (await engine.client.get("/after-restart")).text == "still registered"
        first, second = await init_contexts(engine)
    assert second["context"]["meta"]["init"]["isStartup"] is True
    assert second["context"]["meta"]["init"]["timestamp"] >= meta["timestamp"]
    assert second["context"]["invocationId"] != first["context"]["invocationId"]


async def test_delete_makes_the_scripts_routes_404_and_leaves_other_scripts_serving(
    engine: Engine,
) -> None:
    await engine.deploy("life.js", V1)
    await engine.deploy(
        "other.js",
        'function o() { return "other"; }\n'
        'function init() { routeRegistry.registerRoute("/other", "o", "GET"); }',
    )

    deleted = await engine.client.post("/engine/delete_script", data={"uri": "life.js"})
    assert deleted.status_code == 200
    assert deleted.json()["success"] is True

    for path in ("/lifecycle/a", "/lifecycle/b"):
        gone = await engine.client.get(path)
        assert gone.status_code == 404
        assert envelope_of(gone)["error"]["code"] == "NOT_FOUND"
    assert (await engine.client.get("/other")).text == "other"
    assert (await init_status(engine, "life.js")) is None


async def test_deleting_or_reading_a_missing_script_is_404_script_not_found(engine: Engine) -> None:
    expected = {
        "error": "Script not found",
        "message": "No script with the specified URI was found",
        "uri": "ghost.js",
    }
    deleted = await engine.client.post("/engine/delete_script", data={"uri": "ghost.js"})
    assert deleted.status_code == 404
    assert {k: deleted.json()[k] for k in expected} == expected
    read = await engine.client.get("/engine/read_script", params={"uri": "ghost.js"})
    assert read.status_code == 404
    assert {k: read.json()[k] for k in expected} == expected
