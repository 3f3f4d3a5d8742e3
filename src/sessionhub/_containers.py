"""Each session's two private containers: ``data`` (key → JSON value) and ``history`` (a log).

Both are handles bound to one session id; nothing in them is reachable through another id, and both
are deleted with the session. Writes count as activity and slide the idle timeout. Reads see live
sessions and ended ones still retained; the store decides that with the read itself (given the
hub's clock), so a read is one store operation.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._errors import ValidationError, quoted
from ._limits import MAX_HISTORY_BATCH, check_key, check_limit, check_name, encode_json
from ._models import DataEntry, HistoryRecord

if TYPE_CHECKING:
    from ._hub import SessionHub

__all__ = [
    "MAX_HISTORY_BATCH",
    "DataReads",
    "HistoryCounts",
    "SessionData",
    "SessionHistory",
    "batch_pairs",
    "check_pop_kinds",
]


def _expected(value: int | None) -> int | None:
    if value is not None and (type(value) is not int or value < 0):
        raise ValidationError(f"expected_version must be an integer >= 0, got {quoted(value)}")
    return value


def batch_pairs(records: object, limit: int | None) -> list[tuple[Any, Any]]:
    """``append_many``'s records as ``(kind, payload)`` pairs, 1 to ``limit`` of them (the hub's
    ``Limits.max_history_batch``; clients pass ``None``, as the server's limit is the server's to
    check); the kinds and payloads themselves are checked by the hub (clients send them on)."""
    if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Iterable):
        raise ValidationError(
            f"records must be a list of (kind, payload) pairs, got {quoted(records)}"
        )
    pairs = list(records)
    if not pairs or (limit is not None and len(pairs) > limit):
        most = "" if limit is None else f" to {limit}"
        raise ValidationError(f"records must hold 1{most} records, got {len(pairs)}")
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValidationError(f"record {i} must be a (kind, payload) pair, got {quoted(pair)}")
    return [(kind, payload) for kind, payload in pairs]


def check_pop_kinds(kind: object, marker: object) -> tuple[str, str]:
    """``pop``'s two kinds: names, and different (a marker of the popped kind would push)."""
    checked = check_name(kind, "history kind"), check_name(marker, "marker kind")
    if checked[0] == checked[1]:
        raise ValidationError(f"the marker kind must differ from the popped kind {kind!r}")
    return checked


class DataReads(abc.ABC):
    """The reads every data handle (the hub's, a client's) derives from ``entry`` and ``entries``."""

    __slots__ = ()

    @abc.abstractmethod
    async def entry(self, key: str) -> DataEntry | None:
        """The value with its version, or ``None``."""

    @abc.abstractmethod
    async def entries(self) -> list[DataEntry]:
        """Every entry, in key order."""

    async def get(self, key: str, default: Any = None) -> Any:
        entry = await self.entry(key)
        return default if entry is None else entry.value

    async def items(self) -> dict[str, Any]:
        return {entry.key: entry.value for entry in await self.entries()}


class HistoryCounts(abc.ABC):
    """What every history handle derives from ``counts``."""

    __slots__ = ()

    @abc.abstractmethod
    async def counts(self) -> dict[str, int]:
        """How many records of each kind, without reading them."""

    async def count(self, kind: str | None = None) -> int:
        counts = await self.counts()
        return sum(counts.values()) if kind is None else counts.get(check_name(kind, "kind"), 0)


class SessionData(DataReads):
    """``hub.data(id)``: a key → JSON value store with compare-and-set by version.

    Every key has a version that starts at 1 and grows with each write. ``expected_version=0``
    writes only if the key is absent; any other number writes only over that version.
    """

    __slots__ = ("_hub", "session_id")

    def __init__(self, hub: SessionHub, session_id: str) -> None:
        self._hub = hub
        self.session_id = session_id

    async def entry(self, key: str) -> DataEntry | None:
        return await self._hub.store.data_get(self.session_id, check_key(key), self._hub.clock())

    async def set(self, key: str, value: Any, *, expected_version: int | None = None) -> DataEntry:
        raw = encode_json(value, "data value", self._hub.limits.max_data_value_bytes)
        return await self._hub.store.data_set(
            self.session_id, check_key(key), raw, _expected(expected_version), self._hub.clock()
        )

    async def delete(self, key: str, *, expected_version: int | None = None) -> bool:
        """Remove a key; whether it was there."""
        return await self._hub.store.data_delete(
            self.session_id, check_key(key), _expected(expected_version), self._hub.clock()
        )

    async def entries(self) -> list[DataEntry]:
        return await self._hub.store.data_items(self.session_id, self._hub.clock())


class SessionHistory(HistoryCounts):
    """``hub.history(id)``: an append-only log of ``{seq, kind, at, payload}`` records."""

    __slots__ = ("_hub", "session_id")

    def __init__(self, hub: SessionHub, session_id: str) -> None:
        self._hub = hub
        self.session_id = session_id

    async def append(self, kind: str, payload: Any = None) -> HistoryRecord:
        raw = encode_json(payload, "history record", self._hub.limits.max_history_record_bytes)
        return await self._hub.store.history_append(
            self.session_id, check_name(kind, "history kind"), raw, self._hub.clock()
        )

    async def append_many(self, records: Iterable[tuple[str, Any]]) -> list[HistoryRecord]:
        """Append ``(kind, payload)`` records together, in one store operation: consecutive
        ``seq``s whatever else writes the history, all or none (each record is checked as
        ``append`` checks it before anything is written). At most ``Limits.max_history_batch``
        records (1000 by default); a larger batch is refused whole with ``ValidationError``."""
        limits = self._hub.limits
        pairs = batch_pairs(records, limits.max_history_batch)
        limit = limits.max_history_record_bytes
        encoded = [
            (check_name(kind, "history kind"), encode_json(payload, f"history record {i}", limit))
            for i, (kind, payload) in enumerate(pairs)
        ]
        return await self._hub.store.history_append_many(
            self.session_id, encoded, self._hub.clock()
        )

    async def pop(self, kind: str, *, marker: str) -> HistoryRecord | None:
        """Read the history as a stack of ``kind`` records and remove its top, atomically: append
        a ``marker`` record ``{"popped": seq, "below": seq of the new top or 0}`` and return the
        removed record; ``None``, appending nothing, when the stack is empty. Every other kind of
        record empties the stack (a ``clear``). Two callers popping at once pop two records."""
        kind, marker = check_pop_kinds(kind, marker)
        return await self._hub.store.history_pop(self.session_id, kind, marker, self._hub.clock())

    async def read(
        self,
        *,
        after: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
        kind: str | None = None,
    ) -> list[HistoryRecord]:
        """A page of records in reading order. ``after`` is the last ``seq`` you have read: the
        page continues past it (below it, when ``newest_first``)."""
        if after is not None and (type(after) is not int or after < 0):
            raise ValidationError(f"after must be a sequence number >= 0, got {quoted(after)}")
        return await self._hub.store.history_read(
            self.session_id,
            after=after,
            limit=check_limit(limit),
            newest_first=bool(newest_first),
            kind=None if kind is None else check_name(kind, "history kind"),
            now=self._hub.clock(),
        )

    async def counts(self) -> dict[str, int]:
        return await self._hub.store.history_counts(self.session_id, self._hub.clock())
