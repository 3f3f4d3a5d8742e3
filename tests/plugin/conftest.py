"""pytester runs real pytest processes with the plugin loaded from its entry point; the remote
runs use the same real servers as the client tests."""

import asyncio
import contextlib
from collections.abc import Callable

import httpx
import pytest
from _pytest.pytester import pytest_addoption, pytester

from tests.client.conftest import make_server, server_token, server_url, sync_client
from tests.client.serving import ThreadedServer

__all__ = [
    "make_server",
    "pytest_addoption",
    "pytester",
    "server_token",
    "server_url",
    "sync_client",
]


def _import_transports() -> None:
    """pytester restores ``sys.modules`` after each test: a module first imported during a test
    is dropped and imported anew later, and httpx then no longer recognises the exceptions of
    that second httpcore (a server's readiness probe fails on its first refused connection).
    httpx imports its transports on first use, so use them once, before any test runs."""
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens there
    with httpx.Client(timeout=1) as client, contextlib.suppress(httpx.TransportError):
        client.get(dead)

    async def probe() -> None:
        async with httpx.AsyncClient(timeout=1) as client:
            with contextlib.suppress(httpx.TransportError):
                await client.get(dead)

    asyncio.run(probe())


_import_transports()


@pytest.fixture
def server(make_server: Callable[..., ThreadedServer]) -> ThreadedServer:
    """A server that keeps ended sessions readable, to check what a run has ended."""
    return make_server(retention=600)
