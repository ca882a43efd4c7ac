"""``/engine/secrets``: a script's own secrets -- list their keys, set one, delete one or all.

Shapes are the original's (UPSTREAM_API §4.2), with extra fields where they help (``secrets``
lists each key's allowed hosts and times).  No answer ever carries a value: scripts use
secrets only through ``fetch``.  Writing needs what changing the script needs (owners and
administrators; until login exists the admin token's holder, or a development caller on
loopback), and every change is an audit event.
"""

from __future__ import annotations

from quart import Blueprint, Response

from engine.runtime import EngineRuntime
from engine.secrets import MAX_VALUE_BYTES, parse_allowed_hosts, secret_target
from engine.storage import SecretOwner
from handlers._access import audit, requires
from handlers._params import (
    install_error_handlers,
    json_object_body,
    query_params,
    required_field,
)
from handlers._responses import (
    iso_now,
    json_response,
    management_error,
)
from handlers.admin import BadParameter, MissingParameter
from security import Capability

# A value at its limit, written as JSON escapes, and the rest of the object.
MAX_BODY_BYTES = 6 * MAX_VALUE_BYTES + 64 * 1024


def make_blueprint(runtime: EngineRuntime) -> Blueprint:
    blueprint = Blueprint("engine_secrets", __name__, url_prefix="/engine")

    install_error_handlers(blueprint)

    @blueprint.get("/secrets")
    @requires(Capability.WriteScripts)
    async def list_secrets() -> Response:
        script = required_field(query_params(), {}, "script")
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
        params = query_params()
        body = await json_object_body(MAX_BODY_BYTES)
        script = required_field(params, body, "script")
        key = required_field(params, body, "key")
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
        params = query_params()
        script = required_field(params, {}, "script")
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
