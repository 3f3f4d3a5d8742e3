"""Binding a request to the session its header names: the one rule the ASGI middleware and the gRPC
interceptor share (track the request; with ``create``, make the session on first use)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from ._errors import DuplicateSession, SessionNotFound
from ._limits import check_id
from ._models import Session

if TYPE_CHECKING:
    from ._hub import SessionHub, _Default
    from .client import AsyncClient

__all__ = ["Binder", "enter_session"]


class Binder(Protocol):
    """What a face that binds requests to sessions is configured with."""

    hub: SessionHub | AsyncClient
    create: bool
    namespace: str
    labels: Mapping[str, str] | None
    idle_timeout: float | _Default | None
    ttl: float | _Default | None


async def enter_session(
    binder: Binder, stack: contextlib.AsyncExitStack, session_id: str, what: str
) -> Session:
    """Track a request in the session for ``stack``'s lifetime, creating the session if it is new.

    ``what`` names where the id came from, for the error a malformed id raises.
    """
    check_id(session_id, what)
    hub = binder.hub
    try:
        return await stack.enter_async_context(hub.track_request(session_id))
    except SessionNotFound:
        if not binder.create:
            raise
    with contextlib.suppress(DuplicateSession):  # a concurrent first request created it
        await hub.create(
            session_id,
            namespace=binder.namespace,
            labels=binder.labels,
            idle_timeout=binder.idle_timeout,
            ttl=binder.ttl,
            activate=True,
        )
    return await stack.enter_async_context(hub.track_request(session_id))
