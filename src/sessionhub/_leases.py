"""Request leases: ``track_request`` for a caller that cannot hold a block open across a network.

A face that speaks one request at a time (HTTP) cannot keep ``hub.track_request``'s block open for
its client. ``RequestLeases.start`` enters that block and keeps it under a lease id; ``release``
leaves it, and a lease not released in time is released when it expires, so an abandoned request
never holds its session off expiry for ever. Entering and leaving go through the hub's own
``track_request`` (the limit, the activity, the in-flight count): a lease is a request in flight
to the hub, its store and every face.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from ._errors import SessionNotFound, ValidationError
from ._hub import SessionHub
from ._models import Session

__all__ = ["DEFAULT_LEASE", "MAX_LEASE", "Lease", "RequestLeases"]

logger = logging.getLogger("sessionhub.leases")

DEFAULT_LEASE = 60.0
MAX_LEASE = 86_400.0


@dataclass(frozen=True, slots=True)
class Lease:
    """A request in flight, held until ``released`` or ``seconds`` from its start."""

    id: str
    session_id: str
    seconds: float


@dataclass(slots=True)
class _Held:
    lease: Lease
    block: AbstractAsyncContextManager[Session]
    expiry: asyncio.TimerHandle | None = None


class RequestLeases:
    """The leases of one hub's requests in flight (see the module)."""

    def __init__(self, hub: SessionHub) -> None:
        self.hub = hub
        self._held: dict[str, _Held] = {}
        self._expiring: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._held)

    async def start(self, session_id: str, seconds: float = DEFAULT_LEASE) -> tuple[Lease, Session]:
        """Count a request in flight on the session until released or ``seconds`` from now.

        Raises as ``hub.track_request`` does (``SessionNotFound``, ``TooManyRequests``) and
        ``ValidationError`` for a lease that is not a positive number of seconds up to a day.
        """
        if type(seconds) not in (int, float) or not 0 < seconds <= MAX_LEASE:
            raise ValidationError(
                f"lease must be a number of seconds above 0 and at most {MAX_LEASE:g}, "
                f"got {seconds!r}"
            )
        block = self.hub.track_request(session_id)
        session = await block.__aenter__()
        lease = Lease(secrets.token_urlsafe(12), session.id, float(seconds))
        held = self._held[lease.id] = _Held(lease, block)
        held.expiry = asyncio.get_running_loop().call_later(seconds, self._expire, lease.id)
        return lease, session

    async def release(self, session_id: str, lease_id: str) -> Session:
        """End the request of ``lease_id``; the session as it is then.

        Raises ``SessionNotFound`` for a lease this table does not hold for that session
        (released, expired, never given) or a session that ended meanwhile.
        """
        held = self._held.get(lease_id)
        if held is None or held.lease.session_id != session_id:
            raise SessionNotFound(session_id, f"session {session_id} holds no lease {lease_id!r}")
        await self._leave(held)
        return await self.hub.get(session_id)

    async def close(self) -> None:
        """Release every lease (a server stopping); call it before the hub closes."""
        for held in list(self._held.values()):
            with contextlib.suppress(Exception):
                await self._leave(held)
        for task in list(self._expiring):
            task.cancel()
        await asyncio.gather(*self._expiring, return_exceptions=True)

    async def _leave(self, held: _Held) -> None:
        if self._held.pop(held.lease.id, None) is None:
            return  # released meanwhile
        if held.expiry is not None:
            held.expiry.cancel()
        await held.block.__aexit__(None, None, None)

    def _expire(self, lease_id: str) -> None:
        held = self._held.get(lease_id)
        if held is None:
            return
        task = asyncio.ensure_future(self._release_abandoned(held))
        self._expiring.add(task)
        task.add_done_callback(self._expiring.discard)

    async def _release_abandoned(self, held: _Held) -> None:
        try:
            await self._leave(held)
        except Exception:
            logger.exception(
                "releasing the expired lease of session %s failed", held.lease.session_id
            )
        else:
            logger.info("released the abandoned request lease of session %s", held.lease.session_id)
