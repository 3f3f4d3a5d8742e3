"""``sessionhub.connect(url)``: one entry point for every store URL and every server URL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import ValidationError
from ._hub import SessionHub
from .client import AsyncClient
from .stores import store_from_url

if TYPE_CHECKING:
    from .grpc import GrpcClient

__all__ = ["connect"]

_SERVER_SCHEMES = ("http://", "https://")
_GRPC_SCHEMES = ("grpc://", "grpcs://")


def connect(url: str = "memory://", **options: Any) -> SessionHub | AsyncClient | GrpcClient:
    """A hub for the URL; use it as ``async with connect(url) as hub:``.

    - a store URL (``memory://``, ``sqlite:///...``, ``redis://...``) gives an embedded
      ``SessionHub``; ``options`` are its keyword arguments (``idle_timeout``, ``limits``, ...);
    - a server URL (``http://...``, ``https://...``) gives an ``AsyncClient``; ``options`` are its
      keyword arguments (``token``, ``timeout``, ...);
    - a gRPC server URL (``grpc://host:port``, ``grpcs://...``) gives a ``GrpcClient`` (the
      ``grpc`` extra), with the same verbs and exceptions; ``options`` as for ``AsyncClient``.
    """
    if not isinstance(url, str):
        raise ValidationError(f"connect() needs a URL string, got {url!r}")
    if url.startswith(_SERVER_SCHEMES):
        return AsyncClient(url, **options)
    if url.startswith(_GRPC_SCHEMES):
        from .grpc import GrpcClient  # grpc is an optional extra: imported only when asked for

        return GrpcClient(url, **options)
    return SessionHub(store_from_url(url), **options)
