"""Limits on incoming queries: size, nesting and selection depth, checked before execution.

Two checks protect two different things:

* :func:`nesting_problem` protects the *process*.  Tartiflette parses queries with the C
  library libgraphqlparser, whose AST-to-JSON step recurses once per nesting level: a query
  nested 20,000 levels deep (60 KB of braces) overflows the C stack and kills the process with
  SIGSEGV (seen with tartiflette 1.4.1).  So every query has its bracket nesting counted by a
  small lexer (strings, block strings and comments skipped, as GraphQL defines them) before it
  reaches the C parser.  ``BuiltSchema.execute`` and ``subscribe`` run this check themselves.
* :func:`check_query` applies the configurable limits (characters, selection depth with
  fragments expanded) that the HTTP surfaces enforce before calling ``execute``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from typing import Any, cast

import attrs
from tartiflette.language.parsers.libgraphqlparser.parser import _parse_to_json_ast
from tartiflette.types.exceptions.tartiflette import GraphQLSyntaxError

from engine.graphql._model import Operation, QueryRejected

# Far below where the C parser crashes (thousands of levels) and far above what a real query
# needs: selection depth is limited to 15 by default, input values rarely nest past 5.
MAX_NESTING = 128

# Strings and comments as the GraphQL lexer sees them, then brackets.  Possessive quantifiers
# keep the scan linear on any input; an unterminated string matches nothing here, so what
# follows it is scanned as code, which can only over-count (the C lexer rejects such text).
_TOKENS = re.compile(
    r'"""(?:\\"""|[^"\\]++|\\|"(?!""))*+"""'
    r'|"(?:\\.|[^"\\\n\r]++)*+"'
    r"|#[^\n\r]*+"
    r"|([\[{(])|[\]})]"
)

_CLOSING = frozenset("]})")


def nesting_problem(query: str) -> str | None:
    """Why ``query`` must not reach the parser (nesting, NUL), or None."""
    if "\x00" in query:
        return "the query contains a NUL character"
    depth = deepest = 0
    for match in _TOKENS.finditer(query):
        if match.group(1) is not None:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_NESTING:
                    return f"the query is nested more than {MAX_NESTING} levels deep"
        elif match.group() in _CLOSING:
            depth = max(depth - 1, 0)
    return None


def check_query(query: str, *, max_chars: int = 100_000, max_depth: int = 15) -> None:
    """Refuse a query that is too long, too deep or not parsable, with :class:`QueryRejected`.

    Depth counts nested field selections: ``{ a { b } }`` is 2.  Fragment spreads count as the
    fields they stand for; a fragment that spreads itself, directly or not, is refused.
    """
    if not isinstance(query, str):
        raise QueryRejected("the query must be a string")
    if len(query) > max_chars:
        raise QueryRejected(f"the query is longer than {max_chars:,} characters ({len(query):,})")
    if not query.strip():
        raise QueryRejected("the query is empty")
    depth = _summary(query).depth
    if depth > max_depth:
        raise QueryRejected(f"the query is {depth} levels deep; the limit is {max_depth}")


def operation_of(query: str, operation_name: str | None = None) -> Operation:
    """The kind of the operation ``query`` would run, as GraphQL picks it.

    Raises :class:`QueryRejected` when the query does not parse (or is nested dangerously
    deep), has no operation, names an operation it does not contain, or has several
    operations and no ``operation_name``.
    """
    if not isinstance(query, str):
        raise QueryRejected("the query must be a string")
    operations = _summary(query).operations
    if operation_name is not None:
        operations = tuple(o for o in operations if o[0] == operation_name)
        if not operations:
            raise QueryRejected(f"the query has no operation named '{operation_name}'")
    if not operations:
        raise QueryRejected("the query has no operation")
    if len(operations) > 1:
        raise QueryRejected("the query has several operations: name the one to run")
    kind = operations[0][1]
    if kind not in ("query", "mutation", "subscription"):  # pragma: no cover - parser's words
        raise QueryRejected(f"unknown operation type {kind!r}")
    return cast(Operation, kind)


@attrs.frozen
class _Summary:
    """What the limits need to know of a parsed query."""

    depth: int
    operations: tuple[tuple[str | None, str], ...]  # (name, kind)


# Clients send the same queries again and again: their summaries are kept (short ones only,
# so the cache stays small), and a query is parsed once per request instead of twice.
_CACHED_QUERY_CHARS = 8192


def _summary(query: str) -> _Summary:
    if len(query) <= _CACHED_QUERY_CHARS:
        return _cached_summary(query)
    return _summarize(query)


def _summarize(query: str) -> _Summary:
    problem = nesting_problem(query)
    if problem is not None:
        raise QueryRejected(problem)
    document = _parse(query)
    operations = tuple(
        ((definition.get("name") or {}).get("value"), str(definition.get("operation")))
        for definition in document.get("definitions") or ()
        if definition.get("kind") == "OperationDefinition"
    )
    return _Summary(_document_depth(document), operations)


_cached_summary = functools.lru_cache(maxsize=512)(_summarize)


def _parse(query: str) -> dict[str, Any]:
    try:
        encoded = query.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryRejected("the query is not valid Unicode text") from None
    try:
        document = json.loads(_parse_to_json_ast(encoded))
    except GraphQLSyntaxError as error:
        raise QueryRejected(_syntax_message(str(error.message))) from None
    except RecursionError:
        raise QueryRejected("the query is nested too deeply") from None
    if not isinstance(document, dict):  # pragma: no cover - the parser always gives a Document
        raise QueryRejected("the query could not be parsed")
    return document


def _syntax_message(message: str) -> str:
    # libgraphqlparser says "1.11: syntax error, unexpected EOF" (or "1.3-5: ...").
    located = _LOCATED.match(message)
    if located is None:
        return f"syntax error: {message}"
    line, column, detail = located.groups()
    return f"syntax error at line {line}, column {column}: {detail}"


_LOCATED = re.compile(r"(\d+)\.(\d+)(?:-\d+)?: (?:syntax error, )?(.*)", re.S)


def _document_depth(document: dict[str, Any]) -> int:
    """The deepest operation, fragments expanded; refuses fragment cycles.

    Each selection set is flattened once into (its own depth, [(fragment, depth at the spread)]),
    then fragment depths are computed with an explicit stack, so neither a long chain of
    fragments nor a fragment used a thousand times costs recursion or exponential time.
    """
    fragments: dict[str, tuple[int, list[tuple[str, int]]]] = {}
    operations: list[tuple[int, list[tuple[str, int]]]] = []
    for definition in document.get("definitions") or ():
        kind = definition.get("kind")
        if kind == "FragmentDefinition":
            name = definition["name"]["value"]
            fragments.setdefault(name, _flatten(definition.get("selectionSet")))
        elif kind == "OperationDefinition":
            operations.append(_flatten(definition.get("selectionSet")))

    resolved: dict[str, int] = {}
    for _, spreads in operations:
        for name, _offset in spreads:
            _resolve(name, fragments, resolved)
    deepest = 0
    for own, spreads in operations:
        deepest = max([deepest, own, *(at + resolved.get(name, 0) for name, at in spreads)])
    return deepest


def _resolve(
    start: str, fragments: dict[str, tuple[int, list[tuple[str, int]]]], resolved: dict[str, int]
) -> None:
    """Depth of fragment ``start`` and of everything it spreads, into ``resolved``."""
    on_path: set[str] = set()
    stack: list[tuple[str, Iterator[tuple[str, int]]]] = []

    def enter(name: str) -> None:
        if name in resolved or name not in fragments:  # unknown: validation reports it
            return
        if name in on_path:
            raise QueryRejected(f"the fragment '{name}' spreads itself")
        on_path.add(name)
        stack.append((name, iter(fragments[name][1])))

    enter(start)
    while stack:
        name, pending = stack[-1]
        child = next(pending, None)
        if child is not None:
            enter(child[0])
            continue
        stack.pop()
        on_path.discard(name)
        own, spreads = fragments[name]
        resolved[name] = max([own, *(at + resolved.get(g, 0) for g, at in spreads)])


def _flatten(selection_set: dict[str, Any] | None) -> tuple[int, list[tuple[str, int]]]:
    """(field depth of the set itself, [(fragment spread, field depth around it)])."""
    own = 0
    spreads: list[tuple[str, int]] = []
    pending: list[tuple[dict[str, Any] | None, int]] = [(selection_set, 0)]
    while pending:
        current, depth = pending.pop()
        for selection in (current or {}).get("selections") or ():
            kind = selection.get("kind")
            if kind == "Field":
                own = max(own, depth + 1)
                pending.append((selection.get("selectionSet"), depth + 1))
            elif kind == "InlineFragment":
                pending.append((selection.get("selectionSet"), depth))
            elif kind == "FragmentSpread":
                spreads.append((selection["name"]["value"], depth))
    return own, spreads
