"""GraphQL over HTTP: ``/graphql`` (GET, POST, the query page), ``/graphql/sse`` and
``/engine/graphql/schema``.

First the reading of requests without a server (and by property: any body is a request or a
4xx, never an exception), then a real engine with a script registering a query, an object type,
a mutation and a subscription: typed results, errors, every 4xx path, the limits, and
subscriptions delivered as server-sent events.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cli import SseMessage
from engine.config import load_config
from handlers.graphql_request import (
    BadGraphQLRequest,
    GraphQLParams,
    params_from_body,
    params_from_query_string,
    wants_page,
)
from security import generate_key_text
from tests.conftest import Engine, EngineProcess, make_config, running_engine
from tests.test_streams_sse import SseReader, sse

URI = "https://example.com/graphql-test"

TICKS_SCRIPT = r"""
function helloResolver(context) {
  return "Hello, " + ((context.args && context.args.name) || "world");
}
function answerResolver(context) { return 42; }
function userResolver(context) {
  return { id: context.args.id, name: "Ada", age: 36 };
}
function boomResolver(context) { throw new Error("kaboom"); }
function hiddenResolver(context) { return "engine only"; }
function addTickResolver(context) {
  graphQLRegistry.sendSubscriptionMessage("ticks", JSON.stringify({ n: context.args.n }));
  return { n: context.args.n };
}
function ticksCustomizer(context) { return {}; }
function tick(context) {
  const n = Number(context.request.query.n || "0");
  return graphQLRegistry.sendSubscriptionMessage("ticks", JSON.stringify({ n: n }));
}
function init() {
  graphQLRegistry.registerQuery(
    "hello", "hello(name: String): String", "helloResolver", "external"
  );
  graphQLRegistry.registerQuery("answer", "answer: Int", "answerResolver", "external");
  graphQLRegistry.registerQuery(
    "user",
    "type User { id: ID, name: String, age: Int }\ntype Query { user(id: ID!): User }",
    "userResolver",
    "external"
  );
  graphQLRegistry.registerQuery("boom", "boom: String", "boomResolver", "external");
  graphQLRegistry.registerQuery("hidden", "hidden: String", "hiddenResolver", "engine");
  graphQLRegistry.registerMutation(
    "addTick", "addTick(n: Int!): Tick", "addTickResolver", "external"
  );
  graphQLRegistry.registerSubscription(
    "ticks",
    "type Tick { n: Int }\ntype Subscription { ticks: Tick }",
    "ticksCustomizer",
    "external"
  );
  routeRegistry.registerRoute("/tick", "tick", "POST");
}
"""

TICKS = "subscription { ticks { n } }"
_CONNECTIONS = re.compile(r"\((\d+) connections?\)")


async def deliver(engine: Engine | httpx.AsyncClient, n: int) -> int:
    """Broadcast ``{"n": n}`` on ``ticks`` from the script; how many subscribers it reached."""
    client = engine.client if isinstance(engine, Engine) else engine
    response = await client.post("/tick", params={"n": str(n)})
    assert response.status_code == 200, response.text
    found = _CONNECTIONS.search(response.text)
    assert found, response.text
    return int(found.group(1))


async def until_subscribers(
    engine: Engine | httpx.AsyncClient, count: int, *, within: float = 10
) -> None:
    """Probe (``n = -1``) until exactly ``count`` subscribers receive ``ticks``."""
    with trio.fail_after(within):
        while await deliver(engine, -1) != count:  # noqa: ASYNC110
            await trio.sleep(0.02)


def ticks_of(results: list[dict[str, Any]]) -> list[int]:
    """The ``n`` of every delivered tick, probes left out."""
    numbers = [result["data"]["ticks"]["n"] for result in results]
    return [n for n in numbers if n != -1]


@pytest.fixture
async def graphql(engine: Engine) -> Engine:
    await engine.deploy(URI, TICKS_SCRIPT)
    return engine


async def post(engine: Engine, body: Any, **kwargs: Any) -> Any:
    return await engine.client.post("/graphql", json=body, **kwargs)


def assert_refused(response: Any, status: int, code: str, message: str | None = None) -> None:
    """A 4xx in the engine's envelope with the GraphQL ``errors`` beside it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    assert body["errors"] and all("message" in error for error in body["errors"])
    if message is not None:
        assert body["error"]["message"] == message
        assert body["errors"][0]["message"] == message


# -- reading a request, without a server ------------------------------------------------------


def test_query_string_parameters_decode_variables_as_json() -> None:
    raw = b"query=query+Q(%24n%3A+Int)+%7B+x+%7D&variables=%7B%22n%22%3A+1%7D&operationName=Q"
    assert params_from_query_string(raw) == GraphQLParams("query Q($n: Int) { x }", {"n": 1}, "Q")
    assert params_from_query_string(b"query=%7Bx%7D&variables=&operationName=") == GraphQLParams(
        "{x}", None, None
    )


@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        (b"", "MISSING_QUERY", "Missing query parameter"),
        (b"query=", "MISSING_QUERY", "Missing query parameter"),
        (b"query=%7Bx%7D&variables=%7B", "INVALID_JSON", None),
        (b"query=%7Bx%7D&variables=%5B1%5D", "BAD_REQUEST", "'variables' must be a JSON object"),
    ],
)
def test_bad_query_strings_name_the_problem(raw: bytes, code: str, message: str | None) -> None:
    with pytest.raises(BadGraphQLRequest) as info:
        params_from_query_string(raw)
    assert (info.value.status, info.value.code) == (400, code)
    if message is not None:
        assert info.value.message == message


def test_json_and_graphql_bodies() -> None:
    body = json.dumps({"query": "{x}", "variables": {"a": [1]}, "operationName": None}).encode()
    assert params_from_body("application/json; charset=utf-8", body) == GraphQLParams(
        "{x}", {"a": [1]}, None
    )
    # Variables sent as JSON text inside the JSON body are accepted.
    body = json.dumps({"query": "{x}", "variables": '{"a": 1}'}).encode()
    assert params_from_body("application/json", body).variables == {"a": 1}
    assert params_from_body("application/graphql+json", b'{"query": "{x}"}').query == "{x}"
    assert params_from_body(
        "application/graphql", b"{ x }", b"variables=%7B%22a%22%3A1%7D&operationName=Q"
    ) == GraphQLParams("{ x }", {"a": 1}, "Q")


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code", "message"),
    [
        ("application/json", b"", 400, "MISSING_QUERY", "Missing query parameter"),
        ("application/json", b"{}", 400, "MISSING_QUERY", "Missing query parameter"),
        ("application/json", b'{"query": ""}', 400, "MISSING_QUERY", None),
        ("application/json", b"{nope", 400, "INVALID_JSON", None),
        ("application/json", b"\xff\xfe{", 400, "INVALID_JSON", None),
        ("application/json", b"[" * 100_000, 400, "INVALID_JSON", None),
        ("application/json", b'"{x}"', 400, "BAD_REQUEST", None),
        ("application/json", b'[{"query": "{x}"}]', 400, "BAD_REQUEST", None),
        ("application/json", b'{"query": 5}', 400, "BAD_REQUEST", "'query' must be a string"),
        ("application/json", b'{"query": "{x}", "variables": 1}', 400, "BAD_REQUEST", None),
        ("application/json", b'{"query": "{x}", "operationName": 1}', 400, "BAD_REQUEST", None),
        ("application/graphql", b"\xff", 400, "BAD_REQUEST", "The query is not UTF-8"),
        ("application/graphql", b"", 400, "MISSING_QUERY", None),
        ("text/plain", b'{"query": "{x}"}', 415, "UNSUPPORTED_MEDIA_TYPE", None),
        ("", b'{"query": "{x}"}', 415, "UNSUPPORTED_MEDIA_TYPE", None),
        (
            "application/x-www-form-urlencoded",
            b"query=%7Bx%7D",
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            None,
        ),
    ],
)
def test_bad_bodies_name_the_problem(
    content_type: str, body: bytes, status: int, code: str, message: str | None
) -> None:
    with pytest.raises(BadGraphQLRequest) as info:
        params_from_body(content_type, body)
    assert (info.value.status, info.value.code) == (status, code)
    if message is not None:
        assert info.value.message == message


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_BODIES = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda value: json.dumps(value).encode(), _JSON_VALUES),
    st.builds(
        lambda value: json.dumps(value).encode(),
        st.fixed_dictionaries(
            {},
            optional={
                "query": _JSON_VALUES,
                "variables": _JSON_VALUES,
                "operationName": _JSON_VALUES,
            },
        ),
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    content_type=st.sampled_from(
        ["application/json", "application/graphql", "text/plain", "", "application/ld+json"]
    ),
    body=_BODIES,
    raw_query=st.binary(max_size=60),
)
def test_any_body_is_a_request_or_a_4xx_never_an_exception(
    content_type: str, body: bytes, raw_query: bytes
) -> None:
    try:
        params = params_from_body(content_type, body, raw_query)
    except BadGraphQLRequest as exc:
        assert exc.status in (400, 415) and exc.message
    else:
        assert isinstance(params.query, str) and params.query
        assert params.variables is None or isinstance(params.variables, dict)
        assert params.operation_name is None or isinstance(params.operation_name, str)


@settings(max_examples=300, deadline=None)
@given(raw_query=st.binary(max_size=200))
def test_any_query_string_is_a_request_or_a_400(raw_query: bytes) -> None:
    try:
        params_from_query_string(raw_query)
    except BadGraphQLRequest as exc:
        assert exc.status == 400


@pytest.mark.parametrize(
    ("accept", "raw_query", "page"),
    [
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", b"", True),
        ("text/html", b"", True),
        ("text/html;q=0", b"", False),
        ("*/*", b"", False),
        ("application/json", b"", False),
        ("", b"", False),
        ("text/html", b"query=%7Bx%7D", False),
    ],
)
def test_only_a_browser_without_a_query_gets_the_page(
    accept: str, raw_query: bytes, page: bool
) -> None:
    assert wants_page(accept, raw_query) is page


# -- /graphql over the wire -------------------------------------------------------------------


async def test_a_registered_query_answers_on_get_and_post_with_its_arguments(
    graphql: Engine,
) -> None:
    """§8 item 19: an ``external`` query is on /graphql, GET and POST; the resolver gets
    ``context.args``."""
    query = '{ hello(name: "Ada") }'
    response = await graphql.client.get("/graphql", params={"query": query})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"data": {"hello": "Hello, Ada"}}

    response = await post(
        graphql,
        {"query": "query Hi($who: String) { hello(name: $who) }", "variables": {"who": "Bo"}},
    )
    assert response.json() == {"data": {"hello": "Hello, Bo"}}

    response = await graphql.client.post(
        "/graphql",
        content="query Hi($who: String) { hello(name: $who) }",
        params={"variables": '{"who": "Cy"}', "operationName": "Hi"},
        headers={"content-type": "application/graphql"},
    )
    assert response.json() == {"data": {"hello": "Hello, Cy"}}


async def test_results_follow_the_declared_types(graphql: Engine) -> None:
    response = await post(graphql, {"query": '{ answer user(id: "7") { id name age } }'})
    assert response.json() == {
        "data": {"answer": 42, "user": {"id": "7", "name": "Ada", "age": 36}}
    }


async def test_a_throwing_resolver_is_a_graphql_error_with_its_path(graphql: Engine) -> None:
    response = await post(graphql, {"query": "{ boom hello }"})
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"boom": None, "hello": "Hello, world"}
    (error,) = body["errors"]
    assert error["path"] == ["boom"]
    assert "kaboom" in error["message"]
    assert error["locations"]


async def test_engine_operations_are_not_on_graphql(graphql: Engine) -> None:
    response = await post(graphql, {"query": "{ hidden }"})
    assert response.status_code == 200
    body = response.json()
    assert body.get("data") is None
    assert "hidden" in body["errors"][0]["message"]


async def test_a_mutation_runs_on_post(graphql: Engine) -> None:
    response = await post(graphql, {"query": "mutation { addTick(n: 3) { n } }"})
    assert response.json() == {"data": {"addTick": {"n": 3}}}


async def test_a_mutation_over_get_is_405_and_does_not_run(graphql: Engine) -> None:
    """Any page can make a browser send a GET; mutations need a POST."""
    with trio.fail_after(20):
        async with sse(graphql, f"/graphql/sse?query={TICKS}") as reader:
            await until_subscribers(graphql, 1)
            for path in ("/graphql", "/graphql/sse"):
                response = await graphql.client.get(
                    path, params={"query": "mutation { addTick(n: 77) { n } }"}
                )
                assert_refused(
                    response, 405, "METHOD_NOT_ALLOWED", "Mutations are sent with POST, not GET"
                )
                assert response.headers["allow"] == "POST"
            await deliver(graphql, 1)
            results: list[dict[str, Any]] = []
            while not ticks_of(results):
                results.append(json.loads((await reader.message()).data))
    assert ticks_of(results) == [1]


async def test_validation_errors_are_results_and_syntax_errors_a_400(graphql: Engine) -> None:
    response = await post(graphql, {"query": "{ nosuchfield }"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.get("data") is None
    assert "nosuchfield" in body["errors"][0]["message"]
    # A query that does not parse is refused before execution, naming the place.
    response = await post(graphql, {"query": "{ hello("})
    assert_refused(response, 400, "QUERY_REJECTED")
    assert "line 1" in response.json()["error"]["message"]


async def test_malformed_requests_are_4xx_naming_the_problem(graphql: Engine) -> None:
    """A fix over the original's 200 ``{"error": ...}``: same messages, real statuses."""
    client = graphql.client
    assert_refused(await client.get("/graphql"), 400, "MISSING_QUERY", "Missing query parameter")
    assert_refused(await post(graphql, {}), 400, "MISSING_QUERY", "Missing query parameter")
    response = await client.post(
        "/graphql", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert_refused(response, 400, "INVALID_JSON")
    assert response.json()["error"]["message"].startswith("Invalid JSON: ")
    assert_refused(
        await post(graphql, {"query": "{ hello }", "variables": [1]}),
        400,
        "BAD_REQUEST",
        "'variables' must be a JSON object",
    )
    response = await client.get("/graphql", params={"query": "{ hello }", "variables": "[1]"})
    assert_refused(response, 400, "BAD_REQUEST", "'variables' must be a JSON object")
    assert_refused(await post(graphql, [{"query": "{ hello }"}]), 400, "BAD_REQUEST")
    response = await client.post("/graphql", content=b'{"query": "{ hello }"}')
    assert_refused(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    response = await client.post("/graphql", data={"query": "{ hello }"})
    assert_refused(response, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_a_body_over_a_mebibyte_is_413(graphql: Engine) -> None:
    body = json.dumps({"query": "{ hello }", "pad": "x" * (1024 * 1024)})
    response = await graphql.client.post(
        "/graphql", content=body, headers={"content-type": "application/json"}
    )
    assert_refused(response, 413, "PAYLOAD_TOO_LARGE")

    async def chunks() -> Any:  # no content-length: the limit holds while reading
        for _ in range(20):
            yield b"x" * 65536

    response = await graphql.client.post(
        "/graphql", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_refused(response, 413, "PAYLOAD_TOO_LARGE")
    # The engine is none the worse.
    assert (await post(graphql, {"query": "{ answer }"})).json() == {"data": {"answer": 42}}


async def test_queries_over_the_limits_are_400_with_the_reason(graphql: Engine) -> None:
    long_query = "{ hello }" + " " * 100_000
    response = await post(graphql, {"query": long_query})
    assert_refused(response, 400, "QUERY_REJECTED")
    assert "100000" in response.text.replace(",", "").replace("_", "")

    deep = "{ user(id: 1) " + "{ name " * 16 + "}" * 17
    assert_refused(await post(graphql, {"query": deep}), 400, "QUERY_REJECTED")

    variables = {"pad": "x" * 50_001}
    response = await post(graphql, {"query": "{ hello }", "variables": variables})
    assert_refused(response, 400, "QUERY_REJECTED")


async def test_a_subscription_on_graphql_points_to_sse_and_ws(graphql: Engine) -> None:
    response = await post(graphql, {"query": TICKS})
    assert_refused(response, 400, "SUBSCRIPTION_NOT_SUPPORTED")
    message = response.json()["error"]["message"]
    assert "/graphql/sse" in message and "/graphql/ws" in message


async def test_a_browser_gets_the_query_page_and_its_script(graphql: Engine) -> None:
    browser = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    response = await graphql.client.get("/graphql", headers=browser)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = response.headers["content-security-policy"]
    assert (
        "script-src 'self'" in policy
        and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    )
    page = response.text
    assert '<script src="/graphql/graphiql.js"' in page
    assert re.search(r"<script(?![^>]*\bsrc=)", page) is None  # no inline script
    assert 'id="query"' in page and 'id="run"' in page and 'id="output"' in page

    script = await graphql.client.get("/graphql/graphiql.js")
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert 'fetch("/graphql"' in script.text and "/graphql/sse" in script.text

    # A query in the URL gets JSON even from a browser.
    response = await graphql.client.get("/graphql", params={"query": "{ answer }"}, headers=browser)
    assert response.json() == {"data": {"answer": 42}}


async def test_the_schema_is_served_as_sdl(graphql: Engine) -> None:
    response = await graphql.client.get("/engine/graphql/schema")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    sdl = response.text
    for name in ("hello", "answer", "User", "addTick", "ticks"):
        assert name in sdl
    assert "hidden" not in sdl  # not an external operation


async def test_the_schema_needs_the_admin_token_in_production(tmp_path: Path) -> None:
    token = "t" * 40
    overrides = {
        "server.data_dir": str(tmp_path / "data"),
        "server.port": 0,
        "sandbox.pool_size": 1,
        "sandbox.warm_spares": 0,
        "profile": "production",
    }
    env = {
        "AIWEBENGINE_SECURITY__ADMIN_TOKEN": token,
        "AIWEBENGINE_SECURITY__SECRET_ENCRYPTION_KEY": generate_key_text(),
    }
    config = load_config(None, env=env, overrides=overrides)
    async with running_engine(config) as engine:
        response = await engine.client.get("/engine/graphql/schema")
        assert response.status_code == 401
        response = await engine.client.get(
            "/engine/graphql/schema", headers={"authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200
        # /graphql itself is not under the admin token.
        response = await engine.client.post("/graphql", json={"query": "{ __typename }"})
        assert response.json() == {"data": {"__typename": "Query"}}


# -- /graphql/sse -----------------------------------------------------------------------------


async def events_until_complete(reader: SseReader) -> list[SseMessage]:
    events: list[SseMessage] = []
    while True:
        event = await reader.message()
        events.append(event)
        if event.event == "complete":
            return events


async def test_sse_delivers_each_subscription_message_as_an_unnamed_event(
    graphql: Engine,
) -> None:
    """§8 item 20 over SSE: messages arrive as ``{"data": {"ticks": <parsed JSON>}}``."""
    with trio.fail_after(20):
        async with sse(graphql, f"/graphql/sse?query={TICKS}") as reader:
            response = reader.response
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["access-control-allow-origin"] == "*"
            await until_subscribers(graphql, 1)
            for n in (1, 2, 3):
                assert await deliver(graphql, n) == 1
            results: list[dict[str, Any]] = []
            while ticks_of(results) != [1, 2, 3]:
                event = await reader.message()
                assert event.event == "message"
                results.append(json.loads(event.data))
        await until_subscribers(graphql, 0)
    assert results[-1] == {"data": {"ticks": {"n": 3}}}


async def test_sse_subscription_by_post_and_a_mutation_feeding_it(graphql: Engine) -> None:
    with trio.fail_after(20):
        async with graphql.client.stream(
            "POST", "/graphql/sse", json={"query": "subscription Live { ticks { n } }"}
        ) as response:
            assert response.status_code == 200
            reader = SseReader(response, response.aiter_text())
            await until_subscribers(graphql, 1)
            mutation = await post(graphql, {"query": "mutation { addTick(n: 9) { n } }"})
            assert mutation.json() == {"data": {"addTick": {"n": 9}}}
            results: list[dict[str, Any]] = []
            while ticks_of(results) != [9]:
                results.append(json.loads((await reader.message()).data))


async def test_sse_runs_a_query_as_one_event_then_complete(graphql: Engine) -> None:
    with trio.fail_after(10):
        async with sse(graphql, "/graphql/sse?query={ answer }") as reader:
            events = await events_until_complete(reader)
            assert await reader.item() is None  # and the response ends
    assert [(e.event, e.data) for e in events] == [
        ("message", '{"data":{"answer":42}}'),
        ("complete", ""),
    ]


async def test_sse_keeps_an_idle_subscription_alive_with_comments(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", **{"streams.heartbeat_s": 0.2})
    async with running_engine(config) as engine:
        await engine.deploy(URI, TICKS_SCRIPT)
        with trio.fail_after(10):
            async with sse(engine, f"/graphql/sse?query={TICKS}") as reader:
                for _ in range(2):
                    item = await reader.item()
                    assert item is not None and not isinstance(item, SseMessage)
                assert ": keep-alive" in reader.raw


async def test_sse_refusals_are_400_before_the_stream_starts(graphql: Engine) -> None:
    client = graphql.client
    assert_refused(await client.get("/graphql/sse"), 400, "MISSING_QUERY")
    response = await client.post(
        "/graphql/sse", content=b"{", headers={"content-type": "application/json"}
    )
    assert_refused(response, 400, "INVALID_JSON")
    response = await client.post("/graphql/sse", json={"query": "{ hello }" + " " * 100_000})
    assert_refused(response, 400, "QUERY_REJECTED")
    deep = "subscription { ticks " + "{ n " * 16 + "}" * 17
    assert_refused(await client.get("/graphql/sse", params={"query": deep}), 400, "QUERY_REJECTED")
    response = await client.put("/graphql/sse", content=b"")
    assert_refused(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "GET, POST"
    body = json.dumps({"query": TICKS, "pad": "x" * (1024 * 1024)})
    response = await client.post(
        "/graphql/sse", content=body, headers={"content-type": "application/json"}
    )
    assert_refused(response, 413, "PAYLOAD_TOO_LARGE")


async def test_sse_refuses_an_invalid_subscription_with_its_graphql_errors(
    graphql: Engine,
) -> None:
    response = await graphql.client.get("/graphql/sse", params={"query": "subscription { nosuch }"})
    assert_refused(response, 400, "GRAPHQL_REQUEST_ERROR")
    assert "nosuch" in response.json()["errors"][0]["message"]


async def test_an_sse_client_that_leaves_is_unsubscribed(graphql: Engine) -> None:
    with trio.fail_after(20):
        for _ in range(3):
            async with sse(graphql, f"/graphql/sse?query={TICKS}"):
                await until_subscribers(graphql, 1)
            await until_subscribers(graphql, 0)
        assert (await post(graphql, {"query": "{ answer }"})).json() == {"data": {"answer": 42}}


async def test_malformed_bodies_over_the_wire_are_json_4xx(graphql: Engine) -> None:
    bodies = [
        b"",
        b"null",
        b"[]",
        b"{",
        b"\x00\xff",
        b'{"query": []}',
        b'{"query": "{x}", "variables": "[" }',
    ]
    for path in ("/graphql", "/graphql/sse"):
        for body in bodies:
            response = await graphql.client.post(
                path, content=body, headers={"content-type": "application/json"}
            )
            assert 400 <= response.status_code < 500, (path, body, response.text)
            assert response.json()["errors"], (path, body)


async def test_sigterm_completes_sse_subscriptions_promptly(
    tmp_path: Path, engine_process: type[EngineProcess]
) -> None:
    # A grace period far longer than the test may take: the streams must end on their own.
    server = engine_process(tmp_path / "data", env={"AIWEBENGINE_SERVER__SHUTDOWN_GRACE_S": "60"})
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        response = await client.post(
            "/engine/upsert_script", data={"uri": URI, "content": TICKS_SCRIPT}
        )
        assert response.status_code == 200, response.text
        with trio.fail_after(30):
            async with client.stream("GET", f"/graphql/sse?query={TICKS}") as stream:
                assert stream.status_code == 200
                await until_subscribers(client, 1)
                started = time.monotonic()
                server.signal(signal.SIGTERM)
                body = b"".join([chunk async for chunk in stream.aiter_raw()])
    exit_code = await trio.to_thread.run_sync(server.wait, 20)
    assert body.endswith(b"event: complete\ndata: \n\n")
    assert exit_code == 0
    assert time.monotonic() - started < 15
