"""Script logs: appending in batches, the filtered listing of the admin API, clearing, pruning.

Entries are ordered by ``seq``, the number the database gives each row in insertion order; it
never repeats, so "everything after seq N" is a safe cursor for live tails and paging.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import attrs
import sqlalchemy as sa

from engine.storage._runner import Runner
from engine.storage._tables import script_logs

# SQLite refuses LIKE patterns over 50,000 bytes with an OperationalError, which would count
# against the circuit breaker: a few oversized queries could take storage down for everyone.
# Escaped and UTF-8 encoded, this many characters stays far below that limit.
MAX_CONTAINS_LENGTH: Final = 1000


@attrs.frozen
class NewLogEntry:
    script_uri: str
    level: str
    message: str
    timestamp: int  # epoch milliseconds
    request_id: str | None = None
    kind: str | None = None
    route: str | None = None


@attrs.frozen
class LogEntry:
    seq: int
    script_uri: str
    level: str
    message: str
    timestamp: int
    request_id: str | None
    kind: str | None
    route: str | None

    def to_json(self) -> dict[str, str | int | None]:
        return {
            "scriptUri": self.script_uri,
            "message": self.message,
            "level": self.level,
            "timestamp": self.timestamp,
            "seq": self.seq,
            "requestId": self.request_id,
            "kind": self.kind,
            "route": self.route,
        }


def _positive(_instance: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{attribute.name} must be positive")


@attrs.frozen
class LogQuery:
    """Filters of the log listing; ``None`` means "no filter".

    ``level`` and ``contains`` ignore case; ``request_id``, ``kind`` and ``route`` match
    exactly; ``since_ms`` keeps ``timestamp >= since_ms``; ``after_seq`` keeps
    ``seq > after_seq``.  With a ``uri`` entries come oldest first, without newest first.
    ``limit`` keeps the newest ``limit`` entries, except with ``after_seq``: then it is the
    next page, the ``limit`` oldest entries after ``after_seq``, oldest first.
    """

    uri: str | None = None
    level: str | None = None
    contains: str | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.max_len(MAX_CONTAINS_LENGTH)),
    )
    request_id: str | None = None
    kind: str | None = None
    route: str | None = None
    since_ms: int | None = None
    after_seq: int | None = None
    limit: int | None = attrs.field(default=None, validator=_positive)


def _log_entry(row: sa.Row[Any]) -> LogEntry:
    return LogEntry(
        seq=row.seq,
        script_uri=row.script_uri,
        level=row.level,
        message=row.message,
        timestamp=row.timestamp,
        request_id=row.request_id,
        kind=row.kind,
        route=row.route,
    )


def _select(q: LogQuery) -> sa.Select[Any]:
    c = script_logs.c
    conditions: list[sa.ColumnElement[bool]] = []
    if q.uri is not None:
        conditions.append(c.script_uri == q.uri)
    if q.level is not None:
        conditions.append(sa.func.lower(c.level) == sa.func.lower(q.level))
    if q.contains is not None:
        # autoescape: a '%' or '_' typed by the user matches itself, not "anything".
        conditions.append(c.message.icontains(q.contains, autoescape=True))
    for column, value in (
        (c.request_id, q.request_id),
        (c.kind, q.kind),
        (c.route, q.route),
    ):
        if value is not None:
            conditions.append(column == value)
    if q.since_ms is not None:
        conditions.append(c.timestamp >= q.since_ms)
    if q.after_seq is not None:
        conditions.append(c.seq > q.after_seq)

    matching = sa.select(script_logs).where(*conditions)
    oldest_first = q.uri is not None
    if q.limit is None:
        return matching.order_by(c.seq.asc() if oldest_first else c.seq.desc())
    if q.after_seq is not None:
        return matching.order_by(c.seq.asc()).limit(q.limit)
    newest = matching.order_by(c.seq.desc()).limit(q.limit)
    if not oldest_first:
        return newest
    page = newest.subquery()
    return sa.select(page).order_by(page.c.seq.asc())


class LogRepository:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def append(self, entries: Sequence[NewLogEntry]) -> list[LogEntry]:
        """Store ``entries`` in one transaction; returns them with their ``seq``, in order."""
        if not entries:
            return []
        rows = [attrs.asdict(entry) for entry in entries]

        def work(conn: sa.Connection) -> list[int]:
            insert = sa.insert(script_logs).returning(
                script_logs.c.seq, sort_by_parameter_order=True
            )
            return list(conn.execute(insert, rows).scalars())

        seqs = await self._runner.write(work)
        return [LogEntry(seq=seq, **row) for seq, row in zip(seqs, rows, strict=True)]

    async def query(self, q: LogQuery) -> list[LogEntry]:
        statement = _select(q)

        def work(conn: sa.Connection) -> list[LogEntry]:
            return [_log_entry(row) for row in conn.execute(statement)]

        return await self._runner.read(work)

    async def clear(self, uri: str) -> int:
        """Delete every entry of ``uri``; returns how many there were."""

        def work(conn: sa.Connection) -> int:
            return conn.execute(
                sa.delete(script_logs).where(script_logs.c.script_uri == uri)
            ).rowcount

        return await self._runner.write(work)

    async def prune(self, keep_per_script: int = 20) -> int:
        """Keep only the newest ``keep_per_script`` entries of each script; returns how many
        were deleted."""
        if keep_per_script < 0:
            raise ValueError("keep_per_script must not be negative")
        c = script_logs.c
        rank = sa.func.row_number().over(partition_by=c.script_uri, order_by=c.seq.desc())
        ranked = sa.select(c.seq, rank.label("rank")).subquery()
        stale = sa.select(ranked.c.seq).where(ranked.c.rank > keep_per_script)
        statement = sa.delete(script_logs).where(c.seq.in_(stale))

        def work(conn: sa.Connection) -> int:
            return conn.execute(statement).rowcount

        return await self._runner.write(work)

    async def latest_seq(self) -> int:
        """The highest ``seq`` stored, 0 when there are no entries."""

        def work(conn: sa.Connection) -> int:
            latest = conn.execute(sa.select(sa.func.max(script_logs.c.seq))).scalar()
            return 0 if latest is None else int(latest)

        return await self._runner.read(work)
