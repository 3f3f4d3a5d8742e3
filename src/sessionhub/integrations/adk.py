"""Google ADK sessions kept in sessionhub: ``SessionHubSessionService``, a ``BaseSessionService``.

    service = SessionHubSessionService("redis://localhost:6379/0", idle_timeout=3600)
    runner = Runner(agent=agent, app_name="shop", session_service=service)

It behaves as ADK's ``InMemorySessionService`` does (state prefixes, partial events skipped, temp
state kept in memory only, ``GetSessionConfig`` filters, listing ordered by last update), and adds
what sessionhub gives every session: idle timeout and ttl, cleanup hooks on expiry, a paginated
listing, and many processes sharing one store or server.

How an ADK session lives in the hub:

- one hub session per ADK session, in the namespace ``adk:<app>``, owned by the ADK user (so the
  hub's user index lists a user's sessions), with the ADK names in its details;
- its data key ``adk`` is the *head*: the revision, the session-scoped state, the last update
  time and the event of that revision. Appending an event is a compare-and-set of the head on its
  version, so of two processes appending to the same revision one wins and the other gets ADK's
  ``StaleSessionError``: histories never interleave, no write is lost;
- each event is then a history record of kind ``event`` carrying its revision. A writer that dies
  between the two steps leaves its event in the head, and the next writer records it first, so
  every revision below the head's is in the history (readers drop the rare duplicate);
- ``app:`` and ``user:`` state are data entries of one long-lived hub session per app and one per
  (app, user), in the namespace ``adk-state:<app>``, shared by every session and process;
- the head also names the session's incarnation (``gen``, new at each create), so a process may
  keep the events it has seen recorded by (session, incarnation, revision): a ``get_session``
  whose events are all known reads only the head (``_adk_cache``).

Copies, as ``InMemorySessionService`` makes them: a session returned (created, read, listed) has
its own state, sharing no mutable value with the head this module keeps for the next append nor
with another listed session; a caller's event is trimmed of its ``temp:`` keys only once stored
(the stored JSON leaves them out by ``exclude``), so a refused append leaves it as given.

Speed (memory store beside ``InMemorySessionService``, ``bench_agents.py --quick --adk``, three
runs alternating main and this module, loaded 2-core machine): create 0.7-0.8x -> 1.0x, append
0.6x -> 0.6-0.7x (4.7-6.4x over a session of 2000 events, where ADK's own append scans the
session for a duplicate id), warm get of 50 events 2.0x, listing 2.0-2.1x, cold get 0.8x ->
0.9-1.0x (events built from their JSON: ``_adk_events``). Measured step by step (us per call):
a create is ``hub.create`` 4.7 (1.6 of it the details' size check), the head's encoding and
write 2.0, the ADK ``Session`` 0.9, the merge of app/user state 0.5; ADK's is a validated
``Session`` 2.2 and its deep copy 2.4, with the same 2.0 for a uuid (ours 0.7). An append is
the event's JSON 2.0, the head's compare-and-set 2.0, the history record 1.4, the ``user:`` key
1.5 and ADK's own bookkeeping 1.4. A prototype of two store operations (a session created with
its head; a head set with its history record) measured create 1.1-1.2x and append 0.75-0.8x:
2x needs less than Python does per call here, not only fewer store calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import itertools
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import msgspec
from google.adk.errors._stale_session_error import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.features import FeatureName, is_feature_enabled
from google.adk.platform import time as platform_time
from google.adk.platform import uuid as platform_uuid
from google.adk.sessions.base_session_service import (
    BaseSessionService,
    GetSessionConfig,
    ListSessionsResponse,
)
from google.adk.sessions.session import Session
from google.adk.sessions.state import State
from pydantic import BaseModel, PrivateAttr

from .._errors import DuplicateSession, PayloadTooLarge, SessionNotFound, VersionConflict
from .._hub import SessionHub
from .._limits import encode_json
from .._models import DataEntry, json_encoder
from .._models import Session as HubSession
from ._adk_cache import Cached, EventCache, copier, parse
from ._hubs import Hub, HubLink, hub_name, hub_name_under

__all__ = ["AdkSessionRef", "SessionHubSessionService"]

_HEAD = "adk"
_EVENT = "event"
_PAGE = 1000  # the most records one history read returns
_EVENT_CACHE = 10_000  # parsed events kept per service
# a session's incarnation: this process's token and a counter (an id deleted and made again is a
# new incarnation, whose revisions are other events)
_PROCESS = secrets.token_hex(8)
_INCARNATIONS = itertools.count()
_STALE = (
    "The session has been modified in storage since it was loaded: another writer appended to "
    "it. Reload it with get_session and try again."
)


@dataclass(frozen=True, slots=True)
class AdkSessionRef:
    """The ADK names of a session, as cleanup hooks receive them."""

    app_name: str
    user_id: str
    session_id: str


AdkEndHook = Callable[[AdkSessionRef, str], Awaitable[None] | None]


class _Head(msgspec.Struct, kw_only=True):
    """The head of a session as stored, with the data version it was read at."""

    version: int = 0
    rev: int = 0
    state: dict[str, Any] = msgspec.field(default_factory=dict)
    time: float = 0.0
    pending: str | None = None  # the event of this revision, as JSON
    gen: str | None = None  # the incarnation (absent from heads written before it existed)

    @classmethod
    def of(cls, entry: DataEntry | None) -> _Head:
        if entry is None:
            return cls()
        return msgspec.convert({**entry.value, "version": entry.version}, cls)


class HubBackedSession(Session):
    """An ADK ``Session`` that remembers the head it was read at, so that the next append is one
    compare-and-set without reading the head again."""

    _head: _Head | None = PrivateAttr(default=None)
    # whether the head's own event is known to be in the history already
    _recorded: bool = PrivateAttr(default=False)


def _remember(session: HubBackedSession, head: _Head, *, recorded: bool) -> None:
    """Set the session's private head and flag in its private dict: pydantic's attribute access
    to private attributes costs a tenth of an append."""
    private = session.__pydantic_private__
    if private is None:
        session._head, session._recorded = head, recorded
    else:
        private["_head"], private["_recorded"] = head, recorded


_S = TypeVar("_S", bound=Session)
_setattr = object.__setattr__
_PRIVATE_DEFAULTS: dict[type[Session], dict[str, Any]] = {}


def _built(
    kind: type[_S],
    *,
    id: str,
    app_name: str,
    user_id: str,
    state: dict[str, Any],
    events: list[Event] | None = None,
    last_update_time: float,
) -> _S:
    """``kind(id=..., ...)`` without pydantic's validation of what this module built itself (a
    str, a dict, a list of ``Event``, a float): a tenth of a listing's cost. The result is the
    instance validation makes: the same fields, in order, fields set, private defaults."""
    private = _PRIVATE_DEFAULTS.get(kind)
    if private is None:
        template = kind(id="", app_name="", user_id="")
        private = _PRIVATE_DEFAULTS[kind] = dict(template.__pydantic_private__ or {})
    session = kind.__new__(kind)
    given = events is not None
    fields = {
        "id": id,
        "app_name": app_name,
        "user_id": user_id,
        "state": state,
        "events": events if given else [],
        "last_update_time": float(last_update_time),
    }
    _setattr(session, "__dict__", fields)
    _setattr(session, "__pydantic_fields_set__", set(fields) if given else set(_SET_NO_EVENTS))
    _setattr(session, "__pydantic_extra__", None)
    _setattr(session, "__pydantic_private__", private.copy())
    return session


_SET_NO_EVENTS = frozenset({"id", "app_name", "user_id", "state", "last_update_time"})


def _scoped(
    state: Mapping[str, Any], temp: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``state`` split into (app, user, session) state, prefixes removed; temp keys go into
    ``temp`` if given (as they are), else nowhere."""
    app: dict[str, Any] = {}
    user: dict[str, Any] = {}
    session: dict[str, Any] = {}
    for key, value in state.items():
        if ":" not in key:  # no prefix (the usual key), as every prefix ends with ":"
            session[key] = value
        elif key.startswith(State.APP_PREFIX):
            app[key.removeprefix(State.APP_PREFIX)] = value
        elif key.startswith(State.USER_PREFIX):
            user[key.removeprefix(State.USER_PREFIX)] = value
        elif not key.startswith(State.TEMP_PREFIX):
            session[key] = value
        elif temp is not None:
            temp[key] = value
    return app, user, session


def _own_copies(values: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """A function returning a deep copy of ``values`` (decoded for this call, never changed
    after), or ``values`` itself when none of its values could be changed in place."""
    if all(type(value) in _SCALARS for value in values.values()):
        return lambda: values
    return cast("Callable[[], dict[str, Any]]", copier(values))


_SCALARS = frozenset({type(None), bool, int, float, str})


def _own_state(state: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``state`` (a decoded head's, so JSON values): shallow when it can be."""
    if all(type(value) in _SCALARS for value in state.values()):
        return state.copy()
    return copy.deepcopy(state)


# ADK's id provider as ADK sets it by default (an application may set its own, tests often do)
_IDS: ContextVar[Callable[[], str]] | None = getattr(
    platform_uuid, "_id_provider_context_var", None
)
_DEFAULT_IDS = getattr(platform_uuid, "_default_id_provider", None)
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _new_id() -> str:
    """``platform_uuid.new_uuid()``: under ADK's default provider, ``str(uuid.uuid4())`` made from
    the same 122 random bits at a third of its cost (a tenth of a create_session)."""
    if _IDS is None or _IDS.get() is not _DEFAULT_IDS:
        return platform_uuid.new_uuid()
    digits = os.urandom(16).hex()
    return (
        f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-"
        f"{_VARIANT[digits[16]]}{digits[17:20]}-{digits[20:]}"
    )


def _state_key(key: str) -> str:
    """A data key for an app or user state key (the entry keeps the original beside its value)."""
    if 1 <= len(key) <= 512 and key.isprintable():
        return key
    return hub_name(key)


def _event_json(event: Event, temp: Mapping[str, Any]) -> str:
    """``event.model_dump_json(exclude_none=True)``, less its ``temp`` state keys; made by the
    event's serializer itself, as model_dump_json makes it, without that call's keywords (a
    twentieth of an append)."""
    exclude = {"actions": {"state_delta": set(temp)}} if temp else None
    if type(event).model_dump_json is not BaseModel.model_dump_json:  # a subclass's own
        return event.model_dump_json(exclude_none=True, exclude=exclude)
    return event.__pydantic_serializer__.to_json(event, exclude_none=True, exclude=exclude).decode()


def _event_record(rev: int, event: str) -> dict[str, Any]:
    # the event as its JSON text: pydantic parses that several times faster than a dict
    return {"rev": rev, "event": event}


class SessionHubSessionService(BaseSessionService):
    """An ADK session service over a sessionhub hub, client, or store/server URL.

    ``idle_timeout`` and ``ttl`` (seconds, ``None`` for never, the default as in ADK) apply to every
    session this service creates; an expired session is gone, as if deleted, and the hooks given to
    ``on_end`` run once for it.
    """

    def __init__(
        self,
        hub: Hub | str = "memory://",
        *,
        idle_timeout: float | None = None,
        ttl: float | None = None,
    ) -> None:
        self._link = HubLink(hub)
        self.idle_timeout = idle_timeout
        self.ttl = ttl
        self._events = EventCache(_EVENT_CACHE)

    @property
    def hub(self) -> Hub:
        return self._link.hub

    async def close(self) -> None:
        """Close the hub if this service made it from a URL."""
        await self._link.close()

    async def __aenter__(self) -> SessionHubSessionService:
        await self._link.ready()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # naming

    @staticmethod
    def _namespace(app_name: str) -> str:
        return hub_name(f"adk:{app_name}")

    @staticmethod
    def _session_key(app_name: str, user_id: str, session_id: str) -> str:
        return hub_name(f"adk:{app_name}", user_id, session_id)

    # sessions

    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        hub = await self._link.ready()
        session_id = (session_id.strip() if session_id else None) or _new_id()
        # named as _session_key names it, without caching a name that may be used only once
        key = hub_name_under((f"adk:{app_name}", user_id), session_id)
        app_delta, user_delta, session_state = _scoped(state or {})
        try:
            await hub.create(
                key,
                namespace=self._namespace(app_name),
                user_id=hub_name(user_id),
                details={"adk": {"app": app_name, "user": user_id, "session": session_id}},
                idle_timeout=self.idle_timeout,
                ttl=self.ttl,
            )
        except DuplicateSession:
            raise AlreadyExistsError(f"Session with id {session_id} already exists.") from None
        if app_delta or user_delta:
            await self._write_scoped(hub, app_name, user_id, app_delta, user_delta)
        now = platform_time.get_time()
        gen = f"{_PROCESS}-{next(_INCARNATIONS)}"
        head = {"rev": 0, "state": session_state, "time": now, "pending": None, "gen": gen}
        entry = await _set_entry(hub, key, _HEAD, head, 0)
        session = _built(
            HubBackedSession,
            id=session_id,
            app_name=app_name,
            user_id=user_id,
            state=_own_state(session_state),  # a copy, as ADK returns (not the caller's values)
            last_update_time=now,
        )
        # the head as written (not decoded back from the entry: a tenth of a create)
        _remember(
            session,
            _Head(version=entry.version, state=session_state, time=now, gen=gen),
            recorded=True,
        )
        await self._merge_scoped(hub, session)
        return session

    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        hub = await self._link.ready()
        session_id = session_id.strip() if session_id else session_id
        key = self._session_key(app_name, user_id, session_id)
        try:
            head = _Head.of(await _head_entry(hub, key))
            events, recorded = await self._recent_events(hub, key, head, config)
        except SessionNotFound:
            return None
        session = _built(
            HubBackedSession,
            id=session_id,
            app_name=app_name,
            user_id=user_id,
            # the session's own copy: the head keeps what is stored, for the next append
            state=_own_state(head.state),
            events=events,
            last_update_time=head.time,
        )
        _remember(session, head, recorded=recorded)
        await self._merge_scoped(hub, session)
        return session

    async def _recent_events(
        self, hub: Hub, key: str, head: _Head, config: GetSessionConfig | None
    ) -> tuple[list[Event], bool]:
        """The events ``config`` asks for, oldest first, as of ``head``; and whether the head's
        own event is in the history.

        Walks the revisions from the head's down while ``num_recent_events`` and
        ``after_timestamp`` allow, exactly as ``InMemorySessionService`` cuts its list. When this
        process has every revision the walk may need cached (it recorded or read them), the
        history is not read at all; otherwise it is read from its newest record, page by page as
        the walk goes, skipping records of revisions past the head (appended since it was read)
        and duplicates.
        """
        wanted = None if config is None else config.num_recent_events
        after = None if config is None else config.after_timestamp
        # read once: the flag reads the environment, a fifth of a 50-event get
        shared = is_feature_enabled(FeatureName.IN_MEMORY_SESSION_SERVICE_LIGHT_COPY)
        cached = self._events.revisions(key, head.gen)
        lowest = 1 if wanted is None else head.rev - wanted + 1
        read: dict[int, Cached] = {}  # what this call reads from the history
        found: Mapping[int, Cached] = read
        exhausted = False
        if head.gen is not None and all(r in cached for r in range(max(lowest, 1), head.rev + 1)):
            found, exhausted = cached, True  # all known: no history read
        recorded = head.rev == 0 or head.rev in found
        taken: list[Event] = []
        next_rev = head.rev
        cursor: int | None = None
        while next_rev > 0 and (wanted is None or len(taken) < wanted):
            if next_rev not in found and not exhausted:
                size = _PAGE if wanted is None else min(_PAGE, wanted - len(taken) + 1)
                page = await hub.history(key).read(
                    after=cursor, limit=size, newest_first=True, kind=_EVENT
                )
                exhausted = len(page) < size
                for record in page:
                    cursor = record.seq
                    rev = record.payload["rev"]
                    if rev <= head.rev and rev not in read:
                        read[rev] = self._events.record(key, head.gen, rev, record.payload["event"])
                recorded = recorded or head.rev in found
                continue
            known = found.get(next_rev)
            if known is not None:
                event = known.event() if shared else known.copy()
            elif next_rev == head.rev and head.pending is not None:
                # written by a writer that has not recorded it (yet): parsed for this read only
                event = parse(head.pending)
            else:
                break  # a revision is missing: return what is contiguous
            if after is not None and event.timestamp < after:
                break
            taken.append(event)
            next_rev -= 1
        taken.reverse()
        return taken, recorded

    async def list_sessions(
        self, *, app_name: str, user_id: str | None = None
    ) -> ListSessionsResponse:
        """Every session of the app (or of one user), without events, oldest update first."""
        sessions: list[Session] = []
        cursor: str | None = None
        while True:
            page, cursor = await self.list_sessions_page(
                app_name=app_name, user_id=user_id, limit=_PAGE, cursor=cursor
            )
            sessions.extend(page)
            if cursor is None:
                break
        sessions.sort(key=lambda s: (s.last_update_time, s.user_id, s.id))
        return ListSessionsResponse(sessions=sessions)

    async def list_sessions_page(
        self,
        *,
        app_name: str,
        user_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Session], str | None]:
        """One page of the app's (or one user's) sessions, without events, in the hub's order;
        pass the returned cursor back for the next page (``None`` after the last).

        Unlike ``list_sessions`` it costs one page, whatever the number of sessions.
        """
        hub = await self._link.ready()
        page = await hub.find(
            namespace=self._namespace(app_name),
            user_id=None if user_id is None else hub_name(user_id),
            limit=limit,
            cursor=cursor,
        )
        # the ADK names straight from the details (no AdkSessionRef per listed session)
        listed = [
            (record.id, names)
            for record in page.items
            if isinstance(names := record.details.get("adk"), dict)
        ]
        owners = sorted({names["user"] for _, names in listed})
        # independent reads, made together: one wait for all of them on a remote store or server
        app_state, heads, *user_states = await _together(
            hub,
            self._scoped_state(hub, self._app_key(app_name)),
            _listed_heads(hub, [key for key, _ in listed]),
            *(self._scoped_state(hub, self._user_key(app_name, owner)) for owner in owners),
        )
        # each listed session gets its own copies of the scoped values (as InMemorySessionService
        # deep-copies them per session): one compiled copy each, or the decoded dict itself when
        # its values are immutable scalars
        app_prefixed = _own_copies({State.APP_PREFIX + k: v for k, v in app_state.items()})
        prefixed_of = {
            owner: _own_copies({State.USER_PREFIX + k: v for k, v in state.items()})
            for owner, state in zip(owners, user_states, strict=True)
        }
        sessions: list[Session] = []
        for (_, names), head in zip(listed, heads, strict=True):
            if head is None:
                continue  # ended since the page was read
            state = head.get("state", {})  # decoded for this call: its own
            state.update(app_prefixed())
            state.update(prefixed_of[names["user"]]())
            sessions.append(
                _built(
                    Session,
                    id=names["session"],
                    app_name=app_name,
                    user_id=names["user"],
                    state=state,
                    last_update_time=head.get("time", 0.0),
                )
            )
        return sessions, page.cursor

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        hub = await self._link.ready()
        session_id = session_id.strip() if session_id else session_id
        await hub.end(self._session_key(app_name, user_id, session_id), "deleted")

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        hub = await self._link.ready()
        return await self._scoped_state(hub, self._user_key(app_name, user_id))

    # events

    async def append_event(self, session: Session, event: Event) -> Event:
        if event.partial:
            return event
        hub = await self._link.ready()
        key = self._session_key(session.app_name, session.user_id, session.id)
        # temp state is applied to the session (as ADK's _apply_temp_state does) only once the
        # event is stored: a refused append (stale, not found) leaves the session as it was, as
        # InMemorySessionService leaves it
        temp: dict[str, Any] = {}
        delta = event.actions.state_delta if event.actions else {}
        app_delta, user_delta, session_delta = _scoped(delta or {}, temp)
        try:
            # the head this service read or wrote for the session, its event recorded (the
            # usual case, looked up here: a call of _writable_head costs a twentieth of an append)
            private = (
                session.__pydantic_private__ if isinstance(session, HubBackedSession) else None
            )
            head = private.get("_head") if private and private.get("_recorded") else None
            if head is None:
                head = await self._writable_head(hub, key, session)
            # stored without its temp keys, but the caller's event is trimmed (as ADK's base
            # service trims it) only once stored: a refused one is left as it was given
            raw = _event_json(event, temp)
            if raw == head.pending:
                return event  # an equal re-delivery of the last event: stored already, as in ADK
            state = {**head.state, **session_delta}
            new_head = {
                "rev": head.rev + 1,
                "state": state,
                "time": event.timestamp,
                "pending": raw,
                "gen": head.gen,
            }
            recorded = True
            try:
                entry = await _set_entry(hub, key, _HEAD, new_head, head.version)
                await self._record(hub, key, head, entry, raw, session)
                self._events.record(key, head.gen, head.rev + 1, raw)
                written = _Head(
                    version=entry.version,
                    rev=head.rev + 1,
                    state=state,
                    time=event.timestamp,
                    pending=raw,
                    gen=head.gen,
                )
            except VersionConflict:
                written = _Head.of(await self._retried(hub, key, raw))
                recorded = False  # the first attempt may have died before recording it
        except SessionNotFound:
            raise SessionNotFoundError(f"Session {session.id} not found.") from None
        if app_delta or user_delta:
            await self._write_scoped(hub, session.app_name, session.user_id, app_delta, user_delta)
        if temp:
            session.state.update(temp)
        event = self._trim_temp_delta_state(event)
        self._commit_event_to_session(session, event)
        session.last_update_time = event.timestamp
        if isinstance(session, HubBackedSession):
            _remember(session, written, recorded=recorded)
        return event

    def _update_session_state(self, session: Session, event: Event) -> None:
        """ADK's own, in one ``update`` instead of one per key (the same state after it)."""
        if event.actions and event.actions.state_delta:
            session.state.update(event.actions.state_delta)

    @staticmethod
    async def _record(
        hub: Hub, key: str, head: _Head, entry: DataEntry, raw: str, session: Session
    ) -> None:
        """Record the event the head now holds; if the history refuses it (too large), put the
        head back as it was, so the event is refused whole and the session goes on without it."""
        try:
            await _append_record(hub, key, head.rev + 1, raw)
        except PayloadTooLarge:
            old = {
                "rev": head.rev,
                "state": head.state,
                "time": head.time,
                "pending": head.pending,
                "gen": head.gen,
            }
            restored = await _set_entry(hub, key, _HEAD, old, entry.version)
            if isinstance(session, HubBackedSession):
                _remember(session, _Head.of(restored), recorded=True)
            raise

    @staticmethod
    async def _retried(hub: Hub, key: str, raw: str) -> DataEntry:
        """After a lost compare-and-set: the head, if its event is this very one (a retry of an
        append whose answer was lost); ``StaleSessionError`` if another writer got there first."""
        entry = await _head_entry(hub, key)
        if entry is None or _Head.of(entry).pending != raw:
            raise StaleSessionError(_STALE)
        return entry

    async def _writable_head(self, hub: Hub, key: str, session: Session) -> _Head:
        """The head the caller's session stands on, its event recorded in the history.

        A session read by this service knows its head; the stored one must still be it (checked
        by the compare-and-set). Another session object is checked as ADK's database service
        checks one: stale if the store was updated after it.
        """
        known: _Head | None = None
        if isinstance(session, HubBackedSession):
            private = session.__pydantic_private__ or {}
            known = cast("_Head | None", private.get("_head"))
            if known is not None and private.get("_recorded"):
                return known
        head = _Head.of(await _head_entry(hub, key))
        if known is not None and known.version != head.version:
            raise StaleSessionError(_STALE)
        if known is None and head.time > session.last_update_time:
            raise StaleSessionError(_STALE)
        if head.pending is not None and not await self._recorded(hub, key, head):
            # its writer died, or has not recorded it yet: record it before moving past it
            await _append_record(hub, key, head.rev, head.pending)
            self._events.record(key, head.gen, head.rev, head.pending)
        return head

    @staticmethod
    async def _recorded(hub: Hub, key: str, head: _Head) -> bool:
        newest = await hub.history(key).read(limit=1, newest_first=True, kind=_EVENT)
        return bool(newest) and newest[0].payload["rev"] >= head.rev

    # app and user state

    @staticmethod
    def _app_key(app_name: str) -> str:
        return hub_name(f"adk-app:{app_name}")

    @staticmethod
    def _user_key(app_name: str, user_id: str) -> str:
        return hub_name(f"adk-user:{app_name}", user_id)

    async def _scoped_state(self, hub: Hub, key: str) -> dict[str, Any]:
        try:
            if not isinstance(hub, SessionHub):
                entries = await hub.data(key).entries()
            elif hub.store.ephemeral and await hub.store.get(key) is None:
                # an app or user without state yet (the usual case): an in-process lookup instead
                # of a raised and caught SessionNotFound, whose traceback costs a third of a
                # create_session (in garbage collection too)
                return {}
            else:
                entries = await hub.store.data_items(key, hub.clock())
        except SessionNotFound:
            return {}
        return {entry.value[0]: entry.value[1] for entry in entries}

    async def _merge_scoped(self, hub: Hub, session: Session) -> None:
        """Put the app and user state into ``session.state`` under their prefixes."""
        app_key = self._app_key(session.app_name)
        user_key = self._user_key(session.app_name, session.user_id)
        if isinstance(hub, SessionHub) and hub.store.ephemeral:
            # in-process: an app and a user without state yet (the usual case) are two lookups,
            # not two reads made and awaited (a fifth of a create_session)
            get_now = hub.store.get_now
            if get_now is not None and get_now(app_key) is None and get_now(user_key) is None:
                return
        app_state, user_state = await _together(
            hub, self._scoped_state(hub, app_key), self._scoped_state(hub, user_key)
        )
        session.state.update({State.APP_PREFIX + k: v for k, v in app_state.items()})
        session.state.update({State.USER_PREFIX + k: v for k, v in user_state.items()})

    async def _write_scoped(
        self,
        hub: Hub,
        app_name: str,
        user_id: str,
        app_delta: Mapping[str, Any],
        user_delta: Mapping[str, Any],
    ) -> None:
        if app_delta:
            await self._write_state(hub, self._app_key(app_name), app_name, None, app_delta)
        if user_delta:
            await self._write_state(
                hub, self._user_key(app_name, user_id), app_name, user_id, user_delta
            )

    async def _write_state(
        self,
        hub: Hub,
        key: str,
        app_name: str,
        user_id: str | None,
        delta: Mapping[str, Any],
    ) -> None:
        """Write each key of ``delta`` (last writer wins per key, as in ADK) into the scope's hub
        session, made on first use; it never expires."""
        for name, value in delta.items():
            try:
                await _set_entry(hub, key, _state_key(name), [name, value], None)
            except SessionNotFound:
                await self._create_scope(hub, key, app_name, user_id)
                await _set_entry(hub, key, _state_key(name), [name, value], None)

    async def _create_scope(self, hub: Hub, key: str, app_name: str, user_id: str | None) -> None:
        scope = {"app": app_name} if user_id is None else {"app": app_name, "user": user_id}
        with contextlib.suppress(DuplicateSession):  # another writer made it first
            await hub.create(
                key,
                namespace=hub_name(f"adk-state:{app_name}"),
                details={"adk_state": scope},
                idle_timeout=None,
                ttl=None,
            )

    # expiry hooks

    def on_end(self, hook: AdkEndHook) -> AdkEndHook:
        """Run ``hook(ref, reason)`` (sync or async) once when an ADK session of this hub ends:
        ``expired`` past its idle timeout or ttl, ``deleted`` by ``delete_session``, ... .

        Hooks run in the process that owns the hub, so this needs an embedded ``SessionHub``
        (for a server, register them on the server's hub).
        """
        hub = self._link.hub
        if not isinstance(hub, SessionHub):
            raise TypeError("cleanup hooks run where the hub runs: give the service a SessionHub")

        async def translated(ended: HubSession, reason: str) -> None:
            names = _names(ended)
            if names is None:
                return
            outcome = hook(names, reason)
            if inspect.isawaitable(outcome):
                await outcome

        hub.on_end(translated)
        return hook


def _names(record: HubSession) -> AdkSessionRef | None:
    """The ADK names of a hub session this service made, or ``None`` for any other session."""
    names = record.details.get("adk")
    if not isinstance(names, dict):
        return None
    return AdkSessionRef(app_name=names["app"], user_id=names["user"], session_id=names["session"])


async def _head_entry(hub: Hub, key: str) -> DataEntry | None:
    """The stored head of the session ``key``. On an embedded hub, straight from the store: the
    handle would only check again a key and an id this module made valid (a tenth of a read on
    the memory store)."""
    if isinstance(hub, SessionHub):
        return await hub.store.data_get(key, _HEAD, hub.clock())
    return await hub.data(key).entry(_HEAD)


async def _listed_heads(hub: Hub, keys: list[str]) -> list[dict[str, Any] | None]:
    """The stored heads of the sessions ``keys``, as decoded (``{}`` for a head not written yet,
    ``None`` for a session gone): a listing needs only their state and time, not a ``_Head``."""
    if isinstance(hub, SessionHub) and hub.store.ephemeral:
        # an in-process memory store never waits: one loop, straight to the store
        store, now = hub.store, hub.clock()
        heads: list[dict[str, Any] | None] = []
        for key in keys:
            try:
                entry = await store.data_get(key, _HEAD, now)
            except SessionNotFound:
                heads.append(None)
                continue
            heads.append({} if entry is None else entry.value)
        return heads
    return await _together(hub, *(_head_value(hub, key) for key in keys))


async def _head_value(hub: Hub, key: str) -> dict[str, Any] | None:
    try:
        entry = await _head_entry(hub, key)
    except SessionNotFound:
        return None
    return {} if entry is None else entry.value


def _set_entry(
    hub: Hub, key: str, name: str, value: Any, expected_version: int | None
) -> Awaitable[DataEntry]:
    """``hub.data(key).set(name, value, expected_version=...)``. On an embedded hub, straight to
    the store, encoded and size-checked as the handle does (same errors): the handle would only
    check again a key and an id this module made valid (a third of a write on the memory store).
    The store's own awaitable, not a coroutine around it (one frame less per write)."""
    if isinstance(hub, SessionHub):
        raw = encode_json(value, "data value", hub.limits.max_data_value_bytes)
        return hub.store.data_set(key, name, raw, expected_version, hub.clock())
    return hub.data(key).set(name, value, expected_version=expected_version)


def _append_record(hub: Hub, key: str, rev: int, event: str) -> Awaitable[object]:
    """Record revision ``rev`` (its event as JSON text) in the history; straight to the store on
    an embedded hub, as ``_set_entry`` writes."""
    record = _event_record(rev, event)
    if isinstance(hub, SessionHub):
        # a number and a string: JSON, and flat, so encode_json's checks are only its size limit
        # (a third of its cost); past the limit it raises its own error
        raw = json_encoder.encode(record)
        limit = hub.limits.max_history_record_bytes
        if limit is not None and len(raw) > limit:
            encode_json(record, "history record", limit)
        return hub.store.history_append(key, _EVENT, raw, hub.clock())
    return hub.history(key).append(_EVENT, record)


async def _together(hub: Hub, *reads: Awaitable[Any]) -> list[Any]:
    """The results of independent reads: made together (one wait for all on a remote store or
    server), or one after the other on an in-process memory store, whose reads never wait, so
    tasks for them would only cost."""
    if isinstance(hub, SessionHub) and hub.store.ephemeral:
        return [await read for read in reads]
    return list(await asyncio.gather(*reads))
