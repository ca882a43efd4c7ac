"""The streams hub: every live subscriber of every stream path, and the fan-out to them.

Transports (SSE, WebSocket, GraphQL subscriptions) call :meth:`StreamHub.subscribe` and then
``receive`` from the :class:`Subscription`; the script API calls :meth:`StreamHub.publish`.
The hub knows nothing of HTTP, the sandbox or the database.

Decisions, and why:

* **A broadcast never waits for a subscriber.**  Each subscriber has its own bounded Trio
  memory channel and :meth:`StreamHub.publish` only uses ``send_nowait``.  A subscriber whose
  channel is full is *lagging*: it is removed on the spot, so one slow reader costs the others
  nothing and memory stays bounded by ``queue_size`` per subscriber.
* **The terminal event cannot be lost.**  It does not travel through the (possibly full)
  channel: the hub stores it on the :class:`Subscription` and then closes the send side.  The
  reader drains what was already queued, sees ``EndOfChannel`` and returns the stored
  :class:`StreamClosed`.  Messages queued before a drop are still delivered, so a dropped
  client's last event id is as recent as possible and a reconnect can resume from the replay
  buffer.
* **Event ids are ``"<epoch>-<seq>"``.**  The epoch is a random token made per hub, so an id
  from another instance or from before a restart is recognised as foreign.  ``seq`` comes from
  one hub-wide counter: it increases on every path (not contiguously) and never repeats within
  an epoch, even after a path has been forgotten and used again.
* **Resume.**  Each path keeps its last ``replay_size`` messages with the filter and mode they
  were published with, and a watermark ``known_from``: every message of the path with a seq
  above it is still buffered.  Resuming from an id of this epoch at or above the watermark
  replays the buffered messages after it that match the new subscriber's metadata
  (``resumed=True``).  Below the watermark the hub cannot prove nothing was lost: no replay and
  ``missed=True``, so the client can be told to reload.  Unparsable, foreign or future ids give
  ``resumed=False, missed=False``.  Replay and registration happen in one synchronous call, so
  nothing published in between can fall into a gap or be delivered twice.  Forgetting a path
  (``close_path``, ``close_all``, too many idle paths) raises a hub-wide watermark that a path
  known afresh starts from, so what an earlier life of the path held is never skipped silently.
* **Paths without subscribers keep their buffer** (a client reconnecting after a network blip
  must find its messages), but at most ``max_idle_paths`` of them; beyond that the least
  recently used idle path is forgotten, so publishing to ever new paths cannot grow memory.
  A path keeps being known until then even if nothing was published on it, which keeps its
  watermark exact for subscribers that reconnect.

Thread-safety: none.  Every method must be called from the Trio thread that runs the engine;
the hub relies on there being no ``await`` inside its synchronous methods for its atomicity.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, Literal, Self

import attrs
import trio

from engine.errors import EngineError

MatchMode = Literal["subset", "overlap"]
_MODES: frozenset[str] = frozenset(("subset", "overlap"))
_EMPTY: Mapping[str, str] = MappingProxyType({})
# A Last-Event-ID header is outside input: refuse absurd sequence numbers before int() sees them.
_MAX_SEQ_DIGITS = 20


@attrs.frozen
class StreamEvent:
    """One published message as a subscriber receives it."""

    id: str
    data: str


@attrs.frozen
class StreamClosed:
    """The last item a subscription yields; every later ``receive`` returns it again."""

    reason: str
    code: Literal["lagging", "removed", "shutdown"]


@attrs.frozen
class Delivery:
    """What one publish did: ``failed`` counts subscribers dropped for lagging by it."""

    sent: int
    failed: int

    def __add__(self, other: Delivery) -> Delivery:
        return Delivery(self.sent + other.sent, self.failed + other.failed)


class StreamFull(EngineError):
    """A subscriber cap is reached; ``scope`` says which ("path" or "total")."""

    code = "STREAM_FULL"
    status = 503

    def __init__(self, scope: Literal["path", "total"], message: str) -> None:
        super().__init__(message)
        self.scope = scope


def matches(metadata: Mapping[str, str], filter: Mapping[str, str] | None, mode: MatchMode) -> bool:
    """Does a subscriber with ``metadata`` receive a message published with ``filter``?

    Metadata-less subscribers and unfiltered messages always match.  ``subset``: every metadata
    key is in the filter with the same value (so ``{}`` reaches only metadata-less subscribers).
    ``overlap``: no metadata key is in the filter with a different value (``{}`` reaches all).
    """
    if mode not in _MODES:
        raise ValueError(f"Invalid match mode '{mode}'. Expected 'subset' or 'overlap'")
    if filter is None or not metadata:
        return True
    if mode == "subset":
        return all(key in filter and filter[key] == value for key, value in metadata.items())
    return all(key not in filter or filter[key] == value for key, value in metadata.items())


class Subscription:
    """One subscriber of one path; made by :meth:`StreamHub.subscribe`, never directly.

    Read it with :meth:`receive` or ``async for``; release it with :meth:`close` (or a ``with``
    block) when the client goes away, which also discards whatever is still queued.
    """

    def __init__(
        self,
        *,
        id: int,
        path: str,
        metadata: Mapping[str, str],
        resumed: bool,
        missed: bool,
        queue_size: int,
        unsubscribe: Callable[[Subscription], None],
    ) -> None:
        self.id = id
        self.path = path
        self.metadata = metadata
        self.resumed = resumed
        self.missed = missed
        self._send, self._receive = trio.open_memory_channel[StreamEvent](queue_size)
        self._unsubscribe = unsubscribe
        self._registered = True
        # Set (once) before either end of the channel is closed, so a reader that finds the
        # channel ended always finds the reason too.
        self._terminal: StreamClosed | None = None
        self._closed: StreamClosed | None = None

    @property
    def closed(self) -> StreamClosed | None:
        """The terminal item once the reader has reached it (or after :meth:`close`)."""
        return self._closed

    @property
    def queued(self) -> int:
        """Messages waiting to be received (0 once closed by the subscriber)."""
        return self._receive.statistics().current_buffer_used

    async def receive(self) -> StreamEvent | StreamClosed:
        """The next message, or the terminal :class:`StreamClosed` (then always that)."""
        if self._closed is not None:
            # Still a checkpoint, so a loop that keeps calling receive cannot starve Trio.
            await trio.lowlevel.checkpoint()
            return self._closed
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            # EndOfChannel: the hub ended us and the queue is drained.  ClosedResourceError:
            # close() ran while this task was waiting.  Either way the terminal is stored.
            terminal = self._terminal
            assert terminal is not None, "channel ended without a terminal item"
            self._closed = terminal
            self._receive.close()
            return terminal

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StreamEvent:
        item = await self.receive()
        if isinstance(item, StreamClosed):
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        """Unsubscribe and drop anything queued.  Idempotent."""
        if self._registered:
            self._unsubscribe(self)
        self._end(StreamClosed("subscription closed by the subscriber", "removed"))
        self._closed = self._terminal
        self._receive.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- used by the hub --------------------------------------------------------------------

    def _offer(self, event: StreamEvent) -> bool:
        """Queue without waiting; False when the queue is full (the subscriber lags)."""
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            return False
        return True

    def _end(self, terminal: StreamClosed) -> None:
        """No more messages: the reader drains its queue, then gets ``terminal``.

        The first terminal wins: a subscriber already ended keeps the reason it was ended for.
        """
        self._registered = False
        if self._terminal is None:
            self._terminal = terminal
        self._send.close()


@attrs.frozen
class _Buffered:
    """A replay-buffer entry: the event and how it was addressed, to filter it on replay."""

    seq: int
    event: StreamEvent
    filter: Mapping[str, str] | None
    mode: MatchMode


@attrs.define(eq=False)
class _Path:
    known_from: int  # every message of this path with a larger seq is still in ``replay``
    subscribers: dict[int, Subscription] = attrs.field(factory=dict)
    replay: deque[_Buffered] = attrs.field(factory=deque)
    published: int = 0
    last_seq: int = 0  # of the newest message published here


class StreamHub:
    """Owns every subscriber of every stream path; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        queue_size: int = 1000,
        replay_size: int = 100,
        max_per_path: int = 100,
        max_total: int = 1000,
        max_idle_paths: int = 1000,
    ) -> None:
        if queue_size < 1 or max_per_path < 1 or max_total < 1:
            raise ValueError("queue_size, max_per_path and max_total must be at least 1")
        if replay_size < 0 or max_idle_paths < 0:
            raise ValueError("replay_size and max_idle_paths must not be negative")
        self._queue_size = queue_size
        self._replay_size = replay_size
        self._max_per_path = max_per_path
        self._max_total = max_total
        self._max_idle_paths = max_idle_paths
        self.epoch = secrets.token_hex(6)
        self._seq = 0
        # The newest seq of any message forgotten together with its path (see module docstring).
        self._forgotten_through = 0
        self._next_subscriber_id = 0
        self._total = 0
        self._paths: dict[str, _Path] = {}
        # Paths with no subscriber but a history worth keeping, least recently used first.
        self._idle: OrderedDict[str, None] = OrderedDict()
        self._published = 0
        self._delivered = 0
        self._dropped_lagging = 0
        self._forgotten_paths = 0
        self._shut = False

    # -- subscribing -------------------------------------------------------------------------

    def subscribe(
        self,
        path: str,
        metadata: Mapping[str, str] | None = None,
        *,
        last_event_id: str | None = None,
    ) -> Subscription:
        """Register a subscriber, replaying what it missed when ``last_event_id`` allows.

        Raises :class:`StreamFull` when the path or the hub is at its cap.
        """
        if self._shut:
            raise StreamFull("total", "The engine is shutting down")
        state = self._paths.get(path)
        if state is not None and len(state.subscribers) >= self._max_per_path:
            raise StreamFull(
                "path", f"Stream '{path}' already has {self._max_per_path} subscribers"
            )
        if self._total >= self._max_total:
            raise StreamFull("total", f"The engine already has {self._max_total} subscribers")
        meta: Mapping[str, str] = MappingProxyType(dict(metadata)) if metadata else _EMPTY
        replay, resumed, missed = self._replay_for(state, meta, last_event_id)
        if state is None:
            state = self._paths[path] = _Path(known_from=self._forgotten_through)
        self._next_subscriber_id += 1
        subscription = Subscription(
            id=self._next_subscriber_id,
            path=path,
            metadata=meta,
            resumed=resumed,
            missed=missed,
            queue_size=self._queue_size,
            unsubscribe=self._remove,
        )
        for event in replay:
            # Cannot fail: _replay_for never returns more than the queue holds.
            subscription._offer(event)
        state.subscribers[subscription.id] = subscription
        self._total += 1
        self._idle.pop(path, None)
        return subscription

    def _replay_for(
        self, state: _Path | None, metadata: Mapping[str, str], last_event_id: str | None
    ) -> tuple[list[StreamEvent], bool, bool]:
        """(events to replay, resumed, missed) for a subscriber resuming after ``last_event_id``."""
        last = self._parse_id(last_event_id)
        if last is None:
            return [], False, False
        known_from = state.known_from if state is not None else self._forgotten_through
        if last < known_from:
            return [], False, True
        buffered = state.replay if state is not None else ()
        events = [
            entry.event
            for entry in buffered
            if entry.seq > last and matches(metadata, entry.filter, entry.mode)
        ]
        if len(events) > self._queue_size:
            # Only when replay_size > queue_size: the backlog would not fit, which is a loss too.
            return [], False, True
        return events, True, False

    def _parse_id(self, event_id: str | None) -> int | None:
        """The seq of an id this hub issued, or None (absent, malformed, foreign, future)."""
        if not event_id:
            return None
        epoch, _, seq_text = event_id.rpartition("-")
        if epoch != self.epoch or not seq_text.isdigit() or not seq_text.isascii():
            return None
        if len(seq_text) > _MAX_SEQ_DIGITS:
            return None
        seq = int(seq_text)
        return seq if seq <= self._seq else None

    def _remove(self, subscription: Subscription) -> None:
        """Forget a subscriber (it unsubscribed or is being ended by the hub)."""
        state = self._paths.get(subscription.path)
        if state is None or state.subscribers.pop(subscription.id, None) is None:
            return
        self._total -= 1
        if not state.subscribers:
            self._mark_idle(subscription.path)

    def _mark_idle(self, path: str) -> None:
        self._idle[path] = None
        self._idle.move_to_end(path)
        while len(self._idle) > self._max_idle_paths:
            self._forget(next(iter(self._idle)))

    def _forget(self, path: str) -> _Path | None:
        """Drop a path's state and history, keeping the hub-wide watermark honest."""
        state = self._paths.pop(path, None)
        self._idle.pop(path, None)
        if state is not None:
            self._forgotten_through = max(self._forgotten_through, state.last_seq)
            self._forgotten_paths += 1
        return state

    # -- publishing --------------------------------------------------------------------------

    def publish(
        self,
        path: str,
        data: str,
        filter: Mapping[str, str] | None = None,
        mode: MatchMode = "subset",
    ) -> Delivery:
        """Send ``data`` to the matching subscribers of ``path`` without ever waiting.

        The message is buffered for replay even when nobody listens.
        """
        if mode not in _MODES:
            raise ValueError(f"Invalid match mode '{mode}'. Expected 'subset' or 'overlap'")
        frozen_filter = None if filter is None else MappingProxyType(dict(filter))
        state = self._paths.get(path)
        if state is None:
            state = self._paths[path] = _Path(known_from=self._forgotten_through)
        self._seq += 1
        self._published += 1
        state.published += 1
        state.last_seq = self._seq
        event = StreamEvent(id=f"{self.epoch}-{self._seq}", data=data)
        state.replay.append(_Buffered(self._seq, event, frozen_filter, mode))
        while len(state.replay) > self._replay_size:
            state.known_from = state.replay.popleft().seq

        sent = failed = 0
        lagging: list[Subscription] = []
        for subscription in state.subscribers.values():
            if not matches(subscription.metadata, frozen_filter, mode):
                continue
            if subscription._offer(event):
                sent += 1
            else:
                lagging.append(subscription)
        for subscription in lagging:
            self._drop(
                subscription,
                StreamClosed(
                    f"Subscriber fell more than {self._queue_size} messages behind", "lagging"
                ),
            )
            failed += 1
        self._delivered += sent
        self._dropped_lagging += failed
        if not state.subscribers and path in self._paths:
            self._mark_idle(path)
        return Delivery(sent, failed)

    def publish_all(self, data: str) -> Delivery:
        """Publish unfiltered to every path the hub knows (the v0.9 one-argument send)."""
        total = Delivery(0, 0)
        for path in list(self._paths):
            total += self.publish(path, data)
        return total

    # -- closing -----------------------------------------------------------------------------

    def _drop(self, subscription: Subscription, terminal: StreamClosed) -> None:
        self._remove(subscription)
        subscription._end(terminal)

    def close_path(self, path: str, reason: str) -> int:
        """End every subscriber of ``path`` and forget its history; returns how many ended."""
        state = self._forget(path)
        if state is None:
            return 0
        for subscription in state.subscribers.values():
            subscription._end(StreamClosed(reason, "removed"))
        self._total -= len(state.subscribers)
        return len(state.subscribers)

    def shut(self, reason: str) -> int:
        """Shutdown: end every subscriber (code "shutdown") and refuse new ones from now on,
        so a client connecting while the server drains cannot hold it open."""
        self._shut = True
        return self.close_all(reason)

    def close_all(self, reason: str) -> int:
        """Shutdown: end every subscriber everywhere and forget all history."""
        ended = 0
        for path in list(self._paths):
            state = self._forget(path)
            assert state is not None
            for subscription in state.subscribers.values():
                subscription._end(StreamClosed(reason, "shutdown"))
            ended += len(state.subscribers)
        self._total = 0
        return ended

    # -- looking -----------------------------------------------------------------------------

    def count(self, path: str | None = None) -> int:
        """Live subscribers of ``path``, or of the whole hub."""
        if path is None:
            return self._total
        state = self._paths.get(path)
        return 0 if state is None else len(state.subscribers)

    def paths(self) -> list[str]:
        """Every path the hub knows, sorted: with subscribers, or idle and not yet forgotten."""
        return sorted(self._paths)

    def stats(self) -> dict[str, Any]:
        """Totals and per-path figures for /health and metrics (plain JSON values)."""
        per_path = {
            path: {
                "subscribers": len(state.subscribers),
                "queued": sum(s.queued for s in state.subscribers.values()),
                "buffered": len(state.replay),
                "published": state.published,
            }
            for path, state in sorted(self._paths.items())
        }
        return {
            "epoch": self.epoch,
            "subscribers": self._total,
            "queued": sum(figures["queued"] for figures in per_path.values()),
            "paths": len(self._paths),
            "idle_paths": len(self._idle),
            "published": self._published,
            "delivered": self._delivered,
            "dropped_lagging": self._dropped_lagging,
            "forgotten_paths": self._forgotten_paths,
            "limits": {
                "queue_size": self._queue_size,
                "replay_size": self._replay_size,
                "max_per_path": self._max_per_path,
                "max_total": self._max_total,
                "max_idle_paths": self._max_idle_paths,
            },
            "per_path": per_path,
        }
