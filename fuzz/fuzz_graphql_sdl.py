"""Fuzz harnesses for the GraphQL core's parsers: script SDL fragments and client queries.

Both are outside input: a script's SDL comes from whoever deploys scripts, a query from any
client.  Each harness is a hypothesis test, so the same code runs two ways:

* ``python -m pytest fuzz/fuzz_graphql_sdl.py -q``: hypothesis generates the inputs, with the
  ``fuzz`` settings profile (``FUZZ_EXAMPLES`` examples per harness, default 2000, no deadline);
* ``python fuzz/fuzz_graphql_sdl.py [libFuzzer options]``: atheris drives the same harnesses
  through ``fuzz_one_input``, coverage guided; the first input byte picks the harness.

The invariants: ``check_fragment`` on any text raises ``FragmentError`` or accepts, and what it
accepts prints to canonical SDL that reads back to the same text; ``check_query`` on any text
raises ``QueryRejected`` or accepts, and never lets a query through that crashes the C query
parser (nesting bombs hidden among strings, block strings and comments); the nesting guard
itself never raises.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import given
from hypothesis import strategies as st

from engine.graphql import Operation
from engine.graphql._limits import nesting_problem
from fuzz._harness import FUZZ, run_atheris
from tests.test_graphql_core import (
    any_text,
    check_fragment_only_refuses,
    check_query_only_refuses,
    grammar_sdl,
    near_query,
    near_sdl,
)

# Deep nesting wrapped in the things the guard must see through, or must not be fooled by.
_pieces = st.sampled_from(
    ["{", "}", "[", "]", "(", ")", "a", " ", "\n", '"', '"""', "\\", "#", '\\"', '\\"""', "x:"]
)
nesting_tricks = st.builds(
    lambda prefix, run, middle, suffix: prefix + run + middle + suffix,
    st.lists(_pieces, max_size=12).map("".join),
    st.sampled_from(["{", "[", "(", "{a(x:", '{a(x:"']).flatmap(
        lambda unit: st.integers(1, 3000).map(lambda n: unit * n)
    ),
    st.lists(_pieces, max_size=12).map("".join),
    st.lists(_pieces, max_size=12).map("".join),
)


@FUZZ
@given(
    sdl=st.one_of(grammar_sdl, near_sdl, any_text),
    operation=st.sampled_from(["query", "mutation", "subscription"]),
)
def test_fuzz_check_fragment(sdl: str, operation: Operation) -> None:
    check_fragment_only_refuses(sdl, operation)


@FUZZ
@given(
    query=st.one_of(near_query, nesting_tricks, any_text),
    max_depth=st.integers(0, 30),
)
def test_fuzz_check_query(query: str, max_depth: int) -> None:
    check_query_only_refuses(query, max_depth)


@FUZZ
@given(query=st.one_of(nesting_tricks, st.text(max_size=2000)))
def test_fuzz_nesting_guard(query: str) -> None:
    problem = nesting_problem(query)
    assert problem is None or problem.startswith("the query")


HARNESSES = (test_fuzz_check_fragment, test_fuzz_check_query, test_fuzz_nesting_guard)


if __name__ == "__main__":
    run_atheris(HARNESSES, __file__)
