"""The hub is the source of truth: two processes' managers over one durable store (here two hubs,
each with its own manager and objects, over one SQLite file or one Redis database) see each other's
metadata writes and requests, and either one's cleanup honours them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sessionhub import ManualClock, SessionHub
from sessionhub import Session as HubSession
from sessionhub.compat.morgan import SessionManager
from sessionhub.stores import Store
from sessionhub.stores.redis import RedisStore
from sessionhub.stores.sqlite import SQLiteStore

from ..redis_server import RedisServer

Pair = tuple[SessionManager, SessionManager]


@pytest.fixture(params=["sqlite", "redis"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Stores that are views of one database: each call is another process's connection."""
    if request.param == "sqlite":
        path = tmp_path / "sessions.db"
        return lambda: SQLiteStore(path)
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    return lambda: RedisStore(server.url, prefix=prefix)


@pytest.fixture
async def managers(shared_store: Callable[[], Store], clock: ManualClock) -> AsyncIterator[Pair]:
    """Two managers with a one-minute timeout, each on its own hub over the shared store."""
    async with (
        SessionHub(shared_store(), clock=clock, auto_expire=False) as hub_a,
        SessionHub(shared_store(), clock=clock, auto_expire=False) as hub_b,
    ):
        first = SessionManager(session_timeout_minutes=1, hub=hub_a)
        second = SessionManager(session_timeout_minutes=1, hub=hub_b)
        await first.start()
        await second.start()
        yield first, second
        await first.stop()
        await second.stop()


async def seen_by(
    manager: SessionManager, session_id: str, check: Callable[[HubSession], bool]
) -> None:
    """Wait (up to 10 s) until ``manager``'s hub reads a record that passes ``check``."""
    for _ in range(1000):
        if check(await manager.hub.get(session_id)):
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"never seen: {await manager.hub.get(session_id)}")


async def test_metadata_and_requests_are_seen_by_the_other_manager(
    managers: Pair, clock: ManualClock
) -> None:
    first, second = managers
    session = await first.create_session(user_id="user 123", metadata={"client_type": "web"})
    sid = session.session_id
    session.metadata["k"] = "v"
    session.add_request("req-1")
    assert await first.get_session(sid) is session
    theirs = await second.get_session(sid)
    assert theirs is not None
    assert theirs.user_id == "user 123"
    assert theirs.metadata == {"client_type": "web", "k": "v"}
    assert theirs.has_active_requests()
    assert (await second.hub.get(sid)).active_requests == 1
    clock.advance(3600)  # idle far past the minute: the other hub's cleanup spares it
    assert await second.hub.expire_due() == 0
    session.remove_request("req-1")
    await seen_by(second, sid, lambda r: r.active_requests == 0)
    clock.advance(59)
    assert await second.hub.expire_due() == 0  # remove_request was activity
    clock.advance(2)
    assert await second.hub.expire_due() == 1
    # The first manager finds its session gone, forgets it and counts its end.
    assert await first.get_session(sid) is None
    assert first.get_metrics()["active_sessions"] == 0
    assert first.get_metrics()["total_sessions_cleaned"] == 1


async def test_last_activity_moved_back_is_honoured_by_the_other_cleanup(
    managers: Pair, clock: ManualClock
) -> None:
    first, second = managers
    session = await first.create_session()
    keep = await first.create_session()
    session.last_activity = datetime.fromtimestamp(clock(), tz=UTC) - timedelta(minutes=2)
    await seen_by(second, session.session_id, lambda r: r.idle_timeout != 60)
    clock.advance(1)  # the next cleanup run
    assert await second.hub.expire_due() == 1
    assert await second.get_session(session.session_id) is None
    assert await second.get_session(keep.session_id) is not None


async def test_writes_of_the_other_manager_reach_this_object(managers: Pair) -> None:
    first, second = managers
    session = await first.create_session(metadata={"n": 1}, conversation_id="conv-1")
    theirs = await second.get_session(session.session_id)
    assert theirs is not None
    theirs.metadata["n"] = 2
    theirs.conversation_id = "conv-2"
    theirs.connection_count += 1
    assert await second.get_session(session.session_id) is theirs  # syncs the writes
    assert await first.get_session(session.session_id) is session
    assert session.metadata == {"n": 2}
    assert session.conversation_id == "conv-2"
    assert session.connection_count == 1
