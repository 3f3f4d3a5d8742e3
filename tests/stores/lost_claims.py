"""Helpers of the lost-claim tests (one Redis, a Cluster): a hub that counts hook calls and a
bounded wait for a session's end."""

from __future__ import annotations

import asyncio
from typing import Any

from sessionhub import Session, SessionHub, StoreUnavailable
from sessionhub.stores import Store

__all__ = ["counting_hub", "ended_once", "wait_ended"]


def counting_hub(store: Store, **options: Any) -> tuple[SessionHub, dict[str, list[str]]]:
    """A hub keeping ended sessions an hour (so they can be read), and each session's hook
    calls by reason. (Its expiry waits its poll interval after a pass that failed: 1 s.)"""
    hub = SessionHub(store, retention=3600.0, **options)
    calls: dict[str, list[str]] = {}

    @hub.on_end
    async def count(session: Session, reason: str) -> None:
        calls.setdefault(session.id, []).append(reason)

    return hub, calls


async def wait_ended(hub: SessionHub, session_id: str, within: float = 8.0) -> Session:
    """The session once ended (polling ``hub.get``, bounded)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + within
    while True:
        try:
            session: Session | None = await hub.get(session_id)
        except StoreUnavailable:  # a read that was out when the connection was cut
            session = None
        if session is not None and session.ended_at is not None:
            return session
        if loop.time() > give_up:
            raise AssertionError(f"session {session_id} not ended {within} s later: {session}")
        await asyncio.sleep(0.02)


async def ended_once(
    hub: SessionHub,
    calls: dict[str, list[str]],
    handed: list[str],
    session_ids: list[str],
    reason: str,
) -> None:
    """The sessions end with ``reason`` once their claims are handed back (``handed``: the ids
    the store's sweeps gave the hub), each one's hooks run once."""
    for session_id in session_ids:
        session = await wait_ended(hub, session_id)
        assert session.end_reason == reason
        assert session.state == hub.lifecycle.ended
    assert calls == {session_id: [reason] for session_id in session_ids}
    assert sorted(handed) == sorted(session_ids)
