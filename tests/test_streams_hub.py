"""The streams hub: fan-out, filtering, lagging subscribers, caps, event ids and resume.

The filtering rules are UPSTREAM_API.md §2.2; the hub's own rules are in engine/streams.py.
"""

from __future__ import annotations

import gc
import json
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import EngineError
from engine.streams import (
    Delivery,
    MatchMode,
    StreamClosed,
    StreamEvent,
    StreamFull,
    StreamHub,
    Subscription,
    matches,
)


async def receive(sub: Subscription) -> StreamEvent | StreamClosed:
    """One item, failing the test instead of hanging when the hub delivers nothing."""
    with trio.fail_after(1):
        return await sub.receive()


async def drain(sub: Subscription) -> list[str]:
    """Every event's data up to and including the terminal item (which must come)."""
    seen: list[str] = []
    while True:
        item = await receive(sub)
        if isinstance(item, StreamClosed):
            return seen
        seen.append(item.data)


async def take(sub: Subscription, n: int) -> list[str]:
    items = [await receive(sub) for _ in range(n)]
    assert all(isinstance(item, StreamEvent) for item in items), items
    return [item.data for item in items if isinstance(item, StreamEvent)]


def seq_of(event_id: str) -> int:
    return int(event_id.rpartition("-")[2])


# ---------------------------------------------------------------------------------------------
# Filtering: the pure rule


A1 = {"a": "1"}
TRUTH_TABLE = [
    # (mode, connection metadata, sender's filter, receives?)
    ("subset", {}, None, True),
    ("subset", {}, {}, True),
    ("subset", {}, A1, True),
    ("subset", A1, None, True),
    ("subset", A1, {}, False),
    ("subset", A1, A1, True),
    ("subset", A1, {"a": "2"}, False),
    ("subset", A1, {"b": "1"}, False),
    ("subset", A1, {"a": "1", "b": "2"}, True),
    ("subset", {"a": "1", "b": "2"}, A1, False),
    ("overlap", {}, None, True),
    ("overlap", {}, {}, True),
    ("overlap", {}, A1, True),
    ("overlap", A1, None, True),
    ("overlap", A1, {}, True),
    ("overlap", A1, A1, True),
    ("overlap", A1, {"a": "2"}, False),
    ("overlap", A1, {"b": "1"}, True),
    ("overlap", {"a": "1", "b": "2"}, A1, True),
    ("overlap", {"a": "1", "b": "2"}, {"a": "1", "b": "3"}, False),
]


@pytest.mark.parametrize(("mode", "metadata", "filter_", "expected"), TRUTH_TABLE)
def test_filter_truth_table(
    mode: MatchMode,
    metadata: dict[str, str],
    filter_: dict[str, str] | None,
    expected: bool,
) -> None:
    assert matches(metadata, filter_, mode) is expected


def test_an_unknown_match_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="Invalid match mode 'exact'"):
        matches(A1, A1, "exact")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Invalid match mode"):
        StreamHub().publish("/s", "x", A1, "exact")  # type: ignore[arg-type]


def reference_matches(
    metadata: Mapping[str, str], filter_: Mapping[str, str] | None, mode: str
) -> bool:
    """The §2.2 rules restated with sets of (key, value) pairs."""
    if filter_ is None or not metadata:
        return True
    meta_items, filter_items = set(metadata.items()), set(filter_.items())
    if mode == "subset":
        return meta_items <= filter_items
    # overlap: together the pairs still name each key once, i.e. no key with two values.
    union = meta_items | filter_items
    return len({key for key, _ in union}) == len(union)


small_maps = st.dictionaries(st.sampled_from("abc"), st.sampled_from("12"), max_size=3)
modes: st.SearchStrategy[MatchMode] = st.sampled_from(["subset", "overlap"])


@given(metadata=small_maps, filter_=st.none() | small_maps, mode=modes)
@settings(max_examples=500)
def test_matches_agrees_with_a_set_based_reference(
    metadata: dict[str, str], filter_: dict[str, str] | None, mode: MatchMode
) -> None:
    assert matches(metadata, filter_, mode) == reference_matches(metadata, filter_, mode)


# ---------------------------------------------------------------------------------------------
# Fan-out and filtered delivery


async def test_a_message_reaches_every_subscriber_in_order() -> None:
    hub = StreamHub(max_per_path=300)
    subs = [hub.subscribe("/feed") for _ in range(250)]
    for n in range(10):
        assert hub.publish("/feed", f"m{n}") == Delivery(sent=250, failed=0)
    expected = [f"m{n}" for n in range(10)]
    for sub in subs:
        assert await take(sub, 10) == expected
        assert sub.queued == 0


async def test_filtered_messages_reach_only_matching_subscribers() -> None:
    hub = StreamHub()
    everyone = hub.subscribe("/chat")
    room1 = hub.subscribe("/chat", {"room": "1"})
    room2 = hub.subscribe("/chat", {"room": "2"})
    other_path = hub.subscribe("/other")

    assert hub.publish("/chat", "to room 1", {"room": "1"}) == Delivery(2, 0)
    assert hub.publish("/chat", "to nobody in particular", {}) == Delivery(1, 0)
    assert hub.publish("/chat", "overlap, no room key", {"x": "y"}, "overlap") == Delivery(3, 0)
    assert hub.publish("/chat", "to all") == Delivery(3, 0)

    assert await take(everyone, 4) == [
        "to room 1",
        "to nobody in particular",
        "overlap, no room key",
        "to all",
    ]
    assert await take(room1, 3) == ["to room 1", "overlap, no room key", "to all"]
    assert await take(room2, 2) == ["overlap, no room key", "to all"]
    assert (room1.queued, room2.queued, other_path.queued) == (0, 0, 0)


async def test_publishing_with_no_subscribers_delivers_nothing() -> None:
    hub = StreamHub()
    assert hub.publish("/nobody", "x") == Delivery(0, 0)
    assert hub.count("/nobody") == 0
    assert hub.paths() == ["/nobody"]  # kept for replay


async def test_each_message_gets_an_id_of_this_hub_increasing_per_path() -> None:
    hub = StreamHub()
    a, b = hub.subscribe("/a"), hub.subscribe("/b")
    for n in range(3):
        hub.publish("/a", f"a{n}")
        hub.publish("/b", f"b{n}")
    ids_a = [
        item.id for item in [await receive(a) for _ in range(3)] if isinstance(item, StreamEvent)
    ]
    ids_b = [
        item.id for item in [await receive(b) for _ in range(3)] if isinstance(item, StreamEvent)
    ]
    for ids in (ids_a, ids_b):
        assert all(i.startswith(f"{hub.epoch}-") for i in ids)
        assert [seq_of(i) for i in ids] == sorted({seq_of(i) for i in ids})
    assert not set(ids_a) & set(ids_b)
    assert StreamHub().epoch != hub.epoch


# ---------------------------------------------------------------------------------------------
# Lagging subscribers


async def test_a_slow_subscriber_is_dropped_while_a_fast_one_gets_everything() -> None:
    hub = StreamHub()  # default queue of 1,000 messages
    fast = hub.subscribe("/ticks")
    slow = hub.subscribe("/ticks")  # never reads while messages flow
    total = 3000
    deliveries: list[Delivery] = []
    fast_seen: list[str] = []

    async def read_fast() -> None:
        async for event in fast:
            fast_seen.append(event.data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_fast)
        for n in range(total):
            deliveries.append(hub.publish("/ticks", str(n)))
            await trio.lowlevel.checkpoint()  # the fast reader keeps up, as a live one would
        hub.close_path("/ticks", "done")

    assert fast_seen == [str(n) for n in range(total)]
    assert fast.closed == StreamClosed("done", "removed")
    # The 1,001st message found the slow queue full: exactly that publish dropped it.
    assert deliveries[:1000] == [Delivery(2, 0)] * 1000
    assert deliveries[1000] == Delivery(1, 1)
    assert deliveries[1001:] == [Delivery(1, 0)] * (total - 1001)
    assert hub.stats()["dropped_lagging"] == 1
    # The slow reader still gets what was queued, then the error, as its last item.
    assert await drain(slow) == [str(n) for n in range(1000)]
    assert slow.closed is not None
    assert slow.closed.code == "lagging"
    assert await slow.receive() is slow.closed


async def test_a_dropped_subscriber_leaves_nothing_behind_in_the_hub() -> None:
    hub = StreamHub(queue_size=4)
    keeper = hub.subscribe("/s")
    lagger = hub.subscribe("/s")
    lagger_ref = weakref.ref(lagger)
    for n in range(4):
        hub.publish("/s", str(n))
    await take(keeper, 4)
    assert hub.stats()["queued"] == 4  # all of it the lagger's

    assert hub.publish("/s", "overflow") == Delivery(sent=1, failed=1)

    stats = hub.stats()
    assert (stats["subscribers"], hub.count("/s"), hub.count()) == (1, 1, 1)
    assert stats["queued"] == 1  # only the keeper's "overflow"; the lagger's queue is not ours
    assert stats["per_path"]["/s"]["subscribers"] == 1
    # Its channel has no sender any more: what is queued is all it will ever hold.
    assert lagger._receive.statistics().open_send_channels == 0
    assert lagger.queued == 4
    # And the hub holds no reference to it: once the transport lets go, it is garbage.
    del lagger
    gc.collect()
    assert lagger_ref() is None


async def test_a_waiting_reader_wakes_with_the_terminal_item() -> None:
    hub = StreamHub()
    sub = hub.subscribe("/s")
    got: list[StreamEvent | StreamClosed] = []

    async def wait_for_one() -> None:
        got.append(await receive(sub))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_one)
        await trio.testing.wait_all_tasks_blocked()
        hub.close_path("/s", "script deleted")
    assert got == [StreamClosed("script deleted", "removed")]


# ---------------------------------------------------------------------------------------------
# Caps


async def test_the_per_path_cap_refuses_with_scope_path() -> None:
    hub = StreamHub(max_per_path=2, max_total=10)
    first, _ = hub.subscribe("/s"), hub.subscribe("/s")
    with pytest.raises(StreamFull) as refused:
        hub.subscribe("/s")
    assert refused.value.scope == "path"
    assert "/s" in refused.value.message
    assert isinstance(refused.value, EngineError)
    assert refused.value.status == 503
    hub.subscribe("/other")  # the cap is per path

    first.close()
    assert hub.count("/s") == 1
    hub.subscribe("/s")
    assert hub.count("/s") == 2


async def test_the_total_cap_refuses_with_scope_total() -> None:
    hub = StreamHub(max_per_path=10, max_total=3)
    subs = [hub.subscribe(f"/p{n}") for n in range(3)]
    with pytest.raises(StreamFull) as refused:
        hub.subscribe("/p9")
    assert refused.value.scope == "total"
    assert hub.count() == 3

    subs[0].close()
    subs[0].close()  # idempotent: counted down once
    assert hub.count() == 2
    with hub.subscribe("/p9") as sub:
        assert hub.count() == 3
    assert sub.closed is not None
    assert hub.count() == 2


async def test_slots_of_dropped_and_removed_subscribers_are_freed() -> None:
    hub = StreamHub(queue_size=1, max_per_path=2, max_total=2)
    hub.subscribe("/s")
    hub.subscribe("/s")
    hub.publish("/s", "1")
    hub.publish("/s", "2")  # both lag and are dropped
    assert hub.count() == 0
    hub.subscribe("/s")
    hub.subscribe("/t")
    assert hub.close_path("/s", "gone") == 1
    assert hub.count() == 1
    hub.subscribe("/s")


# ---------------------------------------------------------------------------------------------
# Resume with last_event_id


async def test_resume_replays_exactly_the_missed_matching_messages_then_live_ones() -> None:
    hub = StreamHub(replay_size=10)
    sub = hub.subscribe("/chat", {"room": "1"})
    hub.publish("/chat", "seen", {"room": "1"})
    item = await receive(sub)
    assert isinstance(item, StreamEvent)
    sub.close()  # the connection drops

    hub.publish("/chat", "for room 1", {"room": "1"})
    hub.publish("/chat", "for room 2", {"room": "2"})
    hub.publish("/chat", "for everyone")
    hub.publish("/chat", "overlap for room 1 too", {"user": "x"}, "overlap")

    again = hub.subscribe("/chat", {"room": "1"}, last_event_id=item.id)
    assert (again.resumed, again.missed) == (True, False)
    hub.publish("/chat", "live", {"room": "1"})
    assert await take(again, 4) == [
        "for room 1",
        "for everyone",
        "overlap for room 1 too",
        "live",
    ]
    assert again.queued == 0


async def test_resume_from_the_latest_id_replays_nothing_and_misses_nothing() -> None:
    hub = StreamHub()
    hub.publish("/s", "old")
    sub = hub.subscribe("/s")
    hub.publish("/s", "last")
    last = await receive(sub)
    assert isinstance(last, StreamEvent)
    sub.close()
    again = hub.subscribe("/s", last_event_id=last.id)
    assert (again.resumed, again.missed, again.queued) == (True, False, 0)


@pytest.mark.parametrize(
    "make_id",
    [
        lambda hub: f"{StreamHub().epoch}-1",  # another instance, or before a restart
        lambda hub: "",
        lambda hub: "not an id",
        lambda hub: f"{hub.epoch}-",
        lambda hub: f"{hub.epoch}-x1",
        lambda hub: f"{hub.epoch}--1",
        lambda hub: f"{hub.epoch}-\u0661",  # a non-ASCII digit
        lambda hub: f"{hub.epoch}-{'9' * 500}",
        lambda hub: f"{hub.epoch}-999",  # not issued yet
    ],
)
async def test_an_id_this_hub_did_not_issue_gives_no_replay(make_id: Any) -> None:
    hub = StreamHub()
    for n in range(5):
        hub.publish("/s", str(n))
    sub = hub.subscribe("/s", last_event_id=make_id(hub))
    assert (sub.resumed, sub.missed, sub.queued) == (False, False, 0)
    hub.publish("/s", "live")
    assert await take(sub, 1) == ["live"]


async def test_an_id_older_than_the_buffer_reports_missed_without_replay() -> None:
    hub = StreamHub(replay_size=3)
    watcher = hub.subscribe("/s")
    for n in range(10):
        hub.publish("/s", str(n))
    items = [await receive(watcher) for _ in range(10)]
    ids = [item.id for item in items if isinstance(item, StreamEvent)]

    too_old = hub.subscribe("/s", last_event_id=ids[5])  # 7 and 8..10 would be needed: 7 is gone
    assert (too_old.resumed, too_old.missed, too_old.queued) == (False, True, 0)

    just_in = hub.subscribe("/s", last_event_id=ids[6])  # the buffer holds exactly 7, 8, 9
    assert (just_in.resumed, just_in.missed) == (True, False)
    assert await take(just_in, 3) == ["7", "8", "9"]


async def test_a_replay_that_would_not_fit_the_queue_counts_as_missed() -> None:
    hub = StreamHub(queue_size=2, replay_size=5)
    hub.publish("/s", "0")
    sub = hub.subscribe("/s")
    hub.publish("/s", "1")
    first = await receive(sub)
    assert isinstance(first, StreamEvent)
    sub.close()
    for n in range(2, 5):
        hub.publish("/s", str(n))
    again = hub.subscribe("/s", last_event_id=first.id)
    assert (again.resumed, again.missed, again.queued) == (False, True, 0)


async def test_resume_on_a_forgotten_path_reports_missed_if_it_had_unseen_messages() -> None:
    hub = StreamHub()
    sub = hub.subscribe("/s")
    hub.publish("/s", "seen")
    seen = await receive(sub)
    assert isinstance(seen, StreamEvent)
    hub.publish("/s", "never read")
    hub.close_path("/s", "script removed")  # forgets "never read" with the rest of /s
    hub.publish("/s", "after")
    again = hub.subscribe("/s", last_event_id=seen.id)
    assert (again.resumed, again.missed, again.queued) == (False, True, 0)


async def test_resume_on_a_forgotten_path_with_nothing_unseen_still_resumes() -> None:
    hub = StreamHub()
    sub = hub.subscribe("/s")
    hub.publish("/s", "seen")
    seen = await receive(sub)
    assert isinstance(seen, StreamEvent)
    hub.close_path("/s", "script removed")
    hub.publish("/s", "after")
    again = hub.subscribe("/s", last_event_id=seen.id)
    assert (again.resumed, again.missed) == (True, False)
    assert await take(again, 1) == ["after"]


async def test_idle_paths_beyond_the_limit_are_forgotten_least_recent_first() -> None:
    hub = StreamHub(max_idle_paths=2)
    live = hub.subscribe("/live")
    for path in ("/a", "/b", "/live", "/c"):
        hub.publish(path, "x")
    assert hub.paths() == ["/b", "/c", "/live"]
    assert hub.stats()["forgotten_paths"] == 1
    hub.publish("/b", "y")  # /b is now the most recent idle path
    live.close()  # /live turns idle: /c is the least recent and goes
    assert hub.paths() == ["/b", "/live"]


async def test_a_path_with_subscribers_is_never_forgotten_as_idle() -> None:
    hub = StreamHub(max_idle_paths=1)
    hub.publish("/a", "before")  # /a is idle...
    sub = hub.subscribe("/a")  # ...until someone subscribes
    hub.publish("/b", "x")
    hub.publish("/c", "x")  # /b is forgotten, never /a
    assert hub.paths() == ["/a", "/c"]
    assert hub.publish("/a", "still here") == Delivery(1, 0)
    assert await take(sub, 1) == ["still here"]


async def test_a_path_stays_known_after_its_last_subscriber_leaves() -> None:
    hub = StreamHub()
    with hub.subscribe("/s"):
        pass
    assert hub.paths() == ["/s"]
    assert hub.stats()["idle_paths"] == 1


# ---------------------------------------------------------------------------------------------
# Ending subscriptions


async def test_close_path_drains_then_ends_every_subscriber_and_drops_history() -> None:
    hub = StreamHub()
    subs = [hub.subscribe("/s", {"n": str(n)}) for n in range(3)]
    bystander = hub.subscribe("/t")
    hub.publish("/s", "queued")
    assert hub.close_path("/s", "script deleted") == 3
    assert hub.count("/s") == 0
    assert hub.count() == 1
    assert "/s" not in hub.paths()
    assert hub.close_path("/s", "again") == 0
    for sub in subs:
        assert await drain(sub) == ["queued"]
        assert sub.closed == StreamClosed("script deleted", "removed")
        assert await sub.receive() == sub.closed
    assert hub.publish("/s", "after") == Delivery(0, 0)
    assert bystander.closed is None


async def test_close_all_ends_everyone_with_shutdown() -> None:
    hub = StreamHub()
    subs = [hub.subscribe(p) for p in ("/a", "/a", "/b")]
    hub.publish("/c", "history only")
    assert hub.close_all("server stopping") == 3
    assert hub.count() == 0
    assert hub.paths() == []
    for sub in subs:
        assert await receive(sub) == StreamClosed("server stopping", "shutdown")
    subs[0].close()  # closing an ended subscription is harmless
    assert subs[0].closed == StreamClosed("server stopping", "shutdown")


async def test_async_iteration_stops_at_the_terminal_item() -> None:
    hub = StreamHub()
    sub = hub.subscribe("/s")
    hub.publish("/s", "one")
    hub.publish("/s", "two")
    hub.close_path("/s", "bye")
    assert [event.data async for event in sub] == ["one", "two"]
    assert sub.closed == StreamClosed("bye", "removed")
    assert [event async for event in sub] == []


async def test_close_discards_the_queue_and_wakes_a_waiting_reader() -> None:
    hub = StreamHub()
    queued = hub.subscribe("/s")
    hub.publish("/s", "never read")
    queued.close()
    assert queued.queued == 0
    item = await receive(queued)
    assert isinstance(item, StreamClosed)
    assert item.code == "removed"
    assert hub.publish("/s", "x") == Delivery(0, 0)

    waiting = hub.subscribe("/s")
    got: list[StreamEvent | StreamClosed] = []

    async def wait_for_one() -> None:
        got.append(await receive(waiting))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_one)
        await trio.testing.wait_all_tasks_blocked()
        waiting.close()
    assert got == [waiting.closed]


async def test_publish_all_reaches_every_known_path_unfiltered() -> None:
    hub = StreamHub()
    a = hub.subscribe("/a", {"k": "v"})
    b1, b2 = hub.subscribe("/b"), hub.subscribe("/b")
    hub.publish("/history-only", "earlier")
    assert hub.publish_all("hello") == Delivery(sent=3, failed=0)
    for sub in (a, b1, b2):
        assert await take(sub, 1) == ["hello"]
    late = hub.subscribe("/history-only", last_event_id=f"{hub.epoch}-1")
    assert await take(late, 1) == ["hello"]
    assert StreamHub().publish_all("x") == Delivery(0, 0)


def test_limits_are_validated() -> None:
    for bad in (
        {"queue_size": 0},
        {"max_per_path": 0},
        {"max_total": 0},
        {"replay_size": -1},
        {"max_idle_paths": -1},
    ):
        with pytest.raises(ValueError):
            StreamHub(**bad)
    StreamHub(replay_size=0, max_idle_paths=0)


async def test_without_a_replay_buffer_only_the_latest_id_resumes() -> None:
    hub = StreamHub(replay_size=0)
    sub = hub.subscribe("/s")
    hub.publish("/s", "1")
    hub.publish("/s", "2")
    first, second = await receive(sub), await receive(sub)
    assert isinstance(first, StreamEvent)
    assert isinstance(second, StreamEvent)
    assert hub.subscribe("/s", last_event_id=first.id).missed
    assert hub.subscribe("/s", last_event_id=second.id).resumed


def test_stats_are_plain_json_values() -> None:
    hub = StreamHub()
    hub.subscribe("/s")
    hub.publish("/s", "x")
    stats = hub.stats()
    assert json.loads(json.dumps(stats)) == stats
    assert stats["per_path"]["/s"] == {"subscribers": 1, "queued": 1, "buffered": 1, "published": 1}
    assert (stats["subscribers"], stats["published"], stats["delivered"]) == (1, 1, 1)


# ---------------------------------------------------------------------------------------------
# Random interleavings against a model


QUEUE, REPLAY = 3, 2
paths_st = st.sampled_from(["/x", "/y"])
metadata_st: st.SearchStrategy[dict[str, str]] = st.just({}) | small_maps
subscribe_st = st.tuples(st.just("subscribe"), paths_st, metadata_st)
publish_st = st.tuples(st.just("publish"), paths_st, st.none() | small_maps, modes)
receive_st = st.tuples(st.just("receive"), st.integers(0, 30), st.integers(1, 3))
resume_st = st.tuples(st.just("resume"), st.integers(0, 30))
# Repeating a strategy in one_of weights it: mostly publishing, receiving and reconnecting.
ops_st = st.lists(
    st.one_of(
        subscribe_st,
        subscribe_st,
        publish_st,
        publish_st,
        publish_st,
        receive_st,
        receive_st,
        resume_st,
        resume_st,
        st.tuples(st.just("close"), st.integers(0, 30)),
        st.tuples(st.just("close_path"), paths_st),
    ),
    min_size=20,
    max_size=120,
)


@attrs.define
class Published:
    seq: int
    data: str
    filter: dict[str, str] | None
    mode: MatchMode


@attrs.define
class ModelSub:
    sub: Subscription
    path: str
    metadata: dict[str, str]
    pending: deque[int] = attrs.field(factory=deque)  # seqs the reader is still owed
    terminal: str | None = None  # code of the StreamClosed owed after ``pending``
    # The newest id the client knows: the hub's latest when it connected, then each one read.
    resume_from: int = 0

    @property
    def live(self) -> bool:
        return self.terminal is None


async def run_model(ops: list[tuple[Any, ...]]) -> None:
    hub = StreamHub(queue_size=QUEUE, replay_size=REPLAY, max_per_path=1000, max_total=1000)
    history: dict[str, list[Published]] = {"/x": [], "/y": []}
    by_seq: dict[int, Published] = {}
    subs: list[ModelSub] = []

    def owed(model: ModelSub, message: Published) -> bool:
        return reference_matches(model.metadata, message.filter, message.mode)

    async def check_next(model: ModelSub) -> bool:
        """Receive one item and compare it with the model; False when nothing is owed."""
        if model.pending:
            item = await receive(model.sub)
            seq = model.pending.popleft()
            assert item == StreamEvent(f"{hub.epoch}-{seq}", by_seq[seq].data)
            model.resume_from = seq
            return True
        if model.terminal is not None:
            item = await receive(model.sub)
            assert isinstance(item, StreamClosed)
            assert item.code == model.terminal
            return True
        assert model.sub.queued == 0
        return False

    for op in ops:
        kind = op[0]
        if kind == "subscribe":
            _, path, metadata = op
            subs.append(
                ModelSub(hub.subscribe(path, metadata), path, metadata, resume_from=len(by_seq))
            )
        elif kind == "publish":
            _, path, filter_, mode = op
            message = Published(len(by_seq) + 1, f"m{len(by_seq) + 1}", filter_, mode)
            by_seq[message.seq] = message
            history[path].append(message)
            sent = failed = 0
            for model in subs:
                if model.live and model.path == path and owed(model, message):
                    if len(model.pending) < QUEUE:
                        model.pending.append(message.seq)
                        sent += 1
                    else:
                        model.terminal = "lagging"
                        failed += 1
            assert hub.publish(path, message.data, filter_, mode) == Delivery(sent, failed)
        elif kind == "receive" and subs:
            _, index, n = op
            model = subs[index % len(subs)]
            for _ in range(n):
                if not await check_next(model):
                    break
        elif kind == "close" and subs:
            model = subs[op[1] % len(subs)]
            model.sub.close()
            model.pending.clear()
            model.terminal = model.terminal or "removed"
        elif kind == "resume" and subs:
            # The connection drops and the client reconnects with the last id it saw.
            model = subs[op[1] % len(subs)]
            if not model.live:
                continue
            model.sub.close()
            model.pending.clear()
            model.terminal = "removed"
            after = [m for m in history[model.path] if m.seq > model.resume_from]
            wanted = [m.seq for m in after if owed(model, m)]
            can_resume = len(after) <= REPLAY and len(wanted) <= QUEUE
            sub = hub.subscribe(
                model.path, model.metadata, last_event_id=f"{hub.epoch}-{model.resume_from}"
            )
            assert (sub.resumed, sub.missed) == (can_resume, not can_resume)
            again = ModelSub(sub, model.path, model.metadata, resume_from=model.resume_from)
            if can_resume:
                again.pending.extend(wanted)
            subs.append(again)
        elif kind == "close_path":
            path = op[1]
            ending = [m for m in subs if m.live and m.path == path]
            for model in ending:
                model.terminal = "removed"
            assert hub.close_path(path, "closed") == len(ending)
            history[path].clear()

        for path in ("/x", "/y"):
            assert hub.count(path) == sum(1 for m in subs if m.live and m.path == path)
        assert hub.count() == sum(1 for m in subs if m.live)
        for model in subs:
            assert model.sub.queued == len(model.pending)

    # Finally every subscriber gets exactly what it is still owed, then its terminal (twice:
    # a terminal item repeats), and nothing more.
    for model in subs:
        while model.pending:
            await check_next(model)
        if model.terminal is None:
            assert model.sub.queued == 0
        else:
            await check_next(model)
            await check_next(model)


@given(ops=ops_st)
@settings(max_examples=300, deadline=None)
def test_random_interleavings_keep_every_subscriber_exact(ops: list[tuple[Any, ...]]) -> None:
    trio.run(run_model, ops)


async def test_shut_ends_every_subscriber_and_refuses_new_ones() -> None:
    hub = StreamHub()
    first = hub.subscribe("/a", {})
    second = hub.subscribe("/b", {"k": "v"})
    assert hub.shut("the engine is shutting down") == 2
    for subscription in (first, second):
        with trio.fail_after(1):
            closed = await subscription.receive()
        assert closed == StreamClosed("the engine is shutting down", "shutdown")
    with pytest.raises(StreamFull) as refused:
        hub.subscribe("/a", {})
    assert refused.value.scope == "total"
    assert hub.count() == 0
    assert hub.publish("/a", "x") == Delivery(0, 0)
