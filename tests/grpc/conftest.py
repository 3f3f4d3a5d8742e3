"""Real ``grpc.aio`` servers on free loopback ports, in the test's event loop, and real generated
stubs as their clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import httpx
import pytest
from granian.constants import Interfaces
from granian.server.embed import Server

from sessionhub import ManualClock, SessionHub
from sessionhub.grpc import ERROR_CODE_KEY, GrpcServer
from sessionhub.grpc.protos.ma.streaming.api.v1 import session_management_pb2_grpc as api_grpc
from sessionhub.grpc.protos.sessionhub.v1 import sessionhub_pb2_grpc as pb_grpc

TOKEN = "grpc-test-token-0123"  # serve refuses tokens under 16 characters
AUTH = (("authorization", f"Bearer {TOKEN}"),)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Served:
    """A started ``GrpcServer`` with a channel to it and stubs of both services."""

    def __init__(self, server: GrpcServer, channel: Any) -> None:
        self.server = server
        self.hub = server.hub
        self.channel = channel
        self.target = f"127.0.0.1:{server.port}"
        self.url = f"grpc://{self.target}"
        self.native = pb_grpc.SessionHubServiceStub(channel)
        self.api = api_grpc.SessionManagementServiceStub(channel)


MakeServed = Callable[..., Awaitable[Served]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_750_000_000.0)


@pytest.fixture
async def hub() -> AsyncIterator[SessionHub]:
    async with SessionHub() as hub:
        yield hub


@pytest.fixture
async def make_served() -> AsyncIterator[MakeServed]:
    """Start servers over hubs (``hub=`` one of yours, else a fresh ``SessionHub``); the channel
    sends the token when the server wants one (``token=``). All stopped at teardown."""
    started: list[tuple[Served, SessionHub | None]] = []

    async def start(hub: SessionHub | None = None, **options: Any) -> Served:
        own = None
        if hub is None:
            own = hub = SessionHub()
            await hub.start()
        options.setdefault("grace", 0.5)
        server = GrpcServer(hub, host="127.0.0.1", port=0, **options)
        await server.start()
        interceptors = [_Auth(options["token"])] if options.get("token") else []
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", interceptors=interceptors)
        served = Served(server, channel)
        started.append((served, own))
        return served

    yield start
    for served, own in reversed(started):
        await served.channel.close()
        await served.server.stop(0)
        if own is not None:
            await own.close()


@pytest.fixture
async def served(make_served: MakeServed, hub: SessionHub) -> Served:
    return await make_served(hub)


class _Auth(
    grpc.aio.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.aio.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.aio.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds the bearer token to every call, as a client configured with it would."""

    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)

    def _details(self, details: Any) -> Any:
        metadata = tuple(details.metadata or ()) + self._metadata
        return details._replace(metadata=metadata)

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def error_code(error: Any) -> str | None:
    """The ``sessionhub-error-code`` trailing metadata of a failed call."""
    for key, value in error.trailing_metadata() or ():
        if key == ERROR_CODE_KEY:
            return str(value)
    return None


async def failure(call: Awaitable[Any]) -> Any:
    """The ``AioRpcError`` the call ends with (the test fails if it succeeds)."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` until it holds (no timing is asserted: only that it happens, within 20 s)."""
    async with asyncio.timeout(20):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def serving_http(app: Any) -> AsyncIterator[str]:
    """An ASGI app served by granian on a free loopback port in this loop; its base URL."""
    port = free_port()
    server = Server(
        app, address="127.0.0.1", port=port, interface=Interfaces.ASGI, log_enabled=False
    )
    task = asyncio.create_task(server.serve())
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient() as probe:
        while True:
            try:
                await probe.get(url + "/healthz")
                break
            except httpx.TransportError:
                if task.done() or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)
    try:
        yield url
    finally:
        server.stop()  # type: ignore[no-untyped-call]
        await task
