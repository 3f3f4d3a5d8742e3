"""What only the Redis store promises: several hub processes share one Redis (each session ends
exactly once, every process sees every event, no unique label is held twice), each operation is one
round trip, a Redis that goes away gives ``StoreUnavailable`` and the store recovers when it
returns, bad credentials and unreachable servers are refused clearly at ``open()``, and key
prefixes keep stores on one Redis apart.

The store-agnostic behaviour is in tests/core (``SESSIONHUB_TEST_STORES=redis``). Every test uses a
private ``redis-server`` (tests/redis_server.py), never the machine's own. The multi-process test
runs about a thousand sessions; ``SESSIONHUB_SOAK=1`` makes it ten thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sessionhub import (
    DuplicateSession,
    EventKind,
    Limits,
    ManualClock,
    Session,
    SessionEvent,
    SessionHub,
    SessionNotFound,
    StoreUnavailable,
    ValidationError,
)
from sessionhub.stores import CreateRules, Query, store_from_url
from sessionhub.stores._base import Change
from sessionhub.stores._resp import RedisAddress, RedisClient
from sessionhub.stores.redis import RedisStore

from ..redis_server import RedisServer, free_port
from .damaged import assert_the_others_still_work
from .redis_records import active_session, record_fields
from .workers import run_together

WORKER = Path(__file__).with_name("redis_worker.py")
SOAK = os.environ.get("SESSIONHUB_SOAK") == "1"
WAIT = 10.0  # a safety net for events that must come, not an assertion about speed
MOVES = {"CREATED": "TERMINATING", "SPAWNING": "TERMINATING", "ACTIVE": "TERMINATING"}


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}:"


async def next_event(events: AsyncIterator[SessionEvent]) -> SessionEvent:
    return await asyncio.wait_for(anext(events), WAIT)


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A server of the test's own, for tests that stop or restart it."""
    server = RedisServer()
    yield server
    server.stop()


# URLs and options


def test_urls_give_address_prefix_and_options() -> None:
    store = store_from_url("redis://:s3cret@127.0.0.1:6390/2?prefix=app1:&timeout=3")
    assert isinstance(store, RedisStore)
    assert (store.address.host, store.address.port, store.address.db) == ("127.0.0.1", 6390, 2)
    assert store.address.password == "s3cret"
    assert (store.prefix, store.timeout) == ("app1:", 3.0)
    assert "s3cret" not in repr(store)
    assert store.ephemeral is False
    unix = RedisStore.from_url("unix:///tmp/redis.sock?db=3&prefix=u:")
    assert (unix.address.path, unix.address.db, unix.prefix) == ("/tmp/redis.sock", 3, "u:")
    tls = RedisStore.from_url("rediss://redis.example:6380/0?ssl_cert_reqs=none")
    assert tls.address.ssl is not None
    assert RedisStore("redis://localhost").prefix == "sessionhub:"


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0?prefx=typo",
        "redis://localhost:6379/zero",
        "redis://localhost:port/0",
        "redis://localhost/0?prefix=has space",
        "redis://localhost/0?prefix=",
        "redis://localhost/0?timeout=-1",
        "unix://",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        store_from_url(url)


@pytest.mark.parametrize(
    ("url", "missing", "extra"),
    [
        ("redis://localhost", "anycrc", "redis"),
        ("redis+cluster://localhost:7000", "redis", "cluster"),
    ],
)
def test_a_store_without_its_extra_says_which_to_install(
    url: str, missing: str, extra: str
) -> None:
    """Run where ``missing`` cannot be imported (as without the extra installed)."""
    code = f"""
import sys
sys.modules[{missing!r}] = None  # an import of it raises ModuleNotFoundError
from sessionhub.stores import store_from_url
try:
    store_from_url({url!r})
except ModuleNotFoundError as exc:
    print(exc)
"""
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"pip install 'sessionhub[{extra}]'" in shown.stdout
    assert missing in shown.stdout


def test_two_different_prefixes_for_one_store_are_refused() -> None:
    with pytest.raises(ValidationError, match="two key prefixes"):
        RedisStore("redis://localhost/0?prefix=a:", prefix="b:")


# refusals at open


async def test_unreachable_redis_is_a_clear_error_at_open() -> None:
    port = free_port()
    store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=2)
    with pytest.raises(StoreUnavailable, match=f"cannot reach Redis at 127.0.0.1:{port}"):
        await store.open()
    with pytest.raises(StoreUnavailable, match="cannot reach Redis"):
        await SessionHub(store).start()


async def test_wrong_or_missing_password_is_a_clear_error_at_open() -> None:
    server = RedisServer(password="the-right-one")
    try:
        wrong = RedisStore(f"redis://:not-it@127.0.0.1:{server.port}/0")
        with pytest.raises(StoreUnavailable, match="refused the user name or password") as info:
            await wrong.open()
        assert "not-it" not in str(info.value)
        missing = RedisStore(f"redis://127.0.0.1:{server.port}/0")
        with pytest.raises(StoreUnavailable, match="requires a password"):
            await missing.open()
        async with SessionHub(RedisStore(server.url, prefix=unique_prefix())) as hub:
            session = await hub.create()
            assert (await hub.get(session.id)).id == session.id
    finally:
        server.stop()


# one round trip per operation


async def test_every_store_operation_is_one_round_trip(
    redis_server: RedisServer, admin: RedisClient
) -> None:
    store = RedisStore(redis_server.url, prefix=unique_prefix())
    await store.open()
    try:
        now = 1_750_000_000.0
        rules = CreateRules(unique_labels=("role",), max_sessions=1000, max_sessions_per_user=10)
        first = await store.create(_session("rt-parent", now), rules)
        operations: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("create", lambda: store.create(_session("rt-1", now, parent=first.id), rules)),
            ("get", lambda: store.get("rt-1")),
            ("find", lambda: store.find(Query(parent_id=first.id), limit=10, cursor=None)),
            ("count", lambda: store.count(Query(labels={"role": "a"}))),
            ("census", store.census),
            ("touch", lambda: store.modify("rt-1", Change(now=now + 1, touch=True))),
            (
                "update",
                lambda: store.modify(
                    "rt-1",
                    Change(
                        now=now + 1,
                        labels={"x": "y"},
                        details={"d": [1]},
                        unique_labels=("role",),
                        emit=EventKind.UPDATED,
                    ),
                ),
            ),
            ("data_set", lambda: store.data_set("rt-1", "k", b'{"v":1}', None, now + 2)),
            ("data_get", lambda: store.data_get("rt-1", "k", now + 2)),
            ("data_items", lambda: store.data_items("rt-1", now + 2)),
            ("data_delete", lambda: store.data_delete("rt-1", "k", None, now + 2)),
            ("history_append", lambda: store.history_append("rt-1", "m", b"1", now + 3)),
            (
                "history_read",
                lambda: store.history_read(
                    "rt-1", after=None, limit=10, newest_first=True, kind="m", now=now + 3
                ),
            ),
            ("history_counts", lambda: store.history_counts("rt-1", now + 3)),
            ("next_deadline", store.next_deadline),
            ("claim_expired", lambda: store.claim_expired(now, MOVES, 100)),
            ("claim_end", lambda: store.claim_end("rt-1", "ended", now + 4, MOVES)),
            ("finish_end", lambda: store.finish_end("rt-1", now + 5, "CLEANED", now + 5)),
            ("purge", lambda: store.purge(now + 6)),
        ]
        scripted = 0
        before = await _calls(admin)
        for name, operation in operations:
            sent = store.round_trips
            await operation()
            assert store.round_trips - sent == 1, name
            scripted += name not in ("get", "census")
        after = await _calls(admin)
        # The server agrees: one FCALL per scripted operation, and the library was not loaded again.
        assert after["fcall"] - before["fcall"] == scripted
        assert after["function|load"] == before["function|load"]
    finally:
        await store.close()


async def test_hub_container_reads_are_one_round_trip(
    redis_server: RedisServer, admin: RedisClient
) -> None:
    """A data or history read through the hub is its store read alone (no ``get`` first): one
    FCALL, on a live session and on an ended one still retained."""
    store = RedisStore(redis_server.url, prefix=unique_prefix())
    async with SessionHub(store, retention=60, auto_expire=False) as hub:
        session = await hub.create()
        await hub.data(session.id).set("k", 1)
        await hub.history(session.id).append("m", 1)
        reads: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("history.read", lambda: hub.history(session.id).read(limit=50, newest_first=True)),
            ("history.counts", hub.history(session.id).counts),
            ("data.get", lambda: hub.data(session.id).get("k")),
            ("data.items", hub.data(session.id).items),
        ]
        for ended in (False, True):
            if ended:
                await hub.end(session.id)
            for name, read in reads:
                before, sent = await _calls(admin), store.round_trips
                await read()
                after = await _calls(admin)
                assert store.round_trips - sent == 1, (name, ended)
                assert after["fcall"] - before["fcall"] == 1, (name, ended)


async def _calls(admin: RedisClient) -> Counter[str]:
    info: str = await admin.call("INFO", "commandstats")
    calls: Counter[str] = Counter()
    for line in info.splitlines():
        if line.startswith("cmdstat_"):
            name, _, stats = line[len("cmdstat_") :].partition(":")
            calls[name] = int(stats.split(",")[0].split("=")[1])
    return calls


def _session(sid: str, now: float, parent: str | None = None) -> Any:
    from sessionhub import Session

    return Session(
        id=sid,
        state="CREATED",
        user_id="u",
        parent_id=parent,
        labels={"role": sid},
        created_at=now,
        updated_at=now,
        last_activity_at=now,
        expires_at=now + 60,
        idle_timeout=60.0,
    )


# a Redis that goes away


async def test_a_restarted_redis_fails_clearly_then_recovers(own_server: RedisServer) -> None:
    store = RedisStore(own_server.url, prefix=unique_prefix(), timeout=3)
    # No expiry task: its passes would share the connection counted below.
    async with SessionHub(store, auto_expire=False) as hub:
        session = await hub.create()
        events = hub.subscribe(kinds=["created"])
        await _shutdown(own_server)
        with pytest.raises(StoreUnavailable, match=f"Redis at 127.0.0.1:{own_server.port}"):
            await hub.get(session.id)
        with pytest.raises(StoreUnavailable):
            await hub.create()
        with pytest.raises(StoreUnavailable):
            await hub.touch(session.id)

        await asyncio.to_thread(own_server.restart)  # empty: nothing is kept on disk
        assert await hub.exists(session.id) is False
        sent = store.round_trips
        again = await hub.create()  # the functions went with the old server: loaded again
        assert store.round_trips - sent == 3  # FCALL, FUNCTION LOAD, FCALL
        assert (await hub.get(again.id)).id == again.id
        assert (await next_event(events)).session == again  # the event tail came back too
        await events.aclose()


async def test_a_frozen_redis_times_out_instead_of_hanging(own_server: RedisServer) -> None:
    store = RedisStore(own_server.url, prefix=unique_prefix(), timeout=0.5)
    async with SessionHub(store, poll_interval=3600) as hub:
        session = await hub.create()
        os.kill(own_server._process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(StoreUnavailable, match=r"did not answer within 0\.5 s"):
                await asyncio.wait_for(hub.get(session.id), WAIT)
        finally:
            os.kill(own_server._process.pid, signal.SIGCONT)
        assert (await hub.get(session.id)).id == session.id


async def _shutdown(server: RedisServer) -> None:
    client = RedisClient(RedisAddress(port=server.port, password=server.password))
    with contextlib.suppress(StoreUnavailable):
        await client.call("SHUTDOWN", "NOSAVE")
    await client.close()
    for _ in range(200):
        if server._process.poll() is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("redis-server did not stop")


async def test_the_event_tail_resumes_after_its_connection_drops(
    redis_server: RedisServer, admin: RedisClient
) -> None:
    prefix = unique_prefix()
    writer = SessionHub(RedisStore(redis_server.url, prefix=prefix), poll_interval=3600)
    reader = SessionHub(RedisStore(redis_server.url, prefix=prefix), poll_interval=3600)
    async with writer, reader:
        events = reader.subscribe(kinds=["created"])
        created = [await writer.create()]
        assert (await next_event(events)).session == created[0]
        for line in (await admin.call("CLIENT", "LIST")).splitlines():
            if "name=sessionhub-events" in line:
                await admin.call("CLIENT", "KILL", "ID", line.split()[0].split("=")[1])
        created += [await writer.create() for _ in range(20)]
        seen = [(await next_event(events)).session for _ in range(20)]
        assert seen == created[1:]
        await events.aclose()


# events across nodes


async def test_a_subscription_resumes_on_another_node_from_its_event_id(
    redis_server: RedisServer,
) -> None:
    prefix = unique_prefix()
    one = SessionHub(RedisStore(redis_server.url, prefix=prefix), poll_interval=3600)
    two = SessionHub(RedisStore(redis_server.url, prefix=prefix), poll_interval=3600)
    async with one, two:
        on_one = one.subscribe()
        first = await one.create()
        first_event = await next_event(on_one)
        assert "-" in first_event.id  # a stream id, the same on every node
        second = await one.create()
        await one.end(first.id)
        resumed = two.subscribe(after=first_event.id)
        assert (await next_event(resumed)).session == second
        assert (await next_event(resumed)).kind == EventKind.TRANSITIONED
        # A node started later loads the retained window, so it can resume too.
        async with SessionHub(
            RedisStore(redis_server.url, prefix=prefix), poll_interval=3600
        ) as late:
            again = late.subscribe(after=first_event.id)
            assert (await next_event(again)).session == second
            await again.aclose()
        await resumed.aclose()
        await on_one.aclose()


async def test_an_id_older_than_the_window_is_told_what_it_missed(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(redis_server.url, prefix=unique_prefix(), event_buffer=5)
    async with SessionHub(store, poll_interval=3600) as hub:
        events = hub.subscribe()
        await hub.create()
        oldest = (await next_event(events)).id
        for _ in range(10):
            await hub.create()
        resumed = hub.subscribe(after=oldest)
        missed = await next_event(resumed)
        assert missed.kind == EventKind.MISSED
        assert missed.missed >= 1
        with pytest.raises(ValidationError):
            hub.subscribe(after="not-an-id")
        await resumed.aclose()
        await events.aclose()


async def test_the_event_stream_stays_near_its_length(
    redis_server: RedisServer, admin: RedisClient, raw: RedisClient
) -> None:
    # Trimmed at every 64th event of a prefix, whole nodes of up to 100 entries at a time: never
    # more than the length, a node and 64 entries; every kind of event counts (created, updated,
    # transitioned, ended), and a subscriber still resumes from an event kept in the stream.
    prefix = unique_prefix()
    store = RedisStore(redis_server.url, prefix=prefix, stream_length=50)
    async with SessionHub(store, poll_interval=3600) as hub:
        lengths = []
        for n in range(300):
            session = await hub.create(f"s{n}")
            await hub.update(session.id, details={"n": n})
            await hub.end(session.id)
            lengths.append(await admin.call("XLEN", prefix + "events"))
        assert max(lengths) <= 50 + 100 + 64
        assert lengths[-1] >= 50  # approximate trimming never leaves fewer than the length
        (last, _), (before_last, _) = await raw.call(
            "XREVRANGE", prefix + "events", "+", "-", "COUNT", 2
        )
        resumed = hub.subscribe(after=before_last.decode())
        created = await hub.create("after")
        assert (await next_event(resumed)).id == last.decode()
        following = await next_event(resumed)
        assert (following.kind, following.session) == (EventKind.CREATED, created)
        await resumed.aclose()


# prefixes and keys


async def test_prefixes_keep_stores_apart(redis_server: RedisServer, admin: RedisClient) -> None:
    a_prefix, b_prefix = unique_prefix(), unique_prefix()
    a = SessionHub(
        RedisStore(redis_server.url, prefix=a_prefix), unique_labels=["role"], poll_interval=3600
    )
    b = SessionHub(
        RedisStore(redis_server.url, prefix=b_prefix), unique_labels=["role"], poll_interval=3600
    )
    async with a, b:
        a_events, b_events = a.subscribe(), b.subscribe()
        in_a = await a.create("same-id", user_id="u", labels={"role": "r"})
        in_b = await b.create("same-id", user_id="u", labels={"role": "r"}, details={"b": 1})
        assert (await a.get("same-id")) == in_a
        assert (await b.get("same-id")) == in_b
        assert await a.count() == 1
        assert await b.count(user_id="u") == 1
        assert [s.details for s in (await b.find(labels={"role": "r"})).items] == [{"b": 1}]
        assert (await a.metrics()).live_sessions == 1
        assert (await next_event(a_events)).session == in_a
        assert (await next_event(b_events)).session == in_b
        assert await a.end("same-id") is True
        assert await b.exists("same-id") is True
        assert (await next_event(a_events)).kind == EventKind.TRANSITIONED
        assert await admin.call("EXISTS", a_prefix + "s:{same-id}") == 0
        assert await admin.call("EXISTS", b_prefix + "s:{same-id}") == 1
        await a_events.aclose()
        await b_events.aclose()


async def test_nothing_is_left_behind_when_sessions_end(
    redis_server: RedisServer, admin: RedisClient
) -> None:
    prefix = unique_prefix()
    clock = ManualClock()
    store = RedisStore(redis_server.url, prefix=prefix)
    async with SessionHub(
        store, clock=clock, unique_labels=["role"], retention=30, poll_interval=3600
    ) as hub:
        parent = await hub.create(user_id="u", labels={"role": "p", "a": "b"}, idle_timeout=5)
        for i in range(5):
            child = await hub.create(parent_id=parent.id, labels={"n": str(i)}, ttl=50)
            await hub.data(child.id).set("k", i)
            await hub.history(child.id).append("m", i)
        assert await hub.end(parent.id) is True
        assert await hub.count() == 0
        assert await hub.count(include_ended=True) == 6
        clock.advance(31)
        assert await store.purge(clock()) == 6
        keys = await admin.call("KEYS", prefix + "*")
        # What stays: the event stream and this open store's heartbeat. (The census's counts
        # stayed at zero until the purge deleted them: no HDEL on the hot path.)
        assert sorted(keys) == [prefix + "claimer:" + store._claimer, prefix + "events"]


async def test_purge_deletes_census_counts_left_at_zero(
    redis_server: RedisServer, admin: RedisClient
) -> None:
    """An app that used many namespaces over time keeps no census field for each: the purge
    deletes the zero counts, a slice per call, and never a count that is not zero."""
    prefix = unique_prefix()
    store = RedisStore(redis_server.url, prefix=prefix)
    async with SessionHub(store, auto_expire=False) as hub:
        kept = await hub.create(namespace="kept")
        for i in range(250):
            session = await hub.create(namespace=f"tenant-{i}")
            await hub.end(session.id)
        census = prefix + "census"
        # Zero counts per namespace used: the states its session passed (created, terminating).
        assert await admin.call("HLEN", census) == 1 + 250 * 2
        for _ in range(30):  # a slice of about 100 fields per purge: a few purges at most
            assert await store.census() == {("kept", "CREATED"): 1}
            if await admin.call("HLEN", census) == 1:
                break
            await store.purge(hub.clock())
        assert await admin.call("HGETALL", census) == ["kept\tCREATED", "1"]
        await hub.end(kept.id)
        await hub.create(namespace="tenant-7")  # a namespace used again counts from nothing
        assert await store.census() == {("tenant-7", "CREATED"): 1}


async def test_one_unique_label_among_racing_stores(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    hubs = [
        SessionHub(RedisStore(redis_server.url, prefix=prefix), unique_labels=["role"])
        for _ in range(3)
    ]
    async with hubs[0], hubs[1], hubs[2]:
        results = await asyncio.gather(
            *(hub.create(labels={"role": "leader"}) for hub in hubs for _ in range(10)),
            return_exceptions=True,
        )
        won = [r for r in results if not isinstance(r, BaseException)]
        assert len(won) == 1
        assert all(isinstance(r, DuplicateSession) for r in results if r not in won)


async def test_an_end_left_unfinished_is_taken_over(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    crashed = RedisStore(redis_server.url, prefix=prefix, claim_lease=0.3)
    await crashed.open()
    store = RedisStore(redis_server.url, prefix=prefix)
    async with SessionHub(store, clock=ManualClock(), poll_interval=3600.0) as hub:
        ended: list[tuple[str, str]] = []
        hub.on_end(lambda session, reason: ended.append((session.id, reason)))
        await hub.create("orphan", idle_timeout=None)
        assert await crashed.claim_end("orphan", "bye", 0.0, {"CREATED": "TERMINATING"})
        assert await hub.end("orphan") is False  # claimed by a live process: not ours to end
        assert await hub.expire_due() == 0
        # The claimer stops heartbeating without finishing (as a killed process would).
        assert crashed._tailer is not None
        crashed._tailer.cancel()
        await asyncio.sleep(0.5)
        store._next_sweep = 0.0  # sweep now, not in a while
        assert await hub.expire_due() == 1
        assert ended == [("orphan", "bye")]
        assert await hub.exists("orphan") is False
    await crashed.close()


# several processes


def test_three_processes_end_each_session_exactly_once(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    per_process = 3334 if SOAK else 334
    slots, patience = 20, 240.0 if SOAK else 60.0
    prefix = unique_prefix()
    results = [tmp_path / f"result{i}.json" for i in range(3)]
    commands = [
        [
            *(sys.executable, str(WORKER), redis_server.url, prefix, str(results[i])),
            *(str(i), str(per_process), str(slots), str(patience)),
        ]
        for i in range(3)
    ]
    run_together(commands, tmp_path, patience + 60)
    seen = [json.loads(path.read_text()) for path in results]

    expiring = {f"expiring-{i}-{j}" for i in range(3) for j in range(per_process)}
    hooked = Counter(sid for result in seen for sid in result["hooked"])
    assert expiring <= set(hooked)  # every session's hooks ran ...
    assert max(hooked.values()) == 1  # ... in exactly one process
    assert sum(1 for result in seen if result["hooked"]) >= 2  # the work was shared
    for result in seen:
        assert result["missed"] == 0
        ended = [sid for _, kind, sid, _ in result["events"] if kind == EventKind.ENDED]
        assert len(ended) == len(set(ended))  # told of every end once ...
        assert expiring <= set(ended)  # ... of every session of every process
    # Every process saw the same events in the same order: the stream's.
    first = [event[0] for event in seen[0]["events"]]
    for result in seen[1:]:
        assert [event[0] for event in result["events"]] == first
    # Walking that order, a slot label is never taken while another session holds it.
    holder: dict[str, str] = {}
    taken = 0
    for _, kind, sid, slot in seen[0]["events"]:
        if slot is None:
            continue
        if kind == EventKind.CREATED:
            assert slot not in holder, f"slot {slot} held by {holder.get(slot)} and {sid}"
            holder[slot] = sid
            taken += 1
        elif kind == EventKind.ENDED:
            assert holder.pop(slot) == sid
    assert taken >= slots


async def test_a_copy_of_an_earlier_incarnation_is_not_taken_for_the_session(
    redis_server: RedisServer,
) -> None:
    """A store instance writes a session it holds a copy of without reading the record when the
    record is still at the copy's version. A session ended elsewhere and created again under its
    id at the same time (an injected clock) with the same version is another session: the copy is
    not taken for it, for a touch or for an end (found by the two-hub stateful test: the end
    counted the old state's census)."""
    clock = ManualClock()
    prefix = unique_prefix()
    first = SessionHub(RedisStore(redis_server.url, prefix=prefix), clock=clock, auto_expire=False)
    other = SessionHub(RedisStore(redis_server.url, prefix=prefix), clock=clock, auto_expire=False)
    async with first, other:
        for sid in ("touched", "ended"):
            await first.create(sid, user_id="u1")  # CREATED, version 1: copies held by 'first'
            await other.end(sid)
            await other.create(sid, user_id="u2", activate=True, idle_timeout=60)
        touched = await first.touch("touched")
        assert (touched.state, touched.user_id, touched.version) == ("ACTIVE", "u2", 2)
        assert touched == await other.get("touched")
        assert await first.end("ended") is True
        assert await other.count() == 1
        assert await other.count(user_id="u2") == 1
        assert (await first.metrics()).sessions == {("default", "ACTIVE"): 1}
        assert await first.store.census() == {("default", "ACTIVE"): 1}


async def _reads(admin: RedisClient, read: Callable[[], Awaitable[Any]]) -> tuple[Any, int, int]:
    """What ``read`` returned, and the HMGET and HGETALL calls it made."""
    before = await _calls(admin)
    got = await read()
    after = await _calls(admin)
    return got, after["hmget"] - before["hmget"], after["hgetall"] - before["hgetall"]


async def test_a_get_answers_from_a_held_copy_only_while_the_record_is_at_it(
    redis_server: RedisServer, admin: RedisClient
) -> None:
    """A store instance holding a copy of a session (it created, changed or read it last) reads
    only the record's version and incarnation for a get, and the whole record when another
    instance changed it, ended it, or created it again under its id at the same time."""
    clock = ManualClock()
    details = {"n": [1, 2.5, None, {"deep": "x"}], "big": 2**70, "s": "é\n"}

    async def changed(other: SessionHub) -> Session:
        return await other.update("s", labels={"k": "w"}, details={"n": 3})

    async def again(other: SessionHub) -> Session:
        await other.end("s")
        return await other.create("s", user_id="u2")  # the same time: version 1 again

    async def ended(other: SessionHub) -> None:
        await other.end("s")

    for change in (None, changed, again, ended):
        prefix = unique_prefix()
        stores = [RedisStore(redis_server.url, prefix=prefix) for _ in range(2)]
        first, other = (SessionHub(s, clock=clock, auto_expire=False) for s in stores)
        async with first, other:
            made = await first.create("s", user_id="u1", labels={"k": "v"}, details=details)
            assert made == await other.get("s")  # the record, read whole, is the copy
            if change is None:
                assert await _reads(admin, partial(first.get, "s")) == (made, 1, 0)
            elif change is ended:
                await change(other)
                with pytest.raises(SessionNotFound):
                    await first.get("s")
            else:
                now = await change(other)
                assert now is not None
                assert now.version == made.version + (change is changed)
                assert await _reads(admin, partial(first.get, "s")) == (now, 1, 1)


@pytest.mark.parametrize("then", ["get", "touch", "claim"])
async def test_a_write_the_server_lost_is_not_answered_from_a_copy(
    own_server: RedisServer, then: str
) -> None:
    """Redis can lose a write it acknowledged (a restart without persistence, a failover to a
    replica the write had not reached). Another instance's write can then bring the record to the
    version of this instance's copy with other content: copies made over the lost server's
    connection are not used, so a get, a touch and a claim answer what is stored."""
    prefix = unique_prefix()
    here, there = (RedisStore(own_server.url, prefix=prefix, timeout=3) for _ in range(2))
    first, other = (SessionHub(s, auto_expire=False) for s in (here, there))
    async with first, other:
        await first.create("s", labels={"k": "kept"})
        client = RedisClient(RedisAddress(port=own_server.port))
        await client.call("SAVE")  # what the restarted server will have
        await client.close()
        lost = await first.update("s", labels={"k": "lost"})
        await _shutdown(own_server)  # NOSAVE: the update is lost
        await asyncio.to_thread(own_server.restart)
        stored = await other.update("s", labels={"k": "stored"})
        assert stored.version == lost.version  # the version of the copy held by 'first'
        if then == "get":
            got = await first.get("s")
        elif then == "touch":
            got = await first.touch("s")
            assert got.version == stored.version + 1
        else:
            claimed = await here.claim_end("s", "ended", time.time(), {})
            assert claimed is not None
            got = claimed
            assert (await first.get("s")).end_reason == "ended"
        assert got.labels == {"k": "stored"}
        assert (await first.get("s")).labels == {"k": "stored"}


async def test_gets_stop_reading_versions_first_while_copies_are_mostly_stale(
    redis_server: RedisServer, admin: RedisClient
) -> None:
    """Hubs that share the sessions' work (no sticky sessions) find their copies stale: then a
    get reads the record at once (one round trip) until copies are found current again."""
    prefix = unique_prefix()
    first = SessionHub(RedisStore(redis_server.url, prefix=prefix), auto_expire=False)
    other = SessionHub(RedisStore(redis_server.url, prefix=prefix), auto_expire=False)
    async with first, other:
        await first.create("s")
        await other.touch("s")
        assert (await _reads(admin, lambda: first.get("s")))[1:] == (1, 1)  # a stale copy
        await other.touch("s")
        assert (await _reads(admin, lambda: first.get("s")))[1:] == (0, 1)  # the record at once
        calls = [(await _reads(admin, lambda: first.get("s")))[1:] for _ in range(9)]
        assert calls == [(0, 1)] * 8 + [(1, 0)]  # the copy is current: versions first again


async def test_a_foreign_key_under_a_session_id_counts_as_taken(
    redis_server: RedisServer, admin: RedisClient
) -> None:
    """Something else stored under a session's key (a string, or a hash no store wrote) is not
    overwritten by a create, with or without checks to make: the id is taken."""
    prefix = unique_prefix()
    await admin.call("SET", f"{prefix}s:{{plain}}", "not a record")
    await admin.call("SET", f"{prefix}s:{{checked}}", "not a record")
    store = RedisStore(redis_server.url, prefix=prefix)
    async with SessionHub(store, poll_interval=3600, limits=Limits(max_sessions=10)) as limited:
        with pytest.raises(DuplicateSession):
            await limited.create("checked")
    async with SessionHub(RedisStore(redis_server.url, prefix=prefix), poll_interval=3600) as hub:
        with pytest.raises(DuplicateSession):
            await hub.create("plain")
        assert await hub.count() == 0
        assert await admin.call("GET", f"{prefix}s:{{plain}}") == "not a record"


# records written before the JSON nesting bound existed

DEEP = "[" * 5000 + "]" * 5000  # msgspec (like any recursive decoder) cannot decode this


async def _poison(admin: RedisClient, prefix: str, session_id: str) -> None:
    """Give a session details nested 5,000 deep and make it due, add an event carrying it, and
    give session ``a`` such a data value and history record, as a sessionhub without the nesting
    bound could have written them (a change: the version goes up)."""
    key = f"{prefix}s:{{{session_id}}}"
    await admin.call("HSET", key, 'd:"v"', DEEP, "dq", "0")
    await admin.call("HINCRBY", key, "v", 1)
    await admin.call("ZADD", f"{prefix}deadlines", 0, session_id)
    flat = await admin.call("HGETALL", key)
    snapshot = msgspec.msgpack.encode(flat)
    await admin.call("XADD", f"{prefix}events", "*", "k", "updated", "a", "0", "s", snapshot)
    await admin.call("HSET", f"{prefix}d:{{a}}", "deep", "1:" + DEEP)
    await admin.call("RPUSH", f"{prefix}h:{{a}}", "call\t0\t" + DEEP)


async def test_a_record_that_cannot_be_decoded_breaks_nothing_else(
    redis_server: RedisServer, admin: RedisClient
) -> None:
    clock = ManualClock()
    prefix = unique_prefix()
    store = RedisStore(redis_server.url, prefix=prefix)
    async with SessionHub(store, clock=clock, auto_expire=False, idle_timeout=60) as hub:
        for sid in ("a", "poisoned", "z"):
            await hub.create(sid)
        await hub.data("a").set("k", 1)
        await hub.history("a").append("call", 1)
        events = hub.subscribe()
        await _poison(admin, prefix, "poisoned")

        # the stream goes on past the poisoned event
        await hub.create("b")
        event = await next_event(events)
        assert (event.kind, event.session is not None and event.session.id) == ("created", "b")

        await assert_the_others_still_work(hub, clock, damaged_at_least=4)
        await events.aclose()


# the Lua's own shortcuts (issue 12: less Redis CPU per operation) change nothing visible


def _timed(sid: str, now: float, **timeouts: float) -> Session:
    return active_session(
        sid,
        created_at=now,
        idle_timeout=timeouts.get("idle"),
        ttl=timeouts.get("ttl"),
        labels={"k": "v"},
        details={"d": 1},
    )


@pytest.mark.parametrize(
    "timeouts", [{"idle": 10.0}, {"ttl": 30.0}, {"idle": 10.0, "ttl": 12.0}, {}]
)
async def test_a_touch_writes_what_a_general_change_writes(
    redis_server: RedisServer, admin: RedisClient, timeouts: dict[str, float]
) -> None:
    """A plain touch runs a function of its own; a touch with an expected version runs the general
    one. Both leave the same record, stored and returned."""
    prefix = unique_prefix()
    store = RedisStore(redis_server.url, prefix=prefix)
    await store.open()
    try:
        now = 1_750_000_000.0
        for sid in ("fast", "general"):
            await store.create(_timed(sid, now, **timeouts), CreateRules())
        for step in (1.0, 5.0):
            fast = await store.modify("fast", Change(now=now + step, touch=True))
            general = await store.modify(
                "general",
                Change(now=now + step, touch=True, expected_version=fast.version - 1),
            )
            assert msgspec.structs.replace(fast, id="general") == general
            assert fast == await store.get("fast")
            stored = await record_fields(admin, prefix, "fast")
            assert stored == {**await record_fields(admin, prefix, "general"), "id": "fast"}
        assert (fast.expires_at is None) == (timeouts == {})
    finally:
        await store.close()


async def test_a_touch_of_a_session_being_ended_or_gone_is_refused(
    redis_server: RedisServer,
) -> None:
    from sessionhub import SessionNotFound

    store = RedisStore(redis_server.url, prefix=unique_prefix())
    await store.open()
    try:
        now = 1_750_000_000.0
        await store.create(_timed("ending", now, idle=10.0), CreateRules())
        assert await store.claim_end("ending", "ended", now, MOVES) is not None
        with pytest.raises(SessionNotFound):
            await store.modify("ending", Change(now=now + 1, touch=True))
        with pytest.raises(SessionNotFound):
            await store.modify("never", Change(now=now + 1, touch=True))
    finally:
        await store.close()


async def test_ends_leave_no_claim_or_deadline_behind(
    redis_server: RedisServer, admin: RedisClient
) -> None:
    """Claims keep the session's ``dq`` field until the end is finished, and one expiry pass takes
    its due entries out of the deadline index at once: a deadline that activity moved goes back
    in at its new time, the others end with nothing of their claim or deadline left."""
    prefix = unique_prefix()
    store = RedisStore(redis_server.url, prefix=prefix)
    await store.open()
    try:
        now = 1_750_000_000.0
        for sid in ("due-1", "due-2", "moved", "ended-by-hand"):
            await store.create(_timed(sid, now, idle=10.0), CreateRules())
        await store.modify("moved", Change(now=now + 8, touch=True))  # due at now + 18 now
        claimed = await store.claim_end("ended-by-hand", "ended", now + 1, MOVES)
        assert claimed is not None
        assert claimed.state == "TERMINATING"
        expired = await store.claim_expired(now + 11, MOVES, 100)
        assert sorted(s.id for s in expired) == ["due-1", "due-2"]
        assert all(s.end_reason == "expired" and s.state == "TERMINATING" for s in expired)
        queued = await admin.call("ZRANGE", prefix + "deadlines", 0, -1, "WITHSCORES")
        assert (queued[0], float(queued[1])) == ("moved", now + 18)
        assert await store.next_deadline() == now + 18
        for sid, retain in (("due-1", now + 60), ("due-2", now), ("ended-by-hand", now + 60)):
            ended = await store.finish_end(sid, now + 12, "CLEANED", retain)
            assert ended is not None
            assert (ended.state, ended.ended_at, ended.expires_at) == ("CLEANED", now + 12, None)
            assert await store.get(sid) == (ended if retain > now else None)
        for sid in ("due-1", "ended-by-hand"):
            assert not {"dq", "ea", "cb"} & set(await record_fields(admin, prefix, sid))
        assert await record_fields(admin, prefix, "due-2") == {}
        assert await admin.call("HGETALL", prefix + "claims") == []
        assert await store.census() == {("default", "ACTIVE"): 1}
    finally:
        await store.close()
