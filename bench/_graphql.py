"""Benchmark 5: GraphQL -- query throughput against bare Tartiflette, subscription fan-out.

* **Queries.**  ``POST /graphql`` with ``{ hello(name: "bench") }``, closed loop: on the engine
  the field is a script's (``graphQLRegistry.registerQuery``), resolved in a sandbox worker; on
  the baseline (:mod:`bench.bare_live_app`) the same field of a bare Tartiflette schema served by
  Quart-Trio, resolved in-process.  To split the difference, both also answer ``{ __typename }``,
  which Tartiflette resolves itself: on the engine it is the whole GraphQL HTTP path without
  the sandbox.  All four sides alternate round by round.
* **Subscriptions.**  Subscribers on ``/graphql/ws`` (``graphql-transport-ws``) to a script's
  subscription field; a script route broadcasts with ``graphQLRegistry.sendSubscriptionMessage``
  and each broadcast is timed like the SSE fan-out (:func:`bench._live.run_fanout`).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import attrs
import httpx

from bench import _servers as servers
from bench._dialogues import GraphQLSubscriber, HttpExchange, post_request
from bench._fanout import FanoutSpec
from bench._live import (
    ExchangeSide,
    FanoutResult,
    LiveSettings,
    alternate_exchanges,
    run_fanout,
    start_bare_live,
)
from bench._measure import Comparison, Settings, say
from bench._streams import parse_sent_count

__all__ = ["GRAPHQL_SCRIPT", "GraphQLResult", "graphql_benchmark"]

HELLO = '{ hello(name: "bench") }'
TYPENAME = "{ __typename }"
TICKS = "subscription { ticks { n } }"

GRAPHQL_SCRIPT = """
function hello(context) {
  return "Hello, " + ((context.args && context.args.name) || "world");
}
function tick(context) {
  const n = context.request.query.n;
  return graphQLRegistry.sendSubscriptionMessage(
    "ticks", JSON.stringify({ n: n === undefined ? -1 : Number(n) }));
}
function init(context) {
  graphQLRegistry.registerQuery("hello", "hello(name: String): String", "hello", "external");
  graphQLRegistry.registerSubscription(
    "ticks", "type Tick { n: Int }\\ntype Subscription { ticks: Tick }", null, "external");
  routeRegistry.registerRoute("/bench/tick", "tick", "POST");
}
"""


@attrs.frozen
class GraphQLResult:
    hello: Comparison  # bare Tartiflette vs the engine's script resolver
    typename: Comparison  # the same, for a field Tartiflette resolves itself
    engine_fields: Comparison  # on the engine: { __typename } vs the script resolver
    fanout: FanoutResult


def _query(server: servers.ServerProcess, query: str) -> bytes:
    body = json.dumps({"query": query}).encode()
    return post_request(server.host, server.port, "/graphql", body, "application/json")


def _check(server: servers.ServerProcess, query: str) -> None:
    """The query answers with data and no errors, so the load measures real answers."""
    response = httpx.post(server.base_url + "/graphql", json={"query": query}, timeout=30)
    answer = response.json()
    if response.status_code != 200 or answer.get("errors") or not answer.get("data"):
        raise RuntimeError(f"{server.name} answered {query} with {response.status_code}: {answer}")


def _tick(client: httpx.Client, tag: int | None) -> int:
    params = {} if tag is None else {"n": str(tag)}
    response = client.post("/bench/tick", params=params, timeout=60)
    response.raise_for_status()
    return parse_sent_count(response.text)


def graphql_benchmark(settings: Settings, live: LiveSettings, work: Path) -> GraphQLResult:
    engine = servers.start_engine("engine-graphql", work / "data-graphql", work, live.stream_caps())
    bare = start_bare_live(work)
    try:
        servers.deploy(engine, "https://bench.local/graphql", GRAPHQL_SCRIPT)
        for server in (bare, engine):
            for query in (HELLO, TYPENAME):
                _check(server, query)
        say("5a. GraphQL queries: bare Tartiflette on Quart-Trio vs the engine")

        def side(label: str, server: servers.ServerProcess, query: str) -> ExchangeSide:
            return ExchangeSide(
                label, server, partial(HttpExchange, _query(server, query)), server is engine
            )

        bare_hello, engine_hello, bare_typename, engine_typename = alternate_exchanges(
            settings,
            live,
            [
                side("bare Tartiflette hello", bare, HELLO),
                side("engine script hello", engine, HELLO),
                side("bare Tartiflette __typename", bare, TYPENAME),
                side("engine __typename", engine, TYPENAME),
            ],
        )
        bare.stop()
        say(f"5b. {live.graphql_subscribers:,} GraphQL subscribers over /graphql/ws")
        fanout = run_fanout(
            engine,
            FanoutSpec(
                host=engine.host,
                port=engine.port,
                connections=live.graphql_subscribers,
                processes=live.subscriber_processes,
                make=partial(
                    GraphQLSubscriber, engine.host, engine.port, "/graphql/ws", "ticks", TICKS
                ),
            ),
            _tick,
            live,
        )
    finally:
        bare.stop()
        engine.stop()
    return GraphQLResult(
        hello=Comparison(bare_hello, engine_hello),
        typename=Comparison(bare_typename, engine_typename),
        engine_fields=Comparison(engine_typename, engine_hello),
        fanout=fanout,
    )
