"""A hub process over a shared Redis, run by test_redis.py as a real subprocess.

python redis_worker.py URL PREFIX RESULT INDEX PER_PROCESS SLOTS PATIENCE
    Prints "ready" once subscribed, waits for a line on stdin, races the other processes for SLOTS
    unique labels, creates PER_PROCESS sessions that expire within a few seconds, then waits until
    its subscriber has seen every session of every process end (or PATIENCE seconds) and writes
    what it saw to RESULT (JSON): the ids its hook ran for and every event in the order it came.
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
from sessionhub.stores.redis import RedisStore

PROCESSES = 3


async def run(
    url: str, prefix: str, index: int, per_process: int, slots: int, patience: float
) -> dict[str, Any]:
    hooked: list[str] = []
    events: list[list[Any]] = []
    ended: set[str] = set()
    missed = 0
    expected = PROCESSES * per_process
    all_ended = asyncio.Event()
    store = RedisStore(url, prefix=prefix, event_buffer=8 * expected + 1000)
    hub = SessionHub(store, idle_timeout=None, poll_interval=0.1, unique_labels=["slot"])

    @hub.on_end
    async def record(session: Session, reason: str) -> None:
        hooked.append(session.id)

    async def watch(subscription: Any) -> None:
        nonlocal missed
        async for event in subscription:
            if event.kind == EventKind.MISSED:
                missed += event.missed
                continue
            session = event.session
            events.append([event.id, event.kind, session.id, session.labels.get("slot")])
            if event.kind == EventKind.ENDED and session.id.startswith("expiring-"):
                ended.add(session.id)
                if len(ended) >= expected:
                    all_ended.set()

    async with hub:
        watcher = asyncio.create_task(watch(hub.subscribe()))
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        for slot in range(slots):
            with contextlib.suppress(DuplicateSession):
                ttl = random.uniform(0.2, 1.5)
                await hub.create(f"slot-{index}-{slot}", labels={"slot": str(slot)}, ttl=ttl)
        for i in range(per_process):
            await hub.create(f"expiring-{index}-{i}", ttl=random.uniform(0.5, 2.5))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_ended.wait(), patience)
        # The slot sessions expire within the same few seconds; let the last events arrive.
        await asyncio.sleep(2.0)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return {"hooked": hooked, "events": events, "missed": missed}


def main() -> None:
    url, prefix, result, index, per_process, slots, patience = sys.argv[1:8]
    outcome = asyncio.run(
        run(url, prefix, int(index), int(per_process), int(slots), float(patience))
    )
    Path(result).write_text(json.dumps(outcome))


if __name__ == "__main__":
    main()
