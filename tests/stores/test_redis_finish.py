"""Ends finished by the store that claimed them, from the record its claim returned (issue 12:
``finish`` no longer reads the record back nor packs the ``ended`` snapshot in Lua), and the census
kept with zero counts (no ``HDEL`` when a count drops to 0). What a caller, a subscriber or another
store sees must be exactly what an end finished from the stored record leaves."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from sessionhub import Session, SessionHub
from sessionhub.stores import CreateRules
from sessionhub.stores._resp import RedisClient
from sessionhub.stores.redis import RedisStore

from ..redis_server import RedisServer
from .redis_records import (
    MOVES,
    NOW,
    active_session,
    opened_stores,
    record_fields,
    unique_prefix,
    without_incarnation,
)

RULES = CreateRules(unique_labels=("role",))


def _session(sid: str, role: str | None = None) -> Session:
    return active_session(
        sid,
        idle_timeout=60.0,
        user_id="u1",
        labels={"team": "red", "role": role or f"r-{sid}"},
        details={"plan": "pro"},
        counters={"n": 3},
    )


async def _ended_snapshots(raw: RedisClient, prefix: str) -> dict[str, dict[str, str]]:
    """The 'ended' events' snapshots in the stream, by session id."""
    out: dict[str, dict[str, str]] = {}
    for _, values in await raw.call("XRANGE", prefix + "events", "-", "+"):
        if values[1] == b"ended":
            flat = msgspec.msgpack.decode(values[5], type=list[str])
            fields = without_incarnation(dict(zip(flat[::2], flat[1::2], strict=True)))
            assert fields["id"] not in out, "one 'ended' event per session"
            out[fields["id"]] = fields
    return out


def _as(fields: dict[str, str], sid: str) -> dict[str, str]:
    return {**fields, "id": sid, "l:role": f"r-{sid}"}


@pytest.mark.parametrize("retain", [True, False])
@pytest.mark.parametrize("group", [False, True])
async def test_an_end_finished_by_its_claimer_equals_one_finished_by_another_store(
    redis_server: RedisServer, admin: RedisClient, raw: RedisClient, retain: bool, group: bool
) -> None:
    prefix = unique_prefix("f")
    claimer, other = await opened_stores(redis_server.url, prefix, 2)
    try:
        for sid in ("mine", "theirs"):
            await claimer.create(_session(sid), RULES)
            claimed = await claimer.claim_end(sid, "ended", NOW + 1, MOVES)
            assert claimed is not None
            assert claimed.state == "TERMINATING"
        assert claimed is not None
        # The claimer finishes from the record its claim returned; the other store from Redis's.
        assert "mine" in claimer._held
        assert "theirs" not in other._held
        until = NOW + 1e9 if retain else NOW  # retained past the hub clock's now
        if group:
            [mine] = await claimer.finish_ends([("mine", until)], NOW + 2, "CLOSED")
            [theirs] = await other.finish_ends([("theirs", until)], NOW + 2, "CLOSED")
        else:
            mine = await claimer.finish_end("mine", NOW + 2, "CLOSED", until)
            theirs = await other.finish_end("theirs", NOW + 2, "CLOSED", until)
        assert mine is not None
        assert theirs is not None
        expected = msgspec.structs.replace(
            claimed,  # "theirs" as claimed: what an end changes, changed
            id="mine",
            labels={"team": "red", "role": "r-mine"},
            state="CLOSED",
            updated_at=NOW + 2,
            ended_at=NOW + 2,
            expires_at=None,
            active_requests=0,
            retention=until - (NOW + 2) if retain else None,  # a kept record states its retention
            version=claimed.version + 1,
        )
        assert mine == expected
        assert msgspec.structs.replace(theirs, id="mine", labels=mine.labels) == mine
        assert await claimer.get("mine") == (mine if retain else None)
        assert await other.get("theirs") == (theirs if retain else None)
        if retain:
            assert _as(await record_fields(admin, prefix, "theirs"), "mine") == await record_fields(
                admin, prefix, "mine"
            )
        snapshots = await _ended_snapshots(raw, prefix)
        assert _as(snapshots["theirs"], "mine") == snapshots["mine"]
        assert snapshots["mine"]["st"] == "CLOSED"
        assert "cb" not in snapshots["mine"]
        # Every index left, the unique labels free again, no claim and no count left.
        for store in (claimer, other):
            hub = SessionHub(store, auto_expire=False)
            assert await hub.count() == 0
            assert await hub.count(user_id="u1") == 0
            assert await hub.count(labels={"team": "red"}) == 0
            ended = (await hub.find(include_ended=True)).items
            assert sorted(s.id for s in ended) == (["mine", "theirs"] if retain else [])
            assert await store.census() == {}
        assert await admin.call("HLEN", prefix + "claims") == 0
        assert await admin.call("ZCARD", prefix + "deadlines") == 0
        again = _session("again", role="r-mine")
        assert await claimer.create(again, RULES) == again
    finally:
        for store in (claimer, other):
            await store.close()


async def test_an_end_taken_over_elsewhere_is_finished_once(
    redis_server: RedisServer, raw: RedisClient
) -> None:
    """The claimer stops heartbeating (its lease runs out) but is not dead: another store takes
    the claim over. Whichever finishes first ends the session; the other's finish does nothing,
    though the slow claimer still holds the record its claim returned."""
    prefix = unique_prefix("f")
    slow, taker = await opened_stores(redis_server.url, prefix, 2, claim_lease=0.3)
    try:
        for sid in ("taker-first", "slow-first"):
            await slow.create(_session(sid), RULES)
            assert await slow.claim_end(sid, "ended", NOW + 1, MOVES) is not None
        assert slow._tailer is not None
        slow._tailer.cancel()  # no more heartbeats
        await asyncio.sleep(0.6)
        taker._next_sweep = 0.0
        taken = await taker.claim_expired(time.time(), MOVES, 10)
        assert sorted(s.id for s in taken) == ["slow-first", "taker-first"]
        assert await taker.finish_end("taker-first", NOW + 2, "CLOSED", NOW + 600) is not None
        assert await slow.finish_end("taker-first", NOW + 3, "CLOSED", NOW + 600) is None
        assert await slow.finish_ends([("slow-first", NOW + 600)], NOW + 2, "CLOSED") != [None]
        assert await taker.finish_ends([("slow-first", NOW + 600)], NOW + 3, "CLOSED") == [None]
        snapshots = await _ended_snapshots(raw, prefix)
        assert sorted(snapshots) == ["slow-first", "taker-first"]
        assert {s["en"] for s in snapshots.values()} == {repr(NOW + 2)}
        assert (await taker.get("slow-first")) == (await slow.get("slow-first"))
    finally:
        await slow.close()
        await taker.close()


async def test_a_record_changed_behind_a_claim_is_read_again_at_the_finish(
    redis_server: RedisServer, admin: RedisClient
) -> None:
    """A claimed record does not change through the store (every write refuses it), but one changed
    by hand, or by a store of another version, is what the finish must end: the claimer's copy of
    it is not trusted past its version."""
    prefix = unique_prefix("f")
    [store] = await opened_stores(redis_server.url, prefix, 1)
    try:
        await store.create(_session("changed"), RULES)
        claimed = await store.claim_end("changed", "ended", NOW + 1, MOVES)
        assert claimed is not None
        key = f"{prefix}s:{{changed}}"
        await admin.call("HSET", key, "v", str(claimed.version + 5), "l:extra", "x")
        await admin.call("ZADD", prefix + "label:5:extra=x", "0", "changed")
        ended = await store.finish_end("changed", NOW + 2, "CLOSED", NOW + 600)
        assert ended is not None
        assert ended.version == claimed.version + 6
        assert ended.labels == {**claimed.labels, "extra": "x"}
        assert await store.get("changed") == ended
        assert await admin.call("EXISTS", prefix + "label:5:extra=x") == 0
    finally:
        await store.close()


async def test_census_counts_that_drop_to_zero_never_show(redis_server: RedisServer) -> None:
    """Counts are kept at zero in the census hash (no HDEL on the hot path); neither census(),
    count() nor metrics show a namespace or state without sessions, and a count that went to zero
    counts up again."""
    prefix = unique_prefix("f")
    store = RedisStore(redis_server.url, prefix=prefix)
    async with SessionHub(store, auto_expire=False) as hub:
        first = await hub.create(namespace="n1", idle_timeout=None)
        await hub.end(first.id)
        assert await store.census() == {}
        metrics = await hub.metrics()
        assert metrics.sessions == {}
        assert metrics.live_sessions == 0
        assert await hub.count(namespace="n1") == 0
        second = await hub.create(namespace="n1", idle_timeout=None)
        assert await store.census() == {("n1", second.state): 1}
        assert (await hub.metrics()).live_sessions == 1


async def test_claims_whose_events_left_the_ring_are_read_from_redis(
    redis_server: RedisServer,
) -> None:
    """A claim replies with its event id; the claimed session is that event's snapshot, from the
    ring the tailer fills. With a ring of one event, every claim of a batch but the last must be
    read from Redis instead, and be the same session."""
    prefix = unique_prefix("f")
    small = RedisStore(redis_server.url, prefix=prefix, event_buffer=1)
    [other] = await opened_stores(redis_server.url, prefix, 1)
    await small.open()
    try:
        ids = [f"s{i}" for i in range(5)]
        for sid in ids:
            await small.create(_session(sid), RULES)
        claimed = await small.claim_expired(NOW + 61, MOVES, 10)
        assert [s.id for s in claimed] == ids
        assert claimed == [await other.get(sid) for sid in ids]
        assert all(s.state == "TERMINATING" and s.end_reason == "expired" for s in claimed)
        finished = await small.finish_ends([(sid, NOW + 1e9) for sid in ids], NOW + 62, "CLOSED")
        assert finished == [await other.get(sid) for sid in ids]
        assert all(
            s is not None and s.version == c.version + 1
            for s, c in zip(finished, claimed, strict=True)
        )
    finally:
        await small.close()
        await other.close()


async def test_having_children_of_a_large_batch_names_exactly_the_parents(
    redis_server: RedisServer,
) -> None:
    """One EXISTS of many keys first tells a batch without parents (most are) at once; a batch
    with some is then looked at key by key, across the slices of the keys."""
    prefix = unique_prefix("f")
    [store] = await opened_stores(redis_server.url, prefix, 1)
    try:
        for sid in ("p-early", "p-late"):
            await store.create(_session(sid), RULES)
        for sid, parent in (("c1", "p-early"), ("c2", "p-late"), ("c3", "p-late")):
            child = msgspec.structs.replace(_session(sid), parent_id=parent, labels={})
            await store.create(child, RULES)
        lonely = [f"none-{i}" for i in range(1200)]
        assert await store.having_children(lonely) == set()
        batch = ["p-early", *lonely, "p-late", "c1", "p-late"]
        assert await store.having_children(batch) == {"p-early", "p-late"}
        assert await store.having_children(["c1", "c2"]) == set()
    finally:
        await store.close()
