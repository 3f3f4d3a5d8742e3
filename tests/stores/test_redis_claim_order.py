"""The Redis store claims expired sessions earliest first by their real deadline.

Activity moves a session's deadline later without rewriting the deadline index (the claim finds
the real deadline and queues the entry again), so an entry can sit earlier than its session is
due. These tests check, through ``claim_expired`` on a real Redis, that the order of claims (within
one call and across calls) follows the real deadlines all the same, and that the index is left
with one entry per waiting session at the score its record names.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator

import pytest

from sessionhub import Session
from sessionhub.stores import Change, CreateRules
from sessionhub.stores._resp import RedisClient
from sessionhub.stores.redis import RedisStore

from ..redis_server import RedisServer
from .redis_records import active_session

MOVES = {"ACTIVE": "TERMINATING"}
T0 = 1_750_000_000.0


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    opened = RedisStore(redis_server.url, prefix=f"o{uuid.uuid4().hex[:12]}:")
    await opened.open()
    yield opened
    await opened.close()


def _session(sid: str, idle: float) -> Session:
    return active_session(sid, created_at=T0, idle_timeout=idle)


async def _queued(admin: RedisClient, store: RedisStore) -> dict[str, float]:
    flat = await admin.call("ZRANGE", store.prefix + "deadlines", 0, -1, "WITHSCORES")
    return {sid: float(score) for sid, score in zip(flat[::2], flat[1::2], strict=True)}


async def _check_index(admin: RedisClient, store: RedisStore, waiting: dict[str, float]) -> None:
    """Each waiting session (id → real deadline) has one entry, at its ``dq``, not after its
    deadline; nothing else is queued."""
    queued = await _queued(admin, store)
    assert sorted(queued) == sorted(waiting)
    for sid, score in queued.items():
        dq = await admin.call("HGET", f"{store.prefix}s:{{{sid}}}", "dq")
        assert float(dq) == score
        assert score <= waiting[sid]


async def test_a_moved_entry_due_earlier_than_the_next_exact_one_is_claimed_before_it(
    store: RedisStore, admin: RedisClient
) -> None:
    # Queued at 1.0, 1.2, 2.0; the touch moves "a" to 1.5 without writing the index: the real
    # order is c (1.2), a (1.5), b (2.0), the queued one a, c, b.
    for sid, idle in (("a", 1.0), ("b", 2.0), ("c", 1.2)):
        await store.create(_session(sid, idle), CreateRules())
    touched = await store.modify("a", Change(now=T0 + 0.5, touch=True))
    assert touched.expires_at == T0 + 1.5
    assert await _queued(admin, store) == {"a": T0 + 1.0, "b": T0 + 2.0, "c": T0 + 1.2}

    claimed = await store.claim_expired(T0 + 3, MOVES, 10)
    assert [s.id for s in claimed] == ["c", "a", "b"]
    assert all(s.state == "TERMINATING" and s.end_reason == "expired" for s in claimed)
    assert await _queued(admin, store) == {}


async def test_across_calls_the_waiting_entries_keep_their_place(
    store: RedisStore, admin: RedisClient
) -> None:
    for sid, idle in (("a", 1.0), ("b", 2.0), ("c", 1.2), ("d", 4.0)):
        await store.create(_session(sid, idle), CreateRules())
    await store.modify("a", Change(now=T0 + 0.5, touch=True))  # due at 1.5
    await store.modify("d", Change(now=T0 + 0.5, touch=True))  # due at 4.5: not yet

    first = await store.claim_expired(T0 + 3, MOVES, 2)
    assert [s.id for s in first] == ["c", "a"]
    await _check_index(admin, store, {"b": T0 + 2.0, "d": T0 + 4.5})
    second = await store.claim_expired(T0 + 3, MOVES, 2)
    assert [s.id for s in second] == ["b"]
    await _check_index(admin, store, {"d": T0 + 4.5})
    assert await store.claim_expired(T0 + 3, MOVES, 2) == []
    assert await store.next_deadline() == T0 + 4.5


async def test_claims_follow_real_deadlines_while_activity_moves_them(
    store: RedisStore, admin: RedisClient
) -> None:
    """A model of the deadlines against the store: sessions touched (later) and given shorter
    timeouts (earlier) between claims of small batches; each batch is the earliest due."""
    rng = random.Random(5)
    deadlines: dict[str, float] = {}
    for i in range(120):
        sid = f"s{i:03d}"
        session = await store.create(_session(sid, rng.uniform(0.1, 3.0)), CreateRules())
        assert session.expires_at is not None
        deadlines[sid] = session.expires_at
    now = T0
    claimed_before: list[tuple[float, str]] = []
    for step in range(1000):  # activity for the first 40 steps, then every session comes due
        if not deadlines:
            break
        now += rng.uniform(0.0, 0.15)
        for sid in rng.sample(sorted(deadlines), min(8, len(deadlines)) if step < 40 else 0):
            if rng.random() < 0.8:
                changed = await store.modify(sid, Change(now=now, touch=True))
            else:
                shorter = Change(now=now, idle_timeout=rng.uniform(0.01, 0.3))
                changed = await store.modify(sid, shorter)
            assert changed.expires_at is not None
            deadlines[sid] = changed.expires_at
        limit = rng.choice([1, 2, 5])
        claimed = await store.claim_expired(now, MOVES, limit)
        due = sorted((at, sid) for sid, at in deadlines.items() if at <= now)
        got = [(deadlines[s.id], s.id) for s in claimed]
        assert [s.expires_at for s in claimed] == [at for at, _ in got]
        assert [at for at, _ in got] == [at for at, _ in due[:limit]]
        for _, sid in got:
            del deadlines[sid]
        claimed_before += got
        await _check_index(admin, store, deadlines)
    # Every session was claimed, once.
    assert sorted(sid for _, sid in claimed_before) == [f"s{i:03d}" for i in range(120)]
