"""Time and ids, injectable so that tests move time instead of sleeping."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

__all__ = ["Clock", "IdFactory", "ManualClock", "new_session_id", "system_clock"]

#: A clock is any callable giving seconds since the Unix epoch (UTC), like ``time.time``.
Clock = Callable[[], float]
#: An id factory gives a fresh, unguessable session id on each call.
IdFactory = Callable[[], str]

system_clock: Clock = time.time


def new_session_id() -> str:
    """128 bits from the operating system's CSPRNG, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)


class ManualClock:
    """A clock that moves only when told to: ``clock.advance(61)`` and the idle sessions are due."""

    __slots__ = ("_now",)

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock does not go backwards; use set() to jump")
        self._now += seconds
        return self._now

    def set(self, now: float) -> None:
        self._now = float(now)
