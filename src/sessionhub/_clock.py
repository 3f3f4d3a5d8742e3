"""Time and ids, injectable so that tests move time instead of sleeping."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable

__all__ = ["Clock", "IdFactory", "ManualClock", "new_session_id", "system_clock"]

#: A clock is any callable giving seconds since the Unix epoch (UTC), like ``time.time``.
Clock = Callable[[], float]
#: An id factory gives a fresh, unguessable session id on each call.
IdFactory = Callable[[], str]

system_clock: Clock = time.time

_BATCH = 256  # ids drawn per call to the CSPRNG
_STARTS = range(0, 24 * _BATCH, 24)
_ready: list[str] = []  # drawn, not yet handed out


def _draw() -> list[str]:
    """``_BATCH`` ids in one read of the OS CSPRNG and one base64 pass.

    Each id is what ``secrets.token_urlsafe(16)`` gives: 16 random bytes in URL-safe base64
    without padding. Each id's bytes are followed by two zero bytes (18 is a multiple of 3, so
    each id owns exactly 24 characters of the encoding), and the first 22 of those are exactly
    the unpadded encoding of its 16 bytes: an id is one slice."""
    raw = os.urandom(16 * _BATCH)
    spaced = bytearray(18 * _BATCH)
    for k in range(16):  # byte k of every id, in one C-level pass each
        spaced[k::18] = raw[k::16]
    encoded = base64.urlsafe_b64encode(spaced).decode()
    return [encoded[start : start + 22] for start in _STARTS]


def new_session_id() -> str:
    """128 bits from the operating system's CSPRNG, URL-safe (22 characters)."""
    try:
        return _ready.pop()
    except IndexError:
        _ready.extend(_draw())  # list operations are atomic: threads never share an id
        return _ready.pop()


# A forked child must not hand out the ids its parent drew: they would be its parent's too.
os.register_at_fork(after_in_child=_ready.clear)


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
