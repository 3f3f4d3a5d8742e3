"""One hub process of the multi-process expiry test (run as ``python -m tests.cluster.hub_worker``).

Arguments: cluster URL, key prefix, this worker's index, sessions to create, unique labels to race
for. It creates its share of expiring sessions, races the other workers for the same unique labels,
lets its hub expire whatever comes due, and prints one JSON line: the sessions its hook ran for,
the ``ended`` events it saw, the unique labels it won (with when) and when those holders' hooks
ran.
"""

from __future__ import annotations

import asyncio
import sys
import time

import msgspec

from sessionhub import DuplicateSession, Session, SessionHub
from sessionhub.stores.redis_cluster import RedisClusterStore


async def run(url: str, prefix: str, index: int, sessions: int, uniques: int) -> dict[str, object]:
    hub = SessionHub(RedisClusterStore(url, prefix=prefix), unique_labels=["seat"])
    hooked: list[str] = []
    seat_ends: list[str] = []  # "<id>\t<time the hook ran>" of the unique-label sessions
    ended: set[str] = set()
    missed: list[str] = []

    async def hook(session: Session, reason: str) -> None:
        hooked.append(session.id)
        if session.namespace == "race":
            seat_ends.append(f"{session.id}\t{time.time()!r}")

    hub.on_end(hook)
    await hub.start()
    events = hub.subscribe(kinds=["ended"])

    async def watch() -> None:
        async for event in events:
            if event.session is not None:
                ended.add(event.session.id)
            elif event.kind == "missed":  # this subscriber fell behind the local event ring
                missed.append(str(event.missed))

    watcher = asyncio.create_task(watch())
    await _all_workers_subscribed(hub, prefix)
    won: list[str] = []
    for k in range(uniques):
        try:
            seat = await hub.create(namespace="race", labels={"seat": str(k)}, ttl=1.5)
            won.append(f"{k}\t{seat.id}\t{time.time()!r}")  # the seat, its holder, since when
        except DuplicateSession:
            pass
    for i in range(sessions):
        await hub.create(namespace="burst", session_id=f"w{index}-{i}", ttl=1.0 + (i % 10) / 10)
    burst = {f"w{w}-{i}" for w in range(3) for i in range(sessions)}
    for _ in range(300 + sessions):  # a minute, plus 0.2 s per session of this worker
        if await hub.count() == 0 and burst <= ended:
            break
        await asyncio.sleep(0.2)
    seen = -1
    while seen < len(ended):  # the other workers' seats: until no end has come for a second
        seen = len(ended)
        await asyncio.sleep(1.0)
    watcher.cancel()
    await hub.close()
    return {
        "hooked": hooked,
        "ended": sorted(ended),
        "won": won,
        "seat_ends": seat_ends,
        "missed": missed,
    }


async def _all_workers_subscribed(hub: SessionHub, prefix: str) -> None:
    """A barrier: no worker creates before all three subscribe (a worker that started late on a
    loaded machine would otherwise miss the first ends, which came before its subscription)."""
    store = hub.store
    assert isinstance(store, RedisClusterStore)
    key = f"{prefix}barrier:{{workers}}"
    await store._call("INCR", key)
    for _ in range(1200):  # at most a minute
        if int(await store._call("GET", key)) >= 3:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the other hub workers did not start within a minute")


def main() -> None:
    url, prefix, index, sessions, uniques = sys.argv[1:6]
    result = asyncio.run(run(url, prefix, int(index), int(sessions), int(uniques)))
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")


if __name__ == "__main__":
    main()
