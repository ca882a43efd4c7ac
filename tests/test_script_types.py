"""The .d.ts for script authors declares everything the sandbox installs, and is served."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import httpx
import quickjs

from security import generate_key_text
from tests.conftest import Engine, EngineProcess

DTS = resources.files("engine.sandbox").joinpath("aiwebengine.d.ts").read_text("utf-8")
# Set by the engine on every invocation rather than by the prelude.
PER_INVOCATION_GLOBALS = {"context", "auth"}


def installed_globals() -> set[str]:
    """What the prelude adds to a fresh QuickJS context, engine internals excepted."""
    context = quickjs.Context()
    before = set(context.eval("Object.getOwnPropertyNames(globalThis).join(',')").split(","))
    context.add_callable("__aiwe_host", lambda name, args: '{"ok":true,"value":null}')
    context.add_callable("__aiwe_log", lambda level, message: None)
    context.eval(resources.files("engine.sandbox").joinpath("prelude.js").read_text("utf-8"))
    after = set(context.eval("Object.getOwnPropertyNames(globalThis).join(',')").split(","))
    return {name for name in after - before if not name.startswith("__aiwe_")}


def declared_globals() -> set[str]:
    return set(re.findall(r"^declare (?:const|var|let|function) (\w+)", DTS, re.MULTILINE))


def test_every_global_the_sandbox_installs_is_declared() -> None:
    missing = (installed_globals() | PER_INVOCATION_GLOBALS) - declared_globals()
    assert not missing, f"declare these in engine/sandbox/aiwebengine.d.ts: {sorted(missing)}"


def test_nothing_is_declared_that_the_sandbox_does_not_install() -> None:
    extra = declared_globals() - installed_globals() - PER_INVOCATION_GLOBALS
    assert not extra, f"declared but not installed: {sorted(extra)}"


async def test_the_types_are_served_on_both_paths(engine: Engine) -> None:
    for path in ("/engine/types/aiwebengine.d.ts", "/engine/types/v0.1.0/aiwebengine.d.ts"):
        response = await engine.client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.text == DTS


def test_the_types_are_public_in_production(
    engine_process: type[EngineProcess], tmp_path: Path
) -> None:
    token = "p" * 48
    server = engine_process(
        tmp_path / "data",
        "--profile",
        "production",
        env={
            "AIWEBENGINE_SECURITY__ADMIN_TOKEN": token,
            "AIWEBENGINE_SECURITY__SECRET_ENCRYPTION_KEY": generate_key_text(),
        },
    )
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        assert client.get("/engine/types/aiwebengine.d.ts").status_code == 200
        assert client.get("/engine/scripts").status_code == 401
