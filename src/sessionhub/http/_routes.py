"""One handler per hub verb: decode the request, call the hub, encode the answer.

Handlers hold no policy; everything they check beyond JSON shapes is checked by the hub, so the
HTTP face answers every bad input exactly as the embedded hub raises it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from .. import _wire as wire
from .._errors import SessionNotFound, ValidationError
from .._hub import DEFAULT, SessionHub, _Default
from .._models import Page, Session
from ._request import Reply, Request, json_reply

__all__ = ["ROUTES", "Handler", "Route"]

Handler = Callable[[SessionHub, Request], Awaitable[Reply]]


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
        if not sep:
            raise ValidationError(f"label filters look like key:value, got {pair!r}")
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


async def create(hub: SessionHub, request: Request) -> Reply:
    body = await request.json(wire.CreateBody)
    session = await hub.create(
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


async def find(hub: SessionHub, request: Request) -> Reply:
    page: Page = await hub.find(
        **_filters(request),
        limit=request.int_arg("limit", 100),
        cursor=request.arg("cursor"),
    )
    return json_reply(page)


async def count(hub: SessionHub, request: Request) -> Reply:
    return json_reply(wire.Count(await hub.count(**_filters(request))))


async def get(hub: SessionHub, request: Request) -> Reply:
    return json_reply(await hub.get(request.params[0]))


async def update(hub: SessionHub, request: Request) -> Reply:
    body = await request.json(wire.UpdateBody)
    session = await hub.update(
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


async def end(hub: SessionHub, request: Request) -> Reply:
    reason = request.arg("reason")  # a blank one is refused, not taken for the default
    ended = await hub.end(request.params[0], "ended" if reason is None else reason)
    return json_reply(wire.Ended(ended))


async def end_of_user(hub: SessionHub, request: Request) -> Reply:
    reason = request.arg("reason")
    ended = await hub.end_all(
        "ended" if reason is None else reason,
        user_id=request.params[0],
        namespace=request.arg("namespace"),
    )
    return json_reply(wire.Count(ended))


async def touch(hub: SessionHub, request: Request) -> Reply:
    return json_reply(await hub.touch(request.params[0]))


async def transition(hub: SessionHub, request: Request) -> Reply:
    body = await request.json(wire.TransitionBody)
    session: Session = await hub.transition(
        request.params[0], body.event, expected_version=body.expected_version
    )
    return json_reply(session)


async def incr(hub: SessionHub, request: Request) -> Reply:
    body = await request.json(wire.IncrBody)
    session_id, counter = request.params
    return json_reply(wire.Value(await hub.incr(session_id, counter, body.by)))


async def link(hub: SessionHub, request: Request) -> Reply:
    body = await request.json(wire.LinkBody)
    return json_reply(await hub.link(request.params[0], body.child_id))


# data


async def data_items(hub: SessionHub, request: Request) -> Reply:
    return json_reply(wire.DataItems(await hub.data(request.params[0]).entries()))


async def data_get(hub: SessionHub, request: Request) -> Reply:
    session_id, key = request.params
    entry = await hub.data(session_id).entry(key)
    if entry is None:
        raise SessionNotFound(session_id, f"session {session_id} has no data key {key!r}")
    return json_reply(entry)


async def data_set(hub: SessionHub, request: Request) -> Reply:
    body = await request.json(wire.DataBody)
    session_id, key = request.params
    entry = await hub.data(session_id).set(key, body.value, expected_version=body.expected_version)
    return json_reply(entry)


async def data_delete(hub: SessionHub, request: Request) -> Reply:
    session_id, key = request.params
    expected = request.int_arg("expected_version")
    deleted = await hub.data(session_id).delete(key, expected_version=expected)
    return json_reply(wire.Deleted(deleted))


# history


async def history_append(hub: SessionHub, request: Request) -> Reply:
    body = await request.json(wire.HistoryBody)
    record = await hub.history(request.params[0]).append(body.kind, body.payload)
    return json_reply(record, 201)


async def history_read(hub: SessionHub, request: Request) -> Reply:
    order = request.arg("order")
    order = "oldest" if order is None else order
    if order not in ("oldest", "newest"):
        raise ValidationError(f"order must be oldest or newest, got {order!r}")
    records = await hub.history(request.params[0]).read(
        after=request.int_arg("after"),
        limit=request.int_arg("limit", 100),
        newest_first=order == "newest",
        kind=request.arg("kind"),
    )
    return json_reply(wire.HistoryItems(records))


async def history_counts(hub: SessionHub, request: Request) -> Reply:
    return json_reply(wire.HistoryCounts(await hub.history(request.params[0]).counts()))


# service


async def stats(hub: SessionHub, request: Request) -> Reply:
    return json_reply(wire.Stats.of(await hub.metrics()))


async def health(hub: SessionHub, request: Request) -> Reply:
    return json_reply(wire.Health("ok"))


S = "/v1/sessions/{id}"

ROUTES = (
    Route(S, {"GET": get, "PATCH": update, "DELETE": end}),
    Route("/v1/sessions", {"GET": find, "POST": create}),
    Route(S + "/touch", {"POST": touch}),
    Route(S + "/transitions", {"POST": transition}),
    Route(S + "/counters/{name}", {"POST": incr}),
    Route(S + "/children", {"POST": link}),
    Route(S + "/data", {"GET": data_items}),
    Route(S + "/data/{key}", {"GET": data_get, "PUT": data_set, "DELETE": data_delete}),
    Route(S + "/history", {"GET": history_read, "POST": history_append}),
    Route(S + "/history/counts", {"GET": history_counts}),
    Route("/v1/users/{user_id}/sessions", {"DELETE": end_of_user}),
    Route("/v1/count", {"GET": count}),
    Route("/v1/stats", {"GET": stats}),
    Route("/healthz", {"GET": health}),
)
