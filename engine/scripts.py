"""The script lifecycle: upsert, init, registration swap, delete, and running route handlers.

A script version is *loaded* when its ``init()`` pass has run in a sandbox with the registration
phase open.  The registrations it made (top-level and inside ``init``) become the script's part
of the route table, swapped in together with the version in one synchronous step, so a request
sees either the old version with the old routes or the new one with the new routes -- never a
mix.  A request that already resolved its route keeps the version object it resolved and
finishes on it.

A failing ``init()`` leaves the previous version serving; the error is stored with the script and
written to its log.  Only a script that never loaded installs what it managed to register before
failing, as the original does.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
import structlog
import trio

from engine.assets import AssetHostApi
from engine.errors import (
    EngineError,
    HostCallError,
    NotFound,
    Overloaded,
    ScriptFailed,
    StorageUnavailable,
    ValidationError,
)
from engine.fetch import FetchService
from engine.flat_api import FlatReadApi
from engine.graphql import FieldRegistration
from engine.graphql_api import GraphQLHostApi
from engine.graphql_service import GraphQLService
from engine.http_contract import (
    HttpResponse,
    ScriptResponseError,
    build_http_context,
    response_from_result,
)
from engine.invocation_host import (
    MAX_DISPATCH_DEPTH,
    AssetRoute,
    InvocationHost,
    fatal_message,
)
from engine.logs import LogService, now_ms
from engine.routing import MatchResult, Route, RouteMatch, RouteTable
from engine.sandbox import Invocation, SandboxPool
from engine.script_graphql import GraphQLSupport
from engine.script_storage import ScriptStorageApi
from engine.secrets import AuditHook, SecretHostApi, SecretService
from engine.storage import Database, StoredScript
from engine.stream_api import (
    SCRIPT_UPDATES_PATH,
    StreamCustomizationFailed,
    StreamHostApi,
    StreamRoute,
    customization_metadata,
)
from engine.streams import StreamHub
from security import UserContext

log = structlog.get_logger("aiwebengine.scripts")

_MAX_URI_CHARS = 2048


@attrs.frozen
class ScriptSettings:
    handler_timeout_ms: int = 5000
    init_timeout_ms: int = 5000
    max_script_bytes: int = 1_000_000
    init_concurrency: int = 4
    # The development profile: anonymous callers hold every capability in host APIs.
    development: bool = True


@attrs.frozen
class LoadedScript:
    """One version of one script, as the route table serves it."""

    uri: str
    key: str
    source: str
    routes: tuple[Route, ...]
    listeners: tuple[tuple[str, str], ...] = ()  # (message type, handler name)
    asset_routes: tuple[AssetRoute, ...] = ()
    streams: tuple[StreamRoute, ...] = ()
    graphql: tuple[FieldRegistration, ...] = ()


@attrs.frozen
class InitReport:
    ran: bool
    success: bool
    duration_ms: int
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "ran": self.ran,
            "success": self.success,
            "durationMs": self.duration_ms,
            "error": self.error,
        }


@attrs.frozen
class UpsertReport:
    script: StoredScript
    previous_exists: bool
    init: InitReport


def version_key(uri: str, content: str) -> str:
    digest = hashlib.sha256(content.encode()).hexdigest()[:24]
    return f"{uri}#{digest}"


def validate_script(uri: str, content: str, *, max_bytes: int) -> None:
    """Raise :class:`ValidationError` naming the parameter and the rule it breaks."""
    if not uri.strip():
        raise ValidationError("uri", "must not be empty")
    if len(uri) > _MAX_URI_CHARS:
        raise ValidationError("uri", f"must be at most {_MAX_URI_CHARS} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in uri):
        raise ValidationError("uri", "must not contain control characters")
    if not content.strip():
        raise ValidationError("content", "must not be empty")
    size = len(content.encode())
    if size > max_bytes:
        raise ValidationError("content", f"must be at most {max_bytes} bytes (got {size})")


MAX_CHAIN = 4


def _message_data(data: Any) -> Any:
    """The listener's ``messageData``: JSON text parsed (the original's form), else as is."""
    if data is None:
        return {}
    if isinstance(data, str):
        try:
            return json.loads(data)
        except (ValueError, RecursionError):  # nested past what the decoder takes: text too
            return data
    return data


def _check_chain(uri: str, held: tuple[str, ...]) -> None:
    """Refuse what would wait forever on a lock the calling chain holds."""
    if uri in held:
        raise ValidationError(
            "chain",
            f"script '{uri}' is being initialised by this call chain "
            f"({' -> '.join(held)}); it cannot be replaced or deleted from inside it",
        )
    if len(held) >= MAX_CHAIN:
        raise ValidationError(
            "chain", f"scripts may change scripts from init() at most {MAX_CHAIN} levels deep"
        )


class ScriptService(GraphQLSupport):
    def __init__(
        self,
        database: Database,
        pool: SandboxPool,
        logs: LogService,
        settings: ScriptSettings,
        hub: StreamHub | None = None,
        *,
        fetch: FetchService | None = None,
        secrets: SecretService | None = None,
        audit: AuditHook | None = None,
    ) -> None:
        self._database = database
        self._pool = pool
        self._logs = logs
        self._storage = ScriptStorageApi(database.storage)
        self._assets = AssetHostApi(database.assets)
        self._fetch = fetch
        self._secrets = None if secrets is None else SecretHostApi(secrets, audit=audit)
        self._audit = audit
        # Asset routes by exact path, rebuilt from the loaded scripts whenever one changes.
        self._asset_paths: dict[str, AssetRoute] = {}
        # Stream paths likewise; the hub holds their subscribers.
        self._stream_paths: dict[str, StreamRoute] = {}
        self.hub = hub if hub is not None else StreamHub()
        self.graphql: GraphQLService | None = None
        self._graphql_lock = trio.Lock()
        self._graphql_api = GraphQLHostApi(self.hub, self._execute_graphql)
        self._streams = StreamHostApi(self.hub, self._stream_paths.keys())
        self._flat = FlatReadApi(database, logs)
        self.settings = settings
        self._loaded: dict[str, LoadedScript] = {}
        self._table = RouteTable.build({})
        self._locks: dict[str, trio.Lock] = {}
        self._ids = itertools.count(1)

    def _host(self, script_uri: str, request_id: str, kind: str, **options: Any) -> InvocationHost:
        """An invocation host wired to this service's host APIs."""
        return InvocationHost(
            script_uri=script_uri,
            request_id=request_id,
            kind=kind,
            storage=self._storage,
            assets=self._assets,
            streams=self._streams,
            graphql=self._graphql_api,
            fetch=self._fetch,
            secrets=self._secrets,
            flat=self._flat,
            writes=self,
            development=self.settings.development,
            audit=self._audit,
            **options,
        )

    # -- reading -------------------------------------------------------------------------

    @property
    def routes(self) -> RouteTable:
        return self._table

    def loaded(self, uri: str) -> LoadedScript | None:
        return self._loaded.get(uri)

    async def exists(self, uri: str) -> bool:
        """Is a script stored under ``uri`` (loaded or not)?"""
        return await self._database.scripts.get(uri) is not None

    def asset_route(self, path: str) -> AssetRoute | None:
        """The asset route registered for exactly ``path`` (GET and HEAD only)."""
        return self._asset_paths.get(path)

    def asset_routes(self) -> list[AssetRoute]:
        return list(self._asset_paths.values())

    def stream_route(self, path: str) -> StreamRoute | None:
        """The stream registered for exactly ``path`` (SSE and WebSocket)."""
        return self._stream_paths.get(path)

    def stream_routes(self) -> list[StreamRoute]:
        return list(self._stream_paths.values())

    def _rebuild_paths(self) -> None:
        """Index asset routes and streams by path after a script changed.  The first script
        loaded keeps a path another script registers as well.  Subscribers of a stream that
        is gone are closed; a stream that stays keeps its subscribers."""
        assets: dict[str, AssetRoute] = {}
        streams: dict[str, StreamRoute] = {}
        for script in self._loaded.values():
            for route in script.asset_routes:
                assets.setdefault(route.path, route)
            for stream in script.streams:
                streams.setdefault(stream.path, stream)
        self._asset_paths = assets
        removed = self._stream_paths.keys() - streams.keys()
        # Mutated in place: the broadcast API holds this dict's membership test.
        self._stream_paths.clear()
        self._stream_paths.update(streams)
        for path in removed:
            self.hub.close_path(path, "the stream was removed")

    def resolve(self, path: str, method: str) -> tuple[MatchResult, LoadedScript | None]:
        """Match a request and pin the script version that will serve it."""
        match = self._table.match(path, method)
        if isinstance(match, RouteMatch):
            return match, self._loaded.get(match.route.script_uri)
        return match, None

    # -- lifecycle -----------------------------------------------------------------------

    def _lock(self, uri: str) -> trio.Lock:
        lock = self._locks.get(uri)
        if lock is None:
            lock = self._locks[uri] = trio.Lock()
        return lock

    async def upsert(self, uri: str, content: str, *, held: tuple[str, ...] = ()) -> UpsertReport:
        """Store, init and swap in a new version.  ``held`` are the scripts whose init() is
        running up the calling chain (a script's init upserting scripts)."""
        validate_script(uri, content, max_bytes=self.settings.max_script_bytes)
        _check_chain(uri, held)
        # Once stored, the new version must be initialised and swapped in (or refused) even if
        # the caller goes away; the init deadline bounds how long this can take.
        with trio.CancelScope(shield=True):
            report = await self._upsert(uri, content, held)
        return report

    async def _upsert(self, uri: str, content: str, held: tuple[str, ...]) -> UpsertReport:
        async with self._lock(uri):
            outcome = await self._database.scripts.upsert(uri, content, now_ms())
            report = await self._initialize(outcome.script, is_startup=False, held=held)
            stored = await self._database.scripts.get(uri) or outcome.script
        self._announce(
            uri,
            "updated" if outcome.previous_exists else "inserted",
            content_length=stored.size,
            previous_exists=outcome.previous_exists,
        )
        return UpsertReport(stored, outcome.previous_exists, report)

    def _announce(
        self, uri: str, action: str, *, content_length: int, previous_exists: bool
    ) -> None:
        """A script change message on ``/engine/script_updates``."""
        message = {
            "type": "script_update",
            "uri": uri,
            "action": action,
            "timestamp": iso_timestamp(),
            "contentLength": content_length,
            "previousExists": previous_exists,
        }
        self.hub.publish(SCRIPT_UPDATES_PATH, json.dumps(message, separators=(",", ":")))

    async def delete(self, uri: str, *, held: tuple[str, ...] = ()) -> bool:
        _check_chain(uri, held)
        async with self._lock(uri):
            existed = await self._database.scripts.delete(uri)
            previous = self._loaded.get(uri)
            self._unload(uri)
            await self._drop_graphql(uri, previous)
        self._locks.pop(uri, None)
        if existed:
            self._announce(uri, "removed", content_length=0, previous_exists=True)
        return existed

    def _unload(self, uri: str) -> None:
        if self._loaded.pop(uri, None) is not None:
            self._table = self._table.without_script(uri)
            self._rebuild_paths()
        self._pool.forget_script(uri)

    def _swap(
        self,
        stored: StoredScript,
        key: str,
        host: InvocationHost,
        fields: tuple[FieldRegistration, ...],
    ) -> None:
        """Install a version with everything it registered, in one step: nothing awaits here."""
        previous = self._loaded.get(stored.uri)
        version = LoadedScript(
            stored.uri,
            key,
            stored.content,
            tuple(host.routes.values()),
            tuple(dict.fromkeys(host.listeners)),  # registered twice: once
            tuple(host.asset_routes.values()),
            tuple(host.stream_routes.values()),
            fields,
        )
        self._loaded[stored.uri] = version
        self._table = self._table.with_script(stored.uri, version.routes)
        self._rebuild_paths()
        if previous is not None and previous.key != key:
            # A new version starts with a clean record.
            self._pool.forget_script(stored.uri)

    async def reinit(self, uri: str) -> InitReport | None:
        """Run the stored script's ``init()`` again (its assets changed); ``None`` when there
        is no such script."""
        report: InitReport | None = None
        with trio.CancelScope(shield=True):
            async with self._lock(uri):
                stored = await self._database.scripts.get(uri)
                if stored is not None:
                    report = await self._initialize(stored, is_startup=False)
        return report

    async def load_all(self) -> None:
        """Load and init every stored script, a bounded number at a time.  Failures are
        recorded per script and never stop the others."""
        scripts = await self._database.scripts.list_all()
        limiter = trio.Semaphore(max(1, self.settings.init_concurrency))

        async def load(stored: StoredScript) -> None:
            async with limiter, self._lock(stored.uri):
                fallback = stored.good_content
                has_fallback = fallback is not None and fallback != stored.content
                report = await self._initialize(
                    stored, is_startup=True, install_partial=not has_fallback
                )
                if not report.success and has_fallback:
                    # The newest upload never worked: serve the last version that did, as the
                    # running engine did before the restart.  Its status keeps the failure.
                    assert fallback is not None
                    log.warning("serving the last good version", script=stored.uri)
                    await self._initialize(
                        attrs.evolve(stored, content=fallback), is_startup=True, record=False
                    )

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for stored in scripts:
                nursery.start_soon(load, stored)
        log.info(
            "scripts loaded",
            count=len(scripts),
            failed=sum(1 for s in scripts if s.uri not in self._loaded),
            seconds=round(time.perf_counter() - started, 3),
        )

    async def _initialize(
        self,
        stored: StoredScript,
        *,
        is_startup: bool,
        install_partial: bool = True,
        record: bool = True,
        held: tuple[str, ...] = (),
    ) -> InitReport:
        """Run the registration pass of ``stored.content`` and swap it in if it succeeds.

        A failure swaps in what was registered before it only when the script has no version
        serving yet and ``install_partial`` allows it.  ``record`` stores the outcome as the
        script's init status (and, on success, the content as its last good version).
        """
        request_id = f"init_{now_ms()}_{next(self._ids)}"
        host = self._host(
            stored.uri, request_id, "init", route=None, registering=True, held=(*held, stored.uri)
        )
        context: dict[str, Any] = {
            "kind": "init",
            "invocationId": request_id,
            "scriptUri": stored.uri,
            "handlerName": "init",
            "request": {"query": {}},
            "args": None,
            "meta": {
                "init": {"scriptName": stored.uri, "timestamp": now_ms(), "isStartup": is_startup}
            },
        }
        key = version_key(stored.uri, stored.content)
        started = time.perf_counter()
        ran = True
        error: str | None = None
        try:
            result = await self._pool.invoke(
                Invocation(
                    invocation_id=request_id,
                    script_uri=stored.uri,
                    script_key=key,
                    source=stored.content,
                    handler="init",
                    phase="init",
                    context=context,
                    timeout_ms=self.settings.init_timeout_ms,
                    host=host,
                )
            )
            ran = bool(result.value.get("ran"))
        except EngineError as exc:
            # The pass ran unless the script failed to evaluate or never reached a worker.
            ran = not isinstance(exc, Overloaded) and not (
                isinstance(exc, ScriptFailed) and exc.kind == "eval"
            )
            error = exc.details or exc.message
            if exc.code == "SCRIPT_TIMEOUT":
                error = (
                    f"init() exceeded its {self.settings.init_timeout_ms}ms budget and was stopped"
                )
        fields = tuple(host.graphql_fields.values())
        previous = self._loaded.get(stored.uri)
        install = error is None or (install_partial and previous is None)
        if install and self._touches_graphql(previous, fields):
            # The schema is rebuilt from every script's fields under one lock, and swapped in
            # with the version, so concurrent deploys cannot lose each other's fields.
            async with self._graphql_lock:
                pair, refused = await self._build_graphql(stored.uri, fields)
                if refused is not None:
                    error = refused if error is None else f"{error}; {refused}"
                    install = install_partial and previous is None
                if install:
                    served = set(pair.external.accepted) | set(pair.engine.accepted)
                    self._swap(stored, key, host, tuple(f for f in fields if f in served))
                    self._graphql_install(pair)
        elif install:
            self._swap(stored, key, host, fields)
        duration_ms = round((time.perf_counter() - started) * 1000)
        report = InitReport(ran=ran, success=error is None, duration_ms=duration_ms, error=error)
        if error is not None:
            host.lines.append(host.entry("FATAL", f"init failed: {error}"))
        await self._logs.write(host.lines)
        if record:
            try:
                await self._database.scripts.record_init(
                    stored.uri,
                    success=report.success,
                    error=error,
                    at_ms=now_ms(),
                    content=stored.content,
                )
            except StorageUnavailable:
                log.warning("init status not recorded: storage unavailable", script=stored.uri)
        log.info(
            "script initialized" if report.success else "script init failed",
            script=stored.uri,
            routes=len(host.routes),
            duration_ms=duration_ms,
            error=error,
        )
        return report

    # -- the dispatcher ------------------------------------------------------------------

    async def dispatch(self, message_type: Any, data: Any, *, depth: int) -> str:
        """``dispatcher.sendMessage``: run every listener of ``message_type``, one after the
        other, each in its own invocation; count what succeeded."""
        if not isinstance(message_type, str) or not message_type.strip():
            return "dispatcher.sendMessage: message type cannot be empty"
        if depth > MAX_DISPATCH_DEPTH:
            raise HostCallError(
                f"dispatcher.sendMessage: messages sent by listeners may nest at most "
                f"{MAX_DISPATCH_DEPTH} levels deep"
            )
        listeners = [
            (script, handler)
            for script in list(self._loaded.values())
            for listened, handler in script.listeners
            if listened == message_type
        ]
        if not listeners:
            return f"No listeners for message type '{message_type}'"
        payload = _message_data(data)
        succeeded = 0
        for script, handler in listeners:
            if await self._run_listener(script, handler, message_type, payload, depth):
                succeeded += 1
        failed = len(listeners) - succeeded
        return f"Dispatched message type '{message_type}': {succeeded} successful, {failed} failed"

    async def _run_listener(
        self, script: LoadedScript, handler: str, message_type: str, data: Any, depth: int
    ) -> bool:
        request_id = f"msg_{now_ms()}_{next(self._ids)}"
        host = self._host(
            script.uri, request_id, "messageListener", route=None, registering=False, depth=depth
        )
        try:
            await self._pool.invoke(
                Invocation(
                    invocation_id=request_id,
                    script_uri=script.uri,
                    script_key=script.key,
                    source=script.source,
                    handler=handler,
                    phase="handler",
                    context={"messageType": message_type, "messageData": data},
                    timeout_ms=self.settings.handler_timeout_ms,
                    host=host,
                    nested=True,
                )
            )
            return True
        except EngineError as exc:
            host.lines.append(host.entry("FATAL", fatal_message(handler, exc)))
            return False
        finally:
            with trio.CancelScope(shield=True):
                await self._logs.write(host.lines)

    # -- streams -------------------------------------------------------------------------

    async def stream_metadata(
        self, route: StreamRoute, request: Mapping[str, Any], request_id: str
    ) -> dict[str, str]:
        """A new subscriber's metadata: its query parameters, or what the stream's
        customization function returns for them (an object of strings)."""
        query = dict(request.get("query") or {})
        if route.customizer is None:
            return {str(k): str(v) for k, v in query.items()}
        context = {
            "kind": "streamCustomization",
            "invocationId": request_id,
            "scriptUri": route.script_uri,
            "handlerName": route.customizer,
            "request": {**request, "method": "GET", "path": route.path},
            "args": query,
            "meta": {"stream": {"path": route.path}},
        }
        try:
            value = await self._invoke_value(
                route.script_uri,
                route.customizer,
                "streamCustomization",
                context,
                request_id,
                route=route.path,
            )
        except ScriptFailed as exc:
            raise StreamCustomizationFailed(exc.details or exc.message) from None
        return customization_metadata(value)

    async def websocket_message(
        self,
        route: StreamRoute,
        message: str,
        connection_id: str,
        metadata: Mapping[str, str],
        request_id: str,
        user: UserContext | None = None,
    ) -> str | None:
        """Run the stream's message handler for one incoming WebSocket message; its non-empty
        string result is the reply to that client."""
        if route.on_message is None:
            return None
        context = {
            "kind": "websocketMessage",
            "invocationId": request_id,
            "scriptUri": route.script_uri,
            "handlerName": route.on_message,
            "request": {"path": route.path, "method": "GET", "query": dict(metadata)},
            "args": {"message": message, "connectionId": connection_id, "metadata": dict(metadata)},
            "meta": {"stream": {"path": route.path}},
        }
        value = await self._invoke_value(
            route.script_uri,
            route.on_message,
            "websocketMessage",
            context,
            request_id,
            route=route.path,
            user=user,
        )
        reply = value.get("value")
        return reply if value.get("valueType") == "string" and reply else None

    async def _invoke_value(
        self,
        script_uri: str,
        handler: str,
        kind: str,
        context: dict[str, Any],
        request_id: str,
        *,
        route: str,
        nested: bool = False,
        depth: int = 0,
        user: UserContext | None = None,
    ) -> dict[str, Any]:
        """Run ``handler`` for the value it returns (``{valueType, value}``); ``user`` is who
        triggered it (the engine's own invocations run as admin whoever that is)."""
        script = self._loaded.get(script_uri)
        if script is None:
            raise NotFound(f"Script '{script_uri}' is not loaded")
        host = self._host(
            script.uri, request_id, kind, route=route, registering=False, depth=depth, user=user
        )
        try:
            result = await self._pool.invoke(
                Invocation(
                    invocation_id=request_id,
                    script_uri=script.uri,
                    script_key=script.key,
                    source=script.source,
                    handler=handler,
                    phase="value",
                    context=context,
                    timeout_ms=self.settings.handler_timeout_ms,
                    host=host,
                    nested=nested,
                )
            )
            if result.value.get("type") == "promise":
                raise ScriptFailed(
                    f"Handler '{handler}' returned a promise; it must return its value directly"
                )
            return result.value
        except EngineError as exc:
            host.lines.append(host.entry("FATAL", fatal_message(handler, exc)))
            raise
        finally:
            with trio.CancelScope(shield=True):
                await self._logs.write(host.lines)

    # -- serving -------------------------------------------------------------------------

    async def invoke_route(
        self,
        match: RouteMatch,
        script: LoadedScript,
        request: dict[str, Any],
        request_id: str,
        user: UserContext | None = None,
    ) -> HttpResponse:
        """Run the matched handler as ``user`` (anonymous when ``None``); raises an
        ``engine.errors`` value on any script failure."""
        route = match.route
        host = self._host(
            script.uri,
            request_id,
            "httpRoute",
            route=route.path,
            registering=False,
            user=user,
        )
        context = build_http_context(
            request=request, request_id=request_id, script_uri=script.uri, handler=route.handler
        )
        try:
            result = await self._pool.invoke(
                Invocation(
                    invocation_id=request_id,
                    script_uri=script.uri,
                    script_key=script.key,
                    source=script.source,
                    handler=route.handler,
                    phase="handler",
                    context=context,
                    timeout_ms=self.settings.handler_timeout_ms,
                    host=host,
                )
            )
            try:
                return response_from_result(result.value, handler=route.handler)
            except ScriptResponseError as exc:
                raise ScriptFailed(exc.details) from None
        except EngineError as exc:
            host.lines.append(host.entry("FATAL", fatal_message(route.handler, exc)))
            raise
        except trio.Cancelled:
            host.hand_over(self._logs, route.handler)
            raise
        finally:
            upto = host.written if host.abandoned else len(host.lines)
            with trio.CancelScope(shield=True):
                await self._logs.write(host.lines[:upto])


def iso_timestamp() -> str:
    moment = datetime.now(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
