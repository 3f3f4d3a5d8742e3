"""Concurrency: racing callers lose no update, end each session once, and never break a limit or a
unique label. (Stores whose operations suspend really interleave here; every store must hold.)"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from sessionhub import (
    CapacityExceeded,
    DuplicateSession,
    Limits,
    ManualClock,
    QuotaExceeded,
    Session,
    SessionHub,
    TooManyRequests,
    VersionConflict,
)

from .helpers import MakeHub, next_events

N = 50


async def test_concurrent_increments_lose_nothing(hub: SessionHub) -> None:
    session = await hub.create()
    results = await asyncio.gather(*(hub.incr(session.id, "n") for _ in range(N)))
    assert sorted(results) == list(range(1, N + 1))  # each increment saw its own new value
    await asyncio.gather(*(hub.incr(session.id, "m", 3) for _ in range(N)))
    after = await hub.get(session.id)
    assert dict(after.counters) == {"n": N, "m": 3 * N}
    assert after.version == session.version + 2 * N


async def test_concurrent_touches_and_requests(hub: SessionHub) -> None:
    session = await hub.create()

    async def request() -> None:
        async with hub.track_request(session.id):
            await asyncio.sleep(0)

    await asyncio.gather(*(request() for _ in range(N)), *(hub.touch(session.id) for _ in range(N)))
    after = await hub.get(session.id)
    assert after.active_requests == 0
    assert after.version == session.version + 3 * N


async def test_end_racing_expiry_ends_once(make_hub: MakeHub, clock: ManualClock) -> None:
    hub = await make_hub(idle_timeout=10)
    calls: Counter[str] = Counter()
    reasons: dict[str, set[str]] = {}

    async def hook(session: Session, reason: str) -> None:
        await asyncio.sleep(0)  # let the racers interleave while the cleanup runs
        calls[session.id] += 1
        reasons.setdefault(session.id, set()).add(reason)

    hub.on_end(hook)
    ids = [(await hub.create()).id for _ in range(20)]
    ended = hub.subscribe(kinds=["ended"])
    clock.advance(10)
    results = await asyncio.gather(
        *(hub.end(sid, "manual") for sid in ids),
        hub.expire_due(),
        *(hub.end(sid, "manual") for sid in reversed(ids)),
        hub.expire_due(),
    )
    # The hub's own expiry task races too, and may still be cleaning up what it claimed: wait
    # for every session's ended event before counting.
    events = await next_events(ended, len(ids))
    await ended.aclose()
    assert sorted(e.session.id for e in events if e.session) == sorted(ids)
    ends = [r for i, r in enumerate(results) if i not in (len(ids), len(results) - 1)]
    expired = results[len(ids)] + results[-1]
    assert calls == dict.fromkeys(ids, 1)
    assert all(len(r) == 1 for r in reasons.values())
    manual = [sid for sid, r in reasons.items() if r == {"manual"}]
    assert sum(ends) == len(manual)  # True exactly for the calls whose hook said "manual"
    assert expired <= len(ids) - len(manual)  # the rest expired (some, maybe, by the task)
    assert await hub.count() == 0
    snap = await hub.metrics()
    assert sum(snap.ended_total.values()) == len(ids)
    assert snap.hook_calls_total == len(ids)


async def test_concurrent_ends_of_parent_and_children(hub: SessionHub) -> None:
    calls: Counter[str] = Counter()

    async def hook(session: Session, reason: str) -> None:
        await asyncio.sleep(0)
        calls[session.id] += 1

    hub.on_end(hook)
    parent = await hub.create("parent")
    kids = [(await hub.create(f"kid{i}", parent_id=parent.id)).id for i in range(10)]
    results = await asyncio.gather(hub.end(parent.id), *(hub.end(k) for k in kids))
    assert results[0] is True
    assert calls == dict.fromkeys(["parent", *kids], 1)
    assert await hub.count() == 0


async def test_concurrent_creates_with_one_unique_label(make_hub: MakeHub) -> None:
    hub = await make_hub(unique_labels=["role"])
    results = await asyncio.gather(
        *(hub.create(labels={"role": "auth"}) for _ in range(N)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, Session)]
    losers = [r for r in results if not isinstance(r, Session)]
    assert len(winners) == 1
    assert all(isinstance(r, DuplicateSession) for r in losers)
    assert [s.id for s in (await hub.find(labels={"role": "auth"})).items] == [winners[0].id]
    assert (await hub.metrics()).created_total == 1


async def test_concurrent_creates_with_one_id(hub: SessionHub) -> None:
    results = await asyncio.gather(
        *(hub.create("same", details={"n": i}) for i in range(N)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, Session)]
    assert len(winners) == 1
    assert sum(isinstance(r, DuplicateSession) for r in results) == N - 1
    assert await hub.get("same") == winners[0]


async def test_concurrent_updates_with_expected_version(hub: SessionHub) -> None:
    session = await hub.create()
    version = session.version
    for round_ in range(5):
        results = await asyncio.gather(
            *(
                hub.update(session.id, details={"winner": i}, expected_version=version)
                for i in range(10)
            ),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, Session)]
        assert len(winners) == 1, f"round {round_}"
        assert sum(isinstance(r, VersionConflict) for r in results) == 9
        current = await hub.get(session.id)
        assert current == winners[0]
        assert current.version == version + 1
        version = current.version


async def test_concurrent_compare_and_set_on_data(hub: SessionHub) -> None:
    session = await hub.create()
    data = hub.data(session.id)
    results = await asyncio.gather(
        *(data.set("lock", i, expected_version=0) for i in range(N)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert sum(isinstance(r, VersionConflict) for r in results) == N - 1
    assert await data.entry("lock") == winners[0]


async def test_concurrent_history_appends_get_distinct_seqs(hub: SessionHub) -> None:
    session = await hub.create()
    log = hub.history(session.id)
    records = await asyncio.gather(*(log.append("call", i) for i in range(N)))
    assert sorted(r.seq for r in records) == list(range(1, N + 1))
    assert await log.count("call") == N
    assert sorted(r.payload for r in await log.read(limit=N)) == list(range(N))


async def test_concurrent_creates_respect_capacity_and_quota(make_hub: MakeHub) -> None:
    hub = await make_hub(limits=Limits(max_sessions=7, max_sessions_per_user=3))
    results = await asyncio.gather(
        *(hub.create(user_id="ada") for _ in range(10)),
        *(hub.create() for _ in range(10)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Session) for r in results) == 7
    assert sum(isinstance(r, QuotaExceeded) for r in results[:10]) == 7
    assert all(isinstance(r, (Session, CapacityExceeded)) for r in results[10:])
    assert await hub.count() == 7
    assert await hub.count(user_id="ada") == 3


async def test_concurrent_requests_respect_the_limit(make_hub: MakeHub) -> None:
    hub = await make_hub(limits=Limits(max_requests_per_session=3))
    session = await hub.create()
    release = asyncio.Event()
    settled = asyncio.Event()  # every request has entered or been refused
    inside = refused = 0

    def settle() -> None:
        if inside + refused == 10:
            settled.set()

    async def request() -> None:
        nonlocal inside, refused
        try:
            async with hub.track_request(session.id):
                inside += 1
                settle()
                await release.wait()
        except TooManyRequests:
            refused += 1
            settle()

    tasks = [asyncio.create_task(request()) for _ in range(10)]
    await asyncio.wait_for(settled.wait(), 10)
    assert (inside, refused) == (3, 7)
    assert (await hub.get(session.id)).active_requests == 3
    release.set()
    await asyncio.gather(*tasks)
    assert (await hub.get(session.id)).active_requests == 0


@pytest.mark.parametrize("rounds", [3])
async def test_transition_races_end(hub: SessionHub, rounds: int) -> None:
    for _ in range(rounds):
        session = await hub.create()
        results = await asyncio.gather(
            hub.transition(session.id, "SPAWN"), hub.end(session.id), return_exceptions=True
        )
        assert results[1] is True
        assert await hub.exists(session.id) is False


async def test_expire_due_returns_once_everything_due_has_ended(
    make_hub: MakeHub, clock: ManualClock
) -> None:
    """Another expiry pass (the hub's own task, or a second call) may have claimed the due
    sessions and still be running their hooks: ``expire_due`` must not return before they end."""
    hub = await make_hub(idle_timeout=5)
    release = asyncio.Event()
    started = asyncio.Event()
    reasons: list[str] = []

    async def slow(session: Session, reason: str) -> None:
        started.set()
        await release.wait()
        reasons.append(reason)

    hub.on_end(slow)
    for _ in range(3):
        await hub.create()
    clock.advance(5)
    other_pass = asyncio.create_task(hub.expire_due())
    # One pass (that one, or the hub's task that the creates woke) claimed all three, and is
    # held in the first hook.
    await asyncio.wait_for(started.wait(), 10)
    this_pass = asyncio.create_task(hub.expire_due())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not this_pass.done()  # it waits for the other pass instead of returning early
    release.set()
    assert await asyncio.wait_for(this_pass, 10) == 0  # nothing was left for it to claim
    assert await hub.count() == 0  # but on return, whatever was due has ended
    assert reasons == ["expired"] * 3
    assert await asyncio.wait_for(other_pass, 10) in (0, 3)
