"""Header-bound sessions for gRPC servers: each call runs inside the session its metadata names.

    server = grpc.aio.server(interceptors=[
        HeaderSessionInterceptor(hub, metadata_key="x-gripmock-session"),
    ])

    class Greeter(GreeterServicer):
        async def SayHello(self, request, context):
            session = current_session()  # None when the call carries no session metadata
            stubs = hub.data(session.id)

The gRPC twin of ``sessionhub.middleware.HeaderSessionMiddleware`` (GripMock's
``x-gripmock-session``): the session is created on first use (unless ``create=False``) and made
active; every call counts as a request in flight (``hub.track_request``) for its whole duration,
streams included, which refreshes the idle timeout at its start and end and holds expiry off while it
runs. ``hub`` is an embedded ``SessionHub`` or a client of a shared server (``AsyncClient`` or
``GrpcClient``: both count the request on the server too).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import grpc

from .._binding import enter_session
from .._errors import SessionHubError, ValidationError
from .._hub import DEFAULT, SessionHub, _Default
from .._models import Session
from ..client import AsyncClient
from ._status import abort, refusing

if TYPE_CHECKING:
    from ._client import GrpcClient

__all__ = ["DEFAULT_METADATA_KEY", "HeaderSessionInterceptor", "current_session"]

logger = logging.getLogger("sessionhub.grpc")

#: The metadata key read by default (the HTTP middleware's header, in gRPC's lower case).
DEFAULT_METADATA_KEY = "x-sessionhub-session"

_current: ContextVar[Session | None] = ContextVar("sessionhub_grpc_session", default=None)


def current_session() -> Session | None:
    """The session the current gRPC call is bound to (as it was when the call started), or
    ``None`` outside a bound call."""
    return _current.get()


class HeaderSessionInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Bind each call to the session named in the metadata ``metadata_key``.

    - key present: the session is looked up (created first when ``create`` and it does not exist,
      with ``namespace``, ``labels``, ``idle_timeout``, ``ttl``; made active), the call is tracked
      as a request for its whole duration, and the servicer finds the ``Session`` with
      ``current_session()``;
    - key absent: the call passes through (``current_session()`` is ``None``), or is refused with
      INVALID_ARGUMENT when ``required``;
    - a bad id, an unknown session with ``create=False``, or a limit (``TooManyRequests``, ...)
      ends the call with the hub's error status, before the servicer runs.

    Calls whose method starts with one of ``skip`` (health checks and reflection by default) are
    never bound.
    """

    def __init__(
        self,
        hub: SessionHub | AsyncClient | GrpcClient,
        *,
        metadata_key: str = DEFAULT_METADATA_KEY,
        create: bool = True,
        required: bool = False,
        namespace: str = "default",
        labels: Mapping[str, str] | None = None,
        idle_timeout: float | _Default | None = DEFAULT,
        ttl: float | _Default | None = DEFAULT,
        skip: tuple[str, ...] = ("/grpc.health.v1.", "/grpc.reflection."),
    ) -> None:
        if not isinstance(metadata_key, str) or not metadata_key:
            raise ValidationError(f"metadata_key must be a metadata key, got {metadata_key!r}")
        self.hub = hub
        self.metadata_key = metadata_key.lower()  # gRPC metadata keys are lower case
        self.create = create
        self.required = required
        self.namespace = namespace
        self.labels = labels
        self.idle_timeout = idle_timeout
        self.ttl = ttl
        self.skip = skip

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(self.skip):
            return handler
        session_id = self._session_id(details.invocation_metadata)
        if session_id is None:
            if self.required:
                return refusing(
                    handler, ValidationError(f"the {self.metadata_key} metadata is required")
                )
            return handler
        return self._bound(handler, session_id)

    def _session_id(self, metadata: Any) -> str | None:
        for key, value in metadata or ():
            if key == self.metadata_key:
                return value if isinstance(value, str) else bytes(value).decode("latin-1")
        return None

    async def _enter(self, stack: contextlib.AsyncExitStack, session_id: str) -> Session:
        return await enter_session(self, stack, session_id, f"{self.metadata_key} metadata")

    def _bound(self, handler: Any, session_id: str) -> Any:
        options = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.response_streaming:
            inner = handler.stream_stream if handler.request_streaming else handler.unary_stream
            make = (
                grpc.stream_stream_rpc_method_handler
                if handler.request_streaming
                else grpc.unary_stream_rpc_method_handler
            )
            if inspect.isasyncgenfunction(inner):
                return make(self._streaming(inner, session_id), **options)
            if inspect.iscoroutinefunction(inner):  # the reader/writer API: context.write(...)
                return make(self._unary(inner, session_id), **options)
        else:
            inner = handler.stream_unary if handler.request_streaming else handler.unary_unary
            make = (
                grpc.stream_unary_rpc_method_handler
                if handler.request_streaming
                else grpc.unary_unary_rpc_method_handler
            )
            return make(self._unary(inner, session_id), **options)
        logger.warning("%s is a synchronous stream handler: its calls are not bound", inner)
        return handler

    def _unary(self, inner: Callable[..., Any], session_id: str) -> Callable[..., Any]:
        enter = self._enter

        async def bound(request: Any, context: Any) -> Any:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    session = await enter(stack, session_id)
                except SessionHubError as exc:
                    await abort(context, exc)
                token = _current.set(session)
                try:
                    if inspect.iscoroutinefunction(inner):
                        return await inner(request, context)
                    return await asyncio.to_thread(inner, request, context)
                finally:
                    _current.reset(token)

        return bound

    def _streaming(self, inner: Callable[..., Any], session_id: str) -> Callable[..., Any]:
        enter = self._enter

        async def bound(request: Any, context: Any) -> AsyncIterator[Any]:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    session = await enter(stack, session_id)
                except SessionHubError as exc:
                    await abort(context, exc)
                token = _current.set(session)
                try:
                    async for response in inner(request, context):
                        yield response
                finally:
                    with contextlib.suppress(ValueError):  # finalized in another context
                        _current.reset(token)

        return bound
