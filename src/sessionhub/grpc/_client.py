"""``GrpcClient``: the hub's verbs against a sessionhub server over gRPC, awaited.

    async with sessionhub.connect("grpc://127.0.0.1:7481", token="s3cret") as hub:
        session = await hub.create(user_id="ada")

Same verbs, arguments, results and exceptions as ``SessionHub`` and the HTTP ``AsyncClient``. One
channel (one HTTP/2 connection) carries every call. ``track_request`` counts the block as a request
in flight on the server (the ``Track`` call stays open for the block's duration; over HTTP a
request lease does the same).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Mapping,
)
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .._containers import batch_pairs
from .._errors import SessionHubError, SessionNotFound, StoreUnavailable, ValidationError
from .._hub import DEFAULT, _Default
from .._limits import check_id
from .._metrics import MetricsSnapshot
from .._models import DataEntry, HistoryRecord, Page, Session, SessionEvent
from ..client._calls import closed, to_json
from ..client._remote import AsyncRemoteHub, RemoteDataHandle, RemoteHistoryHandle
from ..client._sse import backoff
from . import _convert as convert
from ._status import error_from_rpc
from .protos.sessionhub.v1 import sessionhub_pb2 as pb
from .protos.sessionhub.v1 import sessionhub_pb2_grpc as pb_grpc

__all__ = ["DEFAULT_GRPC_URL", "GrpcClient", "GrpcRemoteData", "GrpcRemoteHistory"]

T = TypeVar("T")

#: Where ``sessionhub serve`` listens for gRPC by default; ``SESSIONHUB_GRPC_URL`` overrides it.
DEFAULT_GRPC_URL = "grpc://127.0.0.1:7481"


def _target(url: str | None) -> tuple[str, str, bool]:
    """The URL, the channel target (``host:port``) and whether it is TLS (``grpcs://``)."""
    chosen = url if url is not None else os.environ.get("SESSIONHUB_GRPC_URL") or DEFAULT_GRPC_URL
    if not isinstance(chosen, str) or not chosen.startswith(("grpc://", "grpcs://")):
        raise ValidationError(
            f"a sessionhub gRPC URL starts with grpc:// or grpcs://, got {chosen!r}"
        )
    parts = urlsplit(chosen)
    if not parts.hostname or parts.path.strip("/"):
        raise ValidationError(f"a sessionhub gRPC URL is grpc://host:port, got {chosen!r}")
    try:
        port = parts.port or (443 if parts.scheme == "grpcs" else 7481)
    except ValueError:
        raise ValidationError(f"bad port in {chosen!r}") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return chosen.rstrip("/"), f"{host}:{port}", parts.scheme == "grpcs"


def _message(factory: Callable[..., T], **fields: Any) -> T:
    """A request message; a field of the wrong type is the caller's ``ValidationError``."""
    try:
        return factory(**fields)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"invalid argument: {exc}") from None


def _json(value: Any, what: str) -> str:
    return to_json(value, what).decode()


class GrpcClient(AsyncRemoteHub):
    """A sessionhub server seen as a hub, over gRPC (see the module docstring).

    ``url`` is ``grpc://host:port`` (``grpcs://`` for TLS), by default ``SESSIONHUB_GRPC_URL``
    else ``grpc://127.0.0.1:7481``; ``token`` defaults to ``SESSIONHUB_TOKEN``. ``timeout`` bounds
    each call; a server that cannot be reached raises ``StoreUnavailable``. After ``close()``,
    calls raise ``ClientClosed``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout: float | None = 10.0,
        reconnect_attempts: int = 5,
        options: Collection[tuple[str, Any]] = (),
    ) -> None:
        self.url, self.target, tls = _target(url)
        token = token if token is not None else os.environ.get("SESSIONHUB_TOKEN") or None
        self.timeout = timeout
        self.reconnect_attempts = reconnect_attempts
        self._metadata: tuple[tuple[str, str], ...] = (
            () if token is None else (("authorization", f"Bearer {token}"),)
        )
        channel_options = list(options)
        if tls:
            credentials = grpc.ssl_channel_credentials()
            self._channel = grpc.aio.secure_channel(self.target, credentials, channel_options)
        else:
            self._channel = grpc.aio.insecure_channel(self.target, channel_options)
        self._stub = pb_grpc.SessionHubServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._closed = False

    def __repr__(self) -> str:
        return f"GrpcClient({self.url!r})"  # never the token

    async def close(self) -> None:
        """Close the channel: calls still out, ``Track`` calls of open ``track_request`` blocks
        included, end (the server releases those requests), and later calls raise
        ``ClientClosed``. A second ``close()`` does nothing."""
        self._closed = True
        await self._channel.close()

    def _closed_under(self) -> bool:
        """Whether a call's ``CancelledError`` (or ``UsageError``) is this client's ``close()``
        ending it, not a cancellation of the caller's task (which must propagate as it is)."""
        task = asyncio.current_task()
        return self._closed and (task is None or not task.cancelling())

    async def _call(self, method: Any, request: Any, session_id: str | None = None) -> Any:
        if self._closed:
            raise closed(self)
        try:
            return await method(request, metadata=self._metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, self.url, session_id) from None
        except (asyncio.CancelledError, grpc.aio.UsageError):
            if self._closed_under():
                raise closed(self) from None
            raise

    async def health(self) -> str:
        """The server's health (``"ok"`` when serving), via ``grpc.health.v1``."""
        answer = await self._call(self._health.Check, health_pb2.HealthCheckRequest(service=""))
        status: str = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return "ok" if status == "SERVING" else status.lower()

    # sessions

    async def create(
        self,
        session_id: str | None = None,
        *,
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
        request = _message(
            pb.CreateRequest,
            id=session_id,
            namespace=namespace,
            user_id=user_id,
            parent_id=parent_id,
            labels=labels,
            details_json=None if details is None else _json(details, "details"),
            idle_timeout=convert.timeout_pb(idle_timeout),
            ttl=convert.timeout_pb(ttl),
            retention=retention,
            activate=activate,
        )
        answer = await self._call(self._stub.Create, request, session_id)
        return convert.session_from_pb(answer)

    async def get(self, session_id: str) -> Session:
        answer = await self._call(
            self._stub.Get, _message(pb.GetRequest, id=session_id), session_id
        )
        return convert.session_from_pb(answer)

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
        filters = _message(
            convert.filters_pb, namespace=namespace, user_id=user_id, parent_id=parent_id,
            state=state, labels=labels, include_ended=include_ended,
        )  # fmt: skip
        request = _message(pb.FindRequest, filters=filters, limit=limit, cursor=cursor)
        return convert.page_from_pb(await self._call(self._stub.Find, request))

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
        filters = _message(
            convert.filters_pb, namespace=namespace, user_id=user_id, parent_id=parent_id,
            state=state, labels=labels, include_ended=include_ended,
        )  # fmt: skip
        answer = await self._call(self._stub.Count, pb.CountRequest(filters=filters))
        return int(answer.count)

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
        for name, names in (("remove_details", remove_details), ("remove_labels", remove_labels)):
            if isinstance(names, str):
                raise ValidationError(f"{name} must be a list of keys, got {names!r}")
        request = _message(
            pb.UpdateRequest,
            id=session_id,
            details_json=None if details is None else _json(details, "details"),
            remove_details=remove_details,
            labels=labels,
            remove_labels=remove_labels,
            idle_timeout=convert.timeout_pb(idle_timeout),
            ttl=convert.timeout_pb(ttl),
            expected_version=expected_version,
        )
        answer = await self._call(self._stub.Update, request, session_id)
        return convert.session_from_pb(answer)

    async def transition(
        self, session_id: str, event: str, *, expected_version: int | None = None
    ) -> Session:
        request = _message(
            pb.TransitionRequest, id=session_id, event=event, expected_version=expected_version
        )
        answer = await self._call(self._stub.Transition, request, session_id)
        return convert.session_from_pb(answer)

    async def touch(self, session_id: str) -> Session:
        request = _message(pb.TouchRequest, id=session_id)
        return convert.session_from_pb(await self._call(self._stub.Touch, request, session_id))

    async def incr(self, session_id: str, counter: str, by: int = 1) -> int:
        if type(by) is not int:
            raise ValidationError(f"by must be an integer, got {by!r}")
        request = _message(pb.IncrRequest, id=session_id, counter=counter, by=by)
        answer = await self._call(self._stub.Incr, request, session_id)
        return int(answer.value)

    @contextlib.asynccontextmanager
    async def track_request(self, session_id: str) -> AsyncIterator[Session]:
        """Count a request in flight on the server for the block's duration (a ``Track`` call
        open meanwhile); released when the block exits, or by the server if this process dies.

        If the client is closed before the block exits, closing the channel ended the call (the
        server released the request then) and the exit raises nothing (the block's own error, if
        any, propagates): there is nothing left to release."""
        if self._closed:
            raise closed(self)
        request = _message(pb.TrackRequest, id=session_id)
        call = self._stub.Track(metadata=self._metadata)
        try:
            async with asyncio.timeout(self.timeout):
                await call.write(request)
                answer = await call.read()
            if answer is grpc.aio.EOF:
                await call.code()
                raise SessionHubError(f"the server ended Track on {session_id} before answering")
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, self.url, session_id) from None
        except BaseException:
            call.cancel()
            raise
        failed = True
        try:
            yield convert.session_from_pb(answer)
            failed = False
        finally:
            await self._release(call, session_id, raising=not failed)

    async def _release(self, call: Any, session_id: str, *, raising: bool) -> None:
        """Half-close a ``Track`` call and wait for the server to release the request (so that
        it is released when ``track_request`` exits); cancel it if that fails."""
        if self._closed:  # the channel's close ended the call: the server released the request
            call.cancel()
            return
        try:
            async with asyncio.timeout(self.timeout):
                await call.done_writing()
                while await call.read() is not grpc.aio.EOF:
                    pass
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc, self.url, session_id)
            if raising and not isinstance(error, SessionNotFound):  # ended meanwhile: fine
                raise error from None
        except BaseException:
            call.cancel()  # the server releases the request when it sees the cancel
            if raising:
                raise

    async def end(self, session_id: str, reason: str = "ended") -> bool:
        if not isinstance(reason, str):
            raise ValidationError(f"reason must be a string, got {reason!r}")
        request = _message(pb.EndRequest, id=session_id, reason=reason)
        return bool((await self._call(self._stub.End, request, session_id)).ended)

    async def link(self, parent_id: str, child_id: str) -> Session:
        check_id(child_id, "child_id")
        request = _message(pb.LinkRequest, parent_id=parent_id, child_id=child_id)
        return convert.session_from_pb(await self._call(self._stub.Link, request, parent_id))

    def data(self, session_id: str) -> GrpcRemoteData:
        check_id(session_id)
        return GrpcRemoteData(self, session_id)

    def history(self, session_id: str) -> GrpcRemoteHistory:
        check_id(session_id)
        return GrpcRemoteHistory(self, session_id)

    async def _data_entry(self, session_id: str, key: str) -> DataEntry | None:
        request = _message(pb.DataGetRequest, id=session_id, key=key)
        answer = await self._call(self._stub.DataGet, request, session_id)
        return convert.data_entry_from_pb(answer.entry) if answer.HasField("entry") else None

    async def _data_set(
        self, session_id: str, key: str, value: Any, expected_version: int | None
    ) -> DataEntry:
        request = _message(
            pb.DataSetRequest,
            id=session_id,
            key=key,
            value_json=_json(value, "data value"),
            expected_version=expected_version,
        )
        return convert.data_entry_from_pb(await self._call(self._stub.DataSet, request, session_id))

    async def _data_delete(self, session_id: str, key: str, expected_version: int | None) -> bool:
        request = _message(
            pb.DataDeleteRequest, id=session_id, key=key, expected_version=expected_version
        )
        return bool((await self._call(self._stub.DataDelete, request, session_id)).deleted)

    async def _data_entries(self, session_id: str) -> list[DataEntry]:
        request = pb.DataListRequest(id=session_id)
        answer = await self._call(self._stub.DataList, request, session_id)
        return [convert.data_entry_from_pb(entry) for entry in answer.entries]

    async def _history_append(self, session_id: str, kind: str, payload: Any) -> HistoryRecord:
        request = _message(
            pb.HistoryAppendRequest,
            id=session_id,
            kind=kind,
            payload_json=_json(payload, "history record"),
        )
        return convert.record_from_pb(
            await self._call(self._stub.HistoryAppend, request, session_id)
        )

    async def _history_append_many(
        self, session_id: str, records: Iterable[tuple[str, Any]]
    ) -> list[HistoryRecord]:
        entries = [
            _message(pb.HistoryEntry, kind=kind, payload_json=_json(payload, f"history record {i}"))
            # How many records one batch may hold is the server's Limits: it refuses, not we.
            for i, (kind, payload) in enumerate(batch_pairs(records, None))
        ]
        request = pb.HistoryAppendManyRequest(id=session_id, records=entries)
        answer = await self._call(self._stub.HistoryAppendMany, request, session_id)
        return [convert.record_from_pb(record) for record in answer.records]

    async def _history_pop(self, session_id: str, kind: str, marker: str) -> HistoryRecord | None:
        request = _message(pb.HistoryPopRequest, id=session_id, kind=kind, marker=marker)
        answer = await self._call(self._stub.HistoryPop, request, session_id)
        return convert.record_from_pb(answer.record) if answer.HasField("record") else None

    async def _history_read(
        self,
        session_id: str,
        *,
        after: int | None,
        limit: int,
        newest_first: bool,
        kind: str | None,
    ) -> list[HistoryRecord]:
        request = _message(
            pb.HistoryReadRequest,
            id=session_id,
            after=after,
            limit=limit,
            newest_first=newest_first,
            kind=kind,
        )
        answer = await self._call(self._stub.HistoryRead, request, session_id)
        return [convert.record_from_pb(record) for record in answer.records]

    async def _history_counts(self, session_id: str) -> dict[str, int]:
        request = pb.HistoryCountsRequest(id=session_id)
        return dict((await self._call(self._stub.HistoryCounts, request, session_id)).counts)

    # events and metrics

    async def subscribe(
        self,
        *,
        namespace: str | None = None,
        kinds: Collection[str] | None = None,
        session_id: str | None = None,
        after: str | None = None,
        reconnect: bool = True,
    ) -> AsyncGenerator[SessionEvent, None]:
        """The server's events (the ``Watch`` stream), in order. When the stream breaks, the
        client calls again with ``after`` = the last event received and the server resumes after
        it (within its retained window; older gaps arrive as a ``missed`` event). After
        ``reconnect_attempts`` failed attempts in a row it raises ``StoreUnavailable``."""
        if isinstance(kinds, str):
            raise ValidationError(f"kinds must be a collection of event kinds, got {kinds!r}")
        if session_id is not None:
            check_id(session_id)
        last = after
        failures = 0
        while True:
            if self._closed:
                raise closed(self)
            request = _message(
                pb.WatchRequest,
                namespace=namespace,
                kinds=list(kinds) if kinds is not None else None,
                session_id=session_id,
                after=last,
            )
            call = self._stub.Watch(request, metadata=self._metadata)
            try:
                await call.initial_metadata()  # the server sends it once the stream is live
                if not call.done():  # (a call that failed has "initial metadata" too)
                    failures = 0
                async for message in call:
                    event = convert.event_from_pb(message)
                    if event.id:  # `missed` notices carry no id: resuming goes on from the last
                        last = event.id
                    yield event
            except (asyncio.CancelledError, grpc.aio.UsageError):
                if self._closed_under():
                    raise closed(self) from None
                raise
            except grpc.aio.AioRpcError as exc:
                error = error_from_rpc(exc, self.url, session_id)
                if not reconnect or not isinstance(error, StoreUnavailable):
                    raise error from None
                failures += 1
                if failures > self.reconnect_attempts:
                    raise error from None
            else:
                if not reconnect:
                    return
            finally:
                call.cancel()
            await asyncio.sleep(backoff(failures))

    async def metrics(self) -> MetricsSnapshot:
        """The server hub's ``metrics()``."""
        return convert.stats_from_pb(await self._call(self._stub.Stats, pb.StatsRequest()))


class GrpcRemoteData(RemoteDataHandle):
    """``client.data(id)``: the session's key → JSON value store, as ``SessionData``."""

    __slots__ = ()


class GrpcRemoteHistory(RemoteHistoryHandle):
    """``client.history(id)``: the session's append-only log, as ``SessionHistory``."""

    __slots__ = ()
