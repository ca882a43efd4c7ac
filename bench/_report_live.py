"""The report's sections for benchmarks 4 (streams) and 5 (GraphQL), and their interpretation."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from bench._fanout import spread
from bench._live import FanoutResult
from bench._measure import (
    Comparison,
    Run,
    Side,
    cpu_us,
    p50_ms,
    p99_ms,
    throughput,
    time_per_request_us,
)
from bench._tables import (
    TIMES,
    Metric,
    number,
    percent,
    ratio,
    rounds,
    summary,
    table,
    verdict,
)

if TYPE_CHECKING:
    from bench._suite import SuiteResult

__all__ = ["live_configuration", "live_interpretation", "live_sections"]

TARGET_FANOUT_SUBSCRIBERS = 10_000
TARGET_FANOUT_S = 1.0
TARGET_BYTES_PER_SUBSCRIBER = 20_000  # 20 KB
TARGET_GRAPHQL_SHARE = 0.80


def _leader(run: Run) -> float:
    return run.cpu_per_request_us("leader")


def _workers(run: Run) -> float:
    return run.cpu_per_request_us("workers")


def _metrics(unit: str, units: str, latency: str) -> list[Metric]:
    return [
        (f"throughput ({units}/s)", throughput, 0),
        (f"server time per {unit} (µs, 1 / throughput)", time_per_request_us, 0),
        (f"{latency} p50 (ms)", p50_ms, 2),
        (f"{latency} p99 (ms)", p99_ms, 2),
        (f"server CPU per {unit} (µs, all processes)", cpu_us, 0),
        ("… of which the server process", _leader, 0),
        ("… of which sandbox workers", _workers, 0),
    ]


def live_configuration(result: SuiteResult) -> list[str]:
    live, s = result.live, result.settings
    room = max(live.sse_subscribers, live.graphql_subscribers) + 100
    return [
        f"- benchmarks 4 and 5: one engine each, configured as by default except "
        f"`streams.max_per_stream = streams.max_total = {room:,}` (room for every subscriber) "
        f"and no per-client rate limits (every client is one loopback address); subscribers "
        f"in {live.subscriber_processes} client process(es), opened 64 at a time; "
        f"{live.broadcasts} broadcasts per fan-out, one at a time, {live.pause_s:g} s apart; "
        f"closed-loop echo and query runs with {live.exchange_connections} connections from "
        f"the suite's exchange generator in {live.exchange_processes} process(es), "
        f"{s.rounds} round(s) per side, alternating, {s.warmup_s:g} s warm-up + "
        f"{s.duration_s:g} s measured; open files per process: "
        f"{result.environment.get('open_files_limit', '?')}",
    ]


def _ms(seconds: float) -> str:
    return number(seconds * 1e3)


def _fanout(f: FanoutResult, what: str) -> tuple[list[str], float]:
    """The fan-out's tables, and the slowest broadcast's time to reach everybody (NaN if one
    never reached everybody)."""
    complete = [b.all_s for b in f.broadcasts if not math.isnan(b.all_s)]
    incomplete = len(f.broadcasts) - len(complete)
    all_p50, all_p99, all_max = spread(complete)
    delays = [d for b in f.broadcasts for d in b.delays]
    one_p50, one_p99, _ = spread(delays)
    answered, _, _ = spread([b.answered_s for b in f.broadcasts])
    cpu, _, _ = spread(f.cpu_per_delivery_us())
    slowest = float("nan") if incomplete else all_max
    problems = ", ".join(f"{count} {TIMES} {name}" for name, count in sorted(f.problems.items()))
    lines = [
        f"{f.subscribers:,} {what} requested, {f.connected:,} connected in "
        f"{f.connect_s:.1f} s, {f.counted:,} counted by the engine (probe broadcast); "
        f"{len(f.broadcasts)} broadcasts, {incomplete} of which did not reach every subscriber "
        f"within the wait. Connection problems: {problems or 'none'}.",
        "",
        *table(
            ["measure", "value"],
            [
                ["time for a broadcast to reach every subscriber, median (ms)", _ms(all_p50)],
                [
                    f"… p99 (ms; with {len(complete)} broadcasts, the slowest)",
                    _ms(all_p99),
                ],
                ["delay to one subscriber, median over all deliveries (ms)", _ms(one_p50)],
                ["… p99 over all deliveries (ms)", _ms(one_p99)],
                ["broadcasting request answered, median (ms)", _ms(answered)],
                ["engine process CPU per delivery, median (µs)", number(cpu)],
                [
                    "engine process memory per idle subscriber (RSS growth / subscribers, KB)",
                    number(f.bytes_per_subscriber / 1000, 1),
                ],
                ["client processes' CPU, whole run (s)", number(f.client_cpu_s, 1)],
            ],
        ),
        "",
        *table(
            [
                "broadcast",
                "reached / sent",
                "all reached (ms)",
                "median subscriber (ms)",
                "p99 subscriber (ms)",
                "request answered (ms)",
                "engine CPU µs / delivery",
            ],
            [
                [
                    str(b.tag),
                    f"{b.reached:,} / {b.reported:,}",
                    _ms(b.all_s),
                    _ms(b.delay(50)),
                    _ms(b.delay(99)),
                    _ms(b.answered_s),
                    number(cpu_one),
                ]
                for b, cpu_one in zip(f.broadcasts, f.cpu_per_delivery_us(), strict=True)
            ],
        ),
    ]
    return lines, slowest


def live_sections(result: SuiteResult) -> list[str]:
    streams, graphql = result.streams, result.graphql
    out = ["### 4. Streams", "", "#### 4a. SSE fan-out", ""]
    lines, slowest = _fanout(streams.fanout, "SSE subscribers")
    out += lines
    per_subscriber = streams.fanout.bytes_per_subscriber
    if streams.fanout.subscribers >= TARGET_FANOUT_SUBSCRIBERS:
        judged = (
            f"This run: the slowest of {len(streams.fanout.broadcasts)} broadcasts reached "
            f"everybody in {_ms(slowest)} ms — {verdict(slowest <= TARGET_FANOUT_S)}; "
            f"{number(per_subscriber / 1000, 1)} KB per idle subscriber — "
            f"{verdict(per_subscriber <= TARGET_BYTES_PER_SUBSCRIBER)}."
        )
    else:
        judged = (
            f"This run had {streams.fanout.subscribers:,} subscribers, so the targets are not "
            f"judged (the full run has {TARGET_FANOUT_SUBSCRIBERS:,}); "
            f"{number(per_subscriber / 1000, 1)} KB per idle subscriber."
        )
    echo = streams.echo
    out += [
        "",
        f"Targets: all {TARGET_FANOUT_SUBSCRIBERS:,} subscribers reached in ≤ "
        f"{TARGET_FANOUT_S:g} s, ≤ {TARGET_BYTES_PER_SUBSCRIBER // 1000} KB per idle "
        f"subscriber. {judged}",
        "",
        "#### 4b. WebSocket echo through a script",
        "",
        *summary(echo, _metrics("message", "messages", "round trip")),
        "",
        f"No target. The engine's echo ran at {percent(echo.ratio(throughput))} of the bare "
        f"Quart-Trio echo's rate.",
        "",
        *rounds((echo.baseline, echo.candidate), unit="msg", failed="wrong echoes"),
        "",
    ]

    hello, typename = graphql.hello, graphql.typename
    share = hello.ratio(throughput)
    out += [
        "### 5. GraphQL",
        "",
        "#### 5a. Queries",
        "",
        *summary(hello, _metrics("query", "queries", "latency")),
        "",
        f"Target: engine throughput ≥ {percent(TARGET_GRAPHQL_SHARE)} of bare Tartiflette. "
        f"This run: {percent(share)} — {verdict(share >= TARGET_GRAPHQL_SHARE)}.",
        "",
        "The same with a field Tartiflette resolves itself, `{ __typename }` (no script, no "
        "sandbox):",
        "",
        *summary(typename, _metrics("query", "queries", "latency")[:5]),
        "",
        *_sides_table((hello.baseline, hello.candidate, typename.baseline, typename.candidate)),
        "",
        *rounds(
            (hello.baseline, hello.candidate, typename.baseline, typename.candidate),
            unit="query",
        ),
        "",
        "#### 5b. Subscription fan-out over `/graphql/ws`",
        "",
    ]
    lines, _ = _fanout(graphql.fanout, "`graphql-transport-ws` subscribers")
    out += [*lines, ""]
    return out


def _sides_table(sides: tuple[Side, ...]) -> list[str]:
    return table(
        [
            "median over rounds",
            "queries/s",
            "p50 ms",
            "server CPU µs/query",
            "… server process",
            "… sandbox workers",
        ],
        [
            [
                side.label,
                number(side.median(throughput)),
                number(side.median(p50_ms), 2),
                number(side.median(cpu_us)),
                number(side.median(_leader)),
                number(side.median(_workers)),
            ]
            for side in sides
        ],
    )


def _difference(comparison: Comparison) -> float:
    """How much more CPU per request the candidate's server process spent."""
    return comparison.candidate.median(_leader) - comparison.baseline.median(_leader)


def live_interpretation(result: SuiteResult) -> list[str]:
    fanout, echo, graphql = result.streams.fanout, result.streams.echo, result.graphql
    cpu, _, _ = spread(fanout.cpu_per_delivery_us())
    all_p50, _, _ = spread([b.all_s for b in fanout.broadcasts if not math.isnan(b.all_s)])
    median_subscriber, _, _ = spread([b.delay(50) for b in fanout.broadcasts])
    work_s = cpu * fanout.counted / 1e6
    gql_cpu, _, _ = spread(graphql.fanout.cpu_per_delivery_us())
    hello, typename = graphql.hello, graphql.typename
    resolver = graphql.engine_fields
    round_trip = result.round_trip["parent_cpu_us"]
    return [
        f"- **SSE fan-out is CPU-bound in the engine process.** Each delivery cost the engine "
        f"process {number(cpu)} µs of CPU (median over broadcasts): {number(work_s, 2)} s of "
        f"one core for {fanout.counted:,} subscribers, against {_ms(all_p50)} ms measured "
        f"until the last one had it. The server is one Trio thread: a broadcast queues the "
        f"message for every subscriber at once (the hub never waits), then each subscriber's "
        f"task is resumed in turn and passes through several checkpoints (channel receive, "
        f"the SSE encoder, the ASGI send, hypercorn's h11 framing, the socket write), and Trio "
        f"runs every ready task once before any runs again, so most writes happen late: the "
        f"median subscriber had the message after {_ms(median_subscriber)} ms, close to the "
        f"last one. Time to reach everybody grows with subscribers {TIMES} CPU per delivery"
        + (
            ", and at this size most of that CPU is the cyclic garbage collector's (see the "
            "observations above)."
            if fanout.counted >= 5_000
            else "."
        ),
        f"- **Memory per subscriber** is the Python objects of one open streaming response: "
        f"{number(fanout.bytes_per_subscriber / 1000, 1)} KB of engine RSS each. Kernel socket "
        f"buffers are not in RSS and come on top.",
        f"- **GraphQL fan-out** cost the engine process {number(gql_cpu)} µs of CPU per "
        f"delivery (median), {ratio(gql_cpu / cpu) if cpu else 'n/a'} an SSE delivery's: "
        f"every subscriber's copy of a message is a Tartiflette execution of its subscription "
        f"on the asyncio loop before its WebSocket frame is written. Each idle subscriber held "
        f"{number(graphql.fanout.bytes_per_subscriber / 1000, 1)} KB (a WebSocket connection "
        f"with its protocol state, the subscription's pump task, channel and hub queue).",
        f"- **WebSocket echo.** The script's echo cost the engine process "
        f"{number(echo.candidate.median(_leader))} µs of CPU per message against "
        f"{number(echo.baseline.median(_leader))} µs for the bare echo, plus "
        f"{number(echo.candidate.median(_workers))} µs in the sandbox worker; the sandbox round "
        f"trip alone costs the calling process {number(round_trip)} µs (benchmark 1).",
        f"- **GraphQL queries.** Without the sandbox (`{{ __typename }}`) the engine reached "
        f"{percent(typename.ratio(throughput))} of bare Tartiflette, its server process "
        f"spending {number(_difference(typename))} µs more per query (the engine's request "
        f"handling and query checks). The script resolver then added "
        f"{number(_difference(resolver))} µs per query in the server process and "
        f"{number(resolver.candidate.median(_workers))} µs in the worker; a plain route's "
        f"sandbox round trip costs the server process {number(round_trip)} µs; the rest is the "
        f"resolver's path around it (Tartiflette calling the root resolver, the hop from its "
        f"asyncio side to the Trio pool and back through trio_asyncio, the invocation's context, "
        f"shaping the value to the declared type). Overall the engine reached "
        f"{percent(hello.ratio(throughput))} of bare.",
    ]
