"""Compatibility: scripts written for the v0.9-era flat API run unchanged.

UPSTREAM_API.md §3 (``register``, ``writeLog``, ``req``-style handlers, global ``auth``), §2.12
(``console``, leniently formatted), the compatibility policy items 5-6, and §8 item 25 (the
aliases part).  Deliberate difference from the original (policy item 5): registrations made at
a script's top level serve even when the script has no ``init()``.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import Engine

# ---------------------------------------------------------------------------------------------
# register(path, handler, method?)

REGISTER_SCRIPT = """
function listItems(req) { return "list " + req.method; }
function createItem(req) { return "create " + req.form.name; }
function lateRegister(req) {
  var returned = register("/v09/late", "listItems");
  return typeof returned;
}
function init() {
  var a = register("/v09/items", "listItems");
  var b = register("/v09/items", "createItem", "POST");
  var c = register("/v09/late-check", "lateRegister", "GET");
  console.log("register returned " + typeof a + " " + typeof b + " " + typeof c);
}
"""


async def test_register_returns_undefined_and_registers_get_by_default(engine: Engine) -> None:
    report = await engine.deploy("v09-register.js", REGISTER_SCRIPT)
    assert report["init"]["success"] is True

    assert (await engine.client.get("/v09/items")).text == "list GET"
    assert (await engine.client.head("/v09/items")).status_code == 200
    created = await engine.client.post("/v09/items", data={"name": "widget"})
    assert created.text == "create widget"

    lines = await engine.logs(uri="v09-register.js", kind="init", level="LOG")
    assert [line["message"] for line in lines] == [
        "register returned undefined undefined undefined"
    ]

    routes = (await engine.client.get("/engine/routes")).json()["routes"]
    assert sorted(
        (r["method"], r["path"], r["handler"])
        for r in routes
        if r["script_uri"] == "v09-register.js"
    ) == [
        ("GET", "/v09/items", "listItems"),
        ("GET", "/v09/late-check", "lateRegister"),
        ("POST", "/v09/items", "createItem"),
    ]


async def test_register_outside_init_returns_undefined_and_registers_nothing(
    engine: Engine,
) -> None:
    await engine.deploy("v09-register.js", REGISTER_SCRIPT)
    response = await engine.client.get("/v09/late-check")
    assert response.status_code == 200
    assert response.text == "undefined"
    assert (await engine.client.get("/v09/late")).status_code == 404


async def test_register_refuses_reserved_paths_by_throwing(engine: Engine) -> None:
    report = await engine.deploy(
        "v09-reserved.js",
        'function h(req) { return "x"; }\nfunction init() { register("/engine/mine", "h"); }',
    )
    assert report["init"]["success"] is False
    reserved = "Path '/engine/mine' is reserved for the engine (prefix '/engine')"
    assert reserved in report["init"]["error"]


# ---------------------------------------------------------------------------------------------
# req-style handlers, writeLog, global auth, console formatting

FLAT_SCRIPT = """
function echo(req) { return req.query.x + req.method + req.path; }
function formEcho(req) {
  return JSON.stringify({ form: req.form, body: req.body, params: req.params,
                          header: req.headers["x-old"] });
}
function logIt(req) { return writeLog("visited by " + req.query.who); }
function whoami(req) {
  var refusal = null;
  try { auth.requireAuth(); } catch (e) { refusal = e.message; }
  return JSON.stringify({
    isAuthenticated: auth.isAuthenticated, isAdmin: auth.isAdmin, isEditor: auth.isEditor,
    userId: auth.userId, userEmail: auth.userEmail, userName: auth.userName,
    provider: auth.provider, currentUser: auth.currentUser(), refusal: refusal,
    sameAsContext: auth === context.request.auth,
  });
}
function chatty(req) {
  console.log("count", 3, { a: 1 }, [1, "two"], null, undefined, true);
  console.warn("warned", 1.5);
  console.error(42);
  return "said";
}
function init() {
  register("/v09/echo", "echo");
  register("/v09/echo", "echo", "POST");
  register("/v09/form/:id", "formEcho", "POST");
  register("/v09/log", "logIt");
  register("/v09/whoami", "whoami");
  register("/v09/chatty", "chatty");
}
"""


@pytest.fixture
async def flat(engine: Engine) -> Engine:
    report = await engine.deploy("v09-flat.js", FLAT_SCRIPT)
    assert report["init"]["success"] is True, report
    return engine


async def test_req_style_handlers_read_request_fields_directly(flat: Engine) -> None:
    response = await flat.client.get("/v09/echo", params={"x": "abc"})
    assert response.status_code == 200
    assert response.text == "abcGET/v09/echo"
    assert (await flat.client.post("/v09/echo?x=1")).text == "1POST/v09/echo"

    form = await flat.client.post(
        "/v09/form/7", data={"name": "Ada Lovelace"}, headers={"X-Old": "style"}
    )
    assert json.loads(form.text) == {
        "form": {"name": "Ada Lovelace"},
        "body": "name=Ada+Lovelace",
        "params": {"id": "7"},
        "header": "style",
    }


async def test_write_log_writes_a_log_line_and_returns_the_upstream_message(flat: Engine) -> None:
    response = await flat.client.get("/v09/log", params={"who": "ada"})
    assert response.status_code == 200
    assert response.text == "Log written successfully"

    lines = await flat.logs(request_id=response.headers["x-request-id"])
    assert [(line["level"], line["message"]) for line in lines] == [("LOG", "visited by ada")]
    assert lines[0]["scriptUri"] == "v09-flat.js"
    assert lines[0]["kind"] == "httpRoute"
    assert lines[0]["route"] == "/v09/log"


async def test_global_auth_describes_the_anonymous_caller(flat: Engine) -> None:
    response = await flat.client.get("/v09/whoami")
    assert json.loads(response.text) == {
        "isAuthenticated": False,
        "isAdmin": False,
        "isEditor": False,
        "userId": None,
        "userEmail": None,
        "userName": None,
        "provider": None,
        "currentUser": None,
        "refusal": "Authentication required. Please login to access this resource.",
        "sameAsContext": True,
    }


async def test_console_formats_several_non_string_arguments_into_one_line(flat: Engine) -> None:
    response = await flat.client.get("/v09/chatty")
    assert response.text == "said"
    # Filtered to one script, the log lists oldest first.
    lines = await flat.logs(uri="v09-flat.js", request_id=response.headers["x-request-id"])
    assert [(line["level"], line["message"]) for line in lines] == [
        ("LOG", 'count 3 {"a":1} [1,"two"] null undefined true'),
        ("WARN", "warned 1.5"),
        ("ERROR", "42"),
    ]


async def test_v09_init_reads_script_name_timestamp_and_is_startup_directly(
    engine: Engine,
) -> None:
    await engine.deploy(
        "v09-init.js",
        "function init(context) {\n"
        "  console.log(context.scriptName + ' ' + typeof context.timestamp + ' '"
        " + context.isStartup);\n"
        "}",
    )
    lines = await engine.logs(uri="v09-init.js", kind="init", level="LOG")
    assert [line["message"] for line in lines] == ["v09-init.js number false"]


# ---------------------------------------------------------------------------------------------
# Top-level registrations and function objects

TOP_LEVEL_SCRIPT = """
register("/v09/top", "top");
routeRegistry.registerRoute("/v09/top-namespaced", "top", "GET");
function top(req) { return "served without init: " + req.path; }
"""


async def test_top_level_registrations_serve_without_init(engine: Engine) -> None:
    # The original ignored these (a script without init() had no routes); this engine serves
    # them so v0.9-era scripts keep working.
    report = await engine.deploy("v09-top.js", TOP_LEVEL_SCRIPT)
    assert report["init"]["ran"] is False
    assert report["init"]["success"] is True

    assert (await engine.client.get("/v09/top")).text == "served without init: /v09/top"
    namespaced = await engine.client.get("/v09/top-namespaced")
    assert namespaced.text == "served without init: /v09/top-namespaced"

    # Redeploying without the registrations removes them, as with init().
    await engine.deploy(
        "v09-top.js", 'register("/v09/top", "top");\nfunction top() { return "x"; }'
    )
    assert (await engine.client.get("/v09/top")).text == "x"
    assert (await engine.client.get("/v09/top-namespaced")).status_code == 404


FUNCTION_OBJECT_SCRIPT = """
function named(req) { return "named " + req.path; }
var assigned = function (req) { return "assigned " + req.path; };
function init() {
  register("/fn/named", named);
  register("/fn/named-post", named, "POST");
  routeRegistry.registerRoute("/fn/namespaced", named, "GET");
  register("/fn/assigned", assigned);
}
"""


async def test_handlers_can_be_registered_as_function_objects(engine: Engine) -> None:
    report = await engine.deploy("v09-functions.js", FUNCTION_OBJECT_SCRIPT)
    assert report["init"]["success"] is True, report
    assert (await engine.client.get("/fn/named")).text == "named /fn/named"
    assert (await engine.client.post("/fn/named-post")).text == "named /fn/named-post"
    assert (await engine.client.get("/fn/namespaced")).text == "named /fn/namespaced"
    assert (await engine.client.get("/fn/assigned")).text == "assigned /fn/assigned"

    routes = (await engine.client.get("/engine/routes")).json()["routes"]
    handlers = {r["path"]: r["handler"] for r in routes if r["script_uri"] == "v09-functions.js"}
    assert handlers["/fn/named"] == "named"
    assert handlers["/fn/assigned"] == "assigned"


async def test_any_function_registered_at_the_top_level_serves(engine: Engine) -> None:
    # The top level runs identically in every context of a version, so even a function that
    # is not a global can be found again by the name the engine gives it.
    report = await engine.deploy(
        "v09-closures.js",
        """
        const arrow = (req) => "arrow " + req.path;
        register("/fn/arrow", arrow);
        register("/fn/expression", function inner(req) { return "inner " + req.path; });
        register("/fn/anonymous", function (req) { return "anonymous " + req.path; });
        routeRegistry.registerRoute("/fn/anonymous-arrow", (ctx) => "arrow", "GET");
        """,
    )
    assert report["init"]["success"] is True, report
    assert (await engine.client.get("/fn/arrow")).text == "arrow /fn/arrow"
    assert (await engine.client.get("/fn/expression")).text == "inner /fn/expression"
    assert (await engine.client.get("/fn/anonymous")).text == "anonymous /fn/anonymous"
    assert (await engine.client.get("/fn/anonymous-arrow")).text == "arrow"


async def test_a_non_global_function_registered_inside_init_fails_init_with_the_rule(
    engine: Engine,
) -> None:
    # A context created later in another worker evaluates the top level but never runs
    # init(), so a closure made inside init() could not be found there.
    report = await engine.deploy(
        "v09-anonymous.js",
        """
        function init() {
          register("/fn/anonymous", function (req) { return "anonymous"; });
        }
        """,
    )
    assert report["init"]["success"] is False
    assert "must be a global function or its name" in report["init"]["error"]
    assert (await engine.client.get("/fn/anonymous")).status_code == 404
