"""Solution routes: every path outside the engine's own prefixes is dispatched to the scripts.

This surface speaks ASGI directly instead of going through Quart: it is the hot path of every
solution, and Quart's request and response objects, URL adapter and hooks cost about as much
CPU per request as the whole sandbox round trip.  Requests under the engine's prefixes
(``/engine``, ``/health``, ...) are handed to the Quart application unchanged.

Order (the original's, UPSTREAM_API §1.4): asset routes (GET and HEAD on an exact path, with
``ETag`` and ``If-None-Match``); then stream paths (GET and HEAD, exact: server-sent events,
see ``handlers.streams``); then the route table (exact, ``:param``, ``/*``; HEAD falls back to
GET); then 405 for a path routed under other methods; then ``GET /`` redirects to the landing
page; then 404.  Every answer carries ``x-request-id`` and errors are the JSON envelope, never a
traceback.  A WebSocket upgrade on any solution path goes to the stream transport, which
accepts it on a stream path and refuses it everywhere else.  Security headers, request limits,
rate limits and the caller's identity are the gate's (``handlers._gate``), in front of this
dispatcher.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import structlog

from engine.asset_text import content_type_header
from engine.assets import entity_tag, etag_matches
from engine.errors import EngineError
from engine.http_contract import (
    FormError,
    ParsedForm,
    anonymous_auth,
    build_request,
    error_envelope,
    parse_form,
)
from engine.invocation_host import AssetRoute
from engine.routing import MethodNotAllowed, RouteMatch, reserved_prefix_of
from engine.runtime import EngineRuntime
from engine.scripts import LoadedScript
from handlers import streams
from handlers._gate import caller_of
from handlers._responses import retry_after_headers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = structlog.get_logger("aiwebengine.http")

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_JSON = b"application/json"
_FRAMING_ALLOWANCE = 64 * 1024


class _TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        self.limit = limit


class SolutionDispatcher:
    """ASGI middleware: solution requests here, everything else to the wrapped app."""

    def __init__(self, app: ASGIApp, runtime: EngineRuntime) -> None:
        self._app = app
        self._runtime = runtime
        self._security = runtime.config.security
        self._websockets = streams.WebSocketTransport(runtime)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or reserved_prefix_of(scope["path"]) is not None:
            await self._app(scope, receive, send)
            return
        if kind == "websocket":
            await self._websockets.serve(scope, receive, send)
            return
        exchange = _Exchange(scope, receive, send, self._runtime.new_request_id())
        structlog.contextvars.bind_contextvars(request_id=exchange.request_id)
        try:
            await self._dispatch(exchange)
        except EngineError as exc:
            if not exchange.started:
                await exchange.engine_error(exc)
        except Exception:
            log.exception("unhandled error", path=exchange.path, method=exchange.method)
            if not exchange.started:
                await exchange.error(500, "INTERNAL_SERVER_ERROR", "Internal server error")
        finally:
            structlog.contextvars.clear_contextvars()

    async def _dispatch(self, exchange: _Exchange) -> None:
        runtime = self._runtime
        if not runtime.started:
            await exchange.error(
                503, "STARTING", "The engine is starting", headers=[(b"retry-after", b"1")]
            )
            return
        if exchange.method in ("GET", "HEAD"):
            asset_route = runtime.scripts.asset_route(exchange.path)
            if asset_route is not None:
                await self._serve_asset(exchange, asset_route)
                return
            stream_route = runtime.scripts.stream_route(exchange.path)
            if stream_route is not None:
                await streams.serve_sse(runtime, exchange, stream_route)
                return
        match, script = runtime.scripts.resolve(exchange.path, exchange.method)
        if isinstance(match, RouteMatch) and script is not None:
            await self._run_route(exchange, match, script)
        elif isinstance(match, MethodNotAllowed):
            allow = ", ".join(match.allowed).encode()
            await exchange.error(
                405, "METHOD_NOT_ALLOWED", "Method not allowed", headers=[(b"allow", allow)]
            )
        elif exchange.method in ("GET", "HEAD") and exchange.path == "/":
            await exchange.respond(
                307,
                [(b"location", b"/engine/installed"), (b"content-type", b"text/plain")],
                b"Redirecting to /engine/installed",
            )
        else:
            await exchange.error(404, "NOT_FOUND", "Resource not found")

    async def _serve_asset(self, exchange: _Exchange, route: AssetRoute) -> None:
        assets = self._runtime.assets
        info = await assets.info(route.script_uri, route.asset)
        if info is None:
            await exchange.error(404, "NOT_FOUND", f"Asset '{route.asset}' not found")
            return
        # Assets change without their paths changing: caches must ask again every time, and
        # the content digest makes asking cheap.
        headers = [
            (b"etag", entity_tag(info.sha256).encode()),
            (b"cache-control", b"no-cache"),
        ]
        if_none_match = exchange.header(b"if-none-match")
        if if_none_match and etag_matches(if_none_match, info.sha256):
            await exchange.respond(304, headers, b"")
            return
        body = b""
        if exchange.method == "GET":
            stored = await assets.get(route.script_uri, route.asset)
            info, body = stored.info, stored.content
            headers[0] = (b"etag", entity_tag(info.sha256).encode())
        headers.append((b"content-type", content_type_header(info.mimetype).encode("latin-1")))
        headers.append((b"content-length", str(info.size).encode()))
        await exchange.respond(200, headers, body)

    async def _run_route(
        self, exchange: _Exchange, match: RouteMatch, script: LoadedScript
    ) -> None:
        security = self._security
        content_type = exchange.header(b"content-type")
        is_form = content_type.split(";", 1)[0].strip().lower() in _FORM_TYPES
        limit = (
            security.max_upload_bytes + _FRAMING_ALLOWANCE
            if is_form
            else security.max_request_body_bytes
        )
        try:
            body = await exchange.read_body(limit)
        except _TooLarge as exc:
            message = (
                "File upload exceeds maximum size limit" if is_form else "Request body too large"
            )
            await exchange.error(
                413, "PAYLOAD_TOO_LARGE", message, details=f"limit: {exc.limit} bytes"
            )
            return
        try:
            form = (
                parse_form(content_type, body, max_upload_bytes=security.max_upload_bytes)
                if is_form
                else ParsedForm()
            )
        except FormError as exc:
            code = "PAYLOAD_TOO_LARGE" if exc.status == 413 else "BAD_REQUEST"
            await exchange.error(exc.status, code, exc.message)
            return
        script_request = build_request(
            path=exchange.path,
            method=exchange.method,
            raw_query=exchange.scope.get("query_string", b""),
            raw_headers=exchange.scope.get("headers", []),
            body=body,
            params=match.params,
            form=form,
            auth=anonymous_auth(),
        )
        # The gate identified the caller; route handlers run as the caller (§6.1), so host
        # APIs check its capabilities.
        caller = caller_of(exchange.scope)
        try:
            result = await self._runtime.scripts.invoke_route(
                match, script, script_request, exchange.request_id, user=caller.user
            )
        except EngineError as exc:
            await exchange.engine_error(exc)
            return
        headers = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in result.headers
        ]
        if result.status not in (204, 304):  # these never carry a body or its length
            headers.append((b"content-length", str(len(result.body)).encode()))
        await exchange.respond(result.status, headers, result.body)


class _Exchange:
    """One request and its single response, in ASGI terms."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.request_id = request_id
        self.method: str = scope["method"]
        raw = scope.get("raw_path")
        # Scripts see the path as sent, percent-encoding preserved, as on the original.
        self.path: str = (
            bytes(raw).split(b"?", 1)[0].decode("utf-8", "replace") if raw else scope["path"]
        )
        self.body_read = False
        self.started = False

    def header(self, name: bytes) -> str:
        for key, value in self.scope.get("headers", ()):
            if key.lower() == name:
                return bytes(value).decode("latin-1")
        return ""

    def _announces_body(self) -> bool:
        return bool(self.header(b"transfer-encoding")) or self.header(b"content-length") not in (
            "",
            "0",
        )

    async def read_body(self, limit: int) -> bytes:
        declared = self.header(b"content-length")
        if declared.isdigit() and int(declared) > limit:
            raise _TooLarge(limit)
        if not self._announces_body():
            self.body_read = True
            return b""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _TooLarge(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self.body_read = True
        return b"".join(chunks)

    async def receive(self) -> Message:
        return await self._receive()

    async def start(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Send the status and headers; the body follows with :meth:`send_body`."""
        head = list(headers)
        head.append((b"x-request-id", self.request_id.encode()))
        if not self.body_read and self._announces_body():
            # An unread body would be taken for the next request on a kept-alive connection.
            head.append((b"connection", b"close"))
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": head})

    async def send_body(self, body: bytes, *, more: bool = False) -> None:
        # A HEAD answer states the length of the body it leaves out.
        payload = b"" if self.method == "HEAD" else body
        await self._send({"type": "http.response.body", "body": payload, "more_body": more})

    async def respond(
        self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes
    ) -> None:
        await self.start(status, headers)
        await self.send_body(body)

    async def engine_error(self, exc: EngineError) -> None:
        headers = [
            (name.lower().encode(), value.encode())
            for name, value in retry_after_headers(exc).items()
        ]
        await self.error(exc.status, exc.code, exc.message, details=exc.details, headers=headers)

    async def error(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        envelope = error_envelope(
            status=status,
            code=code,
            message=message,
            request_id=self.request_id,
            path=self.path,
            method=self.method,
            details=details,
        )
        body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
        head = [
            (b"content-type", _JSON),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ]
        await self.respond(status, head, body)


def install(app: Any, runtime: EngineRuntime) -> None:
    """Put the dispatcher in front of the Quart application's ASGI entry."""
    app.asgi_app = SolutionDispatcher(app.asgi_app, runtime)
