"""Streams over server-sent events, spoken to a real engine with httpx streaming.

UPSTREAM_API §2.1 (``registerStreamRoute``, ``sendStreamMessage``, ``sendStreamMessageFiltered``)
and §2.2 (metadata, filtering, ``/engine/script_updates``); what the original lacks and we add:
event ids with ``Last-Event-ID`` resume, heart-beats, caps, a slow reader dropped on its own.
The helpers at the top are shared with the WebSocket and fault tests.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from engine.cli import SseComment, SseDecoder, SseMessage
from security import generate_key_text
from tests.conftest import Engine, make_config, running_engine

URI = "https://example.com/streams"

# A script as a solution developer writes it: a stream, and routes that broadcast to it.
FEED_SCRIPT = """
function init() {
  routeRegistry.registerStreamRoute("/feed");
  routeRegistry.registerStreamRoute("/other");
  routeRegistry.registerRoute("/send", "send", "POST");
  routeRegistry.registerRoute("/send-filtered", "sendFiltered", "POST");
  routeRegistry.registerRoute("/flood", "flood", "POST");
}
function json(value) {
  return { status: 200, body: JSON.stringify(value), contentType: "application/json" };
}
function send(context) {
  const body = JSON.parse(context.request.body);
  const path = body.path || "/feed";
  return json(body.messages.map(function (m) { return routeRegistry.sendStreamMessage(path, m); }));
}
function sendFiltered(context) {
  const b = JSON.parse(context.request.body);
  return json(routeRegistry.sendStreamMessageFiltered(
    b.path || "/feed", b.data, JSON.stringify(b.filter), b.mode));
}
function flood(context) {
  const b = JSON.parse(context.request.body);
  const pad = new Array(b.size + 1).join("x");
  for (let i = 0; i < b.count; i++) {
    routeRegistry.sendStreamMessage(b.path || "/feed", i + ":" + pad);
  }
  return json(b.count);
}
"""


# -- helpers shared by the stream tests -------------------------------------------------------


async def eventually(condition: Callable[[], bool], *, within: float = 5.0) -> None:
    """Wait until ``condition()`` holds, failing after ``within`` seconds.

    Polls: the hub's counts change inside the server with no event a test could wait on.
    """
    with trio.fail_after(within):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.01)


async def send(engine: Engine, *messages: str, path: str = "/feed") -> list[str]:
    response = await engine.client.post(
        "/send", content=json.dumps({"path": path, "messages": list(messages)})
    )
    assert response.status_code == 200, response.text
    results: list[str] = response.json()
    return results


async def send_filtered(
    engine: Engine, data: str, filter: dict[str, str], mode: str, *, path: str = "/feed"
) -> str:
    body = {"path": path, "data": data, "filter": filter, "mode": mode}
    response = await engine.client.post("/send-filtered", content=json.dumps(body))
    assert response.status_code == 200, response.text
    result: str = response.json()
    return result


async def flood(engine: Engine, count: int, size: int, *, path: str = "/feed") -> None:
    body = {"path": path, "count": count, "size": size}
    response = await engine.client.post("/flood", content=json.dumps(body), timeout=60)
    assert response.status_code == 200, response.text


@attrs.define
class SseReader:
    """One SSE response read incrementally with the CLI's spec parser; ``raw`` is the wire text."""

    response: httpx.Response
    _chunks: AsyncIterator[str]
    _decoder: SseDecoder = attrs.field(factory=SseDecoder)
    _items: deque[SseMessage | SseComment] = attrs.field(factory=deque)
    _raw: list[str] = attrs.field(factory=list)
    ended: bool = False

    @property
    def raw(self) -> str:
        return "".join(self._raw)

    async def item(self) -> SseMessage | SseComment | None:
        """The next event or comment; ``None`` once the server ended the response."""
        while not self._items:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self.ended = True
                return None
            self._raw.append(chunk)
            self._items.extend(self._decoder.feed(chunk))
        return self._items.popleft()

    async def message(self) -> SseMessage:
        """The next event, skipping comments; fails if the stream ends first."""
        while True:
            item = await self.item()
            assert item is not None, f"the stream ended; last read: {self._raw[-3:]!r}"
            if isinstance(item, SseMessage):
                return item

    async def data(self, count: int) -> list[str]:
        return [(await self.message()).data for _ in range(count)]

    async def until_end(self) -> list[SseMessage]:
        """Every remaining event, until the server ends the response."""
        events = []
        while (item := await self.item()) is not None:
            if isinstance(item, SseMessage):
                events.append(item)
        return events


@asynccontextmanager
async def sse(
    engine: Engine, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[SseReader]:
    """An open SSE connection; the subscription exists once this yields."""
    async with engine.client.stream("GET", path, headers=headers, timeout=30) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        yield SseReader(response, response.aiter_text())


def stream_error(reason: str) -> str:
    return json.dumps({"error": f"Stream error: {reason}"})


@pytest.fixture
async def feed(engine: Engine) -> Engine:
    await engine.deploy(URI, FEED_SCRIPT)
    return engine


# -- the connection -------------------------------------------------------------------------


async def test_a_stream_path_answers_an_event_stream_that_proxies_do_not_buffer(
    feed: Engine,
) -> None:
    with trio.fail_after(10):
        async with sse(feed, "/feed") as reader:
            headers = reader.response.headers
            assert headers["content-type"] == "text/event-stream"
            assert headers["cache-control"] == "no-cache"
            assert headers["x-accel-buffering"] == "no"
            assert headers["x-request-id"].startswith("req_")
            assert feed.runtime.streams.count("/feed") == 1


async def test_messages_arrive_in_order_each_with_a_distinct_increasing_id(feed: Engine) -> None:
    with trio.fail_after(15):
        async with sse(feed, "/feed") as reader:
            sent = [json.dumps({"n": n}) for n in range(30)]
            results = await send(feed, *sent)
            assert results == ["Successfully sent message to 1 connections on path '/feed'"] * len(
                sent
            )
            events = [await reader.message() for _ in sent]
    assert [event.data for event in events] == sent
    assert all(event.event == "message" for event in events)
    seqs = [int(event.last_event_id.rpartition("-")[2]) for event in events]
    assert seqs == sorted(set(seqs))


async def test_multi_line_data_is_one_event_with_a_data_line_per_line(feed: Engine) -> None:
    with trio.fail_after(10):
        async with sse(feed, "/feed") as reader:
            await send(feed, "first\nsecond\r\nthird\rfourth", "", "after")
            assert await reader.data(3) == ["first\nsecond\nthird\nfourth", "", "after"]
    assert "data: first\ndata: second\ndata: third\ndata: fourth\n\n" in reader.raw


async def test_head_on_a_stream_path_answers_headers_without_subscribing(feed: Engine) -> None:
    with trio.fail_after(10):
        response = await feed.client.head("/feed")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.content == b""
    assert feed.runtime.streams.count() == 0


async def test_a_client_that_hangs_up_is_unsubscribed_at_once(feed: Engine) -> None:
    with trio.fail_after(10):
        async with sse(feed, "/feed"):
            await eventually(lambda: feed.runtime.streams.count("/feed") == 1)
        # Nothing is published: only the disconnect itself can end the subscription.
        await eventually(lambda: feed.runtime.streams.count("/feed") == 0, within=2)


async def test_an_idle_stream_sends_keep_alive_comments(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", **{"streams.heartbeat_s": 0.1})
    with trio.fail_after(15):
        async with running_engine(config) as engine:
            await engine.deploy(URI, FEED_SCRIPT)
            async with sse(engine, "/feed") as reader:
                assert await reader.item() == SseComment("keep-alive")
                assert await reader.item() == SseComment("keep-alive")
                await send(engine, "still here")
                message = await reader.message()
    assert message.data == "still here"
    assert ": keep-alive\n\n" in reader.raw


# -- resuming -----------------------------------------------------------------------------


async def test_last_event_id_replays_what_was_missed_then_continues_live(feed: Engine) -> None:
    with trio.fail_after(15):
        async with sse(feed, "/feed") as reader:
            await send(feed, "one", "two")
            first = [await reader.message() for _ in range(2)]
        await eventually(lambda: feed.runtime.streams.count("/feed") == 0)
        await send(feed, "three", "four")  # published while the client is away
        last_seen = first[-1].last_event_id
        async with sse(feed, "/feed", {"Last-Event-ID": last_seen}) as reader:
            assert await reader.data(2) == ["three", "four"]
            await send(feed, "five")
            assert await reader.data(1) == ["five"]
    assert "event: missed" not in reader.raw


async def test_an_id_from_elsewhere_resumes_nothing_and_announces_missed(feed: Engine) -> None:
    # An id from before a restart or from another instance: nothing can be replayed, and
    # nothing proves that nothing was lost.
    with trio.fail_after(10):
        await send(feed, "before")
        async with sse(feed, "/feed", {"Last-Event-ID": "0123456789ab-1"}) as reader:
            missed = await reader.message()
            await send(feed, "live")
            live = await reader.message()
    assert missed.event == "missed"
    assert json.loads(missed.data)["lastEventId"] == "0123456789ab-1"
    assert live.data == "live"
    assert "before" not in reader.raw


async def test_a_first_connection_is_told_nothing_about_missed_messages(feed: Engine) -> None:
    with trio.fail_after(10):
        await send(feed, "before")
        async with sse(feed, "/feed") as reader:
            await send(feed, "live")
            assert (await reader.message()).data == "live"
    assert "event: missed" not in reader.raw
    assert "before" not in reader.raw


async def test_resuming_past_the_replay_buffer_announces_missed_messages(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", **{"streams.replay_size": 2})
    with trio.fail_after(20):
        async with running_engine(config) as engine:
            await engine.deploy(URI, FEED_SCRIPT)
            async with sse(engine, "/feed") as reader:
                await send(engine, "seen")
                seen = await reader.message()
            await eventually(lambda: engine.runtime.streams.count("/feed") == 0)
            await send(engine, "lost-1", "lost-2", "lost-3")
            async with sse(engine, "/feed", {"Last-Event-ID": seen.last_event_id}) as reader:
                missed = await reader.message()
                await send(engine, "live")
                live = await reader.message()
    assert missed.event == "missed"
    assert json.loads(missed.data)["lastEventId"] == seen.last_event_id
    assert live.data == "live"
    assert "lost-" not in reader.raw


# -- metadata and filtering ---------------------------------------------------------------

# (query string, label) of the subscribers; metadata = the query parameters.
SUBSCRIBERS = [("", "none"), ("?team=a", "a"), ("?team=a&role=x", "a+x"), ("?team=b", "b")]
# (filter, mode) → which subscribers receive, by the rules of UPSTREAM_API §2.2.
TRUTH_TABLE: list[tuple[dict[str, str], str, set[str]]] = [
    ({}, "subset", {"none"}),
    ({}, "overlap", {"none", "a", "a+x", "b"}),
    ({"team": "a"}, "subset", {"none", "a"}),
    ({"team": "a"}, "overlap", {"none", "a", "a+x"}),
    ({"team": "a", "role": "x", "extra": "y"}, "subset", {"none", "a", "a+x"}),
    ({"team": "b", "role": "x"}, "subset", {"none", "b"}),
    ({"team": "b", "role": "x"}, "overlap", {"none", "b"}),
    ({"other": "z"}, "subset", {"none"}),
    ({"other": "z"}, "overlap", {"none", "a", "a+x", "b"}),
]


async def test_filtered_messages_follow_the_subset_and_overlap_truth_table(feed: Engine) -> None:
    received: dict[str, list[str]] = {}
    with trio.fail_after(30):
        async with (
            sse(feed, "/feed" + SUBSCRIBERS[0][0]) as none,
            sse(feed, "/feed" + SUBSCRIBERS[1][0]) as a,
            sse(feed, "/feed" + SUBSCRIBERS[2][0]) as ax,
            sse(feed, "/feed" + SUBSCRIBERS[3][0]) as b,
        ):
            reports = [
                await send_filtered(feed, f"row-{row}", filter, mode)
                for row, (filter, mode, _) in enumerate(TRUTH_TABLE)
            ]
            await send(feed, "end")
            for label, reader in (("none", none), ("a", a), ("a+x", ax), ("b", b)):
                data: list[str] = []
                while (item := (await reader.message()).data) != "end":
                    data.append(item)
                received[label] = data
    for row, (filter, mode, expected) in enumerate(TRUTH_TABLE):
        reached = {label for label, data in received.items() if f"row-{row}" in data}
        assert reached == expected, (filter, mode)
        assert reports[row] == (
            f"Successfully sent filtered message to {len(expected)} connections on path '/feed'"
        )


CUSTOMIZED_SCRIPT = """
function init() {
  routeRegistry.registerStreamRoute("/custom", "customize");
  routeRegistry.registerStreamRoute("/throws", "throwing");
  routeRegistry.registerStreamRoute("/not-strings", "numbers");
  routeRegistry.registerStreamRoute("/not-object", "text");
  routeRegistry.registerRoute("/send-filtered", "sendFiltered", "POST");
}
function customize(context) {
  if (context.kind !== "streamCustomization") throw new Error("kind " + context.kind);
  return { team: context.request.query.t || "none", path: context.meta.stream.path };
}
function throwing(context) { throw new Error("no entry for " + context.request.query.t); }
function numbers(context) { return { n: 1 }; }
function text(context) { return "a string"; }
function sendFiltered(context) {
  const b = JSON.parse(context.request.body);
  return { status: 200, contentType: "application/json", body: JSON.stringify(
    routeRegistry.sendStreamMessageFiltered(b.path, b.data, JSON.stringify(b.filter), b.mode)) };
}
"""


async def test_a_customization_function_decides_the_metadata(engine: Engine) -> None:
    await engine.deploy(URI, CUSTOMIZED_SCRIPT)
    with trio.fail_after(15):
        # Without the function the metadata would be {t, x}; its answer replaces them.
        async with sse(engine, "/custom?t=a&x=1") as reader:
            reach_a = {"team": "a", "path": "/custom"}
            reach_b = {"team": "b", "path": "/custom"}
            await send_filtered(engine, "for-b", reach_b, "subset", path="/custom")
            await send_filtered(engine, "for-a", reach_a, "subset", path="/custom")
            assert (await reader.message()).data == "for-a"


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/throws?t=q", "no entry for q"),
        ("/not-strings", "'n'"),
        ("/not-object", "object"),
    ],
)
async def test_a_failing_customization_function_answers_500_in_plain_text(
    engine: Engine, path: str, why: str
) -> None:
    await engine.deploy(URI, CUSTOMIZED_SCRIPT)
    with trio.fail_after(15):
        response = await engine.client.get(path)
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith("Stream customization function failed: ")
    assert why in response.text
    assert engine.runtime.streams.count() == 0


async def test_a_customization_function_that_overruns_answers_the_json_error(
    tmp_path: Path,
) -> None:
    script = """
    function init() { routeRegistry.registerStreamRoute("/slow", "spin"); }
    function spin(context) { for (;;) {} }
    """
    config = make_config(tmp_path / "data", **{"sandbox.handler_timeout_ms": 300})
    with trio.fail_after(30):
        async with running_engine(config) as engine:
            await engine.deploy(URI, script)
            response = await engine.client.get("/slow")
            assert engine.runtime.streams.count() == 0
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "SCRIPT_TIMEOUT"


# -- limits ---------------------------------------------------------------------------------


async def test_a_slow_reader_is_dropped_while_a_fast_one_gets_every_message(
    tmp_path: Path,
) -> None:
    # A reader that reads nothing stalls once the socket buffers (some 100s of KiB on
    # loopback) are full; then its queue of 64 fills and the hub drops it.  The fast reader
    # runs in this process, sharing the CPU with the server: the queue gives it some slack.
    config = make_config(tmp_path / "data", **{"streams.queue_size": 64})
    count, size = 500, 4000
    with trio.fail_after(60):
        async with running_engine(config) as engine:
            await engine.deploy(URI, FEED_SCRIPT)
            async with sse(engine, "/feed") as slow, sse(engine, "/feed") as fast:
                fast_data: list[str] = []

                async def read_fast() -> None:
                    fast_data.extend(await fast.data(count))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_fast)
                    await flood(engine, count, size)
                assert engine.runtime.streams.count("/feed") == 1  # the fast one
                assert engine.runtime.streams.stats()["dropped_lagging"] == 1
                rest = await slow.until_end()
    assert [int(item.split(":")[0]) for item in fast_data] == list(range(count))
    # The slow reader still gets what was queued for it, then the reason it was dropped.
    assert rest[-1].data == stream_error("Subscriber fell more than 64 messages behind")
    delivered = [int(event.data.split(":")[0]) for event in rest[:-1]]
    assert delivered == list(range(len(delivered)))
    assert len(delivered) < count


async def test_over_the_caps_a_connection_is_refused_with_503(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", **{"streams.max_per_stream": 2, "streams.max_total": 3})
    with trio.fail_after(20):
        async with running_engine(config) as engine:
            await engine.deploy(URI, FEED_SCRIPT)
            async with sse(engine, "/feed"), sse(engine, "/feed"):
                per_stream = await engine.client.get("/feed")
                async with sse(engine, "/other"):
                    in_total = await engine.client.get("/other")
            await eventually(lambda: engine.runtime.streams.count() == 0)
            async with sse(engine, "/feed"):  # room again once they left
                pass
    for response, scope in ((per_stream, "/feed"), (in_total, "3 subscribers")):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        error = response.json()["error"]
        assert error["code"] == "STREAM_FULL"
        assert scope in error["message"]


# -- the stream's life ----------------------------------------------------------------------


async def test_deleting_the_script_ends_its_streams_with_a_final_error_event(
    feed: Engine,
) -> None:
    with trio.fail_after(15):
        async with sse(feed, "/feed") as reader:
            response = await feed.client.post("/engine/delete_script", data={"uri": URI})
            assert response.status_code == 200
            rest = await reader.until_end()
        assert feed.runtime.streams.count() == 0
        after = await feed.client.get("/feed")
    assert rest == [SseMessage(stream_error("the stream was removed"))]
    assert after.status_code == 404


async def test_a_new_version_that_keeps_the_stream_keeps_its_subscribers(feed: Engine) -> None:
    with trio.fail_after(15):
        async with sse(feed, "/feed") as reader:
            await feed.deploy(URI, FEED_SCRIPT + "\n// version 2\n")
            await send(feed, "after the update")
            assert (await reader.message()).data == "after the update"


async def test_hub_shutdown_ends_the_stream_with_a_final_error_event(feed: Engine) -> None:
    with trio.fail_after(10):
        async with sse(feed, "/feed") as reader:
            feed.runtime.streams.close_all("the engine is shutting down")
            rest = await reader.until_end()
    assert rest == [SseMessage(stream_error("the engine is shutting down"))]


async def test_script_updates_stream_announces_every_script_change(engine: Engine) -> None:
    with trio.fail_after(20):
        async with sse(engine, "/engine/script_updates") as reader:
            await engine.deploy(URI, FEED_SCRIPT)
            await engine.deploy(URI, FEED_SCRIPT + "\n")
            await engine.client.post("/engine/delete_script", data={"uri": URI})
            updates = [json.loads((await reader.message()).data) for _ in range(3)]
        await eventually(lambda: engine.runtime.streams.count() == 0)
    assert [(u["type"], u["uri"], u["action"]) for u in updates] == [
        ("script_update", URI, "inserted"),
        ("script_update", URI, "updated"),
        ("script_update", URI, "removed"),
    ]
    assert updates[0]["previousExists"] is False
    assert updates[1]["previousExists"] is True
    assert all(isinstance(u["timestamp"], str) for u in updates)


async def test_script_updates_needs_the_admin_token_in_production(tmp_path: Path) -> None:
    token = "t" * 40
    secrets = {"security.admin_token": token, "security.secret_encryption_key": generate_key_text()}
    config = make_config(tmp_path / "data", profile="production", **secrets)
    with trio.fail_after(20):
        async with running_engine(config) as engine:
            refused = await engine.client.get("/engine/script_updates")
            async with sse(engine, "/engine/script_updates", {"Authorization": f"Bearer {token}"}):
                assert engine.runtime.streams.count() == 1
    assert refused.status_code == 401
