"""Morgan's live ``Session`` object, and the link that carries its writes to the hub.

Morgan's methods and attribute writes are synchronous; the hub is async. A bound ``Session`` applies
every write to itself at once (so the caller reads back what it wrote) and tells its ``_Link``, which
asks the manager to run ``sync()`` on the loop soon. ``sync()`` pushes what changed since the last
sync to the hub, then pulls the hub's record back, so the hub stays the source of truth. The manager
also syncs before answering about a session and at every cleanup interval (that catches in-place
changes no method sees, such as ``session.metadata["cart"]["items"].append(...)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec

from .._errors import (
    PayloadTooLarge,
    SessionHubError,
    SessionNotFound,
    ValidationError,
    VersionConflict,
)
from .._hub import SessionHub
from .._models import Session as HubSession

__all__ = ["CONNECTION_COUNTER", "CONVERSATION_LABEL", "Session"]

logger = logging.getLogger("sessionhub.compat.morgan")

#: The hub label that holds a session's ``conversation_id``.
CONVERSATION_LABEL = "conversation_id"
#: The hub counter that holds a session's ``connection_count``.
CONNECTION_COUNTER = "connection_count"

# The shortest idle timeout the hub is given for a session whose last_activity was moved so far
# back that it is already past its timeout: it is due at once.
_MIN_IDLE = 1e-6
# Attributes whose writes reach the hub; session_id, user_id and created_at are fixed there.
_SYNCED = frozenset(
    {"conversation_id", "last_activity", "metadata", "connection_count", "active_requests"}
)

_canonical = msgspec.json.Encoder(order="sorted")
_NOTHING = object()
Activity = Literal["touch", "set"] | None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def to_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


@dataclass
class Session:
    """A client session, as Morgan has it: one mutable object per session, shared by the manager
    and its callers. Bound to a manager, its activity, requests, metadata, ``connection_count`` and
    ``conversation_id`` are the hub's (see ``sessionhub.compat.morgan``); unbound, a plain object."""

    session_id: str
    user_id: str | None = None
    conversation_id: str | None = None
    created_at: datetime = field(default_factory=_utcnow)
    last_activity: datetime = field(default_factory=_utcnow)
    metadata: dict[str, Any] = field(default_factory=dict)
    connection_count: int = 0
    active_requests: set[str] = field(default_factory=set)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        link = self._link()
        if link is not None and name in _SYNCED:
            link.changed("set" if name == "last_activity" else None)

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles are plain objects, bound to no manager."""
        state = dict(self.__dict__)
        state.pop("_hub_link", None)
        return state

    def _link(self) -> _Link | None:
        link: _Link | None = self.__dict__.get("_hub_link")
        return link

    def _now(self) -> datetime:
        link = self._link()
        return _utcnow() if link is None else to_datetime(link.hub.clock())

    def update_activity(self) -> None:
        """Update last activity timestamp (the hub's activity too: the idle timeout restarts)."""
        object.__setattr__(self, "last_activity", self._now())
        link = self._link()
        if link is not None:
            link.changed("touch")

    def is_expired(self, timeout_minutes: float) -> bool:
        """Whether the last activity is more than ``timeout_minutes`` ago (by the hub's clock)."""
        return self._now() - self.last_activity > timedelta(minutes=timeout_minutes)

    def add_request(self, request_id: str) -> None:
        """Add an active request: the hub counts it, and the session does not expire meanwhile."""
        self.active_requests.add(request_id)
        self.update_activity()

    def remove_request(self, request_id: str) -> None:
        """Remove a completed request (the hub releases it)."""
        self.active_requests.discard(request_id)
        self.update_activity()

    def has_active_requests(self) -> bool:
        """Whether requests are in flight: this object's, or others the hub counted at the last
        sync (tracked by another manager over the same store)."""
        link = self._link()
        return len(self.active_requests) > 0 or (link is not None and link.elsewhere > 0)


class _Link:
    """One bound ``Session``'s way to its hub record: what was last synced, and the request leases
    (one ``hub.track_request`` held open per id in ``active_requests``)."""

    def __init__(
        self,
        hub: SessionHub,
        session: Session,
        record: HubSession,
        timeout: float,
        schedule: Callable[[_Link], None],
    ) -> None:
        self.hub = hub
        self.session = session
        self.timeout = timeout
        self._schedule = schedule
        self.lock = asyncio.Lock()
        self.dirty = False
        self.activity: Activity = None
        self.leases: dict[str, contextlib.AbstractAsyncContextManager[HubSession]] = {}
        self.elsewhere = 0
        self._details = b"{}"
        self._rejected: bytes | None = None
        self._unencodable = False
        self._count = 0
        self._conversation: str | None = None
        self._refused_conversation: object = _NOTHING
        self._activity_at = 0.0
        self._pull(record)
        session.__dict__["_hub_link"] = self

    @property
    def session_id(self) -> str:
        return self.session.session_id

    def changed(self, activity: Activity) -> None:
        """A write to the session (from any thread): sync it soon."""
        if activity is not None:
            self.activity = activity
        if not self.dirty:
            self.dirty = True
            self._schedule(self)

    async def sync(self) -> HubSession | None:
        """Push this object's changes, pull the hub's record; ``None`` once the session is gone."""
        async with self.lock:
            self.dirty = False
            activity, self.activity = self.activity, None
            try:
                record = await self._push(activity)
            except SessionNotFound:
                return None
            except BaseException:
                if self.activity is None:  # not pushed: the next sync tries again
                    self.activity = activity
                raise
            if not record.live or record.end_reason is not None:
                return None
            self._pull(record, keep_activity=activity == "set")
            return record

    async def unbind(self) -> None:
        """Release the leases and detach the object: from now on its writes stay local."""
        self.session.__dict__.pop("_hub_link", None)
        leases, self.leases = self.leases, {}
        for lease in leases.values():
            with contextlib.suppress(SessionHubError):
                await lease.__aexit__(None, None, None)

    # push

    async def _push(self, activity: Activity) -> HubSession:
        sid = self.session_id
        counted = await self._push_count()
        record, leased = await self._push_requests()
        if activity == "touch" and not (counted or leased):  # those were activity already
            record = await self.hub.touch(sid)
        for _ in range(8):  # compare-and-set: a concurrent touch moves the base of "set"
            if record is None:
                record = await self.hub.get(sid)
            try:
                record = await self._push_fields(record, activity)
                break
            except VersionConflict:
                record = None
        if record is None:
            record = await self.hub.get(sid)
        return await self._push_details(record)

    async def _push_count(self) -> bool:
        count = self.session.connection_count
        if type(count) is not int or count == self._count:
            return False
        await self.hub.incr(self.session_id, CONNECTION_COUNTER, count - self._count)
        self._count = count
        return True

    async def _push_requests(self) -> tuple[HubSession | None, bool]:
        """Open a lease per new request id, release the leases of removed ones: the record the
        last lease opened (if any), and whether anything changed."""
        wanted = set(self.session.active_requests)
        released = [r for r in self.leases if r not in wanted]
        for request_id in released:
            with contextlib.suppress(SessionNotFound):
                await self.leases.pop(request_id).__aexit__(None, None, None)
        record = None
        for request_id in wanted - self.leases.keys():
            lease = self.hub.track_request(self.session_id)
            record = await lease.__aenter__()
            self.leases[request_id] = lease
        return record, bool(released) or record is not None

    async def _push_fields(self, record: HubSession, activity: Activity) -> HubSession:
        """The conversation label and the idle timeout that makes the hub's deadline Morgan's."""
        changes: dict[str, Any] = {}
        conversation = self.session.conversation_id
        if conversation not in (self._conversation, self._refused_conversation):
            if conversation is None:
                changes["remove_labels"] = [CONVERSATION_LABEL]
            else:
                changes["labels"] = {CONVERSATION_LABEL: conversation}
        idle = self._idle_for(record, activity)
        if idle is not None and idle != record.idle_timeout:
            changes["idle_timeout"] = idle
        if not changes:
            return record
        version = record.version if activity == "set" else None
        try:
            return await self.hub.update(self.session_id, **changes, expected_version=version)
        except (ValidationError, PayloadTooLarge) as exc:
            if "labels" not in changes:
                raise
            logger.warning("session %s: conversation_id not stored: %s", self.session_id, exc)
            self._refused_conversation = conversation  # not tried again, kept on the object
            del changes["labels"]
            if not changes:
                return record
            return await self.hub.update(self.session_id, **changes, expected_version=version)

    def _idle_for(self, record: HubSession, activity: Activity) -> float | None:
        """Deadline = last_activity + timeout: a written last_activity becomes the idle timeout
        counted from the hub's last activity; any other activity restores the manager's timeout."""
        if activity is None:
            return None
        if activity == "touch":
            return self.timeout
        when = self.session.last_activity
        if not isinstance(when, datetime) or when.tzinfo is None:
            logger.warning(
                "session %s: last_activity must be an aware datetime, got %r",
                self.session_id,
                when,
            )
            return None
        return max(when.timestamp() + self.timeout - record.last_activity_at, _MIN_IDLE)

    async def _push_details(self, record: HubSession) -> HubSession:
        """Metadata changes as a merge of the changed keys and a removal of the dropped ones."""
        raw = self._encoded(self.session.metadata)
        if raw is None or raw == self._details or raw == self._rejected:
            return record
        old: dict[str, Any] = msgspec.json.decode(self._details)
        new: dict[str, Any] = msgspec.json.decode(raw)
        changed = {k: v for k, v in new.items() if k not in old or _canon(old[k]) != _canon(v)}
        removed = [k for k in old if k not in new]
        try:
            record = await self.hub.update(
                self.session_id, details=changed or None, remove_details=removed
            )
        except (ValidationError, PayloadTooLarge) as exc:
            logger.warning("session %s: metadata not stored: %s", self.session_id, exc)
            self._rejected = raw
            return record
        self._details = raw
        return record

    def _encoded(self, metadata: object) -> bytes | None:
        """The canonical JSON of ``metadata``; ``None`` (logged once) if it is not a JSON object."""
        try:
            if not isinstance(metadata, dict) or not all(type(k) is str for k in metadata):
                raise TypeError("metadata must be a dict with str keys")
            raw = _canon(metadata)
        except (TypeError, msgspec.EncodeError, OverflowError) as exc:
            if not self._unencodable:
                logger.warning("session %s: metadata not stored: %s", self.session_id, exc)
            self._unencodable = True
            return None
        self._unencodable = False
        return raw

    # pull

    def _pull(self, record: HubSession, *, keep_activity: bool = False) -> None:
        """Take the hub's values for the fields this object has not changed since the last sync
        (and keep ``last_activity`` as written when ``keep_activity``)."""
        session = self.session
        details = _canon(record.details)
        if details != self._details:
            if self._encoded(session.metadata) == self._details:
                _replace_changed(session.metadata, msgspec.json.decode(details))
            self._details = details
        count = record.counters.get(CONNECTION_COUNTER, 0)
        if count != self._count and session.connection_count == self._count:
            object.__setattr__(session, "connection_count", count)
        self._count = count
        conversation = record.labels.get(CONVERSATION_LABEL)
        if conversation != self._conversation and session.conversation_id == self._conversation:
            object.__setattr__(session, "conversation_id", conversation)
        self._conversation = conversation
        activity_at = record.last_activity_at
        if record.idle_timeout is not None:
            activity_at += record.idle_timeout - self.timeout
        if activity_at != self._activity_at and not keep_activity and self.activity is None:
            object.__setattr__(session, "last_activity", to_datetime(activity_at))
        self._activity_at = activity_at
        self.elsewhere = max(record.active_requests - len(self.leases), 0)


def _canon(value: object) -> bytes:
    """JSON with sorted keys: equal values, equal bytes (stores may reorder object keys)."""
    return _canonical.encode(value)


def _replace_changed(local: dict[str, Any], remote: dict[str, Any]) -> None:
    """Make ``local`` equal ``remote`` in place, keeping the values that did not change (a caller
    may hold references into them)."""
    for key in [k for k in local if k not in remote]:
        del local[key]
    for key, value in remote.items():
        if key not in local or _canon(local[key]) != _canon(value):
            local[key] = value
