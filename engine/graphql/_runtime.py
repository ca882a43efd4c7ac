"""The one asyncio loop (through trio_asyncio) that GraphQL execution runs on.

trio_asyncio keeps its loop in a context variable, ``trio_asyncio.current_loop``, which only
the task that opened the loop and its descendants see.  Request handlers are not descendants
of the task that opens the loop at startup, and without the variable every call back into Trio
from a resolver fails (inside the GraphQL result, where it is easy to miss).  So
:meth:`GraphQLRuntime.run_asyncio` sets the variable around each call and resets it after:
any Trio task of the process may execute queries.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio
import trio_asyncio

T = TypeVar("T")


class GraphQLRuntime:
    """Owns the app's trio_asyncio loop; open it with :func:`graphql_runtime`."""

    def __init__(self, loop: Any) -> None:
        self._loop: Any = loop
        self._generations = itertools.count(1)

    @property
    def running(self) -> bool:
        return self._loop is not None

    @property
    def loop(self) -> Any:
        """The asyncio loop; raises RuntimeError once the runtime is closed."""
        if self._loop is None:
            raise RuntimeError("the GraphQL runtime is closed")
        return self._loop

    def next_generation(self) -> int:
        return next(self._generations)

    async def run_asyncio(self, function: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Await ``function(*args)`` on the asyncio loop from any Trio task.

        Cancelling the calling Trio task cancels the asyncio task, and through it any Trio
        callback a resolver is waiting for.
        """
        loop = self.loop
        token = trio_asyncio.current_loop.set(loop)
        try:
            result: T = await loop.run_aio_coroutine(function(*args))
            return result
        finally:
            trio_asyncio.current_loop.reset(token)

    def _close(self) -> None:
        self._loop = None

    @classmethod
    async def run(
        cls, *, task_status: trio.TaskStatus[GraphQLRuntime] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the runtime in a nursery task and keep it open until the task is cancelled.

        ``runtime = await nursery.start(GraphQLRuntime.run)``
        """
        async with graphql_runtime() as runtime:
            task_status.started(runtime)
            await trio.sleep_forever()


@asynccontextmanager
async def graphql_runtime() -> AsyncIterator[GraphQLRuntime]:
    """Open the GraphQL runtime for the application's lifetime."""
    async with trio_asyncio.open_loop() as loop:
        runtime = GraphQLRuntime(loop)
        try:
            yield runtime
        finally:
            runtime._close()
