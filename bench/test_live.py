"""The streams and GraphQL benchmarks' pure parts: ``python -m pytest bench/test_live.py``.

The connection dialogues against wsproto and hand-made responses, the fan-out statistics, the
parsing of broadcast answers, and the report sections rendered from made-up results (with the
awkward cases: broadcasts that never reached everybody, a quick run below the target size).
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Pong, Request, TextMessage

from bench._dialogues import (
    GRAPHQL_WS,
    GraphQLSubscriber,
    HttpExchange,
    SseSubscriber,
    WebSocketEcho,
    post_request,
)
from bench._fanout import Broadcast, spread
from bench._live import FanoutResult, LiveSettings
from bench._loadgen import LoadResult, LoadSpec
from bench._measure import Comparison, Run, Settings, Side
from bench._report_live import live_interpretation, live_sections
from bench._streams import parse_sent_count

# -- dialogues --------------------------------------------------------------------------------


def test_an_sse_subscriber_is_ready_on_the_head_and_counts_numbered_events() -> None:
    subscriber = SseSubscriber("127.0.0.1", 80, "/feed")
    assert subscriber.opening().startswith(b"GET /feed HTTP/1.1\r\n")
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    assert subscriber.feed(head) == ([], b"")
    assert subscriber.ready and subscriber.ended is None
    body = b"id: e-1\ndata: 7\n\ndata: probe\n\n: keep-alive\n\nid: e-2\ndata: 8\n\n"
    assert subscriber.feed(f"{len(body):x}\r\n".encode() + body + b"\r\n") == ([7, 8], b"")
    subscriber.feed(b"0\r\n\r\n")
    assert subscriber.ended == "the server ended the stream"


def test_a_refused_sse_subscriber_ends_without_being_ready() -> None:
    subscriber = SseSubscriber("127.0.0.1", 80, "/feed")
    subscriber.feed(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
    assert not subscriber.ready
    assert subscriber.ended == "HTTP 503"


def accepting_server(request: bytes, subprotocol: str | None) -> tuple[WSConnection, bytes]:
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(request)
    events = list(server.events())
    assert isinstance(events[0], Request)
    return server, server.send(AcceptConnection(subprotocol=subprotocol))


def client_messages(server: WSConnection, data: bytes, *, as_json: bool = True) -> list[Any]:
    """What the server read from ``data``: text messages parsed as JSON unless told not to."""
    server.receive_data(data)
    return [
        json.loads(event.data) if as_json and isinstance(event, TextMessage) else event
        for event in server.events()
    ]


def send_json(server: WSConnection, message: dict[str, Any]) -> bytes:
    return server.send(TextMessage(data=json.dumps(message)))


def test_a_graphql_subscriber_speaks_graphql_transport_ws() -> None:
    subscriber = GraphQLSubscriber("127.0.0.1", 80, "/graphql/ws", "ticks", "subscription { t }")
    server, accept = accepting_server(subscriber.opening(), GRAPHQL_WS)
    tags, out = subscriber.feed(accept)
    assert (tags, subscriber.ready) == ([], False)
    assert client_messages(server, out) == [{"type": "connection_init"}]

    tags, out = subscriber.feed(send_json(server, {"type": "connection_ack"}))
    assert subscriber.ready
    assert client_messages(server, out) == [
        {"id": "1", "type": "subscribe", "payload": {"query": "subscription { t }"}}
    ]

    def next_(n: Any) -> dict[str, Any]:
        return {"id": "1", "type": "next", "payload": {"data": {"ticks": {"n": n}}}}

    wire = b"".join(
        send_json(server, message)
        for message in (next_(3), next_(-1), next_("x"), next_(4), {"type": "ping"})
    ) + server.send(Ping(payload=b"hb"))
    tags, out = subscriber.feed(wire)
    assert tags == [3, 4]
    assert client_messages(server, out) == [{"type": "pong"}, Pong(payload=b"hb")]

    subscriber.feed(server.send(CloseConnection(code=4403, reason="no")))
    assert subscriber.ended == "closed with 4403"


def test_a_graphql_subscriber_refuses_a_server_without_the_subprotocol() -> None:
    subscriber = GraphQLSubscriber("127.0.0.1", 80, "/graphql/ws", "ticks", "subscription { t }")
    _, accept = accepting_server(subscriber.opening(), None)
    assert subscriber.feed(accept) == ([], b"")
    assert subscriber.ended == "subprotocol None chosen"


def test_a_graphql_error_ends_the_subscriber() -> None:
    subscriber = GraphQLSubscriber("127.0.0.1", 80, "/graphql/ws", "ticks", "subscription { t }")
    server, accept = accepting_server(subscriber.opening(), GRAPHQL_WS)
    subscriber.feed(accept)
    subscriber.feed(send_json(server, {"id": "1", "type": "error", "payload": [{"message": "x"}]}))
    assert subscriber.ended is not None and "error" in subscriber.ended


def test_an_echo_times_each_message_from_send_to_its_echo() -> None:
    echo = WebSocketEcho("127.0.0.1", 80, "/echo", "hello")
    request, timed = echo.opening()
    assert not timed  # the handshake is not an exchange
    server, accept = accepting_server(request, None)
    done, out, timed = echo.feed(accept)
    assert (done, timed) == ([], True)
    assert client_messages(server, out, as_json=False) == [TextMessage(data="hello")]
    done, out, timed = echo.feed(server.send(TextMessage(data="hello")))
    assert (done, timed) == ([200], True)
    assert client_messages(server, out, as_json=False) == [TextMessage(data="hello")]
    done, out, timed = echo.feed(server.send(Ping(payload=b"x")))
    assert (done, timed) == ([], False)
    assert client_messages(server, out, as_json=False) == [Pong(payload=b"x")]
    done, _, _ = echo.feed(server.send(TextMessage(data="other")))
    assert done == [0]


def test_an_http_exchange_sends_the_same_request_after_each_response() -> None:
    request = post_request("127.0.0.1", 80, "/graphql", b'{"query":"{x}"}', "application/json")
    assert request.endswith(b"Content-Length: 15\r\n\r\n" + b'{"query":"{x}"}')
    exchange = HttpExchange(request)
    assert exchange.opening() == (request, True)
    response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    assert exchange.feed(response[:10]) == ([], b"", False)
    assert exchange.feed(response[10:]) == ([200], request, True)


# -- statistics and answers -------------------------------------------------------------------


def test_a_broadcast_that_missed_somebody_has_no_time_to_reach_all() -> None:
    complete = Broadcast(tag=1, reported=3, answered_s=0.1, delays=(0.1, 0.2, 0.3))
    assert complete.all_s == 0.3
    assert complete.delay(50) == 0.2
    incomplete = Broadcast(tag=2, reported=4, answered_s=0.1, delays=(0.1, 0.2, 0.3))
    assert math.isnan(incomplete.all_s)
    assert math.isnan(Broadcast(tag=3, reported=0, answered_s=0.1, delays=()).all_s)


@given(st.lists(st.floats(0, 100), max_size=50))
def test_spread_is_median_p99_and_max(values: list[float]) -> None:
    p50, p99, top = spread(values)
    if not values:
        assert all(math.isnan(x) for x in (p50, p99, top))
    else:
        assert p50 in values and p99 in values
        assert p50 <= p99 <= top == max(values)


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("Successfully sent message to 12 connections on path '/feed'", 12),
        ("Sent message to 3/5 connections on path '/feed' (filter ...)", 3),
        ("GraphQL subscription message sent to 'ticks' (1 connection) successfully", 1),
        ("GraphQL subscription message sent to 'ticks' (1000 connections) successfully", 1000),
    ],
)
def test_broadcast_answers_give_their_connection_count(text: str, count: int) -> None:
    assert parse_sent_count(text) == count


def test_an_answer_without_a_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="no connection count"):
        parse_sent_count("Stream path '/x' not found")


def fanout(subscribers: int, delays: list[tuple[float, ...]]) -> FanoutResult:
    return FanoutResult(
        subscribers=subscribers,
        connected=subscribers,
        counted=subscribers,
        connect_s=1.0,
        rss_before=100_000_000,
        rss_after=100_000_000 + 30_000 * subscribers,
        # Every broadcast is sent to as many as the longest one reached.
        broadcasts=tuple(
            Broadcast(tag=i + 1, reported=max(map(len, delays)), answered_s=0.05, delays=d)
            for i, d in enumerate(delays)
        ),
        server_cpu_s=tuple(0.5 for _ in delays),
        client_cpu_s=2.0,
        problems={"closed by the server": 1},
    )


def test_memory_and_cpu_are_per_subscriber() -> None:
    result = fanout(4, [(0.1, 0.2, 0.3, 0.4)])
    assert result.bytes_per_subscriber == 30_000
    assert result.cpu_per_delivery_us() == [125_000.0]  # 0.5 s over 4 deliveries


# -- the report sections ----------------------------------------------------------------------


def side(label: str, rate: float) -> Side:
    spec = LoadSpec("127.0.0.1", 1, label, 16, 1, 1.0)
    load = LoadResult(
        spec=spec,
        statuses={200: int(rate)},
        total_completed=int(rate),
        reconnects=0,
        latency_percentiles={50.0: 0.001, 75.0: 0.002, 90.0: 0.003, 99.0: 0.004},
        window_s=1.0,
        generator_cpu_s=0.1,
        run_s=1.0,
        problems={},
    )
    run = Run(label, 1, load, leader_cpu_s=0.5, worker_cpu_s=0.1, restarts=0)
    return Side(label, (run,))


def suite(subscribers: int, delays: list[tuple[float, ...]]) -> Any:
    settings = Settings.quick_run()
    bare, engine = side("bare", 2000), side("engine", 1500)
    return SimpleNamespace(
        settings=settings,
        live=LiveSettings.of(settings),
        environment={"open_files_limit": "20000"},
        round_trip={"parent_cpu_us": 90.0},
        streams=SimpleNamespace(fanout=fanout(subscribers, delays), echo=Comparison(bare, engine)),
        graphql=SimpleNamespace(
            hello=Comparison(bare, engine),
            typename=Comparison(bare, engine),
            engine_fields=Comparison(engine, engine),
            fanout=fanout(subscribers, delays),
        ),
    )


def test_the_sections_judge_the_targets_on_the_slowest_broadcast() -> None:
    text = "\n".join(live_sections(suite(10_000, [(0.2, 0.5), (0.3, 1.2)])))
    assert "everybody in 1,200 ms — **not met**" in text
    assert "30.0 KB per idle subscriber — **not met**" in text
    assert "This run: 75 % — **not met**" in text


def test_a_broadcast_that_never_reached_everybody_fails_the_target() -> None:
    result = suite(10_000, [(0.2, 0.5), (0.3,)])  # the second reached 1 of 2
    text = "\n".join(live_sections(result))
    assert "1 of which did not reach every subscriber" in text
    assert "everybody in n/a ms — **not met**" in text
    assert live_interpretation(result)  # renders with the gap


def test_a_quick_run_is_below_the_target_size_and_not_judged() -> None:
    text = "\n".join(live_sections(suite(1_000, [(0.01, 0.02)])))
    assert "the targets are not judged" in text
