"""Scripts as stored: source text, timestamps and the outcome of their last ``init()``."""

from __future__ import annotations

from typing import Any

import attrs
import sqlalchemy as sa

from engine.storage._runner import Runner
from engine.storage._secrets import drop_script_secrets
from engine.storage._tables import script_assets, script_storage, scripts


@attrs.frozen
class StoredScript:
    uri: str
    content: str
    created_at: int
    updated_at: int
    initialized: bool
    init_error: str | None
    last_init_time: int | None
    good_content: str | None = None

    def init_status(self) -> dict[str, Any]:
        """The init status as the API and ``getScriptInitStatus`` report it (epoch ms)."""
        return {
            "scriptName": self.uri,
            "initialized": self.initialized,
            "initError": self.init_error,
            "lastInitTime": self.last_init_time,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }

    @property
    def size(self) -> int:
        """Length of the source in UTF-8 bytes, as the admin API reports it."""
        return len(self.content.encode("utf-8"))


@attrs.frozen
class UpsertOutcome:
    script: StoredScript
    previous_exists: bool
    # False when the same content was stored again; ``updated_at`` moves on regardless.
    changed: bool


def _stored_script(row: sa.Row[Any]) -> StoredScript:
    return StoredScript(
        uri=row.uri,
        content=row.content,
        created_at=row.created_at,
        updated_at=row.updated_at,
        initialized=bool(row.initialized),
        init_error=row.init_error,
        last_init_time=row.last_init_time,
        good_content=row.good_content,
    )


class ScriptRepository:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def get(self, uri: str) -> StoredScript | None:
        def work(conn: sa.Connection) -> StoredScript | None:
            row = conn.execute(sa.select(scripts).where(scripts.c.uri == uri)).one_or_none()
            return None if row is None else _stored_script(row)

        return await self._runner.read(work)

    async def list_all(self) -> list[StoredScript]:
        """Every script, ordered by URI."""

        def work(conn: sa.Connection) -> list[StoredScript]:
            rows = conn.execute(sa.select(scripts).order_by(scripts.c.uri))
            return [_stored_script(row) for row in rows]

        return await self._runner.read(work)

    async def upsert(self, uri: str, content: str, now_ms: int) -> UpsertOutcome:
        """Store ``content`` under ``uri``; durable when this returns.

        An update keeps ``created_at`` and the init status: the new version's ``init()`` has
        not run yet, and the previous version keeps serving until it has.
        """

        def work(conn: sa.Connection) -> UpsertOutcome:
            row = conn.execute(sa.select(scripts).where(scripts.c.uri == uri)).one_or_none()
            if row is None:
                stored = StoredScript(
                    uri=uri,
                    content=content,
                    created_at=now_ms,
                    updated_at=now_ms,
                    initialized=False,
                    init_error=None,
                    last_init_time=None,
                )
                conn.execute(sa.insert(scripts).values(attrs.asdict(stored)))
                return UpsertOutcome(script=stored, previous_exists=False, changed=True)
            previous = _stored_script(row)
            conn.execute(
                sa.update(scripts)
                .where(scripts.c.uri == uri)
                .values(content=content, updated_at=now_ms)
            )
            stored = attrs.evolve(previous, content=content, updated_at=now_ms)
            return UpsertOutcome(
                script=stored, previous_exists=True, changed=previous.content != content
            )

        return await self._runner.write(work)

    async def delete(self, uri: str) -> bool:
        """Remove the script, what it stored, its assets and secrets, in one transaction; its logs
        stay until cleared.  False if there was no such script."""

        def work(conn: sa.Connection) -> bool:
            result = conn.execute(sa.delete(scripts).where(scripts.c.uri == uri))
            conn.execute(sa.delete(script_storage).where(script_storage.c.script_uri == uri))
            conn.execute(sa.delete(script_assets).where(script_assets.c.script_uri == uri))
            drop_script_secrets(conn, uri)
            return result.rowcount > 0

        return await self._runner.write(work)

    async def record_init(
        self,
        uri: str,
        *,
        success: bool,
        error: str | None,
        at_ms: int,
        content: str | None = None,
    ) -> None:
        """Record the outcome of an ``init()`` run; nothing happens if the script is gone.

        On success ``content`` (the source that ran) becomes the script's last good version.
        """
        values: dict[str, Any] = {
            "initialized": success,
            "init_error": None if success else error,
            "last_init_time": at_ms,
        }
        if success and content is not None:
            values["good_content"] = content

        def work(conn: sa.Connection) -> None:
            conn.execute(sa.update(scripts).where(scripts.c.uri == uri).values(values))

        await self._runner.write(work)
