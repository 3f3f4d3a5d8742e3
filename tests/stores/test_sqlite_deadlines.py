"""Activity leaves the SQLite store's deadline column behind: the expiry claim sets it right.

A touch, a data write or a history append moves a session's deadline later without rewriting the
deadline index (one page less per write); the column then holds an earlier deadline, which the
claim of whichever process expires sessions checks against the record. These tests use two
stores on one file, as two processes would, and a file of schema version 2.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sessionhub import ManualClock, SessionHub
from sessionhub.stores.sqlite import SCHEMA_VERSION, SQLiteStore


def _hub(path: Path, clock: ManualClock) -> SessionHub:
    return SessionHub(SQLiteStore(path), clock=clock, auto_expire=False, idle_timeout=10)


async def test_activity_in_another_process_is_seen_by_the_expiry_claim(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "shared.db"
    async with _hub(path, clock) as expiring, _hub(path, clock) as working:
        quiet = await expiring.create("quiet")
        busy = await expiring.create("busy")
        kept = await expiring.create("kept")
        clock.advance(6)
        await working.history(busy.id).append("call", {"n": 1})
        await working.data(kept.id).set("k", 1)
        await working.touch(kept.id)
        clock.advance(4)  # the first deadline: only the quiet session is due
        assert await expiring.expire_due() == 1
        assert not await expiring.exists(quiet.id)
        assert await expiring.exists(busy.id)
        assert await expiring.exists(kept.id)
        clock.advance(3)
        await working.history(busy.id).append("call", {"n": 2})  # moved again, to 23
        clock.advance(3)  # 16: kept (touched at 6) is due, busy is not
        assert await expiring.expire_due() == 1
        assert not await expiring.exists(kept.id)
        assert await expiring.exists(busy.id)
        clock.advance(7)
        assert await expiring.expire_due() == 1
        assert await expiring.count() == 0


async def test_a_version_2_file_is_upgraded(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "v2.db"
    async with _hub(path, clock) as hub:
        session = await hub.create("s")
        await hub.history(session.id).append("call", {"n": 1})
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 2")
    conn.close()
    async with _hub(path, clock) as hub:
        assert (await hub.get(session.id)).id == session.id
        assert await hub.history(session.id).counts() == {"call": 1}
        clock.advance(10)
        assert await hub.expire_due() == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    conn.close()
