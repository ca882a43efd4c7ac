"""The script side of streams: registering stream paths and broadcasting to their subscribers.

Registration (``routeRegistry.registerStreamRoute``, ``registerWebSocketRoute`` and the v0.9
``registerWebStream``) is checked here and collected by the invocation host, so a script's
streams belong to its version exactly like its routes.  Broadcasting
(``routeRegistry.sendStreamMessage``, ``sendStreamMessageFiltered`` and the v0.9
``sendStreamMessage``/``sendStreamMessageToPath``) goes to the :class:`~engine.streams.StreamHub`
and answers with the original engine's strings (UPSTREAM_API §2.1); the throwing cases (bad
filter, bad match mode, reserved path) throw as there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any, Final, cast

import attrs

from engine.errors import EngineError, HostCallError
from engine.routing import reserved_prefix_of
from engine.streams import Delivery, MatchMode, StreamHub

SCRIPT_UPDATES_PATH: Final = "/engine/script_updates"
MAX_STREAM_PATH_CHARS: Final = 200
MAX_CUSTOMIZER_CHARS: Final = 100
_CUSTOMIZER = re.compile(r"^[A-Za-z0-9_]{1,100}$")

SEND_METHODS: Final = frozenset(
    {
        "routeRegistry.sendStreamMessage",
        "routeRegistry.sendStreamMessageFiltered",
        "sendStreamMessage",  # v0.9: one argument → every stream; two → that path
        "sendStreamMessageToPath",
    }
)
REGISTER_METHODS: Final = frozenset(
    {
        "routeRegistry.registerStreamRoute",
        "routeRegistry.registerWebSocketRoute",
        "registerWebStream",
    }
)


@attrs.frozen
class StreamRoute:
    """A stream path registered by a script: SSE and WebSocket subscribers connect to it."""

    path: str
    script_uri: str
    customizer: str | None = None
    on_message: str | None = None
    summary: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ("Streams",)


class StreamCustomizationFailed(EngineError):
    """The stream's customization function threw or returned something other than an object
    of strings; the original answers 500 with this text."""

    code = "STREAM_CUSTOMIZATION_FAILED"
    status = 500

    def __init__(self, why: str) -> None:
        super().__init__(f"Stream customization function failed: {why}")


def reserved_check(path: Any, api: str) -> str:
    """The path as a string; throws for the engine's prefixes, in every context."""
    if not isinstance(path, str):
        raise HostCallError(f"{api}: path must be a string")
    prefix = reserved_prefix_of(path)
    if prefix is not None:
        raise HostCallError(f"Path '{path}' is reserved for the engine (prefix '{prefix}')")
    return path


def path_problem(path: str) -> str | None:
    """The upstream message for a stream path it refuses, checked before the phase."""
    if not path.startswith("/"):
        return f"Invalid stream path '{path}': path must start with '/' and not be empty"
    return None


def late_path_problem(path: str) -> str | None:
    """Rules the original checks after the registration phase."""
    if len(path) > MAX_STREAM_PATH_CHARS:
        return (
            f"Invalid stream path '{path[:40]}…': path must be at most "
            f"{MAX_STREAM_PATH_CHARS} characters"
        )
    if ".." in path or "\\" in path:
        return f"Invalid stream path '{path}': path traversal not allowed"
    return None


def customizer_problem(name: Any) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str) or not _CUSTOMIZER.match(name):
        return (
            f"Invalid customization function name '{name}': must be 1-{MAX_CUSTOMIZER_CHARS} "
            "characters of A-Z, a-z, 0-9 and _"
        )
    return None


def parse_filter(value: Any) -> dict[str, str]:
    """``sendStreamMessageFiltered``'s filter: JSON text or an object of strings; ``null`` is
    ``{}``.  Anything else throws, as the original does."""
    if value is None:
        return {}
    decoded = value
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError as exc:
            raise HostCallError(f"Invalid filter JSON: {exc}") from None
        except RecursionError:
            raise HostCallError("Invalid filter JSON: nested too deeply") from None
    if not isinstance(decoded, dict):
        raise HostCallError("Invalid filter JSON: expected an object of string values")
    for key, item in decoded.items():
        if not isinstance(item, str):
            raise HostCallError(
                f"Invalid filter JSON: the value of '{key}' must be a string, "
                f"got {type(item).__name__}"
            )
    return dict(decoded)


def parse_mode(value: Any) -> MatchMode:
    if value is None:
        return "subset"
    if value in ("subset", "overlap"):
        return cast(MatchMode, value)
    raise HostCallError(f"Invalid match mode '{value}'. Expected 'subset' or 'overlap'")


def _data(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _report(delivery: Delivery, path: str, *, filtered: bool) -> str:
    kind = "filtered message" if filtered else "message"
    total = delivery.sent + delivery.failed
    if delivery.failed == 0:
        return f"Successfully sent {kind} to {delivery.sent} connections on path '{path}'"
    return (
        f"Sent {kind} to {delivery.sent}/{total} connections on path '{path}' "
        f"({delivery.failed} failed)"
    )


class StreamHostApi:
    """Broadcasts from scripts.  ``streams`` is the live collection of registered stream
    paths: messages to other paths reach nobody and are not buffered for replay, and the
    engine's own streams (``/engine/script_updates``) are never among them."""

    def __init__(self, hub: StreamHub, streams: Collection[str]) -> None:
        self._hub = hub
        self._streams = streams

    def call(self, name: str, args: list[Any]) -> str:
        if name == "sendStreamMessage" and len(args) < 2:
            data = _data(args[0] if args else None)
            delivery = Delivery(0, 0)
            for path in list(self._streams):
                delivery += self._hub.publish(path, data)
            return f"Successfully sent message to {delivery.sent} connections on all streams"
        api = name if name.startswith("routeRegistry.") else f"routeRegistry.{name}"
        path = reserved_check(args[0] if args else None, api)
        data = _data(args[1] if len(args) > 1 else None)
        if name == "routeRegistry.sendStreamMessageFiltered":
            filter = parse_filter(args[2] if len(args) > 2 else None)
            mode = parse_mode(args[3] if len(args) > 3 else None)
            return _report(self._publish(path, data, filter, mode), path, filtered=True)
        return _report(self._publish(path, data, None, "subset"), path, filtered=False)

    def _publish(
        self, path: str, data: str, filter: Mapping[str, str] | None, mode: MatchMode
    ) -> Delivery:
        if path not in self._streams:
            return Delivery(0, 0)
        return self._hub.publish(path, data, filter, mode)


def customization_metadata(value: Mapping[str, Any]) -> dict[str, str]:
    """A customization function's result: an object whose values are all strings."""
    if value.get("valueType") != "object" or not isinstance(value.get("value"), dict):
        raise StreamCustomizationFailed(
            f"expected an object of string values, got {value.get('valueType')}"
        )
    metadata: dict[str, Any] = value["value"]
    for key, item in metadata.items():
        if not isinstance(item, str):
            raise StreamCustomizationFailed(
                f"the value of '{key}' must be a string, got {type(item).__name__}"
            )
    return metadata
