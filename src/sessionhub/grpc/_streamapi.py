"""The Stream API's ``ma.streaming.api.v1.SessionManagementService``, as a face of one hub.

A wire-compatible translation of the public protocol onto hub verbs, behaving as its reference
server does (see ``streamapi-wire.md``):

- the data source is the hub namespace; the session key is the hub session id (allocated by the hub);
- ``type`` (default ``"Session"``), ``version`` (default 1), ``identifier``, ``utc_offset`` and a
  client-given ``creation_time``/``termination_time`` are labels of those names, so every face can
  filter on them (``utc_offset`` and the times in protobuf's JSON forms, ``"3600s"``,
  ``"2024-07-07T14:00:00Z"``); ``details`` are the session details (updates upsert);
- associate session keys are children of the session (``hub.link``); the keys this face linked are
  also kept in the session's data under ``stream_api:associates``, so a completed session still
  lists them;
- sessions are created active, with no idle timeout (they last until ``EndSession``) and kept,
  marked complete, for ``retention`` seconds after they end; ending twice is a success that changes
  nothing (the hub ends a session once, so there is a single stop notification);
- failures are in-band: ``success = false`` (the reason is logged at debug level), never a status
  (but bytes that are not a request message at all end INVALID_ARGUMENT, see ``_handlers``);
- start/stop notifications are the hub's ``created``/``ended`` events of one data source (an empty
  data source: every one), from the moment the stream opened, for sessions of any face;
- ``enabled = False`` turns the service off: unary calls answer ``success = false`` and the
  notification streams end at once with FAILED_PRECONDITION.

Every check is the hub's: an unknown key, a malformed key or data source, a map past the size limits
are refused by the hub and answered ``success = false`` here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from .._errors import SessionHubError, VersionConflict
from .._hub import SessionHub
from .._models import Session
from ._convert import to_json
from ._handlers import add_servicer
from ._status import abort, quote
from ._streams import EventStreams
from .protos.ma.streaming.api.v1 import session_management_pb2 as api
from .protos.ma.streaming.api.v1 import session_management_pb2_grpc as api_grpc
from .protos.ma.streaming.open_data.v1 import open_data_pb2 as open_data

__all__ = ["ASSOCIATES_KEY", "SERVICE_NAME", "StreamApiServicer"]

logger = logging.getLogger("sessionhub.grpc.streamapi")

SERVICE_NAME: str = api.DESCRIPTOR.services_by_name["SessionManagementService"].full_name
#: The data key under which the keys this face associated with a session are kept.
ASSOCIATES_KEY = "stream_api:associates"

TYPE, VERSION, IDENTIFIER, UTC_OFFSET = "type", "version", "identifier", "utc_offset"
CREATION_TIME, TERMINATION_TIME = "creation_time", "termination_time"
DEFAULT_TYPE = "Session"

_R = TypeVar("_R")


def _in_band(
    failed: Callable[[], _R],
) -> Callable[[Callable[[Any, Any, Any], Awaitable[_R]]], Callable[[Any, Any, Any], Awaitable[_R]]]:
    """A unary method whose failures answer ``failed()`` (``success = false``)."""

    def wrap(
        method: Callable[[Any, Any, Any], Awaitable[_R]],
    ) -> Callable[[Any, Any, Any], Awaitable[_R]]:
        async def unary(self: StreamApiServicer, request: Any, context: Any) -> _R:
            if not self.enabled:
                return failed()
            try:
                return await method(self, request, context)
            except (SessionHubError, ValueError) as exc:
                logger.debug("%s failed: %s", method.__name__, exc)
                return failed()

        unary.__name__ = method.__name__
        unary.__qualname__ = method.__qualname__
        unary.__doc__ = method.__doc__
        return unary

    return wrap


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def _label_timestamp(session: Session, label: str) -> Timestamp | None:
    text = session.labels.get(label)
    if text is None:
        return None
    stamp = Timestamp()
    try:
        stamp.FromJsonString(text)
    except ValueError:
        return None
    return stamp


def _utc_offset(session: Session) -> Duration | None:
    text = session.labels.get(UTC_OFFSET)
    if text is None:
        return None
    offset = Duration()
    try:
        offset.FromJsonString(text)
    except ValueError:
        return None
    return offset


def _version(session: Session) -> int:
    text = session.labels.get(VERSION, "")
    return int(text) if text.isdigit() and int(text) < 2**32 else 1


def _details(session: Session) -> dict[str, str]:
    """Details as the Stream API's string map (values set through other faces as JSON text)."""
    return {
        k: v if isinstance(v, str) else to_json(v, f"detail {quote(k)}")
        for k, v in session.details.items()
    }


def _unique(keys: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(keys))


class StreamApiServicer(api_grpc.SessionManagementServiceServicer):
    """``ma.streaming.api.v1.SessionManagementService`` over ``hub``; see the module docstring.

    ``retention`` is how long completed sessions stay queryable (seconds); ``idle_timeout`` and
    ``ttl`` are those of the sessions it creates (``None``: none). ``streams`` holds the open
    notification streams (``GrpcServer`` ends them when it stops).
    """

    def __init__(
        self,
        hub: SessionHub,
        *,
        enabled: bool = True,
        retention: float = 86400.0,
        idle_timeout: float | None = None,
        ttl: float | None = None,
        streams: EventStreams | None = None,
    ) -> None:
        self.hub = hub
        self.enabled = enabled
        self.retention = retention
        self.idle_timeout = idle_timeout
        self.ttl = ttl
        self.streams = streams if streams is not None else EventStreams()

    def add_to_server(self, server: Any) -> None:
        add_servicer(self, server, api.DESCRIPTOR.services_by_name["SessionManagementService"])

    def close(self) -> None:
        """End the open notification streams (the server is stopping)."""
        self.streams.close()

    # sessions

    @_in_band(lambda: api.CreateSessionResponse(success=False))
    async def CreateSession(
        self, request: api.CreateSessionRequest, context: Any
    ) -> api.CreateSessionResponse:
        labels = {TYPE: request.type or DEFAULT_TYPE, VERSION: str(request.version or 1)}
        if request.identifier:
            labels[IDENTIFIER] = request.identifier
        if request.HasField("utc_offset"):
            labels[UTC_OFFSET] = request.utc_offset.ToJsonString()  # ValueError if out of range
        if request.HasField("creation_time"):
            labels[CREATION_TIME] = request.creation_time.ToJsonString()
        associates = _unique(request.associate_session_key)
        for key in associates:  # all must be live before anything is created
            if not (await self.hub.get(key)).live:
                raise ValueError(f"associate session {key} has ended")
        session = await self.hub.create(
            namespace=request.data_source,
            labels=labels,
            details=dict(request.details) or None,
            idle_timeout=self.idle_timeout,
            ttl=self.ttl,
            retention=self.retention,
            activate=True,
        )
        if associates:
            try:
                for key in associates:
                    await self.hub.link(session.id, key)
                await self._remember(session.id, associates)
            except SessionHubError:  # an associate ended meanwhile: undo
                await self.hub.end(session.id, "aborted")
                raise
            session = await self.hub.get(session.id)
        info = self._info(session, associates)
        return api.CreateSessionResponse(
            session_key=session.id,
            new_session=open_data.NewSessionPacket(
                data_source=session.namespace,
                utc_offset=info.utc_offset if info.HasField("utc_offset") else None,
                session_info=info,
                creation_time=info.creation_time,
            ),
            success=True,
        )

    @_in_band(lambda: api.EndSessionResponse(success=False))
    async def EndSession(
        self, request: api.EndSessionRequest, context: Any
    ) -> api.EndSessionResponse:
        key = request.session_key
        requested = request.termination_time if request.HasField("termination_time") else None
        stamp = None if requested is None else requested.ToJsonString()  # ValueError if invalid
        session = await self.hub.get(key)
        if stamp is not None and session.live and session.end_reason is None:
            try:
                await self.hub.update(key, labels={TERMINATION_TIME: stamp})
            except SessionHubError as exc:  # ended meanwhile, or no room for the label
                logger.debug("termination time of %s not kept: %s", key, exc)
        await self.hub.end(key, "ended")
        with contextlib.suppress(SessionHubError):  # not retained: it is gone already
            session = await self.hub.get(key)
        if requested is not None:
            termination = requested
        elif session.ended_at is not None:
            termination = _label_timestamp(session, TERMINATION_TIME) or _timestamp(
                session.ended_at
            )
        else:
            termination = _timestamp(self.hub.clock())
        return api.EndSessionResponse(
            end_session=open_data.EndOfSessionPacket(
                data_source=session.namespace, termination_time=termination
            ),
            success=True,
        )

    @_in_band(lambda: api.GetCurrentSessionsResponse(success=False))
    async def GetCurrentSessions(
        self, request: api.GetCurrentSessionsRequest, context: Any
    ) -> api.GetCurrentSessionsResponse:
        keys: list[str] = []
        cursor = None
        while True:
            page = await self.hub.find(
                namespace=request.data_source or None,
                include_ended=True,
                limit=1000,
                cursor=cursor,
            )
            keys.extend(session.id for session in page.items)
            if page.cursor is None:
                break
            cursor = page.cursor
        return api.GetCurrentSessionsResponse(session_keys=keys, success=True)

    @_in_band(lambda: api.GetSessionInfoResponse(success=False))
    async def GetSessionInfo(
        self, request: api.GetSessionInfoRequest, context: Any
    ) -> api.GetSessionInfoResponse:
        session = await self.hub.get(request.session_key)
        associates = await self._associates(session)
        info = self._info(session, associates)
        return api.GetSessionInfoResponse(
            data_source=info.data_source,
            identifier=info.identifier,
            type=info.type,
            version=info.version,
            associate_session_keys=info.associate_session_keys,
            is_complete=session.ended_at is not None,
            details=info.details,
            utc_offset=info.utc_offset if info.HasField("utc_offset") else None,
            success=True,
            creation_time=info.creation_time,
            termination_time=info.termination_time if info.HasField("termination_time") else None,
        )

    @_in_band(lambda: api.UpdateSessionIdentifierResponse(success=False))
    async def UpdateSessionIdentifier(
        self, request: api.UpdateSessionIdentifierRequest, context: Any
    ) -> api.UpdateSessionIdentifierResponse:
        if request.identifier:
            await self.hub.update(request.session_key, labels={IDENTIFIER: request.identifier})
        else:
            await self.hub.update(request.session_key, remove_labels=[IDENTIFIER])
        return api.UpdateSessionIdentifierResponse(success=True)

    @_in_band(lambda: api.AddAssociateSessionResponse(success=False))
    async def AddAssociateSession(
        self, request: api.AddAssociateSessionRequest, context: Any
    ) -> api.AddAssociateSessionResponse:
        await self.hub.link(request.session_key, request.associate_session_key)
        await self._remember(request.session_key, [request.associate_session_key])
        return api.AddAssociateSessionResponse(success=True)

    @_in_band(lambda: api.UpdateSessionDetailsResponse(success=False))
    async def UpdateSessionDetails(
        self, request: api.UpdateSessionDetailsRequest, context: Any
    ) -> api.UpdateSessionDetailsResponse:
        await self.hub.update(request.session_key, details=dict(request.details))
        return api.UpdateSessionDetailsResponse(success=True)

    # notifications

    async def GetSessionStartNotification(
        self, request: api.GetSessionStartNotificationRequest, context: Any
    ) -> AsyncIterator[api.GetSessionStartNotificationResponse]:
        async for session in self._notifications(request.data_source, "created", context):
            yield api.GetSessionStartNotificationResponse(
                session_key=session.id, data_source=session.namespace
            )

    async def GetSessionStopNotification(
        self, request: api.GetSessionStopNotificationRequest, context: Any
    ) -> AsyncIterator[api.GetSessionStopNotificationResponse]:
        async for session in self._notifications(request.data_source, "ended", context):
            yield api.GetSessionStopNotificationResponse(
                session_key=session.id, data_source=session.namespace
            )

    async def _notifications(
        self, data_source: str, kind: str, context: Any
    ) -> AsyncIterator[Session]:
        if not self.enabled:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "Stream API session management is turned off"
            )
            return
        try:
            events = self.hub.subscribe(namespace=data_source or None, kinds=[kind])
        except SessionHubError as exc:  # a malformed data source: no in-band field to say it
            await abort(context, exc)
        async with self.streams.open(events) as feed:
            await context.send_initial_metadata(())  # the stream is live from here on
            async for event in feed:
                if event.session is None:
                    logger.warning(
                        "a %s notification stream of %r fell behind: %d events lost",
                        kind,
                        data_source,
                        event.missed,
                    )
                    continue
                yield event.session

    # helpers

    def _info(self, session: Session, associates: list[str]) -> open_data.SessionInfoPacket:
        ended = session.ended_at
        termination = None
        if ended is not None:
            termination = _label_timestamp(session, TERMINATION_TIME) or _timestamp(ended)
        return open_data.SessionInfoPacket(
            data_source=session.namespace,
            identifier=session.labels.get(IDENTIFIER, ""),
            type=session.labels.get(TYPE, DEFAULT_TYPE),
            version=_version(session),
            associate_session_keys=associates,
            details=_details(session),
            utc_offset=_utc_offset(session),
            creation_time=_label_timestamp(session, CREATION_TIME)
            or _timestamp(session.created_at),
            termination_time=termination,
        )

    async def _associates(self, session: Session) -> list[str]:
        """The keys this face associated, then any other live child (linked by another face)."""
        kept = await self.hub.data(session.id).get(ASSOCIATES_KEY)
        keys = [key for key in kept if isinstance(key, str)] if isinstance(kept, list) else []
        if session.live:
            page = await self.hub.find(parent_id=session.id, limit=1000)
            keys.extend(child.id for child in page.items)
        return _unique(keys)

    async def _remember(self, session_id: str, keys: list[str]) -> None:
        """Add ``keys`` to the session's kept associate keys (compare-and-set, so concurrent
        additions all stay)."""
        data = self.hub.data(session_id)
        for _ in range(16):
            entry = await data.entry(ASSOCIATES_KEY)
            kept = entry.value if entry is not None and isinstance(entry.value, list) else []
            merged = _unique([*kept, *keys])
            if merged == kept:
                return
            try:
                await data.set(
                    ASSOCIATES_KEY, merged, expected_version=0 if entry is None else entry.version
                )
                return
            except VersionConflict:
                continue
        raise VersionConflict(f"could not record the associates of {session_id}")
