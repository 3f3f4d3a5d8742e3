"""Sessions handed out are snapshots: later activity (touch, incr, requests) never changes them.

The memory store may refresh a record in place when nothing outside the store can see it (see
``stores/memory.py``). These tests hold snapshots every way a caller can get one (create, get,
touch, find, the yield of ``track_request``, events, a record's mappings alone) and check that
each still reads as it did when it was handed out, on every store. The memory-only tests use an
event buffer of one event, so that the ring does not keep the records it would otherwise pin, and
the in-place path is the one taken.
"""

from __future__ import annotations

from typing import Any

import pytest

from sessionhub import (
    Limits,
    ManualClock,
    Session,
    SessionHub,
    SessionNotFound,
    TooManyRequests,
    ValidationError,
)
from sessionhub.stores import MemoryStore

from .helpers import MakeHub, next_events


def _frozen(session: Session) -> dict[str, Any]:
    """A deep copy of what a snapshot reads as now."""
    return session.to_dict()


async def _activity(hub: SessionHub, sid: str, clock: ManualClock, rounds: int = 3) -> None:
    """Touches, increments and requests, each a second apart, results dropped."""
    for _ in range(rounds):
        clock.advance(1)
        await hub.touch(sid)
        clock.advance(1)
        await hub.incr(sid, "calls")
        clock.advance(1)
        async with hub.track_request(sid):
            clock.advance(1)
            await hub.touch(sid)
        clock.advance(1)
        await hub.touch(sid)


async def test_snapshots_held_by_a_caller_never_change(hub: SessionHub, clock: ManualClock) -> None:
    created = await hub.create(user_id="u1", labels={"tier": "free"}, idle_timeout=60)
    sid = created.id
    clock.advance(1)
    got = await hub.get(sid)
    clock.advance(1)
    touched = await hub.touch(sid)
    listed = (await hub.find(user_id="u1")).items[0]
    held = {"created": created, "got": got, "touched": touched, "listed": listed}
    before = {name: _frozen(session) for name, session in held.items()}
    await _activity(hub, sid, clock)
    assert {name: _frozen(session) for name, session in held.items()} == before
    assert (await hub.get(sid)).version == touched.version + 18


async def test_caller_holding_only_the_last_touch_result(
    hub: SessionHub, clock: ManualClock
) -> None:
    sid = (await hub.create(idle_timeout=60)).id
    last = await hub.touch(sid)
    for _ in range(20):
        seen = _frozen(last)
        clock.advance(1)
        new = await hub.touch(sid)
        assert _frozen(last) == seen  # the previous result, held alone, is untouched
        assert new.version == last.version + 1
        assert new.last_activity_at == last.last_activity_at + 1
        last = new


async def test_track_request_yield_and_counters_mapping_held_alone(
    hub: SessionHub, clock: ManualClock
) -> None:
    sid = (await hub.create(idle_timeout=60)).id
    await hub.incr(sid, "calls", 5)
    counters = (await hub.get(sid)).counters  # the mapping alone, not its session
    async with hub.track_request(sid) as inside:
        seen = _frozen(inside)
        clock.advance(1)
        await hub.touch(sid)
        await hub.incr(sid, "calls")
    assert _frozen(inside) == seen
    assert (inside.active_requests, inside.expires_at) == (1, None)
    assert dict(counters) == {"calls": 5}
    after = await hub.get(sid)
    assert (after.active_requests, after.counters["calls"]) == (0, 6)
    assert after.expires_at == clock() + 60


async def test_events_in_the_buffer_keep_their_snapshots(
    hub: SessionHub, clock: ManualClock
) -> None:
    events = hub.subscribe()
    # Record each result and drop it: the event buffer is left the only holder of the record.
    sid = (await hub.create(idle_timeout=60)).id
    created = _frozen(await hub.get(sid))
    clock.advance(1)
    updated = _frozen(await hub.update(sid, details={"step": 1}))
    await _activity(hub, sid, clock)
    clock.advance(1)
    await hub.update(sid, details={"step": 2})
    got = await next_events(events, 3)
    assert [event.kind for event in got] == ["created", "updated", "updated"]
    snapshots = [event.session for event in got]
    assert None not in snapshots
    assert [_frozen(session) for session in snapshots[:2] if session] == [created, updated]
    assert snapshots[2] is not None
    assert snapshots[2].version == updated["version"] + 19
    await events.aclose()


async def test_expiry_follows_the_latest_touch(make_hub: MakeHub, clock: ManualClock) -> None:
    hub = await make_hub(idle_timeout=10)
    sid = (await hub.create()).id
    for _ in range(5):
        clock.advance(8)
        await hub.touch(sid)  # result dropped
        assert await hub.expire_due() == 0
    clock.advance(9)  # 17 s past the first deadline, 9 past the latest touch
    assert await hub.expire_due() == 0
    assert await hub.exists(sid)
    clock.advance(1)  # exactly idle_timeout after the latest touch
    assert await hub.expire_due() == 1
    assert not await hub.exists(sid)


async def test_ttl_caps_in_place_touches(make_hub: MakeHub, clock: ManualClock) -> None:
    hub = await make_hub(idle_timeout=10, ttl=25)
    sid = (await hub.create()).id
    start = clock()
    for _ in range(3):
        clock.advance(8)
        assert (await hub.touch(sid)).expires_at == min(clock() + 10, start + 25)
    clock.advance(1)  # 25 s after creation
    assert await hub.expire_due() == 1


# The memory store with a one-event buffer: records are held by nothing but the store.


@pytest.fixture
async def bare_hub(clock: ManualClock) -> Any:
    async with SessionHub(
        MemoryStore(event_buffer=1), clock=clock, auto_expire=False, idle_timeout=10
    ) as hub:
        yield hub


async def test_memory_snapshots_with_nothing_else_holding_the_record(
    bare_hub: SessionHub, clock: ManualClock
) -> None:
    hub = bare_hub
    sid = (await hub.create()).id
    await hub.create()  # pushes the created event out of the one-event buffer
    await _activity(hub, sid, clock)
    last = await hub.touch(sid)
    seen = _frozen(last)
    versions = [last.version]
    for _ in range(10):
        clock.advance(1)
        versions.append((await hub.touch(sid)).version)
        clock.advance(1)
        async with hub.track_request(sid) as inside:
            versions.append(inside.version)
        versions.append((await hub.get(sid)).version)
    assert _frozen(last) == seen
    assert versions == sorted(set(versions))  # every change a new version, never reused
    final = await hub.get(sid)
    assert final.version == last.version + 30
    assert final.expires_at == final.last_activity_at + 10 == clock() + 10


async def test_memory_expiry_after_in_place_touches(
    bare_hub: SessionHub, clock: ManualClock
) -> None:
    hub = bare_hub
    sids = [(await hub.create()).id for _ in range(3)]
    await hub.create()
    for _ in range(4):
        clock.advance(6)
        for sid in sids[:2]:
            await hub.touch(sid)
    # sids[2] and the fourth session were due at 10 s; the others 10 s after their last touch
    assert await hub.expire_due() == 2
    assert not await hub.exists(sids[2])
    clock.advance(9)
    assert await hub.expire_due() == 0
    async with hub.track_request(sids[0]):
        clock.advance(5)  # in flight: not idle, whatever the clock says
        assert await hub.expire_due() == 1
    assert [await hub.exists(sid) for sid in sids] == [True, False, False]
    assert (await hub.get(sids[0])).expires_at == clock() + 10


async def test_memory_touch_refusals_unchanged(bare_hub: SessionHub) -> None:
    hub = bare_hub
    sid = (await hub.create()).id
    await hub.end(sid)
    with pytest.raises(SessionNotFound):
        await hub.touch(sid)
    with pytest.raises(SessionNotFound):
        await hub.touch("no-such-session")


async def test_memory_refused_activity_changes_nothing(clock: ManualClock) -> None:
    limits = Limits(max_requests_per_session=1)
    store = MemoryStore(event_buffer=1)
    async with SessionHub(store, clock=clock, auto_expire=False, limits=limits) as hub:
        sid = (await hub.create()).id
        await hub.create()
        await hub.incr(sid, "n", 2**63 - 2)
        before = _frozen(await hub.get(sid))  # a copy: the record is left held by the store only
        clock.advance(1)
        with pytest.raises(ValidationError):
            await hub.incr(sid, "n", 2)
        assert _frozen(await hub.get(sid)) == before
        async with hub.track_request(sid):
            during = _frozen(await hub.get(sid))
            with pytest.raises(TooManyRequests):
                async with hub.track_request(sid):
                    pass
            assert _frozen(await hub.get(sid)) == during
        after = await hub.get(sid)
        assert (after.active_requests, after.version) == (0, during["version"] + 1)
        assert after.counters == {"n": 2**63 - 2}
        with pytest.raises(ValidationError):
            await hub.incr(sid, "n", -(2**63) - 1)  # refused by the hub before the store
        assert await hub.incr(sid, "n", -(2**63 - 2)) == 0
        assert await hub.incr(sid, "n", -(2**63)) == -(2**63)  # the lowest value is allowed
        with pytest.raises(ValidationError):
            await hub.incr(sid, "n", -1)
        assert (await hub.get(sid)).counters == {"n": -(2**63)}
