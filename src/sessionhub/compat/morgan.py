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
shutdown are the hub's, which stays the single source of truth. How Morgan's model maps onto it:

- **Session.** As in Morgan, the manager keeps one mutable ``Session`` object per session and hands
  out that same object (``get_session``, ``get_session_by_user``, ``track_request``, ...). Its
  methods and attribute writes change the object at once and reach the hub soon after (a sync is
  scheduled on the manager's loop, from any thread); the manager also syncs a session before it
  answers about it, and every ``cleanup_interval_seconds`` (or on ``await manager.sync()``, an
  addition) syncs all of them, which carries changes no method sees
  (``session.metadata["cart"]["items"].append(1)``) and brings in changes made through the hub
  (another manager over the same store, the HTTP API). A sync pushes what this object changed,
  then takes the hub's values for the rest.
- **Fields.** ``session_id`` is ``str(uuid.uuid4())``, as in Morgan, used as the hub's session id.
  ``user_id`` is any string, as in Morgan: the hub's ``user_id`` is the same string when it is a
  valid hub id (1-200 printable ASCII characters without whitespace, not starting with ``~``) and
  an encoding of it otherwise (``"user 123"`` is ``"~user%20123"``; past 200 characters a SHA-256,
  the original kept in the session's data), and ``Session.user_id`` is always the original.
  ``conversation_id`` is the label ``conversation_id`` (up to the hub's label length, 256 by
  default; a longer one is refused at creation). ``metadata`` is the hub's ``details`` and must stay
  a JSON object; as in Morgan, a non-empty dict given to ``create_session`` becomes the session's
  own (not a copy). A written value the hub refuses (metadata that is not JSON or too large, a
  conversation id too long) is kept on the object and logged once, not stored. ``created_at`` and
  ``last_activity`` are timezone-aware UTC ``datetime`` objects on the hub's clock (so an injected
  clock drives them, and ``is_expired``).
  ``connection_count`` is the hub counter ``connection_count``: assigning it adds the difference.
  ``session_id``, ``user_id`` and ``created_at`` are the hub's: assigning them changes the object.
- **Activity.** ``update_activity()`` (and ``get_session``, ``add_request``, ``remove_request``)
  is the hub's ``touch``. Assigning ``last_activity`` moves the hub's deadline to
  ``last_activity + session_timeout_minutes`` (by giving the session the idle timeout that ends
  there; the next activity restores the manager's): a session moved past its timeout is ended by
  the next cleanup, as in Morgan (the hub's expiry task runs at deadlines, so that is at once, not
  up to ``cleanup_interval_seconds`` later).
- **Requests.** Each id in ``active_requests`` (``add_request``, ``track_request``) holds one hub
  request open, so the hub counts it and never expires the session meanwhile; removing the id
  releases it. ``has_active_requests()`` also counts the requests the hub reported at the last sync
  that other managers hold.
- **Expiry.** Each session gets the hub idle timeout ``session_timeout_minutes * 60``; the hub's
  expiry task ends idle sessions with reason ``expired`` at their deadline (no later than
  ``cleanup_interval_seconds``, the expiry task's longest sleep, on a hub this manager creates),
  and never while a request is in flight.
- **Visibility and ownership.** Sessions live in the hub namespace ``namespace`` (``"morgan"``):
  lookups see live sessions of that namespace only. Counts and metrics cover the sessions this
  manager created, kept synchronously (``get_metrics`` and ``get_active_session_count`` are sync in
  Morgan) from creates, from an ``on_end`` hook on the hub and from syncs that find a session gone.
  As in Morgan, every end counts in ``total_sessions_cleaned`` and an expiry in
  ``total_sessions_expired`` too.
- **get_session_by_user** answers the user's most recently created live session in the namespace
  (Morgan answers its last-created session, and ``None`` once that one is deleted even if an older
  one lives; here the older one is answered). An empty ``user_id`` is stored but, as in Morgan,
  never found.
- **Lifetime.** Without ``hub=``, the manager owns an in-memory hub (with ``clock=`` if given):
  ``start`` starts it and ``stop`` ends the manager's sessions (reason ``shutdown``) and closes
  it. With ``hub=``, ``start`` starts it if needed and ``stop`` ends the manager's sessions but
  leaves the hub to its owner. ``delete_session`` ends a session with reason ``deleted`` (with
  requests in flight too, as in Morgan, which logs a warning).
- ``max_concurrent_requests`` is reported, not enforced, as in Morgan.

Errors: unknown, ended or malformed ids give ``None``/``False`` as in Morgan, and ``track_request``
raises ``ValueError("Session not found: <id>")``. Invalid arguments (metadata that is not a JSON
object, a ``user_id`` that is not a string) raise the hub's ``ValidationError``, a ``ValueError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any

from .._clock import Clock
from .._errors import SessionHubError, SessionNotFound, ValidationError
from .._hub import SessionHub
from .._limits import check_id, check_timeout
from .._models import Session as HubSession
from . import _user_ids
from ._live import CONNECTION_COUNTER, CONVERSATION_LABEL, Session, _Link, to_datetime

__all__ = [
    "CONNECTION_COUNTER",
    "CONVERSATION_LABEL",
    "Session",
    "SessionManager",
    "get_session_manager",
    "initialize_session_manager",
]

logger = logging.getLogger(__name__)


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
        # The one Session object per live session this manager has handed out (Morgan's dict).
        self._sessions: dict[str, Session] = {}
        # Live sessions this manager created, in creation order (id → sequence number).
        self._live: dict[str, int] = {}
        self._sequence = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._syncs: set[asyncio.Task[None]] = set()
        self._cleanup_task: asyncio.Task[None] | None = None
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
        """Start the hub (its expiry task ends idle sessions) and the cleanup loop."""
        if self._running:
            logger.warning("Session manager already running")
            return
        self._loop = asyncio.get_running_loop()
        await self.hub.start()
        self._running = True
        self._cleanup_task = asyncio.create_task(self._cleanup_loop(), name="morgan-cleanup")

    async def stop(self) -> None:
        """End every session of this manager (reason ``shutdown``); close the hub if owned."""
        if not self._running:
            return
        self._running = False
        if self._cleanup_task is not None:
            self._cleanup_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleanup_task
            self._cleanup_task = None
        await asyncio.gather(*self._syncs, return_exceptions=True)
        for session_id in list(self._live):
            await self.hub.end(session_id, "shutdown")
        for session in list(self._sessions.values()):  # others' sessions: release our requests
            await self._forget(session.session_id)
        if self._owns_hub:
            await self.hub.close()

    # sessions

    async def create_session(
        self,
        user_id: str | None = None,
        conversation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Session:
        """Create a session; ``session_id`` is a UUID string, ``user_id`` any string."""
        self._loop = asyncio.get_running_loop()
        hub_user = None if user_id is None else _user_ids.to_hub(user_id)
        labels = None if conversation_id is None else {CONVERSATION_LABEL: conversation_id}
        record = await self.hub.create(
            str(uuid.uuid4()),
            namespace=self.namespace,
            user_id=hub_user,
            labels=labels,
            details=metadata or None,
            idle_timeout=self._idle_timeout,
            activate=True,
        )
        if user_id is not None and _user_ids.is_hashed(_user_ids.to_hub(user_id)):
            await self._keep_original(record.id, user_id)
        self._sequence += 1
        self._live[record.id] = self._sequence
        self._total_sessions_created += 1
        # As in Morgan, a non-empty metadata dict is the session's own (the caller may keep it).
        own = metadata if isinstance(metadata, dict) and metadata else dict(metadata or {})
        return self._bind(record, user_id, own)

    async def get_session(self, session_id: str) -> Session | None:
        """The session, its activity refreshed; ``None`` if there is no such live session."""
        session = await self._lookup(session_id)
        if session is None:
            return None
        session.update_activity()
        return session if await self._sync(session) else None

    async def get_session_by_user(self, user_id: str) -> Session | None:
        """The user's most recently created live session, its activity refreshed; or ``None``."""
        if type(user_id) is not str or not user_id:  # Morgan maps no falsy user id
            return None
        hub_user = _user_ids.to_hub(user_id)
        newest: tuple[float, int] | None = None
        newest_id = None
        cursor = None
        while True:
            page = await self.hub.find(
                namespace=self.namespace, user_id=hub_user, limit=1000, cursor=cursor
            )
            for record in page.items:
                key = (record.created_at, self._live.get(record.id, -1))
                if record.end_reason is None and (newest is None or key > newest):
                    newest, newest_id = key, record.id
            if page.cursor is None:
                break
            cursor = page.cursor
        return None if newest_id is None else await self.get_session(newest_id)

    async def delete_session(self, session_id: str) -> bool:
        """End the session (reason ``deleted``): ``True`` if this call ended it, else ``False``."""
        session = await self._lookup(session_id)
        if session is None:
            return False
        if session.has_active_requests():
            logger.warning("Deleting session %s with active requests", session_id)
        return await self.hub.end(session_id, "deleted")

    @contextlib.asynccontextmanager
    async def track_request(self, session_id: str) -> AsyncIterator[Session]:
        """Track a request in the session for the block's duration; the block gets the session.

        Raises ``ValueError("Session not found: <id>")`` if there is no such live session.
        """
        request_id = str(uuid.uuid4())
        session = await self._lookup(session_id)
        if session is not None:
            session.add_request(request_id)
            try:
                live = await self._sync(session)
            finally:  # not live, or the hub refused the request (TooManyRequests): not tracked
                if request_id not in self._held(session):
                    session.active_requests.discard(request_id)
            if not live:
                session = None
        if session is None:
            raise ValueError(f"Session not found: {session_id}")
        try:
            yield session
        finally:
            session.remove_request(request_id)
            await self._sync_quietly(session)

    async def sync(self) -> None:
        """Bring every session object of this manager and the hub in line now: push each object's
        writes (also those no method sees), take the hub's changes, forget ended sessions. The
        cleanup loop does this every interval; an addition to Morgan's API, for a caller that
        needs a write stored at a given point (before another process reads it)."""
        self._loop = asyncio.get_running_loop()
        for session in list(self._sessions.values()):
            await self._sync_quietly(session)

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

    # the live objects

    def _bind(self, record: HubSession, user_id: str | None, metadata: dict[str, Any]) -> Session:
        session = Session(
            session_id=record.id,
            user_id=user_id,
            conversation_id=record.labels.get(CONVERSATION_LABEL),
            created_at=to_datetime(record.created_at),
            last_activity=to_datetime(record.last_activity_at),
            metadata=metadata,
        )
        _Link(self.hub, session, record, self._idle_timeout, self._schedule)
        self._sessions[record.id] = session
        return session

    async def _lookup(self, session_id: object) -> Session | None:
        """The object of a live session of this namespace (bound on first sight); or ``None``."""
        if type(session_id) is not str:
            return None
        self._loop = asyncio.get_running_loop()
        session = self._sessions.get(session_id)
        if session is not None:
            return session
        record = await self._visible(session_id)
        if record is None:
            return None
        user_id = await self._original_user(record)
        # Another task may have bound it while this one waited.
        return self._sessions.get(session_id) or self._bind(record, user_id, {})

    async def _visible(self, session_id: str) -> HubSession | None:
        """The hub's record if ``session_id`` names a live session of this namespace that is not
        being ended."""
        try:
            record = await self.hub.get(session_id)
        except (SessionNotFound, ValidationError):
            return None
        if not record.live or record.end_reason is not None or record.namespace != self.namespace:
            return None
        return record

    async def _original_user(self, record: HubSession) -> str | None:
        hub_user = record.user_id
        if hub_user is None or not _user_ids.is_hashed(hub_user):
            return None if hub_user is None else _user_ids.from_hub(hub_user)
        with contextlib.suppress(SessionNotFound):
            original = _user_ids.from_kept(
                await self.hub.data(record.id).get(_user_ids.ORIGINAL_KEY)
            )
            if original is not None:
                return original
        return hub_user

    async def _keep_original(self, session_id: str, user_id: str) -> None:
        """Store the original of a hashed user id; the session is not created if that fails."""
        try:
            await self.hub.data(session_id).set(_user_ids.ORIGINAL_KEY, _user_ids.kept(user_id))
        except BaseException:
            await self.hub.end(session_id, "ended")
            raise

    def _schedule(self, link: _Link) -> None:
        """Called on a write to a bound session, from any thread: sync it on the manager's loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # synced by the next call that touches the session
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._spawn_sync(link)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._spawn_sync, link)

    def _spawn_sync(self, link: _Link) -> None:
        task = asyncio.get_running_loop().create_task(self._sync_if_dirty(link))
        self._syncs.add(task)
        task.add_done_callback(self._syncs.discard)

    async def _sync_if_dirty(self, link: _Link) -> None:
        if link.dirty:  # not synced yet by a call that needed it at once
            await self._sync_quietly(link.session)

    @staticmethod
    def _held(session: Session) -> Collection[str]:
        """The request ids the hub holds for this object."""
        link = session._link()
        return () if link is None else link.leases.keys()

    async def _sync(self, session: Session) -> bool:
        """Sync a bound session with the hub: whether it is still live (else it is forgotten)."""
        link = session._link()
        if link is None:
            return False
        if await link.sync() is None:
            await self._forget(session.session_id)
            return False
        return True

    async def _sync_quietly(self, session: Session) -> None:
        try:
            await self._sync(session)
        except SessionHubError as exc:
            logger.warning("session %s not synced with the hub: %s", session.session_id, exc)

    async def _forget(self, session_id: str, reason: str | None = None) -> None:
        """Unbind a session that is gone (or that this manager stops holding) and count its end
        if this manager created it and its own hub's hook has not counted it."""
        session = self._sessions.pop(session_id, None)
        if session is not None and (link := session._link()) is not None:
            await link.unbind()
        if self._live.pop(session_id, None) is None:
            return
        self._total_sessions_cleaned += 1
        if reason == "expired":
            self._total_sessions_expired += 1

    async def _cleanup_loop(self) -> None:
        """Morgan's cleanup loop: every interval, bring the objects and the hub in line (the hub's
        expiry task ends the idle sessions at their deadlines)."""
        while True:
            await asyncio.sleep(self.cleanup_interval_seconds)
            await self.sync()

    async def _session_ended(self, record: HubSession, reason: str) -> None:
        """The hub's cleanup hook: forget the session and count its end."""
        await self._forget(record.id, reason)


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
