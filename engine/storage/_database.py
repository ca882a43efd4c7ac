"""Opening the database: the SQLAlchemy engine, SQLite's settings, migrations, and the
:class:`Database` handle the rest of the engine holds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import alembic.command
import alembic.config
import sqlalchemy as sa
import structlog
import trio
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.pool import NullPool

from engine.breaker import BreakerState, CircuitBreaker
from engine.storage._assets import AssetRepository
from engine.storage._audit import AuditRepository
from engine.storage._kv import KeyValueRepository
from engine.storage._logs import LogRepository
from engine.storage._runner import WRITE_OPTION, Runner
from engine.storage._scripts import ScriptRepository
from engine.storage._secrets import SecretRepository

SYNCHRONOUS_MODES: Final = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
BUSY_TIMEOUT_MS: Final = 5000
MIGRATIONS_DIR: Final = Path(__file__).parent / "migrations"

ProgressCallback = Callable[[str], None]

_log = structlog.get_logger(__name__)


def _default_breaker() -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=5, window_s=30.0, cooldown_s=10.0)


class Database:
    """The open database: repositories, breaker and health.  Create with :meth:`open`."""

    def __init__(self, engine: sa.Engine, runner: Runner, breaker: CircuitBreaker) -> None:
        self._engine = engine
        self._runner = runner
        self.breaker = breaker
        self.scripts = ScriptRepository(runner)
        self.logs = LogRepository(runner)
        self.storage = KeyValueRepository(runner)
        self.assets = AssetRepository(runner)
        self.secrets = SecretRepository(runner)
        self.audit = AuditRepository(runner)
        # True when open() found no schema and created it: a brand-new database.
        self.created = False

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        threads: int = 8,
        synchronous: str = "FULL",
        breaker: CircuitBreaker | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Database:
        """Connect, create the SQLite file's directory if needed, and migrate to the newest
        revision.  ``threads`` bounds the concurrent database calls (and the pool size).

        ``on_progress`` is called on the Trio thread.  Raises ``StorageUnavailable`` when the
        database cannot be reached, ``ValueError`` for a URL or setting it cannot use.
        """
        if threads < 1:
            raise ValueError("threads must be at least 1")
        engine = build_engine(url, synchronous=synchronous, pool_size=threads)
        breaker = breaker if breaker is not None else _default_breaker()
        runner = Runner(engine, breaker, trio.CapacityLimiter(threads))

        report: ProgressCallback | None = None
        if on_progress is not None:
            callback = on_progress

            def report(message: str) -> None:
                trio.from_thread.run_sync(callback, message)

        try:
            created = await runner.call(lambda: upgrade(engine, report))
        except BaseException:
            # Not awaited in a thread: this may run while the caller is being cancelled.  At
            # most a connection or two are open here.
            engine.dispose()
            raise
        database = cls(engine, runner, breaker)
        database.created = created
        return database

    async def ping(self) -> None:
        """One round trip through the breaker; raises ``StorageUnavailable`` if it fails."""
        await self._runner.read(lambda conn: conn.execute(sa.select(sa.literal(1))).scalar_one())

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._engine.dispose)

    @property
    def healthy(self) -> bool:
        return self.breaker.state is BreakerState.CLOSED


def migrate(url: str, on_progress: ProgressCallback | None = None) -> None:
    """Bring the database at ``url`` to the newest revision (blocking)."""
    engine = build_engine(url)
    try:
        upgrade(engine, on_progress)
    finally:
        engine.dispose()


def upgrade(engine: sa.Engine, on_progress: ProgressCallback | None = None) -> bool:
    """Apply the pending migrations through ``engine``, all in one write transaction.

    The transaction takes the write lock before reading the current revision, so two
    processes starting on a fresh file do not both try to create the tables: the second one
    waits, then finds nothing to do.
    """
    report = on_progress if on_progress is not None else _ignore
    _ensure_sqlite_directory(engine.url)
    config = alembic.config.Config()
    # ConfigParser interpolation would read a '%' in the path as a reference.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            current = MigrationContext.configure(conn).get_current_revision()
            # env.py runs the migrations on this connection, inside this transaction.
            config.attributes["connection"] = conn
            for revision in reversed(list(script.iterate_revisions(head, current))):
                report(f"migrating database: {Path(revision.path).stem} ({revision.doc})")
                alembic.command.upgrade(config, revision.revision)
    report(f"database at revision {head}")
    return current is None


def build_engine(url: str, *, synchronous: str = "FULL", pool_size: int | None = None) -> sa.Engine:
    """An engine for ``url``; without ``pool_size`` every call opens its own connection."""
    parsed = sa.make_url(url)
    mode = synchronous.upper()
    if mode not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {', '.join(sorted(SYNCHRONOUS_MODES))}")
    pooling: dict[str, Any] = (
        {"poolclass": NullPool}
        if pool_size is None
        # The thread limiter already bounds concurrent calls; a connection is always free.
        else {"pool_size": pool_size, "max_overflow": 0}
    )
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, **pooling)
    if _is_memory_database(parsed):
        # Each pooled connection would see its own empty database.
        raise ValueError("an in-memory SQLite database is not supported; give a file path")
    engine = sa.create_engine(parsed, **pooling)
    _install_sqlite_hooks(engine, mode)
    return engine


def _install_sqlite_hooks(engine: sa.Engine, synchronous: str) -> None:
    @sa.event.listens_for(engine, "connect")
    def configure_connection(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling skips BEGIN before a SELECT, so a
        # read-then-write would not be atomic; the ``begin`` hook below emits BEGIN instead.
        dbapi_connection.isolation_level = None
        # SQLite's lower() folds ASCII only; log queries promise case-insensitive matching of
        # any text (``ilike`` and ``icontains`` compile to lower() on SQLite).
        dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            (journal_mode,) = cursor.execute("PRAGMA journal_mode = WAL").fetchone()
            if str(journal_mode).lower() != "wal":
                _log.warning("sqlite refused WAL mode", journal_mode=journal_mode)
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _is_memory_database(url: sa.URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _ensure_sqlite_directory(url: sa.URL) -> None:
    if url.get_backend_name() != "sqlite" or url.database is None:
        return
    if url.query.get("uri") in ("true", "1") or url.database.startswith("file:"):
        return  # a SQLite URI names its file itself; leave it to SQLite
    Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def _ignore(_message: str) -> None:
    pass
