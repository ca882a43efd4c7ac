"""The read side of the v0.9 flat API: ``listScripts``, ``getScript``, ``getScriptInitStatus``,
``listLogs`` and ``listLogsForUri`` (UPSTREAM_API §3), answered from storage.

Return shapes are the original's: arrays of strings, the source or ``None``, the init status
as a JSON *string* or ``None``.
"""

from __future__ import annotations

import json
from typing import Any, Final

from engine.errors import HostCallError, StorageUnavailable
from engine.logs import LogService
from engine.storage import Database, LogQuery

METHODS: Final = frozenset(
    {"listScripts", "getScript", "getScriptInitStatus", "listLogs", "listLogsForUri"}
)
LOG_LIMIT: Final = 1000


class FlatReadApi:
    def __init__(self, database: Database, logs: LogService) -> None:
        self._database = database
        self._logs = logs

    async def call(self, name: str, args: list[Any]) -> Any:
        try:
            return await self._dispatch(name, args)
        except StorageUnavailable:
            raise HostCallError(f"{name}: storage is unavailable, try again later") from None

    async def _dispatch(self, name: str, args: list[Any]) -> Any:
        uri = args[0] if args else None
        if name == "listScripts":
            return [script.uri for script in await self._database.scripts.list_all()]
        if name == "listLogs":
            entries = await self._logs.query(LogQuery(limit=LOG_LIMIT))
            entries.sort(key=lambda entry: entry.seq, reverse=True)
            return [entry.message for entry in entries]
        if not isinstance(uri, str) or not uri:
            raise HostCallError(f"{name}: the script URI must be a non-empty string")
        if name == "listLogsForUri":
            entries = await self._logs.query(LogQuery(uri=uri, limit=LOG_LIMIT))
            entries.sort(key=lambda entry: entry.seq)
            return [entry.message for entry in entries]
        script = await self._database.scripts.get(uri)
        if script is None:
            return None
        if name == "getScript":
            return script.content
        return json.dumps(script.init_status())
