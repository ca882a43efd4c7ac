"""Compatibility: the HandlerContext an HTTP route handler receives.

UPSTREAM_API.md §1.1 (global ``context``), §1.5 (HandlerContext and the request object) and §8
items 4-5.  One script echoes what it sees; each test sends a real request and compares the echo
with what the original engine hands to a handler.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
import trio

from tests.conftest import Engine

ECHO_SCRIPT = """
function echo(context) {
  var auth = context.request.auth;
  var requireAuthMessage = null;
  try { auth.requireAuth(); } catch (e) { requireAuthMessage = e.message; }
  return {
    status: 200,
    contentType: "application/json",
    body: JSON.stringify({
      context: context,
      contextKeys: Object.keys(context),
      requestKeys: Object.keys(context.request),
      globalIsArgument: globalThis.context === context,
      requireAuthMessage: requireAuthMessage,
    }),
  };
}
function init() {
  ["GET", "POST", "PUT", "DELETE"].forEach(function (method) {
    routeRegistry.registerRoute("/echo", "echo", method);
    routeRegistry.registerRoute("/echo/:id/files/:name", "echo", method);
  });
}
"""

ANONYMOUS = {
    "isAuthenticated": False,
    "isAdmin": False,
    "isEditor": False,
    "userId": None,
    "userEmail": None,
    "userName": None,
    "provider": None,
    "user": None,
}


@pytest.fixture
async def echo(engine: Engine) -> Engine:
    await engine.deploy("echo.js", ECHO_SCRIPT)
    return engine


def seen(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    return payload


async def test_http_handler_context_has_the_upstream_shape(echo: Engine) -> None:
    response = await echo.client.get(
        "/echo/a%20b/files/x%2Fy.txt",
        params={"q": "1"},
        headers={"X-Custom-Header": "Value", "x-request-id": "forged"},
    )
    payload = seen(response)
    context = payload["context"]

    assert payload["contextKeys"] == [
        "kind",
        "invocationId",
        "scriptUri",
        "handlerName",
        "request",
        "args",
    ]
    assert context["kind"] == "httpRoute"
    # The id is the engine's own, never the caller's, and the response carries the same one.
    assert context["invocationId"] == response.headers["x-request-id"]
    assert context["invocationId"].startswith("req_")
    assert context["scriptUri"] == "echo.js"
    assert context["handlerName"] == "echo"
    assert context["args"] is None
    assert payload["globalIsArgument"] is True

    request = context["request"]
    assert payload["requestKeys"] == [
        "path",
        "method",
        "headers",
        "query",
        "params",
        "form",
        "files",
        "body",
        "auth",
    ]
    assert request["path"] == "/echo/a%20b/files/x%2Fy.txt"
    assert request["method"] == "GET"
    assert request["params"] == {"id": "a%20b", "name": "x%2Fy.txt"}
    assert request["query"] == {"q": "1"}
    assert request["form"] == {}
    assert request["files"] == []
    assert request["body"] is None
    assert request["auth"] == ANONYMOUS
    assert payload["requireAuthMessage"] == (
        "Authentication required. Please login to access this resource."
    )


async def test_request_headers_are_lowercase_last_wins_ascii_only(echo: Engine) -> None:
    response = await echo.client.request(
        "put",
        "/echo",
        headers=[
            ("X-Mixed-Case", "Kept As Sent"),
            ("Accept", "text/plain"),
            ("X-Repeated", "first"),
            ("X-Repeated", "last"),
            ("X-Latin", "caf\xe9".encode("latin-1")),
        ],
        content=b"payload",
    )
    request = seen(response)["context"]["request"]
    assert request["method"] == "PUT"
    headers = request["headers"]
    assert headers["x-mixed-case"] == "Kept As Sent"
    assert headers["accept"] == "text/plain"
    assert headers["x-repeated"] == "last"
    assert "x-latin" not in headers
    assert all(name == name.lower() for name in headers)
    assert request["params"] == {}
    assert request["body"] == "payload"


async def test_headers_property_is_omitted_when_the_request_has_none(echo: Engine) -> None:
    # HTTP/1.0 needs no Host header, so this request really carries none.  The response is
    # close-delimited; it is complete once its body parses as JSON.
    host, port = echo.base_url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(b"GET /echo HTTP/1.0\r\n\r\n")
        received = b""
        payload = None
        with trio.fail_after(10):
            while payload is None:
                received += await stream.receive_some()
                head, _, body = received.partition(b"\r\n\r\n")
                with contextlib.suppress(ValueError):
                    payload = json.loads(body)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert "headers" not in payload["context"]["request"]
    assert "headers" not in payload["requestKeys"]


async def test_query_is_decoded_with_plus_and_percent_and_the_last_duplicate_wins(
    echo: Engine,
) -> None:
    raw_query = "q=hello+world&plus=a%2Bb&euro=%E2%82%AC%20x&dup=1&dup=2&dup=3&flag&k%20ey=v"
    response = await echo.client.get(f"/echo?{raw_query}")
    request = seen(response)["context"]["request"]
    assert request["query"] == {
        "q": "hello world",
        "plus": "a+b",
        "euro": "€ x",
        "dup": "3",
        "flag": "",
        "k ey": "v",
    }
    assert request["path"] == "/echo"


async def test_urlencoded_form_is_decoded_and_the_raw_body_is_still_present(
    echo: Engine,
) -> None:
    raw = "name=Ada+Lovelace&note=50%25+off&dup=first&dup=last"
    response = await echo.client.post(
        "/echo?from=query",
        content=raw.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    request = seen(response)["context"]["request"]
    assert request["form"] == {"name": "Ada Lovelace", "note": "50% off", "dup": "last"}
    assert request["body"] == raw
    assert request["query"] == {"from": "query"}
    assert request["files"] == []
    assert request["headers"]["content-type"] == "application/x-www-form-urlencoded"

    with_charset = await echo.client.post(
        "/echo",
        content=b"city=K%C3%B6ln",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"},
    )
    assert seen(with_charset)["context"]["request"]["form"] == {"city": "Köln"}


async def test_multipart_uploads_become_form_fields_and_base64_files(echo: Engine) -> None:
    binary = bytes([0, 255, 16, 128, 10])
    response = await echo.client.post(
        "/echo",
        data={"title": "Report", "lang": "fi"},
        files=[
            ("document", ("notes.txt", b"plain text\n", "text/plain")),
            ("image", ("pixel.bin", binary, "application/octet-stream")),
        ],
    )
    request = seen(response)["context"]["request"]
    assert request["form"] == {"title": "Report", "lang": "fi"}
    assert request["files"] == [
        {
            "field": "document",
            "filename": "notes.txt",
            "contentType": "text/plain",
            "data": base64.b64encode(b"plain text\n").decode(),
            "size": len(b"plain text\n"),
        },
        {
            "field": "image",
            "filename": "pixel.bin",
            "contentType": "application/octet-stream",
            "data": base64.b64encode(binary).decode(),
            "size": len(binary),
        },
    ]
    # The whole raw body is there as text; with a non-UTF-8 part it cannot be, so it is "".
    assert request["body"] == ""


async def test_multipart_post_of_text_keeps_the_raw_body_and_the_last_repeated_field(
    echo: Engine,
) -> None:
    response = await echo.client.post(
        "/echo",
        data={"tag": ["first", "last"]},
        files=[("document", ("notes.txt", b"plain text", "text/plain"))],
    )
    request = seen(response)["context"]["request"]
    boundary = request["headers"]["content-type"].split("boundary=", 1)[1]
    assert request["body"].startswith(f"--{boundary}\r\n")
    assert 'name="document"; filename="notes.txt"' in request["body"]
    assert request["files"][0]["size"] == len(b"plain text")
    # As in the query string, the last of repeated fields wins.
    assert request["form"] == {"tag": "last"}


async def test_json_bodies_are_not_parsed_and_empty_bodies_are_null(echo: Engine) -> None:
    document = '{"a": [1, 2], "b": "c"}'
    response = await echo.client.post(
        "/echo", content=document.encode(), headers={"Content-Type": "application/json"}
    )
    request = seen(response)["context"]["request"]
    assert request["body"] == document
    assert request["form"] == {}

    empty = await echo.client.post("/echo", content=b"")
    assert seen(empty)["context"]["request"]["body"] is None

    invalid_utf8 = await echo.client.post("/echo", content=b"\xff\xfe")
    assert seen(invalid_utf8)["context"]["request"]["body"] == ""


async def test_each_request_gets_its_own_invocation_id_and_global_context(echo: Engine) -> None:
    # Contexts stay warm between requests; the global must still be this request's context.
    first = await echo.client.get("/echo", params={"n": "1"})
    second = await echo.client.get("/echo", params={"n": "2"})
    one, two = seen(first)["context"], seen(second)["context"]
    assert one["invocationId"] != two["invocationId"]
    assert two["invocationId"] == second.headers["x-request-id"]
    assert two["request"]["query"] == {"n": "2"}

    await echo.deploy(
        "global.js",
        "function viaGlobal() { return context.request.query.n + ' ' + context.invocationId; }\n"
        'function init() { routeRegistry.registerRoute("/via-global", "viaGlobal", "GET"); }',
    )
    for n in ("1", "2"):
        response = await echo.client.get("/via-global", params={"n": n})
        assert response.text == f"{n} {response.headers['x-request-id']}"
