"""The GraphQL core (engine.graphql): fragments, merging, typed execution, subscriptions, limits.

Resolvers here are fake Trio coroutines; no sandbox and no HTTP are involved.
"""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import engine.graphql
from engine.graphql import (
    BuiltSchema,
    FieldRegistration,
    FragmentError,
    GraphQLRuntime,
    Operation,
    QueryRejected,
    ResolveError,
    ResolveInfo,
    Visibility,
    build_schema,
    check_fragment,
    check_query,
    graphql_runtime,
    operation_of,
)
from engine.graphql._engine import registry_size
from engine.graphql._limits import MAX_NESTING, nesting_problem
from engine.graphql._merge import SchemaMerger
from engine.graphql._sdl import analyze_fragment

Handler = Callable[[dict[str, Any] | None, ResolveInfo], Any]


def reg(
    name: str,
    sdl: str,
    *,
    script: str = "https://example.com/a",
    operation: Operation = "query",
    visibility: Visibility = "external",
    resolver: str | None = "resolveIt",
) -> FieldRegistration:
    return FieldRegistration(script, operation, name, sdl, resolver, visibility)


class FakeScripts:
    """A resolve callback answering from a table of handlers, recording every call."""

    def __init__(self, **handlers: Any) -> None:
        self.handlers = handlers
        self.calls: list[tuple[str, dict[str, Any] | None, ResolveInfo]] = []

    async def __call__(
        self, registration: FieldRegistration, args: dict[str, Any] | None, info: ResolveInfo
    ) -> Any:
        self.calls.append((registration.name, args, info))
        handler = self.handlers[registration.name]
        if callable(handler):
            value = handler(args, info)
            if isinstance(value, Awaitable):
                value = await value
            return value
        return handler


@pytest.fixture
async def runtime() -> AsyncIterator[GraphQLRuntime]:
    async with graphql_runtime() as opened:
        yield opened


async def build(
    runtime: GraphQLRuntime,
    registrations: Sequence[FieldRegistration],
    scripts: FakeScripts | None = None,
    **kwargs: Any,
) -> BuiltSchema:
    kwargs.setdefault("audience", "external")
    return await build_schema(registrations, scripts or FakeScripts(), runtime=runtime, **kwargs)


def problems(schema: BuiltSchema) -> dict[str, str]:
    return {error.field: error.problem for error in schema.rejected}


# -- the public surface ------------------------------------------------------------------------


def test_the_package_exports_exactly_its_documented_surface() -> None:
    assert sorted(engine.graphql.__all__) == [
        "Audience",
        "BuiltSchema",
        "FieldRegistration",
        "FragmentError",
        "GraphQLRuntime",
        "Operation",
        "QueryRejected",
        "ResolveError",
        "ResolveFn",
        "ResolveInfo",
        "SubscriptionSource",
        "Visibility",
        "build_schema",
        "check_fragment",
        "check_query",
        "graphql_runtime",
        "operation_of",
    ]
    assert issubclass(QueryRejected, ValueError)


# -- typed results -----------------------------------------------------------------------------

NOTES_SDL = """
"A note" type Note { id: ID! text: String! stars: Int rating: Float pinned: Boolean
  color: Color tags: [String!]! author: Person }
type Person { name: String age: Int }
enum Color { RED GREEN }
input NoteInput { text: String! stars: Int = 3 color: Color = GREEN tags: [String!] }
type Query { notes(first: Int = 10): [Note!]! }
"""


async def test_results_follow_the_declared_types(runtime: GraphQLRuntime) -> None:
    note = {
        "id": 7,
        "text": "hello",
        "stars": 5,
        "rating": 4.5,
        "pinned": True,
        "color": "RED",
        "tags": ["a", "b"],
        "author": {"name": "Ann", "age": 41},
    }
    scripts = FakeScripts(notes=[note], count=3, ratio=0.25, ok=False)
    schema = await build(
        runtime,
        [
            reg("notes", NOTES_SDL),
            reg("count", "count: Int!"),
            reg("ratio", "ratio: Float"),
            reg("ok", "ok: Boolean!"),
        ],
        scripts,
    )
    assert schema.rejected == ()
    result = await schema.execute(
        "{ count ratio ok notes { id text stars rating pinned color tags author { name age } } }"
    )
    assert result == {
        "data": {
            "count": 3,
            "ratio": 0.25,
            "ok": False,
            "notes": [
                {
                    "id": "7",
                    "text": "hello",
                    "stars": 5,
                    "rating": 4.5,
                    "pinned": True,
                    "color": "RED",
                    "tags": ["a", "b"],
                    "author": {"name": "Ann", "age": 41},
                }
            ],
        }
    }
    assert type(result["data"]["count"]) is int


async def test_resolvers_receive_coerced_arguments_info_and_context(
    runtime: GraphQLRuntime,
) -> None:
    received: list[Any] = []

    def add_note(args: dict[str, Any] | None, info: ResolveInfo) -> dict[str, Any]:
        received.append((args, info))
        assert args is not None
        return {"id": "n1", "text": args["input"]["text"], "stars": args["input"]["stars"]}

    scripts = FakeScripts(addNote=add_note, notes=[])
    schema = await build(
        runtime,
        [
            reg("notes", NOTES_SDL),
            reg(
                "addNote",
                "type Mutation { addNote(input: NoteInput!): Note! }",
                operation="mutation",
            ),
        ],
        scripts,
    )
    result = await schema.execute(
        "mutation Add($text: String!) { added: addNote(input: {text: $text}) { id text stars } }",
        {"text": "hi"},
        "Add",
        context={"user": "u1"},
    )
    assert result == {"data": {"added": {"id": "n1", "text": "hi", "stars": 3}}}
    [(args, info)] = received
    assert args == {"input": {"text": "hi", "stars": 3, "color": "GREEN"}}
    assert info.field == "addNote"
    assert info.operation == "mutation"
    assert info.path == ("added",)
    assert info.context == {"user": "u1"}
    await schema.execute("{ notes { id } }")
    assert scripts.calls[-1][1] == {"first": 10}  # defaults applied


async def test_query_fields_resolve_concurrently(runtime: GraphQLRuntime) -> None:
    a_started, b_started = trio.Event(), trio.Event()

    async def wait_for(mine: trio.Event, other: trio.Event) -> str:
        mine.set()
        await other.wait()  # serial resolution would wait here forever
        return "done"

    scripts = FakeScripts(
        a=lambda args, info: wait_for(a_started, b_started),
        b=lambda args, info: wait_for(b_started, a_started),
    )
    schema = await build(runtime, [reg("a", "a: String"), reg("b", "b: String")], scripts)
    with trio.fail_after(2):
        assert await schema.execute("{ a b }") == {"data": {"a": "done", "b": "done"}}


async def test_mutation_fields_run_one_after_another(runtime: GraphQLRuntime) -> None:
    log: list[str] = []

    def step(name: str) -> Handler:
        async def run(args: dict[str, Any] | None, info: ResolveInfo) -> str:
            log.append(f"start {name}")
            await trio.sleep(0.01)
            log.append(f"end {name}")
            return name

        return run

    scripts = FakeScripts(a=step("a"), b=step("b"))
    schema = await build(
        runtime,
        [reg(n, f"{n}: String", operation="mutation") for n in ("a", "b")],
        scripts,
    )
    assert await schema.execute("mutation { a b }") == {"data": {"a": "a", "b": "b"}}
    assert log == ["start a", "end a", "start b", "end b"]


async def test_interfaces_and_unions_resolve_by_typename(runtime: GraphQLRuntime) -> None:
    sdl = """
    interface Named { name: String }
    type Cat implements Named { name: String lives: Int }
    type Dog implements Named { name: String good: Boolean }
    union Pet = Cat | Dog
    type Query { pets: [Pet] named: [Named] }
    """
    pets = [{"__typename": "Cat", "name": "Tom", "lives": 9}, {"__typename": "Dog", "good": True}]
    schema = await build(
        runtime, [reg("pets", sdl), reg("named", sdl)], FakeScripts(pets=pets, named=pets)
    )
    result = await schema.execute(
        "{ pets { ... on Cat { name lives } ... on Dog { good } } named { name __typename } }"
    )
    assert result == {
        "data": {
            "pets": [{"name": "Tom", "lives": 9}, {"good": True}],
            "named": [{"name": "Tom", "__typename": "Cat"}, {"name": None, "__typename": "Dog"}],
        }
    }


async def test_custom_scalars_pass_json_through_and_dates_stay_text(
    runtime: GraphQLRuntime,
) -> None:
    scripts = FakeScripts(
        echo=lambda args, info: {"got": args["value"]}, when=lambda args, info: args["at"]
    )
    schema = await build(
        runtime,
        [
            reg("echo", "scalar JSON type Query { echo(value: JSON): JSON }"),
            reg("when", "when(at: DateTime!): DateTime"),
        ],
        scripts,
    )
    result = await schema.execute('{ echo(value: {a: [1, 2.5, "x", null, true]}) }')
    assert result == {"data": {"echo": {"got": {"a": [1, 2.5, "x", None, True]}}}}
    assert await schema.execute('{ when(at: "2024-05-01T10:00:00") }') == {
        "data": {"when": "2024-05-01T10:00:00"}
    }
    bad = await schema.execute('{ when(at: "yesterday") }')
    assert bad["data"] is None and bad["errors"]


# -- compatibility with scripts that return JSON text -----------------------------------------


async def test_json_text_is_parsed_where_objects_and_lists_are_declared(
    runtime: GraphQLRuntime,
) -> None:
    scripts = FakeScripts(
        notes=json.dumps([{"id": "1", "text": "a", "tags": [], "author": None}]),
        person=json.dumps({"name": "Ann", "age": 3}),
        names='["x", "y"]',
        raw='{"not": "parsed"}',
        obj={"a": [1, 2]},
        count="5",
        flag="true",
        whole=2.0,
    )
    schema = await build(
        runtime,
        [
            reg("notes", NOTES_SDL),
            reg("person", "type Person { name: String age: Int } type Query { person: Person }"),
            reg("names", "names: [String]"),
            reg("raw", "raw: String"),
            reg("obj", "obj: String"),
            reg("count", "count: Int"),
            reg("flag", "flag: Boolean"),
            reg("whole", "whole: String"),
        ],
        scripts,
    )
    result = await schema.execute(
        "{ notes { id text tags author { name } } person { name age }"
        " names raw obj count flag whole }"
    )
    assert result == {
        "data": {
            "notes": [{"id": "1", "text": "a", "tags": [], "author": None}],
            "person": {"name": "Ann", "age": 3},
            "names": ["x", "y"],
            "raw": '{"not": "parsed"}',  # a String stays the text it is
            "obj": '{"a":[1,2]}',  # as JSON.stringify would have made it
            "count": 5,
            "flag": True,
            "whole": "2",
        }
    }


async def test_text_that_is_not_json_for_an_object_is_a_clear_error(
    runtime: GraphQLRuntime,
) -> None:
    schema = await build(
        runtime,
        [reg("person", "type P { name: String } type Query { person: P }")],
        FakeScripts(person="Ann"),
    )
    result = await schema.execute("{ person { name } }")
    assert result["data"] == {"person": None}
    [error] = result["errors"]
    assert error["message"] == "the resolver returned text that is not JSON where P was expected"
    assert error["path"] == ["person"]


# -- errors ------------------------------------------------------------------------------------


async def test_a_failing_resolver_becomes_an_error_with_path_and_locations(
    runtime: GraphQLRuntime,
) -> None:
    def fail(args: dict[str, Any] | None, info: ResolveInfo) -> None:
        raise ResolveError("Error: no such user", code="SCRIPT_ERROR")

    schema = await build(
        runtime, [reg("user", "user: String"), reg("ok", "ok: Int")], FakeScripts(user=fail, ok=1)
    )
    result = await schema.execute("{\n  ok\n  user\n}")
    assert result == {
        "data": {"ok": 1, "user": None},
        "errors": [
            {
                "message": "Error: no such user",
                "path": ["user"],
                "locations": [{"line": 3, "column": 3}],
                "extensions": {"code": "SCRIPT_ERROR"},
            }
        ],
    }


async def test_an_error_in_a_non_null_field_nulls_its_parent(runtime: GraphQLRuntime) -> None:
    def fail(args: dict[str, Any] | None, info: ResolveInfo) -> None:
        raise ResolveError("down")

    schema = await build(runtime, [reg("must", "must: Int!")], FakeScripts(must=fail))
    result = await schema.execute("{ must }")
    assert result["data"] is None
    assert [e["message"] for e in result["errors"]] == ["down"]
    assert "extensions" not in result["errors"][0]


async def test_unexpected_exceptions_do_not_leak_their_details(runtime: GraphQLRuntime) -> None:
    def bug(args: dict[str, Any] | None, info: ResolveInfo) -> None:
        raise KeyError("database password")

    schema = await build(runtime, [reg("bug", "bug: String")], FakeScripts(bug=bug))
    result = await schema.execute("{ bug }")
    assert result["errors"][0]["message"] == "internal error while resolving 'bug'"
    assert "password" not in json.dumps(result)


async def test_invalid_queries_answer_with_errors_not_exceptions(runtime: GraphQLRuntime) -> None:
    schema = await build(runtime, [reg("a", "a: Int")], FakeScripts(a=1))
    syntax = await schema.execute("{ a ")
    assert syntax["data"] is None and "syntax error" in syntax["errors"][0]["message"]
    unknown = await schema.execute("{ b }")
    assert unknown["errors"][0]["message"] == "Field b doesn't exist on Query"
    bomb = await schema.execute("{" * 20_000 + "}" * 20_000)  # crashes the C parser unguarded
    assert (
        bomb["errors"][0]["message"] == f"the query is nested more than {MAX_NESTING} levels deep"
    )


# -- visibility --------------------------------------------------------------------------------


async def test_audiences_see_external_or_external_and_engine_fields(
    runtime: GraphQLRuntime,
) -> None:
    registrations = [
        reg("pub", "pub: Int", visibility="external"),
        reg("eng", "eng: Int", visibility="engine"),
        reg("hidden", "hidden: Int", visibility="internal"),
    ]
    scripts = FakeScripts(pub=1, eng=2, hidden=3)
    external = await build(runtime, registrations, scripts, audience="external")
    engine_side = await build(runtime, registrations, scripts, audience="engine")
    assert [r.name for r in external.accepted] == ["pub"]
    assert [r.name for r in engine_side.accepted] == ["pub", "eng"]
    assert await external.execute("{ pub }") == {"data": {"pub": 1}}
    assert "eng" in (await external.execute("{ eng }"))["errors"][0]["message"]
    assert await engine_side.execute("{ pub eng }") == {"data": {"pub": 1, "eng": 2}}
    for schema in (external, engine_side):
        assert "hidden" not in schema.sdl
        assert "hidden" in (await schema.execute("{ hidden }"))["errors"][0]["message"]


async def test_conflicts_are_judged_the_same_for_every_audience(runtime: GraphQLRuntime) -> None:
    registrations = [
        reg("a", "type T { x: Int } type Query { a: T }", script="s1", visibility="internal"),
        reg("b", "type T { x: String } type Query { b: T }", script="s2"),
    ]
    for audience in ("external", "engine"):
        schema = await build(runtime, registrations, audience=audience)
        assert problems(schema) == {"b": "'T.x' is already declared as `x: Int` by script 's1'"}


# -- merging and conflicts ---------------------------------------------------------------------


async def test_the_first_registration_of_a_field_keeps_it(runtime: GraphQLRuntime) -> None:
    schema = await build(
        runtime,
        [reg("hello", "hello: String", script="s1"), reg("hello", "hello: Int", script="s2")],
        FakeScripts(hello="from s1"),
    )
    [error] = schema.rejected
    assert (error.script_uri, error.field) == ("s2", "hello")
    assert error.problem == "the query field 'hello' is already registered by script 's1'"
    assert str(error) == f"GraphQL field 'hello' of script 's2': {error.problem}"
    assert error.registration == reg("hello", "hello: Int", script="s2")
    assert await schema.execute("{ hello }") == {"data": {"hello": "from s1"}}


async def test_a_script_registering_a_field_again_keeps_its_last_registration(
    runtime: GraphQLRuntime,
) -> None:
    schema = await build(
        runtime,
        [reg("n", "n: String"), reg("other", "other: Int"), reg("n", "n: Int")],
        FakeScripts(n=4, other=1),
    )
    assert schema.rejected == ()
    assert await schema.execute("{ n }") == {"data": {"n": 4}}


async def test_same_named_fields_of_different_operations_do_not_conflict(
    runtime: GraphQLRuntime,
) -> None:
    schema = await build(
        runtime,
        [reg("x", "x: Int", script="s1"), reg("x", "x: Int", script="s2", operation="mutation")],
        FakeScripts(x=1),
    )
    assert schema.rejected == ()
    assert await schema.execute("mutation { x }") == {"data": {"x": 1}}


async def test_types_declared_by_several_registrations_merge_when_compatible(
    runtime: GraphQLRuntime,
) -> None:
    first = "type User { id: ID! name: String } type Query { me: User }"
    same = "type User { id: ID!, name: String } # a comment\ntype Query { them: [User] }"
    more = '"Users" type User { id: ID! email: String } type Query { byEmail: User }'
    schema = await build(
        runtime,
        [reg("me", first, script="s1"), reg("them", same, script="s2"), reg("byEmail", more)],
        FakeScripts(me={"id": 1, "name": "a", "email": "e"}),
    )
    assert schema.rejected == ()
    assert '"Users"\ntype User {\n  id: ID!\n  name: String\n  email: String\n}' in schema.sdl
    assert await schema.execute("{ me { name email } }") == {
        "data": {"me": {"name": "a", "email": "e"}}
    }


@pytest.mark.parametrize(
    ("second", "problem"),
    [
        (
            "type User { id: Int } type Query { b: User }",
            "'User.id' is already declared as `id: ID!` by script 's1'",
        ),
        (
            "input User { id: ID! } type Query { b(u: User): Int }",
            "'User' is already declared as an object type by script 's1'",
        ),
        (
            "type User { id(full: Boolean): ID! } type Query { b: User }",
            "'User.id' is already declared as `id: ID!` by script 's1'",
        ),
    ],
)
async def test_an_incompatible_type_rejects_the_later_registration(
    runtime: GraphQLRuntime, second: str, problem: str
) -> None:
    schema = await build(
        runtime,
        [
            reg("a", "type User { id: ID! } type Query { a: User }", script="s1"),
            reg("b", second, script="s2"),
        ],
    )
    assert problems(schema) == {"b": problem}
    assert [r.name for r in schema.accepted] == ["a"]


async def test_a_fragment_tartiflette_refuses_is_isolated_and_the_rest_is_served(
    runtime: GraphQLRuntime,
) -> None:
    registrations = [reg(f"f{i}", f"f{i}: Int", script=f"script{i}") for i in range(6)]
    registrations.insert(3, reg("broken", "broken: Missing", script="bad"))
    registrations.append(
        reg("alsoBroken", "type W { w: Nope } type Query { alsoBroken: W }", script="worse")
    )
    scripts = FakeScripts(**{f"f{i}": i for i in range(6)})
    schema = await build(runtime, registrations, scripts)
    assert problems(schema) == {
        "broken": "the schema does not build: Field < Query.broken > is Invalid: "
        "the given Type < Missing > does not exist!",
        "alsoBroken": "the schema does not build: Field < W.w > is Invalid: "
        "the given Type < Nope > does not exist!",
    }
    result = await schema.execute("{ " + " ".join(f"f{i}" for i in range(6)) + " }")
    assert result == {"data": {f"f{i}": i for i in range(6)}}


async def test_a_field_may_use_a_type_a_later_registration_of_its_script_declares(
    runtime: GraphQLRuntime,
) -> None:
    registrations = [
        reg("scripts", "type Query { scripts: [ScriptInfo!]! }"),
        reg("broken", "broken: Missing"),
        reg("script", "type ScriptInfo { uri: String! } type Query { script: ScriptInfo }"),
    ]
    schema = await build(runtime, registrations, FakeScripts(scripts=[{"uri": "u"}]))
    assert set(problems(schema)) == {"broken"}
    assert await schema.execute("{ scripts { uri } }") == {"data": {"scripts": [{"uri": "u"}]}}


async def test_an_empty_schema_has_a_placeholder_query(runtime: GraphQLRuntime) -> None:
    empty = await build(runtime, [])
    assert empty.sdl == "type Query {\n  placeholder: String\n}\n"
    assert await empty.execute("{ placeholder }") == {
        "data": {"placeholder": "No queries registered yet"}
    }
    only_mutation = await build(
        runtime, [reg("m", "m: Int", operation="mutation")], FakeScripts(m=1)
    )
    assert "placeholder: String" in only_mutation.sdl
    with_query = await build(runtime, [reg("q", "q: Int")])
    assert "placeholder" not in with_query.sdl


# -- checking fragments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registration", "problem"),
    [
        (
            reg("hello", "hello(name: String: String"),
            "syntax error at line 1, column 19: unexpected ':'",
        ),
        (
            reg("hello", "type Query {\n  hello: String\n  other:\n}"),
            "syntax error at line 4, column 1: unexpected '}'",
        ),
        (reg("hello", "hello(name: String"), "syntax error: the field is incomplete"),
        (
            reg("hello", "hello: String } type X { a: Int"),
            "a bare field cannot close its own block",
        ),
        (
            reg("hello", "type Query { other: String }"),
            "the SDL does not define the field 'hello' in a 'Query' block",
        ),
        (
            reg("hello", "type Mutation { hello: String }"),
            "the SDL does not define the field 'hello' in a 'Query' block",
        ),
        (reg("hello", "   "), "the SDL is empty"),
        (reg("hello", "x" * 100_001), "the SDL is longer than 100,000 characters (100,001)"),
        (reg("", "a: Int"), "the field name is empty"),
        (reg("h" * 101, "a: Int"), "the field name is longer than 100 characters"),
        (
            reg("9lives", "a: Int"),
            "the field name '9lives' is not a GraphQL name"
            " (ASCII letters, digits, _; no digit first)",
        ),
        (
            reg("__schema", "a: Int"),
            "the field name '__schema' starts with '__', which GraphQL reserves for introspection",
        ),
        (reg("hello", "hello: Int", resolver=None), "a query needs a resolver function"),
        (
            reg("tick", "tick: Int", operation="subscription", visibility="engine"),
            "subscriptions must be 'external', not 'engine'",
        ),
        (
            reg("hello", "schema { query: Query } type Query { hello: Int }"),
            "a fragment cannot contain a schema definition",
        ),
        (
            reg("hello", "directive @x on FIELD type Query { hello: Int }"),
            "a fragment cannot define directives (@x)",
        ),
        (
            reg("hello", "scalar DateTime type Query { hello: Int }"),
            "'DateTime' is a built-in scalar and cannot be redefined",
        ),
        (
            reg("hello", "input Query { hello: Int }"),
            "'Query' is a root type and must be an object type",
        ),
        (
            reg("hello", "type A { a: Int } extend type A { a: String } type Query { hello: A }"),
            "'A.a' is already declared as `a: Int` earlier in the same SDL",
        ),
        (
            reg("hello", "type A { a: Int a: Int } type Query { hello: A }"),
            "'A.a' is declared twice",
        ),
        (reg("hello", "enum E { true } type Query { hello: E }"), "'true' cannot be an enum value"),
        (
            reg("hello", "type Query { hello(a: Float = 1e999): Int }"),
            "a number in the SDL is out of range",
        ),
    ],
)
def test_check_fragment_names_script_field_and_problem(
    registration: FieldRegistration, problem: str
) -> None:
    with pytest.raises(FragmentError) as caught:
        check_fragment(registration)
    assert caught.value.problem == problem
    assert caught.value.script_uri == registration.script_uri
    assert caught.value.field == registration.name
    assert str(caught.value) == (
        f"GraphQL field '{registration.name}' of script '{registration.script_uri}': {problem}"
    )


@pytest.mark.parametrize(
    "registration",
    [
        reg("hello", 'hello(name: String = "x"): String'),
        reg("hello", '"doc" hello: [Int!]! @deprecated(reason: "old")'),
        reg("hello", "extend type Query { hello: Int }"),
        reg("hello", "type Query { hello: Int } type Mutation { other: Int }"),
        reg("add", "add(a: Int, b: Int): Int", operation="mutation"),
        reg("tick", "type Subscription { tick: Int }", operation="subscription", resolver=None),
        reg("hello", "type A { a: Int } extend type A { b: Int } type Query { hello: A }"),
    ],
)
def test_check_fragment_accepts_both_forms(registration: FieldRegistration) -> None:
    check_fragment(registration)


# -- query limits ------------------------------------------------------------------------------

INTROSPECTION = """
query IntrospectionQuery { __schema { queryType { name } mutationType { name }
  types { ...FullType } directives { name locations args { ...InputValue } } } }
fragment FullType on __Type { kind name fields(includeDeprecated: true) { name
  args { ...InputValue } type { ...TypeRef } isDeprecated } inputFields { ...InputValue }
  interfaces { ...TypeRef } enumValues(includeDeprecated: true) { name }
  possibleTypes { ...TypeRef } }
fragment InputValue on __InputValue { name type { ...TypeRef } defaultValue }
fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
"""


def nested(depth: int) -> str:
    return "{ " + "a { " * (depth - 1) + "b" + " }" * depth


def test_check_query_measures_depth_with_fragments_expanded() -> None:
    check_query(nested(15))
    with pytest.raises(QueryRejected, match=r"^the query is 16 levels deep; the limit is 15$"):
        check_query(nested(16))
    check_query(nested(16), max_depth=16)
    spread = "query { a { ...F } } fragment F on T { b { ...G } } fragment G on T { c { d } }"
    with pytest.raises(QueryRejected, match="4 levels deep"):
        check_query(spread, max_depth=3)
    check_query(INTROSPECTION)  # what GraphiQL sends must pass at the default depth


def test_check_query_counts_a_long_fragment_chain_without_recursion() -> None:
    chain = "".join(f"fragment F{i} on T {{ f {{ ...F{i + 1} }} }}\n" for i in range(3000))
    with pytest.raises(QueryRejected, match="3001 levels deep"):
        query = "{ ...F0 }\n" + chain + "fragment F3000 on T { x }"
        check_query(query, max_depth=20, max_chars=200_000)
    wide = "".join(
        f"fragment W{i} on T {{ a: x {{ ...W{i + 1} }} b: x {{ ...W{i + 1} }} }}\n"
        for i in range(40)
    )
    with pytest.raises(QueryRejected, match="41 levels deep"):  # 2**40 paths: memoized
        check_query("{ ...W0 }\n" + wide + "fragment W40 on T { x }", max_depth=20)


@pytest.mark.parametrize(
    "query",
    [
        "{ ...A } fragment A on Q { ...A }",
        "{ ...A } fragment A on Q { x { ...B } } fragment B on Q { ...C } fragment C on Q { ...A }",
    ],
)
def test_check_query_refuses_fragment_cycles(query: str) -> None:
    with pytest.raises(QueryRejected, match="spreads itself"):
        check_query(query)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("{ a ", "syntax error at line 1, column 5: unexpected EOF"),
        ("", "the query is empty"),
        ("{ a }" + " " * 100_000, "the query is longer than 100,000 characters (100,005)"),
        ("{ a }\x00{", "the query contains a NUL character"),
        ('{ a(x: "\ud800") }', "the query is not valid Unicode text"),
        ("[" * 200, f"the query is nested more than {MAX_NESTING} levels deep"),
    ],
)
def test_check_query_refusals(query: str, message: str) -> None:
    with pytest.raises(QueryRejected) as caught:
        check_query(query)
    assert str(caught.value) == message


def test_nesting_skips_strings_block_strings_and_comments() -> None:
    braces = "{" * 500
    assert nesting_problem(f'{{ a(x: "{braces}", y: """{braces}\\"""{braces}""") }}') is None
    assert nesting_problem(f"# {braces}\n{{ a }}") is None
    assert nesting_problem(f'{{ a(x: "unterminated {braces}') is not None  # counted: safe side
    check_query(f'{{ a(x: "{braces}") }}')


# -- subscriptions -----------------------------------------------------------------------------


class FakeSource:
    """A subscription source of given payloads that records when it is opened and closed."""

    def __init__(self, payloads: list[Any], *, then_wait: bool = False) -> None:
        self.payloads = payloads
        self.then_wait = then_wait
        self.log: list[Any] = []

    @asynccontextmanager
    async def __call__(
        self, field: str, args: dict[str, Any] | None
    ) -> AsyncIterator[AsyncIterator[Any]]:
        self.log.append(("open", field, args))

        async def stream() -> AsyncIterator[Any]:
            for payload in self.payloads:
                yield payload
            if self.then_wait:
                await trio.sleep_forever()

        try:
            yield stream()
        finally:
            self.log.append("closed")


TICKS = reg(
    "ticks",
    "type Tick { n: Int label: String } type Subscription { ticks(every: Int = 5): Tick! }",
    operation="subscription",
    resolver=None,
)


async def test_a_subscription_delivers_each_payload_then_closes_its_source(
    runtime: GraphQLRuntime,
) -> None:
    source = FakeSource([json.dumps({"n": 1, "label": "one"}), {"n": 2}, '{"n": 3}'])
    schema = await build(runtime, [TICKS, reg("q", "q: Int")], subscription_source=source)
    results = [r async for r in schema.subscribe("subscription { ticks(every: 2) { n label } }")]
    assert results == [
        {"data": {"ticks": {"n": 1, "label": "one"}}},
        {"data": {"ticks": {"n": 2, "label": None}}},
        {"data": {"ticks": {"n": 3, "label": None}}},
    ]
    assert source.log == [("open", "ticks", {"every": 2}), "closed"]


async def test_closing_a_subscription_closes_its_source_at_once(runtime: GraphQLRuntime) -> None:
    source = FakeSource([{"n": i} for i in range(3)], then_wait=True)
    schema = await build(runtime, [TICKS], subscription_source=source)
    subscription = schema.subscribe("subscription { ticks { n } }")
    assert await anext(subscription) == {"data": {"ticks": {"n": 0}}}
    assert await anext(subscription) == {"data": {"ticks": {"n": 1}}}
    await subscription.aclose()
    assert source.log[-1] == "closed"  # before anything else ran


async def test_cancelling_a_subscriber_closes_its_source(runtime: GraphQLRuntime) -> None:
    source = FakeSource([{"n": 0}], then_wait=True)
    schema = await build(runtime, [TICKS], subscription_source=source)
    received: list[Any] = []
    with trio.move_on_after(0.2) as scope:
        async with aclosing(schema.subscribe("subscription { ticks { n } }")) as results:
            async for result in results:
                received.append(result)
    assert scope.cancelled_caught
    assert received == [{"data": {"ticks": {"n": 0}}}]
    assert source.log[-1] == "closed"


async def test_a_payload_of_the_wrong_shape_is_an_error_for_that_event_only(
    runtime: GraphQLRuntime,
) -> None:
    source = FakeSource(["not json", {"n": 2}])
    schema = await build(runtime, [TICKS], subscription_source=source)
    results = [r async for r in schema.subscribe("subscription { ticks { n } }")]
    assert results[0]["data"] is None
    assert "not JSON" in results[0]["errors"][0]["message"]
    assert results[1] == {"data": {"ticks": {"n": 2}}}


async def test_an_invalid_subscription_answers_once_and_never_opens_the_source(
    runtime: GraphQLRuntime,
) -> None:
    source = FakeSource([{"n": 1}])
    schema = await build(runtime, [TICKS, reg("q", "q: Int")], subscription_source=source)
    for query in (
        "subscription { nope }",
        'subscription { ticks(every: "x") { n } }',
        "{ q }",
        "{",
    ):
        results = [r async for r in schema.subscribe(query)]
        assert len(results) == 1, query
        assert results[0]["data"] is None and results[0]["errors"], query
    assert source.log == []
    without_source = await build(runtime, [TICKS])
    assert [r async for r in without_source.subscribe("subscription { ticks { n } }")] == [
        {
            "data": None,
            "errors": [
                {"message": "subscriptions are not available", "path": None, "locations": []}
            ],
        }
    ]


async def test_executing_a_subscription_field_as_a_query_is_an_error(
    runtime: GraphQLRuntime,
) -> None:
    schema = await build(runtime, [TICKS], subscription_source=FakeSource([]))
    result = await schema.execute("subscription { ticks { n } }")
    assert result["data"] is None
    assert (
        result["errors"][0]["message"] == "subscription fields are delivered through a subscription"
    )


# -- generations and the runtime ---------------------------------------------------------------


async def test_rebuilding_300_generations_does_not_grow_tartiflette_registry(
    runtime: GraphQLRuntime,
) -> None:
    before = registry_size()
    first = await build(runtime, [reg("g", "g: Int")], FakeScripts(g=0))
    first_engine = weakref.ref(first._engine)
    generations = [first.generation]
    for i in range(300):
        registrations = [reg("g", "g: Int"), reg(f"f{i}", f"f{i}: String")]
        if i % 10 == 0:  # failing builds must not leave entries behind either
            registrations.append(reg("bad", "bad: Missing", script="bad"))
        schema = await build(runtime, registrations, FakeScripts(g=i))
        generations.append(schema.generation)
        assert registry_size() == before
    assert await schema.execute("{ g }") == {"data": {"g": 299}}
    assert generations == sorted(set(generations))
    del first
    gc.collect()
    assert first_engine() is None  # an old generation nobody holds is collected


async def test_two_generations_execute_concurrently_and_independently(
    runtime: GraphQLRuntime,
) -> None:
    release = trio.Event()

    async def slow(args: dict[str, Any] | None, info: ResolveInfo) -> str:
        await release.wait()
        return "old"

    old = await build(runtime, [reg("v", "v: String")], FakeScripts(v=slow))
    new = await build(
        runtime, [reg("v", "v: Int"), reg("extra", "extra: Int")], FakeScripts(v=2, extra=3)
    )
    assert new.generation > old.generation
    results: dict[str, Any] = {}

    async def run(name: str, schema: BuiltSchema, query: str) -> None:
        results[name] = await schema.execute(query)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "old", old, "{ v }")
        await trio.sleep(0.05)
        for i in range(20):
            nursery.start_soon(run, f"new{i}", new, "{ v extra }")
        await trio.sleep(0.05)
        assert "old" not in results  # still waiting while the new generation answers
        assert len(results) == 20
        release.set()
    assert results["old"] == {"data": {"v": "old"}}
    assert results["new0"] == {"data": {"v": 2, "extra": 3}}
    assert "extra" in (await old.execute("{ extra }"))["errors"][0]["message"]


async def test_tasks_outside_the_runtime_task_can_execute() -> None:
    """The runtime is opened in a task of its own, the way the app does it at startup."""
    seen: list[str] = []

    async def uses_trio(args: dict[str, Any] | None, info: ResolveInfo) -> str:
        await trio.lowlevel.checkpoint()  # a real trip back into Trio from the resolver
        seen.append(trio.lowlevel.current_task().name)
        return "ok"

    async with trio.open_nursery() as nursery:
        app_runtime = await nursery.start(GraphQLRuntime.run)
        # This task is the nursery's parent, not a descendant of the loop-owning task.
        schema = await build(
            app_runtime,
            [reg("hi", "hi: String"), TICKS],
            FakeScripts(hi=uses_trio),
            subscription_source=FakeSource([{"n": 1}]),
        )
        assert await schema.execute("{ hi }") == {"data": {"hi": "ok"}}
        async with aclosing(schema.subscribe("subscription { ticks { n } }")) as results:
            assert [r async for r in results] == [{"data": {"ticks": {"n": 1}}}]
        nursery.cancel_scope.cancel()
    assert len(seen) == 1
    with pytest.raises(RuntimeError, match="the GraphQL runtime is closed"):
        await schema.execute("{ hi }")


async def test_cancelling_the_caller_cancels_the_resolver(runtime: GraphQLRuntime) -> None:
    events: list[str] = []

    async def forever(args: dict[str, Any] | None, info: ResolveInfo) -> None:
        try:
            await trio.sleep_forever()
        finally:
            events.append("resolver finished")

    schema = await build(runtime, [reg("slow", "slow: String")], FakeScripts(slow=forever))
    start = trio.current_time()
    with trio.move_on_after(0.1):
        await schema.execute("{ slow }")
    await trio.sleep(0.01)
    assert events == ["resolver finished"]
    assert trio.current_time() - start < 1


# -- properties --------------------------------------------------------------------------------

sdl_alphabet = st.sampled_from(
    [
        *'{}()[]:!=@|&,"#\n \\',
        *("type", "Query", "input", "enum", "extend", '"""', "hello", "String", "Int"),
        *("scalar", "union", "interface", "implements", "directive", "schema", "1e9"),
        *("[" * 40, "{" * 40, '"""\\"""', "-0.5e-3"),
    ]
)
near_sdl = st.lists(sdl_alphabet, max_size=40).map(" ".join)
any_text = st.text(max_size=300)

# Fragments built from the SDL grammar (mostly valid), to reach the printer's every branch.
_type_names = st.sampled_from(["Int", "String", "Float", "Boolean", "ID", "A", "B", "E", "In", "S"])
type_refs = st.recursive(
    _type_names,
    lambda inner: inner.map(lambda t: f"[{t}]") | inner.map(lambda t: f"{t}!"),
    max_leaves=3,
)
literals = st.recursive(
    st.integers(-(2**40), 2**40).map(str)
    | st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | st.text(max_size=8).map(lambda t: json.dumps(t, ensure_ascii=False))
    | st.sampled_from(["true", "false", "null", "RED", '"""blo\\"""ck"""']),
    lambda inner: (
        st.lists(inner, max_size=3).map(lambda v: "[" + ", ".join(v) + "]")
        | st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2).map(
            lambda d: "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"
        )
    ),
    max_leaves=4,
)
descriptions = st.one_of(
    st.just(""),
    st.text(min_size=1, max_size=8).map(lambda t: json.dumps(t, ensure_ascii=False) + " "),
    st.text(alphabet="ab \n", max_size=8).map(lambda t: f'"""{t}""" '),
)
directives = st.sampled_from(["", " @deprecated", ' @deprecated(reason: "old")'])
arguments = st.lists(
    st.tuples(descriptions, st.sampled_from(["x", "y"]), type_refs, st.none() | literals),
    max_size=2,
).map(
    lambda args: (
        ""
        if not args
        else "("
        + ", ".join(f"{d}{n}: {t}" + ("" if v is None else f" = {v}") for d, n, t, v in args)
        + ")"
    )
)
fields = st.lists(
    st.builds(
        lambda d, n, a, t, x: f"{d}{n}{a}: {t}{x}",
        descriptions,
        st.sampled_from(["f", "g", "items"]),
        arguments,
        type_refs,
        directives,
    ),
    min_size=1,
    max_size=3,
).map(" ".join)
definitions = st.one_of(
    st.builds(lambda d, f: f"{d}type A {{ {f} }}", descriptions, fields),
    st.builds(lambda f: f"extend type A {{ {f} }}", fields),
    st.builds(lambda f: f"type B implements I {{ {f} }}", fields),
    st.builds(lambda f: f"interface I {{ {f} }}", fields),
    st.builds(lambda d: f"{d}enum E {{ RED GREEN{' @deprecated'} }}", descriptions),
    st.just("union U = A | B"),
    st.just("scalar S"),
    st.builds(lambda t, v: f"input In {{ a: {t} = {v} }}", type_refs, literals),
)
grammar_sdl = st.builds(
    lambda defs, d, a, t: " ".join(defs) + f" type Query {{ {d}hello{a}: {t} }}",
    st.lists(definitions, max_size=4),
    descriptions,
    arguments,
    type_refs,
)


@settings(max_examples=300, deadline=None)
@given(
    sdl=st.one_of(grammar_sdl, near_sdl, any_text),
    operation=st.sampled_from(["query", "mutation"]),
)
def test_check_fragment_on_any_text_raises_only_fragment_errors(
    sdl: str, operation: Operation
) -> None:
    check_fragment_only_refuses(sdl, operation)


def check_fragment_only_refuses(sdl: str, operation: Operation) -> None:
    """Any text is refused with a FragmentError, or accepted and then printed canonically."""
    registration = reg("hello", sdl, operation=operation)
    try:
        check_fragment(registration)
    except FragmentError as error:
        assert error.field == "hello" and error.problem
        return
    printed = merged_sdl(registration)
    assert merged_sdl(reg("hello", printed, operation=operation)) == printed


query_alphabet = st.sampled_from(
    [
        *'{}()[]:!$@.,"#\n \\',
        *("query", "subscription", "fragment", "on", "...", '"""', "a", "F", "T", "1"),
        *("{" * 70, "[" * 70),
    ]
)
near_query = st.lists(query_alphabet, max_size=60).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(query=st.one_of(near_query, any_text), max_depth=st.integers(0, 20))
def test_check_query_on_any_text_raises_only_query_rejected(query: str, max_depth: int) -> None:
    check_query_only_refuses(query, max_depth)


def check_query_only_refuses(query: str, max_depth: int) -> None:
    """Any text is refused with QueryRejected, or accepted; operation_of agrees it parses."""
    try:
        check_query(query, max_depth=max_depth)
    except QueryRejected as error:
        assert str(error)
        return
    try:
        assert operation_of(query) in ("query", "mutation", "subscription")
    except QueryRejected as error:  # no operation, or several: still a parsed document
        assert "operation" in str(error)


names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: not n.startswith("__") and n not in ("true", "false", "null")
)
defaults = st.one_of(
    st.tuples(st.just("Int"), st.integers(-(2**31), 2**31 - 1).map(str)),
    st.tuples(st.just("Float"), st.floats(allow_nan=False, allow_infinity=False).map(repr)),
    st.tuples(st.just("String"), st.text(max_size=10).map(json.dumps)),
    st.tuples(st.just("[Boolean]"), st.lists(st.booleans(), max_size=3).map(json.dumps)),
)


@settings(max_examples=100, deadline=None)
@given(
    fields=st.dictionaries(
        names, st.sampled_from(["Int", "String!", "[Float]", "[ID!]!"]), min_size=1
    ),
    arguments=st.dictionaries(names, defaults, max_size=3),
    description=st.text(min_size=1, max_size=20),  # Tartiflette cannot read '""' as one
)
def test_printed_sdl_reads_back_to_the_same_text(
    fields: dict[str, str], arguments: dict[str, tuple[str, str]], description: str
) -> None:
    """The merged schema's text is canonical: reading it as a fragment prints it again."""
    params = ", ".join(f"{name}: {ty} = {value}" for name, (ty, value) in arguments.items())
    params = f"({params})" if params else ""
    body = "\n".join(f"{name}{params}: {ty}" for name, ty in fields.items())
    sdl = f"{json.dumps(description)} type T {{ {body} }} type Query {{ hello{params}: T }}"
    first = merged_sdl(reg("hello", sdl))
    assert merged_sdl(reg("hello", first)) == first


def merged_sdl(registration: FieldRegistration) -> str:
    merger = SchemaMerger()
    assert merger.add(registration, analyze_fragment(registration)) is None
    return merger.result().sdl
