"""Size and shape limits on requests, checked before anything expensive reads them.

Each check raises :class:`LimitExceeded` naming the field, the rule and the HTTP status, so the
HTTP layer answers with one clear 4xx. The JSON depth check scans raw bytes in linear time
without building the document, so a hostile body is refused before the parser recurses into it.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Iterable

import attrs

# Defaults and where they come from.
MAX_URL_BYTES = 8192  # the request target; nginx's and hypercorn's request-line buffers are 8 KiB
MAX_HEADER_COUNT = 100  # Apache's LimitRequestFields default
MAX_HEADER_BYTES = 8190  # one field, name + value; Apache's LimitRequestFieldSize default
MAX_HEADERS_TOTAL_BYTES = 32 * 1024
MAX_JSON_DEPTH = 64  # System.Text.Json's default MaxDepth; no real API payload nests deeper


@attrs.frozen
class LimitExceeded(Exception):
    """A request over a limit: ``field`` broke ``rule``; answer with ``status``."""

    field: str
    rule: str
    status: int

    def __str__(self) -> str:
        return f"{self.field} exceeds a limit: {self.rule}"


def check_url_length(target: str | bytes, max_bytes: int = MAX_URL_BYTES) -> None:
    """The request target (path and query) as received."""
    size = len(target.encode("utf-8") if isinstance(target, str) else target)
    if size > max_bytes:
        raise LimitExceeded("URL", f"at most {max_bytes} bytes, got {size}", 414)


def _size(text: str | bytes) -> int:
    return len(text.encode("latin-1", "replace") if isinstance(text, str) else text)


def check_headers(
    headers: Iterable[tuple[str | bytes, str | bytes]],
    *,
    max_count: int = MAX_HEADER_COUNT,
    max_bytes: int = MAX_HEADER_BYTES,
    max_total_bytes: int = MAX_HEADERS_TOTAL_BYTES,
) -> None:
    """Header count, each header's size (name + value) and their total size; 431 if over."""
    count = total = 0
    for name, value in headers:
        count += 1
        size = _size(name) + _size(value)
        total += size
        if size > max_bytes:
            label = name.decode("latin-1") if isinstance(name, bytes) else name
            raise LimitExceeded(
                f"header '{label[:64]}'", f"at most {max_bytes} bytes, got {size}", 431
            )
    if count > max_count:
        raise LimitExceeded("headers", f"at most {max_count} headers, got {count}", 431)
    if total > max_total_bytes:
        raise LimitExceeded("headers", f"at most {max_total_bytes} bytes in all, got {total}", 431)


def check_body_size(size: int, max_bytes: int) -> None:
    """A declared ``Content-Length`` or the bytes received so far; 413 if over."""
    if size > max_bytes:
        raise LimitExceeded("request body", f"at most {max_bytes} bytes, got {size}", 413)


# Escapes first: after removing every backslash pair, a string is simply "..." with no quote
# inside, so a single left-to-right pass finds them all. (Matching escaped strings directly can
# rescan the tail once per quote when a string never closes: quadratic on hostile input.)
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")  # opener +1, closer -1, after "- 1"


def json_depth_exceeds(data: bytes, max_depth: int) -> bool:
    """Does the JSON text ``data`` nest arrays/objects deeper than ``max_depth``?

    ``[]`` is depth 1, a scalar depth 0; brackets inside strings do not count. The scan does not
    validate: on malformed input the answer is exact up to the first error, which is as far as
    any JSON parser reads, so it still bounds the parser's recursion.
    """
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return False  # the common case, decided without looking further
    text = _STRING.sub(b"", _ESCAPE.sub(b"", data))
    unterminated = text.find(b'"')
    if unterminated >= 0:
        text = text[:unterminated]  # the rest is inside a string that never ends
    steps = text.translate(_STEP, _NOT_BRACKET)
    # Depth after each bracket is (sum of steps) - (number of brackets so far); all in C.
    depths = map(operator.sub, itertools.accumulate(steps), itertools.count(1))
    return max(depths, default=0) > max_depth


def check_json_depth(data: bytes, max_depth: int = MAX_JSON_DEPTH) -> None:
    if json_depth_exceeds(data, max_depth):
        raise LimitExceeded("JSON body", f"nested at most {max_depth} levels deep", 400)
