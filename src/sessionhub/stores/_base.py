"""The store contract.

A store keeps sessions, their data and history, and the event log, and performs each operation below
atomically: when many hub processes share one store (SQLite, Redis), two of them racing on the same
session must still see uniqueness held, versions compared, and every end claimed exactly once.

Policy lives in the hub: it validates input, decides limits and lifecycle moves, runs hooks and counts.
The store receives decisions as plain values (``NewSession``'s rules, a ``Change``, the ``moves`` of a
lifecycle event) and applies them atomically, so the memory, SQLite and Redis stores stay thin and
interchangeable. Every store must pass the conformance suite, ``tests/core``.

Rules every implementation follows:

- ``get`` returns live sessions and ended ones still retained; every other session operation treats an
  ended or unknown session as ``SessionNotFound``.
- Data and history reads take ``now`` and see live sessions and ended ones retained past it (the
  ``retain_until`` of ``finish_end``), even before ``purge`` removed them: the hub needs no ``get``
  first, so a read is one round trip to a remote store.
- A session claimed for its end (``end_reason`` set) accepts no activity: ``modify``, ``data_set``,
  ``data_delete`` and ``history_append`` raise ``SessionNotFound`` (``ending(session_id)``); reads
  still work.
- Counters are signed 64-bit integers: an increment past either end raises ``ValidationError``
  (``counter_overflow``) and changes nothing.
- A stored record that cannot be decoded (written before a limit existed, or damaged) never breaks
  a listing, an expiry pass or the event stream: it is skipped there, logged once and counted in
  ``damaged_records``; reading it directly raises ``DamagedRecord``.
- Mutations append their event to the log in the same atomic step (``Change.emit`` says which kind).
- A deadline is ``_models.expires_at`` of the new record, recomputed on every change.
- Ending is two steps: ``claim_end``/``claim_expired`` mark sessions (the claimer alone runs hooks),
  then ``finish_end`` moves them to the ended state, frees unique labels, and retains or deletes them.
  A retained record without a ``retention`` of its own gets ``kept_for``'s: the hub's ``get`` reads
  how long it is kept from the record itself, never from its own (possibly changed) default.
  ``finish_ends`` and ``having_children`` serve expiry bursts; their defaults loop over the
  one-session operations, and remote stores answer each in one round trip.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import msgspec

from .._errors import (
    DamagedRecord,
    PayloadTooLarge,
    SessionNotFound,
    TooManyRequests,
    TransitionError,
    ValidationError,
    VersionConflict,
    shortened,
)
from .._events import EventLog
from .._limits import INT64_MAX, INT64_MIN
from .._models import (
    EMPTY,
    DataEntry,
    HistoryRecord,
    Page,
    Session,
    SessionEvent,
    expires_at,
    json_encoder,
)

if TYPE_CHECKING:
    from ._stack import StackWalk

__all__ = [
    "DECODE_ERRORS",
    "Change",
    "CreateRules",
    "Query",
    "StackRead",
    "Store",
    "accepting_activity",
    "appended_records",
    "apply_change",
    "counter_overflow",
    "ended_record",
    "ending",
    "kept_for",
    "live_session",
    "pop_marker",
    "refreshed",
    "stack_top",
]

logger = logging.getLogger("sessionhub.stores")

#: What decoding a stored record may raise when the record is damaged or nests too deeply.
DECODE_ERRORS: Final = (
    msgspec.DecodeError,
    RecursionError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
)


def ending(session_id: str) -> SessionNotFound:
    """The error of an activity on a session claimed for its end."""
    return SessionNotFound(session_id, f"session is being ended: {shortened(session_id)}")


def live_session(session: Session | None, session_id: str) -> Session:
    """``session`` (the record read for ``session_id``) if it is live; ``SessionNotFound``."""
    if session is None or session.ended_at is not None:
        raise SessionNotFound(session_id)
    return session


def accepting_activity(session: Session | None, session_id: str) -> Session:
    """``session`` if it is live and not being ended: one that accepts activity."""
    if session is None or session.ended_at is not None:
        raise SessionNotFound(session_id)
    if session.end_reason is not None:
        raise ending(session_id)
    return session


def refreshed(session: Session, now: float) -> Session:
    """``session`` after activity at ``now`` that changes nothing else (a data or history
    write): the idle deadline slides as a touch slides it."""
    return msgspec.structs.replace(
        session,
        last_activity_at=now,
        updated_at=now,
        expires_at=expires_at(
            created_at=session.created_at,
            last_activity_at=now,
            idle_timeout=session.idle_timeout,
            ttl=session.ttl,
            active_requests=session.active_requests,
        ),
        version=session.version + 1,
    )


def ended_record(session: Session, now: float, ended_state: str, retain_until: float) -> Session:
    """The record ``finish_end`` keeps of a claimed ``session`` ended at ``now``."""
    return msgspec.structs.replace(
        session,
        state=ended_state,
        ended_at=now,
        updated_at=now,
        expires_at=None,
        active_requests=0,
        version=session.version + 1,
        retention=kept_for(session, now, retain_until),
    )


def kept_for(session: Session, now: float, retain_until: float) -> float | None:
    """The ``retention`` of a session's ended record (``finish_end`` at ``now``): its own, or,
    when it had none and is kept, ``retain_until - now``. The record then states how long it is
    kept, so a hub opened later with another default retention reads the store's decision.
    (``now + (retain_until - now) == retain_until`` exactly for any retention below ``now``.)"""
    if session.retention is not None or retain_until <= now:
        return session.retention
    return retain_until - now


def counter_overflow(name: str, value: int, delta: int) -> ValidationError:
    return ValidationError(
        f"counter {shortened(name)} at {value} cannot change by {delta}: counters are signed "
        "64-bit integers"
    )


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """Filters of ``find``/``count``; every given filter must match. Results are ordered by id.

    Ended sessions that are still retained are listed only with ``include_ended``, and only by
    namespace (the user, parent and label indexes hold live sessions alone).
    """

    namespace: str | None = None
    user_id: str | None = None
    parent_id: str | None = None
    state: str | None = None
    labels: Mapping[str, str] | None = None
    include_ended: bool = False


class CreateRules(msgspec.Struct, frozen=True, kw_only=True):
    """What a create must check atomically with the insert."""

    unique_labels: Sequence[str] = ()
    max_sessions: int | None = None
    max_sessions_per_user: int | None = None


_KEEP: Any = msgspec.UNSET
_replace = msgspec.structs.replace


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """An atomic read-modify-write of one live session.

    Unset fields leave the session as it is. The store checks ``expected_version``, applies the move
    for the session's current state from ``moves`` (``TransitionError`` if there is none), merges and
    removes details and labels, adds ``counters`` increments and ``requests`` to the in-flight count
    (``TooManyRequests`` past ``max_requests``; ``PayloadTooLarge`` when the merged labels or details
    pass their limits), refreshes activity when ``touch``, recomputes the
    deadline, bumps the version and appends an event of kind ``emit`` if given.
    """

    now: float
    expected_version: int | None = None
    event: str | None = None
    moves: Mapping[str, str] | None = None
    details: Mapping[str, Any] | None = None
    details_remove: Sequence[str] = ()
    labels: Mapping[str, str] | None = None
    labels_remove: Sequence[str] = ()
    unique_labels: Sequence[str] = ()
    max_labels: int | None = None
    max_details_bytes: int | None = None
    idle_timeout: float | msgspec.UnsetType | None = _KEEP
    ttl: float | msgspec.UnsetType | None = _KEEP
    parent_id: str | msgspec.UnsetType | None = _KEEP
    counters: Mapping[str, int] | None = None
    requests: int = 0
    max_requests: int | None = None
    touch: bool = False
    emit: str | None = None


class Store(abc.ABC):
    """Base of every store. Subclasses implement the abstract methods atomically."""

    #: True when nothing outlives the process (the hub then ends every session at shutdown).
    ephemeral: bool = False

    def __init__(self, *, event_buffer: int = 10_000) -> None:
        self.events = EventLog(event_buffer)
        # Synchronous twins of ``create``, ``get`` and a touch (``modify`` with only
        # ``Change(now=now, touch=True)``), set by stores whose operations never wait (memory):
        # the hub calls them directly, so its hottest calls cost one coroutine instead of two.
        # They follow every rule of what they twin (a session being ended refuses the touch).
        self.create_now: Callable[[Session, CreateRules], Session] | None = None
        self.get_now: Callable[[str], Session | None] | None = None
        self.touch_now: Callable[[str, float], Session] | None = None
        #: Stored records that could not be decoded and were skipped (each logged once).
        self.damaged_records = 0
        self._damaged_logged: set[str] = set()

    def damaged(self, what: str, error: BaseException) -> DamagedRecord:
        """Count a record that cannot be decoded, log it the first time, and return the error a
        direct read of it raises. ``what`` names the record (``session <id>``, ...)."""
        self.damaged_records += 1
        if what not in self._damaged_logged and len(self._damaged_logged) < 10_000:
            self._damaged_logged.add(what)
            logger.error(
                "%r: the stored %s cannot be decoded (%s); skipped",
                self,
                shortened(what),
                type(error).__name__,
            )
        return DamagedRecord(f"the stored {shortened(what)} cannot be decoded")

    async def open(self) -> None:  # noqa: B027 - optional for stores with nothing to open
        """Connect, create the schema, start tailing the shared event log (idempotent)."""

    async def close(self) -> None:  # noqa: B027 - optional
        """Release connections; the data stays where it is."""

    # sessions

    @abc.abstractmethod
    async def create(self, session: Session, rules: CreateRules) -> Session:
        """Insert a new session; ``DuplicateSession`` if the id or a unique label is taken,
        ``CapacityExceeded``/``QuotaExceeded`` past the rules, ``SessionNotFound`` for a parent that is
        not live. Emits ``created``."""

    @abc.abstractmethod
    async def get(self, session_id: str) -> Session | None:
        """The session, live or retained after its end; ``None`` if there is none."""

    @abc.abstractmethod
    async def find(self, query: Query, *, limit: int, cursor: str | None) -> Page:
        """Sessions matching ``query`` with ids after ``cursor``, in id order, at most ``limit``."""

    @abc.abstractmethod
    async def count(self, query: Query) -> int:
        """How many sessions ``find`` would list over all pages."""

    @abc.abstractmethod
    async def modify(self, session_id: str, change: Change) -> Session:
        """Apply ``change`` atomically to a live session and return the new record."""

    @abc.abstractmethod
    async def claim_end(
        self, session_id: str, reason: str, now: float, moves: Mapping[str, str]
    ) -> Session | None:
        """Mark a live, unclaimed session as ending (its state moved by ``moves``, ``end_reason``
        set, event ``transitioned``). ``None`` if it is unknown, ended, or already claimed."""

    @abc.abstractmethod
    async def claim_expired(
        self, now: float, moves: Mapping[str, str], limit: int
    ) -> list[Session]:
        """Claim, as ``claim_end`` with reason ``expired``, up to ``limit`` sessions whose deadline
        is at or before ``now``, earliest first."""

    @abc.abstractmethod
    async def finish_end(
        self, session_id: str, now: float, ended_state: str, retain_until: float
    ) -> Session | None:
        """Move a claimed session to ``ended_state``, free its unique labels and index entries, and
        keep it readable until ``retain_until`` (or delete it with its data and history now when
        that has passed). Emits ``ended``. ``None`` if the session is not claimed."""

    async def finish_ends(
        self, ends: Sequence[tuple[str, float]], now: float, ended_state: str
    ) -> list[Session | None]:
        """``finish_end`` of each ``(session_id, retain_until)`` at ``now``, results in order: the
        hub finishes a burst of expiries with one call. Each end is atomic on its own; an error
        raises (ends finished before it stay finished, the rest stay claimed).

        This default makes one ``finish_end`` call per end; remote stores override it with one
        round trip for the whole batch."""
        return [await self.finish_end(sid, now, ended_state, until) for sid, until in ends]

    async def having_children(self, session_ids: Sequence[str]) -> set[str]:
        """Which of ``session_ids`` have live children (children claimed for their end included):
        the hub looks up the children of those alone before ending a batch.

        This default asks ``find`` once per id; remote stores override it with one round trip."""
        having = set()
        for session_id in session_ids:
            page = await self.find(Query(parent_id=session_id), limit=1, cursor=None)
            if page.items or page.cursor is not None:
                having.add(session_id)
        return having

    @abc.abstractmethod
    async def census(self) -> dict[tuple[str, str], int]:
        """How many live sessions there are per ``(namespace, state)``."""

    @abc.abstractmethod
    async def next_deadline(self) -> float | None:
        """When the hub's expiry should next call ``claim_expired``: the earliest deadline of a
        live, unclaimed session, or earlier when the store has claims to sweep (a shared store
        takes over a dead claimer's ends); ``None`` when nothing is due."""

    @abc.abstractmethod
    async def purge(self, now: float) -> int:
        """Delete ended sessions whose retention has passed; how many went."""

    # data: one key → JSON value store per session; values travel as JSON bytes

    @abc.abstractmethod
    async def data_get(self, session_id: str, key: str, now: float) -> DataEntry | None:
        """The entry, or ``None``; ``SessionNotFound`` if the session is neither live nor retained
        at ``now``."""

    @abc.abstractmethod
    async def data_set(
        self, session_id: str, key: str, value: bytes, expected_version: int | None, now: float
    ) -> DataEntry:
        """Write a value (``expected_version`` 0: only if absent) and refresh the session's
        activity; ``VersionConflict`` on a stale version."""

    @abc.abstractmethod
    async def data_delete(
        self, session_id: str, key: str, expected_version: int | None, now: float
    ) -> bool:
        """Remove a key; whether it existed."""

    @abc.abstractmethod
    async def data_items(self, session_id: str, now: float) -> list[DataEntry]:
        """Every entry of the session, ordered by key."""

    # history: an append-only log per session

    @abc.abstractmethod
    async def history_append(
        self, session_id: str, kind: str, payload: bytes, now: float
    ) -> HistoryRecord:
        """Append a record (``seq`` one past the last) and refresh the session's activity."""

    @abc.abstractmethod
    async def history_read(
        self,
        session_id: str,
        *,
        after: int | None,
        limit: int,
        newest_first: bool,
        kind: str | None,
        now: float,
    ) -> list[HistoryRecord]:
        """Records with ``seq`` past ``after`` (before it, when ``newest_first``), at most
        ``limit``, only of ``kind`` if given."""

    @abc.abstractmethod
    async def history_counts(self, session_id: str, now: float) -> dict[str, int]:
        """How many records of each kind, without reading them."""

    # events

    def subscribe(self, after: str | None = None) -> AsyncGenerator[SessionEvent, None]:
        """Events in order, from after ``after`` (or from now on). The position is fixed by this
        call, before the first iteration; an unknown ``after`` raises ``ValidationError`` here."""
        return self.events.subscribe(after)

    # history as a stack (the OpenAI Agents SDK adapter's items): see ``stack_top``. Stores
    # override both with one atomic operation; these defaults compose the abstract ones and are
    # atomic only where nothing else writes the session's history meanwhile.

    async def history_append_many(
        self, session_id: str, records: Sequence[tuple[str, bytes]], now: float
    ) -> list[HistoryRecord]:
        """Append ``(kind, payload)`` records with consecutive ``seq``s, all or none."""
        return [
            await self.history_append(session_id, kind, payload, now) for kind, payload in records
        ]

    def _stack_walk(
        self, session_id: str, read: StackRead, decode: Callable[[Any], Any] | None = None
    ) -> StackWalk:
        """A walk for ``history_stack``: a record it cannot decode is counted, logged, passed."""
        from ._stack import StackWalk

        def damaged(seq: int, exc: Exception) -> None:
            self.damaged(f"history record {seq} of session {session_id}", exc)

        return StackWalk(read, damaged) if decode is None else StackWalk(read, damaged, decode)

    async def history_stack(
        self, session_id: str, read: StackRead, now: float
    ) -> tuple[list[Any], int]:
        """The payloads of the ``read.wanted`` newest ``read.kind`` records still on the stack
        (``None``: all), oldest first, and how many records markers hid (see ``StackRead``).
        SQLite and Redis walk beside their read (one hop, one round trip, usually); this default
        walks pages of ``history_read``."""
        walk = self._stack_walk(session_id, read, decode=_same)
        before: int | None = None
        while True:
            page = await self.history_read(
                session_id, after=before, limit=walk.size, newest_first=True, kind=None, now=now
            )
            if (
                not page
                or (before := walk.feed([(r.seq, r.kind, r.payload) for r in page])) is None
            ):
                return walk.oldest_first(), walk.hidden

    async def history_pop(
        self, session_id: str, kind: str, marker: str, now: float
    ) -> HistoryRecord | None:
        """Remove the top of the session's stack of ``kind`` records (see ``stack_top``): append a
        ``marker`` record ``{"popped": seq, "below": seq of the new top or 0}`` and return the
        removed record; ``None``, appending nothing, when the stack is empty."""
        records: dict[int, tuple[str, bytes]] = {}
        after: int | None = None
        while True:  # the whole history: a fallback for stores without their own
            page = await self.history_read(
                session_id, after=after, limit=1000, newest_first=False, kind=None, now=now
            )
            for record in page:
                records[record.seq] = (record.kind, json_encoder.encode(record.payload))
            if len(page) < 1000:
                break
            after = page[-1].seq
        top = stack_top(records.__getitem__, len(records), kind, marker)
        if not top:
            return None
        below = stack_top(records.__getitem__, top - 1, kind, marker)
        await self.history_append(session_id, marker, pop_marker(top, below), now)
        found = await self.history_read(
            session_id, after=top + 1, limit=1, newest_first=True, kind=None, now=now
        )
        return found[0]


def _same(payload: Any) -> Any:
    return payload


class StackRead(msgspec.Struct, frozen=True):
    """What ``Store.history_stack`` reads: ``kind`` records are the items; ``marker`` records
    (``history_pop``'s) remove items, a ``stop`` record ends the stack, others are passed over
    (``_stack.StackWalk`` resolves them). ``hidden`` is what the caller expects markers to hide
    (the last read's answer), to size the first read."""

    kind: str
    marker: str
    stop: str
    wanted: int | None
    hidden: int = 0

    def __post_init__(self) -> None:
        for name, value in (("wanted", self.wanted), ("hidden", self.hidden)):
            if value is not None and (type(value) is not int or value < 0):
                raise ValidationError(f"{name} must be an int >= 0, got {value!r}")


def _merged(
    mapping: Mapping[str, Any], updates: Mapping[str, Any] | None, removals: Iterable[str]
) -> Mapping[str, Any]:
    if not updates and not removals:
        return mapping
    merged = dict(mapping)
    for key in removals:
        merged.pop(key, None)
    if updates:
        merged.update(updates)
    return merged or EMPTY


def apply_change(
    old: Session, change: Change, check_unique: Callable[[Mapping[str, str]], None]
) -> Session:
    """The record ``change`` makes of ``old``, or the error it must raise (nothing changed).

    Stores that compute records in Python (memory, SQLite) share these rules, checked in this
    order; ``check_unique`` raises ``DuplicateSession`` when merged labels would take a unique
    label another live session holds. The Redis store applies the same rules in Lua.
    """
    if old.end_reason is not None:
        raise ending(old.id)
    if change.expected_version is not None and change.expected_version != old.version:
        raise VersionConflict(
            f"session {old.id} is at version {old.version}, not {change.expected_version}"
        )
    state = old.state
    if change.moves is not None:
        moved = change.moves.get(state)
        if moved is None:
            raise TransitionError(state, change.event or "?")
        state = moved
    labels = old.labels
    if change.labels is not None or change.labels_remove:
        labels = _merged(labels, change.labels, change.labels_remove)
    if labels is not old.labels:
        if change.max_labels is not None and len(labels) > change.max_labels:
            raise PayloadTooLarge(
                f"{len(labels)} labels is more than the limit of {change.max_labels}"
            )
        check_unique(labels)
    details = old.details
    if change.details is not None or change.details_remove:
        details = _merged(details, change.details, change.details_remove)
    if details is not old.details and change.max_details_bytes is not None:
        size = len(json_encoder.encode(details))
        if size > change.max_details_bytes:
            raise PayloadTooLarge(
                f"details would be {size} bytes, more than the limit of {change.max_details_bytes}"
            )
    requests = old.active_requests + change.requests
    if change.requests > 0 and change.max_requests is not None and requests > change.max_requests:
        raise TooManyRequests(
            f"session {old.id} already has {old.active_requests} requests in flight "
            f"(limit {change.max_requests})"
        )
    counters = old.counters
    if change.counters:
        counters = dict(counters)
        for name, delta in change.counters.items():
            value = counters.get(name, 0)
            if not INT64_MIN <= value + delta <= INT64_MAX:
                raise counter_overflow(name, value, delta)
            counters[name] = value + delta
    idle = old.idle_timeout if change.idle_timeout is msgspec.UNSET else change.idle_timeout
    ttl = old.ttl if change.ttl is msgspec.UNSET else change.ttl
    parent = old.parent_id if change.parent_id is msgspec.UNSET else change.parent_id
    activity = change.now if change.touch else old.last_activity_at
    requests = max(requests, 0)
    return _replace(
        old,
        state=state,
        labels=labels,
        details=details,
        counters=counters,
        idle_timeout=idle,
        ttl=ttl,
        parent_id=parent,
        active_requests=requests,
        last_activity_at=activity,
        updated_at=change.now,
        expires_at=expires_at(
            created_at=old.created_at,
            last_activity_at=activity,
            idle_timeout=idle,
            ttl=ttl,
            active_requests=requests,
        ),
        version=old.version + 1,
    )


def appended_records(
    first: int, records: Sequence[tuple[str, bytes]], now: float
) -> list[HistoryRecord]:
    """What ``history_append_many`` returns: ``records`` numbered on from ``first``."""
    return [
        HistoryRecord(seq=first + i, kind=kind, at=now, payload=msgspec.json.decode(payload))
        for i, (kind, payload) in enumerate(records)
    ]


def pop_marker(popped: int, below: int) -> bytes:
    """The payload of the marker ``history_pop`` appends."""
    return b'{"popped":%d,"below":%d}' % (popped, below)


def _marker_below(payload: bytes, seq: int) -> int | None:
    try:
        below = msgspec.json.decode(payload)["below"]
    except (*DECODE_ERRORS, AttributeError):
        return None
    return below if type(below) is int and 0 <= below < seq else None


def stack_top(
    record_at: Callable[[int], tuple[str, bytes]], seq: int, kind: str, marker: str
) -> int:
    """The ``seq`` of the top of the stack of ``kind`` records as of record ``seq`` (0: empty).

    Reading the history as a stack: a ``kind`` record pushes itself, a ``marker`` record pops
    the top, any other record empties the stack. ``history_pop`` writes in each marker the top
    it leaves (``below``), so finding the top costs a few record reads however many pops came
    before; a marker without one (appended by plain ``history_append``, e.g. over a server)
    is resolved by walking down past the records it removed. ``record_at(seq)`` gives a
    record's ``(kind, payload)``.
    """
    skip = 0
    while seq > 0:
        record_kind, payload = record_at(seq)
        if record_kind == kind:
            if not skip:
                return seq
            skip -= 1
            seq -= 1
        elif record_kind == marker:
            below = _marker_below(payload, seq)
            if below is None:
                skip += 1
                seq -= 1
            else:
                seq = below
        else:
            return 0
    return 0
