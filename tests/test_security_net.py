"""The outbound fetch guard: URLs, address literals in every spelling, resolution, redirects."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from security import (
    BlockedDestination,
    ParsedTarget,
    check_url,
    is_blocked_ip,
    parse_host_literal,
    redirect_method,
    redirect_target,
    resolve_checked,
    strip_credentials_on_cross_host,
)
from security.net import BLOCKED_IPV4_NETWORKS, BLOCKED_IPV6_NETWORKS, IPAddress, Resolver

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address

# --- the SSRF suite of the issue, at the URL level -------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/", "127.0.0.1 is not allowed (loopback address"),
        ("http://0.0.0.0/", "0.0.0.0 is not allowed (unspecified address"),
        ("http://[::1]/", "::1 is not allowed (loopback address"),
        ("http://[::ffff:127.0.0.1]/", "IPv4-mapped form of 127.0.0.1"),
        ("http://2130706433/", "127.0.0.1 is not allowed (loopback address"),
        ("http://0177.0.0.1/", "127.0.0.1 is not allowed (loopback address"),
        ("http://0x7f.1/", "127.0.0.1 is not allowed (loopback address"),
        ("http://127.1/", "127.0.0.1 is not allowed (loopback address"),
        ("http://127.0.0.1./", "127.0.0.1 is not allowed (loopback address"),
        (
            "http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/",
            "127.0.0.1 is not allowed (loopback",
        ),
        ("http://10.0.0.1/", "10.0.0.1 is not allowed (private address"),
        ("http://169.254.169.254/latest/meta-data/", "link-local address"),
        ("http://100.64.0.1/", "carrier-grade NAT address"),
        ("http://[fd00::1]/", "unique local address"),
        ("http://[fe80::1%25eth0]/", "link-local address"),
        ("http://[64:ff9b::7f00:1]/", "NAT64 form of 127.0.0.1"),
        ("http://[2002:a00:1::]/", "6to4 form of 10.0.0.1"),
        ("http://[::127.0.0.1]/", "IPv4-compatible address"),
        ("http://192.0.2.1/", "documentation address"),
        ("http://[2001:db8::1]/", "documentation address"),
        ("http://255.255.255.255/", "broadcast address"),
        ("http://224.0.0.1/", "multicast address"),
        ("http://localhost/", "host 'localhost' is not allowed"),
        ("http://LOCALHOST.:8080/", "host 'localhost' is not allowed"),
        ("http://api.localhost/", "host 'api.localhost' is not allowed"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("gopher://example.com/", "scheme 'gopher' is not allowed"),
        ("ftp://example.com/", "scheme 'ftp' is not allowed"),
        ("http://user:pass@example.com/", "credentials in the URL are not allowed"),
        ("http://example.com@127.0.0.1/", "credentials in the URL are not allowed"),
    ],
)
def test_blocked_destinations(url: str, reason: str) -> None:
    with pytest.raises(BlockedDestination) as blocked:
        check_url(url)
    assert reason in blocked.value.reason
    assert str(blocked.value) == blocked.value.reason


@pytest.mark.parametrize(
    "url",
    [
        "example.com",
        "//example.com/",
        "http:example.com",
        "http:/example.com",
        "http://",
        "http:///path",
        "http://:80/",
        "http://example.com:0/",
        "http://example.com:65536/",
        "http://example.com:8o/",
        "http://example.com:80:80/",
        "http://[::1/",
        "http://[::1]x/",
        "http://[127.0.0.1]/",
        "http://[fe80::1%bad%zone]/",
        "http://exa mple.com/",
        "http://example.com/\n",
        "http://loc\talhost/",
        "http://evil.com\\.example.com/",
        "http://-bad-.example/",
        "http://exa%6dple.com/",
        "http://example.123/",
        "http://1.2.3.4.5/",
        "http://256.0.0.1/",
        "http://" + "a" * 64 + ".com/",
        "http://" + "a." * 127 + "com/",
        "http://a..b/",
        "http://\u00e9..com/",
        "1http://example.com/",
    ],
)
def test_unusable_urls_are_refused_as_invalid(url: str) -> None:
    with pytest.raises(BlockedDestination, match="invalid URL"):
        check_url(url)


@pytest.mark.parametrize(
    ("url", "expected", "normalised"),
    [
        (
            "HTTPS://Example.COM:8443/a/b?c=d#frag",
            ParsedTarget("https", "example.com", 8443, "/a/b?c=d", None),
            "https://example.com:8443/a/b?c=d",
        ),
        (
            "http://example.com",
            ParsedTarget("http", "example.com", 80, "/", None),
            "http://example.com/",
        ),
        (
            "http://example.com?q",
            ParsedTarget("http", "example.com", 80, "/?q", None),
            "http://example.com/?q",
        ),
        (
            "https://example.com:443/",
            ParsedTarget("https", "example.com", 443, "/", None),
            "https://example.com/",
        ),
        (
            "http://example.com./x",
            ParsedTarget("http", "example.com", 80, "/x", None),
            "http://example.com/x",
        ),
        (
            "http://0x08.8.8.8/",
            ParsedTarget("http", "8.8.8.8", 80, "/", V4("8.8.8.8")),
            "http://8.8.8.8/",
        ),
        (
            "http://[2606:4700::1111]:8080/",
            ParsedTarget("http", "2606:4700::1111", 8080, "/", V6("2606:4700::1111")),
            "http://[2606:4700::1111]:8080/",
        ),
        (
            "http://[::ffff:8.8.8.8]/",
            ParsedTarget("http", "::ffff:808:808", 80, "/", V6("::ffff:8.8.8.8")),
            "http://[::ffff:808:808]/",
        ),
        (
            "http://b\u00fccher.example/",
            ParsedTarget("http", "xn--bcher-kva.example", 80, "/", None),
            "http://xn--bcher-kva.example/",
        ),
        (
            "http://my_host.example/caf\u00e9",
            ParsedTarget("http", "my_host.example", 80, "/caf\u00e9", None),
            "http://my_host.example/caf\u00e9",
        ),
    ],
)
def test_allowed_urls_are_normalised(url: str, expected: ParsedTarget, normalised: str) -> None:
    target = check_url(url)
    assert target == expected
    assert target.url == normalised
    assert check_url(target.url) == target


def test_host_header_has_the_port_only_when_it_is_not_the_default() -> None:
    assert check_url("http://example.com:80/").host_header == "example.com"
    assert check_url("https://example.com:80/").host_header == "example.com:80"
    assert check_url("http://[2606:4700::1111]/").host_header == "[2606:4700::1111]"


def test_the_allow_list_opens_exactly_its_networks() -> None:
    allow = [ipaddress.ip_network("127.0.0.0/8")]
    assert check_url("http://127.0.0.1:8080/", allow=allow).ip == V4("127.0.0.1")
    assert check_url("http://[::ffff:127.0.0.1]/", allow=allow).ip == V6("::ffff:7f00:1")
    with pytest.raises(BlockedDestination):
        check_url("http://10.0.0.1/", allow=allow)
    with pytest.raises(BlockedDestination):
        check_url("http://[::1]/", allow=allow)
    with pytest.raises(BlockedDestination):
        check_url("http://localhost/", allow=allow)  # names are never allow-listed


# --- address ranges --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("0.0.0.0", "unspecified address"),
        ("0.1.2.3", "'this network' address"),
        ("10.255.255.255", "private address"),
        ("100.127.255.255", "carrier-grade NAT address"),
        ("127.255.0.1", "loopback address"),
        ("169.254.0.1", "link-local address"),
        ("172.31.0.1", "private address"),
        ("192.0.0.9", "IETF protocol assignment"),
        ("192.0.2.200", "documentation address"),
        ("192.88.99.1", "6to4 relay anycast address"),
        ("192.168.1.1", "private address"),
        ("198.19.0.1", "benchmarking address"),
        ("198.51.100.1", "documentation address"),
        ("203.0.113.1", "documentation address"),
        ("239.255.255.250", "multicast address"),
        ("255.255.255.255", "broadcast address"),
        ("250.1.1.1", "reserved address"),
        ("::", "unspecified address"),
        ("::1", "loopback address"),
        ("::ffff:10.1.2.3", "private address (IPv4-mapped form of 10.1.2.3)"),
        ("64:ff9b::a9fe:a9fe", "link-local address (NAT64 form of 169.254.169.254)"),
        ("64:ff9b:1::1", "local-use NAT64 address"),
        ("2002:c0a8:101::1", "private address (6to4 form of 192.168.1.1)"),
        ("::8.8.8.8", "IPv4-compatible address (deprecated)"),
        ("::ffff:0:808:808", "reserved address"),  # the SIIT form: not routed
        ("100::1", "discard-only address"),
        ("2001::1", "IETF protocol assignment (Teredo, ORCHID, benchmarking)"),
        ("2001:db8:ffff::1", "documentation address"),
        ("3fff::1", "documentation address"),
        ("fc00::1", "unique local address"),
        ("fdff::1", "unique local address"),
        ("fe80::1", "link-local address"),
        ("fe80::1%eth0", "link-local address"),
        ("fec0::1", "site-local address"),
        ("ff02::1", "multicast address"),
        ("4000::1", "reserved address"),
        ("1000::1", "reserved address"),
    ],
)
def test_blocked_ranges(address: str, reason: str) -> None:
    assert is_blocked_ip(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",
        "100.128.0.0",
        "172.32.0.1",
        "192.0.1.255",
        "198.20.0.1",
        "223.255.255.255",
        "2606:4700::1111",
        "2a00:1450::1",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ],
)
def test_public_addresses_pass(address: str) -> None:
    assert is_blocked_ip(ipaddress.ip_address(address)) is None


def test_the_allow_list_covers_embedded_ipv4_too() -> None:
    allow = [ipaddress.ip_network("10.0.0.0/8")]
    assert is_blocked_ip(V4("10.1.1.1"), allow) is None
    assert is_blocked_ip(V6("::ffff:10.1.1.1"), allow) is None
    assert is_blocked_ip(V6("64:ff9b::a01:101"), allow) is None
    assert is_blocked_ip(V6("fd00::1"), allow) == "unique local address"
    assert is_blocked_ip(V6("fd00::1"), [ipaddress.ip_network("fd00::/8")]) is None


# --- literal spellings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0X7F.0X0.0X0.0X1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("1.256", "1.0.1.0"),
        ("0", "0.0.0.0"),
        ("00", "0.0.0.0"),
        ("4294967295", "255.255.255.255"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("[fe80::1%25eth0]", "fe80::1%eth0"),
        ("[fe80::1%eth0]", "fe80::1%eth0"),
        ("fe80::1%25", "fe80::1%25"),
    ],
)
def test_parse_host_literal(host: str, address: str) -> None:
    assert parse_host_literal(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize(
    "host",
    [
        "",
        "example.com",
        "1.2.3.4.5",
        "4294967296",
        "0x100000000",
        "256.1.1.1",
        "1.2.3.256",
        "1.2.65536",
        "08",
        "0x",
        "1..2",
        "127.0.0.1.",
        " 127.0.0.1",
        "\u0661\u0662\u0667.0.0.1",  # Arabic-Indic digits are digits to str.isdigit, not to libc
        "[127.0.0.1]",
        "[::1",
        "[fe80::1%]",
        "[fe80::1%a b]",
        "::g",
    ],
)
def test_not_host_literals(host: str) -> None:
    assert parse_host_literal(host) is None


def libc_inet_aton(text: str) -> IPAddress | None:
    try:
        return V4(socket.inet_aton(text))
    except OSError:
        return None


@given(st.text(alphabet="0123456789xXabcdefABCDEF.", max_size=24))
def test_ipv4_literals_are_read_exactly_as_libc_reads_them(text: str) -> None:
    assert parse_host_literal(text) == libc_inet_aton(text)


def _spellings(address: ipaddress.IPv4Address) -> list[str]:
    """Every way to write ``address`` as an http URL host that resolves to it."""
    a, b, c, d = address.packed
    n = int(address)
    return [
        str(address),
        str(n),
        f"0{n:o}",
        f"0x{n:x}",
        f"0X{n:X}",
        f"0{a:o}.0{b:o}.0{c:o}.0{d:o}",
        f"0x{a:x}.0x{b:x}.0x{c:x}.0x{d:x}",
        f"{a}.0x{b:x}.0{c:o}.{d}",
        f"{a}.{(b << 16) | (c << 8) | d}",
        f"{a}.{b}.{(c << 8) | d}",
        f"0x{a:02x}.0{(b << 16) | (c << 8) | d:o}",
        f"{address}.",
        f"[::ffff:{address}]",
        f"[::ffff:{(a << 8) | b:x}:{(c << 8) | d:x}]",
        f"[0:0:0:0:0:ffff:{address}]",
        f"[64:ff9b::{address}]",
        f"[2002:{(a << 8) | b:x}:{(c << 8) | d:x}::1]",
    ]


blocked_v4 = st.sampled_from(BLOCKED_IPV4_NETWORKS).flatmap(
    lambda net: st.integers(0, net.num_addresses - 1).map(lambda i: net[i])
)
public_v4 = st.ip_addresses(v=4).filter(
    lambda ip: not any(ip in net for net in BLOCKED_IPV4_NETWORKS)
)


@given(blocked_v4)
def test_a_blocked_ipv4_address_is_blocked_in_every_spelling(
    address: ipaddress.IPv4Address,
) -> None:
    for spelling in _spellings(address):
        with pytest.raises(BlockedDestination) as blocked:
            check_url(f"http://{spelling}:8080/x")
        assert str(address) in blocked.value.reason, spelling


@given(public_v4)
def test_a_public_ipv4_address_passes_in_every_spelling(address: ipaddress.IPv4Address) -> None:
    for spelling in _spellings(address):
        target = check_url(f"https://{spelling}/x")
        embedded = target.ip
        if isinstance(embedded, V6):
            assert is_blocked_ip(embedded) is None
            embedded = embedded.ipv4_mapped or embedded.sixtofour or V4(int(embedded) & 0xFFFFFFFF)
        assert embedded == address, spelling


@given(st.ip_addresses(v=4))
def test_every_address_python_calls_non_global_is_blocked(address: ipaddress.IPv4Address) -> None:
    if not address.is_global:
        assert is_blocked_ip(address) is not None


@given(st.ip_addresses(v=6))
def test_ipv6_is_blocked_unless_global_unicast_or_a_public_ipv4_in_disguise(
    address: ipaddress.IPv6Address,
) -> None:
    reason = is_blocked_ip(address)
    if any(address in net for net in BLOCKED_IPV6_NETWORKS):
        assert reason is not None
    if address not in ipaddress.ip_network("2000::/3") and reason is None:
        # Only the mapped and NAT64 forms of a public IPv4 address live outside 2000::/3.
        assert address.ipv4_mapped is not None or address in ipaddress.ip_network("64:ff9b::/96")
        assert is_blocked_ip(V4(int(address) & 0xFFFFFFFF)) is None


# --- resolution ------------------------------------------------------------------------------


def fake_resolver(answers: dict[str, Sequence[str]], calls: list[str] | None = None) -> Resolver:
    async def resolve(host: str, port: int) -> Sequence[str]:
        if calls is not None:
            calls.append(f"{host}:{port}")
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    return resolve


async def test_every_resolved_address_must_be_public() -> None:
    resolver = fake_resolver(
        {
            "good.example": ["93.184.216.34", "2606:2800:220:1::1", "93.184.216.34"],
            "mixed.example": ["93.184.216.34", "10.0.0.5"],
            "rebind.example": ["127.0.0.1"],
            "nat64.example": ["64:ff9b::7f00:1"],
        }
    )
    assert await resolve_checked("good.example", 443, resolver=resolver) == [
        V4("93.184.216.34"),
        V6("2606:2800:220:1::1"),
    ]
    with pytest.raises(
        BlockedDestination,
        match=r"mixed\.example resolves to 10\.0\.0\.5, which is not allowed \(priv",
    ):
        await resolve_checked("mixed.example", 443, resolver=resolver)
    with pytest.raises(BlockedDestination, match="loopback"):
        await resolve_checked("rebind.example", 80, resolver=resolver)
    with pytest.raises(BlockedDestination, match=r"NAT64 form of 127\.0\.0\.1"):
        await resolve_checked("nat64.example", 80, resolver=resolver)
    with pytest.raises(socket.gaierror):
        await resolve_checked("missing.example", 80, resolver=resolver)


async def test_an_allow_listed_resolution_passes() -> None:
    resolver = fake_resolver({"svc.internal": ["10.0.0.5", "fe80::1%2"]})
    allow = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fe80::/10")]
    assert await resolve_checked("svc.internal", 80, resolver=resolver, allow=allow) == [
        V4("10.0.0.5"),
        V6("fe80::1%2"),
    ]


async def test_literals_are_not_resolved() -> None:
    calls: list[str] = []
    resolver = fake_resolver({}, calls)
    assert await resolve_checked("8.8.8.8", 80, resolver=resolver) == [V4("8.8.8.8")]
    with pytest.raises(BlockedDestination, match=r"::1 is not allowed \(loopback address\)"):
        await resolve_checked("::1", 80, resolver=resolver)
    assert calls == []


async def test_odd_resolver_answers_are_refused() -> None:
    resolver = fake_resolver({"empty.example": [], "odd.example": ["not-an-address"]})
    with pytest.raises(OSError, match="has no addresses"):
        await resolve_checked("empty.example", 80, resolver=resolver)
    with pytest.raises(BlockedDestination, match="unreadable address 'not-an-address'"):
        await resolve_checked("odd.example", 80, resolver=resolver)


async def test_a_name_that_resolves_to_loopback_is_refused_by_the_system_resolver() -> None:
    # "localhost" resolves through /etc/hosts, so this needs no network.
    with pytest.raises(BlockedDestination, match=r"localhost resolves to .*loopback"):
        await resolve_checked("localhost", 80)


# --- redirects -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "target"),
    [
        ("/next", "https://a.example/next"),
        ("next?x=1", "https://a.example/dir/next?x=1"),
        ("//b.example/p", "https://b.example/p"),
        ("http://c.example/#frag", "http://c.example/"),
        ("  https://d.example/  ", "https://d.example/"),
        ("?only=query", "https://a.example/dir/page?only=query"),
    ],
)
def test_redirect_target_resolves_relative_locations(location: str, target: str) -> None:
    assert redirect_target("https://a.example/dir/page?q=1", location) == target


@pytest.mark.parametrize("location", ["", "   ", "/a\nb", "/a\x00", "http://]", "//[::1/x"])
def test_an_unusable_location_is_refused(location: str) -> None:
    with pytest.raises(BlockedDestination, match="bad redirect Location"):
        redirect_target("https://a.example/", location)


@pytest.mark.parametrize(
    "location", ["http://127.0.0.1/", "http://[::1]:8080/", "file:///etc/passwd", "//localhost/"]
)
def test_a_public_url_that_redirects_inward_is_refused_at_the_next_hop(location: str) -> None:
    first = check_url("https://public.example/start")
    with pytest.raises(BlockedDestination):
        check_url(redirect_target(first.url, location))


@pytest.mark.parametrize(
    ("status", "method", "next_method"),
    [
        (301, "POST", "GET"),
        (302, "put", "GET"),
        (303, "DELETE", "GET"),
        (303, "HEAD", "HEAD"),
        (301, "GET", "GET"),
        (307, "POST", "POST"),
        (308, "PATCH", "PATCH"),
    ],
)
def test_redirect_method(status: int, method: str, next_method: str) -> None:
    assert redirect_method(status, method) == next_method


HEADERS = {
    "Authorization": "Bearer t",
    "cookie": "a=b",
    "Proxy-Authorization": "Basic x",
    "WWW-Authenticate": "x",
    "Accept": "application/json",
    "X-Custom": "1",
}
SAFE = {"Accept": "application/json", "X-Custom": "1"}


@pytest.mark.parametrize(
    ("source", "destination", "kept"),
    [
        ("https://a.example/x", "https://a.example/y?z", HEADERS),
        ("https://a.example/x", "https://A.EXAMPLE.:443/", HEADERS),
        ("http://a.example/x", "https://a.example/y", HEADERS),  # upgrade on default ports
        ("http://0x7f.1/", "http://127.0.0.1/", HEADERS),  # same address, other spelling
        ("https://a.example/x", "https://b.example/x", SAFE),
        ("https://a.example/x", "https://sub.a.example/x", SAFE),
        ("https://a.example/x", "https://a.example:8443/x", SAFE),
        ("https://a.example/x", "http://a.example/x", SAFE),  # downgrade
        ("http://a.example:8080/", "https://a.example/", SAFE),
        ("https://a.example/", "https://a.example:99999/", SAFE),  # unreadable: fail safe
    ],
)
def test_credentials_follow_only_to_the_same_origin(
    source: str, destination: str, kept: dict[str, str]
) -> None:
    assert strip_credentials_on_cross_host(HEADERS, source, destination) == kept


hosts = st.sampled_from(["a.example", "b.example", "127.0.0.1", "[2606:4700::1]"])
urls = st.builds(
    lambda scheme, host, port: f"{scheme}://{host}{port}/",
    st.sampled_from(["http", "https"]),
    hosts,
    st.sampled_from(["", ":80", ":443", ":8080"]),
)


@given(
    headers=st.dictionaries(
        st.sampled_from(["Authorization", "AUTHORIZATION", "Cookie", "X-A", "Accept"]), st.text()
    ),
    source=urls,
    destination=urls,
)
def test_stripping_only_ever_removes_credentials(
    headers: dict[str, str], source: str, destination: str
) -> None:
    result = strip_credentials_on_cross_host(headers, source, destination)
    assert result.items() <= headers.items()
    for name in headers.keys() - result.keys():
        assert name.lower() in {"authorization", "cookie"}
    if (
        source.split("//")[1].split(":")[0].split("/")[0]
        != (destination.split("//")[1].split(":")[0].split("/")[0])
    ):
        assume("[" not in source + destination)  # the split above is too naive for IPv6
        assert not {name.lower() for name in result} & {"authorization", "cookie"}


# --- any input --------------------------------------------------------------------------------

url_texts = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda scheme, authority, path: f"{scheme}://{authority}{path}",
        st.sampled_from(["http", "https", "HTTP", "ftp", "h"]),
        st.text(alphabet="abc019.:[]@%x-_\u00e9\uff0e", max_size=25),
        st.text(alphabet="/?#a%\\", max_size=8),
    ),
)


def check_any_url(text: str) -> None:
    """check_url refuses with BlockedDestination or returns a target that re-checks to itself."""
    try:
        target = check_url(text)
    except BlockedDestination as refused:
        assert refused.reason
        return
    assert target.scheme in ("http", "https")
    assert 0 < target.port < 65536
    assert target.target.startswith("/")
    assert "#" not in target.target
    if target.ip is not None:
        assert is_blocked_ip(target.ip) is None
        assert parse_host_literal(target.host) == target.ip
    else:
        assert target.host.isascii() and target.host == target.host.lower()
        assert target.host != "localhost" and not target.host.endswith(".localhost")
    assert check_url(target.url) == target


@given(url_texts)
def test_any_text_is_a_checked_target_or_a_refusal(text: str) -> None:
    check_any_url(text)
