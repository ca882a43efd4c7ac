"""The guard in front of every outbound ``fetch``: which URLs and addresses a script may reach.

Scripts must not be able to turn the engine against its own network (SSRF). The rules:

* only ``http``/``https`` URLs with a host and no credentials, never ``localhost``;
* the host, as a literal in any spelling libc accepts (``2130706433``, ``0177.0.0.1``,
  ``0x7f.1``, ``[::ffff:127.0.0.1]``) or as every address DNS returns for it, must be public;
* the caller connects to the address checked here (:func:`resolve_checked` returns it), so a
  second DNS answer cannot swap in another one (DNS rebinding);
* each redirect hop is checked again, and credentials do not follow a hop to another origin.

An allow-list of networks exists for tests and explicit administrator configuration only.
Everything except :func:`resolve_checked` is pure.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence

import attrs
import trio

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class BlockedDestination(Exception):
    """A URL or address ``fetch`` must not reach; :attr:`reason` says why, for the script."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# First match wins, so narrower entries come before the networks that contain them.
_BLOCKED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/32"), "unspecified address"),
    (_V4("0.0.0.0/8"), "'this network' address"),
    (_V4("10.0.0.0/8"), "private address"),
    (_V4("100.64.0.0/10"), "carrier-grade NAT address"),
    (_V4("127.0.0.0/8"), "loopback address"),
    (_V4("169.254.0.0/16"), "link-local address"),
    (_V4("172.16.0.0/12"), "private address"),
    (_V4("192.0.0.0/24"), "IETF protocol assignment"),
    (_V4("192.0.2.0/24"), "documentation address"),
    (_V4("192.88.99.0/24"), "6to4 relay anycast address"),
    (_V4("192.168.0.0/16"), "private address"),
    (_V4("198.18.0.0/15"), "benchmarking address"),
    (_V4("198.51.100.0/24"), "documentation address"),
    (_V4("203.0.113.0/24"), "documentation address"),
    (_V4("224.0.0.0/4"), "multicast address"),
    (_V4("255.255.255.255/32"), "broadcast address"),
    (_V4("240.0.0.0/4"), "reserved address"),
)
BLOCKED_IPV4_NETWORKS: tuple[ipaddress.IPv4Network, ...] = tuple(net for net, _ in _BLOCKED_V4)

_BLOCKED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified address"),
    (_V6("::1/128"), "loopback address"),
    (_V6("64:ff9b:1::/48"), "local-use NAT64 address"),
    (_V6("100::/64"), "discard-only address"),
    (_V6("2001::/23"), "IETF protocol assignment (Teredo, ORCHID, benchmarking)"),
    (_V6("2001:db8::/32"), "documentation address"),
    (_V6("3fff::/20"), "documentation address"),
    (_V6("fc00::/7"), "unique local address"),
    (_V6("fe80::/10"), "link-local address"),
    (_V6("fec0::/10"), "site-local address"),
    (_V6("ff00::/8"), "multicast address"),
)
BLOCKED_IPV6_NETWORKS: tuple[ipaddress.IPv6Network, ...] = tuple(net for net, _ in _BLOCKED_V6)
_GLOBAL_UNICAST = _V6("2000::/3")  # everything routable on the IPv6 internet lives here
_IPV4_MAPPED = _V6("::ffff:0:0/96")
_IPV4_COMPATIBLE = _V6("::/96")
_NAT64 = _V6("64:ff9b::/96")


def _allowed(address: IPAddress, allow: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in allow)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address stands for, and the name of the form, if any."""
    if address in _IPV4_MAPPED:
        return "IPv4-mapped", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    return None


def is_blocked_ip(address: IPAddress, allow: Sequence[IPNetwork] = ()) -> str | None:
    """Why ``address`` must not be fetched from (``"loopback address"``...), or ``None``.

    IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4) are judged by that address, so
    ``::ffff:127.0.0.1`` is loopback and ``64:ff9b::8.8.8.8`` is public.
    """
    if _allowed(address, allow):
        return None
    if isinstance(address, ipaddress.IPv4Address):
        return next((why for net, why in _BLOCKED_V4 if address in net), None)
    for net, why in _BLOCKED_V6:
        if address in net:
            return why
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        form, ipv4 = embedded
        if _allowed(ipv4, allow):
            return None
        why_v4 = is_blocked_ip(ipv4)
        return None if why_v4 is None else f"{why_v4} ({form} form of {ipv4})"
    if address in _IPV4_COMPATIBLE:
        return "IPv4-compatible address (deprecated)"
    if address not in _GLOBAL_UNICAST:
        return "reserved address"
    return None


# --- host literals -------------------------------------------------------------------------

_DIGITS = {
    8: frozenset("01234567"),
    10: frozenset("0123456789"),
    16: frozenset("0123456789abcdefABCDEF"),
}
_ZONE = re.compile(r"[A-Za-z0-9._~-]+")


def _aton_number(part: str) -> int | None:
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:], 16
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if not digits or not set(digits) <= _DIGITS[base]:
        return None
    return int(digits, base)


def _inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """IPv4 the way libc's ``inet_aton`` reads it (and so ``getaddrinfo`` and browsers).

    One to four parts, each decimal, octal (leading ``0``) or hex (``0x``); the last part fills
    the bytes the others leave: ``127.1`` is 127.0.0.1 and ``2130706433`` is too.
    """
    parts = text.split(".")
    if len(parts) > 4:
        return None
    values = [_aton_number(part) for part in parts]
    if None in values:
        return None
    *leading, last = [value for value in values if value is not None]
    if any(value > 0xFF for value in leading) or last >= 1 << (8 * (4 - len(leading))):
        return None
    number = last
    for index, value in enumerate(leading):
        number |= value << (24 - 8 * index)
    return ipaddress.IPv4Address(number)


def _parse_ipv6(text: str) -> ipaddress.IPv6Address | None:
    address, percent, zone = text.partition("%")
    if percent:
        # In a URI the zone's '%' is itself escaped as %25 (RFC 6874); accept both spellings.
        if zone.startswith("25") and len(zone) > 2:
            zone = zone[2:]
        if not _ZONE.fullmatch(zone):
            return None
        address = f"{address}%{zone}"
    try:
        return ipaddress.IPv6Address(address)
    except ValueError:
        return None


def parse_host_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells, if it is an address literal, else ``None``.

    Understands every IPv4 spelling of ``inet_aton`` and IPv6 with or without brackets and with
    a zone id (``fe80::1%eth0``, ``[fe80::1%25eth0]``).
    """
    if host.startswith("[") and host.endswith("]"):
        return _parse_ipv6(host[1:-1])
    if ":" in host:
        return _parse_ipv6(host)
    return _inet_aton(host)


# --- URLs ----------------------------------------------------------------------------------


@attrs.frozen
class ParsedTarget:
    """A checked outbound URL, normalised: what to connect to and what to ask for."""

    scheme: str  # "http" or "https"
    host: str  # lowercase ASCII name, or the canonical address of a literal (no brackets)
    port: int
    target: str  # path and query, never empty; the fragment is dropped
    ip: IPAddress | None  # the address when the URL named one, else None (resolve it)

    @property
    def host_header(self) -> str:
        """The ``Host`` header value: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_header}{self.target}"


_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")


def _invalid(what: str) -> BlockedDestination:
    return BlockedDestination(f"invalid URL: {what}")


def _split_port(hostport: str) -> tuple[str, str]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise _invalid("unclosed '[' in the host")
        host, rest = hostport[: end + 1], hostport[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _invalid("unexpected text after the IPv6 address")
        return host, rest[1:]
    host, _, port = hostport.partition(":")
    return host, port


def _parse_port(text: str, scheme: str) -> int:
    if not text:
        return _DEFAULT_PORTS[scheme]
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 65536):
        raise _invalid(f"bad port '{text}'")
    return int(text)


def _parse_host(raw: str) -> tuple[str, IPAddress | None]:
    """Normalise the host part; a literal comes back as its canonical address."""
    if raw.startswith("["):
        address = parse_host_literal(raw)
        if not isinstance(address, ipaddress.IPv6Address):
            raise _invalid(f"bad IPv6 address '{raw}'")
        return str(address), address
    try:
        # Non-ASCII names go through IDNA first, which also folds full-width digits and dots,
        # so the checks below see the name DNS would be asked for.
        host = raw.encode("idna").decode("ascii") if not raw.isascii() else raw
    except UnicodeError:
        raise _invalid(f"bad host name '{raw}'") from None
    host = host.lower()
    host = host[:-1] if host.endswith(".") else host  # "localhost." is localhost
    if not host:
        raise _invalid("no host")
    if host == "localhost" or host.endswith(".localhost"):
        raise BlockedDestination(f"host '{host}' is not allowed")
    if _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        # A name whose last label is a number is an IPv4 address or nothing (as in browsers);
        # it must never reach DNS as a name.
        address = parse_host_literal(host)
        if address is None:
            raise _invalid(f"bad IPv4 address '{host}'")
        return str(address), address
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        raise _invalid(f"bad host name '{host}'")
    return host, None


def check_url(url: str, *, allow: Sequence[IPNetwork] = ()) -> ParsedTarget:
    """Parse and check an outbound URL; raise :class:`BlockedDestination` if it may not be used.

    A host name passes here; its addresses are checked by :func:`resolve_checked`.
    """
    if _CONTROL_OR_SPACE.search(url):
        # Some parsers silently drop tabs and newlines ("loc\\nalhost"); refuse rather than guess.
        raise _invalid("whitespace or control characters")
    scheme, colon, rest = url.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme):
        raise _invalid("no scheme")
    scheme = scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise BlockedDestination(f"scheme '{scheme}' is not allowed (only http and https)")
    if not rest.startswith("//"):
        raise _invalid("no host")
    rest = rest[2:].split("#", 1)[0]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, target = rest[:end], rest[end:]
    if "@" in authority:
        # user:pass@host also reads differently to different parsers (a@b@c, a\\@b);
        # credentials belong in a header, where {{secret:...}} can supply them.
        raise BlockedDestination("credentials in the URL are not allowed; send them in a header")
    raw_host, raw_port = _split_port(authority)
    port = _parse_port(raw_port, scheme)
    host, address = _parse_host(raw_host)
    if address is not None:
        reason = is_blocked_ip(address, allow)
        if reason is not None:
            raise BlockedDestination(f"{address} is not allowed ({reason})")
    if not target.startswith("/"):
        target = "/" + target
    return ParsedTarget(scheme, host, port, target, address)


async def _system_resolver(host: str, port: int) -> list[str]:
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve_checked(
    host: str,
    port: int,
    *,
    resolver: Resolver = _system_resolver,
    allow: Sequence[IPNetwork] = (),
) -> list[IPAddress]:
    """The addresses to connect to for ``host``, every one of them checked.

    If *any* address is blocked the whole host is refused: a name that resolves to both a
    public and a private address is an attack, not a choice. Connect to an address returned
    here (never resolve again) so the check and the connection see the same address.
    Resolution failures propagate as the resolver raised them (``OSError`` by default).
    """
    literal = parse_host_literal(host)
    if literal is not None:
        reason = is_blocked_ip(literal, allow)
        if reason is not None:
            raise BlockedDestination(f"{literal} is not allowed ({reason})")
        return [literal]
    found: list[IPAddress] = []
    for text in await resolver(host, port):
        address = _parse_ipv6(text) if ":" in text else _strict_ipv4(text)
        if address is None:
            raise BlockedDestination(f"{host} resolved to an unreadable address {text!r}")
        reason = is_blocked_ip(address, allow)
        if reason is not None:
            raise BlockedDestination(
                f"{host} resolves to {address}, which is not allowed ({reason})"
            )
        if address not in found:
            found.append(address)
    if not found:
        raise OSError(f"{host} has no addresses")
    return found


def _strict_ipv4(text: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


# --- redirects -----------------------------------------------------------------------------


def redirect_target(current_url: str, location: str) -> str:
    """The absolute URL a ``Location`` header points to from ``current_url``.

    The result still has to pass :func:`check_url`; this only resolves relative references.
    """
    location = location.strip()
    if not location or _CONTROL_OR_SPACE.search(location):
        raise _invalid("bad redirect Location header")
    try:
        return urllib.parse.urldefrag(urllib.parse.urljoin(current_url, location)).url
    except ValueError:  # urllib's own complaints, such as an unbalanced "[" in the host
        raise _invalid("bad redirect Location header") from None


def redirect_method(status: int, method: str) -> str:
    """The method of the next hop: 301-303 turn anything but GET/HEAD into a GET (no body)."""
    method = method.upper()
    if status in (301, 302, 303) and method not in ("GET", "HEAD"):
        return "GET"
    return method


_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "cookie", "proxy-authorization", "www-authenticate"}
)


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return None
    host = (parts.hostname or "").rstrip(".")
    address = parse_host_literal(host)
    return scheme, str(address) if address is not None else host, port


def strip_credentials_on_cross_host(
    headers: Mapping[str, str], from_url: str, to_url: str
) -> dict[str, str]:
    """``headers`` for the next redirect hop, without credentials if the origin changes.

    Credentials go along only to the same scheme, host and port, or on an upgrade from
    ``http://host`` to ``https://host`` on the default ports; any other change drops
    ``Authorization``, ``Cookie``, ``Proxy-Authorization`` and ``WWW-Authenticate`` (a downgrade
    to plain http would otherwise send them in the clear).
    """
    source, destination = _origin(from_url), _origin(to_url)
    keep = source is not None and (
        source == destination
        or (source[0] == "http" and source[2] == 80 and destination == ("https", source[1], 443))
    )
    if keep:
        return dict(headers)
    return {
        name: value for name, value in headers.items() if name.lower() not in _CREDENTIAL_HEADERS
    }
