"""dispatcher: listeners registered at init, synchronous fan-out, bounded nesting."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Engine, make_config, running_engine

LISTENER = """
function onGreeting(message) {
  sharedStorage.setItem("last", message.messageType + ":" + JSON.stringify(message.messageData));
}
function onBroken() { throw new Error("listener broke"); }
function last() { return sharedStorage.getItem("last") || "none"; }
function init() {
  routeRegistry.registerRoute("/last", "last", "GET");
  dispatcher.registerListener("greeting", "onGreeting");
  dispatcher.registerListener("greeting", "onGreeting");
  dispatcher.registerListener("broken", onBroken);
}
"""

SENDER = """
function send(ctx) {
  return ResponseBuilder.json({
    json: dispatcher.sendMessage("greeting", '{"who": "ann"}'),
    object: dispatcher.sendMessage("greeting", { who: "bob" }),
    nobody: dispatcher.sendMessage("nobody-listens", "{}"),
    broken: dispatcher.sendMessage("broken"),
    outside: dispatcher.registerListener("late", "send"),
    empty: dispatcher.registerListener("", "send"),
  });
}
function init() { routeRegistry.registerRoute("/send", "send", "GET"); }
"""


async def test_messages_reach_every_listener_and_are_counted(engine: Engine) -> None:
    await engine.deploy("listener", LISTENER)
    await engine.deploy("sender", SENDER)
    response = await engine.client.get("/send")
    assert response.status_code == 200, response.text
    assert response.json() == {
        # Registered twice in one init(): one listener, not two.
        "json": "Dispatched message type 'greeting': 1 successful, 0 failed",
        "object": "Dispatched message type 'greeting': 1 successful, 0 failed",
        "nobody": "No listeners for message type 'nobody-listens'",
        "broken": "Dispatched message type 'broken': 0 successful, 1 failed",
        "outside": "dispatcher.registerListener: 'late' not registered - registration only "
        "takes effect during script startup and init()",
        "empty": "dispatcher.registerListener: message type cannot be empty",
    }
    assert (await engine.client.get("/last")).text == 'greeting:{"who":"bob"}'
    fatal = await engine.logs(uri="listener", level="FATAL")
    assert any("listener broke" in line["message"] for line in fatal)


async def test_redeploying_replaces_listeners_instead_of_adding(engine: Engine) -> None:
    await engine.deploy("listener", LISTENER)
    await engine.deploy("listener", LISTENER)
    await engine.deploy("sender", SENDER)
    assert (await engine.client.get("/send")).json()["json"].endswith("1 successful, 0 failed")


ECHO = """
function echo(message) {
  var depth = message.messageData.depth;
  return dispatcher.sendMessage("echo", { depth: depth + 1 });
}
function start() {
  try { return dispatcher.sendMessage("echo", { depth: 1 }); }
  catch (e) { return "threw: " + e.message; }
}
function init() {
  dispatcher.registerListener("echo", "echo");
  routeRegistry.registerRoute("/echo", "start", "GET");
}
"""


async def test_a_listener_sending_again_is_bounded_and_never_deadlocks_the_pool(
    tmp_path: Path,
) -> None:
    # One worker in the pool: nested listeners need temporary workers, not the caller's.
    config = make_config(tmp_path / "d", **{"sandbox.pool_size": 1, "sandbox.warm_spares": 0})
    async with running_engine(config) as engine:
        await engine.deploy("echo", ECHO)
        response = await engine.client.get("/echo")
        assert response.status_code == 200, response.text
        # Levels 1-3 run; the listener at level 3 is refused a 4th and fails, which the
        # levels above count as a failed listener.
        assert response.text == "Dispatched message type 'echo': 1 successful, 0 failed"
        fatal = await engine.logs(uri="echo", level="FATAL")
        assert any("at most 3 levels deep" in line["message"] for line in fatal)
        ready = (await engine.client.get("/health/ready")).json()["sandbox"]
        assert ready["workers"] == 1
