"""``GET /engine/openapi.json``: an OpenAPI 3.1 document of the ``/engine`` API and of every
script route, asset route and stream (UPSTREAM_API §4.2).

The ``/engine`` half is written by hand below, one entry per (method, URL rule), because its
parameters are read by code (query strings overlaid with form or JSON bodies) that no
framework can describe.  What each operation *requires* is not written here but read from the
view's ``handlers._access`` declaration, so the document cannot disagree with the code; and
``tests/test_openapi.py`` checks that the entries and the application's URL map are the same
set and that the answers conform (schemathesis).  The script half is built at request time from
the loaded scripts' registrations and their metadata (summary, description, tags); ``:name``
path segments become required path parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

from quart import Blueprint, Response, current_app

from engine.routing import Route
from engine.runtime import EngineRuntime
from handlers._access import PUBLIC, REQUIREMENT_ATTR, requires
from handlers._responses import json_response
from security import Capability, Role

OPENAPI_VERSION: Final = "3.1.0"
# The methods an OpenAPI 3.1 path item can hold; a script route with any other method (the
# engine accepts custom method names) cannot be described and is left out.
_OPERATION_METHODS: Final = frozenset(
    {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
)

Json = dict[str, Any]

# -- building blocks ----------------------------------------------------------------------------

_STRING: Final[Json] = {"type": "string"}
_INTEGER: Final[Json] = {"type": "integer"}
_BOOLEAN: Final[Json] = {"type": "boolean"}
_NULLABLE_STRING: Final[Json] = {"type": ["string", "null"]}
_NULLABLE_INTEGER: Final[Json] = {"type": ["integer", "null"]}
_TIMESTAMP: Final[Json] = {"type": "string", "description": "RFC 3339, UTC"}

ERROR_SCHEMA: Final[Json] = {
    "type": "object",
    "description": "The /engine error shape: a message, extra fields naming what went wrong "
    "(parameter, capability, code...), and the time of the answer.",
    "required": ["error", "timestamp"],
    "properties": {"error": _STRING, "timestamp": _TIMESTAMP, "code": _STRING},
}


def _object(required: Mapping[str, Json], optional: Mapping[str, Json] | None = None) -> Json:
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
    }


def _array(items: Json) -> Json:
    return {"type": "array", "items": items}


def _json(description: str, schema: Json) -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(description: str, media_type: str) -> Json:
    return {"description": description, "content": {media_type: {"schema": _STRING}}}


def _error(name: str) -> Json:
    return {"$ref": f"#/components/responses/{name}"}


def _query(name: str, description: str, schema: Json = _STRING, *, required: bool = False) -> Json:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _body(schema: Json, example: Json, *media_types: str) -> Json:
    return {
        "required": True,
        "content": {
            media: {"schema": schema, "example": example}
            for media in media_types or ("application/json",)
        },
    }


_ERROR_RESPONSES: Final[Json] = {
    "BadRequest": "A parameter is missing or invalid (the answer names it).",
    "Unauthorized": "The admin bearer token is missing or wrong (production; development off "
    "loopback).",
    "Forbidden": "The caller lacks the capability or role the operation requires.",
    "NotFound": "No such script, asset or secret.",
    "Conflict": "The change conflicts with the current state (e.g. a stale base_sha256).",
    "TooLarge": "The request body is over its limit.",
    "RateLimited": "Too many requests from this client; see Retry-After.",
    "Unavailable": "The engine is overloaded or its storage is unavailable; see Retry-After.",
}

_ERROR_STATUS: Final = {
    "BadRequest": "400",
    "NotFound": "404",
    "Conflict": "409",
    "TooLarge": "413",
    "Unavailable": "503",
}

_SCRIPT_ENTRY: Final = _object(
    {"uri": _STRING, "name": _STRING, "size": _INTEGER},
    {
        "updatedAt": _NULLABLE_INTEGER,
        "createdAt": _NULLABLE_INTEGER,
        "initialized": _BOOLEAN,
        "initError": _NULLABLE_STRING,
    },
)
_INIT_STATUS: Final = _object({"scriptName": _STRING, "initialized": _BOOLEAN})
_INIT_REPORT: Final = _object(
    {"ran": _BOOLEAN, "success": _BOOLEAN}, {"durationMs": {}, "error": _NULLABLE_STRING}
)
_LOG_ENTRY: Final = _object(
    {"scriptUri": _STRING, "message": _STRING, "level": _STRING, "seq": _INTEGER}
)
_ROUTE_ENTRY: Final = _object(
    {
        "path": _STRING,
        "method": _STRING,
        "handler": _STRING,
        "script_uri": _STRING,
        "tags": _array(_STRING),
    },
    {"summary": _NULLABLE_STRING, "description": _NULLABLE_STRING},
)
_ASSET_INFO: Final = _object({"sha256": _STRING})
_SECRET_INFO: Final = _object({"key": _STRING})
_AUDIT_ENTRY: Final = _object({"seq": _INTEGER, "action": _STRING, "outcome": _STRING})

_LOG_FILTERS: Final = [
    _query("uri", "Only this script's lines (read oldest first; otherwise newest first)."),
    _query("level", "Only this level (LOG, INFO, WARN, ERROR, DEBUG)."),
    _query("contains", "Only lines containing this text."),
    _query("request_id", "Only lines of this request."),
    _query("kind", "Only lines of this invocation kind."),
    _query("route", "Only lines of this route."),
    _query("since", "Lines at or after this time: epoch milliseconds or RFC 3339."),
    _query("after_seq", "Lines after this sequence number.", {"type": "integer", "minimum": 0}),
    _query("limit", "At most this many lines.", {"type": "integer", "minimum": 1}),
]
EXAMPLE_SCRIPT: Final = "https://example.com/app"
_SCRIPT_PARAM: Final = {
    **_query("script", "The script's URI.", required=True),
    "example": EXAMPLE_SCRIPT,
}
_SSE: Final = _text("A server-sent event stream.", "text/event-stream")


def _operation(
    operation_id: str,
    tag: str,
    summary: str,
    responses: Json,
    *,
    parameters: Iterable[Json] = (),
    body: Json | None = None,
    errors: Iterable[str] = (),
) -> Json:
    operation: Json = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "responses": {**responses, **{_ERROR_STATUS[name]: _error(name) for name in errors}},
    }
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = body
    return operation


# -- the /engine operations -----------------------------------------------------------------

_UPSERT_BODY: Final = _object(
    {"uri": _STRING, "content": {"type": "string", "description": "The script's source."}}
)

ENGINE_OPERATIONS: Final[dict[tuple[str, str], Json]] = {
    ("POST", "/engine/upsert_script"): _operation(
        "upsertScript",
        "Scripts",
        "Create or replace a script and run its init()",
        {
            "200": _json(
                "The script is stored; init reports how its init() went.",
                _object(
                    {
                        "success": _BOOLEAN,
                        "message": _STRING,
                        "uri": _STRING,
                        "contentLength": _INTEGER,
                        "created": _BOOLEAN,
                        "init": _INIT_REPORT,
                        "timestamp": _TIMESTAMP,
                    }
                ),
            )
        },
        body=_body(
            _UPSERT_BODY,
            {"uri": EXAMPLE_SCRIPT, "content": "function init() {}"},
            "application/x-www-form-urlencoded",
            "application/json",
        ),
        errors=("BadRequest", "TooLarge", "Unavailable"),
    ),
    ("POST", "/engine/delete_script"): _operation(
        "deleteScript",
        "Scripts",
        "Delete a script and its routes",
        {
            "200": _json(
                "The script is gone.",
                _object(
                    {
                        "success": _BOOLEAN,
                        "message": _STRING,
                        "uri": _STRING,
                        "timestamp": _TIMESTAMP,
                    }
                ),
            )
        },
        body=_body(
            _object({"uri": _STRING}),
            {"uri": "https://example.com/old"},
            "application/x-www-form-urlencoded",
            "application/json",
        ),
        errors=("BadRequest", "NotFound", "TooLarge", "Unavailable"),
    ),
    ("GET", "/engine/read_script"): _operation(
        "readScript",
        "Scripts",
        "A script's source",
        {"200": _text("The source.", "application/javascript")},
        parameters=[_query("uri", "The script's URI.", required=True)],
        errors=("BadRequest", "NotFound"),
    ),
    ("GET", "/engine/scripts"): _operation(
        "listScripts",
        "Scripts",
        "Every stored script",
        {
            "200": _json(
                "The scripts.",
                _object(
                    {"scripts": _array(_SCRIPT_ENTRY), "count": _INTEGER, "timestamp": _TIMESTAMP}
                ),
            )
        },
    ),
    ("GET", "/engine/script_init_status"): _operation(
        "scriptInitStatus",
        "Scripts",
        "How the last init() of one script (or of every script) went",
        {
            "200": _json(
                "With uri: that script's status (null if unknown); without: every status.",
                {
                    "anyOf": [
                        _object(
                            {
                                "uri": _STRING,
                                "status": {"anyOf": [_INIT_STATUS, {"type": "null"}]},
                                "timestamp": _TIMESTAMP,
                            }
                        ),
                        _object(
                            {
                                "statuses": _array(_INIT_STATUS),
                                "count": _INTEGER,
                                "timestamp": _TIMESTAMP,
                            }
                        ),
                    ]
                },
            )
        },
        parameters=[_query("uri", "One script's URI; every script when absent.")],
    ),
    ("GET", "/engine/script_logs"): _operation(
        "scriptLogs",
        "Logs",
        "Script log lines",
        {
            "200": _json(
                "The matching lines.",
                _object(
                    {
                        "uri": _NULLABLE_STRING,
                        "logs": _array(_LOG_ENTRY),
                        "count": _INTEGER,
                        "timestamp": _TIMESTAMP,
                    }
                ),
            )
        },
        parameters=_LOG_FILTERS,
        errors=("BadRequest",),
    ),
    ("DELETE", "/engine/script_logs"): _operation(
        "deleteScriptLogs",
        "Logs",
        "Clear one script's log, or prune every script's to its newest lines",
        {
            "200": _json(
                "Cleared (with uri) or pruned (without).",
                {
                    "anyOf": [
                        _object({"uri": _STRING, "cleared": _BOOLEAN, "timestamp": _TIMESTAMP}),
                        _object(
                            {
                                "pruned": _BOOLEAN,
                                "keptPerScript": _INTEGER,
                                "timestamp": _TIMESTAMP,
                            }
                        ),
                    ]
                },
            )
        },
        parameters=[_query("uri", "The script whose log to clear; prune all when absent.")],
    ),
    ("GET", "/engine/script_logs/stream"): _operation(
        "streamScriptLogs",
        "Logs",
        "Follow script log lines as server-sent events (open, log, keep-alive)",
        {"200": _SSE},
        parameters=[
            *_LOG_FILTERS,
            _query(
                "backlog",
                "Start with this many recent lines.",
                {"type": "integer", "minimum": 0, "maximum": 1000},
            ),
        ],
        errors=("BadRequest",),
    ),
    ("GET", "/engine/routes"): _operation(
        "listRoutes",
        "Scripts",
        "Every script route, asset route (method ASSET) and stream (method STREAM)",
        {
            "200": _json(
                "The routes.",
                _object(
                    {
                        "host": _NULLABLE_STRING,
                        "routes": _array(_ROUTE_ENTRY),
                        "count": _INTEGER,
                        "timestamp": _TIMESTAMP,
                    }
                ),
            )
        },
    ),
    ("GET", "/engine/types/aiwebengine.d.ts"): _operation(
        "scriptTypes",
        "Engine",
        "TypeScript declarations of the script API",
        {"200": _text("The declarations.", "text/plain")},
    ),
    ("GET", "/engine/types/v0.1.0/aiwebengine.d.ts"): _operation(
        "scriptTypesVersioned",
        "Engine",
        "TypeScript declarations of the script API, version 0.1.0",
        {"200": _text("The declarations.", "text/plain")},
    ),
    ("GET", "/engine/installed"): _operation(
        "installed",
        "Engine",
        "The landing page of a fresh installation",
        {"200": _text("The page.", "text/html")},
    ),
    ("GET", "/engine/openapi.json"): _operation(
        "openapi",
        "Engine",
        "This document",
        {"200": _json("The OpenAPI 3.1 document.", {"type": "object"})},
    ),
    ("GET", "/engine/assets"): _operation(
        "readAssets",
        "Assets",
        "List a script's assets, or read one (optionally some lines, or grep)",
        {"200": _json("The listing, or the asset's text and information.", {"type": "object"})},
        parameters=[
            _SCRIPT_PARAM,
            _query("asset", "Read this asset; list every asset when absent."),
            _query("lines", "A line range such as 10-20."),
            _query("grep", "Only the lines matching this regular expression."),
        ],
        errors=("BadRequest", "NotFound"),
    ),
    ("POST", "/engine/assets"): _operation(
        "uploadAsset",
        "Assets",
        "Create or replace one asset",
        {
            "201": _json(
                "Stored.",
                _object(
                    {
                        "message": _STRING,
                        "script": _STRING,
                        "asset": _STRING,
                        "sha256": _STRING,
                        "bytes": _INTEGER,
                        "status": _STRING,
                    }
                ),
            )
        },
        parameters=[_SCRIPT_PARAM],
        body=_body(
            _object(
                {
                    "asset": _STRING,
                    "content": {"type": "string", "contentEncoding": "base64"},
                },
                {"mimetype": _STRING},
            ),
            {"asset": "hello.txt", "content": "aGVsbG8=", "mimetype": "text/plain"},
        ),
        errors=("BadRequest", "NotFound", "TooLarge"),
    ),
    ("PATCH", "/engine/assets"): _operation(
        "editAsset",
        "Assets",
        "Edit a text asset by exact string replacement",
        {"200": _json("The edit's result.", {"type": "object"})},
        parameters=[_SCRIPT_PARAM],
        body=_body(
            _object(
                {
                    "asset": _STRING,
                    "edits": _array(
                        _object(
                            {"old_string": _STRING, "new_string": _STRING},
                            {"replace_all": _BOOLEAN},
                        )
                    ),
                },
                {"base_sha256": _STRING, "reinit": _STRING},
            ),
            {
                "asset": "hello.txt",
                "edits": [{"old_string": "hello", "new_string": "howdy"}],
                "reinit": "never",
            },
        ),
        errors=("BadRequest", "NotFound", "Conflict", "TooLarge"),
    ),
    ("POST", "/engine/assets/batch"): _operation(
        "batchUploadAssets",
        "Assets",
        "Write many assets at once (all or nothing)",
        {"200": _json("Each file's result.", {"type": "object"})},
        body=_body(
            _object(
                {
                    "script": _STRING,
                    "files": _array(
                        _object(
                            {"name": _STRING},
                            {"content": _STRING, "content_base64": _STRING, "mimetype": _STRING},
                        )
                    ),
                },
                {"reinit": _STRING},
            ),
            {"script": EXAMPLE_SCRIPT, "files": [{"name": "notes.txt", "content": "notes"}]},
        ),
        errors=("BadRequest", "NotFound", "Conflict", "TooLarge"),
    ),
    ("DELETE", "/engine/assets"): _operation(
        "deleteAsset",
        "Assets",
        "Delete one asset",
        {
            "200": _json(
                "Deleted.", _object({"message": _STRING, "script": _STRING, "asset": _STRING})
            )
        },
        parameters=[_SCRIPT_PARAM, _query("asset", "The asset's name.", required=True)],
        errors=("BadRequest", "NotFound"),
    ),
    ("GET", "/engine/script_updates"): _operation(
        "scriptUpdates",
        "Scripts",
        "Script changes as server-sent events",
        {"200": _SSE},
        errors=("Unavailable",),
    ),
    ("GET", "/engine/graphql/schema"): _operation(
        "graphqlSchema",
        "GraphQL",
        "The GraphQL schema the loaded scripts make, as SDL",
        {"200": _text("The schema.", "text/plain")},
    ),
    ("GET", "/engine/audit"): _operation(
        "auditTrail",
        "Audit",
        "The audit trail, newest first",
        {
            "200": _json(
                "One page of entries.",
                _object(
                    {"entries": _array(_AUDIT_ENTRY), "count": _INTEGER, "timestamp": _TIMESTAMP}
                ),
            )
        },
        parameters=[
            _query("actor", "Only this actor's entries."),
            _query("action", "Only this action."),
            _query("outcome", "Only this outcome.", {"enum": ["allowed", "denied", "error"]}),
            _query("since", "Entries at or after this time: epoch milliseconds or RFC 3339."),
            _query("after_seq", "Entries after this cursor.", {"type": "integer", "minimum": 0}),
            _query("before_seq", "Entries before this cursor.", {"type": "integer", "minimum": 1}),
            _query(
                "limit",
                "Page size (default 100).",
                {"type": "integer", "minimum": 1, "maximum": 1000},
            ),
        ],
        errors=("BadRequest",),
    ),
    ("GET", "/engine/secrets"): _operation(
        "listSecrets",
        "Secrets",
        "A script's secret keys (never their values)",
        {
            "200": _json(
                "The keys.",
                _object(
                    {
                        "script": _STRING,
                        "keys": _array(_STRING),
                        "count": _INTEGER,
                        "secrets": _array(_SECRET_INFO),
                        "timestamp": _TIMESTAMP,
                    }
                ),
            )
        },
        parameters=[_SCRIPT_PARAM],
        errors=("BadRequest",),
    ),
    ("POST", "/engine/secrets"): _operation(
        "setSecret",
        "Secrets",
        "Set one of a script's secrets",
        {
            "200": _json(
                "Stored.",
                _object(
                    {
                        "success": _BOOLEAN,
                        "script": _STRING,
                        "key": _STRING,
                        "created": _BOOLEAN,
                        "timestamp": _TIMESTAMP,
                    },
                    {"allowedHosts": {"type": ["array", "null"], "items": _STRING}},
                ),
            )
        },
        parameters=[_SCRIPT_PARAM],
        body=_body(
            _object(
                {"key": _STRING, "value": _STRING},
                {"allowed_hosts": _array(_STRING)},
            ),
            {"key": "API_KEY", "value": "s3cret", "allowed_hosts": ["api.example.com"]},
        ),
        errors=("BadRequest", "TooLarge"),
    ),
    ("DELETE", "/engine/secrets"): _operation(
        "deleteSecret",
        "Secrets",
        "Delete one of a script's secrets, or all of them",
        {
            "200": _json(
                "Deleted (with key) or cleared (without).",
                _object({"success": _BOOLEAN, "script": _STRING, "timestamp": _TIMESTAMP}),
            )
        },
        parameters=[_SCRIPT_PARAM, _query("key", "The secret; every secret when absent.")],
        errors=("BadRequest", "NotFound"),
    ),
}

_SECURITY_SCHEMES: Final[Json] = {
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The administrator token (AIWEBENGINE_SECURITY__ADMIN_TOKEN).  Required "
        "by every non-public /engine operation in production; development answers loopback "
        "callers without it.",
    }
}


def _with_requirement(operation: Json, requirement: object) -> Json:
    """The operation with its access requirement stated: security, refusals, and in words."""
    operation = dict(operation)
    if requirement == PUBLIC or requirement is None:
        operation["security"] = [{}]
        operation["description"] = "Public."
        return operation
    if isinstance(requirement, Capability):
        operation["x-required-capability"] = requirement.name
        words = f"Requires the {requirement.name} capability."
    elif isinstance(requirement, Role):
        operation["x-required-role"] = requirement.name
        words = f"Requires the {requirement.name} role."
    else:
        words = f"Requires {requirement}."
    operation["description"] = words
    operation["security"] = [{"adminToken": []}, {}]
    operation["responses"] = {
        **operation["responses"],
        "401": _error("Unauthorized"),
        "403": _error("Forbidden"),
        "429": _error("RateLimited"),
    }
    return operation


def engine_paths(requirements: Mapping[tuple[str, str], object]) -> Json:
    """The ``/engine`` path items, each operation stating the requirement its view declares."""
    paths: Json = {}
    for (method, rule), operation in ENGINE_OPERATIONS.items():
        paths.setdefault(rule, {})[method.lower()] = _with_requirement(
            operation, requirements.get((method, rule))
        )
    return paths


# -- the script routes ----------------------------------------------------------------------


def openapi_path(path: str) -> tuple[str, list[Json]]:
    """A route path as an OpenAPI path template, and its ``:name`` segments as parameters.

    Braces are percent-encoded so that a literal ``{`` in a script's path is not taken for a
    template; a ``*`` prefix match stays literal text (OpenAPI has no wildcard).
    """
    segments = []
    parameters: list[Json] = []
    for segment in path.replace("{", "%7B").replace("}", "%7D").split("/"):
        name = segment[1:]
        if segment.startswith(":") and name and name not in {p["name"] for p in parameters}:
            segments.append("{" + name + "}")
            parameters.append({"name": name, "in": "path", "required": True, "schema": _STRING})
        else:
            segments.append(segment)
    return "/".join(segments) or "/", parameters


def _metadata(
    summary: str | None, description: str | None, tags: Iterable[str], script_uri: str
) -> Json:
    operation: Json = {"x-script-uri": script_uri}
    if summary:
        operation["summary"] = summary
    if description:
        operation["description"] = description
    if tags := list(tags):
        operation["tags"] = tags
    return operation


def _route_operation(route: Route, parameters: list[Json]) -> Json:
    operation = _metadata(route.summary, route.description, route.tags, route.script_uri)
    operation["x-handler"] = route.handler
    declared = json.loads(route.parameters_json) if route.parameters_json else []
    # Path parameters come from the pattern; the script's own entries add the rest (and win
    # for a name they declare themselves).
    named = {(p.get("name"), p.get("in")) for p in declared}
    parameters = [p for p in parameters if (p.get("name"), p.get("in")) not in named] + declared
    if parameters:
        operation["parameters"] = parameters
    if route.request_body_json:
        operation["requestBody"] = json.loads(route.request_body_json)
    operation["responses"] = {"default": {"description": "The handler's response."}}
    return operation


def script_paths(runtime: EngineRuntime) -> Json:
    """Path items of every loaded script's routes, asset routes and streams.

    Asset routes are added last: they are served before routes on the same path.
    """
    paths: Json = {}
    scripts = runtime.scripts
    for route in scripts.routes.routes():
        method = route.method.lower()
        if method not in _OPERATION_METHODS:
            continue
        template, parameters = openapi_path(route.path)
        paths.setdefault(template, {})[method] = _route_operation(route, parameters)
    for stream in scripts.stream_routes():
        operation = _metadata(stream.summary, stream.description, stream.tags, stream.script_uri)
        operation["responses"] = {"200": _SSE}
        paths.setdefault(openapi_path(stream.path)[0], {})["get"] = operation
    for asset in scripts.asset_routes():
        operation = _metadata(asset.summary, asset.description, asset.tags, asset.script_uri)
        operation["x-asset"] = asset.asset
        operation["responses"] = {"200": {"description": "The asset's content."}}
        paths.setdefault(openapi_path(asset.path)[0], {})["get"] = operation
    return paths


def document(runtime: EngineRuntime, requirements: Mapping[tuple[str, str], object]) -> Json:
    """The whole OpenAPI document: the /engine API, then the scripts' routes."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "aiwebengine",
            "version": "0.1.0",
            "description": "The /engine management API and the routes of the loaded scripts.",
        },
        "paths": {**engine_paths(requirements), **script_paths(runtime)},
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "responses": {
                name: _json(text, {"$ref": "#/components/schemas/Error"})
                for name, text in _ERROR_RESPONSES.items()
            },
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }


def declared_requirements() -> dict[tuple[str, str], object]:
    """(method, rule) -> what the view declares, for every /engine endpoint of the app."""
    found: dict[tuple[str, str], object] = {}
    for rule in current_app.url_map.iter_rules():
        if rule.rule.startswith("/engine/"):
            view = current_app.view_functions[rule.endpoint]
            for method in rule.methods or ():
                found[(method, rule.rule)] = getattr(view, REQUIREMENT_ATTR, None)
    return found


def make_blueprint(runtime: EngineRuntime) -> Blueprint:
    blueprint = Blueprint("engine_openapi", __name__, url_prefix="/engine")

    @blueprint.get("/openapi.json")
    @requires(Capability.ReadScripts)
    async def openapi() -> Response:
        return json_response(document(runtime, declared_requirements()))

    return blueprint
