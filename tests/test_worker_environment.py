"""Sandbox processes do not inherit the engine's settings, secrets included."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import live_worker_pids, make_config, running_engine

TOKEN = "admin-token-that-must-not-reach-workers-0123456789"
KEY_VARIABLE = "AIWEBENGINE_SECURITY__SECRET_ENCRYPTION_KEY"
SOURCE = 'routeRegistry.registerRoute("/x", "x");\nfunction x() { return "ok"; }'


async def test_workers_run_without_the_engines_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIWEBENGINE_SECURITY__ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv(KEY_VARIABLE, "a-key-that-must-not-reach-workers")
    monkeypatch.setenv("UNRELATED_VARIABLE", "kept")
    async with running_engine(make_config(tmp_path / "data")) as engine:
        await engine.deploy("env", SOURCE)
        assert (await engine.client.get("/x")).text == "ok"  # a worker has served
        pids = live_worker_pids()
        assert pids
        for pid in pids:
            check_environment(pid)


def check_environment(pid: int) -> None:
    environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    names = {entry.split(b"=", 1)[0] for entry in environment if entry}
    assert b"UNRELATED_VARIABLE" in names  # the probe reads the real environment
    assert not any(name.startswith(b"AIWEBENGINE_") for name in names), names
    assert TOKEN.encode() not in b"\0".join(environment)
