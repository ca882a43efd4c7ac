"""The checks and text operations behind script assets, as pure functions.

Everything a client sends to ``/engine/assets`` (names, base64 content, line ranges, search
patterns, edit lists, batches) is checked here, and every refusal is a
:class:`~engine.errors.ValidationError` naming the field and the rule it broke, so the HTTP
layer answers 400 from one place.  Nothing here touches storage, the network or a clock other
than the search deadline.

Lines.  A line ends at ``"\\n"``; a ``"\\r"`` just before it belongs to the ending (CRLF), and a
lone ``"\\r"`` (or any other Unicode line separator) is an ordinary character.  Text after the
last ``"\\n"`` is a final line without an ending; an empty text has no lines.  So
``"".join(lines) == text`` always, and a line range hands back exactly the bytes it covers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import mimetypes
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from typing import Any, Final, Literal

import attrs
import regex  # type: ignore[import-untyped]

from engine.errors import ValidationError

MAX_ASSET_BYTES: Final = 10_000_000
MAX_NAME_CHARS: Final = 255
MAX_EDITS: Final = 128
MAX_BATCH_FILES: Final = 256
MAX_BATCH_BYTES: Final = 10 * 1024 * 1024
MAX_GREP_MATCHES: Final = 200
MAX_GREP_LINE_CHARS: Final = 512
MAX_GREP_PATTERN_CHARS: Final = 512
# The whole search, every line included, gets this long; the regex engine enforces it inside a
# match, so a pattern that backtracks catastrophically cannot hold a thread.
GREP_TIMEOUT_S: Final = 0.5
# The regex engine unrolls the minimum count of a repeat when it compiles (``a{1000000000}``
# exhausts memory, and compilation has no timeout), so patterns are sized before compiling.
# At this bound the worst compiles in a few milliseconds and a few megabytes.
MAX_GREP_EXPANSION: Final = 20_000
# The most text one search runs over: a backtracking search can hold 100-200 bytes for every
# character it has passed, so this bounds its memory to a few tens of megabytes.
MAX_GREP_SPAN_CHARS: Final = 100_000

TOO_LARGE: Final = "Asset too large (max 10MB)"
BAD_NAME_LENGTH: Final = "Invalid asset URI: must be 1-255 characters"
BAD_NAME_TRAVERSAL: Final = "Invalid asset URI: path traversal not allowed"
BAD_NAME_CONTROL: Final = "Invalid asset URI: control characters not allowed"
BAD_NAME_SURROGATE: Final = "Invalid asset URI: must be valid Unicode (no lone surrogates)"
BINARY: Final = "is a binary asset; text operations need UTF-8 text"
GREP_TOO_SLOW: Final = "pattern took too long to evaluate"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _json_kind(value: object) -> str:
    """What a JSON-decoded value is, in JSON's words, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


# -- names and content ------------------------------------------------------------------------


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot name an asset (the original's messages), or ``None``.

    Length is counted in characters.  Beyond the original: control characters (they end up in
    logs and headers) and lone surrogates (they cannot be stored as UTF-8) are refused too.
    """
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_CHARS:
        return BAD_NAME_LENGTH
    if ".." in name or "\\" in name:
        return BAD_NAME_TRAVERSAL
    if _CONTROL.search(name):
        return BAD_NAME_CONTROL
    if _SURROGATE.search(name):
        return BAD_NAME_SURROGATE
    return None


# ASCII whitespace only: what line-wrapping encoders insert.
_B64_ALPHABET = re.compile(r"[A-Za-z0-9+/= \t\n\r\f\v]*")
_B64_BAD_CHAR = re.compile(r"[^A-Za-z0-9+/= \t\n\r\f\v]")
_B64_SHAPE = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def decode_base64(text: object, *, field: str) -> bytes:
    """Standard base64 (``+/``, padded) to bytes; ASCII whitespace anywhere is ignored.

    Strict like the original's decoder: the padding must be there, ``=`` only at the end, and
    the unused bits of the last group must be zero, so one byte string has one encoding.
    """

    def refuse(reason: str) -> ValidationError:
        return ValidationError(field, f"must be valid base64: {reason}")

    if not isinstance(text, str):
        raise refuse(f"expected a string, got {_json_kind(text)}")
    if not _B64_ALPHABET.fullmatch(text):
        bad = _B64_BAD_CHAR.search(text)
        assert bad is not None
        raise refuse(f"invalid character {bad.group()!r} at position {bad.start()}")
    compact = "".join(text.split())  # only ASCII whitespace is left to split on
    if not _B64_SHAPE.fullmatch(compact):
        raise refuse("'=' padding may only appear at the end")
    if len(compact) % 4:
        raise refuse(f"length {len(compact)} is not a multiple of 4 (missing padding?)")
    # What is left is well-formed; only the unused bits of the last group can be wrong.
    data = binascii.a2b_base64(compact, strict_mode=True)
    if base64.b64encode(data).decode("ascii") != compact:
        raise refuse("the last character has non-zero unused bits")
    return data


def as_text(content: bytes, *, field: str = "asset") -> str:
    """The asset as text; NUL bytes or invalid UTF-8 mean it is binary.  A byte order mark is
    kept as U+FEFF so encoding the text again gives the same bytes."""
    if b"\x00" in content:
        raise ValidationError(field, BINARY)
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError(field, BINARY) from None


# -- media types ------------------------------------------------------------------------------

# Where the standard library's built-in table is missing a type or has an outdated one
# (RFC 9239 makes text/javascript the JavaScript type; browsers want image/x-icon).
_MIMETYPES: Final[Mapping[str, str]] = {
    extension: mimetype
    for mimetype, extensions in {
        "text/javascript": ".js .mjs .cjs",
        "text/css": ".css",
        "text/html": ".html .htm",
        "text/plain": ".txt",
        "text/csv": ".csv",
        "text/markdown": ".md .markdown",
        "text/calendar": ".ics",
        "application/json": ".json .map",
        "application/ld+json": ".jsonld",
        "application/manifest+json": ".webmanifest",
        "application/xml": ".xml",
        "application/rss+xml": ".rss",
        "application/atom+xml": ".atom",
        "application/yaml": ".yaml .yml",
        "application/toml": ".toml",
        "application/wasm": ".wasm",
        "application/gzip": ".gz",
        "image/svg+xml": ".svg",
        "image/x-icon": ".ico",
        "image/webp": ".webp",
        "image/avif": ".avif",
        "image/apng": ".apng",
        "font/woff": ".woff",
        "font/woff2": ".woff2",
        "font/ttf": ".ttf",
        "font/otf": ".otf",
        "audio/wav": ".wav",
        "audio/ogg": ".ogg .oga",
        "video/ogg": ".ogv",
        "audio/flac": ".flac",
        "audio/mp4": ".m4a",
    }.items()
    for extension in extensions.split()
}
_TEXT_APPLICATION_TYPES: Final = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/ecmascript",
        "application/x-javascript",
        "application/xml",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
        "application/graphql",
        "application/sql",
        "application/x-sh",
    }
)


@cache
def _stdlib_types() -> Mapping[str, str]:
    # The built-in table only: a fresh MimeTypes() ignores the host's /etc/mime.types, so a
    # name gets the same type on every machine.
    table = mimetypes.MimeTypes()
    return {**table.types_map[False], **table.types_map[True]}


def guess_mimetype(name: str) -> str:
    """The media type for ``name``'s extension (case-insensitive), else application/octet-stream."""
    basename = name.rsplit("/", 1)[-1]
    dot = basename.rfind(".")
    if dot <= 0:  # no extension, or a dot file such as ".env"
        return "application/octet-stream"
    extension = basename[dot:].lower()
    known = _MIMETYPES.get(extension) or _stdlib_types().get(extension)
    return known or "application/octet-stream"


def _essence(mimetype: str) -> str:
    return mimetype.split(";", 1)[0].strip().lower()


def is_text_mimetype(m: str) -> bool:
    """Whether ``m`` names text: ``text/*``, JSON, XML, YAML, JavaScript and their ``+suffix``
    relatives."""
    essence = _essence(m)
    return (
        essence.startswith("text/")
        or essence in _TEXT_APPLICATION_TYPES
        or essence.endswith(("+json", "+xml", "+yaml"))
    )


def content_type_header(mimetype: str) -> str:
    """The ``Content-Type`` to serve: ``text/*`` without a charset is declared UTF-8 (browsers
    would otherwise guess, often windows-1252); every other type is served as stored."""
    if not _essence(mimetype).startswith("text/"):
        return mimetype
    parameters = mimetype.split(";")[1:]
    if any(p.split("=", 1)[0].strip().lower() == "charset" for p in parameters):
        return mimetype
    return mimetype.rstrip().rstrip(";").rstrip() + "; charset=utf-8"


# -- line ranges ------------------------------------------------------------------------------


def _check_start(_: object, __: object, start: int) -> None:
    if start < 1:
        raise ValidationError("lines", "line numbers start at 1")


@attrs.frozen
class LineRange:
    """Lines ``start`` to ``end``, 1-based and inclusive; ``end=None`` reads to the end."""

    start: int = attrs.field(validator=_check_start)
    end: int | None = attrs.field(default=None)

    @end.validator
    def _check_end(self, _: object, end: int | None) -> None:
        if end is not None and end < self.start:
            raise ValidationError("lines", f"end line {end} is before start line {self.start}")


_RANGE = re.compile(r"([0-9]+)(-([0-9]*))?")
# A line number longer than this is past the end of any asset anyway; the cap keeps int()
# away from its 4300-digit refusal.
_MAX_LINE_DIGITS = 18


def parse_line_range(spec: str) -> LineRange:
    """``"a-b"``, ``"a-"`` (to the end) or ``"a"`` (one line), with 1-based line numbers."""
    found = _RANGE.fullmatch(spec.strip())
    if found is None:
        raise ValidationError("lines", "must be A-B, A- or A, with 1-based line numbers")
    start, end = found.group(1), found.group(3)
    if len(start) > _MAX_LINE_DIGITS or len(end or "") > _MAX_LINE_DIGITS:
        raise ValidationError("lines", f"line numbers must have at most {_MAX_LINE_DIGITS} digits")
    if found.group(2) is None:
        return LineRange(int(start), int(start))
    return LineRange(int(start), int(end) if end else None)


def _split_lines(text: str) -> list[str]:
    """The lines of ``text``, each with its ending (module docstring)."""
    pieces = text.split("\n")
    last = pieces.pop()
    lines = [piece + "\n" for piece in pieces]
    if last:
        lines.append(last)
    return lines


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def select_lines(text: str, selection: LineRange) -> dict[str, Any]:
    """The lines of ``selection``, with their endings; an end past the last line is clamped."""
    lines = _split_lines(text)
    total = len(lines)
    if selection.start > total:
        raise ValidationError(
            "lines",
            f"start line {selection.start} is past the end of the asset ({_plural(total, 'line')})",
        )
    end = total if selection.end is None else min(selection.end, total)
    return {
        "encoding": "utf8",
        "content": "".join(lines[selection.start - 1 : end]),
        "start_line": selection.start,
        "end_line": end,
        "total_lines": total,
    }


# -- search -----------------------------------------------------------------------------------

_QUANTIFIER = re.compile(r"\{([0-9]+)\}|\{([0-9]*),[0-9]*\}")
_FLAG_GROUP = re.compile(r"\(\?([a-zA-Z0-9^-]*)[:)]")
_BRACED_ESCAPES = frozenset("NpPx")
# Escapes whose meaning depends on where the string starts or ends or on the match start,
# and \X, for which "\r\n" is one grapheme.
_CONTEXT_ESCAPES = frozenset("AZzGKmMX")
_LINE_LOCAL_FLAGS = frozenset("aisu-")
_RECURSION = re.compile(r"\(\?(?:R|[+-]?[0-9]|&|P>)")
_REGEX_SYNTAX = re.compile(r"[\\.^$*+?{}\[\]|()]")


@attrs.frozen
class _PatternShape:
    """What compiling and running a pattern will cost, judged from its text (:func:`_shape`)."""

    size: int  # an upper bound on the nodes it compiles to, repeats unrolled
    line_local: bool  # a match inside one line is found the same within the whole text


def _class_end(pattern: str, i: int) -> int:
    """The index after the character class opening at ``pattern[i] == "["``."""
    j = i + 1
    if pattern.startswith("^", j):
        j += 1
    if pattern.startswith("]", j):  # a "]" first in the class is literal
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return min(j + 1, len(pattern))


def _group_is_line_local(pattern: str, i: int) -> bool:
    """Whether the ``(?`` group at ``i`` is one that cannot see past a line: non-capturing,
    named, a named back reference, or harmless flags -- not a lookaround, atomic group,
    conditional, recursion or a flag that changes what ``^``, ``$`` or ``\\b`` mean."""
    head = pattern[i + 2 : i + 4]
    if head.startswith((":", "P<", "P=")):
        return True
    if head.startswith("<"):
        return head[1:2] not in ("=", "!")
    flags = _FLAG_GROUP.match(pattern, i)
    return flags is not None and set(flags.group(1)) <= _LINE_LOCAL_FLAGS


def _shape(pattern: str) -> _PatternShape:
    """Size a pattern and decide whether it is line-local, without compiling it.

    A small scanner, not a parser: it knows escapes, classes, groups, comments and counted
    repeats, and where it could misread it errs towards a larger size and towards "not
    line-local" (a class ends at its first unescaped ``]``, never later than the engine's).
    The repeat minimum is what the engine unrolls, so ``x{n,m}`` weighs n times ``x``.
    Verbose mode is refused before this runs: its comments could hide syntax.
    """
    outer: list[tuple[int, int]] = []  # (size so far, size of its last atom) of open groups
    size = last = 0
    local = True
    quantified = False  # the previous token was a quantifier: a "+" now makes it possessive
    i = 0
    while i < len(pattern):
        char = pattern[i]
        step, atom, repeat = 1, 1, False
        if char == "\\":
            step = 2
            letter = pattern[i + 1 : i + 2]
            local = local and letter not in _CONTEXT_ESCAPES
            if letter in _BRACED_ESCAPES and pattern.startswith("{", i + 2):
                close = pattern.find("}", i + 3)
                step = (close if close != -1 else len(pattern)) + 1 - i
        elif char == "[":
            step = _class_end(pattern, i) - i
            atom = step  # a class compiles to a set whose size follows its text
        elif char == "(" and pattern.startswith("(?#", i):
            close = pattern.find(")", i)
            step = (close if close != -1 else len(pattern)) + 1 - i
            atom = 0
        elif char == "(":
            local = local and (not pattern.startswith("(?", i) or _group_is_line_local(pattern, i))
            outer.append((size, last))
            size, atom = 1, 0
        elif char == ")" and outer:
            group = size + 1
            size, _ = outer.pop()
            atom = group
        elif char == "{" and (counted := _QUANTIFIER.match(pattern, i)):
            factor = max(int(counted.group(1) or counted.group(2) or 0), 1)
            size += last * (factor - 1)
            last *= factor
            step, atom, repeat = counted.end() - i, 0, True
        elif char == "{":
            # Not a counted repeat: a literal brace, or a fuzzy constraint such as {e<=1}.
            local = local and not pattern[i + 1 : i + 2].isalnum()
        elif char in "*+?":
            local = local and not (char == "+" and quantified)
            atom, repeat = 0, True
        elif char == "|":
            atom = 0
        quantified = repeat
        if not repeat:  # a repeat leaves the repeated atom the last one
            size += atom
            last = atom
        i += step
    while outer:  # unbalanced: compilation will refuse it, but count everything meanwhile
        previous, _ = outer.pop()
        size += previous
    return _PatternShape(size=size, line_local=local)


def _compile_pattern(pattern: str) -> tuple[Any, bool]:
    """The compiled pattern and whether it is line-local, or the ValidationError saying why
    it cannot be used."""
    if not 1 <= len(pattern) <= MAX_GREP_PATTERN_CHARS:
        raise ValidationError("grep", f"must be 1-{MAX_GREP_PATTERN_CHARS} characters")
    if any("x" in flags.group(1) for flags in _FLAG_GROUP.finditer(pattern)):
        raise ValidationError("grep", "verbose mode (?x) is not supported")
    if _RECURSION.search(pattern):
        # A recursion that consumes nothing fills memory (hundreds of MB in a second)
        # before the engine gives up, and the timeout does not stop it.
        raise ValidationError("grep", "recursive patterns ((?R), (?1), (?&name)) are not supported")
    shape = _shape(pattern)
    if shape.size > MAX_GREP_EXPANSION:
        raise ValidationError(
            "grep", f"repeats make the pattern too large (at most {MAX_GREP_EXPANSION} elements)"
        )
    try:
        # MULTILINE changes nothing within one line and lets ^ and $ find line boundaries in
        # the whole text.  Not cached: the module's cache would keep 500 client patterns alive.
        compiled = regex.compile(pattern, regex.MULTILINE, cache_pattern=False)
    except regex.error as exc:
        raise ValidationError("grep", f"is not a valid regular expression: {exc}") from None
    except (RecursionError, OverflowError, ValueError) as exc:
        raise ValidationError("grep", f"cannot be compiled: {type(exc).__name__}") from None
    return compiled, shape.line_local


class _Searcher:
    """One pattern searched under one deadline, over spans of at most
    :data:`MAX_GREP_SPAN_CHARS` characters."""

    def __init__(self, pattern: str, timeout_s: float) -> None:
        compiled, self.line_local = _compile_pattern(pattern)
        self._search: Callable[..., Any] = compiled.search
        self._deadline = time.monotonic() + timeout_s
        # Without any syntax a pattern is a plain substring, searchable at any length.
        self._plain = None if _REGEX_SYNTAX.search(pattern) else pattern

    def search(self, text: str, pos: int = 0, endpos: int | None = None) -> Any:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise ValidationError("grep", GREP_TOO_SLOW)
        try:
            return self._search(text, pos, endpos, timeout=remaining)
        except TimeoutError:
            raise ValidationError("grep", GREP_TOO_SLOW) from None
        except MemoryError:
            # The engine's own refusal of a huge backtracking stack, already released.
            raise ValidationError("grep", "pattern took too much memory to evaluate") from None

    def line_matches(self, number: int, content: str) -> bool:
        if len(content) <= MAX_GREP_SPAN_CHARS:
            return self.search(content) is not None
        if self._plain is None:
            raise ValidationError(
                "grep",
                f"line {number} is longer than {MAX_GREP_SPAN_CHARS} characters, which only"
                " a plain-text pattern (no regular expression syntax) can search",
            )
        return self._plain in content

    def by_line(self, contents: list[str]) -> Iterator[tuple[int, str]]:
        for number, content in enumerate(contents, start=1):
            if self.line_matches(number, content):
                yield number, content

    def in_text(self, text: str) -> Iterator[tuple[int, str]]:
        """The matching lines, found by searching runs of whole lines at once -- one call per
        run and per matching line rather than one per line, which matters because every
        timed call costs microseconds.

        Sound only for a line-local pattern: a match at some place of a line's content is
        then a match at the same place of the run, so the leftmost match of the run is never
        after its first matching line.  A match that goes past the end of its line proves
        nothing, so that line is searched on its own; either way the search goes on from the
        next line.
        """
        number, pos = 1, 0  # the line that starts at pos
        while pos < len(text):
            if len(text) - pos <= MAX_GREP_SPAN_CHARS:
                end = len(text)
            else:
                end = text.rfind("\n", pos, pos + MAX_GREP_SPAN_CHARS + 1)
            if end == -1:  # one line longer than a span
                end = text.find("\n", pos)
                end = len(text) if end == -1 else end
                if self.line_matches(number, text[pos:end]):
                    yield number, text[pos:end]
                number, pos = number + 1, end + 1
                continue
            # Whole lines from pos to end, which is a line ending or the end of the text.
            while pos <= end and pos < len(text):
                found = self.search(text, pos, end)
                if found is None:
                    break
                start = found.start()
                if start == len(text) and text.endswith("\n"):
                    return  # the empty place after the final line ending is not a line
                number += text.count("\n", pos, start)
                line_start = text.rfind("\n", pos, start) + 1 or pos
                line_end = text.find("\n", start, end)
                line_end = end if line_end == -1 else line_end
                content = text[line_start:line_end]
                if found.end() <= line_end or self.search(content) is not None:
                    yield number, content
                number, pos = number + 1, line_end + 1
            if pos <= end:
                number += text.count("\n", pos, end + 1)
                pos = end + 1


def grep(text: str, pattern: str, *, timeout_s: float = GREP_TIMEOUT_S) -> dict[str, Any]:
    """The lines in which ``pattern`` (the ``regex`` module's syntax) finds a match.

    Each line is searched without its ending, as if it were the whole string.  All matching
    lines are counted; the first :data:`MAX_GREP_MATCHES` are returned, their text cut to
    :data:`MAX_GREP_LINE_CHARS` characters.  The whole search must finish within ``timeout_s``.
    """
    searcher = _Searcher(pattern, timeout_s)
    # Lines joined by "\n" alone: the contents are what each line is searched as.
    joined = text.replace("\r\n", "\n")
    contents = joined.split("\n")
    if contents[-1] == "":
        contents.pop()  # the text ends with a line ending, or is empty
    found = searcher.in_text(joined) if searcher.line_local else searcher.by_line(contents)
    matches: list[dict[str, Any]] = []
    count = 0
    for number, content in found:
        count += 1
        if len(matches) < MAX_GREP_MATCHES:
            truncated = len(content) > MAX_GREP_LINE_CHARS
            matches.append(
                {"line": number, "text": content[:MAX_GREP_LINE_CHARS], "truncated": truncated}
            )
    return {
        "encoding": "utf8",
        "matches": matches,
        "match_count": count,
        "truncated": count > MAX_GREP_MATCHES,
        "total_lines": len(contents),
    }


# -- edits ------------------------------------------------------------------------------------


def _nonempty(_: object, __: object, old_string: str) -> None:
    # An empty needle would match between every two characters.
    if not old_string:
        raise ValidationError("old_string", "must not be empty")


@attrs.frozen
class Edit:
    """Replace ``old_string`` by ``new_string``: its only occurrence, or all with
    ``replace_all``."""

    old_string: str = attrs.field(validator=_nonempty)
    new_string: str
    replace_all: bool = False


_EDIT_KEYS: Final = ("old_string", "new_string", "replace_all")


def _refuse_unknown_keys(value: Mapping[Any, Any], known: Sequence[str], field: str) -> None:
    for key in value:
        if key not in known:
            raise ValidationError(
                field, f"unknown field {str(key)[:64]!r} (expected {', '.join(known)})"
            )


def _string(value: object, field: str) -> str:
    """``value`` if it is a string that can be stored as UTF-8."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {_json_kind(value)}")
    if _SURROGATE.search(value):
        raise ValidationError(field, "must be valid Unicode text (no lone surrogates)")
    return value


def _optional_bool(value: object, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValidationError(field, f"must be true or false, got {_json_kind(value)}")
    return value


def parse_edits(value: object) -> tuple[Edit, ...]:
    """The ``edits`` of a PATCH body: 1 to :data:`MAX_EDITS` objects
    ``{old_string, new_string, replace_all?}``."""
    if not isinstance(value, list):
        raise ValidationError("edits", f"must be an array of edits, got {_json_kind(value)}")
    if not 1 <= len(value) <= MAX_EDITS:
        raise ValidationError("edits", f"must hold 1-{MAX_EDITS} edits, got {len(value)}")
    edits = []
    for index, item in enumerate(value):
        field = f"edits[{index}]"
        if not isinstance(item, Mapping):
            raise ValidationError(field, f"must be an object, got {_json_kind(item)}")
        _refuse_unknown_keys(item, _EDIT_KEYS, field)
        for required in ("old_string", "new_string"):
            if item.get(required) is None:
                raise ValidationError(f"{field}.{required}", "is required")
        old = _string(item["old_string"], f"{field}.old_string")
        if not old:
            raise ValidationError(f"{field}.old_string", "must not be empty")
        new = _string(item["new_string"], f"{field}.new_string")
        replace_all = _optional_bool(item.get("replace_all"), f"{field}.replace_all")
        edits.append(Edit(old, new, replace_all))
    return tuple(edits)


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def apply_edits(text: str, edits: Sequence[Edit]) -> tuple[str, int]:
    """``text`` with every edit applied in order, each to the result of the one before, and
    the number of replacements made; the first edit that cannot apply raises, so a caller
    stores either every edit or none.

    Occurrences are counted as ``str.count`` does (left to right, not overlapping), and an
    edit without ``replace_all`` must find exactly one place -- overlapping matches such as
    ``"aa"`` in ``"aaa"`` are two places.  The result may not outgrow
    :data:`MAX_ASSET_BYTES`; its size is computed before it is built.
    """
    size = _utf8_size(text)
    replacements = 0
    for index, edit in enumerate(edits):
        field = f"edits[{index}].old_string"
        old, new = edit.old_string, edit.new_string
        count = text.count(old)
        if count == 0:
            raise ValidationError(field, "not found in the asset")
        if not edit.replace_all:
            if count == 1 and text.find(old, text.find(old) + 1) != -1:
                raise ValidationError(
                    field,
                    "matches overlapping places; add context to make it unique or set replace_all",
                )
            if count > 1:
                raise ValidationError(
                    field,
                    f"matches {count} places; add context to make it unique or set replace_all",
                )
        replaced = count if edit.replace_all else 1
        size += replaced * (_utf8_size(new) - _utf8_size(old))
        if size > MAX_ASSET_BYTES:
            raise ValidationError(
                f"edits[{index}]", f"{TOO_LARGE}: the result would be {size} bytes"
            )
        text = text.replace(old, new, -1 if edit.replace_all else 1)
        replacements += replaced
    return text, replacements


# -- batches ----------------------------------------------------------------------------------


@attrs.frozen
class BatchFile:
    """One checked file of a batch: its content decoded, its mimetype given or guessed."""

    name: str
    mimetype: str
    content: bytes


@attrs.frozen
class BatchRequest:
    """A batch that passed every check: nothing in it can be refused for its shape."""

    script: str
    files: tuple[BatchFile, ...]
    reinit: Literal["after", "never"]


_BATCH_KEYS: Final = ("script", "files", "reinit")
_FILE_KEYS: Final = ("name", "asset", "content_base64", "content", "mimetype", "sha256")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def parse_reinit(value: object) -> Literal["after", "never"]:
    """Whether to re-run the script's ``init()`` after a write; absent means ``"after"``."""
    if value is None or value == "after":
        return "after"
    if value == "never":
        return "never"
    raise ValidationError("reinit", 'must be "after" or "never"')


def _one_of(item: Mapping[str, Any], keys: tuple[str, str], field: str) -> tuple[str, object]:
    """The key (of two alternatives) that ``item`` gives, and its value."""
    given = [key for key in keys if item.get(key) is not None]
    if len(given) == 2:
        raise ValidationError(field, f"give either {keys[0]} or {keys[1]}, not both")
    if not given:
        raise ValidationError(f"{field}.{keys[0]}", f"is required (or {keys[1]})")
    return given[0], item[given[0]]


def _batch_file(item: object, field: str) -> BatchFile:
    if not isinstance(item, Mapping):
        raise ValidationError(field, f"must be an object, got {_json_kind(item)}")
    _refuse_unknown_keys(item, _FILE_KEYS, field)
    _, name = _one_of(item, ("name", "asset"), field)
    problem = name_problem(name)
    if problem is not None:
        raise ValidationError(f"{field}.name", problem)
    assert isinstance(name, str)
    key, raw = _one_of(item, ("content_base64", "content"), field)
    if key == "content_base64":
        content = decode_base64(raw, field=f"{field}.content_base64")
    else:
        content = _string(raw, f"{field}.content").encode("utf-8")
    if len(content) > MAX_ASSET_BYTES:
        raise ValidationError(field, TOO_LARGE)
    mimetype = item.get("mimetype")
    if mimetype is None:
        mimetype = guess_mimetype(name)
    elif not isinstance(mimetype, str) or not mimetype.strip():
        raise ValidationError(f"{field}.mimetype", "must be a non-empty string")
    digest = item.get("sha256")
    if digest is not None:
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ValidationError(f"{field}.sha256", "must be 64 hexadecimal characters")
        actual = hashlib.sha256(content).hexdigest()
        if digest.lower() != actual:
            raise ValidationError(
                f"{field}.sha256",
                f"does not match the content (expected {digest.lower()}, got {actual})",
            )
    return BatchFile(name=name, mimetype=mimetype.strip(), content=content)


def parse_batch(payload: object, *, script: str | None = None) -> BatchRequest:
    """A ``POST /engine/assets/batch`` body, every file checked and decoded.

    ``script`` is the query string's, used when the body has none (and both must agree).
    Nothing is written unless all of it is valid, so the first problem is the only one reported.
    """
    if not isinstance(payload, Mapping):
        raise ValidationError("body", f"must be a JSON object, got {_json_kind(payload)}")
    _refuse_unknown_keys(payload, _BATCH_KEYS, "body")
    given = payload.get("script")
    if given is not None:
        given = _string(given, "script")
        if given and script and given != script:
            raise ValidationError("script", "differs between the query string and the body")
    chosen = given or script
    if not chosen:
        raise ValidationError("script", "is required")
    reinit = parse_reinit(payload.get("reinit"))
    files = payload.get("files")
    if files is None:
        raise ValidationError("files", "is required")
    if not isinstance(files, list):
        raise ValidationError("files", f"must be an array of files, got {_json_kind(files)}")
    if not 1 <= len(files) <= MAX_BATCH_FILES:
        raise ValidationError("files", f"must hold 1-{MAX_BATCH_FILES} files, got {len(files)}")
    parsed: list[BatchFile] = []
    seen: dict[str, int] = {}
    total = 0
    for index, item in enumerate(files):
        file = _batch_file(item, f"files[{index}]")
        if file.name in seen:
            raise ValidationError(f"files[{index}].name", f"duplicates files[{seen[file.name]}]")
        seen[file.name] = index
        total += len(file.content)
        if total > MAX_BATCH_BYTES:
            raise ValidationError(
                "files",
                f"the decoded files total more than {MAX_BATCH_BYTES} bytes (10 MiB)"
                f" by files[{index}]",
            )
        parsed.append(file)
    return BatchRequest(script=chosen, files=tuple(parsed), reinit=reinit)
