"""What the async clients of a server share, whatever carries their calls (``AsyncClient`` over
HTTP, ``GrpcClient`` over gRPC): opening and closing, the verbs built on other verbs, and the
``data(id)`` / ``history(id)`` handles. Each client supplies the primitive calls of its transport.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Any, Self

from .._containers import DataReads, HistoryCounts
from .._errors import SessionNotFound
from .._models import DataEntry, HistoryRecord, Session

__all__ = ["AsyncRemoteHub", "RemoteDataHandle", "RemoteHistoryHandle"]


class AsyncRemoteHub(abc.ABC):
    """The base of the async clients; see the module docstring."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Check that the server answers (``StoreUnavailable`` if not), as a hub opens its store."""
        await self.health()

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def health(self) -> str: ...

    @abc.abstractmethod
    async def get(self, session_id: str) -> Session: ...

    async def exists(self, session_id: str) -> bool:
        try:
            session = await self.get(session_id)
        except SessionNotFound:
            return False
        return session.ended_at is None

    # the primitives of the data and history handles

    @abc.abstractmethod
    async def _data_entry(self, session_id: str, key: str) -> DataEntry | None: ...

    @abc.abstractmethod
    async def _data_set(
        self, session_id: str, key: str, value: Any, expected_version: int | None
    ) -> DataEntry: ...

    @abc.abstractmethod
    async def _data_delete(
        self, session_id: str, key: str, expected_version: int | None
    ) -> bool: ...

    @abc.abstractmethod
    async def _data_entries(self, session_id: str) -> list[DataEntry]: ...

    @abc.abstractmethod
    async def _history_append(self, session_id: str, kind: str, payload: Any) -> HistoryRecord: ...

    @abc.abstractmethod
    async def _history_append_many(
        self, session_id: str, records: Iterable[tuple[str, Any]]
    ) -> list[HistoryRecord]: ...

    @abc.abstractmethod
    async def _history_pop(
        self, session_id: str, kind: str, marker: str
    ) -> HistoryRecord | None: ...

    @abc.abstractmethod
    async def _history_read(
        self,
        session_id: str,
        *,
        after: int | None,
        limit: int,
        newest_first: bool,
        kind: str | None,
    ) -> list[HistoryRecord]: ...

    @abc.abstractmethod
    async def _history_counts(self, session_id: str) -> dict[str, int]: ...


class RemoteDataHandle(DataReads):
    """``client.data(id)``: the session's key → JSON value store, as ``SessionData``."""

    __slots__ = ("_client", "session_id")

    def __init__(self, client: AsyncRemoteHub, session_id: str) -> None:
        self._client = client
        self.session_id = session_id

    async def entry(self, key: str) -> DataEntry | None:
        return await self._client._data_entry(self.session_id, key)

    async def set(self, key: str, value: Any, *, expected_version: int | None = None) -> DataEntry:
        return await self._client._data_set(self.session_id, key, value, expected_version)

    async def delete(self, key: str, *, expected_version: int | None = None) -> bool:
        return await self._client._data_delete(self.session_id, key, expected_version)

    async def entries(self) -> list[DataEntry]:
        return await self._client._data_entries(self.session_id)


class RemoteHistoryHandle(HistoryCounts):
    """``client.history(id)``: the session's append-only log, as ``SessionHistory``."""

    __slots__ = ("_client", "session_id")

    def __init__(self, client: AsyncRemoteHub, session_id: str) -> None:
        self._client = client
        self.session_id = session_id

    async def append(self, kind: str, payload: Any = None) -> HistoryRecord:
        return await self._client._history_append(self.session_id, kind, payload)

    async def append_many(self, records: Iterable[tuple[str, Any]]) -> list[HistoryRecord]:
        """As ``SessionHistory.append_many``: one call, one store operation on the server."""
        return await self._client._history_append_many(self.session_id, records)

    async def pop(self, kind: str, *, marker: str) -> HistoryRecord | None:
        """As ``SessionHistory.pop``: one call, one atomic store operation on the server."""
        return await self._client._history_pop(self.session_id, kind, marker)

    async def read(
        self,
        *,
        after: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
        kind: str | None = None,
    ) -> list[HistoryRecord]:
        return await self._client._history_read(
            self.session_id, after=after, limit=limit, newest_first=newest_first, kind=kind
        )

    async def counts(self) -> dict[str, int]:
        return await self._client._history_counts(self.session_id)
