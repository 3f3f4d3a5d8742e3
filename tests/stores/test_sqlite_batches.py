"""Writes that queue up while the SQLite worker waits share one transaction, and stay separate.

Another connection holds the database's write lock, so the store's worker waits in its first write
while the others queue up behind it; once the lock is released they commit together. Each must still
succeed or fail on its own, be answered only once committed, and emit its event in order.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from sessionhub import DuplicateSession, SessionHub
from sessionhub.stores.sqlite import SQLiteStore


async def test_queued_writes_commit_together_and_fail_alone(tmp_path: Path) -> None:
    path = tmp_path / "batch.db"
    async with SessionHub(SQLiteStore(path, synchronous="full"), idle_timeout=None) as hub:
        await hub.create("taken")
        events = hub.subscribe(kinds=["created"])
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the store's worker now waits for the write lock
        creates = [asyncio.ensure_future(hub.create(f"s{i:02d}")) for i in range(20)]
        duplicate = asyncio.ensure_future(hub.create("taken"))
        more = [asyncio.ensure_future(hub.create(f"t{i:02d}", user_id="u")) for i in range(20)]
        await asyncio.sleep(0.3)
        assert not any(task.done() for task in [*creates, duplicate, *more])
        holder.execute("ROLLBACK")
        holder.close()

        created = await asyncio.gather(*creates, *more)
        with pytest.raises(DuplicateSession):
            await duplicate
        assert [s.id for s in created] == [
            *(f"s{i:02d}" for i in range(20)),
            *(f"t{i:02d}" for i in range(20)),
        ]
        got = [await asyncio.wait_for(anext(events), 10) for _ in range(40)]
        assert [e.session.id for e in got if e.session] == [s.id for s in created]
        assert [int(e.id) for e in got] == sorted(int(e.id) for e in got)
        await events.aclose()
        assert await hub.count(user_id="u") == 20

    async with SessionHub(SQLiteStore(path)) as again:  # committed: another store reads them all
        assert await again.count() == 41
        assert (await again.get("taken")).version == 1
