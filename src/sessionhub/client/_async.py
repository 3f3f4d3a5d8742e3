"""``AsyncClient``: the hub's verbs against a sessionhub server, awaited."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Iterable, Mapping
from typing import Any, TypeVar

import httpx

from .._errors import SessionNotFound
from .._hub import DEFAULT, _Default
from .._leases import DEFAULT_LEASE
from .._limits import check_id
from .._metrics import MetricsSnapshot
from .._models import DataEntry, HistoryRecord, Page, Session, SessionEvent
from . import _calls as calls
from . import _renewal as renewing
from ._calls import Call
from ._remote import AsyncRemoteHub, RemoteDataHandle, RemoteHistoryHandle
from ._sse import EventStreamParser, backoff

__all__ = ["AsyncClient", "AsyncRemoteData", "AsyncRemoteHistory"]

T = TypeVar("T")
_JSON = {"Content-Type": "application/json"}


class AsyncClient(AsyncRemoteHub):
    """A sessionhub server seen as a hub: ``async with AsyncClient(url, token=...) as hub:``.

    Same verbs, arguments and exceptions as ``SessionHub``; one pooled HTTP connection set is reused
    by every call. ``url`` defaults to ``SESSIONHUB_URL`` (else ``http://127.0.0.1:7480``) and
    ``token`` to ``SESSIONHUB_TOKEN``. A server that cannot be reached raises ``StoreUnavailable``.
    ``request_lease`` bounds how long the server counts a ``track_request`` block whose process
    died before releasing it (seconds); a block that runs longer renews its lease meanwhile.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout: float | None = 10.0,
        reconnect_attempts: int = 5,
        request_lease: float = DEFAULT_LEASE,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = calls.base_url(url)
        self.timeout = timeout
        self.reconnect_attempts = reconnect_attempts
        self.request_lease = request_lease
        self._renewals: set[asyncio.Task[None]] = set()
        self._closed = False
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=calls.headers_for(calls.default_token(token)),
            timeout=calls.timeout_for(timeout),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"AsyncClient({calls.shown_url(self.url)!r})"  # never the token or a password

    async def close(self) -> None:
        """Close the pooled connections; blocks of ``track_request`` still open are renewed no
        more (their leases run out on the server). Calls after it raise ``ClientClosed``; a second
        ``close()`` does nothing."""
        for renewal in list(self._renewals):
            await renewing.stop_renewing(renewal)
        self._closed = True  # after the renewals stopped: none of them fails on it
        await self._http.aclose()

    async def _run(self, call: Call[T]) -> T:
        if self._closed:
            raise calls.closed(self)
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=call.params,
                content=call.body,
                headers=_JSON if call.body is not None else None,
            )
        except (httpx.TransportError, RuntimeError) as exc:
            if self._closed:  # closed while the request was out
                raise calls.closed(self) from exc
            if isinstance(exc, RuntimeError):
                raise
            raise calls.transport_error(self.url, exc) from exc
        return call.result(response)

    async def health(self) -> str:
        """The server's ``/healthz`` status (``"ok"``)."""
        return await self._run(calls.health())

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
        return await self._run(
            calls.create(
                session_id,
                namespace=namespace,
                user_id=user_id,
                parent_id=parent_id,
                labels=labels,
                details=details,
                idle_timeout=idle_timeout,
                ttl=ttl,
                retention=retention,
                activate=activate,
            )
        )

    async def get(self, session_id: str) -> Session:
        return await self._run(calls.get(session_id))

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
        return await self._run(
            calls.find(
                namespace=namespace,
                user_id=user_id,
                parent_id=parent_id,
                state=state,
                labels=labels,
                include_ended=include_ended,
                limit=limit,
                cursor=cursor,
            )
        )

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
        return await self._run(
            calls.count(
                namespace=namespace,
                user_id=user_id,
                parent_id=parent_id,
                state=state,
                labels=labels,
                include_ended=include_ended,
            )
        )

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
        return await self._run(
            calls.update(
                session_id,
                details=details,
                remove_details=remove_details,
                labels=labels,
                remove_labels=remove_labels,
                idle_timeout=idle_timeout,
                ttl=ttl,
                expected_version=expected_version,
            )
        )

    async def transition(
        self, session_id: str, event: str, *, expected_version: int | None = None
    ) -> Session:
        return await self._run(calls.transition(session_id, event, expected_version))

    async def touch(self, session_id: str) -> Session:
        return await self._run(calls.touch(session_id))

    async def incr(self, session_id: str, counter: str, by: int = 1) -> int:
        return await self._run(calls.incr(session_id, counter, by))

    @contextlib.asynccontextmanager
    async def track_request(self, session_id: str) -> AsyncIterator[Session]:
        """Count a request in flight on the server for the block's duration: a request lease
        taken on entry, renewed every half ``request_lease`` while the block runs and released on
        exit, whatever happens in the block (if this process dies first, the lease runs out after
        ``request_lease`` seconds). A renewal that fails is logged once as a warning
        (``sessionhub.client``) and does not interrupt the block.

        If the client is closed before the block exits, the exit releases nothing and raises
        nothing (the block's own error, if any, propagates): as for a process that died, the
        lease runs out on the server ``request_lease`` seconds after it was last renewed. Raising
        there would turn a block that did its work into a failure over cleanup that cannot be
        done any more, and the lease exists for exactly that case."""
        lease = await self._run(calls.take_lease(session_id, self.request_lease))
        renewal = self._renew_while_open(session_id, lease.lease_id)
        failed = True
        try:
            yield lease.session
            failed = False
        finally:
            await renewing.stop_renewing(renewal)
            await self._release(session_id, lease.lease_id, failed)

    def _renew_while_open(self, session_id: str, lease_id: str) -> asyncio.Task[None]:
        call = calls.renew_lease(session_id, lease_id, self.request_lease)
        renewal = asyncio.create_task(
            renewing.renew_until_cancelled(lambda: self._run(call), session_id, self.request_lease),
            name=f"sessionhub lease renewal ({session_id})",
        )
        self._renewals.add(renewal)  # so that close() stops it
        renewal.add_done_callback(self._renewals.discard)
        return renewal

    async def _release(self, session_id: str, lease_id: str, failed: bool) -> None:
        if self._closed:  # nothing to release it with: the lease runs out on the server
            return
        release = calls.release_lease(session_id, lease_id)
        if failed:
            with contextlib.suppress(Exception):  # the block's error is the one to see
                await self._run(release)
        else:
            with contextlib.suppress(SessionNotFound):  # ended meanwhile: nothing is held
                await self._run(release)

    async def end(self, session_id: str, reason: str = "ended") -> bool:
        return await self._run(calls.end(session_id, reason))

    async def link(self, parent_id: str, child_id: str) -> Session:
        return await self._run(calls.link(parent_id, child_id))

    def data(self, session_id: str) -> AsyncRemoteData:
        check_id(session_id)
        return AsyncRemoteData(self, session_id)

    def history(self, session_id: str) -> AsyncRemoteHistory:
        check_id(session_id)
        return AsyncRemoteHistory(self, session_id)

    async def _data_entry(self, session_id: str, key: str) -> DataEntry | None:
        try:
            return await self._run(calls.data_get(session_id, key))
        except SessionNotFound:
            await self.get(session_id)  # a 404 means no key, or no session: which?
            return None

    async def _data_set(
        self, session_id: str, key: str, value: Any, expected_version: int | None
    ) -> DataEntry:
        return await self._run(calls.data_set(session_id, key, value, expected_version))

    async def _data_delete(self, session_id: str, key: str, expected_version: int | None) -> bool:
        return await self._run(calls.data_delete(session_id, key, expected_version))

    async def _data_entries(self, session_id: str) -> list[DataEntry]:
        return await self._run(calls.data_items(session_id))

    async def _history_append(self, session_id: str, kind: str, payload: Any) -> HistoryRecord:
        return await self._run(calls.history_append(session_id, kind, payload))

    async def _history_append_many(
        self, session_id: str, records: Iterable[tuple[str, Any]]
    ) -> list[HistoryRecord]:
        return await self._run(calls.history_append_many(session_id, records))

    async def _history_pop(self, session_id: str, kind: str, marker: str) -> HistoryRecord | None:
        return await self._run(calls.history_pop(session_id, kind, marker))

    async def _history_read(
        self,
        session_id: str,
        *,
        after: int | None,
        limit: int,
        newest_first: bool,
        kind: str | None,
    ) -> list[HistoryRecord]:
        call = calls.history_read(
            session_id, after=after, limit=limit, newest_first=newest_first, kind=kind
        )
        return await self._run(call)

    async def _history_counts(self, session_id: str) -> dict[str, int]:
        return await self._run(calls.history_counts(session_id))

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
        """The server's events (``GET /v1/events``), in order. When the stream breaks, the client
        reconnects with ``Last-Event-ID`` and the server resumes after the last event received
        (within its retained window; older gaps arrive as a ``missed`` event). After
        ``reconnect_attempts`` failed attempts in a row it raises ``StoreUnavailable``."""
        params = calls.events_params(namespace, kinds, session_id)
        parser = EventStreamParser(after)
        failures = 0
        while True:
            if self._closed:
                raise calls.closed(self)
            headers = {"Last-Event-ID": parser.last_event_id} if parser.last_event_id else {}
            try:
                async with self._http.stream(
                    "GET",
                    "/v1/events",
                    params=params,
                    headers=headers,
                    timeout=calls.stream_timeout(self.timeout),
                ) as response:
                    if not response.is_success:
                        await response.aread()
                        calls.raise_for_response(response, session_id)
                    failures = 0
                    async for line in response.aiter_lines():
                        event = parser.feed(line)
                        if event is not None:
                            yield event
            except (httpx.TransportError, RuntimeError) as exc:
                if self._closed:  # closed while the stream was open
                    raise calls.closed(self) from exc
                if isinstance(exc, RuntimeError):
                    raise
                failures += 1
                if not reconnect or failures > self.reconnect_attempts:
                    raise calls.transport_error(self.url, exc) from exc
            else:
                if not reconnect:
                    return
            parser = EventStreamParser(parser.last_event_id)  # drop a half-read event
            await asyncio.sleep(backoff(failures))

    async def metrics(self) -> MetricsSnapshot:
        """The server hub's ``metrics()`` (``GET /v1/stats``)."""
        return await self._run(calls.metrics())


class AsyncRemoteData(RemoteDataHandle):
    """``client.data(id)``: the session's key → JSON value store, as ``SessionData``."""

    __slots__ = ()


class AsyncRemoteHistory(RemoteHistoryHandle):
    """``client.history(id)``: the session's append-only log, as ``SessionHistory``."""

    __slots__ = ()
