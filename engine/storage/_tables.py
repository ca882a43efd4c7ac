"""The schema as SQLAlchemy Core tables: what the repositories query.

The migrations in ``migrations/versions`` create the same schema by hand (a migration is frozen
in time and must not import these definitions); a test compares the two.  Types are chosen to
mean the same thing on SQLite and PostgreSQL: text, booleans and epoch milliseconds as
``BigInteger``.
"""

from __future__ import annotations

import sqlalchemy as sa

# Deterministic constraint and index names, so a later migration can refer to them by name on
# every dialect.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)

# 64-bit on PostgreSQL; plain INTEGER on SQLite, where only an ``INTEGER PRIMARY KEY`` column
# becomes the rowid and counts up by itself.
SEQ_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

scripts = sa.Table(
    "scripts",
    metadata,
    sa.Column("uri", sa.Text, primary_key=True),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("initialized", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("init_error", sa.Text, nullable=True),
    sa.Column("last_init_time", sa.BigInteger, nullable=True),
    # The source of the newest version whose init() succeeded: what a restart falls back to
    # when the newest upload fails, so a broken deploy never replaces a working script.
    sa.Column("good_content", sa.Text, nullable=True),
)

# Not foreign-keyed to ``scripts``: the logs of a deleted script stay readable until cleared.
script_logs = sa.Table(
    "script_logs",
    metadata,
    sa.Column("seq", SEQ_TYPE, primary_key=True, autoincrement=True),
    sa.Column("script_uri", sa.Text, nullable=False, index=True),
    sa.Column("level", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False, index=True),
    sa.Column("request_id", sa.Text, nullable=True, index=True),
    sa.Column("kind", sa.Text, nullable=True),
    sa.Column("route", sa.Text, nullable=True),
    # AUTOINCREMENT makes SQLite never hand out a seq again, even after the newest rows were
    # cleared; live-tail readers resume "after seq N" and would otherwise miss new entries.
    sqlite_autoincrement=True,
)

# sharedStorage and personalStorage: one namespace per script, and per (script, user).  The
# shared namespace is the empty user id, which no real user id can be.
SHARED: str = ""

script_storage = sa.Table(
    "script_storage",
    metadata,
    sa.Column("script_uri", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

# Files a script serves or reads: bytes with the mimetype they were uploaded with.  ``size`` and
# ``sha256`` (lowercase hex of ``content``) are stored so listings, ETags and compare-and-set
# never have to read the content.  Not foreign-keyed to ``scripts``, like ``script_storage``:
# deleting a script removes them explicitly, in the same transaction.
script_assets = sa.Table(
    "script_assets",
    metadata,
    sa.Column("script_uri", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("mimetype", sa.Text, nullable=False),
    sa.Column("content", sa.LargeBinary, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

# The audit trail of security events (engine.audit): append-only, nothing updates or deletes a
# row.  ``seq`` orders entries and never repeats (AUTOINCREMENT), so it is a safe paging cursor;
# ``at`` is epoch milliseconds; ``detail`` is a JSON object as text.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", SEQ_TYPE, primary_key=True, autoincrement=True),
    sa.Column("at", sa.BigInteger, nullable=False, index=True),
    sa.Column("actor", sa.Text, nullable=False, index=True),
    sa.Column("method", sa.Text, nullable=False),
    sa.Column("client_ip", sa.Text, nullable=True),
    sa.Column("request_id", sa.Text, nullable=True),
    sa.Column("action", sa.Text, nullable=False, index=True),
    sa.Column("target", sa.Text, nullable=True),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
    sqlite_autoincrement=True,
)

# Secrets scripts use (engine.secrets), sealed with AES-256-GCM under a context naming their row,
# so a ciphertext copied to another row, script or user does not open.  Script-level secrets
# are managed over /engine/secrets; user-level ones by scripts (secretStorage), per script and
# user.  ``allowed_hosts`` is a JSON array of host names, or NULL for any host.  Not
# foreign-keyed to ``scripts``: deleting a script removes them explicitly, in its transaction.
script_secrets = sa.Table(
    "script_secrets",
    metadata,
    sa.Column("script_uri", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("sealed", sa.LargeBinary, nullable=False),
    sa.Column("allowed_hosts", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

user_secrets = sa.Table(
    "user_secrets",
    metadata,
    sa.Column("script_uri", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("sealed", sa.LargeBinary, nullable=False),
    sa.Column("allowed_hosts", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)
