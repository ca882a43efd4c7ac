"""Fuzz harnesses for what scripts hand to ``fetch`` and ``secretStorage``: options (JSON text
or objects), header values with ``{{secret:NAME}}`` placeholders, and host allow-lists.

* ``python -m pytest fuzz/fuzz_fetch.py -q``: hypothesis, ``FUZZ_EXAMPLES`` examples each;
* ``python fuzz/fuzz_fetch.py [libFuzzer options]``: atheris, coverage guided.

The invariants: options parse or fail with a script-facing ``FetchError`` only, and what parses
can be sent (no line breaks in header values, no engine-owned headers, a token method); the
text and object forms agree; filling placeholders leaves none of the known ones; an allow-list
parses or fails with ``ValueError`` only, and allows each host it names.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make the repository importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import given
from hypothesis import strategies as st

from engine.fetch import SECRET_TEMPLATE, FetchError, fill_secrets, parse_options, secret_names
from engine.secrets import host_allowed, parse_allowed_hosts
from fuzz._harness import FUZZ, run_atheris

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_OPTION_TEXT = '{}[]":,0123456789.-e ntrufalsmethodheadersbodytimeout_msGETPOSTX\\\r\n'

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=16)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
keys = st.sampled_from(["method", "headers", "body", "timeout_ms"]) | st.text(max_size=6)
headers = st.dictionaries(
    st.text(alphabet="Xx-_ :\u00e9\r\n", max_size=10),
    st.text(alphabet="ab {}secret:\r\n\t\x00\u00e9", max_size=24) | scalars,
    max_size=4,
)
options = st.dictionaries(keys, values | headers, max_size=5)


def _parse(raw: Any) -> Any:
    try:
        return parse_options(raw)
    except FetchError as exc:
        message = str(exc)
        assert message.startswith(("Invalid fetch options: ", "Fetch error: ")), message
        return message


@FUZZ
@given(options)
def test_fuzz_options_object(raw: dict[str, Any]) -> None:
    parsed = _parse(raw)
    if isinstance(parsed, str):
        return
    assert _TOKEN.fullmatch(parsed.method) and parsed.method == parsed.method.upper()
    for name, value in parsed.headers:
        assert _TOKEN.fullmatch(name)
        assert not set(value) & {"\r", "\n", "\x00"}
        assert name.lower() not in ("host", "content-length", "transfer-encoding", "connection")
    # The JSON text of the same options means the same.
    try:
        text = json.dumps(raw)
    except ValueError:  # NaN and infinities have no JSON text
        return
    assert _parse(text) == parsed


@FUZZ
@given(st.text(alphabet=_OPTION_TEXT, max_size=120) | st.text(max_size=60))
def test_fuzz_options_text(raw: str) -> None:
    _parse(raw)


@FUZZ
@given(st.text(alphabet="{} secret:abAB\u00e9", max_size=60), st.text(alphabet="xyz", max_size=5))
def test_fuzz_placeholders(value: str, secret: str) -> None:
    headers = [("X", value)]
    names = secret_names(headers)
    ((_, filled),) = fill_secrets(headers, dict.fromkeys(names, secret))
    # Secret values without braces cannot form placeholders: none is left.
    assert SECRET_TEMPLATE.search(filled) is None


@FUZZ
@given(
    st.none()
    | st.text(alphabet="ab.*-,[]:0123456789 \u00e9xn", max_size=40)
    | st.lists(st.text(alphabet="ab.*-[]:019 \u00e9", max_size=12), max_size=4)
)
def test_fuzz_allowed_hosts(raw: Any) -> None:
    try:
        patterns = parse_allowed_hosts(raw)
    except ValueError:
        return
    if patterns is None:
        return
    for pattern in patterns:
        if pattern.startswith("*."):
            assert host_allowed(patterns, "sub" + pattern[1:])
        else:
            assert host_allowed(patterns, pattern)


HARNESSES = (
    test_fuzz_options_object,
    test_fuzz_options_text,
    test_fuzz_placeholders,
    test_fuzz_allowed_hosts,
)


if __name__ == "__main__":
    run_atheris(HARNESSES, __file__)
