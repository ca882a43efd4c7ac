"""Properties of ``POST /graphql`` against an engine in its own process.

* Any valid query against a schema a script registers gets a 200 JSON GraphQL response; when
  the resolvers return values of the declared types, the response is exactly those values
  projected onto the selection (aliases, ``__typename``, fragments, ``@skip``/``@include``,
  arguments given inline or as variables), whether the script returns objects or the JSON
  text scripts for the original engine return.
* Any malformed request gets the 4xx the endpoint defines for it (400, 413, 415) as JSON in the
  engine's error envelope: never a 5xx, never a traceback.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import EngineProcess

URI = "https://example.com/graphql-properties"
MAX_BODY_BYTES = 1024 * 1024
SCALARS = ("Int", "Float", "String", "Boolean", "ID")
ENUM = "Colour"
ENUM_VALUES = ("RED", "GREEN", "BLUE", "DEEP_SEA", "X1")
INPUT = "Filter"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    process = EngineProcess(Path(tmp_path_factory.mktemp("graphql-props")) / "data")
    try:
        with httpx.Client(base_url=process.base_url, timeout=30) as client:
            yield client
    finally:
        process.close()


# -- a schema, the script serving it, and its values -------------------------------------------


@attrs.frozen
class TypeRef:
    name: str  # a scalar, the enum, the input type or an object type T<n>
    non_null: bool = False
    is_list: bool = False
    items_non_null: bool = False

    def sdl(self) -> str:
        text = f"[{self.name}{'!' if self.items_non_null else ''}]" if self.is_list else self.name
        return text + ("!" if self.non_null else "")


@attrs.frozen
class Field:
    name: str
    type: TypeRef
    args: tuple[tuple[str, TypeRef], ...] = ()

    def sdl(self) -> str:
        args = ", ".join(f"{name}: {ref.sdl()}" for name, ref in self.args)
        signature = f"({args})" if args else ""
        return f"{self.name}{signature}: {self.type.sdl()}"


@attrs.frozen
class Schema:
    objects: tuple[tuple[str, tuple[Field, ...]], ...]  # T0, T1…; T<n> uses only T<m<n>
    input_fields: tuple[tuple[str, TypeRef], ...]
    roots: tuple[Field, ...]
    data: dict[str, Any] = attrs.field(eq=False)
    as_text: frozenset[str] = frozenset()  # root fields whose resolver returns JSON text
    well_typed: bool = True

    def object_fields(self, name: str) -> tuple[Field, ...]:
        return dict(self.objects)[name]

    def definitions(self) -> str:
        blocks = [f"enum {ENUM} {{ {' '.join(ENUM_VALUES)} }}"]
        blocks.append(
            f"input {INPUT} {{ "
            + ", ".join(f"{name}: {ref.sdl()}" for name, ref in self.input_fields)
            + " }"
        )
        for name, fields in self.objects:
            blocks.append(f"type {name} {{ " + ", ".join(f.sdl() for f in fields) + " }")
        return "\n".join(blocks)

    def script(self) -> str:
        """One resolver for every root field; the first registration carries every type, the
        others are bare fields."""
        first, *rest = self.roots
        register = [
            (first.name, f"{self.definitions()}\ntype Query {{ {first.sdl()} }}"),
            *((root.name, root.sdl()) for root in rest),
        ]
        calls = "\n".join(
            f"  graphQLRegistry.registerQuery({json.dumps(name)}, {json.dumps(sdl)}, "
            f'"resolve", "external");'
            for name, sdl in register
        )
        return (
            f"var DATA = {json.dumps(self.data)};\n"
            f"var AS_TEXT = {json.dumps(sorted(self.as_text))};\n"
            "function resolve(context) {\n"
            "  var name = context.meta.graphql.fieldName;\n"
            "  var value = DATA[name];\n"
            "  return AS_TEXT.indexOf(name) >= 0 ? JSON.stringify(value) : value;\n"
            "}\n"
            f"function init() {{\n{calls}\n}}\n"
        )


# Field and argument names: GraphQL keywords included, they are ordinary names in most places.
names = st.one_of(
    st.from_regex(r"[a-z][a-zA-Z0-9]{0,6}", fullmatch=True),
    st.sampled_from(["type", "query", "on", "input", "enum", "fragment", "id", "data"]),
)


def refs(kinds: st.SearchStrategy[str], *, lists: bool = True) -> st.SearchStrategy[TypeRef]:
    return st.builds(
        TypeRef,
        name=kinds,
        non_null=st.booleans(),
        is_list=st.booleans() if lists else st.just(False),
        items_non_null=st.booleans(),
    )


def unique_names(count: st.SearchStrategy[int]) -> st.SearchStrategy[list[str]]:
    return count.flatmap(lambda n: st.lists(names, min_size=n, max_size=n, unique=True))


@st.composite
def schemas(draw: st.DrawFn) -> Schema:
    objects: list[tuple[str, tuple[Field, ...]]] = []
    for index in range(draw(st.integers(0, 3))):
        kinds = st.sampled_from((*SCALARS, ENUM, *(name for name, _ in objects)))
        field_names = draw(unique_names(st.integers(1, 4)))
        fields = tuple(Field(name, draw(refs(kinds))) for name in field_names)
        objects.append((f"T{index}", fields))
    input_fields = tuple(
        (name, draw(refs(st.sampled_from((*SCALARS, ENUM)), lists=False)))
        for name in draw(unique_names(st.integers(1, 3)))
    )
    argument_kinds = st.sampled_from((*SCALARS, ENUM, INPUT))
    roots = tuple(
        Field(
            name,
            draw(refs(st.sampled_from((*SCALARS, ENUM, *(n for n, _ in objects))))),
            tuple(
                (arg, draw(refs(argument_kinds))) for arg in draw(unique_names(st.integers(0, 3)))
            ),
        )
        for name in draw(unique_names(st.integers(1, 4)))
    )
    skeleton = Schema(tuple(objects), input_fields, roots, data={})
    well_typed = draw(st.integers(0, 4)) > 0
    data = {
        root.name: draw(values(skeleton, root.type) if well_typed else json_values)
        for root in roots
    }
    composite = [r.name for r in roots if r.type.is_list or r.type.name.startswith("T")]
    as_text = draw(st.lists(st.sampled_from(composite), unique=True)) if composite else []
    return attrs.evolve(skeleton, data=data, as_text=frozenset(as_text), well_typed=well_typed)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)

# Query text is limited to the Basic Multilingual Plane: the GraphQL spec's source characters.
query_text = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]), max_size=12)
identifiers = st.text(string.ascii_letters + string.digits, min_size=1, max_size=8)
LEAF_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "Int": st.integers(-(2**31), 2**31 - 1),
    "Float": st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False),
    "String": query_text,
    "Boolean": st.booleans(),
    "ID": identifiers,
    ENUM: st.sampled_from(ENUM_VALUES),
}


def values(schema: Schema, ref: TypeRef) -> st.SearchStrategy[Any]:
    """A value of type ``ref`` as a resolver returns it (and an input as a variable)."""
    if ref.is_list:
        item = values(schema, attrs.evolve(ref, is_list=False, non_null=ref.items_non_null))
        value: st.SearchStrategy[Any] = st.lists(item, max_size=3)
    elif ref.name in LEAF_VALUES:
        value = LEAF_VALUES[ref.name]
    elif ref.name == INPUT:
        value = st.fixed_dictionaries(
            {name: values(schema, field) for name, field in schema.input_fields if field.non_null},
            optional={
                name: values(schema, field)
                for name, field in schema.input_fields
                if not field.non_null
            },
        )
    else:
        value = st.fixed_dictionaries(
            {field.name: values(schema, field.type) for field in schema.object_fields(ref.name)}
        )
    return value if ref.non_null else st.none() | value


# -- queries and what they must answer ---------------------------------------------------------

SKIPPING = ("@skip(if: true)", "@include(if: false)")
DIRECTIVES = ("", "", "", "@include(if: true)", "@skip(if: false)", *SKIPPING)


@attrs.frozen
class Selected:
    field: Field
    key: str  # the response key: the field's name or its alias
    arguments: str
    directive: str
    sub: Selection | None


@attrs.frozen
class Selection:
    type_name: str
    items: tuple[Selected, ...]
    typename: bool
    form: str  # "plain", "inline" (an inline fragment) or "named" (a fragment spread)


def literal(value: Any, ref: TypeRef, schema: Schema) -> str:
    """``value`` (of type ``ref``) written as a GraphQL literal."""
    if value is None:
        return "null"
    if ref.is_list:
        item = attrs.evolve(ref, is_list=False, non_null=ref.items_non_null)
        return "[" + ", ".join(literal(v, item, schema) for v in value) + "]"
    if ref.name == ENUM:
        return str(value)
    if ref.name == INPUT:
        fields = dict(schema.input_fields)
        return (
            "{" + ", ".join(f"{k}: {literal(v, fields[k], schema)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


@attrs.define
class QueryWriter:
    """Draws a valid query over a schema; ``expected`` is what well-typed data must answer."""

    schema: Schema
    draw: st.DrawFn
    variables: dict[str, Any] = attrs.field(factory=dict)
    declarations: list[str] = attrs.field(factory=list)
    fragments: list[str] = attrs.field(factory=list)

    def write(self) -> tuple[str, Selection]:
        """The query text and its root selection."""
        root = self.select("Query", self.schema.roots)
        body = self.render(root)
        header = f"query Q({', '.join(self.declarations)})" if self.declarations else "query Q"
        return "\n".join([f"{header} {body}", *self.fragments]), root

    def select(self, type_name: str, fields: tuple[Field, ...]) -> Selection:
        chosen = self.draw(
            st.lists(st.sampled_from(fields), min_size=1, max_size=len(fields), unique=True)
        )
        items = []
        for index, field in enumerate(chosen):
            # Generated names have no underscore, so an alias never meets a field's name.
            key = f"A_{index}" if self.draw(st.integers(0, 3)) == 0 else field.name
            sub = None
            if field.type.name.startswith("T"):
                sub = self.select(field.type.name, self.schema.object_fields(field.type.name))
            items.append(
                Selected(
                    field, key, self.arguments(field), self.draw(st.sampled_from(DIRECTIVES)), sub
                )
            )
        return Selection(
            type_name,
            tuple(items),
            typename=self.draw(st.integers(0, 3)) == 0,
            form=self.draw(st.sampled_from(["plain", "plain", "inline", "named"])),
        )

    def arguments(self, field: Field) -> str:
        written = []
        for name, ref in field.args:
            if not ref.non_null and self.draw(st.booleans()):
                continue  # an optional argument left out
            value = self.draw(values(self.schema, attrs.evolve(ref, non_null=True)))
            if self.draw(st.booleans()):
                variable = f"v{len(self.variables)}"
                self.variables[variable] = value
                self.declarations.append(f"${variable}: {ref.sdl()}")
                written.append(f"{name}: ${variable}")
            else:
                written.append(f"{name}: {literal(value, ref, self.schema)}")
        return f"({', '.join(written)})" if written else ""

    def render(self, selection: Selection) -> str:
        parts = []
        for item in selection.items:
            alias = f"{item.key}: " if item.key != item.field.name else ""
            sub = f" {self.render(item.sub)}" if item.sub is not None else ""
            parts.append(f"{alias}{item.field.name}{item.arguments} {item.directive}{sub}")
        if selection.typename:
            parts.append("__typename")
        text = "{ " + " ".join(parts) + " }"
        if selection.form == "inline":
            return f"{{ ... on {selection.type_name} {text} }}"
        if selection.form == "named":
            name = f"F{len(self.fragments)}"
            self.fragments.append(f"fragment {name} on {selection.type_name} {text}")
            return f"{{ ...{name} }}"
        return text

    def expected(self, selection: Selection, data: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = {}
        for item in selection.items:
            if item.directive in SKIPPING:
                continue
            value = data.get(item.field.name)
            if item.sub is None:
                answer[item.key] = projected(value, item.field.type)
            elif value is None:
                answer[item.key] = None
            elif item.field.type.is_list:
                answer[item.key] = [
                    None if v is None else self.expected(item.sub, v) for v in value
                ]
            else:
                answer[item.key] = self.expected(item.sub, value)
        if selection.typename:
            answer["__typename"] = selection.type_name
        return answer


def projected(value: Any, ref: TypeRef) -> Any:
    """A well-typed scalar (or a list of them) as the response shows it."""
    if value is None:
        return None
    if ref.is_list:
        item = attrs.evolve(ref, is_list=False)
        return [projected(v, item) for v in value]
    if ref.name == "Float":
        return float(value)
    if ref.name == "ID":
        return str(value)
    return value


def deploy(server: httpx.Client, content: str) -> None:
    response = server.post("/engine/upsert_script", data={"uri": URI, "content": content})
    assert response.status_code == 200, response.text
    init = response.json()["init"]
    assert init["success"] is True, (init["error"], content)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_any_valid_query_on_a_scripts_schema_gets_a_json_graphql_response(
    server: httpx.Client, data: st.DataObject
) -> None:
    schema = data.draw(schemas(), label="schema")
    deploy(server, schema.script())
    for _ in range(3):
        writer = QueryWriter(schema, data.draw)
        query, root = writer.write()
        response = server.post("/graphql", json={"query": query, "variables": writer.variables})

        assert response.status_code == 200, (query, response.text)
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        if schema.well_typed:
            expected = writer.expected(root, schema.data)
            assert body == {"data": expected}, (query, writer.variables, schema.data)
        else:
            assert "data" in body, body
            for error in body.get("errors", []):
                assert isinstance(error["message"], str) and error["message"]


# -- malformed requests --------------------------------------------------------------------------

JSON_TYPES = ("application/json", "application/json; charset=utf-8", "application/graphql+json")
OTHER_TYPES = (
    None,  # no content-type at all
    "",
    "text/plain",
    "text/html; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "application/octet-stream",
    "application/jsonp",
    "image/png",
)
VALID = json.dumps({"query": "{ __typename }"}).encode()


def parses_as_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return False
    return True


def not_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def not_an_object_text(text: str) -> bool:
    """``variables`` given as text that does not hold a JSON object (nor nothing)."""
    if not text.strip():
        return False
    try:
        decoded = json.loads(text)
    except (ValueError, RecursionError):
        return True
    return decoded is not None and not isinstance(decoded, dict)


non_strings = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(json_values, max_size=3),
    st.dictionaries(st.text(max_size=5), json_values, max_size=3),
)
not_objects = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(json_values, max_size=3),
    st.text(max_size=20).filter(not_an_object_text),
)


@attrs.frozen
class Malformed:
    content_type: str | None
    body: bytes
    status: int


def json_body(value: Any) -> bytes:
    return json.dumps(value).encode()


malformed = st.one_of(
    # Not JSON at all.
    st.builds(
        Malformed,
        st.sampled_from(JSON_TYPES),
        st.binary(max_size=200).filter(lambda body: not parses_as_json(body)),
        st.just(400),
    ),
    # JSON, but not an object.
    st.builds(
        Malformed,
        st.sampled_from(JSON_TYPES),
        st.builds(json_body, json_values.filter(lambda value: not isinstance(value, dict))),
        st.just(400),
    ),
    # An object without a usable query.
    st.builds(
        Malformed,
        st.sampled_from(JSON_TYPES),
        st.builds(
            json_body,
            st.fixed_dictionaries(
                {},
                optional={"query": non_strings | st.just("") | st.none(), "variables": json_values},
            ),
        ),
        st.just(400),
    ),
    # A query with variables or an operation name of the wrong kind.
    st.builds(
        Malformed,
        st.sampled_from(JSON_TYPES),
        st.one_of(
            st.builds(
                lambda v: json_body({"query": "{ __typename }", "variables": v}), not_objects
            ),
            st.builds(
                lambda name: json_body({"query": "{ __typename }", "operationName": name}),
                non_strings,
            ),
        ),
        st.just(400),
    ),
    # A GraphQL document that is not UTF-8.
    st.builds(
        Malformed,
        st.just("application/graphql"),
        st.binary(min_size=1, max_size=100).filter(not_utf8),
        st.just(400),
    ),
    # A content type the endpoint does not read, whatever the body.
    st.builds(
        Malformed,
        st.sampled_from(OTHER_TYPES),
        st.just(VALID) | st.binary(max_size=100),
        st.just(415),
    ),
    # Over the body limit, even when it would otherwise be a fine request.
    st.builds(
        Malformed,
        st.sampled_from(JSON_TYPES),
        st.integers(MAX_BODY_BYTES + 1, MAX_BODY_BYTES + 4096).map(
            lambda size: VALID[:-1] + b', "pad": "' + b"x" * (size - len(VALID) - 10) + b'"}'
        ),
        st.just(413),
    ),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=malformed)
def test_any_malformed_request_gets_its_4xx_as_json_never_a_5xx(
    server: httpx.Client, request: Malformed
) -> None:
    headers = {} if request.content_type is None else {"content-type": request.content_type}

    response = server.post("/graphql", content=request.body, headers=headers)

    assert response.status_code == request.status, (request, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text
    body = response.json()
    assert isinstance(body["error"]["code"], str) and body["error"]["message"]
    assert body["errors"] and all(error["message"] for error in body["errors"])
