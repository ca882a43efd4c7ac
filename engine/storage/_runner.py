"""The one way storage code reaches the database: in a thread, in a transaction, through the
breaker.

Every repository method hands :class:`Runner` a synchronous function of a SQLAlchemy
``Connection``.  The runner asks the circuit breaker first, runs the function in a worker
thread bounded by a ``CapacityLimiter`` (so the Trio loop never blocks on SQLite or a network
round trip), commits before returning, and turns infrastructure failures into
:class:`~engine.errors.StorageUnavailable` while counting them against the breaker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar

import sqlalchemy as sa
import sqlalchemy.exc
import structlog
import trio

from engine.breaker import CircuitBreaker
from engine.errors import StorageUnavailable

T = TypeVar("T")

# Execution option read by the SQLite ``begin`` hook (see ``_database``): a write transaction
# takes the write lock up front, so a read-then-write never fails half-way with SQLITE_BUSY.
WRITE_OPTION: Final = "aiwebengine_write"

UNAVAILABLE_MESSAGE: Final = "database unavailable"

_log = structlog.get_logger(__name__)


def is_infrastructure_failure(exc: BaseException) -> bool:
    """Failures of the database itself (disk, locks, network), not of the caller's data."""
    if isinstance(exc, sqlalchemy.exc.IntegrityError):
        return False
    # A pool timeout means every connection is stuck: the database, not the caller, is at fault.
    return isinstance(exc, sqlalchemy.exc.DBAPIError | sqlalchemy.exc.TimeoutError | OSError)


class Runner:
    """Runs blocking database work for async callers; owned by ``Database``."""

    def __init__(
        self, engine: sa.Engine, breaker: CircuitBreaker, limiter: trio.CapacityLimiter
    ) -> None:
        self._engine = engine
        self._breaker = breaker
        self._limiter = limiter

    async def read(self, work: Callable[[sa.Connection], T]) -> T:
        return await self.call(lambda: self._transaction(work, write=False))

    async def write(self, work: Callable[[sa.Connection], T]) -> T:
        """Run ``work`` in one transaction that is committed before this returns."""
        return await self.call(lambda: self._transaction(work, write=True))

    async def call(self, blocking: Callable[[], T]) -> T:
        """Run ``blocking`` in a worker thread, guarded by the breaker."""
        breaker = self._breaker
        if not breaker.allow():
            raise StorageUnavailable(UNAVAILABLE_MESSAGE, retry_after_s=breaker.retry_after())
        try:
            # Not abandoned on cancel: a write in flight finishes (committed or rolled back)
            # before the cancellation is delivered, so the caller never guesses its outcome.
            result = await trio.to_thread.run_sync(blocking, limiter=self._limiter)
        except BaseException as exc:
            if not is_infrastructure_failure(exc):
                # Cancellation or a bug: no verdict on the database's health.
                breaker.release_probe()
                raise
            breaker.record_failure()
            # The driver's own error, not SQLAlchemy's text: that one carries the statement's
            # parameters, i.e. script sources and log messages.
            cause = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
            _log.warning(
                "database call failed",
                error=f"{type(cause).__name__}: {cause}",
                breaker=breaker.state.value,
            )
            raise StorageUnavailable(
                UNAVAILABLE_MESSAGE, retry_after_s=breaker.retry_after()
            ) from exc
        breaker.record_success()
        return result

    def _transaction(self, work: Callable[[sa.Connection], T], *, write: bool) -> T:
        with self._engine.connect() as conn:
            if write:
                conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                return work(conn)
