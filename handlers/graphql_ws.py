"""GraphQL over WebSocket: the ``graphql-transport-ws`` protocol on ``/graphql/ws``.

:class:`ConnectionProtocol` is the protocol without I/O, one per socket: it takes the client's
frames and the results of running operations, and answers the actions to carry out (a message
to send, an operation to start or stop, a close).  It never raises on outside input, so a
client's fault can only ever close its own socket.  :class:`GraphQLWebSocket` is the Trio side:
it moves frames between the ASGI server and the protocol, and runs each operation in a task of
the connection's nursery.

The protocol is `enisdenjo/graphql-ws PROTOCOL.md
<https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md>`_.  Decisions, and why:

* **Sub-protocol.**  Offered ``graphql-transport-ws`` is selected and echoed.  A client that
  offers only *other* sub-protocols (the legacy ``graphql-ws`` of subscriptions-transport-ws,
  say) is accepted and closed at once with ``4406 Subprotocol not acceptable``, as the
  reference server does: browsers hide the HTTP status of a refused handshake, a close code is
  readable.  A client that offers none is served: the original engine never negotiated, and
  ``new WebSocket(url)`` without a protocol is how its pages connected.
* **Close codes** are the protocol's: 4400 for a malformed message, 4401 for ``subscribe``
  before ``connection_ack``, 4408 when ``connection_init`` does not come in time, 4409 for an id
  already in use, 4429 for a second ``connection_init``; and RFC 6455's 1001 when the engine
  shuts down and 1009 for a message over the size limit.
* **``error`` carries the bare list of GraphQL errors** the protocol specifies (the original
  sent an object ``{"errors": [...]}``).  It is the answer for an operation that cannot start:
  a parse or validation error, a query over the limits, a subscription over the connection's
  limit.  After ``error`` no ``complete`` follows, as the protocol says.
* **At most ``max_operations`` operations at a time** per connection, subscriptions and queries
  still running alike: this bounds the work one socket can hold, and a query finishes quickly.
* **Ids stay reserved until the operation ends**, for queries too (the protocol allows it): a
  client cannot have two answers in flight under one id.  Results of an operation the client
  completed are dropped, even if the client has reused its id meanwhile: every started
  operation has its own serial number.
* **Operations run concurrently**, each in its own task, so a slow query does not hold back a
  subscription's messages; frames are read one at a time, so a flood of frames is pushed back by
  TCP rather than queued.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import attrs
import structlog
import trio

from engine.errors import EngineError
from engine.graphql_service import GraphQLRequestError, GraphQLService, QueryRejected
from engine.runtime import EngineRuntime
from handlers.streams import (
    GOING_AWAY,
    MESSAGE_TOO_BIG,
    Close,
    WebSocketSender,
    reject_websocket,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = structlog.get_logger("aiwebengine.graphql")

SUBPROTOCOL: Final = "graphql-transport-ws"

# The protocol's close codes.
BAD_REQUEST: Final = 4400
UNAUTHORIZED: Final = 4401
SUBPROTOCOL_NOT_ACCEPTABLE: Final = 4406
INIT_TIMEOUT: Final = 4408
SUBSCRIBER_EXISTS: Final = 4409
TOO_MANY_INIT: Final = 4429

# How long a client has between the handshake and ``connection_init`` (the reference server's
# default is 3 s; a page on a slow mobile link deserves more).  Read at connection time.
CONNECTION_INIT_TIMEOUT_S: float = 10.0

# The message types a client may send; the others are the server's.
_SERVER_TYPES: Final = frozenset({"connection_ack", "next", "error"})


# -- the protocol, without I/O ----------------------------------------------------------------


@attrs.frozen
class Operation:
    """One ``subscribe`` the server accepted.  ``serial`` is unique per connection, ``id`` is
    the client's and may be reused once the operation has ended."""

    id: str
    serial: int
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None


@attrs.frozen
class SendMessage:
    """Send ``message`` to the client as one text frame."""

    message: dict[str, Any]

    @property
    def text(self) -> str:
        return json.dumps(self.message, ensure_ascii=False, separators=(",", ":"))


@attrs.frozen
class StartOperation:
    operation: Operation


@attrs.frozen
class StopOperation:
    """The client completed ``operation``: stop its delivery at once."""

    operation: Operation


Action = SendMessage | StartOperation | StopOperation | Close


class InvalidMessage(Exception):
    """A frame that is not a protocol message; the text becomes the 4400 close reason."""


def _optional_object(message: dict[str, Any], field: str, where: str) -> dict[str, Any] | None:
    value = message.get(field)
    if value is not None and not isinstance(value, dict):
        raise InvalidMessage(f"'{where}' must be an object or null")
    return value


def _required_id(message: dict[str, Any]) -> str:
    value = message.get("id")
    if not isinstance(value, str) or not value:
        raise InvalidMessage(f"'{message['type']}' needs a non-empty string 'id'")
    return value


def too_many_operations_error(limit: int) -> dict[str, Any]:
    return {
        "message": f"Too many operations on this connection: at most {limit} at a time",
        "extensions": {"code": "TOO_MANY_OPERATIONS"},
    }


class ConnectionProtocol:
    """The server side of one ``graphql-transport-ws`` socket, driven by events.

    Every method answers a list of :class:`Action`; once a :class:`Close` was answered the
    connection is over and every later call answers nothing.
    """

    def __init__(self, *, max_operations: int, max_message_chars: int) -> None:
        self.max_operations = max_operations
        self.max_message_chars = max_message_chars
        self.acknowledged = False
        self.closed = False
        self._active: dict[str, Operation] = {}
        self._serials = itertools.count(1)

    @property
    def active(self) -> int:
        return len(self._active)

    def _close(self, code: int, reason: str) -> list[Action]:
        self.closed = True
        stopped: list[Action] = [StopOperation(op) for op in self._active.values()]
        self._active.clear()
        return [*stopped, Close.of(code, reason)]

    # -- from the client ---------------------------------------------------------------------

    def receive_text(self, text: str) -> list[Action]:
        if self.closed:
            return []
        if len(text) > self.max_message_chars:
            return self._close(
                MESSAGE_TOO_BIG, f"Message longer than {self.max_message_chars} characters"
            )
        try:
            return self._receive(_decode(text))
        except InvalidMessage as exc:
            return self._close(BAD_REQUEST, str(exc))

    def receive_bytes(self) -> list[Action]:
        if self.closed:
            return []
        return self._close(BAD_REQUEST, "Binary messages are not part of the protocol")

    def _receive(self, message: dict[str, Any]) -> list[Action]:
        kind = message["type"]
        if kind == "connection_init":
            _optional_object(message, "payload", "payload")
            if self.acknowledged:
                return self._close(TOO_MANY_INIT, "Too many initialisation requests")
            self.acknowledged = True
            return [SendMessage({"type": "connection_ack"})]
        if kind == "ping":
            payload = _optional_object(message, "payload", "payload")
            pong: dict[str, Any] = {"type": "pong"}
            if payload is not None:
                pong["payload"] = payload
            return [SendMessage(pong)]
        if kind == "pong":
            _optional_object(message, "payload", "payload")
            return []
        if kind == "subscribe":
            return self._subscribe(message)
        if kind == "complete":
            operation = self._active.pop(_required_id(message), None)
            # An unknown id is a race with the operation's own end, not an error.
            return [] if operation is None else [StopOperation(operation)]
        if kind in _SERVER_TYPES:
            raise InvalidMessage(f"'{kind}' is a message only the server sends")
        raise InvalidMessage(f"Unknown message type '{_shorten(kind)}'")

    def _subscribe(self, message: dict[str, Any]) -> list[Action]:
        operation_id = _required_id(message)
        payload = message.get("payload")
        if not isinstance(payload, dict):
            raise InvalidMessage("'subscribe' needs an object 'payload'")
        query = payload.get("query")
        if not isinstance(query, str):
            raise InvalidMessage("'payload.query' must be a string")
        variables = _optional_object(payload, "variables", "payload.variables")
        _optional_object(payload, "extensions", "payload.extensions")
        operation_name = payload.get("operationName")
        if operation_name is not None and not isinstance(operation_name, str):
            raise InvalidMessage("'payload.operationName' must be a string or null")
        # Checked after the format: a malformed message is 4400 whatever the state.
        if not self.acknowledged:
            return self._close(UNAUTHORIZED, "Unauthorized")
        if operation_id in self._active:
            return self._close(
                SUBSCRIBER_EXISTS, f"Subscriber for {_shorten(operation_id)} already exists"
            )
        if len(self._active) >= self.max_operations:
            error = too_many_operations_error(self.max_operations)
            return [SendMessage({"id": operation_id, "type": "error", "payload": [error]})]
        operation = Operation(
            id=operation_id,
            serial=next(self._serials),
            query=query,
            variables=variables,
            operation_name=operation_name or None,
        )
        self._active[operation_id] = operation
        return [StartOperation(operation)]

    # -- from the server ---------------------------------------------------------------------

    def _is_current(self, operation: Operation) -> bool:
        return not self.closed and self._active.get(operation.id) == operation

    def result(self, operation: Operation, payload: dict[str, Any]) -> list[Action]:
        """One execution result of ``operation``."""
        if not self._is_current(operation):
            return []
        return [SendMessage({"id": operation.id, "type": "next", "payload": payload})]

    def completed(self, operation: Operation) -> list[Action]:
        """``operation`` delivered its last result."""
        if not self._is_current(operation):
            return []
        del self._active[operation.id]
        return [SendMessage({"id": operation.id, "type": "complete"})]

    def failed(self, operation: Operation, errors: list[dict[str, Any]]) -> list[Action]:
        """``operation`` could not run; ``errors`` are GraphQL errors."""
        if not self._is_current(operation):
            return []
        del self._active[operation.id]
        return [SendMessage({"id": operation.id, "type": "error", "payload": errors})]

    def init_timed_out(self) -> list[Action]:
        if self.closed or self.acknowledged:
            return []
        return self._close(INIT_TIMEOUT, "Connection initialisation timeout")

    def keep_alive(self) -> list[Action]:
        return [] if self.closed else [SendMessage({"type": "ping"})]

    def shutdown(self, reason: str) -> list[Action]:
        return [] if self.closed else self._close(GOING_AWAY, reason)


def _decode(text: str) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidMessage("Invalid message: not JSON") from None
    if not isinstance(message, dict):
        raise InvalidMessage("Invalid message: not a JSON object")
    if not isinstance(message.get("type"), str):
        raise InvalidMessage("Invalid message: no string 'type'")
    return message


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def choose_subprotocol(offered: list[str]) -> tuple[bool, str | None]:
    """``(acceptable, subprotocol to select)`` for the client's offered sub-protocols."""
    if not offered:
        return True, None
    if SUBPROTOCOL in offered:
        return True, SUBPROTOCOL
    return False, None


def request_errors(exc: Exception) -> list[dict[str, Any]]:
    """The GraphQL errors that say why an operation could not start or run."""
    if isinstance(exc, GraphQLRequestError):
        return list(exc.errors)
    if isinstance(exc, QueryRejected):
        return [{"message": str(exc), "extensions": {"code": "QUERY_REJECTED"}}]
    if isinstance(exc, EngineError):
        return [{"message": exc.message, "extensions": {"code": exc.code}}]
    return [{"message": "Internal server error", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]


# -- the Trio side ----------------------------------------------------------------------------


class GraphQLWebSocket:
    """Serves ``/graphql/ws``."""

    def __init__(self, runtime: EngineRuntime) -> None:
        self._runtime = runtime
        # Set when the server starts draining, before it waits for open connections to end.
        self._shutdown = runtime.shutting_down

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self._runtime
        request_id = runtime.new_request_id()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            if (await receive())["type"] != "websocket.connect":
                return
            if self._shutdown.is_set():
                await reject_websocket(
                    scope, send, 503, "SHUTTING_DOWN", "The engine is shutting down", request_id
                )
                return
            if not runtime.started:
                await reject_websocket(
                    scope, send, 503, "STARTING", "The engine is starting", request_id
                )
                return
            acceptable, subprotocol = choose_subprotocol(list(scope.get("subprotocols") or []))
            accept: dict[str, Any] = {"type": "websocket.accept"}
            if subprotocol is not None:
                accept["subprotocol"] = subprotocol
            await send(accept)
            socket = WebSocketSender(send)
            if not acceptable:
                await socket.close(
                    Close.of(SUBPROTOCOL_NOT_ACCEPTABLE, "Subprotocol not acceptable")
                )
                return
            connection = _Connection(
                runtime.graphql, socket, self._shutdown, runtime.new_request_id
            )
            await connection.run(receive)
        finally:
            structlog.contextvars.clear_contextvars()


class _Connection:
    """One accepted socket: the protocol, the operations' tasks, the timers."""

    def __init__(
        self,
        service: GraphQLService,
        socket: WebSocketSender,
        shutdown: trio.Event,
        new_request_id: Callable[[], str],
    ) -> None:
        limits = service.limits
        self._new_request_id = new_request_id
        self._service = service
        self._socket = socket
        self._shutdown = shutdown
        self._protocol = ConnectionProtocol(
            max_operations=limits.max_subscriptions_per_connection,
            # Room for a query and its variables at their limits, and the envelope around them.
            max_message_chars=limits.max_query_chars + limits.max_variables_chars + 64 * 1024,
        )
        self._ping_interval_s = limits.ping_interval_s
        self._scopes: dict[int, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, receive: Receive) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._init_timer)
            nursery.start_soon(self._pinger)
            nursery.start_soon(self._watch_shutdown)
            await self._read(receive)
            nursery.cancel_scope.cancel()

    async def _apply(self, actions: list[Action]) -> None:
        assert self._nursery is not None
        for action in actions:
            if isinstance(action, SendMessage):
                await self._socket.send_text(action.text)
            elif isinstance(action, StartOperation):
                scope = trio.CancelScope()
                self._scopes[action.operation.serial] = scope
                self._nursery.start_soon(self._run_operation, action.operation, scope)
            elif isinstance(action, StopOperation):
                stopped = self._scopes.pop(action.operation.serial, None)
                if stopped is not None:
                    stopped.cancel()
            else:
                await self._socket.close(action)
                self._nursery.cancel_scope.cancel()

    async def _read(self, receive: Receive) -> None:
        protocol = self._protocol
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self._socket.closed = True
                return
            if message["type"] != "websocket.receive":
                continue
            text = message.get("text")
            await self._apply(
                protocol.receive_bytes() if text is None else protocol.receive_text(text)
            )
            if protocol.closed:
                return

    async def _init_timer(self) -> None:
        await trio.sleep(CONNECTION_INIT_TIMEOUT_S)
        await self._apply(self._protocol.init_timed_out())

    async def _pinger(self) -> None:
        while True:
            await trio.sleep(self._ping_interval_s)
            await self._apply(self._protocol.keep_alive())

    async def _watch_shutdown(self) -> None:
        await self._shutdown.wait()
        await self._apply(self._protocol.shutdown("the engine is shutting down"))

    async def _run_operation(self, operation: Operation, scope: trio.CancelScope) -> None:
        service = self._service
        protocol = self._protocol
        # Each operation is a request of its own in the logs, as a POST /graphql would be.
        request_id = self._new_request_id()
        with scope:
            try:
                if service.is_subscription(operation.query, operation.operation_name):
                    async with service.subscribe(
                        operation.query,
                        operation.variables,
                        operation.operation_name,
                        request_id=request_id,
                    ) as results:
                        async for result in results:
                            await self._apply(protocol.result(operation, result))
                else:
                    result = await service.execute(
                        operation.query,
                        operation.variables,
                        operation.operation_name,
                        request_id=request_id,
                    )
                    await self._apply(protocol.result(operation, result))
            except (GraphQLRequestError, QueryRejected, EngineError) as exc:
                await self._apply(protocol.failed(operation, request_errors(exc)))
                return
            except Exception as exc:
                log.exception("graphql operation failed", operation_id=operation.id)
                await self._apply(protocol.failed(operation, request_errors(exc)))
                return
            finally:
                self._scopes.pop(operation.serial, None)
            await self._apply(protocol.completed(operation))
