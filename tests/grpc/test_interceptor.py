"""HeaderSessionInterceptor on a real gRPC server of "yours" (a GripMock-style mock service), with
real clients sending the session in their metadata."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from sessionhub import Limits, ManualClock, SessionHub
from sessionhub.grpc import GrpcClient, HeaderSessionInterceptor, current_session

from .conftest import MakeServed, error_code, failure

KEY = "x-gripmock-session"


class MockServer:
    """``/mock.Mock/*`` over raw JSON bytes: stubs and call history kept per bound session."""

    def __init__(self, hub: Any, gate: asyncio.Event | None = None, **options: Any) -> None:
        self.hub = hub
        self.gate = gate or asyncio.Event()
        self.interceptor = HeaderSessionInterceptor(hub, **options)
        self.server: Any = None
        self.channel: Any = None

    async def __aenter__(self) -> MockServer:
        handlers = {
            "Stub": grpc.unary_unary_rpc_method_handler(self.stub),
            "Call": grpc.unary_unary_rpc_method_handler(self.call),
            "Who": grpc.unary_unary_rpc_method_handler(self.who),
            "Hold": grpc.unary_stream_rpc_method_handler(self.hold),
            "Count": grpc.stream_unary_rpc_method_handler(self.count),
        }
        self.server = grpc.aio.server(
            interceptors=[self.interceptor], options=[("grpc.so_reuseport", 0)]
        )
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("mock.Mock", handlers),)
        )
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.channel.close()
        await self.server.stop(0)

    async def invoke(self, method: str, body: Any = None, session: str | None = None) -> Any:
        call = self.channel.unary_unary(f"/mock.Mock/{method}")
        metadata = () if session is None else ((KEY, session),)
        answer = await call(json.dumps(body).encode(), metadata=metadata, timeout=10)
        return json.loads(answer)

    # the servicer: it finds its session with current_session()

    async def stub(self, request: bytes, context: Any) -> bytes:
        session = current_session()
        assert session is not None
        await self.hub.data(session.id).set("stub", json.loads(request))
        return b"true"

    async def call(self, request: bytes, context: Any) -> bytes:
        session = current_session()
        assert session is not None
        await self.hub.history(session.id).append("call", json.loads(request))
        stub = await self.hub.data(session.id).get("stub")
        return json.dumps(stub).encode()

    async def who(self, request: bytes, context: Any) -> bytes:
        session = current_session()
        if session is None:
            return b"null"
        now = await self.hub.get(session.id)
        answer = {
            "id": session.id,
            "namespace": session.namespace,
            "labels": dict(session.labels),
            "state": session.state,
            "active_now": now.active_requests,
        }
        return json.dumps(answer).encode()

    async def hold(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        session = current_session()
        assert session is not None
        yield json.dumps((await self.hub.get(session.id)).active_requests).encode()
        await self.gate.wait()
        yield json.dumps((await self.hub.get(session.id)).active_requests).encode()

    async def count(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        seen = [r async for r in requests]
        session = current_session()
        return json.dumps([len(seen), None if session is None else session.id]).encode()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(2_000_000.0)


@pytest.fixture
async def hub(clock: ManualClock) -> AsyncIterator[SessionHub]:
    limits = Limits(max_requests_per_session=1)
    async with SessionHub(idle_timeout=30, clock=clock, limits=limits, poll_interval=3600) as hub:
        yield hub


async def test_the_first_call_creates_the_session_and_each_call_is_tracked(
    hub: SessionHub, clock: ManualClock
) -> None:
    options: dict[str, Any] = {
        "metadata_key": "X-Gripmock-Session",
        "namespace": "mocks",
        "labels": {"k": "t"},
    }
    async with MockServer(hub, **options) as mock:
        who = await mock.invoke("Who", session="test-1/a")
        assert who == {
            "id": "test-1/a",
            "namespace": "mocks",
            "labels": {"k": "t"},
            "state": "ACTIVE",
            "active_now": 1,  # the call is a request in flight while it runs
        }
        first = await hub.get("test-1/a")
        assert first.active_requests == 0
        clock.advance(20)
        await mock.invoke("Who", session="test-1/a")
        later = await hub.get("test-1/a")
        assert later.last_activity_at == first.last_activity_at + 20  # the idle timeout slid
        assert later.expires_at == later.last_activity_at + 30
        assert await mock.invoke("Who") is None  # no metadata: not bound


async def test_parallel_clients_never_see_each_other(hub: SessionHub) -> None:
    async with MockServer(hub, metadata_key=KEY) as mock:

        async def one_test(n: int) -> None:
            session = f"parallel-{n}"
            assert await mock.invoke("Stub", {"reply": n}, session)
            for call in range(n + 1):
                assert await mock.invoke("Call", {"call": call}, session) == {"reply": n}

        await asyncio.gather(*(one_test(n) for n in range(8)))
        for n in range(8):
            history = hub.history(f"parallel-{n}")
            assert await history.count("call") == n + 1
            assert [r.payload for r in await history.read()] == [{"call": c} for c in range(n + 1)]
        assert await mock.invoke("Call", {}, "never-stubbed") is None


async def test_streams_are_tracked_for_their_whole_duration(hub: SessionHub) -> None:
    gate = asyncio.Event()
    async with MockServer(hub, gate, metadata_key=KEY) as mock:
        hold = mock.channel.unary_stream("/mock.Mock/Hold")(b"{}", metadata=((KEY, "st"),))
        assert json.loads(await hold.read()) == 1
        assert (await hub.get("st")).active_requests == 1
        busy = await failure(mock.invoke("Who", session="st"))  # max 1 request per session
        assert busy.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_code(busy) == "too_many_requests"
        gate.set()
        assert json.loads(await hold.read()) == 1
        assert await hold.code() == grpc.StatusCode.OK
        assert (await hub.get("st")).active_requests == 0
        counted = mock.channel.stream_unary("/mock.Mock/Count")(
            iter([b"1", b"2", b"3"]), metadata=((KEY, "st"),)
        )
        assert json.loads(await counted) == [3, "st"]


async def test_refusals(hub: SessionHub) -> None:
    async with MockServer(hub, metadata_key=KEY, create=False, required=True) as mock:
        missing = await failure(mock.invoke("Who"))
        assert missing.code() == grpc.StatusCode.INVALID_ARGUMENT
        unknown = await failure(mock.invoke("Who", session="nobody"))
        assert unknown.code() == grpc.StatusCode.NOT_FOUND
        malformed = await failure(mock.invoke("Who", session="has space"))
        assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_code(malformed) == "invalid"
        await hub.create("known", activate=True)
        assert (await mock.invoke("Who", session="known"))["id"] == "known"
    assert await hub.count() == 1


async def test_a_shared_server_as_the_hub(make_served: MakeServed) -> None:
    served = await make_served()
    async with GrpcClient(served.url) as remote, MockServer(remote, metadata_key=KEY) as mock:
        who = await mock.invoke("Who", session="remote-1")
        assert who["id"] == "remote-1"
        assert who["active_now"] == 1
        assert (await served.hub.get("remote-1")).active_requests == 0
        await mock.invoke("Stub", {"reply": "shared"}, "remote-1")
        assert await served.hub.data("remote-1").get("stub") == {"reply": "shared"}
