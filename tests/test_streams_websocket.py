"""Streams over WebSocket, spoken to a real engine with trio-websocket.

The same stream path that serves SSE accepts a WebSocket upgrade and delivers the same messages
as text frames, with the same metadata and filtering.  Beyond the original: a script handles
messages *from* clients (``registerWebSocketRoute``), and every way a connection ends has its
close code (see ``handlers.streams``).  The pure close-code decisions are tested first.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from engine.errors import EngineError, Overloaded, ScriptTimeout
from engine.stream_api import StreamCustomizationFailed
from engine.streams import StreamClosed, StreamFull
from handlers.streams import (
    MAX_CLOSE_REASON_BYTES,
    Close,
    IncomingPolicy,
    close_for_end,
    close_for_refusal,
    close_reason,
)
from tests.conftest import Engine, make_config, running_engine
from tests.test_streams_sse import (
    FEED_SCRIPT,
    URI,
    eventually,
    flood,
    send,
    send_filtered,
    sse,
)

# -- the decisions, without a server ----------------------------------------------------------


def test_the_hub_ending_a_subscription_maps_to_close_codes() -> None:
    assert close_for_end(StreamClosed("bye", "shutdown")) == Close(1001, "bye")
    assert close_for_end(StreamClosed("gone", "removed")) == Close(1000, "gone")
    assert close_for_end(StreamClosed("slow", "lagging")) == Close(1008, "Stream error: slow")


def test_refusals_map_to_policy_try_later_or_internal_error() -> None:
    assert close_for_refusal(StreamFull("path", "full")).code == 1008
    failed = StreamCustomizationFailed("boom")
    assert close_for_refusal(failed) == Close(1008, failed.message)
    assert close_for_refusal(Overloaded("busy", retry_after_s=1)).code == 1013
    assert close_for_refusal(ScriptTimeout("h", 10)).code == 1011
    assert close_for_refusal(EngineError("other")).code == 1011


@pytest.mark.parametrize("text", ["", "short", "é" * 200, "x" * 500, "🙂" * 100])
def test_close_reasons_fit_a_close_frame_without_splitting_a_character(text: str) -> None:
    reason = close_reason(text)
    assert len(reason.encode()) <= MAX_CLOSE_REASON_BYTES
    if len(text.encode()) <= MAX_CLOSE_REASON_BYTES:
        assert reason == text
    else:
        assert reason.endswith("...")
        assert text.startswith(reason[:-3])


def test_incoming_messages_are_measured_in_utf8_bytes() -> None:
    policy = IncomingPolicy(max_message_bytes=8, max_handler_errors=3)
    assert policy.check_text("12345678") is None
    assert policy.check_text("123456789") == Close(1009, "Message larger than 8 bytes")
    assert policy.check_text("éééé") is None  # 8 bytes
    assert policy.check_text("ééééé") is not None  # 10 bytes in 5 characters
    assert policy.check_bytes().code == 1003


def test_only_consecutive_handler_failures_close_the_connection() -> None:
    policy = IncomingPolicy(max_message_bytes=100, max_handler_errors=3)
    assert policy.handler_failed("a") is None
    assert policy.handler_failed("b") is None
    policy.handler_succeeded()
    assert policy.handler_failed("c") is None
    assert policy.handler_failed("d") is None
    close = policy.handler_failed("e")
    assert close == Close(1011, "Message handler failed 3 times in a row: e")


# -- over the wire ----------------------------------------------------------------------------


def ws_url(engine: Engine, path: str) -> str:
    return "ws" + engine.base_url.removeprefix("http") + path


@asynccontextmanager
async def websocket(
    engine: Engine, path: str, *, queue: int = 100
) -> AsyncIterator[WebSocketConnection]:
    """An open WebSocket on ``path``; subscribed (or refused and closed) once this yields."""
    async with open_websocket_url(
        ws_url(engine, path), message_queue_size=queue, connect_timeout=10, disconnect_timeout=5
    ) as ws:
        yield ws


async def closed_with(ws: WebSocketConnection) -> tuple[int, str | None]:
    """Read until the server closes; its close code and reason."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.get_message()
    reason = info.value.reason
    assert reason is not None
    return reason.code, reason.reason


@pytest.fixture
async def feed(engine: Engine) -> Engine:
    await engine.deploy(URI, FEED_SCRIPT)
    return engine


async def test_stream_messages_arrive_as_text_frames_in_order(feed: Engine) -> None:
    sent = [json.dumps({"n": n}) for n in range(25)] + ["multi\nline"]
    with trio.fail_after(15):
        async with websocket(feed, "/feed") as ws:
            await eventually(lambda: feed.runtime.streams.count("/feed") == 1)
            await send(feed, *sent)
            received = [await ws.get_message() for _ in sent]
        await eventually(lambda: feed.runtime.streams.count() == 0)
    assert received == sent


async def test_sse_and_websocket_subscribers_share_a_stream_and_its_filters(
    feed: Engine,
) -> None:
    with trio.fail_after(15):
        async with (
            websocket(feed, "/feed?team=a") as ws_a,
            websocket(feed, "/feed?team=b") as ws_b,
            sse(feed, "/feed?team=a") as sse_a,
        ):
            await eventually(lambda: feed.runtime.streams.count("/feed") == 3)
            report = await send_filtered(feed, "for-a", {"team": "a"}, "subset")
            await send_filtered(feed, "for-b", {"team": "b"}, "subset")
            assert await ws_a.get_message() == "for-a"
            assert await ws_b.get_message() == "for-b"
            assert (await sse_a.message()).data == "for-a"
    assert report == "Successfully sent filtered message to 2 connections on path '/feed'"


CHAT_SCRIPT = """
function init() {
  routeRegistry.registerWebSocketRoute("/chat", "onMessage");
  routeRegistry.registerWebSocketRoute("/rooms", "onMessage", { customizationFunction: "room" });
}
function room(context) { return { room: context.request.query.r || "lobby" }; }
function onMessage(context) {
  if (context.kind !== "websocketMessage") throw new Error("kind " + context.kind);
  const a = context.args;
  if (a.message === "boom") throw new Error("it broke");
  if (a.message === "quiet") return "";
  if (a.message.indexOf("all:") === 0) {
    routeRegistry.sendStreamMessage(context.meta.stream.path, a.message.slice(4));
    return "";
  }
  return JSON.stringify({ echo: a.message, connectionId: a.connectionId, metadata: a.metadata });
}
"""


async def test_a_client_message_is_answered_by_the_script_to_that_client_only(
    engine: Engine,
) -> None:
    await engine.deploy(URI, CHAT_SCRIPT)
    with trio.fail_after(20):
        async with (
            websocket(engine, "/chat?nick=ann") as ann,
            websocket(engine, "/chat?nick=bob") as bob,
        ):
            await ann.send_message("hello")
            to_ann = json.loads(await ann.get_message())
            await bob.send_message("hi")
            to_bob = json.loads(await bob.get_message())
            # A broadcast from the handler reaches everyone; the empty reply reaches nobody.
            await ann.send_message("quiet")
            await ann.send_message("all:news")
            assert await ann.get_message() == "news"
            assert await bob.get_message() == "news"
    assert to_ann["echo"] == "hello"
    assert to_ann["metadata"] == {"nick": "ann"}
    assert to_bob["metadata"] == {"nick": "bob"}
    assert to_ann["connectionId"].startswith("ws_")
    assert to_ann["connectionId"] != to_bob["connectionId"]


async def test_a_websocket_route_with_a_customization_function_uses_its_metadata(
    engine: Engine,
) -> None:
    await engine.deploy(URI, CHAT_SCRIPT)
    with trio.fail_after(15):
        async with websocket(engine, "/rooms?r=blue&x=1") as ws:
            await ws.send_message("who am i")
            reply = json.loads(await ws.get_message())
    assert reply["metadata"] == {"room": "blue"}


async def test_consecutive_handler_failures_close_with_1011(engine: Engine) -> None:
    await engine.deploy(URI, CHAT_SCRIPT)
    with trio.fail_after(20):
        async with websocket(engine, "/chat") as ws:
            # Failures in between successes are forgiven...
            for message in ("boom", "boom", "ok", "boom", "boom"):
                await ws.send_message(message)
            assert json.loads(await ws.get_message())["echo"] == "ok"
            await ws.send_message("still")
            assert json.loads(await ws.get_message())["echo"] == "still"
            # ...three in a row are not.
            for _ in range(3):
                await ws.send_message("boom")
            code, reason = await closed_with(ws)
        await eventually(lambda: engine.runtime.streams.count() == 0)
    assert code == 1011
    assert reason is not None
    assert reason.startswith("Message handler failed 3 times in a row")


async def test_a_stream_without_a_message_handler_ignores_client_text(feed: Engine) -> None:
    with trio.fail_after(15):
        async with websocket(feed, "/feed") as ws:
            await ws.send_message("anyone there?")
            await eventually(lambda: feed.runtime.streams.count("/feed") == 1)
            await send(feed, "yes")
            assert await ws.get_message() == "yes"


async def test_a_binary_message_closes_with_1003(feed: Engine) -> None:
    with trio.fail_after(15):
        async with websocket(feed, "/feed") as ws:
            await ws.send_message(b"\x00\x01")
            code, _ = await closed_with(ws)
        await eventually(lambda: feed.runtime.streams.count() == 0)
    assert code == 1003


async def test_a_message_over_the_size_limit_closes_with_1009(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", **{"streams.max_message_bytes": 1024})
    with trio.fail_after(20):
        async with running_engine(config) as engine:
            await engine.deploy(URI, CHAT_SCRIPT)
            async with websocket(engine, "/chat") as ws:
                await ws.send_message("x" * 1024)  # at the limit: handled
                assert json.loads(await ws.get_message())["echo"] == "x" * 1024
                await ws.send_message("é" * 513)  # 1026 bytes in 513 characters
                code, reason = await closed_with(ws)
            await eventually(lambda: engine.runtime.streams.count() == 0)
    assert (code, reason) == (1009, "Message larger than 1024 bytes")


async def test_over_the_cap_a_websocket_is_closed_with_1008(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", **{"streams.max_per_stream": 1})
    with trio.fail_after(20):
        async with running_engine(config) as engine:
            await engine.deploy(URI, FEED_SCRIPT)
            async with websocket(engine, "/feed") as first:
                async with websocket(engine, "/feed") as second:
                    code, reason = await closed_with(second)
                await send(engine, "first still served")
                assert await first.get_message() == "first still served"
    assert code == 1008
    assert reason == "Stream '/feed' already has 1 subscribers"


async def test_a_failing_customization_function_closes_with_1008(engine: Engine) -> None:
    script = """
    function init() { routeRegistry.registerStreamRoute("/strict", "check"); }
    function check(context) { throw new Error("token required"); }
    """
    await engine.deploy(URI, script)
    with trio.fail_after(15):
        async with websocket(engine, "/strict") as ws:
            code, reason = await closed_with(ws)
    assert code == 1008
    assert reason is not None
    assert reason.startswith("Stream customization function failed: ")
    assert "token required" in reason
    assert engine.runtime.streams.count() == 0


async def test_an_upgrade_on_a_path_that_is_no_stream_is_refused_with_404(feed: Engine) -> None:
    with trio.fail_after(15), pytest.raises(ConnectionRejected) as info:
        async with websocket(feed, "/send"):
            pass
    assert info.value.status_code == 404
    body = json.loads(info.value.body or b"{}")
    assert body["error"]["code"] == "NOT_FOUND"


async def test_a_reader_that_falls_behind_is_closed_with_1008(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", **{"streams.queue_size": 8})
    with trio.fail_after(60):
        async with running_engine(config) as engine:
            await engine.deploy(URI, FEED_SCRIPT)
            # The client library queues one message and then stops reading the socket.
            async with websocket(engine, "/feed", queue=1) as ws:
                await eventually(lambda: engine.runtime.streams.count("/feed") == 1)
                await flood(engine, 400, 4000)
                assert engine.runtime.streams.count("/feed") == 0
                code, reason = await closed_with(ws)
    assert code == 1008
    assert reason == "Stream error: Subscriber fell more than 8 messages behind"


async def test_deleting_the_script_closes_its_websockets_with_1000(feed: Engine) -> None:
    with trio.fail_after(15):
        async with websocket(feed, "/feed") as ws:
            await eventually(lambda: feed.runtime.streams.count("/feed") == 1)
            await feed.client.post("/engine/delete_script", data={"uri": URI})
            code, reason = await closed_with(ws)
    assert (code, reason) == (1000, "the stream was removed")


async def test_hub_shutdown_closes_websockets_with_1001(feed: Engine) -> None:
    with trio.fail_after(15):
        async with websocket(feed, "/feed") as ws:
            await eventually(lambda: feed.runtime.streams.count("/feed") == 1)
            feed.runtime.streams.close_all("the engine is shutting down")
            code, reason = await closed_with(ws)
    assert (code, reason) == (1001, "the engine is shutting down")
