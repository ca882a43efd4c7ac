"""Fuzz harnesses for the security parsers: everything here reads text a client or script wrote.

* ``python -m pytest fuzz/fuzz_security.py -q``: hypothesis generates the inputs with the
  ``fuzz`` settings profile (``FUZZ_EXAMPLES`` examples per harness, default 2000);
* ``python fuzz/fuzz_security.py [libFuzzer options]``: atheris drives the same harnesses,
  coverage guided; the first input byte picks the harness.

The invariants: ``check_url`` refuses with ``BlockedDestination`` or returns a public target that
re-checks to itself; host literals are read exactly as libc's ``inet_aton`` reads them; a client
address is the peer or an ``X-Forwarded-For`` entry; the JSON depth scan agrees with a plain
byte-at-a-time scanner; sealed secrets and key text fail only with their own errors.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import given
from hypothesis import strategies as st

from fuzz._harness import FUZZ, run_atheris
from security import (
    BlockedDestination,
    SecretBox,
    SecretError,
    SecretKeyError,
    client_ip,
    json_depth_exceeds,
    key_from_text,
    parse_host_literal,
    redirect_target,
)
from tests.test_security_headers_limits import reference_depth_exceeds
from tests.test_security_net import check_any_url, libc_inet_aton
from tests.test_security_ratelimit import canonical_address

# Hosts built from the characters that matter to the URL and literal parsers.
_host_chars = "0123456789abcdefxX.:[]%@_-\u00e9\uff0e\uff11"
urls = st.one_of(
    st.text(max_size=120),
    st.builds(
        "{}://{}{}".format,
        st.sampled_from(["http", "https", "HTTP", "file", "gopher", "h", ""]),
        st.text(alphabet=_host_chars, max_size=40),
        st.text(alphabet="/?#%\\a\u00e9:@", max_size=12),
    ),
)


@FUZZ
@given(urls)
def test_fuzz_check_url(text: str) -> None:
    check_any_url(text)


@FUZZ
@given(st.text(alphabet="0123456789xXabcdefABCDEF.", max_size=40))
def test_fuzz_ipv4_literal_matches_libc(text: str) -> None:
    assert parse_host_literal(text) == libc_inet_aton(text)


@FUZZ
@given(st.text(alphabet="0123456789abcdefABCDEF:.%[]25eth", max_size=50))
def test_fuzz_ipv6_literal(text: str) -> None:
    address = parse_host_literal(text)
    if address is not None:
        # Whatever is accepted is an address that reads back to itself.
        assert parse_host_literal(str(address)) == address


PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


@FUZZ
@given(
    peer=st.sampled_from(["10.0.0.2", "203.0.113.5", "fd00::9", "::ffff:10.0.0.3"]),
    forwarded=st.one_of(
        st.none(),
        st.text(max_size=80),
        st.lists(
            st.one_of(
                st.ip_addresses().map(str), st.text(alphabet="0123456789.:[]a ", max_size=12)
            ),
            max_size=6,
        ).map(",".join),
    ),
)
def test_fuzz_client_ip(peer: str, forwarded: str | None) -> None:
    client = client_ip(peer, forwarded, PROXIES)
    address = ipaddress.ip_address(client)  # always an address when the peer is one
    if forwarded is None or peer == "203.0.113.5":
        assert client == canonical_address(peer)
    else:
        # A trusted hop, or an address the right-most proxies wrote.
        entries = [canonical_address(entry) for entry in forwarded.split(",")]
        assert any(address in net for net in PROXIES) or client in entries


@FUZZ
@given(st.binary(max_size=2048) | st.text(alphabet='[]{}"\\ a,:', max_size=2048).map(str.encode))
def test_fuzz_json_depth(data: bytes) -> None:
    for max_depth in (0, 2, 8):
        assert json_depth_exceeds(data, max_depth) is reference_depth_exceeds(data, max_depth)


_BOX = SecretBox(bytes(range(32)))


@FUZZ
@given(st.binary(max_size=256), st.binary(max_size=32))
def test_fuzz_open_sealed(data: bytes, context: bytes) -> None:
    try:
        _BOX.open(data, context=context)
    except SecretError:
        return
    raise AssertionError("random bytes opened as a sealed secret")


@FUZZ
@given(st.text(max_size=100))
def test_fuzz_key_text(text: str) -> None:
    try:
        key = key_from_text(text)
    except SecretKeyError:
        return
    assert len(key) == 32


@FUZZ
@given(st.sampled_from(["https://a.example/d/p?q", "http://[2606:4700::1]:8080/"]), urls)
def test_fuzz_redirect_target(current: str, location: str) -> None:
    try:
        target = redirect_target(current, location)
    except BlockedDestination:
        return
    assert "#" not in target
    check_any_url(target)


HARNESSES = (
    test_fuzz_check_url,
    test_fuzz_ipv4_literal_matches_libc,
    test_fuzz_ipv6_literal,
    test_fuzz_client_ip,
    test_fuzz_json_depth,
    test_fuzz_open_sealed,
    test_fuzz_key_text,
    test_fuzz_redirect_target,
)


if __name__ == "__main__":
    run_atheris(HARNESSES, __file__)
