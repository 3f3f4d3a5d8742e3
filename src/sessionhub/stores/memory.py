"""The memory store: one process, fastest, nothing survives the process.

Every operation runs without an ``await`` inside, so on one event loop each is atomic by
construction. Sessions live in one dict; listings walk sorted id indexes (one per namespace, user,
parent and label value); deadlines sit in a heap with one entry per session, re-queued lazily when
activity moved the deadline later, so a touch costs no heap work and expiring k of n sessions costs
O(k log n).
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

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
from .._models import (
    DataEntry,
    EventKind,
    HistoryRecord,
    Page,
    Session,
    expires_at,
)
from ._base import Change, CreateRules, Query, Store, apply_change, ending

__all__ = ["MemoryStore"]

_replace = msgspec.structs.replace
_decode = msgspec.json.decode
_IndexKey = tuple[str, ...]
_NOTHING: SortedList[str] = SortedList()


class _History:
    __slots__ = ("counts", "records")

    def __init__(self) -> None:
        self.records: list[tuple[str, float, bytes]] = []  # seq is the position + 1
        self.counts: Counter[str] = Counter()


def _index_keys(session: Session) -> Iterator[_IndexKey]:
    yield ("ns", session.namespace)
    if session.user_id is not None:
        yield ("user", session.user_id)
    if session.parent_id is not None:
        yield ("parent", session.parent_id)
    for name, value in session.labels.items():
        yield ("label", name, value)


def _no_check(labels: Mapping[str, str]) -> None:
    pass


class MemoryStore(Store):
    ephemeral = True

    def __init__(self, *, event_buffer: int = 10_000) -> None:
        super().__init__(event_buffer=event_buffer)
        self._sessions: dict[str, Session] = {}  # live and retained
        self._indexes: dict[_IndexKey, SortedList[str]] = {}
        self._unique: dict[tuple[str, str, str], str] = {}
        self._census: Counter[tuple[str, str]] = Counter()
        self._live = 0
        self._deadlines: list[tuple[float, str]] = []
        self._retained: list[tuple[float, str]] = []
        self._data: dict[str, dict[str, tuple[bytes, int]]] = {}
        self._history: dict[str, _History] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(live={self._live})"

    # indexes

    def _index_add(self, key: _IndexKey, session_id: str) -> None:
        index = self._indexes.get(key)
        if index is None:
            index = self._indexes[key] = SortedList()
        index.add(session_id)

    def _index_remove(self, key: _IndexKey, session_id: str) -> None:
        index = self._indexes[key]
        index.remove(session_id)
        if not index:
            del self._indexes[key]

    def _live_session(self, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None or session.ended_at is not None:
            raise SessionNotFound(session_id)
        return session

    def _active_session(self, session_id: str) -> Session:
        """A live session that is not being ended: one that accepts activity."""
        session = self._live_session(session_id)
        if session.end_reason is not None:
            raise ending(session_id)
        return session

    def _schedule(self, old: Session | None, new: Session) -> None:
        # One heap entry per session suffices while deadlines only move later (claim_expired
        # re-queues those); a deadline that moved earlier needs an entry of its own.
        deadline = new.expires_at
        if deadline is not None and (
            old is None or old.expires_at is None or deadline < old.expires_at
        ):
            heapq.heappush(self._deadlines, (deadline, new.id))

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
        for name, value in session.labels.items():
            key = (session.namespace, name, value)
            if self._unique.get(key) == session.id:
                del self._unique[key]

    # sessions

    async def create(self, session: Session, rules: CreateRules) -> Session:
        sid = session.id
        if sid in self._sessions:
            raise DuplicateSession(f"session id already exists: {sid}")
        if session.parent_id is not None:
            parent = self._live_session(session.parent_id)
            if parent.end_reason is not None:
                raise SessionNotFound(parent.id, f"parent session is ending: {parent.id}")
        if rules.max_sessions is not None and self._live >= rules.max_sessions:
            raise CapacityExceeded(f"the hub holds its maximum of {rules.max_sessions} sessions")
        if rules.max_sessions_per_user is not None and session.user_id is not None:
            owned = self._indexes.get(("user", session.user_id))
            if owned is not None and len(owned) >= rules.max_sessions_per_user:
                raise QuotaExceeded(
                    f"user {session.user_id} already has {len(owned)} live sessions "
                    f"(limit {rules.max_sessions_per_user})"
                )
        self._check_unique(session.namespace, session.labels, rules.unique_labels, sid)
        self._sessions[sid] = session
        self._live += 1
        self._census[session.namespace, session.state] += 1
        for key in _index_keys(session):
            self._index_add(key, sid)
        self._hold_unique(session, rules.unique_labels)
        self._schedule(None, session)
        self.events.append(EventKind.CREATED, session.created_at, session)
        return session

    async def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def _candidates(self, query: Query, cursor: str | None) -> Iterator[str]:
        """Ids that may match, in id order after ``cursor``, from the narrowest index."""
        narrow: list[_IndexKey] = []
        if query.user_id is not None:
            narrow.append(("user", query.user_id))
        if query.parent_id is not None:
            narrow.append(("parent", query.parent_id))
        if query.labels:
            narrow.extend(("label", name, value) for name, value in query.labels.items())
        if narrow:
            indexes = [self._indexes.get(key, _NOTHING) for key in narrow]
            return iter(min(indexes, key=len).irange(cursor, None, (False, False)))
        kinds = ("ns", "ended") if query.include_ended else ("ns",)
        if query.namespace is not None:
            indexes = [self._indexes.get((kind, query.namespace), _NOTHING) for kind in kinds]
        else:
            indexes = [index for key, index in self._indexes.items() if key[0] in kinds]
        return heapq.merge(*(index.irange(cursor, None, (False, False)) for index in indexes))

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
            return len(self._indexes.get(("ns", query.namespace or ""), ()))
        if plain and query == Query(user_id=query.user_id):
            return len(self._indexes.get(("user", query.user_id or ""), ()))
        sessions = self._sessions
        return sum(
            1 for sid in self._candidates(query, None) if self._matches(sessions[sid], query)
        )

    async def census(self) -> dict[tuple[str, str], int]:
        return {key: n for key, n in self._census.items() if n}

    async def modify(self, session_id: str, change: Change) -> Session:
        old = self._live_session(session_id)
        new = apply_change(old, change, self._unique_checker(old, change))
        self._sessions[session_id] = new
        if new.labels is not old.labels or new.parent_id != old.parent_id:
            self._reindex(old, new, change.unique_labels)
        if new.state != old.state:
            self._census[old.namespace, old.state] -= 1
            self._census[new.namespace, new.state] += 1
        self._schedule(old, new)
        if change.emit is not None:
            self.events.append(change.emit, change.now, new)
        return new

    def _unique_checker(self, old: Session, change: Change) -> Callable[[Mapping[str, str]], None]:
        if change.labels is None and not change.labels_remove:
            return _no_check  # labels unchanged: nothing to check (and no closure on hot paths)

        def check(labels: Mapping[str, str]) -> None:
            self._check_unique(old.namespace, labels, change.unique_labels, old.id)

        return check

    def _reindex(self, old: Session, new: Session, unique_labels: Any) -> None:
        before, after = set(_index_keys(old)), set(_index_keys(new))
        for key in before - after:
            self._index_remove(key, old.id)
        for key in after - before:
            self._index_add(key, new.id)
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
            self._census[session.namespace, session.state] -= 1
            self._census[session.namespace, claimed.state] += 1
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
        heap, sessions = self._deadlines, self._sessions
        claimed: list[Session] = []
        while heap and heap[0][0] <= now and len(claimed) < limit:
            _, sid = heapq.heappop(heap)
            session = sessions.get(sid)
            if session is None or session.end_reason is not None or session.expires_at is None:
                continue
            if session.expires_at > now:  # activity moved the deadline: queue it again
                heapq.heappush(heap, (session.expires_at, sid))
                continue
            claimed.append(self._claim(session, "expired", now, moves))
        return claimed

    async def finish_end(
        self, session_id: str, now: float, ended_state: str, retain_until: float
    ) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None or session.ended_at is not None or session.end_reason is None:
            return None
        ended = _replace(
            session,
            state=ended_state,
            ended_at=now,
            updated_at=now,
            expires_at=None,
            active_requests=0,
            version=session.version + 1,
        )
        for key in _index_keys(session):
            self._index_remove(key, session_id)
        self._release_unique(session)
        self._live -= 1
        self._census[session.namespace, session.state] -= 1
        self.events.append(EventKind.ENDED, now, ended)
        if retain_until > now:
            self._sessions[session_id] = ended
            self._index_add(("ended", ended.namespace), session_id)
            heapq.heappush(self._retained, (retain_until, session_id))
        else:
            self._delete(session_id)
        return ended

    def _delete(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        self._data.pop(session_id, None)
        self._history.pop(session_id, None)

    async def next_deadline(self) -> float | None:
        heap, sessions = self._deadlines, self._sessions
        while heap:
            deadline, sid = heap[0]
            session = sessions.get(sid)
            if session is None or session.end_reason is not None or session.expires_at is None:
                heapq.heappop(heap)
            elif session.expires_at > deadline:
                heapq.heapreplace(heap, (session.expires_at, sid))
            else:
                return deadline
        return None

    async def purge(self, now: float) -> int:
        heap, purged = self._retained, 0
        while heap and heap[0][0] <= now:
            _, sid = heapq.heappop(heap)
            session = self._sessions.get(sid)
            if session is not None and session.ended_at is not None:
                self._index_remove(("ended", session.namespace), sid)
                self._delete(sid)
                purged += 1
        return purged

    # data

    def _readable(self, session_id: str) -> None:
        if session_id not in self._sessions:
            raise SessionNotFound(session_id)

    def _refresh(self, session_id: str, now: float) -> None:
        """Data and history writes are activity: slide the idle deadline like a touch."""
        old = self._live_session(session_id)
        new = _replace(
            old,
            last_activity_at=now,
            updated_at=now,
            expires_at=expires_at(
                created_at=old.created_at,
                last_activity_at=now,
                idle_timeout=old.idle_timeout,
                ttl=old.ttl,
                active_requests=old.active_requests,
            ),
            version=old.version + 1,
        )
        self._sessions[session_id] = new

    async def data_get(self, session_id: str, key: str) -> DataEntry | None:
        self._readable(session_id)
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

    async def data_items(self, session_id: str) -> list[DataEntry]:
        self._readable(session_id)
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
    ) -> list[HistoryRecord]:
        self._readable(session_id)
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

    async def history_counts(self, session_id: str) -> dict[str, int]:
        self._readable(session_id)
        history = self._history.get(session_id)
        return dict(history.counts) if history else {}
