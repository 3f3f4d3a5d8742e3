"""Batched expiry on the shared stores: three hubs with concurrent hooks on one Redis or one SQLite
file end every session exactly once, parents after children; ``finish_ends`` and
``having_children`` answer like their one-session counterparts."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from sessionhub import Session, SessionHub
from sessionhub.stores import Store
from sessionhub.stores.redis import RedisStore
from sessionhub.stores.sqlite import SQLiteStore

from ..redis_server import RedisServer

WAIT = 120.0  # a safety net for a loaded machine, not a speed assertion


@pytest.fixture(params=["redis", "sqlite"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """A factory of store instances that all share one Redis prefix or one SQLite file."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        prefix = f"x{uuid.uuid4().hex[:10]}:"
        return lambda: RedisStore(server.url, prefix=prefix)
    path = tmp_path / "shared.db"
    return lambda: SQLiteStore(path)


async def test_three_hubs_with_concurrent_hooks_end_each_session_once(
    shared: Callable[[], Store],
) -> None:
    hubs = [
        SessionHub(shared(), idle_timeout=None, expiry_batch=40, hook_concurrency=8)
        for _ in range(3)
    ]
    calls: Counter[str] = Counter()
    running = most = 0
    order: list[str] = []
    ids = [f"s{i:03d}" for i in range(240)]
    ids += [f"p{p}-c{c}" for p in range(5) for c in range(3)] + [f"p{p}" for p in range(5)]
    all_called = asyncio.Event()

    async def hook(session: Session, reason: str) -> None:
        nonlocal running, most
        calls[session.id] += 1
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.001)
        finally:
            running -= 1
        order.append(session.id)
        if len(order) >= len(ids):
            all_called.set()

    for hub in hubs:
        hub.on_end(hook)
        await hub.start()
    try:
        due = time.time() + 0.5
        for i in range(240):
            await hubs[i % 3].create(ids[i], ttl=max(due + i / 480 - time.time(), 0.001))
        # Parents and children created by different hubs, with no deadline until all exist;
        # then all due together.
        family = []
        for p in range(5):
            family.append(await hubs[p % 3].create(f"p{p}", idle_timeout=None))
            for c in range(3):
                child = f"p{p}-c{c}"
                family.append(await hubs[(p + c + 1) % 3].create(child, parent_id=f"p{p}"))
        for k, member in enumerate(family):
            ttl = time.time() - member.created_at + 0.2
            await hubs[k % 3].update(member.id, ttl=ttl)
        await asyncio.wait_for(all_called.wait(), WAIT)
        await asyncio.sleep(0.2)  # a second call for any session would show up now
        assert sorted(calls) == sorted(ids)
        assert set(calls.values()) == {1}  # exactly once across the three hubs
        assert most > 1  # hooks did run concurrently
        # The last ends are finished just after their hooks return: wait for them, bounded.
        for _ in range(int(WAIT / 0.05)):
            if not await hubs[0].count():
                break
            await asyncio.sleep(0.05)
        assert await hubs[0].count() == 0
        for p in range(5):  # each parent's hook ran after its children's
            assert all(order.index(f"p{p}-c{c}") < order.index(f"p{p}") for c in range(3))
    finally:
        for hub in hubs:
            await hub.close()


async def test_finish_ends_and_having_children_answer_like_the_single_calls(
    shared: Callable[[], Store],
) -> None:
    hub = SessionHub(shared(), auto_expire=False, idle_timeout=None)
    await hub.start()
    store = hub.store
    try:
        await hub.create("a")
        await hub.create("b")
        await hub.create("c", parent_id="a")
        await hub.create("lone")
        assert await store.having_children(["a", "b", "c", "nope"]) == {"a"}
        assert await store.having_children([]) == set()
        now = time.time()
        moves = hub._terminate
        assert await store.claim_end("b", "expired", now, moves) is not None
        assert await store.claim_end("c", "expired", now, moves) is not None
        finished = await store.finish_ends(
            [("c", now + 600), ("b", now), ("lone", now), ("nope", now)], now, "ended"
        )
        assert [s.id if s else None for s in finished] == ["c", "b", None, None]
        assert all(s is None or s.ended_at == now for s in finished)
        kept = await store.get("c")  # retained until its retain_until
        assert kept is not None
        assert kept.ended_at == now
        assert await store.get("b") is None  # retention over: gone
        lone = await store.get("lone")
        assert lone is not None
        assert lone.live  # not claimed: untouched
        assert lone.end_reason is None
        assert await store.having_children(["a"]) == set()  # the ended child left the index
        assert await store.finish_ends([], now, "ended") == []
    finally:
        await hub.close()
