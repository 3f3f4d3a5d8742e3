"""``Client``: the hub's verbs against a sessionhub server, blocking (for scripts, the CLI and sync
tests). It mirrors ``AsyncClient`` line for line; both build their requests with ``_calls``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Generator, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import httpx

from .._errors import SessionNotFound
from .._hub import DEFAULT, _Default
from .._leases import DEFAULT_LEASE
from .._limits import check_id
from .._metrics import MetricsSnapshot
from .._models import DataEntry, HistoryRecord, Page, Session, SessionEvent
from . import _calls as calls
from ._calls import Call
from ._renewal import RenewalThread
from ._sse import EventStreamParser, backoff

__all__ = ["Client", "RemoteData", "RemoteHistory"]

T = TypeVar("T")
_JSON = {"Content-Type": "application/json"}


class Client:
    """A sessionhub server seen as a blocking hub: ``with Client(url, token=...) as hub:``.

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
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = calls.base_url(url)
        self.timeout = timeout
        self.reconnect_attempts = reconnect_attempts
        self.request_lease = request_lease
        self._renewals: set[RenewalThread] = set()
        self._closed = False
        self._http = httpx.Client(
            base_url=self.url,
            headers=calls.headers_for(calls.default_token(token)),
            timeout=calls.timeout_for(timeout),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"Client({calls.shown_url(self.url)!r})"  # never the token or a password

    def __enter__(self) -> Client:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Check that the server answers (``StoreUnavailable`` if not), as a hub opens its store."""
        self.health()

    def close(self) -> None:
        """Close the pooled connections; blocks of ``track_request`` still open are renewed no
        more (their leases run out on the server). Calls after it raise ``ClientClosed``; a second
        ``close()`` does nothing."""
        for renewal in list(self._renewals):
            renewal.stop()
        self._closed = True  # after the renewals stopped: none of them fails on it
        self._http.close()

    def _run(self, call: Call[T]) -> T:
        if self._closed:
            raise calls.closed(self)
        try:
            response = self._http.request(
                call.method,
                call.path,
                params=call.params,
                content=call.body,
                headers=_JSON if call.body is not None else None,
            )
        except (httpx.TransportError, RuntimeError) as exc:
            if self._closed:  # closed (by another thread) while the request was out
                raise calls.closed(self) from exc
            if isinstance(exc, RuntimeError):
                raise
            raise calls.transport_error(self.url, exc) from exc
        return call.result(response)

    def health(self) -> str:
        """The server's ``/healthz`` status (``"ok"``)."""
        return self._run(calls.health())

    # sessions

    def create(
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
        return self._run(
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

    def get(self, session_id: str) -> Session:
        return self._run(calls.get(session_id))

    def exists(self, session_id: str) -> bool:
        try:
            session = self.get(session_id)
        except SessionNotFound:
            return False
        return session.ended_at is None

    def find(
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
        return self._run(
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

    def count(
        self,
        *,
        namespace: str | None = None,
        user_id: str | None = None,
        parent_id: str | None = None,
        state: str | None = None,
        labels: Mapping[str, str] | None = None,
        include_ended: bool = False,
    ) -> int:
        return self._run(
            calls.count(
                namespace=namespace,
                user_id=user_id,
                parent_id=parent_id,
                state=state,
                labels=labels,
                include_ended=include_ended,
            )
        )

    def update(
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
        return self._run(
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

    def transition(
        self, session_id: str, event: str, *, expected_version: int | None = None
    ) -> Session:
        return self._run(calls.transition(session_id, event, expected_version))

    def touch(self, session_id: str) -> Session:
        return self._run(calls.touch(session_id))

    def incr(self, session_id: str, counter: str, by: int = 1) -> int:
        return self._run(calls.incr(session_id, counter, by))

    @contextlib.contextmanager
    def track_request(self, session_id: str) -> Iterator[Session]:
        """Count a request in flight on the server for the block's duration: a request lease
        taken on entry, renewed every half ``request_lease`` while the block runs (from a daemon
        thread) and released on exit, whatever happens in the block (if this process dies first,
        the lease runs out after ``request_lease`` seconds). A renewal that fails is logged once
        as a warning (``sessionhub.client``) and does not interrupt the block. If the client is
        closed before the block exits, the exit releases nothing and raises nothing: the lease
        runs out on the server, as ``AsyncClient.track_request`` says."""
        lease = self._run(calls.take_lease(session_id, self.request_lease))
        renewal = self._renew_while_open(session_id, lease.lease_id)
        failed = True
        try:
            yield lease.session
            failed = False
        finally:
            renewal.stop()
            self._renewals.discard(renewal)
            self._release(session_id, lease.lease_id, failed)

    def _renew_while_open(self, session_id: str, lease_id: str) -> RenewalThread:
        call = calls.renew_lease(session_id, lease_id, self.request_lease)
        # the same pooled connections: an httpx.Client "can be shared between threads" (its docs)
        renewal = RenewalThread(lambda: self._run(call), session_id, self.request_lease)
        self._renewals.add(renewal)  # so that close() stops it
        renewal.start()
        return renewal

    def _release(self, session_id: str, lease_id: str, failed: bool) -> None:
        if self._closed:  # nothing to release it with: the lease runs out on the server
            return
        release = calls.release_lease(session_id, lease_id)
        if failed:
            with contextlib.suppress(Exception):  # the block's error is the one to see
                self._run(release)
        else:
            with contextlib.suppress(SessionNotFound):  # ended meanwhile: nothing is held
                self._run(release)

    def end(self, session_id: str, reason: str = "ended") -> bool:
        return self._run(calls.end(session_id, reason))

    def link(self, parent_id: str, child_id: str) -> Session:
        return self._run(calls.link(parent_id, child_id))

    def data(self, session_id: str) -> RemoteData:
        check_id(session_id)
        return RemoteData(self, session_id)

    def history(self, session_id: str) -> RemoteHistory:
        check_id(session_id)
        return RemoteHistory(self, session_id)

    # events and metrics

    def subscribe(
        self,
        *,
        namespace: str | None = None,
        kinds: Collection[str] | None = None,
        session_id: str | None = None,
        after: str | None = None,
        reconnect: bool = True,
    ) -> Generator[SessionEvent, None, None]:
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
                with self._http.stream(
                    "GET",
                    "/v1/events",
                    params=params,
                    headers=headers,
                    timeout=calls.stream_timeout(self.timeout),
                ) as response:
                    if not response.is_success:
                        response.read()
                        calls.raise_for_response(response, session_id)
                    failures = 0
                    for line in response.iter_lines():
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
            time.sleep(backoff(failures))

    def metrics(self) -> MetricsSnapshot:
        """The server hub's ``metrics()`` (``GET /v1/stats``)."""
        return self._run(calls.metrics())


class RemoteData:
    """``client.data(id)``: the session's key → JSON value store, as ``SessionData``."""

    __slots__ = ("_client", "session_id")

    def __init__(self, client: Client, session_id: str) -> None:
        self._client = client
        self.session_id = session_id

    def get(self, key: str, default: Any = None) -> Any:
        entry = self.entry(key)
        return default if entry is None else entry.value

    def entry(self, key: str) -> DataEntry | None:
        try:
            return self._client._run(calls.data_get(self.session_id, key))
        except SessionNotFound:
            self._client.get(self.session_id)  # a 404 means no key, or no session: which?
            return None

    def set(self, key: str, value: Any, *, expected_version: int | None = None) -> DataEntry:
        return self._client._run(calls.data_set(self.session_id, key, value, expected_version))

    def delete(self, key: str, *, expected_version: int | None = None) -> bool:
        return self._client._run(calls.data_delete(self.session_id, key, expected_version))

    def entries(self) -> list[DataEntry]:
        return self._client._run(calls.data_items(self.session_id))

    def items(self) -> dict[str, Any]:
        return {entry.key: entry.value for entry in self.entries()}


class RemoteHistory:
    """``client.history(id)``: the session's append-only log, as ``SessionHistory``."""

    __slots__ = ("_client", "session_id")

    def __init__(self, client: Client, session_id: str) -> None:
        self._client = client
        self.session_id = session_id

    def append(self, kind: str, payload: Any = None) -> HistoryRecord:
        return self._client._run(calls.history_append(self.session_id, kind, payload))

    def append_many(self, records: Iterable[tuple[str, Any]]) -> list[HistoryRecord]:
        """As ``SessionHistory.append_many``: one request, one store operation on the server."""
        return self._client._run(calls.history_append_many(self.session_id, records))

    def pop(self, kind: str, *, marker: str) -> HistoryRecord | None:
        """As ``SessionHistory.pop``: one request, one atomic store operation on the server."""
        return self._client._run(calls.history_pop(self.session_id, kind, marker))

    def read(
        self,
        *,
        after: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
        kind: str | None = None,
    ) -> list[HistoryRecord]:
        call = calls.history_read(
            self.session_id, after=after, limit=limit, newest_first=newest_first, kind=kind
        )
        return self._client._run(call)

    def counts(self) -> dict[str, int]:
        return self._client._run(calls.history_counts(self.session_id))

    def count(self, kind: str | None = None) -> int:
        counts = self.counts()
        return sum(counts.values()) if kind is None else counts.get(kind, 0)
