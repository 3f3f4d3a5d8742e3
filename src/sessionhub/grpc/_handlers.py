"""Adding a servicer to a ``grpc.aio`` server with strict request decoding.

grpcio decodes each request before the servicer runs, and ends a call whose bytes are not the
request message with UNKNOWN and a message that names a Python exception class. The handlers made
here take the raw bytes and decode them themselves, so malformed protobuf ends the call with
INVALID_ARGUMENT and a short message, as every other bad input does. Used for both services,
wherever they are added (``GrpcServer`` or a server of the caller's).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass

from .._errors import ValidationError
from ._status import abort

__all__ = ["add_servicer"]

Decode = Callable[[bytes], Any]
Request = Callable[[Any, Any], Awaitable[Any]]  # raw bytes (or their stream), context → request


def add_servicer(servicer: Any, server: Any, service: ServiceDescriptor) -> None:
    """Serve every method of ``service`` with ``servicer``'s method of the same name."""
    handlers = {
        method.name: _handler(getattr(servicer, method.name), method) for method in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


def _handler(behavior: Callable[..., Any], method: MethodDescriptor) -> Any:
    decode: Decode = GetMessageClass(method.input_type).FromString
    where = method.full_name
    options = {"response_serializer": GetMessageClass(method.output_type).SerializeToString}
    if method.client_streaming:

        async def requests(raw: AsyncIterator[bytes], context: Any) -> AsyncIterator[Any]:
            return _each_decoded(decode, raw, context, where)

        if method.server_streaming:
            return grpc.stream_stream_rpc_method_handler(_streaming(behavior, requests), **options)
        return grpc.stream_unary_rpc_method_handler(_unary(behavior, requests), **options)

    async def request(raw: bytes, context: Any) -> Any:
        return await _decoded(decode, raw, context, where)

    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler(_streaming(behavior, request), **options)
    return grpc.unary_unary_rpc_method_handler(_unary(behavior, request), **options)


def _unary(behavior: Callable[..., Any], request: Request) -> Callable[..., Any]:
    async def unary(raw: Any, context: Any) -> Any:
        return await behavior(await request(raw, context), context)

    return unary


def _streaming(behavior: Callable[..., Any], request: Request) -> Callable[..., Any]:
    async def streaming(raw: Any, context: Any) -> AsyncIterator[Any]:
        async for answer in behavior(await request(raw, context), context):
            yield answer

    return streaming


async def _decoded(decode: Decode, raw: bytes, context: Any, where: str) -> Any:
    try:
        return decode(raw)
    except DecodeError:
        await abort(context, ValidationError(f"malformed request: not a valid {where} message"))


async def _each_decoded(
    decode: Decode, raw: AsyncIterator[bytes], context: Any, where: str
) -> AsyncIterator[Any]:
    async for message in raw:
        yield await _decoded(decode, message, context, where)
