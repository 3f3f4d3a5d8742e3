"""The FastAPI wiring of Morgan's documentation (startup/shutdown, ``/api/chat`` with
``track_request``, a websocket that deletes its session on disconnect), on Starlette, which FastAPI
is built on and which the server extra installs. The app runs in the test client's own thread and
loop, as under a real server.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException, StarletteDeprecationWarning
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from sessionhub.compat.morgan import (
    Session,
    SessionManager,
    get_session_manager,
    initialize_session_manager,
)

with warnings.catch_warnings():  # Starlette asks for httpx2 in its test client; httpx is pinned
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient


async def process_message(session: Session, message: str) -> str:
    session.metadata["messages"] = session.metadata.get("messages", 0) + 1  # the live object
    in_flight = len(session.active_requests)
    return f"{message} (#{session.metadata['messages']}, {in_flight} in flight)"


def create_app() -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        manager = initialize_session_manager()  # startup
        await manager.start()
        app.state.session_manager = manager
        yield
        await app.state.session_manager.stop()  # shutdown

    async def new_session(request: Request) -> JSONResponse:
        manager: SessionManager = request.app.state.session_manager
        if manager.get_active_session_count() >= manager.max_concurrent_requests:
            raise HTTPException(503, "Server at capacity, please try again later")
        body: dict[str, Any] = await request.json()
        session = await manager.create_session(user_id=body["user_id"], metadata=body["metadata"])
        return JSONResponse({"session_id": session.session_id})

    async def show_session(request: Request) -> JSONResponse:
        manager: SessionManager = request.app.state.session_manager
        session = await manager.get_session(request.path_params["session_id"])
        if not session:
            raise HTTPException(status_code=404, detail="Session not found")
        return JSONResponse({"user_id": session.user_id, "metadata": session.metadata})

    async def chat(request: Request) -> JSONResponse:
        manager: SessionManager = request.app.state.session_manager
        session_id = request.query_params["session_id"]
        message = request.query_params["message"]
        try:
            async with manager.track_request(session_id) as session:
                response = await process_message(session, message)
                return JSONResponse({"response": response})
        except ValueError as e:
            raise HTTPException(status_code=404, detail=str(e)) from e

    async def websocket_endpoint(websocket: WebSocket) -> None:
        manager: SessionManager = websocket.app.state.session_manager
        session_id = websocket.path_params["session_id"]
        await websocket.accept()
        session = await manager.get_session(session_id)
        assert session is not None
        session.connection_count += 1
        try:
            while (text := await websocket.receive_text()) != "bye":
                if text == "connections?":
                    record = await manager.hub.get(session_id)  # the hub's counter
                    text = str(record.counters.get("connection_count"))
                await websocket.send_text(text.upper())
        finally:
            await manager.delete_session(session_id)  # clean up the session on disconnect
        await websocket.close()

    return Starlette(
        routes=[
            Route("/api/sessions", new_session, methods=["POST"]),
            Route("/api/sessions/{session_id}", show_session),
            Route("/api/chat", chat, methods=["POST"]),
            WebSocketRoute("/ws/{session_id}", websocket_endpoint),
        ],
        lifespan=lifespan,
    )


def test_web_integration() -> None:
    app = create_app()
    with TestClient(app) as client:
        manager: SessionManager = app.state.session_manager
        assert get_session_manager() is manager
        created = client.post(
            "/api/sessions", json={"user_id": "u1", "metadata": {"client": "web"}}
        )
        sid = created.json()["session_id"]
        other = client.post("/api/sessions", json={"user_id": "u2", "metadata": {"client": "cli"}})
        other_sid = other.json()["session_id"]
        assert manager.get_active_session_count() == 2  # sync, from another thread

        answer = client.post("/api/chat", params={"session_id": sid, "message": "hi"})
        assert answer.status_code == 200
        assert answer.json() == {"response": "hi (#1, 1 in flight)"}
        again = client.post("/api/chat", params={"session_id": sid, "message": "again"})
        assert again.json() == {"response": "again (#2, 1 in flight)"}
        shown_mine = client.get(f"/api/sessions/{sid}")
        assert shown_mine.json() == {"user_id": "u1", "metadata": {"client": "web", "messages": 2}}
        shown = client.get(f"/api/sessions/{other_sid}")
        assert shown.json() == {"user_id": "u2", "metadata": {"client": "cli"}}

        missing = client.post("/api/chat", params={"session_id": "nope", "message": "hi"})
        assert missing.status_code == 404
        assert missing.text == "Session not found: nope"
        assert client.get("/api/sessions/nope").status_code == 404

        with client.websocket_connect(f"/ws/{sid}") as ws:
            ws.send_text("hello")
            assert ws.receive_text() == "HELLO"
            ws.send_text("connections?")
            assert ws.receive_text() == "1"
            ws.send_text("bye")
            with pytest.raises(WebSocketDisconnect):
                ws.receive_text()  # the server closes after deleting the session
        assert client.get(f"/api/sessions/{sid}").status_code == 404
        assert client.get(f"/api/sessions/{other_sid}").status_code == 200
        assert manager.get_metrics()["total_sessions_cleaned"] == 1
    # Shutdown stopped the manager, which removed the remaining session.
    assert manager.get_metrics()["active_sessions"] == 0
    assert manager.get_metrics()["total_sessions_cleaned"] == 2
