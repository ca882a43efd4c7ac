"""Markdown for the report: numbers, ratios and verdicts, and the tables every section uses."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from bench._measure import Comparison, Run, Side, cpu_us, p50_ms, p99_ms

__all__ = [
    "DASH",
    "TIMES",
    "Metric",
    "number",
    "percent",
    "ratio",
    "rounds",
    "summary",
    "table",
    "verdict",
]

TIMES, DASH = "\u00d7", "\u2013"  # typography for the tables, spelled out for the linter

Metric = tuple[str, Callable[[Run], float], int]  # (row name, metric, decimals)


def number(value: float, digits: int = 0) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}{TIMES}"


def percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 100:.0f} %"


def verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def summary(comparison: Comparison, metrics: list[Metric]) -> list[str]:
    """Each metric's median on both sides, their ratio, and the spread of per-round ratios."""
    base, cand = comparison.baseline, comparison.candidate
    rows = []
    for name, metric, digits in metrics:
        ratios = comparison.round_ratios(metric)
        spread = (
            f"{min(ratios):.2f}{DASH}{max(ratios):.2f}"
            if len(ratios) > 1 and not any(map(math.isnan, ratios))
            else DASH
        )
        rows.append(
            [
                name,
                number(base.median(metric), digits),
                number(cand.median(metric), digits),
                ratio(comparison.ratio(metric)),
                spread,
            ]
        )
    return table(["median over rounds", base.label, cand.label, "ratio", "per-round ratios"], rows)


def rounds(sides: Sequence[Side], *, unit: str = "req", failed: str = "non-2xx") -> list[str]:
    """Every run of ``sides``, round by round."""
    rows = []
    for side in sides:
        for run in side.runs:
            load = run.load
            rows.append(
                [
                    str(run.round),
                    side.label,
                    number(load.throughput),
                    number(p50_ms(run), 2),
                    number(p99_ms(run), 2),
                    number(cpu_us(run)),
                    f"{load.generator_cores:.2f}",
                    str(run.failures),
                    DASH if run.restarts is None else str(run.restarts),
                ]
            )
    rows.sort(key=lambda row: int(row[0]))
    return table(
        [
            "round",
            "side",
            f"{unit}/s",
            "p50 ms",
            "p99 ms",
            f"server CPU µs/{unit}",
            "generator cores",
            failed,
            "worker restarts",
        ],
        rows,
    )
