"""Real servers from the client tests' fixtures, and raw HTTP helpers: no sessionhub client is
used here, so that what is checked is what goes over the wire."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.client.conftest import make_server
from tests.client.serving import ThreadedServer

__all__ = [
    "WAIT",
    "SSEReader",
    "assert_error",
    "authed",
    "make_server",
    "segment",
    "session_path",
    "snapshot",
    "wait_until",
]

WAIT = 30.0  # generous: these machines are shared and busy


@pytest.fixture
def server(make_server: Callable[..., ThreadedServer]) -> ThreadedServer:
    return make_server()


def authed(server: ThreadedServer) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=WAIT
    )


@pytest.fixture
def http(server: ThreadedServer) -> Iterator[httpx.Client]:
    """Raw HTTP with the server's bearer token."""
    with authed(server) as client:
        yield client


def wait_until(condition: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds saying ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    """The answer is exactly ``{"error": {"code", "message"}}`` with ``status``; its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    message = body["error"]["message"]
    assert isinstance(message, str)
    assert message
    return message


def snapshot(http: httpx.Client, *session_ids: str) -> dict[str, Any]:
    """Everything observable: every live session, the given sessions' data and history, and the
    hub's counters. Reading changes none of it."""
    state: dict[str, Any] = {
        "sessions": http.get("/v1/sessions", params={"limit": 1000}).json(),
        "stats": http.get("/v1/stats").json(),
    }
    for sid in session_ids:
        path = session_path(sid)
        state[sid] = {
            "session": http.get(path).json(),
            "data": http.get(path + "/data").json(),
            "history": http.get(path + "/history").json(),
        }
    return state


def segment(value: str) -> str:
    """``value`` percent-encoded as one path segment (dots too: ``.`` and ``..`` would be
    removed from the path by the client as dot segments)."""
    return quote(value, safe="").replace(".", "%2E")


def session_path(session_id: str) -> str:
    """``/v1/sessions/{id}``, the id as one path segment."""
    return "/v1/sessions/" + segment(session_id)


class SSEReader:
    """Reads one ``GET /v1/events`` stream in a thread and parses it into frames (dicts of
    field → value) and comments, so that tests can wait for what they expect to arrive."""

    def __init__(
        self,
        url: str,
        token: str | None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.frames: list[dict[str, str]] = []
        self.comments: list[str] = []
        self.status: int | None = None
        self.response: httpx.Response | None = None
        self.closed = False
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(timeout=httpx.Timeout(WAIT, read=None))
        self._request = self._client.build_request(
            "GET", url + "/v1/events", params=params, headers=sent
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            response = self._client.send(self._request, stream=True)
            self.response = response
            try:
                self.status = response.status_code
                frame: dict[str, str] = {}
                for line in response.iter_lines():
                    if line == "":
                        if frame:
                            with self._lock:
                                self.frames.append(frame)
                            frame = {}
                    elif line.startswith(":"):
                        with self._lock:
                            self.comments.append(line[1:].strip())
                    else:
                        field, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        frame[field] = frame[field] + "\n" + value if field in frame else value
            finally:
                response.close()
        except Exception as exc:  # the test reads it: a transport error, or our own bug
            self.error = exc
        finally:
            self.closed = True

    def events(self) -> list[dict[str, Any]]:
        """The event frames so far, as ``{"id", "event", "data"}`` with ``data`` decoded."""
        with self._lock:
            frames = list(self.frames)
        return [
            {"id": f.get("id"), "event": f["event"], "data": json.loads(f["data"])}
            for f in frames
            if "event" in f
        ]

    def wait_live(self) -> None:
        """Until the first frame (``retry:``) arrived: from then on the subscription is live."""
        wait_until(lambda: self.frames or self.closed, "the stream to start")
        assert self.frames, f"the stream ended before it started: {self.status} {self.error!r}"

    def wait_for(self, condition: Callable[[list[dict[str, Any]]], bool], what: str) -> None:
        wait_until(lambda: condition(self.events()) or self.closed, what)
        assert condition(self.events()), f"the stream closed before {what}: {self.events()}"

    def close(self) -> None:
        """Disconnect now (shutting the socket down wakes the reading thread)."""
        if self.response is not None and not self.closed:
            stream = self.response.extensions.get("network_stream")
            sock = None if stream is None else stream.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(WAIT)
        self._client.close()
