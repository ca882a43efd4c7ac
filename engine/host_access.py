"""What a script's host calls require, and how the original engine answers when it is missing.

Host APIs check the capabilities of the identity the invocation runs as (UPSTREAM_API §2.0,
§6.1; ``security.runs_as``): route and WebSocket message handlers run as their caller, the
engine's own invocations (``init``, resolvers, listeners, customization functions) as an
administrator.  In the development profile anonymous callers hold every capability, so only a
production engine refuses anything -- and then mostly anonymous HTTP traffic.

A refusal is not an exception: each API answers the way the original does, because scripts
compare these answers.  Most return ``"Error: Insufficient capabilities: required [<Cap>]"``;
the listing APIs return an empty list (as JSON text where the API returns JSON text); the asset
writers say ``Access denied: …``; ``executeGraphQL`` returns a GraphQL error document.

This module holds the table of the calls that are checked on entry.  The registration calls
check their capability in the middle of their own argument checks (the original's order), so
the invocation host checks those itself with :data:`ACCESS_DENIED` and ``insufficient``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from security import Capability, insufficient

# Paths a script may broadcast to without ManageStreams (the original's system streams).
SYSTEM_STREAM_PREFIX: Final = "/system/"


def access_denied(capability: Capability) -> str:
    """The asset writers' refusal (``upsertAsset``, ``registerAssetRoute``)."""
    return f"Access denied: Insufficient capabilities: required [{capability.name}]"


def _graphql_errors(capability: Capability) -> str:
    message = f"Insufficient capabilities: required [{capability.name}]"
    return json.dumps({"errors": [{"message": message}]}, separators=(",", ":"))


Refusal = Callable[[Capability], Any]

_EMPTY_JSON: Refusal = lambda _capability: "[]"  # noqa: E731
_EMPTY_LIST: Refusal = lambda _capability: []  # noqa: E731
_NOTHING: Refusal = lambda _capability: None  # noqa: E731

# Host method -> (the capability it needs, what the script gets without it).
ENTRY_CHECKS: Final[Mapping[str, tuple[Capability, Refusal]]] = {
    "assetStorage.listAssets": (Capability.ReadAssets, _EMPTY_JSON),
    "listAssets": (Capability.ReadAssets, _EMPTY_LIST),  # v0.9: an array
    "assetStorage.fetchAsset": (Capability.ReadAssets, insufficient),
    "assetStorage.upsertAsset": (Capability.WriteAssets, access_denied),
    "assetStorage.deleteAsset": (Capability.DeleteAssets, insufficient),
    "routeRegistry.sendStreamMessage": (Capability.ManageStreams, insufficient),
    "routeRegistry.sendStreamMessageFiltered": (Capability.ManageStreams, insufficient),
    "sendStreamMessage": (Capability.ManageStreams, insufficient),
    "sendStreamMessageToPath": (Capability.ManageStreams, insufficient),
    "graphQLRegistry.sendSubscriptionMessage": (Capability.ManageGraphQL, insufficient),
    "graphQLRegistry.sendSubscriptionMessageFiltered": (Capability.ManageGraphQL, insufficient),
    "graphQLRegistry.executeGraphQL": (Capability.ManageGraphQL, _graphql_errors),
    "listScripts": (Capability.ReadScripts, _EMPTY_LIST),
    "getScript": (Capability.ReadScripts, _NOTHING),
    "getScriptInitStatus": (Capability.ReadScripts, _NOTHING),
    "listLogs": (Capability.ViewLogs, _EMPTY_LIST),
    "listLogsForUri": (Capability.ViewLogs, _EMPTY_LIST),
    "upsertScript": (Capability.WriteScripts, insufficient),
    "deleteScript": (Capability.DeleteScripts, insufficient),
}

_BROADCASTS: Final = frozenset(
    {
        "routeRegistry.sendStreamMessage",
        "routeRegistry.sendStreamMessageFiltered",
        "sendStreamMessageToPath",
    }
)


def entry_requirement(name: str, args: list[Any]) -> tuple[Capability, Refusal] | None:
    """What calling ``name`` with ``args`` needs up front, or ``None`` when nothing is checked
    on entry.  A broadcast to a ``/system/`` path needs nothing (the v0.9 one-argument
    ``sendStreamMessage`` broadcasts to every stream and always needs ``ManageStreams``)."""
    requirement = ENTRY_CHECKS.get(name)
    if requirement is None:
        return None
    if name in _BROADCASTS or (name == "sendStreamMessage" and len(args) >= 2):
        path = args[0] if args else None
        if isinstance(path, str) and path.startswith(SYSTEM_STREAM_PREFIX):
            return None
    return requirement
