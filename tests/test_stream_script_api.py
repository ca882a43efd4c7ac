"""The script side of streams: registration strings, broadcasts and their answers, customizers.

Subscribers here are taken straight from the running engine's hub, so these tests pin what the
script API does; the transports (SSE, WebSocket) have their own tests over the wire.
"""

from __future__ import annotations

import json

import pytest
import trio

from engine.errors import HostCallError
from engine.stream_api import StreamCustomizationFailed, parse_filter, parse_mode
from engine.streams import StreamClosed, StreamEvent
from tests.conftest import Engine

REGISTRATIONS = r"""
var results = [];
function init() {
  results.push(routeRegistry.registerStreamRoute("/feed"));
  results.push(routeRegistry.registerStreamRoute("/custom", customize));
  results.push(routeRegistry.registerStreamRoute("feed"));
  results.push(routeRegistry.registerStreamRoute("/a/../b"));
  results.push(routeRegistry.registerStreamRoute("/x" + new Array(201).join("x")));
  results.push(routeRegistry.registerStreamRoute("/named", "bad-name!"));
  results.push(routeRegistry.registerWebSocketRoute("/chat", onChat, {summary: "chat"}));
  results.push(registerWebStream("/old"));
  try { routeRegistry.registerStreamRoute("/engine/x"); }
  catch (e) { results.push("threw: " + e.message); }
  sharedStorage.setItem("r", JSON.stringify(results));
  routeRegistry.registerRoute("/results", "show", "GET");
  routeRegistry.registerRoute("/late", "late", "GET");
  routeRegistry.registerRoute("/send", "send", "POST");
}
function show() { return sharedStorage.getItem("r"); }
function late() { return routeRegistry.registerStreamRoute("/later"); }
function customize(context) {
  if (context.args.fail) throw new Error("no entry");
  if (context.args.number) return {room: 7};
  if (context.args.list) return ["a"];
  return {room: context.args.room || "lobby", kind: context.kind, path: context.meta.stream.path};
}
function onChat(context) {
  var a = context.args;
  if (a.message === "quiet") return "";
  return "echo " + a.message + " from " + a.connectionId + " in " + a.metadata.room;
}
function send(context) {
  var out = [];
  var body = JSON.parse(context.request.body);
  body.calls.forEach(function (call) {
    try {
      var r = routeRegistry;
      var c = call;
      if (c[0] === "filtered") out.push(r.sendStreamMessageFiltered(c[1], c[2], c[3], c[4]));
      else if (call[0] === "plain") out.push(routeRegistry.sendStreamMessage(call[1], call[2]));
      else if (call[0] === "all") out.push(sendStreamMessage(call[1]));
      else if (call[0] === "to") out.push(sendStreamMessageToPath(call[1], call[2]));
    } catch (e) { out.push("threw: " + e.message); }
  });
  return JSON.stringify(out);
}
"""


async def send(engine: Engine, *calls: list[object]) -> list[str]:
    response = await engine.client.post("/send", json={"calls": [list(c) for c in calls]})
    assert response.status_code == 200, response.text
    result: list[str] = json.loads(response.text)
    return result


async def test_registration_answers_with_the_original_strings(engine: Engine) -> None:
    report = await engine.deploy("streams", REGISTRATIONS)
    assert report["init"]["success"], report
    results = json.loads((await engine.client.get("/results")).text)
    assert results == [
        "Web stream '/feed' registered successfully",
        "Web stream '/custom' registered successfully",
        "Invalid stream path 'feed': path must start with '/' and not be empty",
        "Invalid stream path '/a/../b': path traversal not allowed",
        f"Invalid stream path '/{'x' * 39}…': path must be at most 200 characters",
        "Invalid customization function name 'bad-name!': must be 1-100 characters of A-Z, "
        "a-z, 0-9 and _",
        "WebSocket stream '/chat' registered successfully",
        "Web stream '/old' registered successfully",
        "threw: Path '/engine/x' is reserved for the engine (prefix '/engine')",
    ]
    late = await engine.client.get("/late")
    assert late.text == (
        "routeRegistry.registerStreamRoute: '/later' not registered - registration only takes "
        "effect during script startup and init()"
    )
    scripts = engine.runtime.scripts
    assert sorted(route.path for route in scripts.stream_routes()) == [
        "/chat",
        "/custom",
        "/feed",
        "/old",
    ]
    routes = (await engine.client.get("/engine/routes")).json()["routes"]
    streams = {r["path"]: r for r in routes if r["method"] == "STREAM"}
    assert streams["/chat"]["summary"] == "chat"
    assert streams["/feed"]["tags"] == ["Streams"]


async def test_broadcasts_reach_subscribers_and_count_them(engine: Engine) -> None:
    await engine.deploy("streams", REGISTRATIONS)
    hub = engine.runtime.streams
    plain = hub.subscribe("/feed", {})
    room_a = hub.subscribe("/feed", {"room": "a"})
    room_b = hub.subscribe("/feed", {"room": "b"})
    other = hub.subscribe("/old", {})

    answers = await send(
        engine,
        ["plain", "/feed", "to all"],
        ["plain", "/feed", {"object": True}],
        ["filtered", "/feed", "for a", {"room": "a"}, "subset"],
        ["filtered", "/feed", "json filter", '{"room": "b"}', None],
        ["filtered", "/feed", "overlap empty", None, "overlap"],
        ["filtered", "/feed", "subset empty", {}, "subset"],
        ["filtered", "/feed", "x", "{bad", "subset"],
        ["filtered", "/feed", "x", {"room": 1}, "subset"],
        ["filtered", "/feed", "x", {}, "everything"],
        ["plain", "/nowhere", "x"],
        ["plain", "/engine/script_updates", "x"],
        ["all", "everyone"],
        ["to", "/old", "v0.9"],
    )
    assert answers[:6] == [
        "Successfully sent message to 3 connections on path '/feed'",
        "Successfully sent message to 3 connections on path '/feed'",
        "Successfully sent filtered message to 2 connections on path '/feed'",
        "Successfully sent filtered message to 2 connections on path '/feed'",
        "Successfully sent filtered message to 3 connections on path '/feed'",
        "Successfully sent filtered message to 1 connections on path '/feed'",
    ]
    assert answers[6].startswith("threw: Invalid filter JSON: ")
    assert answers[7] == "threw: Invalid filter JSON: the value of 'room' must be a string, got int"
    assert answers[8] == "threw: Invalid match mode 'everything'. Expected 'subset' or 'overlap'"
    assert answers[9] == "Successfully sent message to 0 connections on path '/nowhere'"
    assert answers[10] == (
        "threw: Path '/engine/script_updates' is reserved for the engine (prefix '/engine')"
    )
    assert answers[11] == "Successfully sent message to 4 connections on all streams"
    assert answers[12] == "Successfully sent message to 1 connections on path '/old'"

    async def drain(subscription: object, count: int) -> list[str]:
        received = []
        with trio.fail_after(5):
            for _ in range(count):
                event = await subscription.receive()  # type: ignore[attr-defined]
                assert isinstance(event, StreamEvent)
                received.append(event.data)
        return received

    assert await drain(plain, 6) == [
        "to all",
        '{"object":true}',
        "for a",
        "json filter",
        "overlap empty",
        "subset empty",
    ]
    assert (await drain(room_a, 4))[2:] == ["for a", "overlap empty"]
    assert (await drain(room_b, 4))[2:] == ["json filter", "overlap empty"]
    assert await drain(other, 2) == ["everyone", "v0.9"]


async def test_customizers_and_message_handlers(engine: Engine) -> None:
    await engine.deploy("streams", REGISTRATIONS)
    scripts = engine.runtime.scripts
    custom = scripts.stream_route("/custom")
    assert custom is not None
    request = {"path": "/custom", "method": "GET", "query": {"room": "r1"}, "headers": {}}
    assert await scripts.stream_metadata(custom, request, "req_1") == {
        "room": "r1",
        "kind": "streamCustomization",
        "path": "/custom",
    }
    for query, why in (
        ({"fail": "1"}, "no entry"),
        ({"number": "1"}, "the value of 'room' must be a string, got int"),
        ({"list": "1"}, "expected an object of string values, got array"),
    ):
        with pytest.raises(StreamCustomizationFailed) as caught:
            await scripts.stream_metadata(custom, {**request, "query": query}, "req_2")
        assert caught.value.message.startswith("Stream customization function failed: ")
        assert why in caught.value.message
    feed = scripts.stream_route("/feed")
    assert feed is not None
    assert await scripts.stream_metadata(feed, request, "req_3") == {"room": "r1"}

    chat = scripts.stream_route("/chat")
    assert chat is not None and chat.on_message == "onChat"
    reply = await scripts.websocket_message(chat, "hi", "ws_7", {"room": "r"}, "req_4")
    assert reply == "echo hi from ws_7 in r"
    assert await scripts.websocket_message(chat, "quiet", "ws_7", {"room": "r"}, "req_5") is None
    assert await scripts.websocket_message(feed, "hi", "ws_8", {}, "req_6") is None


async def test_a_redeploy_keeps_kept_streams_and_closes_removed_ones(engine: Engine) -> None:
    await engine.deploy("streams", REGISTRATIONS)
    hub = engine.runtime.streams
    kept = hub.subscribe("/feed", {})
    dropped = hub.subscribe("/custom", {})
    await engine.deploy("streams", 'routeRegistry.registerStreamRoute("/feed");')
    with trio.fail_after(5):
        assert await dropped.receive() == StreamClosed("the stream was removed", "removed")
    assert engine.runtime.streams.count("/feed") == 1
    await engine.client.post("/engine/delete_script", data={"uri": "streams"})
    with trio.fail_after(5):
        assert await kept.receive() == StreamClosed("the stream was removed", "removed")
    assert engine.runtime.streams.count() == 0


async def test_script_changes_are_announced(engine: Engine) -> None:
    updates = engine.runtime.streams.subscribe("/engine/script_updates", {})
    await engine.deploy("announced", "function init() {}")
    await engine.deploy("announced", "function init() { }")
    await engine.client.post("/engine/delete_script", data={"uri": "announced"})
    messages = []
    with trio.fail_after(5):
        for _ in range(3):
            event = await updates.receive()
            assert isinstance(event, StreamEvent)
            messages.append(json.loads(event.data))
    assert [(m["type"], m["uri"], m["action"], m["previousExists"]) for m in messages] == [
        ("script_update", "announced", "inserted", False),
        ("script_update", "announced", "updated", True),
        ("script_update", "announced", "removed", True),
    ]
    assert messages[0]["contentLength"] == len("function init() {}")
    assert messages[0]["timestamp"].endswith("Z")


def test_filter_and_mode_parsing() -> None:
    assert parse_filter(None) == {}
    assert parse_filter('{"a": "1"}') == {"a": "1"}
    assert parse_filter({"a": "1"}) == {"a": "1"}
    for bad in ("[1]", "3", '{"a": null}', [1]):
        with pytest.raises(HostCallError, match=r"^Invalid filter JSON: "):
            parse_filter(bad)
    assert parse_mode(None) == "subset"
    assert parse_mode("overlap") == "overlap"
    with pytest.raises(HostCallError, match="Invalid match mode 'SUBSET'"):
        parse_mode("SUBSET")
