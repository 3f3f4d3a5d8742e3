"""The agent-framework adapters beside the frameworks' own session services, in one run.

    uv run python benchmarks/bench_agents.py            # fuller run
    uv run python benchmarks/bench_agents.py --quick    # a smoke run (the README's figures)
    uv run python benchmarks/bench_agents.py --quick --adk --cpu   # ADK only, CPU time

Google ADK: ``SessionHubSessionService`` (memory, SQLite, Redis stores) beside ADK's
``InMemorySessionService`` and ``DatabaseSessionService`` (SQLite through aiosqlite): create a
session, append an event with a state delta, get a session's last 50 of 200 events, list one
user's sessions among many. OpenAI Agents SDK: ``SessionHubSession`` (memory, SQLite, Redis)
beside ``SQLiteSession`` (in memory, and a file) and ``RedisSession``: add_items, get_items(50)
of 200, pop_item.

Redis is a private ``redis-server`` on a free port. Each operation prints the milliseconds per
operation of every store and peer, then the like-with-like ratios ``peer time / sessionhub time``
(above 1: sessionhub is faster): the memory store beside the in-memory peer, the SQLite and Redis
stores beside the persistent peers (ADK has no Redis service of its own here: its database service
on SQLite stands in).
Reads (get_session, list_sessions, get_items) are timed after one untimed read on each side, as a
long-running process makes them (the ADK adapter keeps the events it has parsed); the first read of
50 events a process has never seen parses them all (``adk_cold_read`` prints that cost apart);
``adk_long_append`` prints appends to a session growing to 2000 events, where ADK's in-memory
append, which scans the session for a duplicate, is no longer at its cheapest.
Absolute times on a shared 2-core machine are noise; compare the ratios. Every figure is the best
of ``--rounds`` rounds, each round measuring sessionhub and then the peers, so that a burst of
load elsewhere does not land on one side only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.redis_server

from agents import SQLiteSession
from agents.extensions.memory.redis_session import RedisSession
from agents.items import TResponseInputItem
from agents.memory import Session as AgentsSession
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions import DatabaseSessionService, InMemorySessionService
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig
from tests.redis_server import RedisServer

from sessionhub import SessionHub
from sessionhub.integrations.adk import SessionHubSessionService
from sessionhub.integrations.openai_agents import SessionHubSession

Op = Callable[[int], Awaitable[object]]

# each store beside the peer of its kind: memory with memory, persistent with persistent
ADK_LIKE = {"memory": "InMemory", "sqlite": "Database(SQLite)", "redis": "Database(SQLite)"}
AGENTS_LIKE = {
    "memory": "SQLiteSession(memory)",
    "sqlite": "SQLiteSession",
    "redis": "RedisSession",
}


# wall time; ``--cpu`` times this process's CPU instead (steadier on a loaded machine, and equal
# to wall time for the in-process memory store and in-memory peers, which never wait; not for the
# SQLite and Redis figures, whose work is partly in other threads or processes)
clock = time.perf_counter


async def per_op_ms(n: int, op: Op, *, warm: bool = False) -> float:
    """Mean ms of ``op(0)`` ... ``op(n - 1)``; with ``warm`` (reads), after one untimed call, so a
    read is timed as a long-running process makes it, its caches holding what it read before."""
    if warm:
        await op(0)
    started = clock()
    for i in range(n):
        await op(i)
    return (clock() - started) * 1000 / n


def report(
    what: str, ours: dict[str, float], peers: dict[str, float], like: dict[str, str]
) -> None:
    """One operation: sessionhub's ms per store, the peers' ms, then the like-with-like ratios
    (``like`` maps a store to the peer of its kind: in memory beside in memory, a file beside a
    file), each ``peer time / sessionhub time`` (the target is 2x or more)."""
    cells = "  ".join(f"{name} {ms:.3f}" for name, ms in ours.items())
    peer_cells = "  ".join(f"{name} {ms:.3f}" for name, ms in peers.items())
    ratios = "  ".join(
        f"{store}/{peer} {peers[peer] / ours[store]:.1f}x" for store, peer in like.items()
    )
    print(f"{what:<28} sessionhub ms: {cells}")
    print(f"{'':<28} peers ms: {peer_cells}")
    print(f"{'':<28} like with like: {ratios}")


# ADK


def adk_event(i: int) -> Event:
    return Event(
        author="agent",
        invocation_id=f"inv-{i}",
        actions=EventActions(state_delta={"turn": i, "user:last": i}),
    )


async def adk_figures(service: BaseSessionService, n: int, users: int) -> dict[str, float]:
    app = f"bench-{uuid.uuid4().hex[:6]}"
    figures: dict[str, float] = {}

    async def create(i: int) -> object:
        return await service.create_session(app_name=app, user_id=f"u{i % users}", state={"i": i})

    figures["create_session"] = await per_op_ms(n, create)
    session = await service.create_session(app_name=app, user_id="writer", session_id="long")
    # the events are made before the clock starts: making one is the caller's cost, the same
    # for every service, and as large as an in-memory append
    events = [adk_event(i) for i in range(max(n, 200))]

    async def append(i: int) -> object:
        return await service.append_event(session, events[i])

    figures["append_event"] = await per_op_ms(len(events), append)
    config = GetSessionConfig(num_recent_events=50)

    async def get(i: int) -> object:
        return await service.get_session(
            app_name=app, user_id="writer", session_id="long", config=config
        )

    figures["get_session(last 50)"] = await per_op_ms(max(n // 10, 20), get, warm=True)

    async def list_user(i: int) -> object:
        return await service.list_sessions(app_name=app, user_id=f"u{i % users}")

    figures[f"list_sessions(user, {n // users} of {n})"] = await per_op_ms(
        max(n // 20, 20), list_user, warm=True
    )
    return figures


async def adk_listing(n: int) -> None:
    """A page of 100 of one app's n sessions (sessionhub, memory store) beside ADK's in-memory
    ``list_sessions`` of the same app, which has no pages."""
    reference = InMemorySessionService()
    async with hub_on("memory://") as hub:
        ours = SessionHubSessionService(hub)
        for service in (reference, ours):
            for i in range(n):
                await service.create_session(app_name="big", user_id=f"u{i}", session_id=f"s{i}")

        async def page(i: int) -> object:
            return await ours.list_sessions_page(app_name="big", limit=100)

        async def everything(i: int) -> object:
            return await reference.list_sessions(app_name="big")

        page_ms = await per_op_ms(20, page)
        all_ms = await per_op_ms(5, everything)
        print(
            f"{'list, app of ' + str(n):<28} sessionhub list_sessions_page(100): {page_ms:.3f} ms"
            f"  InMemory list_sessions (all): {all_ms:.3f} ms ({all_ms / page_ms:.0f}x)"
        )


async def adk_cold_read(rounds: int) -> None:
    """The first ``get_session`` (last 50 of 200 events) by a process that has never read them:
    a second service on the same memory hub, whose cache is empty; beside ADK's in-memory get."""
    config = GetSessionConfig(num_recent_events=50)
    cold: list[float] = []
    reference_ms: list[float] = []
    for _ in range(rounds):
        reference = InMemorySessionService()
        async with hub_on("memory://") as hub:
            for service in (SessionHubSessionService(hub), reference):
                session = await service.create_session(app_name="c", user_id="u", session_id="s")
                for i in range(200):
                    await service.append_event(session, adk_event(i))
            for service, into in ((SessionHubSessionService(hub), cold), (reference, reference_ms)):

                async def get(i: int, service: BaseSessionService = service) -> object:
                    return await service.get_session(
                        app_name="c", user_id="u", session_id="s", config=config
                    )

                into.append(await per_op_ms(1, get))
    ours, theirs = min(cold), min(reference_ms)
    print(
        f"{'get_session, first (cold)':<28} sessionhub memory: {ours:.3f} ms"
        f"  InMemory: {theirs:.3f} ms ({theirs / ours:.1f}x)"
    )


async def adk_appends(service: BaseSessionService, events: int) -> float:
    """Mean ms of ``events`` appends to one new session."""
    session = await service.create_session(app_name="l", user_id="u")
    made = [adk_event(i) for i in range(events)]

    async def append(i: int) -> object:
        return await service.append_event(session, made[i])

    return await per_op_ms(events, append)


async def adk_long_append(rounds: int, events: int = 2000) -> None:
    """``append_event`` over a session growing to ``events`` events (memory store beside ADK's
    in-memory service): an append here costs the same at any length, ADK's in-memory one scans
    the session's events for a duplicate id, so the table's figure (200 events) is its best case.
    """
    ours_ms: list[float] = []
    reference_ms: list[float] = []
    for _ in range(rounds):
        async with hub_on("memory://") as hub:
            ours_ms.append(await adk_appends(SessionHubSessionService(hub), events))
        reference_ms.append(await adk_appends(InMemorySessionService(), events))
    ours, theirs = min(ours_ms), min(reference_ms)
    print(
        f"{'append_event, ' + str(events) + ' events':<28} sessionhub memory: {ours:.3f} ms"
        f"  InMemory: {theirs:.3f} ms ({theirs / ours:.1f}x)"
    )


# Agents SDK


ITEM: TResponseInputItem = {"role": "user", "content": "hello there, how are you today?"}


async def agents_figures(make: Callable[[str], AgentsSession], n: int) -> dict[str, float]:
    session = make(f"bench-{uuid.uuid4().hex[:8]}")
    figures: dict[str, float] = {}

    async def add(i: int) -> object:
        await session.add_items([ITEM])
        return None

    figures["add_items(1)"] = await per_op_ms(max(n, 200), add)

    async def get(i: int) -> object:
        return await session.get_items(50)

    figures["get_items(50)"] = await per_op_ms(max(n // 10, 20), get, warm=True)

    async def pop(i: int) -> object:
        return await session.pop_item()

    figures["pop_item"] = await per_op_ms(max(n // 10, 20), pop)
    return figures


@asynccontextmanager
async def hub_on(url: str) -> AsyncIterator[SessionHub]:
    async with SessionHub(url, idle_timeout=None) as hub:
        yield hub


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per operation, the fastest of the rounds: the one least disturbed by the machine's other
    work (the rounds alternate sessionhub and the peers, so both see the same load)."""
    return {what: min(run[what] for run in runs) for what in runs[0]}


async def main(quick: bool, rounds: int, adk_only: bool) -> None:
    n = 200 if quick else 2000
    users = 20
    redis = RedisServer()
    folder = Path(tempfile.mkdtemp(prefix="bench-agents-"))
    stores: dict[str, Callable[[], AbstractAsyncContextManager[SessionHub]]] = {
        "memory": lambda: hub_on("memory://"),
        "sqlite": lambda: hub_on(f"sqlite:///{folder}/hub-{uuid.uuid4().hex[:6]}.db"),
        "redis": lambda: hub_on(f"{redis.url}?prefix=bench{uuid.uuid4().hex[:6]}:"),
    }
    try:
        print(f"ADK {n} sessions, {users} users, best of {rounds} rounds; ms per operation")
        ours_runs: dict[str, list[dict[str, float]]] = {name: [] for name in stores}
        peer_runs: dict[str, list[dict[str, float]]] = {"InMemory": [], "Database(SQLite)": []}
        for _ in range(rounds):
            for name, opened in stores.items():
                async with opened() as hub:
                    ours_runs[name].append(
                        await adk_figures(SessionHubSessionService(hub), n, users)
                    )
            peer_runs["InMemory"].append(await adk_figures(InMemorySessionService(), n, users))
            database = DatabaseSessionService(
                f"sqlite+aiosqlite:///{folder}/adk-{uuid.uuid4().hex[:6]}.db"
            )
            peer_runs["Database(SQLite)"].append(await adk_figures(database, n, users))
            await database.close()
        ours = {name: best(runs) for name, runs in ours_runs.items()}
        peers = {name: best(runs) for name, runs in peer_runs.items()}
        for what in peers["InMemory"]:
            report(
                what,
                {k: v[what] for k, v in ours.items()},
                {k: v[what] for k, v in peers.items()},
                ADK_LIKE,
            )

        await adk_cold_read(rounds * 5)  # one read per round: more rounds, both sides alike
        await adk_long_append(rounds)
        await adk_listing(10_000 if quick else 100_000)
        if adk_only:
            return

        print(f"\nOpenAI Agents SDK, best of {rounds} rounds; ms per operation")
        sqlite_path = folder / "agents.db"
        peer_makers: dict[str, Callable[[str], AgentsSession]] = {
            "SQLiteSession(memory)": lambda sid: SQLiteSession(sid),
            "SQLiteSession": lambda sid: SQLiteSession(sid, sqlite_path),
            "RedisSession": lambda sid: RedisSession.from_url(sid, url=redis.url),
        }
        ours_runs = {name: [] for name in stores}
        agents_runs: dict[str, list[dict[str, float]]] = {name: [] for name in peer_makers}
        for _ in range(rounds):
            for name, opened in stores.items():
                async with opened() as hub:
                    ours_runs[name].append(
                        await agents_figures(lambda sid: SessionHubSession(sid, hub), n)
                    )
            for name, make in peer_makers.items():
                agents_runs[name].append(await agents_figures(make, n))
        ours = {name: best(runs) for name, runs in ours_runs.items()}
        agents_peers = {name: best(runs) for name, runs in agents_runs.items()}
        for what in agents_peers["SQLiteSession"]:
            report(
                what,
                {k: v[what] for k, v in ours.items()},
                {k: v[what] for k, v in agents_peers.items()},
                AGENTS_LIKE,
            )
    finally:
        redis.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each op's best is kept")
    parser.add_argument("--adk", action="store_true", help="the ADK figures only")
    parser.add_argument(
        "--cpu", action="store_true", help="time this process's CPU, not the wall clock"
    )
    arguments = parser.parse_args()
    if arguments.cpu:
        clock = time.process_time
    asyncio.run(main(arguments.quick, arguments.rounds, arguments.adk))
