"""What a claim writes into the record (issue 12's Redis CPU work): the claims hash names the
claimer, the record no longer does (``cb``, which nothing read). Claims written by earlier
versions, with ``cb``, must still be finished and taken over cleanly."""

from __future__ import annotations

import uuid

import pytest

from sessionhub import Session
from sessionhub.stores import CreateRules
from sessionhub.stores._resp import RedisClient
from sessionhub.stores.redis import RedisStore

from ..redis_server import RedisServer

MOVES = {"ACTIVE": "TERMINATING"}
NOW = 1_750_000_000.0


def _session(sid: str) -> Session:
    return Session(
        id=sid,
        state="ACTIVE",
        created_at=NOW,
        updated_at=NOW,
        last_activity_at=NOW,
        idle_timeout=10.0,
        expires_at=NOW + 10.0,
        user_id="u1",
        labels={"team": "red"},
    )


async def _fields(admin: RedisClient, prefix: str, sid: str) -> dict[str, str]:
    flat = await admin.call("HGETALL", f"{prefix}s:{{{sid}}}")
    return dict(zip(flat[::2], flat[1::2], strict=True))


@pytest.mark.parametrize("how", ["claim_end", "claim_expired"])
async def test_a_claim_names_its_claimer_in_the_claims_hash_only(
    redis_server: RedisServer, admin: RedisClient, how: str
) -> None:
    prefix = f"c{uuid.uuid4().hex[:12]}:"
    store = RedisStore(redis_server.url, prefix=prefix)
    await store.open()
    try:
        await store.create(_session("s1"), CreateRules())
        if how == "claim_end":
            claimed = await store.claim_end("s1", "ended", NOW + 1, MOVES)
            assert claimed is not None
        else:
            [claimed] = await store.claim_expired(NOW + 11, MOVES, 10)
        record = await _fields(admin, prefix, "s1")
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
    prefix = f"c{uuid.uuid4().hex[:12]}:"
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
        record = await _fields(admin, prefix, "s1")
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
    prefix = f"c{uuid.uuid4().hex[:12]}:"
    store = RedisStore(redis_server.url, prefix=prefix)
    await store.open()
    try:
        await store.create(_session("s1"), CreateRules())
        claimed = await store.claim_end("s1", "ended", NOW + 1, MOVES)
        assert claimed is not None
        key = f"{prefix}s:{{s1}}"
        await admin.call("HSET", key, "cb", "gone-hub")
        await admin.call("HSET", prefix + "claims", "s1", "gone-hub")  # no heartbeat key
        before = await _fields(admin, prefix, "s1")
        store._held.clear()
        [taken] = await store.claim_expired(NOW + 2, MOVES, 10)
        assert taken == claimed
        assert await _fields(admin, prefix, "s1") == before
        assert await admin.call("HGETALL", prefix + "claims") == ["s1", store._claimer]
        ended = await store.finish_end("s1", NOW + 3, "CLEANED", NOW + 3)
        assert ended is not None
        assert await _fields(admin, prefix, "s1") == {}
    finally:
        await store.close()
