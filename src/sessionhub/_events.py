"""The in-process event log every subscriber reads from.

A fixed ring of the last ``capacity`` events. Publishing is O(1) whatever the number of subscribers;
each subscriber keeps its own position and reads at its own pace. One that falls a whole ring behind
is not waited for: it gets a ``missed`` event saying how many it lost, then goes on from the oldest
event still held. Stores that share a log between processes (SQLite, Redis) feed the events they
tail into this ring, so subscribers everywhere see one ordered stream.

Events are numbered 1, 2, ... in the order they arrive, and an event's id is its number unless the
store brings its own (Redis stream ids). A store whose log has numbers of its own (SQLite row ids)
keeps the two equal with ``skip_to``. The ring holds each event's fields in parallel lists, not a
``SessionEvent`` with an id string per event: publishing allocates nothing, and readers build the
events they read.

A store that tails a shared log feeds every process's events, most of which no subscriber here may
ever read: it appends them with the session snapshot still packed (``append_packed``), and the
snapshot is unpacked (``unpack``, once, whoever reads it first) only when a reader gets to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from ._errors import ValidationError
from ._models import EventKind, Session, SessionEvent

__all__ = ["EventLog"]


class EventLog:
    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValidationError("the event buffer must hold at least one event")
        self.capacity = capacity
        # Slot ``seq % capacity`` holds event ``seq``; a MISSED kind there is a one-event marker.
        self._kinds: list[str | None] = [None] * capacity
        self._ats: list[float] = [0.0] * capacity
        self._sessions: list[Session | None] = [None] * capacity
        self._packed: list[bytes | None] = [None] * capacity  # snapshots not unpacked yet
        self._ids: list[str | None] = [None] * capacity  # the store's own ids, when it brings them
        self._seq_of: dict[str, int] = {}  # the store's own id → sequence, for those in the ring
        self._next = 1  # sequence number of the next event
        self._waiters: set[asyncio.Future[None]] = set()
        self._closed = False

    @property
    def next_seq(self) -> int:
        """The sequence number the next event gets."""
        return self._next

    @property
    def oldest_seq(self) -> int:
        """The sequence number of the oldest event the ring still holds (``next_seq`` if none)."""
        return max(self._next - self.capacity, 1)

    @property
    def last_id(self) -> str | None:
        """The id of the newest event, or ``None`` before the first."""
        return self.id_of(self._next - 1) if self._next > 1 else None

    def id_of(self, seq: int) -> str:
        return self._ids[seq % self.capacity] or str(seq)

    def seq_of(self, event_id: str) -> int | None:
        """The sequence number of an event the ring holds under a store's own id, else ``None``."""
        return self._seq_of.get(event_id)

    def event_at(self, seq: int) -> SessionEvent | None:
        """Event ``seq`` if the ring still holds it."""
        if not self.oldest_seq <= seq < self._next:
            return None
        slot = seq % self.capacity
        kind = self._kinds[slot]
        if kind is None:
            return None
        event_id = self._ids[slot] or str(seq)
        if kind == EventKind.MISSED:
            return SessionEvent(id=event_id, kind=kind, at=self._ats[slot], missed=1)
        session = self._sessions[slot]
        packed = self._packed[slot]
        if session is None and packed is not None:
            self._packed[slot] = None
            session = self._sessions[slot] = self.unpack(packed, event_id)
            if session is None:  # damaged: every reader passes over it (the store counted it)
                self._kinds[slot] = None
                return None
        return SessionEvent(id=event_id, kind=kind, at=self._ats[slot], session=session)

    def unpack(self, packed: bytes, event_id: str) -> Session | None:
        """The session of a packed snapshot (see ``append_packed``); ``None`` if it is damaged."""
        raise NotImplementedError("a log fed packed snapshots says how to unpack them")

    def append(
        self, kind: str, at: float, session: Session | None, event_id: str | None = None
    ) -> None:
        """Add an event; its id is its sequence number unless the store brings its own."""
        seq = self._next
        slot = seq % self.capacity
        if self._seq_of:
            old = self._ids[slot]
            if old is not None:
                del self._seq_of[old]
        self._kinds[slot] = kind
        self._ats[slot] = at
        self._sessions[slot] = session
        self._packed[slot] = None
        self._ids[slot] = event_id
        if event_id is not None:
            self._seq_of[event_id] = seq
        self._next = seq + 1
        if self._waiters:
            self._wake()

    def append_packed(self, kind: str, at: float, packed: bytes, event_id: str) -> None:
        """Add an event whose session snapshot is unpacked only if and when it is read."""
        self.append(kind, at, None, event_id)
        self._packed[(self._next - 1) % self.capacity] = packed

    def skip_to(self, seq: int, at: float) -> None:
        """Number the next event ``seq``, for a store whose shared log numbers its events: the
        numbers skipped are events this process never received (trimmed before it read them).
        Those the ring still holds become ``missed`` markers of one event each, so that a reader
        resuming across them is told exactly how many it lost."""
        self._next = max(self._next, seq - self.capacity)
        while self._next < seq:
            self.append(EventKind.MISSED, at, None)

    def close(self) -> None:
        """End every subscription (after it has read what is already there)."""
        self._closed = True
        self._wake()

    def reopen(self) -> None:
        self._closed = False

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def position(self, after: str | None) -> int:
        """The sequence number a subscription resuming after ``after`` has already seen.

        Stores whose ids order events in a way of their own (Redis stream ids) extend this to
        place ids the ring no longer holds."""
        if after is None:
            return self._next - 1
        seq = self._seq_of.get(after)
        if seq is not None:
            return seq
        if after.isdigit() and int(after) < self._next:
            return int(after)  # an id of ours that left the ring: the reader is told what it missed
        raise ValidationError(f"unknown event id {after!r}: it is not one this log has given out")

    def subscribe(self, after: str | None = None) -> AsyncGenerator[SessionEvent, None]:
        """Events after ``after``, or after the newest one now. The position is taken here, not at
        the first iteration, so nothing that happens in between is lost; an unknown ``after``
        raises here too."""
        return self._read(self.position(after))

    async def _read(self, position: int) -> AsyncGenerator[SessionEvent, None]:
        loop = asyncio.get_running_loop()
        while True:
            if position + 1 < self._next:
                oldest = self.oldest_seq
                if position + 1 < oldest:
                    missed = oldest - position - 1
                    position = oldest - 1
                    at = self._ats[oldest % self.capacity]
                    yield SessionEvent(id="", kind=EventKind.MISSED, at=at, missed=missed)
                    continue
                position += 1
                event = self.event_at(position)
                if event is not None:  # None: a damaged snapshot, passed over
                    yield event
            elif self._closed:
                return
            else:
                waiter = loop.create_future()
                self._waiters.add(waiter)
                try:
                    await waiter
                finally:
                    self._waiters.discard(waiter)
