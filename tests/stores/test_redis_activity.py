"""Data and history writes are activity on their session: they read the fields the refresh needs
(not the record) and write what a touch writes. A record without its queued deadline ('dq':
written before it existed) enters the deadline index at its new deadline; a session without a
timeout gets no deadline; a session claimed for its end, or gone, accepts none."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from sessionhub import SessionNotFound
from sessionhub.stores import CreateRules
from sessionhub.stores._resp import RedisClient
from sessionhub.stores.redis import RedisStore

from ..redis_server import RedisServer
from .redis_records import NOW, active_session, unique_prefix

Write = Callable[[RedisStore, float], Awaitable[object]]

WRITES: dict[str, Write] = {
    "data_set": lambda store, at: store.data_set("s1", "k", b"1", None, at),
    "history_append": lambda store, at: store.history_append("s1", "message", b"{}", at),
    "history_append_many": lambda store, at: store.history_append_many(
        "s1", [("message", b"{}")], at
    ),
    "history_pop": lambda store, at: store.history_pop("s1", "message", "popped", at),
}


async def _store(redis_server: RedisServer, idle_timeout: float | None) -> RedisStore:
    store = RedisStore(redis_server.url, prefix=unique_prefix())
    await store.open()
    await store.create(active_session("s1", idle_timeout=idle_timeout), CreateRules())
    await store.history_append("s1", "message", b"{}", NOW)  # something to pop (version 2)
    return store


@pytest.mark.parametrize("write", sorted(WRITES))
async def test_activity_queues_a_session_missing_from_the_deadline_index(
    redis_server: RedisServer, admin: RedisClient, write: str
) -> None:
    store = await _store(redis_server, 10.0)
    try:
        key = f"{store.prefix}s:{{s1}}"
        await admin.call("HDEL", key, "dq")
        await admin.call("ZREM", f"{store.prefix}deadlines", "s1")
        await WRITES[write](store, NOW + 3)
        assert float(await admin.call("ZSCORE", f"{store.prefix}deadlines", "s1")) == NOW + 13
        assert [float(x) for x in await admin.call("HMGET", key, "ea", "dq")] == [NOW + 13] * 2
        session = await store.get("s1")
        assert session is not None
        assert (session.last_activity_at, session.expires_at, session.version) == (
            NOW + 3,
            NOW + 13,
            3,
        )
        [claimed] = await store.claim_expired(NOW + 14, {}, 10)
        assert claimed.id == "s1"
    finally:
        await store.close()


@pytest.mark.parametrize("write", sorted(WRITES))
async def test_activity_on_a_session_without_timeouts_leaves_it_without_a_deadline(
    redis_server: RedisServer, admin: RedisClient, write: str
) -> None:
    store = await _store(redis_server, None)
    try:
        await WRITES[write](store, NOW + 3)
        session = await store.get("s1")
        assert session is not None
        assert (session.last_activity_at, session.updated_at, session.version) == (
            NOW + 3,
            NOW + 3,
            3,
        )
        assert session.expires_at is None
        assert await admin.call("ZSCORE", f"{store.prefix}deadlines", "s1") is None
    finally:
        await store.close()


@pytest.mark.parametrize("write", sorted(WRITES))
async def test_activity_is_refused_while_ending_and_once_gone(
    redis_server: RedisServer, write: str
) -> None:
    store = await _store(redis_server, 10.0)
    try:
        assert await store.claim_end("s1", "ended", NOW + 1, {}) is not None
        with pytest.raises(SessionNotFound, match="being ended"):
            await WRITES[write](store, NOW + 2)
        await store.finish_end("s1", NOW + 2, "ENDED", NOW + 2)
        with pytest.raises(SessionNotFound) as gone:
            await WRITES[write](store, NOW + 3)
        assert "being ended" not in str(gone.value)
    finally:
        await store.close()
