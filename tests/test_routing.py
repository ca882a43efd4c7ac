"""The route table: what a request path and method resolve to (UPSTREAM_API.md §1.4, §8 item 2)."""

from __future__ import annotations

import time

import attrs
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.routing import (
    RESERVED_PREFIXES,
    MethodNotAllowed,
    NoRoute,
    Route,
    RouteMatch,
    RouteTable,
    reserved_prefix_of,
)


def route(path: str, method: str = "GET", handler: str = "h", script: str = "s") -> Route:
    return Route(script_uri=script, path=path, method=method, handler=handler)


def table(*routes: Route) -> RouteTable:
    by_script: dict[str, list[Route]] = {}
    for r in routes:
        by_script.setdefault(r.script_uri, []).append(r)
    return RouteTable.build(by_script)


def handler_for(t: RouteTable, path: str, method: str = "GET") -> str | None:
    result = t.match(path, method)
    return result.route.handler if isinstance(result, RouteMatch) else None


# ---------------------------------------------------------------------------------------------
# Precedence


def test_exact_beats_param_beats_wildcard() -> None:
    t = table(
        route("/*", handler="wild"),
        route("/users/*", handler="users_wild"),
        route("/users/:id", handler="param"),
        route("/users/me", handler="exact"),
    )
    assert handler_for(t, "/users/me") == "exact"
    assert handler_for(t, "/users/42") == "param"
    assert handler_for(t, "/users/42/posts") == "users_wild"
    assert handler_for(t, "/other") == "wild"


def test_more_literal_segments_beat_more_params() -> None:
    t = table(route("/:a/:b", handler="params"), route("/a/:b", handler="one_literal"))
    assert handler_for(t, "/a/x") == "one_literal"
    assert handler_for(t, "/b/x") == "params"


def test_longer_wildcard_prefix_wins() -> None:
    t = table(route("/api/*", handler="short"), route("/api/v1/*", handler="long"))
    assert handler_for(t, "/api/v1/x") == "long"
    assert handler_for(t, "/api/v2/x") == "short"


def test_specificity_is_the_upstream_arithmetic() -> None:
    # 1000 per literal, 100 per :param, -10 for the wildcard: ten params (1000) outrank
    # "/a/*" (990), nine (900) do not.
    t = table(
        route("/a/*", handler="wild"),
        route("/" + "/".join(f":p{i}" for i in range(10)), handler="ten"),
        route("/" + "/".join(f":p{i}" for i in range(9)), handler="nine"),
    )
    assert handler_for(t, "/a" + "/x" * 9) == "ten"
    assert handler_for(t, "/a" + "/x" * 8) == "wild"


def test_ties_go_to_the_route_indexed_first() -> None:
    first = route("/items/:id", handler="first", script="a")
    second = route("/items/:name", handler="second", script="b")
    assert handler_for(RouteTable.build({"a": [first], "b": [second]}), "/items/1") == "first"
    assert handler_for(RouteTable.build({"b": [second], "a": [first]}), "/items/1") == "second"


def test_first_registration_of_a_duplicate_exact_route_wins() -> None:
    t = table(route("/x", handler="one"), route("/x", handler="two"))
    assert handler_for(t, "/x") == "one"


def test_exact_path_string_wins_over_a_trailing_slash_twin() -> None:
    # Both are the literal pattern "/a"; the exact string match decides before specificity.
    t = table(route("/a/", handler="slash"), route("/a", handler="plain"))
    assert handler_for(t, "/a") == "plain"
    assert handler_for(t, "/a/") == "slash"
    assert handler_for(t, "//a//") == "slash"  # pattern tie: first indexed


# ---------------------------------------------------------------------------------------------
# Parameters


def test_param_values_are_raw_not_percent_decoded() -> None:
    result = table(route("/users/:id")).match("/users/a%20b", "GET")
    assert isinstance(result, RouteMatch)
    assert result.params == {"id": "a%20b"}


def test_several_params_are_extracted() -> None:
    result = table(route("/u/:user/posts/:post")).match("/u/ann/posts/7", "GET")
    assert isinstance(result, RouteMatch)
    assert result.params == {"user": "ann", "post": "7"}


def test_param_matches_exactly_one_non_empty_segment() -> None:
    t = table(route("/users/:id"))
    assert isinstance(t.match("/users", "GET"), NoRoute)
    assert isinstance(t.match("/users/", "GET"), NoRoute)
    assert isinstance(t.match("/users/1/2", "GET"), NoRoute)
    assert handler_for(t, "/users//1") == "h"  # empty segments do not count


def test_bare_colon_is_a_literal_segment() -> None:
    t = table(route("/a/:"))
    assert handler_for(t, "/a/:") == "h"
    assert isinstance(t.match("/a/x", "GET"), NoRoute)


def test_literal_route_has_no_params() -> None:
    result = table(route("/hello")).match("/hello/", "GET")
    assert isinstance(result, RouteMatch)
    assert result.params == {}


def test_match_params_cannot_be_changed_through_the_callers_dict() -> None:
    given_params = {"id": "1"}
    match = RouteMatch(route("/u/:id"), given_params)
    given_params["id"] = "2"
    assert match.params == {"id": "1"}


# ---------------------------------------------------------------------------------------------
# Trailing slashes and wildcards


@pytest.mark.parametrize("path", ["/users/1/", "//users/1", "/users//1", "/users/1//"])
def test_empty_segments_are_ignored_for_patterns(path: str) -> None:
    assert handler_for(table(route("/users/:id")), path) == "h"


def test_trailing_slash_in_the_registration_is_ignored() -> None:
    assert handler_for(table(route("/users/:id/")), "/users/1") == "h"
    assert handler_for(table(route("/hello/")), "/hello") == "h"


def test_literal_route_matches_with_a_trailing_slash() -> None:
    assert handler_for(table(route("/hello")), "/hello/") == "h"


def test_wildcard_is_a_prefix_match_below_the_prefix() -> None:
    t = table(route("/api/*"))
    assert handler_for(t, "/api/a") == "h"
    assert handler_for(t, "/api/a/b") == "h"
    assert isinstance(t.match("/api", "GET"), NoRoute)
    assert isinstance(t.match("/api/", "GET"), NoRoute)
    assert isinstance(t.match("/apix/a", "GET"), NoRoute)


def test_wildcard_extracts_no_params_and_its_prefix_is_literal() -> None:
    t = table(route("/u/:id/*"))
    result = t.match("/u/:id/x", "GET")
    assert isinstance(result, RouteMatch)
    assert result.params == {}
    assert isinstance(t.match("/u/7/x", "GET"), NoRoute)


def test_root_wildcard_matches_every_path_but_the_root() -> None:
    t = table(route("/*"))
    assert handler_for(t, "/a") == "h"
    assert handler_for(t, "/a/b/c") == "h"
    assert isinstance(t.match("/", "GET"), NoRoute)
    assert isinstance(t.match("", "GET"), NoRoute)


def test_star_anywhere_but_the_end_is_literal() -> None:
    t = table(route("/a/*/b"), route("/files*"))
    assert handler_for(t, "/a/*/b") == "h"
    assert isinstance(t.match("/a/x/b", "GET"), NoRoute)
    assert handler_for(t, "/files*") == "h"
    assert isinstance(t.match("/files", "GET"), NoRoute)


def test_root_route() -> None:
    t = table(route("/"))
    assert handler_for(t, "/") == "h"
    assert handler_for(t, "//") == "h"
    assert isinstance(t.match("/x", "GET"), NoRoute)


# ---------------------------------------------------------------------------------------------
# Methods


def test_method_comparison_is_case_sensitive() -> None:
    t = table(route("/x", method="get"))
    assert isinstance(t.match("/x", "GET"), MethodNotAllowed)
    assert handler_for(t, "/x", "get") == "h"


def test_head_falls_back_to_get_and_says_so() -> None:
    result = table(route("/x")).match("/x", "HEAD")
    assert isinstance(result, RouteMatch)
    assert result.route.method == "GET"
    assert result.head_fallback is True


def test_head_fallback_keeps_params() -> None:
    result = table(route("/u/:id")).match("/u/5", "HEAD")
    assert isinstance(result, RouteMatch)
    assert result.params == {"id": "5"}
    assert result.head_fallback


def test_explicit_head_route_wins_over_get() -> None:
    t = table(route("/x", handler="get"), route("/x", method="HEAD", handler="head"))
    result = t.match("/x", "HEAD")
    assert isinstance(result, RouteMatch)
    assert result.route.handler == "head"
    assert result.head_fallback is False


def test_head_pattern_wins_over_get_exact() -> None:
    # A HEAD registration that matches at all is preferred to falling back to GET.
    t = table(route("/a/b", handler="get"), route("/a/:x", method="HEAD", handler="head"))
    assert handler_for(t, "/a/b", "HEAD") == "head"


def test_get_match_is_not_a_head_fallback() -> None:
    result = table(route("/x")).match("/x", "GET")
    assert isinstance(result, RouteMatch)
    assert result.head_fallback is False


def test_known_path_with_other_method_is_method_not_allowed() -> None:
    t = table(route("/x", method="POST"), route("/x", method="PUT"), route("/y"))
    assert t.match("/x", "GET") == MethodNotAllowed(allowed=("POST", "PUT"))


def test_method_not_allowed_lists_head_when_get_is_allowed() -> None:
    t = table(route("/x"), route("/x", method="POST"))
    assert t.match("/x", "DELETE") == MethodNotAllowed(allowed=("GET", "HEAD", "POST"))


def test_method_not_allowed_considers_patterns() -> None:
    t = table(route("/u/:id", method="POST"), route("/files/*", method="PUT"))
    assert t.match("/u/1", "GET") == MethodNotAllowed(allowed=("POST",))
    assert t.match("/files/a/b", "GET") == MethodNotAllowed(allowed=("PUT",))


def test_unknown_path_is_no_route() -> None:
    t = table(route("/x"), route("/u/:id", method="POST"))
    assert t.match("/nope", "GET") == NoRoute()
    assert t.match("/u/1/2", "POST") == NoRoute()


def test_empty_table_matches_nothing() -> None:
    t = RouteTable.build({})
    assert t.match("/", "GET") == NoRoute()
    assert t.routes() == []


# ---------------------------------------------------------------------------------------------
# Reserved prefixes


@pytest.mark.parametrize("prefix", RESERVED_PREFIXES)
def test_reserved_prefixes_cover_themselves_and_below(prefix: str) -> None:
    assert reserved_prefix_of(prefix) == prefix
    assert reserved_prefix_of(prefix + "/") == prefix
    assert reserved_prefix_of(prefix + "/x/y") == prefix
    assert reserved_prefix_of("/" + prefix) == prefix  # "//engine" is "/engine" to a pattern


@pytest.mark.parametrize(
    "path", ["/engineering", "/healthz", "/authors/1", "/", "", "/x/engine", "/Engine", "/mcp2"]
)
def test_paths_outside_reserved_prefixes(path: str) -> None:
    assert reserved_prefix_of(path) is None


# ---------------------------------------------------------------------------------------------
# Table maintenance


def test_routes_are_listed_in_index_order() -> None:
    a1, a2, b1 = route("/a1", script="a"), route("/a2", script="a"), route("/b1", script="b")
    assert RouteTable.build({"b": [b1], "a": [a1, a2]}).routes() == [b1, a1, a2]


def test_with_script_replaces_only_that_scripts_routes() -> None:
    old = RouteTable.build({"a": [route("/a", script="a")], "b": [route("/b", script="b")]})
    new = old.with_script("a", [route("/a2", script="a")])
    assert [r.path for r in new.routes()] == ["/a2", "/b"]
    assert isinstance(new.match("/a", "GET"), NoRoute)
    # The old table is untouched: requests in flight keep the routes they started with.
    assert handler_for(old, "/a") == "h"


def test_with_script_appends_a_new_script() -> None:
    t = RouteTable.build({"a": [route("/x", handler="a", script="a")]})
    t = t.with_script("b", [route("/x", handler="b", script="b")])
    assert handler_for(t, "/x") == "a"
    assert [r.script_uri for r in t.routes()] == ["a", "b"]


def test_without_script_removes_its_routes() -> None:
    t = RouteTable.build({"a": [route("/a", script="a")], "b": [route("/b", script="b")]})
    t = t.without_script("a")
    assert isinstance(t.match("/a", "GET"), NoRoute)
    assert handler_for(t, "/b") == "h"
    assert t.without_script("missing").routes() == t.routes()


def test_route_tags_become_a_tuple() -> None:
    r = Route("s", "/x", "GET", "h", tags=["a", "b"])  # type: ignore[arg-type]
    assert r.tags == ("a", "b")


def test_a_thousand_route_table_matches_in_well_under_50_microseconds() -> None:
    routes = []
    for i in range(1000):
        shape = (f"/r{i}/items", f"/r{i}/items/:id", f"/r{i}/:a/:b/x", f"/r{i}/*")[i % 4]
        routes.append(route(shape, method="GET" if i % 3 else "POST", script=f"s{i % 20}"))
    t = table(*routes)
    paths = ["/r1/items/42", "/r2/a/b/x/", "/r999/items/1", "/r3/q/w/e", "/nothing/here"]
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        for path in paths:
            t.match(path, "GET")
    per_match = (time.perf_counter() - started) / (rounds * len(paths))
    assert per_match < 50e-6, f"{per_match * 1e6:.1f} µs per match"


# ---------------------------------------------------------------------------------------------
# Properties against a slow reference matcher written straight from the rules


def ref_segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def ref_pattern_params(pattern: str, path: str) -> dict[str, str] | None:
    if pattern.endswith("/*"):
        prefix, segments = ref_segments(pattern[:-2]), ref_segments(path)
        ok = len(segments) > len(prefix) and segments[: len(prefix)] == prefix
        return {} if ok else None
    pattern_segments, segments = ref_segments(pattern), ref_segments(path)
    if len(pattern_segments) != len(segments):
        return None
    params = {}
    for p, s in zip(pattern_segments, segments, strict=True):
        if p.startswith(":") and len(p) > 1:
            params[p[1:]] = s
        elif p != s:
            return None
    return params


def ref_specificity(pattern: str) -> int:
    if pattern.endswith("/*"):
        return 1000 * len(ref_segments(pattern[:-2])) - 10
    segments = ref_segments(pattern)
    params = sum(1 for s in segments if s.startswith(":") and len(s) > 1)
    return 1000 * (len(segments) - params) + 100 * params


def ref_for_method(routes: list[Route], path: str, method: str) -> RouteMatch | None:
    for r in routes:
        if r.path == path and r.method == method:
            params = ref_pattern_params(r.path, path)
            assert params is not None
            return RouteMatch(r, params)
    best: tuple[int, int, Route, dict[str, str]] | None = None
    for index, r in enumerate(routes):
        if r.method != method:
            continue
        params = ref_pattern_params(r.path, path)
        if params is None:
            continue
        key = (ref_specificity(r.path), -index)
        if best is None or key > best[:2]:
            best = (*key, r, params)
    return None if best is None else RouteMatch(best[2], best[3])


def ref_match(routes: list[Route], path: str, method: str) -> object:
    found = ref_for_method(routes, path, method)
    if found is not None:
        return found
    if method == "HEAD":
        fallback = ref_for_method(routes, path, "GET")
        if fallback is not None:
            return RouteMatch(fallback.route, fallback.params, head_fallback=True)
    allowed = {r.method for r in routes if ref_for_method(routes, path, r.method) is not None}
    if "GET" in allowed:
        allowed.add("HEAD")
    allowed.discard(method)
    return MethodNotAllowed(tuple(sorted(allowed))) if allowed else NoRoute()


LITERALS = ["a", "b", "users", "api", "*", ":", "%20"]
METHODS = ["GET", "POST", "HEAD", "get"]

segment_st = st.one_of(st.sampled_from(LITERALS), st.sampled_from([":id", ":x", ":name"]))


@st.composite
def route_paths(draw: st.DrawFn) -> str:
    segments = draw(st.lists(segment_st, max_size=4))
    path = "/" + "/".join(segments)
    if draw(st.booleans()):
        path = path.rstrip("/") + "/*"
    elif draw(st.booleans()):
        path += "/"
    return path


routes_st = st.lists(
    st.builds(
        Route,
        script_uri=st.sampled_from(["s1", "s2", "s3"]),
        path=route_paths(),
        method=st.sampled_from(METHODS),
        handler=st.sampled_from(["h1", "h2", "h3"]),
    ),
    min_size=1,
    max_size=12,
)


def by_script(routes: list[Route]) -> dict[str, list[Route]]:
    grouped: dict[str, list[Route]] = {}
    for r in routes:
        grouped.setdefault(r.script_uri, []).append(r)
    return grouped


def index_order(routes: list[Route]) -> list[Route]:
    return [r for rs in by_script(routes).values() for r in rs]


@st.composite
def path_matching(draw: st.DrawFn, pattern: str) -> str:
    """A request path built to match ``pattern`` (with slashes shuffled around)."""
    wildcard = pattern.endswith("/*")
    out = []
    for segment in ref_segments(pattern[:-2] if wildcard else pattern):
        # A wildcard's prefix is literal text, ":id" included.
        is_param = not wildcard and segment.startswith(":") and len(segment) > 1
        out.append(draw(st.sampled_from([*LITERALS, "7", "x%2Fy"])) if is_param else segment)
    if wildcard:
        out += draw(st.lists(st.sampled_from(["a", "b", "z", "*"]), min_size=1, max_size=3))
    separators = [draw(st.sampled_from(["/", "//"])) for _ in out]
    path = "".join(sep + s for sep, s in zip(separators, out, strict=True)) or "/"
    return path + ("/" if draw(st.booleans()) else "")


@settings(max_examples=400)
@given(data=st.data(), routes=routes_st)
def test_match_agrees_with_the_reference_on_paths_built_to_match(
    data: st.DataObject, routes: list[Route]
) -> None:
    target = data.draw(st.sampled_from(routes))
    path = data.draw(path_matching(target.path))
    method = data.draw(st.sampled_from([target.method, *METHODS]))
    ordered = index_order(routes)
    result = RouteTable.build(by_script(routes)).match(path, method)
    assert result == ref_match(ordered, path, method)
    if method == target.method:
        assert isinstance(result, RouteMatch)
        best = ref_specificity(result.route.path)
        # The winner is at least as specific as the route the path was built for.
        assert result.route.path == path or best >= ref_specificity(target.path)


@settings(max_examples=300)
@given(
    routes=routes_st,
    path=st.lists(st.sampled_from([*LITERALS, "7", ""]), max_size=5).map("/".join),
    method=st.sampled_from(METHODS),
)
@example(routes=[Route("s1", "/*", "GET", "h")], path="", method="GET")
def test_match_agrees_with_the_reference_on_any_path(
    routes: list[Route], path: str, method: str
) -> None:
    result = RouteTable.build(by_script(routes)).match(path, method)
    assert result == ref_match(index_order(routes), path, method)


@settings(max_examples=300)
@given(routes=routes_st, path=st.text(), method=st.text(max_size=8))
def test_match_never_raises_and_params_come_from_the_path(
    routes: list[Route], path: str, method: str
) -> None:
    result = RouteTable.build(by_script(routes)).match(path, method)
    assert isinstance(result, RouteMatch | MethodNotAllowed | NoRoute)
    if isinstance(result, RouteMatch):
        segments = ref_segments(path)
        assert all(value in segments for value in result.params.values())
        assert result.route.method == method or (result.head_fallback and method == "HEAD")


@settings(max_examples=200)
@given(
    routes=routes_st,
    script=st.sampled_from(["s1", "s2", "s4"]),
    replacement=st.lists(
        st.builds(
            Route,
            script_uri=st.just("x"),
            path=route_paths(),
            method=st.just("GET"),
            handler=st.just("new"),
        ),
        max_size=3,
    ),
    probes=st.lists(st.lists(st.sampled_from(LITERALS), max_size=4).map("/".join), max_size=6),
)
def test_with_and_without_script_agree_with_a_rebuild(
    routes: list[Route], script: str, replacement: list[Route], probes: list[str]
) -> None:
    original = by_script(routes)
    new_routes = [attrs.evolve(r, script_uri=script) for r in replacement]
    base = RouteTable.build(original)

    replaced = base.with_script(script, new_routes)
    expected_map = dict(original)
    expected_map[script] = new_routes
    rebuilt = RouteTable.build(expected_map)
    assert replaced.routes() == rebuilt.routes()

    removed = base.without_script(script)
    rebuilt_removed = RouteTable.build({k: v for k, v in original.items() if k != script})
    assert removed.routes() == rebuilt_removed.routes()

    for probe in ["/" + p for p in probes]:
        for method in ("GET", "POST", "HEAD"):
            assert replaced.match(probe, method) == rebuilt.match(probe, method)
            assert removed.match(probe, method) == rebuilt_removed.match(probe, method)
