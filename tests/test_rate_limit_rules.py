"""Rate-limit rules as administrators write them (``300/10s``) and the trusted-proxy list."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from security import DEFAULT_LIMITS, RateLimit, parse_networks
from security.ratelimit import MAX_RULE_PERIOD_S, MAX_RULE_REQUESTS, MIN_RULE_PERIOD_S

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@pytest.mark.parametrize(
    ("text", "capacity", "seconds"),
    [
        ("300/10s", 300, 10),
        ("2/3s", 2, 3),
        ("60/1m", 60, 60),
        ("5/s", 5, 1),
        ("2/500ms", 2, 0.5),
        ("1000/1h", 1000, 3600),
        ("10/1d", 10, 86400),
        (" 20 / 5 s ", 20, 5),
        ("3/1.5s", 3, 1.5),
    ],
)
def test_a_rule_is_a_bucket_of_its_requests_refilled_over_its_period(
    text: str, capacity: int, seconds: float
) -> None:
    assert RateLimit.parse(text) == RateLimit.per(capacity, seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "300",
        "300/10",
        "/10s",
        "300/",
        "x/10s",
        "300/10 sec",
        "300/10S",
        "-1/10s",
        "300/-10s",
        "1e3/10s",
        "300/1e1s",
        "٣/10s",
        "300/10s/1",
        "0x10/1s",
        "300 10s",
    ],
)
def test_anything_else_is_refused_with_the_form_to_write(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape("<requests>/<period>")):
        RateLimit.parse(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0/10s", "request count"),
        ("1000000001/1s", "request count"),
        ("5/0s", "period"),
        ("5/0.0ms", "period"),
        ("5/2d", "period"),
        ("5/1441m", "period"),
    ],
)
def test_counts_and_periods_out_of_range_are_refused(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RateLimit.parse(text)


def test_the_default_rules_written_as_text_are_the_default_limits() -> None:
    written = {
        "solutions": "300/10s",
        "engine": "300/10s",
        "graphql": "300/10s",
        "auth": "2/3s",
        "streams": "20/5s",
    }
    assert {surface: RateLimit.parse(text) for surface, text in written.items()} == dict(
        DEFAULT_LIMITS
    )


@given(
    count=st.integers(1, MAX_RULE_REQUESTS),
    amount=st.integers(1, 999_999) | st.none(),
    unit=st.sampled_from(sorted(UNITS)),
    spaces=st.sampled_from(["", " ", "\t"]),
)
def test_every_well_formed_rule_within_range_parses_to_its_meaning(
    count: int, amount: int | None, unit: str, spaces: str
) -> None:
    seconds = (1 if amount is None else amount) * UNITS[unit]
    text = f"{spaces}{count}{spaces}/{spaces}{'' if amount is None else amount}{unit}{spaces}"
    if MIN_RULE_PERIOD_S <= seconds <= MAX_RULE_PERIOD_S:
        limit = RateLimit.parse(text)
        assert limit.capacity == count
        assert limit.refill_per_s * seconds == pytest.approx(count)
    else:
        with pytest.raises(ValueError, match="period"):
            RateLimit.parse(text)


@given(st.text(max_size=40))
def test_any_text_parses_to_a_valid_bucket_or_raises_value_error(text: str) -> None:
    try:
        limit = RateLimit.parse(text)
    except ValueError:
        return
    assert limit.capacity >= 1 and 0 < limit.refill_per_s < float("inf")
    # Only the documented alphabet gets through.
    assert re.fullmatch(r"[0-9./msdh \t\n\r\f\v]+", text)


# -- trusted proxies


def test_networks_are_comma_separated_addresses_or_cidrs() -> None:
    assert parse_networks("10.0.0.0/8, 192.168.1.7,::1 , fd00::/8") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("fd00::/8"),
    )


def test_host_bits_after_the_prefix_are_ignored() -> None:
    assert parse_networks("172.17.0.1/16") == (ipaddress.ip_network("172.17.0.0/16"),)


@pytest.mark.parametrize("text", ["", "  "])
def test_empty_text_trusts_no_one(text: str) -> None:
    assert parse_networks(text) == ()


@pytest.mark.parametrize(
    ("text", "entry"),
    [
        ("10.0.0.0/33", "10.0.0.0/33"),
        ("10.0.0.1,,::1", ""),
        ("proxy.local", "proxy.local"),
        ("10.0.0.0/8,", ""),
    ],
)
def test_an_entry_that_is_no_network_is_named(text: str, entry: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(entry))):
        parse_networks(text)


@given(st.lists(st.ip_addresses(), min_size=1, max_size=5))
def test_listed_addresses_come_back_as_their_single_host_networks(
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
) -> None:
    parsed = parse_networks(", ".join(map(str, addresses)))
    assert [network.network_address for network in parsed] == addresses
    assert all(network.num_addresses == 1 for network in parsed)
