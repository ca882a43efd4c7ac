"""The last line of defence: whatever goes wrong, a client gets JSON and never a traceback."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import StorageUnavailable
from tests.conftest import Engine


def assert_clean(body: str) -> None:
    assert "Traceback" not in body
    assert "secret internals" not in body


async def test_any_method_reaches_the_route_table_and_engine_endpoints_answer_405(
    engine: Engine,
) -> None:
    # Scripts may register any method, so an unusual one is simply not routed here...
    solution = await engine.client.request("PROPFIND", "/anything")
    assert solution.status_code == 404
    assert solution.headers["content-type"] == "application/json"
    assert solution.json()["error"]["code"] == "NOT_FOUND"

    # ...while the engine's own endpoints know their methods.
    admin = await engine.client.request("PROPFIND", "/engine/scripts")
    assert admin.status_code == 405
    assert admin.json()["error"] == "Method Not Allowed"


async def test_an_unexpected_failure_is_a_json_500_without_details(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(engine.runtime.scripts, "resolve", explode)
    solution = await engine.client.get("/hello")
    assert solution.status_code == 500
    assert solution.json()["error"]["code"] == "INTERNAL_SERVER_ERROR"
    assert solution.headers["x-request-id"] == solution.json()["error"]["request_id"]
    assert_clean(solution.text)

    async def explode_async(*_: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(engine.runtime.database.scripts, "list_all", explode_async)
    admin = await engine.client.get("/engine/scripts")
    assert admin.status_code == 500
    assert admin.json()["code"] == "INTERNAL_SERVER_ERROR"
    assert_clean(admin.text)


async def test_storage_unavailable_is_a_503_with_retry_after(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*_: Any) -> Any:
        raise StorageUnavailable("database unavailable", retry_after_s=2.5)

    monkeypatch.setattr(engine.runtime.scripts, "resolve", unavailable)
    response = await engine.client.get("/hello")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"]["code"] == "STORAGE_UNAVAILABLE"
    assert_clean(response.text)
