"""Events mean the same on every face: ``subscribe(kinds=[])`` is every kind over HTTP and gRPC,
and gRPC watchers, like SSE subscribers, read the ``ended`` events of a server's shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sessionhub import AsyncClient, Client, SessionEvent
from sessionhub.grpc import GrpcClient
from sessionhub.grpc.protos.ma.streaming.api.v1 import session_management_pb2 as api
from sessionhub.grpc.protos.ma.streaming.api.v1 import session_management_pb2_grpc as api_grpc

from .conftest import sync_anchor
from .serving import ThreadedServer


async def anchor(hub: AsyncClient | GrpcClient) -> str:
    """The id of an event just published: resuming after it reads what follows deterministically."""
    events = hub.subscribe()
    first = asyncio.ensure_future(anext(events))
    async with asyncio.timeout(10):
        while not first.done():  # until the subscription is live on the server
            await hub.create(namespace="probe", idle_timeout=None)
            await asyncio.wait({first}, timeout=0.05)
    await events.aclose()
    return first.result().id


async def kinds_of(events: AsyncIterator[SessionEvent], session_id: str) -> list[str]:
    """The kinds of ``session_id``'s events, up to its ``ended``."""
    kinds: list[str] = []
    async with asyncio.timeout(10):
        async for event in events:
            if event.session is not None and event.session.id == session_id:
                kinds.append(event.kind)
                if event.kind == "ended":
                    return kinds
    raise AssertionError("the stream ended early")


async def test_no_kinds_means_every_kind_on_every_async_face() -> None:
    server = await asyncio.to_thread(ThreadedServer, grpc=True)
    try:
        async with (
            AsyncClient(server.url, token=server.token) as http,
            GrpcClient(server.grpc_url, token=server.token) as grpc,
        ):
            for hub in (http, grpc):
                after = await anchor(hub)
                session_id = f"all-{type(hub).__name__}"
                await hub.create(session_id)
                await hub.update(session_id, labels={"k": "v"})
                await hub.end(session_id)
                events = hub.subscribe(kinds=[], after=after)
                assert {"created", "updated", "ended"} <= set(await kinds_of(events, session_id))
                await events.aclose()
    finally:
        await asyncio.to_thread(server.stop)


def test_no_kinds_means_every_kind_on_the_blocking_client() -> None:
    server = ThreadedServer()
    try:
        with Client(server.url, token=server.token) as client:
            after = sync_anchor(client)
            client.create("one")
            client.update("one", labels={"k": "v"})
            client.end("one")
            events = client.subscribe(kinds=[], after=after)
            kinds = [next(events).kind for _ in range(3)]
            events.close()
        assert kinds[:2] == ["created", "updated"]
    finally:
        server.stop()


async def test_grpc_watchers_read_the_ended_events_of_shutdown() -> None:
    server = await asyncio.to_thread(ThreadedServer, grpc=True)
    stopped = False
    try:
        async with GrpcClient(server.grpc_url, token=server.token) as grpc:
            watch = grpc.subscribe(kinds=["ended"], reconnect=False, after=await anchor(grpc))
            stops = api_grpc.SessionManagementServiceStub(grpc._channel)
            notifications = stops.GetSessionStopNotification(
                api.GetSessionStopNotificationRequest(data_source="kept"),
                metadata=(("authorization", f"Bearer {server.token}"),),
            )
            await notifications.initial_metadata()
            for n in range(3):
                await grpc.create(f"kept-{n}", namespace="kept", idle_timeout=None)
            pending = asyncio.ensure_future(anext(watch))
            await asyncio.sleep(0.1)
            stopping = asyncio.ensure_future(asyncio.to_thread(server.stop))
            ended = []
            async with asyncio.timeout(20):
                ended.append(await pending)
                ended += [event async for event in watch]
                keys = [message.session_key async for message in notifications]
                await stopping
                stopped = True
            kept = [e.session.id for e in ended if e.session and e.session.namespace == "kept"]
            assert sorted(kept) == ["kept-0", "kept-1", "kept-2"]
            assert {e.session.end_reason for e in ended if e.session} == {"shutdown"}
            assert sorted(keys) == ["kept-0", "kept-1", "kept-2"]
    finally:
        if not stopped:
            await asyncio.to_thread(server.stop)
