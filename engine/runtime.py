"""The running engine: every service, started and stopped as one unit.

:class:`EngineRuntime` is what the HTTP surfaces talk to.  ``start`` opens the database (and
migrates it), starts the sandbox pool inside a nursery the runtime owns, and loads every stored
script; ``stop`` drains nothing by itself (the server drains requests before calling it) and
then stops the pool, which kills every worker process, and closes the database.
"""

from __future__ import annotations

import gc
import itertools
import os
import time
import uuid
from importlib import resources
from typing import Any

import attrs
import structlog
import trio

from engine import __version__
from engine.assets import AssetService
from engine.audit import AuditLog
from engine.breaker import CircuitBreaker
from engine.config import Config
from engine.fetch import FetchService, FetchSettings
from engine.graphql import GraphQLRuntime
from engine.graphql_service import GraphQLService
from engine.logs import LogService
from engine.sandbox import PoolSettings, SandboxPool
from engine.scripts import ScriptService, ScriptSettings
from engine.secrets import SecretService, load_secret_box
from engine.storage import Database
from engine.streams import StreamHub

log = structlog.get_logger("aiwebengine")

EXAMPLE_SCRIPT_URI = "https://example.com/hello"


@attrs.frozen
class Readiness:
    database: str
    pool: str
    ready: bool


def pool_settings(config: Config) -> PoolSettings:
    s = config.sandbox
    return PoolSettings(
        size=s.effective_pool_size(),
        warm_spares=s.warm_spares,
        memory_limit_bytes=s.memory_limit_bytes,
        stack_limit_bytes=s.stack_limit_bytes,
        address_space_bytes=s.address_space_bytes,
        context_cache_size=s.context_cache_size,
        queue_limit=s.queue_limit,
        breaker_failure_threshold=s.breaker_failure_threshold,
        breaker_window_s=s.breaker_window_s,
        breaker_cooldown_s=s.breaker_cooldown_s,
        deprioritize_after_ms=s.deprioritize_after_ms,
    )


class EngineRuntime:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.instance_id = uuid.uuid4().hex[:12]
        self.pool = SandboxPool(pool_settings(config))
        self._database: Database | None = None
        self._scripts: ScriptService | None = None
        self._logs: LogService | None = None
        self._assets: AssetService | None = None
        self._secrets: SecretService | None = None
        self._fetch: FetchService | None = None
        self._audit: AuditLog | None = None
        self._audit_cancel: trio.CancelScope | None = None
        self._graphql: GraphQLService | None = None
        self._graphql_cancel: trio.CancelScope | None = None
        # Set when the server starts draining: live connections end, new ones are refused.
        self.shutting_down = trio.Event()
        streams = config.streams
        # Subscribers live here from the first connection to the last: the hub exists for the
        # runtime's whole life, so transports never see it missing.
        self.streams = StreamHub(
            queue_size=streams.queue_size,
            replay_size=streams.replay_size,
            max_per_path=streams.max_per_stream,
            max_total=streams.max_total,
        )
        self._cancel: trio.CancelScope | None = None
        self._stopped = trio.Event()
        self._request_counter = itertools.count(1)
        self.started = False
        self._started_event = trio.Event()

    # Services exist only between start() and stop(); reaching for one outside that window is a
    # programming error, so the properties assert instead of returning Optional.
    @property
    def database(self) -> Database:
        assert self._database is not None, "engine not started"
        return self._database

    @property
    def scripts(self) -> ScriptService:
        assert self._scripts is not None, "engine not started"
        return self._scripts

    @property
    def graphql(self) -> GraphQLService:
        assert self._graphql is not None, "engine not started"
        return self._graphql

    @property
    def assets(self) -> AssetService:
        assert self._assets is not None, "engine not started"
        return self._assets

    @property
    def audit(self) -> AuditLog:
        assert self._audit is not None, "engine not started"
        return self._audit

    @property
    def secrets(self) -> SecretService:
        assert self._secrets is not None, "engine not started"
        return self._secrets

    async def _audit_event(self, event: dict[str, Any]) -> None:
        """A security event from a service that reports events as dicts (secrets, fetch)."""
        await self.audit.record(**event)

    @property
    def logs(self) -> LogService:
        assert self._logs is not None, "engine not started"
        return self._logs

    def new_request_id(self) -> str:
        return f"req_{int(time.time() * 1000)}_{next(self._request_counter)}"

    async def start(self, nursery: trio.Nursery) -> None:
        config = self.config
        db = config.database
        self._database = await Database.open(
            config.database_url(),
            threads=db.threads,
            synchronous=db.sqlite_synchronous,
            breaker=CircuitBreaker(
                db.breaker_failure_threshold, db.breaker_window_s, db.breaker_cooldown_s
            ),
            on_progress=lambda message: log.info(message),
        )
        self._logs = LogService(self._database.logs)
        self._audit = AuditLog(self._database.audit)
        await nursery.start(self._run_audit, self._audit)
        await nursery.start(self._run_pool)
        box = await trio.to_thread.run_sync(load_secret_box, config)
        self._secrets = SecretService(self._database.secrets, box)
        fetch = FetchSettings(
            config.fetch.timeout_s,
            config.fetch.max_response_bytes,
            config.fetch.allowed_networks(),
        )
        self._fetch = FetchService(fetch, secrets=self._secrets, audit=self._audit_event)
        self._scripts = ScriptService(
            self._database,
            self.pool,
            self._logs,
            ScriptSettings(
                handler_timeout_ms=config.sandbox.handler_timeout_ms,
                init_timeout_ms=config.sandbox.init_timeout_ms,
                max_script_bytes=config.sandbox.max_script_bytes,
                init_concurrency=config.sandbox.effective_init_concurrency(),
                development=not config.is_production,
            ),
            self.streams,
            fetch=self._fetch,
            secrets=self._secrets,
            audit=self._audit_event,
        )
        self._assets = AssetService(self._database.assets, self._scripts.reinit)
        graphql_runtime: GraphQLRuntime = await nursery.start(self._run_graphql)
        self._graphql = GraphQLService(
            graphql_runtime, self._scripts.resolve_field, self._scripts.subscription_source
        )
        await self._scripts.attach_graphql(self._graphql)
        # Only a brand-new database gets the example: one an administrator emptied stays empty.
        if config.server.install_example and self._database.created:
            source = resources.files("engine.examples").joinpath("hello.js").read_text("utf-8")
            await self._database.scripts.upsert(EXAMPLE_SCRIPT_URI, source, int(time.time() * 1000))
            log.info("installed the example script", uri=EXAMPLE_SCRIPT_URI)
        await self._scripts.load_all()
        _tune_garbage_collector()
        self.started = True
        self._started_event.set()
        log.info(
            "engine started",
            profile=config.profile.value,
            instance=self.instance_id,
            pid=os.getpid(),
            version=__version__,
        )

    async def _run_pool(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.CancelScope() as scope:
            self._cancel = scope
            try:
                await self.pool.run(task_status=task_status)
            finally:
                self._stopped.set()

    async def _run_graphql(
        self, *, task_status: trio.TaskStatus[GraphQLRuntime] = trio.TASK_STATUS_IGNORED
    ) -> None:
        # GraphQL's asyncio loop lives as long as the engine; stop() closes it.
        with trio.CancelScope() as scope:
            self._graphql_cancel = scope
            await GraphQLRuntime.run(task_status=task_status)

    async def _run_audit(
        self, audit: AuditLog, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.CancelScope() as scope:
            self._audit_cancel = scope
            await audit.run(task_status=task_status)

    async def wait_started(self) -> None:
        await self._started_event.wait()

    def begin_shutdown(self) -> None:
        """The server is draining: end every stream subscriber (SSE gets its final event,
        WebSockets close with 1001) and refuse new ones, since a stream never ends by itself
        and the server waits for open connections before it stops."""
        if not self.shutting_down.is_set():
            self.shutting_down.set()
            self.streams.shut("the engine is shutting down")

    async def stop(self) -> None:
        self.started = False
        self.begin_shutdown()
        if self._graphql_cancel is not None:
            self._graphql_cancel.cancel()
        if self._cancel is not None:
            self._cancel.cancel()
            with trio.move_on_after(10):
                await self._stopped.wait()
        if self._audit is not None:
            # The last events are stored before the database closes.
            if self._audit_cancel is not None:
                self._audit_cancel.cancel()
            await self._audit.flush()
        if self._database is not None:
            await self._database.aclose()
        log.info("engine stopped", instance=self.instance_id)

    async def readiness(self) -> Readiness:
        database = "ok"
        try:
            await self.database.ping()
        except Exception as exc:  # any failure means "not ready"; the reason is reported
            database = f"error: {type(exc).__name__}"
        stats = self.pool.stats()
        pool = "ok" if stats.ready else f"degraded: {stats.live}/{stats.size} workers"
        return Readiness(database, pool, self.started and database == "ok" and stats.ready)


# The first generation is collected every 700 allocations by default.  A broadcast to
# thousands of subscribers allocates a few objects per subscriber, and collections then took
# about two thirds of its time (measured with py-spy in the fan-out benchmark).  Almost
# everything here is freed by reference counting; the collector only finds cycles, and
# finding them a little later costs little memory.  Objects alive after start-up (modules,
# configuration, loaded scripts) are frozen out of the collector's scans altogether.
GC_FIRST_GENERATION_THRESHOLD = 50_000


_frozen = False


def _tune_garbage_collector() -> None:
    global _frozen
    _, second, third = gc.get_threshold()
    gc.set_threshold(max(GC_FIRST_GENERATION_THRESHOLD, gc.get_threshold()[0]), second, third)
    if not _frozen:  # once per process: later start-ups (tests) must not pin garbage
        gc.collect()
        gc.freeze()
        _frozen = True
