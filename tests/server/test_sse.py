"""``GET /v1/events`` as raw server-sent events over httpx streaming: frame format, keep-alive,
filters, resuming with ``Last-Event-ID``, refusals before the stream, slow subscribers, and the
end of the stream when the server stops."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.client.serving import ThreadedServer

from .conftest import WAIT, SSEReader, assert_error, authed, wait_until

MakeServer = Callable[..., ThreadedServer]
Events = list[dict[str, Any]]


@pytest.fixture
def readers() -> Iterator[list[SSEReader]]:
    opened: list[SSEReader] = []
    yield opened
    for reader in opened:
        reader.close()


@pytest.fixture
def subscribe(server: ThreadedServer, readers: list[SSEReader]) -> Callable[..., SSEReader]:
    """A live stream of ``server`` (the subscription exists once this returns)."""

    def open_stream(
        params: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> SSEReader:
        reader = SSEReader(server.url, server.token, params, headers)
        readers.append(reader)
        reader.wait_live()
        return reader

    return open_stream


def created(http: httpx.Client, **body: Any) -> str:
    response = http.post("/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    sid: str = response.json()["id"]
    return sid


def has(kind: str, sid: str) -> Callable[[Events], bool]:
    return lambda events: any(
        e["event"] == kind and e["data"]["session"]["id"] == sid for e in events
    )


def test_frames_have_id_event_and_data_after_a_first_retry(
    server: ThreadedServer, http: httpx.Client
) -> None:
    reader = SSEReader(server.url, server.token)
    try:
        reader.wait_live()
        assert reader.status == 200
        assert reader.response is not None
        assert reader.response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert reader.response.headers["cache-control"] == "no-store"
        assert reader.frames[0] == {"retry": "1000"}
        sid = created(http, namespace="ns", labels={"k": "v"})
        assert http.post(f"/v1/sessions/{sid}/transitions", json={"event": "SPAWN"}).is_success
        reader.wait_for(has("transitioned", sid), "the transition")
    finally:
        reader.close()
    frames = [f for f in reader.frames if "event" in f]
    assert [set(f) for f in frames] == [{"id", "event", "data"}] * 2
    events = reader.events()
    assert [e["event"] for e in events] == ["created", "transitioned"]
    for event in events:
        assert event["data"]["id"] == event["id"]
        assert event["data"]["kind"] == event["event"]
        assert set(event["data"]) == {"id", "kind", "at", "session", "missed"}
    assert events[0]["data"]["session"]["labels"] == {"k": "v"}
    assert events[1]["data"]["session"]["state"] == "SPAWNING"
    assert int(events[1]["id"]) > int(events[0]["id"])


def test_keep_alive_comments_arrive_while_idle(
    make_server: MakeServer, readers: list[SSEReader]
) -> None:
    server = make_server(app_options={"keepalive": 0.2})
    reader = SSEReader(server.url, server.token)
    readers.append(reader)
    reader.wait_live()
    wait_until(lambda: len(reader.comments) >= 3 or reader.closed, "three keep-alive comments")
    assert reader.comments[:3] == ["keep-alive"] * 3
    assert reader.events() == []  # comments only: no event frame was made up


def test_filters_by_namespace_kinds_and_session(
    http: httpx.Client, subscribe: Callable[..., SSEReader]
) -> None:
    everything = subscribe()
    chat = subscribe({"namespace": "chat"})
    ends = subscribe({"kinds": "ended"})
    both = subscribe({"kinds": "created,ended", "namespace": "chat"})
    one = subscribe({"session_id": "watched"})

    other = created(http, namespace="other")
    talk = created(http, namespace="chat")
    watched = created(http, id="watched", namespace="other")
    http.patch(f"/v1/sessions/{talk}", json={"details": {"a": 1}})
    http.patch("/v1/sessions/watched", json={"details": {"a": 1}})
    for sid in (other, talk, watched):
        assert http.delete(f"/v1/sessions/{sid}").json() == {"ended": True}
    everything.wait_for(has("ended", watched), "the last event")

    chat.wait_for(has("ended", talk), "chat's end")
    ends.wait_for(has("ended", watched), "the last end")
    both.wait_for(has("ended", talk), "chat's end")
    one.wait_for(has("ended", watched), "the watched session's end")

    def seen(reader: SSEReader) -> list[tuple[str, str]]:
        return [(e["event"], e["data"]["session"]["id"]) for e in reader.events()]

    assert len(seen(everything)) == 3 * 2 + 2 + 3  # created, transitioned, ended; updated
    assert {sid for _, sid in seen(chat)} == {talk}
    assert seen(chat) == [(kind, talk) for kind in ("created", "updated", "transitioned", "ended")]
    assert seen(ends) == [("ended", other), ("ended", talk), ("ended", watched)]
    assert seen(both) == [("created", talk), ("ended", talk)]
    assert seen(one) == [
        (kind, "watched") for kind in ("created", "updated", "transitioned", "ended")
    ]


@pytest.mark.parametrize("how", ["header", "query"])
def test_resuming_after_an_event_id_skips_what_was_read(
    http: httpx.Client, subscribe: Callable[..., SSEReader], how: str
) -> None:
    first = subscribe()
    ids = [created(http, id=f"s{n}") for n in range(3)]
    first.wait_for(has("created", ids[-1]), "three events")
    first.close()
    read = first.events()
    last_read = read[1]["id"]  # as if the connection broke after the second event
    created(http, id="s3")

    resume = (
        {"headers": {"Last-Event-ID": last_read}}
        if how == "header"
        else {"params": {"after": last_read}}
    )
    again = subscribe(**resume)
    again.wait_for(has("created", "s3"), "the event made while away")
    created(http, id="s4")
    again.wait_for(has("created", "s4"), "a new event")
    assert [e["data"]["session"]["id"] for e in again.events()] == ["s2", "s3", "s4"]
    assert again.events()[0]["id"] == read[2]["id"]


@pytest.mark.parametrize(
    ("params", "headers", "says"),
    [
        ({"kinds": "created,exploded"}, {}, "exploded"),
        ({"namespace": "has space"}, {}, "namespace"),
        ({"session_id": ""}, {}, "session id"),
        ({"follow": "yes"}, {}, "unknown query parameter"),
        ({}, {"Last-Event-ID": "not-an-event"}, "not-an-event"),
        ({"after": "999999999"}, {}, "999999999"),
    ],
)
def test_bad_filters_are_a_400_json_error_before_the_stream(
    server: ThreadedServer,
    http: httpx.Client,
    params: dict[str, str],
    headers: dict[str, str],
    says: str,
) -> None:
    before = http.get("/v1/stats").json()["subscribers"]
    response = http.get("/v1/events", params=params, headers=headers)
    assert says in assert_error(response, 400, "invalid")
    assert http.get("/v1/stats").json()["subscribers"] == before


def test_a_subscriber_that_never_reads_stops_nothing(
    make_server: MakeServer, readers: list[SSEReader]
) -> None:
    server = make_server()
    http = authed(server)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", server.port))
    stuck.sendall(
        f"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.token}\r\n\r\n".encode()
    )
    try:
        wait_until(
            lambda: http.get("/v1/stats").json()["subscribers"] == 1, "the stuck subscription"
        )
        fast = SSEReader(server.url, server.token)
        readers.append(fast)
        fast.wait_live()
        # 400 events of ~16 KB: several MB, more than the kernel buffers of the stuck connection
        # hold (Linux caps a socket's send buffer at 4 MB), so its writer really is blocked.
        padding = "p" * 16_000
        ids = []
        for n in range(400):
            response = http.post("/v1/sessions", json={"id": f"s{n}", "details": {"pad": padding}})
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        fast.wait_for(has("created", ids[-1]), "every event by the fast subscriber")
        assert [e["data"]["session"]["id"] for e in fast.events()] == ids
        stats = http.get("/v1/stats").json()
        assert stats["live_sessions"] == 400
        assert stats["subscribers"] == 2  # the stuck one is still there, just behind
        assert http.get("/v1/sessions/s0").status_code == 200

        received = bytearray()  # when it reads at last, it gets everything, in order
        stuck.settimeout(WAIT)
        while b'"id":"s399"' not in received[-40_000:]:
            chunk = stuck.recv(1 << 20)
            assert chunk, "the stuck stream closed"
            received += chunk
        assert received.count(b"event: created") == 400
        assert received.index(b'"id":"s0"') < received.index(b'"id":"s399"')
    finally:
        stuck.close()
        http.close()


def test_the_stream_ends_when_the_server_stops_after_the_shutdown_events(
    make_server: MakeServer, readers: list[SSEReader]
) -> None:
    server = make_server()
    reader = SSEReader(server.url, server.token)
    readers.append(reader)
    reader.wait_live()
    with authed(server) as http:
        live = [created(http, id=f"live{n}") for n in range(3)]
        gone = created(http, id="gone")
        http.delete("/v1/sessions/gone")
    server.stop()
    wait_until(lambda: reader.closed, "the stream to end", WAIT)
    ended = [e for e in reader.events() if e["event"] == "ended"]
    assert {e["data"]["session"]["id"]: e["data"]["session"]["end_reason"] for e in ended} == {
        gone: "ended",
        **dict.fromkeys(live, "shutdown"),
    }
    assert reader.error is None  # ended properly (final chunk), not cut
