"""GraphQL as scripts see it, over real sockets: what ``graphQLRegistry`` answers, which fields
each audience reaches, typed results and errors, fragments that fail only their own script,
the schema swapped whole while queries run, ``executeGraphQL``, subscription resolvers as
customization functions, and scripts written for the original engine deployed unchanged.

The transports themselves (every 4xx, limits, close codes, SSE and ``graphql-transport-ws``
framing) are specified in ``test_graphql_http.py`` and ``test_graphql_ws.py``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from engine.graphql_api import subscription_path
from tests.conftest import Engine, make_config, running_engine
from tests.test_streams_sse import SseReader, sse

FIXTURES = Path(__file__).parent / "fixtures"
URI = "https://example.com/graphql-scripts"
OTHER_URI = "https://example.com/graphql-scripts-other"
NOT_IN_PHASE = (
    "{api}: '{name}' not registered - registration only takes effect during script startup "
    "and init()"
)


async def graphql(engine: Engine, query: str, variables: Any = None) -> dict[str, Any]:
    """``POST /graphql``; the GraphQL response (always a 200 for a query that parses)."""
    response = await engine.client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


async def logged(engine: Engine, uri: str) -> list[str]:
    return [entry["message"] for entry in await engine.logs(uri=uri)]


async def subscribers(engine: Engine, field: str, count: int) -> None:
    """Wait until ``field`` has exactly ``count`` subscribers on the hub."""
    with trio.fail_after(10):
        while engine.runtime.streams.count(subscription_path(field)) != count:  # noqa: ASYNC110
            await trio.sleep(0.01)


@asynccontextmanager
async def graphql_socket(engine: Engine) -> AsyncIterator[WebSocketConnection]:
    """An acknowledged ``graphql-transport-ws`` connection to ``/graphql/ws``."""
    url = "ws" + engine.base_url.removeprefix("http") + "/graphql/ws"
    async with open_websocket_url(
        url, subprotocols=["graphql-transport-ws"], connect_timeout=10, disconnect_timeout=5
    ) as ws:
        await ws.send_message(json.dumps({"type": "connection_init"}))
        assert await next_message(ws) == {"type": "connection_ack"}
        yield ws


async def next_message(ws: WebSocketConnection) -> dict[str, Any]:
    """The next protocol message, the server's keep-alive pings left out."""
    while True:
        message: dict[str, Any] = json.loads(await ws.get_message())
        if message.get("type") != "ping":
            return message


async def subscribe_over_socket(ws: WebSocketConnection, operation_id: str, query: str) -> None:
    payload = {"id": operation_id, "type": "subscribe", "payload": {"query": query}}
    await ws.send_message(json.dumps(payload))


# -- registration -----------------------------------------------------------------------------

REGISTRATIONS = r"""
function r() { return "r"; }
var NAME_100 = "n".repeat(100);
var SDL_100000 = "padded: String #" + "x".repeat(100000 - 16);
function init() {
  const answers = [
    graphQLRegistry.registerQuery("ok", "ok: String", "r", "external"),
    graphQLRegistry.registerMutation("change", "change(n: Int): Int", "r", "engine"),
    graphQLRegistry.registerSubscription("feed", "feed: String", "r", "external"),
    registerGraphQLQuery("legacy", "type Query { legacy: String }", "r"),
    graphQLRegistry.registerQuery(NAME_100, NAME_100 + ": String", "r", "external"),
    graphQLRegistry.registerQuery("padded", SDL_100000, "r", "external"),
    graphQLRegistry.registerQuery("open", "open: String", "r", "public"),
    graphQLRegistry.registerQuery("unsaid", "unsaid: String", "r"),
    graphQLRegistry.registerSubscription("inner", "inner: String", "r", "engine"),
    graphQLRegistry.registerQuery("", "x: String", "r", "external"),
    graphQLRegistry.registerQuery(NAME_100 + "n", "x: String", "r", "external"),
    graphQLRegistry.registerQuery("blank", "", "r", "external"),
    graphQLRegistry.registerQuery("huge", SDL_100000 + " ", "r", "external"),
    graphQLRegistry.registerQuery("proto", "proto(__proto__: String): String", "r", "external"),
    graphQLRegistry.registerQuery("ctor", "ctor: String # constructor", "r", "external"),
  ];
  console.log(JSON.stringify(answers));
}
"""


async def test_registrations_answer_with_the_originals_strings(engine: Engine) -> None:
    report = await engine.deploy(URI, REGISTRATIONS)
    assert report["init"]["success"] is True

    (line,) = await logged(engine, URI)
    name_100 = "n" * 100

    def refused(operation: str, name: str, problem: str) -> str:
        return f"Error registering GraphQL {operation} '{name}': {problem}"

    def visibility(value: str) -> str:
        return f"Invalid visibility: '{value}'. Must be 'internal', 'engine', or 'external'"

    assert json.loads(line) == [
        "GraphQL query 'ok' registered successfully",
        "GraphQL mutation 'change' registered successfully",
        "GraphQL subscription 'feed' registered successfully",
        "GraphQL query 'legacy' registered successfully",
        f"GraphQL query '{name_100}' registered successfully",
        "GraphQL query 'padded' registered successfully",
        refused("query", "open", visibility("public")),
        refused("query", "unsaid", visibility("undefined")),
        refused("subscription", "inner", "subscriptions must be 'external'"),
        refused("query", "", "name must be 1-100 characters"),
        refused("query", name_100 + "n", "name must be 1-100 characters"),
        refused("query", "blank", "SDL must be 1-100000 characters"),
        refused("query", "huge", "SDL must be 1-100000 characters"),
        refused("query", "proto", "SDL must not contain '__proto__' or 'constructor'"),
        refused("query", "ctor", "SDL must not contain '__proto__' or 'constructor'"),
    ]
    sdl = (await engine.client.get("/engine/graphql/schema")).text
    for served in ("ok", "feed", "legacy", name_100, "padded"):
        assert f"  {served}: String" in sdl
    for refused_name in ("open", "unsaid", "inner", "blank", "huge", "proto", "ctor"):
        assert refused_name not in sdl
    assert "change" not in sdl  # an engine mutation is registered, not external


LATE_REGISTRATIONS = r"""
function r() { return "r"; }
function late() {
  return [
    graphQLRegistry.registerQuery("lateQuery", "lateQuery: String", "r", "external"),
    graphQLRegistry.registerMutation("lateMutation", "lateMutation: String", "r", "external"),
    graphQLRegistry.registerSubscription("lateFeed", "lateFeed: String", "r", "external"),
    registerGraphQLQuery("lateLegacy", "lateLegacy: String", "r"),
  ].join("\n");
}
function init() { routeRegistry.registerRoute("/late", "late", "GET"); }
"""


async def test_registering_outside_init_answers_the_registration_phase_message(
    engine: Engine,
) -> None:
    await engine.deploy(URI, LATE_REGISTRATIONS)

    response = await engine.client.get("/late")

    assert response.status_code == 200
    assert response.text.split("\n") == [
        NOT_IN_PHASE.format(api="graphQLRegistry.registerQuery", name="lateQuery"),
        NOT_IN_PHASE.format(api="graphQLRegistry.registerMutation", name="lateMutation"),
        NOT_IN_PHASE.format(api="graphQLRegistry.registerSubscription", name="lateFeed"),
        NOT_IN_PHASE.format(api="graphQLRegistry.registerQuery", name="lateLegacy"),
    ]
    body = await graphql(engine, "{ lateQuery }")
    assert "lateQuery" in body["errors"][0]["message"]


TWICE = r"""
function first() { return 1; }
function second() { return { x: 2 }; }
function init() {
  const answers = [
    graphQLRegistry.registerQuery("dup", "dup: Int", "first", "external"),
    graphQLRegistry.registerQuery(
      "dup", "type Pair { x: Int }\ntype Query { dup: Pair }", "second", "external"
    ),
  ];
  console.log(JSON.stringify(answers));
}
"""


async def test_registering_the_same_name_twice_keeps_the_last_registration(
    engine: Engine,
) -> None:
    await engine.deploy(URI, TWICE)

    assert (
        json.loads((await logged(engine, URI))[0])
        == ["GraphQL query 'dup' registered successfully"] * 2
    )
    assert await graphql(engine, "{ dup { x } }") == {"data": {"dup": {"x": 2}}}


# -- visibility -------------------------------------------------------------------------------

AUDIENCES = r"""
function open() { return "external"; }
function inner() { return "engine"; }
function hidden() { return "internal"; }
function run(context) {
  return graphQLRegistry.executeGraphQL(context.request.query.q);
}
function init() {
  graphQLRegistry.registerQuery("open", "open: String", "open", "external");
  graphQLRegistry.registerQuery("inner", "inner: String", "inner", "engine");
  graphQLRegistry.registerQuery("hidden", "hidden: String", "hidden", "internal");
  routeRegistry.registerRoute("/run", "run", "GET");
}
"""


async def test_external_fields_are_on_graphql_engine_ones_only_in_execute_graphql_internal_nowhere(
    engine: Engine,
) -> None:
    await engine.deploy(URI, AUDIENCES)

    async def executed(query: str) -> dict[str, Any]:
        response = await engine.client.get("/run", params={"q": query})
        assert response.status_code == 200, response.text
        result: dict[str, Any] = json.loads(response.text)
        return result

    for path in ("/graphql", "/graphql/sse"):
        response = await engine.client.get(path, params={"query": "{ open }"})
        assert '{"data":{"open":"external"}}' in response.text
    assert await executed("{ open inner }") == {"data": {"open": "external", "inner": "engine"}}
    for query in ("{ inner }", "{ hidden }"):
        body = await graphql(engine, query)
        assert body.get("data") is None
        assert query.strip("{ }") in body["errors"][0]["message"]
    body = await executed("{ hidden }")
    assert body.get("data") is None and "hidden" in body["errors"][0]["message"]
    sdl = (await engine.client.get("/engine/graphql/schema")).text
    assert "open" in sdl and "inner" not in sdl and "hidden" not in sdl


# -- typed results and errors -----------------------------------------------------------------

TYPED = r"""
function count() { return 7; }
function ratio() { return 2.5; }
function flag() { return true; }
function ident() { return 12; }
function primes() { return [2, 3, 5]; }
function five() { return 5; }
function book() {
  return {
    title: "Dune", pages: 412, rating: 4.5, tags: ["sf", "desert"], genre: "NOVEL",
    author: { name: "Frank Herbert", born: 1920 }
  };
}
function bookText(args) {
  return JSON.stringify({ title: args.id, pages: 1, author: { name: "Anon" }, genre: "POETRY" });
}
function shelf() { return JSON.stringify([{ title: "A", pages: 1 }, { title: "B", pages: 2 }]); }
function add(context) { return context.args.pair.a + context.args.pair.b; }
function same(args) { return args.genre; }
function total(args) { return args.values.reduce(function (s, v) { return s + v; }, 0); }
function strict() { return {}; }
function init() {
  const types = [
    "enum Genre { NOVEL POETRY }",
    "type Author { name: String, born: Int }",
    "type Book { title: String!, pages: Int, rating: Float, tags: [String], genre: Genre,",
    "  author: Author }",
    "input Pair { a: Int!, b: Int! }",
    "type Strict { must: Int! }",
  ].join("\n");
  const q = function (name, field) {
    graphQLRegistry.registerQuery(name, field, name, "external");
  };
  graphQLRegistry.registerQuery("book", types + "\ntype Query { book: Book }", "book", "external");
  q("count", "count: Int");
  q("ratio", "ratio: Float");
  q("flag", "flag: Boolean!");
  q("ident", "ident: ID");
  q("primes", "primes: [Int!]!");
  q("five", "five: String");
  q("bookText", "bookText(id: ID!): Book");
  q("shelf", "shelf: [Book!]!");
  q("add", "add(pair: Pair!): Int");
  q("same", "same(genre: Genre!): Genre");
  q("total", "total(values: [Float!]!): Float");
  q("strict", "strict: Strict");
}
"""


@pytest.fixture
async def typed(engine: Engine) -> Engine:
    await engine.deploy(URI, TYPED)
    return engine


async def test_results_keep_their_declared_types(typed: Engine) -> None:
    body = await graphql(typed, "{ count ratio flag ident primes five }")

    assert body == {
        "data": {
            "count": 7,
            "ratio": 2.5,
            "flag": True,
            "ident": "12",
            "primes": [2, 3, 5],
            "five": "5",  # a number where a String is declared is its text, as on the original
        }
    }
    assert isinstance(body["data"]["count"], int)


async def test_custom_types_enums_and_input_types(typed: Engine) -> None:
    query = "{ book { title pages rating tags genre author { name born } } }"
    assert await graphql(typed, query) == {
        "data": {
            "book": {
                "title": "Dune",
                "pages": 412,
                "rating": 4.5,
                "tags": ["sf", "desert"],
                "genre": "NOVEL",
                "author": {"name": "Frank Herbert", "born": 1920},
            }
        }
    }
    body = await graphql(
        typed,
        "query($p: Pair!, $g: Genre!) { add(pair: $p) literal: add(pair: {a: 1, b: 1}) "
        "same(genre: $g) total(values: [0.5, 1.25]) }",
        {"p": {"a": 2, "b": 3}, "g": "POETRY"},
    )
    assert body == {"data": {"add": 5, "literal": 2, "same": "POETRY", "total": 1.75}}


async def test_json_text_from_a_resolver_is_parsed_for_object_and_list_types(
    typed: Engine,
) -> None:
    """Scripts for the original return ``JSON.stringify(obj)``; the declared type decides."""
    body = await graphql(
        typed, '{ bookText(id: "x1") { title author { name } genre } shelf { title pages } }'
    )
    assert body == {
        "data": {
            "bookText": {"title": "x1", "author": {"name": "Anon"}, "genre": "POETRY"},
            "shelf": [{"title": "A", "pages": 1}, {"title": "B", "pages": 2}],
        }
    }


async def test_a_null_in_a_non_null_field_is_an_error_that_nulls_its_parent(typed: Engine) -> None:
    body = await graphql(typed, "{ strict { must } count }")

    assert body["data"] == {"strict": None, "count": 7}
    (error,) = body["errors"]
    assert error["path"] == ["strict", "must"]


FAILING = r"""
function boom() { throw new Error("the shelf collapsed"); }
function spin() { while (true) {} }
function fine() { return "fine"; }
function init() {
  graphQLRegistry.registerQuery("boom", "boom: String", "boom", "external");
  graphQLRegistry.registerQuery("spin", "spin: String", "spin", "external");
  graphQLRegistry.registerQuery("fine", "fine: String", "fine", "external");
}
"""


async def test_a_throwing_resolver_is_an_error_with_path_locations_and_its_message(
    engine: Engine,
) -> None:
    """A fix of the original, which answered the field with an ``"Error: ..."`` string."""
    await engine.deploy(URI, FAILING)

    body = await graphql(engine, "{ fine\n  boom }")

    assert body["data"] == {"fine": "fine", "boom": None}
    (error,) = body["errors"]
    assert "the shelf collapsed" in error["message"]
    assert error["path"] == ["boom"]
    assert error["locations"] == [{"line": 2, "column": 3}]
    assert error["extensions"]["code"] == "SCRIPT_EXECUTION_FAILED"


async def test_a_resolver_that_never_returns_is_stopped_and_the_other_fields_resolve(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path / "data", **{"sandbox.handler_timeout_ms": 500})
    async with running_engine(config) as engine:
        await engine.deploy(URI, FAILING)
        with trio.fail_after(20):
            body = await graphql(engine, "{ spin fine }")
            assert body["data"] == {"spin": None, "fine": "fine"}
            (error,) = body["errors"]
            assert error["path"] == ["spin"]
            assert error["extensions"]["code"] == "SCRIPT_TIMEOUT"
            assert "500ms" in error["message"]
            # The worker was replaced; the engine serves on.
            assert await graphql(engine, "{ fine }") == {"data": {"fine": "fine"}}


# -- fragments that do not build, conflicts ---------------------------------------------------


def serving(field: str, value: str, extra: str = "") -> str:
    """A script serving ``field`` with ``value``, plus the registrations in ``extra``."""
    return (
        f'function {field}() {{ return "{value}"; }}\n'
        f"function init() {{\n"
        f'  graphQLRegistry.registerQuery("{field}", "{field}: String", "{field}", "external");\n'
        f"  {extra}\n"
        f"}}\n"
    )


async def init_error(engine: Engine, uri: str) -> str:
    response = await engine.client.get("/engine/script_init_status", params={"uri": uri})
    status = response.json()["status"]
    assert status["initialized"] is False
    error: str = status["initError"]
    return error


async def test_a_fragment_that_does_not_build_fails_only_its_own_scripts_init(
    engine: Engine,
) -> None:
    await engine.deploy(URI, serving("a", "from A"))
    await engine.deploy(OTHER_URI, serving("b", "B, first version"))
    broken = 'graphQLRegistry.registerQuery("broken", "broken: NoSuchType", "b", "external");'

    report = await engine.deploy(OTHER_URI, serving("b", "B, second version", broken))

    assert report["init"]["success"] is False
    error = await init_error(engine, OTHER_URI)
    assert report["init"]["error"] == error
    for part in (OTHER_URI, "'broken'", "NoSuchType"):
        assert part in error
    # A serves on; B keeps the version that built.
    assert await graphql(engine, "{ a b }") == {"data": {"a": "from A", "b": "B, first version"}}


async def test_a_field_two_scripts_register_stays_with_the_first(engine: Engine) -> None:
    await engine.deploy(URI, serving("shared", "from A"))

    report = await engine.deploy(OTHER_URI, serving("shared", "from B"))

    assert report["init"]["success"] is False
    error = await init_error(engine, OTHER_URI)
    for part in (OTHER_URI, "'shared'", URI):
        assert part in error
    assert await graphql(engine, "{ shared }") == {"data": {"shared": "from A"}}


# -- the schema is swapped whole --------------------------------------------------------------


def generation(tag: str, second: str) -> str:
    """A script serving ``a`` and ``second``, both answering ``tag``."""
    return serving(
        "a", tag, f'graphQLRegistry.registerQuery("{second}", "{second}: String", "a", "external");'
    )


async def test_queries_during_redeploys_each_see_one_whole_generation(engine: Engine) -> None:
    """v1 serves ``a`` and ``b``, v2 ``a`` and ``c``: while a loop swaps them, no query misses
    ``a`` or sees a schema with neither or both of ``b`` and ``c``."""
    v1, v2 = generation("v1", "b"), generation("v2", "c")
    await engine.deploy(URI, v1)
    query = '{ a __type(name: "Query") { fields { name } } }'
    results: list[tuple[int, Any]] = []
    deployed = trio.Event()

    async def query_until_deployed() -> None:
        while not deployed.is_set():
            response = await engine.client.post("/graphql", json={"query": query})
            results.append((response.status_code, response.json()))

    async def redeploy() -> None:
        for round_ in range(20):
            await engine.deploy(URI, v2 if round_ % 2 == 0 else v1)
        deployed.set()

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(query_until_deployed)
            nursery.start_soon(redeploy)

    generations: Counter[frozenset[str]] = Counter()
    for status, body in results:
        assert status == 200, body
        assert "errors" not in body, body
        assert body["data"]["a"] in ("v1", "v2")
        generations[frozenset(field["name"] for field in body["data"]["__type"]["fields"])] += 1
    assert set(generations) == {frozenset({"a", "b"}), frozenset({"a", "c"})}, generations


# -- executeGraphQL ---------------------------------------------------------------------------

EXECUTE = r"""
function echo(args) { return args.n; }
function recurse() { return graphQLRegistry.executeGraphQL("{ recurse }"); }
function run(context) {
  const q = context.request.query;
  const variables = q.as === "object" ? JSON.parse(q.v) : q.v;
  const result = graphQLRegistry.executeGraphQL(q.q, variables);
  return typeof result + " " + result;
}
function init() {
  graphQLRegistry.registerQuery("echo", "echo(n: Int!): Int", "echo", "engine");
  graphQLRegistry.registerQuery("recurse", "recurse: String", "recurse", "engine");
  routeRegistry.registerRoute("/run", "run", "GET");
}
"""


async def execute(engine: Engine, query: str, **params: str) -> dict[str, Any]:
    """Run ``executeGraphQL`` in a script route; the result, checked to be JSON text."""
    response = await engine.client.get("/run", params={"q": query, **params})
    assert response.status_code == 200, response.text
    kind, _, text = response.text.partition(" ")
    assert kind == "string"
    result: dict[str, Any] = json.loads(text)
    return result


async def test_execute_graphql_answers_json_text_with_variables_as_text_or_object(
    engine: Engine,
) -> None:
    await engine.deploy(URI, EXECUTE)
    query = "query($n: Int!) { echo(n: $n) }"

    assert await execute(engine, query, v='{"n": 5}') == {"data": {"echo": 5}}
    assert await execute(engine, query, v='{"n": 6}', **{"as": "object"}) == {"data": {"echo": 6}}
    assert await execute(engine, query, v="[1]") == {
        "errors": [{"message": "the variables must be a JSON object"}]
    }
    refused = await execute(engine, query, v="{")
    assert refused["errors"][0]["message"].startswith("the variables are not valid JSON")
    body = await execute(engine, "query($n: Int!) { echo(n: $n) }", v="{}")
    assert body.get("data") is None and "$n" in body["errors"][0]["message"]


async def test_a_resolver_calling_execute_graphql_recursively_ends_with_a_clear_error(
    engine: Engine,
) -> None:
    await engine.deploy(URI, EXECUTE)

    with trio.fail_after(30):
        result = await execute(engine, "{ recurse }")

    levels = 0
    while "data" in result:
        levels += 1
        result = json.loads(result["data"]["recurse"])
    assert levels == 3
    assert result == {"errors": [{"message": "executeGraphQL may nest at most 3 levels deep"}]}
    assert await execute(engine, "query { echo(n: 1) }") == {"data": {"echo": 1}}


# -- subscriptions ----------------------------------------------------------------------------

ROOMS = r"""
function joinRoom(context) {
  return { room: context.args.room, seat: "seat-" + context.args.room };
}
function send(context) {
  const q = context.request.query;
  if (q.filter === undefined) return graphQLRegistry.sendSubscriptionMessage("room", q.msg);
  return graphQLRegistry.sendSubscriptionMessageFiltered("room", q.msg, q.filter, q.mode);
}
function init() {
  graphQLRegistry.registerSubscription(
    "room",
    "type Said { text: String, n: Int }\ntype Subscription { room(room: String!): Said }",
    "joinRoom",
    "external"
  );
  routeRegistry.registerRoute("/send", "send", "GET");
}
"""


async def say(engine: Engine, text: str, filter: Any = None, mode: str = "subset") -> str:
    params = {"msg": json.dumps({"text": text, "n": len(text)})}
    if filter is not None:
        params.update(filter=json.dumps(filter), mode=mode)
    response = await engine.client.get("/send", params=params)
    assert response.status_code == 200, response.text
    return response.text


def sent_to(count: int) -> str:
    return f"GraphQL subscription message sent to 'room' ({count} connections) successfully"


async def test_the_subscription_resolver_gives_each_subscriber_its_metadata(
    engine: Engine,
) -> None:
    """The resolver's object (not the arguments alone) is the subscriber's metadata, and a
    filtered message reaches only the subscribers it matches."""
    await engine.deploy(URI, ROOMS)
    with trio.fail_after(20):
        async with (
            sse(
                engine, '/graphql/sse?query=subscription { room(room: "blue") { text n } }'
            ) as blue,
            graphql_socket(engine) as red,
        ):
            await subscribe_over_socket(red, "r", 'subscription { room(room: "red") { text } }')
            await subscribers(engine, "room", 2)

            # With the arguments as metadata ({room}) this would reach blue; the resolver
            # added a seat, so the metadata is not a subset of this filter.
            assert await say(engine, "nobody", {"room": "blue"}) == sent_to(0)
            assert await say(engine, "to blue", {"room": "blue", "seat": "seat-blue"}) == sent_to(1)
            assert await say(engine, "to red", {"room": "red"}, "overlap") == sent_to(1)
            assert await say(engine, "everyone") == sent_to(2)

            blue_saw = [json.loads((await blue.message()).data) for _ in range(2)]
            assert blue_saw == [
                {"data": {"room": {"text": "to blue", "n": 7}}},
                {"data": {"room": {"text": "everyone", "n": 8}}},
            ]
            red_saw = [await next_message(red) for _ in range(2)]
            assert [message["payload"] for message in red_saw] == [
                {"data": {"room": {"text": "to red"}}},
                {"data": {"room": {"text": "everyone"}}},
            ]


async def test_a_subscription_resolver_that_throws_refuses_the_subscription_with_its_reason(
    engine: Engine,
) -> None:
    script = ROOMS.replace("return { room", 'throw new Error("room closed"); return { room')
    await engine.deploy(URI, script)

    response = await engine.client.get(
        "/graphql/sse", params={"query": 'subscription { room(room: "x") { text } }'}
    )

    assert response.status_code == 400
    message = response.json()["errors"][0]["message"]
    assert message.startswith("Stream customization function failed: ")
    assert "room closed" in message


async def test_deleting_a_script_ends_its_subscriptions(engine: Engine) -> None:
    await engine.deploy(URI, ROOMS)
    with trio.fail_after(20):
        async with (
            sse(engine, '/graphql/sse?query=subscription { room(room: "a") { n } }') as events,
            graphql_socket(engine) as ws,
        ):
            await subscribe_over_socket(ws, "s", 'subscription { room(room: "a") { n } }')
            await subscribers(engine, "room", 2)

            response = await engine.client.post("/engine/delete_script", data={"uri": URI})
            assert response.status_code == 200

            assert [event.event for event in await events.until_end()] == ["complete"]
            assert await next_message(ws) == {"id": "s", "type": "complete"}
            await subscribers(engine, "room", 0)


async def test_a_redeploy_keeps_subscriptions_to_fields_it_still_serves_and_ends_the_others(
    engine: Engine,
) -> None:
    await engine.deploy(URI, ROOMS)
    with trio.fail_after(20):
        async with sse(engine, '/graphql/sse?query=subscription { room(room: "a") { n } }') as kept:
            await subscribers(engine, "room", 1)
            await engine.deploy(URI, ROOMS + "\n// a new version, the same fields\n")
            assert await say(engine, "still here") == sent_to(1)
            assert json.loads((await kept.message()).data) == {"data": {"room": {"n": 10}}}

            await engine.deploy(URI, serving("quiet", "no subscriptions any more"))
            assert [event.event for event in await kept.until_end()] == ["complete"]


# -- scripts written for the original engine --------------------------------------------------


async def test_the_v09_library_script_serves_its_object_types_unchanged(engine: Engine) -> None:
    report = await engine.deploy(URI, (FIXTURES / "graphql_library_v09.js").read_text())
    assert report["init"]["success"] is True

    books = await graphql(engine, "{ books { isbn title pages } }")
    assert [book["pages"] for book in books["data"]["books"]] == [304, 300, 288]
    detail = await graphql(
        engine,
        'query { book(isbn: "978-0547928227") { title year classic words } '
        'missing: book(isbn: "nope") { title } }',
    )
    assert detail == {
        "data": {
            "book": {
                "title": "The Hobbit",
                "year": 1937,
                "classic": True,
                "words": ["The", "Hobbit"],
            },
            "missing": None,
        }
    }
    review = await graphql(
        engine,
        'mutation { reviewBook(isbn: "978-0060850524", text: "Unsettling.") '
        "{ message chars success } }",
    )
    assert review == {
        "data": {
            "reviewBook": {
                "message": "Review saved for 978-0060850524",
                "chars": 11,
                "success": True,
            }
        }
    }
    shelf = await engine.client.get("/library/shelf")
    assert shelf.json() == {"count": 3, "path": "/library/shelf"}


async def test_the_v09_notices_script_feeds_live_subscriptions_unchanged(engine: Engine) -> None:
    """Its subscription resolver returns a greeting, not metadata; its mutation and its HTTP
    route broadcast with the flat ``sendSubscriptionMessage``."""
    report = await engine.deploy(URI, (FIXTURES / "graphql_notices_v09.js").read_text())
    assert report["init"]["success"] is True

    def notice_of(result: dict[str, Any]) -> str:
        # The field is a String: the notice arrives as the JSON text the script sent.
        text: str = json.loads(result["data"]["notices"])["text"]
        return text

    with trio.fail_after(20):
        async with (
            engine.client.stream(
                "POST", "/graphql/sse", json={"query": "subscription { notices }"}
            ) as response,
            graphql_socket(engine) as ws,
        ):
            assert response.status_code == 200
            events = SseReader(response, response.aiter_text())
            await subscribe_over_socket(ws, "n", "subscription { notices }")
            await subscribers(engine, "notices", 2)

            posted = await graphql(engine, 'mutation { postNotice(text: "Lunch at noon") }')
            assert posted == {"data": {"postNotice": "Notice posted: Lunch at noon"}}
            trigger = await engine.client.post(
                "/notices/post", content="Fire drill", headers={"content-type": "text/plain"}
            )
            assert trigger.json() == {"success": True, "message": "Notice broadcasted"}

            over_sse = [json.loads((await events.message()).data) for _ in range(2)]
            over_ws = [(await next_message(ws))["payload"] for _ in range(2)]
            for results in (over_sse, over_ws):
                assert [notice_of(result) for result in results] == ["Lunch at noon", "Fire drill"]
    assert "Client subscribed to notices" in await logged(engine, URI)
