"""SQLite claims whose caller was cancelled while the worker thread made them.

The worker commits the claim whatever happens to the caller; no other process takes over the
ends of a claimer that lives, so without a hand-back these sessions would stay claimed (refusing
activity, never expiring) as long as the process runs. The store's next ``claim_expired`` hands
them back, and the hub finishes them: hooks once, the reason the claim gave.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sessionhub import ManualClock, Session, SessionHub
from sessionhub.stores.sqlite import SQLiteStore

from ..core.helpers import gone


def _hub(path: Path) -> tuple[SessionHub, SQLiteStore, dict[str, list[str]]]:
    store = SQLiteStore(path)
    hub = SessionHub(store, clock=ManualClock(), auto_expire=False, idle_timeout=10)
    calls: dict[str, list[str]] = {}

    async def hook(session: Session, reason: str) -> None:
        calls.setdefault(session.id, []).append(reason)

    hub.on_end(hook)
    return hub, store, calls


async def test_a_claim_end_whose_caller_was_cancelled_is_handed_back(tmp_path: Path) -> None:
    hub, store, calls = _hub(tmp_path / "s.db")
    async with hub:
        session = await hub.create()
        moves = hub.lifecycle.moves(hub.lifecycle.terminate)
        claiming = asyncio.create_task(store.claim_end(session.id, "gave up", hub.clock(), moves))
        await asyncio.sleep(0)  # submitted to the worker, which claims it whatever follows
        claiming.cancel()
        with pytest.raises(asyncio.CancelledError):
            await claiming
        assert await hub.end(session.id) is False  # claimed: nobody else may end it
        assert await hub.expire_due() == 1  # nothing is due: the hand-back is what ends
        assert await gone(hub, session.id)
        assert calls == {session.id: ["gave up"]}


async def test_expired_claims_whose_caller_was_cancelled_are_handed_back(tmp_path: Path) -> None:
    hub, store, calls = _hub(tmp_path / "s.db")
    async with hub:
        ids = [(await hub.create()).id for _ in range(5)]
        assert isinstance(hub.clock, ManualClock)
        hub.clock.advance(11)
        moves = hub.lifecycle.moves(hub.lifecycle.terminate)
        claiming = asyncio.create_task(store.claim_expired(hub.clock(), moves, 100))
        await asyncio.sleep(0)
        claiming.cancel()
        with pytest.raises(asyncio.CancelledError):
            await claiming
        assert await hub.expire_due() == 5
        assert [await gone(hub, sid) for sid in ids] == [True] * 5
        assert calls == {key: ["expired"] for key in ids}
