"""Default security headers, how scripts override them, and request size/shape limits."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from security import (
    LimitExceeded,
    check_body_size,
    check_headers,
    check_json_depth,
    check_url_length,
    json_depth_exceeds,
    merge_headers,
    new_csp_nonce,
    security_headers,
)
from security.limits import MAX_JSON_DEPTH, MAX_URL_BYTES


def _csp(headers: list[tuple[str, str]]) -> dict[str, str]:
    value = dict(headers)["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in value.split(";"))


# --- headers ---------------------------------------------------------------------------------


def test_engine_pages_allow_no_inline_script() -> None:
    headers = security_headers(engine_page=True, hsts=False)
    csp = _csp(headers)
    assert csp["script-src"] == "'self'"
    assert csp["default-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["object-src"] == "'none'"
    assert "unsafe" not in csp["script-src"]


def test_an_engine_page_nonce_admits_exactly_that_script() -> None:
    nonce = new_csp_nonce()
    csp = _csp(security_headers(engine_page=True, hsts=False, csp_nonce=nonce))
    assert csp["script-src"] == f"'self' 'nonce-{nonce}'"


@pytest.mark.parametrize("nonce", ["", "a b", "x'; script-src *", "abc\r\nSet-Cookie: a=b", "a==="])
def test_a_nonce_that_could_inject_policy_is_refused(nonce: str) -> None:
    with pytest.raises(ValueError, match="base64"):
        security_headers(engine_page=True, hsts=False, csp_nonce=nonce)


def test_fresh_nonces_are_distinct_base64() -> None:
    nonces = {new_csp_nonce() for _ in range(20)}
    assert len(nonces) == 20
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", nonce) for nonce in nonces)


@pytest.mark.parametrize("engine_page", [True, False])
def test_every_response_gets_the_basic_headers(engine_page: bool) -> None:
    headers = dict(security_headers(engine_page=engine_page, hsts=False))
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "Strict-Transport-Security" not in headers


def test_other_responses_only_forbid_framing_in_their_csp() -> None:
    # A solution's own HTML may need inline script; the default must not break it.
    headers = dict(security_headers(engine_page=False, hsts=False))
    assert headers["Content-Security-Policy"] == "frame-ancestors 'none'"


def test_hsts_only_when_asked() -> None:
    headers = dict(security_headers(engine_page=False, hsts=True))
    assert headers["Strict-Transport-Security"] == "max-age=31536000"


def test_a_scripts_own_headers_win_case_insensitively() -> None:
    defaults = security_headers(engine_page=False, hsts=True)
    merged = merge_headers(
        [("x-frame-options", "SAMEORIGIN"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
        defaults,
    )
    assert merged[:3] == [
        ("x-frame-options", "SAMEORIGIN"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]
    names = [name.lower() for name, _ in merged]
    assert names.count("x-frame-options") == 1
    assert ("X-Content-Type-Options", "nosniff") in merged
    assert ("Strict-Transport-Security", "max-age=31536000") in merged


header_names = st.sampled_from(
    ["Content-Security-Policy", "content-security-policy", "X-Frame-Options", "X-A", "x-a"]
)
header_lists = st.lists(st.tuples(header_names, st.text(max_size=5)), max_size=6)


@given(script=header_lists, defaults=header_lists)
def test_merge_keeps_every_script_header_and_only_unset_defaults(
    script: list[tuple[str, str]], defaults: list[tuple[str, str]]
) -> None:
    merged = merge_headers(script, defaults)
    assert merged[: len(script)] == script
    taken = {name.lower() for name, _ in script}
    added = merged[len(script) :]
    assert all(name.lower() not in taken for name, _ in added)
    assert added == [(n, v) for n, v in defaults if n.lower() not in taken]


# --- limits ----------------------------------------------------------------------------------


def _fields(error: LimitExceeded) -> tuple[str, str, int]:
    return error.field, error.rule, error.status


def test_url_length() -> None:
    check_url_length("/" + "a" * (MAX_URL_BYTES - 1))
    with pytest.raises(LimitExceeded) as over:
        check_url_length("/" + "a" * MAX_URL_BYTES)
    assert (over.value.field, over.value.status) == ("URL", 414)
    assert str(over.value) == f"URL exceeds a limit: at most {MAX_URL_BYTES} bytes, got 8193"
    # Measured in bytes as sent, whatever type the server hands over.
    with pytest.raises(LimitExceeded):
        check_url_length("/\u00e9" * 3, max_bytes=6)
    check_url_length(b"/abc", max_bytes=4)
    with pytest.raises(LimitExceeded):
        check_url_length(b"/abcd", max_bytes=4)


def test_header_count_and_sizes() -> None:
    check_headers([(b"a", b"b")] * 3, max_count=3)
    with pytest.raises(LimitExceeded) as over:
        check_headers([(b"a", b"b")] * 4, max_count=3)
    assert _fields(over.value) == ("headers", "at most 3 headers, got 4", 431)

    check_headers([("name", "v" * 6)], max_bytes=10)
    with pytest.raises(LimitExceeded) as over:
        check_headers([(b"ok", b""), (b"X-Big", b"v" * 6)], max_bytes=10)
    assert _fields(over.value) == ("header 'X-Big'", "at most 10 bytes, got 11", 431)

    with pytest.raises(LimitExceeded) as over:
        check_headers([("a", "1234"), ("b", "1234")], max_total_bytes=9)
    assert _fields(over.value) == ("headers", "at most 9 bytes in all, got 10", 431)


def test_body_size() -> None:
    check_body_size(1024, 1024)
    with pytest.raises(LimitExceeded) as over:
        check_body_size(1025, 1024)
    assert _fields(over.value) == ("request body", "at most 1024 bytes, got 1025", 413)


def test_limit_exceeded_is_a_raisable_value() -> None:
    error = LimitExceeded("f", "r", 400)
    with pytest.raises(LimitExceeded) as raised:
        try:
            raise ValueError("inner")
        except ValueError as inner:
            raise error from inner
    assert raised.value is error
    assert isinstance(raised.value.__cause__, ValueError)


@pytest.mark.parametrize(
    ("data", "depth"),
    [
        (b"1", 0),
        (b'"[[[["', 0),
        (b"[]", 1),
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b"[[], [], [[]]]", 3),
        (b'["\\"[[[", "]"]', 1),
        (b'["\\\\", [[]]]', 3),  # an escaped backslash does not escape the quote after it
        (b'[[[["never closed [[[[[[', 4),
        (b"[" * 100, 100),
        (b"[" * 10 + b"]" * 10 + b"[" * 10, 10),
    ],
)
def test_json_depth_exceeds(data: bytes, depth: int) -> None:
    assert not json_depth_exceeds(data, depth)
    if depth > 0:
        assert json_depth_exceeds(data, depth - 1)


def test_check_json_depth() -> None:
    check_json_depth(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    with pytest.raises(LimitExceeded) as over:
        check_json_depth(b"[" * 65 + b"]" * 65)
    assert _fields(over.value) == ("JSON body", "nested at most 64 levels deep", 400)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\u00e9\n'),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet='[{"\\k', max_size=3), children, max_size=3)
    ),
    max_leaves=30,
)


@given(json_values, st.integers(0, 12), st.booleans())
def test_json_depth_agrees_with_the_parsed_document(
    value: Any, max_depth: int, ensure_ascii: bool
) -> None:
    data = json.dumps(value, ensure_ascii=ensure_ascii).encode()
    assert json_depth_exceeds(data, max_depth) is (_depth(value) > max_depth)


def reference_depth_exceeds(data: bytes, max_depth: int) -> bool:
    """A byte-at-a-time scanner with the same reading of malformed input."""
    depth = deepest = index = 0
    in_string = False
    while index < len(data):
        byte = data[index : index + 1]
        if byte == b"\\":
            index += 2
            continue
        if in_string:
            in_string = byte != b'"'
        elif byte == b'"':
            in_string = True
        elif byte in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (b"]", b"}"):
            depth -= 1
        index += 1
    return deepest > max_depth


@given(st.binary(max_size=200) | st.text(alphabet='[]{}"\\ a', max_size=200).map(str.encode))
def test_json_depth_on_any_bytes_agrees_with_a_plain_scanner(data: bytes) -> None:
    for max_depth in (0, 1, 3):
        assert json_depth_exceeds(data, max_depth) is reference_depth_exceeds(data, max_depth)
