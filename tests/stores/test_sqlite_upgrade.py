"""Files of schema version 1 are upgraded on open, with their history intact.

Version 1 kept history in a rowid table with a separate kind index, and its counts in a table of
their own; version 2 keeps history in one ``WITHOUT ROWID`` b-tree and the counts in the session's
row. The version-1 file is laid out as version 1 did it: the statements below are version 1's
``history`` table, index and ``history_counts`` table, verbatim.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sessionhub import SessionHub
from sessionhub.stores.sqlite import SCHEMA_VERSION, SQLiteStore

V1_HISTORY = (
    """CREATE TABLE history (
        session_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, at REAL NOT NULL,
        payload BLOB NOT NULL,
        PRIMARY KEY (session_id, seq)
    )""",
    "CREATE INDEX history_kind ON history (session_id, kind, seq)",
    """CREATE TABLE history_counts (
        session_id TEXT NOT NULL, kind TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (session_id, kind)
    ) WITHOUT ROWID""",
)


def _as_version_1(path: Path) -> None:
    """Put the file's history back in version 1's layout, records and all."""
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE history RENAME TO history_new")
        for statement in V1_HISTORY:
            conn.execute(statement)
        conn.execute("INSERT INTO history SELECT * FROM history_new")
        conn.execute("DROP TABLE history_new")
        conn.execute(
            "INSERT INTO history_counts SELECT s.id, c.key, c.value "
            "FROM sessions AS s, json_each(s.history_counts) AS c"
        )
        conn.execute("ALTER TABLE sessions DROP COLUMN history_counts")
        conn.execute("PRAGMA user_version = 1")
    conn.close()


def _history_layout(path: Path) -> tuple[int, list[str]]:
    with sqlite3.connect(path) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        sql = conn.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL "
            "AND tbl_name IN ('history', 'history_counts')"
        ).fetchall()
    conn.close()
    return version, [row[0] for row in sql]


async def test_a_version_1_file_is_upgraded_with_its_history(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    async with SessionHub(SQLiteStore(path)) as hub:
        session = await hub.create("s1", idle_timeout=None)
        log = hub.history(session.id)
        for i in range(30):
            await log.append("call" if i % 3 else "ping", {"i": i})
        before = await log.read(limit=100)
    _as_version_1(path)
    assert _history_layout(path)[0] == 1
    assert len(_history_layout(path)[1]) == 3  # table, kind index, counts table

    async with SessionHub(SQLiteStore(path)) as hub:
        log = hub.history("s1")
        assert await log.read(limit=100) == before
        assert [r.seq for r in await log.read(kind="ping", newest_first=True, limit=3)] == [
            28,
            25,
            22,
        ]
        assert await log.counts() == {"call": 20, "ping": 10}
        assert (await log.append("call", {"i": 30})).seq == 31

    version, statements = _history_layout(path)
    assert version == SCHEMA_VERSION == 3
    assert len(statements) == 1  # the table alone: no kind index, no counts table
    assert statements[0].rstrip().endswith("WITHOUT ROWID")
