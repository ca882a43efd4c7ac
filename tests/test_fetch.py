"""``fetch`` itself (``engine.fetch.FetchService``) against real servers on loopback.

The target server runs on 127.0.0.1, which ``fetch`` refuses unless the settings allow it, so
most tests allow 127.0.0.0/8 the way an administrator's ``fetch.allow_networks`` would.  Host
names are resolved by a resolver the test injects (``a.test`` -> 127.0.0.1), which also shows
that the connection goes to the address that was checked: httpx never resolves these names
itself, and the system resolver does not know them.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.fetch import FetchError, FetchService, FetchSettings
from engine.secrets import SecretService
from engine.storage import Database, SecretOwner
from security import SecretBox, generate_key_text, key_from_text
from tests._fetch_target import TestAuthority, serving

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
SCRIPT = "https://example.com/script"


class Names:
    """A resolver for test host names; counts how often each name was resolved."""

    def __init__(self, table: dict[str, Sequence[str]]) -> None:
        self.table = table
        self.calls: dict[str, int] = {}

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls[host] = self.calls.get(host, 0) + 1
        if host not in self.table:
            raise OSError(f"unknown test name {host}")
        return self.table[host]


def service(
    *,
    allow: tuple[Any, ...] = LOOPBACK,
    names: Names | None = None,
    secrets: SecretService | None = None,
    events: list[dict[str, Any]] | None = None,
    **settings: Any,
) -> FetchService:
    async def record(event: dict[str, Any]) -> None:
        assert events is not None
        events.append(event)

    return FetchService(
        FetchSettings(allow_networks=allow, **settings),
        secrets=secrets,
        audit=record if events is not None else None,
        resolver=names or Names({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]}),
    )


async def fetch(
    fetcher: FetchService, url: str, options: Any = None, *, user_id: str | None = None
) -> dict[str, Any]:
    outcome = await fetcher.call([url, options], script_uri=SCRIPT, user_id=user_id)
    result: dict[str, Any] = json.loads(outcome.text)
    return result


async def refused(fetcher: FetchService, url: str, options: Any = None, **kw: Any) -> str:
    with pytest.raises(FetchError) as caught:
        await fetcher.call([url, options], script_uri=SCRIPT, **kw)
    return str(caught.value)


@pytest.fixture
async def target() -> AsyncIterator[str]:
    async with serving() as base:
        yield base


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


# --- requests and results ------------------------------------------------------------------


async def test_a_get_answers_status_ok_lowercase_headers_and_the_body(target: str) -> None:
    result = await fetch(service(), f"{target}/multi")
    assert list(result) == ["status", "headers", "body", "ok"]
    assert (result["status"], result["ok"], result["body"]) == (200, True, "multi")
    assert result["headers"]["x-mixed-case"] == "yes"
    assert result["headers"]["set-cookie"] == "a=1, b=2"


async def test_options_as_json_text_and_as_an_object_send_the_same_request(target: str) -> None:
    options = {"method": "post", "headers": {"X-One": "1", "Content-Type": "text/plain"}}
    options |= {"body": "hello", "unknown": True}
    by_text = await fetch(service(), f"{target}/echo?q=1", json.dumps(options))
    by_object = await fetch(service(), f"{target}/echo?q=1", options)
    for result in (by_text, by_object):
        echo = json.loads(result["body"])
        assert (echo["method"], echo["body"], echo["query"]) == ("POST", "hello", {"q": "1"})
        assert echo["headers"]["x-one"] == "1"
        assert echo["headers"]["content-type"] == "text/plain"
        assert echo["headers"]["host"] == target.removeprefix("http://")
    assert json.loads(by_text["body"]) == json.loads(by_object["body"])


async def test_a_body_that_is_not_text_is_sent_as_its_json(target: str) -> None:
    result = await fetch(service(), f"{target}/echo", {"method": "PUT", "body": {"a": [1, 2]}})
    assert json.loads(result["body"])["body"] == '{"a":[1,2]}'


async def test_a_non_2xx_status_is_a_normal_result(target: str) -> None:
    for status in (404, 500, 304):
        result = await fetch(service(), f"{target}/status/{status}")
        assert (result["status"], result["ok"]) == (status, False)


async def test_the_engine_owns_framing_headers_and_names_itself(target: str) -> None:
    headers = {"Host": "evil.example", "Content-Length": "999", "Connection": "close"}
    echo = json.loads((await fetch(service(), f"{target}/echo", {"headers": headers}))["body"])
    assert echo["headers"]["host"] == target.removeprefix("http://")
    assert "content-length" not in echo["headers"]
    assert echo["headers"]["user-agent"].startswith("aiwebengine/")
    own = await fetch(service(), f"{target}/echo", {"headers": {"User-Agent": "mine"}})
    assert json.loads(own["body"])["headers"]["user-agent"] == "mine"


async def test_a_declared_charset_is_decoded_and_compression_is_undone(target: str) -> None:
    assert (await fetch(service(), f"{target}/charset"))["body"] == "café"
    assert (await fetch(service(), f"{target}/gzip?n=5000"))["body"] == "z" * 5000


async def test_a_body_that_is_not_text_is_an_encoding_error(target: str) -> None:
    message = await refused(service(), f"{target}/binary")
    assert message == "Fetch error: Response encoding error: the body is not valid utf-8 text"


async def test_head_answers_without_a_body(target: str) -> None:
    result = await fetch(service(), f"{target}/echo", {"method": "HEAD"})
    assert (result["status"], result["body"]) == (200, "")


# --- limits --------------------------------------------------------------------------------


async def test_timeout_ms_bounds_the_whole_request(target: str) -> None:
    started = time.monotonic()
    message = await refused(service(), f"{target}/slow?s=5", {"timeout_ms": 200})
    assert message == "Fetch error: Request failed: timed out after 200 ms"
    assert time.monotonic() - started < 2


async def test_the_configured_timeout_bounds_a_longer_timeout_ms(target: str) -> None:
    message = await refused(service(timeout_s=0.3), f"{target}/slow?s=5", {"timeout_ms": 60_000})
    assert message == "Fetch error: Request failed: timed out after 300 ms"


async def test_a_fetch_gives_up_before_the_invocations_deadline(target: str) -> None:
    # Host calls run inside the pool's cancel scope; fetch leaves the script time to answer.
    started = time.monotonic()
    with trio.move_on_after(1.0) as scope:
        message = await refused(service(), f"{target}/slow?s=5")
    assert not scope.cancelled_caught
    assert message.startswith("Fetch error: Request failed: timed out after ")
    assert 0.5 < time.monotonic() - started < 1.0


async def test_no_time_left_is_refused_at_once() -> None:
    names = Names({"a.test": ["127.0.0.1"]})
    message = ""
    # A deadline already past: fetch refuses before its first checkpoint, resolving nothing.
    with trio.CancelScope(deadline=trio.current_time() - 0.001):
        message = await refused(service(names=names), "http://a.test/")
    assert message == "Fetch error: Request failed: no time left before the handler's deadline"
    assert names.calls == {}


async def test_a_response_over_the_size_limit_is_refused(target: str) -> None:
    fetcher = service(max_response_bytes=100_000)
    assert len((await fetch(fetcher, f"{target}/big?n=100000"))["body"]) == 100_000
    message = await refused(fetcher, f"{target}/big?n=100001")
    assert message == "Fetch error: Response too large (more than 100000 bytes)"


async def test_the_size_limit_counts_the_decompressed_body(target: str) -> None:
    message = await refused(service(max_response_bytes=50_000), f"{target}/gzip?n=1000000")
    assert message == "Fetch error: Response too large (more than 50000 bytes)"


# --- redirects -----------------------------------------------------------------------------


async def test_five_redirects_are_followed_and_a_sixth_is_refused(target: str) -> None:
    assert (await fetch(service(), f"{target}/chain/5"))["body"] == "done"
    message = await refused(service(), f"{target}/chain/6")
    assert message == "Fetch error: Too many redirects (more than 5)"


@pytest.mark.parametrize(
    ("status", "method", "body"),
    [(301, "GET", ""), (302, "GET", ""), (303, "GET", ""), (307, "POST", "x"), (308, "POST", "x")],
)
async def test_redirects_rewrite_the_method_as_browsers_do(
    target: str, status: int, method: str, body: str
) -> None:
    options = {"method": "POST", "body": "x", "headers": {"Content-Type": "text/plain"}}
    result = await fetch(service(), f"{target}/redirect?status={status}&to=/echo", options)
    echo = json.loads(result["body"])
    assert (echo["method"], echo["body"]) == (method, body)
    assert ("content-type" in echo["headers"]) is (method == "POST")


async def test_credentials_and_secrets_stay_on_their_origin(target: str, tmp_path: Path) -> None:
    port = port_of(target)
    secrets, database = await secret_service(tmp_path)
    try:
        await secrets.set(SecretOwner(SCRIPT), "k", "the-key-value")
        fetcher = service(secrets=secrets)
        headers = {
            "Authorization": "Bearer t",
            "Cookie": "c=1",
            "X-Api-Key": "{{secret:k}}",
            "X-Plain": "1",
        }
        same = f"http://a.test:{port}/redirect?to=/echo"
        echo = json.loads((await fetch(fetcher, same, {"headers": headers}))["body"])["headers"]
        assert {"authorization", "cookie", "x-api-key", "x-plain"} <= set(echo)
        other = f"http://a.test:{port}/redirect?to=http://b.test:{port}/echo"
        echo = json.loads((await fetch(fetcher, other, {"headers": headers}))["body"])["headers"]
        assert "x-plain" in echo
        assert not {"authorization", "cookie", "x-api-key"} & set(echo)
    finally:
        await database.aclose()


async def test_a_redirect_to_a_refused_destination_is_refused(target: str) -> None:
    events: list[dict[str, Any]] = []
    fetcher = service(allow=(ipaddress.ip_network("127.0.0.1/32"),), events=events)
    port = port_of(target)
    for location in (f"http://127.0.0.2:{port}/echo", "http://169.254.169.254/latest/meta-data"):
        message = await refused(fetcher, f"{target}/redirect?to={location}")
        assert message.startswith("Fetch error: Blocked URL (reached by a redirect): ")
    assert [event["target"] for event in events] == [
        f"http://127.0.0.2:{port}/echo",
        "http://169.254.169.254/latest/meta-data",
    ]
    assert all(event["detail"]["redirected_from"].startswith(target) for event in events)


# --- where fetch connects --------------------------------------------------------------------


async def test_fetch_connects_to_the_address_it_checked(target: str) -> None:
    names = Names({"pinned.test": ["127.0.0.1"]})
    url = f"http://pinned.test:{port_of(target)}/echo"
    echo = json.loads((await fetch(service(names=names), url))["body"])
    # The system resolver does not know pinned.test: the request reached the checked address,
    # with the name in the Host header.
    assert echo["headers"]["host"] == f"pinned.test:{port_of(target)}"
    assert names.calls == {"pinned.test": 1}


async def test_every_hop_is_resolved_and_checked_again(target: str) -> None:
    answers = iter([["127.0.0.1"], ["10.0.0.1"]])

    class Rebinding(Names):
        async def __call__(self, host: str, port: int) -> Sequence[str]:
            return next(answers)

    url = f"http://rebind.test:{port_of(target)}/redirect?to=/echo"
    message = await refused(service(names=Rebinding({})), url)
    assert message == (
        "Fetch error: Blocked URL (reached by a redirect): rebind.test resolves to 10.0.0.1, "
        "which is not allowed (private address)"
    )


async def test_https_verifies_the_name_while_connecting_to_the_checked_address(
    tmp_path: Path,
) -> None:
    authority = TestAuthority()
    certfile, keyfile = authority.issue(tmp_path, "fetch.test")
    async with serving(certfile=certfile, keyfile=keyfile) as base:
        port = port_of(base)
        fetcher = FetchService(
            FetchSettings(allow_networks=LOOPBACK),
            resolver=Names({"fetch.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}),
            ssl_context=authority.client_context(),
        )
        echo = json.loads((await fetch(fetcher, f"https://fetch.test:{port}/echo"))["body"])
        assert echo["headers"]["host"] == f"fetch.test:{port}"
        # Same address, another name: the certificate does not cover it.
        message = await refused(fetcher, f"https://other.test:{port}/echo")
        assert message.startswith("Fetch error: Request failed: ")
        assert "certificate" in message.lower() or "hostname" in message.lower()


async def test_an_unknown_host_is_a_request_failure() -> None:
    message = await refused(service(), "http://nowhere.test/")
    assert message == "Fetch error: Request failed: cannot resolve host 'nowhere.test'"


async def test_a_refused_connection_is_a_request_failure(target: str) -> None:
    async with serving() as other:
        closed = other
    message = await refused(service(), f"{closed}/echo")
    assert message.startswith("Fetch error: Request failed: ")


# --- the SSRF suite ----------------------------------------------------------------------------

BLOCKED = [
    ("http://127.0.0.1/", "loopback address"),
    ("http://0.0.0.0/", "unspecified address"),
    ("http://[::1]/", "loopback address"),
    ("http://[::ffff:127.0.0.1]/", "loopback address (IPv4-mapped form of 127.0.0.1)"),
    ("http://2130706433/", "127.0.0.1 is not allowed (loopback address)"),
    ("http://0177.0.0.1/", "127.0.0.1 is not allowed (loopback address)"),
    ("http://0x7f.1/", "127.0.0.1 is not allowed (loopback address)"),
    ("http://10.0.0.1/", "private address"),
    ("http://192.168.1.1:8080/", "private address"),
    ("http://169.254.169.254/latest/meta-data/", "link-local address"),
    ("http://100.64.0.1/", "carrier-grade NAT address"),
    ("http://[fd00::1]/", "unique local address"),
    ("http://[fe80::1%25eth0]/", "link-local address"),
    ("http://localhost:3000/", "host 'localhost' is not allowed"),
    ("http://api.localhost/", "host 'api.localhost' is not allowed"),
    ("http://loopback.test/", "loopback.test resolves to 127.0.0.1, which is not allowed"),
    ("http://mixed.test/", "mixed.test resolves to 10.0.0.1, which is not allowed"),
    ("file:///etc/passwd", "scheme 'file' is not allowed (only http and https)"),
    ("gopher://example.com:70/_x", "scheme 'gopher' is not allowed (only http and https)"),
    ("ftp://example.com/", "scheme 'ftp' is not allowed (only http and https)"),
    ("http://user:pass@example.com/", "credentials in the URL are not allowed"),
]


@pytest.mark.parametrize(("url", "reason"), BLOCKED)
async def test_internal_destinations_are_refused_and_audited(url: str, reason: str) -> None:
    events: list[dict[str, Any]] = []
    names = Names(
        {
            "loopback.test": ["127.0.0.1"],
            "mixed.test": ["93.184.216.34", "10.0.0.1"],
        }
    )
    fetcher = service(allow=(), names=names, events=events)
    message = await refused(fetcher, url, user_id="u1")
    assert message.startswith("Fetch error: Blocked URL: ")
    assert reason in message
    (event,) = events
    assert (event["action"], event["outcome"], event["target"]) == ("fetch.blocked", "denied", url)
    assert event["actor"] == "u1" and event["detail"]["script"] == SCRIPT
    assert reason in event["detail"]["reason"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "Fetch error: Invalid URL: the URL must be a non-empty string"),
        ("example.com/path", "Fetch error: Invalid URL: no scheme"),
        ("http://exa mple.com/", "Fetch error: Invalid URL: whitespace or control characters"),
        ("http:///path", "Fetch error: Invalid URL: no host"),
        ("http://example.com:99999/", "Fetch error: Invalid URL: bad port '99999'"),
        ("http://" + "a" * 9000 + ".com/", "Fetch error: Invalid URL: longer than 8192 characters"),
    ],
)
async def test_urls_that_do_not_parse_are_refused_without_an_audit_entry(
    url: str, message: str
) -> None:
    events: list[dict[str, Any]] = []
    assert await refused(service(events=events), url) == message
    assert events == []


# --- secrets -------------------------------------------------------------------------------


async def secret_service(tmp_path: Path) -> tuple[SecretService, Database]:
    database = await Database.open(f"sqlite:///{tmp_path / 'secrets.db'}")
    box = SecretBox(key_from_text(generate_key_text()))
    return SecretService(database.secrets, box), database


@pytest.fixture
async def secrets(tmp_path: Path) -> AsyncIterator[SecretService]:
    service_, database = await secret_service(tmp_path)
    try:
        yield service_
    finally:
        await database.aclose()


async def echo_with(fetcher: FetchService, url: str, headers: dict[str, str], **kw: Any) -> Any:
    outcome = await fetcher.call(
        [url, {"headers": headers, "body": "{{secret:tok}}"}], script_uri=SCRIPT, **kw
    )
    return outcome, json.loads(json.loads(outcome.text)["body"])


async def test_a_secret_fills_its_placeholder_anywhere_in_a_header_value(
    target: str, secrets: SecretService
) -> None:
    await secrets.set(SecretOwner(SCRIPT), "tok", "s3cr3t-value")
    fetcher = service(secrets=secrets)
    headers = {
        "Authorization": "Bearer {{secret:tok}}",
        "X-Two": "{{ secret: tok }}/{{secret:tok}}",
    }
    outcome, echo = await echo_with(fetcher, f"{target}/echo?q={{{{secret:tok}}}}", headers)
    assert outcome.secrets == ("s3cr3t-value",)
    # The server received the value; what the script gets back has it masked.
    assert echo["headers"]["authorization"] == "Bearer ********"
    assert echo["headers"]["x-two"] == "********/********"
    assert "s3cr3t-value" not in outcome.text
    # Never in the URL or the body.
    assert echo["query"] == {"q": "{{secret:tok}}"}
    assert echo["body"] == "{{secret:tok}}"


async def test_the_users_secret_wins_over_the_scripts(target: str, secrets: SecretService) -> None:
    await secrets.set(SecretOwner(SCRIPT), "tok", "script-value")
    await secrets.set(SecretOwner(SCRIPT, "alice"), "tok", "alice-value")
    fetcher = service(secrets=secrets)
    headers = {"X-Key": "{{secret:tok}}"}
    alice, _ = await echo_with(fetcher, f"{target}/echo", headers, user_id="alice")
    bob, _ = await echo_with(fetcher, f"{target}/echo", headers, user_id="bob")
    anonymous, _ = await echo_with(fetcher, f"{target}/echo", headers)
    assert (alice.secrets, bob.secrets, anonymous.secrets) == (
        ("alice-value",),
        ("script-value",),
        ("script-value",),
    )


async def test_a_missing_secret_fails_naming_it(target: str, secrets: SecretService) -> None:
    fetcher = service(secrets=secrets)
    message = await refused(fetcher, f"{target}/echo", {"headers": {"X": "{{secret:nope}}"}})
    assert message == "Fetch error: Secret not found: nope"
    # Another script's secret is not this script's.
    await secrets.set(SecretOwner("https://example.com/other"), "nope", "v")
    message = await refused(fetcher, f"{target}/echo", {"headers": {"X": "{{secret:nope}}"}})
    assert message == "Fetch error: Secret not found: nope"


async def test_a_secret_with_allowed_hosts_goes_only_to_them(
    target: str, secrets: SecretService
) -> None:
    port = port_of(target)
    await secrets.set(SecretOwner(SCRIPT), "tok", "hosted-value", ("a.test", "*.example.org"))
    fetcher = service(secrets=secrets)
    outcome, _ = await echo_with(fetcher, f"http://a.test:{port}/echo", {"X": "{{secret:tok}}"})
    assert outcome.secrets == ("hosted-value",)
    message = await refused(
        fetcher, f"http://b.test:{port}/echo", {"headers": {"X": "{{secret:tok}}"}}
    )
    assert message == (
        "Fetch error: Secret 'tok' may not be sent to host 'b.test' "
        "(it is allowed for: a.test, *.example.org)"
    )
    assert "hosted-value" not in message


async def test_a_secret_that_cannot_be_a_header_value_is_refused(
    target: str, secrets: SecretService
) -> None:
    await secrets.set(SecretOwner(SCRIPT), "pem", "line one\nline two")
    message = await refused(
        service(secrets=secrets), f"{target}/echo", {"headers": {"X": "{{secret:pem}}"}}
    )
    assert message.startswith("Fetch error: Secret 'pem' cannot be sent in a header")
    assert "line one" not in message


async def test_a_secret_sealed_with_another_key_is_reported_not_sent(
    target: str, tmp_path: Path
) -> None:
    first, database = await secret_service(tmp_path)
    await first.set(SecretOwner(SCRIPT), "tok", "old-key-value")
    rekeyed = SecretService(database.secrets, SecretBox(key_from_text(generate_key_text())))
    try:
        message = await refused(
            service(secrets=rekeyed), f"{target}/echo", {"headers": {"X": "{{secret:tok}}"}}
        )
        assert message == "Fetch error: Secret 'tok' cannot be opened with the configured key"
    finally:
        await database.aclose()


# --- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("{not json", "Invalid fetch options: not valid JSON"),
        ("[1, 2]", "Invalid fetch options: must be a JSON object"),
        ({"headers": ["X", "1"]}, "Invalid fetch options: headers must be an object"),
        ({"headers": {"X": {"a": 1}}}, "Invalid fetch options: header 'X' must be a string"),
        ({"timeout_ms": -5}, "Invalid fetch options: timeout_ms must be greater than 0"),
        ({"timeout_ms": "5"}, "Invalid fetch options: timeout_ms must be a number"),
        ({"method": 5}, "Invalid fetch options: method must be a string"),
        ({"method": "GE T"}, "Fetch error: Invalid method 'GE T'"),
        ({"method": "CONNECT"}, "Fetch error: Invalid method 'CONNECT'"),
        ({"headers": {"Bad Name": "1"}}, "Fetch error: Invalid header name 'Bad Name'"),
        ({"headers": {"X": "a\r\nInjected: 1"}}, "Fetch error: Invalid value for header 'X'"),
    ],
)
async def test_options_that_cannot_be_used_are_refused_before_any_request(
    options: Any, message: str
) -> None:
    names = Names({})
    assert (await refused(service(names=names), "http://a.test/", options)).startswith(message)
    assert names.calls == {}
