"""Solution routes: every path no other surface claims is dispatched to the scripts.

Order (the original's, UPSTREAM_API §1.4): unknown ``/engine/*`` paths are 404 JSON; then the
route table (exact, ``:param``, ``/*``; HEAD falls back to GET); then 405 for a path routed under
other methods; then ``GET /`` redirects to the landing page; then 404.
"""

from __future__ import annotations

from quart import Blueprint, Response, g, redirect, request

from engine.errors import EngineError
from engine.http_contract import (
    FormError,
    ParsedForm,
    anonymous_auth,
    build_request,
    parse_form,
)
from engine.routing import MethodNotAllowed, RouteMatch, reserved_prefix_of
from engine.runtime import EngineRuntime
from engine.scripts import LoadedScript
from handlers._body import PayloadTooLarge, read_body
from handlers._responses import (
    close_if_body_unread,
    engine_error_envelope,
    envelope_response,
)

# Every method a script may register; OPTIONS is the script's to answer, not the framework's.
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def raw_path() -> str:
    """The path as sent, percent-encoding preserved (scripts see it raw, as upstream)."""
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes | bytearray) and raw:
        return bytes(raw).split(b"?", 1)[0].decode("utf-8", "replace")
    return request.path


def make_blueprint(runtime: EngineRuntime) -> Blueprint:
    blueprint = Blueprint("solutions", __name__)
    security = runtime.config.security

    async def dispatch(path: str) -> Response:
        del path  # the raw path is used instead of Werkzeug's decoded one
        target = raw_path()
        method = request.method
        if reserved_prefix_of(target) == "/engine":
            return envelope_response(404, "NOT_FOUND", "Resource not found")
        match, script = runtime.scripts.resolve(target, method)
        if isinstance(match, RouteMatch) and script is not None:
            return await run_route(match, script, target)
        if isinstance(match, MethodNotAllowed):
            response = envelope_response(405, "METHOD_NOT_ALLOWED", "Method not allowed")
            response.headers["Allow"] = ", ".join(match.allowed)
            return response
        if method in ("GET", "HEAD") and target == "/":
            return redirect("/engine/installed", 307)
        return envelope_response(404, "NOT_FOUND", "Resource not found")

    async def run_route(match: RouteMatch, script: LoadedScript, target: str) -> Response:
        content_type = request.headers.get("content-type", "")
        is_form = content_type.split(";", 1)[0].strip().lower() in _FORM_TYPES
        limit = (
            security.max_upload_bytes + 64 * 1024 if is_form else security.max_request_body_bytes
        )
        try:
            body = await read_body(limit)
        except PayloadTooLarge as exc:
            message = (
                "File upload exceeds maximum size limit" if is_form else "Request body too large"
            )
            return close_if_body_unread(
                envelope_response(
                    413, "PAYLOAD_TOO_LARGE", message, details=f"limit: {exc.limit} bytes"
                )
            )
        try:
            form = (
                parse_form(content_type, body, max_upload_bytes=security.max_upload_bytes)
                if is_form
                else ParsedForm()
            )
        except FormError as exc:
            code = "PAYLOAD_TOO_LARGE" if exc.status == 413 else "BAD_REQUEST"
            return envelope_response(exc.status, code, exc.message)
        script_request = build_request(
            path=target,
            method=request.method,
            raw_query=request.scope.get("query_string", b""),
            raw_headers=request.scope.get("headers", []),
            body=body,
            params=match.params,
            form=form,
            auth=anonymous_auth(),
        )
        try:
            result = await runtime.scripts.invoke_route(
                match,
                script,
                script_request,
                g.request_id,  # type: ignore[arg-type]
            )
        except EngineError as exc:
            return engine_error_envelope(exc)
        response = Response(result.body, status=result.status)
        # The script's headers replace the framework's defaults wholesale; the length is the
        # engine's to state (the contract drops a script's Content-Length), and stating it
        # spares a chunked encoding.
        response.headers.clear()
        for name, value in result.headers:
            response.headers.add(name, value)
        if match.head_fallback:
            response.set_data(b"")
        if result.status not in (204, 304):  # these never carry a body or its length
            response.headers["Content-Length"] = str(len(result.body))
        return response

    blueprint.add_url_rule(
        "/",
        "dispatch_root",
        dispatch,
        methods=METHODS,
        defaults={"path": ""},
        provide_automatic_options=False,
    )
    blueprint.add_url_rule(
        "/<path:path>", "dispatch", dispatch, methods=METHODS, provide_automatic_options=False
    )
    return blueprint
