"""Reading the parameters of ``/engine`` endpoints that take a JSON object body.

Shared by the endpoints whose writes carry JSON (assets, secrets): the query string, the
body as one JSON object, string fields that may come from either, and the error handlers
that turn a refused parameter into the ``/engine`` error shape.
"""

from __future__ import annotations

import json
from typing import Any

from quart import Blueprint, Response, request

from engine.errors import EngineError
from engine.http_contract import decode_query
from handlers._body import PayloadTooLarge, read_body
from handlers._responses import close_if_body_unread, management_engine_error, management_error
from handlers.admin import BadParameter, MissingParameter


def query_params() -> dict[str, str]:
    return decode_query(request.scope.get("query_string", b""))


async def json_object_body(limit: int) -> dict[str, Any]:
    """The body as a JSON object (``{}`` when there is none), read within ``limit`` bytes."""
    body = await read_body(limit)
    if not body:
        return {}
    try:
        decoded = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadParameter("body", "must be a JSON object") from None
    if not isinstance(decoded, dict):
        raise BadParameter("body", "must be a JSON object")
    return decoded


def text_field(source: dict[str, Any], name: str) -> str | None:
    """A string field of a JSON body; absent or empty is ``None``, another type is refused."""
    value = source.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadParameter(name, "must be a string")
    return value


def required_field(params: dict[str, str], body: dict[str, Any], name: str) -> str:
    """``name`` from the body, else from the query string; missing is a 400."""
    value = text_field(body, name) or params.get(name) or None
    if value is None:
        raise MissingParameter(name)
    return value


def install_error_handlers(blueprint: Blueprint) -> None:
    """Refused parameters, oversized bodies and engine errors in the ``/engine`` shape; a
    refusal sent before the body was read closes the connection."""

    @blueprint.errorhandler(MissingParameter)
    async def missing(exc: MissingParameter) -> Response:
        return close_if_body_unread(management_error(400, str(exc), parameter=exc.name))

    @blueprint.errorhandler(BadParameter)
    async def bad(exc: BadParameter) -> Response:
        return close_if_body_unread(management_error(400, str(exc), parameter=exc.name))

    @blueprint.errorhandler(PayloadTooLarge)
    async def too_large(exc: PayloadTooLarge) -> Response:
        return close_if_body_unread(
            management_error(413, "Request body too large", limit=exc.limit)
        )

    @blueprint.errorhandler(EngineError)
    async def engine_error(exc: EngineError) -> Response:
        return close_if_body_unread(management_engine_error(exc))
