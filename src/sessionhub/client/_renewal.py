"""Renewing a ``track_request`` block's request lease while the block runs, for both HTTP clients.

The server drops a lease ``request_lease`` seconds after it was taken or last renewed (so that the
request of a process that died stops counting); a block that runs longer must renew it, or it stops
counting as a request in flight and its session may expire for idleness under it. A renewal goes
out at half the lease, so a renewal slowed by a busy server or network still arrives in time.

A renewal that fails (the server gone, the lease already run out, the session ended) does not
interrupt the block: it is logged once, as a warning on the ``sessionhub.client`` logger, and the
renewals of that block stop (the lease then runs out on the server, as if this process had died).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable

__all__ = ["RenewalThread", "every", "renew_until_cancelled", "stop_renewing"]

logger = logging.getLogger("sessionhub.client")


def every(lease: float) -> float:
    """Seconds between renewals of a ``lease``-second lease."""
    return lease / 2


def _failed(session_id: str, lease: float, exc: Exception) -> None:
    logger.warning(
        "renewing the request lease of session %s failed, so it is renewed no more: the block "
        "stops counting as a request in flight when the lease runs out (%g s after it was taken "
        "or last renewed) (%s: %s)",
        session_id,
        lease,
        type(exc).__name__,
        exc,
    )


async def renew_until_cancelled(
    renew: Callable[[], Awaitable[object]], session_id: str, lease: float
) -> None:
    """Call ``renew`` every half lease until cancelled or until it fails (logged once)."""
    while True:
        await asyncio.sleep(every(lease))
        try:
            await renew()
        except Exception as exc:  # the block goes on: a warning, not an error in it
            _failed(session_id, lease, exc)
            return


async def stop_renewing(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has stopped, so that no renewal goes out after this
    returns; a cancellation of the caller itself still propagates."""
    task.cancel()
    await asyncio.wait({task})


class RenewalThread(threading.Thread):
    """``renew_until_cancelled`` for the blocking client: a daemon thread (it never keeps a
    process alive) that calls ``renew`` every half lease until ``stop``."""

    def __init__(self, renew: Callable[[], object], session_id: str, lease: float) -> None:
        super().__init__(name="sessionhub-lease-renewal", daemon=True)
        self._renew = renew
        self._session_id = session_id
        self._lease = lease
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(every(self._lease)):
            try:
                self._renew()
            except Exception as exc:
                _failed(self._session_id, self._lease, exc)
                return

    def stop(self) -> None:
        """Stop renewing; returns once no renewal is under way (one in flight is waited for)."""
        self._stopped.set()
        if self is not threading.current_thread():
            self.join()
