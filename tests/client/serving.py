"""``ThreadedServer``: the real sessionhub HTTP app (``sessionhub.http.create_app``) served by
granian on a free loopback port, in a thread with its own event loop; with ``grpc=True`` the gRPC
server runs beside it over the same hub, as ``sessionhub serve`` runs them."""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

import httpx
from granian.constants import Interfaces
from granian.server.embed import Server

from sessionhub import SessionHub

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ThreadedServer:
    """Started on construction, ready when the constructor returns; ``stop()`` ends it."""

    def __init__(
        self,
        *,
        app_options: Mapping[str, Any] | None = None,
        grpc: bool = False,
        **hub_options: Any,
    ) -> None:
        """``hub_options`` go to ``SessionHub``; ``app_options`` (``keepalive``,
        ``max_body_bytes``, ...) to ``create_app``, beside the generated token. With ``grpc``,
        ``grpc_url`` is the gRPC server's (same hub and token)."""
        from sessionhub.http import create_app

        self.token = secrets.token_urlsafe(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.hub = SessionHub(**hub_options)
        self._app: Any = create_app(self.hub, token=self.token, **(app_options or {}))
        self.grpc_url = ""
        if grpc:
            from sessionhub.grpc import GrpcServer, serve_beside

            grpc_port = free_port()
            self.grpc_url = f"grpc://127.0.0.1:{grpc_port}"
            beside = GrpcServer(self.hub, port=grpc_port, token=self.token, grace=0.5)
            self._app = serve_beside(self._app, beside)
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"server-{self.port}", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._failure is not None or not self._ready.is_set():
            raise RuntimeError("the server did not start") from self._failure

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = Server(
            self._app,
            address="127.0.0.1",
            port=self.port,
            interface=Interfaces.ASGI,
            log_enabled=False,
        )
        task = asyncio.create_task(server.serve())
        async with httpx.AsyncClient() as probe:
            while True:
                try:
                    await probe.get(self.url + "/healthz")
                    break
                except httpx.TransportError:
                    if task.done():
                        await task
                        raise RuntimeError("the server stopped before it was ready") from None
                    await asyncio.sleep(0.02)
        self._ready.set()
        await self._stopping.wait()
        server.stop()  # type: ignore[no-untyped-call]
        await self._app.shutdown()  # as `sessionhub serve` does: open event streams end too
        await task

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` in the server's event loop (where its hub lives) and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(30)

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(30)
