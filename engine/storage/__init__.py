"""The database: schema, migrations and the repositories the engine stores through.

``Database.open(url)`` connects (SQLite in WAL mode by default, PostgreSQL by URL), migrates
to the newest revision and exposes ``scripts``, ``logs``, ``storage`` and ``assets``
repositories.  Every call runs in a worker thread behind one circuit breaker and raises
``engine.errors.StorageUnavailable`` when the database fails or the breaker is open.
``migrate(url)`` is the same upgrade, blocking, for the command line.

Implementation: ``_tables`` (schema), ``_runner`` (threads, transactions, breaker),
``_database`` (engine, SQLite settings, migrations), ``_scripts``, ``_logs``, ``_kv``,
``_assets``, ``_audit`` and ``_secrets`` (repositories; ``_kv`` backs the scripts' shared
and personal storage, ``_assets`` the files each script owns, ``_audit`` the append-only audit
trail, ``_secrets`` the sealed secrets of scripts and their users);
``migrations/`` holds the Alembic environment.
"""

from engine.storage._assets import (
    AssetInfo,
    AssetRepository,
    AssetWrite,
    StoredAsset,
    WriteResult,
)
from engine.storage._audit import (
    MAX_AUDIT_PAGE,
    AuditEntry,
    AuditQuery,
    AuditRepository,
    NewAuditEntry,
)
from engine.storage._database import Database, migrate
from engine.storage._kv import SHARED, KeyValueRepository
from engine.storage._logs import (
    MAX_CONTAINS_LENGTH,
    LogEntry,
    LogQuery,
    LogRepository,
    NewLogEntry,
)
from engine.storage._scripts import ScriptRepository, StoredScript, UpsertOutcome
from engine.storage._secrets import SecretOwner, SecretRepository, StoredSecret

__all__ = [
    "MAX_AUDIT_PAGE",
    "MAX_CONTAINS_LENGTH",
    "SHARED",
    "AssetInfo",
    "AssetRepository",
    "AssetWrite",
    "AuditEntry",
    "AuditQuery",
    "AuditRepository",
    "Database",
    "KeyValueRepository",
    "LogEntry",
    "LogQuery",
    "LogRepository",
    "NewAuditEntry",
    "NewLogEntry",
    "ScriptRepository",
    "SecretOwner",
    "SecretRepository",
    "StoredAsset",
    "StoredScript",
    "StoredSecret",
    "UpsertOutcome",
    "WriteResult",
    "migrate",
]
