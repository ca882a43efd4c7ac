"""Protocol faults on stream connections leave the server serving everyone else.

Each test misbehaves on a raw TCP connection to a real server (bytes written by hand, or by
``wsproto`` as a client engine where the frames must be valid), then shows that a normal
request is still answered and that the hub's subscriber count returns to 0.  The last tests run
``aiwebengine serve`` in its own process, where hypercorn's WebSocket limits come from the
configuration and a SIGTERM must end every stream connection promptly.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request

from tests.conftest import Engine, EngineProcess, make_config, running_engine
from tests.test_streams_sse import FEED_SCRIPT, URI, eventually, flood, send

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def upgrade_request(path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {KEY.decode()}\r\n\r\n"
    ).encode()


def masked_frame(payload: bytes, *, opcode: int = 1, declared: int | None = None) -> bytes:
    """A client frame (masked, final); ``declared`` overrides the length in its header."""
    length = len(payload) if declared is None else declared
    head = bytes([0x80 | opcode])
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    mask = b"\x0f\x1e\x2d\x3c"
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def port_of(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


async def read_until_closed(stream: trio.SocketStream, *, within: float = 10) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    with trio.fail_after(within):
        while data := await stream.receive_some(65536):
            received += data
    return received


@asynccontextmanager
async def raw_websocket(
    port: int, path: str
) -> AsyncIterator[tuple[trio.SocketStream, WSConnection]]:
    """A WebSocket opened by hand: the stream after the 101, and wsproto as its client side."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    client = WSConnection(ConnectionType.CLIENT)
    try:
        await stream.send_all(client.send(Request(host="127.0.0.1", target=path)))
        with trio.fail_after(10):
            while True:
                client.receive_data(await stream.receive_some(65536))
                events = list(client.events())
                if events:
                    assert isinstance(events[0], AcceptConnection), events
                    break
        yield stream, client
    finally:
        await stream.aclose()


async def close_code(stream: trio.SocketStream, client: WSConnection) -> int:
    """Read until the server's close frame; its code."""
    with trio.fail_after(10):
        while True:
            data = await stream.receive_some(65536)
            client.receive_data(data or None)
            for event in client.events():
                if isinstance(event, CloseConnection):
                    return event.code
            assert data, "the connection ended without a close frame"


async def still_serving(engine: Engine) -> None:
    """A normal request is answered, and every subscriber the test made is gone."""
    response = await engine.client.post("/send", content=json.dumps({"messages": ["ping"]}))
    assert response.status_code == 200
    await eventually(lambda: engine.runtime.streams.count() == 0)


@pytest.fixture
async def feed(engine: Engine) -> Engine:
    await engine.deploy(URI, FEED_SCRIPT)
    await engine.deploy(
        URI + "/slow-accept",
        """
        function init() { routeRegistry.registerStreamRoute("/custom", "meta"); }
        function meta(context) { return { who: "someone" }; }
        """,
    )
    return engine


# -- WebSocket faults -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/feed", "/custom", "/not-a-stream"])
async def test_an_upgrade_followed_by_garbage_is_refused_without_harm(
    feed: Engine, path: str
) -> None:
    # /feed accepts at once, /custom only after its customization function ran, and
    # /not-a-stream is refused: the trailing bytes meet the handshake at every stage.
    port = port_of(feed.base_url)
    with trio.fail_after(60):
        for _ in range(20):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(upgrade_request(path) + b"\xff\x00 garbage \r\n\r\n" * 8)
            answer = await read_until_closed(stream)
            await stream.aclose()
            assert answer.startswith(b"HTTP/1.1 ")
        await still_serving(feed)


async def test_garbage_after_the_handshake_closes_that_connection_only(feed: Engine) -> None:
    with trio.fail_after(20):
        async with raw_websocket(port_of(feed.base_url), "/feed") as (stream, client):
            await eventually(lambda: feed.runtime.streams.count("/feed") == 1)
            await stream.send_all(b"\x7f\xff\xff\xff not a frame")
            # A protocol error (1002), or the connection simply ends (1006 to the client).
            assert await close_code(stream, client) in (1002, 1006)
        await still_serving(feed)


async def test_a_client_that_vanishes_mid_frame_is_forgotten(feed: Engine) -> None:
    port = port_of(feed.base_url)
    with trio.fail_after(20):
        for declared in (200, 70_000, 1 << 40):
            async with raw_websocket(port, "/feed") as (stream, _):
                await eventually(lambda: feed.runtime.streams.count("/feed") == 1)
                # A header promising more than follows, part of it, and then a reset.
                await stream.send_all(masked_frame(b"x" * 100, declared=declared)[:-40])
                stream.socket.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            await eventually(lambda: feed.runtime.streams.count() == 0)
        await still_serving(feed)


async def test_an_oversized_message_is_closed_with_1009(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", **{"streams.max_message_bytes": 4096})
    with trio.fail_after(30):
        async with running_engine(config) as engine:
            await engine.deploy(URI, FEED_SCRIPT)
            port = port_of(engine.base_url)
            async with raw_websocket(port, "/feed") as (stream, client):
                await stream.send_all(masked_frame(b"y" * 100_000))
                assert await close_code(stream, client) == 1009
            await still_serving(engine)


async def test_a_websocket_client_that_stops_reading_is_dropped(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", **{"streams.queue_size": 8})
    with trio.fail_after(60):
        async with running_engine(config) as engine:
            await engine.deploy(URI, FEED_SCRIPT)
            async with raw_websocket(port_of(engine.base_url), "/feed"):
                await eventually(lambda: engine.runtime.streams.count("/feed") == 1)
                # The socket is never read again; the server's writes stall, its queue fills.
                await flood(engine, 400, 4000)
                await still_serving(engine)
                assert engine.runtime.streams.stats()["dropped_lagging"] == 1


async def test_an_sse_client_that_stops_reading_is_dropped(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", **{"streams.queue_size": 8})
    with trio.fail_after(60):
        async with running_engine(config) as engine:
            await engine.deploy(URI, FEED_SCRIPT)
            stream = await trio.open_tcp_stream("127.0.0.1", port_of(engine.base_url))
            async with stream:
                await stream.send_all(b"GET /feed HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                await eventually(lambda: engine.runtime.streams.count("/feed") == 1)
                await flood(engine, 400, 4000)
                await still_serving(engine)
                assert engine.runtime.streams.stats()["dropped_lagging"] == 1


async def test_sse_clients_that_leave_in_every_way_are_forgotten(feed: Engine) -> None:
    port = port_of(feed.base_url)
    with trio.fail_after(30):
        for how in ("close", "reset", "half-close", "mid-request"):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            request = b"GET /feed HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            if how == "mid-request":
                await stream.send_all(request[:20])
            else:
                await stream.send_all(request)
                await eventually(lambda: feed.runtime.streams.count("/feed") == 1)
            if how == "reset":
                stream.socket.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            if how == "half-close":
                await stream.send_eof()
                await send(feed, "after the half-close")
            await stream.aclose()
            await eventually(lambda: feed.runtime.streams.count() == 0)
        await still_serving(feed)


# -- the real server process ------------------------------------------------------------------


def deploy_to(base_url: str, script: str) -> None:
    response = httpx.post(
        f"{base_url}/engine/upsert_script", data={"uri": URI, "content": script}, timeout=60
    )
    assert response.status_code == 200, response.text


async def test_serve_closes_a_frame_over_the_limit_before_it_is_complete(
    tmp_path: Path, engine_process: type[EngineProcess]
) -> None:
    # hypercorn enforces streams.max_message_bytes while a frame arrives: announcing a huge
    # frame and sending past the limit is answered at once, without the rest.
    server = engine_process(
        tmp_path / "data", env={"AIWEBENGINE_STREAMS__MAX_MESSAGE_BYTES": "8192"}
    )
    deploy_to(server.base_url, FEED_SCRIPT)
    with trio.fail_after(30):
        async with raw_websocket(port_of(server.base_url), "/feed") as (stream, client):
            payload = b"z" * 20_000
            await stream.send_all(masked_frame(payload, declared=1 << 40)[: 14 + len(payload)])
            assert await close_code(stream, client) == 1009
        response = await trio.to_thread.run_sync(httpx.get, f"{server.base_url}/health")
    assert response.status_code == 200


async def test_serve_pings_idle_websockets(
    tmp_path: Path, engine_process: type[EngineProcess]
) -> None:
    server = engine_process(tmp_path / "data", env={"AIWEBENGINE_STREAMS__PING_INTERVAL_S": "0.2"})
    deploy_to(server.base_url, FEED_SCRIPT)
    pings = 0
    with trio.fail_after(20):
        async with raw_websocket(port_of(server.base_url), "/feed") as (stream, client):
            while pings < 3:
                client.receive_data(await stream.receive_some(65536))
                for event in client.events():
                    if isinstance(event, Ping):
                        pings += 1
                        await stream.send_all(client.send(event.response()))
    assert pings == 3


async def test_sigterm_ends_stream_connections_promptly(
    tmp_path: Path, engine_process: type[EngineProcess]
) -> None:
    # A grace period far longer than the test may take: the streams must end on their own.
    server = engine_process(tmp_path / "data", env={"AIWEBENGINE_SERVER__SHUTDOWN_GRACE_S": "60"})
    deploy_to(server.base_url, FEED_SCRIPT)
    ws_url = "ws" + server.base_url.removeprefix("http") + "/feed"
    with trio.fail_after(30):
        async with (
            open_websocket_url(ws_url) as ws,
            httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
            client.stream("GET", "/feed") as sse,
        ):
            assert sse.status_code == 200
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            body = b"".join([chunk async for chunk in sse.aiter_raw()])
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
        exit_code = await trio.to_thread.run_sync(server.wait, 20)
    assert closed.value.reason is not None
    assert closed.value.reason.code == 1001
    assert body.endswith(b'data: {"error": "Stream error: the engine is shutting down"}\n\n')
    assert exit_code == 0
    assert time.monotonic() - started < 15
