"""Serving an ASGI app on a free loopback port inside the test's event loop (granian, embedded)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from granian.constants import Interfaces
from granian.server.embed import Server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """The app's base URL while it is served; stopped on exit."""
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
                await probe.get(url + "/")
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
