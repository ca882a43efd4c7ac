"""What a script sees of a request and how its return value becomes a response.

UPSTREAM_API.md §1.5 (request object), §1.6 (response mapping), §1.7 (error envelope) and §8
items 4-6.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from typing import Any

import h11
import httpx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine.http_contract import (
    MULTIPART_FRAMING_ALLOWANCE,
    FormError,
    HttpResponse,
    ParsedForm,
    ScriptResponseError,
    anonymous_auth,
    body_text,
    build_http_context,
    build_request,
    decode_query,
    error_envelope,
    headers_object,
    parse_form,
    response_from_result,
)

MiB = 1024 * 1024


def multipart(
    fields: list[tuple[str, str]] = (),  # type: ignore[assignment]
    files: list[tuple[str, tuple[str, bytes, str]]] = (),  # type: ignore[assignment]
) -> tuple[str, bytes]:
    """A real multipart body and its Content-Type, as an HTTP client sends them."""
    request = httpx.Request("POST", "http://test/", data=dict(fields), files=list(files))
    return request.headers["content-type"], request.read()


def hand_multipart(boundary: str, *parts: tuple[str, bytes]) -> bytes:
    """A multipart body from raw part headers, for shapes clients do not produce."""
    out = b""
    for headers, data in parts:
        out += f"--{boundary}\r\n{headers}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


# ---------------------------------------------------------------------------------------------
# Query and urlencoded decoding


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"a=1&b=2", {"a": "1", "b": "2"}),
        (b"q=hello+world", {"q": "hello world"}),
        (b"q=a%2Bb", {"q": "a+b"}),
        (b"q=%E2%82%AC%20x", {"q": "€ x"}),
        (b"a=1&a=2&a=3", {"a": "3"}),
        (b"flag&x=1", {"flag": "", "x": "1"}),
        (b"&&a=1&&", {"a": "1"}),
        (b"=v", {"": "v"}),
        (b"a=b=c", {"a": "b=c"}),
        (b"k%20ey=v", {"k ey": "v"}),
        (b"bad=%zz%4", {"bad": "%zz%4"}),
        (b"bad=%ff%fe", {"bad": "\ufffd\ufffd"}),
        (b"", {}),
        ("q=caf%C3%A9", {"q": "café"}),
        ("q=café", {"q": "café"}),
    ],
)
def test_decode_query(raw: bytes | str, expected: dict[str, str]) -> None:
    assert decode_query(raw) == expected


@given(pairs=st.lists(st.tuples(st.text(), st.text())))
def test_decode_query_inverts_urlencode_with_last_duplicate_winning(
    pairs: list[tuple[str, str]],
) -> None:
    encoded = urllib.parse.urlencode(pairs)
    assert decode_query(encoded) == dict(pairs)
    assert decode_query(encoded.encode("ascii")) == dict(pairs)


@given(raw=st.binary())
def test_decode_query_accepts_any_bytes(raw: bytes) -> None:
    decoded = decode_query(raw)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in decoded.items())


# ---------------------------------------------------------------------------------------------
# Headers and body


def test_headers_are_lowercased_and_the_last_value_wins() -> None:
    raw = [(b"X-Thing", b"1"), (b"Accept", b"text/html"), (b"x-thing", b"2")]
    assert headers_object(raw) == {"x-thing": "2", "accept": "text/html"}


def test_non_ascii_header_values_are_dropped() -> None:
    raw = [(b"x-name", b"plain"), (b"x-name", "café".encode()), (b"x-other", b"\xff")]
    assert headers_object(raw) == {"x-name": "plain"}


def test_no_headers_is_an_empty_object() -> None:
    assert headers_object([]) == {}


def test_body_text() -> None:
    assert body_text(b"") is None
    assert body_text(b'{"a": 1}') == '{"a": 1}'
    assert body_text("€".encode()) == "€"
    assert body_text(b"\xff\xfe") == ""


# ---------------------------------------------------------------------------------------------
# Forms


def test_urlencoded_form_is_decoded_like_a_query() -> None:
    form = parse_form(
        "application/x-www-form-urlencoded", b"name=J+Doe&x=%26&x=2", max_upload_bytes=MiB
    )
    assert form == ParsedForm({"name": "J Doe", "x": "2"}, [])


def test_content_type_parameters_and_case_are_ignored() -> None:
    form = parse_form(
        "Application/X-WWW-Form-Urlencoded; charset=UTF-8", b"a=1", max_upload_bytes=MiB
    )
    assert form.form == {"a": "1"}


@pytest.mark.parametrize(
    "content_type", [None, "", "application/json", "text/plain", "multipart/mixed; boundary=x"]
)
def test_other_content_types_give_an_empty_form(content_type: str | None) -> None:
    assert parse_form(content_type, b"a=1", max_upload_bytes=MiB) == ParsedForm({}, [])


def test_multipart_fields_and_files() -> None:
    content_type, body = multipart(
        fields=[("title", "Hello, wörld"), ("n", "1")],
        files=[("upload", ("report.v2_final-1.pdf", b"%PDF\x00\xff", "application/pdf"))],
    )
    form = parse_form(content_type, body, max_upload_bytes=MiB)
    assert form.form == {"title": "Hello, wörld", "n": "1"}
    assert form.files == [
        {
            "field": "upload",
            "filename": "report.v2_final-1.pdf",
            "contentType": "application/pdf",
            "data": base64.b64encode(b"%PDF\x00\xff").decode(),
            "size": 6,
        }
    ]


def test_several_files_keep_their_order() -> None:
    content_type, body = multipart(
        files=[("a", ("one.txt", b"1", "text/plain")), ("a", ("two.txt", b"22", "text/plain"))]
    )
    files = parse_form(content_type, body, max_upload_bytes=MiB).files
    assert [(f["filename"], f["size"]) for f in files] == [("one.txt", 1), ("two.txt", 2)]


def test_file_part_without_content_type_has_no_content_type_key() -> None:
    body = hand_multipart(
        "B", ('Content-Disposition: form-data; name="f"; filename="a.bin"', b"xyz")
    )
    (entry,) = parse_form("multipart/form-data; boundary=B", body, max_upload_bytes=MiB).files
    assert "contentType" not in entry
    assert entry["data"] == base64.b64encode(b"xyz").decode()


def test_quoted_boundary_and_utf8_field_names() -> None:
    body = hand_multipart("a b", ('Content-Disposition: form-data; name="näme"', "välue".encode()))
    form = parse_form('multipart/form-data; boundary="a b"', body, max_upload_bytes=MiB)
    assert form.form == {"näme": "välue"}


def test_empty_file_input_is_skipped() -> None:
    body = hand_multipart(
        "B",
        ('Content-Disposition: form-data; name="f"; filename=""', b""),
        ('Content-Disposition: form-data; name="t"', b"x"),
    )
    assert parse_form("multipart/form-data; boundary=B", body, max_upload_bytes=MiB) == (
        ParsedForm({"t": "x"}, [])
    )


def test_parts_that_are_not_form_fields_are_ignored() -> None:
    body = hand_multipart(
        "B",
        ("Content-Type: text/plain", b"no disposition"),
        ('Content-Disposition: attachment; name="x"', b"wrong disposition"),
        ("Content-Disposition: form-data", b"no name"),
        ('Content-Disposition: form-data; name="ok"', b"1"),
    )
    form = parse_form("multipart/form-data; boundary=B", body, max_upload_bytes=MiB)
    assert form == ParsedForm({"ok": "1"}, [])


@pytest.mark.parametrize(
    "filename", ["../../etc/passwd", "my file.txt", "café.txt", "a;b", "x\\y", ".."[:1] + "/"]
)
def test_bad_upload_filename_is_a_400(filename: str) -> None:
    body = hand_multipart(
        "B", (f'Content-Disposition: form-data; name="f"; filename="{filename}"', b"x")
    )
    with pytest.raises(FormError) as caught:
        parse_form("multipart/form-data; boundary=B", body, max_upload_bytes=MiB)
    assert (caught.value.status, caught.value.message) == (400, "Failed to parse form data")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--B\r\n\r\nx\r\n--B--\r\n"),  # no boundary parameter
        ("multipart/form-data; boundary=B", b"not multipart at all"),
        ("multipart/form-data; boundary=B", b"--B\r\nContent-Disposition: form-data; name=a"),
        ("multipart/form-data; boundary=B", b""),
        ("multipart/form-data; boundary=" + "x" * 100, b"--x\r\n"),  # boundary too long
    ],
)
def test_unparsable_multipart_is_a_400(content_type: str, body: bytes) -> None:
    with pytest.raises(FormError) as caught:
        parse_form(content_type, body, max_upload_bytes=MiB)
    assert (caught.value.status, caught.value.message) == (400, "Failed to parse form data")


def test_upload_over_the_limit_is_a_413() -> None:
    content_type, body = multipart(files=[("f", ("big.bin", b"x" * 1001, "x/y"))])
    with pytest.raises(FormError) as caught:
        parse_form(content_type, body, max_upload_bytes=1000)
    assert caught.value.status == 413
    assert caught.value.message == "File upload exceeds maximum size limit"


def test_upload_at_the_limit_is_accepted() -> None:
    content_type, body = multipart(files=[("f", ("big.bin", b"x" * 1000, "x/y"))])
    assert parse_form(content_type, body, max_upload_bytes=1000).files[0]["size"] == 1000


def test_the_limit_counts_all_files_together() -> None:
    content_type, body = multipart(
        files=[("a", ("a.bin", b"x" * 600, "x/y")), ("b", ("b.bin", b"x" * 600, "x/y"))]
    )
    with pytest.raises(FormError) as caught:
        parse_form(content_type, body, max_upload_bytes=1000)
    assert caught.value.status == 413


def test_oversized_multipart_body_is_refused_before_parsing() -> None:
    body = b"\x00" * (1000 + MULTIPART_FRAMING_ALLOWANCE + 1)  # not even multipart
    with pytest.raises(FormError) as caught:
        parse_form("multipart/form-data; boundary=B", body, max_upload_bytes=1000)
    assert caught.value.status == 413


def test_oversized_urlencoded_body_is_a_413() -> None:
    with pytest.raises(FormError) as caught:
        parse_form("application/x-www-form-urlencoded", b"a=" + b"x" * 10, max_upload_bytes=5)
    assert caught.value.status == 413


field_names = st.text(
    alphabet=st.characters(categories=["L", "N"]) | st.sampled_from(" _-."), min_size=1, max_size=10
)
upload_names = st.from_regex(r"\A[A-Za-z0-9_.-]{1,20}\Z")


@settings(max_examples=150)
@given(
    fields=st.dictionaries(field_names, st.text(), max_size=4),
    files=st.lists(st.tuples(field_names, upload_names, st.binary(max_size=300)), max_size=3),
)
def test_multipart_round_trips_what_a_client_sends(
    fields: dict[str, str], files: list[tuple[str, str, bytes]]
) -> None:
    assume(fields or files)  # with neither, a client sends no multipart body at all
    content_type, body = multipart(
        fields=list(fields.items()),
        files=[(field, (name, data, "application/x-test")) for field, name, data in files],
    )
    form = parse_form(content_type, body, max_upload_bytes=MiB)
    # A part's data is taken verbatim, so the CRLFs a client would normalise are kept too.
    assert form.form == fields
    assert [(f["field"], f["filename"], base64.b64decode(f["data"])) for f in form.files] == files
    assert all(f["size"] == len(base64.b64decode(f["data"])) for f in form.files)


content_types = st.one_of(
    st.none(),
    st.text(),
    st.sampled_from(["multipart/form-data; boundary=B", "application/x-www-form-urlencoded"]),
    st.text().map(lambda b: "multipart/form-data; boundary=" + b),
)


@settings(max_examples=300)
@given(content_type=content_types, body=st.binary(max_size=400), limit=st.integers(1, 500))
def test_parse_form_raises_nothing_but_form_error(
    content_type: str | None, body: bytes, limit: int
) -> None:
    try:
        parse_form(content_type, body, max_upload_bytes=limit)
    except FormError as error:
        assert error.status in (400, 413)


@settings(max_examples=200)
@given(
    chunks=st.lists(
        st.sampled_from(
            [
                b"--B",
                b"\r\n",
                b"--",
                b'Content-Disposition: form-data; name="a"',
                b'; filename="f.txt"',
                b"Content-Type: x/y",
                b"data",
                b":",
                b" ",
            ]
        ),
        max_size=30,
    )
)
def test_parse_form_on_near_multipart_bodies_raises_nothing_but_form_error(
    chunks: list[bytes],
) -> None:
    try:
        form = parse_form("multipart/form-data; boundary=B", b"".join(chunks), max_upload_bytes=50)
    except FormError:
        return
    for entry in form.files:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", entry["filename"])


# ---------------------------------------------------------------------------------------------
# The request object and the HandlerContext


def test_build_request_has_every_field_in_the_upstream_order() -> None:
    content_type = b"application/x-www-form-urlencoded"
    request = build_request(
        path="/users/a%20b",
        method="POST",
        raw_query=b"x=1+2&x=3",
        raw_headers=[(b"Content-Type", content_type), (b"X-A", b"b")],
        body=b"name=J+Doe",
        params={"id": "a%20b"},
        form=parse_form(content_type.decode(), b"name=J+Doe", max_upload_bytes=MiB),
        auth=anonymous_auth(),
    )
    assert list(request) == [
        "path", "method", "headers", "query", "params", "form", "files", "body", "auth"
    ]  # fmt: skip
    assert request["path"] == "/users/a%20b"  # raw, not decoded
    assert request["headers"] == {"content-type": content_type.decode(), "x-a": "b"}
    assert request["query"] == {"x": "3"}
    assert request["params"] == {"id": "a%20b"}
    assert request["form"] == {"name": "J Doe"}
    assert request["files"] == []
    assert request["body"] == "name=J+Doe"  # the raw body is still there for form posts
    assert request["auth"]["isAuthenticated"] is False


def test_build_request_omits_headers_and_nulls_an_empty_body() -> None:
    request = build_request(
        path="/",
        method="GET",
        raw_query=b"",
        raw_headers=[],
        body=b"",
        params={},
        form=ParsedForm(),
        auth=anonymous_auth(),
    )
    assert "headers" not in request
    assert request["query"] == {}
    assert request["body"] is None


def test_anonymous_auth_shape() -> None:
    assert anonymous_auth() == {
        "isAuthenticated": False,
        "isAdmin": False,
        "isEditor": False,
        "userId": None,
        "userEmail": None,
        "userName": None,
        "provider": None,
        "user": None,
    }


def test_http_context_shape() -> None:
    request = {"path": "/x", "method": "GET"}
    context = build_http_context(
        request=request, request_id="req_1_1", script_uri="https://example.com/s", handler="h"
    )
    assert context == {
        "kind": "httpRoute",
        "invocationId": "req_1_1",
        "scriptUri": "https://example.com/s",
        "handlerName": "h",
        "request": request,
        "args": None,
    }


# ---------------------------------------------------------------------------------------------
# Response mapping (§1.6, §8 item 6)


def obj(**fields: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "type": "object",
        "has_status": True,
        "status": 200,
        "body": None,
        "body_error": None,
        "body_base64": None,
        "content_type": None,
        "headers": {},
    }
    result.update(fields)
    return result


def respond(result: dict[str, Any]) -> HttpResponse:
    return response_from_result(result, handler="h")


def failure(result: dict[str, Any]) -> str:
    with pytest.raises(ScriptResponseError) as caught:
        respond(result)
    return caught.value.details


def test_string_return_is_200_text_plain() -> None:
    assert respond({"type": "string", "value": "héllo"}) == HttpResponse(
        200, (("Content-Type", "text/plain; charset=UTF-8"),), "héllo".encode()
    )


def test_other_return_values_are_no_response() -> None:
    assert respond({"type": "none"}) == HttpResponse(
        200, (("Content-Type", "text/plain; charset=UTF-8"),), b"<no response>"
    )


def test_promise_is_refused_with_the_upstream_message() -> None:
    assert failure({"type": "promise"}) == (
        "Handler 'h' returned a promise; async handlers are not supported"
        " — return a value synchronously"
    )


def test_object_without_status_is_refused() -> None:
    details = failure(obj(has_status=False, status=None, body="x"))
    assert details == "missing status: handler 'h' returned an object without a status"


@pytest.mark.parametrize(
    ("status", "named"),
    [(99, "99"), (1000, "1000"), ("200", '"200"'), (200.5, "200.5"), (None, "null"),
     (True, "true"), ([200], "[200]")],
)  # fmt: skip
def test_invalid_status_is_refused_naming_the_value(status: object, named: str) -> None:
    details = failure(obj(status=status, body="x"))
    assert details.startswith("invalid status:")
    assert f"status {named};" in details


@pytest.mark.parametrize("status", [200, 204, 404, 599, 999])
def test_any_status_from_200_to_999_is_kept(status: int) -> None:
    assert respond(obj(status=status)).status == status


def test_integral_float_status_is_an_integer() -> None:
    assert respond(obj(status=201.0)).status == 201


def test_object_with_string_body() -> None:
    response = respond(obj(status=201, body="<p>hi</p>", content_type="text/html"))
    assert response == HttpResponse(201, (("Content-Type", "text/html"),), b"<p>hi</p>")


def test_object_without_body_has_an_empty_body_and_default_type() -> None:
    assert respond(obj(status=404)) == HttpResponse(
        404, (("Content-Type", "text/plain; charset=UTF-8"),), b""
    )


def test_non_string_body_is_refused_with_the_upstream_message() -> None:
    message = "Body must be a string or object with __html property"
    assert message in failure(obj(body_error=message))


def test_body_base64_is_decoded_and_defaults_to_octet_stream() -> None:
    payload = bytes(range(256))
    response = respond(obj(body_base64=base64.b64encode(payload).decode()))
    assert response.body == payload
    assert response.headers == (("Content-Type", "application/octet-stream"),)


def test_body_base64_wins_over_body() -> None:
    response = respond(obj(body="text", body_error="ignored", body_base64="aGk="))
    assert response.body == b"hi"


def test_body_base64_tolerates_line_breaks_and_missing_padding() -> None:
    assert respond(obj(body_base64="aGVs\nbG8")).body == b"hello"


@pytest.mark.parametrize("bad", ["not base64!", "aGk=aGk=x", "é", "a"])
def test_invalid_body_base64_is_refused(bad: str) -> None:
    assert failure(obj(body_base64=bad)).startswith("invalid bodyBase64:")


def test_empty_content_type_sends_an_empty_header() -> None:
    # ResponseBuilder.noContent() returns contentType "".
    response = respond(obj(status=204, body="", content_type=""))
    assert response.headers == (("Content-Type", ""),)


def test_headers_override_content_type_case_insensitively() -> None:
    response = respond(
        obj(body="{}", content_type="text/plain", headers={"content-type": "application/json"})
    )
    assert response.headers == (("content-type", "application/json"),)


def test_script_headers_follow_content_type_in_order() -> None:
    response = respond(obj(body="x", headers={"Location": "/next", "X-B": "2", "x-a": "1"}))
    assert response.headers == (
        ("Content-Type", "text/plain; charset=UTF-8"),
        ("Location", "/next"),
        ("X-B", "2"),
        ("x-a", "1"),
    )


def test_later_header_replaces_an_earlier_one_of_any_case() -> None:
    response = respond(obj(headers={"X-A": "1", "x-a": "2"}))
    assert response.headers[1:] == (("x-a", "2"),)


@pytest.mark.parametrize(
    "name",
    ["Connection", "transfer-encoding", "Content-Length", "Keep-Alive", "Upgrade", "TE",
     "Trailer"],
)  # fmt: skip
def test_hop_by_hop_headers_are_dropped(name: str) -> None:
    assert respond(obj(headers={name: "x", "X-Ok": "1"})).headers[1:] == (("X-Ok", "1"),)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Split", "a\r\nSet-Cookie: evil=1"),
        ("X-Lf", "a\nb"),
        ("X-Nul", "a\x00b"),
        ("X-Ctl", "a\x01b"),
        ("X-Uni", "café"),
        ("Bad Name", "v"),
        ("Bad\r\nName", "v"),
        ("", "v"),
        ("X:Colon", "v"),
        ("X-Num", 5),
        ("X-Null", None),
    ],
)
def test_invalid_headers_are_skipped_not_raised(name: str, value: object) -> None:
    assert respond(obj(headers={name: value, "X-Ok": "1"})).headers[1:] == (("X-Ok", "1"),)


def test_invalid_content_type_falls_back_to_the_default() -> None:
    response = respond(obj(body="x", content_type="text/html\r\nX-Evil: 1"))
    assert response.headers == (("Content-Type", "text/plain; charset=UTF-8"),)


def test_header_values_lose_surrounding_whitespace() -> None:
    assert respond(obj(headers={"X-A": "  v 1\t"})).headers[1:] == (("X-A", "v 1"),)


@pytest.mark.parametrize(
    "result",
    [
        {},
        {"type": "mystery"},
        {"type": "string"},
        {"type": "string", "value": 5},
        obj(body=5),
        obj(content_type=["x"]),
        obj(headers=["x"]),
        obj(body_base64=7),
    ],
)
def test_malformed_results_are_script_response_errors(result: dict[str, Any]) -> None:
    failure(result)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
object_results = st.fixed_dictionaries(
    {"type": st.just("object")},
    optional={
        "has_status": st.booleans() | json_values,
        "status": st.integers(0, 1200) | json_values,
        "body": st.text() | json_values,
        "body_error": st.none() | st.text(),
        "body_base64": st.none()
        | st.text()
        | st.binary().map(lambda b: base64.b64encode(b).decode()),
        "content_type": st.none() | st.text(),
        "headers": st.dictionaries(st.text(), st.text() | json_values) | json_values,
    },
)
any_results = st.one_of(
    object_results,
    st.fixed_dictionaries(
        {"type": st.sampled_from(["string", "none", "promise", "object", "x"]) | json_values},
        optional={"value": st.text() | json_values},
    ),
    st.dictionaries(st.text(), json_values),
)


@settings(max_examples=500)
@given(result=any_results)
def test_response_from_result_raises_nothing_but_script_response_error(
    result: dict[str, Any],
) -> None:
    try:
        response = respond(result)
    except ScriptResponseError as error:
        assert error.details
        return
    assert 200 <= response.status <= 999
    assert isinstance(response.body, bytes)
    # h11 (what hypercorn speaks) validates header names and values when it sends them.
    h11.Response(status_code=200, headers=list(response.headers))
    names = [name.lower() for name, _ in response.headers]
    assert len(names) == len(set(names))
    assert "content-type" in names
    assert not {"connection", "transfer-encoding", "content-length"} & set(names)


# ---------------------------------------------------------------------------------------------
# Error envelope (§1.7)


def test_error_envelope_shape() -> None:
    envelope = error_envelope(
        status=500,
        code="SCRIPT_EXECUTION_FAILED",
        message="Script execution failed",
        details="call handler: boom",
        request_id="req_1_2",
        path="/x",
        method="POST",
        timestamp="2026-01-02T03:04:05.678Z",
    )
    assert envelope == {
        "error": {
            "code": "SCRIPT_EXECUTION_FAILED",
            "message": "Script execution failed",
            "details": "call handler: boom",
            "request_id": "req_1_2",
            "timestamp": "2026-01-02T03:04:05.678Z",
            "path": "/x",
            "method": "POST",
        },
        "status": 500,
    }


def test_error_envelope_omits_details_and_stamps_the_time() -> None:
    envelope = error_envelope(
        status=404, code="NOT_FOUND", message="Resource not found", request_id="r",
        path="/nope", method="GET",
    )  # fmt: skip
    assert "details" not in envelope["error"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", envelope["error"]["timestamp"])
