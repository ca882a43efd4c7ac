"""Parsing wrk's report: ``python -m pytest bench/test_wrk.py``."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench._wrk import parse_report

ERRORS_REPORT = """\
Running 2s test @ http://127.0.0.1:39625/nope
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    21.02ms   15.62ms  88.84ms   90.63%
    Req/Sec     0.87k   275.81     1.27k    70.00%
  Latency Distribution
     50%   15.44ms
     75%   19.68ms
     90%   35.45ms
     99%    1.02s
  3474 requests in 2.01s, 1.27MB read
  Socket errors: connect 0, read 3, write 0, timeout 7
  Non-2xx or 3xx responses: 3474
Requests/sec:   1732.26
Transfer/sec:    648.66KB
"""


def test_a_report_with_errors_gives_counts_and_seconds() -> None:
    report = parse_report(ERRORS_REPORT)
    assert report.requests == 3474
    assert report.elapsed_s == pytest.approx(2.01)
    assert report.non_2xx == 3474
    assert report.socket_errors == {"read": 3, "timeout": 7}
    assert report.percentiles == pytest.approx(
        {50.0: 0.01544, 75.0: 0.01968, 90.0: 0.03545, 99.0: 1.02}
    )


def test_a_clean_report_has_no_errors_and_no_non_2xx() -> None:
    clean = "\n".join(
        line
        for line in ERRORS_REPORT.splitlines()
        if "Socket errors" not in line and "Non-2xx" not in line
    )
    report = parse_report(clean)
    assert report.non_2xx == 0
    assert report.socket_errors == {}


def test_output_without_a_request_count_is_refused() -> None:
    with pytest.raises(ValueError, match="no request count"):
        parse_report("unable to connect to 127.0.0.1:1 Connection refused\n")


units = st.sampled_from([("us", 1e-6), ("ms", 1e-3), ("s", 1.0), ("m", 60.0)])
amounts = st.decimals(min_value=0, max_value=9999, places=2, allow_nan=False).map(str)


@given(
    st.integers(0, 10**9),
    amounts,
    units,
    st.lists(st.tuples(amounts, units), min_size=4, max_size=4),
)
def test_numbers_and_units_come_back_in_seconds(
    requests: int,
    elapsed: str,
    elapsed_unit: tuple[str, float],
    latencies: list[tuple[str, tuple[str, float]]],
) -> None:
    lines = ["  Latency Distribution"]
    for label, (value, (unit, _)) in zip(("50", "75", "90", "99"), latencies, strict=True):
        lines.append(f"     {label}%   {value}{unit}")
    lines.append(f"  {requests} requests in {elapsed}{elapsed_unit[0]}, 1.00MB read")
    report = parse_report("\n".join(lines) + "\n")
    assert report.requests == requests
    assert math.isclose(report.elapsed_s, float(elapsed) * elapsed_unit[1], rel_tol=1e-9)
    for key, (value, (_, scale)) in zip((50.0, 75.0, 90.0, 99.0), latencies, strict=True):
        assert math.isclose(report.percentiles[key], float(value) * scale, rel_tol=1e-9)
