"""Script logs: writing, querying and following them live.

Every console line and every engine-side failure about a script becomes one row in
``script_logs``.  Writers persist through :class:`LogService.write`; followers (the SSE tail and
``aiwebengine logs --follow``) wait on :meth:`LogService.wait_for_new`, which wakes on every local
write and, as a safety net for writers in other processes, at least every poll interval.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import attrs
import structlog
import trio

from engine.errors import StorageUnavailable
from engine.storage import LogEntry, LogQuery, LogRepository, NewLogEntry

log = structlog.get_logger("aiwebengine.logs")


def now_ms() -> int:
    return int(time.time() * 1000)


class LogService:
    def __init__(self, repository: LogRepository, *, poll_interval_s: float = 2.0) -> None:
        self._repository = repository
        self._poll_interval_s = poll_interval_s
        self._written = trio.Event()

    async def write(self, entries: Sequence[NewLogEntry]) -> None:
        """Persist log lines.  A storage outage is reported, never raised: losing a log line
        must not turn a script's successful answer into an error."""
        if not entries:
            return
        try:
            await self._repository.append(entries)
        except StorageUnavailable:
            log.warning(
                "script log lines dropped: storage unavailable",
                count=len(entries),
                script=entries[0].script_uri,
            )
            return
        self._written.set()
        self._written = trio.Event()

    async def query(self, query: LogQuery) -> list[LogEntry]:
        return await self._repository.query(query)

    async def clear(self, uri: str) -> int:
        return await self._repository.clear(uri)

    async def prune(self, keep_per_script: int) -> int:
        return await self._repository.prune(keep_per_script)

    async def latest_seq(self) -> int:
        return await self._repository.latest_seq()

    async def wait_for_new(self) -> None:
        """Return after the next local write, or after the poll interval at the latest."""
        with trio.move_on_after(self._poll_interval_s):
            await self._written.wait()

    async def next_batch(self, query: LogQuery, after_seq: int, limit: int = 500) -> list[LogEntry]:
        """Entries matching ``query`` with ``seq > after_seq``, oldest first, at most ``limit``."""
        batch = await self._repository.query(
            attrs.evolve(query, since_ms=None, after_seq=after_seq, limit=limit)
        )
        batch.sort(key=lambda entry: entry.seq)
        return batch
