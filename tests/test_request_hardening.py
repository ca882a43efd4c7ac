"""Response hardening and request limits over real sockets: security headers on engine pages,
API answers and solution responses (a script's own headers win), HSTS when configured, and a
clear 4xx for every request limit."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import httpx
import pytest

from security.limits import MAX_HEADER_BYTES, MAX_HEADER_COUNT, MAX_JSON_DEPTH, MAX_URL_BYTES
from tests.conftest import Engine, make_config, running_engine

SCRIPT = """
function page() {
  return { status: 200, contentType: "text/html", body: "<script>go()</script>" };
}
function framed() {
  return { status: 200, body: "ok", contentType: "text/plain",
           headers: { "Content-Security-Policy": "frame-ancestors https://partner.example",
                      "X-Frame-Options": "SAMEORIGIN" } };
}
function init() {
  routeRegistry.registerRoute("/page", "page", "GET");
  routeRegistry.registerRoute("/framed", "framed", "GET");
}
"""


def csp(response: httpx.Response) -> dict[str, str]:
    directives = (d.strip() for d in response.headers["content-security-policy"].split(";"))
    return {name: rest for name, _, rest in (d.partition(" ") for d in directives if d)}


def assert_baseline(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert response.headers["x-frame-options"] == "DENY"
    assert csp(response)["frame-ancestors"] == "'none'"
    assert "strict-transport-security" not in response.headers


# -- headers -----------------------------------------------------------------------------------


async def test_engine_pages_forbid_inline_script_and_framing(engine: Engine) -> None:
    response = await engine.client.get("/engine/installed")

    assert_baseline(response)
    policy = csp(response)
    assert policy["script-src"] == "'self'"
    assert policy["object-src"] == "'none'" and policy["base-uri"] == "'none'"
    assert "unsafe-inline" not in policy["script-src"]


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name.lower() for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.inline.append("<script> without src")
        self.inline.extend(f"{tag} {name}=" for name in names if name.startswith("on"))
        for name, value in attrs:
            if name in ("href", "src") and (value or "").strip().lower().startswith("javascript:"):
                self.inline.append(f"{tag} {name}=javascript:")


@pytest.mark.parametrize(
    "page",
    sorted(
        entry.name
        for entry in resources.files("handlers").joinpath("pages").iterdir()
        if entry.name.endswith(".html")
    ),
)
def test_no_engine_page_carries_inline_script(page: str) -> None:
    # The page policy allows scripts from the engine only: inline script would not run.
    parser = _Scripts()
    parser.feed(resources.files("handlers").joinpath(f"pages/{page}").read_text("utf-8"))
    assert parser.inline == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/engine/scripts"), ("GET", "/health"), ("GET", "/nowhere"), ("POST", "/graphql")],
)
async def test_api_answers_and_errors_carry_the_baseline(
    engine: Engine, method: str, path: str
) -> None:
    response = await engine.client.request(method, path)

    assert_baseline(response)
    # Not an engine page: no script policy that a JSON client has no use for.
    assert "script-src" not in csp(response)


async def test_a_scripts_html_keeps_inline_script_but_not_framing(engine: Engine) -> None:
    await engine.deploy("https://t/pages", SCRIPT)

    response = await engine.client.get("/page")

    assert response.text == "<script>go()</script>"
    assert_baseline(response)
    assert csp(response) == {"frame-ancestors": "'none'"}


async def test_a_scripts_own_security_headers_win(engine: Engine) -> None:
    await engine.deploy("https://t/pages", SCRIPT)

    response = await engine.client.get("/framed")

    assert response.headers.get_list("content-security-policy") == [
        "frame-ancestors https://partner.example"
    ]
    assert response.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    # The defaults the script did not set are still there.
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"


async def test_hsts_is_sent_everywhere_when_configured(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", **{"security.hsts": True})
    async with running_engine(config) as engine:
        await engine.deploy("https://t/pages", SCRIPT)
        answers = [
            await engine.client.get(path)
            for path in ("/engine/installed", "/engine/scripts", "/page", "/nowhere", "/health")
        ]

    for response in answers:
        assert response.headers["strict-transport-security"] == "max-age=31536000"


# -- request limits ----------------------------------------------------------------------------


async def test_a_url_over_the_limit_is_414(engine: Engine) -> None:
    long_query = "q=" + "a" * MAX_URL_BYTES

    solution = await engine.client.get(f"/hello?{long_query}")
    management = await engine.client.get(f"/engine/scripts?{long_query}")
    just_under = await engine.client.get("/nowhere?q=" + "a" * (MAX_URL_BYTES - 20))

    assert solution.status_code == 414
    assert solution.json()["error"]["code"] == "REQUEST_TOO_LARGE"
    assert "URL" in solution.json()["error"]["message"]
    assert management.status_code == 414
    assert management.json()["code"] == "REQUEST_TOO_LARGE"
    assert just_under.status_code == 404


async def test_too_many_headers_are_431(engine: Engine) -> None:
    headers = {f"x-h{n}": "1" for n in range(MAX_HEADER_COUNT + 1)}

    response = await engine.client.get("/hello", headers=headers)
    fewer = await engine.client.get("/nowhere", headers=dict(list(headers.items())[:50]))

    assert response.status_code == 431
    assert "headers" in response.json()["error"]["message"]
    assert response.headers["x-request-id"].startswith("req_")
    assert fewer.status_code == 404


async def test_a_header_over_the_limit_is_431_naming_it(engine: Engine) -> None:
    response = await engine.client.get("/engine/scripts", headers={"x-big": "v" * MAX_HEADER_BYTES})

    assert response.status_code == 431
    assert "header 'x-big'" in response.json()["error"]


async def test_a_body_over_the_limit_is_413(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", **{"security.max_request_body_bytes": 1000})
    async with running_engine(config) as engine:
        response = await engine.client.post("/engine/delete_script", data={"uri": "x" * 2000})

    assert response.status_code == 413
    assert response.json()["error"] == "Request body too large"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def test_json_nested_too_deep_is_400_on_the_engine_api(engine: Engine) -> None:
    await engine.deploy("https://t/pages", SCRIPT)

    def upload(depth: int) -> str:
        return (
            '{"asset": "a.txt", "content": "aGk=", "mimetype": "text/plain", "extra": '
            + nested(depth)
            + "}"
        )

    headers = {"content-type": "application/json"}
    params = {"script": "https://t/pages"}
    too_deep = await engine.client.post(
        "/engine/assets", params=params, content=upload(MAX_JSON_DEPTH), headers=headers
    )
    deep_enough = await engine.client.post(
        "/engine/assets", params=params, content=upload(MAX_JSON_DEPTH - 1), headers=headers
    )

    # The object itself is one level: MAX_JSON_DEPTH brackets inside make one too many.
    assert too_deep.status_code == 400
    body = too_deep.json()
    assert body["field"] == "JSON body" and str(MAX_JSON_DEPTH) in body["error"]
    assert deep_enough.status_code == 201


async def test_json_nested_too_deep_is_400_on_graphql(engine: Engine) -> None:
    body = '{"query": "{ __typename }", "variables": {"v": ' + nested(MAX_JSON_DEPTH) + "}}"

    response = await engine.client.post(
        "/graphql", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert re.search(r"nested at most \d+ levels", json.dumps(response.json()))
