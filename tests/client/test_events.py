"""subscribe(): server-sent events through both clients, filters, resume and reconnection."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import httpx
import pytest

import sessionhub
from sessionhub import AsyncClient, Client, SessionEvent


async def anchor(client: AsyncClient) -> str:
    """The id of an event the server has just published, to resume after it: the events of a test
    are then read deterministically, whenever the subscription reached the server."""
    events = client.subscribe(namespace="anchor")
    first = asyncio.ensure_future(anext(events))
    async with asyncio.timeout(10):
        while not first.done():  # until the subscription is live on the server
            await client.create(namespace="anchor", idle_timeout=None)
            await asyncio.wait({first}, timeout=0.05)
    event = first.result()
    await events.aclose()
    return event.id


async def take(events: AsyncIterator[SessionEvent], n: int) -> list[SessionEvent]:
    async with asyncio.timeout(10):
        return [await anext(events) for _ in range(n)]


async def test_events_arrive_in_order_with_their_sessions(client: AsyncClient) -> None:
    after = await anchor(client)
    session = await client.create("e/1", namespace="ev")
    await client.update("e/1", details={"a": 1})
    await client.transition("e/1", "spawn")
    await client.end("e/1", "finished")
    events = client.subscribe(namespace="ev", after=after)
    got = await take(events, 5)
    await events.aclose()
    # ending walks the lifecycle: terminate (a transition), then ended once cleaned
    assert [e.kind for e in got] == ["created", "updated", "transitioned", "transitioned", "ended"]
    assert got[0].session == session
    assert [e.session.state for e in got if e.session] == [
        "CREATED",
        "CREATED",
        "SPAWNING",
        "TERMINATING",
        "CLEANED",
    ]
    assert got[4].session is not None
    assert got[4].session.end_reason == "finished"
    assert len({e.id for e in got}) == 5


async def test_filters_by_kind_namespace_and_session(client: AsyncClient) -> None:
    after = await anchor(client)
    await client.create("f1", namespace="a")
    await client.create("f2", namespace="b")
    await client.create("f3", namespace="a")
    await client.end("f1")
    await client.end("f3")
    by_kind = client.subscribe(kinds=["ended"], after=after)
    assert [e.session.id for e in await take(by_kind, 2) if e.session] == ["f1", "f3"]
    by_namespace = client.subscribe(namespace="b", after=after)
    assert [e.kind for e in await take(by_namespace, 1)] == ["created"]
    by_session = client.subscribe(session_id="f3", kinds=["created", "ended"], after=after)
    assert [e.kind for e in await take(by_session, 2)] == ["created", "ended"]
    for events in (by_kind, by_namespace, by_session):
        await events.aclose()


async def test_resume_after_an_event_id_skips_what_was_read(client: AsyncClient) -> None:
    after = await anchor(client)
    for n in range(5):
        await client.create(f"r{n}", namespace="resume")
    first = client.subscribe(namespace="resume", after=after)
    read = await take(first, 2)
    await first.aclose()
    rest = client.subscribe(namespace="resume", after=read[-1].id)
    assert [e.session.id for e in await take(rest, 3) if e.session] == ["r2", "r3", "r4"]
    await rest.aclose()


class BreakFirstStream(httpx.AsyncBaseTransport):
    """A real transport whose first event stream breaks after ``keep`` events, as a dropped
    connection would; it records the ``Last-Event-ID`` of each stream request."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.inner = httpx.AsyncHTTPTransport()
        self.resumed_from: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path != "/v1/events":
            return response
        self.resumed_from.append(request.headers.get("last-event-id"))
        if len(self.resumed_from) > 1:
            return response
        cut = CutStream(response, self.keep)
        return httpx.Response(response.status_code, headers=response.headers, stream=cut)

    async def aclose(self) -> None:
        await self.inner.aclose()


class CutStream(httpx.AsyncByteStream):
    """The bytes of ``response`` up to the end of its ``keep``-th event, then a dropped connection."""

    def __init__(self, response: httpx.Response, keep: int) -> None:
        self.response = response
        self.keep = keep

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = b""
        async for chunk in self.response.aiter_raw():
            seen += chunk
            if seen.count(b"\ndata: ") >= self.keep:  # frames that carry an event
                last = _nth(seen, b"\ndata: ", self.keep)
                end = seen.index(b"\n\n", last) + 2
                yield chunk[: len(chunk) - (len(seen) - end)]
                raise httpx.ReadError("connection dropped")
            yield chunk

    async def aclose(self) -> None:
        await self.response.aclose()


def _nth(data: bytes, sep: bytes, n: int) -> int:
    at = -1
    for _ in range(n):
        at = data.index(sep, at + 1)
    return at


async def test_a_broken_stream_reconnects_and_resumes_without_gaps(
    client: AsyncClient, server_url: str, server_token: str
) -> None:
    after = await anchor(client)
    for n in range(6):
        await client.create(f"b{n}", namespace="broken")
    transport = BreakFirstStream(keep=2)
    async with AsyncClient(server_url, token=server_token, transport=transport) as flaky:
        events = flaky.subscribe(namespace="broken", after=after)
        got = await take(events, 6)
        await events.aclose()
    assert [e.session.id for e in got if e.session] == [f"b{n}" for n in range(6)]
    assert transport.resumed_from == [after, got[1].id]


async def test_without_reconnect_a_broken_stream_raises(
    client: AsyncClient, server_url: str, server_token: str
) -> None:
    after = await anchor(client)
    for n in range(3):
        await client.create(f"n{n}", namespace="noreconnect")
    transport = BreakFirstStream(keep=1)
    async with AsyncClient(server_url, token=server_token, transport=transport) as flaky:
        events = flaky.subscribe(namespace="noreconnect", after=after, reconnect=False)
        assert len(await take(events, 1)) == 1
        with pytest.raises(sessionhub.StoreUnavailable):
            await anext(events)


async def test_a_refused_subscription_raises_the_servers_error(client: AsyncClient) -> None:
    with pytest.raises(sessionhub.ValidationError):
        await anext(client.subscribe(kinds=["no-such-kind"]))
    with pytest.raises(sessionhub.ValidationError):
        await anext(client.subscribe(session_id="bad id"))


async def test_the_blocking_client_subscribes_too(
    client: AsyncClient, server_url: str, server_token: str
) -> None:
    after = await anchor(client)
    for n in range(3):
        await client.create(f"s{n}", namespace="sync")
    received: list[SessionEvent] = []

    def read() -> None:
        with Client(server_url, token=server_token) as sync_client:
            for event in sync_client.subscribe(namespace="sync", after=after):
                received.append(event)
                if len(received) == 3:
                    return

    reader = threading.Thread(target=read)
    reader.start()
    await asyncio.to_thread(reader.join, 10)
    assert not reader.is_alive()
    assert [e.session.id for e in received if e.session] == ["s0", "s1", "s2"]
