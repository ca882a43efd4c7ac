"""Sealed secrets as stored: script-level and per (script, user) rows.

The repository only moves bytes: sealing, opening and the rules on keys and values belong to
``engine.secrets``.  A :class:`SecretOwner` names whose secret a row is; the table follows from
it, so callers never pick one by hand.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import sqlalchemy as sa

from engine.storage._runner import Runner
from engine.storage._tables import script_secrets, user_secrets


@attrs.frozen
class SecretOwner:
    """A script's own secrets (``user_id`` ``None``), or one user's secrets in that script."""

    script_uri: str
    user_id: str | None = None

    @property
    def scope(self) -> str:
        return "script" if self.user_id is None else "user"


@attrs.frozen
class StoredSecret:
    key: str
    sealed: bytes = attrs.field(repr=False)
    allowed_hosts: tuple[str, ...] | None
    created_at: int
    updated_at: int


def _table_and_where(owner: SecretOwner) -> tuple[sa.Table, sa.ColumnElement[bool]]:
    if owner.user_id is None:
        return script_secrets, script_secrets.c.script_uri == owner.script_uri
    return user_secrets, sa.and_(
        user_secrets.c.script_uri == owner.script_uri, user_secrets.c.user_id == owner.user_id
    )


def _hosts_text(hosts: tuple[str, ...] | None) -> str | None:
    return None if hosts is None else json.dumps(list(hosts))


def _stored(row: sa.Row[Any]) -> StoredSecret:
    hosts = None if row.allowed_hosts is None else tuple(json.loads(row.allowed_hosts))
    return StoredSecret(
        key=row.key,
        sealed=bytes(row.sealed),
        allowed_hosts=hosts,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SecretRepository:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def put(
        self,
        owner: SecretOwner,
        key: str,
        sealed: bytes,
        allowed_hosts: tuple[str, ...] | None,
        now_ms: int,
    ) -> bool:
        """Store a sealed value; True when the key is new (``created_at`` is kept otherwise)."""
        table, where = _table_and_where(owner)
        values = {"sealed": sealed, "allowed_hosts": _hosts_text(allowed_hosts)}

        def work(conn: sa.Connection) -> bool:
            updated = conn.execute(
                sa.update(table)
                .where(where, table.c.key == key)
                .values(**values, updated_at=now_ms)
            )
            if updated.rowcount > 0:
                return False
            row: dict[str, Any] = {"script_uri": owner.script_uri, "key": key, **values}
            if owner.user_id is not None:
                row["user_id"] = owner.user_id
            conn.execute(sa.insert(table).values(**row, created_at=now_ms, updated_at=now_ms))
            return True

        return await self._runner.write(work)

    async def get(self, owner: SecretOwner, key: str) -> StoredSecret | None:
        table, where = _table_and_where(owner)

        def work(conn: sa.Connection) -> StoredSecret | None:
            row = conn.execute(sa.select(table).where(where, table.c.key == key)).one_or_none()
            return None if row is None else _stored(row)

        return await self._runner.read(work)

    async def list(self, owner: SecretOwner) -> list[StoredSecret]:
        """The owner's secrets, ordered by key."""
        table, where = _table_and_where(owner)

        def work(conn: sa.Connection) -> list[StoredSecret]:
            rows = conn.execute(sa.select(table).where(where).order_by(table.c.key))
            return [_stored(row) for row in rows]

        return await self._runner.read(work)

    async def remove(self, owner: SecretOwner, key: str) -> bool:
        table, where = _table_and_where(owner)

        def work(conn: sa.Connection) -> bool:
            return conn.execute(sa.delete(table).where(where, table.c.key == key)).rowcount > 0

        return await self._runner.write(work)

    async def clear(self, owner: SecretOwner) -> int:
        table, where = _table_and_where(owner)

        def work(conn: sa.Connection) -> int:
            return conn.execute(sa.delete(table).where(where)).rowcount

        return await self._runner.write(work)


def drop_script_secrets(conn: sa.Connection, script_uri: str) -> None:
    """Every secret of a script, its users' included: part of deleting the script."""
    conn.execute(sa.delete(script_secrets).where(script_secrets.c.script_uri == script_uri))
    conn.execute(sa.delete(user_secrets).where(user_secrets.c.script_uri == script_uri))


__all__ = ["SecretOwner", "SecretRepository", "StoredSecret", "drop_script_secrets"]
