"""Stream transports: the subscribers of script streams over SSE and over WebSocket.

Both transports take a :class:`~engine.streams.Subscription` from the runtime's hub and move
its items to one client; the hub decides who receives what.  The solution dispatcher calls
:func:`serve_sse` for ``GET``/``HEAD`` on a stream path and :class:`WebSocketTransport` for a
WebSocket upgrade on any solution path; :func:`make_blueprint` mounts the engine's own stream
``/engine/script_updates`` on the Quart application, behind the ``/engine`` door and
``ReadScripts``.  The caller the gate identified is in each connection's scope
(``handlers._gate.caller_of``): WebSocket message handlers run as that caller, customization
functions as the engine (§6.1, ``security.runs_as``).

Decisions, and why:

* **Metadata before the first byte.**  Connection metadata (the customization function's
  object, else the query parameters) is computed and the subscription registered before the
  response starts, so a failure is still a plain HTTP answer (500 ``text/plain`` for a failing
  customization function, exactly as the original; 503 JSON for a full stream) and a client
  that has the response headers is known to be subscribed.
* **A disconnect ends the subscription at once.**  An SSE response watches ``receive`` for
  ``http.disconnect`` in its own task; otherwise a client that left would only be noticed at the
  next send, and an idle stream might never send.
* **WebSocket failures are close codes, not HTTP statuses.**  Browsers do not expose the HTTP
  status of a refused handshake, so a refused *stream* connection is accepted and then closed
  with a code and a readable reason: 1008 (policy) for a full stream or a failing customization
  function, 1013 (try again later) for an overloaded engine, 1011 for any other engine error.
  A WebSocket upgrade on a path that is no stream is refused before the handshake with an HTTP
  404 (via the ``websocket.http.response`` extension where the server offers it, otherwise a
  plain close, which servers answer with 403).
* **Ending a WebSocket:** 1001 when the engine shuts down, 1000 with the reason when the stream
  was removed (its script deleted or no longer registering it: the end is deliberate, there is
  nothing to reconnect to), 1008 when the client fell too far behind, 1009 for an incoming
  message over ``streams.max_message_bytes``, 1003 for a binary message (streams speak text),
  1011 after ``streams.max_handler_errors`` consecutive failures of the script's message
  handler.  Text messages on a stream without a message handler are ignored, so clients may
  send application-level pings to any stream.
* **Incoming messages are handled one at a time, in order.**  The next frame is read only after
  the handler answered, so a client cannot queue unbounded work: the server's receive queue
  fills and TCP pushes back.
"""

from __future__ import annotations

import itertools
import json
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import aclosing
from typing import Any, Final, Protocol

import attrs
import structlog
import trio
from quart import Blueprint, Response, request

from engine.errors import EngineError
from engine.http_contract import ParsedForm, anonymous_auth, build_request, error_envelope
from engine.runtime import EngineRuntime
from engine.stream_api import SCRIPT_UPDATES_PATH, StreamCustomizationFailed, StreamRoute
from engine.streams import StreamClosed, StreamEvent, StreamFull, Subscription
from handlers._access import requires
from handlers._gate import caller_of
from handlers.sse import sse_comment, sse_event
from security import Capability, UserContext

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = structlog.get_logger("aiwebengine.streams")

SSE_HEADERS: Final = (
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    # nginx and similar proxies buffer responses unless told otherwise.
    (b"x-accel-buffering", b"no"),
)
# A full stream stays full until someone leaves; there is no better estimate than a short wait.
STREAM_FULL_RETRY_AFTER_S: Final = 5
KEEP_ALIVE: Final = sse_comment("keep-alive")

# WebSocket close codes (RFC 6455 §7.4.1, 1013 from the IANA registry).
NORMAL_CLOSURE: Final = 1000
GOING_AWAY: Final = 1001
UNSUPPORTED_DATA: Final = 1003
POLICY_VIOLATION: Final = 1008
MESSAGE_TOO_BIG: Final = 1009
INTERNAL_ERROR: Final = 1011
TRY_AGAIN_LATER: Final = 1013
# A close frame's payload is at most 125 bytes, two of them the code.
MAX_CLOSE_REASON_BYTES: Final = 123


# -- the pure parts ---------------------------------------------------------------------------


@attrs.frozen
class Close:
    """Close a WebSocket with ``code``; ``reason`` is already short enough for a close frame."""

    code: int
    reason: str

    @classmethod
    def of(cls, code: int, reason: str) -> Close:
        return cls(code, close_reason(reason))


def close_reason(text: str) -> str:
    """``text`` cut to what fits a close frame, never in the middle of a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return text
    cut = encoded[: MAX_CLOSE_REASON_BYTES - 3].decode("utf-8", "ignore")
    return cut + "..."


def stream_error_text(reason: str) -> str:
    """The data of the final SSE event, as the original sends it."""
    return json.dumps({"error": f"Stream error: {reason}"})


def close_for_end(closed: StreamClosed) -> Close:
    """How a WebSocket ends when the hub ends its subscription."""
    if closed.code == "shutdown":
        return Close.of(GOING_AWAY, closed.reason)
    if closed.code == "lagging":
        return Close.of(POLICY_VIOLATION, f"Stream error: {closed.reason}")
    return Close.of(NORMAL_CLOSURE, closed.reason)


def close_for_refusal(error: EngineError) -> Close:
    """How a WebSocket that could not be subscribed is closed right after its handshake."""
    if isinstance(error, StreamFull | StreamCustomizationFailed):
        return Close.of(POLICY_VIOLATION, error.message)
    if error.status == 503:
        return Close.of(TRY_AGAIN_LATER, error.message)
    return Close.of(INTERNAL_ERROR, error.message)


class IncomingPolicy:
    """What to do with a client's WebSocket messages; one per connection, no I/O.

    ``check_*`` answer a :class:`Close` for a message the connection must not take, ``None``
    for one to hand to the script.  ``handler_failed`` counts consecutive failures and answers a
    :class:`Close` when they reach the limit; ``handler_succeeded`` resets the count.
    """

    def __init__(self, *, max_message_bytes: int, max_handler_errors: int) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_handler_errors = max_handler_errors
        self.consecutive_errors = 0

    def check_text(self, text: str) -> Close | None:
        # Each character is at least one byte: only a borderline message needs encoding.
        if len(text) > self.max_message_bytes or (
            len(text) * 4 > self.max_message_bytes
            and len(text.encode("utf-8", "surrogatepass")) > self.max_message_bytes
        ):
            return Close.of(MESSAGE_TOO_BIG, f"Message larger than {self.max_message_bytes} bytes")
        return None

    def check_bytes(self) -> Close:
        return Close.of(UNSUPPORTED_DATA, "Binary messages are not accepted; send text")

    def handler_failed(self, message: str) -> Close | None:
        self.consecutive_errors += 1
        if self.consecutive_errors >= self.max_handler_errors:
            return Close.of(
                INTERNAL_ERROR,
                f"Message handler failed {self.consecutive_errors} times in a row: {message}",
            )
        return None

    def handler_succeeded(self) -> None:
        self.consecutive_errors = 0


async def sse_frames(
    subscription: Subscription, *, heartbeat_s: float, last_event_id: str | None = None
) -> AsyncGenerator[bytes, None]:
    """The bytes of an SSE response for ``subscription``, ending after the hub ends it.

    Every message is an unnamed event with its id; a comment keeps an idle connection alive
    every ``heartbeat_s``; the hub's end is a last unnamed event ``{"error": "Stream error:
    ..."}``.  A client that asked to resume and was not resumed gets a ``missed`` event first:
    whether its id is older than the replay buffer or unknown here (from before a restart, from
    another instance), messages may have been lost and the client should reload its state.
    """
    if last_event_id and not subscription.resumed:
        yield sse_event(
            "missed",
            {
                "lastEventId": last_event_id,
                "message": "Messages published since this id are no longer available",
            },
        )
    while True:
        # No yield inside the cancel scope: a generator must not suspend inside one.
        item: StreamEvent | StreamClosed | None = None
        with trio.move_on_after(heartbeat_s):
            item = await subscription.receive()
        if item is None:
            yield KEEP_ALIVE
        elif isinstance(item, StreamClosed):
            yield sse_event(None, stream_error_text(item.reason))
            return
        else:
            yield sse_event(None, item.data, event_id=item.id)


# -- SSE --------------------------------------------------------------------------------------


class HttpExchange(Protocol):
    """The part of one HTTP request/response the SSE transport needs from the dispatcher."""

    scope: Scope
    request_id: str
    path: str
    method: str

    def header(self, name: bytes) -> str: ...

    async def receive(self) -> Message: ...

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...

    async def send_body(self, body: bytes, *, more: bool = False) -> None: ...

    async def respond(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None: ...

    async def error(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: str | None = None,
        headers: list[tuple[bytes, bytes]] = ...,
    ) -> None: ...


def stream_request(scope: Scope, path: str) -> dict[str, Any]:
    """The ``request`` a customization function sees for a connection to ``path``."""
    return build_request(
        path=path,
        method="GET",
        raw_query=scope.get("query_string", b""),
        raw_headers=scope.get("headers", []),
        body=b"",
        params={},
        form=ParsedForm(),
        auth=anonymous_auth(),
    )


async def serve_sse(runtime: EngineRuntime, exchange: HttpExchange, route: StreamRoute) -> None:
    """Answer ``GET``/``HEAD`` on a stream path.  Engine errors other than the two answered
    here propagate to the dispatcher, which maps them to the JSON envelope."""
    if exchange.method == "HEAD":
        await exchange.respond(200, list(SSE_HEADERS), b"")
        return
    try:
        metadata = await runtime.scripts.stream_metadata(
            route, stream_request(exchange.scope, exchange.path), exchange.request_id
        )
    except StreamCustomizationFailed as exc:
        body = exc.message.encode()
        await exchange.respond(
            500,
            [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
            body,
        )
        return
    last_event_id = exchange.header(b"last-event-id") or None
    try:
        subscription = runtime.streams.subscribe(route.path, metadata, last_event_id=last_event_id)
    except StreamFull as exc:
        retry = str(STREAM_FULL_RETRY_AFTER_S).encode()
        await exchange.error(503, exc.code, exc.message, headers=[(b"retry-after", retry)])
        return
    heartbeat_s = runtime.config.streams.heartbeat_s
    with subscription:
        await exchange.start(200, list(SSE_HEADERS))
        ended = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, exchange.receive, nursery.cancel_scope)
            frames = sse_frames(subscription, heartbeat_s=heartbeat_s, last_event_id=last_event_id)
            async with aclosing(frames):
                async for chunk in frames:
                    await exchange.send_body(chunk, more=True)
            ended = True
            nursery.cancel_scope.cancel()
    if ended:
        await exchange.send_body(b"", more=False)


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass  # a request body nobody asked for
    scope.cancel()


def make_blueprint(runtime: EngineRuntime) -> Blueprint:
    """``GET /engine/script_updates``: the hub's script change messages as SSE."""
    blueprint = Blueprint("engine_streams", __name__, url_prefix="/engine")

    @blueprint.get("/script_updates")
    @requires(Capability.ReadScripts)
    async def script_updates() -> Response:
        last_event_id = request.headers.get("Last-Event-ID") or None
        # StreamFull is an EngineError: the /engine error handler answers it.
        subscription = runtime.streams.subscribe(SCRIPT_UPDATES_PATH, last_event_id=last_event_id)
        body = _subscription_body(subscription, runtime.config.streams.heartbeat_s, last_event_id)
        # A body that is never iterated (the client left before the first byte) runs no
        # finally clause: release the subscription when the body is dropped.
        weakref.finalize(body, subscription.close)
        response = Response(body, content_type="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        response.timeout = None
        return response

    return blueprint


async def _subscription_body(
    subscription: Subscription, heartbeat_s: float, last_event_id: str | None
) -> AsyncIterator[bytes]:
    with subscription:
        frames = sse_frames(subscription, heartbeat_s=heartbeat_s, last_event_id=last_event_id)
        async with aclosing(frames):
            async for chunk in frames:
                yield chunk


# -- WebSocket --------------------------------------------------------------------------------


class WebSocketSender:
    """The sending side of one accepted WebSocket: one frame at a time, nothing after close."""

    def __init__(self, send: Send) -> None:
        self._send = send
        # Frames are compressed in order (permessage-deflate): never interleave two sends.
        self._lock = trio.Lock()
        self.closed = False

    async def send_text(self, text: str) -> None:
        async with self._lock:
            if not self.closed:
                await self._send({"type": "websocket.send", "text": text})

    async def close(self, close: Close) -> None:
        if self.closed:
            return
        self.closed = True
        async with self._lock:
            await self._send(
                {"type": "websocket.close", "code": close.code, "reason": close.reason}
            )


class WebSocketTransport:
    """Serves every WebSocket upgrade on a solution path."""

    def __init__(self, runtime: EngineRuntime) -> None:
        self._runtime = runtime
        self._ids = itertools.count(1)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self._runtime
        request_id = runtime.new_request_id()
        path = _raw_path(scope)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            if (await receive())["type"] != "websocket.connect":
                return
            if not runtime.started:
                await reject_websocket(
                    scope, send, 503, "STARTING", "The engine is starting", request_id
                )
                return
            route = runtime.scripts.stream_route(path)
            if route is None:
                await reject_websocket(
                    scope, send, 404, "NOT_FOUND", "No WebSocket stream at this path", request_id
                )
                return
            try:
                metadata = await runtime.scripts.stream_metadata(
                    route, stream_request(scope, path), request_id
                )
                subscription = runtime.streams.subscribe(route.path, metadata)
            except EngineError as exc:
                await send({"type": "websocket.accept"})
                await WebSocketSender(send).close(close_for_refusal(exc))
                return
            with subscription:
                await send({"type": "websocket.accept"})
                await self._run(
                    route, subscription, receive, WebSocketSender(send), caller_of(scope).user
                )
        finally:
            structlog.contextvars.clear_contextvars()

    async def _run(
        self,
        route: StreamRoute,
        subscription: Subscription,
        receive: Receive,
        socket: WebSocketSender,
        user: UserContext,
    ) -> None:
        connection_id = f"ws_{next(self._ids)}"
        settings = self._runtime.config.streams
        policy = IncomingPolicy(
            max_message_bytes=settings.max_message_bytes,
            max_handler_errors=settings.max_handler_errors,
        )
        async with trio.open_nursery() as nursery:

            async def close(close: Close) -> None:
                await socket.close(close)
                nursery.cancel_scope.cancel()

            async def forward() -> None:
                while True:
                    item = await subscription.receive()
                    if isinstance(item, StreamClosed):
                        await close(close_for_end(item))
                        return
                    await socket.send_text(item.data)

            async def read() -> None:
                while True:
                    message = await receive()
                    if message["type"] == "websocket.disconnect":
                        socket.closed = True
                        nursery.cancel_scope.cancel()
                        return
                    if message["type"] != "websocket.receive":
                        continue
                    text = message.get("text")
                    refusal = policy.check_bytes() if text is None else policy.check_text(text)
                    if refusal is None and text is not None:
                        refusal = await self._handle(
                            route.path, text, connection_id, subscription, socket, policy, user
                        )
                    if refusal is not None:
                        await close(refusal)
                        return

            nursery.start_soon(forward)
            nursery.start_soon(read)

    async def _handle(
        self,
        path: str,
        text: str,
        connection_id: str,
        subscription: Subscription,
        socket: WebSocketSender,
        policy: IncomingPolicy,
        user: UserContext,
    ) -> Close | None:
        """Hand one client message to the stream's handler; a :class:`Close` when the
        connection must end."""
        scripts = self._runtime.scripts
        # Looked up per message: a re-init may have added, changed or removed the handler.
        route = scripts.stream_route(path)
        if route is None or route.on_message is None:
            return None
        request_id = self._runtime.new_request_id()
        try:
            reply = await scripts.websocket_message(
                route, text, connection_id, subscription.metadata, request_id, user
            )
        except EngineError as exc:
            log.warning(
                "websocket message handler failed",
                path=path,
                connection_id=connection_id,
                handler_request_id=request_id,
                error=exc.message,
                details=exc.details,
            )
            return policy.handler_failed(exc.message)
        except Exception:
            # An engine bug, not the script's: logged with its traceback, counted like a
            # failure so that a connection that keeps hitting it ends.
            log.exception(
                "websocket message handling crashed",
                path=path,
                connection_id=connection_id,
                handler_request_id=request_id,
            )
            return policy.handler_failed("Internal server error")
        policy.handler_succeeded()
        if reply:
            await socket.send_text(reply)
        return None


async def reject_websocket(
    scope: Scope, send: Send, status: int, code: str, message: str, request_id: str
) -> None:
    """Refuse a WebSocket upgrade with an HTTP answer (the JSON envelope) where the server
    supports it; otherwise with a close before the handshake, which servers answer with 403."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": POLICY_VIOLATION})
        return
    envelope = error_envelope(
        status=status,
        code=code,
        message=message,
        request_id=request_id,
        path=_raw_path(scope),
        method="GET",
    )
    body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
                (b"x-content-type-options", b"nosniff"),
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})


def _raw_path(scope: Scope) -> str:
    # Scripts register paths as clients send them, percent-encoding preserved.
    raw = scope.get("raw_path")
    return bytes(raw).split(b"?", 1)[0].decode("utf-8", "replace") if raw else str(scope["path"])
