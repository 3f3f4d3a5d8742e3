"""Expiry of many sessions at once: concurrent hooks up to ``hook_concurrency``, ends finished in
groups, parents after their children, and nothing stranded by a close in the middle of a batch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from sessionhub import ManualClock, Session, SessionHub, ValidationError
from sessionhub.stores import Store

from .helpers import EVENT_WAIT, HookLog, MakeHub, next_events


class Concurrency:
    """A hook that records how many calls run at once (each yields to the loop a few times)."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.calls: list[str] = []

    async def __call__(self, session: Session, reason: str) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        self.calls.append(session.id)
        try:
            for _ in range(5):
                await asyncio.sleep(0)
        finally:
            self.running -= 1


@pytest.mark.parametrize("bound", [1, 3])
async def test_hooks_of_a_batch_run_concurrently_up_to_the_bound(
    make_hub: MakeHub, clock: ManualClock, bound: int
) -> None:
    hub = await make_hub(hook_concurrency=bound)
    hook = Concurrency()
    hub.on_end(hook)
    for i in range(12):
        await hub.create(f"s{i:02d}", ttl=10)
    clock.advance(11)
    assert await hub.expire_due() == 12
    assert hook.most == bound
    assert sorted(hook.calls) == [f"s{i:02d}" for i in range(12)]  # each exactly once
    assert await hub.count() == 0
    assert (await hub.metrics()).ended_total == {"expired": 12}


async def test_hook_concurrency_is_validated() -> None:
    for bad in (0, -1, 1.5, "8", True):
        with pytest.raises(ValidationError):
            SessionHub(hook_concurrency=bad)  # type: ignore[arg-type]


async def test_a_slow_hook_does_not_hold_up_the_others(
    make_hub: MakeHub, clock: ManualClock
) -> None:
    hub = await make_hub(hook_concurrency=2)
    release = asyncio.Event()

    @hub.on_end
    async def slow_for_one(session: Session, reason: str) -> None:
        if session.id == "slow":
            await release.wait()

    await hub.create("slow", ttl=5)
    for i in range(6):
        await hub.create(f"quick-{i}", ttl=10)
    ended = hub.subscribe(kinds=["ended"])
    clock.advance(11)
    expiring = asyncio.create_task(hub.expire_due())
    # The other six end (hooks run and finished) while the slow one still holds its slot.
    events = await next_events(ended, 6)
    assert {e.session.id for e in events if e.session} == {f"quick-{i}" for i in range(6)}
    assert not expiring.done()
    release.set()
    assert await asyncio.wait_for(expiring, EVENT_WAIT) == 7
    (last,) = await next_events(ended, 1)
    assert last.session is not None
    assert last.session.id == "slow"
    await ended.aclose()


async def test_a_hanging_hook_times_out_for_its_session_alone(
    make_hub: MakeHub, clock: ManualClock, hook_log: HookLog
) -> None:
    hub = await make_hub(hook_timeout=0.05, hook_concurrency=4)
    never = asyncio.Event()

    @hub.on_end
    async def hang_for_one(session: Session, reason: str) -> None:
        if session.id == "hangs":
            await never.wait()

    hub.on_end(hook_log)  # registered second: still runs for the one whose first hook timed out
    await hub.create("hangs", ttl=10)
    for i in range(5):
        await hub.create(f"fine-{i}", ttl=10)
    clock.advance(11)
    assert await asyncio.wait_for(hub.expire_due(), EVENT_WAIT) == 6
    assert sorted(hook_log.ids) == sorted(["hangs", *(f"fine-{i}" for i in range(5))])
    snap = await hub.metrics()
    assert snap.hook_failures_total == 1
    assert await hub.count() == 0


async def test_a_parent_in_a_batch_ends_after_its_children_in_the_same_batch(
    make_hub: MakeHub, clock: ManualClock, hook_log: HookLog
) -> None:
    hub = await make_hub(hook_concurrency=8)
    hub.on_end(hook_log)
    # The parents come first in the deadline order, their children after them.
    await hub.create("p1", ttl=10)
    await hub.create("p2", ttl=10)
    for i in range(3):
        await hub.create(f"p1-c{i}", parent_id="p1", ttl=11)
        await hub.create(f"p2-c{i}", parent_id="p2", ttl=11)
    await hub.create("p1-c0-g", parent_id="p1-c0", ttl=12)
    await hub.create("loner", ttl=10)
    ended = hub.subscribe(kinds=["ended"])
    clock.advance(13)
    assert await hub.expire_due() == 10
    order = [e.session.id for e in await next_events(ended, 10) if e.session]
    for child in order:
        parent = child.rsplit("-", 1)[0]
        if "-" in child:  # an ended event: the parent's comes after the child's
            assert order.index(child) < order.index(parent)
    assert order.index("p1-c0-g") < order.index("p1-c0") < order.index("p1")
    hooks = hook_log.ids
    assert sorted(hooks) == sorted(order)  # each hook exactly once
    assert hooks.index("p1-c0-g") < hooks.index("p1-c0") < hooks.index("p1")
    assert set(hook_log.reasons.values()) == {"expired"}
    await ended.aclose()


@pytest.mark.parametrize("batch", [1, 2])
async def test_a_parent_ends_after_its_children_across_batches(
    make_hub: MakeHub, clock: ManualClock, hook_log: HookLog, batch: int
) -> None:
    # The parent is due first; its children are due later (in later batches, or not at all): they
    # are ended first, whether the parent's batch ends them or a later batch has claimed them.
    hub = await make_hub(expiry_batch=batch, hook_concurrency=4)
    hub.on_end(hook_log)
    await hub.create("parent", ttl=10)
    await hub.create("child-due", parent_id="parent", ttl=11)
    await hub.create("child-later", parent_id="parent", ttl=1000)
    await hub.create("child-due-g", parent_id="child-due", ttl=12)
    ended = hub.subscribe(kinds=["ended"])
    clock.advance(13)
    assert await hub.expire_due() >= 1
    order = [e.session.id for e in await next_events(ended, 4) if e.session]
    assert order[-1] == "parent"
    assert order.index("child-due-g") < order.index("child-due")
    assert sorted(hook_log.ids) == sorted(order)  # each hook exactly once
    assert hook_log.reasons["parent"] == "expired"
    assert hook_log.reasons["child-later"] == "parent_ended"
    assert await hub.count() == 0
    await ended.aclose()


async def test_close_in_the_middle_of_a_batch_strands_nothing(
    make_store: Callable[[], Store],
) -> None:
    """On the system clock (the expiry task runs): nothing asserts how fast, only that every
    claimed end is finished before close returns."""
    store = make_store()
    hub = SessionHub(store, poll_interval=60, hook_concurrency=2, idle_timeout=None)
    started, release = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    @hub.on_end
    async def blocked(session: Session, reason: str) -> None:
        calls.append(session.id)
        started.set()
        await release.wait()

    await hub.start()
    due = time.time() + 0.3  # one deadline for all, so that they are claimed together
    for i in range(10):
        await hub.create(f"s{i}", ttl=max(due - time.time(), 0.001))
    await asyncio.wait_for(started.wait(), EVENT_WAIT)  # a batch is in its hooks now
    closing = asyncio.create_task(hub.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # waiting for the batch, not cutting it short
    release.set()
    await asyncio.wait_for(closing, EVENT_WAIT)
    assert len(calls) == len(set(calls)) >= 1
    # Open again, without an expiry task: each session either ended (its hook ran once) or is
    # live and unclaimed, for a later pass; none is left claimed and half-ended.
    again = SessionHub(store, auto_expire=False)
    await again.start()
    try:
        left = [await again.store.get(f"s{i}") for i in range(10)]
        live = {s.id for s in left if s is not None}
        assert all(s.end_reason is None for s in left if s is not None)
        assert live.isdisjoint(calls)
        assert live | set(calls) == {f"s{i}" for i in range(10)}
        assert await again.count() == len(live)
    finally:
        await again.close()
