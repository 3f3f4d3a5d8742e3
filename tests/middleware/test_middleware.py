"""HeaderSessionMiddleware on a real ASGI server on a loopback port, with real HTTP clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sessionhub import Limits, ManualClock, SessionHub, SessionNotFound, ValidationError
from sessionhub.middleware import HeaderSessionMiddleware

from .conftest import serving


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_000_000.0)


@pytest.fixture
async def hub(clock: ManualClock) -> AsyncIterator[SessionHub]:
    async with SessionHub(
        idle_timeout=30, clock=clock, limits=Limits(max_requests_per_session=1)
    ) as hub:
        yield hub


class Gate:
    """Holds a handler: ``entered`` is set once it runs, and it waits for ``opened``."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()


def probe_app(hub: SessionHub, gate: Gate | None = None, **options: Any) -> Starlette:
    """``/who`` answers the bound session as the handler saw it, and the hub's view mid-request;
    with a ``gate``, the handler waits for it to open first."""

    async def who(request: Request) -> JSONResponse:
        session = request.state.sessionhub_session
        if gate is not None:
            gate.entered.set()
            await gate.opened.wait()
        if session is None:
            return JSONResponse({"session": None})
        return JSONResponse(
            {"session": session.to_dict(), "active_now": await _active(hub, session.id)}
        )

    middleware = Middleware(HeaderSessionMiddleware, hub=hub, **options)
    return Starlette(routes=[Route("/who", who)], middleware=[middleware])


async def test_first_request_creates_the_session_with_the_options(hub: SessionHub) -> None:
    app = probe_app(hub, namespace="mocks", labels={"kind": "test"}, idle_timeout=5)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        answer = (await http.get("/who", headers={"x-sessionhub-session": "test/a%1"})).json()
    assert answer["session"]["id"] == "test/a%1"
    assert answer["session"]["namespace"] == "mocks"
    assert answer["session"]["labels"] == {"kind": "test"}
    assert answer["session"]["state"] == "ACTIVE"
    assert answer["active_now"] == 1
    after = await hub.get("test/a%1")
    assert after.active_requests == 0
    assert after.idle_timeout == 5


async def test_each_request_refreshes_the_idle_timeout(hub: SessionHub, clock: ManualClock) -> None:
    async with serving(probe_app(hub)) as url, httpx.AsyncClient(base_url=url) as http:
        headers = {"x-sessionhub-session": "s1"}
        await http.get("/who", headers=headers)
        first = await hub.get("s1")
        clock.advance(20)
        await http.get("/who", headers=headers)
        clock.advance(20)  # 40 s after creation, 20 s after the last request
        assert await hub.expire_due() == 0
        assert (await hub.get("s1")).last_activity_at == first.last_activity_at + 20
        clock.advance(11)
        assert await hub.expire_due() == 1


async def test_a_session_is_not_expired_while_a_request_runs(
    hub: SessionHub, clock: ManualClock
) -> None:
    gate = Gate()
    async with serving(probe_app(hub, gate)) as url, httpx.AsyncClient(base_url=url) as http:
        request = asyncio.create_task(http.get("/who", headers={"x-sessionhub-session": "slow"}))
        await gate.entered.wait()
        assert await _active(hub, "slow") == 1
        clock.advance(3600)
        assert await hub.expire_due() == 0
        gate.opened.set()
        assert (await request).json()["active_now"] == 1
        clock.advance(31)
        assert await hub.expire_due() == 1
        assert not await hub.exists("slow")


async def test_requests_past_the_per_session_limit_get_429(hub: SessionHub) -> None:
    gate = Gate()
    async with serving(probe_app(hub, gate)) as url, httpx.AsyncClient(base_url=url) as http:
        headers = {"x-sessionhub-session": "busy"}
        first = asyncio.create_task(http.get("/who", headers=headers))
        await gate.entered.wait()
        assert await _active(hub, "busy") == 1
        second = await http.get("/who", headers=headers)
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "too_many_requests"
        assert (await hub.get("busy")).active_requests == 1
        gate.opened.set()
        assert (await first).status_code == 200
    assert (await hub.get("busy")).active_requests == 0


async def test_missing_header_passes_through_with_no_session(hub: SessionHub) -> None:
    async with serving(probe_app(hub)) as url, httpx.AsyncClient(base_url=url) as http:
        answer = await http.get("/who")
    assert answer.json() == {"session": None}
    assert await hub.count() == 0


async def test_missing_header_is_refused_when_required(hub: SessionHub) -> None:
    app = probe_app(hub, header="x-gripmock-session", required=True)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        refused = await http.get("/who", headers={"x-sessionhub-session": "other-header"})
        bound = await http.get("/who", headers={"X-Gripmock-Session": "g1"})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid"
    assert "x-gripmock-session" in refused.json()["error"]["message"]
    assert bound.json()["session"]["id"] == "g1"
    assert [s.id for s in (await hub.find()).items] == ["g1"]


async def test_unknown_session_without_create_is_404_and_creates_nothing(hub: SessionHub) -> None:
    await hub.create("known")
    app = probe_app(hub, create=False)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        unknown = await http.get("/who", headers={"x-sessionhub-session": "unknown"})
        known = await http.get("/who", headers={"x-sessionhub-session": "known"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert known.json()["session"]["id"] == "known"
    assert await hub.count() == 1


@pytest.mark.parametrize("bad", ["has space", "x" * 201, "caf\u00e9"])
async def test_a_malformed_session_id_is_400_and_creates_nothing(hub: SessionHub, bad: str) -> None:
    async with serving(probe_app(hub)) as url, httpx.AsyncClient(base_url=url) as http:
        answer = await http.get("/who", headers={b"x-sessionhub-session": bad.encode()})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid"
    assert await hub.count() == 0


async def test_a_session_ended_during_its_request_ends_cleanly(hub: SessionHub) -> None:
    gate = Gate()
    async with serving(probe_app(hub, gate)) as url, httpx.AsyncClient(base_url=url) as http:
        request = asyncio.create_task(http.get("/who", headers={"x-sessionhub-session": "gone"}))
        await gate.entered.wait()
        assert await _active(hub, "gone") == 1
        assert await hub.end("gone")
        gate.opened.set()
        answer = await request
    assert answer.status_code == 200
    assert answer.json()["active_now"] == 0
    assert not await hub.exists("gone")


def test_the_header_name_must_be_given() -> None:
    with pytest.raises(ValidationError):
        HeaderSessionMiddleware(Starlette(), SessionHub(), header="")


async def _active(hub: SessionHub, session_id: str) -> int:
    try:
        return (await hub.get(session_id)).active_requests
    except SessionNotFound:
        return 0
