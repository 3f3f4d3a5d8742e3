"""A client closed while a ``track_request`` block is open, and a client used after ``close()``,
against a real server, on every client: ``AsyncClient`` and ``Client`` (HTTP), ``GrpcClient``.

Leaving the block after ``close()`` is quiet (its request is not released by this client: over HTTP
its lease runs out on the server, over gRPC closing the channel ended the ``Track`` call), and any
later call raises ``ClientClosed``, a sessionhub error, instead of the transport's own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from sessionhub import AsyncClient, Client, SessionHubError
from sessionhub.client import ClientClosed
from sessionhub.grpc import GrpcClient

from .serving import ThreadedServer

LEASE = 1.0  # seconds: an abandoned HTTP lease runs out quickly
WAIT = 10.0  # a safety net for what must happen, not an assertion about speed

AnyClient = AsyncClient | GrpcClient


@pytest.fixture
def server(make_server: Callable[..., ThreadedServer]) -> ThreadedServer:
    return make_server(grpc=True)


@pytest.fixture(params=["http", "grpc"])
async def client(
    request: pytest.FixtureRequest, server: ThreadedServer
) -> AsyncIterator[AnyClient]:
    made: AnyClient
    if request.param == "http":
        made = AsyncClient(server.url, token=server.token, request_lease=LEASE)
    else:
        made = GrpcClient(server.grpc_url, token=server.token)
    await made.start()
    yield made
    await made.close()


@pytest.fixture
async def observer(server: ThreadedServer) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.url, token=server.token) as watching:
        yield watching


async def released(observer: AsyncClient, session_id: str) -> None:
    for _ in range(int(WAIT / 0.05)):
        if not (await observer.get(session_id)).active_requests:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"the request on {session_id} was never released")


async def test_leaving_a_block_after_close_is_quiet(
    client: AnyClient, observer: AsyncClient
) -> None:
    await observer.create("s", idle_timeout=None)
    async with client.track_request("s") as inside:
        assert inside.active_requests == 1
        await client.close()
    await released(observer, "s")  # not by this client: the lease or the call ran out


async def test_the_blocks_own_error_still_surfaces_after_close(
    client: AnyClient, observer: AsyncClient
) -> None:
    await observer.create("s", idle_timeout=None)

    async def block() -> None:
        async with client.track_request("s"):
            await client.close()
            raise KeyError("the block's error")

    with pytest.raises(KeyError, match="the block's error"):
        await block()
    await released(observer, "s")


async def test_a_closed_client_says_so(client: AnyClient, observer: AsyncClient) -> None:
    await observer.create("s", idle_timeout=None)
    await client.close()
    await client.close()  # twice is fine
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "get": lambda: client.get("s"),
        "create": lambda: client.create("t"),
        "health": client.health,
        "history": lambda: client.history("s").append("item", 1),
        "track_request": lambda: client.track_request("s").__aenter__(),
        "subscribe": lambda: anext(aiter(client.subscribe())),
    }
    for name, call in calls.items():
        with pytest.raises(ClientClosed, match="is closed") as info:
            await call()
        assert isinstance(info.value, SessionHubError), name
        assert isinstance(info.value, RuntimeError), name  # what the transports raised before
    assert (await observer.get("s")).active_requests == 0
    assert await observer.count() == 1  # nothing was sent


async def test_a_call_in_flight_when_the_client_closes_is_not_a_cancellation(
    client: AnyClient, observer: AsyncClient
) -> None:
    """``close()`` from another task: the call waiting meanwhile fails with ``ClientClosed``
    (or completes), never with a ``CancelledError`` its task did not ask for."""
    await observer.create("s", idle_timeout=None)
    events = client.subscribe(session_id="s", reconnect=False)
    waiting = asyncio.create_task(anext(events))
    await asyncio.sleep(0.3)  # the stream is open, waiting for an event
    await client.close()
    with pytest.raises(ClientClosed):
        await asyncio.wait_for(waiting, WAIT)
    assert not waiting.cancelled()


def test_the_blocking_client_too(server: ThreadedServer) -> None:
    with Client(server.url, token=server.token) as observer:
        observer.create("s", idle_timeout=None)
        client = Client(server.url, token=server.token, request_lease=LEASE)
        with client.track_request("s"):
            client.close()
        deadline = time.monotonic() + WAIT
        while observer.get("s").active_requests:
            assert time.monotonic() < deadline, "the lease never ran out"
            time.sleep(0.05)
        with pytest.raises(ClientClosed, match="is closed"):
            client.get("s")
        with pytest.raises(ClientClosed, match="is closed"), client.track_request("s"):
            pytest.fail("the block must not run")
        client.close()
