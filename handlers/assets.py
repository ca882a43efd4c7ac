"""``/engine/assets``: list, read, upload, edit, batch-upload and delete a script's assets.

Shapes and status codes are the original's (UPSTREAM_API §4.2).  The handlers read parameters
(query string, overlaid by a JSON object body), call :class:`engine.assets.AssetService` and
shape the JSON; every check of outside input lives in ``engine.asset_text`` and answers 400
naming the field and the rule.  Reading needs ``ReadAssets``, writing ``WriteAssets``, deleting
``DeleteAssets``; once scripts have owners, writes and deletes also need ownership of the
script or Administrator (``handlers._access.authorize(..., owners=...)``).
"""

from __future__ import annotations

import json
from typing import Any

from quart import Blueprint, Response, request

from engine.asset_text import (
    decode_base64,
    guess_mimetype,
    parse_batch,
    parse_edits,
    parse_reinit,
)
from engine.assets import MAX_JSON_BODY_BYTES, info_json
from engine.errors import EngineError
from engine.http_contract import decode_query
from engine.runtime import EngineRuntime
from handlers._access import requires
from handlers._body import PayloadTooLarge, read_body
from handlers._responses import (
    close_if_body_unread,
    json_response,
    management_engine_error,
    management_error,
)
from handlers.admin import BadParameter, MissingParameter
from security import Capability


async def _json_body(limit: int = MAX_JSON_BODY_BYTES) -> dict[str, Any]:
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


def _text(source: dict[str, Any], name: str) -> str | None:
    value = source.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadParameter(name, "must be a string")
    return value


def _required(params: dict[str, str], body: dict[str, Any], name: str) -> str:
    value = _text(body, name) or params.get(name) or None
    if value is None:
        raise MissingParameter(name)
    return value


def make_blueprint(runtime: EngineRuntime) -> Blueprint:
    blueprint = Blueprint("engine_assets", __name__, url_prefix="/engine")

    def query() -> dict[str, str]:
        return decode_query(request.scope.get("query_string", b""))

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

    @blueprint.get("/assets")
    @requires(Capability.ReadAssets)
    async def read_assets() -> Response:
        params = query()
        script = _required(params, {}, "script")
        asset = params.get("asset")
        if not asset:
            infos = await runtime.assets.list(script)
            return json_response(
                {
                    "script": script,
                    "assets": [{**info_json(info), "sha256": info.sha256} for info in infos],
                }
            )
        lines = params.get("lines")
        pattern = params.get("grep")
        return json_response(
            await runtime.assets.read(
                script,
                asset,
                lines=lines if lines else None,
                pattern=pattern if pattern is not None else None,
            )
        )

    @blueprint.post("/assets")
    @requires(Capability.WriteAssets)
    async def upload_asset() -> Response:
        params = query()
        body = await _json_body()
        script = _required(params, body, "script")
        asset = _required(params, body, "asset")
        encoded = body.get("content")
        if encoded is None or encoded == "":
            raise MissingParameter("content")
        content = decode_base64(encoded, field="content")
        mimetype = _text(body, "mimetype") or params.get("mimetype") or guess_mimetype(asset)
        result = await runtime.assets.upsert(script, asset, mimetype, content)
        return json_response(
            {
                "message": f"Asset '{asset}' upserted successfully",
                "script": script,
                "asset": asset,
                "sha256": result.info.sha256,
                "bytes": result.info.size,
                "status": result.status,
            },
            201,
        )

    @blueprint.patch("/assets")
    @requires(Capability.WriteAssets)
    async def edit_asset() -> Response:
        params = query()
        body = await _json_body()
        script = _required(params, body, "script")
        asset = _required(params, body, "asset")
        if "edits" not in body:
            raise MissingParameter("edits")
        edits = parse_edits(body["edits"])
        base = _text(body, "base_sha256") or params.get("base_sha256") or None
        reinit = parse_reinit(body.get("reinit", params.get("reinit")))
        return json_response(
            await runtime.assets.patch(script, asset, edits, base_sha256=base, reinit=reinit)
        )

    @blueprint.post("/assets/batch")
    @requires(Capability.WriteAssets)
    async def batch_upload() -> Response:
        params = query()
        body = await _json_body()
        if not body:
            raise BadParameter("body", "must be a JSON object with 'files'")
        batch = parse_batch(body, script=params.get("script") or None)
        return json_response(await runtime.assets.batch(batch))

    @blueprint.delete("/assets")
    @requires(Capability.DeleteAssets)
    async def delete_asset() -> Response:
        params = query()
        script = _required(params, {}, "script")
        asset = _required(params, {}, "asset")
        await runtime.assets.delete(script, asset)
        return json_response(
            {"message": f"Asset '{asset}' deleted successfully", "script": script, "asset": asset}
        )

    return blueprint
