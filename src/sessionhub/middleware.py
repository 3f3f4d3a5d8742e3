"""Header-bound sessions for ASGI apps: each request runs inside the session its header names.

    app = Starlette(routes=...)
    app.add_middleware(HeaderSessionMiddleware, hub=hub, header="x-gripmock-session")

    async def handler(request):
        session = request.state.sessionhub_session  # None when the header is absent
        stubs = hub.data(session.id)

This is how a shared test server gives each test its own world (GripMock's ``X-Gripmock-Session``):
the session is created on first use (unless ``create=False``), every request counts as a request in
flight (``hub.track_request``), which refreshes the idle timeout at its start and end and holds expiry
off while it runs. ``hub`` is an embedded ``SessionHub`` or an ``AsyncClient`` of a shared server
(whose ``track_request`` holds a request lease there, so the server counts the request too).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import msgspec

from ._binding import enter_session
from ._errors import SessionHubError, ValidationError
from ._hub import DEFAULT, SessionHub, _Default
from ._models import Session
from .client import AsyncClient

__all__ = ["DEFAULT_HEADER", "STATE_KEY", "HeaderSessionMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_HEADER = "x-sessionhub-session"
#: ``scope["state"][STATE_KEY]``, i.e. Starlette's ``request.state.sessionhub_session``.
STATE_KEY = "sessionhub_session"


class HeaderSessionMiddleware:
    """Bind each HTTP or WebSocket request to the session named in ``header``.

    - header present: the session is looked up (created first when ``create`` and it does not
      exist, with ``namespace``, ``labels``, ``idle_timeout``, ``ttl``; made active), the request
      is tracked for its whole duration, and the handler finds the ``Session`` in
      ``scope["state"]["sessionhub_session"]``;
    - header absent: the request passes through with ``None`` there, or is refused with 400 when
      ``required``;
    - a bad id, an unknown session with ``create=False``, or a limit (``TooManyRequests``, ...)
      answers the hub's error as JSON ``{"error": {"code", "message"}}`` with its HTTP status.
    """

    def __init__(
        self,
        app: ASGIApp,
        hub: SessionHub | AsyncClient,
        *,
        header: str = DEFAULT_HEADER,
        create: bool = True,
        required: bool = False,
        namespace: str = "default",
        labels: Mapping[str, str] | None = None,
        idle_timeout: float | _Default | None = DEFAULT,
        ttl: float | _Default | None = DEFAULT,
    ) -> None:
        if not isinstance(header, str) or not header:
            raise ValidationError(f"header must be a header name, got {header!r}")
        self.app = app
        self.hub = hub
        self.header = header
        self._header_key = header.lower().encode("latin-1")
        self.create = create
        self.required = required
        self.namespace = namespace
        self.labels = labels
        self.idle_timeout = idle_timeout
        self.ttl = ttl

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        session_id = self._session_id(scope)
        state = scope.setdefault("state", {})
        if session_id is None:
            if self.required:
                await _refuse(scope, send, ValidationError(f"the {self.header} header is required"))
                return
            state[STATE_KEY] = None
            await self.app(scope, receive, send)
            return
        async with contextlib.AsyncExitStack() as stack:
            try:
                state[STATE_KEY] = await self._enter(stack, session_id)
            except SessionHubError as exc:
                await _refuse(scope, send, exc)
                return
            await self.app(scope, receive, send)

    def _session_id(self, scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == self._header_key:
                return bytes(value).decode("latin-1")
        return None

    async def _enter(self, stack: contextlib.AsyncExitStack, session_id: str) -> Session:
        return await enter_session(self, stack, session_id, f"{self.header} header")


async def _refuse(scope: Scope, send: Send, error: SessionHubError) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})
        return
    body = msgspec.json.encode({"error": error.to_dict()})
    await send(
        {
            "type": "http.response.start",
            "status": error.http_status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
