"""Building responses: JSON bodies, the error shapes, and the one mapping of engine errors.

Two error shapes exist because two kinds of client exist.  Solution routes answer with the
original engine's envelope ``{"error": {code, message, details?, request_id, timestamp, path,
method}, "status"}``; the ``/engine`` management API answers ``{"error": "<message>", ...,
"timestamp"}`` as the original's tools expect.  Both are always ``application/json`` and never
carry a traceback.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from quart import Response, g, request

from engine.errors import EngineError, Overloaded, StorageUnavailable
from engine.http_contract import error_envelope

JSON_TYPE = "application/json"


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    response = Response(body, status=status, content_type=JSON_TYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def request_id() -> str:
    return str(getattr(g, "request_id", "") or "")


def retry_after_headers(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, Overloaded | StorageUnavailable):
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    return {}


def envelope_response(
    status: int,
    code: str,
    message: str,
    *,
    details: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The solution-route error envelope for the current request."""
    payload = error_envelope(
        status=status,
        code=code,
        message=message,
        request_id=request_id(),
        path=request.path,
        method=request.method,
        details=details,
    )
    return json_response(payload, status, headers)


def engine_error_envelope(exc: EngineError) -> Response:
    return envelope_response(
        exc.status, exc.code, exc.message, details=exc.details, headers=retry_after_headers(exc)
    )


def management_error(status: int, error: str, /, **extra: Any) -> Response:
    """The ``/engine`` API's error shape: ``{"error": error, **extra, "timestamp"}``."""
    payload: dict[str, Any] = {"error": error, **extra, "timestamp": iso_now()}
    headers = {"WWW-Authenticate": 'Bearer realm="aiwebengine"'} if status == 401 else None
    return json_response(payload, status, headers)


def management_engine_error(exc: EngineError) -> Response:
    extra: dict[str, Any] = {"code": exc.code}
    if exc.details:
        extra["details"] = exc.details
    field = getattr(exc, "field", None)
    if field:
        extra["field"] = field
    extra.update(getattr(exc, "extra", {}))
    response = management_error(exc.status, exc.message, **extra)
    for name, value in retry_after_headers(exc).items():
        response.headers[name] = value
    return response


def close_if_body_unread(response: Response) -> Response:
    """Mark a response sent before the request's body was read as the connection's last.

    The unread body would otherwise be taken for the next request on a kept-alive connection;
    closing is the only safe way to answer early.
    """
    if request.content_length or "transfer-encoding" in request.headers:
        response.headers["Connection"] = "close"
    return response
