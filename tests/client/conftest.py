"""A real sessionhub server per test, on a free loopback port, for the clients, the CLI and the
plugin. It runs in a thread with its own event loop, so sync tests (the blocking Client, click's
CliRunner, pytester) and async tests (whose loop must stay free) can both use it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from sessionhub import AsyncClient, Client, SessionEvent

from .serving import ThreadedServer, free_port

__all__ = ["sync_anchor"]


@pytest.fixture
def make_server() -> Iterator[Callable[..., ThreadedServer]]:
    """Start servers over fresh hubs (``SessionHub`` keyword arguments); all stopped at the end."""
    servers: list[ThreadedServer] = []

    def start(**hub_options: Any) -> ThreadedServer:
        server = ThreadedServer(**hub_options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., ThreadedServer]) -> ThreadedServer:
    return make_server()


@pytest.fixture
def server_url(server: ThreadedServer) -> str:
    return server.url


@pytest.fixture
def server_token(server: ThreadedServer) -> str:
    return server.token


@pytest.fixture
async def client(server: ThreadedServer) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.url, token=server.token) as client:
        yield client


@pytest.fixture
def sync_client(server: ThreadedServer) -> Iterator[Client]:
    with Client(server.url, token=server.token) as client:
        yield client


@pytest.fixture
async def make_client(
    make_server: Callable[..., ThreadedServer],
) -> AsyncIterator[Callable[..., Awaitable[AsyncClient]]]:
    """An AsyncClient of a new server whose hub has the given options."""
    clients: list[AsyncClient] = []

    async def connect(**hub_options: Any) -> AsyncClient:
        server = await asyncio.to_thread(make_server, **hub_options)
        client = AsyncClient(server.url, token=server.token)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


def sync_anchor(client: Client) -> str:
    """The id of an event just published (see ``test_events.anchor``), with the blocking client."""
    first: list[SessionEvent] = []

    def read() -> None:
        for event in client.subscribe(namespace="anchor"):
            first.append(event)
            return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while reader.is_alive():
        assert time.monotonic() < deadline, "the subscription never went live"
        client.create(namespace="anchor", idle_timeout=None)
        reader.join(0.05)
    return first[0].id
