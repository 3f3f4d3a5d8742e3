"""The embedded hub on the SQLite store, beside raw sqlite3 measured in the same run.

    uv run python benchmarks/bench_sqlite.py                      # 20k sessions, synchronous=NORMAL
    uv run python benchmarks/bench_sqlite.py --synchronous full   # fsync every commit
    uv run python benchmarks/bench_sqlite.py --quick              # small sizes, a smoke run

Both sides use one file in WAL mode with the same ``synchronous`` setting, and one transaction per
write. The raw baseline is the floor of any SQLite store: one INSERT of a session-sized JSON row
per commit, one SELECT by primary key per read, called straight from Python. The hub's create also
checks uniqueness and limits, maintains indexes and the census and appends an event, and every
operation travels to the store's worker thread and back (the third column shows what that hop alone
costs the raw statements). Absolute rates on a shared 2-core machine are noise; compare the ratios.

Writes per operation are counted without tracing system calls: with automatic checkpoints off, the
WAL only grows, by one frame (a 24-byte header and a page) per page a commit writes, and SQLite
writes each frame with two ``pwrite64`` calls (header, page). The OpenAI Agents SDK's
``SQLiteSession`` was measured at 6.4 ``pwrite64`` per ``add_items`` (issue 13, with strace).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sessionhub
from sessionhub import SessionHub
from sessionhub._models import json_encoder
from sessionhub.stores.sqlite import SQLiteStore


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>11,.0f}/s"


async def timed(n: int, op: Callable[[int], Awaitable[object]]) -> float:
    start = time.perf_counter()
    for i in range(n):
        await op(i)
    return time.perf_counter() - start


def wal_frames(database: Path, page_size: int) -> float:
    wal = database.with_name(database.name + "-wal")
    return (wal.stat().st_size - 32) / (page_size + 24) if wal.exists() else 0.0


async def writes(n: int, synchronous: str) -> None:
    """WAL pages written per create, touch and history append, and per raw insert."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = SQLiteStore(folder / "hub.db", synchronous=synchronous)  # type: ignore[arg-type]
        async with SessionHub(store) as hub:
            await store._submit(store._fetch, "PRAGMA wal_autocheckpoint = 0", ())
            page_size = (await store._submit(store._fetch, "PRAGMA page_size", ()))[0][0]
            log = hub.history((await hub.create()).id)
            await log.append("call", {"i": -1})
            ids: list[str] = []

            async def create(i: int) -> None:
                ids.append((await hub.create()).id)

            async def append(i: int) -> None:
                await log.append("call", {"i": i, "method": "Greeter/SayHello"})

            counted = {}
            for name, op in (
                ("create", create),
                ("touch", lambda i: hub.touch(ids[i])),
                ("history.append", append),
            ):
                before = wal_frames(store.path, page_size)
                await timed(n, op)
                counted[name] = (wal_frames(store.path, page_size) - before) / n
        raw = raw_connection(folder / "raw.db", synchronous)
        raw.execute("PRAGMA wal_autocheckpoint = 0")
        raw.execute("INSERT INTO sessions VALUES ('first', x'00')")
        before = wal_frames(folder / "raw.db", page_size)
        for i in range(n):
            raw.execute("INSERT INTO sessions VALUES (?, ?)", (str(i), b"x" * 400))
        counted["raw insert"] = (wal_frames(folder / "raw.db", page_size) - before) / n
        raw.close()
    print(f"{'writes per operation':<22}{'WAL pages':>10}{'pwrite64':>10}")
    for name, pages in counted.items():
        print(f"{name:<22}{pages:>10.2f}{2 * pages:>10.1f}")


def raw_connection(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("CREATE TABLE sessions (id TEXT PRIMARY KEY, record BLOB NOT NULL)")
    return conn


async def run(n: int, synchronous: str) -> None:
    ids = [sessionhub.new_session_id() for _ in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        async with SessionHub(SQLiteStore(folder / "hub.db", synchronous=synchronous)) as hub:  # type: ignore[arg-type]
            sample = await hub.create()
            record = json_encoder.encode(sample)  # a row as large as the store's

            raw = raw_connection(folder / "raw.db", synchronous)
            insert = "INSERT INTO sessions (id, record) VALUES (?, ?)"
            select = "SELECT record FROM sessions WHERE id = ?"

            async def raw_create(i: int) -> Any:
                return raw.execute(insert, (ids[i], record))

            async def raw_get(i: int) -> Any:
                return raw.execute(select, (ids[i],)).fetchone()

            hop = raw_connection(folder / "hop.db", synchronous)
            worker = ThreadPoolExecutor(max_workers=1)
            loop = asyncio.get_running_loop()

            async def hop_create(i: int) -> Any:
                return await loop.run_in_executor(worker, hop.execute, insert, (ids[i], record))

            def hop_select(i: int) -> Any:
                return hop.execute(select, (ids[i],)).fetchone()

            async def hop_get(i: int) -> Any:
                return await loop.run_in_executor(worker, hop_select, i)

            results = {
                "create": (
                    await timed(n, lambda i: hub.create(ids[i])),
                    await timed(n, raw_create),
                    await timed(n, hop_create),
                ),
                "get": (
                    await timed(n, lambda i: hub.get(ids[i])),
                    await timed(n, raw_get),
                    await timed(n, hop_get),
                ),
            }
            touch = await timed(n, lambda i: hub.touch(ids[i]))
            worker.shutdown()
            raw.close()
            hop.close()

    print(
        f"SQLite {sqlite3.sqlite_version}, WAL, synchronous={synchronous.upper()}, {n:,} sessions"
    )
    print(
        f"{'operation':<10}{'sessionhub':>14}{'raw sqlite3':>14}{'raw + thread':>15}"
        f"{'hub/raw':>9}{'hub/raw+thread':>16}"
    )
    for name, (ours, base, hopped) in results.items():
        print(
            f"{name:<10}{rate(n, ours):>14}{rate(n, base):>14}{rate(n, hopped):>15}"
            f"{base / ours:>9.3f}{hopped / ours:>16.3f}"
        )
    print(f"{'touch':<10}{rate(n, touch):>14}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 sessions instead of 20,000")
    parser.add_argument("--synchronous", choices=["normal", "full"], default="normal")
    args = parser.parse_args()
    asyncio.run(run(2_000 if args.quick else 20_000, args.synchronous))
    asyncio.run(writes(200, args.synchronous))


if __name__ == "__main__":
    main()
