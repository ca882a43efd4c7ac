"""Token-bucket rate limits per surface and key, and the client address they are keyed by.

The limiter is a plain object driven by a clock, so its behaviour over time is tested by moving a
fake clock; it does no I/O and holds no lock (the engine calls it from the Trio thread only).

Default limits follow PocketBase's default rate-limit rules (``core/settings_model.go``,
``newDefaultSettings``): ``/api/`` 300 requests per 10 s, ``*:auth`` 2 per 3 s, ``*:create``
20 per 5 s. A rule of *n* requests per *t* seconds becomes a bucket of capacity *n* refilled at
*n/t* tokens a second, which allows the same sustained rate and the same burst.
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import attrs

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _positive_finite(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0 < value < math.inf:  # also refuses NaN
        raise ValueError(f"{attribute.name} must be a positive finite number, got {value!r}")


@attrs.frozen
class RateLimit:
    """A bucket of ``capacity`` tokens, one per request, refilled at ``refill_per_s``."""

    capacity: int = attrs.field(
        validator=[attrs.validators.instance_of(int), attrs.validators.ge(1)]
    )
    refill_per_s: float = attrs.field(validator=_positive_finite)

    @classmethod
    def per(cls, requests: int, seconds: float) -> RateLimit:
        """``requests`` per ``seconds``, the way PocketBase writes its rules."""
        return cls(requests, requests / seconds)

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """A rule written ``<requests>/<period>``: ``300/10s``, ``60/1m``, ``5/s``, ``2/500ms``.

        Raises ``ValueError`` with a message fit to show an administrator.
        """
        match = _RATE_TEXT.fullmatch(text)
        if match is None:
            raise ValueError("not <requests>/<period>, e.g. 300/10s or 60/1m")
        requests, amount, unit = match.group(1, 2, 3)
        count = int(requests)
        seconds = float(amount or "1") * _UNIT_SECONDS[unit]
        if not 1 <= count <= MAX_RULE_REQUESTS:
            raise ValueError(f"the request count must be within 1..{MAX_RULE_REQUESTS}")
        if not MIN_RULE_PERIOD_S <= seconds <= MAX_RULE_PERIOD_S:
            raise ValueError("the period must be within 1ms..1d")
        return cls.per(count, seconds)


# Bounds that keep every parsed rule a valid bucket: a positive, finite refill rate.
MAX_RULE_REQUESTS = 1_000_000_000
MIN_RULE_PERIOD_S = 0.001
MAX_RULE_PERIOD_S = 86_400.0
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
# ASCII digits only ([0-9], not \d): int() would accept other scripts' digits too.
_RATE_TEXT = re.compile(
    r"\s*([0-9]{1,10})\s*/\s*([0-9]{1,6}(?:\.[0-9]{1,3})?)?\s*(ms|s|m|h|d)\s*", re.ASCII
)


# Surfaces the engine limits separately; the middleware picks one per request.
SOLUTIONS = "solutions"  # script routes
ENGINE = "engine"  # the /engine management API
AUTH = "auth"  # credential-taking /auth endpoints (login, callback, token)
GRAPHQL = "graphql"
STREAMS = "streams"  # SSE / WebSocket connects: each one holds resources while open

DEFAULT_LIMITS: Mapping[str, RateLimit] = {
    # PocketBase "/api/": 300 / 10 s, its general limit.
    SOLUTIONS: RateLimit.per(300, 10),
    ENGINE: RateLimit.per(300, 10),
    GRAPHQL: RateLimit.per(300, 10),
    # PocketBase "*:auth": 2 / 3 s; meant for endpoints that check credentials, not static pages.
    AUTH: RateLimit.per(2, 3),
    # PocketBase "*:create": 20 / 5 s; a connect creates a long-lived subscriber.
    STREAMS: RateLimit.per(20, 5),
}


@attrs.frozen
class Decision:
    """The limiter's answer for one request."""

    allowed: bool
    retry_after_s: float  # 0 when allowed; else the wait until one token is back
    remaining: int  # whole tokens left after this request

    @property
    def retry_after_header(self) -> str:
        """``Retry-After`` wants whole seconds; round up so a retry at that time succeeds."""
        return str(max(1, math.ceil(self.retry_after_s)))


@attrs.define
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Buckets per ``(surface, key)``, at most ``max_keys`` of them.

    A bucket idle long enough to be full again is the same as no bucket, so buckets are kept in
    least-recently-used order and the oldest is dropped when a new key would exceed ``max_keys``:
    memory stays bounded however many addresses a client rotates through. Only when that many
    keys are active at once does an eviction forget a partly drained bucket.
    """

    def __init__(
        self,
        limits: Mapping[str, RateLimit],
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._limits = dict(limits)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, surface: str, key: str) -> Decision:
        """Spend one token of ``key``'s bucket on ``surface``, if there is one."""
        try:
            limit = self._limits[surface]
        except KeyError:
            # A typo in a surface name must fail loudly, not turn limiting off.
            raise ValueError(f"no rate limit configured for surface {surface!r}") from None
        now = self._clock()
        bucket_key = (surface, key)
        bucket = self._buckets.get(bucket_key)
        if bucket is None:
            bucket = _Bucket(float(limit.capacity), now)
            self._buckets[bucket_key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(bucket_key)
            # max(): a clock that steps back must not drain or overfill the bucket.
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(limit.capacity), bucket.tokens + elapsed * limit.refill_per_s)
            bucket.updated = max(bucket.updated, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return Decision(True, 0.0, int(bucket.tokens))
        return Decision(False, (1.0 - bucket.tokens) / limit.refill_per_s, 0)

    def prune(self) -> int:
        """Drop every bucket that has refilled completely; returns how many were dropped."""
        now = self._clock()
        full = [
            key
            for key, bucket in self._buckets.items()
            if bucket.tokens + max(0.0, now - bucket.updated) * self._limits[key[0]].refill_per_s
            >= self._limits[key[0]].capacity
        ]
        for key in full:
            del self._buckets[key]
        return len(full)


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """Comma-separated networks (``10.0.0.0/8, 192.168.1.7, ::1``); empty text is none.

    An address stands for itself (a /32 or /128); host bits after the prefix are ignored
    (``172.17.0.1/16`` is ``172.17.0.0/16``), as proxy configurations commonly write them.
    Raises ``ValueError`` naming the entry that is not a network.
    """
    if not text.strip():
        return ()
    networks: list[IPNetwork] = []
    for entry in text.split(","):
        item = entry.strip()
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def _parse_ip(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return _unmapped(address)


def _unmapped(address: IPAddress) -> IPAddress:
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; they are IPv4 clients.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forwarded_entry(entry: str) -> IPAddress | None:
    """One ``X-Forwarded-For`` element: an address, optionally bracketed and with a port."""
    entry = entry.strip()
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
            return None
        return _parse_ip(host)
    if entry.count(":") == 1:  # a.b.c.d:port (some proxies add the port)
        host, _, port = entry.partition(":")
        return _parse_ip(host) if port.isdigit() and "." in host else None
    return _parse_ip(entry)


def _trusted(address: IPAddress, proxies: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def client_ip(peer: str, forwarded_for: str | None, trusted_proxies: Sequence[IPNetwork]) -> str:
    """The address to attribute a request to.

    The socket's peer address, unless the peer is a trusted proxy: then ``X-Forwarded-For`` is
    read from the right, skipping trusted proxies, and the first untrusted address is the client.
    Entries left of that were written by the client and prove nothing. A malformed entry stops
    the walk at the last address known to be real, so a garbled header can never name a client
    the proxies did not see. Several ``X-Forwarded-For`` headers must be joined with ``,``.
    """
    current = _parse_ip(peer)
    if current is None:
        return peer  # not an IP socket (a Unix socket, say): nothing to trust or refine
    if not forwarded_for or not _trusted(current, trusted_proxies):
        return str(current)
    for entry in reversed(forwarded_for.split(",")):
        hop = _forwarded_entry(entry)
        if hop is None:
            break
        current = hop
        if not _trusted(current, trusted_proxies):
            break
    return str(current)


def ip_bucket_key(ip: str) -> str:
    """The rate-limit key for a client address.

    An IPv6 host is usually given a whole /64, so keying by the full address would hand it
    2**64 fresh buckets; IPv6 clients share one key per /64. Anything that is not an address is
    returned unchanged.
    """
    address = _parse_ip(ip)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address) if address is not None else ip
