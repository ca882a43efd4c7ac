"""Script assets over real sockets: the script API, asset routes and ``/engine/assets``."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Engine, make_config, running_engine


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


async def upload(
    engine: Engine, script: str, asset: str, content: bytes | str, mimetype: str | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"asset": asset, "content": b64(content)}
    if mimetype is not None:
        body["mimetype"] = mimetype
    return await engine.client.post("/engine/assets", params={"script": script}, json=body)


ROUND_TRIP = r"""
function init() {
  var results = {};
  results.upsert = assetStorage.upsertAsset("notes/hello.txt", "text/plain", btoa("héllo"));
  results.fetch = assetStorage.fetchAsset("notes/hello.txt");
  results.missing = assetStorage.fetchAsset("nope.txt");
  results.list = JSON.parse(assetStorage.listAssets());
  results.badName = assetStorage.upsertAsset("../x", "text/plain", "");
  results.longName = assetStorage.upsertAsset(new Array(257).join("a"), "text/plain", "");
  results.badB64 = assetStorage.upsertAsset("a.bin", "application/octet-stream", "***");
  results.noType = assetStorage.upsertAsset("a.bin", "", "AAAA");
  results.route = routeRegistry.registerAssetRoute("/hello.txt", "notes/hello.txt");
  results.routeMissing = routeRegistry.registerAssetRoute("/nope", "nope.txt");
  sharedStorage.setItem("results", JSON.stringify(results));
  routeRegistry.registerRoute("/results", "results", "GET");
}
function results() { return sharedStorage.getItem("results"); }
"""


async def test_a_script_stores_fetches_lists_and_serves_an_asset(engine: Engine) -> None:
    report = await engine.deploy("assets-demo", ROUND_TRIP)
    assert report["init"]["success"], report
    results = json.loads((await engine.client.get("/results")).text)
    assert results["upsert"] == "Asset 'notes/hello.txt' upserted successfully"
    assert base64.b64decode(results["fetch"]).decode() == "héllo"
    assert results["missing"] == "Asset 'nope.txt' not found"
    [entry] = results["list"]
    assert entry["uri"] == entry["name"] == "notes/hello.txt"
    assert entry["size"] == len("héllo".encode())
    assert entry["mimetype"] == "text/plain"
    assert isinstance(entry["createdAt"], int) and entry["createdAt"] > 1_700_000_000_000
    assert entry["updatedAt"] >= entry["createdAt"]
    assert results["badName"] == "Invalid asset URI: path traversal not allowed"
    assert results["longName"] == "Invalid asset URI: must be 1-255 characters"
    assert results["badB64"].startswith("Error decoding base64 content: ")
    assert results["noType"].startswith("Error upserting asset: mimetype")
    assert results["route"] == "Asset path '/hello.txt' registered to asset 'notes/hello.txt'"
    assert results["routeMissing"] == (
        "Asset 'nope.txt' not found or not owned by script 'assets-demo'"
    )

    served = await engine.client.get("/hello.txt")
    assert served.status_code == 200
    assert served.headers["content-type"] == "text/plain; charset=utf-8"
    assert served.content == "héllo".encode()
    assert served.headers["etag"] == f'"{sha("héllo")}"'


async def test_asset_routes_answer_conditional_requests_and_head(engine: Engine) -> None:
    assert (await upload(engine, "site", "style.css", "body{}", "text/css")).status_code == 201
    await engine.deploy(
        "site",
        'routeRegistry.registerAssetRoute("/style.css", "style.css");\n'
        'routeRegistry.registerRoute("/style.css", "h", "GET");\n'
        'function h() { return "from the handler"; }',
    )
    first = await engine.client.get("/style.css")
    assert first.text == "body{}"  # the asset route wins over a route on the same path
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"

    again = await engine.client.get("/style.css", headers={"if-none-match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    weak = await engine.client.get("/style.css", headers={"if-none-match": f'"x", W/{etag}'})
    assert weak.status_code == 304
    star = await engine.client.get("/style.css", headers={"if-none-match": "*"})
    assert star.status_code == 304
    other = await engine.client.get("/style.css", headers={"if-none-match": '"other"'})
    assert other.status_code == 200

    head = await engine.client.head("/style.css")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == "6"
    assert head.headers["content-type"] == "text/css; charset=utf-8"

    # Replacing the asset changes what the path serves at once, and its tag.
    await upload(engine, "site", "style.css", "body{color:red}", "text/css")
    changed = await engine.client.get("/style.css", headers={"if-none-match": etag})
    assert changed.status_code == 200
    assert changed.text == "body{color:red}"
    assert changed.headers["etag"] != etag

    # POST is not served by an asset route: the handler registered for GET answers 405.
    assert (await engine.client.post("/style.css")).status_code == 405

    routes = (await engine.client.get("/engine/routes")).json()["routes"]
    assert {
        "path": "/style.css",
        "method": "ASSET",
        "handler": "style.css",
        "script_uri": "site",
        "summary": None,
        "description": None,
        "tags": ["Assets"],
    } in routes

    # A deleted asset's path answers 404; deleting the script removes the route.
    deleted = await engine.client.delete(
        "/engine/assets", params={"script": "site", "asset": "style.css"}
    )
    assert deleted.status_code == 200
    gone = await engine.client.get("/style.css")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "NOT_FOUND"


async def test_binary_assets_keep_their_bytes_and_type(engine: Engine) -> None:
    data = bytes(range(256)) * 4
    response = await upload(engine, "bin", "logo.png", data, "image/png")
    assert response.status_code == 201
    await engine.deploy("bin", 'routeRegistry.registerAssetRoute("/logo.png", "logo.png");')
    served = await engine.client.get("/logo.png")
    assert served.headers["content-type"] == "image/png"
    assert served.content == data


async def test_engine_assets_upload_list_read_and_delete(engine: Engine) -> None:
    created = await upload(engine, "app", "readme.md", "# Title\n\nline two\nline three\n")
    assert created.status_code == 201
    body = created.json()
    assert body["message"] == "Asset 'readme.md' upserted successfully"
    assert (body["script"], body["asset"], body["status"]) == ("app", "readme.md", "created")

    listing = (await engine.client.get("/engine/assets", params={"script": "app"})).json()
    assert listing["script"] == "app"
    [entry] = listing["assets"]
    assert entry["mimetype"] == "text/markdown"  # inferred from the extension
    assert set(entry) >= {"uri", "name", "size", "mimetype", "createdAt", "updatedAt"}

    whole = await engine.client.get(
        "/engine/assets", params={"script": "app", "asset": "readme.md"}
    )
    text = "# Title\n\nline two\nline three\n"
    assert whole.json() == {
        "content": b64(text),
        "sha256": sha(text),
        "bytes": len(text),
        "script": "app",
        "asset": "readme.md",
    }

    lines = await engine.client.get(
        "/engine/assets", params={"script": "app", "asset": "readme.md", "lines": "3-4"}
    )
    assert lines.status_code == 200
    part = lines.json()
    assert part["content"] == "line two\nline three\n"
    assert (part["start_line"], part["end_line"], part["total_lines"]) == (3, 4, 4)
    assert part["sha256"] == sha(text)

    found = await engine.client.get(
        "/engine/assets", params={"script": "app", "asset": "readme.md", "grep": "line \\w+"}
    )
    result = found.json()
    assert [m["line"] for m in result["matches"]] == [3, 4]
    assert result["match_count"] == 2

    for params, field in (
        ({"lines": "9-"}, "lines"),
        ({"lines": "b-a"}, "lines"),
        ({"grep": "("}, "grep"),
    ):
        bad = await engine.client.get(
            "/engine/assets", params={"script": "app", "asset": "readme.md", **params}
        )
        assert bad.status_code == 400, params
        assert bad.json()["field"] == field

    await upload(engine, "app", "blob.bin", b"\x00\xff\x00", "application/octet-stream")
    binary = await engine.client.get(
        "/engine/assets", params={"script": "app", "asset": "blob.bin", "lines": "1"}
    )
    assert binary.status_code == 400
    assert "binary" in binary.json()["error"]

    missing = await engine.client.get("/engine/assets", params={"script": "app", "asset": "x"})
    assert missing.status_code == 404
    assert missing.json()["error"] == "Asset 'x' not found"

    removed = await engine.client.delete(
        "/engine/assets", params={"script": "app", "asset": "readme.md"}
    )
    assert removed.json()["message"] == "Asset 'readme.md' deleted successfully"
    again = await engine.client.delete(
        "/engine/assets", params={"script": "app", "asset": "readme.md"}
    )
    assert again.status_code == 404


async def test_engine_assets_refuses_bad_uploads_naming_the_field(engine: Engine) -> None:
    post = engine.client.post
    cases: list[tuple[dict[str, Any], dict[str, str], str]] = [
        ({"asset": "a.txt", "content": "***"}, {"script": "s"}, "content"),
        ({"asset": "../a.txt", "content": "QQ=="}, {"script": "s"}, "asset"),
        (
            {"asset": "a.txt", "content": "QQ==", "mimetype": "text/plain\r\nx: y"},
            {"script": "s"},
            "mimetype",
        ),
    ]
    for body, params, field in cases:
        response = await post("/engine/assets", params=params, json=body)
        assert response.status_code == 400, body
        assert response.json()["field"] == field, response.json()
    missing = await post("/engine/assets", params={"script": "s"}, json={"asset": "a.txt"})
    assert missing.status_code == 400
    assert missing.json()["error"] == "Missing required parameter: content"
    no_script = await post("/engine/assets", json={"asset": "a", "content": "QQ=="})
    assert no_script.json()["error"] == "Missing required parameter: script"
    not_json = await post(
        "/engine/assets",
        params={"script": "s"},
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert not_json.status_code == 400
    listing = await engine.client.get("/engine/assets", params={"script": "s"})
    assert listing.json()["assets"] == []


EDITED = """
function init() {
  var text = atob(assetStorage.fetchAsset("config.txt"));
  routeRegistry.registerRoute("/config", "config", "GET");
  sharedStorage.setItem("seen", text);
}
function config() { return sharedStorage.getItem("seen"); }
"""


async def test_patch_applies_edits_against_a_digest_and_reruns_init(engine: Engine) -> None:
    original = "mode = dev\nlevel = 1\nlevel = 2\n"
    await upload(engine, "cfg", "config.txt", original, "text/plain")
    await engine.deploy("cfg", EDITED)
    assert (await engine.client.get("/config")).text == original

    patched = await engine.client.patch(
        "/engine/assets",
        json={
            "script": "cfg",
            "asset": "config.txt",
            "base_sha256": sha(original),
            "edits": [
                {"old_string": "mode = dev", "new_string": "mode = prod"},
                {"old_string": "level = ", "new_string": "lvl = ", "replace_all": True},
            ],
        },
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    updated = "mode = prod\nlvl = 1\nlvl = 2\n"
    assert body["sha256"] == sha(updated)
    assert (body["status"], body["replacements"], body["bytes"]) == ("updated", 3, len(updated))
    assert body["init"]["ran"] and body["init"]["success"]
    assert (await engine.client.get("/config")).text == updated  # init() saw the new text

    stale = await engine.client.patch(
        "/engine/assets",
        params={"script": "cfg", "asset": "config.txt"},
        json={"base_sha256": sha(original), "edits": [{"old_string": "x", "new_string": "y"}]},
    )
    assert stale.status_code == 409
    assert stale.json()["sha256"] == sha(updated)

    ambiguous = await engine.client.patch(
        "/engine/assets",
        params={"script": "cfg", "asset": "config.txt"},
        json={
            "edits": [
                {"old_string": "mode", "new_string": "MODE"},
                {"old_string": "lvl", "new_string": "L"},
            ]
        },
    )
    assert ambiguous.status_code == 400
    assert ambiguous.json()["field"] == "edits[1].old_string"
    # All or nothing: the first edit was not kept either.
    whole = await engine.client.get(
        "/engine/assets", params={"script": "cfg", "asset": "config.txt"}
    )
    assert whole.json()["sha256"] == sha(updated)

    unchanged = await engine.client.patch(
        "/engine/assets",
        params={"script": "cfg", "asset": "config.txt", "reinit": "never"},
        json={"edits": [{"old_string": "prod", "new_string": "prod"}]},
    )
    assert unchanged.json()["status"] == "unchanged"
    assert unchanged.json()["init"]["ran"] is False

    for payload, field in (
        ({"edits": []}, "edits"),
        ({"edits": [{"old_string": "", "new_string": "x"}]}, "edits[0].old_string"),
        ({"edits": [{"old_string": "a"}]}, "edits[0].new_string"),
        ({"edits": [{"old_string": "a", "new_string": "b"}], "reinit": "sometimes"}, "reinit"),
    ):
        bad = await engine.client.patch(
            "/engine/assets", params={"script": "cfg", "asset": "config.txt"}, json=payload
        )
        assert bad.status_code == 400, payload
        assert bad.json()["field"] == field, bad.json()
    absent = await engine.client.patch(
        "/engine/assets",
        params={"script": "cfg", "asset": "none.txt"},
        json={"edits": [{"old_string": "a", "new_string": "b"}]},
    )
    assert absent.status_code == 404


SITE = """
function init() {
  var names = JSON.parse(assetStorage.listAssets()).map(function (a) { return a.name; });
  names.forEach(function (name) { routeRegistry.registerAssetRoute("/" + name, name); });
  console.log("init saw " + names.length + " assets");
}
"""


async def test_batch_writes_all_files_then_runs_init_once(engine: Engine) -> None:
    await engine.deploy("batch", SITE)
    response = await engine.client.post(
        "/engine/assets/batch",
        json={
            "script": "batch",
            "files": [
                {"name": "index.html", "content": "<h1>hi</h1>"},
                {"asset": "app.js", "content_base64": b64("alert(1)"), "sha256": sha("alert(1)")},
                {"name": "data.bin", "content_base64": b64(b"\x00\x01"), "mimetype": "x/y"},
            ],
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["written"] == 3
    assert [(r["name"], r["status"]) for r in body["results"]] == [
        ("index.html", "created"),
        ("app.js", "created"),
        ("data.bin", "created"),
    ]
    assert body["results"][0]["sha256"] == sha("<h1>hi</h1>")
    assert body["init"]["success"]
    page = await engine.client.get("/index.html")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.text == "<h1>hi</h1>"
    assert (await engine.client.get("/app.js")).text == "alert(1)"
    inits = [e for e in await engine.logs(uri="batch") if e["message"].startswith("init saw")]
    assert [e["message"] for e in inits] == ["init saw 0 assets", "init saw 3 assets"]

    again = await engine.client.post(
        "/engine/assets/batch",
        json={
            "script": "batch",
            "reinit": "never",
            "files": [
                {"name": "index.html", "content": "<h1>hi</h1>"},
                {"name": "app.js", "content": "alert(2)"},
            ],
        },
    )
    assert [r["status"] for r in again.json()["results"]] == ["unchanged", "updated"]
    assert again.json()["written"] == 1
    assert again.json()["init"] == {"ran": False, "reason": "reinit is 'never'"}


async def test_a_batch_with_one_bad_file_writes_nothing(engine: Engine) -> None:
    files = [{"name": f"f{i}.txt", "content": str(i)} for i in range(5)]
    for bad_file, field in (
        ({"name": "../evil", "content": "x"}, "files[5].name"),
        ({"name": "b.txt", "content_base64": "%%%"}, "files[5].content_base64"),
        ({"name": "c.txt", "content": "x", "sha256": "0" * 64}, "files[5].sha256"),
        ({"name": "f1.txt", "content": "dup"}, "files[5].name"),
        ({"name": "d.txt", "content": "x", "mimetype": "bad type"}, "files[5].mimetype"),
    ):
        response = await engine.client.post(
            "/engine/assets/batch", json={"script": "atomic", "files": [*files, bad_file]}
        )
        assert response.status_code == 400, bad_file
        assert response.json()["field"] == field, response.json()
        listing = await engine.client.get("/engine/assets", params={"script": "atomic"})
        assert listing.json()["assets"] == []
    for payload, field in (
        ({"script": "atomic", "files": []}, "files"),
        ({"files": files}, "script"),
        (
            {"script": "atomic", "files": [{"name": str(i), "content": ""} for i in range(257)]},
            "files",
        ),
    ):
        response = await engine.client.post("/engine/assets/batch", json=payload)
        assert response.status_code == 400
        assert response.json()["field"] == field, response.json()


V09 = """
function init() {
  var out = {};
  out.upsert = upsertAsset("legacy.txt", btoa("old api"), "text/plain");
  out.list = listAssets();
  out.fetch = atob(fetchAsset("legacy.txt"));
  out.remove = deleteAsset("legacy.txt");
  out.again = deleteAsset("legacy.txt");
  sharedStorage.setItem("out", JSON.stringify(out));
  register("/out", "show");
}
function show() { return sharedStorage.getItem("out"); }
"""


async def test_v09_asset_globals(engine: Engine) -> None:
    await engine.deploy("legacy", V09)
    out = json.loads((await engine.client.get("/out")).text)
    assert out == {
        "upsert": "Asset 'legacy.txt' upserted successfully",
        "list": ["legacy.txt"],
        "fetch": "old api",
        "remove": "Asset 'legacy.txt' deleted successfully",
        "again": "Asset 'legacy.txt' not found",
    }


async def test_assets_are_scoped_to_their_script_and_deleted_with_it(engine: Engine) -> None:
    await upload(engine, "one", "a.txt", "one's")
    await engine.deploy(
        "two",
        'function init() { routeRegistry.registerRoute("/f", "f"); }\n'
        'function f() { return assetStorage.fetchAsset("a.txt"); }',
    )
    assert (await engine.client.get("/f")).text == "Asset 'a.txt' not found"
    await engine.deploy("one", "function init() {}")
    await engine.client.post("/engine/delete_script", data={"uri": "one"})
    listing = await engine.client.get("/engine/assets", params={"script": "one"})
    assert listing.json()["assets"] == []


async def test_assets_and_their_routes_survive_a_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    async with running_engine(config) as engine:
        await upload(engine, "keep", "page.html", "<p>kept</p>", "text/html")
        await engine.deploy("keep", 'routeRegistry.registerAssetRoute("/page", "page.html");')
    async with running_engine(config) as engine:
        page = await engine.client.get("/page")
        assert page.status_code == 200
        assert page.text == "<p>kept</p>"
        listing = await engine.client.get("/engine/assets", params={"script": "keep"})
        assert [a["name"] for a in listing.json()["assets"]] == ["page.html"]
