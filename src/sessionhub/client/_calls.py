"""What each verb sends over HTTP and how its answer decodes, shared by ``Client`` and ``AsyncClient``.

A ``Call`` is a request description plus a decoder; the two clients only differ in how they send it
(blocking or awaited), as httpx's own ``Client``/``AsyncClient`` pair does. Nothing here does I/O.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import msgspec

from .. import _wire as wire
from .._containers import batch_pairs
from .._errors import (
    ClientClosed,
    SessionHubError,
    SessionNotFound,
    StoreUnavailable,
    ValidationError,
    error_for_code,
)
from .._hub import DEFAULT
from .._limits import check_id, check_key, encode_json
from .._metrics import MetricsSnapshot
from .._models import DataEntry, HistoryRecord, Page, Session

__all__ = [
    "DEFAULT_URL",
    "Call",
    "ClientClosed",
    "base_url",
    "default_token",
    "raise_for_response",
    "shown_url",
    "to_json",
]

T = TypeVar("T")
Params = list[tuple[str, str | int | float | bool | None]]

#: Where ``sessionhub serve`` listens by default; ``SESSIONHUB_URL`` overrides it.
DEFAULT_URL = "http://127.0.0.1:7480"


def base_url(url: str | None) -> str:
    """The server URL: the argument, else ``SESSIONHUB_URL``, else ``DEFAULT_URL``."""
    chosen = url if url is not None else os.environ.get("SESSIONHUB_URL") or DEFAULT_URL
    if not isinstance(chosen, str) or not chosen.startswith(("http://", "https://")):
        raise ValidationError(
            "a sessionhub server URL starts with http:// or https://, got "
            + repr(shown_url(chosen) if isinstance(chosen, str) else chosen)
        )
    return chosen.rstrip("/")


def default_token(token: str | None) -> str | None:
    return token if token is not None else os.environ.get("SESSIONHUB_TOKEN") or None


def headers_for(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def timeout_for(timeout: float | None) -> httpx.Timeout:
    return httpx.Timeout(timeout)


def stream_timeout(timeout: float | None) -> httpx.Timeout:
    """An event stream waits between events as long as it must; only connecting is bounded."""
    return httpx.Timeout(timeout, read=None)


def shown_url(url: str) -> str:
    """``url`` as messages and reprs show it: without the credentials it may carry
    (``http://user:pass@host`` shows as ``http://host``)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def closed(client: object) -> ClientClosed:
    return ClientClosed(f"{client!r} is closed: open a new client")  # the repr hides the token


def transport_error(url: str, exc: httpx.TransportError) -> StoreUnavailable:
    """The server could not be reached: to the caller it is the store being unavailable."""
    shown = shown_url(url)
    detail = repr(exc).replace(url, shown)  # should the error quote the URL, quote it shown
    return StoreUnavailable(f"cannot reach the sessionhub server at {shown}: {detail}")


# answers


def _decoder(kind: type[T]) -> Callable[[bytes], T]:
    return msgspec.json.Decoder(kind).decode


_session = _decoder(Session)
_page = _decoder(Page)
_data_entry = _decoder(DataEntry)
_record = _decoder(HistoryRecord)
_popped = _decoder(wire.Popped)
_lease = _decoder(wire.Lease)
_error_answer = _decoder(wire.ErrorAnswer)
_stats = _decoder(wire.Stats)


def _field(kind: type[Any], name: str) -> Callable[[bytes], Any]:
    decode = _decoder(kind)
    return lambda raw: getattr(decode(raw), name)


def raise_for_response(response: httpx.Response, session_id: str | None = None) -> NoReturn:
    """Raise the ``SessionHubError`` the server reported, as the embedded hub would have."""
    try:
        body = _error_answer(response.content).error
    except msgspec.DecodeError:
        raise SessionHubError(
            f"HTTP {response.status_code} from {response.request.url}: {response.text[:200]}"
        ) from None
    error = error_for_code(body.code, body.message)
    if isinstance(error, SessionNotFound):
        error.session_id = session_id or ""
    raise error


# requests


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One HTTP request of a verb and how to read its successful answer."""

    method: str
    path: str
    decode: Callable[[bytes], T]
    params: Params = field(default_factory=list)
    body: bytes | None = None
    session_id: str | None = None

    def result(self, response: httpx.Response) -> T:
        if response.is_success:
            return self.decode(response.content)
        raise_for_response(response, self.session_id)


def _seg(value: str) -> str:
    """One path segment: percent-encoded, and the dot segments ``.`` and ``..`` spelt ``%2E``
    (a URL library removes them as relative references, so ``get("..")`` would reach ``/v1``)."""
    segment = quote(value, safe="")
    return segment.replace(".", "%2E") if segment in (".", "..") else segment


def _session_path(session_id: str, *rest: str) -> str:
    return "/".join(("/v1/sessions", _seg(check_id(session_id)), *rest))


def to_json(value: Any, what: str) -> bytes:
    """JSON to send; a value nested too deeply to encode is refused as any other non-JSON value
    is (``ValidationError``), not raised as Python's ``RecursionError``."""
    try:
        return encode_json(value, what, None)
    except RecursionError:
        raise ValidationError(f"{what} is nested too deeply to encode as JSON") from None


def _body(fields: Mapping[str, Any]) -> bytes:
    """JSON of the fields given (``DEFAULT`` ones are left out, so the server applies its own)."""
    return to_json({k: v for k, v in fields.items() if v is not DEFAULT}, "request body")


def _filters(
    namespace: str | None,
    user_id: str | None,
    parent_id: str | None,
    state: str | None,
    labels: Mapping[str, str] | None,
    include_ended: bool,
) -> Params:
    params: Params = [
        (name, value)
        for name, value in (
            ("namespace", namespace),
            ("user_id", user_id),
            ("parent_id", parent_id),
            ("state", state),
        )
        if value is not None
    ]
    if labels is not None:
        if not isinstance(labels, Mapping):
            raise ValidationError(f"labels must be a mapping of str to str, got {labels!r}")
        params += [("label", f"{key}:{value}") for key, value in labels.items()]
    if include_ended:
        params.append(("include_ended", "true"))
    return params


def create(
    session_id: str | None,
    *,
    namespace: str,
    user_id: str | None,
    parent_id: str | None,
    labels: Mapping[str, str] | None,
    details: Mapping[str, Any] | None,
    idle_timeout: object,
    ttl: object,
    retention: float | None,
    activate: bool,
) -> Call[Session]:
    fields = {
        "id": session_id,
        "namespace": namespace,
        "user_id": user_id,
        "parent_id": parent_id,
        "labels": labels,
        "details": details,
        "idle_timeout": idle_timeout,
        "ttl": ttl,
        "retention": retention,
        "activate": activate,
    }
    optional = {"id", "user_id", "parent_id", "labels", "details", "retention"}
    body = {k: v for k, v in fields.items() if not (k in optional and v is None)}
    return Call("POST", "/v1/sessions", _session, body=_body(body), session_id=session_id)


def get(session_id: str) -> Call[Session]:
    return Call("GET", _session_path(session_id), _session, session_id=session_id)


def find(
    *,
    namespace: str | None,
    user_id: str | None,
    parent_id: str | None,
    state: str | None,
    labels: Mapping[str, str] | None,
    include_ended: bool,
    limit: int,
    cursor: str | None,
) -> Call[Page]:
    params = _filters(namespace, user_id, parent_id, state, labels, include_ended)
    params.append(("limit", str(limit)))
    if cursor is not None:
        params.append(("cursor", cursor))
    return Call("GET", "/v1/sessions", _page, params=params)


def count(
    *,
    namespace: str | None,
    user_id: str | None,
    parent_id: str | None,
    state: str | None,
    labels: Mapping[str, str] | None,
    include_ended: bool,
) -> Call[int]:
    params = _filters(namespace, user_id, parent_id, state, labels, include_ended)
    return Call("GET", "/v1/count", _field(wire.Count, "count"), params=params)


def update(
    session_id: str,
    *,
    details: Mapping[str, Any] | None,
    remove_details: Collection[str],
    labels: Mapping[str, str] | None,
    remove_labels: Collection[str],
    idle_timeout: object,
    ttl: object,
    expected_version: int | None,
) -> Call[Session]:
    fields: dict[str, Any] = {"idle_timeout": idle_timeout, "ttl": ttl}
    for name, value in (
        ("details", details),
        ("labels", labels),
        ("expected_version", expected_version),
    ):
        if value is not None:
            fields[name] = value
    for name, names in (("remove_details", remove_details), ("remove_labels", remove_labels)):
        if names:
            fields[name] = list(names) if not isinstance(names, str) else names
    return Call(
        "PATCH", _session_path(session_id), _session, body=_body(fields), session_id=session_id
    )


def transition(session_id: str, event: str, expected_version: int | None) -> Call[Session]:
    fields: dict[str, Any] = {"event": event}
    if expected_version is not None:
        fields["expected_version"] = expected_version
    path = _session_path(session_id, "transitions")
    return Call("POST", path, _session, body=_body(fields), session_id=session_id)


def touch(session_id: str) -> Call[Session]:
    return Call("POST", _session_path(session_id, "touch"), _session, session_id=session_id)


def incr(session_id: str, counter: str, by: int) -> Call[int]:
    if type(by) is not int:
        raise ValidationError(f"by must be an integer, got {by!r}")
    if not isinstance(counter, str) or not counter:
        raise ValidationError(f"counter name must be a non-empty string, got {counter!r}")
    path = _session_path(session_id, "counters", _seg(counter))
    decode = _field(wire.Value, "value")
    return Call("POST", path, decode, body=_body({"by": by}), session_id=session_id)


def end(session_id: str, reason: str) -> Call[bool]:
    if not isinstance(reason, str):
        raise ValidationError(f"reason must be a string, got {reason!r}")
    path = _session_path(session_id)
    decode = _field(wire.Ended, "ended")
    return Call("DELETE", path, decode, params=[("reason", reason)], session_id=session_id)


def take_lease(session_id: str, lease: float) -> Call[wire.Lease]:
    """A request in flight on the server until ``release_lease`` (or ``lease`` seconds)."""
    path = _session_path(session_id, "requests")
    return Call("POST", path, _lease, body=_body({"lease": lease}), session_id=session_id)


def renew_lease(session_id: str, lease_id: str, lease: float) -> Call[wire.Lease]:
    """Hold the lease until ``release_lease`` or ``lease`` seconds from now."""
    path = _session_path(session_id, "requests", _seg(lease_id))
    return Call("PUT", path, _lease, body=_body({"lease": lease}), session_id=session_id)


def release_lease(session_id: str, lease_id: str) -> Call[Session]:
    path = _session_path(session_id, "requests", _seg(lease_id))
    return Call("DELETE", path, _field(wire.Released, "session"), session_id=session_id)


def link(parent_id: str, child_id: str) -> Call[Session]:
    check_id(child_id, "child_id")
    path = _session_path(parent_id, "children")
    return Call("POST", path, _session, body=_body({"child_id": child_id}), session_id=parent_id)


def data_items(session_id: str) -> Call[list[DataEntry]]:
    path = _session_path(session_id, "data")
    return Call("GET", path, _field(wire.DataItems, "items"), session_id=session_id)


def data_get(session_id: str, key: str) -> Call[DataEntry]:
    path = _session_path(session_id, "data", _seg(check_key(key)))
    return Call("GET", path, _data_entry, session_id=session_id)


def data_set(
    session_id: str, key: str, value: Any, expected_version: int | None
) -> Call[DataEntry]:
    fields: dict[str, Any] = {"value": value}
    if expected_version is not None:
        fields["expected_version"] = expected_version
    path = _session_path(session_id, "data", _seg(check_key(key)))
    return Call("PUT", path, _data_entry, body=_body(fields), session_id=session_id)


def data_delete(session_id: str, key: str, expected_version: int | None) -> Call[bool]:
    params: Params = (
        [] if expected_version is None else [("expected_version", str(expected_version))]
    )
    path = _session_path(session_id, "data", _seg(check_key(key)))
    decode = _field(wire.Deleted, "deleted")
    return Call("DELETE", path, decode, params=params, session_id=session_id)


def history_append(session_id: str, kind: str, payload: Any) -> Call[HistoryRecord]:
    path = _session_path(session_id, "history")
    body = _body({"kind": kind, "payload": payload})
    return Call("POST", path, _record, body=body, session_id=session_id)


def history_append_many(session_id: str, records: object) -> Call[list[HistoryRecord]]:
    """One request for the whole batch: the server appends it in one store operation. How many
    records a batch may hold is the server's ``Limits.max_history_batch``: the server refuses."""
    body = [{"kind": kind, "payload": payload} for kind, payload in batch_pairs(records, None)]
    path = _session_path(session_id, "history", "batch")
    decode = _field(wire.HistoryItems, "items")
    return Call("POST", path, decode, body=_body({"records": body}), session_id=session_id)


def history_pop(session_id: str, kind: str, marker: str) -> Call[HistoryRecord | None]:
    path = _session_path(session_id, "history", "pop")
    body = _body({"kind": kind, "marker": marker})
    return Call("POST", path, lambda raw: _popped(raw).record, body=body, session_id=session_id)


def history_read(
    session_id: str, *, after: int | None, limit: int, newest_first: bool, kind: str | None
) -> Call[list[HistoryRecord]]:
    params: Params = [("limit", str(limit)), ("order", "newest" if newest_first else "oldest")]
    if after is not None:
        params.append(("after", str(after)))
    if kind is not None:
        params.append(("kind", kind))
    path = _session_path(session_id, "history")
    decode = _field(wire.HistoryItems, "items")
    return Call("GET", path, decode, params=params, session_id=session_id)


def history_counts(session_id: str) -> Call[dict[str, int]]:
    path = _session_path(session_id, "history", "counts")
    return Call("GET", path, _field(wire.HistoryCounts, "counts"), session_id=session_id)


def metrics() -> Call[MetricsSnapshot]:
    return Call("GET", "/v1/stats", lambda raw: _stats(raw).snapshot())


def health() -> Call[str]:
    return Call("GET", "/healthz", _field(wire.Health, "status"))


def events_params(
    namespace: str | None, kinds: Collection[str] | None, session_id: str | None
) -> Params:
    params: Params = []
    if namespace is not None:
        params.append(("namespace", namespace))
    if kinds is not None:
        if isinstance(kinds, str):
            raise ValidationError(f"kinds must be a collection of event kinds, got {kinds!r}")
        if kinds:  # no kinds named: every kind, as the hub's `kinds=[]`
            params.append(("kinds", ",".join(kinds)))
    if session_id is not None:
        params.append(("session_id", check_id(session_id)))
    return params
