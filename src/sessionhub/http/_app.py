"""The HTTP/JSON face: an ASGI app over one ``SessionHub``.

``create_app(hub, token=...)`` gives the app; any ASGI server can run it (``sessionhub serve`` runs
it on granian). It routes on the raw path, checks the bearer token in constant time, bounds bodies,
answers every ``SessionHubError`` as ``{"error": {"code", "message"}}`` with its HTTP status, and
times every request for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import defaultdict
from collections.abc import Collection
from urllib.parse import unquote

from .. import _wire as wire
from .._errors import SessionHubError, Unauthorized, ValidationError
from .._hub import SessionHub
from .._leases import RequestLeases
from .._models import json_encoder
from ._guard import BrowserGuard, Headers, quoted
from ._openapi import OPERATIONS, openapi_document
from ._prometheus import CONTENT_TYPE, ServerMetrics
from ._request import (
    HttpRefusal,
    Receive,
    Reply,
    Request,
    Scope,
    Send,
    body_left,
    header_map,
)
from ._routes import ROUTES, Face, Handler, Route
from ._sse import stream_events
from ._ui import FIRST_READS, Dashboard

__all__ = ["SessionHubApp", "create_app"]

logger = logging.getLogger("sessionhub.http")

_PUBLIC = frozenset({"/healthz", "/openapi.json"})
_EVENTS = "/v1/events"
_METRICS = "/metrics"
_OPENAPI = "/openapi.json"
_SPECIAL = frozenset({_EVENTS, _METRICS, _OPENAPI})
_UNMATCHED = "(unmatched)"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def create_app(
    hub: SessionHub,
    *,
    token: str | None = None,
    max_body_bytes: int = 2 * 1024 * 1024,
    keepalive: float = 15.0,
    manage_hub: bool = True,
    allow_hosts: Collection[str] = (),
    allow_origins: Collection[str] = (),
    ui: bool = True,
) -> SessionHubApp:
    """The ASGI app serving ``hub``.

    ``token`` requires ``Authorization: Bearer <token>`` on every route but ``/healthz`` and
    ``/openapi.json``. With ``manage_hub`` the ASGI lifespan starts the hub and closes it at
    shutdown; pass ``False`` when the caller owns the hub's lifetime (several faces share it).

    Beside a browser: the ``Host`` header must name a loopback address, ``localhost``, the
    address served or one of ``allow_hosts``; a request whose ``Origin`` is not the server's own
    is refused unless listed in ``allow_origins`` (which get CORS answers); ``*`` allows any.
    With ``ui`` the dashboard is served at ``/ui/`` (public files; its API calls need the token).
    """
    return SessionHubApp(
        hub,
        token=token,
        max_body_bytes=max_body_bytes,
        keepalive=keepalive,
        manage_hub=manage_hub,
        guard=BrowserGuard(allow_hosts, allow_origins),
        ui=ui,
    )


class _Router:
    """Templates grouped by segment count; a segment is a literal or a ``{parameter}``. A
    template without parameters is also found by its raw path in ``fixed``, before any split."""

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.fixed = {r.template.encode(): r for r in routes if "{" not in r.template}
        self._by_length: dict[int, list[tuple[tuple[str | None, ...], Route]]] = defaultdict(list)
        for route in routes:
            parts = tuple(
                None if part.startswith("{") else part for part in route.template.split("/")[1:]
            )
            self._by_length[len(parts)].append((parts, route))

    def match(self, segments: list[str]) -> tuple[Route, list[str]] | None:
        for parts, route in self._by_length.get(len(segments), ()):
            params: list[str] = []
            for part, segment in zip(parts, segments, strict=True):
                if part is None:
                    params.append(segment)
                elif part != segment:
                    break
            else:
                return route, params
        return None


class SessionHubApp:
    """The ASGI callable (see ``create_app``)."""

    def __init__(
        self,
        hub: SessionHub,
        *,
        token: str | None,
        max_body_bytes: int,
        keepalive: float,
        manage_hub: bool,
        guard: BrowserGuard,
        ui: bool = True,
    ) -> None:
        if token is not None and not (isinstance(token, str) and token):
            raise ValueError("token must be a non-empty string or None")
        self.hub = hub
        self.metrics = ServerMetrics()
        self.closing = asyncio.Event()
        self._shutdown: asyncio.Future[None] | None = None
        self._token = None if token is None else token.encode()
        self._guard = guard
        self.leases = RequestLeases(hub)
        self._face = Face(hub, self.leases, self.metrics)
        self._max_body = max_body_bytes
        self._keepalive = keepalive
        self._manage_hub = manage_hub
        self._router = _Router(ROUTES)
        self._openapi = json_encoder.encode(openapi_document(hub.lifecycle, hub.limits))
        # Without a token anyone may read the API: the page then carries its first reads.
        reads = self._first_reads if token is None else None
        self._ui = Dashboard(reads) if ui else None

    def __repr__(self) -> str:
        return f"SessionHubApp({self.hub!r})"  # never the token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self._lifespan(receive, send)
            return
        # An HTTP request, answered here rather than in a method of its own: one coroutine less
        # on every request.
        started = time.perf_counter()
        method: str = scope["method"]
        path, template, matched, ui = self._resolve(scope)
        headers = header_map(scope)
        cors: Headers = ()
        try:
            cors = self._admit(scope, headers)  # the dashboard too: no page for a rebinding Host
            if ui:
                assert self._ui is not None
                reply = await self._ui.answer(
                    path, method, headers.get(b"if-none-match"), headers.get(b"accept-encoding")
                )
            elif method == "OPTIONS":
                reply = self._options(path, matched, cors)
            else:
                answer = await self._answer(
                    scope, receive, send, method, path, matched, cors, headers
                )
                if answer is None:
                    return  # an event stream, answered as it went
                reply = answer
        except SessionHubError as exc:
            reply = _error_reply(exc.http_status, exc.code, exc.message)
        except HttpRefusal as exc:
            reply = _error_reply(exc.status, exc.code, exc.message)
        except Exception:
            logger.exception("internal error on %s %s", method, template)
            reply = _error_reply(500, "internal", "internal server error")
        if reply.status >= 400 and body_left(scope, headers):
            # Refused before its body was read: tell the client not to reuse the connection
            # (else its next request can meet the connection closing: "server disconnected").
            reply = reply._replace(headers=(*reply.headers, (b"connection", b"close")))
        await _send(send, reply, cors)
        self._observe(method, template, reply.status, time.perf_counter() - started)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self._manage_hub:
                        await self.hub.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                except Exception as exc:
                    await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
                    return
                finally:
                    self.closing.set()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def shutdown(self) -> None:
        """Begin a graceful stop: call it before the server waits for its connections to close.

        An ASGI server runs the lifespan shutdown only once every connection has closed, and an
        event stream does not close by itself; so whoever stops the server calls this first, as
        ``sessionhub serve`` does on SIGTERM. With ``manage_hub`` the hub closes now: with a
        memory store every live session ends with reason ``shutdown`` while subscribers still
        listen, and each stream ends after its last event. Without, the streams end at once.
        Idempotent; the lifespan shutdown calls it too.
        """
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self._close())
        await asyncio.shield(self._shutdown)

    async def _close(self) -> None:
        await self.leases.close()  # before the hub closes: releasing goes through it
        if self._manage_hub:
            await self.hub.close()  # ends every subscription, once it has read what is left
        else:
            self.closing.set()

    async def _first_reads(self) -> dict[str, bytes]:
        """The dashboard's first API answers (``FIRST_READS``), from the routes themselves; one
        that fails is left out: the page asks for it and shows the error."""

        async def read(url: str) -> Reply:
            path, _, query = url.partition("?")
            route = self._router.fixed[path.encode()]
            scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode()}
            scope["headers"] = []
            return await route.methods["GET"](self._face, Request(scope, _no_body, [], 0, {}))

        replies = await asyncio.gather(*map(read, FIRST_READS), return_exceptions=True)
        found: dict[str, bytes] = {}
        for url, reply in zip(FIRST_READS, replies, strict=True):
            if isinstance(reply, Reply) and reply.status == 200:
                found[url] = reply.body
            elif isinstance(reply, BaseException):
                logger.debug("the dashboard's first read of %s failed: %r", url, reply)
        return found

    def _resolve(self, scope: Scope) -> tuple[str, str, tuple[Route, list[str]] | None, bool]:
        """The decoded path; what /metrics labels the request with (a template, never a raw path:
        no session id, and a scanner's guesses do not grow the label set); the route and its
        parameters; whether the dashboard serves it."""
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        fixed = self._router.fixed.get(raw)
        if fixed is not None:  # /v1/sessions and the like: nothing to split or decode
            return fixed.template, fixed.template, (fixed, []), False
        path, segments = _split(raw)
        if self._ui is not None and self._ui.serves(path):
            return path, "/ui", None, True
        matched = self._router.match(segments)
        if matched is not None:
            return path, matched[0].template, matched, False
        return path, path if path in _SPECIAL else _UNMATCHED, None, False

    def _admit(self, scope: Scope, headers: dict[bytes, bytes]) -> Headers:
        """Refuse a foreign ``Host`` or ``Origin``; the CORS headers the answer carries."""
        raw_host, raw_origin = headers.get(b"host"), headers.get(b"origin")
        host = None if raw_host is None else raw_host.decode("latin-1")
        origin = None if raw_origin is None else raw_origin.decode("latin-1")
        refusal = self._guard.host_refusal(scope, host)
        if refusal is None:
            refusal = self._guard.origin_refusal(scope, origin, host)
        if refusal is not None:
            raise HttpRefusal(403, "forbidden", refusal)
        if origin is None or self._guard.same_origin(scope, origin, host):
            return ()
        return self._guard.cors_headers(origin)

    def _options(self, path: str, matched: tuple[Route, list[str]] | None, cors: Headers) -> Reply:
        """``OPTIONS``: the methods of the route, and for an allowed origin a CORS preflight
        answer (a preflight carries no token: it is answered without one)."""
        if matched is not None:
            allowed = ", ".join(sorted(matched[0].methods))
        elif path in _SPECIAL:
            allowed = "GET"
        else:
            return _error_reply(404, "not_found", f"no route {quoted(path)}")
        headers: Headers = ((b"allow", allowed.encode()),)
        if cors:
            headers += BrowserGuard.preflight_headers(allowed)
        return Reply(204, b"", headers=headers)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        method: str,
        path: str,
        matched: tuple[Route, list[str]] | None,
        cors: Headers,
        headers: dict[bytes, bytes],
    ) -> Reply | None:
        if self._token is not None and path not in _PUBLIC:
            self._authorize(headers)
        if path == _EVENTS and method == "GET":
            request = Request(scope, receive, [], self._max_body, headers)
            _check_query(request, path, method)
            await stream_events(
                self.hub, request, send, self._keepalive, self.closing, self.metrics, cors
            )
            return None
        if matched is None:
            reply = self._special(path, method)
            if reply is None:
                return _error_reply(404, "not_found", f"no route {quoted(path)}")
            if reply.status == 200:
                _check_query(Request(scope, receive, [], 0, headers), path, method)
                if path == _METRICS:
                    reply = Reply(200, await self.metrics.render(self.hub), CONTENT_TYPE)
            return reply
        route, params = matched
        handler: Handler | None = route.methods.get(method)
        if handler is None:
            return _method_not_allowed(route, method)
        request = Request(scope, receive, params, self._max_body, headers)
        _check_query(request, route.template, method)
        return await handler(self._face, request)

    def _authorize(self, headers: dict[bytes, bytes]) -> None:
        """``Authorization: Bearer <token>``, the scheme in any case (RFC 7235), the token
        compared in constant time."""
        expected = self._token
        if expected is None:
            return
        value = headers.get(b"authorization")
        if value is not None:
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), expected):
                return
        raise Unauthorized("a valid bearer token is required (Authorization: Bearer <token>)")

    def _special(self, path: str, method: str) -> Reply | None:
        if path == _OPENAPI:
            return Reply(200, self._openapi) if method == "GET" else _only_get(path)
        if path == _METRICS:
            return Reply(200, b"") if method == "GET" else _only_get(path)
        if path == _EVENTS:
            return _only_get(path)
        return None

    def _observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in _METHODS:
            method = "OTHER"  # methods are any token a client sends: keep the label set bounded
        self.metrics.requests.observe(method, route, status, seconds)


async def _no_body() -> dict[str, object]:
    return {"type": "http.request", "body": b"", "more_body": False}


def _split(raw: bytes) -> tuple[str, list[str]]:
    """The decoded path and its segments, split before decoding so ``%2F`` stays inside one."""
    raw = raw.split(b"?", 1)[0]
    segments = [
        unquote(part.decode("latin-1")) if b"%" in part else part.decode("latin-1")
        for part in raw.split(b"/")[1:]
    ]
    return "/" + "/".join(segments), segments


_QUERY_NAMES: dict[tuple[str, str], frozenset[str]] = {
    key: frozenset(param.name for param in op.params if param.where == "query")
    for key, op in OPERATIONS.items()
}


def _check_query(request: Request, template: str, method: str) -> None:
    """Refuse a query parameter the operation does not know: a misspelt filter must not be
    silently ignored (and list everything), as a misspelt body field is not."""
    if not request.scope.get("query_string"):
        return
    known = _QUERY_NAMES.get((method, template), frozenset())
    for name, _ in request.query:
        if name not in known:
            accepted = ", ".join(sorted(known)) or "none"
            raise ValidationError(
                f"unknown query parameter {quoted(name)} for {method} {template} "
                f"(accepted: {accepted})"
            )


_MESSAGE_LIMIT = 500


def _error_reply(status: int, code: str, message: str) -> Reply:
    if len(message) > _MESSAGE_LIMIT:  # a message that quotes a huge input quotes its start
        message = message[:_MESSAGE_LIMIT] + "..."
    return Reply(status, json_encoder.encode(wire.ErrorAnswer(wire.ErrorBody(code, message))))


def _only_get(path: str) -> Reply:
    return _error_reply(405, "method_not_allowed", f"{path} accepts GET only")._replace(
        headers=((b"allow", b"GET"),)
    )


def _method_not_allowed(route: Route, method: str) -> Reply:
    allowed = ", ".join(sorted(route.methods))
    reply = _error_reply(
        405, "method_not_allowed", f"{route.template} accepts {allowed}, not {method}"
    )
    return reply._replace(headers=((b"allow", allowed.encode()),))  # RFC 9110: 405 names them


async def _send(send: Send, reply: Reply, cors: Headers) -> None:
    status, body = reply.status, reply.body
    if status == 204:
        headers = [(b"content-length", str(len(body)).encode())]
    else:
        headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", reply.content_type),
        ]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
    if reply.headers:
        headers += reply.headers
    if cors:
        headers += cors
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
