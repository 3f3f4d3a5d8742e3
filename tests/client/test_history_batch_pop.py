"""The history's ``append_many`` and ``pop`` mean the same on every face: the embedded hub, the HTTP
``AsyncClient`` and ``GrpcClient`` against a real server (each on every store kind), and the blocking
``Client``. Bad input first: each refusal is the error the embedded hub raises, and writes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from sessionhub import (
    AsyncClient,
    Client,
    Limits,
    ManualClock,
    PayloadTooLarge,
    SessionHub,
    SessionNotFound,
    ValidationError,
)
from sessionhub.grpc import GrpcClient
from sessionhub.stores import Store

from .serving import ThreadedServer

AnyHub = SessionHub | AsyncClient | GrpcClient
OpenHub = Callable[..., Awaitable[AnyHub]]
FACES = ["embedded", "http", "grpc"]


@pytest.fixture(params=FACES)
def face(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def open_hub(face: str, make_store: Callable[[], Store]) -> AsyncIterator[OpenHub]:
    """Hubs of one face over a fresh store (``SessionHub`` keyword arguments: the server's hub's
    on the remote faces); all closed at teardown."""
    hubs: list[AnyHub] = []
    servers: list[ThreadedServer] = []

    async def open_(**options: Any) -> AnyHub:
        options.setdefault("idle_timeout", None)
        hub: AnyHub
        if face == "embedded":
            hub = SessionHub(make_store(), **options)
        else:
            server = await asyncio.to_thread(
                ThreadedServer, grpc=face == "grpc", store=make_store(), **options
            )
            servers.append(server)
            if face == "http":
                hub = AsyncClient(server.url, token=server.token)
            else:
                hub = GrpcClient(server.grpc_url, token=server.token)
        await hub.start()
        hubs.append(hub)
        return hub

    yield open_
    for hub in hubs:
        await hub.close()
    for server in servers:
        await asyncio.to_thread(server.stop)


async def history_of(hub: AnyHub, session_id: str) -> list[tuple[str, Any]]:
    return [(r.kind, r.payload) for r in await hub.history(session_id).read(limit=1000)]


# bad input


async def test_append_many_refuses_malformed_batches_writing_nothing(open_hub: OpenHub) -> None:
    hub = await open_hub()
    await hub.create("s")
    history = hub.history("s")
    malformed: list[Any] = [
        [],  # an empty batch: nothing to append is a caller's slip, not a no-op
        "item",
        {"item": 1},
        5,
        None,
        [("item",)],
        [("item", 1, 2)],
        ["item"],
        [("item", 1)] * 1001,  # past Limits.max_history_batch's default
        [("item", 1), ("bad kind", 2)],
        [("item", 1), ("", 2)],
        [("item", 1), (7, 2)],
        [("item", 1), ("item", object())],  # not JSON
    ]
    for records in malformed:
        with pytest.raises(ValidationError):
            await history.append_many(records)
    assert await hub.history("s").counts() == {}


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True])
def test_max_history_batch_must_be_a_positive_integer_or_none(bad: Any) -> None:
    with pytest.raises(ValidationError, match="max_history_batch"):
        Limits(max_history_batch=bad)


async def test_a_batch_past_max_history_batch_is_refused_whole(open_hub: OpenHub) -> None:
    """The server's limit, not a client's guess: a remote client sends the batch and the server
    refuses it (400, INVALID_ARGUMENT) before writing anything."""
    hub = await open_hub(limits=Limits(max_history_batch=3))
    await hub.create("s")
    history = hub.history("s")
    with pytest.raises(ValidationError, match="1 to 3 records, got 4"):
        await history.append_many([("item", i) for i in range(4)])
    assert await history.counts() == {}
    records = await history.append_many([("item", i) for i in range(3)])
    assert [(r.seq, r.payload) for r in records] == [(1, 0), (2, 1), (3, 2)]


@pytest.mark.parametrize("most", [2500, None])
async def test_max_history_batch_can_be_raised_or_lifted(
    open_hub: OpenHub, most: int | None
) -> None:
    hub = await open_hub(limits=Limits(max_history_batch=most))
    await hub.create("s")
    history = hub.history("s")
    if most is not None:
        with pytest.raises(ValidationError):
            await history.append_many([("item", i) for i in range(most + 1)])
    records = await history.append_many([("item", i) for i in range(2500)])
    assert [r.seq for r in records] == list(range(1, 2501))
    assert await history.counts() == {"item": 2500}
    last = await history.read(newest_first=True, limit=1)
    assert [(r.seq, r.payload) for r in last] == [(2500, 2499)]


async def test_append_many_refuses_a_batch_with_one_record_too_large(open_hub: OpenHub) -> None:
    hub = await open_hub(limits=Limits(max_history_record_bytes=100))
    await hub.create("s")
    records = [("item", "a"), ("item", "x" * 200), ("item", "c")]
    with pytest.raises(PayloadTooLarge, match="history record 1"):
        await hub.history("s").append_many(records)
    with pytest.raises(PayloadTooLarge):  # as a single append of it
        await hub.history("s").append("item", "x" * 200)
    assert await hub.history("s").counts() == {}  # all or none
    assert [r.payload for r in await hub.history("s").append_many(records[::2])] == ["a", "c"]


async def test_pop_refuses_bad_kinds_writing_nothing(open_hub: OpenHub) -> None:
    hub = await open_hub()
    await hub.create("s")
    history = hub.history("s")
    await history.append("item", 1)
    for kind, marker in [
        ("item", "item"),  # a marker of the popped kind would push, not pop
        ("bad kind", "pop"),
        ("item", "bad marker"),
        ("", "pop"),
        ("item", ""),
        ("i" * 129, "pop"),
    ]:
        with pytest.raises(ValidationError):
            await history.pop(kind, marker=marker)
    with pytest.raises(ValidationError):
        await history.pop(7, marker="pop")  # type: ignore[arg-type]
    assert await history.counts() == {"item": 1}


@pytest.mark.parametrize("ended", [False, True], ids=["unknown", "ended"])
async def test_unknown_and_ended_sessions_are_refused_as_append_is(
    open_hub: OpenHub, ended: bool
) -> None:
    hub = await open_hub(retention=3600)  # an ended session stays readable: refused all the same
    if ended:
        await hub.create("s")
        await hub.history("s").append("item", 1)
        assert await hub.end("s")
    history = hub.history("s")
    with pytest.raises(SessionNotFound) as single:
        await history.append("item", 2)
    with pytest.raises(SessionNotFound) as batch:
        await history.append_many([("item", 2), ("item", 3)])
    with pytest.raises(SessionNotFound) as popped:
        await history.pop("item", marker="pop")
    assert single.value.session_id == batch.value.session_id == popped.value.session_id == "s"
    if ended:
        assert await history.counts() == {"item": 1}


# behaviour


async def test_append_many_appends_consecutively_in_one_go(open_hub: OpenHub) -> None:
    hub = await open_hub()
    await hub.create("s")
    history = hub.history("s")
    await history.append("note", "first")
    payloads: list[Any] = [None, 0, "two", [3], {"four": {"deep": [True]}}]
    records = await history.append_many([("item", p) for p in payloads])
    assert [r.seq for r in records] == [2, 3, 4, 5, 6]
    assert [r.payload for r in records] == payloads
    assert {r.kind for r in records} == {"item"}
    assert len({r.at for r in records}) == 1  # one operation, one time
    assert await history.read(after=1) == records
    mixed = await history.append_many(iter([("a", 1), ("b", 2)]))  # any iterable of pairs
    assert [(r.seq, r.kind) for r in mixed] == [(7, "a"), (8, "b")]


async def test_pop_takes_the_stack_top_and_marks_it(open_hub: OpenHub) -> None:
    hub = await open_hub()
    await hub.create("s")
    history = hub.history("s")
    assert await history.pop("item", marker="pop") is None  # empty: nothing appended
    assert await history.counts() == {}
    await history.append_many([("item", "a"), ("item", "b"), ("item", "c")])
    top = await history.pop("item", marker="pop")
    assert top is not None
    assert (top.seq, top.kind, top.payload) == (3, "item", "c")
    marker = (await history.read(newest_first=True, limit=1))[0]
    assert (marker.seq, marker.kind, marker.payload) == (4, "pop", {"popped": 3, "below": 2})
    popped = await history.pop("item", marker="pop")
    assert popped is not None
    assert popped.payload == "b"
    await history.append("item", "d")
    assert [r.payload for r in await history.read(kind="item")] == ["a", "b", "c", "d"]
    again = await history.pop("item", marker="pop")
    assert again is not None
    assert again.payload == "d"
    await history.append("clear")  # any other kind empties the stack
    assert await history.pop("item", marker="pop") is None
    assert await history.counts() == {"item": 4, "pop": 3, "clear": 1}


async def test_both_verbs_are_activity(open_hub: OpenHub) -> None:
    clock = ManualClock()
    hub = await open_hub(clock=clock)
    made = await hub.create("s", idle_timeout=60)
    history = hub.history("s")
    writes: list[Callable[[], Awaitable[object]]] = [
        lambda: history.append_many([("item", 1), ("item", 2)]),
        lambda: history.pop("item", marker="pop"),
        lambda: history.pop("item", marker="pop"),
    ]
    for write in writes:
        now = clock.advance(30)
        await write()
        session = await hub.get("s")
        assert session.last_activity_at == now
        assert session.expires_at == now + 60
    clock.advance(30)
    assert await history.pop("item", marker="pop") is None  # an empty stack: nothing written
    assert await hub.get("s") == session
    assert session.created_at == made.created_at


async def test_concurrent_pops_take_distinct_records(open_hub: OpenHub) -> None:
    hub = await open_hub()
    await hub.create("s")
    history = hub.history("s")
    await history.append_many([("item", i) for i in range(12)])
    popped = await asyncio.gather(*(history.pop("item", marker="pop") for _ in range(20)))
    taken = [r.payload for r in popped if r is not None]
    assert sorted(taken) == list(range(12))
    assert popped.count(None) == 8
    assert await history.counts() == {"item": 12, "pop": 12}


async def test_concurrent_batches_stay_contiguous(open_hub: OpenHub) -> None:
    hub = await open_hub()
    await hub.create("s")
    history = hub.history("s")
    await asyncio.gather(
        *(history.append_many([("item", f"{w}.{i}") for i in range(10)]) for w in range(8))
    )
    payloads = [r.payload for r in await history.read(limit=1000)]
    assert len(payloads) == 80
    for start in range(0, 80, 10):
        writer = payloads[start].split(".")[0]
        assert payloads[start : start + 10] == [f"{writer}.{i}" for i in range(10)]


# the blocking client


def test_the_blocking_client_has_both_verbs() -> None:
    server = ThreadedServer(limits=Limits(max_history_record_bytes=100))
    try:
        with Client(server.url, token=server.token) as client:
            client.create("s")
            history = client.history("s")
            with pytest.raises(ValidationError):
                history.append_many([])
            with pytest.raises(PayloadTooLarge):
                history.append_many([("item", "a"), ("item", "x" * 200)])
            with pytest.raises(ValidationError):
                history.pop("item", marker="item")
            with pytest.raises(SessionNotFound):
                client.history("ghost").pop("item", marker="pop")
            assert history.counts() == {}
            records = history.append_many([("item", "a"), ("item", "b")])
            assert [(r.seq, r.payload) for r in records] == [(1, "a"), (2, "b")]
            top = history.pop("item", marker="pop")
            assert top is not None
            assert top.payload == "b"
            assert json.loads(json.dumps(history.read()[-1].payload)) == {"popped": 2, "below": 1}
    finally:
        server.stop()
