"""A touch of a session this store instance knows at its stored version is written from that copy
(the function reads the version, creation time and queued deadline, not the record). The copy
must be used only for that session at that version, and the result must be what a touch of the
stored record makes: the record returned, the record stored and the deadline index."""

from __future__ import annotations

import pytest

from sessionhub import Session
from sessionhub.stores import Change, CreateRules
from sessionhub.stores._resp import RedisClient
from sessionhub.stores.redis import RedisStore

from ..redis_server import RedisServer
from .redis_records import NOW, active_session, opened_stores, unique_prefix


def _session(sid: str, *, created_at: float = NOW, team: str = "red") -> Session:
    return active_session(sid, created_at=created_at, labels={"team": team})


async def _stores(redis_server: RedisServer) -> tuple[RedisStore, RedisStore]:
    here, there = await opened_stores(redis_server.url, unique_prefix(), 2)
    return here, there


async def test_a_touch_after_a_change_elsewhere_returns_the_stored_record(
    redis_server: RedisServer,
) -> None:
    here, there = await _stores(redis_server)
    try:
        await here.create(_session("s1"), CreateRules())
        await here.modify("s1", Change(now=NOW + 1, touch=True))  # known here
        await there.modify("s1", Change(now=NOW + 2, labels={"team": "blue"}))
        touched = await here.modify("s1", Change(now=NOW + 3, touch=True))
        assert touched.labels == {"team": "blue"}
        assert touched == await there.get("s1")
        assert (touched.version, touched.last_activity_at, touched.expires_at) == (
            4,
            NOW + 3,
            NOW + 13,
        )
    finally:
        await here.close()
        await there.close()


async def test_a_touch_of_a_session_created_again_elsewhere_is_of_the_new_one(
    redis_server: RedisServer,
) -> None:
    """Ended and created again under its id by another instance, at the same version as the copy
    held here: the creation time tells them apart."""
    here, there = await _stores(redis_server)
    try:
        await here.create(_session("s1"), CreateRules())
        assert (await there.claim_end("s1", "ended", NOW + 1, {})) is not None
        await there.finish_end("s1", NOW + 1, "ENDED", NOW + 1)
        await there.create(_session("s1", created_at=NOW + 2, team="blue"), CreateRules())
        touched = await here.modify("s1", Change(now=NOW + 3, touch=True))
        assert (touched.created_at, touched.labels, touched.version) == (
            NOW + 2,
            {"team": "blue"},
            2,
        )
        assert touched == await there.get("s1")
    finally:
        await here.close()
        await there.close()


@pytest.mark.parametrize("known", [True, False])
async def test_a_touch_queues_a_session_missing_from_the_deadline_index(
    redis_server: RedisServer, admin: RedisClient, known: bool
) -> None:
    """A record without its queued deadline ('dq': written before it existed) enters the index at
    its new deadline, from the copy held here or from the record."""
    here, there = await _stores(redis_server)
    try:
        await here.create(_session("s1"), CreateRules())
        await here.modify("s1", Change(now=NOW + 1, touch=True))
        key = f"{here.prefix}s:{{s1}}"
        await admin.call("HDEL", key, "dq")
        await admin.call("ZREM", f"{here.prefix}deadlines", "s1")
        store = here if known else there
        touched = await store.modify("s1", Change(now=NOW + 3, touch=True))
        assert touched.expires_at == NOW + 13
        assert float(await admin.call("ZSCORE", f"{here.prefix}deadlines", "s1")) == NOW + 13
        assert [float(x) for x in await admin.call("HMGET", key, "ea", "dq")] == [NOW + 13] * 2
        assert touched == await there.get("s1")
        [claimed] = await here.claim_expired(NOW + 14, {}, 10)
        assert claimed.id == "s1"
    finally:
        await here.close()
        await there.close()
