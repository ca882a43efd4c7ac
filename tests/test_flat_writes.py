"""The v0.9 flat writes: upsertScript and deleteScript, and the chains they must refuse."""

from __future__ import annotations

from tests.conftest import Engine

MANAGER = """
function make(ctx) {
  var uri = ctx.request.query.uri;
  var body = 'function h() { return "made ' + uri + '"; }\\n' +
    'function init() { register("/made/' + uri + '", "h"); }';
  return ResponseBuilder.json({
    upserted: upsertScript(uri, body),
    empty: upsertScript(uri + "-empty", "   "),
  });
}
function drop(ctx) { return JSON.stringify(deleteScript(ctx.request.query.uri)); }
function init() { register("/make", "make"); register("/drop", "drop"); }
"""


async def test_a_handler_can_create_and_delete_scripts(engine: Engine) -> None:
    await engine.deploy("manager", MANAGER)
    made = await engine.client.get("/make", params={"uri": "child"})
    assert made.status_code == 200, made.text
    assert made.json() == {
        "upserted": "Script 'child' upserted successfully",
        "empty": "Error: content: must not be empty",
    }
    assert (await engine.client.get("/made/child")).text == "made child"
    assert (await engine.client.get("/drop", params={"uri": "child"})).json() is True
    assert (await engine.client.get("/made/child")).status_code == 404
    assert (await engine.client.get("/drop", params={"uri": "child"})).json() is False


async def test_init_cannot_replace_its_own_script(engine: Engine) -> None:
    report = await engine.deploy(
        "selfish", 'function init() { upsertScript("selfish", "function init() {}"); }'
    )
    assert report["init"]["success"] is False
    assert "is being initialised by this call chain (selfish)" in report["init"]["error"]


async def test_a_cycle_of_inits_is_refused_instead_of_waiting_forever(engine: Engine) -> None:
    # a's init creates b, whose init tries to replace a: a's init holds a's lock.
    b_source = 'function init() { upsertScript("a", "function init() {}"); }'
    a_source = f"function init() {{ upsertScript('b', {b_source!r}); }}"
    report = await engine.deploy("a", a_source)
    assert report["init"]["success"] is True  # b's failure does not fail a
    status = (await engine.client.get("/engine/script_init_status", params={"uri": "b"})).json()[
        "status"
    ]
    assert status["initialized"] is False
    assert "(a -> b)" in status["initError"]
