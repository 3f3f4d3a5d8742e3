"""The Agents SDK adapter's pops and batches on a shared store: concurrent pops from two tasks and
from two processes take distinct items, the items of one ``add_items`` stay contiguous beside a
concurrent writer, and pops of both kinds (the store's ``history_pop`` embedded, a bare marker over
a server) mix in one history as a forward replay says."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from agents.items import TResponseInputItem

from sessionhub import AsyncClient, SessionHub
from sessionhub.integrations.openai_agents import SessionHubSession

from ..client.serving import ThreadedServer

SHARED = ["sqlite", "redis"]

# child processes import the Agents SDK: slow on a loaded machine
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(params=SHARED)
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL two processes can share."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shared.db"
    url: str = request.getfixturevalue("redis_server").url
    return f"{url}?prefix=stack{uuid.uuid4().hex[:8]}:"


def numbered(tag: str, n: int) -> list[TResponseInputItem]:
    return [{"role": "user", "content": f"{tag}{i}"} for i in range(n)]


def content(item: object) -> str:
    assert isinstance(item, dict)
    return str(item["content"])


CHILD = r"""
import asyncio, json, sys
from sessionhub import SessionHub
from sessionhub.integrations.openai_agents import SessionHubSession

async def main():
    url, session_id, what, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    async with SessionHub(url, idle_timeout=None) as hub:
        session = SessionHubSession(session_id, hub)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()  # both processes start together
        out = []
        if what == "pop":
            for _ in range(n):
                out.append(await session.pop_item())
        else:
            for batch in range(n):
                items = [{"role": "user", "content": f"{what}{batch}.{i}"} for i in range(25)]
                await session.add_items(items)
        print(json.dumps(out))

asyncio.run(main())
"""


async def run_beside(argv: list[str], own: Awaitable[list[object]]) -> list[list[object]]:
    """Run CHILD with ``argv`` and, once it is ready, ``own`` here at the same time: the two
    processes' results (the child's, then ours)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdin is not None
    assert await asyncio.wait_for(process.stdout.readline(), 400) == b"ready\n"
    process.stdin.write(b"go\n")
    await process.stdin.drain()
    (out, _), mine = await asyncio.gather(asyncio.wait_for(process.communicate(), 400), own)
    assert process.returncode == 0
    theirs: list[object] = json.loads(out)
    return [theirs, mine]


async def test_two_processes_pop_distinct_items(shared_url: str) -> None:
    items = numbered("p", 40)
    async with SessionHub(shared_url, idle_timeout=None) as hub:
        await SessionHubSession("popped", hub).add_items(items)
    async with SessionHub(shared_url, idle_timeout=None) as hub:
        session = SessionHubSession("popped", hub)

        async def pops() -> list[object]:
            return [await session.pop_item() for _ in range(25)]

        first, second = await run_beside([shared_url, "popped", "pop", "25"], pops())
    taken = [item for item in first + second if item is not None]
    assert (first + second).count(None) == 10
    assert sorted(json.dumps(item) for item in taken) == sorted(json.dumps(i) for i in items)
    for popped in (first, second):  # each process sees the stack shrink: newest first
        mine = [int(item["content"][1:]) for item in popped if isinstance(item, dict)]
        assert mine == sorted(mine, reverse=True)
    async with SessionHub(shared_url, idle_timeout=None) as hub:
        assert await SessionHubSession("popped", hub).get_items() == []


async def test_two_tasks_pop_distinct_items_after_many_pops(shared_url: str) -> None:
    async with SessionHub(shared_url, idle_timeout=None) as hub:
        session = SessionHubSession("tasks", hub)
        await session.add_items(numbered("a", 30))
        for _ in range(10):  # earlier pops the next ones must look past
            await session.pop_item()
        await session.add_items(numbered("b", 10))
        other = SessionHubSession("tasks", hub)
        popped = await asyncio.gather(*(s.pop_item() for s in [session, other] * 16))
        taken = sorted(json.dumps(item) for item in popped if item is not None)
        expected = numbered("a", 20) + numbered("b", 10)
        assert taken == sorted(json.dumps(item) for item in expected)
        assert popped.count(None) == 2


async def test_one_add_items_call_is_contiguous_beside_another_process(shared_url: str) -> None:
    async with SessionHub(shared_url, idle_timeout=None) as hub:
        session = SessionHubSession("batches", hub)

        async def adds() -> list[object]:
            for batch in range(8):
                await session.add_items(
                    [{"role": "user", "content": f"y{batch}.{i}"} for i in range(25)]
                )
            return []

        await run_beside([shared_url, "batches", "x", "8"], adds())
        items = await session.get_items()
    assert len(items) == 2 * 8 * 25
    contents = [content(item) for item in items]
    for start in range(0, len(contents), 25):  # every run of 25 is one call, in order
        batch = contents[start : start + 25]
        prefix = batch[0].split(".")[0]
        assert batch == [f"{prefix}.{i}" for i in range(25)]


async def test_one_add_items_call_is_contiguous_beside_another_task(shared_url: str) -> None:
    async with SessionHub(shared_url, idle_timeout=None) as hub:
        writers = [SessionHubSession("tasks-batches", hub) for _ in range(2)]
        await asyncio.gather(
            *(
                writer.add_items([{"role": "user", "content": f"{w}{b}.{i}"} for i in range(25)])
                for b in range(6)
                for w, writer in zip("xy", writers, strict=True)
            )
        )
        items = await writers[0].get_items()
    contents = [content(item) for item in items]
    assert len(contents) == 2 * 6 * 25
    for start in range(0, len(contents), 25):
        prefix = contents[start].split(".")[0]
        assert contents[start : start + 25] == [f"{prefix}.{i}" for i in range(25)]


@asynccontextmanager
async def embedded_and_remote(url: str) -> AsyncIterator[tuple[SessionHub, AsyncClient]]:
    """An embedded hub on ``url`` and a client of a server on the same store."""
    server = ThreadedServer(store=url, idle_timeout=None)
    try:
        async with SessionHub(url, idle_timeout=None) as hub:
            client = AsyncClient(server.url, token=server.token)
            await client.start()
            try:
                yield hub, client
            finally:
                await client.close()
    finally:
        server.stop()


async def test_embedded_and_server_pops_mix_in_one_history(shared_url: str) -> None:
    """Pops through the store's operation (markers with the top they leave) and through a server
    (bare markers) interleave on one conversation; every read matches a plain list."""
    async with embedded_and_remote(shared_url) as (hub, client):
        embedded = SessionHubSession("mixed", hub)
        remote = SessionHubSession("mixed", client)
        model: list[TResponseInputItem] = []
        counter = 0
        for round_ in range(6):
            for writer in (embedded, remote):
                fresh = numbered(f"r{round_}.{counter}.", 3)
                counter += 1
                await writer.add_items(fresh)
                model.extend(fresh)
            for popper in (remote, embedded, remote) if round_ % 2 else (embedded, remote):
                expected = model.pop() if model else None
                assert await popper.pop_item() == expected
            for reader in (embedded, remote):
                assert await reader.get_items() == model
                assert await reader.get_items(4) == model[-4:]
            if round_ == 3:
                await remote.clear_session()
                model.clear()
        while model:
            assert await embedded.pop_item() == model.pop()
            assert await remote.get_items() == model
        assert await embedded.pop_item() is None
        assert await remote.pop_item() is None
