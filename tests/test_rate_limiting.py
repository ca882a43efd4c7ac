"""Rate limits over real sockets: 429 with ``Retry-After`` per surface and client, the audit
entry of a trip, administrators never limited, the client address behind trusted proxies, and
the default limits both leaving normal use alone and stopping a flood."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from tests.conftest import Engine, make_config, running_engine

TOKEN = secrets.token_urlsafe(36)
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
SCRIPT = """
function hello() { return "hi"; }
function init() {
  routeRegistry.registerRoute("/hello", "hello", "GET");
  routeRegistry.registerStreamRoute("/feed");
}
"""


def limited(tmp_path: Path, **rules: Any) -> Any:
    overrides = {f"rate_limits.{surface}": rule for surface, rule in rules.items()}
    return make_config(tmp_path / "data", **{"security.admin_token": TOKEN, **overrides})


async def audit_entries(engine: Engine, **params: str) -> list[dict[str, Any]]:
    response = await engine.client.get("/engine/audit", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/json"
    # Whole seconds, rounded up: a retry after that long finds a token.
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-request-id"].startswith("req_")


async def test_a_solution_route_answers_429_with_retry_after_once_the_bucket_is_empty(
    tmp_path: Path,
) -> None:
    async with running_engine(limited(tmp_path, solutions="3/1m")) as engine:
        await engine.deploy("https://t/hello", SCRIPT)
        answers = [await engine.client.get("/hello") for _ in range(4)]

    assert [r.status_code for r in answers[:3]] == [200, 200, 200]
    refused = answers[3]
    assert_rate_limited(refused)
    # One token every 20 s, none left.
    assert refused.headers["retry-after"] == "20"
    error = refused.json()["error"]
    assert error["code"] == "RATE_LIMITED"
    assert error["path"] == "/hello" and error["request_id"] == refused.headers["x-request-id"]


async def test_the_engine_api_has_its_own_bucket_and_its_own_error_shape(tmp_path: Path) -> None:
    async with running_engine(limited(tmp_path, engine="2/1m", solutions="100/1s")) as engine:
        engine_answers = [await engine.client.get("/engine/scripts") for _ in range(3)]
        solution = await engine.client.get("/missing")

    assert [r.status_code for r in engine_answers] == [200, 200, 429]
    refused = engine_answers[2]
    assert_rate_limited(refused)
    body = refused.json()
    assert body["error"].startswith("Too many requests") and body["code"] == "RATE_LIMITED"
    assert body["timestamp"].endswith("Z")
    # Another surface, another bucket.
    assert solution.status_code == 404


async def test_graphql_is_limited_on_its_own(tmp_path: Path) -> None:
    async with running_engine(limited(tmp_path, graphql="1/1m")) as engine:
        first = await engine.client.post("/graphql", json={"query": "{ __typename }"})
        second = await engine.client.post("/graphql", json={"query": "{ __typename }"})
        scripts = await engine.client.get("/engine/scripts")

    assert first.status_code == 200
    assert_rate_limited(second)
    assert second.json()["error"]["code"] == "RATE_LIMITED"
    assert scripts.status_code == 200


async def test_the_admin_token_is_never_limited(tmp_path: Path) -> None:
    async with running_engine(limited(tmp_path, engine="1/1m")) as engine:
        answers = [await engine.client.get("/engine/scripts", headers=ADMIN) for _ in range(5)]
        anonymous = [await engine.client.get("/engine/scripts") for _ in range(2)]

    assert [r.status_code for r in answers] == [200] * 5
    assert [r.status_code for r in anonymous] == [200, 429]


async def test_a_trip_is_audited_once_however_often_it_repeats(tmp_path: Path) -> None:
    async with running_engine(limited(tmp_path, solutions="1/1m")) as engine:
        statuses = [(await engine.client.get("/nothing-here")).status_code for _ in range(5)]
        trips = await audit_entries(engine, action="rate_limit.trip")

    assert statuses == [404, 429, 429, 429, 429]
    [trip] = trips
    assert trip["outcome"] == "denied" and trip["target"] == "solutions"
    assert trip["clientIp"] == "127.0.0.1" and trip["actor"] == "anonymous"
    assert trip["detail"]["path"] == "/nothing-here" and trip["detail"]["retryAfterS"] > 0


async def test_stream_connects_count_against_the_streams_surface(tmp_path: Path) -> None:
    config = limited(tmp_path, streams="1/1m", solutions="100/1s")
    async with running_engine(config) as engine:
        await engine.deploy("https://t/hello", SCRIPT)
        async with engine.client.stream("GET", "/feed") as first:
            assert first.status_code == 200
        second = await engine.client.get("/feed")
        # Plain requests are another surface.
        hello = await engine.client.get("/hello")
        url = "ws" + engine.base_url.removeprefix("http") + "/feed"
        with trio.fail_after(15), pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(url, connect_timeout=10):
                pass

    assert_rate_limited(second)
    assert hello.status_code == 200
    assert rejected.value.status_code == 429
    assert json.loads(rejected.value.body or b"{}")["error"]["code"] == "RATE_LIMITED"


async def test_limits_can_be_turned_off(tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "data", **{"rate_limits.enabled": False, "rate_limits.solutions": "1/1m"}
    )
    async with running_engine(config) as engine:
        statuses = {(await engine.client.get("/nothing-here")).status_code for _ in range(5)}

    assert statuses == {404}


# -- the client address -----------------------------------------------------------------------


def forwarded(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket(
    tmp_path: Path,
) -> None:
    config = make_config(
        tmp_path / "data",
        **{
            "security.admin_token": TOKEN,
            "security.trusted_proxies": "127.0.0.1",
            "rate_limits.solutions": "1/1m",
        },
    )
    async with running_engine(config) as engine:
        client = engine.client
        first_a = await client.get("/x", headers=forwarded("203.0.113.7"))
        second_a = await client.get("/x", headers=forwarded("203.0.113.7"))
        first_b = await client.get("/x", headers=forwarded("198.51.100.1, 203.0.113.8"))
        trips = await audit_entries(engine, action="rate_limit.trip")

    assert (first_a.status_code, second_a.status_code, first_b.status_code) == (404, 429, 404)
    # The address the proxy saw is the client; what the client wrote to the left is not.
    assert [trip["clientIp"] for trip in trips] == ["203.0.113.7"]


async def test_without_trusted_proxies_a_forged_forwarded_for_changes_nothing(
    tmp_path: Path,
) -> None:
    async with running_engine(limited(tmp_path, solutions="1/1m")) as engine:
        client = engine.client
        statuses = [
            (await client.get("/x", headers=forwarded(f"203.0.113.{n}"))).status_code
            for n in range(3)
        ]
        trips = await audit_entries(engine, action="rate_limit.trip")

    assert statuses == [404, 429, 429]
    assert [trip["clientIp"] for trip in trips] == ["127.0.0.1"]


# -- the defaults -----------------------------------------------------------------------------


async def test_the_default_limits_allow_a_burst_of_300_then_refuse(tmp_path: Path) -> None:
    # 300 per 10 s: a burst of 300, then 30 a second.  Count how many requests pass before
    # the first refusal; the bucket refills while they are sent, by at most 30 per second.
    async with running_engine(make_config(tmp_path / "data")) as engine:
        started = time.monotonic()
        allowed = 0
        while allowed < 2000:
            response = await engine.client.get("/nothing-here")
            if response.status_code == 429:
                break
            assert response.status_code == 404
            allowed += 1
        elapsed = time.monotonic() - started

    assert response.status_code == 429
    assert 300 <= allowed <= 300 + 30 * elapsed + 1
