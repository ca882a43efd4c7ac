"""The storage host API against a real SQLite file: strings, namespaces, a model check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.breaker import CircuitBreaker
from engine.errors import HostCallError
from engine.script_storage import (
    CLEARED,
    EMPTY_KEY,
    NEEDS_LOGIN,
    SET_OK,
    TOO_LARGE,
    ScriptStorageApi,
)
from engine.storage import Database


async def open_api(path: Path) -> tuple[Database, ScriptStorageApi]:
    db = await Database.open(f"sqlite:///{path}", synchronous="NORMAL")
    return db, ScriptStorageApi(db.storage)


async def test_personal_storage_is_per_user_and_apart_from_shared(tmp_path: Path) -> None:
    db, api = await open_api(tmp_path / "kv.db")
    try:
        for user, value in (("ann", "a"), ("bob", "b")):
            call = api.call("personalStorage.setItem", ["k", value], script_uri="s", user_id=user)
            assert await call == SET_OK
        await api.call("sharedStorage.setItem", ["k", "shared"], script_uri="s", user_id="ann")
        get = "personalStorage.getItem"
        assert await api.call(get, ["k"], script_uri="s", user_id="ann") == "a"
        assert await api.call(get, ["k"], script_uri="s", user_id="bob") == "b"
        assert await api.call(get, ["k"], script_uri="other", user_id="ann") is None
        shared = await api.call("sharedStorage.getItem", ["k"], script_uri="s", user_id=None)
        assert shared == "shared"
        cleared = await api.call("personalStorage.clear", [], script_uri="s", user_id="ann")
        assert cleared == CLEARED
        assert await api.call(get, ["k"], script_uri="s", user_id="bob") == "b"
        anonymous = await api.call(
            "personalStorage.setItem", ["k", "x"], script_uri="s", user_id=None
        )
        assert anonymous == NEEDS_LOGIN
    finally:
        await db.aclose()


async def test_limits_are_answered_with_the_original_strings(tmp_path: Path) -> None:
    db, api = await open_api(tmp_path / "kv.db")
    try:
        set_item = "sharedStorage.setItem"
        assert await api.call(set_item, ["", "v"], script_uri="s", user_id=None) == EMPTY_KEY
        assert await api.call(set_item, [" \t", "v"], script_uri="s", user_id=None) == EMPTY_KEY
        # Bytes, not characters: 500,001 two-byte characters are over the limit.
        too_big = "é" * 500_001
        assert await api.call(set_item, ["k", too_big], script_uri="s", user_id=None) == TOO_LARGE
        assert await api.call("sharedStorage.getItem", [""], script_uri="s", user_id=None) is None
    finally:
        await db.aclose()


async def test_an_unavailable_database_makes_the_call_throw_in_javascript(tmp_path: Path) -> None:
    breaker = CircuitBreaker(1, 30.0, 60.0)
    db = await Database.open(f"sqlite:///{tmp_path / 'kv.db'}", breaker=breaker)
    api = ScriptStorageApi(db.storage)
    try:
        breaker.record_failure()  # open: every call now fails fast
        with pytest.raises(HostCallError, match="storage is unavailable"):
            await api.call("sharedStorage.getItem", ["k"], script_uri="s", user_id=None)
    finally:
        await db.aclose()


operations = st.lists(
    st.one_of(
        st.tuples(st.just("setItem"), st.sampled_from(["a", "b", "c"]), st.text(max_size=20)),
        st.tuples(st.just("getItem"), st.sampled_from(["a", "b", "c"])),
        st.tuples(st.just("removeItem"), st.sampled_from(["a", "b", "c"])),
        st.tuples(st.just("clear")),
    ),
    max_size=25,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_storage_behaves_like_a_dictionary(tmp_path: Path, ops: list[tuple[Any, ...]]) -> None:
    async def run() -> None:
        path = tmp_path / f"model-{trio.current_time()}.db"
        db, api = await open_api(path)
        model: dict[str, str] = {}
        try:
            for op in ops:
                name, args = op[0], list(op[1:])
                got = await api.call(f"sharedStorage.{name}", args, script_uri="s", user_id=None)
                if name == "setItem":
                    model[args[0]] = args[1]
                    assert got == SET_OK
                elif name == "getItem":
                    assert got == model.get(args[0])
                elif name == "removeItem":
                    assert got == (model.pop(args[0], None) is not None)
                else:
                    model.clear()
                    assert got == CLEARED
        finally:
            await db.aclose()

    trio.run(run)
