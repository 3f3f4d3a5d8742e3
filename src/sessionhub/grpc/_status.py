"""Errors on the wire: a ``SessionHubError`` becomes a gRPC status, and back.

The status code is the error's ``grpc_status``, the details its message, and the trailing metadata
``sessionhub-error-code`` its ``code`` (the same code the HTTP face puts in its JSON body), so a
client rebuilds exactly the exception the hub raised.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from .._errors import (
    SessionHubError,
    SessionNotFound,
    StoreUnavailable,
    Unauthorized,
    error_for_code,
)

__all__ = ["ERROR_CODE_KEY", "abort", "error_from_rpc", "quote", "refusing", "status_code"]

ERROR_CODE_KEY = "sessionhub-error-code"
#: The longest status message sent: bad input quoted whole could outgrow the metadata limit
#: (a 100 KB id would come back as RESOURCE_EXHAUSTED about metadata size).
MAX_MESSAGE = 512

T = TypeVar("T")


def quote(text: str, limit: int = 64) -> str:
    """``text`` for a message: its first ``limit`` characters, then "…" if there was more."""
    return text if len(text) <= limit else text[:limit] + "…"


def status_code(error: SessionHubError) -> Any:
    """The ``grpc.StatusCode`` named by the error's ``grpc_status``."""
    return getattr(grpc.StatusCode, error.grpc_status, grpc.StatusCode.INTERNAL)


async def abort(context: Any, error: SessionHubError) -> NoReturn:
    """End the call with the error's status; never returns."""
    await context.abort(
        status_code(error),
        quote(error.message, MAX_MESSAGE),
        trailing_metadata=((ERROR_CODE_KEY, error.code),),
    )
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


def guarded(
    method: Callable[[Any, Any, Any], Awaitable[T]],
) -> Callable[[Any, Any, Any], Awaitable[T]]:
    """A unary servicer method whose ``SessionHubError`` ends the call with its status."""

    async def unary(self: Any, request: Any, context: Any) -> T:
        try:
            return await method(self, request, context)
        except SessionHubError as exc:
            await abort(context, exc)

    unary.__name__ = method.__name__
    unary.__qualname__ = method.__qualname__
    unary.__doc__ = method.__doc__
    return unary


def refusing(handler: Any, error: SessionHubError) -> Any:
    """A handler of the same kind as ``handler`` that ends every call with ``error``."""

    async def unary(request: Any, context: Any) -> None:
        await abort(context, error)

    async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
        await abort(context, error)
        yield  # pragma: no cover - makes this an async generator

    kind = (handler.request_streaming, handler.response_streaming)
    options = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if kind == (False, False):
        return grpc.unary_unary_rpc_method_handler(unary, **options)
    if kind == (False, True):
        return grpc.unary_stream_rpc_method_handler(streaming, **options)
    if kind == (True, False):
        return grpc.stream_unary_rpc_method_handler(unary, **options)
    return grpc.stream_stream_rpc_method_handler(streaming, **options)


def error_from_rpc(error: Any, target: str, session_id: str | None = None) -> SessionHubError:
    """The ``SessionHubError`` a failed call reported (``error`` is a ``grpc.aio.AioRpcError``)."""
    code = None
    for key, value in error.trailing_metadata() or ():
        if key == ERROR_CODE_KEY:
            code = value
    status = error.code()
    details = error.details() or ""
    if code is not None:
        exc = error_for_code(code, details)
        if isinstance(exc, SessionNotFound):
            exc.session_id = session_id or ""
        return exc
    if status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return StoreUnavailable(
            f"cannot reach the sessionhub server at {target}: {status.name} {details}"
        )
    if status == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthorized(details or "the server refused the credentials")
    return SessionHubError(f"gRPC {status.name} from {target}: {details}")
