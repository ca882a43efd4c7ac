"""Fuzz harnesses for what the HTTP security layer reads from administrators and clients: rate
rules (``300/10s``), trusted-proxy lists, and the audit listing's query parameters.

* ``python -m pytest fuzz/fuzz_http_security.py -q``: hypothesis, ``FUZZ_EXAMPLES`` examples per
  harness (default 2000);
* ``python fuzz/fuzz_http_security.py [libFuzzer options]``: atheris, coverage guided.

The invariants: a rule parses to a bucket with a positive finite refill rate or raises
``ValueError``, and a parsed rule written back (``<n>/<period>``) means the same; a network
list parses to networks that read back to themselves, or names the entry it refuses; audit
parameters become a query within the page bounds or a refusal naming a parameter that was given.
"""

from __future__ import annotations

import ipaddress
import math
import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import given
from hypothesis import strategies as st

from fuzz._harness import FUZZ, run_atheris
from handlers.admin import BadParameter
from handlers.audit import audit_query
from security import RateLimit, parse_networks

rules = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="0123456789./ msdh\t", max_size=20),
    st.builds(
        "{}/{}{}".format,
        st.integers(-5, 2 * 10**9),
        st.sampled_from(["", "0", "1", "1.5", "0.001", "999999", "1e3"]),
        st.sampled_from(["ms", "s", "m", "h", "d", "S", "sec", ""]),
    ),
)


@FUZZ
@given(rules)
def test_fuzz_rate_rule(text: str) -> None:
    try:
        limit = RateLimit.parse(text)
    except ValueError:
        return
    assert limit.capacity >= 1 and 0 < limit.refill_per_s < math.inf
    seconds = limit.capacity / limit.refill_per_s
    # Written in the unit that keeps the grammar's three decimals precise enough.
    period = f"{seconds * 1000:.3f}ms" if seconds < 999 else f"{seconds:.3f}s"
    again = RateLimit.parse(f"{limit.capacity}/{period}")
    assert again.capacity == limit.capacity
    assert math.isclose(again.refill_per_s, limit.refill_per_s, rel_tol=1e-3)


network_lists = st.one_of(
    st.text(max_size=60),
    st.lists(
        st.one_of(
            st.ip_addresses().map(str),
            st.builds("{}/{}".format, st.ip_addresses(), st.integers(-1, 130)),
            st.text(alphabet="0123456789abcdef.:/ ", max_size=16),
        ),
        max_size=5,
    ).map(",".join),
)


@FUZZ
@given(network_lists)
def test_fuzz_trusted_proxies(text: str) -> None:
    try:
        networks = parse_networks(text)
    except ValueError as refused:
        assert "is not an IP address or CIDR network" in str(refused)
        return
    for network in networks:
        assert ipaddress.ip_network(str(network)) == network
    assert len(networks) == (0 if not text.strip() else text.count(",") + 1)


parameters = st.dictionaries(
    st.sampled_from(
        ["actor", "action", "outcome", "since", "limit", "after_seq", "before_seq", "x"]
    ),
    st.one_of(
        st.text(max_size=30),
        st.integers(-10, 2000).map(str),
        st.sampled_from(["allowed", "denied", "error", "2026-01-01T00:00:00Z", "1e3", "٣"]),
    ),
)


@FUZZ
@given(parameters)
def test_fuzz_audit_parameters(params: dict[str, str]) -> None:
    try:
        query = audit_query(params)
    except BadParameter as refused:
        assert refused.name in params
        return
    assert 1 <= query.limit <= 1000
    assert query.outcome in (None, "allowed", "denied", "error")
    assert query.after_seq is None or query.before_seq is None


HARNESSES = (test_fuzz_rate_rule, test_fuzz_trusted_proxies, test_fuzz_audit_parameters)


if __name__ == "__main__":
    run_atheris(HARNESSES, __file__)
