"""Helpers shared by the conformance tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sessionhub import Session, SessionHub

__all__ = ["HookLog", "MakeHub"]

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
