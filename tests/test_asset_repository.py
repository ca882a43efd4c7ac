"""Script assets against real SQLite files: bytes in, the same bytes out, one transaction per
call, nothing leaking between scripts."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
import sqlalchemy.exc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.storage import AssetInfo, AssetWrite, Database, StoredAsset, WriteResult

# Every byte value, NUL first, and sequences that are not UTF-8 at all.
AWKWARD_BYTES = b"\x00\xff\xfe" + bytes(range(256)) + b"\xc3\x28\x80\x00"


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "assets.db"


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(_url(db_path))
    try:
        yield database
    finally:
        await database.aclose()


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _write(name: str, content: bytes, mimetype: str = "application/octet-stream") -> AssetWrite:
    return AssetWrite(name=name, mimetype=mimetype, content=content)


@contextmanager
def _statements(db: Database) -> Iterator[list[str]]:
    """The SQL the engine sends while the block runs."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        seen.append(statement)

    sa.event.listen(db._engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(db._engine, "before_cursor_execute", record)


# --- round trip ------------------------------------------------------------------------------


async def test_bytes_come_back_exactly_with_their_size_and_digest(db: Database) -> None:
    result = await db.assets.upsert("/s", _write("blob.bin", AWKWARD_BYTES), now_ms=1000)

    expected = AssetInfo(
        script_uri="/s",
        name="blob.bin",
        mimetype="application/octet-stream",
        size=len(AWKWARD_BYTES),
        sha256=_sha(AWKWARD_BYTES),
        created_at=1000,
        updated_at=1000,
    )
    assert result == WriteResult(info=expected, status="created")
    assert await db.assets.get("/s", "blob.bin") == StoredAsset(
        info=expected, content=AWKWARD_BYTES
    )
    assert await db.assets.info("/s", "blob.bin") == expected
    assert expected.sha256 == expected.sha256.lower()
    assert len(expected.sha256) == 64


async def test_empty_content_is_an_asset_too(db: Database) -> None:
    await db.assets.upsert("/s", _write("empty.txt", b"", "text/plain"), now_ms=1)
    stored = await db.assets.get("/s", "empty.txt")
    assert stored is not None
    assert (stored.content, stored.info.size, stored.info.sha256) == (b"", 0, _sha(b""))


async def test_the_content_is_stored_as_a_blob(db: Database, db_path: Path) -> None:
    await db.assets.upsert("/s", _write("a", b"\x00text"), now_ms=1)
    with sqlite3.connect(db_path) as conn:
        row = conn.execute("SELECT typeof(content), content FROM script_assets").fetchone()
    assert row == ("blob", b"\x00text")


async def test_missing_assets_are_none(db: Database) -> None:
    await db.assets.upsert("/s", _write("a", b"x"), now_ms=1)
    assert await db.assets.get("/s", "b") is None
    assert await db.assets.info("/s", "b") is None
    assert await db.assets.get("/other", "a") is None


# --- created, updated, unchanged -------------------------------------------------------------


async def test_statuses_and_timestamps_across_writes(db: Database) -> None:
    created = await db.assets.upsert("/s", _write("a.css", b"v1", "text/css"), now_ms=1000)
    assert created.status == "created"
    assert (created.info.created_at, created.info.updated_at) == (1000, 1000)

    updated = await db.assets.upsert("/s", _write("a.css", b"v2", "text/css"), now_ms=2000)
    assert updated.status == "updated"
    assert (updated.info.created_at, updated.info.updated_at) == (1000, 2000)
    assert (updated.info.size, updated.info.sha256) == (2, _sha(b"v2"))

    # Same bytes and mimetype: the row is left as it was, updated_at included.
    unchanged = await db.assets.upsert("/s", _write("a.css", b"v2", "text/css"), now_ms=3000)
    assert unchanged == WriteResult(info=updated.info, status="unchanged")
    assert await db.assets.info("/s", "a.css") == updated.info

    # Same bytes under another mimetype is a change.
    retyped = await db.assets.upsert("/s", _write("a.css", b"v2", "text/plain"), now_ms=4000)
    assert retyped.status == "updated"
    assert (retyped.info.mimetype, retyped.info.created_at, retyped.info.updated_at) == (
        "text/plain",
        1000,
        4000,
    )
    assert await db.assets.info("/s", "a.css") == retyped.info


# --- listing ---------------------------------------------------------------------------------


async def test_list_is_by_name_and_holds_only_that_scripts_assets(db: Database) -> None:
    for uri, name in [("/b", "z"), ("/a", "m"), ("/b", "a"), ("/a", "b"), ("/a", "a/c.txt")]:
        await db.assets.upsert(uri, _write(name, f"{uri}:{name}".encode()), now_ms=1)

    assert [info.name for info in await db.assets.list("/a")] == ["a/c.txt", "b", "m"]
    assert [info.name for info in await db.assets.list("/b")] == ["a", "z"]
    assert {info.script_uri for info in await db.assets.list("/a")} == {"/a"}
    assert await db.assets.list("/nobody") == []
    assert [(i.script_uri, i.name) for i in await db.assets.list_all()] == [
        ("/a", "a/c.txt"),
        ("/a", "b"),
        ("/a", "m"),
        ("/b", "a"),
        ("/b", "z"),
    ]


async def test_the_same_name_in_two_scripts_is_two_assets(db: Database) -> None:
    await db.assets.upsert("/a", _write("logo.png", b"a-logo"), now_ms=1)
    await db.assets.upsert("/b", _write("logo.png", b"b-logo"), now_ms=2)

    a = await db.assets.get("/a", "logo.png")
    b = await db.assets.get("/b", "logo.png")
    assert a is not None
    assert b is not None
    assert (a.content, b.content) == (b"a-logo", b"b-logo")
    assert await db.assets.delete("/a", "logo.png") is True
    assert await db.assets.get("/b", "logo.png") == b


async def test_listings_and_info_never_read_the_content(db: Database) -> None:
    await db.assets.upsert("/s", _write("big", b"x" * 100_000), now_ms=1)

    with _statements(db) as metadata_only:
        await db.assets.list("/s")
        await db.assets.list_all()
        await db.assets.info("/s", "big")
    with _statements(db) as with_content:
        await db.assets.get("/s", "big")

    asset_queries = [sql for sql in metadata_only if "script_assets" in sql]
    assert len(asset_queries) == 3
    assert not any("script_assets.content" in sql for sql in asset_queries)
    # The check above can tell: reading the asset itself does name the column.
    assert any("script_assets.content" in sql for sql in with_content)


# --- upsert_many -----------------------------------------------------------------------------


async def test_upsert_many_answers_in_input_order(db: Database) -> None:
    await db.assets.upsert("/s", _write("same", b"1"), now_ms=1)
    await db.assets.upsert("/s", _write("old", b"1"), now_ms=1)

    results = await db.assets.upsert_many(
        "/s",
        [_write("zeta", b"new"), _write("same", b"1"), _write("old", b"2"), _write("alpha", b"")],
        now_ms=5,
    )

    assert [(r.info.name, r.status) for r in results] == [
        ("zeta", "created"),
        ("same", "unchanged"),
        ("old", "updated"),
        ("alpha", "created"),
    ]
    assert [r.info.updated_at for r in results] == [5, 1, 5, 5]
    assert [i.name for i in await db.assets.list("/s")] == ["alpha", "old", "same", "zeta"]
    assert await db.assets.upsert_many("/s", [], now_ms=6) == []


async def test_a_name_given_twice_in_one_batch_is_written_twice(db: Database) -> None:
    results = await db.assets.upsert_many(
        "/s", [_write("a", b"first"), _write("a", b"second")], now_ms=1
    )
    assert [r.status for r in results] == ["created", "updated"]
    stored = await db.assets.get("/s", "a")
    assert stored is not None
    assert stored.content == b"second"


def _refuse_inserts_named(db: Database, name: str) -> None:
    """A trigger that makes the database itself reject one insert, mid-transaction."""
    with db._engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse_asset BEFORE INSERT ON script_assets "
            f"WHEN NEW.name = '{name}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )


async def test_upsert_many_stores_everything_or_nothing(db: Database) -> None:
    kept = await db.assets.upsert("/s", _write("kept", b"original"), now_ms=1)
    _refuse_inserts_named(db, "refused")

    batch = [_write("kept", b"changed"), _write("fresh", b"new"), _write("refused", b"x")]
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        await db.assets.upsert_many("/s", batch, now_ms=2)

    # The update and the insert that ran before the failure were rolled back with it.
    assert await db.assets.list("/s") == [kept.info]
    stored = await db.assets.get("/s", "kept")
    assert stored is not None
    assert stored.content == b"original"
    # A refused write is the caller's problem, not the database's health.
    assert db.healthy

    # Without the refused write the same batch goes through.
    results = await db.assets.upsert_many("/s", batch[:2], now_ms=3)
    assert [r.status for r in results] == ["updated", "created"]


# --- replace_if ------------------------------------------------------------------------------


async def test_replace_if_writes_when_the_digest_still_matches(db: Database) -> None:
    first = await db.assets.upsert("/s", _write("page.html", b"<p>1</p>", "text/html"), now_ms=1)

    replaced = await db.assets.replace_if(
        "/s", "page.html", b"<p>2</p>", expected_sha256=first.info.sha256, now_ms=2
    )

    assert replaced is not None
    assert replaced.status == "updated"
    assert replaced.info == AssetInfo(
        script_uri="/s",
        name="page.html",
        mimetype="text/html",
        size=8,
        sha256=_sha(b"<p>2</p>"),
        created_at=1,
        updated_at=2,
    )
    stored = await db.assets.get("/s", "page.html")
    assert stored == StoredAsset(info=replaced.info, content=b"<p>2</p>")


async def test_replace_if_with_the_same_bytes_is_unchanged(db: Database) -> None:
    first = await db.assets.upsert("/s", _write("a", b"same"), now_ms=1)
    again = await db.assets.replace_if("/s", "a", b"same", first.info.sha256, now_ms=9)
    assert again == WriteResult(info=first.info, status="unchanged")
    assert await db.assets.info("/s", "a") == first.info


async def test_replace_if_refuses_a_stale_digest_and_changes_nothing(db: Database) -> None:
    await db.assets.upsert("/s", _write("a", b"v1"), now_ms=1)
    current = await db.assets.upsert("/s", _write("a", b"v2"), now_ms=2)

    stale = await db.assets.replace_if("/s", "a", b"v3", expected_sha256=_sha(b"v1"), now_ms=3)

    assert stale is None
    assert await db.assets.get("/s", "a") == StoredAsset(info=current.info, content=b"v2")


async def test_replace_if_does_not_create_a_missing_asset(db: Database) -> None:
    assert await db.assets.replace_if("/s", "ghost", b"x", _sha(b""), now_ms=1) is None
    assert await db.assets.list("/s") == []


# --- deleting --------------------------------------------------------------------------------


async def test_delete_removes_one_asset(db: Database) -> None:
    await db.assets.upsert_many("/s", [_write("a", b"1"), _write("b", b"2")], now_ms=1)
    assert await db.assets.delete("/s", "a") is True
    assert await db.assets.delete("/s", "a") is False
    assert await db.assets.delete("/other", "b") is False
    assert [i.name for i in await db.assets.list("/s")] == ["b"]


async def test_drop_script_removes_that_scripts_assets_only(db: Database) -> None:
    await db.assets.upsert_many("/s", [_write("a", b"1"), _write("b", b"2")], now_ms=1)
    await db.assets.upsert("/t", _write("a", b"3"), now_ms=1)

    assert await db.assets.drop_script("/s") == 2
    assert await db.assets.drop_script("/s") == 0
    assert await db.assets.list("/s") == []
    assert [(i.script_uri, i.name) for i in await db.assets.list_all()] == [("/t", "a")]


async def test_deleting_a_script_deletes_its_assets(db: Database) -> None:
    await db.scripts.upsert("/s", "// s", now_ms=1)
    await db.scripts.upsert("/t", "// t", now_ms=1)
    await db.assets.upsert_many("/s", [_write("a", b"1"), _write("b", b"2")], now_ms=1)
    await db.assets.upsert("/t", _write("a", b"3"), now_ms=1)
    await db.storage.set("/s", "", "k", "v", now_ms=1)

    assert await db.scripts.delete("/s") is True

    assert await db.assets.list("/s") == []
    assert await db.storage.get("/s", "", "k") is None
    assert [(i.script_uri, i.name) for i in await db.assets.list_all()] == [("/t", "a")]


# --- durability ------------------------------------------------------------------------------


async def test_assets_survive_closing_and_reopening(db_path: Path) -> None:
    first = await Database.open(_url(db_path))
    try:
        written = await first.assets.upsert("/s", _write("f", AWKWARD_BYTES), now_ms=7)
    finally:
        await first.aclose()

    second = await Database.open(_url(db_path))
    try:
        assert await second.assets.get("/s", "f") == StoredAsset(
            info=written.info, content=AWKWARD_BYTES
        )
    finally:
        await second.aclose()


# --- any bytes, any name -----------------------------------------------------------------------

# Any text SQLite can hold: no NUL, and no lone surrogates (UTF-8 cannot encode them).
_NAMES = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)


@settings(
    max_examples=60,
    deadline=None,
    # Each example opens the same file afresh and empties the script's assets first.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(assets=st.dictionaries(_NAMES, st.binary(max_size=2048), max_size=6), uri=_NAMES)
async def test_any_bytes_under_any_name_round_trip(
    tmp_path: Path, assets: dict[str, bytes], uri: str
) -> None:
    db = await Database.open(_url(tmp_path / "property.db"))
    try:
        await db.assets.drop_script(uri)
        writes = [_write(name, content) for name, content in assets.items()]
        results = await db.assets.upsert_many(uri, writes, now_ms=1)

        assert [r.info.name for r in results] == list(assets)
        assert {r.status for r in results} <= {"created"}
        # SQLite orders text by its UTF-8 bytes, which is code point order, like Python's.
        assert [info.name for info in await db.assets.list(uri)] == sorted(assets)
        for name, content in assets.items():
            stored = await db.assets.get(uri, name)
            assert stored is not None
            assert stored.content == content
            assert (stored.info.size, stored.info.sha256) == (len(content), _sha(content))
    finally:
        await db.aclose()
