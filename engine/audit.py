"""The audit trail: security events, recorded without ever failing the request that caused them.

``AuditLog.record`` only queues the event; a writer task the runtime owns stores queued events
in batches (one transaction per batch), so a burst of refusals costs one write, not one per
request, and a slow or failing database never delays an answer.  When storage fails the batch
is logged and dropped: the audit trail is evidence, and losing some of it during an outage is
better than refusing service because of it.  The queue is bounded for the same reason; events
beyond it are dropped and counted.  Readers call :meth:`AuditLog.flush` first, so an event
recorded before a read is always in that read.

Actions are dotted names.  The HTTP layer records these; the secrets and fetch services add
``secret.set``, ``secret.delete``, ``secret.clear`` and ``fetch.blocked``:

* ``auth.admin_token`` -- a request to ``/engine`` presented the admin token (``allowed``) or a
  wrong bearer token (``denied``);
* ``access.denied`` -- a call refused for want of a credential, a capability or a role;
* ``script.create``, ``script.update``, ``script.delete`` -- through the ``/engine`` API;
* ``rate_limit.trip`` -- a client ran out of tokens (at most once a minute per client and
  surface, so a flood does not become a flood of rows).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Final

import structlog
import trio

from engine.errors import StorageUnavailable
from engine.storage import AuditEntry, AuditQuery, AuditRepository, NewAuditEntry
from security import UserContext

log = structlog.get_logger("aiwebengine.audit")

# Outcomes.
ALLOWED: Final = "allowed"
DENIED: Final = "denied"
ERROR: Final = "error"
OUTCOMES: Final = frozenset({ALLOWED, DENIED, ERROR})

# Bounds on what one entry stores: targets and actors can be attacker-chosen text (a path,
# a header), and the audit trail must not become a place to park megabytes.
MAX_TEXT: Final = 1000
MAX_DETAIL: Final = 4000


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_TEXT:
        return text
    return text[: MAX_TEXT - 3] + "..."


def _detail_text(detail: Mapping[str, object] | None) -> str | None:
    if not detail:
        return None
    text = json.dumps(dict(detail), ensure_ascii=False, separators=(",", ":"), default=str)
    if len(text) <= MAX_DETAIL:
        return text
    # Still one JSON object, so every reader can parse every entry.
    return json.dumps({"truncated": True, "preview": text[: MAX_DETAIL - 100]})


def entry_json(entry: AuditEntry) -> dict[str, object]:
    """An entry as ``/engine/audit`` shows it (times in epoch milliseconds, as in logs)."""
    return {
        "seq": entry.seq,
        "at": entry.at,
        "actor": entry.actor,
        "method": entry.method,
        "clientIp": entry.client_ip,
        "requestId": entry.request_id,
        "action": entry.action,
        "target": entry.target,
        "outcome": entry.outcome,
        "detail": json.loads(entry.detail) if entry.detail else None,
    }


class AuditLog:
    """Queues events and stores them in batches; run :meth:`run` in a nursery."""

    def __init__(
        self,
        repository: AuditRepository,
        *,
        max_pending: int = 10_000,
        batch_size: int = 500,
        linger_s: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._repository = repository
        self._max_pending = max_pending
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._clock = clock
        self._pending: list[NewAuditEntry] = []
        self._queued = trio.Event()
        # One writer at a time keeps entries in the order they were recorded.
        self._writing = trio.Lock()
        self.dropped = 0

    async def record(
        self,
        action: str,
        *,
        outcome: str = ALLOWED,
        user: UserContext | None = None,
        actor: str | None = None,
        target: str | None = None,
        client_ip: str | None = None,
        request_id: str | None = None,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        """Queue one event; never raises for storage trouble and never waits for storage.

        ``user`` gives the actor and the authentication method (anonymous when omitted);
        ``actor`` overrides the actor's name, e.g. to name a script acting on its own.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, not {outcome!r}")
        who = user if user is not None else UserContext.anonymous()
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("audit events dropped: queue full", dropped=self.dropped)
            return
        self._pending.append(
            NewAuditEntry(
                at=int(self._clock() * 1000),
                actor=_clip(actor or who.actor) or "",
                method=who.method.value,
                action=action,
                outcome=outcome,
                client_ip=_clip(client_ip),
                request_id=_clip(request_id),
                target=_clip(target),
                detail=_detail_text(detail),
            )
        )
        self._queued.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Store everything queued so far (dropping it if storage fails)."""
        async with self._writing:
            while self._pending:
                batch = self._pending[: self._batch_size]
                del self._pending[: self._batch_size]
                try:
                    await self._repository.append(batch)
                except StorageUnavailable:
                    self.dropped += len(batch)
                    log.warning(
                        "audit events dropped: storage unavailable",
                        count=len(batch),
                        actions=sorted({entry.action for entry in batch}),
                    )
                except Exception:
                    # A bug or an unexpected database answer must not stop the writer either.
                    self.dropped += len(batch)
                    log.exception("audit events dropped: write failed", count=len(batch))

    async def query(self, query: AuditQuery) -> list[AuditEntry]:
        await self.flush()
        return await self._repository.query(query)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer: waits for events, lingers briefly to gather a batch, stores it.  On
        cancellation (the engine stopping) whatever is queued is stored before leaving."""
        task_status.started()
        try:
            while True:
                await self._queued.wait()
                self._queued = trio.Event()
                if len(self._pending) < self._batch_size:
                    await trio.sleep(self._linger_s)
                await self.flush()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.flush()
