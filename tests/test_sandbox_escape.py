"""The sandbox escape suite: what a hostile script can and cannot do, over real sockets.

A script runs in a QuickJS context inside a worker process.  These tests play the hostile
script: they look for Python, the file system, the environment and the engine's secrets from
inside a context; try to reach other scripts' globals, storage, assets, handlers and secrets;
send ``__proto__`` keys through every host API that takes structured data; pass every host API
wrongly typed, huge, deeply nested and malformed values; and exhaust stack, memory and time.
Everything must end in a value, an error the script can catch, or a clean JSON error response,
and the engine must keep serving other scripts (the conftest check also fails a test that
leaves a worker process behind).

Every probe returns a marker together with what it found, so a probe that did not run (or
ran something else) fails instead of passing silently.
"""

from __future__ import annotations

import json
import os
import re
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import quickjs
import trio

from engine.config import Config, load_config
from engine.secrets import DEVELOPMENT_KEY_FILE
from tests.conftest import Engine, make_config, running_engine
from tests.test_sandbox_faults import HEALTHY, error_of

MiB = 1024 * 1024
MARK = "probe-ran"


def route_script(path: str, body: str) -> str:
    """A script serving GET ``path`` with its function ``h``; ``body`` defines the functions."""
    return f'{body}\nfunction init() {{ routeRegistry.registerRoute("{path}", "h", "GET"); }}\n'


def probe_script(path: str, body: str) -> str:
    """A script whose handler runs ``body`` (which sets ``result``) and answers
    ``{marker, result}`` as JSON."""
    handler = f"""
function h(context) {{
  let result;
  {body}
  return JSON.stringify({{ marker: "{MARK}", result: result }});
}}
"""
    return route_script(path, handler)


async def probe(engine: Engine, path: str, body: str) -> Any:
    """Deploy ``body`` as a probe at ``path``, run it once, and return its ``result``."""
    report = await engine.deploy(path, probe_script(path, body))
    assert report["init"]["success"], report
    return await run_probe(engine, path)


async def run_probe(engine: Engine, path: str, **params: str) -> Any:
    response = await engine.client.get(path, params=params)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["marker"] == MARK, payload
    return payload["result"]


async def assert_serving(engine: Engine) -> None:
    """Another script still answers."""
    await engine.deploy("/healthy", HEALTHY)
    response = await engine.client.get("/ok")
    assert response.status_code == 200, response.text
    assert response.text == "ok"


def assert_no_restarts(engine: Engine) -> None:
    assert engine.runtime.pool.stats().restarts == 0, "a worker died"


def single_worker(tmp_path: Path, **overrides: Any) -> Config:
    """One worker and no spare: every invocation of every script runs in the same process."""
    values = {"sandbox.pool_size": 1, "sandbox.warm_spares": 0, **overrides}
    return make_config(tmp_path / "data", **values)


# ---------------------------------------------------------------------------------------------
# Nothing of Python is reachable

# Every string reachable from the global object, the script's context included.
REACHABLE_STRINGS = r"""
function reachableStrings() {
  const strings = [];
  const seen = new Set();
  (function walk(value, depth) {
    if (typeof value === "string") { strings.push(value); return; }
    if (value === null || typeof value !== "object" || seen.has(value) || depth === 0) return;
    seen.add(value);
    for (const key of Object.getOwnPropertyNames(value)) {
      let v;
      try { v = value[key]; } catch (e) { continue; }
      strings.push(key);
      walk(v, depth - 1);
    }
  })(globalThis, 8);
  return strings;
}
"""


# Walks everything reachable from the global object (own properties, accessors, prototypes)
# and lists the native functions it meets.  QuickJS's own builtins are native; the prelude's
# API is plain JavaScript; a Python callable the worker installs (the host bridges) is native
# too.  So a native function that a bare QuickJS context does not have is a way into Python.
NATIVE_WALKER = r"""
function nativeReport(builtinNames) {
  const seen = new Set();
  const natives = { builtin: [], extra: [] };
  function isNative(f) {
    try { return /\[native code\]\s*\}$/.test(Function.prototype.toString.call(f)); }
    catch (e) { return false; }
  }
  function walk(value, path, depth, into) {
    if (value === null || (typeof value !== "object" && typeof value !== "function")) return;
    if (seen.has(value)) return;
    seen.add(value);
    if (typeof value === "function" && isNative(value)) into.push(path);
    if (depth === 0) return;
    for (const key of Reflect.ownKeys(value)) {
      let d;
      try { d = Object.getOwnPropertyDescriptor(value, key); } catch (e) { continue; }
      const name = path + "." + String(key);
      if ("value" in d) walk(d.value, name, depth - 1, into);
      if (d.get) walk(d.get, name + "<get>", depth - 1, into);
      if (d.set) walk(d.set, name + "<set>", depth - 1, into);
    }
    walk(Object.getPrototypeOf(value), path + ".<proto>", depth - 1, into);
  }
  seen.add(globalThis);
  const extras = Reflect.ownKeys(globalThis).filter((k) => builtinNames.indexOf(String(k)) < 0);
  for (const name of builtinNames) {
    if (name in globalThis) walk(globalThis[name], name, 6, natives.builtin);
  }
  walk(Object.getPrototypeOf(globalThis), "<global proto>", 6, natives.builtin);
  for (const name of extras) {
    const d = Object.getOwnPropertyDescriptor(globalThis, name);
    walk(d.value, String(name), 6, natives.extra);
    if (d.get) walk(d.get, String(name) + "<get>", 6, natives.extra);
  }
  return { natives: natives, extras: extras.map(String) };
}
"""


def bare_quickjs_report() -> dict[str, Any]:
    context = quickjs.Context()
    names = context.eval("JSON.stringify(Reflect.ownKeys(globalThis).map(String))")
    report = context.eval(f"{NATIVE_WALKER}\nJSON.stringify(nativeReport({names}))")
    return {"names": json.loads(names), **json.loads(report)}


async def test_no_native_function_beyond_quickjs_own_builtins_is_reachable(
    engine: Engine,
) -> None:
    bare = bare_quickjs_report()
    assert len(bare["natives"]["builtin"]) > 300  # the walk really covers the builtins
    body = f"{NATIVE_WALKER}\nresult = nativeReport({json.dumps(bare['names'])});"
    found = await probe(engine, "/natives", body)

    assert found["natives"]["extra"] == [], "the prelude exposes a native (host) function"
    added = sorted(set(found["natives"]["builtin"]) - set(bare["natives"]["builtin"]))
    assert added == [], "a builtin object carries a native function QuickJS does not have"
    # The walk saw the engine's API and the script's own functions, and no host bridge.
    assert {"sharedStorage", "routeRegistry", "console", "h", "init"} <= set(found["extras"])
    assert not [name for name in found["extras"] if name in ("__aiwe_host", "__aiwe_log")]


# Each probe is a function body returning what it found; the answers are compared as a whole.
ESCAPE_PROBES: dict[str, tuple[str, Any]] = {
    "the host bridges are deleted": (
        'return [typeof __aiwe_host, typeof __aiwe_log, "__aiwe_host" in globalThis];',
        ["undefined", "undefined", False],
    ),
    "Function('return this') is the script's own global": (
        'const g = Function("return this")();'
        "return [g === globalThis, typeof g.__aiwe_host, typeof g.__aiwe_log];",
        [True, "undefined", "undefined"],
    ),
    "constructor.constructor reaches nothing more": (
        'return ({}).constructor.constructor("return [typeof __aiwe_host, typeof std]")();',
        ["undefined", "undefined"],
    ),
    "indirect eval sees the same global": (
        'return (0, eval)("[typeof __aiwe_host, typeof __aiwe_log, this === globalThis]");',
        ["undefined", "undefined", True],
    ),
    "eval of a host name is a ReferenceError": (
        'try { eval("__aiwe_host"); return "reached"; } catch (e) { return e.name; }',
        "ReferenceError",
    ),
    "no QuickJS std/os modules, no require, no process": (
        "return [typeof std, typeof os, typeof require, typeof process, typeof module,"
        " typeof exports, typeof scriptArgs, typeof print, typeof loadScript, typeof Deno];",
        ["undefined"] * 10,
    ),
    "a static import is a syntax error": (
        'try { eval(\'import * as os from "os"\'); return "imported"; }'
        " catch (e) { return e.name; }",
        "SyntaxError",
    ),
    "callbacks the prelude calls see no caller": (
        'let seen = "not called";'
        "const key = { toString: function () {"
        '  seen = [typeof arguments.callee.caller, String(arguments.callee.caller)].join(":");'
        '  return "k"; } };'
        "sharedStorage.getItem(key);"
        "return seen;",
        "undefined:undefined",
    ),
    "functions of the API hold no reachable references": (
        "const found = [];"
        "for (const api of [sharedStorage.getItem, console.log, routeRegistry.registerRoute]) {"
        '  for (const key of ["caller", "arguments"]) {'
        "    try { const v = api[key]; found.push(v === undefined ? 'undefined' : typeof v); }"
        "    catch (e) { found.push(e.name); } } }"
        "return found;",
        ["TypeError"] * 6,
    ),
    "JSON and prototype hooks see only data during a host call": (
        "const seen = [];"
        "function plain(v) { return v === null || ['string','number','boolean','undefined']"
        "  .indexOf(typeof v) >= 0 || (typeof v === 'object' && Object.keys(v).every("
        "  function (k) { return plain(v[k]); })); }"
        "const stringify = JSON.stringify, parse = JSON.parse;"
        "JSON.stringify = function (v) {"
        "  seen.push(plain(v)); return stringify.apply(JSON, arguments); };"
        "JSON.parse = function (t) {"
        "  seen.push(typeof t === 'string'); return parse.apply(JSON, arguments); };"
        "for (const name of ['ok', 'value', 'error']) {"
        "  Object.defineProperty(Object.prototype, name, { __proto__: null, configurable: true,"
        "    set: function (v) { seen.push('setter ' + name); },"
        "    get: function () { return undefined; } }); }"
        "let answer;"
        "try { sharedStorage.setItem('k', 'v'); answer = sharedStorage.getItem('k'); }"
        "finally {"
        "  JSON.stringify = stringify; JSON.parse = parse;"
        "  for (const name of ['ok', 'value', 'error']) delete Object.prototype[name]; }"
        "return [answer, seen.filter(function (s) { return s !== true; })];",
        ["v", []],
    ),
    "error stacks name no engine file": (
        "let stack = '';"
        "try { routeRegistry.sendStreamMessageFiltered('/x', 'm', '{bad'); }"
        "catch (e) { stack = String(e.stack) + String(e.message); }"
        "return [stack.indexOf('Invalid filter JSON') >= 0,"
        "        /\\.py|Traceback|\\/engine\\//.test(stack)];",
        [True, False],
    ),
}


async def test_escape_idioms_find_nothing_of_the_host(engine: Engine) -> None:
    entries = ",\n".join(
        f"{json.dumps(name)}: function () {{ {js} }}" for name, (js, _) in ESCAPE_PROBES.items()
    )
    body = f"""
const probes = {{ {entries} }};
result = {{}};
for (const name of Object.keys(probes)) {{
  try {{ result[name] = probes[name](); }}
  catch (e) {{ result[name] = "probe threw " + e.name + ": " + e.message; }}
}}
"""
    found = await probe(engine, "/escape", body)
    assert found == {name: expected for name, (_, expected) in ESCAPE_PROBES.items()}


async def test_dynamic_import_never_delivers_a_module(tmp_path: Path) -> None:
    body = """
const specifiers = ["os", "std", "/etc/passwd", "./prelude.js", "engine.sandbox._worker"];
if (context.request.query.start) {
  globalThis.imports = {};
  for (const name of specifiers) {
    globalThis.imports[name] = "pending";
    try {
      import(name).then(
        function (m) { globalThis.imports[name] = "loaded " + Object.keys(m).join(","); },
        function (e) { globalThis.imports[name] = "failed"; });
    } catch (e) { globalThis.imports[name] = "failed"; }
  }
}
result = globalThis.imports;
"""
    async with running_engine(single_worker(tmp_path)) as engine:
        await engine.deploy("/import", probe_script("/import", body))
        started = await run_probe(engine, "/import", start="1")
        assert set(started) == {
            "os",
            "std",
            "/etc/passwd",
            "./prelude.js",
            "engine.sandbox._worker",
        }
        for _ in range(3):  # later invocations in the same context: nothing ever arrived
            later = await run_probe(engine, "/import")
            assert later.keys() == started.keys()
            assert all(state in ("pending", "failed") for state in later.values()), later


async def test_no_file_or_environment_variable_is_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = "env-canary-" + os.urandom(8).hex()
    monkeypatch.setenv("AIWEBENGINE_ESCAPE_CANARY", canary)
    config = make_config(tmp_path / "data")
    planted = tmp_path / "data" / "planted.txt"
    planted.parent.mkdir(parents=True, exist_ok=True)
    file_canary = "file-canary-" + os.urandom(8).hex()
    planted.write_text(file_canary)
    attempts = {
        "fetchAsset absolute": 'fetchAsset("/etc/passwd")',
        "fetchAsset traversal": 'fetchAsset("../../../../../../etc/passwd")',
        "fetchAsset file URL": 'assetStorage.fetchAsset("file:///etc/passwd")',
        "fetchAsset planted": f"assetStorage.fetchAsset({json.dumps(str(planted))})",
        "getScript path": 'getScript("/etc/passwd")',
        "getScript file URL": f"getScript({json.dumps('file://' + str(planted))})",
        "listLogsForUri path": 'listLogsForUri("/etc/passwd")',
        "template partial": 'convert.render_handlebars_template("{{> /etc/passwd}}", {})',
        "template lookup": (
            "convert.render_handlebars_template("
            '"{{lookup this \\"__class__\\"}}{{this.__init__.__globals__}}", {})'
        ),
        "markdown link": 'convert.markdown_to_html("[x](file:///etc/passwd) ![y](/etc/passwd)")',
        "fetch file URL": 'fetch("file:///etc/passwd")',
        "fetch planted": f"fetch({json.dumps('file://' + str(planted))})",
        "fetchAsset key file": f'fetchAsset("../{DEVELOPMENT_KEY_FILE}")',
        "getScript key file": f'getScript("{DEVELOPMENT_KEY_FILE}")',
    }
    body = (
        "result = {};"
        + "".join(
            f"try {{ result[{json.dumps(name)}] = String({js}); }}"
            f" catch (e) {{ result[{json.dumps(name)}] = 'threw ' + e.message; }}"
            for name, js in attempts.items()
        )
        # Every string reachable from the global object, in case anything carried the env.
        + REACHABLE_STRINGS
        + """
const strings = reachableStrings();
result.reachableStrings = strings.length;
result.everything = strings.join("\\n");
"""
    )
    async with running_engine(config) as engine:
        found = await probe(engine, "/files", body)
    # Development without a configured key keeps a generated one in the data directory.
    key_file = (tmp_path / "data" / DEVELOPMENT_KEY_FILE).read_text().strip()
    assert len(key_file) >= 32
    assert set(found) == {*attempts, "reachableStrings", "everything"}
    assert found["reachableStrings"] > 100  # the walk ran over the API and the context
    text = json.dumps(found)
    assert "root:" not in text  # /etc/passwd's first line
    assert file_canary not in text
    assert canary not in text
    assert key_file not in text
    assert found["fetch file URL"].startswith("threw Fetch error:"), found["fetch file URL"]
    assert found["fetchAsset planted"] == f"Asset '{planted}' not found"


# ---------------------------------------------------------------------------------------------
# Isolation between scripts and between contexts

POLLUTER = """
function h(context) {
  if (context.request.query.pollute) {
    globalThis.leaked = "from A";
    Object.prototype.polluted = "from A";
    Array.prototype.polluted = "from A";
    String.prototype.polluted = "from A";
    Function.prototype.polluted = "from A";
    JSON.hijacked = "by A";
    Math.random = function () { return 4; };
  }
  return JSON.stringify({ marker: "$MARK", result: [
    typeof leaked === "undefined" ? null : leaked, ({}).polluted || null, [].polluted || null,
    "".polluted || null, (function () {}).polluted || null, JSON.hijacked || null,
    Math.random() === 4,
  ] });
}
""".replace("$MARK", MARK)


async def test_globals_and_prototype_changes_never_reach_another_script(tmp_path: Path) -> None:
    async with running_engine(single_worker(tmp_path)) as engine:
        await engine.deploy("/a", route_script("/a", POLLUTER))
        await engine.deploy("/b", route_script("/b", POLLUTER.replace("pollute", "never")))
        polluted = ["from A", "from A", "from A", "from A", "from A", "by A", True]
        clean = [None, None, None, None, None, None, False]
        assert await run_probe(engine, "/a", pollute="1") == polluted
        # The same worker (there is only one) serves B from its own context...
        assert await run_probe(engine, "/b") == clean
        # ...while A's context kept its changes, so B had something to see.
        assert await run_probe(engine, "/a") == polluted
        # A script evaluated after the pollution starts clean.
        await engine.deploy("/c", route_script("/c", POLLUTER.replace("pollute", "never")))
        assert await run_probe(engine, "/c") == clean
        assert engine.runtime.pool.stats().restarts == 0


async def test_a_warm_context_on_another_worker_has_its_own_globals(engine: Engine) -> None:
    """Globals persist per context (documented), and each worker holds its own context."""
    script = """
function h(context) {
  if (context.request.query.set) { globalThis.mark = "set"; Object.prototype.polluted = "yes"; }
  else { const until = Date.now() + 300; while (Date.now() < until) {} }
  const result = [globalThis.mark || null, ({}).polluted || null];
  return JSON.stringify({ marker: "$MARK", result: result });
}
""".replace("$MARK", MARK)
    await engine.deploy("/warm", route_script("/warm", script))
    assert await run_probe(engine, "/warm", set="1") == ["set", "yes"]
    results: list[Any] = []

    async def busy() -> None:
        results.append(await run_probe(engine, "/warm"))

    # Two invocations at once occupy both workers: one is the worker that ran the first
    # request, the other never saw it.
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy)
            nursery.start_soon(busy)
    assert sorted(results, key=json.dumps) == [["set", "yes"], [None, None]]


OWNER = """
var TOKEN = "%s";
function ownerHandler(context) { return sharedStorage.getItem("secret"); }
function init() {
  sharedStorage.setItem("secret", TOKEN);
  upsertAsset("secret.txt", btoa(TOKEN), "text/plain");
  routeRegistry.registerRoute("/owner", "ownerHandler", "GET");
  routeRegistry.registerAssetRoute("/owner/secret.txt", "secret.txt");
}
"""

THIEF = """
function h(context) {
  const tries = {};
  function attempt(name, f) {
    try { tries[name] = f(); } catch (e) { tries[name] = "threw " + e.message; }
  }
  const keys = ["secret", "/owner:secret", "/owner/secret", "../owner/secret", "owner#secret"];
  for (const key of keys) {
    attempt("shared " + key, function () { return sharedStorage.getItem(key); });
    attempt("personal " + key, function () { return personalStorage.getItem(key); });
  }
  const names = ["secret.txt", "../owner/secret.txt", "/owner/secret.txt", "owner/secret.txt"];
  for (const name of names) {
    attempt("asset " + name, function () { return fetchAsset(name); });
  }
  attempt("listAssets", function () { return listAssets(); });
  attempt("handler global", function () { return typeof ownerHandler + typeof TOKEN; });
  attempt("clear", function () { return sharedStorage.clear(); });
  return JSON.stringify({ marker: "$MARK", result: tries });
}
function init() {
  routeRegistry.registerRoute("/thief", "h", "GET");
  routeRegistry.registerRoute("/thief/call", "ownerHandler", "GET");
  routeRegistry.registerAssetRoute("/thief/asset", "secret.txt");
  graphQLRegistry.registerQuery("steal", "steal: String", "ownerHandler", "external");
}
"""


async def test_a_script_cannot_reach_another_scripts_storage_assets_or_handlers(
    engine: Engine,
) -> None:
    token = "owner-secret-" + os.urandom(8).hex()
    report = await engine.deploy("/owner", OWNER % token)
    assert report["init"]["success"], report
    report = await engine.deploy("/thief", THIEF.replace("$MARK", MARK))
    assert report["init"]["success"], report

    tries = await run_probe(engine, "/thief")
    assert token not in json.dumps(tries)
    storage = {key: value for key, value in tries.items() if key.startswith(("shared", "person"))}
    assert len(storage) == 10
    assert set(storage.values()) == {None}
    assets = {key[6:]: value for key, value in tries.items() if key.startswith("asset ")}
    assert assets == {name: f"Asset '{name}' not found" for name in assets}
    assert len(assets) == 4
    assert tries["listAssets"] == []
    assert tries["handler global"] == "undefinedundefined"
    # A handler name is looked up in the registering script's own context.
    call = await engine.client.get("/thief/call")
    assert call.status_code == 500
    assert error_of(call)["code"] == "SCRIPT_EXECUTION_FAILED"
    assert token not in call.text
    assert (await engine.client.get("/thief/asset")).status_code == 404
    stolen = await engine.client.post("/graphql", json={"query": "{ steal }"})
    assert stolen.json()["data"] == {"steal": None}
    assert stolen.json()["errors"], stolen.text
    assert token not in stolen.text
    # The thief's clear() emptied only its own storage: the owner still has its data.
    owner = await engine.client.get("/owner")
    assert owner.text == token
    asset = await engine.client.get("/owner/secret.txt")
    assert asset.status_code == 200
    assert asset.text == token


# ---------------------------------------------------------------------------------------------
# __proto__ keys through the host APIs: plain data, on both sides

PROTO_JSON = '{"__proto__": {"polluted": "yes"}, "constructor": {"prototype": {"polluted": "yes"}}}'


async def test_proto_keys_in_shared_storage_are_plain_keys(engine: Engine) -> None:
    body = """
const answers = [
  sharedStorage.setItem("__proto__", '{"polluted": "yes"}'),
  sharedStorage.setItem("constructor", "c"),
  sharedStorage.getItem("__proto__"),
  sharedStorage.getItem("constructor"),
  sharedStorage.getItem("toString"),
  sharedStorage.getItem("hasOwnProperty"),
  sharedStorage.getItem("__defineGetter__"),
  typeof ({}).polluted,
  sharedStorage.removeItem("__proto__"),
  sharedStorage.getItem("__proto__"),
  sharedStorage.removeItem("toString"),
];
result = answers;
"""
    found = await probe(engine, "/proto-storage", body)
    assert found == [
        "Item set successfully",
        "Item set successfully",
        '{"polluted": "yes"}',
        "c",
        None,
        None,
        None,
        "undefined",
        True,
        None,
        False,
    ]


async def test_proto_keys_in_the_request_are_plain_data(engine: Engine) -> None:
    body = """
const request = context.request;
result = {
  queryKeys: Object.keys(request.query).sort(),
  queryProto: request.query.__proto__,
  formKeys: Object.keys(request.form || {}).sort(),
  header: request.headers["__proto__"] || null,
  queryInherits: Object.getPrototypeOf(request.query) === Object.prototype,
  polluted: [typeof ({}).polluted, typeof request.polluted, typeof context.polluted],
};
"""
    await engine.deploy("/proto-request", probe_script("/proto-request", body))
    await engine.deploy(
        "/proto-request-post",
        probe_script("/proto-request-post", body).replace('"GET"', '"POST"'),
    )
    query = "__proto__=x&__proto__[polluted]=yes&constructor[prototype][polluted]=yes&a=1"
    response = await engine.client.get(f"/proto-request?{query}", headers={"__proto__": "h"})
    assert response.status_code == 200, response.text
    found = response.json()
    assert found["marker"] == MARK
    assert found["result"] == {
        "queryKeys": ["__proto__", "__proto__[polluted]", "a", "constructor[prototype][polluted]"],
        "queryProto": "x",
        "formKeys": [],
        "header": "h",
        "queryInherits": True,
        "polluted": ["undefined", "undefined", "undefined"],
    }
    response = await engine.client.post(
        "/proto-request-post", data={"__proto__": "f", "constructor": "g"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"]["formKeys"] == ["__proto__", "constructor"]


PROTO_STREAMS = """
function send(context) {
  const out = [];
  const filters = [
    '{"__proto__": "a"}',
    JSON.parse('{"__proto__": "a"}'),
    '{"__proto__": {"room": "a"}}',
    { __proto__: { room: "a" } },
    { room: "a" },
  ];
  filters.forEach(function (filter, i) {
    try { out.push(routeRegistry.sendStreamMessageFiltered("/feed", "m" + i, filter, "subset")); }
    catch (e) { out.push("threw " + e.message); }
  });
  return JSON.stringify({ marker: "$MARK", result: [out, typeof ({}).room, typeof ({}).polluted] });
}
function init() {
  routeRegistry.registerStreamRoute("/feed");
  routeRegistry.registerRoute("/send", "send", "GET");
}
""".replace("$MARK", MARK)


async def test_proto_keys_in_stream_filters_match_only_what_they_say(engine: Engine) -> None:
    await engine.deploy("/proto-streams", PROTO_STREAMS)
    hub = engine.runtime.streams
    plain = hub.subscribe("/feed", {})
    room_a = hub.subscribe("/feed", {"room": "a"})
    proto_a = hub.subscribe("/feed", {"__proto__": "a"})
    answers, room_type, polluted_type = await run_probe(engine, "/send")
    sent = "Successfully sent filtered message to {} connections on path '/feed'"
    # A subscriber receives a message when its metadata is within the filter (one without
    # metadata receives everything).
    assert answers == [
        sent.format(2),  # JSON text: "__proto__" is a key like any other
        sent.format(2),  # JSON.parse made it an own key
        "threw Invalid filter JSON: the value of '__proto__' must be a string, got dict",
        # An object literal's __proto__ sets its prototype: no own keys, the filter is {}.
        sent.format(1),
        sent.format(2),
    ]
    assert (room_type, polluted_type) == ("undefined", "undefined")

    async def received(subscription: Any, count: int) -> list[str]:
        with trio.fail_after(5):
            return [(await subscription.receive()).data for _ in range(count)]

    assert await received(proto_a, 2) == ["m0", "m1"]
    assert await received(room_a, 1) == ["m4"]
    assert await received(plain, 4) == ["m0", "m1", "m3", "m4"]


PROTO_GRAPHQL = """
function echo(context) {
  return [context.args.v, typeof ({}).polluted, Object.keys(context.args).join(",")].join("|");
}
function viaScript(context) {
  return graphQLRegistry.executeGraphQL("query ($v: String) { echo(v: $v) }", VARIABLES);
}
function init() {
  graphQLRegistry.registerQuery("echo", "echo(v: String): String", "echo", "external");
  routeRegistry.registerRoute("/gql", "viaScript", "GET");
}
"""


async def test_proto_keys_in_graphql_variables_are_ignored(engine: Engine) -> None:
    variables = {**json.loads(PROTO_JSON), "v": "ok"}
    script = PROTO_GRAPHQL.replace("VARIABLES", json.dumps(json.dumps(variables)))
    report = await engine.deploy("/proto-graphql", script)
    assert report["init"]["success"], report
    query = "query ($v: String) { echo(v: $v) }"
    response = await engine.client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"echo": "ok|undefined|v"}}
    response = await engine.client.get("/gql")
    assert response.status_code == 200, response.text
    assert json.loads(response.text) == {"data": {"echo": "ok|undefined|v"}}


PROTO_RESPONSES = """
function own(context) {
  const response = ResponseBuilder.text("own");
  response.headers = JSON.parse('{"__proto__": "evil", "X-Ok": "1"}');
  return response;
}
function protoObject(context) {
  const response = ResponseBuilder.text("object");
  response.headers = JSON.parse('{"__proto__": {"X-Evil": "1"}, "X-Ok": "1"}');
  return response;
}
function inherited(context) {
  const response = ResponseBuilder.text("inherited");
  response.headers = { __proto__: { "X-Evil": "1" }, "X-Ok": "1" };
  return response;
}
function protoStatus(context) {
  return JSON.parse('{"__proto__": {"status": 500, "body": "evil"}, "body": "status"}');
}
function jsonBody(context) {
  return ResponseBuilder.json(JSON.parse('{"__proto__": {"a": 1}, "b": 2}'));
}
function plain(context) { return ResponseBuilder.text("plain"); }
function init() {
  for (const name of ["own", "protoObject", "inherited", "protoStatus", "jsonBody", "plain"]) {
    routeRegistry.registerRoute("/r/" + name, name, "GET");
  }
}
"""


async def test_proto_keys_in_responses_are_plain_data(tmp_path: Path) -> None:
    async with running_engine(single_worker(tmp_path)) as engine:
        await engine.deploy("/proto-responses", PROTO_RESPONSES)
        answers: dict[str, httpx.Response] = {}
        for name in ("own", "protoObject", "inherited", "protoStatus", "jsonBody", "plain"):
            answers[name] = await engine.client.get(f"/r/{name}")
    for name in ("own", "protoObject", "inherited"):
        response = answers[name]
        assert response.status_code == 200, response.text
        assert response.text == {"protoObject": "object"}.get(name, name)
        assert response.headers["x-ok"] == "1"
        assert "x-evil" not in response.headers
        assert "__proto__" not in response.headers
    # JSON.parse makes "__proto__" an own key: the object has a body and no status.
    assert answers["protoStatus"].status_code == 500
    assert error_of(answers["protoStatus"])["details"] == (
        "missing status: handler 'protoStatus' returned an object without a status"
    )
    assert answers["jsonBody"].json() == {"__proto__": {"a": 1}, "b": 2}
    # Nothing stuck to the context the handlers share.
    plain = answers["plain"]
    assert (plain.status_code, plain.text) == (200, "plain")
    assert "x-ok" not in plain.headers
    assert "x-evil" not in plain.headers


PROTO_LISTENER = """
function onEvent(context) {
  const data = context.messageData;
  const heard = JSON.parse(sharedStorage.getItem("heard") || "[]");
  heard.push({ data: data, keys: Object.keys(data), polluted: typeof ({}).polluted,
               plainPrototype: Object.getPrototypeOf(data) === Object.prototype });
  sharedStorage.setItem("heard", JSON.stringify(heard));
}
function show(context) { return sharedStorage.getItem("heard"); }
function init() {
  dispatcher.registerListener("evt", "onEvent");
  routeRegistry.registerRoute("/heard", "show", "GET");
}
"""

PROTO_SENDER = """
function h(context) {
  result = [
    dispatcher.sendMessage("evt", TEXT),
    dispatcher.sendMessage("evt", JSON.parse(TEXT)),
    typeof ({}).polluted,
  ];
  return JSON.stringify({ marker: "$MARK", result: result });
}
var result;
""".replace("$MARK", MARK)


async def test_proto_keys_in_dispatcher_messages_are_plain_data(engine: Engine) -> None:
    await engine.deploy("/proto-listener", PROTO_LISTENER)
    sender = PROTO_SENDER.replace("TEXT", json.dumps(PROTO_JSON))
    await engine.deploy("/proto-sender", route_script("/proto-sender", sender))
    answers = await run_probe(engine, "/proto-sender")
    assert answers == ["Dispatched message type 'evt': 1 successful, 0 failed"] * 2 + ["undefined"]
    heard = (await engine.client.get("/heard")).json()
    expected = {
        "data": json.loads(PROTO_JSON),
        "keys": ["__proto__", "constructor"],
        "polluted": "undefined",
        "plainPrototype": True,
    }
    assert heard == [expected, expected]


# ---------------------------------------------------------------------------------------------
# Hostile arguments to every host API

HOSTILE_VALUES = r"""
function nested(depth) {
  const root = {};
  let cur = root;
  for (let i = 0; i < depth; i++) { cur.a = {}; cur = cur.a; }
  return root;
}
const MAKERS = {
  object: () => ({ a: 1 }), array: () => [1, "two"], symbol: () => Symbol("s"),
  function: () => function f() {}, bigint: () => 10n, undefined: () => undefined,
  null: () => null, NaN: () => NaN, Infinity: () => -Infinity, negativeZero: () => -0,
  boolean: () => true, date: () => new Date(NaN), regexp: () => /x/g,
  typed: () => new Uint8Array(4),
  cyclic: () => { const c = {}; c.self = c; return c; },
  throwingToString: () => ({ toString: function () { throw new Error("toString trap"); } }),
  throwingToJSON: () => ({ toJSON: function () { throw new Error("toJSON trap"); } }),
  proxy: () => new Proxy({}, {
    get: function () { throw new Error("proxy trap"); },
    ownKeys: function () { throw new Error("proxy trap"); },
  }),
  loneSurrogates: () => "\uD800x\uDC00", nul: () => "a\u0000b", empty: () => "",
  blank: () => " \t\n", protoKey: () => "__proto__",
  protoJson: () => '{"__proto__": {"polluted": "yes"}}',
  longString: () => "x".repeat(200000),
  deep200: () => nested(200), deep2000: () => nested(2000), deep100k: () => nested(100000),
  deepText900: () => "[".repeat(900) + "]".repeat(900),
  deepText5000: () => '{"a":'.repeat(5000) + "1" + "}".repeat(5000),
};
function hostileValues() {
  const values = {};
  for (const name of Object.keys(MAKERS)) values[name] = MAKERS[name]();
  return values;
}
"""

HOSTILE_MATRIX = (
    HOSTILE_VALUES
    + r"""
const V = { placeholder: true };
const APIS = [
  ["console.log", console.log, [V, V]],
  ["writeLog", writeLog, [V]],
  ["sharedStorage.getItem", sharedStorage.getItem, [V]],
  ["sharedStorage.setItem", sharedStorage.setItem, [V, V]],
  ["sharedStorage.setItem value", sharedStorage.setItem, ["key", V]],
  ["sharedStorage.removeItem", sharedStorage.removeItem, [V]],
  ["personalStorage.getItem", personalStorage.getItem, [V]],
  ["personalStorage.setItem", personalStorage.setItem, [V, V]],
  ["secretStorage.exists", secretStorage.exists, [V]],
  ["secretStorage.setSecret", secretStorage.setSecret, [V, V, V]],
  ["secretStorage.removeSecret", secretStorage.removeSecret, [V]],
  ["assetStorage.fetchAsset", assetStorage.fetchAsset, [V]],
  ["assetStorage.upsertAsset", assetStorage.upsertAsset, [V, V, V]],
  ["assetStorage.upsertAsset content", assetStorage.upsertAsset, ["a.txt", "text/plain", V]],
  ["assetStorage.deleteAsset", assetStorage.deleteAsset, [V]],
  ["fetchAsset", fetchAsset, [V]],
  ["upsertAsset", upsertAsset, [V, V, V]],
  ["deleteAsset", deleteAsset, [V]],
  ["routeRegistry.registerRoute", routeRegistry.registerRoute, [V, V, V, V]],
  ["routeRegistry.registerStreamRoute", routeRegistry.registerStreamRoute, [V, V, V]],
  ["routeRegistry.registerWebSocketRoute", routeRegistry.registerWebSocketRoute, [V, V, V]],
  ["routeRegistry.registerAssetRoute", routeRegistry.registerAssetRoute, [V, V, V]],
  ["routeRegistry.sendStreamMessage", routeRegistry.sendStreamMessage, ["/feed", V]],
  ["routeRegistry.sendStreamMessage path", routeRegistry.sendStreamMessage, [V, "m"]],
  ["routeRegistry.sendStreamMessageFiltered", routeRegistry.sendStreamMessageFiltered,
   ["/feed", V, V, V]],
  ["routeRegistry.sendStreamMessageFiltered filter", routeRegistry.sendStreamMessageFiltered,
   ["/feed", "m", V, "subset"]],
  ["registerWebStream", registerWebStream, [V]],
  ["sendStreamMessage", sendStreamMessage, [V]],
  ["sendStreamMessageToPath", sendStreamMessageToPath, [V, V]],
  ["register", register, [V, V, V]],
  ["graphQLRegistry.registerQuery", graphQLRegistry.registerQuery, [V, V, V, V]],
  ["graphQLRegistry.registerSubscription", graphQLRegistry.registerSubscription, [V, V, V, V]],
  ["graphQLRegistry.sendSubscriptionMessage", graphQLRegistry.sendSubscriptionMessage, [V, V]],
  ["graphQLRegistry.sendSubscriptionMessageFiltered",
   graphQLRegistry.sendSubscriptionMessageFiltered, ["ticks", "m", V, V]],
  ["graphQLRegistry.executeGraphQL", graphQLRegistry.executeGraphQL, [V, V]],
  ["graphQLRegistry.executeGraphQL variables", graphQLRegistry.executeGraphQL,
   ["{ __typename }", V]],
  ["registerGraphQLQuery", registerGraphQLQuery, [V, V, V]],
  ["sendSubscriptionMessage", sendSubscriptionMessage, [V, V]],
  ["dispatcher.registerListener", dispatcher.registerListener, [V, V]],
  ["dispatcher.sendMessage", dispatcher.sendMessage, [V, V]],
  ["dispatcher.sendMessage data", dispatcher.sendMessage, ["evt", V]],
  ["convert.markdown_to_html", convert.markdown_to_html, [V]],
  ["convert.render_handlebars_template", convert.render_handlebars_template, [V, V]],
  ["convert.render_handlebars_template data", convert.render_handlebars_template, ["{{a}}", V]],
  ["btoa", btoa, [V]],
  ["atob", atob, [V]],
  ["getScript", getScript, [V]],
  ["getScriptInitStatus", getScriptInitStatus, [V]],
  ["listLogsForUri", listLogsForUri, [V]],
  ["upsertScript", upsertScript, [V, V]],
  ["deleteScript", deleteScript, [V]],
  ["fetch", fetch, [V, V]],
  ["fetch options", fetch, ["http://192.0.2.1/", V]],
];
function onEvent(context) { return null; }
function runMatrix(only) {
  const values = hostileValues();
  const outcomes = {};
  for (const [api, fn, template] of APIS) {
    if (only && only.indexOf(api) < 0) continue;
    for (const name of Object.keys(values)) {
      const args = template.map(function (a) { return a === V ? values[name] : a; });
      let outcome;
      try {
        const value = fn.apply(null, args);
        outcome = "ok:" + typeof value + ":" + String(value).slice(0, 120);
      } catch (e) {
        outcome = "threw:" + (e && e.name) + ":" + String(e && e.message).slice(0, 120);
      }
      outcomes[api + " (" + name + ")"] = outcome;
    }
  }
  return outcomes;
}
"""
)

MATRIX_SCRIPT = (
    HOSTILE_MATRIX
    + """
function h(context) {
  const counts = [APIS.length, Object.keys(hostileValues()).length];
  return JSON.stringify({ marker: "$MARK", result: { outcomes: runMatrix(null), counts: counts } });
}
function init() {
  routeRegistry.registerStreamRoute("/feed");
  dispatcher.registerListener("evt", "onEvent");
  routeRegistry.registerRoute("/matrix", "h", "GET");
}
""".replace("$MARK", MARK)
)

CLEAN_OUTCOME = re.compile(r"^(ok:|threw:(Error|TypeError|InternalError|RangeError):)")


async def test_every_host_api_answers_hostile_arguments_with_a_value_or_an_error(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path / "data", **{"sandbox.handler_timeout_ms": 60_000})
    async with running_engine(config) as engine:
        report = await engine.deploy("/matrix", MATRIX_SCRIPT)
        assert report["init"]["success"], report
        with trio.fail_after(90):
            found = await run_probe(engine, "/matrix")
        outcomes: dict[str, str] = found["outcomes"]
        apis, values = found["counts"]
        assert apis >= 50 and values >= 30
        assert len(outcomes) == apis * values
        assert {k: v for k, v in outcomes.items() if not CLEAN_OUTCOME.match(v)} == {}
        # A Python exception in a host API would reach the script as "internal error".
        assert {k: v for k, v in outcomes.items() if "internal error" in v} == {}
        # 100,000 levels: JSON.stringify throws (it used to crash the worker).
        deepest = {k: v for k, v in outcomes.items() if k.endswith("(deep100k)")}
        assert list(deepest.values()).count("threw:InternalError:stack overflow") >= 20
        # Objects handed to the host as they are stop at the worker past 256 levels.
        refused = [k for k, v in outcomes.items() if "nested more than 256 levels deep" in v]
        assert len(refused) >= 5
        assert all(k.endswith("(deep2000)") for k in refused)
        # JSON text the host decodes, nested past Python's recursion limit.
        assert outcomes["routeRegistry.sendStreamMessageFiltered filter (deepText5000)"] == (
            "threw:Error:Invalid filter JSON: nested too deeply"
        )
        assert outcomes["graphQLRegistry.executeGraphQL variables (deepText5000)"] == (
            'ok:string:{"errors":[{"message":"the variables are nested too deeply"}]}'
        )
        assert outcomes["dispatcher.sendMessage data (deepText5000)"] == (
            "ok:string:Dispatched message type 'evt': 1 successful, 0 failed"
        )
        # NUL and lone surrogates: refused where a name cannot hold them, else carried.
        assert outcomes["upsertScript (nul)"] == (
            "ok:string:Error: uri: must not contain control characters"
        )
        assert outcomes["assetStorage.upsertAsset (nul)"] == (
            "ok:string:Invalid asset URI: control characters not allowed"
        )
        assert outcomes["sharedStorage.setItem (protoKey)"] == "ok:string:Item set successfully"
        assert_no_restarts(engine)
        await assert_serving(engine)


REGISTRATION_APIS = [
    "routeRegistry.registerRoute",
    "routeRegistry.registerStreamRoute",
    "routeRegistry.registerWebSocketRoute",
    "routeRegistry.registerAssetRoute",
    "registerWebStream",
    "register",
    "graphQLRegistry.registerQuery",
    "graphQLRegistry.registerSubscription",
    "registerGraphQLQuery",
    "dispatcher.registerListener",
]


async def test_hostile_registrations_during_init_leave_a_working_engine(engine: Engine) -> None:
    script = (
        HOSTILE_MATRIX
        + f"""
function show(context) {{ return sharedStorage.getItem("init outcomes"); }}
function init() {{
  const outcomes = runMatrix({json.dumps(REGISTRATION_APIS)});
  sharedStorage.setItem("init outcomes", JSON.stringify(outcomes));
  routeRegistry.registerRoute("/init-matrix", "show", "GET");
}}
"""
    )
    report = await engine.deploy("/init-matrix", script)
    assert report["init"]["success"], report
    outcomes = json.loads((await engine.client.get("/init-matrix")).text)
    assert len(outcomes) >= len(REGISTRATION_APIS) * 30
    assert {k: v for k, v in outcomes.items() if not CLEAN_OUTCOME.match(v)} == {}
    assert {k: v for k, v in outcomes.items() if "internal error" in v} == {}
    # Whatever the hostile values registered, the engine's tables still answer.
    routes = await engine.client.get("/engine/routes")
    assert routes.status_code == 200, routes.text
    graphql = await engine.client.post("/graphql", json={"query": "{ __typename }"})
    assert graphql.status_code == 200, graphql.text
    assert_no_restarts(engine)
    await assert_serving(engine)


RESULT_SHAPES = {
    "bare": "value",
    "status": '{ status: value, body: "x" }',
    "body": "{ status: 200, body: value }",
    "headers": '{ status: 200, body: "x", headers: value }',
    "header value": '{ status: 200, body: "x", headers: { "X-Hostile": value } }',
    "content type": '{ status: 200, body: "x", contentType: value }',
    "base64 body": "{ status: 200, bodyBase64: value }",
}

RESULTS_SCRIPT = (
    HOSTILE_VALUES
    + """
function names(context) { return JSON.stringify(Object.keys(MAKERS)); }
function h(context) {
  const value = MAKERS[context.request.query.value]();
  switch (context.request.query.shape) {
"""
    + "".join(f'    case "{name}": return {js};\n' for name, js in RESULT_SHAPES.items())
    + """  }
}
function init() {
  routeRegistry.registerRoute("/result", "h", "GET");
  routeRegistry.registerRoute("/result-names", "names", "GET");
}
"""
)


async def test_hostile_results_are_a_response_or_a_clean_500(engine: Engine) -> None:
    await engine.deploy("/results", RESULTS_SCRIPT)
    names = (await engine.client.get("/result-names")).json()
    assert len(names) >= 30
    answers: dict[tuple[str, str], httpx.Response] = {}
    unreadable: list[tuple[str, str]] = []
    limit = trio.CapacityLimiter(4)

    async def fetch(shape: str, name: str) -> None:
        async with limit:
            try:
                answers[shape, name] = await engine.client.get(
                    "/result", params={"shape": shape, "value": name}
                )
            except httpx.RemoteProtocolError:
                unreadable.append((shape, name))

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for shape in RESULT_SHAPES:
                for name in names:
                    nursery.start_soon(fetch, shape, name)
    # A 200,000-character header value is sent as the script asked; httpx refuses to read a
    # header block that large.  The engine itself carries on (checked below).
    assert sorted(unreadable) == [("content type", "longString"), ("header value", "longString")]
    assert len(answers) == len(RESULT_SHAPES) * len(names) - 2
    statuses: dict[int, int] = {}
    for (shape, name), response in answers.items():
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code != 502, (shape, name, response.text)
        if response.status_code >= 500:
            assert error_of(response)["code"] == "SCRIPT_EXECUTION_FAILED", (shape, name)
    # Both kinds of answer happened: hostile values are refused, harmless ones served.
    assert statuses.get(200, 0) > 50 and statuses.get(500, 0) > 20, statuses
    deep = answers["status", "deep100k"]
    assert deep.status_code == 500
    assert "stack overflow" in error_of(deep)["details"]
    deep = answers["status", "deep2000"]
    assert "nested more than 256 levels deep" in error_of(deep)["details"]
    assert_no_restarts(engine)
    await assert_serving(engine)


# The prelude serialises with whatever JSON.stringify is at call time; a script that replaces
# it hands the worker things that are not JSON text at all.
JSON_REPLACEMENTS = {
    "an object": "function () { return {}; }",
    "undefined": "function () { return undefined; }",
    "a number": "function () { return 42; }",
    "NaN text": 'function () { return "NaN"; }',
    "a string instead of a list": "function () { return '\"x\"'; }",
    "deep text": 'function () { return "[".repeat(5000) + "]".repeat(5000); }',
    "deep in range": 'function () { return "[".repeat(300) + "]".repeat(300); }',
}


async def test_a_script_that_replaces_json_stringify_breaks_only_itself(engine: Engine) -> None:
    cases = "".join(
        f'    case "{name}": replacement = {js}; break;\n' for name, js in JSON_REPLACEMENTS.items()
    )
    script = f"""
function h(context) {{
  let replacement;
  switch (context.request.query.case) {{
{cases}  }}
  const original = JSON.stringify;
  JSON.stringify = replacement;
  let answer;
  try {{ sharedStorage.setItem("k", "v"); answer = "stored"; }}
  catch (e) {{ answer = "threw " + e.message; }}
  if (context.request.query.keep) return "left replaced";  // the result goes through it too
  JSON.stringify = original;
  return answer;
}}
"""
    await engine.deploy("/json", route_script("/json", script))
    for name in JSON_REPLACEMENTS:
        response = await engine.client.get("/json", params={"case": name})
        assert response.status_code == 200, (name, response.text)
        assert response.text.startswith("threw sharedStorage.setItem: invalid arguments: "), name
        response = await engine.client.get("/json", params={"case": name, "keep": "1"})
        assert response.status_code == 500, (name, response.text)
        assert "the result cannot be passed to the engine" in error_of(response)["details"]
    assert_no_restarts(engine)
    await assert_serving(engine)


HOSTILE_RESOLVERS = (
    HOSTILE_VALUES
    + """
function deep2000(context) { return MAKERS.deep2000(); }
function deep100k(context) { return MAKERS.deep100k(); }
function cyclic(context) { return MAKERS.cyclic(); }
function fine(context) { return "fine"; }
function init() {
  for (const name of ["deep2000", "deep100k", "cyclic", "fine"]) {
    graphQLRegistry.registerQuery(name, name + ": String", name, "external");
  }
}
"""
)


async def test_hostile_resolver_values_are_graphql_errors(engine: Engine) -> None:
    report = await engine.deploy("/resolvers", HOSTILE_RESOLVERS)
    assert report["init"]["success"], report
    query = "{ deep2000 deep100k cyclic fine }"
    response = await engine.client.post("/graphql", json={"query": query})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["data"] == {"deep2000": None, "deep100k": None, "cyclic": None, "fine": "fine"}
    errors = {error["path"][0]: error["message"] for error in result["errors"]}
    assert "nested more than 256 levels deep" in errors["deep2000"]
    assert "stack overflow" in errors["deep100k"]
    assert "circular" in errors["cyclic"]
    assert_no_restarts(engine)


# Not caught by the script: each must end in the 500 naming the stack, with the worker alive.
DEEP_UNCAUGHT = {
    "JSON.stringify": "JSON.stringify(deep);",
    "sharedStorage.setItem": 'sharedStorage.setItem("k", JSON.stringify(deep));',
    "sendStreamMessage": "sendStreamMessage(deep);",
    "routeRegistry.sendStreamMessageFiltered": (
        'routeRegistry.sendStreamMessageFiltered("/feed", "m", deep);'
    ),
    "dispatcher.sendMessage": 'dispatcher.sendMessage("evt", deep);',
    "graphQLRegistry.executeGraphQL": 'graphQLRegistry.executeGraphQL("{ x }", deep);',
    "convert.render_handlebars_template": 'convert.render_handlebars_template("{{a}}", deep);',
    "fetch options": 'fetch("https://example.com/", deep);',
    "console.log of JSON": "console.log(JSON.stringify(deep));",
    "ResponseBuilder.json": "return ResponseBuilder.json(deep);",
    "returned status": 'return { status: deep, body: "x" };',
}


async def test_deeply_nested_values_end_in_the_stack_error_not_a_dead_worker(
    engine: Engine,
) -> None:
    cases = "".join(
        f'    case "{name}": {{ {js} return "survived"; }}\n' for name, js in DEEP_UNCAUGHT.items()
    )
    script = (
        HOSTILE_VALUES
        + f"""
function h(context) {{
  const deep = MAKERS.deep100k();
  switch (context.request.query.case) {{
{cases}  }}
}}
function init() {{
  routeRegistry.registerStreamRoute("/feed");
  routeRegistry.registerRoute("/deep", "h", "GET");
}}
"""
    )
    await engine.deploy("/deep", script)
    for name in DEEP_UNCAUGHT:
        response = await engine.client.get("/deep", params={"case": name})
        assert response.status_code == 500, (name, response.text)
        details = error_of(response)["details"]
        assert "stack overflow" in details, (name, details)
        assert "stack limit" in details, (name, details)
    assert_no_restarts(engine)
    await assert_serving(engine)


async def test_nul_and_lone_surrogates_cross_the_boundary_as_documented(engine: Engine) -> None:
    body = r"""
const texts = ["a\u0000b", "\uD800x\uDC00", "\uD83D\uDE00", "\u0000"];
result = texts.map(function (text, i) {
  sharedStorage.setItem("t" + i, text);
  return sharedStorage.getItem("t" + i);
});
console.log("log a\u0000b \uD800");
result.push(sharedStorage.setItem("\u0000", "nul key"), sharedStorage.getItem("\u0000"));
"""
    found = await probe(engine, "/texts", body)
    # NUL travels intact; a lone surrogate is not text and becomes U+FFFD; a pair stays.
    assert found == [
        "a\x00b",
        "\ufffdx\ufffd",
        "\U0001f600",
        "\x00",
        "Item set successfully",
        "nul key",
    ]
    logs = await engine.logs(uri="/texts")
    assert "log a\x00b \ufffd" in [entry["message"] for entry in logs]
    await engine.deploy(
        "/raw-text", route_script("/raw-text", r'function h() { return "a\u0000b\uD800"; }')
    )
    response = await engine.client.get("/raw-text")
    assert response.status_code == 200
    assert response.content == b"a\x00b\xef\xbf\xbd"


HUGE_ARGUMENTS = {
    "sharedStorage.setItem": 'sharedStorage.setItem("k", big)',
    "console.log": "console.log(big)",
    "sendStreamMessage": 'routeRegistry.sendStreamMessage("/feed", big)',
    "upsertAsset": 'upsertAsset("big.txt", big, "text/plain")',
    "dispatcher.sendMessage": 'dispatcher.sendMessage("evt", big)',
    "executeGraphQL": "graphQLRegistry.executeGraphQL(big)",
    "returned body": "big",
    "ResponseBuilder.json": "ResponseBuilder.json({ a: big })",
}


def huge_argument_script(size: int) -> str:
    cases = "".join(
        f'    case "{name}": try {{ return String({js}); }}'
        f' catch (e) {{ if (e instanceof InternalError) throw e; return "threw " + e.message; }}\n'
        for name, js in {**HUGE_ARGUMENTS, **OVERSIZED_ARGUMENTS}.items()
    )
    return f"""
function onEvent(context) {{ return null; }}
function h(context) {{
  const big = "x".repeat(Number(context.request.query.size));
  switch (context.request.query.case) {{
{cases}  }}
}}
function init() {{
  routeRegistry.registerStreamRoute("/feed");
  dispatcher.registerListener("evt", "onEvent");
  routeRegistry.registerRoute("/big", "h", "GET");
}}
"""


# Under the limits that apply, below the memory limit: the API's own refusal.
OVERSIZED_ARGUMENTS = {
    "setItem 2 MiB": 'sharedStorage.setItem("k", big)',
    "markdown 2 MiB": "convert.markdown_to_html(big)",
    "template 2 MiB": "convert.render_handlebars_template(big, {})",
    "query 2 MiB": "graphQLRegistry.executeGraphQL(big)",
    "script 2 MiB": 'upsertScript("/big-script", big)',
    "URL 2 MiB": 'fetch("https://example.com/" + big)',
    "asset over 10 MB": 'upsertAsset("big.bin", big.repeat(7), "application/octet-stream")',
}
OVERSIZED_ANSWERS = {
    "setItem 2 MiB": "Error: Value too large (>1MB)",
    "markdown 2 MiB": "Error: Markdown input too large (max 1000000 bytes)",
    "template 2 MiB": "Error: Template too large (max 1000000 bytes)",
    "query 2 MiB": '{"errors":[{"message":"the query must be 1-100000 characters"}]}',
    "script 2 MiB": f"Error: content: must be at most 1000000 bytes (got {2 * MiB})",
    "URL 2 MiB": "threw Fetch error: Invalid URL: longer than 8192 characters",
    "asset over 10 MB": "Asset too large (max 10MB)",
}


async def test_a_50_mb_argument_ends_in_the_memory_limit_error(tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "data",
        **{"sandbox.breaker_failure_threshold": 1000, "sandbox.handler_timeout_ms": 20_000},
    )
    async with running_engine(config) as engine:
        await engine.deploy("/big", huge_argument_script(50 * MiB))
        answers: dict[str, httpx.Response] = {}

        async def call(name: str) -> None:
            params = {"case": name, "size": str(50 * MiB)}
            answers[name] = await engine.client.get("/big", params=params)

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for name in HUGE_ARGUMENTS:
                    nursery.start_soon(call, name)
        for name, response in answers.items():
            assert response.status_code == 500, (name, response.text[:300])
            details = error_of(response)["details"]
            assert "exceeded its memory limit of 64 MiB" in details, (name, details)
        assert len(answers) == len(HUGE_ARGUMENTS)
        # Memory exhaustion is handled inside the worker.
        assert_no_restarts(engine)
        await assert_serving(engine)


FRAME_FILLER = """
function h(context) {
  // A control character is one byte in QuickJS and six ("\\u0001") in a JSON frame.
  const big = "\\u0001".repeat(12 * 1024 * 1024);
  switch (context.request.query.case) {
    case "log": console.log(big); return "logged";
    case "result": return big;
    case "host call": return sharedStorage.setItem("k", big);
  }
}
"""


async def test_past_the_frame_limit_a_result_or_argument_fails_cleanly(tmp_path: Path) -> None:
    """With a raised memory limit a value can outgrow the 64 MiB frame between the worker and
    the engine: the script fails (a log line is cut), the worker stays."""
    config = make_config(
        tmp_path / "data",
        **{"sandbox.memory_limit_bytes": 256 * MiB, "sandbox.handler_timeout_ms": 30_000},
    )
    async with running_engine(config) as engine:
        await engine.deploy("/filler", route_script("/filler", FRAME_FILLER))
        with trio.fail_after(90):
            logged = await engine.client.get("/filler", params={"case": "log"})
            result = await engine.client.get("/filler", params={"case": "result"})
            stored = await engine.client.get("/filler", params={"case": "host call"})
        assert (logged.status_code, logged.text) == (200, "logged")
        logs = await engine.logs(uri="/filler")
        (line,) = [entry["message"] for entry in logs if entry["level"] == "LOG"]
        assert line.startswith("\x01" * 1000)
        assert line.endswith(f"… (a line of {12 * MiB} characters, cut)")
        assert result.status_code == 500
        assert "the result cannot be passed to the engine: frame of" in error_of(result)["details"]
        assert stored.status_code == 500
        assert "sharedStorage.setItem: host call failed: frame of" in error_of(stored)["details"]
        assert_no_restarts(engine)


async def test_oversized_arguments_get_the_apis_own_refusal(engine: Engine) -> None:
    await engine.deploy("/big", huge_argument_script(2 * MiB))
    for name, expected in OVERSIZED_ANSWERS.items():
        response = await engine.client.get("/big", params={"case": name, "size": str(2 * MiB)})
        assert response.status_code == 200, (name, response.text[:300])
        assert response.text == expected, name
    assert_no_restarts(engine)


# ---------------------------------------------------------------------------------------------
# Exhausting stack, memory and time

RUNAWAYS: dict[str, tuple[str, int, str, str]] = {
    "deep recursion": (
        "function r(n) { return r(n + 1) + 1; } r(0);",
        500,
        "SCRIPT_EXECUTION_FAILED",
        "stack overflow",
    ),
    "giant string": (
        '"x".repeat(1 << 29);',
        500,
        "SCRIPT_EXECUTION_FAILED",
        "exceeded its memory limit",
    ),
    "doubling string": (
        'let s = "x"; for (;;) s += s;',
        500,
        "SCRIPT_EXECUTION_FAILED",
        "exceeded its memory limit",
    ),
    "giant array": ("new Array(1e8).fill(0);", 500, "SCRIPT_EXECUTION_FAILED", "memory limit"),
    "object hoard": (
        "const a = []; for (;;) a.push({ n: a.length, s: 'v' + a.length });",
        500,
        "SCRIPT_EXECUTION_FAILED",
        "memory limit",
    ),
    "infinite loop": ("for (;;) {}", 504, "SCRIPT_TIMEOUT", "exceeded its 1000ms budget"),
    "catastrophic regex": (
        '/(a+)+$/.test("a".repeat(30) + "b");',
        504,
        "SCRIPT_TIMEOUT",
        "exceeded its 1000ms budget",
    ),
}


async def test_runaway_handlers_end_cleanly_and_the_engine_keeps_serving(tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "data",
        **{"sandbox.handler_timeout_ms": 1000, "sandbox.breaker_failure_threshold": 1000},
    )
    cases = "".join(
        f'    case "{name}": {{ {js} break; }}\n' for name, (js, *_) in RUNAWAYS.items()
    )
    script = f"""
function h(context) {{
  switch (context.request.query.case) {{
{cases}  }}
  return "survived";
}}
"""
    async with running_engine(config) as engine:
        await engine.deploy("/runaway", route_script("/runaway", script))
        await engine.deploy("/healthy", HEALTHY)
        pool = engine.runtime.pool
        for name, (_, status, code, detail) in RUNAWAYS.items():
            restarts = pool.stats().restarts
            started = time.monotonic()
            with trio.fail_after(15):
                response = await engine.client.get("/runaway", params={"case": name})
            elapsed = time.monotonic() - started
            assert response.status_code == status, (name, response.text[:300])
            error = error_of(response)
            assert error["code"] == code, name
            assert detail in error["details"], (name, error["details"])
            if status == 504:
                assert elapsed < 1.0 + 1.5, (name, elapsed)  # stopped by the deadline
            else:
                assert pool.stats().restarts == restarts, f"{name} cost a worker"
            # Another script answers at once, every time.
            ok = await engine.client.get("/ok")
            assert (ok.status_code, ok.text) == (200, "ok"), name


async def test_repeated_memory_exhaustion_does_not_degrade_other_scripts(tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "data",
        **{"sandbox.breaker_failure_threshold": 1000, "sandbox.memory_limit_bytes": 32 * MiB},
    )
    bomb = "function h() { const a = []; for (;;) a.push(new Array(1e5).fill(1)); }"
    async with running_engine(config) as engine:
        await engine.deploy("/bomb", route_script("/bomb", bomb))
        await engine.deploy("/healthy", HEALTHY)
        bombs: list[httpx.Response] = []
        healthy: list[tuple[httpx.Response, float]] = []

        async def keep_bombing() -> None:
            for _ in range(6):
                bombs.append(await engine.client.get("/bomb"))

        async def keep_asking() -> None:
            for _ in range(30):
                started = time.monotonic()
                response = await engine.client.get("/ok")
                healthy.append((response, time.monotonic() - started))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(keep_bombing)
                nursery.start_soon(keep_asking)
        assert len(bombs) == 18
        for response in bombs:
            assert response.status_code == 500, response.text[:300]
            assert "exceeded its memory limit of 32 MiB" in error_of(response)["details"]
        assert [r.text for r, _ in healthy] == ["ok"] * 30
        # A healthy request waits at most for one bomb to go off, never behind all of them.
        assert max(seconds for _, seconds in healthy) < 3.0
        assert_no_restarts(engine)


# ---------------------------------------------------------------------------------------------
# The engine's secrets

SECRETS_PROBE = (
    REACHABLE_STRINGS
    + r"""
function h(context) {
  const found = {};
  function attempt(name, f) {
    try { found[name] = String(f()); } catch (e) { found[name] = "threw " + e.message; }
  }
  const strings = reachableStrings();
  found.reachable = strings.join("\n");
  found.reachableCount = strings.length;
  attempt("listScripts", () => JSON.stringify(listScripts()));
  attempt("listLogs", () => JSON.stringify(listLogs()));
  for (const uri of listScripts()) {
    attempt("getScript " + uri, () => getScript(uri));
    attempt("init status " + uri, () => getScriptInitStatus(uri));
    attempt("logs " + uri, () => JSON.stringify(listLogsForUri(uri)));
  }
  const base = context.request.query.base;
  const port = base.split(":").pop();
  const urls = [
    base + "/engine/scripts", base + "/engine/secrets?script=/secrets",
    "http://localhost:" + port + "/engine/scripts", "http://[::1]:" + port + "/health",
    "http://127.1:" + port + "/engine/audit",
  ];
  const options = { headers: { Authorization: "Bearer {{secret:ADMIN}}" } };
  for (const url of urls) {
    attempt("fetch " + url, () => fetch(url, options));
  }
  attempt("secretStorage", () => [secretStorage.exists("ADMIN"), secretStorage.exists("API_KEY")]);
  return JSON.stringify({ marker: "$MARK", result: found });
}
""".replace("$MARK", MARK)
)


async def test_a_script_cannot_read_the_admin_token_or_the_encryption_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "admin-" + os.urandom(24).hex()
    key = "BqGWSYjMGFzfVwD856L9JkOSp7LZwoktJO-s4fuXOOA"
    env = {
        "AIWEBENGINE_SECURITY__ADMIN_TOKEN": token,
        "AIWEBENGINE_SECURITY__SECRET_ENCRYPTION_KEY": key,
    }
    for name, value in env.items():  # where the engine's processes, workers included, see them
        monkeypatch.setenv(name, value)
    config = load_config(
        None,
        env=env,
        overrides={
            "server.data_dir": str(tmp_path / "data"),
            "server.port": 0,
            "sandbox.pool_size": 2,
            "sandbox.warm_spares": 1,
            "logging.level": "warning",
        },
    )
    admin = {"Authorization": f"Bearer {token}"}
    async with running_engine(config, headers=admin) as engine:
        # A script secret that would carry the token, had any script been able to read it.
        await engine.deploy("/secrets", route_script("/secrets", SECRETS_PROBE))
        response = await engine.client.post(
            "/engine/secrets", json={"script": "/secrets", "key": "API_KEY", "value": token}
        )
        assert response.status_code in (200, 201), response.text
        # The probe is called without the token: a request's own headers are the script's.
        async with httpx.AsyncClient(base_url=engine.base_url, timeout=30) as anonymous:
            response = await anonymous.get("/secrets", params={"base": engine.base_url})
        assert response.status_code == 200, response.text
        found = response.json()["result"]
        logs = await engine.logs(uri="/secrets")
    assert found["reachableCount"] > 100
    assert "listScripts" in found and "getScript /secrets" in found
    text = json.dumps(found) + json.dumps(logs)
    assert token not in text
    assert key not in text
    fetches = {name: value for name, value in found.items() if name.startswith("fetch ")}
    assert len(fetches) == 5
    assert all(v.startswith("threw Fetch error: Blocked URL:") for v in fetches.values()), fetches
    # Whether a secret exists is not its value.
    assert found["secretStorage"] == "false,true"


async def start_recording_server(nursery: trio.Nursery, heads: list[bytes]) -> int:
    """An HTTP server on 127.0.0.1 that records each request head and answers 200 "seen";
    its port."""

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        with trio.move_on_after(5):
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                data += chunk
        heads.append(data.split(b"\r\n\r\n", 1)[0])
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n"
            b"Connection: close\r\n\r\nseen"
        )
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


SECRET_USER = """
function h(context) {
  const url = "http://127.0.0.1:" + context.request.query.port + "/" + context.request.query.who;
  let answer;
  try { answer = fetch(url, { headers: { "X-Key": "{{secret:API_KEY}}" } }); }
  catch (e) { answer = "threw " + e.message; }
  return JSON.stringify({ marker: "$MARK", result: answer });
}
""".replace("$MARK", MARK)


async def test_a_scripts_secret_goes_only_into_its_own_fetches(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", **{"fetch.allow_networks": "127.0.0.1/32"})
    secret = "script-secret-" + os.urandom(8).hex()
    heads: list[bytes] = []
    async with trio.open_nursery() as servers:
        port = await start_recording_server(servers, heads)
        async with running_engine(config) as engine:
            for uri in ("/owner", "/other"):
                await engine.deploy(uri, route_script(uri, SECRET_USER))
            response = await engine.client.post(
                "/engine/secrets",
                json={
                    "script": "/owner",
                    "key": "API_KEY",
                    "value": secret,
                    "allowedHosts": ["127.0.0.1"],
                },
            )
            assert response.status_code in (200, 201), response.text
            owner = await run_probe(engine, "/owner", port=str(port), who="owner")
            other = await run_probe(engine, "/other", port=str(port), who="other")
        servers.cancel_scope.cancel()
    # The owner's request carried the secret; what the owner's script read back did not.
    assert len(heads) == 1
    assert heads[0].startswith(b"GET /owner ")
    assert f"x-key: {secret}".encode() in heads[0].lower()
    assert json.loads(owner)["body"] == "seen"
    assert secret not in owner
    # Another script names the same secret and gets nothing: no request was even sent.
    assert other == "threw Fetch error: Secret not found: API_KEY"
