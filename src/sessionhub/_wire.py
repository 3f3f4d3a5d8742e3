"""The JSON bodies of the HTTP API, as msgspec structs shared by the server and the clients.

The server decodes requests with these very types and publishes their schemas in its OpenAPI
document, so the document describes exactly what the server accepts. Unknown fields are refused: a misspelt field is
a 400, never a silently ignored setting.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from ._leases import DEFAULT_LEASE, MAX_LEASE
from ._metrics import MetricsSnapshot, MinuteCount
from ._models import DataEntry, HistoryRecord, Session

__all__ = [
    "Census",
    "Count",
    "CreateBody",
    "DataBody",
    "DataItems",
    "Deleted",
    "Ended",
    "ErrorAnswer",
    "ErrorBody",
    "Health",
    "HistoryBatchBody",
    "HistoryBody",
    "HistoryCounts",
    "HistoryItems",
    "HistoryPopBody",
    "IncrBody",
    "Lease",
    "LeaseBody",
    "LinkBody",
    "NoBody",
    "Popped",
    "Released",
    "Stats",
    "TransitionBody",
    "UpdateBody",
    "Value",
]


# JSON integers are bounded to 64 bits, what every store can hold (the document says so too).
_Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
_Version = Annotated[int, Meta(ge=1, le=2**63 - 1)]
_NewOrVersion = Annotated[int, Meta(ge=0, le=2**63 - 1)]


class _Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class NoBody(_Body):
    """A route that takes no input: nothing, or ``{}``."""


class CreateBody(_Body):
    """``POST /v1/sessions``. A missing ``idle_timeout``/``ttl`` takes the server's default; an
    explicit ``null`` means none."""

    id: str | None = None
    namespace: str = "default"
    user_id: str | None = None
    parent_id: str | None = None
    labels: dict[str, str] | None = None
    details: dict[str, Any] | None = None
    idle_timeout: float | UnsetType | None = UNSET
    ttl: float | UnsetType | None = UNSET
    retention: float | None = None
    activate: bool = False


class UpdateBody(_Body):
    """``PATCH /v1/sessions/{id}``: merge ``details``/``labels``, remove keys, change timeouts."""

    details: dict[str, Any] | None = None
    remove_details: list[str] = []
    labels: dict[str, str] | None = None
    remove_labels: list[str] = []
    idle_timeout: float | UnsetType | None = UNSET
    ttl: float | UnsetType | None = UNSET
    expected_version: _Version | None = None


class TransitionBody(_Body):
    """``POST /v1/sessions/{id}/transitions``: a lifecycle event, e.g. ``ACTIVATE``."""

    event: str
    expected_version: _Version | None = None


class IncrBody(_Body):
    """``POST /v1/sessions/{id}/counters/{name}``."""

    by: _Int64 = 1


class LinkBody(_Body):
    """``POST /v1/sessions/{id}/children``: make ``child_id`` a child of the session."""

    child_id: str


class DataBody(_Body):
    """``PUT /v1/sessions/{id}/data/{key}``. ``expected_version`` 0 writes only a new key."""

    value: Any
    expected_version: _NewOrVersion | None = None


class LeaseBody(_Body):
    """``POST /v1/sessions/{id}/requests``: count a request in flight until it is released
    (``DELETE /v1/sessions/{id}/requests/{lease_id}``) or, if abandoned, for ``lease`` seconds
    (at most a day: the document must not offer a lease the server refuses); the same body renews
    it (``PUT .../requests/{lease_id}``: ``lease`` seconds from then)."""

    lease: Annotated[float, Meta(gt=0, le=MAX_LEASE)] = DEFAULT_LEASE


class HistoryBody(_Body):
    """``POST /v1/sessions/{id}/history``: append one record."""

    kind: str
    payload: Any = None


class HistoryBatchBody(_Body):
    """``POST /v1/sessions/{id}/history/batch``: append records together, consecutively, all or
    none (the hub checks how many: 1 to its ``Limits.max_history_batch``)."""

    records: list[HistoryBody]


class HistoryPopBody(_Body):
    """``POST /v1/sessions/{id}/history/pop``: remove the top of the stack of ``kind`` records,
    appending a ``marker`` record."""

    kind: str
    marker: str


class ErrorBody(msgspec.Struct):
    code: str
    message: str


class ErrorAnswer(msgspec.Struct):
    """Every error answer: ``{"error": {"code", "message"}}``."""

    error: ErrorBody


class Lease(msgspec.Struct):
    """The answer to ``POST /v1/sessions/{id}/requests`` (201): the session counts the request.
    Release it with ``DELETE .../requests/{lease_id}``; if it is not released (or renewed, with
    ``PUT .../requests/{lease_id}``, which answers this too) within ``expires_in`` seconds, it is
    released then."""

    lease_id: str
    expires_in: float
    session: Session


class Released(msgspec.Struct):
    """The answer to ``DELETE /v1/sessions/{id}/requests/{lease_id}``."""

    session: Session


class Ended(msgspec.Struct):
    ended: bool


class Deleted(msgspec.Struct):
    deleted: bool


class Value(msgspec.Struct):
    value: int


class Count(msgspec.Struct):
    count: int


class Health(msgspec.Struct):
    status: str


class Census(msgspec.Struct):
    namespace: str
    state: str
    count: int


class Minute(msgspec.Struct):
    """Sessions created and ended during the wall-clock minute starting at ``minute`` (Unix
    seconds)."""

    minute: float
    created: int
    ended: int


class Stats(msgspec.Struct):
    """``GET /v1/stats``: the server hub's ``metrics()``."""

    live_sessions: int
    sessions: list[Census]
    created_total: int
    ended_total: dict[str, int]
    hook_calls_total: int
    hook_failures_total: int
    expiry_lateness_buckets: list[int]
    expiry_lateness_sum: float
    expiry_lateness_max: float
    subscribers: int
    per_minute: list[Minute] = []  # the last 60 minutes, oldest first

    @classmethod
    def of(cls, snapshot: MetricsSnapshot) -> Stats:
        return cls(
            live_sessions=snapshot.live_sessions,
            sessions=[Census(ns, state, n) for (ns, state), n in sorted(snapshot.sessions.items())],
            created_total=snapshot.created_total,
            ended_total=snapshot.ended_total,
            hook_calls_total=snapshot.hook_calls_total,
            hook_failures_total=snapshot.hook_failures_total,
            expiry_lateness_buckets=list(snapshot.expiry_lateness_buckets),
            expiry_lateness_sum=snapshot.expiry_lateness_sum,
            expiry_lateness_max=snapshot.expiry_lateness_max,
            subscribers=snapshot.subscribers,
            per_minute=[Minute(m.minute, m.created, m.ended) for m in snapshot.per_minute],
        )

    def snapshot(self) -> MetricsSnapshot:
        return MetricsSnapshot(
            live_sessions=self.live_sessions,
            sessions={(c.namespace, c.state): c.count for c in self.sessions},
            created_total=self.created_total,
            ended_total=self.ended_total,
            hook_calls_total=self.hook_calls_total,
            hook_failures_total=self.hook_failures_total,
            expiry_lateness_buckets=tuple(self.expiry_lateness_buckets),
            expiry_lateness_sum=self.expiry_lateness_sum,
            expiry_lateness_max=self.expiry_lateness_max,
            subscribers=self.subscribers,
            per_minute=tuple(MinuteCount(m.minute, m.created, m.ended) for m in self.per_minute),
        )


class DataItems(msgspec.Struct):
    items: list[DataEntry]


class HistoryItems(msgspec.Struct):
    items: list[HistoryRecord]


class HistoryCounts(msgspec.Struct):
    counts: dict[str, int]


class Popped(msgspec.Struct):
    """What ``history/pop`` answers: the removed record, or ``null`` when there was none."""

    record: HistoryRecord | None
