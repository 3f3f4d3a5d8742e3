"""The Redis store's index layout as issue 12 (Redis CPU per operation) left it.

``create`` no longer writes the ``all`` / ``all:<ns>`` indexes (two of its index writes, which most
sessions, ended without a retention, never needed): an ended session kept for a retention is listed
from ``ended`` / ``ended:<ns>``, written when it ends, and ``find``/``count`` with
``include_ended`` merge those with the live indexes in id (byte) order. A store of an earlier
version listed live and retained sessions in ``all``: such data still reads, each session once, and
its ``all`` entries go as those sessions end or are purged.

History reads without a kind return one range that the store numbers itself. And ``create`` writes the record and packs the event's snapshot from arguments the store prepared:
the ``created`` event carries exactly the stored session.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import pytest

from sessionhub import DuplicateSession, ManualClock, Session, SessionHub
from sessionhub.stores import CreateRules
from sessionhub.stores._resp import RedisAddress, RedisClient
from sessionhub.stores.memory import MemoryStore
from sessionhub.stores.redis import RedisStore

from ..redis_server import RedisServer

WAIT = 10.0  # a safety net for events that must come, not an assertion about speed
# Byte order differs from the collation of most locales (upper case before lower case,
# punctuation among letters rather than ignored).
IDS = ["B", "a", "Z1", "~e", "b", "A", "z", "a-z", "0", "_x", "a0", "Ab"]


def by_bytes(ids: list[str]) -> list[str]:
    return sorted(ids, key=lambda sid: sid.encode())


async def all_pages(hub: SessionHub, namespace: str | None, limit: int) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        page = await hub.find(namespace=namespace, include_ended=True, limit=limit, cursor=cursor)
        seen += [session.id for session in page.items]
        if page.cursor is None:
            return seen
        cursor = page.cursor


async def test_include_ended_pages_merge_live_and_retained_in_byte_order(
    redis_server: RedisServer, admin: RedisClient
) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    clock = ManualClock()
    store = RedisStore(redis_server.url, prefix=prefix)
    async with SessionHub(store, clock=clock, retention=30, poll_interval=3600) as hub:
        for sid in IDS:
            await hub.create(id=sid, namespace="ns")
        await hub.create(id="other", namespace="elsewhere")
        ended = IDS[::2]
        for sid in ended:
            assert await hub.end(sid) is True
        assert await admin.call("EXISTS", prefix + "all", prefix + "all:ns") == 0
        assert by_bytes(await admin.call("ZRANGE", prefix + "ended:ns", 0, -1)) == by_bytes(ended)
        for limit in (1, 3, 100):
            assert await all_pages(hub, "ns", limit) == by_bytes(IDS)
            assert await all_pages(hub, None, limit) == by_bytes([*IDS, "other"])
        assert await hub.count(namespace="ns", include_ended=True) == len(IDS)
        assert await hub.count(include_ended=True) == len(IDS) + 1
        assert await hub.count(namespace="ns") == len(IDS) - len(ended)
        ended_now = await hub.count(namespace="ns", state="CLEANED", include_ended=True)
        assert ended_now == len(ended)
        clock.advance(31)
        assert await hub.count(namespace="ns", include_ended=True) == len(IDS) - len(ended)
        assert await admin.call("EXISTS", prefix + "ended", prefix + "ended:ns") == 0


async def test_data_of_earlier_versions_reads_once_and_drains(
    redis_server: RedisServer, admin: RedisClient
) -> None:
    """Earlier versions put every session in ``all`` and ``all:<ns>`` at create and left retained
    ended ones there (not in ``ended``), and wrote no ``ce``: rebuilt here on data written by
    today's store. A record with ``ce`` was never in ``all``: its end leaves ``all`` alone."""
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    clock = ManualClock()
    store = RedisStore(redis_server.url, prefix=prefix)
    async with SessionHub(store, clock=clock, retention=30, poll_interval=3600) as hub:
        for sid in IDS:
            await hub.create(id=sid, namespace="ns", retention=0 if sid < "a" else 30)
        old_ended = IDS[:4]
        for sid in old_ended:
            assert await hub.end(sid) is True
        for sid in IDS:
            await admin.call("ZADD", prefix + "all", 0, sid)
            await admin.call("ZADD", prefix + "all:ns", 0, sid)
            await admin.call("HDEL", f"{prefix}s:{{{sid}}}", "ce")  # their records had none
        for sid in old_ended:  # an earlier version's end: retained ones stay in 'all' only
            await admin.call("ZREM", prefix + "ended", sid)
            await admin.call("ZREM", prefix + "ended:ns", sid)
        retained = [sid for sid in old_ended if sid >= "a"]
        gone = [sid for sid in old_ended if sid < "a"]
        for sid in gone:  # an earlier version's end without retention left nothing
            await admin.call("ZREM", prefix + "all", sid)
            await admin.call("ZREM", prefix + "all:ns", sid)
        readable = [sid for sid in IDS if sid not in gone]

        for limit in (2, 100):
            assert await all_pages(hub, "ns", limit) == by_bytes(readable)
            assert await all_pages(hub, None, limit) == by_bytes(readable)
        assert await hub.count(namespace="ns", include_ended=True) == len(readable)
        assert await hub.count(include_ended=True) == len(readable)

        # Today's ends and purge take the earlier version's entries out of 'all'.
        for sid in IDS[4:]:
            assert await hub.end(sid) is True
        listed = await hub.create(id="listed", namespace="ns", retention=0)
        await admin.call("ZADD", prefix + "all", 0, listed.id)  # as no version would list it
        assert await hub.end(listed.id) is True
        assert await admin.call("ZSCORE", prefix + "all", listed.id) == "0"
        await admin.call("ZREM", prefix + "all", listed.id)
        still = await admin.call("ZRANGE", prefix + "all:ns", 0, -1)
        assert by_bytes(still) == by_bytes([sid for sid in readable if sid >= "a"])
        assert await hub.count(namespace="ns", include_ended=True) == len(still)
        clock.advance(31)
        assert await store.purge(clock()) == len(still)
        assert await admin.call("EXISTS", prefix + "all", prefix + "all:ns") == 0
        assert await all_pages(hub, None, 100) == []
        assert retained  # the case above had retained sessions of the earlier version


async def test_the_created_event_carries_the_stored_session(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, prefix=f"t{uuid.uuid4().hex[:12]}:")
    async with SessionHub(store, retention=30, poll_interval=3600) as hub:
        events = hub.subscribe()
        subscribed = asyncio.create_task(anext(events))
        await asyncio.sleep(0)
        parent = await hub.create(id="parent")
        created = await hub.create(
            id="child",
            namespace="ns",
            user_id="u-1",
            parent_id="parent",
            labels={"role": "büro", "x": ""},
            details={"nested": {"a": [1, 2.5, None]}, "tab\there": "line\nbreak", "é": True},
            idle_timeout=None,
            ttl=60,
        )
        assert (await asyncio.wait_for(subscribed, WAIT)).session == parent
        event = await asyncio.wait_for(anext(events), WAIT)
        assert event.session == created == await hub.get("child")
        assert event.session.details["tab\there"] == "line\nbreak"
        await events.aclose()


async def test_create_stores_every_field_it_is_given(redis_server: RedisServer) -> None:
    """``create`` writes what a new session holds by default (updated and active when created,
    version 1, no request in flight) without being sent it: a session given other values (one
    imported, or made by another tool) is stored as given, not as a new one would be."""
    store = RedisStore(redis_server.url, prefix=f"t{uuid.uuid4().hex[:12]}:")
    await store.open()
    try:
        at = 1_700_000_000.25
        new = Session(
            id="new", state="ACTIVE", created_at=at, updated_at=at, last_activity_at=at,
            idle_timeout=60, expires_at=at + 60, user_id="u",
        )  # fmt: skip
        given = Session(
            id="given", state="SPAWNING", created_at=at, updated_at=at + 5,
            last_activity_at=at + 3, active_requests=2, version=7, labels={"v": "1"},
            counters={"ar": 0},
        )  # fmt: skip
        for session in (new, given):
            assert await store.create(session, CreateRules()) == session
            assert await store.get(session.id) == session
    finally:
        await store.close()


async def test_a_record_holds_requests_in_flight_only_once_there_were_some(
    redis_server: RedisServer,
) -> None:
    """A new record has no ``ar`` (every version reads its absence as no request in flight): a
    field fewer for a create to write and for ``get`` to read. Touches and changes that leave
    the count at 0 do not add it; tracking a request does, and it reads back at every step."""
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    admin = RedisClient(RedisAddress(port=redis_server.port), name="test-admin")
    store = RedisStore(redis_server.url, prefix=prefix)
    async with SessionHub(store, poll_interval=3600) as hub:
        session = await hub.create("s", user_id="u", idle_timeout=60)

        async def stored_requests() -> str | None:
            reply: str | None = await admin.call("HGET", prefix + "s:{s}", "ar")
            return reply

        assert await stored_requests() is None
        await hub.touch(session.id)
        await hub.update(session.id, details={"n": 1})
        assert await stored_requests() is None
        assert (await hub.get(session.id)).active_requests == 0
        async with hub.track_request(session.id):
            assert await stored_requests() == "1"
            assert (await hub.get(session.id)).active_requests == 1
        assert await stored_requests() == "0"
        assert (await hub.get(session.id)).active_requests == 0
    await admin.close()


async def test_history_reads_match_the_memory_store(redis_server: RedisServer) -> None:
    """Unfiltered reads come back as one range the store numbers itself; every window of every
    direction, with and without a kind, equals the memory store's answer."""
    redis = RedisStore(redis_server.url, prefix=f"t{uuid.uuid4().hex[:12]}:")
    memory = MemoryStore()
    now = 1000.0
    session = Session(id="h", state="ACTIVE", created_at=now, updated_at=now, last_activity_at=now)
    records = [
        ("a" if i % 3 else "b", json.dumps({"i": i, "t": "x\ty"}).encode()) for i in range(9)
    ]
    await redis.open()
    try:
        for store in (redis, memory):
            await store.create(session, CreateRules())
            await store.history_append_many("h", records, now)
        windows = 0
        for after in (None, 0, 1, 4, 8, 9, 10, 30):  # the hub refuses a negative one
            for limit in (1, 2, 4, 9, 100):
                for newest_first in (False, True):
                    for kind in (None, "a", "b", "c"):
                        asked: dict[str, Any] = {
                            "after": after,
                            "limit": limit,
                            "newest_first": newest_first,
                            "kind": kind,
                        }
                        got = await redis.history_read("h", **asked, now=now)
                        assert got == await memory.history_read("h", **asked, now=now), asked
                        windows += bool(got)
        assert windows > 100  # most windows hold records: the comparison is not of empty lists
    finally:
        await redis.close()


async def _restores(admin: RedisClient) -> int:
    """RESTORE commands the server ran (refused ones not counted)."""
    stats: str = await admin.call("INFO", "commandstats")
    found = re.search(r"^cmdstat_restore:calls=(\d+)", stats, re.M)
    return int(found.group(1)) if found else 0


def _shapes(at: float) -> list[tuple[Session, CreateRules]]:
    """Sessions of every shape a create writes, each with the rules that send it through one of
    the two create functions (``create``, ``create_checked``)."""
    plain, checked = CreateRules(), CreateRules(max_sessions=1000, unique_labels=("slot",))
    common: dict[str, Any] = {"created_at": at, "updated_at": at, "last_activity_at": at}
    common["state"] = "CREATED"
    return [
        (Session(id="bare", **common), plain),
        (Session(id="timed", idle_timeout=60, expires_at=at + 60, **common), plain),
        (Session(id="owned", user_id="u-1", ttl=5, expires_at=at + 5, **common), checked),
        (
            Session(
                id="full",
                namespace="ns",
                user_id="42",
                labels={"slot": "7", "role": "büro", "n": "-1"},
                details={"nested": {"a": [1, 2.5, None]}, "é": True},
                counters={"c": 12, "d": -70000},
                retention=30,
                **common,
            ),
            checked,
        ),
        (
            Session(
                id="given",
                state="SPAWNING",
                created_at=at,
                updated_at=at + 5,
                last_activity_at=at + 3,
                active_requests=2,
                version=7,
                labels={"v": "1"},
            ),
            plain,
        ),
        (Session(id="long", labels={"big": "x" * 65}, **common), plain),  # too long to restore
        (Session(id="wide", labels={f"l{i}": "" for i in range(130)}, **common), checked),
        (Session(id="9007199254740993", user_id="-0", labels={"n": "01"}, **common), plain),
    ]


async def test_a_restored_record_is_the_one_its_fields_would_make(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A create restores its record whole (one RESTORE, see _hash_dump) where Redis allows it and
    writes the fields otherwise: a Redis user whose ACL lacks RESTORE gets the fields' form (a
    warning once). Both forms store the same fields, in the same order and encoding, but for
    ``ce``, which tells incarnations apart either way; a duplicate id is refused by both."""
    admin = RedisClient(RedisAddress(port=redis_server.port), name="test-admin")
    user = f"norestore{uuid.uuid4().hex[:8]}"
    await admin.call("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-restore")
    restoring = RedisStore(redis_server.url, prefix=f"t{uuid.uuid4().hex[:12]}:")
    fields_only = RedisStore(
        f"redis://{user}:pw@127.0.0.1:{redis_server.port}", prefix=f"t{uuid.uuid4().hex[:12]}:"
    )
    await restoring.open()
    await fields_only.open()
    try:
        at = 1_700_000_000.25
        for session, rules in _shapes(at):
            stored = []
            for store in (restoring, fields_only):
                restores = await _restores(admin)
                assert await store.create(session, rules) == session
                fits = store is restoring and session.id not in ("long", "wide")
                assert await _restores(admin) == restores + fits
                assert await store.get(session.id) == session
                with pytest.raises(DuplicateSession):
                    await store.create(session, rules)
                key = f"{store.prefix}s:{{{session.id}}}"
                flat = await admin.call("HGETALL", key)
                stored.append((flat, await admin.call("OBJECT", "ENCODING", key)))
            (restored, restored_as), (written, written_as) = stored
            assert restored[0::2] == written[0::2]  # the same fields, in the same order
            born = restored.index("ce") + 1
            assert restored[:born] + restored[born + 1 :] == written[:born] + written[born + 1 :]
            assert restored_as == written_as
            assert restored[born] != written[born]
        refusals = [r for r in caplog.records if "refused RESTORE" in r.getMessage()]
        assert len(refusals) == 1
        assert "can't run this command" in refusals[0].getMessage()
    finally:
        await restoring.close()
        await fields_only.close()
        await admin.call("ACL", "DELUSER", user)
        await admin.close()
