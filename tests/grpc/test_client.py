"""``GrpcClient`` (``sessionhub.connect("grpc://...")``): the hub's verbs, results and exceptions.

The parity test runs one script of verbs and bad calls against an embedded hub, the HTTP
``AsyncClient`` and the ``GrpcClient``, each over a hub with the same manual clock and id
generator, and requires the three transcripts to be equal.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import sessionhub
from sessionhub import (
    AsyncClient,
    Limits,
    ManualClock,
    SessionHub,
    SessionHubError,
    SessionNotFound,
    StoreUnavailable,
    Unauthorized,
    ValidationError,
)
from sessionhub.grpc import GrpcClient
from sessionhub.http import create_app

from .conftest import TOKEN, MakeServed, Served, free_port, serving_http

Hub = SessionHub | AsyncClient | GrpcClient


async def transcript(hub: Hub) -> list[Any]:
    """Every verb, with good and bad arguments; what each returned or raised."""
    out: list[Any] = []

    async def step(call: Callable[[], Awaitable[Any]]) -> None:
        try:
            result = await call()
        except SessionHubError as exc:
            result = (type(exc).__name__, exc.message)
        out.append(result)

    await step(
        lambda: hub.create(namespace="p", user_id="ada", labels={"r": "a"}, details={"n": 1})
    )
    await step(lambda: hub.create("fixed/id", idle_timeout=None, ttl=60, retention=5))
    await step(lambda: hub.create("kid", parent_id="fixed/id", activate=True))
    await step(lambda: hub.create("fixed/id"))
    await step(lambda: hub.create("bad id"))
    await step(lambda: hub.create(details={"x": object()}))
    await step(lambda: hub.create(labels={"n": 1}))  # type: ignore[dict-item]
    await step(lambda: hub.create(idle_timeout=-1))
    await step(lambda: hub.get("fixed/id"))
    await step(lambda: hub.get("missing"))
    await step(lambda: hub.get(""))
    await step(lambda: hub.exists("kid"))
    await step(lambda: hub.find(namespace="default", limit=1))
    await step(lambda: hub.find(labels={"r": "a"}))
    await step(lambda: hub.find(limit=0))
    await step(lambda: hub.count(user_id="ada"))
    await step(lambda: hub.update("fixed/id", details={"a": {"b": [1, None]}}, labels={"l": "v"}))
    await step(lambda: hub.update("fixed/id", remove_details=["a"], expected_version=1))
    await step(lambda: hub.update("fixed/id", remove_labels=["l"], ttl=None, idle_timeout=30))
    await step(lambda: hub.transition("kid", "spawn"))
    await step(lambda: hub.transition("fixed/id", "spawn"))
    await step(lambda: hub.transition("fixed/id", "activate", expected_version=99))
    await step(lambda: hub.touch("fixed/id"))
    await step(lambda: hub.incr("fixed/id", "calls"))
    await step(lambda: hub.incr("fixed/id", "calls", 41))
    await step(lambda: hub.incr("fixed/id", "calls", True))
    await step(lambda: hub.link("fixed/id", "id1"))
    await step(lambda: hub.link("fixed/id", "fixed/id"))
    data = hub.data("fixed/id")
    await step(lambda: data.set("k", {"v": [1, 2]}))
    await step(lambda: data.set("k", 2, expected_version=0))
    await step(lambda: data.get("k"))
    await step(lambda: data.get("nope", "default"))
    await step(lambda: data.entry("k"))
    await step(lambda: data.entries())
    await step(lambda: data.items())
    await step(lambda: data.delete("k", expected_version=1))
    await step(lambda: data.delete("k"))
    await step(lambda: hub.data("missing").entry("k"))
    history = hub.history("fixed/id")
    for n in range(3):
        await step(lambda n=n: history.append("call" if n else "note", {"n": n}))  # type: ignore[misc]
    await step(lambda: history.append("bare"))
    await step(lambda: history.read())
    await step(lambda: history.read(after=1, limit=1))
    await step(lambda: history.read(newest_first=True, kind="call"))
    await step(lambda: history.counts())
    await step(lambda: history.count("call"))
    await step(lambda: history.count())
    await step(lambda: history.read(after=-1))
    await step(lambda: hub.end("fixed/id", "finished"))
    await step(lambda: hub.end("fixed/id"))
    await step(lambda: hub.get("fixed/id"))  # retained 5 s, ended with its child
    await step(lambda: hub.get("id1"))
    await step(lambda: hub.end("nope"))
    await step(lambda: hub.touch("fixed/id"))
    await step(lambda: hub.count(include_ended=True, namespace="default"))
    return out


def fresh_hub(**options: Any) -> SessionHub:
    counter = itertools.count(1)
    return SessionHub(
        clock=ManualClock(1_700_000_000.0),
        id_factory=lambda: f"id{next(counter)}",
        poll_interval=3600,
        limits=Limits(max_details_bytes=4096),
        **options,
    )


async def test_the_grpc_client_answers_as_the_hub_and_the_http_client(
    make_served: MakeServed,
) -> None:
    async with fresh_hub() as embedded:
        expected = await transcript(embedded)
    async with fresh_hub() as behind_http:
        app = create_app(behind_http, manage_hub=False)
        async with serving_http(app) as url, AsyncClient(url) as http:
            over_http = await transcript(http)
    async with fresh_hub() as behind_grpc:
        served = await make_served(behind_grpc)
        async with sessionhub.connect(served.url) as client:
            assert isinstance(client, GrpcClient)
            over_grpc = await transcript(client)
    # same results and same exceptions; only the wording of argument errors caught before
    # sending (a wrong Python type) may differ from the hub's
    for other in (over_grpc, over_http):
        assert [kinds(r) for r in other] == [kinds(r) for r in expected]
        for got, want in zip(other, expected, strict=True):
            assert got == want or kinds(want) == "ValidationError"
    assert sum(g != w for g, w in zip(over_grpc, expected, strict=True)) <= 2


def kinds(result: Any) -> Any:
    return result[0] if isinstance(result, tuple) else result


async def test_track_request_counts_on_the_server(served: Served) -> None:
    async with GrpcClient(served.url) as client:
        await client.create("t")
        async with client.track_request("t") as session:
            assert session.active_requests == 1
            assert (await served.hub.get("t")).active_requests == 1
        assert (await served.hub.get("t")).active_requests == 0
        with pytest.raises(RuntimeError):
            async with client.track_request("t"):
                raise RuntimeError("the block failed")
        assert (await served.hub.get("t")).active_requests == 0
        with pytest.raises(SessionNotFound):
            async with client.track_request("unknown"):
                pass
        async with client.track_request("t"):
            await served.hub.end("t")  # ended meanwhile: nothing to release, no error


async def test_subscribe_reads_filters_and_resumes(served: Served) -> None:
    async with GrpcClient(served.url) as client:
        events = client.subscribe(namespace="ev", kinds=["created", "ended"])
        first = asyncio.ensure_future(anext(events))
        async with asyncio.timeout(10):  # until the subscription is live on the server
            while not first.done():
                await client.create(namespace="ev")
                await asyncio.wait({first}, timeout=0.05)
        anchor = first.result()
        await events.aclose()
        made = await client.create("e1", namespace="ev")
        await client.update("e1", details={"x": 1})
        await client.end("e1")
        resumed = client.subscribe(namespace="ev", kinds=["created", "ended"], after=anchor.id)
        async with asyncio.timeout(10):
            seen = []
            async for event in resumed:
                if event.session is not None and event.session.id == "e1":
                    seen.append(event)
                if len(seen) == 2:
                    break
        await resumed.aclose()
        assert [e.kind for e in seen] == ["created", "ended"]
        assert seen[0].session == made
        with pytest.raises(ValidationError):
            await anext(client.subscribe(kinds="created"))
        with pytest.raises(ValidationError):
            await anext(client.subscribe(after="never-given"))


async def test_subscribe_ends_or_reconnects_when_the_server_stops(
    make_served: MakeServed,
) -> None:
    served = await make_served()
    async with GrpcClient(served.url, reconnect_attempts=1) as client:
        once = client.subscribe(reconnect=False)
        pending = asyncio.ensure_future(anext(once))
        await asyncio.sleep(0.2)
        await served.server.stop(1)
        with pytest.raises(StopAsyncIteration):
            async with asyncio.timeout(10):
                await pending
        again = client.subscribe()
        with pytest.raises(StoreUnavailable):
            async with asyncio.timeout(20):
                await anext(again)


async def test_metrics_and_health(served: Served) -> None:
    async with GrpcClient(served.url) as client:
        await client.create(namespace="m")
        snapshot = await client.metrics()
        assert snapshot == await served.hub.metrics()
        assert snapshot.per_minute  # the per-minute rates cross gRPC as they cross HTTP
        assert sum(minute.created for minute in snapshot.per_minute) == 1
        assert snapshot.per_minute == (await served.hub.metrics()).per_minute
        assert await client.health() == "ok"


async def test_connection_errors_and_urls() -> None:
    dead = GrpcClient(f"grpc://127.0.0.1:{free_port()}", timeout=5)
    with pytest.raises(StoreUnavailable):
        await dead.start()
    with pytest.raises(StoreUnavailable):
        await dead.get("x")
    await dead.close()
    for url in ("http://x:1", "grpc://", "grpc://host:port", "grpc://h:1/path"):
        with pytest.raises(ValidationError):
            GrpcClient(url)
    assert GrpcClient("grpc://[::1]:7481").target == "[::1]:7481"
    assert "token" not in repr(GrpcClient("grpc://h:1", token="secret-token"))


async def test_the_token_is_sent_and_a_wrong_one_is_unauthorized(
    make_served: MakeServed,
) -> None:
    served = await make_served(token=TOKEN)
    async with sessionhub.connect(served.url, token=TOKEN) as client:
        assert (await client.create("authorized")).id == "authorized"
    async with sessionhub.connect(served.url, token="wrong") as client:  # health is public
        with pytest.raises(Unauthorized):
            await client.get("authorized")
        with pytest.raises(Unauthorized):
            await anext(client.subscribe())
