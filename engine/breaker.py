"""A circuit breaker as a pure state machine.

It takes no locks and does no I/O: callers ask :meth:`CircuitBreaker.allow` before doing the
guarded work and report the outcome.  Time comes from an injected clock so the whole state
machine is testable with plain numbers.

States: ``closed`` (normal), ``open`` (fail fast until the cool-down has passed) and
``half_open`` (exactly one probe is let through; its outcome closes or re-opens the breaker).
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable

import attrs


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@attrs.define
class CircuitBreaker:
    """Opens after ``failure_threshold`` failures within ``window_s`` seconds."""

    failure_threshold: int
    window_s: float
    cooldown_s: float
    clock: Callable[[], float] = time.monotonic
    _failures: deque[float] = attrs.field(factory=deque, init=False)
    _opened_at: float | None = attrs.field(default=None, init=False)
    _probe_in_flight: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.window_s <= 0 or self.cooldown_s <= 0:
            raise ValueError("window_s and cooldown_s must be positive")

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self._opened_at >= self.cooldown_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """May the guarded work run now?  In half-open state only one probe at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until a call may be tried again (0 when closed)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (self.clock() - self._opened_at))

    def record_success(self) -> None:
        if self._opened_at is not None and self._probe_in_flight:
            self._opened_at = None
            self._failures.clear()
        self._probe_in_flight = False

    def record_failure(self) -> None:
        now = self.clock()
        if self._opened_at is not None:
            # A failed probe (or a straggler from before the breaker opened) re-opens it
            # for a full cool-down.
            self._opened_at = now
            self._probe_in_flight = False
            return
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.window_s:
            self._failures.popleft()
        if len(self._failures) >= self.failure_threshold:
            self._opened_at = now
            self._failures.clear()

    def release_probe(self) -> None:
        """The probe ended without a verdict (e.g. the caller was cancelled)."""
        self._probe_in_flight = False
