"""A shared mock server in GripMock's style, isolated per test by a session header.

Every test sends ``x-mock-session: <its own id>``; the server keeps that session's stubs in
``hub.data(id)`` and its call history in ``hub.history(id)``, so tests running in parallel against
one server never see each other's stubs or calls.

    python examples/header_sessions.py --port 8000            # embedded hub, memory store
    SESSIONHUB_URL=http://127.0.0.1:7480 python examples/header_sessions.py   # a shared hub server

    curl -H 'x-mock-session: t1' -d '{"reply": {"message": "hi"}}' localhost:8000/stubs/Greeter.SayHello
    curl -H 'x-mock-session: t1' -d '{"name": "ada"}' localhost:8000/call/Greeter.SayHello
    curl -H 'x-mock-session: t1' localhost:8000/verify/Greeter.SayHello     # {"calls": 1}
    curl -X DELETE -H 'x-mock-session: t1' localhost:8000/session           # GripMock's Close()
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import sessionhub
from sessionhub.middleware import HeaderSessionMiddleware

HEADER = "x-mock-session"


class BadRequest(Exception):
    """Input the mock server cannot use: answered 400 with ``{"error": ...}``."""


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:  # not JSON, or not UTF-8
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


async def _bad_request(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=400)


def _session(request: Request) -> sessionhub.Session:
    session: sessionhub.Session = request.state.sessionhub_session
    return session


def _hub(request: Request) -> sessionhub.SessionHub | sessionhub.AsyncClient:
    hub: sessionhub.SessionHub | sessionhub.AsyncClient = request.app.state.hub
    return hub


async def add_stub(request: Request) -> JSONResponse:
    """Register the reply of a method, in this session only (GripMock's ``Stub(...).Commit()``)."""
    method = request.path_params["method"]
    body = await _json(request)
    if not isinstance(body, dict) or "reply" not in body:
        raise BadRequest('a stub is {"reply": <the reply>}')
    entry = await _hub(request).data(_session(request).id).set(f"stub:{method}", body["reply"])
    return JSONResponse({"method": method, "version": entry.version}, status_code=201)


async def call(request: Request) -> JSONResponse:
    """Answer a call from this session's stubs and record it in this session's history."""
    method = request.path_params["method"]
    session_id = _session(request).id
    hub = _hub(request)
    await hub.history(session_id).append(f"call:{method}", await _json(request))
    reply = await hub.data(session_id).get(f"stub:{method}")
    if reply is None:
        return JSONResponse({"error": f"no stub for {method} in this session"}, status_code=404)
    return JSONResponse(reply)


async def verify(request: Request) -> JSONResponse:
    """How many times this session called the method (GripMock's ``Verify().Called(n)``)."""
    method = request.path_params["method"]
    calls = await _hub(request).history(_session(request).id).count(f"call:{method}")
    return JSONResponse({"method": method, "calls": calls})


async def close(request: Request) -> JSONResponse:
    """End the session: its stubs and history go with it (GripMock's ``Close()``)."""
    ended = await _hub(request).end(_session(request).id)
    return JSONResponse({"ended": ended})


def create_app(hub: sessionhub.SessionHub | sessionhub.AsyncClient | None = None) -> Starlette:
    """The mock server over ``hub``: by default a client of ``SESSIONHUB_URL`` when it is set, an
    embedded hub otherwise. Sessions are made on first use and expire after 60 idle seconds."""
    if hub is None:
        url = os.environ.get("SESSIONHUB_URL")
        hub = sessionhub.AsyncClient(url) if url else sessionhub.SessionHub(idle_timeout=60)
    chosen = hub

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.hub = chosen
        async with chosen:
            yield

    middleware = Middleware(
        HeaderSessionMiddleware, hub=chosen, header=HEADER, required=True, idle_timeout=60
    )
    routes = [
        Route("/stubs/{method}", add_stub, methods=["POST"]),
        Route("/call/{method}", call, methods=["POST"]),
        Route("/verify/{method}", verify, methods=["GET"]),
        Route("/session", close, methods=["DELETE"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[middleware],
        lifespan=lifespan,
        exception_handlers={BadRequest: _bad_request},
    )


def main() -> None:
    from granian import Granian
    from granian.constants import Interfaces

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    Granian(
        "header_sessions:create_app",
        factory=True,
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        working_dir=Path(__file__).parent,
    ).serve()


if __name__ == "__main__":
    main()
