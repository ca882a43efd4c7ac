"""``python -m bench [--quick] [--output PATH]``: run every benchmark and write the report."""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from bench import _servers as servers
from bench._measure import Settings
from bench._report import write_report
from bench._suite import run_suite

DEFAULT_OUTPUT = servers.REPO_ROOT / "docs" / "performance.md"


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM ends the run like Ctrl-C does: through the cleanup below.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="one short round per benchmark (about a minute)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where to write the report (default {DEFAULT_OUTPUT})",
    )
    args = parser.parse_args(argv)
    settings = Settings.quick_run() if args.quick else Settings.full()
    signal.signal(signal.SIGTERM, _terminate)
    work = Path(tempfile.mkdtemp(prefix="aiwebengine-bench-"))
    try:
        result = run_suite(settings, work)
        write_report(result, args.output)
        print(f"bench: wrote {args.output} ({result.elapsed_s:.0f} s)")
        return 0
    except KeyboardInterrupt:
        print("bench: interrupted, stopping the servers", file=sys.stderr)
        return 130
    finally:
        for child in multiprocessing.active_children():
            child.terminate()
            child.join(5)
        servers.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
