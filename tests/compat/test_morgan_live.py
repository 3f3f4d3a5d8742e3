"""Morgan's ``Session`` is a live object the manager shares with its callers: code that writes to it
must work after the one-line import change, with every write reaching the hub (expiry, cleanup and
metrics see it) and the hub staying the source of truth. Every test runs on every store.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import pickle
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from sessionhub import Limits, ManualClock, SessionHub, TooManyRequests
from sessionhub import Session as HubSession
from sessionhub.compat.morgan import Session, SessionManager, initialize_session_manager

HOUR = 3600.0


def at(clock: ManualClock) -> datetime:
    return datetime.fromtimestamp(clock(), tz=UTC)


async def hub_soon(
    manager: SessionManager, session: Session, check: Callable[[HubSession], bool]
) -> None:
    """Wait (up to 10 s) until the hub's record passes ``check``: writes reach the hub soon."""
    for _ in range(1000):
        if check(await manager.hub.get(session.session_id)):
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"the hub never showed the write: {await manager.hub.get(session.session_id)}")


async def record(manager: SessionManager, session: Session) -> HubSession:
    return await manager.hub.get(session.session_id)


async def expire_now(manager: SessionManager) -> int:
    return await manager.hub.expire_due()


# update_activity


async def test_update_activity_reaches_the_hub(manager: SessionManager, clock: ManualClock) -> None:
    session = await manager.create_session(user_id="user-123")
    clock.advance(HOUR - 1)
    session.update_activity()
    assert session.last_activity == at(clock)  # the object at once
    await hub_soon(manager, session, lambda r: r.last_activity_at == clock())
    clock.advance(2)  # past the first deadline, not the refreshed one
    assert await expire_now(manager) == 0
    assert await manager.get_session(session.session_id) is session


# add_request / remove_request


async def test_a_request_added_by_hand_spares_the_session_until_removed(
    manager: SessionManager, clock: ManualClock
) -> None:
    session = await manager.create_session()
    session.add_request("req-1")
    assert session.active_requests == {"req-1"}
    assert session.has_active_requests()
    await hub_soon(manager, session, lambda r: r.active_requests == 1)
    clock.advance(3 * HOUR)  # an idle period far past the timeout
    assert await expire_now(manager) == 0
    assert manager.get_active_session_count() == 1
    session.remove_request("req-1")
    assert not session.has_active_requests()
    await hub_soon(manager, session, lambda r: r.active_requests == 0)
    clock.advance(HOUR - 1)  # remove_request was activity: the timeout runs from there
    assert await expire_now(manager) == 0
    clock.advance(2)
    assert await expire_now(manager) == 1
    assert await manager.get_session(session.session_id) is None
    assert manager.get_metrics()["total_sessions_expired"] == 1


async def test_requests_added_by_hand_and_by_track_request_add_up(
    manager: SessionManager,
) -> None:
    session = await manager.create_session()
    session.add_request("by-hand")
    async with manager.track_request(session.session_id) as tracked:
        assert tracked is session
        assert len(session.active_requests) == 2
        assert (await record(manager, session)).active_requests == 2
    assert session.active_requests == {"by-hand"}
    assert (await record(manager, session)).active_requests == 1
    session.remove_request("by-hand")
    session.remove_request("never-added")  # discard, as in Morgan
    await hub_soon(manager, session, lambda r: r.active_requests == 0)


async def test_the_request_set_changed_directly_is_synced_by_the_next_call(
    manager: SessionManager,
) -> None:
    session = await manager.create_session()
    session.active_requests.add("raw")  # no method sees this
    assert await manager.get_session(session.session_id) is session  # syncs before answering
    assert (await record(manager, session)).active_requests == 1
    session.active_requests = set()
    await hub_soon(manager, session, lambda r: r.active_requests == 0)


# last_activity written by the caller


async def test_last_activity_moved_back_is_cleaned_up_by_the_next_cleanup_run(
    live_hub: SessionHub,
) -> None:
    """Written exactly as on Morgan: real clock, real cleanup loop, timeout 1 minute."""
    manager = initialize_session_manager(
        session_timeout_minutes=1, cleanup_interval_seconds=0.05, hub=live_hub
    )
    ended = asyncio.Event()
    reasons: list[str] = []

    @live_hub.on_end
    def seen(session: HubSession, reason: str) -> None:
        reasons.append(reason)
        ended.set()

    await manager.start()
    try:
        session = await manager.create_session(user_id="user-123")
        keep = await manager.create_session(user_id="user-456")
        session.last_activity = datetime.now(timezone.utc) - timedelta(minutes=2)  # noqa: UP017
        assert session.is_expired(1)
        await asyncio.wait_for(ended.wait(), 10)
        assert reasons == ["expired"]
        assert await manager.get_session(session.session_id) is None
        assert await manager.get_session(keep.session_id) is keep
        metrics = manager.get_metrics()
        assert metrics["active_sessions"] == 1
        assert metrics["total_sessions_expired"] == 1
    finally:
        await manager.stop()


async def test_last_activity_sets_the_deadline(manager: SessionManager, clock: ManualClock) -> None:
    session = await manager.create_session()
    clock.advance(600)
    session.last_activity = at(clock) - timedelta(minutes=50)  # 10 minutes left
    await hub_soon(manager, session, lambda r: r.expires_at == clock() + 600)
    assert session.last_activity == at(clock) - timedelta(minutes=50)  # as written
    clock.advance(599)
    assert await expire_now(manager) == 0
    assert session.is_expired(50)
    assert not session.is_expired(60)
    clock.advance(2)
    assert await expire_now(manager) == 1
    assert await manager.get_session(session.session_id) is None


async def test_last_activity_moved_forward_delays_expiry(
    manager: SessionManager, clock: ManualClock
) -> None:
    session = await manager.create_session()
    session.last_activity = at(clock) + timedelta(minutes=30)
    await hub_soon(manager, session, lambda r: r.expires_at == clock() + HOUR + 30 * 60)
    clock.advance(HOUR + 29 * 60)
    assert await expire_now(manager) == 0
    clock.advance(2 * 60)
    assert await expire_now(manager) == 1


async def test_activity_after_a_moved_last_activity_restores_the_timeout(
    manager: SessionManager, clock: ManualClock
) -> None:
    session = await manager.create_session()
    session.last_activity = at(clock) - timedelta(minutes=59)
    await hub_soon(manager, session, lambda r: r.expires_at == clock() + 60)
    assert await manager.get_session(session.session_id) is session  # activity: a full hour again
    assert session.last_activity == at(clock)
    hub_record = await record(manager, session)
    assert hub_record.idle_timeout == HOUR
    assert hub_record.expires_at == clock() + HOUR


async def test_last_activity_past_the_timeout_is_spared_while_a_request_runs(
    manager: SessionManager, clock: ManualClock
) -> None:
    session = await manager.create_session()
    async with manager.track_request(session.session_id):
        session.last_activity = at(clock) - timedelta(hours=2)
        await hub_soon(manager, session, lambda r: r.idle_timeout != HOUR)
        clock.advance(60)
        assert await expire_now(manager) == 0  # Morgan's cleanup skips sessions with requests
    clock.advance(HOUR + 1)  # the request's end was activity
    assert await expire_now(manager) == 1


# is_expired, has_active_requests, connection_count


async def test_is_expired_reads_the_managers_clock(
    manager: SessionManager, clock: ManualClock
) -> None:
    session = await manager.create_session()
    assert not session.is_expired(60)
    clock.advance(HOUR + 1)
    assert session.is_expired(60)
    assert not session.is_expired(61)


async def test_connection_count_written_by_the_caller(manager: SessionManager) -> None:
    session = await manager.create_session()
    session.connection_count += 1  # a websocket connected
    session.connection_count += 1
    await hub_soon(manager, session, lambda r: r.counters == {"connection_count": 2})
    session.connection_count -= 1
    assert await manager.get_session(session.session_id) is session
    assert session.connection_count == 1
    assert (await record(manager, session)).counters == {"connection_count": 1}
    await manager.hub.incr(session.session_id, "connection_count", 5)  # through the hub
    assert await manager.get_session(session.session_id) is session
    assert session.connection_count == 6


# metadata


async def test_metadata_changes_reach_the_hub(manager: SessionManager) -> None:
    session = await manager.create_session(metadata={"client_type": "web"})
    session.metadata["k"] = "v"
    again = await manager.get_session(session.session_id)
    assert again is session
    assert again.metadata == {"client_type": "web", "k": "v"}
    assert (await record(manager, session)).details == {"client_type": "web", "k": "v"}
    session.metadata["history"] = []
    session.metadata["history"].append({"role": "user", "text": "hi"})  # nested, in place
    del session.metadata["client_type"]
    await manager.get_session(session.session_id)
    assert (await record(manager, session)).details == {
        "k": "v",
        "history": [{"role": "user", "text": "hi"}],
    }
    session.metadata = {"replaced": True}
    await hub_soon(manager, session, lambda r: r.details == {"replaced": True})


async def test_a_value_that_changes_type_only_is_stored(manager: SessionManager) -> None:
    session = await manager.create_session(metadata={"flag": 1})
    session.metadata["flag"] = True  # equal in Python, not in JSON
    await manager.get_session(session.session_id)
    assert (await record(manager, session)).details == {"flag": True}


async def test_hub_changes_reach_the_object_in_place(manager: SessionManager) -> None:
    session = await manager.create_session(metadata={"cart": {"items": [1]}, "n": 1})
    cart = session.metadata["cart"]
    metadata = session.metadata
    await manager.hub.update(session.session_id, details={"n": 2}, labels={"conversation_id": "c"})
    assert await manager.get_session(session.session_id) is session
    assert session.metadata is metadata
    assert session.metadata == {"cart": {"items": [1]}, "n": 2}
    assert session.metadata["cart"] is cart  # an unchanged value keeps its identity
    assert session.conversation_id == "c"


async def test_metadata_that_is_not_json_stays_on_the_object_and_is_logged(
    manager: SessionManager, caplog: pytest.LogCaptureFixture
) -> None:
    session = await manager.create_session(metadata={"ok": 1})
    session.metadata["when"] = object()
    with caplog.at_level(logging.WARNING, "sessionhub.compat.morgan"):
        assert await manager.get_session(session.session_id) is session
    assert "metadata not stored" in caplog.text
    assert "when" in session.metadata
    assert (await record(manager, session)).details == {"ok": 1}
    del session.metadata["when"]
    session.metadata["ok"] = 2
    await manager.get_session(session.session_id)
    assert (await record(manager, session)).details == {"ok": 2}


async def test_the_metadata_dict_given_to_create_is_the_sessions(manager: SessionManager) -> None:
    metadata: dict[str, object] = {"client_type": "web"}
    session = await manager.create_session(metadata=metadata)
    assert session.metadata is metadata  # as in Morgan (`metadata or {}`)
    metadata["later"] = 1
    await manager.get_session(session.session_id)
    assert (await record(manager, session)).details == {"client_type": "web", "later": 1}


# conversation_id, fixed fields


async def test_conversation_id_written_by_the_caller(manager: SessionManager) -> None:
    session = await manager.create_session(conversation_id="conv-1")
    session.conversation_id = "conv-2"
    await hub_soon(manager, session, lambda r: r.labels == {"conversation_id": "conv-2"})
    session.conversation_id = None
    await hub_soon(manager, session, lambda r: r.labels == {})


# identity, threads, the end of a session


async def test_one_object_per_session(manager: SessionManager) -> None:
    session = await manager.create_session(user_id="user-123")
    assert await manager.get_session(session.session_id) is session
    assert await manager.get_session_by_user("user-123") is session
    async with manager.track_request(session.session_id) as tracked:
        assert tracked is session
    other = await manager.hub.create(namespace="morgan", user_id="u2", activate=True)
    first = await manager.get_session(other.id)  # made elsewhere: bound on first sight
    assert first is not None
    assert await manager.get_session(other.id) is first
    assert await manager.get_session_by_user("u2") is first


async def test_writes_from_another_thread_reach_the_hub(manager: SessionManager) -> None:
    session = await manager.create_session()
    await asyncio.to_thread(session.add_request, "from-a-thread")
    await asyncio.to_thread(setattr, session, "metadata", {"k": "v"})
    # The sync runs on the manager's loop, scheduled from the thread.
    await hub_soon(manager, session, lambda r: r.active_requests == 1 and r.details == {"k": "v"})


async def test_an_ended_session_is_a_plain_object(manager: SessionManager) -> None:
    session = await manager.create_session()
    session.add_request("req-1")
    await hub_soon(manager, session, lambda r: r.active_requests == 1)
    assert await manager.delete_session(session.session_id)
    session.metadata["after"] = 1  # nothing to reach: no error, the object keeps it
    session.update_activity()
    session.remove_request("req-1")
    assert session.metadata == {"after": 1}
    assert await manager.get_session(session.session_id) is None
    assert manager.get_active_session_count() == 0


async def test_the_cleanup_loop_syncs_changes_no_method_sees(
    live_hub: SessionHub,
) -> None:
    manager = initialize_session_manager(cleanup_interval_seconds=0.02, hub=live_hub)
    await manager.start()
    try:
        session = await manager.create_session(metadata={"items": []})
        session.metadata["items"].append(1)  # only a cleanup run can see this
        for _ in range(500):
            if (await live_hub.get(session.session_id)).details == {"items": [1]}:
                break
            await asyncio.sleep(0.01)
        assert (await live_hub.get(session.session_id)).details == {"items": [1]}
    finally:
        await manager.stop()


@pytest.fixture
async def two_managers(hub: SessionHub) -> AsyncIterator[tuple[SessionManager, SessionManager]]:
    """Two managers, each with its own objects, over one hub."""
    first = SessionManager(hub=hub)
    second = SessionManager(hub=hub)
    yield first, second
    await first.stop()
    await second.stop()


async def test_each_manager_has_its_own_object_and_sees_the_others_writes(
    two_managers: tuple[SessionManager, SessionManager],
) -> None:
    first, second = two_managers
    mine = await first.create_session(user_id="user 123", metadata={"n": 1})
    mine.metadata["n"] = 2
    mine.add_request("req-1")
    await hub_soon(first, mine, lambda r: r.active_requests == 1 and r.details == {"n": 2})
    theirs = await second.get_session(mine.session_id)
    assert theirs is not None
    assert theirs is not mine
    assert theirs.user_id == "user 123"
    assert theirs.metadata == {"n": 2}
    assert theirs.has_active_requests()  # held by the first manager
    assert theirs.active_requests == set()  # ids are the holder's
    mine.remove_request("req-1")
    await hub_soon(first, mine, lambda r: r.active_requests == 0)
    theirs.metadata["from"] = "second"
    assert await second.get_session(mine.session_id) is theirs  # syncs the change
    assert not theirs.has_active_requests()
    assert await first.get_session(mine.session_id) is mine
    assert mine.metadata == {"n": 2, "from": "second"}


async def test_copies_and_pickles_are_plain_objects(manager: SessionManager) -> None:
    session = await manager.create_session(user_id="user 123", metadata={"n": 1})
    shallow = copy.copy(session)  # shares the metadata dict and request set, as any copy.copy
    assert shallow == session
    shallow.metadata = {"n": 2}  # rebinding the copy's attribute reaches nothing
    shallow.connection_count = 5
    for twin in (copy.deepcopy(session), pickle.loads(pickle.dumps(session))):
        assert twin == session
        twin.metadata["n"] = 3
        twin.add_request("req-1")
    assert await manager.get_session(session.session_id) is session
    assert session.metadata == {"n": 1}
    assert (await record(manager, session)).details == {"n": 1}
    assert (await record(manager, session)).active_requests == 0


async def test_a_request_the_hub_refuses_is_not_tracked(clock: ManualClock) -> None:
    limits = Limits(max_requests_per_session=1)
    async with SessionHub(clock=clock, limits=limits, auto_expire=False) as hub:
        manager = SessionManager(hub=hub)
        session = await manager.create_session()
        async with manager.track_request(session.session_id):
            with pytest.raises(TooManyRequests):
                async with manager.track_request(session.session_id):
                    pytest.fail("the block must not run")
            assert len(session.active_requests) == 1
        assert session.active_requests == set()
        assert (await hub.get(session.session_id)).active_requests == 0


async def test_changes_inside_track_request_are_stored_when_the_request_ends(
    manager: SessionManager,
) -> None:
    session = await manager.create_session(metadata={"client_type": "web"})
    async with manager.track_request(session.session_id) as tracked:
        tracked.metadata["messages"] = tracked.metadata.get("messages", 0) + 1
    assert (await record(manager, session)).details == {"client_type": "web", "messages": 1}


async def test_a_conversation_id_the_hub_refuses_stays_on_the_object_and_is_logged(
    manager: SessionManager, caplog: pytest.LogCaptureFixture
) -> None:
    session = await manager.create_session(conversation_id="conv-1")
    session.conversation_id = "c" * 1000  # longer than a hub label
    session.metadata["k"] = "v"
    with caplog.at_level(logging.WARNING, "sessionhub.compat.morgan"):
        assert await manager.get_session(session.session_id) is session
        assert await manager.get_session(session.session_id) is session
    assert caplog.text.count("conversation_id not stored") == 1
    assert session.conversation_id == "c" * 1000
    hub_record = await record(manager, session)
    assert hub_record.labels == {"conversation_id": "conv-1"}
    assert hub_record.details == {"k": "v"}  # the rest of the sync went on
