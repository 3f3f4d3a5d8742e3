"""One handler per hub verb: decode the request, call the hub, encode the answer.

Handlers hold no policy; everything they check beyond JSON shapes is checked by the hub, so the
HTTP face answers every bad input exactly as the embedded hub raises it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import msgspec

from .. import _wire as wire
from .._errors import SessionNotFound, ValidationError
from .._hub import DEFAULT, SessionHub, _Default
from .._leases import RequestLeases
from .._models import Page, Session, json_encoder
from ._guard import quoted
from ._prometheus import ServerMetrics
from ._request import HttpRefusal, Reply, Request, json_reply

logger = logging.getLogger("sessionhub.http")

__all__ = ["ROUTES", "Face", "Handler", "Route"]


class Face(NamedTuple):
    """What handlers serve: the hub, the request leases held over it, the server's metrics."""

    hub: SessionHub
    leases: RequestLeases
    metrics: ServerMetrics


Handler = Callable[[Face, Request], Awaitable[Reply]]


class Route(msgspec.Struct, frozen=True):
    """A path template (``{name}`` segments are parameters) and its handler per method."""

    template: str
    methods: dict[str, Handler]


def _timeout(value: float | msgspec.UnsetType | None) -> float | _Default | None:
    return DEFAULT if value is msgspec.UNSET else value


def _filters(request: Request) -> dict[str, Any]:
    labels: dict[str, str] = {}
    for pair in request.args("label"):
        key, sep, value = pair.partition(":")
        if not sep or not key:
            raise ValidationError(f"label filters look like key:value, got {quoted(pair)}")
        labels[key] = value
    return {
        "namespace": request.arg("namespace"),
        "user_id": request.arg("user_id"),
        "parent_id": request.arg("parent_id"),
        "state": request.arg("state"),
        "labels": labels or None,
        "include_ended": request.bool_arg("include_ended"),
    }


# sessions


async def create(face: Face, request: Request) -> Reply:
    body = await request.json(wire.CreateBody)
    session = await face.hub.create(
        body.id,
        namespace=body.namespace,
        user_id=body.user_id,
        parent_id=body.parent_id,
        labels=body.labels,
        details=body.details,
        idle_timeout=_timeout(body.idle_timeout),
        ttl=_timeout(body.ttl),
        retention=body.retention,
        activate=body.activate,
    )
    return json_reply(session, 201)


async def find(face: Face, request: Request) -> Reply:
    page: Page = await face.hub.find(
        **_filters(request),
        limit=request.int_arg("limit", 100),
        cursor=request.arg("cursor"),
    )
    try:
        return json_reply(page)
    except Exception:  # one session that cannot be encoded must not fail the listing for all
        return Reply(200, _encode_page(page, face.metrics))


def _encode_page(page: Page, metrics: ServerMetrics) -> bytes:
    """The page without the sessions that cannot be encoded (logged and counted)."""
    items = []
    for session in page.items:
        try:
            items.append(json_encoder.encode(session))
        except Exception:
            logger.exception("session %s cannot be encoded: left out of a listing", session.id)
            metrics.unencodable.labels("session").inc()
    cursor = json_encoder.encode(page.cursor)
    return b'{"items":[' + b",".join(items) + b'],"cursor":' + cursor + b"}"


async def count(face: Face, request: Request) -> Reply:
    return json_reply(wire.Count(await face.hub.count(**_filters(request))))


async def get(face: Face, request: Request) -> Reply:
    session = await face.hub.get(request.params[0])
    try:
        return json_reply(session)
    except Exception:  # a record stored before the hub bounded nesting, say
        logger.exception("session %s cannot be encoded", session.id)
        face.metrics.unencodable.labels("session").inc()
        message = f"session {quoted(session.id)} cannot be sent: it cannot be encoded as JSON"
        raise HttpRefusal(500, "internal", message) from None


async def update(face: Face, request: Request) -> Reply:
    body = await request.json(wire.UpdateBody)
    session = await face.hub.update(
        request.params[0],
        details=body.details,
        remove_details=body.remove_details,
        labels=body.labels,
        remove_labels=body.remove_labels,
        idle_timeout=_timeout(body.idle_timeout),
        ttl=_timeout(body.ttl),
        expected_version=body.expected_version,
    )
    return json_reply(session)


async def end(face: Face, request: Request) -> Reply:
    reason = request.arg("reason")  # a blank one is refused, not taken for the default
    ended = await face.hub.end(request.params[0], "ended" if reason is None else reason)
    return json_reply(wire.Ended(ended))


async def end_of_user(face: Face, request: Request) -> Reply:
    reason = request.arg("reason")
    ended = await face.hub.end_all(
        "ended" if reason is None else reason,
        user_id=request.params[0],
        namespace=request.arg("namespace"),
    )
    return json_reply(wire.Count(ended))


async def touch(face: Face, request: Request) -> Reply:
    await request.json(wire.NoBody)  # a body with fields is refused, as elsewhere
    return json_reply(await face.hub.touch(request.params[0]))


async def transition(face: Face, request: Request) -> Reply:
    body = await request.json(wire.TransitionBody)
    session: Session = await face.hub.transition(
        request.params[0], body.event, expected_version=body.expected_version
    )
    return json_reply(session)


async def incr(face: Face, request: Request) -> Reply:
    body = await request.json(wire.IncrBody)
    session_id, counter = request.params
    return json_reply(wire.Value(await face.hub.incr(session_id, counter, body.by)))


async def link(face: Face, request: Request) -> Reply:
    body = await request.json(wire.LinkBody)
    return json_reply(await face.hub.link(request.params[0], body.child_id))


# data


async def data_items(face: Face, request: Request) -> Reply:
    return json_reply(wire.DataItems(await face.hub.data(request.params[0]).entries()))


async def data_get(face: Face, request: Request) -> Reply:
    session_id, key = request.params
    entry = await face.hub.data(session_id).entry(key)
    if entry is None:
        raise SessionNotFound(session_id, f"session {session_id} has no data key {key!r}")
    return json_reply(entry)


async def data_set(face: Face, request: Request) -> Reply:
    body = await request.json(wire.DataBody)
    session_id, key = request.params
    entry = await face.hub.data(session_id).set(
        key, body.value, expected_version=body.expected_version
    )
    return json_reply(entry)


async def data_delete(face: Face, request: Request) -> Reply:
    session_id, key = request.params
    expected = request.int_arg("expected_version")
    deleted = await face.hub.data(session_id).delete(key, expected_version=expected)
    return json_reply(wire.Deleted(deleted))


# history


async def history_append(face: Face, request: Request) -> Reply:
    body = await request.json(wire.HistoryBody)
    record = await face.hub.history(request.params[0]).append(body.kind, body.payload)
    return json_reply(record, 201)


async def history_append_many(face: Face, request: Request) -> Reply:
    body = await request.json(wire.HistoryBatchBody)
    pairs = [(record.kind, record.payload) for record in body.records]
    records = await face.hub.history(request.params[0]).append_many(pairs)
    return json_reply(wire.HistoryItems(records), 201)


async def history_pop(face: Face, request: Request) -> Reply:
    body = await request.json(wire.HistoryPopBody)
    record = await face.hub.history(request.params[0]).pop(body.kind, marker=body.marker)
    return json_reply(wire.Popped(record))


async def history_read(face: Face, request: Request) -> Reply:
    order = request.arg("order")
    order = "oldest" if order is None else order
    if order not in ("oldest", "newest"):
        raise ValidationError(f"order must be oldest or newest, got {order!r}")
    records = await face.hub.history(request.params[0]).read(
        after=request.int_arg("after"),
        limit=request.int_arg("limit", 100),
        newest_first=order == "newest",
        kind=request.arg("kind"),
    )
    return json_reply(wire.HistoryItems(records))


async def history_counts(face: Face, request: Request) -> Reply:
    return json_reply(wire.HistoryCounts(await face.hub.history(request.params[0]).counts()))


# request leases: a remote `track_request`


async def lease_start(face: Face, request: Request) -> Reply:
    body = await request.json(wire.LeaseBody)
    lease, session = await face.leases.start(request.params[0], body.lease)
    return json_reply(wire.Lease(lease.id, lease.seconds, session), 201)


async def lease_renew(face: Face, request: Request) -> Reply:
    body = await request.json(wire.LeaseBody)
    session_id, lease_id = request.params
    lease, session = await face.leases.renew(session_id, lease_id, body.lease)
    return json_reply(wire.Lease(lease.id, lease.seconds, session))


async def lease_release(face: Face, request: Request) -> Reply:
    session_id, lease_id = request.params
    return json_reply(wire.Released(await face.leases.release(session_id, lease_id)))


# service


async def stats(face: Face, request: Request) -> Reply:
    return json_reply(wire.Stats.of(await face.hub.metrics()))


async def health(face: Face, request: Request) -> Reply:
    return json_reply(wire.Health("ok"))


S = "/v1/sessions/{id}"

ROUTES = (
    Route(S, {"GET": get, "PATCH": update, "DELETE": end}),
    Route("/v1/sessions", {"GET": find, "POST": create}),
    Route(S + "/touch", {"POST": touch}),
    Route(S + "/requests", {"POST": lease_start}),
    Route(S + "/requests/{lease_id}", {"PUT": lease_renew, "DELETE": lease_release}),
    Route(S + "/transitions", {"POST": transition}),
    Route(S + "/counters/{name}", {"POST": incr}),
    Route(S + "/children", {"POST": link}),
    Route(S + "/data", {"GET": data_items}),
    Route(S + "/data/{key}", {"GET": data_get, "PUT": data_set, "DELETE": data_delete}),
    Route(S + "/history", {"GET": history_read, "POST": history_append}),
    Route(S + "/history/counts", {"GET": history_counts}),
    Route(S + "/history/batch", {"POST": history_append_many}),
    Route(S + "/history/pop", {"POST": history_pop}),
    Route("/v1/users/{user_id}/sessions", {"DELETE": end_of_user}),
    Route("/v1/count", {"GET": count}),
    Route("/v1/stats", {"GET": stats}),
    Route("/healthz", {"GET": health}),
)
