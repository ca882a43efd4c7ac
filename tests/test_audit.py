"""The audit trail: the writer that never fails a request, the stored listing and its paging,
and the events the engine records, read back through ``GET /engine/audit``."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.audit import MAX_DETAIL, MAX_TEXT, AuditLog
from engine.errors import StorageUnavailable
from engine.storage import AuditQuery, Database, NewAuditEntry
from handlers.admin import BadParameter
from handlers.audit import audit_query
from security import UserContext, generate_key_text
from tests.conftest import Engine, make_config, running_engine

TOKEN = secrets.token_urlsafe(36)
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
SOURCE = 'function init() { routeRegistry.registerRoute("/a", "a", "GET"); }\nfunction a() {}\n'


# -- the writer ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = await Database.open(f"sqlite:///{tmp_path / 'audit.db'}")
    try:
        yield db
    finally:
        await db.aclose()


async def test_a_recorded_event_is_stored_with_who_where_and_what(database: Database) -> None:
    audit = AuditLog(database.audit, clock=Clock())
    await audit.record(
        "script.create",
        user=UserContext.admin_token(),
        client_ip="203.0.113.9",
        request_id="req_1_1",
        target="https://t/a",
        detail={"bytes": 12},
    )

    [entry] = await audit.query(AuditQuery())

    assert (entry.at, entry.actor, entry.method) == (
        1_700_000_000_000,
        "admin_token",
        "admin_token",
    )
    assert (entry.action, entry.outcome, entry.target) == (
        "script.create",
        "allowed",
        "https://t/a",
    )
    assert (entry.client_ip, entry.request_id) == ("203.0.113.9", "req_1_1")
    assert json.loads(entry.detail or "") == {"bytes": 12}


async def test_without_a_user_the_actor_is_anonymous_and_can_be_named(database: Database) -> None:
    audit = AuditLog(database.audit)
    await audit.record("fetch.blocked", outcome="denied")
    await audit.record("fetch.blocked", outcome="denied", actor="script:https://t/a")

    entries = await audit.query(AuditQuery())

    assert [(e.actor, e.method) for e in entries] == [
        ("script:https://t/a", "anonymous"),
        ("anonymous", "anonymous"),
    ]


async def test_an_unknown_outcome_is_a_programming_error(database: Database) -> None:
    with pytest.raises(ValueError, match="outcome"):
        await AuditLog(database.audit).record("x", outcome="maybe")


async def test_attacker_sized_text_is_clipped_and_detail_stays_one_json_object(
    database: Database,
) -> None:
    audit = AuditLog(database.audit)
    await audit.record("access.denied", target="/" + "x" * 5000, detail={"blob": "y" * 10_000})

    [entry] = await audit.query(AuditQuery())

    assert entry.target is not None and len(entry.target) == MAX_TEXT
    assert entry.detail is not None and len(entry.detail) <= MAX_DETAIL
    assert json.loads(entry.detail)["truncated"] is True


class FailingRepository:
    def __init__(self) -> None:
        self.calls = 0

    async def append(self, entries: Sequence[NewAuditEntry]) -> None:
        self.calls += 1
        raise StorageUnavailable("database unavailable", retry_after_s=1)


async def test_storage_trouble_drops_the_events_and_never_raises() -> None:
    repository = FailingRepository()
    audit = AuditLog(repository)  # type: ignore[arg-type]
    await audit.record("script.delete", target="https://t/a")
    await audit.record("script.delete", target="https://t/b")

    await audit.flush()  # does not raise

    assert repository.calls == 1
    assert audit.dropped == 2 and audit.pending == 0


async def test_a_full_queue_drops_new_events_instead_of_growing(database: Database) -> None:
    audit = AuditLog(database.audit, max_pending=2)
    for n in range(5):
        await audit.record("rate_limit.trip", target=str(n))

    entries = await audit.query(AuditQuery())

    assert [e.target for e in entries] == ["1", "0"]
    assert audit.dropped == 3


async def test_the_writer_stores_events_by_itself_and_the_rest_when_stopped(
    database: Database,
) -> None:
    audit = AuditLog(database.audit, linger_s=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(audit.run)
        await audit.record("script.create", target="first")
        with trio.fail_after(5):
            # Polling the database: what is under test is that the writer stores on its own.
            while not await database.audit.query(AuditQuery()):  # noqa: ASYNC110
                await trio.sleep(0.01)
        # Recorded right before the writer is cancelled: stored on the way out.
        await audit.record("script.delete", target="last")
        nursery.cancel_scope.cancel()

    stored = await database.audit.query(AuditQuery())
    assert [e.target for e in stored] == ["last", "first"]


# -- listing and paging -------------------------------------------------------------------


async def fill(database: Database, rows: list[tuple[str, str, str, int]]) -> None:
    await database.audit.append(
        [
            NewAuditEntry(at=at, actor=actor, method="anonymous", action=action, outcome=outcome)
            for actor, action, outcome, at in rows
        ]
    )


async def test_filters_match_exactly_and_since_is_inclusive(database: Database) -> None:
    await fill(
        database,
        [
            ("anonymous", "access.denied", "denied", 1000),
            ("admin_token", "script.create", "allowed", 2000),
            ("admin_token", "script.delete", "error", 3000),
            ("admin_token", "script.create", "allowed", 4000),
        ],
    )

    async def ats(**filters: Any) -> list[int]:
        return [e.at for e in await database.audit.query(AuditQuery(**filters))]

    assert await ats() == [4000, 3000, 2000, 1000]
    assert await ats(actor="admin_token") == [4000, 3000, 2000]
    assert await ats(action="script.create") == [4000, 2000]
    assert await ats(outcome="error") == [3000]
    assert await ats(since_ms=2000) == [4000, 3000, 2000]
    assert await ats(actor="admin", action="script") == []
    assert await ats(limit=2) == [4000, 3000]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(total=st.integers(0, 40), page=st.integers(1, 7))
async def test_paging_either_way_visits_every_entry_once_newest_first_within_a_page(
    tmp_path: Path, total: int, page: int
) -> None:
    db = await Database.open(f"sqlite:///{tmp_path / f'paging-{total}-{page}.db'}")
    try:
        await fill(db, [("a", "x", "allowed", n) for n in range(total)])
        seqs = sorted(e.seq for e in await db.audit.query(AuditQuery(limit=1000)))

        backwards: list[int] = []
        cursor: int | None = None
        while True:
            batch = [e.seq for e in await db.audit.query(AuditQuery(before_seq=cursor, limit=page))]
            assert batch == sorted(batch, reverse=True) and len(batch) <= page
            if not batch:
                break
            backwards.extend(batch)
            cursor = batch[-1]

        forwards: list[int] = []
        after = 0
        while True:
            batch = [e.seq for e in await db.audit.query(AuditQuery(after_seq=after, limit=page))]
            assert batch == sorted(batch, reverse=True) and len(batch) <= page
            if not batch:
                break
            forwards.extend(reversed(batch))
            after = batch[0]
    finally:
        await db.aclose()

    assert backwards == list(reversed(seqs))
    assert forwards == seqs
    assert len(seqs) == total


# -- the listing's parameters ---------------------------------------------------------------


def test_parameters_become_a_query() -> None:
    query = audit_query(
        {
            "actor": "admin_token",
            "action": "script.create",
            "outcome": "denied",
            "since": "2026-01-02T03:04:05.250Z",
            "limit": "5",
            "before_seq": "90",
        }
    )

    assert query == AuditQuery(
        actor="admin_token",
        action="script.create",
        outcome="denied",
        since_ms=int(datetime(2026, 1, 2, 3, 4, 5, 250_000, tzinfo=UTC).timestamp() * 1000),
        before_seq=90,
        limit=5,
    )
    assert audit_query({}) == AuditQuery(limit=100)
    assert audit_query({"since": "1700000000000"}).since_ms == 1_700_000_000_000


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"outcome": "maybe"}, "outcome"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"after_seq": "-1"}, "after_seq"),
        ({"before_seq": "0"}, "before_seq"),
        ({"after_seq": "1", "before_seq": "9"}, "after_seq"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-02T03:04:05"}, "since"),
    ],
)
def test_bad_parameters_are_refused_by_name(params: dict[str, str], name: str) -> None:
    with pytest.raises(BadParameter) as refused:
        audit_query(params)
    assert refused.value.name == name


@given(
    st.dictionaries(
        st.sampled_from(
            ["actor", "action", "outcome", "since", "limit", "after_seq", "before_seq", "other"]
        ),
        st.text(max_size=30),
    )
)
def test_any_parameters_give_a_query_or_a_named_refusal(params: dict[str, str]) -> None:
    try:
        query = audit_query(params)
    except BadParameter as refused:
        assert refused.name in params
        return
    assert 1 <= query.limit <= 1000
    assert query.after_seq is None or query.before_seq is None


# -- the events, over HTTP ------------------------------------------------------------------


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    config = make_config(tmp_path / "data", **{"security.admin_token": TOKEN})
    async with running_engine(config) as running:
        yield running


async def entries(engine: Engine, **params: str) -> list[dict[str, Any]]:
    response = await engine.client.get("/engine/audit", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["entries"]
    return found


async def test_script_changes_are_recorded_as_the_caller(engine: Engine) -> None:
    client = engine.client
    created = await client.post(
        "/engine/upsert_script", data={"uri": "https://t/a", "content": SOURCE}, headers=ADMIN
    )
    await client.post("/engine/upsert_script", data={"uri": "https://t/a", "content": SOURCE})
    await client.post("/engine/upsert_script", data={"uri": "https://t/a", "content": ""})
    await client.post("/engine/delete_script", data={"uri": "https://t/a"})

    found = [e for e in await entries(engine) if e["action"].startswith("script.")]

    assert [(e["action"], e["outcome"], e["actor"]) for e in found] == [
        ("script.delete", "allowed", "anonymous"),
        ("script.update", "error", "anonymous"),
        ("script.update", "allowed", "anonymous"),
        ("script.create", "allowed", "admin_token"),
    ]
    assert {e["target"] for e in found} == {"https://t/a"}
    create = found[-1]
    assert create["requestId"] == created.headers["x-request-id"]
    assert create["clientIp"] == "127.0.0.1" and create["method"] == "admin_token"
    assert create["detail"] == {"bytes": len(SOURCE), "initSuccess": True}
    assert found[1]["detail"]["error"]


async def test_deleting_a_missing_script_records_nothing(engine: Engine) -> None:
    response = await engine.client.post("/engine/delete_script", data={"uri": "https://t/none"})

    assert response.status_code == 404
    assert await entries(engine, action="script.delete") == []


async def test_admin_token_use_is_recorded_right_or_wrong(engine: Engine) -> None:
    ok = await engine.client.get("/engine/scripts", headers=ADMIN)
    wrong = await engine.client.get("/engine/scripts", headers={"Authorization": "Bearer nope"})

    [denied] = await entries(engine, action="auth.admin_token", outcome="denied")
    allowed = await entries(engine, action="auth.admin_token", outcome="allowed")

    assert (ok.status_code, wrong.status_code) == (200, 401)
    assert denied["target"] == "GET /engine/scripts" and denied["actor"] == "anonymous"
    assert denied["requestId"] == wrong.headers["x-request-id"]
    # The listing's own request is the newest use of the token.
    assert [e["target"] for e in allowed] == [
        "GET /engine/audit",
        "GET /engine/audit",
        "GET /engine/scripts",
    ]


async def test_refusals_at_the_door_are_recorded_in_production(tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "data",
        **{
            "profile": "production",
            "security.admin_token": TOKEN,
            "security.secret_encryption_key": generate_key_text(),
        },
    )
    async with running_engine(config) as engine:
        refused = await engine.client.post("/engine/delete_script", data={"uri": "https://t/a"})
        [entry] = await entries(engine, action="access.denied")

    assert refused.status_code == 401
    assert entry["target"] == "POST /engine/delete_script" and entry["outcome"] == "denied"
    assert entry["detail"] == {"reason": "admin token required"}


async def test_a_missing_role_is_recorded(engine: Engine) -> None:
    refused = await engine.client.get("/engine/audit")  # development, anonymous: no role

    [entry] = await entries(engine, action="access.denied")

    assert refused.status_code == 403
    assert entry["detail"] == {"role": "Administrator"} and entry["target"] == "GET /engine/audit"


async def test_the_listing_filters_and_pages_over_http(engine: Engine) -> None:
    for n in range(5):
        await engine.client.post(
            "/engine/upsert_script", data={"uri": f"https://t/{n}", "content": SOURCE}
        )
    newest_two = await entries(engine, action="script.create", limit="2")
    older = await entries(engine, action="script.create", before_seq=str(newest_two[-1]["seq"]))
    after = await entries(engine, action="script.create", after_seq=str(older[0]["seq"]))
    since = await entries(engine, action="script.create", since=str(newest_two[0]["at"] + 1))

    assert [e["target"] for e in newest_two] == ["https://t/4", "https://t/3"]
    assert [e["target"] for e in older] == ["https://t/2", "https://t/1", "https://t/0"]
    assert [e["target"] for e in after] == ["https://t/4", "https://t/3"]
    assert since == []


async def test_bad_listing_parameters_are_400_naming_them(engine: Engine) -> None:
    response = await engine.client.get("/engine/audit", params={"limit": "5000"}, headers=ADMIN)

    assert response.status_code == 400
    assert response.json()["parameter"] == "limit"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_the_trail_cannot_be_changed_over_http(engine: Engine, method: str) -> None:
    response = await engine.client.request(method, "/engine/audit", headers=ADMIN)

    assert response.status_code == 405
