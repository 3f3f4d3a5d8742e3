"""``SessionHubSession.get_items`` on every backend (the SQLite and Redis stores resolve the pop
and clear markers beside their read, the others walk ``history.read`` pages): long runs of pops
that reach past a page, bare markers, foreign records, damaged records, ended sessions, and on
Redis the round trips a read costs."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis as redis_py
from agents.items import TResponseInputItem

from sessionhub import SessionHub
from sessionhub.integrations._hubs import hub_name
from sessionhub.integrations.openai_agents import SessionHubSession
from sessionhub.stores.redis import RedisStore

from ..redis_server import RedisServer
from .conftest import OpenHub


def numbered(tag: str, n: int) -> list[TResponseInputItem]:
    return [{"role": "user", "content": f"{tag}{i}"} for i in range(n)]


async def check_reads(session: SessionHubSession, model: list[TResponseInputItem]) -> None:
    """Every limit the SDK may ask for reads the same as a plain list."""
    assert await session.get_items() == model
    for limit in (1, 2, 3, 7, 30, 51, 200, len(model), len(model) + 1):
        assert await session.get_items(limit) == model[-limit:], limit
    assert await session.get_items(0) == []
    assert await session.get_items(-1) == model


async def test_reads_past_long_runs_of_pops(open_agent_hub: OpenHub) -> None:
    """Runs of pops longer than a read's page, between runs of adds, as a list would."""
    async with open_agent_hub() as hub:
        session = SessionHubSession(f"pops-{uuid.uuid4().hex}", hub)
        model: list[TResponseInputItem] = []
        for round_, (adds, pops) in enumerate([(120, 70), (5, 3), (60, 59), (2, 40), (90, 1)]):
            fresh = numbered(f"{round_}.", adds)
            await session.add_items(fresh)
            model.extend(fresh)
            for _ in range(pops):
                assert await session.pop_item() == (model.pop() if model else None)
            await check_reads(session, model)
            # a second handle (another process has one) reads the same
            assert await SessionHubSession(session.session_id, hub).get_items(50) == model[-50:]


async def test_reads_of_more_items_than_a_page(open_agent_hub: OpenHub) -> None:
    """A limit past the 1000 records one read takes: a fresh handle's read (nothing hidden
    expected) and one after pops read on past the first page."""
    async with open_agent_hub() as hub:
        session = SessionHubSession(f"long-{uuid.uuid4().hex}", hub)
        model = numbered("l", 1100)
        await session.add_items(model[:600])
        await session.add_items(model[600:])
        fresh = SessionHubSession(session.session_id, hub)
        assert await fresh.get_items(1050) == model[-1050:]
        assert await fresh.get_items() == model
        assert await SessionHubSession(session.session_id, hub).get_items(2**70) == model
        for _ in range(3):
            assert await session.pop_item() == model.pop()
        assert await SessionHubSession(session.session_id, hub).get_items(1050) == model[-1050:]
        assert await session.get_items(1050) == model[-1050:]


async def test_reads_with_bare_markers_clears_and_foreign_records(open_agent_hub: OpenHub) -> None:
    """Bare ``pop`` markers (appended by hand, as servers did before the pop verb) remove the
    newest item left; a ``clear`` hides everything before it; reads pass over records of other
    kinds (``pop_item`` stops at them: the store's stack, unchanged here)."""
    async with open_agent_hub() as hub:
        session = SessionHubSession(f"bare-{uuid.uuid4().hex}", hub)
        history = hub.history(hub_name(session.session_id))
        await session.add_items(numbered("old", 5))
        await session.clear_session()
        assert await session.get_items() == []
        model = numbered("a", 8)
        await session.add_items(model)
        assert await session.pop_item() == model.pop()
        await history.append("note", {"not": "an item"})
        for _ in range(3):
            await history.append("pop")
            model.pop()
        await history.append("note", [1, 2])
        await check_reads(session, model)
        await history.append("pop", {"below": "nonsense"})  # a bare marker all the same
        model.pop()
        await check_reads(session, model)


async def test_reads_of_an_unknown_or_ended_conversation(open_agent_hub: OpenHub) -> None:
    async with open_agent_hub() as hub:
        assert await SessionHubSession(f"never-{uuid.uuid4().hex}", hub).get_items(50) == []
        session = SessionHubSession(f"ended-{uuid.uuid4().hex}", hub)
        await session.add_items(numbered("x", 3))
        assert await session.get_items(2) == numbered("x", 3)[1:]
        assert await session.end()
        assert await session.get_items() == []
        assert await session.get_items(50) == []
        assert await session.pop_item() is None


TORN = '{"role": "user", "cont'  # an item's JSON cut short


@asynccontextmanager
async def damageable(
    store: str, tmp_path: Path, redis_server: RedisServer
) -> AsyncIterator[tuple[SessionHub, Callable[[list[int]], None]]]:
    """A hub on ``store`` and a function tearing the JSON of the records ``seqs`` of the
    conversation "damaged", written behind the store's back."""
    history = hub_name("damaged")
    if store == "sqlite":
        url = f"sqlite:///{tmp_path}/d.db"

        def damage(seqs: list[int]) -> None:
            with sqlite3.connect(tmp_path / "d.db") as db:
                for seq in seqs:
                    db.execute(
                        "UPDATE history SET payload = ? WHERE session_id = ? AND seq = ?",
                        (TORN.encode(), history, seq),
                    )

    else:
        prefix = f"dmg{uuid.uuid4().hex[:8]}:"
        url = f"{redis_server.url}?prefix={prefix}"

        def damage(seqs: list[int]) -> None:
            raw = redis_py.Redis.from_url(redis_server.url)
            for seq in seqs:
                raw.lset(f"{prefix}h:{{{history}}}", seq - 1, f"item\t1.0\t{TORN}")
            raw.close()

    async with SessionHub(url, idle_timeout=None) as hub:
        yield hub, damage


@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_damaged_items_are_skipped_and_counted(
    store: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    """A record that cannot be decoded is skipped (and counted), as ``history.read`` skips it:
    the read goes further back to fill the limit."""
    model = numbered("i", 60)
    async with damageable(store, tmp_path, redis_server) as (hub, damage):
        session = SessionHubSession("damaged", hub)
        await session.add_items(model)
        damage([60, 30])
        expected = model[:29] + model[30:59]
        assert await session.get_items(5) == expected[-5:]
        assert await session.get_items(40) == expected[-40:]
        assert await session.get_items() == expected
        assert hub.store.damaged_records >= 3


@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_a_damaged_item_is_counted_once_per_read(
    store: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    """A handle's first read takes the newest records as plain items when they are; a damaged
    one among them sends the read to the walk, which counts it: once per read, not twice."""
    model = numbered("i", 10)
    async with damageable(store, tmp_path, redis_server) as (hub, damage):
        session = SessionHubSession("damaged", hub)
        await session.add_items(model)
        damage([9])
        for limit in (3, 9):
            before = hub.store.damaged_records
            fresh = SessionHubSession("damaged", hub)
            assert await fresh.get_items(limit) == (model[:8] + model[9:])[-limit:]
            assert hub.store.damaged_records - before == 1


@pytest.mark.parametrize("pops", [0, 1, 30])
async def test_redis_reads_are_one_round_trip(redis_server: RedisServer, pops: int) -> None:
    """``get_items(50)`` of 200 items is one command, also under pops whose items lie in its
    page; ``pop_item`` is one command."""
    prefix = f"rt{uuid.uuid4().hex[:8]}:"
    async with SessionHub(f"{redis_server.url}?prefix={prefix}", idle_timeout=None) as hub:
        store = hub.store
        assert isinstance(store, RedisStore)
        session = SessionHubSession("trips", hub)
        model = numbered("t", 200)
        await session.add_items(model)
        for _ in range(pops):
            sent = store.round_trips
            assert await session.pop_item() == model.pop()
            assert store.round_trips - sent == 1
        await session.add_items(numbered("u", 10))
        model += numbered("u", 10)
        sent = store.round_trips
        assert await session.get_items(50) == model[-50:]
        assert store.round_trips - sent == 1
