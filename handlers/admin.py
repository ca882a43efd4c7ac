"""The ``/engine`` management API (UPSTREAM_API §4.2): scripts, init status, logs, routes.

Handlers here only translate: read parameters, call an ``engine`` service, shape the JSON.
Write endpoints take their parameters from the query string or an urlencoded/multipart form
body (the form wins), as the original's tools send them.  Each endpoint declares the capability
it needs (``handlers._access``); creating a script additionally needs ``CreateScripts``, and
script changes are audit events.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from importlib import resources
from typing import Any

import trio
from quart import Blueprint, Response, request

from engine.audit import ALLOWED, ERROR
from engine.errors import EngineError
from engine.http_contract import FormError, decode_query, parse_form
from engine.runtime import EngineRuntime
from engine.storage import MAX_CONTAINS_LENGTH, LogQuery
from handlers._access import audit, authorize, can_use, public, requires
from handlers._body import PayloadTooLarge, read_body
from handlers._responses import (
    close_if_body_unread,
    iso_now,
    json_response,
    management_engine_error,
    management_error,
)
from handlers.sse import sse_comment, sse_event
from security import Capability

MAX_BACKLOG = 1000
KEEP_PER_SCRIPT = 20
HEARTBEAT_S = 15.0


class BadParameter(Exception):
    def __init__(self, name: str, rule: str) -> None:
        super().__init__(f"Invalid parameter '{name}': {rule}")
        self.name = name


class MissingParameter(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"Missing required parameter: {name}")
        self.name = name


_INT_MAX = 2**53  # beyond what a JSON client can represent exactly; also fits every database


def parse_int(params: dict[str, str], name: str, *, minimum: int) -> int | None:
    """An optional integer parameter of at least ``minimum``; :class:`BadParameter` if not."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.lstrip("-").isdigit() or len(raw) > 20:
        raise BadParameter(name, "must be an integer")
    value = int(raw)
    if value < minimum:
        raise BadParameter(name, f"must be at least {minimum}")
    if value > _INT_MAX:
        raise BadParameter(name, f"must be at most {_INT_MAX}")
    return value


def parse_since(params: dict[str, str]) -> int | None:
    """``since`` as epoch milliseconds: given as such, or as an RFC 3339 timestamp."""
    raw = params.get("since")
    if raw is None or raw == "":
        return None
    if raw.isascii() and raw.isdigit():
        if len(raw) > 16:
            raise BadParameter("since", "epoch milliseconds must be at most 16 digits")
        return int(raw)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadParameter("since", "must be epoch milliseconds or an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise BadParameter("since", "an RFC 3339 timestamp needs a time zone (e.g. Z)")
    return int(moment.timestamp() * 1000)


def _log_query(params: dict[str, str]) -> LogQuery:
    contains = params.get("contains")
    if contains is not None and len(contains) > MAX_CONTAINS_LENGTH:
        raise BadParameter("contains", f"must be at most {MAX_CONTAINS_LENGTH} characters")
    return LogQuery(
        uri=params.get("uri") or None,
        level=params.get("level") or None,
        contains=params.get("contains") or None,
        request_id=params.get("request_id") or None,
        kind=params.get("kind") or None,
        route=params.get("route") or None,
        since_ms=parse_since(params),
        after_seq=parse_int(params, "after_seq", minimum=0),
        limit=parse_int(params, "limit", minimum=1),
    )


def make_blueprint(runtime: EngineRuntime) -> Blueprint:
    blueprint = Blueprint("engine_admin", __name__, url_prefix="/engine")
    security = runtime.config.security
    max_script = runtime.config.sandbox.max_script_bytes

    async def parameters(limit: int) -> dict[str, str]:
        """Query parameters overlaid with form fields (or a JSON object body)."""
        params = decode_query(request.scope.get("query_string", b""))
        body = await read_body(limit)
        if not body:
            return params
        content_type = request.headers.get("content-type", "")
        if content_type.split(";", 1)[0].strip().lower() == "application/json":
            try:
                decoded = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise BadParameter("body", "must be a JSON object") from None
            if not isinstance(decoded, dict):
                raise BadParameter("body", "must be a JSON object")
            for key, value in decoded.items():
                if isinstance(value, str):
                    params[key] = value
            return params
        form = parse_form(content_type, body, max_upload_bytes=limit)
        params.update(form.form)
        return params

    def required(params: dict[str, str], name: str) -> str:
        value = params.get(name)
        if value is None or value == "":
            raise MissingParameter(name)
        return value

    @blueprint.errorhandler(MissingParameter)
    async def missing(exc: MissingParameter) -> Response:
        return management_error(400, str(exc), parameter=exc.name)

    @blueprint.errorhandler(BadParameter)
    async def bad(exc: BadParameter) -> Response:
        return management_error(400, str(exc), parameter=exc.name)

    @blueprint.errorhandler(PayloadTooLarge)
    async def too_large(exc: PayloadTooLarge) -> Response:
        return close_if_body_unread(
            management_error(413, "Request body too large", limit=exc.limit)
        )

    @blueprint.errorhandler(FormError)
    async def bad_form(exc: FormError) -> Response:
        return management_error(exc.status, exc.message)

    @blueprint.errorhandler(EngineError)
    async def engine_error(exc: EngineError) -> Response:
        return management_engine_error(exc)

    @blueprint.post("/upsert_script")
    @requires(Capability.WriteScripts)
    async def upsert_script() -> Response:
        # Room for a maximum-size script even when it arrives percent-encoded.
        params = await parameters(max(security.max_request_body_bytes, 3 * max_script + 4096))
        uri = required(params, "uri")
        if "content" not in params:
            raise MissingParameter("content")
        # Creating needs more than changing (only Editors and Administrators create); look the
        # script up only for callers to whom the difference matters.  Changing an existing
        # script will also need its owners here (authorize(..., owners=...)) once they exist.
        if (
            not can_use(Capability.CreateScripts)
            and await runtime.database.scripts.get(uri) is None
        ):
            authorize(Capability.CreateScripts)
        try:
            report = await runtime.scripts.upsert(uri, params["content"])
        except EngineError as exc:
            action = "script.update" if runtime.scripts.loaded(uri) else "script.create"
            await audit(action, outcome=ERROR, target=uri, detail={"error": exc.message})
            raise
        await audit(
            "script.update" if report.previous_exists else "script.create",
            outcome=ALLOWED,
            target=uri,
            detail={"bytes": report.script.size, "initSuccess": report.init.success},
        )
        return json_response(
            {
                "success": True,
                "message": "Script upserted successfully",
                "uri": uri,
                "contentLength": report.script.size,
                "created": not report.previous_exists,
                "init": report.init.to_json(),
                "timestamp": iso_now(),
            }
        )

    @blueprint.post("/delete_script")
    @requires(Capability.DeleteScripts)
    async def delete_script() -> Response:
        params = await parameters(security.max_request_body_bytes)
        uri = required(params, "uri")
        try:
            deleted = await runtime.scripts.delete(uri)
        except EngineError as exc:
            await audit("script.delete", outcome=ERROR, target=uri, detail={"error": exc.message})
            raise
        if deleted:
            await audit("script.delete", outcome=ALLOWED, target=uri)
        else:
            return management_error(
                404,
                "Script not found",
                message="No script with the specified URI was found",
                uri=uri,
            )
        return json_response(
            {
                "success": True,
                "message": "Script deleted successfully",
                "uri": uri,
                "timestamp": iso_now(),
            }
        )

    @blueprint.get("/read_script")
    @requires(Capability.ReadScripts)
    async def read_script() -> Response:
        uri = required(decode_query(request.scope.get("query_string", b"")), "uri")
        script = await runtime.database.scripts.get(uri)
        if script is None:
            return management_error(
                404,
                "Script not found",
                message="No script with the specified URI was found",
                uri=uri,
            )
        return Response(script.content, content_type="application/javascript; charset=utf-8")

    @blueprint.get("/scripts")
    @requires(Capability.ReadScripts)
    async def list_scripts() -> Response:
        scripts = await runtime.database.scripts.list_all()
        entries = [
            {
                "uri": s.uri,
                "name": s.uri,
                "size": s.size,
                "updatedAt": s.updated_at,
                "createdAt": s.created_at,
                "initialized": s.initialized,
                "initError": s.init_error,
            }
            for s in scripts
        ]
        return json_response({"scripts": entries, "count": len(entries), "timestamp": iso_now()})

    @blueprint.get("/script_init_status")
    @requires(Capability.ReadScripts)
    async def script_init_status() -> Response:
        params = decode_query(request.scope.get("query_string", b""))
        uri = params.get("uri")
        if uri:
            script = await runtime.database.scripts.get(uri)
            status = script.init_status() if script is not None else None
            return json_response({"uri": uri, "status": status, "timestamp": iso_now()})
        statuses = [s.init_status() for s in await runtime.database.scripts.list_all()]
        return json_response({"statuses": statuses, "count": len(statuses), "timestamp": iso_now()})

    @blueprint.get("/script_logs")
    @requires(Capability.ViewLogs)
    async def script_logs() -> Response:
        params = decode_query(request.scope.get("query_string", b""))
        query = _log_query(params)
        entries = await runtime.logs.query(query)
        # One script's log reads oldest first; the all-scripts listing newest first, pages too.
        entries.sort(key=lambda entry: entry.seq, reverse=query.uri is None)
        return json_response(
            {
                "uri": query.uri,
                "logs": [entry.to_json() for entry in entries],
                "count": len(entries),
                "timestamp": iso_now(),
            }
        )

    @blueprint.delete("/script_logs")
    @requires(Capability.DeleteLogs)
    async def delete_script_logs() -> Response:
        params = decode_query(request.scope.get("query_string", b""))
        uri = params.get("uri")
        if uri:
            await runtime.logs.clear(uri)
            return json_response({"uri": uri, "cleared": True, "timestamp": iso_now()})
        await runtime.logs.prune(KEEP_PER_SCRIPT)
        return json_response(
            {"pruned": True, "keptPerScript": KEEP_PER_SCRIPT, "timestamp": iso_now()}
        )

    @blueprint.get("/script_logs/stream")
    @requires(Capability.ViewLogs)
    async def script_logs_stream() -> Response:
        params = decode_query(request.scope.get("query_string", b""))
        query = _log_query(params)
        backlog = parse_int(params, "backlog", minimum=0)
        if backlog is not None and backlog > MAX_BACKLOG:
            raise BadParameter("backlog", f"must be at most {MAX_BACKLOG}")
        latest = await runtime.logs.latest_seq()
        # Where to start: after_seq, else since, else the last `backlog` entries, else the end.
        initial: list[Any] = []
        if query.after_seq is not None:
            cursor = query.after_seq
        elif query.since_ms is not None or backlog:
            initial = await runtime.logs.query(
                LogQuery(
                    uri=query.uri,
                    level=query.level,
                    contains=query.contains,
                    request_id=query.request_id,
                    kind=query.kind,
                    route=query.route,
                    since_ms=query.since_ms,
                    limit=backlog or MAX_BACKLOG,
                )
            )
            initial.sort(key=lambda entry: entry.seq)
            # A line written after `latest` was read may already be in the backlog: never
            # send it twice.
            cursor = max([latest, *(entry.seq for entry in initial)])
        else:
            cursor = latest

        async def events() -> AsyncIterator[bytes]:
            yield sse_event("open", {"seq": cursor, "timestamp": iso_now()})
            for entry in initial:
                yield sse_event("log", entry.to_json(), event_id=str(entry.seq))
            async for chunk in _follow(runtime, query, cursor):
                yield chunk

        response = Response(events(), content_type="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        response.timeout = None
        return response

    @blueprint.get("/routes")
    @requires(Capability.ReadScripts)
    async def routes() -> Response:
        entries = [
            {
                "path": route.path,
                "method": route.method,
                "handler": route.handler,
                "script_uri": route.script_uri,
                "summary": route.summary,
                "description": route.description,
                "tags": list(route.tags),
            }
            for route in runtime.scripts.routes.routes()
        ]
        entries.extend(
            {
                "path": route.path,
                "method": "ASSET",
                "handler": route.asset,
                "script_uri": route.script_uri,
                "summary": route.summary,
                "description": route.description,
                "tags": list(route.tags),
            }
            for route in runtime.scripts.asset_routes()
        )
        entries.extend(
            {
                "path": stream.path,
                "method": "STREAM",
                "handler": stream.customizer or stream.on_message or "",
                "script_uri": stream.script_uri,
                "summary": stream.summary,
                "description": stream.description,
                "tags": list(stream.tags),
            }
            for stream in runtime.scripts.stream_routes()
        )
        host = request.headers.get("host")
        return json_response(
            {"host": host, "routes": entries, "count": len(entries), "timestamp": iso_now()}
        )

    @blueprint.get("/types/aiwebengine.d.ts")
    @blueprint.get("/types/v0.1.0/aiwebengine.d.ts")
    @public
    async def script_types() -> Response:
        text = resources.files("engine.sandbox").joinpath("aiwebengine.d.ts").read_text("utf-8")
        response = Response(text, content_type="text/plain; charset=utf-8")
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    @blueprint.get("/installed")
    @public
    async def installed() -> Response:
        page = resources.files("handlers").joinpath("pages/installed.html").read_text("utf-8")
        return Response(page, content_type="text/html; charset=utf-8")

    return blueprint


async def _follow(runtime: EngineRuntime, query: LogQuery, cursor: int) -> AsyncIterator[bytes]:
    """Live tail: new entries as they are written, a keep-alive comment when idle."""
    last_sent = trio.current_time()
    while True:
        batch = await runtime.logs.next_batch(query, cursor)
        if batch:
            cursor = batch[-1].seq
            for entry in batch:
                yield sse_event("log", entry.to_json(), event_id=str(entry.seq))
            last_sent = trio.current_time()
            continue
        await runtime.logs.wait_for_new()
        if trio.current_time() - last_sent >= HEARTBEAT_S:
            yield sse_comment("keep-alive")
            last_sent = trio.current_time()
