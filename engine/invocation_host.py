"""The host side of one sandbox invocation: the host API calls a script makes while it runs.

An :class:`InvocationHost` is made per invocation by the script service.  It answers the
script's host calls (registrations during ``init()``, storage, assets, streams, the dispatcher,
the v0.9 flat API) and collects what the invocation registered and logged; the service swaps
the registrations in and writes the log lines when the invocation ends.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from engine import convert
from engine.asset_text import name_problem
from engine.assets import METHODS as ASSET_METHODS
from engine.assets import AssetHostApi
from engine.convert import METHODS as CONVERT_METHODS
from engine.errors import (
    EngineError,
    HostCallError,
    StorageUnavailable,
    ValidationError,
)
from engine.fetch import FETCH, FetchService
from engine.flat_api import METHODS as FLAT_METHODS
from engine.flat_api import FlatReadApi
from engine.graphql import FieldRegistration
from engine.graphql_api import EXECUTE as GRAPHQL_EXECUTE
from engine.graphql_api import REGISTER_METHODS as GRAPHQL_REGISTER_METHODS
from engine.graphql_api import SEND_METHODS as GRAPHQL_SEND_METHODS
from engine.graphql_api import GraphQLHostApi
from engine.graphql_api import registered as graphql_registered
from engine.graphql_api import registration as graphql_registration
from engine.host_access import access_denied, entry_requirement
from engine.logs import LogService, now_ms
from engine.routing import Route, reserved_prefix_of
from engine.script_storage import METHODS as STORAGE_METHODS
from engine.script_storage import ScriptStorageApi
from engine.secrets import METHODS as SECRET_METHODS
from engine.secrets import AuditHook, SecretHostApi
from engine.storage import NewLogEntry
from engine.stream_api import (
    REGISTER_METHODS as STREAM_REGISTER_METHODS,
)
from engine.stream_api import (
    SEND_METHODS,
    StreamHostApi,
    StreamRoute,
    customizer_problem,
    late_path_problem,
    path_problem,
    reserved_check,
)
from security import Capability, UserContext, can, insufficient, redact, runs_as

if TYPE_CHECKING:
    from engine.scripts import ScriptService

_METHOD = re.compile(r"^[A-Z][A-Z0-9_-]{0,31}$")
MAX_ASSET_PATH_CHARS = 500
# How deep messages and executeGraphQL calls made by scripts may nest.
MAX_DISPATCH_DEPTH = 3
NOT_IN_PHASE = (
    "{api}: '{name}' not registered - registration only takes effect during script startup "
    "and init()"
)


@attrs.frozen
class AssetRoute:
    """``routeRegistry.registerAssetRoute``: an exact path serving one of the script's assets."""

    path: str
    script_uri: str
    asset: str
    summary: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ("Assets",)


class InvocationHost:
    """The host side of one invocation: answers host calls and collects its log lines."""

    def __init__(
        self,
        *,
        script_uri: str,
        request_id: str,
        kind: str,
        route: str | None,
        registering: bool,
        storage: ScriptStorageApi,
        assets: AssetHostApi | None = None,
        streams: StreamHostApi | None = None,
        graphql: GraphQLHostApi | None = None,
        fetch: FetchService | None = None,
        secrets: SecretHostApi | None = None,
        user: UserContext | None = None,
        development: bool = True,
        flat: FlatReadApi | None = None,
        writes: ScriptService | None = None,
        held: tuple[str, ...] = (),
        depth: int = 0,
        audit: AuditHook | None = None,
    ) -> None:
        self.listeners: list[tuple[str, str]] = []
        # How deep in dispatcher.sendMessage fan-outs this invocation runs (0: not a listener).
        self.depth = depth
        self.script_uri = script_uri
        self.storage = storage
        self.assets = assets
        self.asset_routes: dict[str, AssetRoute] = {}
        self.streams = streams
        self.stream_routes: dict[str, StreamRoute] = {}
        self.graphql = graphql
        self.graphql_fields: dict[tuple[str, str], FieldRegistration] = {}
        self.flat = flat
        self.writes = writes
        self.fetch = fetch
        self.secrets = secrets
        # Secret values this invocation handled (injected by fetch, or set by the script):
        # masked in every log line it writes.
        self.masked: set[str] = set()
        # Scripts whose init() runs up this invocation's chain (their locks are held).
        self.held = held
        # ``user`` is who triggered the invocation; the script runs as ``runs_as(kind, user)``
        # (the caller for route and WebSocket message handlers, an engine principal with admin
        # rights for init, resolvers, listeners...), and host APIs check that identity's
        # capabilities in the engine's profile (``development``).  personalStorage and user
        # secrets key by the caller's user id; None is anonymous.
        caller = user if user is not None else UserContext.anonymous()
        self.user = runs_as(kind, caller)
        # Where refused host calls are reported (the audit trail); None in unit set-ups.
        self.audit = audit
        self.development = development
        self.user_id = caller.user_id
        self.request_id = request_id
        self.kind = kind
        self.route = route
        self.registering = registering
        self.routes: dict[tuple[str, str], Route] = {}
        self.lines: list[NewLogEntry] = []
        # Log lines up to here are written by the caller.  If the caller stops waiting (the
        # client hung up) the invocation carries on, and finish() writes what follows.
        self.written = 0
        self.abandoned = False
        self._writer: LogService | None = None
        self._handler = ""

    def hand_over(self, logs: LogService, handler: str) -> None:
        """The caller left: from now on ``finish`` writes the rest of the log."""
        self.written = len(self.lines)
        self.abandoned = True
        self._writer = logs
        self._handler = handler

    async def finish(self, error: BaseException | None) -> None:
        if not self.abandoned or self._writer is None:
            return
        if isinstance(error, EngineError):
            self.lines.append(self.entry("FATAL", fatal_message(self._handler, error)))
        await self._writer.write(self.lines[self.written :])

    async def _report_denied(self, name: str, capability: Capability) -> None:
        if self.audit is None:
            return
        await self.audit(
            {
                "action": "host_api.denied",
                "outcome": "denied",
                "user": self.user,
                "target": self.script_uri,
                "request_id": self.request_id,
                "detail": {"api": name, "capability": capability.name, "kind": self.kind},
            }
        )

    def may(self, capability: Capability) -> bool:
        """Does the identity this invocation runs as hold ``capability``?"""
        return can(self.user, capability, development=self.development)

    def log(self, level: str, message: str, timestamp_ms: int) -> None:
        # Console lines need ViewLogs, as on the original: a production engine does not record
        # what anonymous requests log (the engine's own lines about them are kept).
        if self.may(Capability.ViewLogs):
            self.lines.append(self.entry(level, message, timestamp_ms))

    def entry(self, level: str, message: str, timestamp_ms: int | None = None) -> NewLogEntry:
        return NewLogEntry(
            script_uri=self.script_uri,
            level=level,
            message=redact(message, self.masked) if self.masked else message,
            timestamp=now_ms() if timestamp_ms is None else timestamp_ms,
            request_id=self.request_id,
            kind=self.kind,
            route=self.route,
        )

    def mask(self, values: Iterable[str]) -> None:
        """Mask these secret values in this invocation's log, lines already taken included."""
        fresh = {value for value in values if value} - self.masked
        if not fresh:
            return
        self.masked |= fresh
        pending = self.lines[self.written :]
        self.lines[self.written :] = [
            attrs.evolve(line, message=redact(line.message, self.masked)) for line in pending
        ]

    async def call(self, name: str, args: list[Any]) -> Any:
        requirement = entry_requirement(name, args)
        if requirement is not None and not self.may(requirement[0]):
            capability, refusal = requirement
            await self._report_denied(name, capability)
            return refusal(capability)
        if name == FETCH and self.fetch is not None:
            outcome = await self.fetch.call(
                args, script_uri=self.script_uri, user_id=self.user_id, request_id=self.request_id
            )
            self.mask(outcome.secrets)
            return outcome.text
        if name in SECRET_METHODS and self.secrets is not None:
            if name == "secretStorage.setSecret" and len(args) > 1 and isinstance(args[1], str):
                self.mask([args[1]])
            return await self.secrets.call(
                name,
                args,
                script_uri=self.script_uri,
                user_id=self.user_id,
                request_id=self.request_id,
            )
        if name == "routeRegistry.registerRoute":
            return self.register_route(*pad(args, 4))
        if name in STORAGE_METHODS:
            return await self.storage.call(
                name, args, script_uri=self.script_uri, user_id=self.user_id
            )
        if name in ASSET_METHODS and self.assets is not None:
            return await self.assets.call(name, args, script_uri=self.script_uri)
        if name == "routeRegistry.registerAssetRoute" and self.assets is not None:
            return await self.register_asset_route(*pad(args, 3))
        if name in STREAM_REGISTER_METHODS:
            return self.register_stream(name, args)
        if name in SEND_METHODS and self.streams is not None:
            return self.streams.call(name, args)
        if name in GRAPHQL_REGISTER_METHODS:
            return self.register_graphql(name, args)
        if (name in GRAPHQL_SEND_METHODS or name == GRAPHQL_EXECUTE) and self.graphql is not None:
            return await self.graphql.call(name, args, depth=self.depth)
        if name in FLAT_METHODS and self.flat is not None:
            return await self.flat.call(name, args)
        if name in CONVERT_METHODS:
            return await convert.call(name, args)
        if name in ("upsertScript", "deleteScript") and self.writes is not None:
            return await self._write(name, args)
        if name == "dispatcher.registerListener":
            return self.register_listener(*pad(args, 2))
        if name == "dispatcher.sendMessage" and self.writes is not None:
            message_type, data = pad(args, 2)
            return await self.writes.dispatch(message_type, data, depth=self.depth + 1)
        raise HostCallError(f"{name} is not available in this engine version")

    async def _write(self, name: str, args: list[Any]) -> Any:
        """v0.9 ``upsertScript(uri, content)`` and ``deleteScript(uri)``."""
        assert self.writes is not None
        uri = args[0] if args else None
        if not isinstance(uri, str) or not uri.strip():
            raise HostCallError(f"{name}: the script URI must be a non-empty string")
        try:
            if name == "deleteScript":
                return await self.writes.delete(uri, held=self.held)
            content = args[1] if len(args) > 1 else None
            if not isinstance(content, str):
                return "Error: content: must be a string"
            # Creating needs more than changing, as on /engine/upsert_script.
            if not self.may(Capability.CreateScripts) and not await self.writes.exists(uri):
                return insufficient(Capability.CreateScripts)
            await self.writes.upsert(uri, content, held=self.held)
        except ValidationError as exc:
            if exc.field == "chain":
                raise HostCallError(f"{name}: {exc.rule}") from None
            return f"Error: {exc.message}"
        except StorageUnavailable:
            raise HostCallError(f"{name}: storage is unavailable, try again later") from None
        return f"Script '{uri}' upserted successfully"

    def register_listener(self, message_type: Any, handler: Any) -> str:
        api = "dispatcher.registerListener"
        if not isinstance(message_type, str) or not message_type.strip():
            return f"{api}: message type cannot be empty"
        if not isinstance(handler, str) or not handler.strip():
            return f"{api}: handler name cannot be empty"
        if not self.registering:
            return NOT_IN_PHASE.format(api=api, name=message_type)
        self.listeners.append((message_type, handler))
        return f"Registered listener for message type '{message_type}': handler '{handler}'"

    def register_graphql(self, name: str, args: list[Any]) -> str:
        operation = GRAPHQL_REGISTER_METHODS[name]
        if not self.registering:
            api = f"graphQLRegistry.register{operation.capitalize()}"
            return NOT_IN_PHASE.format(api=api, name=args[0] if args else None)
        if not self.may(Capability.ManageGraphQL):
            return insufficient(Capability.ManageGraphQL)
        field = graphql_registration(name, args, script_uri=self.script_uri)
        if isinstance(field, str):
            return field
        key = (operation, field.name)
        self.graphql_fields.pop(key, None)  # the same name twice: the last one wins
        self.graphql_fields[key] = field
        return graphql_registered(operation, field.name)

    def register_stream(self, name: str, args: list[Any]) -> str:
        """``registerStreamRoute(path, customizer?, metadata?)``, the v0.9
        ``registerWebStream(path)`` and ``registerWebSocketRoute(path, handler, options?)``."""
        websocket = name == "routeRegistry.registerWebSocketRoute"
        api = name if name.startswith("routeRegistry.") else "routeRegistry.registerStreamRoute"
        path, second, third = pad(args, 3)
        path = reserved_check(path, api)
        problem = path_problem(path)
        if problem is not None:
            return problem
        on_message: str | None = None
        if websocket:
            if not isinstance(second, str) or not second.strip():
                raise HostCallError(f"{api}: the message handler must be a function or its name")
            on_message = second
            options = third if isinstance(third, Mapping) else {}
            customizer = options.get("customizationFunction")
            metadata: Any = options
        else:
            customizer = second if name != "registerWebStream" else None
            metadata = third
        if not self.registering:
            return NOT_IN_PHASE.format(api=api, name=path)
        problem = late_path_problem(path) or customizer_problem(customizer)
        if problem is not None:
            return problem
        if not self.may(Capability.ManageStreams):
            return insufficient(Capability.ManageStreams)
        summary, description, tags = route_metadata(metadata)
        self.stream_routes.pop(path, None)  # the same path twice: the last one wins
        self.stream_routes[path] = StreamRoute(
            path=path,
            script_uri=self.script_uri,
            customizer=customizer,
            on_message=on_message,
            summary=summary,
            description=description,
            tags=tags or ("Streams",),
        )
        kind = "WebSocket stream" if websocket else "Web stream"
        return f"{kind} '{path}' registered successfully"

    async def register_asset_route(self, path: Any, asset: Any, metadata: Any) -> str:
        assert self.assets is not None
        api = "routeRegistry.registerAssetRoute"
        if not isinstance(path, str):
            raise HostCallError(f"{api}: path must be a string")
        prefix = reserved_prefix_of(path)
        if prefix is not None:
            raise HostCallError(f"Path '{path}' is reserved for the engine (prefix '{prefix}')")
        if not self.may(Capability.WriteAssets):
            return access_denied(Capability.WriteAssets)
        if not path.startswith("/") or len(path) > MAX_ASSET_PATH_CHARS:
            return (
                f"Invalid asset path '{path}': path must start with '/' and be at most "
                f"{MAX_ASSET_PATH_CHARS} characters"
            )
        problem = name_problem(asset)
        if problem is not None:
            return problem
        if not self.registering:
            return NOT_IN_PHASE.format(api=api, name=path)
        try:
            exists = await self.assets.exists(self.script_uri, asset)
        except StorageUnavailable:
            raise HostCallError(f"{api}: storage is unavailable, try again later") from None
        if not exists:
            return f"Asset '{asset}' not found or not owned by script '{self.script_uri}'"
        summary, description, tags = route_metadata(metadata)
        self.asset_routes.pop(path, None)  # the same path twice: the last one wins
        self.asset_routes[path] = AssetRoute(
            path=path,
            script_uri=self.script_uri,
            asset=asset,
            summary=summary,
            description=description,
            tags=tags or ("Assets",),
        )
        return f"Asset path '{path}' registered to asset '{asset}'"

    def register_route(self, path: Any, handler: Any, method: Any, metadata: Any) -> str:
        api = "routeRegistry.registerRoute"
        if not isinstance(path, str):
            raise HostCallError(f"{api}: path must be a string")
        prefix = reserved_prefix_of(path)
        if prefix is not None:
            raise HostCallError(f"Path '{path}' is reserved for the engine (prefix '{prefix}')")
        if not isinstance(handler, str) or not handler.strip():
            raise HostCallError(f"{api}: handler must be the name of a function")
        if method is None:
            method = "GET"
        if not isinstance(method, str) or not _METHOD.match(method.strip().upper()):
            raise HostCallError(f'{api}: method must be an HTTP method name such as "GET"')
        method = method.strip().upper()
        if not self.registering:
            return NOT_IN_PHASE.format(api=api, name=path)
        summary, description, tags = route_metadata(metadata)
        key = (path, method)
        self.routes.pop(key, None)  # the same (path, method) twice: the last one wins
        self.routes[key] = Route(
            script_uri=self.script_uri,
            path=path,
            method=method,
            handler=handler,
            summary=summary,
            description=description,
            tags=tags,
            parameters_json=openapi_json(metadata, "parameters", list),
            request_body_json=openapi_json(metadata, "requestBody", dict),
        )
        return f"Route '{method} {path}' registered to handler '{handler}'"


def pad(args: list[Any], count: int) -> list[Any]:
    return list(args[:count]) + [None] * max(0, count - len(args))


def route_metadata(metadata: Any) -> tuple[str | None, str | None, tuple[str, ...]]:
    if not isinstance(metadata, Mapping):
        return None, None, ()
    summary = metadata.get("summary")
    description = metadata.get("description")
    tags = metadata.get("tags")
    return (
        summary if isinstance(summary, str) else None,
        description if isinstance(description, str) else None,
        tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
    )


def openapi_json(metadata: Any, key: str, kind: type) -> str | None:
    """``parameters``/``requestBody`` of route metadata as canonical JSON text, or ``None``.

    The original took them as JSON strings and ignored what did not parse; an array or
    object given directly is accepted as well.
    """
    if not isinstance(metadata, Mapping):
        return None
    value = metadata.get(key)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return None
    if not isinstance(value, kind):
        return None
    if isinstance(value, list) and not all(isinstance(item, dict) for item in value):
        return None
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return None


def fatal_message(handler: str, exc: EngineError) -> str:
    if exc.code == "SCRIPT_TIMEOUT" and exc.details:
        return exc.details
    detail = f": {exc.details}" if exc.details else ""
    return f"Handler '{handler}' failed with {exc.code}{detail}"
