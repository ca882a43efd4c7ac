"""What every fuzz harness shares: the hypothesis profile and the atheris entry point.

A harness module defines hypothesis tests decorated with :data:`FUZZ` and ends with
``if __name__ == "__main__": run_atheris(HARNESSES, __file__)``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "2000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings.get_profile("fuzz")


def run_atheris(harnesses: Sequence[Callable[..., Any]], path: str) -> None:
    """Fuzz ``harnesses`` with coverage guidance; the first input byte picks the harness."""
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        sys.exit(
            "atheris is not installed. Run the harnesses with hypothesis instead:\n"
            f"    FUZZ_EXAMPLES=20000 python -m pytest fuzz/{Path(path).name} -q\n"
            "or install atheris (pip install atheris) to fuzz with coverage guidance."
        )

    def one_input(data: bytes) -> None:
        if not data:
            return
        harness = harnesses[data[0] % len(harnesses)]
        harness.hypothesis.fuzz_one_input(data[1:])  # type: ignore[attr-defined]

    atheris.instrument_all()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
