"""Morgan's session API (``morgan_server.session``) over a ``SessionHub``.

Code written for Morgan runs after changing only its import::

    from sessionhub.compat.morgan import initialize_session_manager, get_session_manager

    manager = initialize_session_manager(session_timeout_minutes=60)
    await manager.start()
    session = await manager.create_session(user_id="user-123", metadata={"client_type": "web"})
    async with manager.track_request(session.session_id) as session:
        ...
    await manager.delete_session(session.session_id)
    manager.get_metrics()  # sync, as in Morgan
    await manager.stop()

This is a translation, not a second implementation: sessions, idle expiry, in-flight requests and
shutdown are the hub's. How Morgan's model maps onto it:

- **Session.** Morgan hands out one mutable ``Session`` object per session; the hub keeps immutable
  records. ``Session`` here is a dataclass with Morgan's fields, built afresh from the hub's record by
  every call that returns one: a *snapshot*, detached from the hub (changing it changes nothing
  stored, and the next ``get_session`` returns a new object). Morgan's mutators
  (``update_activity``, ``add_request``, ``remove_request``) are therefore absent, so that code
  relying on them fails loudly instead of silently doing nothing; activity is refreshed by
  ``get_session``/``get_session_by_user``/``track_request``, as in Morgan. ``is_expired`` and
  ``has_active_requests`` read the snapshot.
- **Fields.** ``session_id`` is ``str(uuid.uuid4())``, as in Morgan, used as the hub's session id.
  ``user_id`` is the hub's ``user_id`` (so it must be 1-200 printable ASCII characters without
  whitespace; an empty one means none). ``conversation_id`` is the label ``conversation_id``.
  ``metadata`` is the hub's ``details``: it must be a JSON object (within the hub's size limit),
  and each snapshot holds a deep copy. ``created_at`` and ``last_activity`` are timezone-aware UTC
  ``datetime`` objects, as in Morgan, converted from the hub's epoch seconds (so an injected clock
  drives them). ``connection_count`` is the hub counter ``connection_count`` (Morgan never changes
  it; ``hub.incr`` can). ``active_requests`` holds the ids of the requests this manager is tracking
  in the session; the hub counts them too, and that count is what holds expiry off.
- **Expiry.** Each session gets the hub idle timeout ``session_timeout_minutes * 60``; the hub's
  expiry task ends idle sessions with reason ``expired`` at their deadline (no later than
  ``cleanup_interval_seconds``, the expiry task's longest sleep, on a hub this manager creates),
  and never while a request is in flight.
- **Visibility and ownership.** Sessions live in the hub namespace ``namespace`` (``"morgan"``):
  lookups see live sessions of that namespace only. Counts and metrics cover the sessions this
  manager created, kept synchronously (``get_metrics`` and ``get_active_session_count`` are sync in
  Morgan) from creates and from an ``on_end`` hook on the hub. As in Morgan, every end counts in
  ``total_sessions_cleaned`` and an expiry counts in ``total_sessions_expired`` too.
- **get_session_by_user** answers the user's most recently created live session in the namespace
  (Morgan answers its last-created session, and ``None`` once that one is deleted even if an older
  one lives; here the older one is answered).
- **Lifetime.** Without ``hub=``, the manager owns an in-memory hub (with ``clock=`` if given):
  ``start`` starts it and ``stop`` ends the manager's sessions (reason ``shutdown``) and closes
  it. With ``hub=``, ``start`` starts it if needed and ``stop`` ends the manager's sessions but
  leaves the hub to its owner. ``delete_session`` ends a session with reason ``deleted``.
- ``max_concurrent_requests`` is reported, not enforced, as in Morgan.

Errors: unknown, ended or malformed ids give ``None``/``False`` as in Morgan, and ``track_request``
raises ``ValueError("Session not found: <id>")``. Invalid arguments raise the hub's
``ValidationError``, a ``ValueError``.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from .._clock import Clock
from .._errors import SessionNotFound, ValidationError
from .._hub import SessionHub
from .._limits import check_id, check_timeout
from .._models import Session as HubSession

__all__ = [
    "CONNECTION_COUNTER",
    "CONVERSATION_LABEL",
    "Session",
    "SessionManager",
    "get_session_manager",
    "initialize_session_manager",
]

logger = logging.getLogger(__name__)

#: The hub label that holds a session's ``conversation_id``.
CONVERSATION_LABEL = "conversation_id"
#: The hub counter that ``connection_count`` reads.
CONNECTION_COUNTER = "connection_count"

_copy_encoder = msgspec.json.Encoder()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


@dataclass(slots=True)
class Session:
    """A client session, as Morgan has it: a snapshot of the hub's record (see the module doc)."""

    session_id: str
    user_id: str | None = None
    conversation_id: str | None = None
    created_at: datetime = field(default_factory=_utcnow)
    last_activity: datetime = field(default_factory=_utcnow)
    metadata: dict[str, Any] = field(default_factory=dict)
    connection_count: int = 0
    active_requests: set[str] = field(default_factory=set)

    def is_expired(self, timeout_minutes: float, now: datetime | None = None) -> bool:
        """Whether the snapshot's last activity is more than ``timeout_minutes`` before ``now``
        (the wall clock by default, as in Morgan)."""
        return (now or _utcnow()) - self.last_activity > timedelta(minutes=timeout_minutes)

    def has_active_requests(self) -> bool:
        """Whether requests were in flight when the snapshot was taken."""
        return len(self.active_requests) > 0


class SessionManager:
    """Morgan's ``SessionManager``: sessions with idle expiry, request tracking and metrics.

    ``hub``, ``clock`` and ``namespace`` are additions (keyword-only): run on a given hub, or on an
    owned in-memory hub driven by ``clock`` (a ``ManualClock`` in tests).
    """

    def __init__(
        self,
        session_timeout_minutes: float = 60,
        cleanup_interval_seconds: float = 300,
        max_concurrent_requests: int = 100,
        *,
        hub: SessionHub | None = None,
        clock: Clock | None = None,
        namespace: str = "morgan",
    ) -> None:
        idle = check_timeout(session_timeout_minutes, "session_timeout_minutes")
        interval = check_timeout(cleanup_interval_seconds, "cleanup_interval_seconds")
        if idle is None or interval is None:
            raise ValidationError("session_timeout_minutes and cleanup_interval_seconds are needed")
        if hub is not None and clock is not None:
            raise ValidationError("give a clock to the hub, not to a manager that is given a hub")
        self.session_timeout_minutes = session_timeout_minutes
        self.cleanup_interval_seconds = cleanup_interval_seconds
        self.max_concurrent_requests = max_concurrent_requests
        self.namespace = check_id(namespace, "namespace")
        self._idle_timeout = idle * 60
        self._owns_hub = hub is None
        if hub is None:
            extra: dict[str, Any] = {} if clock is None else {"clock": clock}
            hub = SessionHub(idle_timeout=self._idle_timeout, poll_interval=interval, **extra)
        self.hub: SessionHub = hub
        # Live sessions this manager created, in creation order (id → sequence number).
        self._live: dict[str, int] = {}
        self._sequence = 0
        # Ids of the requests tracked through this manager, per session.
        self._requests: dict[str, set[str]] = {}
        self._running = False
        self._total_sessions_created = 0
        self._total_sessions_expired = 0
        self._total_sessions_cleaned = 0
        hub.on_end(self._session_ended)

    def __repr__(self) -> str:
        return (
            f"SessionManager(session_timeout_minutes={self.session_timeout_minutes}, "
            f"active_sessions={len(self._live)}, hub={self.hub!r})"
        )

    # lifetime

    async def start(self) -> None:
        """Start the hub (its expiry task is Morgan's cleanup loop)."""
        if self._running:
            logger.warning("Session manager already running")
            return
        await self.hub.start()
        self._running = True

    async def stop(self) -> None:
        """End every session of this manager (reason ``shutdown``); close the hub if owned."""
        if not self._running:
            return
        self._running = False
        for session_id in list(self._live):
            await self.hub.end(session_id, "shutdown")
        if self._owns_hub:
            await self.hub.close()

    # sessions

    async def create_session(
        self,
        user_id: str | None = None,
        conversation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Session:
        """Create a session; ``session_id`` is a UUID string."""
        labels = None if conversation_id is None else {CONVERSATION_LABEL: conversation_id}
        record = await self.hub.create(
            str(uuid.uuid4()),
            namespace=self.namespace,
            user_id=user_id or None,
            labels=labels,
            details=metadata or None,
            idle_timeout=self._idle_timeout,
            activate=True,
        )
        self._sequence += 1
        self._live[record.id] = self._sequence
        self._total_sessions_created += 1
        return self._snapshot(record)

    async def get_session(self, session_id: str) -> Session | None:
        """The session, its activity refreshed; ``None`` if there is no such live session."""
        if await self._visible(session_id) is None:
            return None
        return await self._touched(session_id)

    async def get_session_by_user(self, user_id: str) -> Session | None:
        """The user's most recently created live session, its activity refreshed; or ``None``."""
        if not user_id:
            return None
        newest: tuple[float, int] | None = None
        newest_id = None
        cursor = None
        try:
            while True:
                page = await self.hub.find(
                    namespace=self.namespace, user_id=user_id, limit=1000, cursor=cursor
                )
                for record in page.items:
                    key = (record.created_at, self._live.get(record.id, -1))
                    if record.end_reason is None and (newest is None or key > newest):
                        newest, newest_id = key, record.id
                if page.cursor is None:
                    break
                cursor = page.cursor
        except ValidationError:
            return None
        return None if newest_id is None else await self._touched(newest_id)

    async def delete_session(self, session_id: str) -> bool:
        """End the session (reason ``deleted``): ``True`` if this call ended it, else ``False``."""
        if await self._visible(session_id) is None:
            return False
        return await self.hub.end(session_id, "deleted")

    @contextlib.asynccontextmanager
    async def track_request(self, session_id: str) -> AsyncIterator[Session]:
        """Track a request in the session for the block's duration; the block gets the session.

        Raises ``ValueError("Session not found: <id>")`` if there is no such live session.
        """
        request_id = str(uuid.uuid4())
        async with contextlib.AsyncExitStack() as stack:
            record = None
            if await self._visible(session_id) is not None:
                with contextlib.suppress(SessionNotFound):  # ended since
                    record = await stack.enter_async_context(self.hub.track_request(session_id))
            if record is None:
                raise ValueError(f"Session not found: {session_id}")
            requests = self._requests.setdefault(session_id, set())
            requests.add(request_id)
            try:
                yield self._snapshot(record)
            finally:
                requests.discard(request_id)
                if not requests and self._requests.get(session_id) is requests:
                    del self._requests[session_id]

    # counts and metrics (sync, as in Morgan)

    def get_active_session_count(self) -> int:
        """How many sessions this manager created are live."""
        return len(self._live)

    def get_metrics(self) -> dict[str, Any]:
        """Morgan's metrics, with exactly its keys."""
        return {
            "active_sessions": len(self._live),
            "total_sessions_created": self._total_sessions_created,
            "total_sessions_expired": self._total_sessions_expired,
            "total_sessions_cleaned": self._total_sessions_cleaned,
            "session_timeout_minutes": self.session_timeout_minutes,
            "max_concurrent_requests": self.max_concurrent_requests,
        }

    # translation

    async def _visible(self, session_id: object) -> HubSession | None:
        """The hub's record if ``session_id`` names a live session of this namespace that is not
        being ended."""
        if type(session_id) is not str:
            return None
        try:
            record = await self.hub.get(session_id)
        except (SessionNotFound, ValidationError):
            return None
        if not record.live or record.end_reason is not None or record.namespace != self.namespace:
            return None
        return record

    async def _touched(self, session_id: str) -> Session | None:
        try:
            return self._snapshot(await self.hub.touch(session_id))
        except SessionNotFound:
            return None

    def _snapshot(self, record: HubSession) -> Session:
        metadata: dict[str, Any] = (
            msgspec.json.decode(_copy_encoder.encode(record.details)) if record.details else {}
        )
        return Session(
            session_id=record.id,
            user_id=record.user_id,
            conversation_id=record.labels.get(CONVERSATION_LABEL),
            created_at=_datetime(record.created_at),
            last_activity=_datetime(record.last_activity_at),
            metadata=metadata,
            connection_count=record.counters.get(CONNECTION_COUNTER, 0),
            active_requests=set(self._requests.get(record.id, ())),
        )

    async def _session_ended(self, record: HubSession, reason: str) -> None:
        """The hub's cleanup hook: count the end of a session this manager created."""
        if self._live.pop(record.id, None) is None:
            return
        self._requests.pop(record.id, None)
        self._total_sessions_cleaned += 1
        if reason == "expired":
            self._total_sessions_expired += 1


# The global session manager, as in Morgan.
_session_manager: SessionManager | None = None


def get_session_manager() -> SessionManager:
    """The global session manager (a default one is made on first use)."""
    global _session_manager
    if _session_manager is None:
        _session_manager = SessionManager()
    return _session_manager


def initialize_session_manager(
    session_timeout_minutes: float = 60,
    cleanup_interval_seconds: float = 300,
    max_concurrent_requests: int = 100,
    *,
    hub: SessionHub | None = None,
    clock: Clock | None = None,
    namespace: str = "morgan",
) -> SessionManager:
    """Make a new global session manager and return it."""
    global _session_manager
    _session_manager = SessionManager(
        session_timeout_minutes=session_timeout_minutes,
        cleanup_interval_seconds=cleanup_interval_seconds,
        max_concurrent_requests=max_concurrent_requests,
        hub=hub,
        clock=clock,
        namespace=namespace,
    )
    return _session_manager
