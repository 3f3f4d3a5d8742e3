"""Every id the hub accepts (1-200 printable ASCII characters, no whitespace) round-trips through
``Client``, ``AsyncClient`` and ``GrpcClient``, with every verb that takes an id: the dot segments
``.`` and ``..``, and ``/ % ? #``, included. One real server serves HTTP and gRPC over one hub."""

from __future__ import annotations

import asyncio
import string
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sessionhub import AsyncClient, Client, SessionNotFound
from sessionhub.grpc import GrpcClient

from .serving import ThreadedServer

PRINTABLE = "".join(ch for ch in string.printable if not ch.isspace())
ids = st.text(alphabet=PRINTABLE, min_size=1, max_size=200)
AsyncHub = AsyncClient | GrpcClient


@pytest.fixture(scope="module")
def both() -> Iterator[ThreadedServer]:
    server = ThreadedServer(grpc=True)
    yield server
    server.stop()


def sync_script(hub: Client, session_id: str) -> list[Any]:
    """Every verb that takes an id, with ``session_id`` as the id (and as parent, and child)."""
    parent = f"parent-of-{len(session_id)}"
    out: list[Any] = [hub.create(session_id, details={"id": session_id}).id]
    out.append(hub.get(session_id).details)
    out.append(hub.exists(session_id))
    out.append(hub.touch(session_id).id)
    out.append(hub.update(session_id, labels={"k": "v"}).labels)
    out.append(hub.transition(session_id, "spawn").state)
    out.append(hub.incr(session_id, "calls", 2))
    data = hub.data(session_id)
    out.append(data.set(session_id, [session_id]).key)
    out += [data.get(session_id), data.entry(session_id), data.entries(), data.items()]
    out.append(data.delete(session_id))
    history = hub.history(session_id)
    out.append(history.append("note", session_id).payload)
    out += [history.read(), history.counts(), history.count("note")]
    hub.create(parent)
    out.append(hub.link(parent, session_id).id)
    out.append([s.id for s in hub.find(parent_id=parent).items])
    out.append(hub.count(parent_id=parent))
    out.append(hub.end(parent))  # ends its child, session_id, too
    out.append(hub.exists(session_id))
    with pytest.raises(SessionNotFound) as missing:
        hub.get(session_id)
    out.append(missing.value.session_id)
    return out


async def async_script(hub: AsyncHub, session_id: str) -> list[Any]:
    """``sync_script``, awaited."""
    parent = f"parent-of-{len(session_id)}"
    out: list[Any] = [(await hub.create(session_id, details={"id": session_id})).id]
    out.append((await hub.get(session_id)).details)
    out.append(await hub.exists(session_id))
    out.append((await hub.touch(session_id)).id)
    out.append((await hub.update(session_id, labels={"k": "v"})).labels)
    out.append((await hub.transition(session_id, "spawn")).state)
    out.append(await hub.incr(session_id, "calls", 2))
    data = hub.data(session_id)
    out.append((await data.set(session_id, [session_id])).key)
    out += [await data.get(session_id), await data.entry(session_id)]
    out += [await data.entries(), await data.items()]
    out.append(await data.delete(session_id))
    history = hub.history(session_id)
    out.append((await history.append("note", session_id)).payload)
    out += [await history.read(), await history.counts(), await history.count("note")]
    await hub.create(parent)
    out.append((await hub.link(parent, session_id)).id)
    out.append([s.id for s in (await hub.find(parent_id=parent)).items])
    out.append(await hub.count(parent_id=parent))
    out.append(await hub.end(parent))
    out.append(await hub.exists(session_id))
    with pytest.raises(SessionNotFound) as missing:
        await hub.get(session_id)
    out.append(missing.value.session_id)
    return out


def comparable(transcript: list[Any]) -> list[Any]:
    """Times differ between runs: keep what the verbs are about."""
    keep: list[Any] = []
    for item in transcript:
        if isinstance(item, list):
            item = [getattr(x, "key", None) or getattr(x, "kind", x) for x in item]
        elif hasattr(item, "version") and hasattr(item, "value"):  # a DataEntry
            item = (item.key, item.value)
        keep.append(item)
    return keep


async def over_async_clients(server: ThreadedServer, session_id: str) -> list[list[Any]]:
    async with (
        AsyncClient(server.url, token=server.token) as http,
        GrpcClient(server.grpc_url, token=server.token) as grpc,
    ):
        return [await async_script(http, session_id), await async_script(grpc, session_id)]


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(session_id=ids)
@example(".")
@example("..")
@example("/")
@example("%")
@example("?")
@example("#")
@example("../x/./%2E%2e?a=#")
@example("x" * 200)
def test_every_accepted_id_round_trips_through_every_client(
    both: ThreadedServer, session_id: str
) -> None:
    with Client(both.url, token=both.token) as client:
        over_http = sync_script(client, session_id)
    assert over_http[0] == session_id
    assert over_http[-1] == session_id
    expected = comparable(over_http)
    for transcript in asyncio.run(over_async_clients(both, session_id)):
        assert comparable(transcript) == expected


@pytest.mark.parametrize("session_id", [".", "..", "/", "%", "?", "#", "a/../b"])
async def test_subscribe_to_one_odd_id(both: ThreadedServer, session_id: str) -> None:
    async with (
        AsyncClient(both.url, token=both.token) as http,
        GrpcClient(both.grpc_url, token=both.token) as grpc,
    ):
        for hub in (http, grpc):
            events = hub.subscribe(session_id=session_id, kinds=["created", "ended"])
            first = asyncio.ensure_future(anext(events))
            async with asyncio.timeout(10):
                while not first.done():  # until the subscription is live on the server
                    await hub.create(session_id)
                    await asyncio.wait({first}, timeout=0.05)
                    await hub.end(session_id)
            event = first.result()
            await events.aclose()
            assert event.session is not None
            assert event.session.id == session_id  # its `created` or its `ended`
