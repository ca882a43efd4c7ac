"""GraphQL over WebSocket (``graphql-transport-ws``) on ``/graphql/ws``.

First the protocol without a server (:class:`handlers.graphql_ws.ConnectionProtocol`), then a
real engine spoken to with trio-websocket: negotiation, every close code, delivery of
subscription messages, the client's ``complete``, the operation limit, ping/pong, queries and
mutations, and faults that must cost nothing but the faulty socket.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import wsproto
import wsproto.events
from hypothesis import given, settings
from hypothesis import strategies as st
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

import handlers.graphql_ws as graphql_ws_module
from handlers.graphql_ws import (
    SUBPROTOCOL,
    Action,
    ConnectionProtocol,
    Operation,
    SendMessage,
    StartOperation,
    StopOperation,
    choose_subprotocol,
)
from handlers.streams import Close
from tests.conftest import Engine, EngineProcess
from tests.test_graphql_http import TICKS, TICKS_SCRIPT, URI, deliver, ticks_of, until_subscribers

# -- the protocol, without a server -----------------------------------------------------------


def protocol(max_operations: int = 20) -> ConnectionProtocol:
    return ConnectionProtocol(max_operations=max_operations, max_message_chars=10_000)


def message(**fields: Any) -> str:
    return json.dumps(fields)


def subscribe(operation_id: str, query: str = "subscription { ticks { n } }", **extra: Any) -> str:
    return message(id=operation_id, type="subscribe", payload={"query": query, **extra})


def acknowledged(max_operations: int = 20) -> ConnectionProtocol:
    connection = protocol(max_operations)
    assert connection.receive_text(message(type="connection_init")) == [
        SendMessage({"type": "connection_ack"})
    ]
    return connection


def started(actions: list[Action]) -> Operation:
    assert len(actions) == 1 and isinstance(actions[0], StartOperation), actions
    return actions[0].operation


def close_of(actions: list[Action]) -> Close:
    assert actions and isinstance(actions[-1], Close), actions
    return actions[-1]


def test_connection_init_is_acknowledged_once_and_a_second_one_closes_with_4429() -> None:
    connection = acknowledged()
    close = close_of(connection.receive_text(message(type="connection_init", payload={})))
    assert close == Close(4429, "Too many initialisation requests")
    assert connection.closed
    assert connection.receive_text(message(type="ping")) == []


def test_subscribe_before_the_acknowledgement_closes_with_4401() -> None:
    assert close_of(protocol().receive_text(subscribe("1"))) == Close(4401, "Unauthorized")


def test_a_subscribe_becomes_an_operation_with_its_variables_and_name() -> None:
    connection = acknowledged()
    operation = started(
        connection.receive_text(
            subscribe("a", "query Q($n: Int) { x }", variables={"n": 1}, operationName="Q")
        )
    )
    assert (operation.id, operation.query, operation.variables, operation.operation_name) == (
        "a",
        "query Q($n: Int) { x }",
        {"n": 1},
        "Q",
    )
    assert connection.active == 1


def test_an_id_in_use_closes_with_4409_and_is_free_again_once_its_operation_ended() -> None:
    connection = acknowledged()
    first = started(connection.receive_text(subscribe("same")))
    close = close_of(protocol_copy := connection.receive_text(subscribe("same")))
    assert close == Close(4409, "Subscriber for same already exists")
    assert StopOperation(first) in protocol_copy  # the socket's operations end with it

    connection = acknowledged()
    first = started(connection.receive_text(subscribe("same")))
    assert connection.completed(first) == [SendMessage({"id": "same", "type": "complete"})]
    second = started(connection.receive_text(subscribe("same")))
    assert second.serial != first.serial


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "Invalid message: not JSON"),
        ("[1, 2]", "Invalid message: not a JSON object"),
        ('{"id": "1"}', "Invalid message: no string 'type'"),
        ('{"type": 7}', "Invalid message: no string 'type'"),
        ('{"type": "start", "id": "1"}', "Unknown message type 'start'"),
        ('{"type": "next", "id": "1", "payload": {}}', "'next' is a message only the server sends"),
        ('{"type": "connection_ack"}', "'connection_ack' is a message only the server sends"),
        ('{"type": "connection_init", "payload": "x"}', "'payload' must be an object or null"),
        ('{"type": "ping", "payload": [1]}', "'payload' must be an object or null"),
        (
            '{"type": "subscribe", "payload": {"query": "{x}"}}',
            "'subscribe' needs a non-empty string 'id'",
        ),
        (
            '{"type": "subscribe", "id": "", "payload": {"query": "{x}"}}',
            "'subscribe' needs a non-empty string 'id'",
        ),
        ('{"type": "subscribe", "id": "1"}', "'subscribe' needs an object 'payload'"),
        ('{"type": "subscribe", "id": "1", "payload": {}}', "'payload.query' must be a string"),
        (
            '{"type": "subscribe", "id": "1", "payload": {"query": "{x}", "variables": [1]}}',
            "'payload.variables' must be an object or null",
        ),
        (
            '{"type": "subscribe", "id": "1", "payload": {"query": "{x}", "operationName": 3}}',
            "'payload.operationName' must be a string or null",
        ),
        ('{"type": "complete"}', "'complete' needs a non-empty string 'id'"),
    ],
)
def test_a_frame_that_is_no_protocol_message_closes_with_4400(frame: str, reason: str) -> None:
    # After the acknowledgement, so that nothing but the format can be wrong.
    assert close_of(acknowledged().receive_text(frame)) == Close(4400, reason)


def test_a_malformed_subscribe_is_4400_even_before_the_acknowledgement() -> None:
    assert close_of(protocol().receive_text('{"type": "subscribe"}')).code == 4400


def test_binary_frames_and_oversized_frames_close_the_socket() -> None:
    assert close_of(acknowledged().receive_bytes()).code == 4400
    connection = ConnectionProtocol(max_operations=20, max_message_chars=100)
    close = close_of(connection.receive_text(subscribe("1", "{ " + "x " * 100 + "}")))
    assert close == Close(1009, "Message longer than 100 characters")


def test_ping_is_answered_with_pong_echoing_its_payload_at_any_time() -> None:
    connection = protocol()  # before connection_init too
    assert connection.receive_text(message(type="ping")) == [SendMessage({"type": "pong"})]
    assert connection.receive_text(message(type="ping", payload={"t": 1})) == [
        SendMessage({"type": "pong", "payload": {"t": 1}})
    ]
    assert connection.receive_text(message(type="pong", payload=None)) == []
    assert connection.keep_alive() == [SendMessage({"type": "ping"})]


def test_results_become_next_then_complete_and_refusals_a_bare_list_of_errors() -> None:
    connection = acknowledged()
    operation = started(connection.receive_text(subscribe("7")))
    assert connection.result(operation, {"data": {"ticks": {"n": 1}}}) == [
        SendMessage({"id": "7", "type": "next", "payload": {"data": {"ticks": {"n": 1}}}})
    ]
    assert connection.completed(operation) == [SendMessage({"id": "7", "type": "complete"})]
    assert connection.result(operation, {"data": None}) == []  # over: nothing more

    failing = started(connection.receive_text(subscribe("8", "subscription {")))
    errors = [{"message": "Syntax Error"}]
    assert connection.failed(failing, errors) == [
        SendMessage({"id": "8", "type": "error", "payload": errors})
    ]
    assert connection.completed(failing) == []  # no complete after an error
    assert connection.active == 0


def test_the_clients_complete_stops_the_operation_and_drops_its_late_results() -> None:
    connection = acknowledged()
    operation = started(connection.receive_text(subscribe("s")))
    assert connection.receive_text(message(type="complete", id="s")) == [StopOperation(operation)]
    assert connection.result(operation, {"data": {}}) == []
    assert connection.completed(operation) == []
    # The id is reused at once: the old operation's late results still go nowhere.
    again = started(connection.receive_text(subscribe("s")))
    assert connection.result(operation, {"data": {"old": True}}) == []
    assert connection.result(again, {"data": {"new": True}}) != []
    # Completing an unknown id is a race with the operation's own end, not a fault.
    assert connection.receive_text(message(type="complete", id="never")) == []


def test_operations_over_the_limit_get_an_error_and_the_connection_goes_on() -> None:
    connection = acknowledged(max_operations=3)
    operations = [started(connection.receive_text(subscribe(str(n)))) for n in range(3)]
    refused = connection.receive_text(subscribe("4"))
    assert len(refused) == 1 and isinstance(refused[0], SendMessage)
    sent = refused[0].message
    assert (sent["id"], sent["type"]) == ("4", "error")
    assert sent["payload"] == [
        {
            "message": "Too many operations on this connection: at most 3 at a time",
            "extensions": {"code": "TOO_MANY_OPERATIONS"},
        }
    ]
    assert not connection.closed and connection.active == 3
    connection.completed(operations[0])
    started(connection.receive_text(subscribe("4")))


def test_the_init_timeout_closes_only_a_connection_that_never_initialised() -> None:
    assert close_of(protocol().init_timed_out()) == Close(4408, "Connection initialisation timeout")
    assert acknowledged().init_timed_out() == []


def test_shutdown_stops_every_operation_and_closes_with_1001() -> None:
    connection = acknowledged()
    operations = [started(connection.receive_text(subscribe(str(n)))) for n in range(2)]
    actions = connection.shutdown("the engine is shutting down")
    assert actions == [
        *(StopOperation(op) for op in operations),
        Close(1001, "the engine is shutting down"),
    ]
    assert connection.shutdown("again") == [] and connection.keep_alive() == []


@pytest.mark.parametrize(
    ("offered", "decision"),
    [
        ([], (True, None)),
        (["graphql-transport-ws"], (True, "graphql-transport-ws")),
        (["graphql-ws", "graphql-transport-ws"], (True, "graphql-transport-ws")),
        (["graphql-ws"], (False, None)),
    ],
)
def test_subprotocol_choice(offered: list[str], decision: tuple[bool, str | None]) -> None:
    assert choose_subprotocol(offered) == decision


_FRAMES = st.one_of(
    st.text(max_size=200),
    st.builds(
        json.dumps,
        st.dictionaries(
            st.sampled_from(["type", "id", "payload"]),
            st.one_of(
                st.sampled_from(
                    ["connection_init", "ping", "pong", "subscribe", "complete", "next", "x"]
                ),
                st.text(max_size=5),
                st.none(),
                st.integers(),
                st.dictionaries(
                    st.sampled_from(["query", "variables", "operationName", "extensions"]),
                    st.one_of(
                        st.text(max_size=10), st.none(), st.dictionaries(st.text(), st.integers())
                    ),
                ),
            ),
        ),
    ),
)


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(_FRAMES, max_size=30), limit=st.integers(1, 4))
def test_any_frames_give_actions_never_an_exception_and_respect_the_invariants(
    frames: list[str], limit: int
) -> None:
    connection = protocol(limit)
    was_closed = False
    for frame in frames:
        actions = connection.receive_text(frame)
        if was_closed:
            assert actions == []
        for action in actions:
            assert isinstance(action, SendMessage | StartOperation | StopOperation | Close)
            if isinstance(action, SendMessage):
                json.loads(action.text)
            if isinstance(action, Close):
                assert action.code in {1009, 4400, 4401, 4409, 4429}
        assert connection.active <= limit
        assert not any(isinstance(a, Close) for a in actions[:-1])
        was_closed = connection.closed


# -- over the wire ----------------------------------------------------------------------------


def ws_url(engine: Engine) -> str:
    return "ws" + engine.base_url.removeprefix("http") + "/graphql/ws"


@asynccontextmanager
async def graphql_ws(
    engine: Engine, *, subprotocols: tuple[str, ...] = (SUBPROTOCOL,), init: bool = True
) -> AsyncIterator[WebSocketConnection]:
    """An open ``/graphql/ws`` socket, acknowledged unless ``init`` is false."""
    async with open_websocket_url(
        ws_url(engine), subprotocols=list(subprotocols), connect_timeout=10, disconnect_timeout=5
    ) as ws:
        if init:
            await ws.send_message(message(type="connection_init"))
            assert await receive(ws) == {"type": "connection_ack"}
        yield ws


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    """The next protocol message, the server's keep-alive pings left out."""
    while True:
        received = json.loads(await ws.get_message())
        assert isinstance(received, dict)
        if received != {"type": "ping"}:
            return received


async def closed_with(ws: WebSocketConnection) -> tuple[int, str | None]:
    """Read until the server closes; its close code and reason."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.get_message()
    reason = info.value.reason
    assert reason is not None
    return reason.code, reason.reason


async def ticks_until(ws: WebSocketConnection, operation_id: str, wanted: list[int]) -> None:
    """Read ``next`` messages of ``operation_id`` until its ticks (probes left out) are
    ``wanted``."""
    results: list[dict[str, Any]] = []
    while ticks_of(results) != wanted:
        received = await receive(ws)
        assert received["type"] == "next" and received["id"] == operation_id, received
        results.append(received["payload"])


@pytest.fixture
async def graphql(engine: Engine) -> Engine:
    await engine.deploy(URI, TICKS_SCRIPT)
    return engine


async def test_a_subscription_delivers_messages_as_next(graphql: Engine) -> None:
    """§8 item 20 over ``graphql-transport-ws``, with the sub-protocol negotiated."""
    with trio.fail_after(20):
        async with graphql_ws(graphql) as ws:
            assert ws.subprotocol == SUBPROTOCOL
            await ws.send_message(subscribe("t1", TICKS))
            await until_subscribers(graphql, 1)
            for n in (1, 2, 3):
                assert await deliver(graphql, n) == 1
            await ticks_until(ws, "t1", [1, 2, 3])
        await until_subscribers(graphql, 0)


async def test_a_mutation_over_the_socket_feeds_a_subscription_on_it(graphql: Engine) -> None:
    with trio.fail_after(20):
        async with graphql_ws(graphql) as ws:
            await ws.send_message(subscribe("live", "subscription Live { ticks { n } }"))
            await until_subscribers(graphql, 1)
            await ws.send_message(subscribe("m", "mutation { addTick(n: 4) { n } }"))
            seen: dict[str, list[dict[str, Any]]] = {"live": [], "m": []}
            while ticks_of(seen["live"]) != [4] or len(seen["m"]) < 2:
                received = await receive(ws)
                seen[received["id"]].append(received)
                if received["id"] == "live":
                    seen["live"][-1] = received["payload"]
            assert seen["m"] == [
                {"id": "m", "type": "next", "payload": {"data": {"addTick": {"n": 4}}}},
                {"id": "m", "type": "complete"},
            ]


async def test_a_query_is_one_next_then_complete(graphql: Engine) -> None:
    with trio.fail_after(10):
        async with graphql_ws(graphql) as ws:
            await ws.send_message(
                subscribe(
                    "q", "query Q($w: String) { hello(name: $w) answer }", variables={"w": "W"}
                )
            )
            assert await receive(ws) == {
                "id": "q",
                "type": "next",
                "payload": {"data": {"hello": "Hello, W", "answer": 42}},
            }
            assert await receive(ws) == {"id": "q", "type": "complete"}


async def test_an_operation_that_cannot_start_gets_error_with_a_list_of_errors(
    graphql: Engine,
) -> None:
    """The protocol's ``error`` payload is the bare list (the original sent an object)."""
    with trio.fail_after(10):
        async with graphql_ws(graphql) as ws:
            await ws.send_message(subscribe("syntax", "subscription {"))
            received = await receive(ws)
            assert (received["id"], received["type"]) == ("syntax", "error")
            assert isinstance(received["payload"], list)
            assert "line 1" in received["payload"][0]["message"]
            await ws.send_message(subscribe("long", "{ hello }" + " " * 100_000))
            received = await receive(ws)
            assert received["type"] == "error"
            assert received["payload"][0]["extensions"]["code"] == "QUERY_REJECTED"
            # No complete follows an error; the socket serves on.
            await ws.send_message(message(type="ping"))
            assert await receive(ws) == {"type": "pong"}


async def test_a_subscription_that_does_not_validate_gets_its_graphql_errors(
    graphql: Engine,
) -> None:
    with trio.fail_after(10):
        async with graphql_ws(graphql) as ws:
            await ws.send_message(subscribe("unknown", "subscription { nosuch }"))
            received = await receive(ws)
            assert (received["id"], received["type"]) == ("unknown", "error")
            assert "nosuch" in received["payload"][0]["message"]


async def test_the_clients_complete_stops_delivery(graphql: Engine) -> None:
    with trio.fail_after(20):
        async with graphql_ws(graphql) as ws:
            await ws.send_message(subscribe("s", TICKS))
            await until_subscribers(graphql, 1)
            await ws.send_message(message(type="complete", id="s"))
            await until_subscribers(graphql, 0)
            assert await deliver(graphql, 5) == 0
            # Nothing of "s" is sent after its complete: the pong is next (probes sent while
            # the subscription was still live may precede it).
            await ws.send_message(message(type="ping", payload={"mark": 1}))
            while (received := await receive(ws)) != {"type": "pong", "payload": {"mark": 1}}:
                assert (
                    received["type"] == "next" and received["payload"]["data"]["ticks"]["n"] == -1
                )
            # The id is free again.
            await ws.send_message(subscribe("s", TICKS))
            await until_subscribers(graphql, 1)


async def test_at_most_twenty_operations_per_connection(graphql: Engine) -> None:
    with trio.fail_after(30):
        async with graphql_ws(graphql) as ws:
            for n in range(20):
                await ws.send_message(subscribe(f"s{n}", TICKS))
            await until_subscribers(graphql, 20)
            await ws.send_message(subscribe("s20", TICKS))
            while (received := await receive(ws))["type"] == "next":
                pass  # probes
            assert received == {
                "id": "s20",
                "type": "error",
                "payload": [
                    {
                        "message": "Too many operations on this connection: at most 20 at a time",
                        "extensions": {"code": "TOO_MANY_OPERATIONS"},
                    }
                ],
            }
            await ws.send_message(message(type="complete", id="s0"))
            await until_subscribers(graphql, 19)
            await ws.send_message(subscribe("s20", TICKS))
            await until_subscribers(graphql, 20)


async def test_ping_is_answered_and_the_server_pings(
    graphql: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = graphql.runtime.graphql
    monkeypatch.setattr(service, "limits", attrs.evolve(service.limits, ping_interval_s=0.2))
    with trio.fail_after(10):
        async with graphql_ws(graphql, init=False) as ws:
            await ws.send_message(message(type="ping", payload={"at": 1}))
            pings = 0
            got_pong = False
            while pings < 2 or not got_pong:
                received = json.loads(await ws.get_message())
                if received == {"type": "ping"}:
                    pings += 1
                    await ws.send_message(message(type="pong"))
                else:
                    assert received == {"type": "pong", "payload": {"at": 1}}
                    got_pong = True


async def test_without_a_subprotocol_the_socket_is_served(graphql: Engine) -> None:
    """The original never negotiated: ``new WebSocket(url)`` pages keep working."""
    with trio.fail_after(10):
        async with graphql_ws(graphql, subprotocols=()) as ws:
            assert ws.subprotocol is None
            await ws.send_message(subscribe("q", "{ answer }"))
            assert (await receive(ws))["payload"] == {"data": {"answer": 42}}


async def test_only_other_subprotocols_close_with_4406(graphql: Engine) -> None:
    with trio.fail_after(10):
        async with graphql_ws(graphql, subprotocols=("graphql-ws",), init=False) as ws:
            assert await closed_with(ws) == (4406, "Subprotocol not acceptable")


@pytest.mark.parametrize(
    ("frames", "code", "reason"),
    [
        ([subscribe("1", TICKS)], 4401, "Unauthorized"),
        (
            [message(type="connection_init"), message(type="connection_init")],
            4429,
            "Too many initialisation requests",
        ),
        (
            [message(type="connection_init"), subscribe("dup", TICKS), subscribe("dup", TICKS)],
            4409,
            "Subscriber for dup already exists",
        ),
        (["{not json"], 4400, "Invalid message: not JSON"),
        ([message(type="connection_init"), message(type="next", id="1")], 4400, None),
        ([b"\x00\x01binary"], 4400, "Binary messages are not part of the protocol"),
        (
            [message(type="connection_init"), subscribe("big", "{ " + "x " * 120_000 + "}")],
            1009,
            "Message longer than 215536 characters",
        ),
    ],
    ids=[
        "subscribe-before-ack",
        "second-init",
        "duplicate-id",
        "garbage",
        "server-type",
        "binary",
        "too-big",
    ],
)
async def test_protocol_faults_close_the_socket_with_their_code_and_nothing_else(
    graphql: Engine, frames: list[str | bytes], code: int, reason: str | None
) -> None:
    with trio.fail_after(15):
        async with graphql_ws(graphql, init=False) as ws:
            for frame in frames:
                await ws.send_message(frame)
            closed = await closed_with(ws)
        assert closed[0] == code
        if reason is not None:
            assert closed[1] == reason
        await until_subscribers(graphql, 0)
        response = await graphql.client.post("/graphql", json={"query": "{ answer }"})
        assert response.json() == {"data": {"answer": 42}}


async def test_a_client_that_never_initialises_is_closed_with_4408(
    graphql: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(graphql_ws_module, "CONNECTION_INIT_TIMEOUT_S", 0.3)
    with trio.fail_after(10):
        async with graphql_ws(graphql, init=False) as ws:
            assert await closed_with(ws) == (4408, "Connection initialisation timeout")


async def test_a_client_vanishing_mid_subscription_costs_nothing(graphql: Engine) -> None:
    """The TCP connection is dropped without a close frame, many times over."""
    host, port = graphql.base_url.removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(30):
        for round in range(5):
            stream = await trio.open_tcp_stream(host, int(port))
            client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            await stream.send_all(
                client.send(
                    wsproto.events.Request(
                        host=f"{host}:{port}", target="/graphql/ws", subprotocols=[SUBPROTOCOL]
                    )
                )
            )
            accepted = False
            while not accepted:
                client.receive_data(await stream.receive_some(4096))
                accepted = any(
                    isinstance(event, wsproto.events.AcceptConnection) for event in client.events()
                )
            frames = [message(type="connection_init"), subscribe(f"v{round}", TICKS)]
            await stream.send_all(
                b"".join(client.send(wsproto.events.TextMessage(frame)) for frame in frames)
            )
            await until_subscribers(graphql, 1)
            await stream.aclose()  # no close frame, no goodbye
            await until_subscribers(graphql, 0)
    response = await graphql.client.post("/graphql", json={"query": "{ answer }"})
    assert response.json() == {"data": {"answer": 42}}


async def test_sigterm_closes_sockets_with_1001_promptly(
    tmp_path: Path, engine_process: type[EngineProcess]
) -> None:
    server = engine_process(tmp_path / "data", env={"AIWEBENGINE_SERVER__SHUTDOWN_GRACE_S": "60"})
    url = "ws" + server.base_url.removeprefix("http") + "/graphql/ws"
    client = httpx.AsyncClient(base_url=server.base_url, timeout=30)
    response = await client.post(
        "/engine/upsert_script", data={"uri": URI, "content": TICKS_SCRIPT}
    )
    assert response.status_code == 200, response.text
    with trio.fail_after(20):
        async with (
            open_websocket_url(url, subprotocols=[SUBPROTOCOL]) as idle,
            open_websocket_url(url, subprotocols=[SUBPROTOCOL]) as busy,
        ):
            for ws in (idle, busy):
                await ws.send_message(message(type="connection_init"))
                assert await receive(ws) == {"type": "connection_ack"}
            await busy.send_message(subscribe("live", TICKS))
            await until_subscribers(client, 1)
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            closes = [await closed_with(ws) for ws in (idle, busy)]
    await client.aclose()
    exit_code = await trio.to_thread.run_sync(server.wait, 20)
    assert closes == [(1001, "the engine is shutting down")] * 2
    assert exit_code == 0
    assert time.monotonic() - started < 15


async def test_a_draining_engine_closes_open_sockets_and_refuses_new_ones(graphql: Engine) -> None:
    with trio.fail_after(10):
        async with graphql_ws(graphql) as ws:
            graphql.runtime.begin_shutdown()
            assert await closed_with(ws) == (1001, "the engine is shutting down")
        with pytest.raises(ConnectionRejected) as refused:
            async with graphql_ws(graphql):
                pass
    assert refused.value.status_code == 503
