"""The Agents SDK adapter's pops and batches on a shared store, reached embedded or through a
server (HTTP or gRPC, whose history verbs do the same store operations): concurrent pops from two
tasks and from two processes take distinct items, the items of one ``add_items`` stay contiguous
beside a concurrent writer, and over a server each is one request."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from agents.items import TResponseInputItem
from prometheus_client.parser import text_string_to_metric_families

from sessionhub import AsyncClient, SessionHub
from sessionhub.grpc import GrpcClient
from sessionhub.integrations._hubs import Hub, hub_name
from sessionhub.integrations.openai_agents import SessionHubSession

from ..client.serving import ThreadedServer

SHARED = ["sqlite", "redis"]
ROUTES = ["embedded", "http", "grpc"]
# (the child process's route, this process's): every server protocol, beside an embedded hub and
# beside each other
PAIRS = [("embedded", "embedded"), ("http", "embedded"), ("embedded", "grpc"), ("grpc", "http")]

# child processes import the Agents SDK: slow on a loaded machine
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(params=SHARED)
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL two processes can share."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shared.db"
    url: str = request.getfixturevalue("redis_server").url
    return f"{url}?prefix=stack{uuid.uuid4().hex[:8]}:"


class Shared:
    """A shared store and the ways to reach it: embedded, or through a server on it (HTTP and gRPC,
    started on first use)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._server: ThreadedServer | None = None

    @property
    def server(self) -> ThreadedServer:
        if self._server is None:
            self._server = ThreadedServer(store=self.url, grpc=True, idle_timeout=None)
        return self._server

    def address(self, route: str) -> str:
        """Where a process reaches the store by ``route`` (``sessionhub.connect`` takes it)."""
        if route == "embedded":
            return self.url
        return self.server.url if route == "http" else self.server.grpc_url

    @asynccontextmanager
    async def hub(self, route: str) -> AsyncIterator[Hub]:
        hub: Hub
        if route == "embedded":
            hub = SessionHub(self.url, idle_timeout=None)
        elif route == "http":
            hub = AsyncClient(self.server.url, token=self.server.token)
        else:
            hub = GrpcClient(self.server.grpc_url, token=self.server.token)
        await hub.start()
        try:
            yield hub
        finally:
            await hub.close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


@pytest.fixture
def shared(shared_url: str) -> Iterator[Shared]:
    reach = Shared(shared_url)
    yield reach
    reach.stop()


def numbered(tag: str, n: int) -> list[TResponseInputItem]:
    return [{"role": "user", "content": f"{tag}{i}"} for i in range(n)]


def content(item: object) -> str:
    assert isinstance(item, dict)
    return str(item["content"])


CHILD = r"""
import asyncio, json, sys
from sessionhub import connect
from sessionhub.integrations.openai_agents import SessionHubSession

async def main():
    url, session_id, what, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    remote = url.startswith(("http://", "grpc://"))  # the token comes from SESSIONHUB_TOKEN
    async with connect(url, **({} if remote else {"idle_timeout": None})) as hub:
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


async def run_beside(
    shared: Shared, argv: list[str], own: Awaitable[list[object]]
) -> list[list[object]]:
    """Run CHILD with ``argv`` and, once it is ready, ``own`` here at the same time: the two
    processes' results (the child's, then ours)."""
    token = shared.server.token if argv[0].startswith(("http://", "grpc://")) else ""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "SESSIONHUB_TOKEN": token},
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


@pytest.mark.parametrize(("child", "parent"), PAIRS)
async def test_two_processes_pop_distinct_items(shared: Shared, child: str, parent: str) -> None:
    items = numbered("p", 40)
    async with shared.hub("embedded") as hub:
        await SessionHubSession("popped", hub).add_items(items)
    async with shared.hub(parent) as hub:
        session = SessionHubSession("popped", hub)

        async def pops() -> list[object]:
            return [await session.pop_item() for _ in range(25)]

        argv = [shared.address(child), "popped", "pop", "25"]
        first, second = await run_beside(shared, argv, pops())
    taken = [item for item in first + second if item is not None]
    assert (first + second).count(None) == 10
    assert sorted(json.dumps(item) for item in taken) == sorted(json.dumps(i) for i in items)
    for popped in (first, second):  # each process sees the stack shrink: newest first
        mine = [int(item["content"][1:]) for item in popped if isinstance(item, dict)]
        assert mine == sorted(mine, reverse=True)
    async with shared.hub("embedded") as hub:
        assert await SessionHubSession("popped", hub).get_items() == []


@pytest.mark.parametrize("route", ROUTES)
async def test_two_tasks_pop_distinct_items_after_many_pops(shared: Shared, route: str) -> None:
    async with shared.hub(route) as hub:
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


@pytest.mark.parametrize(("child", "parent"), PAIRS)
async def test_one_add_items_call_is_contiguous_beside_another_process(
    shared: Shared, child: str, parent: str
) -> None:
    async with shared.hub(parent) as hub:
        session = SessionHubSession("batches", hub)

        async def adds() -> list[object]:
            for batch in range(8):
                await session.add_items(
                    [{"role": "user", "content": f"y{batch}.{i}"} for i in range(25)]
                )
            return []

        await run_beside(shared, [shared.address(child), "batches", "x", "8"], adds())
        items = await session.get_items()
    assert len(items) == 2 * 8 * 25
    contents = [content(item) for item in items]
    for start in range(0, len(contents), 25):  # every run of 25 is one call, in order
        batch = contents[start : start + 25]
        prefix = batch[0].split(".")[0]
        assert batch == [f"{prefix}.{i}" for i in range(25)]


@pytest.mark.parametrize("route", ROUTES)
async def test_one_add_items_call_is_contiguous_beside_another_task(
    shared: Shared, route: str
) -> None:
    async with shared.hub(route) as hub:
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


async def test_embedded_server_and_legacy_pops_mix_in_one_history(shared: Shared) -> None:
    """Pops embedded, over HTTP and over gRPC (each the store's operation, whose marker holds the
    top it leaves) and bare markers (what a server popped before it had the verb) interleave on
    one conversation; every read matches a plain list."""
    async with (
        shared.hub("embedded") as hub,
        shared.hub("http") as http,
        shared.hub("grpc") as grpc,
    ):
        embedded, remote, other = (SessionHubSession("mixed", h) for h in (hub, http, grpc))
        legacy = hub.history(hub_name("mixed"))
        model: list[TResponseInputItem] = []
        counter = 0
        for round_ in range(6):
            for writer in (embedded, remote, other):
                fresh = numbered(f"r{round_}.{counter}.", 3)
                counter += 1
                await writer.add_items(fresh)
                model.extend(fresh)
            for popper in (remote, embedded, other) if round_ % 2 else (other, remote):
                expected = model.pop() if model else None
                assert await popper.pop_item() == expected
            await legacy.append("pop")  # a bare marker removes the top as well
            model.pop()
            for reader in (embedded, remote, other):
                assert await reader.get_items() == model
                assert await reader.get_items(4) == model[-4:]
            if round_ == 3:
                await remote.clear_session()
                model.clear()
        while model:
            assert await other.pop_item() == model.pop()
            assert await remote.get_items() == model
        assert await embedded.pop_item() is None
        assert await remote.pop_item() is None


def requests_by_route(server: ThreadedServer) -> dict[tuple[str, str], float]:
    """How many requests the server answered, by method and route (its Prometheus metrics)."""
    headers = {"Authorization": f"Bearer {server.token}"}
    text = httpx.get(server.url + "/metrics", headers=headers).text
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sessionhub_http_request_duration_seconds_count":
                key = (sample.labels["method"], sample.labels["route"])
                counts[key] = counts.get(key, 0) + sample.value
    return counts


async def test_over_a_server_each_call_is_one_request(shared: Shared) -> None:
    async with shared.hub("http") as hub:
        session = SessionHubSession("counted", hub)
        await session.add_items(numbered("c", 3))  # starts the conversation: a few requests

        async def requests_of(call: Awaitable[object]) -> dict[tuple[str, str], float]:
            before = requests_by_route(shared.server)
            await call
            after = requests_by_route(shared.server)
            made = {key: after[key] - before.get(key, 0) for key in after}
            made.pop(("GET", "/metrics"), None)
            return {key: n for key, n in made.items() if n}

        history = "/v1/sessions/{id}/history"
        assert await requests_of(session.add_items(numbered("d", 20))) == {
            ("POST", history + "/batch"): 1
        }
        assert await requests_of(session.pop_item()) == {("POST", history + "/pop"): 1}
        assert await session.get_items(2) == numbered("d", 20)[-3:-1]
