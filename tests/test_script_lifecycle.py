"""What happens to a script's work when its caller goes away, and across restarts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import Engine, EngineProcess, make_config, running_engine

LATE_LOGGER = """
function slow(context) {
  console.log("started");
  var t = Date.now(); while (Date.now() - t < 700) {}
  console.log("still here after the client left");
  return "done";
}
function init() { routeRegistry.registerRoute("/slow", "slow", "GET"); }
"""


async def eventually(check: Callable[[], Awaitable[Any]], within_s: float = 10.0) -> Any:
    """Poll an HTTP check until it returns something truthy; the engine offers no event."""
    with trio.fail_after(within_s):
        while True:
            result = await check()
            if result:
                return result
            await trio.sleep(0.1)


async def test_lines_logged_after_the_client_hung_up_are_kept(engine: Engine) -> None:
    await engine.deploy("late", LATE_LOGGER)
    async with httpx.AsyncClient(base_url=engine.base_url, timeout=0.2) as impatient:
        with suppress(httpx.TimeoutException):
            await impatient.get("/slow")

    async def late_messages() -> list[str]:
        messages = [entry["message"] for entry in await engine.logs(uri="late")]
        return messages if "still here after the client left" in messages else []

    messages = await eventually(late_messages)
    assert messages.count("started") == 1


async def test_a_timeout_after_the_client_hung_up_still_writes_its_fatal_line(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path / "d", **{"sandbox.handler_timeout_ms": 600})
    async with running_engine(config) as engine:
        await engine.deploy(
            "spin",
            'function spin() { for (;;) {} }\nfunction init() { register("/spin", "spin"); }',
        )
        async with httpx.AsyncClient(base_url=engine.base_url, timeout=0.1) as impatient:
            with suppress(httpx.TimeoutException):
                await impatient.get("/spin")
        fatal = await eventually(lambda: engine.logs(uri="spin", level="FATAL"))
        assert "exceeded its 600ms budget" in fatal[0]["message"]


async def test_an_upsert_whose_client_hung_up_is_still_swapped_in(engine: Engine) -> None:
    source = """
    function h() { return "v2"; }
    function init() {
      var t = Date.now(); while (Date.now() - t < 600) {}
      register("/swap", "h");
    }
    """
    async with httpx.AsyncClient(base_url=engine.base_url, timeout=0.1) as impatient:
        with suppress(httpx.TimeoutException):
            await impatient.post("/engine/upsert_script", data={"uri": "swap", "content": source})

    async def served() -> str:
        response = await engine.client.get("/swap")
        return response.text if response.status_code == 200 else ""

    assert await eventually(served) == "v2"


def test_after_a_restart_a_broken_upload_does_not_replace_the_last_good_version(
    engine_process: type[EngineProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = engine_process(data)
    with httpx.Client(base_url=first.base_url, timeout=30) as client:
        good = 'function h() { return "good"; }\nfunction init() { register("/v", "h"); }'
        broken = 'function h() { return "broken"; }\nfunction init() { throw new Error("no"); }'
        assert client.post("/engine/upsert_script", data={"uri": "v", "content": good}).json()[
            "init"
        ]["success"]
        refused = client.post("/engine/upsert_script", data={"uri": "v", "content": broken})
        assert refused.json()["init"]["success"] is False
        assert client.get("/v").text == "good"
    first.close()

    second = engine_process(data)
    with httpx.Client(base_url=second.base_url, timeout=30) as client:
        assert client.get("/v").text == "good"
        status = client.get("/engine/script_init_status", params={"uri": "v"}).json()["status"]
        assert status["initialized"] is False
        assert "no" in status["initError"]
        # What the operator uploaded last is still what read_script shows.
        assert client.get("/engine/read_script", params={"uri": "v"}).text == broken
