"""The baseline: a bare Quart-Trio "hello" route on hypercorn's trio worker.

Served exactly as ``aiwebengine serve`` serves the engine (``engine.cli.serve``): one
``hypercorn.trio.serve`` in-process, bound to 127.0.0.1 on a free port, no access log, error
log on stderr, the engine's default shutdown grace.  The difference between the two is then
what the engine adds: its middleware, the route table, the request object, and the sandbox
round trip.  Run it as ``python -m bench.bare_app``; it prints ``serving on <url>`` on stderr.
"""

from __future__ import annotations

import sys

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart_trio import QuartTrio

from engine.config import default_config

app = QuartTrio("bare")


@app.get("/hello")
async def hello() -> str:
    return "hello"


async def main() -> None:
    engine_server = default_config().server
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = engine_server.shutdown_grace_s
    config.accesslog = None
    config.errorlog = "-"
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: serve(
                app, config, shutdown_trigger=trio.sleep_forever, task_status=task_status
            )
        )
        print(f"bare: serving on {', '.join(binds)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    trio.run(main)
