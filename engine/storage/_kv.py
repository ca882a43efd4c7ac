"""The key-value storage behind ``sharedStorage`` and ``personalStorage``."""

from __future__ import annotations

import sqlalchemy as sa

from engine.storage._runner import Runner
from engine.storage._tables import SHARED, script_storage


class KeyValueRepository:
    """Values by (script, namespace, key); the namespace is a user id or :data:`SHARED`."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    @staticmethod
    def _where(script_uri: str, user_id: str) -> sa.ColumnElement[bool]:
        return sa.and_(
            script_storage.c.script_uri == script_uri, script_storage.c.user_id == user_id
        )

    async def get(self, script_uri: str, user_id: str, key: str) -> str | None:
        def work(conn: sa.Connection) -> str | None:
            value = conn.execute(
                sa.select(script_storage.c.value).where(
                    self._where(script_uri, user_id), script_storage.c.key == key
                )
            ).scalar_one_or_none()
            return None if value is None else str(value)

        return await self._runner.read(work)

    async def set(self, script_uri: str, user_id: str, key: str, value: str, now_ms: int) -> None:
        def work(conn: sa.Connection) -> None:
            updated = conn.execute(
                sa.update(script_storage)
                .where(self._where(script_uri, user_id), script_storage.c.key == key)
                .values(value=value, updated_at=now_ms)
            )
            if updated.rowcount == 0:
                conn.execute(
                    sa.insert(script_storage).values(
                        script_uri=script_uri,
                        user_id=user_id,
                        key=key,
                        value=value,
                        updated_at=now_ms,
                    )
                )

        await self._runner.write(work)

    async def remove(self, script_uri: str, user_id: str, key: str) -> bool:
        def work(conn: sa.Connection) -> bool:
            result = conn.execute(
                sa.delete(script_storage).where(
                    self._where(script_uri, user_id), script_storage.c.key == key
                )
            )
            return result.rowcount > 0

        return await self._runner.write(work)

    async def clear(self, script_uri: str, user_id: str) -> int:
        def work(conn: sa.Connection) -> int:
            return conn.execute(
                sa.delete(script_storage).where(self._where(script_uri, user_id))
            ).rowcount

        return await self._runner.write(work)

    async def drop_script(self, script_uri: str) -> int:
        """Everything a deleted script stored, shared and personal."""

        def work(conn: sa.Connection) -> int:
            return conn.execute(
                sa.delete(script_storage).where(script_storage.c.script_uri == script_uri)
            ).rowcount

        return await self._runner.write(work)


__all__ = ["SHARED", "KeyValueRepository"]
