"""Bad input at the HTTP door is a 400 with a short message, never a 500 (issue 8's reproductions,
sent as they were against a real server), and one record that cannot be encoded never fails a
listing or an event stream for the other sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest

from sessionhub import Limits, Session
from sessionhub.stores._base import CreateRules
from tests.client.serving import ThreadedServer

from .conftest import SSEReader, assert_error, snapshot

JSON = {"Content-Type": "application/json"}
SHORT = 1000  # bytes: an error answer quotes at most a prefix of what it refuses


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def on_server(server: ThreadedServer, work: Coroutine[Any, Any, Any]) -> Any:
    """Run ``work`` in the server's own event loop (where its hub lives)."""
    loop = server._loop
    assert loop is not None
    return asyncio.run_coroutine_threadsafe(work, loop).result(30)


def test_invalid_utf8_in_a_body_is_a_400(http: httpx.Client) -> None:
    before = snapshot(http)
    for body in (b'{"id": "\xff\xfe"}', b'{"details": {"k": "\xc3"}}'):
        message = assert_error(
            http.post("/v1/sessions", content=body, headers=JSON), 400, "invalid"
        )
        assert "UTF-8" in message
    assert snapshot(http) == before


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("POST", "/v1/sessions", b'{"details": {"deep": %s}}'),
        ("PUT", "/v1/sessions/live/data/k", b'{"value": %s}'),
        ("POST", "/v1/sessions/live/history", b'{"kind": "call", "payload": %s}'),
        ("PATCH", "/v1/sessions/live", b'{"details": {"deep": %s}}'),
    ],
    ids=["create", "data-set", "history-append", "update"],
)
def test_deep_nesting_is_a_400_on_every_write(
    http: httpx.Client, method: str, path: str, template: bytes
) -> None:
    assert http.post("/v1/sessions", json={"id": "live"}).status_code == 201
    before = snapshot(http, "live")
    # deeper than the JSON decoder goes (the hub's own, lower bound is checked by the hub's tests)
    for depth in (5000, 100_000):
        response = http.request(method, path, content=template % nested(depth), headers=JSON)
        message = assert_error(response, 400, "invalid")
        assert "nest" in message or "deep" in message, message
        assert len(response.content) < SHORT
    assert snapshot(http, "live") == before
    assert http.get("/v1/sessions").status_code == 200


@pytest.mark.parametrize("where", ["Last-Event-ID", "after"])
def test_an_event_id_of_thousands_of_digits_is_a_short_400(http: httpx.Client, where: str) -> None:
    huge = "9" * 4301
    if where == "after":
        response = http.get("/v1/events", params={"after": huge})
    else:
        response = http.get("/v1/events", headers={"Last-Event-ID": huge})
    message = assert_error(response, 400, "invalid")
    assert "event id" in message
    assert len(response.content) < SHORT
    assert http.get("/v1/stats").json()["subscribers"] == 0


def test_a_huge_id_gets_a_short_error(http: httpx.Client) -> None:
    huge = "x" * 1_500_000
    response = http.post("/v1/sessions", json={"id": huge})
    assert_error(response, 400, "invalid")
    assert len(response.content) < SHORT
    response = http.get("/v1/sessions", params={"label": "k" * 60_000})
    assert_error(response, 400, "invalid")
    assert len(response.content) < SHORT


def test_touch_refuses_a_body_as_other_routes_do(http: httpx.Client) -> None:
    assert http.post("/v1/sessions", json={"id": "live"}).status_code == 201
    before = snapshot(http, "live")
    message = assert_error(http.post("/v1/sessions/live/touch", json={"ttl": 5}), 400, "invalid")
    assert "ttl" in message
    assert_error(
        http.post("/v1/sessions/live/touch", content=b"x", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert snapshot(http, "live") == before
    assert http.post("/v1/sessions/live/touch").status_code == 200
    assert http.post("/v1/sessions/live/touch", json={}).status_code == 200


def test_an_empty_kinds_filter_means_every_kind(server: ThreadedServer, http: httpx.Client) -> None:
    reader = SSEReader(server.url, server.token, params={"kinds": ""})
    try:
        reader.wait_live()
        http.post("/v1/sessions", json={"id": "seen"})
        http.delete("/v1/sessions/seen")
        reader.wait_for(
            lambda events: {"created", "ended"} <= {e["event"] for e in events}, "every kind"
        )
    finally:
        reader.close()


def _unencodable(session_id: str) -> Session:
    """A session as an older version or another writer may have stored it: nested deeper than
    any encoder goes (the hub refuses such details at its door)."""
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    now = 1.0
    return Session(
        id=session_id,
        namespace="default",
        state="CREATED",
        details={"deep": deep},
        created_at=now,
        updated_at=now,
        last_activity_at=now,
        idle_timeout=None,
        ttl=None,
    )


def test_a_session_that_cannot_be_encoded_fails_no_listing_and_no_stream(
    server: ThreadedServer, http: httpx.Client
) -> None:
    reader = SSEReader(server.url, server.token)
    try:
        reader.wait_live()
        assert http.post("/v1/sessions", json={"id": "before"}).status_code == 201
        on_server(server, server.hub.store.create(_unencodable("poison"), CreateRules()))
        assert http.post("/v1/sessions", json={"id": "after"}).status_code == 201
        reader.wait_for(
            lambda events: any(e["data"]["session"]["id"] == "after" for e in events),
            "the event after the bad one",
        )
        assert [e["data"]["session"]["id"] for e in reader.events()] == ["before", "after"]
        assert not reader.closed
    finally:
        reader.close()
    alone = http.get("/v1/sessions/poison")
    assert "session 'poison' cannot be sent" in assert_error(alone, 500, "internal")
    listed = http.get("/v1/sessions")
    assert listed.status_code == 200, listed.text
    assert sorted(s["id"] for s in listed.json()["items"]) == ["after", "before"]
    metrics = http.get("/metrics").text
    assert 'sessionhub_http_unencodable_total{what="event"} 1.0' in metrics
    assert 'sessionhub_http_unencodable_total{what="session"} 2.0' in metrics


BATCH = "/v1/sessions/live/history/batch"
POP = "/v1/sessions/live/history/pop"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (BATCH, {}),
        (BATCH, {"records": []}),
        (BATCH, {"records": "item"}),
        (BATCH, {"records": [{"payload": 1}]}),
        (BATCH, {"records": [{"kind": "item", "extra": 1}]}),
        (BATCH, {"records": [{"kind": "item"}], "more": 1}),
        (BATCH, {"records": [{"kind": "item"}, {"kind": "a b"}]}),
        (BATCH, {"records": [{"kind": "item"}, {"kind": 5}]}),
        (BATCH, {"records": [{"kind": "item"}] * 1001}),
        (POP, {}),
        (POP, {"kind": "item"}),
        (POP, {"kind": "item", "marker": "item"}),
        (POP, {"kind": "item", "marker": "a b"}),
        (POP, {"kind": 1, "marker": "pop"}),
        (POP, {"kind": "item", "marker": "pop", "limit": 2}),
    ],
)
def test_history_batch_and_pop_bad_bodies_are_400s(
    http: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    assert http.post("/v1/sessions", json={"id": "live"}).status_code == 201
    assert http.post(BATCH, json={"records": [{"kind": "item", "payload": 1}]}).status_code == 201
    before = snapshot(http, "live")
    response = http.post(path, json=body)
    assert_error(response, 400, "invalid")
    assert len(response.content) < SHORT
    assert snapshot(http, "live") == before


def test_a_history_batch_past_the_servers_limit_is_a_400_writing_nothing(
    make_server: Callable[..., ThreadedServer],
) -> None:
    server = make_server(limits=Limits(max_history_batch=2))
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}
    ) as http:
        assert http.post("/v1/sessions", json={"id": "live"}).status_code == 201
        before = snapshot(http, "live")
        three = {"records": [{"kind": "item", "payload": i} for i in range(3)]}
        assert "1 to 2 records, got 3" in assert_error(http.post(BATCH, json=three), 400, "invalid")
        assert snapshot(http, "live") == before
        schema = http.get("/openapi.json").json()["components"]["schemas"]["HistoryBatchBody"]
        assert schema["properties"]["records"]["maxItems"] == 2  # the document says so too
        two = {"records": three["records"][:2]}
        assert http.post(BATCH, json=two).status_code == 201


def test_history_batch_and_pop_take_json_only_and_bounded_bodies(
    make_server: Callable[..., ThreadedServer],
) -> None:
    server = make_server(
        limits=Limits(max_history_record_bytes=1000), app_options={"max_body_bytes": 10_000}
    )
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}
    ) as http:
        assert http.post("/v1/sessions", json={"id": "live"}).status_code == 201
        before = snapshot(http, "live")
        for path in (BATCH, POP):
            plain = http.post(path, content=b"{}", headers={"Content-Type": "text/plain"})
            assert_error(plain, 415, "unsupported_media_type")
        one_too_large = [
            {"kind": "item", "payload": "x" * 10},
            {"kind": "item", "payload": "x" * 2000},
        ]
        assert_error(http.post(BATCH, json={"records": one_too_large}), 413, "payload_too_large")
        past_body = [{"kind": "item", "payload": "x" * 900}] * 20  # each fits, not all at once
        assert_error(http.post(BATCH, json={"records": past_body}), 413, "payload_too_large")
        for path, body in (
            ("/v1/sessions/ghost/history/batch", {"records": [{"kind": "item"}]}),
            ("/v1/sessions/ghost/history/pop", {"kind": "item", "marker": "pop"}),
        ):
            assert_error(http.post(path, json=body), 404, "not_found")
        assert snapshot(http, "live") == before
