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
* ``GET /engine/graphql/schema`` is the current schema as SDL, behind the ``/engine`` token rule.

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

import attrs
import structlog
import trio
from quart import Blueprint, Response, request

from engine.errors import EngineError
from engine.graphql import operation_of
from engine.graphql_service import GraphQLRequestError, GraphQLService, QueryRejected
from engine.http_contract import decode_query, error_envelope
from engine.runtime import EngineRuntime
from handlers._body import PayloadTooLarge, read_body
from handlers._responses import json_response, request_id
from handlers.graphql_ws import GraphQLWebSocket
from handlers.sse import sse_comment, sse_event
from handlers.streams import SSE_HEADERS
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
_JSON_TYPES: Final = ("application/json",)
_GRAPHQL_TYPE: Final = "application/graphql"


# -- reading a GraphQL request (no I/O) -------------------------------------------------------


@attrs.frozen
class GraphQLParams:
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None


class BadGraphQLRequest(Exception):
    """A request that carries no runnable GraphQL request; ``status`` is 400 or 415."""

    def __init__(self, message: str, *, code: str = "BAD_REQUEST", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def _decode_json(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except UnicodeDecodeError:
        raise BadGraphQLRequest(f"Invalid JSON: {what} is not UTF-8", code="INVALID_JSON") from None
    except json.JSONDecodeError as exc:
        raise BadGraphQLRequest(f"Invalid JSON: {exc}", code="INVALID_JSON") from None
    except (ValueError, RecursionError):
        raise BadGraphQLRequest(
            f"Invalid JSON: {what} cannot be decoded", code="INVALID_JSON"
        ) from None


def _variables(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        # Some clients send the variables as JSON text even inside a JSON body.
        value = _decode_json(value, "variables") if value.strip() else None
    if value is not None and not isinstance(value, dict):
        raise BadGraphQLRequest("'variables' must be a JSON object")
    return value


def _operation_name(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise BadGraphQLRequest("'operationName' must be a string")
    return value or None


def _query(value: Any) -> str:
    if value is None or value == "":
        raise BadGraphQLRequest("Missing query parameter", code="MISSING_QUERY")
    if not isinstance(value, str):
        raise BadGraphQLRequest("'query' must be a string")
    return value


def params_from_query_string(raw_query: bytes) -> GraphQLParams:
    """``?query=&variables=&operationName=`` (``variables`` as JSON text)."""
    params = decode_query(raw_query)
    return GraphQLParams(
        query=_query(params.get("query")),
        variables=_variables(params.get("variables")),
        operation_name=_operation_name(params.get("operationName")),
    )


def params_from_body(content_type: str, body: bytes, raw_query: bytes = b"") -> GraphQLParams:
    """A POST body: JSON ``{query, variables, operationName}``, or an ``application/graphql``
    query text with ``variables`` and ``operationName`` in the query string."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == _GRAPHQL_TYPE:
        try:
            query = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadGraphQLRequest("The query is not UTF-8") from None
        params = decode_query(raw_query)
        return GraphQLParams(
            query=_query(query),
            variables=_variables(params.get("variables")),
            operation_name=_operation_name(params.get("operationName")),
        )
    if media_type not in _JSON_TYPES and not media_type.endswith("+json"):
        shown = media_type or "no content type"
        raise BadGraphQLRequest(
            "Send GraphQL requests as application/json ({query, variables, operationName}) "
            f"or as application/graphql (the query text), not {shown}",
            code="UNSUPPORTED_MEDIA_TYPE",
            status=415,
        )
    if not body.strip():
        raise BadGraphQLRequest("Missing query parameter", code="MISSING_QUERY")
    decoded = _decode_json(body, "the body")
    if isinstance(decoded, list):
        raise BadGraphQLRequest("Batched requests (a JSON array) are not supported")
    if not isinstance(decoded, dict):
        raise BadGraphQLRequest("The body must be a JSON object {query, variables, operationName}")
    return GraphQLParams(
        query=_query(decoded.get("query")),
        variables=_variables(decoded.get("variables")),
        operation_name=_operation_name(decoded.get("operationName")),
    )


def error_body(
    *,
    status: int,
    code: str,
    message: str,
    request_id: str,
    path: str,
    method: str,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The engine's error envelope with the GraphQL ``errors`` list beside it."""
    body = error_envelope(
        status=status,
        code=code,
        message=message,
        request_id=request_id,
        path=path,
        method=method,
    )
    body["errors"] = (
        errors if errors is not None else [{"message": message, "extensions": {"code": code}}]
    )
    return body


def refusal_of(exc: Exception) -> tuple[str, str, list[dict[str, Any]] | None]:
    """``(code, message, errors)`` for an operation the service refused to start."""
    if isinstance(exc, QueryRejected):
        return "QUERY_REJECTED", str(exc), None
    if isinstance(exc, GraphQLRequestError):
        errors = list(exc.errors)
        first = str(errors[0].get("message", "")) if errors else ""
        return "GRAPHQL_REQUEST_ERROR", first or "The operation cannot run", errors
    raise TypeError(f"not a refusal: {exc!r}")


SUBSCRIPTION_OVER_HTTP: Final = (
    "Subscriptions are served on /graphql/sse (server-sent events) and /graphql/ws "
    "(graphql-transport-ws), not on /graphql"
)


MUTATION_OVER_GET: Final = "Mutations are sent with POST, not GET"


def _is_mutation(params: GraphQLParams) -> bool:
    try:
        return operation_of(params.query, params.operation_name) == "mutation"
    except QueryRejected:
        return False  # execution reports what is wrong with the query


def wants_page(accept: str, raw_query: bytes) -> bool:
    """A browser navigating to ``/graphql``: ``text/html`` named with a non-zero quality (not
    merely ``*/*``, which every HTTP client sends) and no ``query`` parameter."""
    if "query" in decode_query(raw_query):
        return False
    for part in accept.split(","):
        media_type, *parameters = part.split(";")
        if media_type.strip().lower() != "text/html":
            continue
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        return quality > 0
    return False


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
            if request.method == "GET" and _is_mutation(params):
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
            if exchange.method == "GET" and _is_mutation(params):
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
        self._websockets = GraphQLWebSocket(runtime, _shutdown_event(runtime))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        path = scope.get("path")
        if kind == "http" and path == SSE_PATH:
            await self._events.serve(scope, receive, send)
        elif kind == "websocket" and path == WS_PATH:
            await self._websockets.serve(scope, receive, send)
        else:
            await self._app(scope, receive, send)


def _shutdown_event(runtime: EngineRuntime) -> trio.Event:
    # Set when the server starts draining, before it waits for open connections to end.
    event = getattr(runtime, "shutting_down", None)
    return event if isinstance(event, trio.Event) else trio.Event()


def install(app: Any, runtime: EngineRuntime) -> None:
    """Mount the blueprint, and the streaming transports in front of the Quart application
    (call before :func:`handlers.solutions.install`, which must stay outermost)."""
    app.register_blueprint(make_blueprint(runtime))
    app.asgi_app = GraphQLTransports(app.asgi_app, runtime)
