"""A script's SDL fragment, parsed with Tartiflette's SDL parser and reduced to plain values.

:func:`analyze_fragment` turns one registration into a :class:`Fragment`: the root field it
registers and the custom types it declares, each printed back to canonical SDL.  Printing
gives two things at once: definitions from different scripts compare by text (whitespace,
commas and comments do not matter), and the merged schema is assembled from text we produced,
never by pasting script text into other script text.

The parser is Tartiflette's lark grammar (``parse_to_document``); nothing here reads SDL with
regular expressions.  It does not check that referenced types exist: a trial build does that.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from typing import Any, Literal

import attrs
import lark
from tartiflette.language import ast
from tartiflette.language.parsers.lark import parse_to_document

from engine.graphql._model import (
    MAX_NAME_CHARS,
    MAX_SDL_CHARS,
    ROOT_TYPES,
    FieldRegistration,
    FragmentError,
    Operation,
)

Kind = Literal["type", "interface", "input", "enum", "union", "scalar"]

# Tartiflette defines these itself; a script redefining one would break every other script.
BUILTIN_SCALARS = frozenset(("String", "Int", "Float", "Boolean", "ID", "Date", "DateTime", "Time"))
_ROOT_NAMES = frozenset(ROOT_TYPES.values())
_KINDS: dict[type[Any], Kind] = {
    ast.ObjectTypeDefinitionNode: "type",
    ast.ObjectTypeExtensionNode: "type",
    ast.InterfaceTypeDefinitionNode: "interface",
    ast.InterfaceTypeExtensionNode: "interface",
    ast.InputObjectTypeDefinitionNode: "input",
    ast.InputObjectTypeExtensionNode: "input",
    ast.EnumTypeDefinitionNode: "enum",
    ast.EnumTypeExtensionNode: "enum",
    ast.UnionTypeDefinitionNode: "union",
    ast.UnionTypeExtensionNode: "union",
    ast.ScalarTypeDefinitionNode: "scalar",
    ast.ScalarTypeExtensionNode: "scalar",
}


@attrs.frozen
class FieldShape:
    """The declared output type of a field, as far as shaping a resolver's value needs it."""

    type_name: str
    is_list: bool


@attrs.frozen
class Member:
    """A field, input field, enum value or union member of a type."""

    name: str
    signature: str  # canonical SDL without the description: what conflicts are judged on
    description: str | None = None  # already printed as an SDL string
    shape: FieldShape | None = None  # output fields only

    def sdl(self) -> str:
        return (
            self.signature if self.description is None else f"{self.description} {self.signature}"
        )


@attrs.frozen
class TypeDecl:
    """One custom type as a fragment declares it (definitions and extensions alike)."""

    kind: Kind
    name: str
    description: str | None
    directives: str
    interfaces: tuple[str, ...]
    members: tuple[Member, ...]


@attrs.frozen
class Fragment:
    """What a registration contributes: its root field and the types it declares."""

    field: Member
    types: tuple[TypeDecl, ...]


class _Problem(Exception):
    """A reason a fragment is refused; becomes a FragmentError naming the registration."""


# -- checks ------------------------------------------------------------------------------------


def name_problem(name: str, what: str) -> str | None:
    """Why ``name`` is not a usable GraphQL name, or None."""
    if not name:
        return f"{what} name is empty"
    if len(name) > MAX_NAME_CHARS:
        return f"{what} name is longer than {MAX_NAME_CHARS} characters"
    if not all(c == "_" or (c.isascii() and c.isalnum()) for c in name) or name[0].isdigit():
        return (
            f"{what} name '{name}' is not a GraphQL name (ASCII letters, digits, _; no digit first)"
        )
    if name.startswith("__"):
        return f"{what} name '{name}' starts with '__', which GraphQL reserves for introspection"
    return None


def registration_problem(reg: FieldRegistration) -> str | None:
    """The checks that need no parsing: name, size, resolver, visibility."""
    problem = name_problem(reg.name, "the field")
    if problem is not None:
        return problem
    if not reg.sdl.strip():
        return "the SDL is empty"
    if len(reg.sdl) > MAX_SDL_CHARS:
        return f"the SDL is longer than {MAX_SDL_CHARS:,} characters ({len(reg.sdl):,})"
    if reg.operation != "subscription" and not reg.resolver:
        return f"a {reg.operation} needs a resolver function"
    if reg.operation == "subscription" and reg.visibility != "external":
        return f"subscriptions must be 'external', not '{reg.visibility}'"
    return None


def analyze_fragment(reg: FieldRegistration) -> Fragment:
    """Parse and check ``reg.sdl``; raises :class:`FragmentError` naming script and field."""
    problem = registration_problem(reg)
    if problem is not None:
        raise FragmentError.of(reg, problem)
    try:
        if len(reg.sdl) > _CACHED_SDL_CHARS:
            return _analyze(reg.operation, reg.name, reg.sdl)
        return _analyze_cached(reg.operation, reg.name, reg.sdl)
    except _Problem as error:
        raise FragmentError.of(reg, str(error)) from None
    except RecursionError:
        raise FragmentError.of(reg, "the SDL is nested too deeply") from None


# -- parsing -----------------------------------------------------------------------------------


def _parse(sdl: str) -> tuple[Any, tuple[int, int, str] | None]:
    """Parse an SDL document: (document, None) or (None, (line, column, problem))."""
    try:
        return parse_to_document(sdl), None
    except lark.exceptions.UnexpectedInput as error:
        return None, _describe_syntax_error(error)
    except RecursionError:
        return None, (0, 0, "the SDL is nested too deeply")
    except Exception as error:  # the transformer's own failures: still the script's SDL
        return None, (0, 0, f"the SDL could not be read: {error}")


def _describe_syntax_error(error: lark.exceptions.UnexpectedInput) -> tuple[int, int, str]:
    line = int(getattr(error, "line", 0) or 0)
    column = int(getattr(error, "column", 0) or 0)
    if isinstance(error, lark.exceptions.UnexpectedToken):
        token: Any = getattr(error, "token", None)
        what = "end of text" if token.type == "$END" else f"'{token.value}'"
    elif isinstance(error, lark.exceptions.UnexpectedCharacters):
        what = f"character {getattr(error, 'char', '')!r}"
    else:
        what = "end of text"
    return line, column, f"unexpected {what}"


def _parse_fragment(operation: Operation, sdl: str) -> Any:
    """Parse ``sdl`` as a document, or else as a bare field of the operation's root type.

    When both fail, the error that got further into the text is reported: a typo in a bare
    field is reported inside the field, not at its first character.
    """
    document, doc_error = _parse(sdl)
    if document is not None:
        return document
    root = ROOT_TYPES[operation]
    wrapped, bare_error = _parse(f"type {root} {{\n{sdl}\n}}")
    if wrapped is not None:
        # A bare "field } type X {" would sneak a second block in through the wrapper.
        if len(wrapped.definitions) == 1:
            return wrapped
        raise _Problem("a bare field cannot close its own block")
    assert doc_error is not None and bare_error is not None
    line, column, message = doc_error
    bare_line, bare_column, bare_message = bare_error[0] - 1, bare_error[1], bare_error[2]
    if bare_line > 0 and (bare_line, bare_column) > (line, column):
        line, column, message = bare_line, bare_column, bare_message
        if line > sdl.count("\n") + 1:  # on the wrapper's closing line
            line, column, message = 0, 0, "the field is incomplete"
    if line <= 0:
        raise _Problem(f"syntax error: {message}")
    raise _Problem(f"syntax error at line {line}, column {column}: {message}")


def _analyze(operation: Operation, name: str, sdl: str) -> Fragment:
    document = _parse_fragment(operation, sdl)
    root = ROOT_TYPES[operation]
    field: Member | None = None
    types: dict[str, TypeDecl] = {}
    for definition in document.definitions:
        if isinstance(definition, ast.SchemaDefinitionNode | ast.SchemaExtensionNode):
            raise _Problem("a fragment cannot contain a schema definition")
        if isinstance(definition, ast.DirectiveDefinitionNode):
            raise _Problem(f"a fragment cannot define directives (@{definition.name.value})")
        kind = _KINDS.get(type(definition))
        if kind is None:  # pragma: no cover - the SDL grammar has no other definitions
            raise _Problem(f"unsupported definition {type(definition).__name__}")
        type_name = definition.name.value
        if type_name in _ROOT_NAMES:
            if kind != "type":
                raise _Problem(f"'{type_name}' is a root type and must be an object type")
            if type_name == root and field is None:
                field = _find_field(definition, name)
            continue  # other roots' fields belong to other registrations
        decl = _type_decl(kind, definition)
        earlier = types.get(type_name)
        if earlier is None:
            types[type_name] = decl
        else:
            merged = merge_decls(earlier, decl)
            if isinstance(merged, Conflict):
                raise _Problem(f"{merged.problem} earlier in the same SDL")
            types[type_name] = merged
    if field is None:
        raise _Problem(f"the SDL does not define the field '{name}' in a '{root}' block")
    return Fragment(field=field, types=tuple(types.values()))


# Every build re-reads every registration; the fragments of a typical script are small, and
# caching their analysis keeps rebuilds cheap without holding on to huge texts.
_CACHED_SDL_CHARS = 10_000
_analyze_cached = functools.lru_cache(maxsize=1024)(_analyze)


def _find_field(definition: Any, name: str) -> Member | None:
    for node in definition.fields or ():
        if node.name.value == name:
            return _output_field(node)
    return None


def _type_decl(kind: Kind, node: Any) -> TypeDecl:
    type_name = node.name.value
    if type_name in BUILTIN_SCALARS:
        raise _Problem(f"'{type_name}' is a built-in scalar and cannot be redefined")
    problem = name_problem(type_name, "the type")
    if problem is not None:
        raise _Problem(problem)
    members: list[Member] = []
    if kind in ("type", "interface"):
        members = [_output_field(field) for field in node.fields or ()]
    elif kind == "input":
        members = [_input_value(field) for field in node.fields or ()]
    elif kind == "enum":
        members = [_enum_value(value) for value in node.values or ()]
    elif kind == "union":
        members = [Member(t.name.value, t.name.value) for t in node.types or ()]
    interfaces = tuple(i.name.value for i in getattr(node, "interfaces", None) or ())
    seen: set[str] = set()
    for member in members:
        if member.name in seen:
            raise _Problem(f"'{type_name}.{member.name}' is declared twice")
        seen.add(member.name)
    return TypeDecl(
        kind=kind,
        name=type_name,
        description=_description(getattr(node, "description", None)),
        directives=_directives(node.directives),
        interfaces=interfaces,
        members=tuple(members),
    )


@attrs.frozen
class Conflict:
    """Why two declarations of one type cannot be merged; ``member`` is the clashing member."""

    problem: str
    member: str | None = None


def merge_decls(first: TypeDecl, second: TypeDecl) -> TypeDecl | Conflict:
    """Merge two declarations of one type into one, or say why they conflict.

    Declarations are compatible when they are of the same kind and every member they share has
    the same signature; the merged type then has the members of both, in order of appearance.
    The first description and type directives win: they do not change what a query can do.
    """
    if first.kind != second.kind:
        return Conflict(f"'{first.name}' is already declared as {_a(first.kind)}")
    members = {member.name: member for member in first.members}
    for member in second.members:
        known = members.get(member.name)
        if known is None:
            members[member.name] = member
        elif known.signature != member.signature:
            problem = f"'{first.name}.{member.name}' is already declared as `{known.signature}`"
            return Conflict(problem, member.name)
    return attrs.evolve(
        first,
        description=first.description or second.description,
        directives=first.directives or second.directives,
        interfaces=tuple(dict.fromkeys(first.interfaces + second.interfaces)),
        members=tuple(members.values()),
    )


def _a(kind: Kind) -> str:
    return _KIND_NAMES[kind]


_KIND_NAMES: dict[Kind, str] = {
    "type": "an object type",
    "interface": "an interface",
    "input": "an input type",
    "enum": "an enum",
    "union": "a union",
    "scalar": "a scalar",
}


# -- printing ----------------------------------------------------------------------------------


def _output_field(node: Any) -> Member:
    name = node.name.value
    signature = f"{name}{_arguments(node.arguments)}: {_type_ref(node.type)}"
    signature += _directives(node.directives)
    return Member(name, signature, _description(node.description), _shape(node.type))


def _input_value(node: Any) -> Member:
    signature = f"{node.name.value}: {_type_ref(node.type)}"
    if node.default_value is not None:
        signature += f" = {_value(node.default_value)}"
    signature += _directives(node.directives)
    return Member(node.name.value, signature, _description(node.description))


def _enum_value(node: Any) -> Member:
    name = node.name.value
    if name in ("true", "false", "null"):
        raise _Problem(f"'{name}' cannot be an enum value")
    signature = name + _directives(node.directives)
    return Member(name, signature, _description(node.description))


def _arguments(nodes: Sequence[Any] | None) -> str:
    if not nodes:
        return ""
    return "(" + ", ".join(_input_value(node).sdl() for node in nodes) + ")"


def _shape(node: Any) -> FieldShape:
    is_list = False
    while not isinstance(node, ast.NamedTypeNode):
        is_list = is_list or isinstance(node, ast.ListTypeNode)
        node = node.type
    return FieldShape(node.name.value, is_list)


def _type_ref(node: Any) -> str:
    if isinstance(node, ast.NonNullTypeNode):
        return _type_ref(node.type) + "!"
    if isinstance(node, ast.ListTypeNode):
        return "[" + _type_ref(node.type) + "]"
    return str(node.name.value)


def _directives(nodes: Sequence[Any] | None) -> str:
    printed = ""
    for node in nodes or ():
        printed += f" @{node.name.value}"
        if node.arguments:
            printed += "(" + ", ".join(_argument(a) for a in node.arguments) + ")"
    return printed


def _argument(node: Any) -> str:
    return f"{node.name.value}: {_value(node.value)}"


def _value(node: Any) -> str:
    if isinstance(node, ast.StringValueNode):
        return string_literal(node.value)
    if isinstance(node, ast.BooleanValueNode):
        return "true" if node.value else "false"
    if isinstance(node, ast.NullValueNode):
        return "null"
    if isinstance(node, ast.IntValueNode):
        return str(int(node.value))
    if isinstance(node, ast.FloatValueNode):
        number = float(node.value)
        if not math.isfinite(number):
            raise _Problem("a number in the SDL is out of range")
        return repr(number)
    if isinstance(node, ast.EnumValueNode):
        return str(node.value)
    if isinstance(node, ast.ListValueNode):
        return "[" + ", ".join(_value(v) for v in node.values) + "]"
    if isinstance(node, ast.ObjectValueNode):
        return "{" + ", ".join(f"{f.name.value}: {_value(f.value)}" for f in node.fields) + "}"
    raise _Problem("variables cannot appear in SDL")


def _description(node: Any) -> str | None:
    # An empty description is dropped: Tartiflette's grammar cannot read back '""' before a
    # definition, though it accepts an empty block string.
    return None if node is None or not node.value else string_literal(node.value)


def string_literal(text: str) -> str:
    """``text`` as a one-line GraphQL string (JSON escapes are a subset of GraphQL's)."""
    return json.dumps(text, ensure_ascii=False)
