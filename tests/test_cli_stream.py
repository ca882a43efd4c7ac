"""``aiwebengine stream URL``: live messages in the terminal, over SSE or WebSocket.

The event-stream parser it uses (``engine.cli.SseDecoder``) is tested first, without I/O: known
inputs from the HTML standard's rules, and properties against the engine's own SSE encoder.
Then the command runs as a real process against a real engine.
"""

from __future__ import annotations

import itertools
import json
import socket
import sys
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from engine.cli import SseComment, SseDecoder, SseMessage, one_line, parse_headers
from handlers.sse import sse_comment, sse_event
from tests.conftest import Engine, make_config, running_engine
from tests.test_streams_sse import FEED_SCRIPT, URI, eventually, send, send_filtered, sse

# -- the parser -------------------------------------------------------------------------------


def decode(text: str) -> list[SseMessage | SseComment]:
    return SseDecoder().feed(text)


def test_fields_follow_the_standard() -> None:
    assert decode("data: a\ndata:b\ndata\n\n") == [SseMessage("a\nb\n")]
    assert decode("data:  two spaces\n\n") == [SseMessage(" two spaces")]
    assert decode("event: tick\ndata: 1\n\n") == [SseMessage("1", "tick")]
    assert decode("event: tick\n\ndata: 2\n\n") == [SseMessage("2")]  # no data: not dispatched
    assert decode(": hello\n\n") == [SseComment("hello")]
    assert decode("unknown: x\ndata: y\n\n") == [SseMessage("y")]
    assert decode("data: partial") == []  # not dispatched until the blank line


def test_the_last_event_id_persists_and_ids_with_nul_are_ignored() -> None:
    decoder = SseDecoder()
    assert decoder.feed("id: 7\ndata: a\n\ndata: b\n\n") == [
        SseMessage("a", "message", "7"),
        SseMessage("b", "message", "7"),
    ]
    assert decoder.feed("id: 8\0\ndata: c\n\n") == [SseMessage("c", "message", "7")]


def test_retry_needs_digits_and_a_leading_bom_is_dropped() -> None:
    decoder = SseDecoder()
    decoder.feed("\ufeffretry: 1500\nretry: soon\n")
    assert decoder.retry_ms == 1500
    assert SseDecoder().feed("\ufeffdata: x\n\n") == [SseMessage("x")]


@pytest.mark.parametrize("ending", ["\n", "\r", "\r\n"])
def test_every_line_ending_works_even_split_between_pieces(ending: str) -> None:
    text = f"data: a{ending}data: b{ending}{ending}"
    decoder = SseDecoder()
    out = [item for char in text for item in decoder.feed(char)]
    assert out == [SseMessage("a\nb")]


# A message's data: any text; SSE carries its line breaks as "\n" whatever they were.
_data = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)
_events = st.lists(
    st.tuples(
        st.none() | st.text(alphabet="abcdefghij-0123456789", min_size=1, max_size=12),
        st.none() | st.sampled_from(["message", "missed", "log"]),
        _data,
    ),
    max_size=8,
)


def _normalized(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


@given(_events, st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_what_the_engine_encodes_the_parser_reads_back_however_it_is_split(
    events: list[tuple[str | None, str | None, str]], cuts: list[int]
) -> None:
    wire = sse_comment("connected").decode()
    for event_id, event, data in events:
        wire += sse_event(event, data, event_id=event_id).decode()
    positions = sorted({0, len(wire), *(cut % (len(wire) + 1) for cut in cuts)})
    decoder = SseDecoder()
    out: list[SseMessage | SseComment] = []
    for start, end in itertools.pairwise(positions):
        out.extend(decoder.feed(wire[start:end]))
    assert out[0] == SseComment("connected")
    messages = out[1:]
    assert [m.data for m in messages if isinstance(m, SseMessage)] == [
        _normalized(data) for _, _, data in events
    ]
    assert [m.event for m in messages if isinstance(m, SseMessage)] == [
        event or "message" for _, event, _ in events
    ]
    last_id = ""
    for message, (event_id, _, _) in zip(messages, events, strict=True):
        last_id = event_id if event_id is not None else last_id
        assert isinstance(message, SseMessage)
        assert message.last_event_id == last_id


@given(st.text(max_size=200), st.integers(min_value=1, max_value=7))
def test_any_input_in_any_pieces_parses_as_it_does_whole(text: str, step: int) -> None:
    whole = SseDecoder().feed(text)
    decoder = SseDecoder()
    pieces = [item for i in range(0, len(text), step) for item in decoder.feed(text[i : i + step])]
    assert pieces == whole


def test_a_message_prints_on_one_line() -> None:
    assert one_line("a\nb\r\nc\rd") == "a\\nb\\nc\\nd"
    assert one_line('{"x": 1}') == '{"x": 1}'


def test_headers_are_name_colon_value() -> None:
    assert parse_headers(["X-Team: a", "Authorization:Bearer t:u"]) == [
        ("X-Team", "a"),
        ("Authorization", "Bearer t:u"),
    ]
    with pytest.raises(ValueError, match="NAME:VALUE"):
        parse_headers(["no colon"])


# -- the command against a real engine --------------------------------------------------------


async def run_cli(*args: str, within: float = 30) -> tuple[int, list[str], str]:
    """``aiwebengine stream ...`` in a child process: exit code, stdout lines, stderr."""
    with trio.fail_after(within):
        result = await trio.run_process(
            [sys.executable, "-m", "engine.cli", "stream", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return result.returncode, result.stdout.decode().splitlines(), result.stderr.decode()


async def stream_while(
    engine: Engine, path: str, cli_args: list[str], *messages: str
) -> tuple[int, list[str], str]:
    """Run the command, and once it is subscribed to ``path`` send ``messages`` there."""
    result: list[tuple[int, list[str], str]] = []

    async def cli() -> None:
        result.append(await run_cli(*cli_args))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cli)
        await eventually(lambda: engine.runtime.streams.count(path) == 1, within=20)
        await send(engine, *messages, path=path)
    return result[0]


@pytest.fixture
async def feed(engine: Engine) -> Engine:
    await engine.deploy(URI, FEED_SCRIPT)
    return engine


@pytest.mark.parametrize("scheme", ["http", "ws"])
async def test_prints_each_message_on_a_line_and_stops_after_max_messages(
    feed: Engine, scheme: str
) -> None:
    url = scheme + feed.base_url.removeprefix("http") + "/feed"
    code, lines, _ = await stream_while(
        feed, "/feed", [url, "--max-messages", "3"], "one", "two\nlines", "three", "four"
    )
    assert code == 0
    assert lines == ["one", "two\\nlines", "three"]


async def test_resumes_after_a_last_event_id(feed: Engine) -> None:
    with trio.fail_after(20):
        async with sse(feed, "/feed") as reader:
            await send(feed, "seen")
            seen = await reader.message()
        await eventually(lambda: feed.runtime.streams.count() == 0)
        await send(feed, "missed-1", "missed-2")
    code, lines, _ = await run_cli(
        feed.base_url + "/feed", "--last-event-id", seen.last_event_id, "--max-messages", "2"
    )
    assert (code, lines) == (0, ["missed-1", "missed-2"])


@pytest.mark.parametrize("scheme", ["http", "ws"])
async def test_headers_reach_the_customization_function(engine: Engine, scheme: str) -> None:
    script = """
    function init() {
      routeRegistry.registerStreamRoute("/team", "team");
      routeRegistry.registerRoute("/send-filtered", "sendFiltered", "POST");
    }
    function team(context) { return { team: context.request.headers["x-team"] || "none" }; }
    function sendFiltered(context) {
      const b = JSON.parse(context.request.body);
      return { status: 200, contentType: "application/json", body: JSON.stringify(
        routeRegistry.sendStreamMessageFiltered(b.path, b.data, b.filter, b.mode)) };
    }
    """
    await engine.deploy(URI, script)
    url = scheme + engine.base_url.removeprefix("http") + "/team"
    result: list[tuple[int, list[str], str]] = []

    async def cli() -> None:
        result.append(await run_cli(url, "-H", "X-Team: a", "--max-messages", "1"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cli)
        await eventually(lambda: engine.runtime.streams.count("/team") == 1, within=20)
        await send_filtered(engine, "for-b", {"team": "b"}, "subset", path="/team")
        await send_filtered(engine, "for-a", {"team": "a"}, "subset", path="/team")
    assert result[0][:2] == (0, ["for-a"])


async def test_a_timeout_without_messages_exits_0(feed: Engine) -> None:
    code, lines, _ = await run_cli(feed.base_url + "/feed", "--timeout", "0.5")
    assert (code, lines) == (0, [])


@pytest.mark.parametrize("scheme", ["http", "ws"])
async def test_the_server_ending_the_stream_is_reported(feed: Engine, scheme: str) -> None:
    url = scheme + feed.base_url.removeprefix("http") + "/feed"
    result: list[tuple[int, list[str], str]] = []

    async def cli() -> None:
        result.append(await run_cli(url))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cli)
        await eventually(lambda: feed.runtime.streams.count("/feed") == 1, within=20)
        await feed.client.post("/engine/delete_script", data={"uri": URI})
    code, lines, stderr = result[0]
    assert code == 0
    assert "the server ended the stream" in stderr
    if scheme == "http":  # SSE shows the final event as the message it is
        assert lines == [json.dumps({"error": "Stream error: the stream was removed"})]


async def test_a_websocket_closed_for_policy_exits_1(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", **{"streams.max_per_stream": 1})
    async with running_engine(config) as engine:
        await engine.deploy(URI, FEED_SCRIPT)
        async with sse(engine, "/feed"):
            url = "ws" + engine.base_url.removeprefix("http") + "/feed"
            code, _, stderr = await run_cli(url)
    assert code == 1
    assert "the server closed the WebSocket: 1008" in stderr


@pytest.mark.parametrize(
    ("path_and_scheme", "expected"),
    [(("http", "/nowhere"), "HTTP 404"), (("ws", "/nowhere"), "refused the WebSocket: HTTP 404")],
)
async def test_a_refused_connection_exits_1_with_the_reason(
    feed: Engine, path_and_scheme: tuple[str, str], expected: str
) -> None:
    scheme, path = path_and_scheme
    code, lines, stderr = await run_cli(scheme + feed.base_url.removeprefix("http") + path)
    assert (code, lines) == (1, [])
    assert expected in stderr


@pytest.mark.parametrize("scheme", ["http", "ws"])
async def test_nothing_listening_exits_1(scheme: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, stderr = await run_cli(f"{scheme}://127.0.0.1:{port}/feed")
    assert code == 1
    assert stderr.startswith("aiwebengine stream: cannot")


@pytest.mark.parametrize(
    "args",
    [["ftp://x/feed"], ["http://x/feed", "-H", "nocolon"], ["http://x/", "--max-messages", "0"]],
)
async def test_bad_arguments_exit_2(args: list[str]) -> None:
    code, _, stderr = await run_cli(*args)
    assert code == 2
    assert stderr.startswith("aiwebengine stream: ")
