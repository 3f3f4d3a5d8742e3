"""The in-process event log every subscriber reads from.

A fixed ring of the last ``capacity`` events. Publishing is O(1) whatever the number of subscribers;
each subscriber keeps its own position and reads at its own pace. One that falls a whole ring behind
is not waited for: it gets a ``missed`` event saying how many it lost, then goes on from the oldest
event still held. Stores that share a log between processes (SQLite, Redis) feed the events they
tail into this ring, so subscribers everywhere see one ordered stream.
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
        self._ring: list[SessionEvent | None] = [None] * capacity
        self._seq_of: dict[str, int] = {}  # event id → sequence, for the events in the ring
        self._next = 1  # sequence number of the next event
        self._waiters: set[asyncio.Future[None]] = set()
        self._closed = False

    @property
    def last_id(self) -> str | None:
        """The id of the newest event, or ``None`` before the first."""
        event = self._ring[(self._next - 1) % self.capacity] if self._next > 1 else None
        return event.id if event else None

    def append(
        self, kind: str, at: float, session: Session | None, event_id: str | None = None
    ) -> SessionEvent:
        """Add an event; its id is its sequence number unless the store brings its own."""
        seq = self._next
        event = SessionEvent(id=event_id or str(seq), kind=kind, at=at, session=session)
        slot = seq % self.capacity
        old = self._ring[slot]
        if old is not None:
            del self._seq_of[old.id]
        self._ring[slot] = event
        self._seq_of[event.id] = seq
        self._next = seq + 1
        if self._waiters:
            self._wake()
        return event

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

    def _position(self, after: str | None) -> int:
        """The sequence number a subscription resuming after ``after`` has already seen."""
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
        return self._read(self._position(after))

    async def _read(self, position: int) -> AsyncGenerator[SessionEvent, None]:
        loop = asyncio.get_running_loop()
        while True:
            if position + 1 < self._next:
                oldest = max(self._next - self.capacity, 1)
                if position + 1 < oldest:
                    missed = oldest - position - 1
                    position = oldest - 1
                    first = self._ring[oldest % self.capacity]
                    at = first.at if first else 0.0
                    yield SessionEvent(id="", kind=EventKind.MISSED, at=at, missed=missed)
                    continue
                position += 1
                event = self._ring[position % self.capacity]
                assert event is not None
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
