"""``/engine/assets``: list, read, upload, edit, batch-upload and delete a script's assets.

Shapes and status codes are the original's (UPSTREAM_API §4.2).  The handlers read parameters
(query string, overlaid by a JSON object body), call :class:`engine.assets.AssetService` and
shape the JSON; every check of outside input lives in ``engine.asset_text`` and answers 400
naming the field and the rule.  Reading needs ``ReadAssets``, writing ``WriteAssets``, deleting
``DeleteAssets``; once scripts have owners, writes and deletes also need ownership of the
script or Administrator (``handlers._access.authorize(..., owners=...)``).
"""

from __future__ import annotations

from quart import Blueprint, Response

from engine.asset_text import (
    decode_base64,
    guess_mimetype,
    parse_batch,
    parse_edits,
    parse_reinit,
)
from engine.assets import MAX_JSON_BODY_BYTES, info_json
from engine.runtime import EngineRuntime
from handlers._access import requires
from handlers._params import (
    install_error_handlers,
    json_object_body,
    query_params,
    required_field,
    text_field,
)
from handlers._responses import (
    json_response,
)
from handlers.admin import BadParameter, MissingParameter
from security import Capability


def make_blueprint(runtime: EngineRuntime) -> Blueprint:
    blueprint = Blueprint("engine_assets", __name__, url_prefix="/engine")

    install_error_handlers(blueprint)

    @blueprint.get("/assets")
    @requires(Capability.ReadAssets)
    async def read_assets() -> Response:
        params = query_params()
        script = required_field(params, {}, "script")
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
        params = query_params()
        body = await json_object_body(MAX_JSON_BODY_BYTES)
        script = required_field(params, body, "script")
        asset = required_field(params, body, "asset")
        encoded = body.get("content")
        if encoded is None or encoded == "":
            raise MissingParameter("content")
        content = decode_base64(encoded, field="content")
        mimetype = text_field(body, "mimetype") or params.get("mimetype") or guess_mimetype(asset)
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
        params = query_params()
        body = await json_object_body(MAX_JSON_BODY_BYTES)
        script = required_field(params, body, "script")
        asset = required_field(params, body, "asset")
        if "edits" not in body:
            raise MissingParameter("edits")
        edits = parse_edits(body["edits"])
        base = text_field(body, "base_sha256") or params.get("base_sha256") or None
        reinit = parse_reinit(body.get("reinit", params.get("reinit")))
        return json_response(
            await runtime.assets.patch(script, asset, edits, base_sha256=base, reinit=reinit)
        )

    @blueprint.post("/assets/batch")
    @requires(Capability.WriteAssets)
    async def batch_upload() -> Response:
        params = query_params()
        body = await json_object_body(MAX_JSON_BODY_BYTES)
        if not body:
            raise BadParameter("body", "must be a JSON object with 'files'")
        batch = parse_batch(body, script=params.get("script") or None)
        return json_response(await runtime.assets.batch(batch))

    @blueprint.delete("/assets")
    @requires(Capability.DeleteAssets)
    async def delete_asset() -> Response:
        params = query_params()
        script = required_field(params, {}, "script")
        asset = required_field(params, {}, "asset")
        await runtime.assets.delete(script, asset)
        return json_response(
            {"message": f"Asset '{asset}' deleted successfully", "script": script, "asset": asset}
        )

    return blueprint
