"""Events: in order, from the moment of subscribing, filtered, resumed with ``after=``, and a
``missed`` count for a subscriber that fell a whole buffer behind."""

from __future__ import annotations

import asyncio

import pytest

from sessionhub import ManualClock, SessionEvent, SessionHub, ValidationError
from sessionhub.stores import MemoryStore

from .helpers import MakeHub, next_event, next_events


async def test_every_kind_in_order(hub: SessionHub, clock: ManualClock) -> None:
    events = hub.subscribe()
    session = await hub.create(namespace="chat")
    clock.advance(1)
    updated = await hub.update(session.id, details={"a": 1})
    spawned = await hub.transition(session.id, "SPAWN")
    await hub.end(session.id, "bye")
    got = await next_events(events, 5)
    assert [e.kind for e in got] == ["created", "updated", "transitioned", "transitioned", "ended"]
    assert got[0].session == session
    assert got[1].session == updated
    assert got[2].session == spawned
    assert got[3].session is not None
    assert (got[3].session.state, got[3].session.end_reason) == ("TERMINATING", "bye")
    assert got[4].session is not None
    assert (got[4].session.state, got[4].session.end_reason) == ("CLEANED", "bye")
    assert [e.at for e in got] == [clock() - 1, clock(), clock(), clock(), clock()]
    assert len({e.id for e in got}) == 5
    versions = [e.session.version for e in got if e.session is not None]
    assert versions == sorted(versions)
    await events.aclose()


async def test_only_events_after_subscribing(hub: SessionHub) -> None:
    await hub.create("before")
    events = hub.subscribe()  # from here on, even before the first iteration
    await hub.create("after")
    event = await next_event(events)
    assert event.session is not None
    assert (event.kind, event.session.id) == ("created", "after")
    await events.aclose()


async def test_quiet_operations_emit_no_event(hub: SessionHub) -> None:
    session = await hub.create()
    events = hub.subscribe()
    await hub.touch(session.id)
    await hub.incr(session.id, "n")
    async with hub.track_request(session.id):
        pass
    await hub.data(session.id).set("k", 1)
    await hub.data(session.id).delete("k")
    await hub.history(session.id).append("call")
    await hub.get(session.id)
    await hub.find()
    marker = await hub.update(session.id, details={"marker": True})
    event = await next_event(events)  # the first event is the update's: nothing came before
    assert (event.kind, event.session) == ("updated", marker)
    await events.aclose()


async def test_filters(hub: SessionHub) -> None:
    by_kind = hub.subscribe(kinds=["ended"])
    by_namespace = hub.subscribe(namespace="chat")
    both = hub.subscribe(namespace="chat", kinds=["created", "ended"])
    a = await hub.create("a", namespace="chat")
    b = await hub.create("b", namespace="other")
    by_session = hub.subscribe(session_id="b")
    await hub.update(a.id, details={"x": 1})
    await hub.update(b.id, details={"x": 1})
    await hub.end(b.id)
    await hub.end(a.id)

    def ids(got: list[SessionEvent]) -> list[tuple[str, str]]:
        return [(e.kind, e.session.id if e.session else "") for e in got]

    assert ids(await next_events(by_kind, 2)) == [("ended", "b"), ("ended", "a")]
    assert ids(await next_events(by_namespace, 4)) == [
        ("created", "a"),
        ("updated", "a"),
        ("transitioned", "a"),
        ("ended", "a"),
    ]
    assert ids(await next_events(both, 2)) == [("created", "a"), ("ended", "a")]
    assert ids(await next_events(by_session, 3)) == [
        ("updated", "b"),
        ("transitioned", "b"),
        ("ended", "b"),
    ]
    for events in (by_kind, by_namespace, both, by_session):
        await events.aclose()


async def test_resume_after_an_event_id(hub: SessionHub) -> None:
    events = hub.subscribe()
    for i in range(5):
        await hub.create(f"s{i}")
    got = await next_events(events, 5)
    await events.aclose()
    resumed = hub.subscribe(after=got[1].id)
    assert await next_events(resumed, 3) == got[2:]
    await hub.create("s5")
    latest = await next_event(resumed)
    assert latest.session is not None
    assert latest.session.id == "s5"
    await resumed.aclose()
    from_last = hub.subscribe(after=latest.id)
    await hub.create("s6")
    event = await next_event(from_last)
    assert event.session is not None
    assert event.session.id == "s6"
    await from_last.aclose()


async def test_resume_after_an_unknown_id_is_refused(hub: SessionHub) -> None:
    await hub.create()
    with pytest.raises(ValidationError):
        hub.subscribe(after="not-an-event-id")
    assert (await hub.metrics()).subscribers == 0


async def test_subscribers_are_counted(hub: SessionHub) -> None:
    events = hub.subscribe()
    await hub.create()
    await next_event(events)
    assert (await hub.metrics()).subscribers == 1
    await events.aclose()
    assert (await hub.metrics()).subscribers == 0


async def test_a_subscriber_that_falls_behind_is_told_what_it_missed(hub: SessionHub) -> None:
    """Store-agnostic: overflow whatever buffer the store's event log holds."""
    capacity = hub.store.events.capacity
    if capacity > 50_000:
        pytest.skip(f"an event buffer of {capacity} is too large to overflow in a unit test")
    events = hub.subscribe()
    extra = 7
    for i in range(capacity + extra):
        await hub.create(f"s{i:06d}")  # the hub goes on: it never waits for the subscriber
    missed = await next_event(events)
    assert (missed.kind, missed.missed, missed.session) == ("missed", extra, None)
    first = await next_event(events)
    assert first.session is not None
    assert first.session.id == f"s{extra:06d}"
    await events.aclose()


async def test_missed_with_a_small_buffer_memory_only(clock: ManualClock) -> None:
    """Memory only: the size of the event buffer is an argument of the store's constructor, and
    the ``make_store`` factory takes none, so a four-event buffer can only be built for the memory
    store. The test above checks the same behaviour store-agnostically with the default buffer."""
    async with SessionHub(MemoryStore(event_buffer=4), clock=clock) as hub:
        slow = hub.subscribe()
        fast = hub.subscribe()
        ended_only = hub.subscribe(kinds=["ended"])
        for i in range(10):
            await hub.create(f"s{i}")
            event = await next_event(fast)  # a reader that keeps up misses nothing
            assert event.session is not None
            assert event.session.id == f"s{i}"
        got = await next_events(slow, 5)
        assert (got[0].kind, got[0].missed) == ("missed", 6)
        assert [e.session.id for e in got[1:] if e.session] == ["s6", "s7", "s8", "s9"]
        # missed events reach every subscriber whatever its filters: it lost events it may want
        notice = await next_event(ended_only)
        assert (notice.kind, notice.missed) == ("missed", 10 - 4)
        await hub.end("s9")
        got = await next_events(slow, 2)
        assert [e.kind for e in got] == ["transitioned", "ended"]
        # Filtering happens as it reads: it had not read past the created events the ring has
        # since dropped, so it is told of those two, then gets its ended event.
        again, ended = await next_events(ended_only, 2)
        assert (again.kind, again.missed) == ("missed", 2)
        assert ended.session is not None
        assert (ended.kind, ended.session.id) == ("ended", "s9")
        for events in (slow, fast, ended_only):
            await events.aclose()


async def test_resume_from_an_id_that_left_the_buffer_memory_only(clock: ManualClock) -> None:
    """Memory only, for the same reason as above: a small buffer needs the store's constructor."""
    async with SessionHub(MemoryStore(event_buffer=4), clock=clock) as hub:
        events = hub.subscribe()
        await hub.create("s0")
        first = await next_event(events)
        for i in range(1, 10):
            await hub.create(f"s{i}")
        await events.aclose()
        resumed = hub.subscribe(after=first.id)
        got = await next_events(resumed, 5)
        assert (got[0].kind, got[0].missed) == ("missed", 5)
        assert [e.session.id for e in got[1:] if e.session] == ["s6", "s7", "s8", "s9"]
        await resumed.aclose()


async def test_closing_the_hub_ends_subscriptions(make_hub: MakeHub) -> None:
    hub = await make_hub()
    events = hub.subscribe(kinds=["created"])
    reader = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    await hub.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(reader, 10)


@pytest.mark.parametrize(
    "filters",
    [
        {"kinds": "created"},
        {"kinds": ["created", "exploded"]},
        {"kinds": [1]},
        {"namespace": "a b"},
        {"session_id": ""},
        {"after": 5},
    ],
)
async def test_bad_filters_raise_at_once(hub: SessionHub, filters: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        hub.subscribe(**filters)  # type: ignore[arg-type]
