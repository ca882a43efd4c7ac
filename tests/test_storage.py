"""The storage layer against real SQLite files: migrations, repositories, durability, breaker."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
import sqlalchemy.exc
import trio
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.breaker import CircuitBreaker
from engine.errors import StorageUnavailable
from engine.storage import (
    Database,
    LogEntry,
    LogQuery,
    NewLogEntry,
    StoredScript,
    migrate,
)
from engine.storage._tables import metadata, scripts


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "aiwebengine.db"


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(_url(db_path))
    try:
        yield database
    finally:
        await database.aclose()


def _sqlite_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read the file with a plain sqlite3 connection, outside the engine."""
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def _pragma(db: Database, name: str) -> Any:
    with db._engine.connect() as conn:
        return conn.exec_driver_sql(f"PRAGMA {name}").scalar()


# --- opening and migrations ---------------------------------------------------------------


async def test_open_creates_the_directory_and_tables_and_reports_progress(db_path: Path) -> None:
    messages: list[str] = []
    db = await Database.open(_url(db_path), on_progress=messages.append)
    await db.aclose()

    assert messages == [
        "migrating database: 0001_initial (create scripts, script_logs)",
        "migrating database: 0002_good_content (remember the last version whose init succeeded)",
        "migrating database: 0003_script_storage "
        "(key-value storage of scripts (shared and per user))",
        "migrating database: 0004_assets (script assets (files scoped to a script))",
        "migrating database: 0005_audit (audit trail of security events)",
        "migrating database: 0006_secrets (sealed secrets of scripts and of their users)",
        "database at revision 0006",
    ]
    tables = {name for (name,) in _sqlite_rows(db_path, "SELECT name FROM sqlite_master")}
    assert {
        "scripts",
        "script_logs",
        "script_storage",
        "script_assets",
        "audit_log",
        "script_secrets",
        "user_secrets",
        "alembic_version",
    } <= tables
    assert _sqlite_rows(db_path, "SELECT version_num FROM alembic_version") == [("0006",)]


async def test_opening_again_migrates_nothing_and_keeps_the_data(db_path: Path) -> None:
    first = await Database.open(_url(db_path))
    await first.scripts.upsert("/kept", "x", now_ms=1)
    await first.aclose()

    messages: list[str] = []
    second = await Database.open(_url(db_path), on_progress=messages.append)
    try:
        assert messages == ["database at revision 0006"]
        assert (await second.scripts.get("/kept")) is not None
    finally:
        await second.aclose()


def test_migrate_command_prepares_a_fresh_file(db_path: Path) -> None:
    messages: list[str] = []
    migrate(_url(db_path), on_progress=messages.append)
    migrate(_url(db_path), on_progress=messages.append)

    assert messages == [
        "migrating database: 0001_initial (create scripts, script_logs)",
        "migrating database: 0002_good_content (remember the last version whose init succeeded)",
        "migrating database: 0003_script_storage "
        "(key-value storage of scripts (shared and per user))",
        "migrating database: 0004_assets (script assets (files scoped to a script))",
        "migrating database: 0005_audit (audit trail of security events)",
        "migrating database: 0006_secrets (sealed secrets of scripts and of their users)",
        "database at revision 0006",
        "database at revision 0006",
    ]


def test_the_migrations_build_exactly_the_tables_the_queries_use(db_path: Path) -> None:
    migrate(_url(db_path))
    engine = sa.create_engine(_url(db_path))
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert differences == []


async def test_the_file_is_in_wal_mode_with_the_configured_settings(db_path: Path) -> None:
    db = await Database.open(_url(db_path), synchronous="normal")
    try:
        assert _sqlite_rows(db_path, "PRAGMA journal_mode") == [("wal",)]
        assert _pragma(db, "synchronous") == 1  # NORMAL
        assert _pragma(db, "foreign_keys") == 1
        assert _pragma(db, "busy_timeout") == 5000
    finally:
        await db.aclose()


async def test_settings_it_cannot_use_are_refused(db_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        await Database.open(_url(db_path), synchronous="SOMETIMES; DROP TABLE scripts")
    with pytest.raises(ValueError, match="in-memory"):
        await Database.open("sqlite://")
    with pytest.raises(ValueError, match="threads"):
        await Database.open(_url(db_path), threads=0)


# --- scripts -------------------------------------------------------------------------------


async def test_upsert_creates_then_updates_keeping_created_at(db: Database) -> None:
    created = await db.scripts.upsert("/hello", "v1", now_ms=1000)
    assert created.previous_exists is False
    assert created.changed is True
    assert created.script == StoredScript(
        uri="/hello",
        content="v1",
        created_at=1000,
        updated_at=1000,
        initialized=False,
        init_error=None,
        last_init_time=None,
    )

    updated = await db.scripts.upsert("/hello", "v2", now_ms=2000)
    assert updated.previous_exists is True
    assert updated.changed is True
    assert (updated.script.created_at, updated.script.updated_at) == (1000, 2000)
    assert await db.scripts.get("/hello") == updated.script


async def test_storing_the_same_content_again_is_not_a_change(db: Database) -> None:
    await db.scripts.upsert("/same", "content", now_ms=1)
    again = await db.scripts.upsert("/same", "content", now_ms=5)
    assert again.previous_exists is True
    assert again.changed is False
    assert again.script.updated_at == 5
    stored = await db.scripts.get("/same")
    assert stored is not None
    assert stored.updated_at == 5


async def test_an_update_keeps_the_init_status(db: Database) -> None:
    await db.scripts.upsert("/s", "v1", now_ms=1)
    await db.scripts.record_init("/s", success=True, error=None, at_ms=2)
    outcome = await db.scripts.upsert("/s", "v2", now_ms=3)
    assert (outcome.script.initialized, outcome.script.last_init_time) == (True, 2)
    assert await db.scripts.get("/s") == outcome.script


async def test_get_list_and_delete(db: Database) -> None:
    assert await db.scripts.get("/missing") is None
    for uri in ["/b", "/c", "/a"]:
        await db.scripts.upsert(uri, f"// {uri}", now_ms=1)

    assert [s.uri for s in await db.scripts.list_all()] == ["/a", "/b", "/c"]
    assert await db.scripts.delete("/b") is True
    assert await db.scripts.delete("/b") is False
    assert [s.uri for s in await db.scripts.list_all()] == ["/a", "/c"]


async def test_record_init_stores_the_outcome_of_the_last_run(db: Database) -> None:
    await db.scripts.upsert("/init", "x", now_ms=1)

    await db.scripts.record_init("/init", success=False, error="Error: boom", at_ms=10)
    failed = await db.scripts.get("/init")
    assert failed is not None
    assert (failed.initialized, failed.init_error, failed.last_init_time) == (
        False,
        "Error: boom",
        10,
    )

    await db.scripts.record_init("/init", success=True, error="ignored", at_ms=20)
    succeeded = await db.scripts.get("/init")
    assert succeeded is not None
    assert (succeeded.initialized, succeeded.init_error, succeeded.last_init_time) == (
        True,
        None,
        20,
    )


async def test_a_successful_init_makes_its_content_the_last_good_version(db: Database) -> None:
    await db.scripts.upsert("/good", "v1", now_ms=1)
    await db.scripts.record_init("/good", success=True, error=None, at_ms=2, content="v1")
    await db.scripts.upsert("/good", "v2-broken", now_ms=3)
    await db.scripts.record_init("/good", success=False, error="boom", at_ms=4, content="v2-broken")

    stored = await db.scripts.get("/good")
    assert stored is not None
    assert (stored.content, stored.good_content, stored.initialized) == ("v2-broken", "v1", False)


def test_migrating_from_0001_marks_initialized_scripts_good(db_path: Path) -> None:
    import alembic.command
    import alembic.config

    from engine.storage._database import MIGRATIONS_DIR

    config = alembic.config.Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    db_path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(_url(db_path))
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            alembic.command.upgrade(config, "0001")
            conn.exec_driver_sql(
                "INSERT INTO scripts (uri, content, created_at, updated_at, initialized) "
                "VALUES ('/ok', 'a', 1, 1, 1), ('/never', 'b', 1, 1, 0)"
            )
    finally:
        engine.dispose()

    migrate(_url(db_path))

    assert sorted(_sqlite_rows(db_path, "SELECT uri, good_content FROM scripts")) == [
        ("/never", None),
        ("/ok", "a"),
    ]


async def test_record_init_of_a_deleted_script_does_nothing(db: Database) -> None:
    await db.scripts.record_init("/gone", success=True, error=None, at_ms=1)
    assert await db.scripts.get("/gone") is None
    assert await db.scripts.list_all() == []


def test_size_counts_utf8_bytes() -> None:
    script = StoredScript("/u", "héllo ✓", 0, 0, False, None, None)
    assert script.size == len("héllo ✓".encode())
    assert script.size == 10


async def test_concurrent_writers_never_see_a_locked_database(db_path: Path) -> None:
    db = await Database.open(_url(db_path), threads=8)
    outcomes = []

    async def upsert(uri: str, n: int) -> None:
        outcomes.append(await db.scripts.upsert(uri, f"v{n}", now_ms=n))

    async def log(n: int) -> None:
        await db.logs.append([NewLogEntry("/shared", "info", f"m{n}", n)] * 3)

    try:
        async with trio.open_nursery() as nursery:
            for n in range(40):
                nursery.start_soon(upsert, "/shared", n)
                nursery.start_soon(upsert, f"/own/{n}", n)
                nursery.start_soon(log, n)
        shared = [o for o in outcomes if o.script.uri == "/shared"]
        assert sum(not o.previous_exists for o in shared) == 1
        assert len(await db.scripts.list_all()) == 41
        assert len(await db.logs.query(LogQuery(uri="/shared"))) == 120
    finally:
        await db.aclose()


# --- durability ----------------------------------------------------------------------------

_READER = """
import sqlite3, sys
row = sqlite3.connect(sys.argv[1]).execute(
    "SELECT content FROM scripts WHERE uri = ?", (sys.argv[2],)
).fetchone()
sys.stdout.buffer.write(b"<none>" if row is None else row[0].encode())
"""


async def test_an_acknowledged_upsert_is_visible_to_another_process(
    db: Database, db_path: Path
) -> None:
    await db.scripts.upsert("/durable", "export const ok = '✓';", now_ms=1)

    # The database stays open: the write must already be committed, not waiting for close.
    result = await trio.run_process(
        [sys.executable, "-c", _READER, str(db_path), "/durable"],
        capture_stdout=True,
    )
    assert result.stdout.decode() == "export const ok = '✓';"


# --- logs ----------------------------------------------------------------------------------


def _entry(uri: str, message: str, timestamp: int, **fields: str | None) -> NewLogEntry:
    return NewLogEntry(script_uri=uri, level="info", message=message, timestamp=timestamp, **fields)


async def _messages(db: Database, **query: Any) -> list[str]:
    return [entry.message for entry in await db.logs.query(LogQuery(**query))]


async def test_append_returns_the_entries_with_increasing_seq(db: Database) -> None:
    assert await db.logs.latest_seq() == 0
    appended = await db.logs.append([_entry("/a", "one", 1), _entry("/b", "two", 2)])
    assert [e.message for e in appended] == ["one", "two"]
    assert appended[0].seq < appended[1].seq
    assert await db.logs.latest_seq() == appended[1].seq
    assert await db.logs.query(LogQuery()) == list(reversed(appended))
    assert await db.logs.append([]) == []


async def test_one_script_is_listed_oldest_first_all_scripts_newest_first(db: Database) -> None:
    await db.logs.append([_entry("/a", "a1", 1), _entry("/b", "b1", 2), _entry("/a", "a2", 3)])
    assert await _messages(db, uri="/a") == ["a1", "a2"]
    assert await _messages(db) == ["a2", "b1", "a1"]


async def test_every_filter_narrows_the_listing(db: Database) -> None:
    await db.logs.append(
        [
            NewLogEntry("/a", "INFO", "Started 100% fine", 10, "r1", "console", "/x"),
            NewLogEntry("/a", "error", "Échec: under_score", 20, "r2", "init", None),
            NewLogEntry("/b", "Error", "plain", 30, None, None, "/y"),
        ]
    )
    assert await _messages(db, level="error") == ["plain", "Échec: under_score"]
    assert await _messages(db, level="info") == ["Started 100% fine"]
    assert await _messages(db, contains="STARTED") == ["Started 100% fine"]
    assert await _messages(db, contains="échec") == ["Échec: under_score"]
    # '%' and '_' match themselves, not "anything".
    assert await _messages(db, contains="0%") == ["Started 100% fine"]
    assert await _messages(db, contains="%") == ["Started 100% fine"]
    assert await _messages(db, contains="r_s") == ["Échec: under_score"]
    assert await _messages(db, contains="_") == ["Échec: under_score"]
    assert await _messages(db, request_id="r2") == ["Échec: under_score"]
    assert await _messages(db, kind="console") == ["Started 100% fine"]
    assert await _messages(db, route="/y") == ["plain"]
    assert await _messages(db, since_ms=20) == ["plain", "Échec: under_score"]
    assert await _messages(db, uri="/a", level="ERROR", since_ms=15) == ["Échec: under_score"]
    assert await _messages(db, uri="/nobody") == []


async def test_limit_keeps_the_newest_in_the_listing_order(db: Database) -> None:
    await db.logs.append([_entry("/a", f"m{n}", n) for n in range(5)])
    assert await _messages(db, uri="/a", limit=2) == ["m3", "m4"]
    assert await _messages(db, limit=2) == ["m4", "m3"]


async def test_after_seq_with_limit_pages_forward(db: Database) -> None:
    appended = await db.logs.append([_entry("/a", f"m{n}", n) for n in range(5)])
    first = appended[0].seq
    assert await _messages(db, uri="/a", after_seq=first) == ["m1", "m2", "m3", "m4"]
    page = await db.logs.query(LogQuery(after_seq=first, limit=2))
    assert [e.message for e in page] == ["m1", "m2"]
    next_page = await db.logs.query(LogQuery(after_seq=page[-1].seq, limit=2))
    assert [e.message for e in next_page] == ["m3", "m4"]
    assert await db.logs.query(LogQuery(after_seq=next_page[-1].seq, limit=2)) == []


def test_queries_the_database_would_choke_on_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match="limit"):
        LogQuery(limit=0)
    with pytest.raises(ValueError):
        LogQuery(contains="x" * 1001)
    assert LogQuery(contains="x" * 1000).contains == "x" * 1000


async def test_clear_deletes_one_scripts_entries(db: Database) -> None:
    await db.logs.append([_entry("/a", "a1", 1), _entry("/a", "a2", 2), _entry("/b", "b1", 3)])
    assert await db.logs.clear("/a") == 2
    assert await db.logs.clear("/a") == 0
    assert await _messages(db) == ["b1"]


async def test_seq_is_never_reused_after_the_newest_entries_are_cleared(db: Database) -> None:
    before = await db.logs.append([_entry("/a", "old", 1)])
    await db.logs.clear("/a")
    after = await db.logs.append([_entry("/a", "new", 2)])
    assert after[0].seq > before[0].seq


async def test_prune_keeps_the_newest_entries_of_each_script(db: Database) -> None:
    await db.logs.append(
        [_entry("/a", f"a{n}", n) for n in range(5)] + [_entry("/b", f"b{n}", n) for n in range(2)]
    )
    assert await db.logs.prune(keep_per_script=3) == 2
    assert await _messages(db, uri="/a") == ["a2", "a3", "a4"]
    assert await _messages(db, uri="/b") == ["b0", "b1"]
    assert await db.logs.prune(keep_per_script=0) == 5
    assert await db.logs.latest_seq() == 0
    with pytest.raises(ValueError):
        await db.logs.prune(keep_per_script=-1)


async def test_prune_keeps_twenty_by_default(db: Database) -> None:
    await db.logs.append([_entry("/a", f"m{n}", n) for n in range(25)])
    assert await db.logs.prune() == 5
    assert await _messages(db, uri="/a", limit=1) == ["m24"]
    assert len(await db.logs.query(LogQuery(uri="/a"))) == 20


async def test_logs_of_a_deleted_script_remain(db: Database) -> None:
    await db.scripts.upsert("/a", "x", now_ms=1)
    await db.logs.append([_entry("/a", "still here", 1)])
    await db.scripts.delete("/a")
    assert await _messages(db, uri="/a") == ["still here"]


def test_log_entry_json_uses_the_api_names() -> None:
    entry = LogEntry(7, "/a", "info", "hi", 123, "r1", "console", "/x")
    assert entry.to_json() == {
        "scriptUri": "/a",
        "message": "hi",
        "level": "info",
        "timestamp": 123,
        "seq": 7,
        "requestId": "r1",
        "kind": "console",
        "route": "/x",
    }


# --- the query contract, against a reference in plain Python -----------------------------


def _reference(entries: list[LogEntry], q: LogQuery) -> list[LogEntry]:
    def matches(e: LogEntry) -> bool:
        return (
            (q.uri is None or e.script_uri == q.uri)
            and (q.level is None or e.level.lower() == q.level.lower())
            and (q.contains is None or q.contains.lower() in e.message.lower())
            and (q.request_id is None or e.request_id == q.request_id)
            and (q.kind is None or e.kind == q.kind)
            and (q.route is None or e.route == q.route)
            and (q.since_ms is None or e.timestamp >= q.since_ms)
            and (q.after_seq is None or e.seq > q.after_seq)
        )

    oldest_first = sorted(filter(matches, entries), key=lambda e: e.seq)
    if q.limit is not None and q.after_seq is not None:
        return oldest_first[: q.limit]
    if q.limit is not None:
        oldest_first = oldest_first[-q.limit :]
    return oldest_first if q.uri is not None else oldest_first[::-1]


_URIS = ["/a", "/b", "/c"]
# Characters that trip naive implementations: LIKE wildcards, the escape character, and
# letters whose cases only Unicode-aware folding relates.  Few of them, so that substrings
# repeat across messages.
_ALPHABET = "aA%_/éÉ"


def _sometimes(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Mostly no filter: with most filters set at once hardly anything would match, and the
    # ordering and limit rules would go untested.  Shrinks towards "no filter".
    return st.sampled_from([False, False, False, True]).flatmap(
        lambda on: strategy if on else st.none()
    )


_NEW_ENTRIES = st.lists(
    st.builds(
        NewLogEntry,
        script_uri=st.sampled_from(_URIS),
        level=st.sampled_from(["info", "INFO", "Warn", "error", "Érror"]),
        message=st.text(alphabet=_ALPHABET, max_size=4),
        timestamp=st.integers(0, 20),
        request_id=st.sampled_from([None, "r1", "r2"]),
        kind=st.sampled_from([None, "console", "init"]),
        route=st.sampled_from([None, "/x", "/y"]),
    ),
    # Enough entries that limits cut and filters leave something to order.
    min_size=10,
    max_size=40,
)


@settings(
    max_examples=100,
    deadline=None,
    # Each example opens the same file afresh and empties the log table first.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(new_entries=_NEW_ENTRIES, data=st.data())
async def test_query_returns_what_the_reference_filter_returns(
    tmp_path: Path, new_entries: list[NewLogEntry], data: st.DataObject
) -> None:
    db = await Database.open(_url(tmp_path / "property.db"))
    try:
        await db.logs.prune(keep_per_script=0)
        entries = await db.logs.append(new_entries)
        # Drawn relative to the first new seq: the numbers themselves grow from example to
        # example, and the drawing must not depend on them.
        first = entries[0].seq if entries else await db.logs.latest_seq() + 1
        queries = st.builds(
            LogQuery,
            uri=st.none() | st.sampled_from(_URIS),
            level=_sometimes(st.sampled_from(["info", "WARN", "éRROR", "debug"])),
            contains=_sometimes(st.text(alphabet=_ALPHABET, max_size=2)),
            request_id=_sometimes(st.sampled_from(["r1", "r2"])),
            kind=_sometimes(st.sampled_from(["console", "init"])),
            route=_sometimes(st.sampled_from(["/x", "/y"])),
            since_ms=_sometimes(st.integers(0, 21)),
            after_seq=_sometimes(st.integers(-1, len(entries)).map(lambda k: first + k)),
            limit=st.none() | st.integers(1, 8),
        )
        for q in data.draw(st.lists(queries, min_size=5, max_size=20)):
            assert await db.logs.query(q) == _reference(entries, q), q
    finally:
        await db.aclose()


# --- the circuit breaker -------------------------------------------------------------------


@attrs.define
class FakeClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@attrs.define
class FlakyConnect:
    """Stands in for ``Engine.connect``: fails like a broken disk while ``down`` is set."""

    real: Any
    down: bool = False
    attempts: int = 0

    def __call__(self) -> Any:
        self.attempts += 1
        if self.down:
            raise sqlalchemy.exc.OperationalError(
                "SELECT 1", None, sqlite3.OperationalError("disk I/O error")
            )
        return self.real()


@pytest.fixture
async def flaky(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Database]:
    breaker = CircuitBreaker(failure_threshold=3, window_s=30.0, cooldown_s=10.0, clock=FakeClock())
    db = await Database.open(_url(db_path), breaker=breaker)
    await db.scripts.upsert("/s", "x", now_ms=1)
    monkeypatch.setattr(db._engine, "connect", FlakyConnect(db._engine.connect))
    try:
        yield db
    finally:
        await db.aclose()


async def test_failures_open_the_breaker_and_it_closes_after_the_cool_down(
    flaky: Database,
) -> None:
    connect: FlakyConnect = flaky._engine.connect  # type: ignore[assignment]
    clock: FakeClock = flaky.breaker.clock  # type: ignore[assignment]
    connect.down = True

    for _ in range(3):
        with pytest.raises(StorageUnavailable) as failed:
            await flaky.scripts.get("/s")
        # The client-facing message names no internals; the cause is kept for the log.
        assert failed.value.message == "database unavailable"
        assert isinstance(failed.value.__cause__, sqlalchemy.exc.OperationalError)
    assert connect.attempts == 3
    assert not flaky.healthy

    # Open: calls fail fast without reaching the database.
    with pytest.raises(StorageUnavailable) as fast:
        await flaky.logs.append([_entry("/s", "lost", 1)])
    assert fast.value.retry_after_s == 10.0
    with pytest.raises(StorageUnavailable):
        await flaky.ping()
    assert connect.attempts == 3

    # After the cool-down one probe goes through; its success closes the breaker.
    connect.down = False
    clock.now = 10.0
    await flaky.ping()
    assert flaky.healthy
    assert await flaky.scripts.get("/s") is not None


async def test_a_failed_probe_reopens_the_breaker(flaky: Database) -> None:
    connect: FlakyConnect = flaky._engine.connect  # type: ignore[assignment]
    clock: FakeClock = flaky.breaker.clock  # type: ignore[assignment]
    connect.down = True
    for _ in range(3):
        with pytest.raises(StorageUnavailable):
            await flaky.ping()

    clock.now = 10.0
    with pytest.raises(StorageUnavailable):
        await flaky.ping()
    assert connect.attempts == 4
    with pytest.raises(StorageUnavailable) as fast:
        await flaky.ping()
    assert fast.value.retry_after_s == 10.0
    assert connect.attempts == 4


async def test_a_cancelled_probe_lets_the_next_call_probe(flaky: Database) -> None:
    connect: FlakyConnect = flaky._engine.connect  # type: ignore[assignment]
    clock: FakeClock = flaky.breaker.clock  # type: ignore[assignment]
    connect.down = True
    for _ in range(3):
        with pytest.raises(StorageUnavailable):
            await flaky.ping()
    connect.down = False
    clock.now = 10.0

    with trio.CancelScope() as scope:
        scope.cancel()
        await flaky.ping()
    assert scope.cancelled_caught

    await flaky.ping()
    assert flaky.healthy


async def test_errors_in_the_callers_data_do_not_count_against_the_database(
    db: Database,
) -> None:
    await db.scripts.upsert("/dup", "x", now_ms=1)
    duplicate = sa.insert(scripts).values(
        uri="/dup", content="y", created_at=1, updated_at=1, initialized=False
    )
    for _ in range(db.breaker.failure_threshold + 1):
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            await db._runner.write(lambda conn: conn.execute(duplicate))
    assert db.healthy
    await db.ping()
