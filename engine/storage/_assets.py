"""Script assets: files (bytes and a mimetype) that belong to one script.

The repository stores what it is given; names, sizes and mimetypes are checked by the service
above it.  Listings and :meth:`AssetRepository.info` never read the content column, so listing
a script with large files costs no more than listing one with small files.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Sequence
from typing import Any, Final, Literal

import attrs
import sqlalchemy as sa

from engine.storage._runner import Runner
from engine.storage._tables import script_assets

WriteStatus = Literal["created", "updated", "unchanged"]


@attrs.frozen
class AssetInfo:
    """An asset without its bytes; ``sha256`` is the lowercase hex digest of the content."""

    script_uri: str
    name: str
    mimetype: str
    size: int
    sha256: str
    created_at: int
    updated_at: int


@attrs.frozen
class StoredAsset:
    info: AssetInfo
    content: bytes


@attrs.frozen
class AssetWrite:
    name: str
    mimetype: str
    content: bytes


@attrs.frozen
class WriteResult:
    info: AssetInfo
    # "unchanged": the same bytes and mimetype were already stored.  The row is left alone,
    # ``updated_at`` included, so whatever a client cached against it stays valid.
    status: WriteStatus


_INFO_COLUMNS: Final = tuple(column for column in script_assets.c if column.name != "content")


def _asset_info(row: sa.Row[Any]) -> AssetInfo:
    return AssetInfo(
        script_uri=row.script_uri,
        name=row.name,
        mimetype=row.mimetype,
        size=row.size,
        sha256=row.sha256,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _key(script_uri: str, name: str) -> sa.ColumnElement[bool]:
    return sa.and_(script_assets.c.script_uri == script_uri, script_assets.c.name == name)


def _current(conn: sa.Connection, script_uri: str, name: str) -> AssetInfo | None:
    row = conn.execute(sa.select(*_INFO_COLUMNS).where(_key(script_uri, name))).one_or_none()
    return None if row is None else _asset_info(row)


def _store(
    conn: sa.Connection,
    script_uri: str,
    write: AssetWrite,
    now_ms: int,
    current: AssetInfo | None,
) -> WriteResult:
    """Write one asset inside the caller's write transaction; ``current`` is the row as that
    transaction read it."""
    digest = hashlib.sha256(write.content).hexdigest()
    size = len(write.content)
    if current is None:
        info = AssetInfo(
            script_uri=script_uri,
            name=write.name,
            mimetype=write.mimetype,
            size=size,
            sha256=digest,
            created_at=now_ms,
            updated_at=now_ms,
        )
        conn.execute(sa.insert(script_assets).values(**attrs.asdict(info), content=write.content))
        return WriteResult(info=info, status="created")
    # Equal digests are taken for equal bytes: comparing the stored content itself would read
    # it back, and a SHA-256 collision is not a case worth that cost.
    if current.sha256 == digest and current.mimetype == write.mimetype:
        return WriteResult(info=current, status="unchanged")
    info = attrs.evolve(
        current, mimetype=write.mimetype, size=size, sha256=digest, updated_at=now_ms
    )
    conn.execute(
        sa.update(script_assets)
        .where(_key(script_uri, write.name))
        .values(
            mimetype=info.mimetype,
            content=write.content,
            size=info.size,
            sha256=info.sha256,
            updated_at=info.updated_at,
        )
    )
    return WriteResult(info=info, status="updated")


class AssetRepository:
    """Assets by (script, name).  Writes keep ``created_at`` and set ``updated_at`` to the
    given time, unless nothing changed."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def list(self, script_uri: str) -> builtins.list[AssetInfo]:
        """One script's assets, ordered by name."""

        def work(conn: sa.Connection) -> builtins.list[AssetInfo]:
            rows = conn.execute(
                sa.select(*_INFO_COLUMNS)
                .where(script_assets.c.script_uri == script_uri)
                .order_by(script_assets.c.name)
            )
            return [_asset_info(row) for row in rows]

        return await self._runner.read(work)

    async def list_all(self) -> builtins.list[AssetInfo]:
        """Every script's assets, ordered by script URI, then name."""

        def work(conn: sa.Connection) -> builtins.list[AssetInfo]:
            rows = conn.execute(
                sa.select(*_INFO_COLUMNS).order_by(script_assets.c.script_uri, script_assets.c.name)
            )
            return [_asset_info(row) for row in rows]

        return await self._runner.read(work)

    async def info(self, script_uri: str, name: str) -> AssetInfo | None:
        return await self._runner.read(lambda conn: _current(conn, script_uri, name))

    async def get(self, script_uri: str, name: str) -> StoredAsset | None:
        def work(conn: sa.Connection) -> StoredAsset | None:
            row = conn.execute(sa.select(script_assets).where(_key(script_uri, name))).one_or_none()
            if row is None:
                return None
            # PostgreSQL drivers may hand back a memoryview.
            return StoredAsset(info=_asset_info(row), content=bytes(row.content))

        return await self._runner.read(work)

    async def upsert(self, script_uri: str, write: AssetWrite, now_ms: int) -> WriteResult:
        def work(conn: sa.Connection) -> WriteResult:
            return _store(conn, script_uri, write, now_ms, _current(conn, script_uri, write.name))

        return await self._runner.write(work)

    async def upsert_many(
        self, script_uri: str, writes: Sequence[AssetWrite], now_ms: int
    ) -> builtins.list[WriteResult]:
        """Every write in one transaction: all are stored or none is.  Results come in the
        order of ``writes``; a name given twice is written twice, the later one winning."""

        def work(conn: sa.Connection) -> builtins.list[WriteResult]:
            return [
                _store(conn, script_uri, write, now_ms, _current(conn, script_uri, write.name))
                for write in writes
            ]

        return await self._runner.write(work)

    async def replace_if(
        self,
        script_uri: str,
        name: str,
        content: bytes,
        expected_sha256: str,
        now_ms: int,
    ) -> WriteResult | None:
        """Replace the content, keeping the mimetype, only if the stored content's digest is
        still ``expected_sha256``; None (and nothing written) if it is not or the asset is gone.

        The check and the write share one write transaction, so two editors starting from the
        same version cannot both succeed.
        """

        def work(conn: sa.Connection) -> WriteResult | None:
            current = _current(conn, script_uri, name)
            if current is None or current.sha256 != expected_sha256:
                return None
            write = AssetWrite(name=name, mimetype=current.mimetype, content=content)
            return _store(conn, script_uri, write, now_ms, current)

        return await self._runner.write(work)

    async def delete(self, script_uri: str, name: str) -> bool:
        """False if there was no such asset."""

        def work(conn: sa.Connection) -> bool:
            return conn.execute(sa.delete(script_assets).where(_key(script_uri, name))).rowcount > 0

        return await self._runner.write(work)

    async def drop_script(self, script_uri: str) -> int:
        """Remove every asset of ``script_uri``; returns how many there were."""

        def work(conn: sa.Connection) -> int:
            return conn.execute(
                sa.delete(script_assets).where(script_assets.c.script_uri == script_uri)
            ).rowcount

        return await self._runner.write(work)


__all__ = ["AssetInfo", "AssetRepository", "AssetWrite", "StoredAsset", "WriteResult"]
