"""Parent <-> worker frames and their codec.

A frame on the wire is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON:
an object whose ``"t"`` member names the frame class.  The codec is protocol-without-I/O in the
manner of h11: :class:`FrameDecoder` is fed bytes and hands back frames, :func:`encode_frame`
turns a frame into bytes; neither touches a pipe, so both are tested with plain values.

The frame classes are the whole vocabulary between the two processes:

parent -> worker
    :class:`Invoke` (run one handler), :class:`HostReply` (answer to a host call).
worker -> parent
    :class:`Ready` (started), :class:`NeedSource` (the version is not loaded here: resend the
    invocation with its source), :class:`HostCall` (JS called a host API and waits),
    :class:`Log` (a console line; no answer), :class:`Result` (the invocation is over).
"""

from __future__ import annotations

import json
import struct
from typing import Any, Final, Literal

import attrs
import cattrs

MAX_FRAME_BYTES: Final = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")

# "value" runs a function for the value it returns (stream customization functions,
# WebSocket message handlers) instead of turning it into an HTTP response.
InvocationPhase = Literal["init", "handler", "value"]
FailureKind = Literal["exception", "out_of_memory", "stack_overflow", "eval", "no_handler"]


class FrameError(Exception):
    """The byte stream is not a valid sequence of frames; the peer cannot be trusted further."""


@attrs.frozen
class Invoke:
    invocation_id: str
    script_key: str  # identifies one version of one script; contexts are cached by it
    script_uri: str
    handler: str
    phase: InvocationPhase
    context: dict[str, Any]
    source: str | None = None  # omitted when the worker probably has the version loaded


@attrs.frozen
class HostReply:
    call_id: int
    ok: bool
    value: Any = None
    error: str | None = None


@attrs.frozen
class Ready:
    pid: int


@attrs.frozen
class NeedSource:
    invocation_id: str


@attrs.frozen
class HostCall:
    invocation_id: str
    call_id: int
    name: str
    args: list[Any]


@attrs.frozen
class Log:
    invocation_id: str
    level: str
    message: str
    timestamp_ms: int


@attrs.frozen
class Failure:
    kind: FailureKind
    message: str


@attrs.frozen
class Result:
    invocation_id: str
    value: dict[str, Any] | None = None
    failure: Failure | None = None
    duration_ms: float = 0.0


Frame = Invoke | HostReply | Ready | NeedSource | HostCall | Log | Result

_FRAME_TYPES: Final[dict[str, type[Any]]] = {
    cls.__name__: cls for cls in (Invoke, HostReply, Ready, NeedSource, HostCall, Log, Result)
}

_converter = cattrs.Converter(forbid_extra_keys=True)


# The default hooks coerce ("12" -> 12, "no" -> True, "abc" -> ['a','b','c']).  A frame from a
# worker is outside input -- the worker runs untrusted code -- so types are checked, not guessed.
def _exact(expected: type[Any], *accepted: type[Any]) -> Any:
    allowed = accepted or (expected,)

    def structure(value: Any, _: Any) -> Any:
        if isinstance(value, bool) and bool not in allowed:
            raise TypeError(f"expected {expected.__name__}, got a boolean")
        if not isinstance(value, allowed):
            raise TypeError(f"expected {expected.__name__}, got {type(value).__name__}")
        return expected(value) if expected is float else value

    return structure


_converter.register_structure_hook(str, _exact(str))
_converter.register_structure_hook(int, _exact(int))
_converter.register_structure_hook(float, _exact(float, int, float))
_converter.register_structure_hook(bool, _exact(bool))


def _list_of_any(value: Any, _: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _dict_of_any(value: Any, _: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


_converter.register_structure_hook_func(lambda t: t == list[Any], _list_of_any)
_converter.register_structure_hook_func(lambda t: t == dict[str, Any], _dict_of_any)


def _plain(value: Any) -> dict[str, Any]:
    # Frames hold only JSON values and nested frame classes, so a shallow walk over the attrs
    # fields is the whole unstructuring -- several times cheaper than a general converter on
    # the hot path (one Invoke and one Result per request).
    out: dict[str, Any] = {}
    for field in attrs.fields(type(value)):
        item = getattr(value, field.name)
        out[field.name] = _plain(item) if attrs.has(type(item)) else item
    return out


def encode_frame(frame: Frame) -> bytes:
    payload = _plain(frame)
    payload["t"] = type(frame).__name__
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    try:
        data = text.encode()
    except UnicodeEncodeError:
        # JavaScript strings may hold lone surrogates, which UTF-8 cannot carry; they become
        # U+FFFD, as a browser does when it turns such a string into bytes.
        data = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()
    if len(data) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(data)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    return _HEADER.pack(len(data)) + data


def decode_payload(data: bytes) -> Frame:
    """Turn one frame body into a frame object, or raise :class:`FrameError`."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and integers past the digit limit; RecursionError
        # is absurdly deep nesting.
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise FrameError(f"frame body is not JSON: {reason}") from None
    if not isinstance(raw, dict):
        raise FrameError("frame body is not a JSON object")
    tag = raw.pop("t", None)
    cls = _FRAME_TYPES.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise FrameError(f"unknown frame type {tag!r}")
    try:
        frame: Frame = _converter.structure(raw, cls)
    except cattrs.BaseValidationError as exc:
        problems = "; ".join(cattrs.transform_error(exc, path=tag))
        raise FrameError(f"malformed {tag} frame: {problems}") from None
    except (TypeError, ValueError, KeyError, RecursionError) as exc:
        raise FrameError(f"malformed {tag} frame: {exc}") from None
    return frame


@attrs.define
class FrameDecoder:
    """Incremental decoder: ``feed`` bytes as they arrive, get every complete frame back."""

    max_frame_bytes: int = MAX_FRAME_BYTES
    _buffer: bytearray = attrs.field(factory=bytearray, init=False)

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > self.max_frame_bytes:
                raise FrameError(
                    f"announced frame of {length} bytes exceeds the "
                    f"{self.max_frame_bytes}-byte limit"
                )
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            frames.append(decode_payload(body))
        return frames

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)
