"""Time: idle timeouts that slide with activity, requests in flight, the ttl cap, expiry driven by a
manual clock, and the background expiry task on the system clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from sessionhub import ManualClock, Session, SessionHub, SessionNotFound
from sessionhub.stores import Store

from .helpers import HookLog, MakeHub, next_events

Activity = Callable[[SessionHub, str], Awaitable[object]]


async def _touch(hub: SessionHub, sid: str) -> None:
    await hub.touch(sid)


async def _incr(hub: SessionHub, sid: str) -> None:
    await hub.incr(sid, "n")


async def _request(hub: SessionHub, sid: str) -> None:
    async with hub.track_request(sid):
        pass


async def _data_set(hub: SessionHub, sid: str) -> None:
    await hub.data(sid).set("k", "v")


async def _data_delete(hub: SessionHub, sid: str) -> None:
    await hub.data(sid).delete("k")


async def _history(hub: SessionHub, sid: str) -> None:
    await hub.history(sid).append("call", {"n": 1})


ACTIVITIES: dict[str, Activity] = {
    "touch": _touch,
    "incr": _incr,
    "track_request": _request,
    "data.set": _data_set,
    "data.delete": _data_delete,
    "history.append": _history,
}


@pytest.mark.parametrize("activity", list(ACTIVITIES))
async def test_activity_slides_the_idle_timeout(
    make_hub: MakeHub, clock: ManualClock, hook_log: HookLog, activity: str
) -> None:
    hub = await make_hub(idle_timeout=10)
    hub.on_end(hook_log)
    session = await hub.create()
    await hub.data(session.id).set("k", "before")  # so that data.delete has a key to remove
    clock.advance(6)
    await ACTIVITIES[activity](hub, session.id)
    after = await hub.get(session.id)
    assert after.last_activity_at == clock()
    assert after.expires_at == clock() + 10
    clock.advance(6)  # 12 s after creation, 6 after the activity
    assert await hub.expire_due() == 0
    assert await hub.exists(session.id)
    clock.advance(4)  # exactly 10 s after the activity: due
    assert await hub.expire_due() == 1
    assert hook_log.reasons == {session.id: "expired"}
    with pytest.raises(SessionNotFound):
        await hub.get(session.id)


async def test_updates_and_transitions_are_no_activity(
    make_hub: MakeHub, clock: ManualClock
) -> None:
    hub = await make_hub(idle_timeout=10)
    session = await hub.create()
    clock.advance(6)
    await hub.update(session.id, details={"a": 1})
    await hub.transition(session.id, "SPAWN")
    assert (await hub.get(session.id)).expires_at == session.expires_at
    clock.advance(4)
    assert await hub.expire_due() == 1


async def test_expiry_ends_with_reason_expired_and_events(
    make_hub: MakeHub, clock: ManualClock, hook_log: HookLog
) -> None:
    hub = await make_hub(idle_timeout=10, retention=100)
    hub.on_end(hook_log)
    session = await hub.create(activate=True)
    events = hub.subscribe()
    clock.advance(9.9)
    assert await hub.expire_due() == 0
    clock.advance(0.2)
    assert await hub.expire_due() == 1
    [(seen, reason)] = hook_log.calls
    assert (seen.id, seen.state, reason) == (session.id, "TERMINATING", "expired")
    ended = await hub.get(session.id)
    assert (ended.state, ended.end_reason, ended.ended_at) == ("CLEANED", "expired", clock())
    transitioned, done = await next_events(events, 2)
    assert transitioned.kind == "transitioned"
    assert (done.kind, done.session) == ("ended", ended)
    snap = await hub.metrics()
    assert snap.ended_total == {"expired": 1}
    assert snap.live_sessions == 0
    await events.aclose()


async def test_expiry_runs_hooks_once(
    make_hub: MakeHub, clock: ManualClock, hook_log: HookLog
) -> None:
    hub = await make_hub(idle_timeout=5)
    hub.on_end(hook_log)
    session = await hub.create()
    clock.advance(10)
    assert await hub.expire_due() == 1
    assert await hub.expire_due() == 0
    assert await hub.end(session.id) is False
    clock.advance(10)
    assert await hub.expire_due() == 0
    assert hook_log.ids == [session.id]


async def test_expire_due_ends_only_what_is_due_earliest_first(
    make_hub: MakeHub, clock: ManualClock, hook_log: HookLog
) -> None:
    hub = await make_hub()
    hub.on_end(hook_log)
    for name, idle in (("c", 30), ("a", 10), ("never", None), ("b", 20), ("d", 40)):
        await hub.create(name, idle_timeout=idle)
    clock.advance(25)
    assert await hub.expire_due() == 2
    assert hook_log.ids == ["a", "b"]
    assert [s.id for s in (await hub.find()).items] == ["c", "d", "never"]
    clock.advance(1000)
    assert await hub.expire_due() == 2
    assert [s.id for s in (await hub.find()).items] == ["never"]


async def test_expire_due_goes_through_several_batches(
    make_hub: MakeHub, clock: ManualClock, hook_log: HookLog
) -> None:
    hub = await make_hub(idle_timeout=1, expiry_batch=3)
    hub.on_end(hook_log)
    due = {(await hub.create()).id for _ in range(10)}
    await hub.create(idle_timeout=100)
    clock.advance(2)
    # Between batches expire_due lets other tasks run, and the hub's own expiry task may take a
    # batch: what matters is that every due session ends, once, and nothing else.
    assert 3 <= await hub.expire_due() <= 10
    assert await hub.count() == 1
    assert sorted(hook_log.ids) == sorted(due)
    assert set(hook_log.reasons.values()) == {"expired"}


async def test_requests_in_flight_spare_idle_expiry(
    make_hub: MakeHub, clock: ManualClock, hook_log: HookLog
) -> None:
    hub = await make_hub(idle_timeout=10)
    hub.on_end(hook_log)
    session = await hub.create()
    async with hub.track_request(session.id) as inside:
        assert inside.active_requests == 1
        assert inside.expires_at is None  # no idle deadline while in flight, and no ttl
        async with hub.track_request(session.id) as nested:
            assert nested.active_requests == 2
        clock.advance(1000)
        assert await hub.expire_due() == 0
        assert (await hub.get(session.id)).active_requests == 1
    after = await hub.get(session.id)
    assert after.active_requests == 0
    assert after.expires_at == clock() + 10  # the exit was activity: a full idle timeout again
    clock.advance(9)
    assert await hub.expire_due() == 0
    clock.advance(1)
    assert await hub.expire_due() == 1
    assert hook_log.reasons == {session.id: "expired"}


async def test_a_request_is_released_when_its_block_raises(hub: SessionHub) -> None:
    session = await hub.create()
    with pytest.raises(RuntimeError):
        async with hub.track_request(session.id):
            raise RuntimeError("boom")
    assert (await hub.get(session.id)).active_requests == 0


async def test_a_request_whose_session_ended_inside_exits_quietly(hub: SessionHub) -> None:
    session = await hub.create()
    async with hub.track_request(session.id):
        assert await hub.end(session.id) is True
    assert await hub.exists(session.id) is False


async def test_ttl_is_a_hard_cap(make_hub: MakeHub, clock: ManualClock, hook_log: HookLog) -> None:
    hub = await make_hub(idle_timeout=10, ttl=30)
    hub.on_end(hook_log)
    touched = await hub.create("touched")
    busy = await hub.create("busy")
    assert touched.expires_at == clock() + 10
    async with hub.track_request("busy") as inside:  # in flight: not idle, still capped
        assert inside.expires_at == busy.created_at + 30
        for _ in range(5):  # touched every 5 s: never idle
            clock.advance(5)
            await hub.touch("touched")
            assert await hub.expire_due() == 0
        assert (await hub.get("touched")).expires_at == touched.created_at + 30
        clock.advance(5)  # 30 s after creation
        assert await hub.expire_due() == 2
    assert hook_log.reasons == {"touched": "expired", "busy": "expired"}


async def test_ttl_without_idle_timeout(make_hub: MakeHub, clock: ManualClock) -> None:
    hub = await make_hub(idle_timeout=None, ttl=60)
    session = await hub.create()
    assert session.expires_at == clock() + 60
    clock.advance(59)
    await hub.touch(session.id)
    assert await hub.expire_due() == 0
    clock.advance(1)
    assert await hub.expire_due() == 1


async def test_no_timeout_never_expires(make_hub: MakeHub, clock: ManualClock) -> None:
    hub = await make_hub(idle_timeout=None)
    session = await hub.create()
    assert session.expires_at is None
    clock.advance(10**9)
    assert await hub.expire_due() == 0
    assert await hub.exists(session.id)


# A deadline brought nearer wakes the hub's expiry task, which may end the session before the
# test's own expire_due: these tests check that it ended, not which pass ended it.


@pytest.mark.parametrize("field", ["idle_timeout", "ttl"])
async def test_an_update_can_bring_the_deadline_nearer(
    make_hub: MakeHub, clock: ManualClock, hook_log: HookLog, field: str
) -> None:
    hub = await make_hub(idle_timeout=1000)
    hub.on_end(hook_log)
    session = await hub.create()
    clock.advance(2)
    if field == "idle_timeout":
        updated = await hub.update(session.id, idle_timeout=5)
        assert updated.expires_at == session.last_activity_at + 5
    else:
        updated = await hub.update(session.id, ttl=5)
        assert updated.expires_at == session.created_at + 5
    clock.advance(2)
    assert await hub.expire_due() == 0
    assert await hub.exists(session.id)
    clock.advance(1)
    await hub.expire_due()
    assert await hub.exists(session.id) is False
    assert hook_log.reasons == {session.id: "expired"}


async def test_an_update_can_push_the_deadline_back(
    make_hub: MakeHub, clock: ManualClock, hook_log: HookLog
) -> None:
    hub = await make_hub(idle_timeout=5)
    hub.on_end(hook_log)
    session = await hub.create()
    await hub.update(session.id, idle_timeout=None)
    clock.advance(100)
    assert await hub.expire_due() == 0
    assert await hub.exists(session.id)
    await hub.update(session.id, idle_timeout=5)  # counted from the last activity: overdue
    await hub.expire_due()
    assert await hub.exists(session.id) is False
    assert hook_log.reasons == {session.id: "expired"}


async def test_expiry_lateness_is_measured(make_hub: MakeHub, clock: ManualClock) -> None:
    hub = await make_hub(idle_timeout=10)
    await hub.create()
    await hub.create(idle_timeout=11.5)
    clock.advance(12)  # 2 s and 0.5 s late
    assert await hub.expire_due() == 2
    snap = await hub.metrics()
    assert snap.expiry_lateness_sum == pytest.approx(2.5)
    assert snap.expiry_lateness_max == pytest.approx(2.0)
    assert snap.expiry_lateness_buckets[-1] == 2
    assert snap.expiry_lateness_buckets[0] == 0


async def test_an_expired_parent_ends_its_children(
    make_hub: MakeHub, clock: ManualClock, hook_log: HookLog
) -> None:
    hub = await make_hub()
    hub.on_end(hook_log)
    await hub.create("parent", idle_timeout=10)
    await hub.create("child", idle_timeout=None, parent_id="parent")
    clock.advance(10)
    assert await hub.expire_due() == 1
    assert hook_log.reasons == {"parent": "expired", "child": "parent_ended"}
    assert await hub.count() == 0


async def test_the_expiry_task_ends_a_due_session_on_the_system_clock(
    make_store: Callable[[], Store],
) -> None:
    """The only test on real time: nothing here asserts how fast, only that it happens."""
    ended = asyncio.Event()
    reasons: list[str] = []

    def on_end(session: Session, reason: str) -> None:  # a sync hook, run in a worker thread
        reasons.append(reason)

    async def signal(session: Session, reason: str) -> None:
        ended.set()

    async with SessionHub(make_store(), idle_timeout=0.2) as hub:
        hub.on_end(on_end)
        hub.on_end(signal)
        session = await hub.create()
        await asyncio.wait_for(ended.wait(), 30)
        assert reasons == ["expired"]
        # The end is counted when the store's reply to its finish arrives, which on a Cluster
        # can come after the reply to a read on another node's connection that sees it gone.
        for _ in range(3000):
            if (await hub.metrics()).ended_total == {"expired": 1}:
                break
            await asyncio.sleep(0.01)
        assert (await hub.metrics()).ended_total == {"expired": 1}
        assert await hub.exists(session.id) is False
