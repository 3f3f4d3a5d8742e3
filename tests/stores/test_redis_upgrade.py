"""A rolling upgrade: the previous release's Redis store and this one share one Redis and one
prefix. Each reads what the other wrote and carries on from it (touches from held copies, changes,
claims and ends), whichever created the session: creates now restore their records whole, and a
restored record's ``ce`` is not an event id, so the previous release must take it as it is."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest

from sessionhub import DuplicateSession
from sessionhub.stores._base import Change
from sessionhub.stores.redis import RedisStore

from ..earlier_store import redis_store_at
from ..redis_server import RedisServer
from .redis_records import NOW
from .test_redis_layout import _shapes

# The last release before creates restored their records whole. Its redis.py runs on today's rest
# of the package: move it forward when that no longer works, or when writes change again.
PREVIOUS = "740ad95"


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    earlier = redis_store_at(PREVIOUS)
    assert earlier is not None, f"this test reads commit {PREVIOUS} from git: a clone with history"
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    new, old = RedisStore(redis_server.url, prefix=prefix), earlier(redis_server.url, prefix=prefix)
    await new.open()
    await old.open()
    yield new, old
    await new.close()
    await old.close()


@pytest.mark.parametrize("creator", ["new", "old"])
async def test_the_previous_release_and_this_one_carry_on_each_others_sessions(
    stores: tuple[RedisStore, RedisStore], creator: str
) -> None:
    new, old = stores
    first, other = (new, old) if creator == "new" else (old, new)
    for shape, rules in _shapes(NOW):
        session = msgspec.structs.replace(shape, id=f"{creator}-{shape.id}")
        assert await first.create(session, rules) == session
        with pytest.raises(DuplicateSession):
            await other.create(session, rules)
        assert await other.get(session.id) == session
        touched = await other.modify(session.id, Change(now=NOW + 1, touch=True))
        assert await first.get(session.id) == touched  # its copy is stale: the record is read
        changed = await first.modify(session.id, Change(now=NOW + 2, labels={"k": "v"}))
        assert changed.version == touched.version + 1
        again = await other.modify(session.id, Change(now=NOW + 3, touch=True))
        assert again.labels["k"] == "v"
        assert await first.get(session.id) == again
        claimed = await first.claim_end(session.id, "ended", NOW + 4, {})
        assert claimed is not None
        await first.finish_end(session.id, NOW + 4, "ENDED", NOW + 4)
        assert await other.get(session.id) is None
        assert await first.get(session.id) is None
    assert await new.census() == await old.census()
