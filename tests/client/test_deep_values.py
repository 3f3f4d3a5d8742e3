"""JSON values nested at any depth, through every client: each is either stored and read back
equal, or refused with ``ValidationError``/``PayloadTooLarge`` before or by the server; never a
server error, a Python ``RecursionError``, or a broken read."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from sessionhub import AsyncClient, Client, PayloadTooLarge, ValidationError
from sessionhub.grpc import GrpcClient

from .serving import ThreadedServer

DEPTHS = [1, 64, 500, 900, 3000]
REFUSED = (ValidationError, PayloadTooLarge)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.fixture(scope="module")
def both() -> Iterator[ThreadedServer]:
    server = ThreadedServer(grpc=True)
    yield server
    server.stop()


def blocking_round_trip(hub: Client, session_id: str, value: dict[str, Any]) -> list[str]:
    outcomes = []
    try:
        created = hub.create(session_id, details=value)
        assert hub.get(session_id).details == created.details == value
        outcomes.append("stored")
    except REFUSED:
        hub.create(session_id)
        outcomes.append("refused")
    try:
        hub.data(session_id).set("k", value)
        assert hub.data(session_id).get("k") == value
        outcomes.append("stored")
    except REFUSED:
        outcomes.append("refused")
    try:
        hub.history(session_id).append("h", value)
        assert hub.history(session_id).read()[-1].payload == value
        outcomes.append("stored")
    except REFUSED:
        outcomes.append("refused")
    assert session_id in [s.id for s in hub.find(limit=1000).items]  # the listing still works
    hub.end(session_id)
    return outcomes


async def async_round_trip(
    hub: AsyncClient | GrpcClient, session_id: str, value: dict[str, Any]
) -> list[str]:
    outcomes = []
    try:
        created = await hub.create(session_id, details=value)
        assert (await hub.get(session_id)).details == created.details == value
        outcomes.append("stored")
    except REFUSED:
        await hub.create(session_id)
        outcomes.append("refused")
    try:
        await hub.data(session_id).set("k", value)
        assert await hub.data(session_id).get("k") == value
        outcomes.append("stored")
    except REFUSED:
        outcomes.append("refused")
    try:
        await hub.history(session_id).append("h", value)
        assert (await hub.history(session_id).read())[-1].payload == value
        outcomes.append("stored")
    except REFUSED:
        outcomes.append("refused")
    assert session_id in [s.id for s in (await hub.find(limit=1000)).items]
    await hub.end(session_id)
    return outcomes


async def over_async_clients(server: ThreadedServer, depth: int) -> list[list[str]]:
    value = nested(depth)
    async with (
        AsyncClient(server.url, token=server.token) as http,
        GrpcClient(server.grpc_url, token=server.token) as grpc,
    ):
        return [
            await async_round_trip(http, f"http-{depth}", value),
            await async_round_trip(grpc, f"grpc-{depth}", value),
        ]


@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_values_are_stored_or_refused_alike_on_every_client(
    both: ThreadedServer, depth: int
) -> None:
    with Client(both.url, token=both.token) as client:
        expected = blocking_round_trip(client, f"sync-{depth}", nested(depth))
    for outcomes in asyncio.run(over_async_clients(both, depth)):
        assert outcomes == expected
    if depth >= 3000:
        assert expected == ["refused"] * 3
