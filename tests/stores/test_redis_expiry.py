"""The Redis store's expiry and event paths that keep up with bursts (issue 12): ends finished
many per function call, events tailed without unpacking snapshots nobody reads."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import msgspec

from sessionhub import SessionEvent, SessionHub
from sessionhub.stores._resp import RedisClient
from sessionhub.stores.redis import _FINISH_SLICE, RedisStore

from ..redis_server import RedisServer

WAIT = 10.0  # a safety net for events that must come, not an assertion about speed


def _prefix() -> str:
    return f"e{uuid.uuid4().hex[:12]}:"


async def _next(events: AsyncIterator[SessionEvent]) -> SessionEvent:
    return await asyncio.wait_for(anext(events), WAIT)


async def test_finish_ends_over_several_calls_answers_each_end_in_order(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(redis_server.url, prefix=_prefix())
    async with SessionHub(store, auto_expire=False, idle_timeout=None) as hub:
        count = 2 * _FINISH_SLICE + 7  # three calls, the last one short
        ids = [f"s{i:04d}" for i in range(count)]
        await asyncio.gather(*(hub.create(sid) for sid in ids))
        now = time.time()
        claimed = [sid for i, sid in enumerate(ids) if i % 5]  # every fifth is left live
        for sid in claimed:
            assert await store.claim_end(sid, "expired", now, hub._terminate) is not None
        ends = [(sid, now + 600 if i % 2 else now) for i, sid in enumerate(ids)]
        finished = await store.finish_ends(ends, now, "ended")
        assert [s.id if s else None for s in finished] == [
            sid if i % 5 else None for i, sid in enumerate(ids)
        ]
        assert all(s.state == "ended" and s.ended_at == now for s in finished if s)
        assert await hub.count() == count - len(claimed)
        kept = [s.id for s in (await hub.find(include_ended=True, limit=1000)).items if s.ended_at]
        assert kept == [sid for i, sid in enumerate(ids) if i % 5 and i % 2]
        # A second finish of the same ends finds nothing to do.
        again = await store.finish_ends(ends[:3], now, "ended")
        assert again == [None, None, None]


async def test_finish_ends_leave_every_index_and_delete_every_key_of_each_session(
    redis_server: RedisServer, admin: RedisClient
) -> None:
    # The group's writes are gathered per key and written once (issue 12): each session's own
    # indexes (user, label) and keys (record, data, history) must still all go.
    prefix = _prefix()
    store = RedisStore(redis_server.url, prefix=prefix)
    async with SessionHub(store, auto_expire=False, idle_timeout=None) as hub:
        ids = [f"g{i}" for i in range(6)]
        for i, sid in enumerate(ids):
            await hub.create(sid, user_id=f"u{i % 2}", labels={"team": f"t{i % 3}"})
        now = time.time()
        for sid in ids:
            await store.data_set(sid, "k", b'"v"', None, now)
            await store.history_append(sid, "message", b'{"n":1}', now)
            assert await store.claim_end(sid, "expired", now, hub._terminate) is not None
            assert await _own_keys(admin, prefix, sid) == [1, 1, 1], sid
        finished = await store.finish_ends([(sid, now) for sid in ids], now, "ended")
        assert [s.id if s else None for s in finished] == ids
        for sid in ids:
            assert await _own_keys(admin, prefix, sid) == [0, 0, 0], sid
        assert (await hub.find(user_id="u0")).items == []
        assert (await hub.find(labels={"team": "t1"}, include_ended=True)).items == []
        assert await hub.count() == 0
        assert await admin.call("HLEN", f"{prefix}claims") == 0


async def _own_keys(admin: RedisClient, prefix: str, sid: str) -> list[int]:
    """Whether the session's record, data and history keys exist (1) or not (0)."""
    return [await admin.call("EXISTS", f"{prefix}{kind}:{{{sid}}}") for kind in ("s", "d", "h")]


async def test_events_nobody_reads_are_not_unpacked(
    redis_server: RedisServer, admin: RedisClient
) -> None:
    prefix = _prefix()
    store = RedisStore(redis_server.url, prefix=prefix)
    async with SessionHub(store, auto_expire=False, idle_timeout=None) as hub:
        await hub.create("a")
        before = store.events.last_id
        assert before is not None
        snapshot = msgspec.msgpack.encode(["id", "broken"])  # no namespace, state, ...
        await admin.call("XADD", f"{prefix}events", "*", "k", "updated", "a", "0", "s", snapshot)
        await hub.create("b")  # returns once the tail has passed the broken event too
        assert store.events.last_id != before
        assert store.damaged_records == 0  # tailed, never read: never unpacked
        readers = [hub.subscribe(after=before), hub.subscribe(after=before)]
        for events in readers:
            event = await _next(events)  # the broken one is passed over
            assert event.kind == "created"
            assert event.session is not None
            assert event.session.id == "b"
            await events.aclose()
        assert store.damaged_records == 1  # unpacked once, whoever read it first
