"""Fuzz harnesses for the parsers that read a client's request, and for the response mapper.

Each harness is a hypothesis test, so the same code runs two ways:

* ``python -m pytest fuzz/fuzz_request_parsing.py -q``: hypothesis generates the inputs, with the
  ``fuzz`` settings profile (``FUZZ_EXAMPLES`` examples per harness, default 2000, no deadline);
* ``python fuzz/fuzz_request_parsing.py [libFuzzer options]``: atheris drives the same harnesses
  through ``fuzz_one_input``, coverage guided; the first input byte picks the harness.

Every harness checks invariants, not just "does not crash": an unexpected exception, or a result
that breaks the contract, is a finding.
"""

from __future__ import annotations

import base64
import re
import sys
import urllib.parse
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make the repository importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import h11
from hypothesis import given
from hypothesis import strategies as st

from engine.http_contract import (
    FormError,
    ScriptResponseError,
    decode_query,
    headers_object,
    parse_form,
    response_from_result,
)
from engine.routing import Route, RouteMatch, RouteTable
from fuzz._harness import FUZZ, run_atheris
from tests.test_http_contract import any_results
from tests.test_routing import by_script, index_order, ref_match, routes_st

_UPLOAD_FILENAME = re.compile(r"[A-Za-z0-9_.-]+")

# Bytes that matter to the parsers, so random inputs reach their interesting states.
_QUERY_BYTES = st.lists(
    st.sampled_from([b"&", b"=", b"+", b"%", b"%2", b"%41", b"%e2%82%ac", b"%ff", b"a", b"\xff"])
    | st.binary(max_size=4),
    max_size=40,
).map(b"".join)

_MULTIPART_PIECES = [
    b"--B",
    b"--B--",
    b"\r\n",
    b"\r\n\r\n",
    b"--",
    b"Content-Disposition: form-data",
    b'; name="a"',
    b"; name=b",
    b'; filename="f.txt"',
    b'; filename="../x"',
    b'; filename=""',
    b"Content-Type: text/plain",
    b":",
    b" ",
    b"data",
    b"\x00\xff",
]
_MULTIPART_BODIES = st.lists(
    st.sampled_from(_MULTIPART_PIECES) | st.binary(max_size=6), max_size=60
).map(b"".join)

_CONTENT_TYPES = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "multipart/form-data; boundary=B",
            'multipart/form-data; boundary="B"',
            "multipart/form-data",
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded; charset=utf-8",
        ]
    ),
    st.text(max_size=40),
    st.text(max_size=80).map(lambda boundary: "multipart/form-data; boundary=" + boundary),
)


@FUZZ
@given(raw=st.one_of(_QUERY_BYTES, st.binary(), st.text()))
def test_fuzz_decode_query(raw: bytes | str) -> None:
    decoded = decode_query(raw)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in decoded.items())
    # Decoding is a fixed point: re-encoding what came out gives the same object back.
    assert decode_query(urllib.parse.urlencode(decoded)) == decoded


@FUZZ
@given(
    raw=st.lists(
        st.tuples(
            st.binary(max_size=12) | st.sampled_from([b"X-A", b"x-a", b"Accept"]),
            st.binary(max_size=24),
        ),
        max_size=12,
    )
)
def test_fuzz_headers_object(raw: list[tuple[bytes, bytes]]) -> None:
    headers = headers_object(raw)
    for name, value in headers.items():
        assert name == name.lower()
        assert value.isascii()
        # The value is the last ASCII value given for that name.
        candidates = [
            v for n, v in raw if n.isascii() and v.isascii() and n.decode().lower() == name
        ]
        assert candidates[-1].decode() == value


@FUZZ
@given(
    content_type=_CONTENT_TYPES,
    body=st.one_of(_MULTIPART_BODIES, _QUERY_BYTES, st.binary(max_size=512)),
    limit=st.integers(min_value=1, max_value=4096),
)
def test_fuzz_parse_form(content_type: str | None, body: bytes, limit: int) -> None:
    try:
        parsed = parse_form(content_type, body, max_upload_bytes=limit)
    except FormError as error:
        assert error.status in (400, 413)
        assert error.message in (
            "Failed to parse form data",
            "File upload exceeds maximum size limit",
        )
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.form.items())
    total = 0
    for entry in parsed.files:
        assert _UPLOAD_FILENAME.fullmatch(entry["filename"])
        data = base64.b64decode(entry["data"], validate=True)
        assert entry["size"] == len(data)
        total += len(data)
    assert total <= limit


_PATHS = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(["a", "b", "users", "api", "*", ":", "%20", "", "x"]), max_size=6).map(
        "/".join
    ),
)


@FUZZ
@given(
    routes=routes_st,
    path=_PATHS,
    method=st.sampled_from(["GET", "POST", "HEAD", "get", "PUT"]) | st.text(max_size=6),
)
def test_fuzz_route_table_match(routes: list[Route], path: str, method: str) -> None:
    result = RouteTable.build(by_script(routes)).match(path, method)
    # The indexed matcher must agree with the slow reference written from the rules.
    assert result == ref_match(index_order(routes), path, method)
    if isinstance(result, RouteMatch):
        assert result.route.method == method or (result.head_fallback and method == "HEAD")


@FUZZ
@given(result=any_results)
def test_fuzz_response_from_result(result: dict[str, Any]) -> None:
    try:
        response = response_from_result(result, handler="h")
    except ScriptResponseError as error:
        assert error.details
        return
    assert 100 <= response.status <= 999
    h11.Response(status_code=200, headers=list(response.headers))


HARNESSES = (
    test_fuzz_decode_query,
    test_fuzz_headers_object,
    test_fuzz_parse_form,
    test_fuzz_route_table_match,
    test_fuzz_response_from_result,
)


if __name__ == "__main__":
    run_atheris(HARNESSES, __file__)
