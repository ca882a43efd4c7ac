"""Token buckets driven by a fake clock, and the client address behind trusted proxies."""

from __future__ import annotations

import ipaddress
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from security import DEFAULT_LIMITS, Decision, RateLimit, RateLimiter, client_ip, ip_bucket_key
from security.ratelimit import AUTH, ENGINE, GRAPHQL, SOLUTIONS, STREAMS


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(capacity: int = 3, per_s: float = 1.0, **options: int) -> tuple[RateLimiter, Clock]:
    clock = Clock()
    return RateLimiter({"s": RateLimit(capacity, per_s)}, clock=clock, **options), clock


def test_defaults_follow_pocketbase_rules() -> None:
    # PocketBase core/settings_model.go: "/api/" 300 per 10 s, "*:auth" 2 per 3 s,
    # "*:create" 20 per 5 s; n per t seconds is a bucket of n refilled at n/t per second.
    assert {
        SOLUTIONS: RateLimit(300, 30.0),
        ENGINE: RateLimit(300, 30.0),
        GRAPHQL: RateLimit(300, 30.0),
        AUTH: RateLimit(2, 2 / 3),
        STREAMS: RateLimit(20, 4.0),
    } == DEFAULT_LIMITS


def test_a_burst_up_to_capacity_is_allowed_then_refused_with_the_wait() -> None:
    rl, _ = limiter(capacity=3, per_s=0.5)
    assert [rl.check("s", "k") for _ in range(3)] == [
        Decision(True, 0.0, 2),
        Decision(True, 0.0, 1),
        Decision(True, 0.0, 0),
    ]
    refused = rl.check("s", "k")
    assert refused == Decision(False, 2.0, 0)
    assert refused.retry_after_header == "2"


def test_waiting_the_retry_after_is_enough() -> None:
    rl, clock = limiter(capacity=1, per_s=0.4)
    assert rl.check("s", "k").allowed
    clock.now += 1.0
    refused = rl.check("s", "k")
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(1.5)
    assert refused.retry_after_header == "2"
    clock.now += refused.retry_after_s
    assert rl.check("s", "k").allowed


def test_tokens_refill_up_to_capacity_only() -> None:
    rl, clock = limiter(capacity=2, per_s=1.0)
    rl.check("s", "k")
    rl.check("s", "k")
    clock.now += 3600
    assert [rl.check("s", "k").allowed for _ in range(3)] == [True, True, False]


def test_keys_and_surfaces_have_their_own_buckets() -> None:
    clock = Clock()
    rl = RateLimiter({"a": RateLimit(1, 1.0), "b": RateLimit(1, 1.0)}, clock=clock)
    assert rl.check("a", "k").allowed
    assert not rl.check("a", "k").allowed
    assert rl.check("a", "other").allowed
    assert rl.check("b", "k").allowed


def test_an_unknown_surface_is_an_error() -> None:
    rl, _ = limiter()
    with pytest.raises(ValueError, match="no rate limit configured for surface 'typo'"):
        rl.check("typo", "k")


def test_a_clock_stepping_back_neither_drains_nor_fills() -> None:
    rl, clock = limiter(capacity=2, per_s=1.0)
    rl.check("s", "k")
    clock.now -= 50
    assert rl.check("s", "k") == Decision(True, 0.0, 0)
    assert not rl.check("s", "k").allowed
    clock.now += 50 + 1  # one second after the latest time seen: one token back
    assert rl.check("s", "k").allowed


def test_memory_is_bounded_by_evicting_the_least_recently_used_key() -> None:
    rl, _ = limiter(capacity=1, per_s=0.001, max_keys=3)
    for key in ("a", "b", "c"):
        assert rl.check("s", key).allowed
    assert not rl.check("s", "a").allowed  # touches "a": "b" is now the oldest
    assert rl.check("s", "d").allowed
    assert len(rl) == 3
    assert rl.check("s", "b").allowed  # "b" was forgotten: a fresh bucket
    assert not rl.check("s", "a").allowed  # "a" was kept


def test_prune_drops_only_buckets_that_are_full_again() -> None:
    rl, clock = limiter(capacity=2, per_s=1.0)
    rl.check("s", "old")
    clock.now += 1.0
    rl.check("s", "new")
    assert rl.prune() == 1
    assert len(rl) == 1
    assert rl.check("s", "new") == Decision(True, 0.0, 0)


def test_bad_limits_are_refused() -> None:
    for capacity, rate in [(0, 1.0), (1, 0.0), (1, -1.0), (1, math.inf), (1, math.nan)]:
        with pytest.raises(ValueError):
            RateLimit(capacity, rate)
    with pytest.raises(TypeError):
        RateLimit(1.5, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_keys"):
        RateLimiter({}, max_keys=0)
    assert RateLimit.per(2, 3) == RateLimit(2, 2 / 3)


def test_retry_after_header_is_at_least_one_second() -> None:
    assert Decision(False, 0.01, 0).retry_after_header == "1"
    assert Decision(False, 2.01, 0).retry_after_header == "3"


@given(
    capacity=st.integers(1, 20),
    rate=st.floats(0.01, 50),
    steps=st.lists(st.tuples(st.floats(0, 5), st.sampled_from("abc")), max_size=120),
)
def test_no_key_ever_gets_more_than_its_burst_plus_the_refill(
    capacity: int, rate: float, steps: list[tuple[float, str]]
) -> None:
    rl, clock = limiter(capacity=capacity, per_s=rate)
    start = clock.now
    allowed = dict.fromkeys("abc", 0)
    for wait, key in steps:
        clock.now += wait
        decision = rl.check("s", key)
        allowed[key] += decision.allowed
        assert 0 <= decision.remaining < capacity
        assert (decision.retry_after_s == 0) is decision.allowed
        assert decision.retry_after_s <= 1 / rate + 1e-9
        assert allowed[key] <= capacity + (clock.now - start) * rate + 1e-6


@given(waits=st.lists(st.floats(0, 3), min_size=1, max_size=60))
def test_a_client_that_honours_retry_after_is_always_let_in(waits: list[float]) -> None:
    rl, clock = limiter(capacity=2, per_s=0.5)
    for wait in waits:
        clock.now += wait
        decision = rl.check("s", "k")
        if not decision.allowed:
            clock.now += decision.retry_after_s + 1e-9
            assert rl.check("s", "k").allowed


@given(keys=st.lists(st.text(max_size=3), max_size=80), max_keys=st.integers(1, 10))
def test_the_number_of_buckets_never_exceeds_max_keys(keys: list[str], max_keys: int) -> None:
    rl, _ = limiter(max_keys=max_keys)
    for key in keys:
        rl.check("s", key)
        assert len(rl) <= max_keys


# --- client address -------------------------------------------------------------------------

PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        # No proxy in front: the header is whatever the client wrote, and ignored.
        ("203.0.113.7", "1.2.3.4", "203.0.113.7"),
        ("203.0.113.7", None, "203.0.113.7"),
        # Through a trusted proxy: the right-most entry is what the proxy saw.
        ("10.0.0.2", "198.51.100.9", "198.51.100.9"),
        ("10.0.0.2", "6.6.6.6, 198.51.100.9", "198.51.100.9"),  # 6.6.6.6 is the client's lie
        ("10.0.0.2", "6.6.6.6, 198.51.100.9, 10.1.1.1", "198.51.100.9"),  # two proxies
        ("10.0.0.2", "10.3.3.3, 10.1.1.1", "10.3.3.3"),  # only proxies: the first one
        ("10.0.0.2", "", "10.0.0.2"),
        ("10.0.0.2", None, "10.0.0.2"),
        # Malformed entries stop the walk at the last address the proxies vouch for.
        ("10.0.0.2", "198.51.100.9, garbage", "10.0.0.2"),
        ("10.0.0.2", "198.51.100.9, 10.1.1.1, unknown", "10.0.0.2"),
        ("10.0.0.2", "garbage, 10.1.1.1", "10.1.1.1"),
        ("10.0.0.2", "0x7f.1", "10.0.0.2"),
        ("10.0.0.2", "[2001:db8::1]:443, ", "10.0.0.2"),
        # Ports, brackets and spacing that real proxies produce.
        ("10.0.0.2", " 198.51.100.9:5555 ", "198.51.100.9"),
        ("10.0.0.2", "[2001:db8::1]:443", "2001:db8::1"),
        ("10.0.0.2", "[2001:db8::1]", "2001:db8::1"),
        ("10.0.0.2", "2001:DB8::1", "2001:db8::1"),
        ("10.0.0.2", "[2001:db8::1]x", "10.0.0.2"),
        ("10.0.0.2", "[2001:db8::1", "10.0.0.2"),
        ("10.0.0.2", "host:80", "10.0.0.2"),
        # A dual-stack socket reports IPv4 peers in mapped form.
        ("::ffff:10.0.0.2", "198.51.100.9", "198.51.100.9"),
        ("::ffff:203.0.113.7", "198.51.100.9", "203.0.113.7"),
        ("fd00::5", "::ffff:198.51.100.9", "198.51.100.9"),
        # Not an IP socket: nothing to trust.
        ("unix:/run/engine.sock", "198.51.100.9", "unix:/run/engine.sock"),
    ],
)
def test_client_ip(peer: str, forwarded: str | None, client: str) -> None:
    assert client_ip(peer, forwarded, PROXIES) == client


def test_with_no_trusted_proxies_the_socket_always_wins() -> None:
    assert client_ip("10.0.0.2", "198.51.100.9", []) == "10.0.0.2"


def canonical_address(text: str) -> str | None:
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
entries = st.one_of(addresses, addresses.map(lambda a: f"[{a}]:80"), st.text(max_size=8))


@given(
    peer=st.one_of(addresses, st.sampled_from(["10.0.0.2", "10.9.9.9", "fd00::1"])),
    forwarded=st.one_of(st.none(), st.lists(entries, max_size=5).map(", ".join), st.text()),
)
def test_the_client_is_the_peer_or_an_entry_the_proxies_wrote(
    peer: str, forwarded: str | None
) -> None:
    client = client_ip(peer, forwarded, PROXIES)
    peer_address = canonical_address(peer)
    assert peer_address is not None
    if not forwarded or not any(
        ipaddress.ip_address(peer_address) in net
        for net in PROXIES
        if net.version == ipaddress.ip_address(peer_address).version
    ):
        assert client == peer_address
        return
    # Only entries right of (and including) the answer can have been read.
    candidates = [peer_address] + [canonical_address(entry) for entry in forwarded.split(",")]
    assert client in candidates


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("198.51.100.9", "198.51.100.9"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.9", "198.51.100.9"),
        ("unix:/run/engine.sock", "unix:/run/engine.sock"),
    ],
)
def test_ip_bucket_key_groups_ipv6_hosts_by_64(ip: str, key: str) -> None:
    assert ip_bucket_key(ip) == key
