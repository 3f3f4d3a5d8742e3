"""Listings and expiry stay exact at the sizes where a store changes its structures.

The memory store keeps a key's sessions as one id, then a sorted list, then a ``SortedList`` (past
64); a namespace's listing is kept in sorted runs of 4,096 and compacted once most of its ids have
left; deadlines sit in buckets of 1/16 s that are poured into an exact heap as they come due.
These tests walk every store across those sizes and compare what the hub lists, counts and expires
with a plain model, through the public interface only.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from sessionhub import ManualClock, SessionHub
from sessionhub.stores.memory import MemoryStore

from .helpers import HookLog, MakeHub


async def _listed(hub: SessionHub, **query: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = await hub.find(limit=97, cursor=cursor, **query)
        ids += (session.id for session in page.items)
        if page.cursor is None:
            return ids
        cursor = page.cursor


async def _check(hub: SessionHub, live: dict[str, tuple[str | None, str | None]]) -> None:
    """``live``: id → (user, tier label) of every live session in namespace ``a``."""
    assert await _listed(hub, namespace="a") == sorted(live)
    assert await hub.count(namespace="a") == len(live)
    for user in ("u1", "u2"):
        owned = sorted(sid for sid, (owner, _) in live.items() if owner == user)
        assert await _listed(hub, user_id=user) == owned
        assert await hub.count(user_id=user) == len(owned)
    tiered = sorted(sid for sid, (_, tier) in live.items() if tier == "gold")
    assert await _listed(hub, labels={"tier": "gold"}) == tiered


async def test_listings_stay_exact_as_sessions_come_and_go(make_hub: MakeHub) -> None:
    hub = await make_hub(idle_timeout=None)
    # The memory store sorts a namespace's ids 4,096 at a time and compacts past 4,096 stale
    # ids: it gets enough sessions to cross both; the shared stores, slower to fill, fewer.
    n = 9000 if isinstance(hub.store, MemoryStore) else 1200
    rng = random.Random(13)
    live: dict[str, tuple[str | None, str | None]] = {}
    for i in range(n):
        user = "u1" if i < 150 else "u2" if i % 50 == 0 else None
        tier = "gold" if i % 3 == 0 else None
        sid = f"s{rng.randrange(10**9):09d}-{i}"
        await hub.create(sid, namespace="a", user_id=user, labels={"tier": tier} if tier else None)
        live[sid] = (user, tier)
    await hub.create("other-namespace", namespace="b", user_id="u3")
    await _check(hub, live)

    ending = rng.sample(sorted(live), n - 50)  # most of them: the listing compacts
    for ended, sid in enumerate(ending):
        assert await hub.end(sid)
        del live[sid]
        if ended in (100, 140, 1000, 5000):
            await _check(hub, live)
    await _check(hub, live)

    for sid in ending[:60]:  # the same ids again, now in a listing that once held them
        await hub.create(sid, namespace="a", user_id="u1", labels={"tier": "gold"})
        live[sid] = ("u1", "gold")
    await _check(hub, live)
    assert await _listed(hub) == sorted([*live, "other-namespace"])


async def _expire_in_steps(hub: SessionHub, clock: ManualClock) -> list[list[float]]:
    """Move deadlines later and earlier while the clock runs; check that each ``expire_due``
    ends exactly the sessions due, and return the deadlines of those it ended, in end order."""
    hook_log = HookLog()
    hub.on_end(hook_log)
    rng = random.Random(7)
    deadlines: dict[str, float] = {}
    for i in range(300):
        idle = rng.choice([0.01, 0.02, 0.05, 0.3, 1.0, 2.5]) + rng.random() / 100
        session = await hub.create(f"s{i:03d}", idle_timeout=idle)
        assert session.expires_at is not None
        deadlines[session.id] = session.expires_at
    ended: list[list[float]] = []
    for _ in range(60):
        clock.advance(rng.uniform(0.0, 0.08))
        for sid in rng.sample(sorted(deadlines), 10):  # moved later by a touch
            deadlines[sid] = (await hub.touch(sid)).expires_at or 0.0
        for sid in rng.sample(sorted(deadlines), 3):  # moved earlier by a shorter timeout
            updated = await hub.update(sid, idle_timeout=rng.choice([0.005, 0.04]))
            deadlines[sid] = updated.expires_at or 0.0
        await hub.expire_due()
        due = sorted(sid for sid, deadline in deadlines.items() if deadline <= clock())
        newly = hook_log.ids[sum(map(len, ended)) :]
        assert sorted(newly) == due
        ended.append([deadlines.pop(sid) for sid in newly])
    assert any(ended), "the clock moved past some deadlines"
    assert await hub.count() == len(deadlines)
    return ended


async def test_expiry_is_exact_across_buckets(make_hub: MakeHub, clock: ManualClock) -> None:
    await _expire_in_steps(await make_hub(idle_timeout=None, expiry_batch=7), clock)


async def test_expiry_is_earliest_first_across_batches(
    make_hub: MakeHub, clock: ManualClock, request: pytest.FixtureRequest
) -> None:
    hub = await make_hub(idle_timeout=None, expiry_batch=7)
    # The cluster store splits a claim over its buckets by the deadlines as queued: a bucket whose
    # first entries have moved gets a share that its earliest real deadlines may not deserve.
    if type(hub.store).__name__ == "RedisClusterStore":
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="known: the cluster store claims each bucket's earliest due in proportional "
                "shares, so across buckets a later deadline can end before an earlier one",
            )
        )
    for step in await _expire_in_steps(hub, clock):
        assert step == sorted(step)  # earliest first, also across batches of 7
