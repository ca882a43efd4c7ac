"""The route table of script routes and its matcher.

Pure values, no I/O: a :class:`RouteTable` is built once from every script's registrations and
then only read.  A script change builds a new table (:meth:`RouteTable.with_script`) that the
caller swaps in atomically, so requests in flight keep the table they started with.

Matching rules (the original engine's, see ``UPSTREAM_API.md`` §1.4):

* an exact ``(path, method)`` match on the registered path string wins outright;
* otherwise every route competes as a *pattern*, ranked by specificity
  ``1000*literal segments + 100*:param segments - 10*wildcard depth``; the highest wins and
  ties go to the route indexed first (scripts in table order, then registration order);
* paths are compared segment by segment with empty segments ignored, so ``/a/``, ``//a`` and
  ``/a`` are the same path to a pattern; a literal route is a pattern without parameters;
* ``:name`` matches exactly one non-empty segment; the value is kept raw (percent-encoding is
  not decoded, like the original); a bare ``:`` is a literal segment;
* a path ending in ``/*`` is a prefix match: ``/api/*`` matches ``/api/x`` and ``/api/x/y`` but
  not ``/api`` (nor ``/api/``, which is ``/api`` with a trailing slash).  In the same way ``/*``
  matches every path with at least one segment but **not** ``/``: a script that wants the root
  registers ``/`` too.  The prefix is literal text (no parameters are extracted from a wildcard
  route) and the wildcard depth is 1, so a wildcard ranks just below a literal pattern with the
  same number of segments;
* methods are compared case-sensitively (register ``"GET"``); HEAD without a matching HEAD
  route falls back to the GET route and the match says so (``head_fallback``) so the caller
  strips the body;
* no match for the method but a match for others gives :class:`MethodNotAllowed` (HEAD is listed
  whenever GET is); no match at all gives :class:`NoRoute`.

Matching is indexed, not a scan: a dict for exact paths, a dict for normalised literal paths,
one segment trie per method for parameter patterns and a dict of wildcard prefixes per method.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import attrs

RESERVED_PREFIXES: Final = ("/health", "/graphql", "/mcp", "/auth", "/.well-known", "/engine")
_RESERVED_FIRST_SEGMENTS: Final = {prefix[1:]: prefix for prefix in RESERVED_PREFIXES}

_LITERAL_WEIGHT: Final = 1000
_PARAM_WEIGHT: Final = 100
_WILDCARD_WEIGHT: Final = 10


def _segments(path: str) -> tuple[str, ...]:
    # Empty segments carry no meaning for patterns: trailing and doubled slashes are ignored.
    return tuple(segment for segment in path.split("/") if segment)


def reserved_prefix_of(path: str) -> str | None:
    """The engine prefix that ``path`` falls under (``/engine``, ``/engine/x``), else ``None``.

    The check is per segment, so ``/engineering`` is free while ``//engine/x`` (which a pattern
    would match as ``/engine/x``) is reserved.
    """
    segments = _segments(path)
    if not segments:
        return None
    return _RESERVED_FIRST_SEGMENTS.get(segments[0])


def _as_tuple(tags: Iterable[str]) -> tuple[str, ...]:
    return tuple(tags)


@attrs.frozen
class Route:
    """One ``registerRoute`` call of one script."""

    script_uri: str
    path: str
    method: str
    handler: str
    summary: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = attrs.field(default=(), converter=_as_tuple)
    # OpenAPI ``parameters`` (a JSON array) and ``requestBody`` (a JSON object) from the
    # registration metadata, kept as canonical JSON text so a route stays a hashable value.
    parameters_json: str | None = None
    request_body_json: str | None = None


def _copy_params(params: Mapping[str, str]) -> dict[str, str]:
    # A private copy, so a caller mutating its dict cannot change a match after the fact.
    return dict(params)


@attrs.frozen
class RouteMatch:
    """The route to run and the raw ``:param`` values taken from the path."""

    route: Route
    params: dict[str, str] = attrs.field(factory=dict, converter=_copy_params, hash=False)
    # True when a HEAD request is served by the GET route: the caller must drop the body.
    head_fallback: bool = False


@attrs.frozen
class MethodNotAllowed:
    """The path is routed, but not for this method; ``allowed`` are the methods that are."""

    allowed: tuple[str, ...]


@attrs.frozen
class NoRoute:
    """Nothing is registered for this path under any method."""


MatchResult = RouteMatch | MethodNotAllowed | NoRoute


@attrs.frozen
class _Compiled:
    """A route prepared for matching; ``rank`` orders candidates (smaller is better)."""

    route: Route
    index: int
    specificity: int
    # Per segment: the parameter name, or None for a literal segment.  Empty for wildcards.
    param_names: tuple[str | None, ...]
    wildcard_prefix: tuple[str, ...] | None

    @property
    def rank(self) -> tuple[int, int]:
        return (-self.specificity, self.index)

    def params_for(self, segments: tuple[str, ...]) -> dict[str, str]:
        return {
            name: value
            for name, value in zip(self.param_names, segments, strict=False)
            if name is not None
        }


def _is_param(segment: str) -> bool:
    return len(segment) > 1 and segment[0] == ":"


def _compile(route: Route, index: int) -> _Compiled:
    if route.path.endswith("/*"):
        prefix = _segments(route.path[:-2])
        return _Compiled(
            route=route,
            index=index,
            specificity=_LITERAL_WEIGHT * len(prefix) - _WILDCARD_WEIGHT,
            param_names=(),
            wildcard_prefix=prefix,
        )
    names = tuple(seg[1:] if _is_param(seg) else None for seg in _segments(route.path))
    params = sum(1 for name in names if name is not None)
    return _Compiled(
        route=route,
        index=index,
        specificity=_LITERAL_WEIGHT * (len(names) - params) + _PARAM_WEIGHT * params,
        param_names=names,
        wildcard_prefix=None,
    )


@attrs.define
class _TrieNode:
    """One segment position of the parameter patterns of one method."""

    literal: dict[str, _TrieNode] = attrs.field(factory=dict)
    param: _TrieNode | None = None
    # The best pattern ending exactly here (patterns differing only in parameter names share
    # a node; the first indexed of them is the only one that can ever win).
    best: _Compiled | None = None

    def insert(self, compiled: _Compiled, segments: tuple[str, ...]) -> None:
        node = self
        for segment, name in zip(segments, compiled.param_names, strict=True):
            if name is None:
                node = node.literal.setdefault(segment, _TrieNode())
            else:
                if node.param is None:
                    node.param = _TrieNode()
                node = node.param
        if node.best is None or compiled.rank < node.best.rank:
            node.best = compiled

    def search(self, segments: tuple[str, ...], position: int) -> _Compiled | None:
        if position == len(segments):
            return self.best
        found: _Compiled | None = None
        child = self.literal.get(segments[position])
        if child is not None:
            found = child.search(segments, position + 1)
        if self.param is not None:
            other = self.param.search(segments, position + 1)
            if other is not None and (found is None or other.rank < found.rank):
                found = other
        return found


@attrs.define
class _MethodIndex:
    """Everything registered under one method."""

    trie: _TrieNode = attrs.field(factory=_TrieNode)
    has_patterns: bool = False
    # Wildcard prefix → the first-indexed wildcard route with that prefix.
    wildcards: dict[tuple[str, ...], _Compiled] = attrs.field(factory=dict)
    wildcard_lengths: tuple[int, ...] = ()


@attrs.frozen(eq=False)
class RouteTable:
    """An immutable index of every script's routes; build it with :meth:`build`."""

    _routes_by_script: Mapping[str, tuple[Route, ...]]
    _ordered: tuple[Route, ...]
    _exact: dict[tuple[str, str], _Compiled]
    _literal: dict[tuple[str, str], _Compiled]
    _methods: dict[str, _MethodIndex]

    @classmethod
    def build(cls, routes_by_script: Mapping[str, Sequence[Route]]) -> RouteTable:
        by_script = {uri: tuple(routes) for uri, routes in routes_by_script.items()}
        ordered = tuple(route for routes in by_script.values() for route in routes)
        exact: dict[tuple[str, str], _Compiled] = {}
        literal: dict[tuple[str, str], _Compiled] = {}
        methods: dict[str, _MethodIndex] = {}
        # Routes are indexed in order, so ``setdefault`` keeps the one that wins ties.
        for index, route in enumerate(ordered):
            compiled = _compile(route, index)
            exact.setdefault((route.path, route.method), compiled)
            method_index = methods.setdefault(route.method, _MethodIndex())
            if compiled.wildcard_prefix is not None:
                method_index.wildcards.setdefault(compiled.wildcard_prefix, compiled)
            elif all(name is None for name in compiled.param_names):
                normalised = "/" + "/".join(_segments(route.path))
                literal.setdefault((normalised, route.method), compiled)
            else:
                method_index.trie.insert(compiled, _segments(route.path))
                method_index.has_patterns = True
        for method_index in methods.values():
            method_index.wildcard_lengths = tuple(
                sorted({len(prefix) for prefix in method_index.wildcards}, reverse=True)
            )
        return cls(by_script, ordered, exact, literal, methods)

    def routes(self) -> list[Route]:
        """Every route in index order."""
        return list(self._ordered)

    def routes_by_script(self) -> dict[str, tuple[Route, ...]]:
        """The registrations the table was built from, in table order."""
        return dict(self._routes_by_script)

    def with_script(self, script_uri: str, routes: Sequence[Route]) -> RouteTable:
        """A new table with ``script_uri``'s routes replaced (appended if the script is new)."""
        by_script = dict(self._routes_by_script)
        by_script[script_uri] = tuple(routes)
        return RouteTable.build(by_script)

    def without_script(self, script_uri: str) -> RouteTable:
        """A new table without any route of ``script_uri``."""
        by_script = dict(self._routes_by_script)
        by_script.pop(script_uri, None)
        return RouteTable.build(by_script)

    def match(self, path: str, method: str) -> MatchResult:
        """Find the route for a raw request path (no query string) and an uppercase method."""
        segments = _segments(path)
        normalised = "/" + "/".join(segments)
        found = self._match_method(path, normalised, segments, method)
        if found is not None:
            return found
        if method == "HEAD":
            fallback = self._match_method(path, normalised, segments, "GET")
            if fallback is not None:
                return RouteMatch(fallback.route, fallback.params, head_fallback=True)
        allowed = {
            other
            for other in self._methods
            if other != method and self._match_method(path, normalised, segments, other) is not None
        }
        if not allowed:
            return NoRoute()
        if "GET" in allowed:
            allowed.add("HEAD")
        allowed.discard(method)
        return MethodNotAllowed(tuple(sorted(allowed)))

    def _match_method(
        self, path: str, normalised: str, segments: tuple[str, ...], method: str
    ) -> RouteMatch | None:
        exact = self._exact.get((path, method))
        if exact is not None:
            return RouteMatch(exact.route, exact.params_for(segments))
        # A literal route outranks every parameter pattern and wildcard that can match the
        # same path (it has the most literal segments possible), so it needs no comparison.
        literal = self._literal.get((normalised, method))
        if literal is not None:
            return RouteMatch(literal.route)
        index = self._methods.get(method)
        if index is None:
            return None
        best = index.trie.search(segments, 0) if index.has_patterns else None
        for length in index.wildcard_lengths:
            # Longer prefixes rank higher, so the first hit is the best wildcard.
            if length < len(segments):
                wildcard = index.wildcards.get(segments[:length])
                if wildcard is not None:
                    if best is None or wildcard.rank < best.rank:
                        best = wildcard
                    break
        if best is None:
            return None
        return RouteMatch(best.route, best.params_for(segments))
