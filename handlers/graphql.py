"""GraphQL over HTTP: ``/graphql``, ``/graphql/sse``, ``/graphql/ws`` and the schema.

Every endpoint translates a request into calls on the runtime's
:class:`~engine.graphql_service.GraphQLService` and its answers back; the schema, execution and
limits live there.

* ``GET /graphql`` gives a browser (``Accept`` names ``text/html``, no ``query`` parameter) the
  query page; with ``?query=&variables=&operationName=`` it runs the operation.  ``POST
  /graphql`` takes JSON ``{query, variables, operationName}`` or an ``application/graphql`` body.
  The answer is the GraphQL result as JSON with status 200, GraphQL errors included.
* ``GET|POST /graphql/sse`` takes the same inputs and answers ``text/event-stream``: every result
  of a subscription as an unnamed event (``data: {"data": ...}``), comments as heart-beats, and
  ``event: complete`` when the source ends; a query or mutation is one event, then ``complete``.
* ``/graphql/ws`` speaks ``graphql-transport-ws`` (:mod:`handlers.graphql_ws`).
* ``GET /engine/graphql/schema`` is the current schema as SDL, behind the ``/engine`` door and
  ``ReadScripts``.

Requests are read, and refusals shaped, by :mod:`handlers.graphql_request`.

Decisions, and why:

* **A request that is not a GraphQL request is a 4xx**, not the original's 200: 400 for a
  missing query, invalid JSON, variables that are no object, a query over the limits, a
  subscription sent to ``/graphql``; 413 for a body over ``security.max_request_body_bytes``;
  415 for a POST that is neither JSON nor ``application/graphql``.  The body is the engine's
  error envelope with the GraphQL ``errors`` list beside it, so both a GraphQL client and a
  client of the engine's errors find what they look for.
* **Mutations only by POST.**  A GET can be made by any page (a link, an image) with the
  user's cookies; a mutation over GET is refused with 405, as GraphQL over HTTP specifies.
* **POST must say it is JSON.**  A cross-site form or a ``no-cors`` fetch can send
  ``text/plain`` or no type at all without a pre-flight; refusing those keeps mutations out of
  reach of other sites' pages.
* **SSE and WebSocket are plain ASGI** (as the solution streams are): a subscription's context
  must be entered and left by one task, around the whole response, which Quart's response bodies
  cannot promise; and a refused subscription must still be a plain HTTP 400.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from importlib import resources
from typing import Any, Final

import structlog
import trio
from quart import Blueprint, Response, request

from engine.errors import EngineError
from engine.graphql_service import GraphQLRequestError, GraphQLService, QueryRejected
from engine.runtime import EngineRuntime
from handlers._access import requires
from handlers._body import PayloadTooLarge, read_body
from handlers._responses import json_response, request_id
from handlers.graphql_request import (
    MUTATION_OVER_GET,
    SUBSCRIPTION_OVER_HTTP,
    BadGraphQLRequest,
    GraphQLParams,
    error_body,
    is_mutation,
    params_from_body,
    params_from_query_string,
    refusal_of,
    wants_page,
)
from handlers.graphql_ws import GraphQLWebSocket
from handlers.sse import sse_comment, sse_event
from handlers.streams import SSE_HEADERS
from security import Capability
from security.headers import security_headers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = structlog.get_logger("aiwebengine.graphql")

SSE_PATH: Final = "/graphql/sse"
WS_PATH: Final = "/graphql/ws"
COMPLETE: Final = sse_event("complete", "")
KEEP_ALIVE: Final = sse_comment("keep-alive")


# -- /graphql, the page and the schema (Quart) ------------------------------------------------


@functools.cache
def _page_file(name: str) -> str:
    return resources.files("handlers").joinpath(f"pages/{name}").read_text("utf-8")


def make_blueprint(runtime: EngineRuntime) -> Blueprint:
    blueprint = Blueprint("graphql", __name__)
    body_limit = runtime.config.security.max_request_body_bytes

    def refuse(status: int, code: str, message: str, **extra: Any) -> Response:
        body = error_body(
            status=status,
            code=code,
            message=message,
            request_id=request_id(),
            path=request.path,
            method=request.method,
            **extra,
        )
        return json_response(body, status)

    async def run(params: GraphQLParams) -> Response:
        service = runtime.graphql
        try:
            service.check(params.query, params.variables)
            if service.is_subscription(params.query, params.operation_name):
                return refuse(400, "SUBSCRIPTION_NOT_SUPPORTED", SUBSCRIPTION_OVER_HTTP)
            if request.method == "GET" and is_mutation(params):
                response = refuse(405, "METHOD_NOT_ALLOWED", MUTATION_OVER_GET)
                response.headers["Allow"] = "POST"
                return response
            result = await service.execute(
                params.query, params.variables, params.operation_name, request_id=request_id()
            )
        except (QueryRejected, GraphQLRequestError) as exc:
            code, message, errors = refusal_of(exc)
            return refuse(400, code, message, errors=errors)
        return json_response(result)

    @blueprint.get("/graphql")
    async def graphql_get() -> Response:
        raw_query = request.scope.get("query_string", b"")
        if wants_page(request.headers.get("accept", ""), raw_query):
            response = Response(
                _page_file("graphiql.html"), content_type="text/html; charset=utf-8"
            )
            # An engine page: its script comes from this origin only, never inline.
            for name, value in security_headers(engine_page=True, hsts=False):
                response.headers[name] = value
            response.headers["Cache-Control"] = "no-cache"
            return response
        try:
            params = params_from_query_string(raw_query)
        except BadGraphQLRequest as exc:
            return refuse(exc.status, exc.code, exc.message)
        return await run(params)

    @blueprint.post("/graphql")
    async def graphql_post() -> Response:
        try:
            body = await read_body(body_limit)
        except PayloadTooLarge as exc:
            response = refuse(413, "PAYLOAD_TOO_LARGE", f"Request body over {exc.limit} bytes")
            response.headers["Connection"] = "close"
            return response
        try:
            params = params_from_body(
                request.headers.get("content-type", ""),
                body,
                request.scope.get("query_string", b""),
            )
        except BadGraphQLRequest as exc:
            return refuse(exc.status, exc.code, exc.message)
        return await run(params)

    @blueprint.get("/graphql/graphiql.js")
    async def page_script() -> Response:
        response = Response(
            _page_file("graphiql.js"), content_type="text/javascript; charset=utf-8"
        )
        response.headers["Cache-Control"] = "no-cache"
        return response

    @blueprint.get("/engine/graphql/schema")
    @requires(Capability.ReadScripts)
    async def schema() -> Response:
        return Response(runtime.graphql.sdl(), content_type="text/plain; charset=utf-8")

    return blueprint


# -- /graphql/sse (ASGI) ----------------------------------------------------------------------


class _Exchange:
    """One request on ``/graphql/sse`` and its single response, in ASGI terms."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        self.scope = scope
        self.receive = receive
        self._send = send
        self.request_id = request_id
        self.method: str = scope["method"]
        self.body_read = False
        self.started = False
        self.last_sent = trio.current_time()
        # A result and a heart-beat come from two tasks: never interleave two sends.
        self._lock = trio.Lock()

    def header(self, name: bytes) -> str:
        for key, value in self.scope.get("headers", ()):
            if bytes(key).lower() == name:
                return bytes(value).decode("latin-1")
        return ""

    async def read_body(self, limit: int) -> bytes:
        declared = self.header(b"content-length")
        if declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self.body_read = True
        return b"".join(chunks)

    async def start(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        head = [
            *headers,
            (b"x-request-id", self.request_id.encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        if not self.body_read and self.method != "GET":
            # An unread body would be taken for the next request on a kept-alive connection.
            head.append((b"connection", b"close"))
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": head})

    async def send_body(self, body: bytes, *, more: bool = False) -> None:
        async with self._lock:
            self.last_sent = trio.current_time()
            await self._send({"type": "http.response.body", "body": body, "more_body": more})

    async def error(
        self,
        status: int,
        code: str,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        body = error_body(
            status=status,
            code=code,
            message=message,
            request_id=self.request_id,
            path=SSE_PATH,
            method=self.method,
            errors=errors,
        )
        encoded = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        await self.start(
            status,
            [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(encoded)).encode()),
                *headers,
            ],
        )
        await self.send_body(encoded)


_SSE_RESPONSE_HEADERS: Final = (*SSE_HEADERS, (b"access-control-allow-origin", b"*"))


class GraphQLEventStream:
    """Serves ``/graphql/sse``."""

    def __init__(self, runtime: EngineRuntime) -> None:
        self._runtime = runtime

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self._runtime
        exchange = _Exchange(scope, receive, send, runtime.new_request_id())
        structlog.contextvars.bind_contextvars(request_id=exchange.request_id)
        try:
            await self._serve(exchange)
        except EngineError as exc:
            if not exchange.started:
                await exchange.error(exc.status, exc.code, exc.message)
        except Exception:
            log.exception("graphql event stream failed", method=exchange.method)
            if not exchange.started:
                await exchange.error(500, "INTERNAL_SERVER_ERROR", "Internal server error")
        finally:
            structlog.contextvars.clear_contextvars()

    async def _serve(self, exchange: _Exchange) -> None:
        runtime = self._runtime
        if not runtime.started:
            await exchange.error(
                503, "STARTING", "The engine is starting", headers=[(b"retry-after", b"1")]
            )
            return
        raw_query = bytes(exchange.scope.get("query_string", b""))
        try:
            if exchange.method == "GET":
                params = params_from_query_string(raw_query)
            elif exchange.method == "POST":
                body = await exchange.read_body(runtime.config.security.max_request_body_bytes)
                params = params_from_body(exchange.header(b"content-type"), body, raw_query)
            else:
                await exchange.error(
                    405,
                    "METHOD_NOT_ALLOWED",
                    "Method not allowed",
                    headers=[(b"allow", b"GET, POST")],
                )
                return
        except PayloadTooLarge as exc:
            await exchange.error(413, "PAYLOAD_TOO_LARGE", f"Request body over {exc.limit} bytes")
            return
        except BadGraphQLRequest as exc:
            await exchange.error(exc.status, exc.code, exc.message)
            return
        service = runtime.graphql
        try:
            service.check(params.query, params.variables)
            if service.is_subscription(params.query, params.operation_name):
                await self._subscription(exchange, service, params)
                return
            if exchange.method == "GET" and is_mutation(params):
                await exchange.error(
                    405, "METHOD_NOT_ALLOWED", MUTATION_OVER_GET, headers=[(b"allow", b"POST")]
                )
                return
            result = await service.execute(
                params.query,
                params.variables,
                params.operation_name,
                request_id=exchange.request_id,
            )
        except (QueryRejected, GraphQLRequestError) as exc:
            if exchange.started:
                raise
            code, message, errors = refusal_of(exc)
            await exchange.error(400, code, message, errors=errors)
            return
        await exchange.start(200, _SSE_RESPONSE_HEADERS)
        await exchange.send_body(sse_event(None, result) + COMPLETE)

    async def _subscription(
        self, exchange: _Exchange, service: GraphQLService, params: GraphQLParams
    ) -> None:
        """Raises the service's refusals before the response starts, never after."""
        heartbeat_s = self._runtime.config.streams.heartbeat_s
        async with service.subscribe(
            params.query, params.variables, params.operation_name, request_id=exchange.request_id
        ) as results:
            await exchange.start(200, _SSE_RESPONSE_HEADERS)
            finished = False
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_disconnect, exchange.receive, nursery.cancel_scope)
                # The results are never cancelled mid-wait (a generator would end): an idle
                # stream's heart-beat comes from a task of its own.
                nursery.start_soon(_keep_alive, exchange, heartbeat_s)
                async for result in results:
                    await exchange.send_body(sse_event(None, result), more=True)
                finished = True
                nursery.cancel_scope.cancel()
        if finished:
            await exchange.send_body(COMPLETE)


async def _keep_alive(exchange: _Exchange, heartbeat_s: float) -> None:
    while True:
        await trio.sleep_until(exchange.last_sent + heartbeat_s)
        if trio.current_time() - exchange.last_sent >= heartbeat_s:
            await exchange.send_body(KEEP_ALIVE, more=True)


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass  # a request body nobody asked for
    scope.cancel()


# -- mounting ---------------------------------------------------------------------------------


class GraphQLTransports:
    """ASGI middleware: ``/graphql/sse`` and ``/graphql/ws`` here, the rest to the wrapped app."""

    def __init__(self, app: ASGIApp, runtime: EngineRuntime) -> None:
        self._app = app
        self._events = GraphQLEventStream(runtime)
        self._websockets = GraphQLWebSocket(runtime)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        path = scope.get("path")
        if kind == "http" and path == SSE_PATH:
            await self._events.serve(scope, receive, send)
        elif kind == "websocket" and path == WS_PATH:
            await self._websockets.serve(scope, receive, send)
        else:
            await self._app(scope, receive, send)


def install(app: Any, runtime: EngineRuntime) -> None:
    """Mount the blueprint, and the streaming transports in front of the Quart application
    (call before :func:`handlers.solutions.install`, which must stay outermost)."""
    app.register_blueprint(make_blueprint(runtime))
    app.asgi_app = GraphQLTransports(app.asgi_app, runtime)
