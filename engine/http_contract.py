"""What a script sees of an HTTP request, and how its return value becomes a response.

Pure functions, no I/O: ``handlers`` hands in raw bytes (path, query, headers, body) and gets the
``request`` object of the HandlerContext; the sandbox hands back a normalised *result* dict and
gets an :class:`HttpResponse`.  The shapes are the original engine's (``UPSTREAM_API.md`` §1.5,
§1.6, §1.7), so scripts written for it see the same values here.

The result dict is produced by the sandbox's JavaScript shim.  It is trusted to be JSON but not
to be well formed: anything unexpected becomes a :class:`ScriptResponseError` (a 500 naming the
problem), never a crash of the request handler.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote_to_bytes

import attrs

try:
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # pragma: no cover - older python-multipart only has the old import name
    from multipart.exceptions import FormParserError  # type: ignore[no-redef]
    from multipart.multipart import (  # type: ignore[no-redef]
        MultipartParser,
        parse_options_header,
    )

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

TEXT_PLAIN: Final = "text/plain; charset=UTF-8"
OCTET_STREAM: Final = "application/octet-stream"
NO_RESPONSE_BODY: Final = b"<no response>"

# Multipart framing (boundaries, part headers) on top of the upload limit itself, as upstream.
MULTIPART_FRAMING_ALLOWANCE: Final = 64 * 1024

# The multipart library logs a warning for every malformed body; each one is already answered
# with a 400, and logging them would let any client write to the log at will.  This logger is
# outside the logging tree and disabled.
_QUIET_PARSER_LOG: Final = logging.Logger("engine.http_contract.multipart", logging.CRITICAL + 1)

_UPLOAD_FILENAME: Final = re.compile(r"[A-Za-z0-9_.-]+")
# RFC 9110 token; what h11 and every proxy accept as a header name.
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Visible ASCII, space and tab.  Non-ASCII is refused because its encoding on the wire is
# ambiguous (the request side drops it too); control characters would split or corrupt headers.
_HEADER_VALUE: Final = re.compile(r"[\t\x20-\x7e]*")
_HOP_BY_HOP: Final = frozenset(
    {"connection", "transfer-encoding", "content-length", "keep-alive", "upgrade", "te", "trailer"}
)

# ---------------------------------------------------------------------------------------------
# Request side


def _decode_component(raw: bytes) -> str:
    # '+' means space only in the form encoding, so it is replaced before percent-decoding
    # (an encoded '%2B' stays a plus).  Invalid '%' sequences are kept as they are.
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8", "replace")


def decode_query(raw_query: bytes | str) -> dict[str, str]:
    """Decode a query string or urlencoded body; the last of repeated keys wins."""
    raw = raw_query.encode("utf-8", "surrogatepass") if isinstance(raw_query, str) else raw_query
    decoded: dict[str, str] = {}
    for piece in raw.split(b"&"):
        if not piece:
            continue
        key, _, value = piece.partition(b"=")
        decoded[_decode_component(key)] = _decode_component(value)
    return decoded


def headers_object(raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """``request.headers``: lowercase names, last value wins, non-ASCII values dropped."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in raw_headers:
        if not (raw_name.isascii() and raw_value.isascii()):
            continue
        headers[raw_name.decode("ascii").lower()] = raw_value.decode("ascii")
    return headers


def body_text(body: bytes) -> str | None:
    """``request.body``: the raw body as text, ``None`` when empty, ``""`` when not UTF-8."""
    if not body:
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return ""


class FormError(Exception):
    """A form body the engine refuses; ``message`` is the plain-text answer for ``status``."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    @classmethod
    def unparsable(cls) -> FormError:
        return cls("Failed to parse form data", status=400)

    @classmethod
    def too_large(cls) -> FormError:
        return cls("File upload exceeds maximum size limit", status=413)


@attrs.frozen
class ParsedForm:
    """``request.form`` and ``request.files``."""

    form: dict[str, str] = attrs.field(factory=dict, hash=False)
    files: list[dict[str, Any]] = attrs.field(factory=list, hash=False)


@attrs.define
class _Part:
    headers: dict[str, str] = attrs.field(factory=dict)
    data: bytearray = attrs.field(factory=bytearray)


@attrs.define
class _MultipartCollector:
    """Callbacks for ``MultipartParser``; accumulates parts and enforces the upload limit."""

    max_upload_bytes: int
    parts: list[_Part] = attrs.field(factory=list)
    finished: bool = False
    _field: bytearray = attrs.field(factory=bytearray)
    _value: bytearray = attrs.field(factory=bytearray)
    _total: int = 0

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.parts.append(_Part())

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        # Counted while parsing so an oversized upload stops early instead of being copied.
        self._total += end - start
        if self._total > self.max_upload_bytes:
            raise FormError.too_large()
        self.parts[-1].data += data[start:end]

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        # latin-1 keeps every byte; parameters are re-decoded as UTF-8 after parsing.
        name = self._field.decode("latin-1").strip().lower()
        self.parts[-1].headers[name] = self._value.decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def on_end(self) -> None:
        self.finished = True


def _param(options: Mapping[bytes, bytes], name: bytes) -> str | None:
    value = options.get(name)
    return None if value is None else value.decode("utf-8", "replace")


def _parse_multipart(boundary: bytes, body: bytes, max_upload_bytes: int) -> ParsedForm:
    collector = _MultipartCollector(max_upload_bytes)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        parser.logger = _QUIET_PARSER_LOG
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError) as exc:
        raise FormError.unparsable() from exc
    if not collector.finished:
        raise FormError.unparsable()  # truncated: the closing boundary never came
    form: dict[str, str] = {}
    files: list[dict[str, Any]] = []
    for part in collector.parts:
        disposition, options = parse_options_header(part.headers.get("content-disposition"))
        name = _param(options, b"name")
        if disposition != b"form-data" or name is None:
            continue  # not a form field (RFC 7578 requires both); browsers never send these
        filename = _param(options, b"filename")
        if filename is None:
            form[name] = bytes(part.data).decode("utf-8", "replace")
            continue
        if filename == "" and not part.data:
            continue  # a file input left empty: browsers send it with an empty filename
        if not _UPLOAD_FILENAME.fullmatch(filename):
            raise FormError.unparsable()
        entry: dict[str, Any] = {"field": name, "filename": filename}
        content_type = part.headers.get("content-type")
        if content_type is not None:
            entry["contentType"] = content_type.encode("latin-1").decode("utf-8", "replace")
        entry["data"] = base64.b64encode(part.data).decode("ascii")
        entry["size"] = len(part.data)
        files.append(entry)
    return ParsedForm(form, files)


def parse_form(content_type: str | None, body: bytes, *, max_upload_bytes: int) -> ParsedForm:
    """``request.form``/``request.files`` from a body; other content types give empty ones.

    Raises :class:`FormError`: 400 for an unparsable multipart body or an upload filename
    outside ``^[A-Za-z0-9_.-]+$``, 413 when the form is larger than ``max_upload_bytes``
    (multipart: the parts' data; framing may add :data:`MULTIPART_FRAMING_ALLOWANCE`).
    """
    # Passed as bytes: the parser reads bytes as latin-1, which cannot fail on any input.
    raw_type = None if content_type is None else content_type.encode("utf-8", "surrogatepass")
    mime, options = parse_options_header(raw_type)
    if mime == b"application/x-www-form-urlencoded":
        if len(body) > max_upload_bytes:
            raise FormError.too_large()
        return ParsedForm(decode_query(body), [])
    if mime == b"multipart/form-data":
        if len(body) > max_upload_bytes + MULTIPART_FRAMING_ALLOWANCE:
            raise FormError.too_large()
        boundary = options.get(b"boundary")
        if not boundary:
            raise FormError.unparsable()
        return _parse_multipart(boundary, body, max_upload_bytes)
    return ParsedForm()


def anonymous_auth() -> dict[str, Any]:
    """The AuthContext of a caller without a session (``requireAuth`` is added in JS)."""
    return {
        "isAuthenticated": False,
        "isAdmin": False,
        "isEditor": False,
        "userId": None,
        "userEmail": None,
        "userName": None,
        "provider": None,
        "user": None,
    }


def build_request(
    *,
    path: str,
    method: str,
    raw_query: bytes,
    raw_headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
    params: Mapping[str, str],
    form: ParsedForm,
    auth: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``request`` object of an ``httpRoute`` HandlerContext."""
    request: dict[str, Any] = {"path": path, "method": method}
    headers = headers_object(raw_headers)
    if headers:  # the original omits the property rather than sending {}
        request["headers"] = headers
    request["query"] = decode_query(raw_query)
    request["params"] = dict(params)
    request["form"] = dict(form.form)
    request["files"] = [dict(entry) for entry in form.files]
    request["body"] = body_text(body)
    request["auth"] = dict(auth)
    return request


def build_http_context(
    *, request: Mapping[str, Any], request_id: str, script_uri: str, handler: str
) -> dict[str, Any]:
    """The HandlerContext of an HTTP route; ``invocationId`` is the response's x-request-id."""
    return {
        "kind": "httpRoute",
        "invocationId": request_id,
        "scriptUri": script_uri,
        "handlerName": handler,
        "request": dict(request),
        "args": None,
    }


# ---------------------------------------------------------------------------------------------
# Response side


@attrs.frozen
class HttpResponse:
    """A complete response; headers keep the script's spelling and order."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class ScriptResponseError(Exception):
    """The handler's return value cannot become a response (→ 500 SCRIPT_EXECUTION_FAILED)."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self.details = details


def _describe(value: object) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _status_of(result: Mapping[str, Any], handler: str) -> int:
    if result.get("has_status") is not True:
        raise ScriptResponseError(
            f"missing status: handler '{handler}' returned an object without a status"
        )
    status = result.get("status")
    # JSON cannot tell 200 from 200.0, so an integral float is an integer here.
    if isinstance(status, float) and status.is_integer():
        status = int(status)
    # 1xx codes are interim responses in HTTP: a handler's single answer cannot be one.
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 999:
        raise ScriptResponseError(
            f"invalid status: handler '{handler}' returned status {_describe(status)}; "
            "expected an integer from 200 to 999 (1xx are interim codes, not final answers)"
        )
    return status


def _decode_base64(text: str, handler: str) -> bytes:
    # Lenient about what encoders differ on (line breaks, missing padding), strict otherwise.
    compact = "".join(text.split())
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ScriptResponseError(
            f"invalid bodyBase64: handler '{handler}' returned bodyBase64 that is not base64"
        ) from exc


def _optional_str(result: Mapping[str, Any], key: str) -> str | None:
    value = result.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ScriptResponseError(f"malformed handler result: '{key}' is {_describe(value)}")


def _clean_header(name: object, value: object) -> tuple[str, str] | None:
    """The header as it may be sent, or ``None`` when the script must not set it."""
    if not isinstance(name, str) or not isinstance(value, str):
        return None
    if not _HEADER_NAME.fullmatch(name) or name.lower() in _HOP_BY_HOP:
        return None
    # Surrounding whitespace is not part of a field value (RFC 9110 §5.5); h11 rejects it.
    value = value.strip(" \t")
    if not _HEADER_VALUE.fullmatch(value):
        return None
    return (name, value)


def _set_header(headers: list[tuple[str, str]], name: str, value: str) -> None:
    # Like the original's header map: a later header replaces an earlier one of any case.
    lowered = name.lower()
    headers[:] = [(n, v) for n, v in headers if n.lower() != lowered]
    headers.append((name, value))


def _object_response(result: Mapping[str, Any], handler: str) -> HttpResponse:
    status = _status_of(result, handler)
    body_base64 = _optional_str(result, "body_base64")
    if body_base64 is not None:
        body = _decode_base64(body_base64, handler)
        default_type = OCTET_STREAM
    else:
        body_error = _optional_str(result, "body_error")
        if body_error is not None:
            raise ScriptResponseError(f"invalid body: handler '{handler}': {body_error}")
        text = _optional_str(result, "body")
        # Lone surrogates can come out of JS strings; they cannot be UTF-8, so they become '?'.
        body = b"" if text is None else text.encode("utf-8", "replace")
        default_type = TEXT_PLAIN
    headers: list[tuple[str, str]] = []
    content_type = _optional_str(result, "content_type")
    given = None if content_type is None else _clean_header("Content-Type", content_type)
    headers.append(given or ("Content-Type", default_type))
    script_headers = result.get("headers")
    if script_headers is not None and not isinstance(script_headers, Mapping):
        raise ScriptResponseError(
            f"malformed handler result: 'headers' is {_describe(script_headers)}"
        )
    for raw_name, raw_value in (script_headers or {}).items():
        cleaned = _clean_header(raw_name, raw_value)
        if cleaned is not None:
            _set_header(headers, *cleaned)
    return HttpResponse(status, tuple(headers), body)


def response_from_result(result: Mapping[str, Any], *, handler: str) -> HttpResponse:
    """Turn the sandbox's normalised handler result into a response (``UPSTREAM_API.md`` §1.6).

    Raises :class:`ScriptResponseError` for every return value the contract maps to a 500.
    """
    kind = result.get("type") if isinstance(result, Mapping) else None
    if kind == "string":
        value = result.get("value")
        if not isinstance(value, str):
            raise ScriptResponseError(f"malformed handler result: 'value' is {_describe(value)}")
        return HttpResponse(200, (("Content-Type", TEXT_PLAIN),), value.encode("utf-8", "replace"))
    if kind == "none":
        return HttpResponse(200, (("Content-Type", TEXT_PLAIN),), NO_RESPONSE_BODY)
    if kind == "promise":
        raise ScriptResponseError(
            f"Handler '{handler}' returned a promise; async handlers are not supported"
            " — return a value synchronously"
        )
    if kind == "object":
        return _object_response(result, handler)
    raise ScriptResponseError(f"malformed handler result: type {_describe(kind)}")


# ---------------------------------------------------------------------------------------------
# Error envelope


def rfc3339_now() -> str:
    """The current UTC time as RFC 3339 with milliseconds and ``Z``."""
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def error_envelope(
    *,
    status: int,
    code: str,
    message: str,
    request_id: str,
    path: str,
    method: str,
    details: str | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """The engine's JSON error body (``UPSTREAM_API.md`` §1.7); ``details`` omitted when None."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    error["request_id"] = request_id
    error["timestamp"] = timestamp if timestamp is not None else rfc3339_now()
    error["path"] = path
    error["method"] = method
    return {"error": error, "status": status}
