"""``GET /v1/events``: the hub's events as server-sent events.

A pump task moves events from the subscription into a small queue and the writer sends them; when
the client reads slowly the pump waits, so that subscription falls behind in the hub's bounded event
log (and later receives a ``missed`` event) while the server and every other subscriber go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

from .._errors import ValidationError
from .._hub import SessionHub
from .._models import SessionEvent, json_encoder
from ._guard import Headers, quoted
from ._prometheus import ServerMetrics
from ._request import Request, Send

__all__ = ["MAX_EVENT_ID", "stream_events"]

logger = logging.getLogger("sessionhub.http")

MAX_EVENT_ID = 64  # far longer than any store's ids (a Redis stream id is at most 41)

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # proxies must not buffer a live stream
]
_KEEPALIVE = b": keep-alive\n\n"


def encode_event(event: SessionEvent) -> bytes:
    """One SSE frame. ``missed`` notices carry no ``id``: resuming goes on from the last real one."""
    head = b"" if event.kind == "missed" else b"id: " + event.id.encode() + b"\n"
    return (
        head + b"event: " + event.kind.encode() + b"\ndata: " + json_encoder.encode(event) + b"\n\n"
    )


def _event_id(request: Request) -> str | None:
    """Where to resume: ``Last-Event-ID`` (a reconnecting browser's), else ``?after=``."""
    after = request.header(b"last-event-id") or request.arg("after")
    if after is not None and len(after) > MAX_EVENT_ID:
        raise ValidationError(
            f"unknown event id {quoted(after, 20)}: event ids are at most {MAX_EVENT_ID} characters"
        )
    return after


async def stream_events(
    hub: SessionHub,
    request: Request,
    send: Send,
    keepalive: float,
    closing: asyncio.Event,
    metrics: ServerMetrics,
    cors: Headers = (),
) -> None:
    kinds = [k for k in (request.arg("kinds") or "").split(",") if k]
    events = hub.subscribe(  # raises on bad filters, before any byte is sent
        namespace=request.arg("namespace"),
        kinds=kinds or None,  # none named (or `kinds=`): every kind
        session_id=request.arg("session_id"),
        after=_event_id(request),
    )
    headers = [*_HEADERS, *cors]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"retry: 1000\n\n", "more_body": True})
    queue: asyncio.Queue[SessionEvent] = asyncio.Queue(maxsize=64)
    pump = asyncio.create_task(_pump(events, queue))
    stop = asyncio.create_task(_stopped(request, closing))
    try:
        # Until the client leaves or the server closes; when the subscription ends (the hub
        # closed), what the pump queued is still sent: the last events are the `ended` ones.
        while not stop.done():
            if not queue.empty():
                frame = _frame(queue.get_nowait(), metrics)
            elif pump.done():
                break
            else:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, stop, pump}, timeout=keepalive, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    frame = _frame(getter.result(), metrics)
                else:
                    getter.cancel()
                    if done:
                        continue
                    frame = _KEEPALIVE
            if frame:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:
        pass  # the client went away mid-send: nothing to finish
    finally:
        for task in (pump, stop):
            task.cancel()
        await asyncio.gather(pump, stop, return_exceptions=True)
        await events.aclose()


def _frame(event: SessionEvent, metrics: ServerMetrics) -> bytes:
    """The event's frame, or nothing when it cannot be encoded: logged, counted and skipped,
    so that one bad session never cuts the stream (nor every stream after a reconnect)."""
    try:
        return encode_event(event)
    except Exception:
        logger.exception("event %s cannot be encoded: skipped", event.id)
        metrics.unencodable.labels("event").inc()
        return b""


async def _pump(
    events: AsyncGenerator[SessionEvent, None], queue: asyncio.Queue[SessionEvent]
) -> None:
    async for event in events:
        await queue.put(event)


async def _stopped(request: Request, closing: asyncio.Event) -> None:
    """Returns when the client disconnects or the server is shutting down."""
    disconnected = asyncio.ensure_future(_disconnect(request))
    closed = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait({disconnected, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        disconnected.cancel()
        closed.cancel()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
