"""Between sessionhub's records and the native ``sessionhub.v1`` messages, both ways.

The server encodes with these and the gRPC client decodes with them, so a ``Session`` read over gRPC
equals the one the hub returned (times as doubles, JSON values as JSON text: nothing is rounded).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgspec
from google.protobuf import json_format

from .._errors import SessionHubError, ValidationError
from .._hub import DEFAULT, _Default
from .._metrics import MetricsSnapshot
from .._models import EMPTY, DataEntry, HistoryRecord, Page, Session, SessionEvent
from .._wire import Stats
from ._status import quote
from .protos.sessionhub.v1 import sessionhub_pb2 as pb

__all__ = [
    "data_entry_from_pb",
    "data_entry_pb",
    "event_from_pb",
    "event_pb",
    "filters_pb",
    "from_json",
    "page_from_pb",
    "page_pb",
    "record_from_pb",
    "record_pb",
    "session_from_pb",
    "session_pb",
    "stats_from_pb",
    "stats_pb",
    "timeout_arg",
    "timeout_pb",
    "to_json",
]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode
_EMPTY_OBJECT = "{}"


@contextlib.contextmanager
def _sending(what: str) -> Iterator[None]:
    """A record the hub holds but protobuf cannot carry (a counter past int64, JSON nested past
    the encoder's depth) is a clear error for its reader, never an UNKNOWN status."""
    try:
        yield
    except (ValueError, TypeError, RecursionError, msgspec.EncodeError) as exc:
        raise SessionHubError(f"{what} cannot be sent over gRPC: {quote(str(exc))}") from None


def to_json(value: Any, what: str = "a JSON value") -> str:
    """JSON text of a value the hub holds (``SessionHubError`` if it cannot be encoded)."""
    with _sending(what):
        return _encode(value).decode()


def from_json(text: str, what: str) -> Any:
    """A JSON text field of a request, decoded; ``ValidationError`` if it is not JSON."""
    try:
        return _decode(text)
    except msgspec.DecodeError as exc:
        raise ValidationError(f"{what} is not valid JSON: {quote(str(exc), 200)}") from None
    except RecursionError:
        raise ValidationError(f"{what} is nested too deeply") from None


def details_arg(message: Any, field: str = "details_json") -> Mapping[str, Any] | None:
    """An optional JSON-object field of a request (``None`` when absent)."""
    if not message.HasField(field):
        return None
    details = from_json(getattr(message, field), "details_json")
    if not isinstance(details, dict):
        raise ValidationError("details must be a JSON object")
    return details


def timeout_arg(message: Any, field: str) -> float | _Default | None:
    """An idle timeout or ttl argument: absent → the hub's default; present empty → none."""
    if not message.HasField(field):
        return DEFAULT
    timeout = getattr(message, field)
    return timeout.seconds if timeout.HasField("seconds") else None


def timeout_pb(value: object) -> pb.Timeout | None:
    if value is DEFAULT:
        return None
    return pb.Timeout(seconds=value)  # type: ignore[arg-type]  # None → an empty Timeout: none


# sessions


def session_pb(session: Session) -> pb.Session:
    with _sending(f"session {quote(session.id)}"):
        return _session_pb(session)


def _session_pb(session: Session) -> pb.Session:
    details = session.details
    return pb.Session(
        id=session.id,
        namespace=session.namespace,
        state=session.state,
        user_id=session.user_id,
        parent_id=session.parent_id,
        labels=session.labels,
        details_json=_encode(details).decode() if details else _EMPTY_OBJECT,
        counters=session.counters,
        created_at=session.created_at,
        updated_at=session.updated_at,
        last_activity_at=session.last_activity_at,
        expires_at=session.expires_at,
        ended_at=session.ended_at,
        idle_timeout=session.idle_timeout,
        ttl=session.ttl,
        retention=session.retention,
        active_requests=session.active_requests,
        end_reason=session.end_reason,
        version=session.version,
    )


def _opt(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def session_from_pb(message: pb.Session) -> Session:
    details_json = message.details_json
    return Session(
        id=message.id,
        namespace=message.namespace,
        state=message.state,
        user_id=_opt(message, "user_id"),
        parent_id=_opt(message, "parent_id"),
        labels=dict(message.labels) if message.labels else EMPTY,
        details=_decode(details_json) if details_json and details_json != "{}" else EMPTY,
        counters=dict(message.counters) if message.counters else EMPTY,
        created_at=message.created_at,
        updated_at=message.updated_at,
        last_activity_at=message.last_activity_at,
        expires_at=_opt(message, "expires_at"),
        ended_at=_opt(message, "ended_at"),
        idle_timeout=_opt(message, "idle_timeout"),
        ttl=_opt(message, "ttl"),
        retention=_opt(message, "retention"),
        active_requests=message.active_requests,
        end_reason=_opt(message, "end_reason"),
        version=message.version,
    )


def page_pb(page: Page, skip: Callable[[SessionHubError], None]) -> pb.FindResponse:
    """The page; a session that cannot be sent is left out (and ``skip`` told why), so one bad
    record never takes a listing down for every other."""
    items = []
    for session in page.items:
        try:
            items.append(session_pb(session))
        except SessionHubError as exc:
            skip(exc)
    return pb.FindResponse(items=items, cursor=page.cursor)


def page_from_pb(message: pb.FindResponse) -> Page:
    return Page(items=[session_from_pb(s) for s in message.items], cursor=_opt(message, "cursor"))


def filters_pb(
    namespace: str | None,
    user_id: str | None,
    parent_id: str | None,
    state: str | None,
    labels: Mapping[str, str] | None,
    include_ended: bool,
) -> pb.Filters:
    return pb.Filters(
        namespace=namespace,
        user_id=user_id,
        parent_id=parent_id,
        state=state,
        labels=labels,
        include_ended=include_ended,
    )


def filters_args(filters: pb.Filters) -> dict[str, Any]:
    return {
        "namespace": _opt(filters, "namespace"),
        "user_id": _opt(filters, "user_id"),
        "parent_id": _opt(filters, "parent_id"),
        "state": _opt(filters, "state"),
        "labels": dict(filters.labels) or None,
        "include_ended": filters.include_ended,
    }


# containers


def data_entry_pb(entry: DataEntry) -> pb.DataEntry:
    value_json = to_json(entry.value, f"data entry {quote(entry.key)}")
    return pb.DataEntry(key=entry.key, value_json=value_json, version=entry.version)


def data_entry_from_pb(message: pb.DataEntry) -> DataEntry:
    return DataEntry(key=message.key, value=_decode(message.value_json), version=message.version)


def record_pb(record: HistoryRecord) -> pb.HistoryRecord:
    payload_json = to_json(record.payload, f"history record {record.seq}")
    return pb.HistoryRecord(
        seq=record.seq, kind=record.kind, at=record.at, payload_json=payload_json
    )


def record_from_pb(message: pb.HistoryRecord) -> HistoryRecord:
    return HistoryRecord(
        seq=message.seq,
        kind=message.kind,
        at=message.at,
        payload=_decode(message.payload_json) if message.payload_json else None,
    )


# events and metrics


def event_pb(event: SessionEvent) -> pb.Event:
    session = event.session
    return pb.Event(
        id=event.id,
        kind=event.kind,
        at=event.at,
        session=None if session is None else session_pb(session),
        missed=event.missed,
    )


def event_from_pb(message: pb.Event) -> SessionEvent:
    return SessionEvent(
        id=message.id,
        kind=message.kind,
        at=message.at,
        session=session_from_pb(message.session) if message.HasField("session") else None,
        missed=message.missed,
    )


def stats_pb(snapshot: MetricsSnapshot) -> pb.StatsResponse:
    return pb.StatsResponse(**msgspec.to_builtins(Stats.of(snapshot)))


def stats_from_pb(message: pb.StatsResponse) -> MetricsSnapshot:
    """Decoded as the HTTP face's ``GET /v1/stats`` is: through the one ``Stats`` struct."""
    fields = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return msgspec.convert(fields, Stats, strict=False).snapshot()  # int64s come as strings
