"""``sessionhub.connect(url)``: one entry point for every store URL and every server URL."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._errors import ValidationError, quoted
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

    Every URL takes any keyword arguments, and one rule holds for all: an option that does not
    apply to the URL's kind (``token`` for ``memory://``, ``idle_timeout`` for a server) raises
    ``ValidationError`` naming it and the options that do apply. It is refused rather than ignored
    because an ignored policy option (a timeout, a limit) would silently not hold.
    """
    if not isinstance(url, str):
        raise ValidationError(f"connect() needs a URL string, got {quoted(url)}")
    if url.startswith(_SERVER_SCHEMES):
        _check_options(url, AsyncClient, "a server URL", options)
        return AsyncClient(url, **options)
    if url.startswith(_GRPC_SCHEMES):
        from .grpc import GrpcClient  # grpc is an optional extra: imported only when asked for

        _check_options(url, GrpcClient, "a gRPC server URL", options)
        return GrpcClient(url, **options)
    _check_options(url, SessionHub, "a store URL", options)
    return SessionHub(store_from_url(url), **options)


def _check_options(
    url: str, target: Callable[..., Any], kind: str, options: dict[str, Any]
) -> None:
    parameters = list(inspect.signature(target).parameters.values())[1:]  # the URL, or the store
    accepted = {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValidationError(
            f"connect({quoted(url)}) does not take {', '.join(unknown)}: options of {kind} are "
            f"{', '.join(sorted(accepted))}"
        )
