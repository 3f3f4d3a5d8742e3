"""SessionHub: the one place where session policy lives.

Every face (Python, HTTP, gRPC, the Stream API, middleware, CLI, pytest, Morgan's API) is a thin
translation onto these verbs. The hub validates input, applies limits and the lifecycle, runs cleanup
hooks, drives expiry from deadlines and counts; the store performs each change atomically.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import inspect
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any, Final, TypeVar

import msgspec

from ._clock import Clock, IdFactory, new_session_id, system_clock
from ._containers import SessionData, SessionHistory
from ._errors import (
    DuplicateSession,
    QuotaExceeded,
    SessionNotFound,
    StoreUnavailable,
    TransitionError,
    ValidationError,
    VersionConflict,
    quoted,
)
from ._lifecycle import DEFAULT_LIFECYCLE, Lifecycle
from ._limits import (
    Limits,
    check_details,
    check_id,
    check_int64,
    check_labels,
    check_limit,
    check_name,
    check_names,
    check_reason,
    check_timeout,
)
from ._metrics import HubMetrics, MetricsSnapshot
from ._models import EventKind, Page, Session, SessionEvent
from .stores import Store, store_from_url
from .stores._base import Change, CreateRules, Query

__all__ = ["DEFAULT", "EndHook", "SessionHub"]

logger = logging.getLogger("sessionhub")


class _Default:
    """Marks an argument left to the hub's default (``None`` means "no timeout")."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = _Default()

EndHook = Callable[[Session, str], Awaitable[None] | None]
_H = TypeVar("_H", bound=EndHook)
_UNSET: Any = msgspec.UNSET
#: Set while a task runs an expiry pass (and in the hooks it runs): a hook that calls
#: ``expire_due`` must not wait for the pass that is waiting for it.
_in_expiry_pass: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "sessionhub_in_expiry_pass", default=False
)


class SessionHub:
    """Sessions with a lifecycle, expiry, limits, hooks and events, over a pluggable store.

    Use it as an async context manager (or ``await hub.start()`` / ``await hub.close()``): starting
    opens the store and the expiry task; closing stops them and, for the memory store, ends every
    live session with reason ``shutdown`` so that cleanup hooks run.

    ``auto_expire=False`` runs no expiry task: sessions expire only when ``expire_due()`` is
    called, which is what a test moving a ``ManualClock`` wants (no background pass racing it).

    Expiry claims up to ``expiry_batch`` due sessions per store call and ends them concurrently:
    the hooks of up to ``hook_concurrency`` sessions run at once (default 64; each session's hooks
    still run once, in order, each under ``hook_timeout``; sync hooks are further bounded by the
    default thread pool), ends whose hooks are done are finished together in one store call, and
    the next batch is claimed while the current one runs. A parent still ends after its children.
    """

    def __init__(
        self,
        store: Store | str = "memory://",
        *,
        idle_timeout: float | None = 1800.0,
        ttl: float | None = None,
        lifecycle: Lifecycle = DEFAULT_LIFECYCLE,
        unique_labels: Collection[str] = (),
        limits: Limits | None = None,
        retention: float = 0.0,
        hook_timeout: float = 30.0,
        clock: Clock = system_clock,
        id_factory: IdFactory = new_session_id,
        poll_interval: float = 1.0,
        expiry_batch: int = 1000,
        hook_concurrency: int = 64,
        auto_expire: bool = True,
    ) -> None:
        self.store = store_from_url(store) if isinstance(store, str) else store
        self._touch_now = self.store.touch_now  # read once: touch is the hottest write
        self.idle_timeout = check_timeout(idle_timeout, "idle_timeout")
        self.ttl = check_timeout(ttl, "ttl")
        self.lifecycle = lifecycle
        self.unique_labels = check_names(list(unique_labels), "unique_labels")
        self.limits = limits or Limits()
        self.retention = _retention(retention)
        self.hook_timeout = check_timeout(hook_timeout, "hook_timeout")
        self.poll_interval = check_timeout(poll_interval, "poll_interval") or 1.0
        if type(auto_expire) is not bool:
            raise ValidationError(f"auto_expire must be a bool, got {auto_expire!r}")
        self.auto_expire = auto_expire
        self.expiry_batch = check_limit(expiry_batch, 100_000)
        self.hook_concurrency = check_limit(hook_concurrency, 100_000)
        self.clock = clock
        self.id_factory = id_factory
        self._hooks: list[EndHook] = []
        self._async_hooks: list[bool] = []  # per hook: async? (asked once, not at every end)
        self._metrics = HubMetrics()
        self._terminate = lifecycle.moves(lifecycle.terminate)
        self._create_rules = CreateRules(
            unique_labels=self.unique_labels,
            max_sessions=self.limits.max_sessions,
            max_sessions_per_user=self.limits.max_sessions_per_user,
        )
        self._reaper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._wake_at = float("inf")  # when the sleeping expiry task wakes up by itself
        self._in_pass = False  # the expiry task is in a pass: it reads the next deadline after
        self._soonest = float("inf")  # the earliest deadline scheduled during that pass
        self._expiring = asyncio.Lock()
        self._hook_slots = asyncio.Semaphore(
            self.hook_concurrency
        )  # expiry's hooks running at once
        # The sessions this hub's expiry has claimed and not yet finished, each with the future
        # its finish sets: a parent in a later batch waits for its children in an earlier one.
        # (The future is made only when someone waits: most ends have no parent waiting.)
        self._ending: dict[str, asyncio.Future[None] | None] = {}
        self._claiming: asyncio.Future[None] | None = None  # set while a claim_expired is out
        # Ends claimed here whose finish failed (a store that went away), with whether their
        # hooks ran: the next expiry pass finishes them (hooks not run again). A claimer that
        # lives is never taken over, so without this they would stay half-ended.
        self._owed: dict[str, tuple[Session, bool]] = {}
        self._ends: set[asyncio.Task[Session | None]] = set()  # end() calls' own tasks
        self._finisher = _Finisher(self)
        self._closing = False
        self._started = False

    def __repr__(self) -> str:
        return f"SessionHub(store={self.store!r})"

    # lifetime

    async def __aenter__(self) -> SessionHub:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the store and start the expiry task (idempotent)."""
        if self._started:
            return
        await self.store.open()
        self.store.events.reopen()
        self._started = True
        self._closing = False
        if self.auto_expire:  # off: the caller drives expiry with expire_due() (manual clocks)
            self._reaper = asyncio.create_task(self._reap_forever(), name="sessionhub-expiry")

    async def close(self) -> None:
        """Stop expiry; with a memory store, end every live session (reason ``shutdown``).

        An expiry pass in progress is not cut short: the ends it has claimed are finished (their
        hooks run, each under ``hook_timeout``), so no session is left half-ended.
        """
        if not self._started:
            return
        self._started = False
        self._closing = True
        reaper, self._reaper = self._reaper, None
        current = asyncio.current_task()
        if reaper is not None:
            self._wake.set()  # the task leaves its sleep, or stops after the batch it is in
            if reaper is not current:  # not called by a hook of that pass
                await reaper
        ends = [task for task in self._ends if task is not current]
        if ends:  # ends whose callers left (cancelled) still finish before the store closes
            await asyncio.gather(*ends, return_exceptions=True)
        if self.store.ephemeral:
            await self.end_all("shutdown")
        if self._owed:
            try:
                await self._settle_owed()
            except Exception as exc:
                logger.error("closing with %d ends unfinished: %s", len(self._owed), exc)
        self.store.events.close()
        await self.store.close()

    async def end_all(
        self, reason: str = "ended", *, user_id: str | None = None, namespace: str | None = None
    ) -> int:
        """End every live session (children with their parents), or only those of ``user_id``
        and/or ``namespace``; how many this call ended."""
        check_name(reason, "reason")  # refused even when nothing would end
        query = self._query(namespace, user_id, None, None, None, False)
        ended = 0
        async for session in self._each(query):
            ended += await self.end(session.id, reason)
        return ended

    async def _each(self, query: Query) -> AsyncIterator[Session]:
        """Every session ``query`` matches, page by page (one pass: sessions that another caller
        is ending are skipped, never waited for)."""
        cursor = None
        while True:
            page = await self.store.find(query, limit=500, cursor=cursor)
            for session in page.items:
                yield session
            if page.cursor is None:
                return
            cursor = page.cursor

    # sessions

    async def create(
        self,
        session_id: str | None = None,
        *,
        id: str | None = None,  # the field's name on every face
        namespace: str = "default",
        user_id: str | None = None,
        parent_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
        idle_timeout: float | _Default | None = DEFAULT,
        ttl: float | _Default | None = DEFAULT,
        retention: float | None = None,
        activate: bool = False,
    ) -> Session:
        """Create a session (the id is allocated unless given) and emit ``created``.

        The id may be given positionally or as ``id=`` (its name on every face), not both.

        ``activate=True`` walks the lifecycle from its initial state to its active one in the same
        atomic step, for sessions that have nothing to spawn. ``retention`` keeps this session
        readable for that many seconds after it ends (the hub's ``retention`` when ``None``).
        """
        if id is not None:
            if session_id is not None:
                raise ValidationError("give the session id once: positionally or as id=")
            session_id = id
        sid = self.id_factory() if session_id is None else check_id(session_id)
        lifecycle = self.lifecycle
        state = lifecycle.initial
        if type(activate) is not bool:
            raise ValidationError(f"activate must be a bool, got {quoted(activate)}")
        if activate:
            if not lifecycle.activate_path and lifecycle.active != state:
                raise ValidationError(f"the lifecycle has no path to {lifecycle.active}")
            state = lifecycle.active
        idle = (
            self.idle_timeout
            if idle_timeout is DEFAULT
            else check_timeout(idle_timeout, "idle_timeout")
        )
        life = self.ttl if ttl is DEFAULT else check_timeout(ttl, "ttl")
        now = self.clock()
        # expires_at() for a new session, inlined: this is the hottest path of a create.
        deadline = None if idle is None else now + idle
        if life is not None and (deadline is None or now + life < deadline):
            deadline = now + life
        # Fields left at their defaults are not passed: a Session builds faster with fewer
        # keywords, and the mappings default to the shared EMPTY that check_* would return.
        session = Session(
            id=sid,
            namespace="default" if namespace == "default" else check_id(namespace, "namespace"),
            state=state,
            user_id=None if user_id is None else check_id(user_id, "user_id"),
            created_at=now,
            updated_at=now,
            last_activity_at=now,
            expires_at=deadline,
            idle_timeout=idle,
            ttl=life,
        )
        if parent_id is not None or labels is not None or details is not None:
            session = msgspec.structs.replace(
                session,
                parent_id=None if parent_id is None else check_id(parent_id, "parent_id"),
                labels=check_labels(labels, self.limits),
                details=check_details(details, self.limits),
            )
        if retention is not None:
            session = msgspec.structs.replace(session, retention=_retention(retention))
        purged = False
        create_now = self.store.create_now
        for _ in range(8):
            try:
                if create_now is not None:
                    created = create_now(session, self._create_rules)
                else:
                    created = await self.store.create(session, self._create_rules)
                break
            except DuplicateSession:
                # The id may still be held by an ended session whose retention has passed but
                # that the expiry task has not purged yet: purge it, then try once more.
                if purged or session_id is None:
                    raise
                purged = True
                await self.store.purge(now)
            except QuotaExceeded:
                if self.limits.quota_policy != "evict_oldest" or session.user_id is None:
                    raise
                await self._evict_oldest(session.user_id)
        else:
            raise QuotaExceeded(f"could not make room for user {user_id} after several evictions")
        self._metrics.count_created()
        # self._scheduled(created), with its common case (a deadline after the wake-up) inlined.
        deadline = created.expires_at
        if deadline is not None and (deadline < self._wake_at or self._in_pass):
            self._scheduled(created)
        return created

    async def _evict_oldest(self, user_id: str) -> None:
        owned = [session async for session in self._each(Query(user_id=user_id))]
        if owned:
            await self.end(min(owned, key=lambda s: (s.created_at, s.id)).id, "evicted")

    async def get(self, session_id: str) -> Session:
        """The session (live, or ended and still retained); ``SessionNotFound`` otherwise."""
        if type(session_id) is not str:
            check_id(session_id)
        get_now = self.store.get_now
        session = get_now(session_id) if get_now else await self.store.get(session_id)
        if session is None or (
            session.ended_at is not None and self._retain_until(session) <= self.clock()
        ):
            check_id(session_id)
            raise SessionNotFound(session_id)
        return session

    def _retain_until(self, ended: Session) -> float:
        assert ended.ended_at is not None
        # Every store writes the retention it keeps an ended record for into the record
        # (stores._base.kept_for), so a hub with another default agrees with the store's purge.
        # Only records ended by a version before that lack it: this hub's default is a guess.
        retention = self.retention if ended.retention is None else ended.retention
        return ended.ended_at + retention

    async def exists(self, session_id: str) -> bool:
        """Whether ``session_id`` names a live session."""
        try:
            session = await self.get(session_id)
        except SessionNotFound:
            return False
        return session.ended_at is None

    def _query(
        self,
        namespace: str | None,
        user_id: str | None,
        parent_id: str | None,
        state: str | None,
        labels: Mapping[str, str] | None,
        include_ended: bool,
    ) -> Query:
        return Query(
            namespace=None if namespace is None else check_id(namespace, "namespace"),
            user_id=None if user_id is None else check_id(user_id, "user_id"),
            parent_id=None if parent_id is None else check_id(parent_id, "parent_id"),
            state=None if state is None else self._state(state),
            labels=None if not labels else check_labels(labels, Limits()),
            include_ended=bool(include_ended),
        )

    def _state(self, state: object) -> str:
        name = check_id(state, "state").upper()
        if name not in self.lifecycle.states:
            raise ValidationError(
                f"unknown state {quoted(state)}: the lifecycle's states are "
                f"{', '.join(sorted(self.lifecycle.states))}"
            )
        return name

    async def find(
        self,
        *,
        namespace: str | None = None,
        user_id: str | None = None,
        parent_id: str | None = None,
        state: str | None = None,
        labels: Mapping[str, str] | None = None,
        include_ended: bool = False,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """A page of matching sessions in id order; pass ``page.cursor`` back for the next.

        ``include_ended`` also lists ended sessions still retained, alone or with ``namespace``
        and ``state``. Filters by user, parent or label read indexes of live sessions only (an
        ending session leaves them at once, so they stay small): with those, ended sessions are
        not listed.
        """
        query = self._query(namespace, user_id, parent_id, state, labels, include_ended)
        if cursor is not None:
            check_id(cursor, "cursor")
        limit = check_limit(limit)
        if query.include_ended:  # what get no longer shows is not listed either
            await self.store.purge(self.clock())
        return await self.store.find(query, limit=limit, cursor=cursor)

    async def count(
        self,
        *,
        namespace: str | None = None,
        user_id: str | None = None,
        parent_id: str | None = None,
        state: str | None = None,
        labels: Mapping[str, str] | None = None,
        include_ended: bool = False,
    ) -> int:
        """How many sessions ``find`` would list over all its pages."""
        query = self._query(namespace, user_id, parent_id, state, labels, include_ended)
        if query.include_ended:
            await self.store.purge(self.clock())
        return await self.store.count(query)

    async def _modify(self, session_id: str, change: Change) -> Session:
        if type(session_id) is not str:
            check_id(session_id)
        try:
            session = await self.store.modify(session_id, change)
        except SessionNotFound:
            check_id(session_id)  # a malformed id is invalid, not missing (off the hot path)
            raise
        self._scheduled(session)
        return session

    async def update(
        self,
        session_id: str,
        *,
        details: Mapping[str, Any] | None = None,
        remove_details: Collection[str] = (),
        labels: Mapping[str, str] | None = None,
        remove_labels: Collection[str] = (),
        idle_timeout: float | _Default | None = DEFAULT,
        ttl: float | _Default | None = DEFAULT,
        expected_version: int | None = None,
    ) -> Session:
        """Merge details and labels (and remove keys), change timeouts; emits ``updated``.

        With ``expected_version`` the update applies only to that version (``VersionConflict``
        otherwise), so read-modify-write loops lose no update.
        """
        limits = self.limits
        change = Change(
            now=self.clock(),
            expected_version=_version(expected_version),
            details=check_details(details, limits) if details is not None else None,
            details_remove=check_names(remove_details, "remove_details"),
            labels=check_labels(labels, limits) if labels is not None else None,
            labels_remove=check_names(remove_labels, "remove_labels"),
            unique_labels=self.unique_labels,
            max_labels=limits.max_labels,
            max_details_bytes=limits.max_details_bytes,
            idle_timeout=_UNSET
            if idle_timeout is DEFAULT
            else check_timeout(idle_timeout, "idle_timeout"),
            ttl=_UNSET if ttl is DEFAULT else check_timeout(ttl, "ttl"),
            emit=EventKind.UPDATED,
        )
        return await self._modify(session_id, change)

    async def transition(
        self, session_id: str, event: str, *, expected_version: int | None = None
    ) -> Session:
        """Apply a lifecycle event; ``TransitionError`` if the table has no such move.

        An event that leads to the ended state ends the session (hooks run once, as in ``end``).
        """
        lifecycle = self.lifecycle
        name = lifecycle.event_name(event)
        if name == lifecycle.clean:
            session = await self.get(session_id)
            lifecycle.next_state(session.state, name)  # raises unless the session is ending
            if expected_version is not None and session.version != _version(expected_version):
                raise VersionConflict(
                    f"session {session_id} is at version {session.version}, not {expected_version}"
                )
            ended = await self._end(session_id, session.end_reason or "ended")
            if ended is None:
                raise TransitionError(session.state, name, "session is already being ended")
            return ended
        change = Change(
            now=self.clock(),
            expected_version=_version(expected_version),
            event=name,
            moves=lifecycle.moves(name),
            emit=EventKind.TRANSITIONED,
        )
        return await self._modify(session_id, change)

    async def touch(self, session_id: str) -> Session:
        """A heartbeat: refresh activity, so the idle timeout starts again."""
        touch_now = self._touch_now
        if touch_now is None or type(session_id) is not str:
            return await self._modify(session_id, Change(now=self.clock(), touch=True))
        try:
            session = touch_now(session_id, self.clock())
        except SessionNotFound:
            check_id(session_id)  # a malformed id is invalid, not missing (off the hot path)
            raise
        # self._scheduled(session), with its common case (a later deadline, no pass) inlined.
        deadline = session.expires_at
        if deadline is not None and (deadline < self._wake_at or self._in_pass):
            self._scheduled(session)
        return session

    async def incr(self, session_id: str, counter: str, by: int = 1) -> int:
        """Add ``by`` to a counter atomically (activity too); the counter's new value.

        Counters are signed 64-bit integers: an increment past either end is refused with
        ``ValidationError`` and changes nothing.
        """
        check_name(counter, "counter name")
        check_int64(by, "by")
        change = Change(now=self.clock(), counters={counter: by}, touch=True)
        session = await self._modify(session_id, change)
        return session.counters[counter]

    def track_request(self, session_id: str) -> contextlib.AbstractAsyncContextManager[Session]:
        """Count a request in flight for the block's duration; the session is not idle meanwhile.

        Raises ``SessionNotFound`` for an unknown or ended session and ``TooManyRequests`` past the
        per-session limit. The request is released however the block exits.
        """
        return _Request(self, session_id)

    async def link(self, parent_id: str, child_id: str) -> Session:
        """Make ``child_id`` a child of ``parent_id`` (ending the parent ends it); emits ``updated``."""
        check_id(child_id, "child_id")
        node: Session | None = await self.get(check_id(parent_id, "parent_id"))
        if node is None or not node.live or node.end_reason is not None:
            raise SessionNotFound(parent_id)
        while node is not None:  # links never form a cycle, so this walk ends
            if node.id == child_id:
                raise ValidationError(f"linking {child_id} under {parent_id} would make a cycle")
            node = None if node.parent_id is None else await self.store.get(node.parent_id)
        change = Change(now=self.clock(), parent_id=parent_id, emit=EventKind.UPDATED)
        return await self._modify(child_id, change)

    async def end(self, session_id: str, reason: str = "ended") -> bool:
        """End a live session: terminate, end its children, run the hooks once, clean.

        ``reason`` is free text (1-200 printable characters, any language, no control characters).
        From the moment it is claimed until it has ended, the session accepts no activity:
        ``touch``, ``incr``, ``update``, ``transition``, ``link``, data and history writes and
        ``track_request`` raise ``SessionNotFound``; reads still work.

        Returns whether this call ended it: ``False`` when it had already ended, was being ended
        by another caller, or does not exist.
        """
        return await self._end(check_id(session_id), check_reason(reason)) is not None

    async def _end(self, session_id: str, reason: str) -> Session | None:
        """Claim and finish an end in a task of its own, which the caller's cancellation (a client
        gone, a timeout) does not stop: a claimed end cut short would refuse all activity and
        never finish. Inline when nothing in it can wait (no hooks, a store that never waits)."""
        if not self._hooks and self.store.get_now is not None:  # no task, no bookkeeping
            claimed = await self.store.claim_end(session_id, reason, self.clock(), self._terminate)
            return None if claimed is None else await self._finish(claimed)
        task = asyncio.create_task(self._claim_and_finish(session_id, reason))
        self._ends.add(task)
        task.add_done_callback(self._end_done)
        return await asyncio.shield(task)

    def _end_done(self, task: asyncio.Task[Session | None]) -> None:
        self._ends.discard(task)
        if not task.cancelled():
            task.exception()  # seen: a failed finish is owed and logged, its caller may be gone

    async def _claim_and_finish(self, session_id: str, reason: str) -> Session | None:
        claimed = await self.store.claim_end(session_id, reason, self.clock(), self._terminate)
        if claimed is None:
            return None
        self._ending[session_id] = None  # claimed here: a claim handed back again is not run
        try:
            return await self._finish(claimed)
        finally:
            self._release(session_id)

    async def _finish(self, claimed: Session, hooks_done: bool = False) -> Session | None:
        """Run the claimed end's children and hooks (unless ``hooks_done``) and finish it; an
        end that fails is owed (see ``_owed``) and the error raised."""
        reason = claimed.end_reason or "ended"
        try:
            if not hooks_done:
                await self._end_children(claimed.id, wait=False)
                await self._run_hooks(claimed, reason)
                hooks_done = True
            now = self.clock()
            ended = await self.store.finish_end(
                claimed.id, now, self.lifecycle.ended, now + self._retention_of(claimed)
            )
        except Exception as exc:
            self._owe(claimed, hooks_done, exc)
            raise
        self._metrics.ended[reason] += 1
        return ended

    def _owe(self, claimed: Session, hooks_done: bool, exc: BaseException) -> None:
        if isinstance(exc, Exception):  # not a cancelled loop: that process is going away
            self._owed[claimed.id] = (claimed, hooks_done)
            logger.warning(
                "end of session %s not finished (%r); the next expiry pass finishes it",
                claimed.id,
                exc,
            )

    async def _settle_owed(self) -> None:
        """Finish the ends owed (see ``_owed``); the first failure is raised, the rest stay."""
        for session_id, (claimed, hooks_done) in list(self._owed.items()):
            del self._owed[session_id]
            self._ending[session_id] = None
            try:
                await self._finish(claimed, hooks_done)
            finally:
                self._release(session_id)

    def _retention_of(self, claimed: Session) -> float:
        return self.retention if claimed.retention is None else claimed.retention

    async def _end_children(self, parent_id: str, *, wait: bool) -> None:
        """End the live children of a claimed session first: cleanup runs from the leaves up.

        With ``wait`` (an expiry pass), a child that this hub's expiry has claimed meanwhile is
        waited for, so the parent still ends after it. ``end()`` does not wait: a hook of that child
        could be the caller, and would then wait for itself.
        """
        async for child in self._each(Query(parent_id=parent_id)):
            if await self._end(child.id, "parent_ended") is not None or not wait:
                continue
            claiming = self._claiming
            if claiming is not None:  # it may be in a batch whose claim has not answered yet
                await asyncio.shield(claiming)
            if child.id in self._ending:
                pending = self._ending[child.id]
                if pending is None:
                    pending = self._ending[child.id] = asyncio.get_running_loop().create_future()
                await asyncio.shield(pending)
            else:
                await self._ended_elsewhere(child.id)

    async def _ended_elsewhere(self, session_id: str) -> None:
        """Wait (bounded) for an end that another hub process or an ``end()`` call has claimed:
        its hooks are running there. A claimer that died leaves the claim to the store's lease,
        so after the hooks' time bound the parent goes on."""
        hooks = max(len(self._hooks), 1)
        bound = 60.0 if self.hook_timeout is None else self.hook_timeout * hooks + 5.0
        waited, pause = 0.0, 0.005
        while waited < bound:
            session = await self.store.get(session_id)
            if session is None or not session.live or session.end_reason is None:
                return
            await asyncio.sleep(pause)
            waited += pause
            pause = min(pause * 2, 0.1)

    async def expire_due(self) -> int:
        """End every session whose deadline has passed; how many this call ended.

        The expiry task calls this at each deadline; tests that move a ``ManualClock`` call it to
        make expiry happen now. Passes of one hub run one at a time, so when this returns every
        session that was due has ended, also those another pass (the expiry task) had claimed.
        Called from a cleanup hook of a pass, it returns 0 at once: that pass ends what is due.
        """
        return await self._expire(budget=None)

    async def _expire(self, budget: float | None) -> int:
        """An expiry pass; with ``budget`` (seconds), it claims no further batch after that long,
        so the expiry task also gets to purge and to read the next deadline during a long burst."""
        if _in_expiry_pass.get():
            return 0  # called by a hook of a pass: that pass ends what is due
        ended = 0
        async with self._expiring:
            token = _in_expiry_pass.set(True)
            started = self.clock()
            # Pipelined: batch N+1 is claimed while batch N's hooks and finishes run, and at most
            # those two are in flight.
            running: asyncio.Task[None] | None = None
            try:
                if self._owed:
                    await self._settle_owed()
                while True:
                    claimed = await self._claim_batch()
                    ended += len(claimed)
                    previous = running
                    running = None
                    if claimed:
                        running = asyncio.create_task(self._expire_batch(claimed))
                    if previous is not None:
                        await asyncio.shield(previous)
                    if len(claimed) < self.expiry_batch or self._closing:
                        break
                    if budget is not None and self.clock() - started >= budget:
                        break
                    # A memory store never suspends: let other tasks run between batches.
                    await asyncio.sleep(0)
            finally:
                # Whatever happened (an error, a cancelled caller), every claimed end is finished.
                try:
                    if running is not None:
                        await asyncio.shield(running)
                finally:  # also when that batch failed: else no later pass of this task would run
                    _in_expiry_pass.reset(token)
        return ended

    async def _claim_batch(self) -> list[Session]:
        now = self.clock()
        claiming: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._claiming = claiming
        try:
            claimed = await self.store.claim_expired(now, self._terminate, self.expiry_batch)
            if self._ending or self._owed:  # a claim handed back while it is being ended here
                claimed = [
                    s for s in claimed if s.id not in self._ending and s.id not in self._owed
                ]
            for session in claimed:  # before anyone waiting on the claim looks them up
                self._ending[session.id] = None
                if session.expires_at is not None:
                    self._metrics.observe_lateness(now - session.expires_at)
            return claimed
        finally:
            claiming.set_result(None)
            if self._claiming is claiming:
                self._claiming = None

    async def _expire_batch(self, claimed: list[Session]) -> None:
        """End a claimed batch: up to ``hook_concurrency`` workers take its sessions, children
        first, run their hooks and hand them to the finisher (ends finished in groups) without
        waiting for that; a parent waits for its children. Returns once every one is finished (or
        failed: the first error is raised then, and the failed ends are owed, see ``_owed``)."""
        outcomes: list[object] = []
        queue = collections.deque(claimed)  # handed to workers one by one
        finishing: list[tuple[Session, asyncio.Future[Session | None]]] = []
        try:
            parents = await self.store.having_children([s.id for s in claimed])
            if parents:
                queue = collections.deque(_children_first(claimed))

            async def work() -> None:
                while queue:
                    session = queue.popleft()
                    try:
                        finished = await self._expire_one(session, session.id in parents)
                        if finished is not None:
                            finishing.append((session, finished))
                    except BaseException as exc:  # before its hooks ran: ending its children
                        self._owe(session, False, exc)
                        self._release(session.id)
                        raise

            workers = min(self.hook_concurrency, len(claimed))
            if workers == 1:  # nothing to overlap: no task of its own
                outcomes = [None]
                await work()
            else:
                tasks = [asyncio.create_task(work()) for _ in range(workers)]
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            finished = await asyncio.gather(*(f for _, f in finishing), return_exceptions=True)
            for (session, _), result in zip(finishing, finished, strict=True):
                if isinstance(result, BaseException):
                    self._owe(session, True, result)
            outcomes += finished
        except Exception as exc:
            for session in queue:  # never handed to a worker
                self._owe(session, False, exc)
            raise
        finally:
            for session in claimed:  # failed or cancelled: release whoever waits for them
                self._release(session.id)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _expire_one(
        self, claimed: Session, parent: bool
    ) -> asyncio.Future[Session | None] | None:
        if parent:  # the store said it has children: those not in a batch are ended here
            await self._end_children(claimed.id, wait=True)
        if self._hooks:
            async with self._hook_slots:
                await self._run_hooks(claimed, claimed.end_reason or "expired")
        finished = await self._finisher.finish(claimed)
        session_id = claimed.id
        if finished.done() and finished.exception() is None:  # a store that never waits
            self._release(session_id)
            return None

        def release(_: object) -> None:
            self._release(session_id)

        finished.add_done_callback(release)
        return finished

    def _release(self, session_id: str) -> None:
        """The end of ``session_id`` is over (finished or failed): a waiting parent goes on."""
        pending = self._ending.pop(session_id, None)
        if pending is not None and not pending.done():
            pending.set_result(None)

    # hooks

    def on_end(self, hook: _H) -> _H:
        """Register a cleanup hook ``hook(session, reason)``, sync or async; usable as a decorator.

        Hooks run once per session, in registration order, each under ``hook_timeout``; sync hooks
        run in a worker thread. A hook that fails or hangs is logged and counted, and cleanup goes on.
        """
        if not callable(hook):
            raise ValidationError(f"on_end needs a callable, got {hook!r}")
        self._hooks.append(hook)
        self._async_hooks.append(_is_async(hook))
        return hook

    async def _run_hooks(self, session: Session, reason: str) -> None:
        for hook, is_async in zip(self._hooks, self._async_hooks, strict=True):
            self._metrics.hook_calls += 1
            try:
                if is_async:
                    call: Awaitable[Any] = hook(session, reason)  # type: ignore[assignment]
                else:
                    call = asyncio.to_thread(hook, session, reason)
                async with asyncio.timeout(self.hook_timeout):  # not wait_for: see _reap_forever
                    await call
            except Exception as exc:
                self._metrics.hook_failures += 1
                what = "timed out" if isinstance(exc, TimeoutError) else f"failed: {exc!r}"
                logger.error(
                    "cleanup hook %s %s for session %s (reason %s)",
                    getattr(hook, "__qualname__", hook),
                    what,
                    session.id,
                    reason,
                    exc_info=not isinstance(exc, TimeoutError),
                )

    # containers

    def data(self, session_id: str) -> SessionData:
        """The session's private key → JSON value store."""
        return SessionData(self, check_id(session_id))

    def history(self, session_id: str) -> SessionHistory:
        """The session's private append-only history."""
        return SessionHistory(self, check_id(session_id))

    # events and metrics

    def subscribe(
        self,
        *,
        namespace: str | None = None,
        kinds: Collection[str] | None = None,
        session_id: str | None = None,
        after: str | None = None,
    ) -> AsyncGenerator[SessionEvent, None]:
        """Events in order: from now on, or resumed after the event id ``after``.

        ``kinds`` keeps only events of those kinds; ``None`` or an empty collection means every
        kind (protobuf cannot tell an empty list from an absent one, so every face agrees on this).

        ``missed`` events (always delivered, whatever the filters) tell a subscriber that fell a
        whole buffer behind how many events it lost. Bad filters raise here, before any iteration.
        """
        if namespace is not None:
            check_id(namespace, "namespace")
        if session_id is not None:
            check_id(session_id)
        if isinstance(kinds, str):
            raise ValidationError(f"kinds must be a collection of event kinds, got {quoted(kinds)}")
        wanted = None
        if kinds:  # None or empty: every kind
            given = list(kinds) if isinstance(kinds, Collection) else kinds
            wanted = frozenset(check_names(given, "kinds"))
            if unknown := wanted - EventKind.ALL:
                raise ValidationError(f"unknown event kinds: {quoted(sorted(unknown))}")
        if after is not None and type(after) is not str:
            raise ValidationError(f"after must be an event id string, got {quoted(after)}")
        # Subscribe now, not at the first iteration: events from here on are the caller's.
        return self._events(self.store.subscribe(after), namespace, wanted, session_id)

    async def _events(
        self,
        events: AsyncGenerator[SessionEvent, None],
        namespace: str | None,
        wanted: frozenset[str] | None,
        session_id: str | None,
    ) -> AsyncGenerator[SessionEvent, None]:
        self._metrics.subscribers += 1
        try:
            async for event in events:
                session = event.session
                if session is not None and (
                    (wanted is not None and event.kind not in wanted)
                    or (namespace is not None and session.namespace != namespace)
                    or (session_id is not None and session.id != session_id)
                ):
                    continue
                yield event
        finally:
            self._metrics.subscribers -= 1
            await events.aclose()

    async def metrics(self) -> MetricsSnapshot:
        """Live sessions by namespace and state (from the store) and this process's counters."""
        return self._metrics.snapshot(await self.store.census())

    # expiry

    def _scheduled(self, session: Session) -> None:
        deadline = session.expires_at
        if deadline is None:
            return
        if self._in_pass:
            # The pass reads the next deadline when it ends; one set meanwhile is remembered
            # here rather than waking the task for a second pass at once.
            self._soonest = min(self._soonest, deadline)
        elif deadline < self._wake_at:
            # Woken, the task reads the next deadline from the store at its pass (which sets
            # _wake_at again): until then no create or touch needs to wake it once more.
            self._wake_at = -math.inf
            self._wake.set()

    async def _reap_forever(self) -> None:
        while not self._closing:
            self._wake.clear()
            self._in_pass, self._soonest = True, float("inf")
            delay = self.poll_interval
            try:
                await self._expire(budget=self.poll_interval)
                await self.store.purge(self.clock())
                deadline = await self.store.next_deadline()
                soonest = min(self._soonest, float("inf") if deadline is None else deadline)
                delay = min(max(soonest - self.clock(), 0.0), delay)
            except StoreUnavailable as exc:
                logger.warning("expiry paused, store unavailable: %s", exc)
            except Exception:
                logger.exception("expiry pass failed; retrying")
            finally:
                self._in_pass = False
            if self._closing:
                return
            self._wake_at = self.clock() + delay
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
            # arrives as the wake flag is set, and close() would then wait for this task forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()


class _Request:
    """``track_request``'s block. A class, not ``contextlib.asynccontextmanager``: its async
    generator (created, registered with the loop, stepped twice) cost as much as the two changes
    it wrapped on the memory store."""

    __slots__ = ("_hub", "_session_id")

    def __init__(self, hub: SessionHub, session_id: str) -> None:
        self._hub = hub
        self._session_id = session_id

    async def __aenter__(self) -> Session:
        hub = self._hub
        max_requests = hub.limits.max_requests_per_session
        change = Change(now=hub.clock(), requests=1, max_requests=max_requests, touch=True)
        return await hub._modify(self._session_id, change)

    async def __aexit__(self, *exc_info: object) -> None:
        hub = self._hub
        with contextlib.suppress(SessionNotFound):  # ended meanwhile: nothing to release
            await hub._modify(self._session_id, Change(now=hub.clock(), requests=-1, touch=True))


def _children_first(batch: list[Session]) -> list[Session]:
    """The batch ordered so that a session comes after its children and their descendants in it:
    workers take children before the parents that wait for them."""
    by_id = {session.id: session for session in batch}

    def depth(session: Session) -> int:
        levels = 0
        while session.parent_id in by_id and levels < len(batch):  # links never form a cycle
            session = by_id[session.parent_id]
            levels += 1
        return levels

    return sorted(batch, key=depth, reverse=True)


class _Finisher:
    """Finishes the ends of an expiry pass in groups (group commit).

    The first end to arrive while no ``finish_ends`` call is out sends its group at once, from its
    own task (no hop through another task: an end is not later than with one call per session);
    the ends whose hooks are done while a call is out go together in the next one. A burst costs a
    store round trip per group, not per session, and no end waits for a group to fill up.
    """

    def __init__(self, hub: SessionHub) -> None:
        self._hub = hub
        self._queue: list[tuple[Session, asyncio.Future[Session | None]]] = []
        self._busy = False  # a finish_ends call is out (or about to be)
        self._writer: asyncio.Task[None] | None = None

    async def finish(self, claimed: Session) -> asyncio.Future[Session | None]:
        """Queue the end; the future has the ended session. Only the caller that sends a group
        itself waits here, for that round trip."""
        future: asyncio.Future[Session | None] = asyncio.get_running_loop().create_future()
        self._queue.append((claimed, future))
        if not self._busy:
            self._busy = True
            try:
                await self._write()
            finally:
                if self._queue:  # arrived meanwhile: a task of their own, so this one returns
                    self._writer = asyncio.create_task(
                        self._write_rest(), name="sessionhub-finish-ends"
                    )
                else:
                    self._busy = False
        return future

    async def _write_rest(self) -> None:
        try:
            while self._queue:
                await asyncio.sleep(0)  # the ends whose hooks finish in this tick join the group
                await self._write()
        finally:
            self._busy, self._writer = False, None
            queued, self._queue = self._queue, []
            for _, future in queued:  # only when cancelled: nobody may wait forever
                if not future.done():
                    future.set_exception(StoreUnavailable("the hub stopped finishing ends"))

    async def _write(self) -> None:
        hub = self._hub
        limit = hub.expiry_batch
        group, self._queue = self._queue[:limit], self._queue[limit:]
        now = hub.clock()
        ends = [(claimed.id, now + hub._retention_of(claimed)) for claimed, _ in group]
        try:
            finished = await hub.store.finish_ends(ends, now, hub.lifecycle.ended)
        except BaseException as exc:
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        counts = hub._metrics.ended  # counted as the store answers, not as each waiter wakes
        for (claimed, future), ended in zip(group, finished, strict=True):
            counts[claimed.end_reason or "expired"] += 1
            if not future.done():
                future.set_result(ended)


def _retention(value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1e12:
        raise ValidationError(
            f"retention must be zero or a positive number of seconds, got {quoted(value)}"
        )
    return float(value)


def _version(value: int | None) -> int | None:
    if value is not None and (type(value) is not int or value < 1):
        raise ValidationError(f"expected_version must be a positive integer, got {quoted(value)}")
    return value


def _is_async(hook: object) -> bool:
    return inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(
        getattr(hook, "__call__", None)  # noqa: B004 - an object whose __call__ is async
    )
