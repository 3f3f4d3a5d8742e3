"""A hub process over a shared SQLite file, run by test_sqlite.py as a real subprocess.

python sqlite_worker.py expire DB RESULT INDEX PER_PROCESS TOTAL SLOTS TIMEOUT
    Prints "ready", waits for a line on stdin, tries to take each of SLOTS unique labels
    (racing the other processes), creates PER_PROCESS sessions that expire within a few
    seconds, then waits until its subscriber has seen TOTAL ``ended`` events (or TIMEOUT
    seconds) and writes what it saw to RESULT (JSON).
python sqlite_worker.py create DB
    Creates sessions (each with a data key and a history record) until killed, printing each id
    once all three writes are acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
from pathlib import Path
from typing import Any

from sessionhub import DuplicateSession, EventKind, Session, SessionHub
from sessionhub.stores.sqlite import SQLiteStore


async def expire(
    db: str, index: int, per_process: int, total: int, slots: int, patience: float
) -> dict[str, Any]:
    hooked: list[str] = []
    ended: list[str] = []
    missed = 0
    all_ended = asyncio.Event()
    store = SQLiteStore(db, event_buffer=100_000, poll_interval=0.02)
    hub = SessionHub(store, idle_timeout=None, poll_interval=0.1, unique_labels=["slot"])

    @hub.on_end
    async def record(session: Session, reason: str) -> None:
        hooked.append(f"{session.id} {reason}")

    async def watch() -> None:
        nonlocal missed
        async for event in hub.subscribe(kinds=[EventKind.ENDED]):
            if event.kind == EventKind.MISSED:
                missed += event.missed
            elif event.session is not None and event.session.id.startswith("expiring-"):
                ended.append(event.session.id)
                if len(ended) >= total:
                    all_ended.set()

    async with hub:
        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0)  # subscribed before anything is created
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        won: list[int] = []
        for slot in range(slots):
            with contextlib.suppress(DuplicateSession):
                await hub.create(f"slot-{index}-{slot}", labels={"slot": str(slot)})
                won.append(slot)
        rng = random.Random(index)
        for i in range(per_process):
            await hub.create(f"expiring-{index}-{i}", ttl=rng.uniform(0.3, 2.0))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(patience):
                await all_ended.wait()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return {"hooked": hooked, "ended": ended, "missed": missed, "won": won}


async def create(db: str) -> None:
    async with SessionHub(SQLiteStore(db), idle_timeout=None) as hub:
        i = 0
        while True:
            session = await hub.create(f"acked-{i}", labels={"n": str(i)})
            await hub.data(session.id).set("n", i)
            await hub.history(session.id).append("made", {"n": i})
            print(session.id, flush=True)
            i += 1


def main() -> None:
    command, db, *rest = sys.argv[1:]
    if command == "expire":
        result, index, per_process, total, slots, patience = rest
        seen = asyncio.run(
            expire(db, int(index), int(per_process), int(total), int(slots), float(patience))
        )
        Path(result).write_text(json.dumps(seen))
    elif command == "create":
        asyncio.run(create(db))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
