"""Helpers shared by the conformance tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from sessionhub import Session, SessionEvent, SessionHub, SessionNotFound

__all__ = ["HookLog", "MakeHub", "gone", "next_event", "next_events"]

#: ``await make_hub(**options)``: a started hub over a fresh store and the test's manual clock.
MakeHub = Callable[..., Awaitable[SessionHub]]


class HookLog:
    """A cleanup hook that records every call as ``(session, reason)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[Session, str]] = []

    async def __call__(self, session: Session, reason: str) -> None:
        self.calls.append((session, reason))

    @property
    def ids(self) -> list[str]:
        return [session.id for session, _ in self.calls]

    @property
    def reasons(self) -> dict[str, str]:
        return {session.id: reason for session, reason in self.calls}


#: How long a test waits for an event that must already be there (a safety net, not an assertion
#: about speed: a missing event fails the test instead of hanging it).
EVENT_WAIT = 10.0


async def next_event(events: AsyncIterator[SessionEvent]) -> SessionEvent:
    return await asyncio.wait_for(anext(events), EVENT_WAIT)


async def next_events(events: AsyncIterator[SessionEvent], n: int) -> list[SessionEvent]:
    return [await next_event(events) for _ in range(n)]


async def gone(hub: SessionHub, session_id: str) -> bool:
    """Whether ``hub.get`` no longer finds the session (ended and not retained)."""
    try:
        await hub.get(session_id)
    except SessionNotFound:
        return True
    return False
