"""``/engine/secrets``: a script's own secrets -- list their keys, set one, delete one or all.

Shapes are the original's (UPSTREAM_API §4.2), with extra fields where they help (``secrets``
lists each key's allowed hosts and times).  No answer ever carries a value: scripts use
secrets only through ``fetch``.  Writing needs what changing the script needs (owners and
administrators; until login exists the admin token's holder, or a development caller on
loopback), and every change is an audit event.
"""

from __future__ import annotations

import json
from typing import Any

from quart import Blueprint, Response, request

from engine.errors import EngineError
from engine.http_contract import decode_query
from engine.runtime import EngineRuntime
from engine.secrets import MAX_VALUE_BYTES, parse_allowed_hosts, secret_target
from engine.storage import SecretOwner
from handlers._access import audit, requires
from handlers._body import PayloadTooLarge, read_body
from handlers._responses import (
    close_if_body_unread,
    iso_now,
    json_response,
    management_engine_error,
    management_error,
)
from handlers.admin import BadParameter, MissingParameter
from security import Capability

# A value at its limit, written as JSON escapes, and the rest of the object.
MAX_BODY_BYTES = 6 * MAX_VALUE_BYTES + 64 * 1024


def _text(source: dict[str, Any], name: str) -> str | None:
    value = source.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadParameter(name, "must be a string")
    return value


async def _json_body() -> dict[str, Any]:
    body = await read_body(MAX_BODY_BYTES)
    if not body:
        return {}
    try:
        decoded = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadParameter("body", "must be a JSON object") from None
    if not isinstance(decoded, dict):
        raise BadParameter("body", "must be a JSON object")
    return decoded


def make_blueprint(runtime: EngineRuntime) -> Blueprint:
    blueprint = Blueprint("engine_secrets", __name__, url_prefix="/engine")

    def query() -> dict[str, str]:
        return decode_query(request.scope.get("query_string", b""))

    def required(params: dict[str, str], body: dict[str, Any], name: str) -> str:
        value = _text(body, name) or params.get(name) or None
        if value is None:
            raise MissingParameter(name)
        return value

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

    @blueprint.get("/secrets")
    @requires(Capability.WriteScripts)
    async def list_secrets() -> Response:
        script = required(query(), {}, "script")
        infos = await runtime.secrets.list(SecretOwner(script))
        return json_response(
            {
                "script": script,
                "keys": [info.key for info in infos],
                "count": len(infos),
                "secrets": [info.to_json() for info in infos],
                "timestamp": iso_now(),
            }
        )

    @blueprint.post("/secrets")
    @requires(Capability.WriteScripts)
    async def set_secret() -> Response:
        params = query()
        body = await _json_body()
        script = required(params, body, "script")
        key = required(params, body, "key")
        value = body.get("value")
        if value is None:
            raise MissingParameter("value")
        if not isinstance(value, str):
            raise BadParameter("value", "must be a string")
        raw_hosts = body.get("allowed_hosts", body.get("allowedHosts"))
        try:
            hosts = parse_allowed_hosts(raw_hosts)
        except ValueError as exc:
            raise BadParameter("allowed_hosts", str(exc)) from None
        owner = SecretOwner(script)
        created = await runtime.secrets.set(owner, key, value, hosts)
        key = key.strip()
        detail = {"created": created, "allowedHosts": None if hosts is None else list(hosts)}
        await audit("secret.set", target=secret_target(owner, key), detail=detail)
        return json_response(
            {
                "success": True,
                "script": script,
                "key": key,
                "created": created,
                "allowedHosts": detail["allowedHosts"],
                "timestamp": iso_now(),
            }
        )

    @blueprint.delete("/secrets")
    @requires(Capability.WriteScripts)
    async def delete_secret() -> Response:
        params = query()
        script = required(params, {}, "script")
        owner = SecretOwner(script)
        key = (params.get("key") or "").strip()
        if not key:
            count = await runtime.secrets.clear(owner)
            await audit("secret.clear", target=secret_target(owner, None), detail={"count": count})
            return json_response(
                {
                    "success": True,
                    "cleared": True,
                    "script": script,
                    "count": count,
                    "timestamp": iso_now(),
                }
            )
        if not await runtime.secrets.delete(owner, key):
            return management_error(
                404,
                "Secret not found",
                message=f"No secret '{key}' is set for script '{script}'",
                script=script,
                key=key,
            )
        await audit("secret.delete", target=secret_target(owner, key))
        return json_response(
            {"success": True, "script": script, "key": key, "timestamp": iso_now()}
        )

    return blueprint
