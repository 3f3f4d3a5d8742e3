"""An ended session is retained for what was decided when it ended, whatever a hub opened later
over the same persistent store has as its default ``retention``: ``get`` shows it exactly as long
as the store keeps it (``find(include_ended=True)``, which purges first, lists it).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from sessionhub import ManualClock, SessionHub, SessionNotFound
from sessionhub.stores import Store

#: A new store object over the same data each call: a process restart.
Reopen = Callable[[], Store]


@pytest.fixture(params=["sqlite", "redis"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Reopen:
    if request.param == "sqlite":
        from sessionhub.stores.sqlite import SQLiteStore

        path = tmp_path / "sessions.db"
        return lambda: SQLiteStore(path)
    from sessionhub.stores.redis import RedisStore

    url = request.getfixturevalue("redis_server").url
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    return lambda: RedisStore(url, prefix=prefix)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def hub_on(reopen: Reopen, clock: ManualClock) -> Callable[[float], SessionHub]:
    def build(retention: float) -> SessionHub:
        return SessionHub(
            reopen(),
            clock=clock,
            retention=retention,
            idle_timeout=5,
            auto_expire=False,
            poll_interval=3600.0,
        )

    return build


async def visible(hub: SessionHub, session_id: str) -> tuple[bool, bool]:
    """Whether ``get`` shows the session, then whether ``find(include_ended=True)`` lists it
    (in that order: the listing purges what the store no longer retains)."""
    try:
        await hub.get(session_id)
        got = True
    except SessionNotFound:
        got = False
    listed = session_id in [s.id for s in (await hub.find(include_ended=True)).items]
    return got, listed


@pytest.mark.parametrize(("first", "then"), [(100.0, 10.0), (10.0, 100.0)])
async def test_a_hub_restarted_with_another_default_retention_agrees_with_the_store(
    hub_on: Callable[[float], SessionHub], clock: ManualClock, first: float, then: float
) -> None:
    async with hub_on(first) as hub:
        await hub.create("expired")
        await hub.create("own", retention=50, idle_timeout=None)
        clock.advance(5)  # "expired" is due now: its end goes through the expiry's batch
        assert await hub.expire_due() == 1
        await hub.create("ended")
        await hub.end("ended")
        await hub.end("own")
        ended_at = clock()
        assert (await hub.get("ended")).retention == first  # the record says what it was kept for
    kept = {"expired": first, "ended": first, "own": 50.0}

    async with hub_on(then) as hub:
        for elapsed in (5.0, 30.0, 60.0, 99.0, 101.0):
            clock.set(ended_at + elapsed)
            for session_id, retention in kept.items():
                expected = elapsed < retention
                assert await visible(hub, session_id) == (expected, expected), (
                    session_id,
                    elapsed,
                )


async def test_a_session_ended_without_retention_is_gone_after_a_restart_with_one(
    hub_on: Callable[[float], SessionHub], clock: ManualClock
) -> None:
    async with hub_on(0.0) as hub:
        await hub.create("gone")
        await hub.end("gone")
    async with hub_on(100.0) as hub:
        assert await visible(hub, "gone") == (False, False)
