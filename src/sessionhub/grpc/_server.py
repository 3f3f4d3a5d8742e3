"""``GrpcServer``: both gRPC services of one hub on one port, with health checking and reflection.

    async with SessionHub() as hub, GrpcServer(hub, port=7481, token="s3cret") as server:
        ...  # clients call server.port

The hub belongs to the caller, who starts it before the server. Closing it before stopping the
server lets open ``Watch`` streams read the events of the hub's shutdown (the sessions it ends)
before they end; ``sessionhub serve`` shares the hub with the HTTP face and ``serve_beside`` orders
it so, tying the gRPC server to the HTTP app's lifespan. With a token, every call but health checks
and reflection needs the metadata ``authorization: Bearer <token>`` (compared in constant time), or
ends UNAUTHENTICATED.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .._errors import Unauthorized
from .._hub import SessionHub
from ._native import SERVICE_NAME as NATIVE_SERVICE
from ._native import SessionHubServicer
from ._status import refusing
from ._streamapi import SERVICE_NAME as STREAM_API_SERVICE
from ._streamapi import StreamApiServicer
from ._streams import EventStreams

__all__ = ["DEFAULT_PORT", "GrpcLifespan", "GrpcServer", "TokenInterceptor", "serve_beside"]

logger = logging.getLogger("sessionhub.grpc")

#: Where ``sessionhub serve`` listens for gRPC by default.
DEFAULT_PORT = 7481

#: Methods anyone may call, as ``/healthz`` and ``/openapi.json`` over HTTP.
PUBLIC_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses, UNAUTHENTICATED, every call without ``authorization: Bearer <token>`` (but
    health checks and reflection)."""

    def __init__(self, token: str) -> None:
        if not isinstance(token, str) or not token:
            raise ValueError("token must be a non-empty string")
        self._expected = f"Bearer {token}".encode()

    def __repr__(self) -> str:
        return "TokenInterceptor()"  # never the token

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(PUBLIC_PREFIXES):
            return handler
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value if isinstance(value, bytes) else value.encode("utf-8", "replace")
                if hmac.compare_digest(given, self._expected):
                    return handler
                break
        return refusing(
            handler,
            Unauthorized(
                "a valid bearer token is required (metadata authorization: Bearer <token>)"
            ),
        )


class GrpcServer:
    """The native ``sessionhub.v1.SessionHubService`` and the Stream API's
    ``ma.streaming.api.v1.SessionManagementService`` over one hub, plus ``grpc.health.v1`` and
    server reflection, on ``host:port`` (``port=0``: any free port; read ``server.port``).

    - ``token``: require it as a bearer token in the metadata of every call;
    - ``stream_api``: serve the Stream API face (when ``False`` it still answers, ``success =
      false``, as the reference server with ``IntegrateSessionManagement`` off);
      ``stream_api_retention`` is how long its completed sessions stay queryable;
    - ``metrics``: the HTTP app's ``ServerMetrics``: the Stream API gauge joins its registry;
    - ``interceptors``: more ``grpc.aio.ServerInterceptor`` s, run after the token check;
    - ``max_message_bytes``: the largest request accepted (RESOURCE_EXHAUSTED beyond);
    - ``grace``: seconds unary calls in flight get to finish when the server stops.
    """

    def __init__(
        self,
        hub: SessionHub,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        token: str | None = None,
        stream_api: bool = True,
        stream_api_retention: float = 86400.0,
        metrics: Any = None,
        interceptors: Sequence[Any] = (),
        max_message_bytes: int = 4 * 1024 * 1024,
        max_streams_per_connection: int = 1000,
        grace: float = 5.0,
    ) -> None:
        self.hub = hub
        self.host = host
        self.port = port
        self.grace = grace
        self.streams = EventStreams()
        self.native = SessionHubServicer(hub, self.streams)
        self.stream_api = StreamApiServicer(
            hub, enabled=stream_api, retention=stream_api_retention, streams=self.streams
        )
        self.health: Any = None
        self._interceptors = [*([TokenInterceptor(token)] if token else []), *interceptors]
        self._options = [
            ("grpc.so_reuseport", 0),  # never share the port with another server
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_concurrent_streams", max_streams_per_connection),
            ("grpc.keepalive_time_ms", 60_000),  # notice clients that vanished without a word
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ]
        self._metrics = metrics
        self._gauge: Any = None
        self._server: Any = None
        self._stopping: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"GrpcServer({self.host}:{self.port})"  # never the token

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    async def __aenter__(self) -> GrpcServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind and serve; ``OSError`` if the address cannot be bound."""
        if self._server is not None:
            return
        server = grpc.aio.server(interceptors=self._interceptors, options=self._options)
        self.health = health.aio.HealthServicer()
        self.native.add_to_server(server)
        self.stream_api.add_to_server(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (NATIVE_SERVICE, STREAM_API_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME),
            server,
        )
        address = self.address
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen for gRPC on {address}: {exc}") from None
        if not self.port:
            raise OSError(f"cannot listen for gRPC on {address}")
        self.streams.reopen()
        await server.start()
        self._server = server
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set("", serving)
        await self.health.set(NATIVE_SERVICE, serving)
        await self.health.set(
            STREAM_API_SERVICE, serving if self.stream_api.enabled else not_serving
        )
        if self._metrics is not None and self.stream_api.enabled:
            from ._gauge import StreamApiGauge

            metrics = self._metrics
            self._gauge = StreamApiGauge(
                lambda: getattr(getattr(metrics, "_hub", None), "snapshot", None)
            )
            metrics.registry.register(self._gauge)

    async def stop(self, grace: float | None = None) -> None:
        """Stop gracefully: health turns NOT_SERVING, open streams end (status OK), unary calls
        in flight get ``grace`` seconds (the server's ``grace`` by default) to finish. Every
        caller, concurrent ones too, returns once the server has stopped."""
        if self._stopping is None:
            if self._server is None:
                return
            self._stopping = asyncio.ensure_future(self._stop(grace))
        stopping = self._stopping
        try:
            await asyncio.shield(stopping)
        finally:
            if stopping.done() and self._stopping is stopping:
                self._stopping = None

    async def _stop(self, grace: float | None) -> None:
        server = self._server
        await self.health.enter_graceful_shutdown()
        self.native.close()
        self.stream_api.close()
        try:
            await server.stop(self.grace if grace is None else grace)
        finally:
            self._server = None
            if self._gauge is not None:
                self._metrics.registry.unregister(self._gauge)
                self._gauge = None

    async def wait(self) -> None:
        """Until the server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class GrpcLifespan:
    """An ASGI app that runs ``server`` beside ``app``: the gRPC server starts once the app's
    lifespan startup is complete (its hub is open) and stops, gracefully, once the app's lifespan
    shutdown is complete (its hub closed): so ``Watch`` streams read the ``ended`` events of the
    sessions the hub ends at shutdown, as SSE subscribers do, then end. Every other scope goes
    straight to ``app``."""

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], server: GrpcServer
    ) -> None:
        self.app = app
        self.server = server

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)  # app.hub, app.metrics, ...

    async def shutdown(self) -> None:
        """Begin a graceful stop (``sessionhub serve`` calls it on SIGTERM): the app's own
        ``shutdown`` first, if it has one (which may close the hub: open streams read its last
        events and end), then the gRPC server."""
        shutdown = getattr(self.app, "shutdown", None)
        try:
            if shutdown is not None:
                await shutdown()
        finally:
            await self.server.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        server = self.server

        async def send_lifespan(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                try:
                    await server.start()
                except Exception as exc:
                    logger.error("the gRPC server did not start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": f"gRPC: {exc}"})
                    return
            elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await server.stop()
            await send(message)

        await self.app(scope, receive, send_lifespan)


def serve_beside(app: Any, server: GrpcServer) -> GrpcLifespan:
    """``app`` (an ASGI app whose lifespan opens and closes the hub) with ``server`` beside it."""
    return GrpcLifespan(app, server)
