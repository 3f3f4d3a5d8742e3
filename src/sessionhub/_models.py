"""The records sessionhub hands out: sessions, events, history records, data entries, pages.

They are immutable msgspec structs: cheap to build (a touch makes a new one in well under a
microsecond), small (no per-instance dict, no GC header) and encoded to JSON or MessagePack by every
face and durable store without glue code. Timestamps are seconds since the Unix epoch, UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

__all__ = [
    "EMPTY",
    "DataEntry",
    "EventKind",
    "HistoryRecord",
    "Page",
    "Session",
    "SessionEvent",
    "expires_at",
]


class ReadOnlyDict(dict[str, Any]):
    """A dict that refuses changes, for the mappings of sessions: a snapshot never changes, so
    equal mappings can be one object. Sessions without labels, details or counters share
    ``EMPTY`` (at a million sessions, three empty dicts each would cost more than the rest of the
    record), and the memory store shares equal label mappings between sessions."""

    __slots__ = ()

    def _read_only(self, *args: object, **kwargs: object) -> Any:
        raise TypeError("session mappings are read-only snapshots")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[type[ReadOnlyDict], tuple[dict[str, Any]]]:
        return (type(self), (dict(self),))  # copy, deepcopy and pickle without item assignment


EMPTY: Final[Mapping[str, Any]] = ReadOnlyDict()


class Session(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One session, as a snapshot: every change makes a new ``Session`` with a higher ``version``."""

    id: str
    namespace: str = "default"
    state: str
    user_id: str | None = None
    parent_id: str | None = None
    labels: Mapping[str, str] = EMPTY
    details: Mapping[str, Any] = EMPTY
    counters: Mapping[str, int] = EMPTY
    created_at: float
    updated_at: float
    last_activity_at: float
    expires_at: float | None = None
    ended_at: float | None = None
    idle_timeout: float | None = None
    ttl: float | None = None
    retention: float | None = None
    active_requests: int = 0
    end_reason: str | None = None
    version: int = 1

    @property
    def live(self) -> bool:
        """False once the session has ended (its record may still be retained for reading)."""
        return self.ended_at is None

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


def expires_at(
    *,
    created_at: float,
    last_activity_at: float,
    idle_timeout: float | None,
    ttl: float | None,
    active_requests: int,
) -> float | None:
    """When a session expires if nothing happens: the idle deadline (suspended while requests are in
    flight) capped by the ttl. Every store computes deadlines with this rule."""
    idle = None if idle_timeout is None or active_requests > 0 else last_activity_at + idle_timeout
    cap = None if ttl is None else created_at + ttl
    if idle is None:
        return cap
    return idle if cap is None else min(idle, cap)


class EventKind:
    """The kinds of ``SessionEvent``; ``MISSED`` tells a subscriber how many events it lost."""

    CREATED: Final = "created"
    UPDATED: Final = "updated"
    TRANSITIONED: Final = "transitioned"
    ENDED: Final = "ended"
    MISSED: Final = "missed"
    ALL: Final = frozenset({CREATED, UPDATED, TRANSITIONED, ENDED})


class SessionEvent(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Something that happened to a session. ``id`` orders events and resumes a subscription."""

    id: str
    kind: str
    at: float
    session: Session | None = None
    missed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


class HistoryRecord(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One entry of a session's append-only history; ``seq`` starts at 1 and never repeats."""

    seq: int
    kind: str
    at: float
    payload: Any = None


class DataEntry(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A value of a session's data store with its version, for compare-and-set."""

    key: str
    value: Any
    version: int


class Page(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a listing; pass ``cursor`` back to get the next (``None`` on the last page)."""

    items: list[Session]
    cursor: str | None = None


json_encoder = msgspec.json.Encoder()
