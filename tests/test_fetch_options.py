"""The pure parts of ``fetch`` and secrets: options, secret placeholders, host allow-lists, key
rules -- by example and by property, since all of them read input a script controls."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.fetch import (
    SECRET_TEMPLATE,
    FetchError,
    FetchOptions,
    _next_hop_headers,
    fill_secrets,
    parse_options,
    secret_names,
)
from engine.secrets import host_allowed, host_pattern, key_problem, parse_allowed_hosts

# --- options -------------------------------------------------------------------------------


def test_no_options_mean_a_plain_get() -> None:
    for raw in (None, "", "   ", "{}", {}):
        assert parse_options(raw) == FetchOptions()


def test_options_are_read_from_text_and_from_an_object_alike() -> None:
    options = {
        "method": " patch ",
        "headers": {"X-Number": 5, "X-Flag": True, "X-Gone": None},
        "body": "payload",
        "timeout_ms": 1500,
        "ignored": [1, 2],
    }
    expected = FetchOptions("PATCH", (("X-Number", "5"), ("X-Flag", "true")), "payload", 1500.0)
    assert parse_options(options) == expected
    assert parse_options(json.dumps(options)) == expected


def test_headers_the_engine_owns_are_left_out() -> None:
    headers = {"Host": "x", "Transfer-Encoding": "chunked", "Accept": "text/plain"}
    assert parse_options({"headers": headers}).headers == (("Accept", "text/plain"),)


# Keys a script might send, with values of every JSON type.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
option_objects = st.dictionaries(
    st.sampled_from(["method", "headers", "body", "timeout_ms", "other"]) | st.text(max_size=8),
    json_values
    | st.dictionaries(st.text(max_size=12), st.text(max_size=20) | st.integers(), max_size=4),
    max_size=5,
)


def _outcome(raw: Any) -> FetchOptions | str:
    try:
        return parse_options(raw)
    except FetchError as exc:
        return str(exc)


@given(option_objects)
def test_any_options_object_parses_or_is_refused_with_a_script_message(raw: dict[str, Any]) -> None:
    outcome = _outcome(raw)
    if isinstance(outcome, str):
        assert outcome.startswith(("Invalid fetch options: ", "Fetch error: "))
        return
    assert outcome.method == outcome.method.upper() and outcome.method
    for name, value in outcome.headers:
        assert "\r" not in value and "\n" not in value and "\0" not in value
        assert name.lower() not in ("host", "content-length", "transfer-encoding")
    assert outcome.body is None or isinstance(outcome.body, str)
    assert outcome.timeout_ms is None or (
        outcome.timeout_ms > 0 and math.isfinite(outcome.timeout_ms)
    )


@given(option_objects)
def test_text_and_object_forms_of_the_same_options_agree(raw: dict[str, Any]) -> None:
    assert _outcome(json.dumps(raw)) == _outcome(raw)


@given(st.text(max_size=200))
def test_any_text_parses_or_is_refused_with_a_script_message(raw: str) -> None:
    outcome = _outcome(raw)
    assert isinstance(outcome, FetchOptions) or outcome.startswith(
        ("Invalid fetch options: ", "Fetch error: ")
    )


@given(st.one_of(st.integers(), st.floats(), st.lists(st.integers()), st.booleans()))
def test_options_that_are_not_an_object_are_refused(raw: Any) -> None:
    assert _outcome(raw) == "Invalid fetch options: must be a JSON object"


# --- secret placeholders -------------------------------------------------------------------


def test_placeholders_are_found_with_spaces_and_in_order() -> None:
    headers = [("A", "Bearer {{secret:one}}"), ("B", "{{ secret: two }}-{{secret:one}}")]
    assert secret_names(headers) == ["one", "two"]
    filled = fill_secrets(headers, {"one": "1", "two": "2"})
    assert filled == (("A", "Bearer 1"), ("B", "2-1"))


def test_text_that_only_looks_like_a_placeholder_is_left_alone() -> None:
    headers = [("A", "{{API_TOKEN}}"), ("B", "{secret:x}"), ("C", "{{secret:a{b}}")]
    assert secret_names(headers[:2]) == []
    assert fill_secrets(headers[:2], {}) == tuple(headers[:2])


braceless = st.text(
    st.characters(blacklist_characters="{}", blacklist_categories=("Cs",)), max_size=12
)


@given(st.lists(st.tuples(braceless, braceless), max_size=4), braceless)
def test_filling_replaces_every_placeholder(pieces: list[tuple[str, str]], secret: str) -> None:
    value = "".join(f"{text}{{{{secret:{name}}}}}" for text, name in pieces)
    headers = [("X", value)]
    needed = secret_names(headers)
    assert len(needed) <= len(pieces)
    ((_, filled),) = fill_secrets(headers, dict.fromkeys(needed, secret))
    assert SECRET_TEMPLATE.search(filled) is None
    assert filled.count(secret) >= len(pieces) if secret else True


def test_headers_carrying_secrets_do_not_follow_a_redirect_to_another_origin() -> None:
    headers = (("Authorization", "x"), ("X-Key", "k={{secret:k}}"), ("X-Plain", "1"))
    same = _next_hop_headers(headers, "http://a.test/x", "http://a.test/y")
    upgrade = _next_hop_headers(headers, "http://a.test/x", "https://a.test/y")
    other = _next_hop_headers(headers, "http://a.test/x", "http://b.test/y")
    port = _next_hop_headers(headers, "http://a.test/x", "http://a.test:8080/y")
    assert same == upgrade == headers
    assert other == port == (("X-Plain", "1"),)


# --- host allow-lists ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "pattern"),
    [
        ("API.Example.com.", "api.example.com"),
        (" *.Example.org ", "*.example.org"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("[::1]", "::1"),
        ("2130706433", "127.0.0.1"),
        ("10.0.0.1", "10.0.0.1"),
    ],
)
def test_allow_list_entries_are_normalised_as_urls_are(entry: str, pattern: str) -> None:
    assert host_pattern(entry) == pattern


@pytest.mark.parametrize("entry", ["", "*.", "exa mple.com", "a/b", "-x.com", "*.*.com", "a@b"])
def test_allow_list_entries_that_are_not_hosts_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="is not a host name"):
        host_pattern(entry)


def test_allow_lists_come_as_lists_or_comma_separated_text() -> None:
    assert parse_allowed_hosts(None) is None
    assert parse_allowed_hosts("a.com, b.com,a.com") == ("a.com", "b.com")
    assert parse_allowed_hosts(["A.com"]) == ("a.com",)
    for bad, rule in [
        ([], "at least one host"),
        (" , ", "at least one host"),
        ([1], "list of host names"),
        ({"a": 1}, "list of host names"),
        ([f"h{i}.com" for i in range(65)], "at most 64"),
    ]:
        with pytest.raises(ValueError, match=rule):
            parse_allowed_hosts(bad)


def test_a_wildcard_covers_subdomains_only() -> None:
    patterns = ("*.example.com", "api.other.org")
    assert host_allowed(patterns, "a.example.com")
    assert host_allowed(patterns, "a.b.example.com")
    assert not host_allowed(patterns, "example.com")
    assert not host_allowed(patterns, "badexample.com")
    assert host_allowed(patterns, "api.other.org")
    assert not host_allowed(patterns, "x.api.other.org")
    assert host_allowed(None, "anything.example")


labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
hostnames = (
    st.lists(labels, min_size=2, max_size=4)
    .map(".".join)
    .filter(lambda h: not h.rsplit(".", 1)[-1].isdigit())
)


@given(hostnames, labels)
def test_a_listed_host_is_allowed_and_its_wildcard_covers_its_subdomains(
    host: str, label: str
) -> None:
    assert host_allowed(parse_allowed_hosts([host.upper()]), host)
    wildcard = parse_allowed_hosts([f"*.{host}"])
    assert host_allowed(wildcard, f"{label}.{host}")
    assert not host_allowed(wildcard, host)


# --- keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "Key cannot be empty"),
        ("k" * 257, "Key too long (>256 characters)"),
        ("a}b", "Key must not contain '{', '}' or control characters"),
        ("a\nb", "Key must not contain '{', '}' or control characters"),
        ("API_TOKEN", None),
        ("my key.v2", None),
    ],
)
def test_key_rules(key: str, problem: str | None) -> None:
    assert key_problem(key) == problem
