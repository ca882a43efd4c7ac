"""The baselines of the streams and GraphQL benchmarks: Quart-Trio with no engine around it.

* ``/echo`` -- a WebSocket that sends every text message straight back;
* ``POST /graphql`` -- a bare Tartiflette schema, ``hello(name: String): String`` with its
  resolver in this process, run on one trio_asyncio loop opened for the app's lifetime with the
  engine's own runtime (:mod:`engine.graphql._runtime`), as the engine runs Tartiflette.

Served as ``aiwebengine serve`` serves the engine and :mod:`bench.bare_app` the plain route:
``hypercorn.trio.serve`` in-process on 127.0.0.1, a free port, no access log, and the engine's
WebSocket settings (ping interval, message size).  Run it as ``python -m bench.bare_live_app``;
it prints ``serving on <url>`` on stderr.
"""

from __future__ import annotations

import sys
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import Response, jsonify, request, websocket
from quart_trio import QuartTrio
from tartiflette import Resolver, create_engine

from engine.config import default_config
from engine.graphql import GraphQLRuntime, graphql_runtime

SCHEMA = "bench-bare"
SDL = "type Query { hello(name: String): String }"

app = QuartTrio("bare-live")
_graphql: dict[str, Any] = {}  # the runtime and the cooked engine, once serving


@Resolver("Query.hello", schema_name=SCHEMA)
async def resolve_hello(parent: Any, args: dict[str, Any], ctx: Any, info: Any) -> str:
    return "Hello, " + (args.get("name") or "world")


@app.websocket("/echo")
async def echo() -> None:
    while True:
        await websocket.send(await websocket.receive())


@app.post("/graphql")
async def graphql() -> Response:
    body = await request.get_json()
    runtime: GraphQLRuntime = _graphql["runtime"]
    result = await runtime.run_asyncio(
        _execute, body["query"], body.get("variables"), body.get("operationName")
    )
    return jsonify(result)


async def _execute(
    query: str, variables: dict[str, Any] | None, operation_name: str | None
) -> dict[str, Any]:
    """On the asyncio side, as the engine's ``execute`` runs."""
    result: dict[str, Any] = await _graphql["engine"].execute(
        query, operation_name=operation_name, variables=variables
    )
    return result


async def main() -> None:
    defaults = default_config()
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = defaults.server.shutdown_grace_s
    config.accesslog = None
    config.errorlog = "-"
    config.websocket_ping_interval = defaults.streams.ping_interval_s
    config.websocket_max_message_size = defaults.streams.max_message_bytes
    async with graphql_runtime() as runtime, trio.open_nursery() as nursery:
        _graphql["runtime"] = runtime
        _graphql["engine"] = await runtime.run_asyncio(create_engine, SDL, SCHEMA)
        binds = await nursery.start(
            lambda task_status: serve(
                app, config, shutdown_trigger=trio.sleep_forever, task_status=task_status
            )
        )
        print(f"bare-live: serving on {', '.join(binds)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    trio.run(main)
