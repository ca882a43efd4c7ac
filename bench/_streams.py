"""Benchmark 4: streams -- SSE fan-out to many subscribers, and a WebSocket echo through a script.

* **Fan-out.**  One engine, its stream caps raised for the run, a script with a stream and a
  route that broadcasts to it (``routeRegistry.sendStreamMessage``).  The subscribers are SSE
  clients in their own processes (:mod:`bench._fanout`); each broadcast carries its number and
  is timed from the broadcasting request to the last subscriber's arrival.  Memory per idle
  subscriber is the engine process's RSS growth over the subscribers it counts.
* **Echo.**  A WebSocket route whose handler answers each message with the message itself
  (``routeRegistry.registerWebSocketRoute``), against a bare Quart-Trio WebSocket echo
  (:mod:`bench.bare_live_app`), closed loop, alternating round by round.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import attrs
import httpx

from bench import _servers as servers
from bench._dialogues import SseSubscriber, WebSocketEcho
from bench._fanout import FanoutSpec
from bench._live import (
    ExchangeSide,
    FanoutResult,
    LiveSettings,
    alternate_exchanges,
    run_fanout,
    start_bare_live,
)
from bench._measure import Comparison, Settings, say

__all__ = ["STREAMS_SCRIPT", "StreamsResult", "parse_sent_count", "streams_benchmark"]

FEED = "/bench/feed"
ECHO = "/bench/echo"
ECHO_MESSAGE = "ping " + "x" * 27  # 32 bytes, a small chat message

STREAMS_SCRIPT = f"""
function broadcast(context) {{
  const n = context.request.query.n;
  return routeRegistry.sendStreamMessage("{FEED}", n === undefined ? "probe" : n);
}}
function echo(context) {{
  return context.args.message;
}}
function init(context) {{
  routeRegistry.registerStreamRoute("{FEED}");
  routeRegistry.registerRoute("/bench/broadcast", "broadcast", "POST");
  routeRegistry.registerWebSocketRoute("{ECHO}", "echo");
}}
"""

_SENT = re.compile(r"\b(\d+)(?:/\d+)? connections?\b")


def parse_sent_count(text: str) -> int:
    """The number of connections in a broadcast's answer ("... sent message to 12 connections
    on path ..." from streams, "(12 connections)" from GraphQL subscriptions)."""
    found = _SENT.search(text)
    if found is None:
        raise ValueError(f"no connection count in {text[:200]!r}")
    return int(found.group(1))


@attrs.frozen
class StreamsResult:
    fanout: FanoutResult
    echo: Comparison


def _broadcast(path: str, client: httpx.Client, tag: int | None) -> int:
    params = {} if tag is None else {"n": str(tag)}
    response = client.post(path, params=params, timeout=60)
    response.raise_for_status()
    return parse_sent_count(response.text)


def _warm_sse(server: servers.ServerProcess) -> None:
    """One subscriber that comes and goes, so lazy first-use work is not counted as memory."""
    with httpx.stream("GET", server.base_url + FEED, timeout=10) as response:
        response.raise_for_status()


def streams_benchmark(settings: Settings, live: LiveSettings, work: Path) -> StreamsResult:
    engine = servers.start_engine("engine-streams", work / "data-streams", work, live.stream_caps())
    bare = start_bare_live(work)
    try:
        servers.deploy(engine, "https://bench.local/streams", STREAMS_SCRIPT)
        say(f"4a. {live.sse_subscribers:,} SSE subscribers, {live.broadcasts} broadcasts")
        _warm_sse(engine)
        fanout = run_fanout(
            engine,
            FanoutSpec(
                host=engine.host,
                port=engine.port,
                connections=live.sse_subscribers,
                processes=live.subscriber_processes,
                make=partial(SseSubscriber, engine.host, engine.port, FEED),
            ),
            partial(_broadcast, "/bench/broadcast"),
            live,
        )
        say(
            f"  memory: {fanout.bytes_per_subscriber / 1024:.1f} KiB per idle subscriber "
            f"({fanout.rss_before / 2**20:.0f} -> {fanout.rss_after / 2**20:.0f} MiB)"
        )
        say("4b. WebSocket echo: bare Quart-Trio vs a script handler")
        baseline, candidate = alternate_exchanges(
            settings,
            live,
            [
                ExchangeSide(
                    "bare Quart-Trio echo",
                    bare,
                    partial(WebSocketEcho, bare.host, bare.port, "/echo", ECHO_MESSAGE),
                    engine=False,
                ),
                ExchangeSide(
                    "engine script echo",
                    engine,
                    partial(WebSocketEcho, engine.host, engine.port, ECHO, ECHO_MESSAGE),
                    engine=True,
                ),
            ],
        )
    finally:
        bare.stop()
        engine.stop()
    return StreamsResult(fanout=fanout, echo=Comparison(baseline, candidate))
