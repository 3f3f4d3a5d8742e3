"""Request leases: ``track_request`` for a caller that cannot hold a block open across a network.

A face that speaks one request at a time (HTTP) cannot keep ``hub.track_request``'s block open for
its client. ``RequestLeases.start`` enters that block and keeps it under a lease id; ``release``
leaves it, and a lease not released in time is released when it expires, so an abandoned request
never holds its session off expiry for ever. ``renew`` moves a held lease's expiry (a client whose
block outlives its lease renews it before it runs out, so a long request keeps counting). Entering and leaving go through the hub's own
``track_request`` (the limit, the activity, the in-flight count): a lease is a request in flight
to the hub, its store and every face.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from ._errors import SessionNotFound, ValidationError, quoted, shortened
from ._hub import SessionHub
from ._models import Session

__all__ = ["DEFAULT_LEASE", "MAX_LEASE", "Lease", "RequestLeases"]

logger = logging.getLogger("sessionhub.leases")

DEFAULT_LEASE = 60.0
MAX_LEASE = 86_400.0
# What ``start`` gives (``token_urlsafe(12)``: 16 characters), with room to change that: anything
# else cannot name a lease, so it is bad input (400), not a lease that is not held (404).
_LEASE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


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
    due: bool = False  # expired: being released, a renewal comes too late


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
        _check_seconds(seconds)
        block = self.hub.track_request(session_id)
        session = await block.__aenter__()
        lease = Lease(secrets.token_urlsafe(12), session.id, float(seconds))
        held = self._held[lease.id] = _Held(lease, block)
        held.expiry = asyncio.get_running_loop().call_later(seconds, self._expire, lease.id)
        return lease, session

    async def release(self, session_id: str, lease_id: str) -> Session:
        """End the request of ``lease_id``; the session as it is then.

        Raises ``SessionNotFound`` for a lease this table does not hold for that session
        (released, expired, never given) or a session that ended meanwhile, and
        ``ValidationError`` for a ``lease_id`` that no lease can have.
        """
        held = self._held_by(session_id, lease_id)
        await self._leave(held)
        return await self.hub.get(session_id)

    async def renew(
        self, session_id: str, lease_id: str, seconds: float = DEFAULT_LEASE
    ) -> tuple[Lease, Session]:
        """Hold ``lease_id`` until released or ``seconds`` from now (instead of its old expiry).

        The request stays the same one (``active_requests`` does not change); the session is read,
        not touched: a request in flight already holds it off idle expiry. Raises
        ``ValidationError`` as ``start`` and ``release`` do, and ``SessionNotFound`` for a lease
        not held (released, expired, never given: a renewal never brings one back) or a session
        that ended or is ending, as ``track_request`` would for it.
        """
        _check_seconds(seconds)
        held = self._held_by(session_id, lease_id)
        if held.due:
            raise _not_held(session_id, lease_id)
        session = await self.hub.get(session_id)
        if session.ended_at is not None or session.end_reason is not None:
            raise SessionNotFound(session_id)
        if self._held.get(lease_id) is not held or held.due:  # it ran out while the read awaited
            raise _not_held(session_id, lease_id)
        if held.expiry is not None:
            held.expiry.cancel()
        held.lease = Lease(lease_id, session_id, float(seconds))
        held.expiry = asyncio.get_running_loop().call_later(seconds, self._expire, lease_id)
        return held.lease, session

    async def close(self) -> None:
        """Release every lease (a server stopping); call it before the hub closes."""
        for held in list(self._held.values()):
            with contextlib.suppress(Exception):
                await self._leave(held)
        for task in list(self._expiring):
            task.cancel()
        await asyncio.gather(*self._expiring, return_exceptions=True)

    def _held_by(self, session_id: str, lease_id: str) -> _Held:
        if type(lease_id) is not str or not _LEASE_ID.fullmatch(lease_id):
            raise ValidationError(
                "a lease id is 1-64 letters, digits, - and _ (the lease_id a lease was given), "
                f"got {quoted(lease_id)}"
            )
        held = self._held.get(lease_id)
        if held is None or held.lease.session_id != session_id:
            raise _not_held(session_id, lease_id)
        return held

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
        held.due = True
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


def _check_seconds(seconds: float) -> None:
    if type(seconds) not in (int, float) or not 0 < seconds <= MAX_LEASE:
        raise ValidationError(
            f"lease must be a number of seconds above 0 and at most {MAX_LEASE:g}, got {seconds!r}"
        )


def _not_held(session_id: str, lease_id: str) -> SessionNotFound:
    return SessionNotFound(
        session_id, f"session {shortened(session_id)} holds no lease {lease_id!r}"
    )
