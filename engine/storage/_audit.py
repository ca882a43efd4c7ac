"""The audit trail's rows: appending in batches and the filtered, paged listing.

Append-only by construction: the repository offers no update and no delete.  Listings are
always newest first; ``before_seq`` pages towards older entries, ``after_seq`` returns the
entries that follow a cursor (the oldest of them first cut to ``limit``, then newest first).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import attrs
import sqlalchemy as sa

from engine.storage._runner import Runner
from engine.storage._tables import audit_log

MAX_AUDIT_PAGE: Final = 1000


@attrs.frozen
class NewAuditEntry:
    at: int  # epoch milliseconds
    actor: str
    method: str
    action: str
    outcome: str
    client_ip: str | None = None
    request_id: str | None = None
    target: str | None = None
    detail: str | None = None  # a JSON object as text


@attrs.frozen
class AuditEntry:
    seq: int
    at: int
    actor: str
    method: str
    action: str
    outcome: str
    client_ip: str | None
    request_id: str | None
    target: str | None
    detail: str | None


def _page(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 1 <= value <= MAX_AUDIT_PAGE:
        raise ValueError(f"{attribute.name} must be within 1..{MAX_AUDIT_PAGE}")


@attrs.frozen
class AuditQuery:
    """Filters of the listing; ``None`` means "no filter".  All match exactly except
    ``since_ms`` (``at >= since_ms``) and the two ``seq`` cursors (exclusive)."""

    actor: str | None = None
    action: str | None = None
    outcome: str | None = None
    since_ms: int | None = None
    after_seq: int | None = None
    before_seq: int | None = None
    limit: int = attrs.field(default=100, validator=_page)


def _select(q: AuditQuery) -> sa.Select[Any]:
    c = audit_log.c
    conditions: list[sa.ColumnElement[bool]] = []
    for column, value in ((c.actor, q.actor), (c.action, q.action), (c.outcome, q.outcome)):
        if value is not None:
            conditions.append(column == value)
    if q.since_ms is not None:
        conditions.append(c.at >= q.since_ms)
    if q.after_seq is not None:
        conditions.append(c.seq > q.after_seq)
    if q.before_seq is not None:
        conditions.append(c.seq < q.before_seq)
    matching = sa.select(audit_log).where(*conditions)
    if q.after_seq is None:
        return matching.order_by(c.seq.desc()).limit(q.limit)
    # The entries right after the cursor, so that following a cursor never skips any.
    following = matching.order_by(c.seq.asc()).limit(q.limit).subquery()
    return sa.select(following).order_by(following.c.seq.desc())


class AuditRepository:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def append(self, entries: Sequence[NewAuditEntry]) -> None:
        """Store ``entries`` in one transaction."""
        if not entries:
            return
        rows = [attrs.asdict(entry) for entry in entries]

        def work(conn: sa.Connection) -> None:
            conn.execute(sa.insert(audit_log), rows)

        await self._runner.write(work)

    async def query(self, q: AuditQuery) -> list[AuditEntry]:
        statement = _select(q)

        def work(conn: sa.Connection) -> list[AuditEntry]:
            return [AuditEntry(**row._asdict()) for row in conn.execute(statement)]

        return await self._runner.read(work)
