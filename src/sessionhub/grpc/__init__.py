"""sessionhub over gRPC (the ``grpc`` extra): servers, a client and a header-session interceptor.

- ``GrpcServer(hub, port=7481, token=...)``: the native ``sessionhub.v1.SessionHubService`` (every
  hub verb, and a ``Watch`` event stream) and the Stream API's wire-compatible
  ``ma.streaming.api.v1.SessionManagementService``, with health checking and server reflection, on
  one port. ``sessionhub serve`` runs it beside the HTTP face, over the same hub.
- ``SessionHubServicer`` and ``StreamApiServicer``: the two services, to add to a server of yours.
- ``GrpcClient`` (``sessionhub.connect("grpc://host:port")``): the hub's verbs over gRPC.
- ``HeaderSessionInterceptor`` and ``current_session()``: bind each call of your own gRPC server to
  the session named in its metadata (GripMock's ``x-gripmock-session``).

The ``.proto`` files are in ``sessionhub/grpc/protos/``; the generated modules beside them
(``sessionhub.grpc.protos.sessionhub.v1.sessionhub_pb2`` ...) are importable for generated stubs.
"""

from ._client import DEFAULT_GRPC_URL, GrpcClient, GrpcRemoteData, GrpcRemoteHistory
from ._interceptor import DEFAULT_METADATA_KEY, HeaderSessionInterceptor, current_session
from ._native import SERVICE_NAME as NATIVE_SERVICE
from ._native import SessionHubServicer
from ._server import DEFAULT_PORT, GrpcLifespan, GrpcServer, TokenInterceptor, serve_beside
from ._status import ERROR_CODE_KEY
from ._streamapi import ASSOCIATES_KEY, StreamApiServicer
from ._streamapi import SERVICE_NAME as STREAM_API_SERVICE

__all__ = [
    "ASSOCIATES_KEY",
    "DEFAULT_GRPC_URL",
    "DEFAULT_METADATA_KEY",
    "DEFAULT_PORT",
    "ERROR_CODE_KEY",
    "NATIVE_SERVICE",
    "STREAM_API_SERVICE",
    "GrpcClient",
    "GrpcLifespan",
    "GrpcRemoteData",
    "GrpcRemoteHistory",
    "GrpcServer",
    "HeaderSessionInterceptor",
    "SessionHubServicer",
    "StreamApiServicer",
    "TokenInterceptor",
    "current_session",
    "serve_beside",
]
