"""The gate every request passes first: request limits, the client's address, its identity, the
rate limit of its surface; and the security headers every response leaves with.

It is plain ASGI and the outermost layer, in front of the solution dispatcher and the Quart
application, so that one place decides these for every surface, WebSocket upgrades included.
What it learns about the caller is left in the scope as a :class:`Caller` (:func:`caller_of`):
the Quart hooks copy it to ``g`` for the ``/engine`` blueprints; the plain-ASGI surfaces read it
from their scope and pass the identity on explicitly.

Decisions, and why:

* **Identity once, here.**  Today there are two identities: anonymous, and the holder of the
  admin token (``Authorization: Bearer <token>``), an Administrator.  A bearer token that is not
  the admin token leaves the caller anonymous here -- on a solution route it may be the
  script's own scheme -- and only ``/engine`` refuses it (``handlers._middleware``).  Sessions
  plug in at :meth:`Gate.identify`.
* **Limits before anything reads the request:** a request target over 8 KiB is 414, more than
  100 header fields or a field over 8190 bytes (32 KiB in all) is 431.  Body size and JSON depth
  need the body and are checked where it is read (``handlers._body``).
* **Rate limits per surface and client** (``[rate_limits]``): token buckets keyed by the client
  address (an IPv6 client by its /64), by the user once users exist.  Administrators are not
  limited, as PocketBase exempts its superusers: their requests are not the abuse limits exist
  for, and a deploy of many scripts must not trip them.  A refusal is 429 with ``Retry-After``.
  The client address is the socket's peer unless that peer is a trusted proxy
  (``security.trusted_proxies``), whose ``X-Forwarded-For`` then names it.
* **Security headers are defaults**: a response that sets one of them itself keeps its own, so
  a script's headers always win on its responses.  HTML from the engine's own paths gets the
  page policy (scripts only from the engine itself, no framing); everything else a policy that
  only forbids framing, since a solution's HTML may need inline script.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Final

import attrs
import structlog

from engine.http_contract import error_envelope
from engine.routing import reserved_prefix_of
from engine.runtime import EngineRuntime
from handlers._responses import iso_now
from security import (
    Decision,
    LimitExceeded,
    RateLimiter,
    TokenVerdict,
    UserContext,
    check_admin_token,
    check_headers,
    check_url_length,
    client_ip,
    ip_bucket_key,
    merge_headers,
    security_headers,
)
from security.ratelimit import AUTH, ENGINE, GRAPHQL, SOLUTIONS, STREAMS

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = structlog.get_logger("aiwebengine.http")

CALLER_KEY: Final = "aiwebengine.caller"
# A client that keeps hitting its limit is audited once per surface in this interval.
TRIP_AUDIT_INTERVAL_S: Final = 60.0
_MAX_TRIP_KEYS: Final = 10_000
_SURFACE_OF_PREFIX: Final = {"/engine": ENGINE, "/auth": AUTH, "/graphql": GRAPHQL}


@attrs.frozen
class Caller:
    """Who sent a request, as the gate established it."""

    user: UserContext
    client_ip: str


def peer_of(scope: Mapping[str, object]) -> str:
    client = scope.get("client")
    return str(client[0]) if isinstance(client, list | tuple) and client else ""


def caller_of(scope: Mapping[str, object]) -> Caller:
    """The caller the gate left in ``scope``; anonymous if the gate did not run (an
    application assembled without it, as some tests do)."""
    caller = scope.get(CALLER_KEY)
    if isinstance(caller, Caller):
        return caller
    return Caller(UserContext.anonymous(), peer_of(scope))


def _header(scope: Scope, name: bytes) -> str | None:
    values = [bytes(v).decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == name]
    # Several X-Forwarded-For fields are one list (RFC 9110 §5.3).
    return ", ".join(values) if values else None


def _raw_path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    return bytes(raw).split(b"?", 1)[0].decode("utf-8", "replace") if raw else str(scope["path"])


def _announces_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    return _header(scope, b"transfer-encoding") is not None or length not in (None, "", "0")


def _defaults(*, engine_page: bool, hsts: bool) -> list[tuple[str, str]]:
    # Lowercase names: HTTP/2 refuses any other spelling.
    return [
        (name.lower(), value)
        for name, value in security_headers(engine_page=engine_page, hsts=hsts)
    ]


class Gate:
    """ASGI middleware in front of every surface; see the module's docstring."""

    def __init__(self, app: ASGIApp, runtime: EngineRuntime) -> None:
        self._app = app
        self._runtime = runtime
        config = runtime.config
        token = config.security.admin_token
        self._admin_token = token.reveal() if token is not None else None
        self._trusted_proxies = config.security.trusted_proxy_networks()
        self.limiter = (
            RateLimiter(config.rate_limits.limits()) if config.rate_limits.enabled else None
        )
        self._last_trip: OrderedDict[tuple[str, str], float] = OrderedDict()
        hsts = config.security.hsts
        self._page_headers = _defaults(engine_page=True, hsts=hsts)
        self._other_headers = _defaults(engine_page=False, hsts=hsts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        engine_path = reserved_prefix_of(scope["path"]) is not None
        if kind == "http":
            send = self._with_security_headers(send, engine_path)
        try:
            self.check_limits(scope)
        except LimitExceeded as exc:
            await self._refuse(scope, receive, send, exc.status, "REQUEST_TOO_LARGE", str(exc))
            return
        caller = self.identify(scope)
        scope[CALLER_KEY] = caller
        surface = self.surface_of(scope)
        if surface is not None and self.limiter is not None and not caller.user.is_admin:
            key = (
                f"user:{caller.user.user_id}"
                if caller.user.user_id
                else ip_bucket_key(caller.client_ip)
            )
            decision = self.limiter.check(surface, key)
            if not decision.allowed:
                request_id = await self._audit_trip(scope, caller, surface, key, decision)
                await self._refuse(
                    scope,
                    receive,
                    send,
                    429,
                    "RATE_LIMITED",
                    "Too many requests; retry after the time in Retry-After",
                    retry_after=decision.retry_after_header,
                    request_id=request_id,
                )
                return
        await self._app(scope, receive, send)

    # -- the decisions --------------------------------------------------------------------

    def check_limits(self, scope: Scope) -> None:
        """Raise :class:`LimitExceeded` for a request target or headers over the limits."""
        raw = scope.get("raw_path") or scope["path"].encode("utf-8")
        query = scope.get("query_string") or b""
        check_url_length(bytes(raw) + (b"?" + bytes(query) if query else b""))
        check_headers(scope.get("headers", ()))

    def identify(self, scope: Scope) -> Caller:
        """Who is calling: the admin-token holder or anonymous (sessions will plug in here)."""
        address = client_ip(
            peer_of(scope), _header(scope, b"x-forwarded-for"), self._trusted_proxies
        )
        verdict = check_admin_token(
            _header(scope, b"authorization"), expected=self._admin_token, required=True
        )
        if self._admin_token is not None and verdict is TokenVerdict.ALLOWED:
            return Caller(UserContext.admin_token(), address)
        return Caller(UserContext.anonymous(), address)

    def surface_of(self, scope: Scope) -> str | None:
        """The rate-limit surface of a request; ``None`` for the unlimited ones (health)."""
        if scope["type"] == "websocket":
            return STREAMS
        prefix = reserved_prefix_of(scope["path"])
        if prefix is not None:
            return _SURFACE_OF_PREFIX.get(prefix)
        runtime = self._runtime
        if (
            scope["method"] == "GET"
            and runtime.started
            and runtime.scripts.stream_route(_raw_path(scope)) is not None
        ):
            return STREAMS
        return SOLUTIONS

    # -- answers --------------------------------------------------------------------------

    async def _audit_trip(
        self, scope: Scope, caller: Caller, surface: str, key: str, decision: Decision
    ) -> str:
        """Record a rate-limit trip (at most once per interval per client and surface);
        returns the request id the refusal carries."""
        runtime = self._runtime
        request_id = runtime.new_request_id()
        now = time.monotonic()
        bucket = (surface, key)
        last = self._last_trip.get(bucket)
        if last is not None and now - last < TRIP_AUDIT_INTERVAL_S:
            return request_id
        self._last_trip[bucket] = now
        self._last_trip.move_to_end(bucket)
        if len(self._last_trip) > _MAX_TRIP_KEYS:
            self._last_trip.popitem(last=False)
        if runtime.started:
            await runtime.audit.record(
                "rate_limit.trip",
                outcome="denied",
                user=caller.user,
                client_ip=caller.client_ip,
                request_id=request_id,
                target=surface,
                detail={
                    "path": _raw_path(scope)[:200],
                    "retryAfterS": round(decision.retry_after_s, 3),
                },
            )
        log.warning("rate limit tripped", surface=surface, client=caller.client_ip)
        return request_id

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: str | None = None,
        request_id: str | None = None,
    ) -> None:
        request_id = request_id or self._runtime.new_request_id()
        path = _raw_path(scope)
        if reserved_prefix_of(scope["path"]) == "/engine":
            payload: dict[str, Any] = {"error": message, "code": code, "timestamp": iso_now()}
        else:
            payload = error_envelope(
                status=status,
                code=code,
                message=message,
                request_id=request_id,
                path=path,
                method=str(scope.get("method", "GET")),
            )
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
        ]
        if _announces_body(scope):
            # The body was not read: it would be taken for the next request on the connection.
            headers.append((b"connection", b"close"))
        if retry_after is not None:
            headers.append((b"retry-after", retry_after.encode()))
        if scope["type"] == "websocket":
            await self._refuse_websocket(scope, receive, send, status, headers, body)
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _refuse_websocket(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        if "websocket.http.response" not in scope.get("extensions", {}):
            # Without the extension a close before the handshake is all there is (a 403).
            await send({"type": "websocket.close", "code": 1008})
            return
        head = [header for header in headers if header[0] != b"connection"]
        await send({"type": "websocket.http.response.start", "status": status, "headers": head})
        await send({"type": "websocket.http.response.body", "body": body})

    def _with_security_headers(self, send: Send, engine_path: bool) -> Send:
        page_headers, other_headers = self._page_headers, self._other_headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                own = [
                    (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
                    for name, value in message.get("headers", ())
                ]
                page = engine_path and any(
                    name.lower() == "content-type" and value.lower().startswith("text/html")
                    for name, value in own
                )
                merged = merge_headers(own, page_headers if page else other_headers)
                message = {
                    **message,
                    "headers": [
                        (name.encode("latin-1"), value.encode("latin-1")) for name, value in merged
                    ],
                }
            await send(message)

        return send_with_headers


def install(app: Any, runtime: EngineRuntime) -> Gate:
    """Put the gate in front of everything (call after every other ASGI layer is installed)."""
    gate = Gate(app.asgi_app, runtime)
    app.asgi_app = gate
    return gate
