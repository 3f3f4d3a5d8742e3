"""The Redis Cluster store on a real local Cluster (3 primaries, 3 replicas).

The conformance suite (``tests/core``) runs on it as the ``cluster`` store kind; these
tests cover what only a Cluster has: the spread over primaries, several hub processes expiring
together, and a primary killed under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TypeVar

import msgspec
import pytest
import redis

from sessionhub import (
    DuplicateSession,
    Limits,
    ManualClock,
    QuotaExceeded,
    SessionEvent,
    SessionHub,
    SessionNotFound,
    StoreUnavailable,
    VersionConflict,
)
from sessionhub.stores import store_from_url
from sessionhub.stores.redis_cluster import RedisClusterStore, bucket_tags

from ..stores.damaged import assert_the_others_still_work
from .cluster_server import RedisClusterServer

_T = TypeVar("_T")


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


def _keys_on(port: int, prefix: str) -> int:
    node = redis.Redis(port=port)
    try:
        return sum(1 for _ in node.scan_iter(match=prefix + "*", count=1000))
    finally:
        node.close()


async def test_url_scheme_builds_a_cluster_store(redis_cluster: RedisClusterServer) -> None:
    store = store_from_url(redis_cluster.url + "?prefix=app1:&buckets=12")
    assert isinstance(store, RedisClusterStore)
    assert (store.prefix, store.buckets) == ("app1:", 12)


async def test_sessions_and_indexes_spread_over_every_primary(
    redis_cluster: RedisClusterServer,
) -> None:
    prefix = _prefix()
    hub = SessionHub(RedisClusterStore(redis_cluster.url, prefix=prefix), auto_expire=False)
    await hub.start()
    try:
        for i in range(120):
            await hub.create(namespace="spread", user_id=f"u{i % 7}", labels={"k": str(i % 3)})
        assert await hub.count() == 120
        assert await hub.count(user_id="u1") == len([i for i in range(120) if i % 7 == 1])
    finally:
        await hub.close()
    per_primary = {port: _keys_on(port, prefix) for port in redis_cluster.primaries()}
    assert len(per_primary) == 3
    assert all(count > 0 for count in per_primary.values()), per_primary
    # no primary holds most of it: 24 buckets over 3 even slot ranges, 8 each
    assert max(per_primary.values()) < 0.6 * sum(per_primary.values()), per_primary


async def test_parent_in_another_bucket_and_its_children_end_together(
    redis_cluster: RedisClusterServer,
) -> None:
    store = RedisClusterStore(redis_cluster.url, prefix=_prefix())
    hub = SessionHub(store, auto_expire=False)
    ended: list[str] = []
    hub.on_end(lambda session, reason: ended.append(session.id))
    await hub.start()
    try:
        parent = await hub.create()
        children = [await hub.create(f"child-{i}", parent_id=parent.id) for i in range(12)]
        buckets = {store.bucket(child.id) for child in children}
        assert len(buckets - {store.bucket(parent.id)}) > 0  # some live elsewhere
        assert await hub.count(parent_id=parent.id) == 12
        await hub.end(parent.id)
        assert sorted(ended) == sorted([parent.id, *(c.id for c in children)])
        assert ended[-1] == parent.id
    finally:
        await hub.close()


@pytest.fixture
async def role_held(redis_cluster: RedisClusterServer) -> AsyncGenerator[SessionHub, None]:
    """A hub whose label ``role`` is unique, session ``holder`` holding ``role=admin``."""
    hub = SessionHub(
        RedisClusterStore(redis_cluster.url, prefix=_prefix()),
        unique_labels=("role",),
        auto_expire=False,
    )
    await hub.start()
    try:
        await hub.create("holder", labels={"role": "admin"})
        yield hub
    finally:
        await hub.close()


async def test_a_refused_create_of_an_existing_id_keeps_its_unique_label(
    role_held: SessionHub,
) -> None:
    """A create of an id that exists is refused, and the live session with that id still holds
    its unique label: the refused create must not release the reservation that session holds."""
    hub = role_held
    with pytest.raises(DuplicateSession):
        await hub.create("holder", labels={"role": "admin"})
    with pytest.raises(DuplicateSession):
        await hub.create("other", labels={"role": "admin"})
    other = await hub.create("other")
    with pytest.raises(DuplicateSession):
        await hub.update(other.id, labels={"role": "admin"})


async def test_a_change_the_session_refuses_is_not_reported_as_a_label_taken(
    role_held: SessionHub,
) -> None:
    """The reservation of a unique label comes before the change itself; when the session would
    refuse the change anyway (being ended, a stale version), that is the error, as on one node."""
    hub = role_held
    other = await hub.create("other")
    with pytest.raises(VersionConflict):
        await hub.update(other.id, labels={"role": "admin"}, expected_version=7)
    assert await hub.store.claim_end(other.id, "ended", hub.clock(), {}) is not None
    with pytest.raises(SessionNotFound, match="being ended"):
        await hub.update(other.id, labels={"role": "admin"})


async def test_a_refused_create_says_what_one_node_says(redis_cluster: RedisClusterServer) -> None:
    """This store checks limits before its create function checks the id and the parent; a
    create refused for several reasons reports the one a single node reports first."""
    hub = SessionHub(
        RedisClusterStore(redis_cluster.url, prefix=_prefix()),
        limits=Limits(max_sessions_per_user=1),
        auto_expire=False,
    )
    await hub.start()
    try:
        await hub.create("a", user_id="u")
        with pytest.raises(DuplicateSession, match="session id already exists"):
            await hub.create("a", user_id="u")  # and over the user's quota
        with pytest.raises(SessionNotFound):
            await hub.create("b", user_id="u", parent_id="missing")  # and over the quota
        with pytest.raises(QuotaExceeded):
            await hub.create("b", user_id="u", parent_id="a")
    finally:
        await hub.close()


def _ids_in(store: RedisClusterStore, bucket: int, n: int, tag: str) -> list[str]:
    return [sid for i in range(n * 200) if store.bucket(sid := f"{tag}-{i}") == bucket][:n]


async def test_expiry_claims_each_bucket_its_share_and_finishes_per_bucket(
    redis_cluster: RedisClusterServer,
) -> None:
    # A long lease: only the first claim below sweeps for abandoned claims (a sweep asks every
    # bucket for at least one), so the limits asked afterwards are exact.
    store = RedisClusterStore(redis_cluster.url, prefix=_prefix(), claim_lease=120.0)
    hub = SessionHub(store, auto_expire=False)
    await hub.start()
    try:
        crowded = _ids_in(store, 3, 30, "c") + _ids_in(store, 17, 5, "d")
        parent = await hub.create("p", ttl=0.05)
        child_id = next(sid for sid in _ids_in(store, 9, 3, "k") if store.bucket(parent.id) != 9)
        await hub.create(child_id, parent_id=parent.id, ttl=0.05)
        for sid in crowded:
            await hub.create(sid, ttl=0.05)
        assert await store.claim_expired(0.0, {}, 1000) == []  # the sweep: nothing due yet
        await asyncio.sleep(0.2)
        now = time.time()
        first = await store.claim_expired(now, {}, 1)
        assert len(first) == 1
        second = await store.claim_expired(now, {}, 10)
        assert len(second) == 10
        # One each asked of 24 buckets, most with nothing due: what they leave of the limit goes
        # to the buckets that still have some, until the limit is met.
        third = await store.claim_expired(now, {}, 24)
        assert len(third) == 24
        rest = await store.claim_expired(now, {}, 1000)
        assert len(rest) == 2
        claimed = first + second + third + rest
        assert sorted(s.id for s in claimed) == sorted([parent.id, child_id, *crowded])
        assert await store.claim_expired(now, {}, 1000) == []
        ids = [s.id for s in claimed]
        # the child's index entry lives in its own bucket, not its parent's
        assert await store.having_children(ids) == {parent.id}
        assert await store.having_children([]) == set()
        ended = await store.finish_ends([(sid, now + 60) for sid in ids], now, "ENDED")
        assert [s.id if s else None for s in ended] == ids
        assert await store.finish_ends([(ids[0], now + 60)], now, "ENDED") == [None]
        assert await hub.count() == 0
        assert await store.having_children(ids) == set()
    finally:
        await hub.close()


def _run_workers(url: str, prefix: str, sessions: int, uniques: int) -> list[dict[str, list[str]]]:
    command = [sys.executable, "-m", "tests.cluster.hub_worker", url, prefix]
    workers = [
        subprocess.Popen([*command, str(i), str(sessions), str(uniques)], stdout=subprocess.PIPE)
        for i in range(3)
    ]
    results = []
    for worker in workers:
        out, _ = worker.communicate(timeout=120 + sessions * 0.3)
        assert worker.returncode == 0
        results.append(msgspec.json.decode(out.splitlines()[-1], type=dict[str, list[str]]))
    return results


def _check_exactly_once(results: list[dict[str, list[str]]], sessions: int) -> None:
    # A seat may be won again after its holder expired, never while the holder is live: each
    # holder of a seat took it after the previous holder's hooks ran (its end releases the seat).
    hook_ran = dict(line.split("\t") for result in results for line in result["seat_ends"])
    holders: dict[str, list[tuple[float, str]]] = {}
    for result in results:
        for line in result["won"]:
            seat, holder, taken_at = line.split("\t")
            holders.setdefault(seat, []).append((float(taken_at), holder))
    for seat, taken in holders.items():
        taken.sort()
        for (_, before), (since, after) in itertools.pairwise(taken):
            assert since > float(hook_ran[before]), f"seat {seat} held by {before} and {after}"
    won = [line.split("\t")[1] for result in results for line in result["won"]]
    hooks = Counter(sid for result in results for sid in result["hooked"])
    burst = {f"w{w}-{i}" for w in range(3) for i in range(sessions)}
    assert burst <= set(hooks)
    assert set(hooks.values()) == {1}, "a session's hooks ran twice"
    assert len(hooks) == len(burst) + len(won)
    for result in results:  # every process saw every end
        assert result["missed"] == [], "a subscriber fell behind its event ring"
        assert set(result["ended"]) == set(hooks)


# Creating 2,100 sessions and racing for unique labels on a loaded 2-core machine can take longer
# than the default 120 s; the workers bound it too.
@pytest.mark.timeout(400)
def test_three_hub_processes_end_every_session_exactly_once(
    redis_cluster: RedisClusterServer,
) -> None:
    sessions = 700  # 2,100 over three processes; 10,000 in the slow form
    _check_exactly_once(_run_workers(redis_cluster.url, _prefix(), sessions, 40), sessions)


@pytest.mark.slow
def test_three_hub_processes_ten_thousand_sessions(redis_cluster: RedisClusterServer) -> None:
    sessions = 3334
    _check_exactly_once(_run_workers(redis_cluster.url, _prefix(), sessions, 200), sessions)


async def test_a_killed_primary_fails_over_and_the_hubs_resume() -> None:
    cluster = RedisClusterServer()
    hubs = [SessionHub(RedisClusterStore(cluster.url, prefix="fo:", timeout=2.0)) for _ in range(2)]
    hooked: Counter[str] = Counter()
    for hub in hubs:
        hub.on_end(lambda session, reason: hooked.update([session.id]))
        await hub.start()
    acknowledged: list[str] = []
    refused = 0

    async def work(hub: SessionHub, name: str, rounds: int) -> None:
        nonlocal refused
        for i in range(rounds):
            try:
                session = await hub.create(f"{name}-{i}", ttl=1.0)
                acknowledged.append(session.id)
                # a create that stalled over the outage can expire before its touch
                with contextlib.suppress(SessionNotFound):
                    await hub.touch(session.id)
            except StoreUnavailable:
                refused += 1
                await asyncio.sleep(0.05)

    try:
        before = asyncio.gather(*(work(hub, f"a{n}", 150) for n, hub in enumerate(hubs)))
        await asyncio.sleep(0.3)
        cluster.kill(cluster.primaries()[0])
        await before
        await asyncio.to_thread(cluster.wait_ok)
        await asyncio.gather(*(work(hub, f"b{n}", 100) for n, hub in enumerate(hubs)))
        assert len([sid for sid in acknowledged if sid.startswith("b")]) == 200  # resumed
        for _ in range(100):
            if await hubs[0].count() == 0:
                break
            await asyncio.sleep(0.2)
        assert await hubs[0].count() == 0
        lost = [sid for sid in acknowledged if sid not in hooked]
        surviving_never = [sid for sid in lost if await hubs[0].store.get(sid) is not None]
        assert surviving_never == []  # every session that survived the failover ended
        assert max(hooked.values()) == 1
        print(f"failover: {refused} refused, {len(lost)} acknowledged creates lost")
    finally:
        for hub in hubs:
            await hub.close()
        cluster.stop()


async def _once_answered(call: Callable[[], Awaitable[_T]]) -> _T:
    """``call()``, again while the Cluster fails over (for up to 10 s)."""
    for _ in range(100):
        with contextlib.suppress(StoreUnavailable):
            return await call()
        await asyncio.sleep(0.1)
    return await call()


async def test_a_write_lost_in_a_failover_is_not_answered_from_a_copy() -> None:
    """A write the primary acknowledged but its replica never received is lost when the replica
    takes over; another instance's write then brings the record to the version of the copy the
    first instance holds, with other content. The first instance's copies of the old primary
    are not used: it reads what the new one stores."""
    cluster = RedisClusterServer()
    here, there = (RedisClusterStore(cluster.url, prefix="lost:", timeout=2.0) for _ in range(2))
    first, other = (SessionHub(store, auto_expire=False) for store in (here, there))
    try:
        async with first, other:
            await first.create("s", labels={"k": "kept"})
            primary, replica = cluster.serving(here._key("s", "s"))
            await asyncio.to_thread(cluster.wait_ok)  # the replica has the create
            cluster.pause(replica)  # (stopped first: it cannot connect again before the kill)
            cluster.cli(primary, "CLIENT", "KILL", "TYPE", "replica")
            lost = await first.update("s", labels={"k": "lost"})  # the replica never gets it
            cluster.kill(primary)
            cluster.resume(replica)
            await asyncio.to_thread(cluster.wait_ok)  # the replica took over
            stored = await _once_answered(lambda: other.update("s", labels={"k": "stored"}))
            assert stored.version == lost.version  # the version of the copy 'first' holds
            got = await _once_answered(lambda: first.get("s"))
            assert got.labels == {"k": "stored"}
            touched = await first.touch("s")
            assert touched.labels == {"k": "stored"}
            assert touched.version == stored.version + 1
    finally:
        cluster.stop()


async def _take(events: AsyncGenerator[SessionEvent, None], n: int) -> list[SessionEvent]:
    async with asyncio.timeout(10):
        return [await anext(events) for _ in range(n)]


async def test_events_reach_another_process_and_resume_after_its_ids(
    redis_cluster: RedisClusterServer,
) -> None:
    prefix = _prefix()
    writer = SessionHub(RedisClusterStore(redis_cluster.url, prefix=prefix), auto_expire=False)
    reader = SessionHub(RedisClusterStore(redis_cluster.url, prefix=prefix), auto_expire=False)
    await writer.start()
    await reader.start()
    try:
        live = reader.subscribe(kinds=["created"])
        created = [await writer.create(f"e{i}") for i in range(20)]
        seen = await _take(live, 20)
        assert sorted(e.session.id for e in seen if e.session) == sorted(s.id for s in created)
        # an id the reader got, resumed on the writer: the same bucket's later events follow
        middle = seen[10]
        bucket = middle.id.split(":")[0]
        in_bucket = [e.id for e in seen if e.id.split(":")[0] == bucket]
        later = in_bucket[in_bucket.index(middle.id) + 1 :]
        resumed = writer.subscribe(after=middle.id, kinds=["created"])
        await writer.create("e-last")
        got = [e.id for e in await _take(resumed, 20 - 11 + 1)]
        assert middle.id not in got
        assert [i for i in got if i.split(":")[0] == bucket][: len(later)] == later
    finally:
        await writer.close()
        await reader.close()


async def test_no_child_outlives_a_parent_ended_while_it_was_created(
    redis_cluster: RedisClusterServer,
) -> None:
    prefix = _prefix()
    creator = SessionHub(RedisClusterStore(redis_cluster.url, prefix=prefix), auto_expire=False)
    ender = SessionHub(RedisClusterStore(redis_cluster.url, prefix=prefix), auto_expire=False)
    await creator.start()
    await ender.start()
    try:
        parent = await creator.create()
        made: list[str] = []
        refused = 0

        async def create_children() -> None:
            nonlocal refused
            for i in range(150):
                try:
                    made.append((await creator.create(f"kid-{i}", parent_id=parent.id)).id)
                except SessionNotFound:
                    refused += 1

        async def end_parent() -> None:
            for _ in range(2000):  # until some children exist
                if len(made) >= 20:
                    break
                await asyncio.sleep(0.005)
            await ender.end(parent.id)

        await asyncio.gather(create_children(), end_parent())
        assert refused > 0
        assert made
        assert await creator.count(parent_id=parent.id) == 0
        still_live = [sid for sid in made if (s := await creator.store.get(sid)) and not s.ended_at]
        assert still_live == []
    finally:
        await creator.close()
        await ender.close()


# records written before the JSON nesting bound existed, or damaged

DEEP = "[" * 5000 + "]" * 5000  # msgspec (like any recursive decoder) cannot decode this


def _poison(cluster: RedisClusterServer, store: RedisClusterStore, session_id: str) -> None:
    """Give a session details nested 5,000 deep and make it due, add an event carrying it to its
    bucket's stream, and give session ``a`` such a data value and history record (as a
    sessionhub without the nesting bound could have written them: a change, the version goes up)."""
    admin = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0], decode_responses=True)
    try:
        bucket = f"{store.prefix}{{{bucket_tags(store.buckets)[store.bucket(session_id)]}}}:"
        key = f"{bucket}s:{{{session_id}}}"
        admin.hset(key, mapping={'d:"v"': DEEP, "dq": "0"})
        admin.hincrby(key, "v", 1)
        admin.zadd(f"{bucket}deadlines", {session_id: 0})
        snapshot = msgspec.msgpack.encode(
            [item for pair in admin.hgetall(key).items() for item in pair]
        )
        admin.xadd(f"{bucket}events", {"k": "updated", "a": "0", "s": snapshot})
        a_bucket = f"{store.prefix}{{{bucket_tags(store.buckets)[store.bucket('a')]}}}:"
        admin.hset(f"{a_bucket}d:{{a}}", "deep", "1:" + DEEP)
        admin.rpush(f"{a_bucket}h:{{a}}", "call\t0\t" + DEEP)
    finally:
        admin.close()


async def test_a_record_that_cannot_be_decoded_breaks_nothing_else(
    redis_cluster: RedisClusterServer,
) -> None:
    clock = ManualClock()
    store = RedisClusterStore(redis_cluster.url, prefix=_prefix(), buckets=6)
    async with SessionHub(store, clock=clock, auto_expire=False, idle_timeout=60) as hub:
        for sid in ("a", "poisoned", "z"):
            await hub.create(sid)
        await hub.data("a").set("k", 1)
        await hub.history("a").append("call", 1)
        events = hub.subscribe()
        _poison(redis_cluster, store, "poisoned")

        # the stream goes on past the poisoned event
        await hub.create("b")
        event = await asyncio.wait_for(anext(events), 10)
        assert (event.kind, event.session is not None and event.session.id) == ("created", "b")

        await assert_the_others_still_work(hub, clock, damaged_at_least=4)
        await events.aclose()
