"""Alembic environment of aiwebengine's database.

``engine.storage.upgrade`` runs the migrations on a connection it passes in
``config.attributes["connection"]``, inside a transaction it owns.  Run from the ``alembic``
command line (to write a new revision), the URL comes from ``sqlalchemy.url``.

Migrations stay dialect-neutral: the same revisions serve SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from engine.storage._tables import metadata


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite can alter few things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
elif (given := context.config.attributes.get("connection")) is not None:
    _run(given)
else:
    from engine.storage._database import build_engine

    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("set sqlalchemy.url to the database to migrate")
    engine = build_engine(url)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()
