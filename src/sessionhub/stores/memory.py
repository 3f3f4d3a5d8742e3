"""The memory store: one process, fastest, nothing survives the process.

Every operation runs without an ``await`` inside, so on one event loop each is atomic by
construction. The structures are chosen so that the common case costs next to nothing:

- Sessions live in one dict, id → the ``Session`` record itself (one object per session).
- A namespace's listing is a few hundred sorted runs of ids: creates append, every 4,096 new ids
  are sorted into a run, removals only count (the ids that left are dropped once they are most of
  the listing), and a read merges the runs lazily. Readers check every id against the record, so
  stale ids are harmless.
- The user, parent and label indexes map a key to its live sessions: the id itself for one
  session, a sorted list for a few, a ``SortedList`` only past ``_FEW``.
- Deadlines sit in buckets of 1/16 s (a list of ids each), and only the buckets that come due are
  poured into a heap of exact ``(deadline, id)`` entries. A touch moves a deadline later and costs
  no deadline work: the entry is re-queued when its bucket comes due. Expiring k sessions costs
  O(k log k) plus one pass over the buckets they sat in.
- Unique labels, quotas and subscribers cost nothing when the hub does not use them.
- A touch, ``incr`` or ``track_request`` changes the record in place when nothing outside the
  store holds it: CPython's refcount (the dict and the local reference, nothing else) proves that
  no caller, event in the ring, listing page or subscriber can see that snapshot, so the change
  cannot be observed (CPython's in-place ``str +=`` relies on the same fact). A record anyone
  holds is copied, so a snapshot handed out never changes; where refcounts cannot tell (not
  CPython, free-threaded builds) every change copies. A session whose ``created`` event is still
  in the ring is copied on its first touch. Measured on a busy 2-core machine (CPU time, best of
  3 runs, 20k sessions touched in a shuffled order): a touch of a record nobody holds 2.1-3.0 us
  before, 1.6-2.2 us after (cache misses: a copy allocates 168 bytes, raises the count of each of
  19 fields and frees the old record); a first touch after creation (half of them pinned by the
  ring) unchanged within the noise; one hot record ~750 ns either way (four ``force_setattr``
  cost what one ``replace`` does; cachegrind: 6.7k instructions per first touch before, 6.5k
  after). ``track_request`` enter + exit 12-16 us before, 8.5-12.5 us after (with ``_hub``'s
  context manager class).
"""

from __future__ import annotations

import heapq
import itertools
import sys
import sysconfig
from bisect import bisect_left, bisect_right, insort
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeAlias

import msgspec
from sortedcontainers import SortedList

from .._errors import (
    CapacityExceeded,
    DuplicateSession,
    QuotaExceeded,
    SessionNotFound,
    VersionConflict,
    quoted,
    shortened,
)
from .._limits import INT64_MAX, INT64_MIN
from .._models import (
    DataEntry,
    EventKind,
    HistoryRecord,
    Page,
    ReadOnlyDict,
    Session,
    expires_at,
)
from ._base import (
    Change,
    CreateRules,
    Query,
    Store,
    accepting_activity,
    appended_records,
    apply_change,
    ended_record,
    ending,
    live_session,
    pop_marker,
    refreshed,
    stack_top,
)

__all__ = ["MemoryStore"]

_replace = msgspec.structs.replace
_decode = msgspec.json.decode
_set = msgspec.structs.force_setattr


def _alone_count() -> int | None:
    """What ``sys.getrefcount(old)`` reads in ``touch`` when the store's dict and the local ``old``
    are the only references to a record, measured the same way (the figure depends on the
    interpreter's version); ``None`` where refcounts cannot tell (not CPython, or a
    free-threaded build whose counts are split between threads)."""
    if sys.implementation.name != "cpython" or sysconfig.get_config_var("Py_GIL_DISABLED"):
        return None
    sessions = {
        "probe": Session(
            id="probe", state="probe", created_at=0.0, updated_at=0.0, last_activity_at=0.0
        )
    }
    old = sessions.get("probe")
    return sys.getrefcount(old)


#: See ``_alone_count`` and ``MemoryStore._touch_function``.
_ALONE = _alone_count()


def _no_count(_: object) -> int:
    return -1  # never ``_ALONE``: every touch copies


_getrefcount = sys.getrefcount if _ALONE is not None else _no_count  # (PyPy has none)
_UNSET = msgspec.UNSET


def _activity_only(change: Change) -> bool:
    """Whether ``change`` only counts activity: a touch, counter increments and requests in
    flight (what ``incr`` and ``track_request`` send), no event."""
    return (
        change.emit is None
        and change.expected_version is None
        and change.moves is None
        and change.labels is None
        and change.details is None
        and not change.labels_remove
        and not change.details_remove
        and change.idle_timeout is _UNSET
        and change.ttl is _UNSET
        and change.parent_id is _UNSET
    )


#: The live sessions under one index key: the id alone, a few in a sorted list, or many.
_Members: TypeAlias = "str | list[str] | SortedList[str]"
_FEW = 64  # past this many, a key's ids move to a SortedList
_SLOTS = 16  # deadline buckets per second
_RUN = 4096  # a namespace listing sorts its new ids this many at a time
_MAX_RUNS = 1024  # past this many sorted runs, a listing merges them into one
_LABEL_SETS = 4096  # distinct label mappings shared at most (past this, the cache starts over)


class _History:
    __slots__ = ("counts", "records")

    def __init__(self) -> None:
        self.records: list[tuple[str, float, bytes]] = []  # seq is the position + 1
        self.counts: Counter[str] = Counter()


def _add(index: dict[str, _Members], key: str, session_id: str) -> None:
    members = index.get(key)
    if members is None:
        index[key] = session_id
    elif isinstance(members, str):
        index[key] = sorted((members, session_id))
    elif isinstance(members, list):
        insort(members, session_id)
        if len(members) > _FEW:
            index[key] = SortedList(members)
    else:
        members.add(session_id)


def _remove(index: dict[str, _Members], key: str, session_id: str) -> None:
    members = index[key]
    if isinstance(members, str):
        del index[key]
    elif isinstance(members, list):
        del members[bisect_left(members, session_id)]
        if len(members) == 1:
            index[key] = members[0]
    else:
        members.remove(session_id)
        if len(members) <= _FEW // 2:
            index[key] = list(members)


def _size(members: _Members | None) -> int:
    return 0 if members is None else 1 if type(members) is str else len(members)


def _after(members: _Members, cursor: str | None) -> Iterator[str]:
    """The ids of ``members`` past ``cursor``, in id order."""
    if type(members) is str:
        return iter(() if cursor is not None and members <= cursor else (members,))
    if type(members) is list:
        start = 0 if cursor is None else bisect_right(members, cursor)
        return itertools.islice(members, start, None)
    assert isinstance(members, SortedList)
    return iter(members.irange(cursor, None, (False, False)))


class _Listing:
    """The ids of one namespace's sessions (live and retained), in sorted runs.

    Creates append to ``fresh``, and every ``_RUN`` ids are sorted into a run of their own: a
    create costs an append and a share of one small sort, never a sorted insert, and a read merges
    the runs lazily (a page costs one bisection per run, and a few hundred runs hold a million
    ids). A session that leaves only bumps ``stale``; once most ids are stale, each run keeps only
    the ids still in the namespace. An id may appear twice (deleted, then created again): readers
    skip repeats and check every id against its record.
    """

    __slots__ = ("fresh", "runs", "stale")

    def __init__(self) -> None:
        self.runs: list[list[str]] = []
        self.fresh: list[str] = []
        self.stale = 0

    def seal(self) -> None:
        """Sort the fresh ids into a run (and merge the runs once there are too many)."""
        if self.fresh:
            self.fresh.sort()
            self.runs.append(self.fresh)
            self.fresh = []
            if len(self.runs) > _MAX_RUNS:
                self.runs = [list(heapq.merge(*self.runs))]

    def drop(self, belongs: Callable[[str], bool]) -> None:
        self.stale += 1
        if self.stale > _RUN and 2 * self.stale > self._size():
            self._compact(belongs)

    def after(self, cursor: str | None, belongs: Callable[[str], bool]) -> Iterator[str]:
        """The ids past ``cursor`` in id order, each once (stale ones included)."""
        self.seal()
        if self.stale > 64 and 2 * self.stale > self._size():
            self._compact(belongs)
        tails = [
            itertools.islice(run, 0 if cursor is None else bisect_right(run, cursor), None)
            for run in self.runs
        ]
        return _once(tails[0] if len(tails) == 1 else heapq.merge(*tails))

    def _size(self) -> int:
        return sum(map(len, self.runs)) + len(self.fresh)

    def _compact(self, belongs: Callable[[str], bool]) -> None:
        self.seal()
        runs = ([sid for sid in run if belongs(sid)] for run in self.runs)  # still sorted
        self.runs = [run for run in runs if run]
        self.stale = 0


def _once(ids: Iterable[str]) -> Iterator[str]:
    """Sorted ids without repeats."""
    last = None
    for sid in ids:
        if sid != last:
            yield sid
            last = sid


def _no_check(labels: Mapping[str, str]) -> None:
    pass


class MemoryStore(Store):
    ephemeral = True

    def __init__(self, *, event_buffer: int = 10_000) -> None:
        super().__init__(event_buffer=event_buffer)
        self._sessions: dict[str, Session] = {}  # live and retained
        self._listings: dict[str, _Listing] = {}  # namespace → its ids
        self._by_user: dict[str, _Members] = {}
        self._by_parent: dict[str, _Members] = {}
        self._by_label: dict[str, dict[str, _Members]] = {}  # name → value → ids
        self._unique: dict[tuple[str, str, str], str] = {}
        self._label_sets: dict[tuple[tuple[str, str], ...], ReadOnlyDict] = {}
        self._census: dict[str, dict[str, int]] = {}  # namespace → state → live sessions
        self._live = 0
        self._buckets: dict[int, list[str]] = {}  # int(deadline * _SLOTS) → ids
        self._bucket_keys: list[int] = []  # heap of the keys of ``_buckets``
        self._poured = -1  # buckets up to this key have been poured into ``_due``
        self._due: list[tuple[float, str]] = []  # heap of exact deadlines
        self._fill: list[str] = []  # the bucket last scheduled into, and the deadlines it takes
        self._fill_from, self._fill_until = 0.0, 0.0
        self._retained: list[tuple[float, str]] = []
        self._retain_until: dict[str, float] = {}  # ended id → end of its retention
        self._data: dict[str, dict[str, tuple[bytes, int]]] = {}
        self._history: dict[str, _History] = {}
        self.create_now = self._create
        self.get_now = self._sessions.get
        self.touch_now = self._touch_function()

    def __repr__(self) -> str:
        return f"MemoryStore(live={self._live})"

    # indexes

    def _index(self, session: Session) -> None:
        """Enter a live session in the user, parent and label indexes."""
        sid = session.id
        if session.user_id is not None:
            _add(self._by_user, session.user_id, sid)
        if session.parent_id is not None:
            _add(self._by_parent, session.parent_id, sid)
        for name, value in session.labels.items():
            _add(self._by_label.setdefault(name, {}), value, sid)

    def _unindex(self, session: Session) -> None:
        sid = session.id
        if session.user_id is not None:
            _remove(self._by_user, session.user_id, sid)
        if session.parent_id is not None:
            _remove(self._by_parent, session.parent_id, sid)
        for name, value in session.labels.items():
            self._unlabel(name, value, sid)

    def _unlabel(self, name: str, value: str, session_id: str) -> None:
        values = self._by_label[name]
        _remove(values, value, session_id)
        if not values:
            del self._by_label[name]

    def _count_state(self, namespace: str, state: str, delta: int) -> None:
        states = self._census.get(namespace)
        if states is None:
            states = self._census[namespace] = {}
        states[state] = states.get(state, 0) + delta

    def _belongs_to(self, namespace: str) -> Callable[[str], bool]:
        sessions = self._sessions

        def belongs(session_id: str) -> bool:
            session = sessions.get(session_id)
            return session is not None and session.namespace == namespace

        return belongs

    def _unlist(self, session: Session) -> None:
        """The session's record is gone: its id in the namespace listing is stale now."""
        self._listings[session.namespace].drop(self._belongs_to(session.namespace))

    def _live_session(self, session_id: str) -> Session:
        return live_session(self._sessions.get(session_id), session_id)

    def _active_session(self, session_id: str) -> Session:
        return accepting_activity(self._sessions.get(session_id), session_id)

    # deadlines

    def _schedule(self, deadline: float, session_id: str) -> None:
        if self._fill_from <= deadline < self._fill_until:
            self._fill.append(session_id)
            return
        key = int(deadline * _SLOTS)
        if key <= self._poured:
            heapq.heappush(self._due, (deadline, session_id))
            return
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = []
            heapq.heappush(self._bucket_keys, key)
        bucket.append(session_id)
        # Deadlines come in runs (now + the same idle timeout): the next one likely lands here.
        # key / _SLOTS is exact, so this range is exactly the bucket's.
        self._fill, self._fill_from, self._fill_until = bucket, key / _SLOTS, (key + 1) / _SLOTS

    def _rescheduled(self, old: Session, new: Session) -> None:
        # Every live session with a deadline has an entry at or before it. A deadline that moved
        # later keeps its entry (re-queued when it comes due); one that moved earlier needs one.
        deadline = new.expires_at
        if deadline is not None and (old.expires_at is None or deadline < old.expires_at):
            self._schedule(deadline, new.id)

    def _pour(self, key: int) -> None:
        """Move the entries of every bucket up to ``key`` into the exact heap."""
        keys, buckets, sessions = self._bucket_keys, self._buckets, self._sessions
        self._poured = max(self._poured, key)
        if self._fill_from * _SLOTS <= self._poured:
            self._fill_from, self._fill_until = 0.0, 0.0  # that bucket is about to be poured
        while keys and keys[0] <= key:
            for sid in buckets.pop(heapq.heappop(keys)):
                session = sessions.get(sid)
                if session is not None and session.expires_at is not None:
                    self._schedule(session.expires_at, sid)

    def _due_session(self, deadline: float, session_id: str) -> Session | None:
        """The session of a heap entry for ``deadline`` if it is live, unclaimed and its deadline
        is still that one (or earlier); an entry whose deadline moved later is queued again at
        its new place, so sessions are claimed in the order of their real deadlines."""
        session = self._sessions.get(session_id)
        if session is None or session.end_reason is not None or session.expires_at is None:
            return None
        if session.expires_at > deadline:
            self._schedule(session.expires_at, session_id)
            return None
        return session

    def _shared(self, labels: Mapping[str, str]) -> ReadOnlyDict:
        """One read-only mapping for all sessions created with these labels: most sessions carry
        one of a few label sets, and a dict per session would be a third of its memory."""
        key = tuple(labels.items())
        shared = self._label_sets.get(key)
        if shared is None:
            if len(self._label_sets) >= _LABEL_SETS:
                self._label_sets.clear()
            shared = self._label_sets[key] = ReadOnlyDict(labels)
        return shared

    # unique labels

    def _check_unique(
        self, namespace: str, labels: Mapping[str, str], names: Any, session_id: str
    ) -> None:
        for name in names:
            value = labels.get(name)
            if value is None:
                continue
            holder = self._unique.get((namespace, name, value))
            if holder is not None and holder != session_id:
                raise DuplicateSession(
                    f"label {shortened(name)}={shortened(value)} is held by live session {holder} in {namespace}"
                )

    def _hold_unique(self, session: Session, names: Any) -> None:
        for name in names:
            value = session.labels.get(name)
            if value is not None:
                self._unique[session.namespace, name, value] = session.id

    def _release_unique(self, session: Session) -> None:
        if not self._unique:
            return
        for name, value in session.labels.items():
            key = (session.namespace, name, value)
            if self._unique.get(key) == session.id:
                del self._unique[key]

    # sessions

    async def create(self, session: Session, rules: CreateRules) -> Session:
        return self._create(session, rules)

    def _create(self, session: Session, rules: CreateRules) -> Session:
        sid = session.id
        sessions = self._sessions
        if sid in sessions:
            raise DuplicateSession(f"session id already exists: {sid}")
        if session.parent_id is not None:
            parent = self._live_session(session.parent_id)
            if parent.end_reason is not None:
                raise SessionNotFound(parent.id, f"parent session is ending: {parent.id}")
        if rules.max_sessions is not None and self._live >= rules.max_sessions:
            raise CapacityExceeded(f"the hub holds its maximum of {rules.max_sessions} sessions")
        user = session.user_id
        if rules.max_sessions_per_user is not None and user is not None:
            owned = _size(self._by_user.get(user))
            if owned >= rules.max_sessions_per_user:
                raise QuotaExceeded(
                    f"user {user} already has {owned} live sessions "
                    f"(limit {rules.max_sessions_per_user})"
                )
        unique = rules.unique_labels
        if session.labels:
            if unique:
                self._check_unique(session.namespace, session.labels, unique, sid)
            session = _replace(session, labels=self._shared(session.labels))
        sessions[sid] = session
        self._live += 1
        namespace = session.namespace
        states = self._census.get(namespace)  # _count_state(namespace, state, 1), inlined
        if states is None:
            states = self._census[namespace] = {}
        states[session.state] = states.get(session.state, 0) + 1
        listing = self._listings.get(namespace)
        if listing is None:
            listing = self._listings[namespace] = _Listing()
        fresh = listing.fresh
        fresh.append(sid)
        if len(fresh) >= _RUN:
            listing.seal()
        if user is not None:
            by_user = self._by_user
            if user in by_user:
                _add(by_user, user, sid)
            else:  # a user's first session: the id alone, no container (_add's common case)
                by_user[user] = sid
        if session.parent_id is not None or session.labels:
            if session.parent_id is not None:
                _add(self._by_parent, session.parent_id, sid)
            for name, value in session.labels.items():
                _add(self._by_label.setdefault(name, {}), value, sid)
            if unique:
                self._hold_unique(session, unique)
        deadline = session.expires_at
        if deadline is not None:
            if self._fill_from <= deadline < self._fill_until:
                self._fill.append(sid)
            else:
                self._schedule(deadline, sid)
        self.events.append(EventKind.CREATED, session.created_at, session)
        return session

    async def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def _candidates(self, query: Query, cursor: str | None) -> Iterator[str]:
        """Ids that may match, in id order after ``cursor``, from the narrowest index."""
        narrow: list[_Members | None] = []
        if query.user_id is not None:
            narrow.append(self._by_user.get(query.user_id))
        if query.parent_id is not None:
            narrow.append(self._by_parent.get(query.parent_id))
        if query.labels:
            narrow.extend(
                self._by_label.get(name, {}).get(value) for name, value in query.labels.items()
            )
        if narrow:
            smallest = min(narrow, key=_size)
            return iter(()) if smallest is None else _after(smallest, cursor)
        if query.namespace is not None:
            names: Iterable[str] = (query.namespace,)
        else:
            names = list(self._listings)
        listed = [
            self._listings[name].after(cursor, self._belongs_to(name))
            for name in names
            if name in self._listings
        ]
        # An id deleted from one namespace and created again in another is in both listings.
        return listed[0] if len(listed) == 1 else _once(heapq.merge(*listed))

    @staticmethod
    def _matches(session: Session, query: Query) -> bool:
        return (
            (query.namespace is None or session.namespace == query.namespace)
            and (query.user_id is None or session.user_id == query.user_id)
            and (query.parent_id is None or session.parent_id == query.parent_id)
            and (query.state is None or session.state == query.state)
            and (query.include_ended or session.ended_at is None)
            and (
                not query.labels or all(session.labels.get(k) == v for k, v in query.labels.items())
            )
        )

    async def find(self, query: Query, *, limit: int, cursor: str | None) -> Page:
        sessions = self._sessions
        matching = (
            session
            for sid in self._candidates(query, cursor)
            if (session := sessions.get(sid)) is not None and self._matches(session, query)
        )
        items = list(itertools.islice(matching, limit + 1))
        more = len(items) > limit
        del items[limit:]
        return Page(items=items, cursor=items[-1].id if more else None)

    async def count(self, query: Query) -> int:
        plain = query.state is None and not query.include_ended
        if plain and query == Query():
            return self._live
        if plain and query == Query(namespace=query.namespace):
            return sum(self._census.get(query.namespace or "", {}).values())
        if plain and query == Query(user_id=query.user_id):
            return _size(self._by_user.get(query.user_id or ""))
        sessions = self._sessions
        return sum(
            1
            for sid in self._candidates(query, None)
            if (session := sessions.get(sid)) is not None and self._matches(session, query)
        )

    async def census(self) -> dict[tuple[str, str], int]:
        return {
            (namespace, state): n
            for namespace, states in self._census.items()
            for state, n in states.items()
            if n
        }

    def _touch_function(self) -> Callable[[str, float], Session]:
        """``touch_now``: ``modify`` with ``Change(now=now, touch=True)``, without building the
        change (and under the same rules: a session ended or being ended accepts no touch).

        A closure, not a method: the hottest write reads its dict and helpers from cells, not
        through ``self``.

        A record nothing outside the store can see is refreshed in place. When the dict and the
        local ``old`` hold the only references (CPython's refcount says so, as it does for an
        in-place ``str +=``), no caller, event in the ring, listing page or subscriber holds this
        snapshot, so changing it cannot be observed: a ``Session`` has no weak references and
        the fields set are immutable floats and ints (never a mapping changed in place).
        Otherwise the record is copied, as every snapshot handed out must stay as it was. On a
        cold record (20k sessions touched in a shuffled order) the copy's cost is cache misses:
        a 19-field record allocated, every field's reference count raised, the old one freed.
        """
        sessions, replace, schedule, alone = self._sessions, _replace, self._schedule, _ALONE
        getrefcount, set_ = _getrefcount, _set

        def touch(session_id: str, now: float) -> Session:
            old = sessions.get(session_id)
            if old is None or old.ended_at is not None or old.end_reason is not None:
                if old is None or old.ended_at is not None:
                    raise SessionNotFound(session_id)
                raise ending(session_id)
            idle = old.idle_timeout
            if idle is not None and not old.active_requests:  # the common case of expires_at()
                soonest = now + idle
                ttl = old.ttl
                if ttl is not None and old.created_at + ttl < soonest:
                    soonest = old.created_at + ttl
                deadline: float | None = soonest
            else:
                deadline = expires_at(
                    created_at=old.created_at,
                    last_activity_at=now,
                    idle_timeout=idle,
                    ttl=old.ttl,
                    active_requests=old.active_requests,
                )
            previous = old.expires_at
            if getrefcount(old) == alone:
                set_(old, "version", old.version + 1)
                set_(old, "last_activity_at", now)
                set_(old, "updated_at", now)
                set_(old, "expires_at", deadline)
                new = old
            else:
                sessions[session_id] = new = replace(
                    old,
                    last_activity_at=now,
                    updated_at=now,
                    expires_at=deadline,
                    version=old.version + 1,
                )
            if deadline is not None and (previous is None or deadline < previous):
                schedule(deadline, session_id)
            return new

        return touch

    async def modify(self, session_id: str, change: Change) -> Session:
        old = self._live_session(session_id)
        # A record nothing else holds takes an activity-only change (incr, track_request) in
        # place, as a touch does (see _touch_function); the refcount is read before any call.
        if (
            _getrefcount(old) == _ALONE
            and _activity_only(change)
            and self._counted_in_place(old, change)
        ):
            return old
        new = apply_change(old, change, self._unique_checker(old, change))
        self._sessions[session_id] = new
        if new.labels is not old.labels or new.parent_id != old.parent_id:
            self._reindex(old, new, change.unique_labels)
        if new.state != old.state:
            self._count_state(old.namespace, old.state, -1)
            self._count_state(new.namespace, new.state, 1)
        self._rescheduled(old, new)
        if change.emit is not None:
            self.events.append(change.emit, change.now, new)
        return new

    def _counted_in_place(self, old: Session, change: Change) -> bool:
        """``apply_change`` of an activity-only change, made to ``old`` itself; False (nothing
        changed) when the change is refused, for ``apply_change`` to raise the error."""
        if old.end_reason is not None:
            return False
        requests = old.active_requests + change.requests
        if (
            change.requests > 0
            and change.max_requests is not None
            and requests > change.max_requests
        ):
            return False
        counters = old.counters
        if change.counters:
            counters = dict(counters)  # a new mapping: one a caller holds never changes
            for name, delta in change.counters.items():
                value = counters.get(name, 0) + delta
                if not INT64_MIN <= value <= INT64_MAX:
                    return False
                counters[name] = value
        requests = max(requests, 0)
        activity = change.now if change.touch else old.last_activity_at
        deadline = expires_at(
            created_at=old.created_at,
            last_activity_at=activity,
            idle_timeout=old.idle_timeout,
            ttl=old.ttl,
            active_requests=requests,
        )
        previous = old.expires_at
        _set(old, "counters", counters)
        _set(old, "active_requests", requests)
        _set(old, "last_activity_at", activity)
        _set(old, "updated_at", change.now)
        _set(old, "expires_at", deadline)
        _set(old, "version", old.version + 1)
        if deadline is not None and (previous is None or deadline < previous):
            self._schedule(deadline, old.id)  # _rescheduled: the deadline moved earlier
        return True

    def _unique_checker(self, old: Session, change: Change) -> Callable[[Mapping[str, str]], None]:
        if change.labels is None and not change.labels_remove:
            return _no_check  # labels unchanged: nothing to check (and no closure on hot paths)

        def check(labels: Mapping[str, str]) -> None:
            self._check_unique(old.namespace, labels, change.unique_labels, old.id)

        return check

    def _reindex(self, old: Session, new: Session, unique_labels: Any) -> None:
        sid = old.id
        if new.parent_id != old.parent_id:
            if old.parent_id is not None:
                _remove(self._by_parent, old.parent_id, sid)
            if new.parent_id is not None:
                _add(self._by_parent, new.parent_id, sid)
        if new.labels is not old.labels:
            for name, value in old.labels.items():
                if new.labels.get(name) != value:
                    self._unlabel(name, value, sid)
            for name, value in new.labels.items():
                if old.labels.get(name) != value:
                    _add(self._by_label.setdefault(name, {}), value, sid)
            self._release_unique(old)
            self._hold_unique(new, unique_labels)

    def _claim(
        self, session: Session, reason: str, now: float, moves: Mapping[str, str]
    ) -> Session:
        claimed = _replace(
            session,
            state=moves.get(session.state, session.state),
            end_reason=reason,
            updated_at=now,
            version=session.version + 1,
        )
        self._sessions[session.id] = claimed
        if claimed.state != session.state:
            self._count_state(session.namespace, session.state, -1)
            self._count_state(session.namespace, claimed.state, 1)
        self.events.append(EventKind.TRANSITIONED, now, claimed)
        return claimed

    async def claim_end(
        self, session_id: str, reason: str, now: float, moves: Mapping[str, str]
    ) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None or session.ended_at is not None or session.end_reason is not None:
            return None
        return self._claim(session, reason, now, moves)

    async def claim_expired(
        self, now: float, moves: Mapping[str, str], limit: int
    ) -> list[Session]:
        self._pour(int(now * _SLOTS))
        heap = self._due
        claimed: list[Session] = []
        while heap and heap[0][0] <= now and len(claimed) < limit:
            deadline, sid = heapq.heappop(heap)
            session = self._due_session(deadline, sid)
            if session is not None:
                claimed.append(self._claim(session, "expired", now, moves))
        return claimed

    async def finish_end(
        self, session_id: str, now: float, ended_state: str, retain_until: float
    ) -> Session | None:
        return self._finish_end(session_id, now, ended_state, retain_until)

    async def finish_ends(
        self, ends: Sequence[tuple[str, float]], now: float, ended_state: str
    ) -> list[Session | None]:
        finish = self._finish_end
        return [finish(sid, now, ended_state, until) for sid, until in ends]

    async def having_children(self, session_ids: Sequence[str]) -> set[str]:
        by_parent = self._by_parent
        return {sid for sid in session_ids if _size(by_parent.get(sid))}

    def _finish_end(
        self, session_id: str, now: float, ended_state: str, retain_until: float
    ) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None or session.ended_at is not None or session.end_reason is None:
            return None
        ended = ended_record(session, now, ended_state, retain_until)
        self._unindex(session)
        self._release_unique(session)
        self._live -= 1
        self._count_state(session.namespace, session.state, -1)
        self.events.append(EventKind.ENDED, now, ended)
        if retain_until > now:
            self._sessions[session_id] = ended  # still listed, with include_ended
            heapq.heappush(self._retained, (retain_until, session_id))
            self._retain_until[session_id] = retain_until
        else:
            self._delete(session)
        return ended

    def _delete(self, session: Session) -> None:
        sid = session.id
        del self._sessions[sid]
        self._retain_until.pop(sid, None)
        self._unlist(session)
        self._data.pop(sid, None)
        self._history.pop(sid, None)

    async def next_deadline(self) -> float | None:
        heap = self._due
        while True:
            while heap:
                deadline, sid = heap[0]
                session = self._sessions.get(sid)
                if session is None or session.end_reason is not None or session.expires_at is None:
                    heapq.heappop(heap)
                elif session.expires_at > deadline:  # moved later: queue it where it belongs now
                    heapq.heappop(heap)
                    self._schedule(session.expires_at, sid)
                else:
                    return deadline
            if not self._bucket_keys:
                return None
            self._pour(self._bucket_keys[0])  # the earliest bucket holds the next deadline

    async def purge(self, now: float) -> int:
        heap, purged = self._retained, 0
        while heap and heap[0][0] <= now:
            _, sid = heapq.heappop(heap)
            session = self._sessions.get(sid)
            if session is not None and session.ended_at is not None:
                self._delete(session)
                purged += 1
        return purged

    # data

    def _readable(self, session_id: str, now: float) -> None:
        session = self._sessions.get(session_id)
        if session is None or (
            session.ended_at is not None and self._retain_until[session_id] <= now
        ):
            raise SessionNotFound(session_id)

    def _refresh(self, session_id: str, now: float) -> None:
        """Data and history writes are activity: slide the idle deadline like a touch."""
        self._sessions[session_id] = refreshed(self._live_session(session_id), now)

    async def data_get(self, session_id: str, key: str, now: float) -> DataEntry | None:
        self._readable(session_id, now)
        item = self._data.get(session_id, {}).get(key)
        if item is None:
            return None
        return DataEntry(key=key, value=_decode(item[0]), version=item[1])

    def _check_data_version(
        self, session_id: str, key: str, current: int, expected: int | None
    ) -> None:
        if expected is not None and expected != current:
            raise VersionConflict(
                f"data key {quoted(key)} of session {session_id} is at version {current}, not {expected}"
            )

    async def data_set(
        self, session_id: str, key: str, value: bytes, expected_version: int | None, now: float
    ) -> DataEntry:
        self._active_session(session_id)
        data = self._data.setdefault(session_id, {})
        current = data.get(key, (b"", 0))[1]
        self._check_data_version(session_id, key, current, expected_version)
        data[key] = (value, current + 1)
        self._refresh(session_id, now)
        return DataEntry(key=key, value=_decode(value), version=current + 1)

    async def data_delete(
        self, session_id: str, key: str, expected_version: int | None, now: float
    ) -> bool:
        self._active_session(session_id)
        data = self._data.get(session_id, {})
        if key not in data:
            self._check_data_version(session_id, key, 0, expected_version)
            return False
        self._check_data_version(session_id, key, data[key][1], expected_version)
        del data[key]
        self._refresh(session_id, now)
        return True

    async def data_items(self, session_id: str, now: float) -> list[DataEntry]:
        self._readable(session_id, now)
        data = self._data.get(session_id, {})
        return [
            DataEntry(key=key, value=_decode(raw), version=version)
            for key, (raw, version) in sorted(data.items())
        ]

    # history

    async def history_append(
        self, session_id: str, kind: str, payload: bytes, now: float
    ) -> HistoryRecord:
        self._active_session(session_id)
        history = self._history.get(session_id)
        if history is None:
            history = self._history[session_id] = _History()
        history.records.append((kind, now, payload))
        history.counts[kind] += 1
        self._refresh(session_id, now)
        return HistoryRecord(seq=len(history.records), kind=kind, at=now, payload=_decode(payload))

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
        self._readable(session_id, now)
        history = self._history.get(session_id)
        if history is None:
            return []
        records = history.records
        if newest_first:
            start = len(records) if after is None else min(after - 1, len(records))
            positions: Iterator[int] = iter(range(start - 1, -1, -1))
        else:
            positions = iter(range(after or 0, len(records)))
        out: list[HistoryRecord] = []
        for i in positions:
            record_kind, at, payload = records[i]
            if kind is None or record_kind == kind:
                out.append(
                    HistoryRecord(seq=i + 1, kind=record_kind, at=at, payload=_decode(payload))
                )
                if len(out) >= limit:
                    break
        return out

    async def history_counts(self, session_id: str, now: float) -> dict[str, int]:
        self._readable(session_id, now)
        history = self._history.get(session_id)
        return dict(history.counts) if history else {}

    async def history_append_many(
        self, session_id: str, records: Sequence[tuple[str, bytes]], now: float
    ) -> list[HistoryRecord]:
        self._active_session(session_id)
        if not records:
            return []
        history = self._history.get(session_id)
        if history is None:
            history = self._history[session_id] = _History()
        first = len(history.records) + 1
        for kind, payload in records:
            history.records.append((kind, now, payload))
            history.counts[kind] += 1
        self._refresh(session_id, now)
        return appended_records(first, records, now)

    async def history_pop(
        self, session_id: str, kind: str, marker: str, now: float
    ) -> HistoryRecord | None:
        self._active_session(session_id)
        history = self._history.get(session_id)
        if history is None:
            return None
        records = history.records

        def record_at(seq: int) -> tuple[str, bytes]:
            record_kind, _, payload = records[seq - 1]
            return record_kind, payload

        top = stack_top(record_at, len(records), kind, marker)
        if not top:
            return None
        below = stack_top(record_at, top - 1, kind, marker)
        records.append((marker, now, pop_marker(top, below)))
        history.counts[marker] += 1
        self._refresh(session_id, now)
        _, at, payload = records[top - 1]
        return HistoryRecord(seq=top, kind=kind, at=at, payload=_decode(payload))
