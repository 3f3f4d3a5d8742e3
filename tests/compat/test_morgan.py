"""sessionhub.compat.morgan: every behaviour Morgan's session management page documents, written as a
Morgan user writes it, on every store (see conftest.py for the clock and the stores).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from starlette.exceptions import HTTPException

from sessionhub import ManualClock, SessionHub, SessionNotFound
from sessionhub import Session as HubSession
from sessionhub.compat.morgan import (
    Session,
    SessionManager,
    get_session_manager,
    initialize_session_manager,
)

HOUR = 3600.0
METRIC_KEYS = {
    "active_sessions",
    "total_sessions_created",
    "total_sessions_expired",
    "total_sessions_cleaned",
    "session_timeout_minutes",
    "max_concurrent_requests",
}


async def hub_record(manager: SessionManager, session_id: str) -> HubSession:
    return await manager.hub.get(session_id)


def at(clock: ManualClock) -> datetime:
    return datetime.fromtimestamp(clock(), tz=UTC)


# Basic Session Creation


async def test_basic_session_creation(clock: ManualClock) -> None:
    manager = initialize_session_manager(
        session_timeout_minutes=60,
        cleanup_interval_seconds=300,
        max_concurrent_requests=100,
        clock=clock,
    )
    assert get_session_manager() is manager
    await manager.start()
    try:
        session = await manager.create_session(
            user_id="user-123", conversation_id="conv-456", metadata={"client_type": "web"}
        )
        assert isinstance(session, Session)
        assert str(uuid.UUID(session.session_id)) == session.session_id
        assert uuid.UUID(session.session_id).version == 4
        assert session.user_id == "user-123"
        assert session.conversation_id == "conv-456"
        assert session.metadata == {"client_type": "web"}
        assert session.created_at == session.last_activity == at(clock)
        assert session.created_at.tzinfo is UTC
        assert session.connection_count == 0
        assert session.active_requests == set()
        record = await hub_record(manager, session.session_id)
        assert record.namespace == "morgan"
        assert record.state == "ACTIVE"
        assert record.user_id == "user-123"
        assert record.labels == {"conversation_id": "conv-456"}
        assert record.details == {"client_type": "web"}
        assert record.idle_timeout == HOUR
    finally:
        await manager.stop()


async def test_a_session_without_arguments(manager: SessionManager) -> None:
    session = await manager.create_session()
    assert session.user_id is None
    assert session.conversation_id is None
    assert session.metadata == {}
    assert await manager.get_session_by_user("user-123") is None


async def test_each_session_gets_its_own_id(manager: SessionManager) -> None:
    sessions = await asyncio.gather(*(manager.create_session() for _ in range(50)))
    assert len({s.session_id for s in sessions}) == 50
    assert manager.get_active_session_count() == 50


async def test_the_global_manager() -> None:
    default = get_session_manager()
    assert get_session_manager() is default
    assert default.get_metrics()["session_timeout_minutes"] == 60
    replaced = initialize_session_manager(session_timeout_minutes=30)
    assert replaced is not default
    assert get_session_manager() is replaced
    assert replaced.get_metrics()["session_timeout_minutes"] == 30


# Retrieving Sessions


async def test_get_session_returns_it_and_refreshes_activity(
    manager: SessionManager, clock: ManualClock
) -> None:
    created = await manager.create_session(user_id="user-123", metadata={"n": 1})
    clock.advance(HOUR - 1)
    session = await manager.get_session(created.session_id)
    assert session is created  # the manager's one object for that session, as in Morgan
    assert session.metadata == {"n": 1}
    assert session.last_activity == at(clock)
    assert (await hub_record(manager, created.session_id)).last_activity_at == clock()
    # The refresh restarted the idle timeout: the original deadline passes without expiry.
    clock.advance(2)
    await manager.hub.expire_due()
    assert await manager.get_session(created.session_id) is not None


async def test_get_session_unknown_ids_give_none(manager: SessionManager) -> None:
    assert await manager.get_session(str(uuid.uuid4())) is None
    assert await manager.get_session("") is None
    assert await manager.get_session("not an id") is None
    assert await manager.get_session(None) is None  # type: ignore[arg-type]


async def test_get_session_by_user(manager: SessionManager, clock: ManualClock) -> None:
    mine = await manager.create_session(user_id="user-123")
    other = await manager.create_session(user_id="user-456")
    clock.advance(10)
    found = await manager.get_session_by_user("user-123")
    assert found is mine
    assert found.last_activity == at(clock)
    assert await manager.get_session_by_user("user-456") is other
    assert await manager.get_session_by_user("nobody") is None
    assert await manager.get_session_by_user("") is None


async def test_get_session_by_user_answers_the_newest(
    manager: SessionManager, clock: ManualClock
) -> None:
    older = await manager.create_session(user_id="u")
    newer = await manager.create_session(user_id="u")  # same clock reading: creation order decides
    found = await manager.get_session_by_user("u")
    assert found is not None
    assert found.session_id == newer.session_id
    clock.advance(1)
    newest = await manager.create_session(user_id="u")
    found = await manager.get_session_by_user("u")
    assert found is not None
    assert found.session_id == newest.session_id
    # Deleting the newest leaves the user's previous live session (documented difference).
    assert await manager.delete_session(newest.session_id)
    assert await manager.delete_session(newer.session_id)
    found = await manager.get_session_by_user("u")
    assert found is not None
    assert found.session_id == older.session_id


# Tracking Requests


async def test_track_request(manager: SessionManager, clock: ManualClock) -> None:
    created = await manager.create_session(user_id="user-123")
    clock.advance(5)
    async with manager.track_request(created.session_id) as session:
        assert session is created
        assert len(session.active_requests) == 1
        assert session.has_active_requests()
        assert session.last_activity == at(clock)
        assert (await hub_record(manager, created.session_id)).active_requests == 1
        assert await manager.get_session(created.session_id) is session
    assert session.active_requests == set()
    assert not session.has_active_requests()
    assert (await hub_record(manager, created.session_id)).active_requests == 0


async def test_track_request_unknown_session_raises_value_error(manager: SessionManager) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(ValueError, match=f"^Session not found: {missing}$"):
        async with manager.track_request(missing):
            pytest.fail("the block must not run")
    deleted = await manager.create_session()
    await manager.delete_session(deleted.session_id)
    with pytest.raises(ValueError, match=f"^Session not found: {deleted.session_id}$"):
        async with manager.track_request(deleted.session_id):
            pytest.fail("the block must not run")


async def test_error_handling_snippet(manager: SessionManager) -> None:
    async def handle(session_id: str) -> None:
        try:
            async with manager.track_request(session_id):
                pass
        except ValueError as e:
            # Session not found
            raise HTTPException(status_code=404, detail=str(e)) from e

    with pytest.raises(HTTPException) as caught:
        await handle("gone")
    assert caught.value.status_code == 404
    assert caught.value.detail == "Session not found: gone"
    await handle((await manager.create_session()).session_id)  # a live session: no error


async def test_an_error_in_the_block_propagates_and_releases_the_request(
    manager: SessionManager,
) -> None:
    session = await manager.create_session()
    with pytest.raises(ValueError, match=r"^from the block$"):
        async with manager.track_request(session.session_id):
            raise ValueError("from the block")
    assert (await hub_record(manager, session.session_id)).active_requests == 0
    again = await manager.get_session(session.session_id)
    assert again is not None
    assert again.active_requests == set()


async def test_concurrent_track_request(manager: SessionManager) -> None:
    session = await manager.create_session()
    sid = session.session_id
    n = 10
    inside = 0
    all_inside = asyncio.Event()
    release = asyncio.Event()
    seen: list[set[str]] = []

    async def request() -> None:
        nonlocal inside
        async with manager.track_request(sid) as tracked:
            seen.append(tracked.active_requests)
            inside += 1
            if inside == n:
                all_inside.set()
            await release.wait()

    tasks = [asyncio.create_task(request()) for _ in range(n)]
    await asyncio.wait_for(all_inside.wait(), 10)
    during = await manager.get_session(sid)
    assert during is not None
    assert len(during.active_requests) == n
    assert set().union(*seen) == during.active_requests
    assert (await hub_record(manager, sid)).active_requests == n
    release.set()
    await asyncio.gather(*tasks)
    after = await manager.get_session(sid)
    assert after is not None
    assert after.active_requests == set()
    assert (await hub_record(manager, sid)).active_requests == 0


async def test_a_request_ends_cleanly_when_its_session_is_deleted_meanwhile(
    manager: SessionManager,
) -> None:
    session = await manager.create_session()
    async with manager.track_request(session.session_id):
        assert await manager.delete_session(session.session_id)
    assert await manager.get_session(session.session_id) is None
    assert manager.get_active_session_count() == 0


# Session Cleanup


async def test_delete_session_true_then_false(manager: SessionManager) -> None:
    session = await manager.create_session(user_id="user-123")
    keep = await manager.create_session(user_id="user-456")
    assert await manager.delete_session(session.session_id) is True
    assert await manager.delete_session(session.session_id) is False
    assert await manager.get_session(session.session_id) is None
    assert await manager.get_session_by_user("user-123") is None
    assert await manager.delete_session(str(uuid.uuid4())) is False
    assert await manager.delete_session("not an id") is False
    assert await manager.get_session(keep.session_id) is not None
    metrics = manager.get_metrics()
    assert metrics["active_sessions"] == 1
    assert metrics["total_sessions_cleaned"] == 1
    assert metrics["total_sessions_expired"] == 0


async def test_idle_sessions_expire(manager: SessionManager, clock: ManualClock) -> None:
    idle = await manager.create_session()
    busy = await manager.create_session()
    clock.advance(HOUR - 1)
    assert await manager.get_session(busy.session_id) is not None
    clock.advance(2)
    await manager.hub.expire_due()
    assert await manager.get_session(idle.session_id) is None
    assert await manager.get_session(busy.session_id) is not None
    metrics = manager.get_metrics()
    assert metrics["active_sessions"] == 1
    assert metrics["total_sessions_expired"] == 1
    assert metrics["total_sessions_cleaned"] == 1
    assert manager.get_active_session_count() == 1


async def test_sessions_with_active_requests_do_not_expire(
    manager: SessionManager, clock: ManualClock
) -> None:
    session = await manager.create_session()
    async with manager.track_request(session.session_id):
        clock.advance(3 * HOUR)
        assert await manager.hub.expire_due() == 0
        assert manager.get_active_session_count() == 1
    # The request's end counts as activity; the idle timeout runs from there.
    clock.advance(HOUR - 1)
    assert await manager.hub.expire_due() == 0
    clock.advance(2)
    await manager.hub.expire_due()
    assert await manager.get_session(session.session_id) is None
    assert manager.get_metrics()["total_sessions_expired"] == 1


async def test_set_appropriate_timeouts(clock: ManualClock) -> None:
    interactive = initialize_session_manager(session_timeout_minutes=30, clock=clock)
    await interactive.start()
    try:
        session = await interactive.create_session()
        clock.advance(29 * 60)
        await interactive.hub.expire_due()
        assert await interactive.hub.exists(session.session_id)
        clock.advance(61)
        await interactive.hub.expire_due()
        assert not await interactive.hub.exists(session.session_id)
    finally:
        await interactive.stop()
    long_running = initialize_session_manager(session_timeout_minutes=120, clock=clock)
    assert get_session_manager() is long_running
    session = await long_running.create_session()
    assert (await hub_record(long_running, session.session_id)).idle_timeout == 120 * 60


async def test_the_periodic_cleanup_expires_idle_sessions() -> None:
    """The real expiry task, a real clock and tiny timeouts: waits for the end, asserts no timing."""
    manager = SessionManager(session_timeout_minutes=0.002, cleanup_interval_seconds=0.05)
    ended = asyncio.Event()
    reasons: list[str] = []

    @manager.hub.on_end
    async def seen(session: HubSession, reason: str) -> None:
        reasons.append(reason)
        ended.set()

    await manager.start()
    try:
        session = await manager.create_session()
        await asyncio.wait_for(ended.wait(), 20)
        assert reasons == ["expired"]
        assert await manager.get_session(session.session_id) is None
        assert manager.get_metrics()["total_sessions_expired"] == 1
        assert manager.get_active_session_count() == 0
    finally:
        await manager.stop()


async def test_stop_removes_every_session(clock: ManualClock) -> None:
    manager = SessionManager(clock=clock)
    reasons: list[str] = []
    manager.hub.on_end(lambda session, reason: reasons.append(reason))
    await manager.start()
    sessions = [await manager.create_session(user_id=f"u{i}") for i in range(3)]
    assert manager.get_active_session_count() == 3
    await manager.stop()
    assert reasons == ["shutdown"] * 3
    assert manager.get_active_session_count() == 0
    metrics = manager.get_metrics()
    assert metrics["active_sessions"] == 0
    assert metrics["total_sessions_cleaned"] == 3
    assert metrics["total_sessions_expired"] == 0
    for session in sessions:
        with pytest.raises(SessionNotFound):
            await manager.hub.get(session.session_id)


async def test_stop_on_a_given_hub_ends_only_the_managers_sessions(clock: ManualClock) -> None:
    async with SessionHub(clock=clock) as hub:
        manager = SessionManager(hub=hub)
        await manager.start()
        other = await hub.create(user_id="u1")
        mine = await manager.create_session(user_id="u1")
        await manager.stop()
        assert not await hub.exists(mine.session_id)
        assert await hub.exists(other.id)
        assert hub.store.ephemeral  # the hub stays open: it still works
        assert (await hub.touch(other.id)).id == other.id


async def test_on_a_given_hub_the_managers_timeout_applies(clock: ManualClock) -> None:
    async with SessionHub(clock=clock, idle_timeout=30) as hub:
        manager = SessionManager(session_timeout_minutes=2, hub=hub)
        session = await manager.create_session()
        assert (await hub.get(session.session_id)).idle_timeout == 120
        clock.advance(119)
        await hub.expire_due()
        assert await manager.get_session(session.session_id) is not None
        clock.advance(121)
        await hub.expire_due()
        assert await manager.get_session(session.session_id) is None
        assert manager.get_metrics()["total_sessions_expired"] == 1


async def test_start_twice_stop_twice_and_restart(clock: ManualClock) -> None:
    manager = SessionManager(clock=clock)
    await manager.stop()  # not running: nothing to do
    await manager.start()
    await manager.start()
    first = await manager.create_session()
    await manager.stop()
    await manager.stop()
    assert manager.get_active_session_count() == 0
    await manager.start()
    try:
        second = await manager.create_session()
        assert await manager.get_session(second.session_id) is not None
        assert await manager.get_session(first.session_id) is None
        assert manager.get_metrics()["total_sessions_created"] == 2
    finally:
        await manager.stop()


# Isolation Guarantees


async def test_session_data_is_isolated(manager: SessionManager) -> None:
    a = await manager.create_session(user_id="a", metadata={"cart": {"items": [1]}})
    b = await manager.create_session(user_id="b", metadata={"cart": {"items": [2]}})
    a.metadata["cart"]["items"].append(99)
    a.metadata["new"] = True
    again = await manager.get_session(a.session_id)
    assert again is a
    assert again.metadata == {"cart": {"items": [1, 99]}, "new": True}
    other = await manager.get_session(b.session_id)
    assert other is b
    assert other.metadata == {"cart": {"items": [2]}}
    assert other.user_id == "b"
    assert (await hub_record(manager, a.session_id)).details == a.metadata
    assert (await hub_record(manager, b.session_id)).details == {"cart": {"items": [2]}}


async def test_requests_and_cleanup_are_isolated(manager: SessionManager) -> None:
    a = await manager.create_session()
    b = await manager.create_session()
    async with manager.track_request(a.session_id) as tracked:
        seen_b = await manager.get_session(b.session_id)
        assert seen_b is not None
        assert seen_b.active_requests == set()
        assert (await hub_record(manager, b.session_id)).active_requests == 0
        assert await manager.delete_session(b.session_id)
        still_a = await manager.get_session(a.session_id)
        assert still_a is not None
        assert still_a.active_requests == tracked.active_requests
    assert await manager.get_session(a.session_id) is not None
    assert manager.get_active_session_count() == 1


async def test_sessions_outside_the_namespace_are_invisible(clock: ManualClock) -> None:
    async with SessionHub(clock=clock) as hub:
        manager = SessionManager(hub=hub)
        stranger = await hub.create(user_id="u1", activate=True)
        assert await manager.get_session(stranger.id) is None
        assert await manager.get_session_by_user("u1") is None
        assert await manager.delete_session(stranger.id) is False
        with pytest.raises(ValueError, match="Session not found"):
            async with manager.track_request(stranger.id):
                pass
        assert await hub.exists(stranger.id)
        assert (await hub.get(stranger.id)).version == stranger.version  # not even touched
        await hub.end(stranger.id)
        assert manager.get_metrics()["total_sessions_cleaned"] == 0


# Monitoring and Metrics


async def test_metrics_keys_and_values(manager: SessionManager, clock: ManualClock) -> None:
    metrics = manager.get_metrics()  # sync, as in Morgan
    assert isinstance(metrics, dict)
    assert set(metrics) == METRIC_KEYS
    assert metrics == {
        "active_sessions": 0,
        "total_sessions_created": 0,
        "total_sessions_expired": 0,
        "total_sessions_cleaned": 0,
        "session_timeout_minutes": 60,
        "max_concurrent_requests": 100,
    }
    first = await manager.create_session()
    await manager.create_session()
    clock.advance(HOUR / 2)
    third = await manager.create_session()
    await manager.delete_session(third.session_id)
    clock.advance(HOUR / 2 + 1)  # the first two are idle past the hour now
    async with manager.track_request(first.session_id):  # ... but this one is busy
        await manager.hub.expire_due()
    assert manager.get_metrics() == {
        "active_sessions": 1,
        "total_sessions_created": 3,
        "total_sessions_expired": 1,
        "total_sessions_cleaned": 2,
        "session_timeout_minutes": 60,
        "max_concurrent_requests": 100,
    }
    assert manager.get_active_session_count() == 1


async def test_health_system_integration_snippet(manager: SessionManager) -> None:
    class HealthSystem:
        active_sessions = 0

        def increment_active_sessions(self) -> None:
            self.active_sessions += 1

        def decrement_active_sessions(self) -> None:
            self.active_sessions -= 1

    health_system = HealthSystem()
    session = await manager.create_session(user_id="user-123")
    health_system.increment_active_sessions()
    assert health_system.active_sessions == manager.get_active_session_count() == 1
    await manager.delete_session(session.session_id)
    health_system.decrement_active_sessions()
    assert health_system.active_sessions == manager.get_active_session_count() == 0


async def test_concurrent_request_limit_is_left_to_the_application(clock: ManualClock) -> None:
    manager = initialize_session_manager(max_concurrent_requests=2, clock=clock)
    max_concurrent_requests = manager.get_metrics()["max_concurrent_requests"]

    def admit() -> None:
        if manager.get_active_session_count() >= max_concurrent_requests:
            raise HTTPException(
                status_code=503, detail="Server at capacity, please try again later"
            )

    admit()
    await manager.create_session()
    admit()
    await manager.create_session()
    with pytest.raises(HTTPException) as caught:
        admit()
    assert caught.value.status_code == 503
    third = await manager.create_session()  # the manager itself does not enforce it
    assert await manager.get_session(third.session_id) is not None


# The Session model and the mapping


async def test_connection_count_reads_the_hub_counter(manager: SessionManager) -> None:
    session = await manager.create_session()
    await manager.hub.incr(session.session_id, "connection_count")
    again = await manager.get_session(session.session_id)
    assert again is not None
    assert again.connection_count == 1


def test_the_session_dataclass() -> None:
    """Unbound (built by hand, as Morgan's tests do), a Session is a plain object."""
    now = datetime.now(UTC)
    session = Session(session_id="s1", last_activity=now - timedelta(minutes=61))
    assert session.metadata == {}
    assert session.active_requests == set()
    assert session.connection_count == 0
    assert session.is_expired(60)
    assert not session.is_expired(62)
    assert not session.has_active_requests()
    session.add_request("r1")
    assert session.has_active_requests()
    assert not session.is_expired(60)  # add_request updated the activity
    session.remove_request("r1")
    assert not session.has_active_requests()
    session.update_activity()
    assert session.last_activity >= now
    assert Session(session_id="s2").metadata is not Session(session_id="s3").metadata
    twin = Session(session_id="s2", created_at=now, last_activity=now)
    assert twin == Session(session_id="s2", created_at=now, last_activity=now)  # by value
    assert [f.name for f in dataclasses.fields(Session)] == [
        "session_id",
        "user_id",
        "conversation_id",
        "created_at",
        "last_activity",
        "metadata",
        "connection_count",
        "active_requests",
    ]


async def test_invalid_arguments_raise_value_error(manager: SessionManager) -> None:
    with pytest.raises(ValueError, match="JSON"):
        await manager.create_session(metadata={"when": object()})
    with pytest.raises(ValueError, match="user_id"):
        await manager.create_session(user_id=123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="session_timeout_minutes"):
        SessionManager(session_timeout_minutes=0)
    with pytest.raises(ValueError, match="clock"):
        SessionManager(hub=SessionHub(), clock=ManualClock())
    assert manager.get_metrics()["total_sessions_created"] == 0
