"""engine.asset_text: the checks and text operations behind script assets, without I/O."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Sequence
from typing import Any

import pytest
import regex  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.asset_text import (
    BAD_NAME_CONTROL,
    BAD_NAME_LENGTH,
    BAD_NAME_SURROGATE,
    BAD_NAME_TRAVERSAL,
    BINARY,
    GREP_TOO_SLOW,
    MAX_ASSET_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_FILES,
    MAX_EDITS,
    MAX_GREP_EXPANSION,
    MAX_GREP_LINE_CHARS,
    MAX_GREP_MATCHES,
    MAX_GREP_PATTERN_CHARS,
    MAX_GREP_SPAN_CHARS,
    MAX_NAME_CHARS,
    TOO_LARGE,
    BatchFile,
    BatchRequest,
    Edit,
    LineRange,
    _shape,
    apply_edits,
    as_text,
    content_type_header,
    decode_base64,
    grep,
    guess_mimetype,
    is_text_mimetype,
    name_problem,
    parse_batch,
    parse_edits,
    parse_line_range,
    parse_reinit,
    select_lines,
)
from engine.errors import ValidationError


def refused(field: str, rule: str | None = None) -> Any:
    """``pytest.raises`` for a ValidationError naming ``field`` (and ``rule`` if given, as a
    regular expression matched against the start of the rule)."""
    return pytest.raises(ValidationError, check=_checker(field, rule))


def _checker(field: str, rule: str | None) -> Any:
    def check(error: BaseException) -> bool:
        assert isinstance(error, ValidationError)
        assert error.field == field, error.message
        if rule is not None:
            assert re.match(rule, error.rule), error.rule
        assert error.message == f"{error.field}: {error.rule}"
        return True

    return check


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["a", "css/app.css", "/leading/slash.js", ".hidden", "a.b.c", "ä/ö ü.txt", "x" * 255, "a./b"],
)
def test_acceptable_names(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        (None, BAD_NAME_LENGTH),
        (5, BAD_NAME_LENGTH),
        (b"bytes", BAD_NAME_LENGTH),
        ("", BAD_NAME_LENGTH),
        ("x" * 256, BAD_NAME_LENGTH),
        ("../etc/passwd", BAD_NAME_TRAVERSAL),
        ("a/../b", BAD_NAME_TRAVERSAL),
        ("a..b", BAD_NAME_TRAVERSAL),
        ("a\\b", BAD_NAME_TRAVERSAL),
        ("a\nb", BAD_NAME_CONTROL),
        ("tab\there", BAD_NAME_CONTROL),
        ("nul\x00", BAD_NAME_CONTROL),
        ("del\x7f", BAD_NAME_CONTROL),
        ("half\ud800", BAD_NAME_SURROGATE),
    ],
)
def test_refused_names_get_the_upstream_messages(name: object, problem: str) -> None:
    assert name_problem(name) == problem


def test_upstream_name_messages_are_the_originals() -> None:
    assert BAD_NAME_LENGTH == "Invalid asset URI: must be 1-255 characters"
    assert BAD_NAME_TRAVERSAL == "Invalid asset URI: path traversal not allowed"


_NAME_CHARS = st.sampled_from(["a", ".", "/", "\\", "\n", "\x00", "\x1f", "\x7f", "é", " ", "-"])
names = st.one_of(
    st.lists(_NAME_CHARS, max_size=12).map("".join),
    st.text(max_size=300),
    st.text(alphabet="ab.", min_size=250, max_size=260),
    st.text(alphabet=st.characters(), max_size=20),
)


@given(name=names)
def test_names_accepted_exactly_by_the_rules(name: str) -> None:
    fine = (
        1 <= len(name) <= MAX_NAME_CHARS
        and ".." not in name
        and "\\" not in name
        and not any(ord(c) < 32 or ord(c) == 127 for c in name)
        and not any(0xD800 <= ord(c) <= 0xDFFF for c in name)
    )
    assert (name_problem(name) is None) == fine


# -- base64 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ("", b""),
        ("aGk=", b"hi"),
        ("aGVsbG8=", b"hello"),
        ("aG Vs\nbG8=\r\n", b"hello"),
        ("\taGVsbG8=\n", b"hello"),
        ("+/+/", b"\xfb\xff\xbf"),
    ],
)
def test_base64_decodes_standard_padded_text(text: str, data: bytes) -> None:
    assert decode_base64(text, field="content") == data


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "expected a string, got null"),
        (12, "expected a string, got number"),
        (["aGk="], "expected a string, got array"),
        ("aGk*", "invalid character '\\*' at position 3"),
        ("aGké", "invalid character 'é' at position 3"),
        ("-_-_", "invalid character '-' at position 0"),
        ("aGk=\u3000", r"invalid character '\\u3000' at position 4"),  # shown escaped
        ("aG==aGk=", "'=' padding may only appear at the end"),
        ("a===", "'=' padding may only appear at the end"),
        ("aGk", "length 3 is not a multiple of 4"),
        ("aGVsbG8", "length 7 is not a multiple of 4"),
        ("aGl=", "the last character has non-zero unused bits"),
    ],
)
def test_bad_base64_names_the_field_and_the_reason(text: object, reason: str) -> None:
    with refused("files[2].content_base64", "must be valid base64: " + reason):
        decode_base64(text, field="files[2].content_base64")


@given(data=st.binary(max_size=300), wrap=st.booleans())
def test_base64_round_trips_any_bytes(data: bytes, wrap: bool) -> None:
    encoded = (base64.encodebytes(data) if wrap else base64.b64encode(data)).decode("ascii")
    assert decode_base64(encoded, field="content") == data


@given(text=st.text(alphabet="AaZz09+/= \n-_*", max_size=24))
def test_base64_accepts_only_what_the_strict_decoder_accepts(text: str) -> None:
    compact = "".join(text.split())
    expected: bytes | None
    try:
        decoded = base64.b64decode(compact, validate=True)
        # Canonical encodings only: the unused bits of the last group must be zero.
        expected = decoded if base64.b64encode(decoded).decode() == compact else None
    except ValueError:
        expected = None
    try:
        assert decode_base64(text, field="content") == expected
    except ValidationError as error:
        assert expected is None and error.field == "content"


# -- media types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mimetype"),
    [
        ("app.js", "text/javascript"),
        ("lib/mod.mjs", "text/javascript"),
        ("style.CSS", "text/css"),
        ("index.html", "text/html"),
        ("icon.svg", "image/svg+xml"),
        ("data.json", "application/json"),
        ("README.md", "text/markdown"),
        ("engine.wasm", "application/wasm"),
        ("photo.webp", "image/webp"),
        ("font.woff2", "font/woff2"),
        ("favicon.ico", "image/x-icon"),
        ("site.webmanifest", "application/manifest+json"),
        ("config.yml", "application/yaml"),
        ("archive.tar.gz", "application/gzip"),
        ("logo.png", "image/png"),  # from the standard library's table
        ("doc.pdf", "application/pdf"),
        ("notes", "application/octet-stream"),
        (".env", "application/octet-stream"),
        ("dir.d/file", "application/octet-stream"),
        ("trailing.", "application/octet-stream"),
        ("x.no-such-extension", "application/octet-stream"),
    ],
)
def test_mimetype_is_guessed_from_the_extension(name: str, mimetype: str) -> None:
    assert guess_mimetype(name) == mimetype


@pytest.mark.parametrize(
    ("mimetype", "text"),
    [
        ("text/plain", True),
        ("Text/HTML; charset=iso-8859-1", True),
        ("text/javascript", True),
        ("application/json", True),
        ("application/ld+json", True),
        ("image/svg+xml", True),
        ("application/javascript", True),
        ("application/yaml", True),
        ("image/png", False),
        ("application/octet-stream", False),
        ("application/wasm", False),
        ("font/woff2", False),
        ("", False),
    ],
)
def test_text_mimetypes(mimetype: str, text: bool) -> None:
    assert is_text_mimetype(mimetype) is text


@pytest.mark.parametrize(
    ("mimetype", "header"),
    [
        ("text/css", "text/css; charset=utf-8"),
        ("text/plain;", "text/plain; charset=utf-8"),
        ("text/plain; format=flowed", "text/plain; format=flowed; charset=utf-8"),
        ("text/html; charset=iso-8859-1", "text/html; charset=iso-8859-1"),
        ("TEXT/PLAIN; Charset=UTF-8", "TEXT/PLAIN; Charset=UTF-8"),
        ("application/json", "application/json"),
        ("image/png", "image/png"),
    ],
)
def test_content_type_header_declares_utf8_for_text(mimetype: str, header: str) -> None:
    assert content_type_header(mimetype) == header


# -- text -------------------------------------------------------------------------------------


def test_as_text_keeps_the_bytes_including_a_byte_order_mark() -> None:
    content = "\ufeffhé\r\nllo".encode()
    assert as_text(content).encode() == content


@pytest.mark.parametrize("content", [b"a\x00b", b"\xff\xfe", b"caf\xe9", b"\xed\xa0\x80"])
def test_binary_content_is_refused_for_text_operations(content: bytes) -> None:
    with refused("asset", BINARY):
        as_text(content)
    with refused("file", BINARY):
        as_text(content, field="file")


# -- line ranges ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "selection"),
    [
        ("3-7", LineRange(3, 7)),
        ("3-", LineRange(3, None)),
        ("3", LineRange(3, 3)),
        (" 3-3 ", LineRange(3, 3)),
        ("007-010", LineRange(7, 10)),
        ("1-999999999999999999", LineRange(1, 999999999999999999)),
    ],
)
def test_line_ranges(spec: str, selection: LineRange) -> None:
    assert parse_line_range(spec) == selection


@pytest.mark.parametrize(
    ("spec", "rule"),
    [
        ("", "must be A-B, A- or A"),
        ("-3", "must be A-B, A- or A"),
        ("a-b", "must be A-B, A- or A"),
        ("3-4-5", "must be A-B, A- or A"),
        ("1.5", "must be A-B, A- or A"),
        ("\u0661", "must be A-B, A- or A"),  # an Arabic-Indic digit
        ("3 - 4", "must be A-B, A- or A"),
        ("0", "line numbers start at 1"),
        ("0-3", "line numbers start at 1"),
        ("5-3", "end line 3 is before start line 5"),
        ("1" * 19, "line numbers must have at most 18 digits"),
        ("1-" + "9" * 5000, "line numbers must have at most 18 digits"),
    ],
)
def test_bad_line_ranges(spec: str, rule: str) -> None:
    with refused("lines", rule):
        parse_line_range(spec)


def test_a_line_range_cannot_be_built_backwards() -> None:
    with refused("lines", "line numbers start at 1"):
        LineRange(0, 2)
    with refused("lines", "end line 1 is before start line 2"):
        LineRange(2, 1)


TEXT = "one\ntwo\r\nthree\rstill three\nfour"


def test_lines_end_at_lf_and_crlf_and_keep_their_endings() -> None:
    assert select_lines(TEXT, LineRange(2, 3)) == {
        "encoding": "utf8",
        "content": "two\r\nthree\rstill three\n",
        "start_line": 2,
        "end_line": 3,
        "total_lines": 4,
    }


def test_an_end_past_the_last_line_is_clamped() -> None:
    assert select_lines(TEXT, LineRange(3, None))["content"] == "three\rstill three\nfour"
    selected = select_lines(TEXT, LineRange(4, 100))
    assert (selected["content"], selected["end_line"]) == ("four", 4)


@pytest.mark.parametrize(
    ("text", "start", "rule"),
    [
        (TEXT, 5, "start line 5 is past the end of the asset \\(4 lines\\)"),
        ("", 1, "start line 1 is past the end of the asset \\(0 lines\\)"),
        ("x\n", 2, "start line 2 is past the end of the asset \\(1 line\\)"),
    ],
)
def test_a_start_past_the_end_is_refused(text: str, start: int, rule: str) -> None:
    with refused("lines", rule):
        select_lines(text, LineRange(start, None))


@pytest.mark.parametrize(
    ("text", "total"), [("", 0), ("x", 1), ("x\n", 1), ("\n\n", 2), ("a\rb", 1), ("a\r\n", 1)]
)
def test_line_counts(text: str, total: int) -> None:
    assert grep(text, "zzz")["total_lines"] == total
    if total:
        assert select_lines(text, LineRange(1, None))["total_lines"] == total


texts = st.lists(st.sampled_from(["a", "b", " ", "\n", "\r", "\r\n", "é", "\u2028"])).map("".join)


@given(text=texts, data=st.data())
def test_consecutive_ranges_put_the_text_back_together(text: str, data: st.DataObject) -> None:
    total = select_lines(text, LineRange(1, None))["total_lines"] if text else 0
    cuts = sorted(data.draw(st.sets(st.integers(1, max(total, 1)), max_size=6)) | {total + 1})
    pieces, start = [], 1
    for cut in cuts:
        if cut <= start:
            continue
        end = None if cut == total + 1 and data.draw(st.booleans()) else cut - 1
        selected = select_lines(text, LineRange(start, end))
        assert (selected["start_line"], selected["end_line"]) == (start, cut - 1)
        pieces.append(selected["content"])
        start = cut
    assert "".join(pieces) == text
    # Beyond the last line there is nothing to select.
    with refused("lines", "start line"):
        select_lines(text, LineRange(total + 1, None))


# -- grep -------------------------------------------------------------------------------------


def test_grep_lists_the_matching_lines_without_their_endings() -> None:
    text = "alpha\r\nbeta\ngamma\rdelta\nalphabet"
    assert grep(text, "^alpha") == {
        "encoding": "utf8",
        "matches": [
            {"line": 1, "text": "alpha", "truncated": False},
            {"line": 4, "text": "alphabet", "truncated": False},
        ],
        "match_count": 2,
        "truncated": False,
        "total_lines": 4,
    }
    assert grep(text, "ha$")["matches"] == [{"line": 1, "text": "alpha", "truncated": False}]
    assert grep(text, "gamma\rdelta")["matches"][0]["line"] == 3


@pytest.mark.parametrize(
    ("pattern", "lines"),
    [
        (r"a\s*b", [3]),  # a match across a line ending does not count
        (r"(?s)a.*b", [3]),
        ("a\nb", []),
        (r"a\n", []),
        (r"\Ab", [2]),  # anchors hold at each line's own start and end
        (r"a\Z", [1]),
        ("^$", [4]),
        (r"(?<=\s)b", [3]),
        (r"a(?!\s)", [1]),
        (r"a(?>\s*)$", [1]),
        (r"a\s*+$", [1]),
        (r"a(?:\s|b)*+$", [1, 3]),
        (r"\Ka", [1, 3]),
    ],
)
def test_grep_searches_each_line_on_its_own(pattern: str, lines: list[int]) -> None:
    text = "a\r\nb\na b\n\n"
    assert [m["line"] for m in grep(text, pattern)["matches"]] == lines


def test_grep_cuts_long_lines_and_lists_at_most_200() -> None:
    text = "x" * 600 + "\n" + "match\n" * 250
    result = grep(text, "x|match")
    assert result["matches"][0] == {"line": 1, "text": "x" * MAX_GREP_LINE_CHARS, "truncated": True}
    assert len(result["matches"]) == MAX_GREP_MATCHES
    assert result["matches"][-1]["line"] == MAX_GREP_MATCHES
    assert (result["match_count"], result["truncated"], result["total_lines"]) == (251, True, 251)


@pytest.mark.parametrize(
    ("pattern", "rule"),
    [
        ("", "must be 1-512 characters"),
        ("a" * (MAX_GREP_PATTERN_CHARS + 1), "must be 1-512 characters"),
        ("(", "is not a valid regular expression: missing \\)"),
        ("[a", "is not a valid regular expression: unterminated character set"),
        ("a**", "is not a valid regular expression: multiple repeat"),
        (r"\L<words>", "is not a valid regular expression"),
        ("(?x)a b", "verbose mode"),
        ("(?ix:a)", "verbose mode"),
        ("a{1000000000}", "repeats make the pattern too large"),
        ("(?:(?:a{100}){100}){100}", "repeats make the pattern too large"),
        ("[a-z]{5000}", "repeats make the pattern too large"),
        (f"a{{{MAX_GREP_EXPANSION + 1}}}", "repeats make the pattern too large"),
    ],
)
def test_bad_patterns_are_refused(pattern: str, rule: str) -> None:
    started = time.monotonic()
    with refused("grep", rule):
        grep("a\nb", pattern)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("pattern", ["(?R)", "a(?1)", "(a)(?-1)", "(a)(?+1)", "(?&n)", "(?P>n)"])
def test_recursive_patterns_are_refused(pattern: str) -> None:
    with refused("grep", "recursive patterns"):
        grep("a" * 100, pattern)


def test_flags_are_not_taken_for_recursion() -> None:
    assert grep("A\nb", "(?-i)(?i:a)")["match_count"] == 1


def test_a_large_text_is_searched_in_spans_of_whole_lines() -> None:
    lines = [("needle" if n % 7 == 0 else "hay") + "x" * (n * 37 % 900) for n in range(1200)]
    text = "\r\n".join(lines) + "\n"
    assert len(text) > 4 * MAX_GREP_SPAN_CHARS
    for pattern in ["needle", r"^needlex*$", r"needle(?=x|$)", r"(?<![a-z])needle"]:
        result = grep(text, pattern)
        expected = [n + 1 for n, line in enumerate(lines) if line.startswith("needle")]
        assert result["match_count"] == len(expected), pattern
        assert [m["line"] for m in result["matches"]] == expected[:MAX_GREP_MATCHES]
        assert result["total_lines"] == len(lines)


def test_a_line_longer_than_a_span_takes_a_plain_pattern_only() -> None:
    text = "short\n" + "ab" * MAX_GREP_SPAN_CHARS + "needle\nend"
    result = grep(text, "needle")
    assert [(m["line"], m["truncated"]) for m in result["matches"]] == [(2, True)]
    assert grep(text, "end")["matches"][0]["line"] == 3
    for pattern in ["need.e", r"(?<!x)needle"]:
        with refused("grep", "line 2 is longer than 100000 characters"):
            grep(text, pattern)


@pytest.mark.parametrize(
    "pattern", [f"a{{{MAX_GREP_EXPANSION}}}", "(?:a{100}){100}", "x{1,1000000}", "a{0,99999}b"]
)
def test_repeats_within_the_bound_are_compiled(pattern: str) -> None:
    assert grep("a" * 20 + "b\n", pattern)["total_lines"] == 1


@pytest.mark.parametrize("pattern", [r"(a|aa)+c", r"(?<=x)(a|aa)+$", r"x(a|aa)+\Z"])
def test_a_catastrophic_pattern_runs_out_of_time_instead_of_hanging(pattern: str) -> None:
    text = ("x" + "a" * 40 + "b\n") * 3
    started = time.monotonic()
    with refused("grep", GREP_TOO_SLOW):
        grep(text, pattern, timeout_s=0.2)
    assert time.monotonic() - started < 1


def test_the_budget_covers_the_whole_search_not_each_line() -> None:
    text = "x\n" * 200_000
    with refused("grep", GREP_TOO_SLOW):
        grep(text, r"(?<!y)x", timeout_s=0.01)


@pytest.mark.parametrize(
    ("pattern", "line_local"),
    [
        ("abc", True),
        (r"^\s*function\s+(\w+)\(", True),
        (r"(?i)todo|fixme$", True),
        (r"(?:a|b)+?c{2,3}", True),
        (r"(?P<q>['\"]).*?(?P=q)", True),
        (r"\bword\b \d+", True),
        (r"[(?=]x", True),
        ("x { y", True),
        (r"\\Ax", True),
        (r"\Ax", False),
        (r"x\Z", False),
        (r"x\z", False),
        (r"\Gx", False),
        (r"a\Kb", False),
        (r"\X$", False),
        (r"(?=a)", False),
        (r"(?<!a)b", False),
        (r"(?>a*)", False),
        ("a*+", False),
        ("a++", False),
        ("a{2}+", False),
        ("a?+", False),
        ("(?m)a", False),
        ("(?-m:^a)", False),
        ("(?r)a", False),
        ("(?V1)a", False),
        ("(?w)a", False),
        ("(a)(?1)", False),
        ("(?(1)a|b)", False),
        ("(?|a|b)", False),
        ("(?:ab){e<=1}", False),
        ("(?:ab){1i+1d<2}", False),
    ],
)
def test_which_patterns_may_search_the_whole_text(pattern: str, line_local: bool) -> None:
    assert _shape(pattern).line_local is line_local


_PATTERN_TOKENS = [
    "a", "b", " ", ".", "\n", r"\n", r"\r", r"\s", r"\S", r"\w", r"\W", r"\b", r"\B", "^", "$",
    r"\A", r"\Z", r"\z", r"\G", r"\K", r"\X", "(", ")", "(?:", "(?=", "(?!", "(?<=", "(?<!",
    "(?>", "(?i)", "(?s)", "(?m)", "(?-m)", "(?x)", "|", "*", "+", "?", "*+", "++", "{2}",
    "{1,3}", "{,2}", "{e<=1}", "{", "}", "[", "]", "[^a]", r"[\s]", "[a-c]", r"\1", "(?P<n>",
    "(?P=n)", "(?1)", "(?R)", r"\p{L}", r"\\", r"\x0a", "(?#c)", "a{3000}", "\r",
]  # fmt: skip
_ATOMS = [
    "a", "b", " ", "é", ".", r"\s", r"\S", r"\n", r"\r", r"\w", r"\W", r"\b", r"\B", "^", "$",
    r"\A", r"\Z", r"\z", r"\G", r"\K", r"\X", "[^a]", r"[\s]", "[ab]", r"\1",
]  # fmt: skip
_GROUPS = ["(", "(?:", "(?=", "(?!", "(?<=", "(?<!", "(?>", "(?i:", "(?s:", "(?m:", "(?-m:"]
_QUANTIFIERS = ["*", "+", "?", "*?", "*+", "++", "?+", "{2}", "{0,2}", "{1,}", "{2}+"]


def _compound(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(st.sampled_from(_GROUPS), inner).map(lambda g: g[0] + g[1] + ")"),
        st.tuples(inner, st.sampled_from(_QUANTIFIERS)).map(lambda q: f"(?:{q[0]}){q[1]}"),
        st.lists(inner, min_size=2, max_size=3).map("".join),
        st.lists(inner, min_size=2, max_size=3).map("|".join),
    )


# Well-formed patterns built from the constructs whose meaning depends on context, and
# token soup for everything else the syntax allows (or refuses).
patterns = st.one_of(
    st.recursive(st.sampled_from(_ATOMS), _compound, max_leaves=8),
    st.lists(st.sampled_from(_PATTERN_TOKENS), min_size=1, max_size=10).map("".join),
    st.text(min_size=1, max_size=20),
)
grep_texts = st.lists(st.sampled_from(["a", "b", " ", "\n", "\r", "\r\n", "é"]), max_size=30).map(
    "".join
)


def reference_grep(text: str, pattern: str) -> list[tuple[int, str]] | None:
    """Each line searched on its own, as written in the rules; ``None`` for a bad pattern."""
    lines = re.findall(r"[^\n]*\n|[^\n]+\Z", text)
    contents = [line[:-2] if line.endswith("\r\n") else line.rstrip("\n") for line in lines]
    try:
        compiled = regex.compile(pattern)
    except (regex.error, RecursionError, OverflowError, ValueError):
        return None
    return [(n, c) for n, c in enumerate(contents, start=1) if compiled.search(c, timeout=5)]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(text=grep_texts, pattern=patterns)
def test_grep_finds_the_lines_a_line_by_line_search_finds(text: str, pattern: str) -> None:
    try:
        result = grep(text, pattern, timeout_s=5)
    except ValidationError as error:
        # Refused on purpose (too large, verbose) or not a pattern at all.
        assert error.field == "grep"
        if error.rule.startswith("is not a valid regular expression"):
            assert reference_grep(text, pattern) is None
        return
    expected = reference_grep(text, pattern)
    assert expected is not None
    assert [(m["line"], m["text"]) for m in result["matches"]] == expected
    assert result["match_count"] == len(expected)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=60), pattern=st.text(max_size=MAX_GREP_PATTERN_CHARS + 2))
def test_grep_raises_nothing_but_validation_errors(text: str, pattern: str) -> None:
    try:
        result = grep(text, pattern)
    except ValidationError as error:
        assert error.field == "grep"
        return
    assert result["match_count"] >= len(result["matches"])


# -- edits ------------------------------------------------------------------------------------


def test_edits_are_parsed() -> None:
    assert parse_edits(
        [
            {"old_string": "a", "new_string": "b"},
            {"old_string": "c", "new_string": "", "replace_all": True},
            {"old_string": "d", "new_string": "e", "replace_all": None},
        ]
    ) == (Edit("a", "b"), Edit("c", "", replace_all=True), Edit("d", "e"))


@pytest.mark.parametrize(
    ("value", "field", "rule"),
    [
        (None, "edits", "must be an array of edits, got null"),
        ({"old_string": "a"}, "edits", "must be an array of edits, got object"),
        ([], "edits", "must hold 1-128 edits, got 0"),
        ([{"old_string": "a", "new_string": "b"}] * 129, "edits", "must hold 1-128 edits, got 129"),
        (["a"], "edits[0]", "must be an object, got string"),
        ([{"old_string": "a", "new_string": "b", "extra": 1}], "edits[0]", "unknown field 'extra'"),
        ([{"new_string": "b"}], "edits[0].old_string", "is required"),
        ([{"old_string": None, "new_string": "b"}], "edits[0].old_string", "is required"),
        ([{"old_string": "a"}], "edits[0].new_string", "is required"),
        ([{"old_string": 1, "new_string": "b"}], "edits[0].old_string", "must be a string, got"),
        ([{"old_string": "", "new_string": "b"}], "edits[0].old_string", "must not be empty"),
        ([{"old_string": "a", "new_string": []}], "edits[0].new_string", "must be a string"),
        ([{"old_string": "a", "new_string": "\udc80"}], "edits[0].new_string", "must be valid"),
        (
            [{"old_string": "a", "new_string": "b"}] * 3
            + [{"old_string": "a", "new_string": "b", "replace_all": 1}],
            "edits[3].replace_all",
            "must be true or false, got number",
        ),
        (
            [{"old_string": "a", "new_string": "b", "replace_all": "true"}],
            "edits[0].replace_all",
            "must be true or false, got string",
        ),
    ],
)
def test_bad_edit_lists_name_the_field(value: object, field: str, rule: str) -> None:
    with refused(field, rule):
        parse_edits(value)


def test_the_edit_limit_is_128() -> None:
    assert len(parse_edits([{"old_string": "a", "new_string": "b"}] * MAX_EDITS)) == MAX_EDITS


def test_an_empty_old_string_cannot_be_built() -> None:
    with refused("old_string", "must not be empty"):
        Edit("", "x")


def test_edits_apply_in_order_each_to_the_previous_result() -> None:
    text = "let a = 1;\nlet b = a + a;\n"
    edits = [
        Edit("let a = 1;", "let a = 2;"),
        Edit("a", "x", replace_all=True),
        Edit("let x = 2;", "const x = 2;"),
    ]
    assert apply_edits(text, edits) == ("const x = 2;\nlet b = x + x;\n", 1 + 3 + 1)


@pytest.mark.parametrize(
    ("text", "edits", "field", "rule"),
    [
        ("abc", [Edit("x", "y")], "edits[0].old_string", "not found in the asset$"),
        (
            "abc",
            [Edit("a", "x"), Edit("a", "y")],
            "edits[1].old_string",
            "not found in the asset",
        ),
        (
            "a b a c a",
            [Edit("b", "B"), Edit("a", "x")],
            "edits[1].old_string",
            "matches 3 places; add context to make it unique or set replace_all$",
        ),
        (
            "aaa",
            [Edit("aa", "b")],
            "edits[0].old_string",
            "matches overlapping places; add context to make it unique or set replace_all$",
        ),
    ],
)
def test_edits_that_cannot_apply_name_the_edit(
    text: str, edits: list[Edit], field: str, rule: str
) -> None:
    with refused(field, rule):
        apply_edits(text, edits)


def test_replace_all_replaces_non_overlapping_occurrences_left_to_right() -> None:
    assert apply_edits("aaaa", [Edit("aa", "b", replace_all=True)]) == ("bb", 2)
    assert apply_edits("aaa", [Edit("aa", "b", replace_all=True)]) == ("ba", 1)


def test_an_edit_may_not_grow_the_asset_past_the_limit() -> None:
    started = time.monotonic()
    with refused("edits[1]", re.escape(TOO_LARGE)):
        apply_edits("x" + "a" * 1000, [Edit("x", "y"), Edit("a", "c" * 20_000, replace_all=True)])
    assert time.monotonic() - started < 1  # refused before the 20 MB result was built
    # The limit is on UTF-8 bytes: "é" is two.
    text = "b" + "a" * (MAX_ASSET_BYTES - 1)
    assert len(apply_edits(text, [Edit("ba", "é")])[0].encode()) == MAX_ASSET_BYTES
    with refused("edits[0]", re.escape(TOO_LARGE) + ": the result would be 10000001 bytes"):
        apply_edits(text, [Edit("b", "é")])


class RefusedAt(Exception):
    def __init__(self, index: int, kind: str) -> None:
        super().__init__(index, kind)
        self.index, self.kind = index, kind


def _positions(text: str, old: str, *, overlapping: bool) -> list[int]:
    found, at = [], text.find(old)
    while at != -1:
        found.append(at)
        at = text.find(old, at + (1 if overlapping else len(old)))
    return found


def reference_apply(text: str, edits: Sequence[Edit]) -> tuple[str, int]:
    """The edit rules written out plainly: find every place, then splice."""
    total = 0
    for index, edit in enumerate(edits):
        places = _positions(text, edit.old_string, overlapping=False)
        if not places:
            raise RefusedAt(index, "not found")
        if not edit.replace_all:
            if len(_positions(text, edit.old_string, overlapping=True)) > 1:
                raise RefusedAt(index, "ambiguous")
            places = places[:1]
        pieces, previous = [], 0
        for at in places:
            pieces += [text[previous:at], edit.new_string]
            previous = at + len(edit.old_string)
        text = "".join(pieces) + text[previous:]
        total += len(places)
    return text, total


edit_texts = st.text(alphabet="ab\n", max_size=30)
edit_lists = st.lists(
    st.builds(
        Edit,
        old_string=st.text(alphabet="ab\n", min_size=1, max_size=3),
        new_string=st.text(alphabet="abc\n", max_size=4),
        replace_all=st.booleans(),
    ),
    min_size=1,
    max_size=6,
)


@given(text=edit_texts, edits=edit_lists)
def test_edits_agree_with_the_reference(text: str, edits: list[Edit]) -> None:
    try:
        expected = reference_apply(text, edits)
    except RefusedAt as refusal:
        with pytest.raises(ValidationError) as raised:
            apply_edits(text, edits)
        assert raised.value.field == f"edits[{refusal.index}].old_string"
        if refusal.kind == "not found":
            assert raised.value.rule == "not found in the asset"
        else:
            assert raised.value.rule.startswith("matches ")
        return
    assert apply_edits(text, edits) == expected


# -- batches ----------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_a_batch_is_parsed_and_decoded() -> None:
    payload = {
        "script": "app",
        "files": [
            {"name": "css/app.css", "content_base64": b64(b"body{}")},
            {"asset": "index.html", "content": "<p>hé</p>", "mimetype": " text/html "},
            {
                "name": "blob",
                "content_base64": b64(b"\x00\x01"),
                "sha256": hashlib.sha256(b"\x00\x01").hexdigest().upper(),
                "mimetype": None,
            },
        ],
        "reinit": "never",
    }
    assert parse_batch(payload) == BatchRequest(
        script="app",
        files=(
            BatchFile("css/app.css", "text/css", b"body{}"),
            BatchFile("index.html", "text/html", "<p>hé</p>".encode()),
            BatchFile("blob", "application/octet-stream", b"\x00\x01"),
        ),
        reinit="never",
    )


def test_the_script_may_come_from_the_query_string() -> None:
    files = [{"name": "a.txt", "content": "x"}]
    assert parse_batch({"files": files}, script="app").script == "app"
    assert parse_batch({"script": "app", "files": files}, script="app").script == "app"
    assert parse_batch({"script": "", "files": files}, script="app").script == "app"
    assert parse_batch({"files": files}, script="app").reinit == "after"


def _files(*files: object) -> dict[str, Any]:
    return {"script": "app", "files": list(files)}


_OK = {"name": "a.txt", "content": "x"}


@pytest.mark.parametrize(
    ("payload", "field", "rule"),
    [
        ([], "body", "must be a JSON object, got array"),
        ({"files": [_OK]}, "script", "is required"),
        ({"script": None, "files": [_OK]}, "script", "is required"),
        ({"script": 3, "files": [_OK]}, "script", "must be a string, got number"),
        (
            {"script": "app", "files": [_OK], "extra": 1},
            "body",
            "unknown field 'extra' \\(expected",
        ),
        ({"script": "app"}, "files", "is required"),
        ({"script": "app", "files": {}}, "files", "must be an array of files, got object"),
        (_files(), "files", "must hold 1-256 files, got 0"),
        ({"script": "app", "files": [_OK], "reinit": "now"}, "reinit", 'must be "after" or'),
        (_files(_OK, "a"), "files[1]", "must be an object, got string"),
        (_files({**_OK, "size": 1}), "files[0]", "unknown field 'size'"),
        (_files({"content": "x"}), "files[0].name", "is required \\(or asset\\)"),
        (_files({**_OK, "asset": "b"}), "files[0]", "give either name or asset, not both"),
        (_files({"name": "../x", "content": ""}), "files[0].name", re.escape(BAD_NAME_TRAVERSAL)),
        (_files({"asset": "", "content": ""}), "files[0].name", re.escape(BAD_NAME_LENGTH)),
        (_files({"name": 7, "content": ""}), "files[0].name", re.escape(BAD_NAME_LENGTH)),
        (_files({"name": "a"}), "files[0].content_base64", "is required \\(or content\\)"),
        (
            _files({"name": "a", "content": "x", "content_base64": "eA=="}),
            "files[0]",
            "give either content_base64 or content, not both",
        ),
        (
            _files(_OK, {"name": "b", "content_base64": "eA="}),
            "files[1].content_base64",
            "must be valid base64: length 3",
        ),
        (_files({"name": "a", "content": 5}), "files[0].content", "must be a string, got number"),
        (_files({"name": "a", "content": "\ud800"}), "files[0].content", "must be valid Unicode"),
        (_files({**_OK, "mimetype": ""}), "files[0].mimetype", "must be a non-empty string"),
        (_files({**_OK, "mimetype": 1}), "files[0].mimetype", "must be a non-empty string"),
        (_files({**_OK, "sha256": "abc"}), "files[0].sha256", "must be 64 hexadecimal"),
        (_files({**_OK, "sha256": 1}), "files[0].sha256", "must be 64 hexadecimal"),
        (
            _files({**_OK, "sha256": "0" * 64}),
            "files[0].sha256",
            "does not match the content \\(expected 0{64}, got "
            + hashlib.sha256(b"x").hexdigest()
            + "\\)",
        ),
        (_files(_OK, {"name": "b", "content": ""}, {**_OK}), "files[2].name", "duplicates files"),
        (
            _files(_OK, {"asset": "a.txt", "content": "y"}),
            "files[1].name",
            "duplicates files\\[0\\]$",
        ),
    ],
)
def test_bad_batches_name_the_field(payload: object, field: str, rule: str) -> None:
    with refused(field, rule):
        parse_batch(payload)


def test_a_batch_script_must_agree_with_the_query_string() -> None:
    with refused("script", "differs between the query string and the body"):
        parse_batch({"script": "a", "files": [_OK]}, script="b")


def test_batch_size_limits() -> None:
    many = [{"name": f"f{i}", "content": ""} for i in range(MAX_BATCH_FILES)]
    assert len(parse_batch(_files(*many)).files) == MAX_BATCH_FILES
    with refused("files", "must hold 1-256 files, got 257"):
        parse_batch(_files(*many, {"name": "one-more", "content": ""}))
    with refused("files[1]", re.escape(TOO_LARGE)):
        parse_batch(_files(_OK, {"name": "big", "content": "x" * (MAX_ASSET_BYTES + 1)}))
    exactly = {"name": "big", "content": "x" * MAX_ASSET_BYTES}
    assert len(parse_batch(_files(exactly)).files[0].content) == MAX_ASSET_BYTES
    rest = MAX_BATCH_BYTES - MAX_ASSET_BYTES
    fits = {"name": "rest", "content_base64": b64(b"y" * rest)}
    assert len(parse_batch(_files(exactly, fits)).files) == 2
    with refused("files", "the decoded files total more than 10485760 bytes .* by files\\[2\\]"):
        parse_batch(_files(exactly, fits, {"name": "last", "content": "z"}))


@pytest.mark.parametrize(
    ("value", "reinit"), [(None, "after"), ("after", "after"), ("never", "never")]
)
def test_reinit(value: object, reinit: str) -> None:
    assert parse_reinit(value) == reinit


@pytest.mark.parametrize("value", ["AFTER", "", "always", 1, True, ["after"]])
def test_bad_reinit(value: object) -> None:
    with refused("reinit", 'must be "after" or "never"'):
        parse_reinit(value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_KEYS = ["name", "asset", "content", "content_base64", "mimetype", "sha256", "x"]
file_objects = st.dictionaries(
    st.sampled_from(_KEYS),
    st.one_of(
        json_values,
        st.sampled_from(["a.txt", "../a", "", "eA==", "eA=", "text/plain", "0" * 64]),
        st.just(hashlib.sha256(b"x").hexdigest()),
    ),
    max_size=5,
)
batch_payloads = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"files": st.lists(file_objects | json_values, max_size=4)},
        optional={
            "script": st.sampled_from(["app", ""]) | json_values,
            "reinit": st.sampled_from(["after", "never"]) | json_values,
            "other": json_values,
        },
    ),
)


@given(payload=batch_payloads, script=st.none() | st.sampled_from(["app", "other"]))
def test_parse_batch_raises_nothing_but_validation_errors(
    payload: object, script: str | None
) -> None:
    try:
        batch = parse_batch(payload, script=script)
    except ValidationError as error:
        assert error.field and error.rule
        return
    names = [file.name for file in batch.files]
    assert len(set(names)) == len(names) and all(name_problem(n) is None for n in names)
    assert batch.script and batch.reinit in ("after", "never")
    assert sum(len(file.content) for file in batch.files) <= MAX_BATCH_BYTES


@given(value=json_values | st.lists(file_objects, max_size=3))
def test_parse_edits_raises_nothing_but_validation_errors(value: object) -> None:
    try:
        edits = parse_edits(value)
    except ValidationError as error:
        assert error.field.startswith("edits")
        return
    assert 1 <= len(edits) <= MAX_EDITS
