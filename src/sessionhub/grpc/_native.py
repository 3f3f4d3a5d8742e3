"""The native ``sessionhub.v1.SessionHubService``: one rpc per hub verb, over one ``SessionHub``.

Each method decodes its request, calls the hub and encodes the answer; every check is the hub's, so
this face answers bad input exactly as the embedded hub raises it, as a gRPC status (see
``_status``). ``Watch`` is the hub's ``subscribe`` with the filters and resume of the SSE face.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from .._errors import SessionHubError, ValidationError
from .._hub import SessionHub
from . import _convert as convert
from ._handlers import add_servicer
from ._status import abort, guarded, quote
from ._streams import EventStreams
from .protos.sessionhub.v1 import sessionhub_pb2 as pb
from .protos.sessionhub.v1 import sessionhub_pb2_grpc as pb_grpc

__all__ = ["SERVICE_NAME", "SessionHubServicer"]

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["SessionHubService"].full_name
logger = logging.getLogger("sessionhub.grpc")


def _opt(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


class SessionHubServicer(pb_grpc.SessionHubServiceServicer):
    """``sessionhub.v1.SessionHubService`` over ``hub``; add it to a ``grpc.aio`` server with
    ``add_to_server``. ``streams`` holds the open ``Watch``/``Track`` calls (``GrpcServer`` ends
    them when it stops). ``unencodable`` counts the sessions and events left out of listings and
    streams because protobuf cannot carry them (each is logged; a ``Get`` of one fails clearly)."""

    def __init__(self, hub: SessionHub, streams: EventStreams | None = None) -> None:
        self.hub = hub
        self.streams = streams if streams is not None else EventStreams()
        self.unencodable = 0
        self._tracking: set[asyncio.Event] = set()

    def add_to_server(self, server: Any) -> None:
        add_servicer(self, server, pb.DESCRIPTOR.services_by_name["SessionHubService"])

    def close(self) -> None:
        """End the open ``Watch`` and ``Track`` calls (the server is stopping)."""
        self.streams.close()
        for released in self._tracking:
            released.set()

    def _skip(self, error: SessionHubError) -> None:
        self.unencodable += 1
        logger.warning("left out of a gRPC answer: %s", error.message)

    # sessions

    @guarded
    async def Create(self, request: pb.CreateRequest, context: Any) -> pb.Session:
        session = await self.hub.create(
            _opt(request, "id"),
            namespace=request.namespace if request.HasField("namespace") else "default",
            user_id=_opt(request, "user_id"),
            parent_id=_opt(request, "parent_id"),
            labels=dict(request.labels) or None,
            details=convert.details_arg(request),
            idle_timeout=convert.timeout_arg(request, "idle_timeout"),
            ttl=convert.timeout_arg(request, "ttl"),
            retention=_opt(request, "retention"),
            activate=request.activate,
        )
        return convert.session_pb(session)

    @guarded
    async def Get(self, request: pb.GetRequest, context: Any) -> pb.Session:
        return convert.session_pb(await self.hub.get(request.id))

    @guarded
    async def Find(self, request: pb.FindRequest, context: Any) -> pb.FindResponse:
        page = await self.hub.find(
            **convert.filters_args(request.filters),
            limit=request.limit if request.HasField("limit") else 100,
            cursor=_opt(request, "cursor"),
        )
        return convert.page_pb(page, self._skip)

    @guarded
    async def Count(self, request: pb.CountRequest, context: Any) -> pb.CountResponse:
        return pb.CountResponse(count=await self.hub.count(**convert.filters_args(request.filters)))

    @guarded
    async def Update(self, request: pb.UpdateRequest, context: Any) -> pb.Session:
        session = await self.hub.update(
            request.id,
            details=convert.details_arg(request),
            remove_details=list(request.remove_details),
            labels=dict(request.labels) or None,
            remove_labels=list(request.remove_labels),
            idle_timeout=convert.timeout_arg(request, "idle_timeout"),
            ttl=convert.timeout_arg(request, "ttl"),
            expected_version=_opt(request, "expected_version"),
        )
        return convert.session_pb(session)

    @guarded
    async def Transition(self, request: pb.TransitionRequest, context: Any) -> pb.Session:
        session = await self.hub.transition(
            request.id, request.event, expected_version=_opt(request, "expected_version")
        )
        return convert.session_pb(session)

    @guarded
    async def Touch(self, request: pb.TouchRequest, context: Any) -> pb.Session:
        return convert.session_pb(await self.hub.touch(request.id))

    @guarded
    async def Incr(self, request: pb.IncrRequest, context: Any) -> pb.IncrResponse:
        by = request.by if request.HasField("by") else 1
        return pb.IncrResponse(value=await self.hub.incr(request.id, request.counter, by))

    @guarded
    async def End(self, request: pb.EndRequest, context: Any) -> pb.EndResponse:
        reason = request.reason if request.HasField("reason") else "ended"
        return pb.EndResponse(ended=await self.hub.end(request.id, reason))

    @guarded
    async def Link(self, request: pb.LinkRequest, context: Any) -> pb.Session:
        return convert.session_pb(await self.hub.link(request.parent_id, request.child_id))

    async def Track(
        self, request_iterator: AsyncIterator[pb.TrackRequest], context: Any
    ) -> AsyncIterator[pb.Session]:
        first = await anext(aiter(request_iterator), None)
        if first is None:
            return
        released = asyncio.Event()
        self._tracking.add(released)
        try:
            async with self.hub.track_request(first.id) as session:
                yield convert.session_pb(session)
                drained = asyncio.ensure_future(_drain(request_iterator))
                stopping = asyncio.ensure_future(released.wait())
                try:  # until the client half-closes (or cancels), or the server stops
                    await asyncio.wait({drained, stopping}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    drained.cancel()
                    stopping.cancel()
        except SessionHubError as exc:
            await abort(context, exc)
        finally:
            self._tracking.discard(released)

    # data

    @guarded
    async def DataGet(self, request: pb.DataGetRequest, context: Any) -> pb.DataGetResponse:
        entry = await self.hub.data(request.id).entry(request.key)
        return pb.DataGetResponse(entry=None if entry is None else convert.data_entry_pb(entry))

    @guarded
    async def DataSet(self, request: pb.DataSetRequest, context: Any) -> pb.DataEntry:
        value = convert.from_json(request.value_json, "value_json")
        entry = await self.hub.data(request.id).set(
            request.key, value, expected_version=_opt(request, "expected_version")
        )
        return convert.data_entry_pb(entry)

    @guarded
    async def DataDelete(
        self, request: pb.DataDeleteRequest, context: Any
    ) -> pb.DataDeleteResponse:
        deleted = await self.hub.data(request.id).delete(
            request.key, expected_version=_opt(request, "expected_version")
        )
        return pb.DataDeleteResponse(deleted=deleted)

    @guarded
    async def DataList(self, request: pb.DataListRequest, context: Any) -> pb.DataListResponse:
        entries = await self.hub.data(request.id).entries()
        return pb.DataListResponse(entries=[convert.data_entry_pb(e) for e in entries])

    # history

    @guarded
    async def HistoryAppend(
        self, request: pb.HistoryAppendRequest, context: Any
    ) -> pb.HistoryRecord:
        payload = (
            convert.from_json(request.payload_json, "payload_json")
            if request.HasField("payload_json")
            else None
        )
        record = await self.hub.history(request.id).append(request.kind, payload)
        return convert.record_pb(record)

    @guarded
    async def HistoryRead(
        self, request: pb.HistoryReadRequest, context: Any
    ) -> pb.HistoryReadResponse:
        records = await self.hub.history(request.id).read(
            after=_opt(request, "after"),
            limit=request.limit if request.HasField("limit") else 100,
            newest_first=request.newest_first,
            kind=_opt(request, "kind"),
        )
        return pb.HistoryReadResponse(records=[convert.record_pb(r) for r in records])

    @guarded
    async def HistoryCounts(
        self, request: pb.HistoryCountsRequest, context: Any
    ) -> pb.HistoryCountsResponse:
        return pb.HistoryCountsResponse(counts=await self.hub.history(request.id).counts())

    @guarded
    async def HistoryAppendMany(
        self, request: pb.HistoryAppendManyRequest, context: Any
    ) -> pb.HistoryAppendManyResponse:
        pairs = [
            (
                entry.kind,
                convert.from_json(entry.payload_json, f"records[{i}].payload_json")
                if entry.HasField("payload_json")
                else None,
            )
            for i, entry in enumerate(request.records)
        ]
        records = await self.hub.history(request.id).append_many(pairs)
        return pb.HistoryAppendManyResponse(records=[convert.record_pb(r) for r in records])

    @guarded
    async def HistoryPop(
        self, request: pb.HistoryPopRequest, context: Any
    ) -> pb.HistoryPopResponse:
        record = await self.hub.history(request.id).pop(request.kind, marker=request.marker)
        return pb.HistoryPopResponse(record=None if record is None else convert.record_pb(record))

    # events and metrics

    @guarded
    async def Stats(self, request: pb.StatsRequest, context: Any) -> pb.StatsResponse:
        return convert.stats_pb(await self.hub.metrics())

    async def Watch(self, request: pb.WatchRequest, context: Any) -> AsyncIterator[pb.Event]:
        try:
            events = self.hub.subscribe(
                namespace=_opt(request, "namespace"),
                kinds=list(request.kinds) or None,
                session_id=_opt(request, "session_id"),
                after=_opt(request, "after"),
            )
        except SessionHubError as exc:
            await abort(context, exc)
        except ValueError:  # an `after` the event log cannot even parse (thousands of digits)
            error = ValidationError(f"after is not an event id: {quote(request.after)}")
            await abort(context, error)
        try:
            async with self.streams.open(events) as feed:
                await context.send_initial_metadata(())  # the subscription is live: say so
                async for event in feed:
                    try:
                        message = convert.event_pb(event)
                    except SessionHubError as exc:  # never end the stream over one record
                        self._skip(exc)
                        continue
                    yield message
        except SessionHubError as exc:  # e.g. resuming after an event id the hub never gave
            await abort(context, exc)


async def _drain(requests: AsyncIterator[Any]) -> None:
    async for _ in requests:
        pass
