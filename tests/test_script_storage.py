"""sharedStorage and personalStorage over real requests (UPSTREAM_API §2.4, §8 items 11-12)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import Engine, EngineProcess

STORE = """
function put(ctx) {
  var q = ctx.request.query;
  return JSON.stringify(sharedStorage.setItem(q.key, q.value));
}
function putRaw(ctx) {
  var values = { number: 42, object: { a: [1, "b"] }, nothing: null, missing: undefined };
  var out = {};
  for (var name in values) {
    sharedStorage.setItem(name, values[name]);
    out[name] = sharedStorage.getItem(name);
  }
  return ResponseBuilder.json(out);
}
function get(ctx) { return JSON.stringify(sharedStorage.getItem(ctx.request.query.key)); }
function del(ctx) { return JSON.stringify(sharedStorage.removeItem(ctx.request.query.key)); }
function clear(ctx) { return JSON.stringify(sharedStorage.clear()); }
function big(ctx) {
  var n = Number(ctx.request.query.n);
  return JSON.stringify(sharedStorage.setItem("big", new Array(n + 1).join("x")));
}
function personal(ctx) {
  return ResponseBuilder.json({
    set: personalStorage.setItem("k", "v"),
    get: personalStorage.getItem("k"),
    removed: personalStorage.removeItem("k"),
    cleared: personalStorage.clear(),
  });
}
function init() {
  register("/put", "put");
  register("/put-raw", "putRaw");
  register("/get", "get");
  register("/del", "del");
  register("/clear", "clear");
  register("/big", "big");
  register("/personal", "personal");
}
"""

OTHER = """
function get(ctx) { return JSON.stringify(sharedStorage.getItem(ctx.request.query.key)); }
function init() { register("/other/get", "get"); }
"""


async def answer(engine: Engine, path: str, **params: str) -> object:
    response = await engine.client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_shared_storage_round_trip_with_the_original_return_values(engine: Engine) -> None:
    await engine.deploy("store", STORE)
    assert await answer(engine, "/get", key="k") is None
    assert await answer(engine, "/put", key="k", value="v1") == "Item set successfully"
    assert await answer(engine, "/get", key="k") == "v1"
    assert await answer(engine, "/put", key="k", value="v2") == "Item set successfully"
    assert await answer(engine, "/get", key="k") == "v2"
    assert await answer(engine, "/del", key="k") is True
    assert await answer(engine, "/del", key="k") is False
    assert await answer(engine, "/get", key="k") is None
    await answer(engine, "/put", key="a", value="1")
    assert await answer(engine, "/clear") == "Storage cleared successfully"
    assert await answer(engine, "/get", key="a") is None


async def test_keys_must_not_be_blank_and_values_are_at_most_a_million_bytes(
    engine: Engine,
) -> None:
    await engine.deploy("store", STORE)
    assert await answer(engine, "/put", key="  ", value="v") == "Error: Key cannot be empty"
    assert await answer(engine, "/big", n="1000000") == "Item set successfully"
    assert await answer(engine, "/big", n="1000001") == "Error: Value too large (>1MB)"


async def test_non_string_values_are_stored_as_text(engine: Engine) -> None:
    await engine.deploy("store", STORE)
    assert await answer(engine, "/put-raw") == {
        "number": "42",
        "object": '{"a":[1,"b"]}',
        "nothing": "null",
        "missing": "undefined",
    }


async def test_each_script_has_its_own_shared_storage(engine: Engine) -> None:
    await engine.deploy("store", STORE)
    await engine.deploy("other", OTHER)
    await answer(engine, "/put", key="k", value="mine")
    assert await answer(engine, "/other/get", key="k") is None


async def test_personal_storage_for_an_anonymous_caller(engine: Engine) -> None:
    await engine.deploy("store", STORE)
    assert await answer(engine, "/personal") == {
        "set": "Error: Personal storage requires authentication. Please log in.",
        "get": None,
        "removed": False,
        "cleared": "Error: Personal storage requires authentication. Please log in.",
    }


async def test_storage_calls_outside_requests_work_too(engine: Engine) -> None:
    seeded = STORE.replace(
        "function init() {", 'function init() {\n  sharedStorage.setItem("seed", "from init");'
    )
    await engine.deploy("store", seeded)
    assert await answer(engine, "/get", key="seed") == "from init"


async def test_deleting_a_script_deletes_what_it_stored(engine: Engine) -> None:
    await engine.deploy("store", STORE)
    await answer(engine, "/put", key="k", value="v")
    deleted = await engine.client.post("/engine/delete_script", data={"uri": "store"})
    assert deleted.status_code == 200
    await engine.deploy("store", STORE)
    assert await answer(engine, "/get", key="k") is None


def test_stored_values_survive_a_restart(
    engine_process: type[EngineProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = engine_process(data)
    with httpx.Client(base_url=first.base_url, timeout=30) as client:
        assert client.post("/engine/upsert_script", data={"uri": "store", "content": STORE})
        assert client.get("/put", params={"key": "k", "value": "kept"}).json() == (
            "Item set successfully"
        )
    first.close()
    second = engine_process(data)
    with httpx.Client(base_url=second.base_url, timeout=30) as client:
        assert client.get("/get", params={"key": "k"}).json() == "kept"
