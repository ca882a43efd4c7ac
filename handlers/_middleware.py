"""Cross-cutting request handling on the Quart application: request ids, the caller the gate
identified (``g.caller``, ``g.user``), the door of ``/engine``, and the last line of defence
that turns any unexpected exception into a JSON 500 without a traceback.

The door of ``/engine`` (until login brings sessions): production needs the admin token on
every endpoint but the public ones (401 without, or with a wrong one); development lets loopback
callers in without a token, as anonymous callers with the development profile's capabilities,
and asks the token of everyone else.  Behind the door each endpoint checks its own capability
(``handlers._access``).  Every use of the admin token on ``/engine``, and every refusal at the
door, is an audit event."""

from __future__ import annotations

import structlog
from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from engine.audit import ALLOWED, DENIED
from engine.errors import EngineError
from engine.routing import reserved_prefix_of
from engine.runtime import EngineRuntime
from handlers import _access
from handlers._gate import caller_of
from handlers._responses import (
    close_if_body_unread,
    engine_error_envelope,
    envelope_response,
    management_error,
)
from security import AuthMethod, LimitExceeded, TokenVerdict, check_admin_token, is_loopback_host

log = structlog.get_logger("aiwebengine.http")

# Public even when the admin token is required: the landing page and the script types.
_PUBLIC_ENGINE_PATHS = frozenset(
    {
        "/engine/installed",
        "/engine/types/aiwebengine.d.ts",
        "/engine/types/v0.1.0/aiwebengine.d.ts",
    }
)


def _served_on_loopback() -> bool:
    server = request.scope.get("server")
    if not server:
        return True  # a Unix socket or an in-process call: nothing reaches it from outside
    return is_loopback_host(str(server[0]))


def _is_engine_path(path: str) -> bool:
    return reserved_prefix_of(path) == "/engine"


def install(app: QuartTrio, runtime: EngineRuntime) -> None:
    security = runtime.config.security
    expected = security.admin_token.reveal() if security.admin_token is not None else None
    production = runtime.config.is_production

    @app.before_request
    async def admit() -> Response | None:
        refusal = await assign_request_id()
        return None if refusal is None else close_if_body_unread(refusal)

    async def assign_request_id() -> Response | None:
        # The engine always mints its own id; an incoming x-request-id is not trusted.
        g.request_id = runtime.new_request_id()
        g.caller = caller_of(request.scope)
        g.user = g.caller.user
        structlog.contextvars.bind_contextvars(request_id=g.request_id)
        if not runtime.started:
            return envelope_response(
                503, "STARTING", "The engine is starting", headers={"Retry-After": "1"}
            )
        if _is_engine_path(request.path) and request.path not in _PUBLIC_ENGINE_PATHS:
            return await engine_door()
        return None

    async def engine_door() -> Response | None:
        target = _access.request_target()
        if g.user.method is AuthMethod.ADMIN_TOKEN:
            await _access.audit("auth.admin_token", outcome=ALLOWED, target=target)
            return None
        # Development leaves /engine open only on loopback; anywhere else, and always in
        # production, the admin token is required.  `serve` refuses a non-loopback bind
        # without a token, but another launcher (hypercorn --bind) might not.
        required = production or not _served_on_loopback()
        if required and expected is None:
            await _access.audit(
                "access.denied", outcome=DENIED, target=target, detail={"reason": "no admin token"}
            )
            return management_error(
                403,
                "Forbidden",
                message="without an admin token the /engine API answers only on a "
                "loopback address; set AIWEBENGINE_SECURITY__ADMIN_TOKEN",
            )
        verdict = check_admin_token(
            request.headers.get("authorization"), expected=expected, required=required
        )
        if verdict is TokenVerdict.MISSING:
            await _access.audit(
                "access.denied",
                outcome=DENIED,
                target=target,
                detail={"reason": "admin token required"},
            )
            return management_error(
                401, "Unauthorized", message="an admin bearer token is required"
            )
        if verdict is TokenVerdict.INVALID:
            await _access.audit("auth.admin_token", outcome=DENIED, target=target)
            return management_error(401, "Unauthorized", message="the bearer token is not valid")
        return None

    @app.after_request
    async def stamp(response: Response) -> Response:
        request_id = getattr(g, "request_id", None)
        if request_id:
            response.headers["x-request-id"] = request_id
        structlog.contextvars.clear_contextvars()
        return response

    _access.install(app)

    @app.errorhandler(LimitExceeded)
    async def over_limit(exc: LimitExceeded) -> Response:
        code = "BAD_REQUEST" if exc.status == 400 else "REQUEST_TOO_LARGE"
        if _is_engine_path(request.path):
            response = management_error(exc.status, str(exc), code=code, field=exc.field)
        else:
            response = envelope_response(exc.status, code, str(exc))
        return close_if_body_unread(response)

    @app.errorhandler(EngineError)
    async def engine_error(exc: EngineError) -> Response:
        if _is_engine_path(request.path):
            return management_error(exc.status, exc.message, code=exc.code)
        return engine_error_envelope(exc)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 404:
            # Unknown engine paths answer like unknown solution paths (UPSTREAM_API §1.4).
            return envelope_response(404, "NOT_FOUND", "Resource not found")
        name = (exc.name or "error").upper().replace(" ", "_")
        if _is_engine_path(request.path):
            response = management_error(status, exc.name or "error")
        else:
            response = envelope_response(status, name, exc.name or "error")
        allowed = getattr(exc, "valid_methods", None)
        if status == 405 and allowed:
            response.headers["Allow"] = ", ".join(sorted(allowed))
        return response

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error", path=request.path, method=request.method)
        if _is_engine_path(request.path):
            return management_error(500, "Internal server error", code="INTERNAL_SERVER_ERROR")
        return envelope_response(500, "INTERNAL_SERVER_ERROR", "Internal server error")
