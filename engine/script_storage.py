"""``sharedStorage`` and ``personalStorage``: the host side of the scripts' key-value storage.

The return values and error strings are the original engine's (UPSTREAM_API §2.4), because
scripts compare them: ``setItem`` answers a message, ``getItem`` a string or ``None``,
``removeItem`` a boolean.  Shared storage belongs to a script; personal storage to a script
and a user.  Who the user is comes from the invocation (``None`` for an anonymous caller, the
only kind until login exists), so personal storage answers as it does for anonymous callers.
"""

from __future__ import annotations

import time
from typing import Any, Final

from engine.errors import HostCallError, StorageUnavailable
from engine.storage import SHARED, KeyValueRepository

MAX_VALUE_BYTES: Final = 1_000_000

SET_OK: Final = "Item set successfully"
CLEARED: Final = "Storage cleared successfully"
EMPTY_KEY: Final = "Error: Key cannot be empty"
TOO_LARGE: Final = "Error: Value too large (>1MB)"
NEEDS_LOGIN: Final = "Error: Personal storage requires authentication. Please log in."

METHODS: Final = frozenset(
    f"{area}.{method}"
    for area in ("sharedStorage", "personalStorage")
    for method in ("getItem", "setItem", "removeItem", "clear")
)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


class ScriptStorageApi:
    def __init__(self, repository: KeyValueRepository) -> None:
        self._repository = repository

    async def call(
        self, name: str, args: list[Any], *, script_uri: str, user_id: str | None
    ) -> Any:
        area, _, method = name.partition(".")
        personal = area == "personalStorage"
        if personal and user_id is None:
            return {"getItem": None, "setItem": NEEDS_LOGIN, "removeItem": False}.get(
                method, NEEDS_LOGIN
            )
        namespace = user_id if personal and user_id is not None else SHARED
        try:
            return await self._dispatch(method, args, script_uri, namespace)
        except StorageUnavailable:
            raise HostCallError(f"{name}: storage is unavailable, try again later") from None

    async def _dispatch(self, method: str, args: list[Any], script_uri: str, namespace: str) -> Any:
        repository = self._repository
        if method == "clear":
            await repository.clear(script_uri, namespace)
            return CLEARED
        key = _text(args[0] if args else None)
        if method == "setItem":
            if not key.strip():
                return EMPTY_KEY
            value = _text(args[1] if len(args) > 1 else None)
            if len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
                return TOO_LARGE
            await repository.set(script_uri, namespace, key, value, int(time.time() * 1000))
            return SET_OK
        if not key.strip():
            return None if method == "getItem" else False
        if method == "getItem":
            return await repository.get(script_uri, namespace, key)
        if method == "removeItem":
            return await repository.remove(script_uri, namespace, key)
        raise HostCallError(f"{method} is not a storage method")
