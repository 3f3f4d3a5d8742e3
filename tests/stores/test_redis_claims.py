"""Claims and their ends after issue 12's Redis CPU work. The claims hash names the claimer, the
record no longer does (``cb``, which nothing read); claims written by earlier versions, with
``cb``, are still finished and taken over cleanly. A claim (``claim_end``) or an end (``finish``)
made from the copy this store instance holds of a session must leave exactly what one made from
the stored record leaves, and the copy must be used only for that session at that version."""

from __future__ import annotations

import msgspec
import pytest

from sessionhub import Session, SessionHub
from sessionhub.stores import Change, CreateRules
from sessionhub.stores._resp import RedisClient
from sessionhub.stores.redis import RedisStore, _decode_session

from ..redis_server import RedisServer
from .redis_records import MOVES, NOW, active_session, opened_stores, record_fields, unique_prefix


def _session(sid: str) -> Session:
    return active_session(sid, user_id="u1", labels={"team": "red"})


@pytest.mark.parametrize("how", ["claim_end", "claim_expired"])
async def test_a_claim_names_its_claimer_in_the_claims_hash_only(
    redis_server: RedisServer, admin: RedisClient, how: str
) -> None:
    prefix = unique_prefix("c")
    store = RedisStore(redis_server.url, prefix=prefix)
    await store.open()
    try:
        await store.create(_session("s1"), CreateRules())
        if how == "claim_end":
            claimed = await store.claim_end("s1", "ended", NOW + 1, MOVES)
            assert claimed is not None
        else:
            [claimed] = await store.claim_expired(NOW + 11, MOVES, 10)
        record = await record_fields(admin, prefix, "s1")
        assert (record["st"], record["er"]) == ("TERMINATING", claimed.end_reason)
        assert "cb" not in record
        assert await admin.call("HGETALL", prefix + "claims") == ["s1", store._claimer]
        assert await store.get("s1") == claimed
    finally:
        await store.close()


@pytest.mark.parametrize("held", [True, False])
async def test_a_claim_written_by_an_earlier_version_ends_without_its_claimer_field(
    redis_server: RedisServer, admin: RedisClient, held: bool
) -> None:
    """An earlier version's claim left ``cb`` in the record (and took-over claims rewrote it):
    the end drops it, whether this store finishes from the claim it holds or from the record."""
    prefix = unique_prefix("c")
    store = RedisStore(redis_server.url, prefix=prefix)
    await store.open()
    try:
        await store.create(_session("s1"), CreateRules())
        assert await store.claim_end("s1", "ended", NOW + 1, MOVES) is not None
        await admin.call("HSET", f"{prefix}s:{{s1}}", "cb", "an-earlier-hub")
        if not held:
            store._held.clear()
        ended = await store.finish_end("s1", NOW + 2, "CLEANED", NOW + 60)
        assert ended is not None
        assert (ended.state, ended.ended_at, ended.expires_at) == ("CLEANED", NOW + 2, None)
        record = await record_fields(admin, prefix, "s1")
        assert not {"cb", "ea", "dq"} & set(record)
        assert await store.get("s1") == ended
        assert await admin.call("HGETALL", prefix + "claims") == []
    finally:
        await store.close()


async def test_a_claim_taken_over_from_a_stopped_earlier_hub_keeps_its_record(
    redis_server: RedisServer, admin: RedisClient
) -> None:
    """A claim whose claimer stopped (its heartbeat key gone) is taken over by the next sweep:
    the claims hash names the new claimer; the record, ``cb`` of an earlier version included, is
    left as it was, and the end drops ``cb``."""
    prefix = unique_prefix("c")
    store = RedisStore(redis_server.url, prefix=prefix)
    await store.open()
    try:
        await store.create(_session("s1"), CreateRules())
        claimed = await store.claim_end("s1", "ended", NOW + 1, MOVES)
        assert claimed is not None
        key = f"{prefix}s:{{s1}}"
        await admin.call("HSET", key, "cb", "gone-hub")
        await admin.call("HSET", prefix + "claims", "s1", "gone-hub")  # no heartbeat key
        before = await record_fields(admin, prefix, "s1")
        store._held.clear()
        [taken] = await store.claim_expired(NOW + 2, MOVES, 10)
        assert taken == claimed
        assert await record_fields(admin, prefix, "s1") == before
        assert await admin.call("HGETALL", prefix + "claims") == ["s1", store._claimer]
        ended = await store.finish_end("s1", NOW + 3, "CLEANED", NOW + 3)
        assert ended is not None
        assert await record_fields(admin, prefix, "s1") == {}
    finally:
        await store.close()


async def _transitioned(raw: RedisClient, prefix: str) -> dict[str, Session]:
    """The sessions of the stream's ``transitioned`` events, by id (one each)."""
    out: dict[str, Session] = {}
    for _, values in await raw.call("XRANGE", prefix + "events", "-", "+"):
        if values[1] == b"transitioned":
            session = _decode_session(msgspec.msgpack.decode(values[5], type=list[str]))
            assert session.id not in out
            out[session.id] = session
    return out


async def test_a_claim_of_a_session_known_here_is_what_a_claim_from_the_record_gives(
    redis_server: RedisServer, admin: RedisClient, raw: RedisClient
) -> None:
    """An end claimed by the instance that last wrote the session sends the claimed snapshot
    instead of reading the record (issue 12); the claimed session, the stored record, the event,
    the census and the indexes are those of a claim from the stored record."""
    prefix = unique_prefix("c")
    store = RedisStore(redis_server.url, prefix=prefix)
    elsewhere = RedisStore(redis_server.url, prefix=prefix)  # knows nothing of either session
    await store.open()
    await elsewhere.open()
    try:
        for sid in ("known", "unknown"):
            await store.create(_session(sid), CreateRules())
            await store.modify(sid, Change(now=NOW + 1, touch=True))
        assert set(store._known) == {"known", "unknown"}
        store._known.pop("unknown")
        known = await store.claim_end("known", "ended", NOW + 2, MOVES)
        unknown = await store.claim_end("unknown", "ended", NOW + 2, MOVES)
        assert known is not None
        assert unknown is not None
        assert known == msgspec.structs.replace(unknown, id="known")
        assert await elsewhere.get("known") == known
        stored = {sid: await record_fields(admin, prefix, sid) for sid in ("known", "unknown")}
        assert {**stored["unknown"], "id": "known"} == stored["known"]
        assert await _transitioned(raw, prefix) == {"known": known, "unknown": unknown}
        assert await admin.call("ZRANGE", prefix + "deadlines", 0, -1) == []
        assert await store.census() == {("default", "TERMINATING"): 2}
        assert sorted(await admin.call("HKEYS", prefix + "claims")) == ["known", "unknown"]
        assert "known" not in store._known
        # Both finish alike (from the claim held here).
        ends = await store.finish_ends([("known", NOW + 60), ("unknown", NOW + 60)], NOW + 3, "X")
        assert ends[1] is not None
        assert ends[0] == msgspec.structs.replace(ends[1], id="known")
    finally:
        await store.close()
        await elsewhere.close()


async def test_a_claim_of_a_session_changed_elsewhere_reads_the_record(
    redis_server: RedisServer, admin: RedisClient
) -> None:
    """The copy known here is used only at its version: a session another instance changed since
    (or ended, or claimed) is claimed from what is stored, or not at all."""
    prefix = unique_prefix("c")
    store, other = await opened_stores(redis_server.url, prefix, 2)
    try:
        for sid in ("changed", "claimed", "ended"):
            await store.create(_session(sid), CreateRules())
        await other.modify("changed", Change(now=NOW + 5, labels={"team": "blue"}))
        assert await other.claim_end("claimed", "by-other", NOW + 1, MOVES) is not None
        assert await other.claim_end("ended", "by-other", NOW + 1, MOVES) is not None
        assert await other.finish_end("ended", NOW + 1, "CLEANED", NOW + 60) is not None
        claimed = await store.claim_end("changed", "ended", NOW + 6, MOVES)
        assert claimed is not None
        assert claimed.labels == {"team": "blue"}
        assert claimed == await other.get("changed")
        assert await store.claim_end("claimed", "ended", NOW + 6, MOVES) is None
        assert await store.claim_end("ended", "ended", NOW + 6, MOVES) is None
        assert await admin.call("HGET", prefix + "claims", "claimed") == other._claimer
        assert await store.census() == {("default", "TERMINATING"): 2}
    finally:
        await store.close()
        await other.close()


@pytest.mark.parametrize("requests", [0, 2])
async def test_an_end_with_requests_in_flight_is_kept_with_none(
    redis_server: RedisServer, admin: RedisClient, requests: int
) -> None:
    """An end finished from the claim held here writes ``ar`` only when it was not 0 already: the
    kept record and the session returned are those of an end finished from the stored record."""
    prefix = unique_prefix("c")
    store = RedisStore(redis_server.url, prefix=prefix)
    await store.open()
    try:
        for sid in ("held", "read"):
            await store.create(_session(sid), CreateRules())
            if requests:
                await store.modify(sid, Change(now=NOW + 1, requests=requests))
            assert await store.claim_end(sid, "ended", NOW + 2, MOVES) is not None
        assert "read" in store._held
        store._held.pop("read")
        [held, read] = await store.finish_ends(
            [("held", NOW + 60), ("read", NOW + 60)], NOW + 3, "X"
        )
        assert read is not None
        assert held == msgspec.structs.replace(read, id="held")
        assert held.active_requests == 0
        stored = {sid: await record_fields(admin, prefix, sid) for sid in ("held", "read")}
        assert stored["held"] == {**stored["read"], "id": "held"}
        # A record without 'ar' (none ever in flight: create leaves it out) reads as 0.
        assert stored["held"].get("ar") == ("0" if requests else None)
        assert await store.get("held") == held
    finally:
        await store.close()


def _again(sid: str) -> Session:
    """``sid`` created again later, for another user and team (at version 1, as the first was)."""
    return msgspec.structs.replace(
        _session(sid), created_at=NOW + 5, updated_at=NOW + 5, last_activity_at=NOW + 5,
        expires_at=NOW + 15, user_id="u2", labels={"team": "blue"},
    )  # fmt: skip


async def test_a_session_created_again_under_its_id_is_not_taken_for_the_one_known_here(
    redis_server: RedisServer, admin: RedisClient
) -> None:
    """A copy known here (claim_end) or a claim held here (finish) of a session that ended and was
    created again elsewhere under the same id, at the same version: the creation time tells them
    apart, and the session stored is claimed and ended, with its own indexes and census."""
    prefix = unique_prefix("c")
    here, there = await opened_stores(redis_server.url, prefix, 2)
    try:
        for sid in ("known", "held"):
            await here.create(_session(sid), CreateRules())
        assert await here.claim_end("held", "ended", NOW + 1, MOVES) is not None
        for sid in ("known", "held"):
            if sid == "known":
                assert await there.claim_end(sid, "ended", NOW + 2, MOVES) is not None
            await there.finish_end(sid, NOW + 2, "CLEANED", NOW + 2)  # not kept
            await there.create(_again(sid), CreateRules())
        claimed = await there.claim_end("held", "again", NOW + 6, MOVES)
        assert claimed is not None
        assert claimed.version == here._held["held"][0].version  # the same version, another session
        known = await here.claim_end("known", "ended", NOW + 6, MOVES)
        assert known is not None
        assert (known.user_id, known.labels, known.created_at) == ("u2", {"team": "blue"}, NOW + 5)
        assert known == await there.get("known")
        assert await here.census() == {("default", "TERMINATING"): 2}
        for sid in ("known", "held"):
            ended = await here.finish_end(sid, NOW + 7, "CLEANED", NOW + 60)
            assert ended is not None
            assert (ended.user_id, ended.labels) == ("u2", {"team": "blue"})
        hub = SessionHub(here, auto_expire=False)
        for query in ({"user_id": "u2"}, {"labels": {"team": "blue"}}, {}):
            assert await hub.count(**query) == 0
        assert await here.census() == {}
        assert await admin.call("HGETALL", prefix + "claims") == []
    finally:
        await here.close()
        await there.close()
