"""The admin-token policy and the loopback test, as pure functions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from security import TokenVerdict, bearer_token, check_admin_token, is_loopback_host

TOKEN = "t" * 40


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("abc", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token_is_taken_only_from_the_bearer_scheme(
    header: str | None, token: str | None
) -> None:
    assert bearer_token(header) == token


def test_production_needs_the_right_token() -> None:
    assert check_admin_token(f"Bearer {TOKEN}", expected=TOKEN, required=True) is (
        TokenVerdict.ALLOWED
    )
    assert check_admin_token(None, expected=TOKEN, required=True) is TokenVerdict.MISSING
    assert check_admin_token("Bearer nope", expected=TOKEN, required=True) is (TokenVerdict.INVALID)
    # A header that is there but not a bearer token is a wrong credential, not a missing one.
    assert check_admin_token(f"Basic {TOKEN}", expected=TOKEN, required=True) is (
        TokenVerdict.INVALID
    )


def test_a_required_token_with_none_configured_admits_nobody() -> None:
    assert check_admin_token(f"Bearer {TOKEN}", expected=None, required=True) is (
        TokenVerdict.INVALID
    )


def test_development_admits_anonymous_callers_but_not_wrong_tokens() -> None:
    assert check_admin_token(None, expected=TOKEN, required=False) is TokenVerdict.ALLOWED
    assert check_admin_token(None, expected=None, required=False) is TokenVerdict.ALLOWED
    assert check_admin_token("Bearer x", expected=None, required=False) is TokenVerdict.ALLOWED
    assert check_admin_token("Bearer x", expected=TOKEN, required=False) is (TokenVerdict.INVALID)
    assert check_admin_token(f"Bearer {TOKEN}", expected=TOKEN, required=False) is (
        TokenVerdict.ALLOWED
    )


@given(st.text(max_size=80))
def test_only_the_exact_token_is_allowed_when_required(presented: str) -> None:
    verdict = check_admin_token(f"Bearer {presented}", expected=TOKEN, required=True)
    assert (verdict is TokenVerdict.ALLOWED) == (presented.strip() == TOKEN)


@given(st.one_of(st.none(), st.text(max_size=200)))
def test_any_header_gets_a_verdict_and_never_an_exception(header: str | None) -> None:
    for required in (True, False):
        for expected in (TOKEN, None):
            assert isinstance(
                check_admin_token(header, expected=expected, required=required), TokenVerdict
            )


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "[::1]",
        "localhost",
        "LOCALHOST",
        "::ffff:127.0.0.1",
        "::1%lo",
    ],
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0",
        "::",
        "10.0.0.1",
        "192.168.1.1",
        "example.com",
        "localhost.evil",
        "",
        "::ffff:10.0.0.1",
    ],
)
def test_everything_else_is_not_loopback(host: str) -> None:
    assert not is_loopback_host(host)


@given(st.text(max_size=60))
def test_the_loopback_test_never_raises(host: str) -> None:
    assert isinstance(is_loopback_host(host), bool)
