"""The HTTP face through raw HTTP against a real server: every route's status and JSON shape, every
error the hub raises as its status and exact body (changing nothing), reserved characters in ids,
/metrics, and the end of live sessions when the server stops."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import sessionhub
from sessionhub import Limits, Session
from sessionhub._metrics import CALLER_REASONS_KEPT
from sessionhub._models import DataEntry, HistoryRecord
from sessionhub.http import create_app
from sessionhub.http._routes import ROUTES
from tests.client.serving import ThreadedServer

from .conftest import WAIT, assert_error, authed, segment, session_path, snapshot, wait_until

SESSION_KEYS = {field.encode_name for field in msgspec.structs.fields(Session)}
ENTRY_KEYS = {field.encode_name for field in msgspec.structs.fields(DataEntry)}
RECORD_KEYS = {field.encode_name for field in msgspec.structs.fields(HistoryRecord)}
STATS_KEYS = {
    "live_sessions",
    "sessions",
    "created_total",
    "ended_total",
    "hook_calls_total",
    "hook_failures_total",
    "expiry_lateness_buckets",
    "expiry_lateness_sum",
    "expiry_lateness_max",
    "subscribers",
    "per_minute",
}

MakeServer = Callable[..., ThreadedServer]
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client_of(make_server: MakeServer) -> Iterator[Callable[..., httpx.Client]]:
    """Raw HTTP clients of new servers (``SessionHub`` keyword arguments, ``app_options``)."""
    clients: list[httpx.Client] = []

    def connect(**options: Any) -> httpx.Client:
        client = authed(make_server(**options))
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def json_of(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


# every route


def test_every_route_answers_its_success_status_and_shape(http: httpx.Client) -> None:
    hit: set[tuple[str, str]] = set()

    def call(method: str, template: str, path: str, status: int = 200, **kw: Any) -> Any:
        hit.add((method, template))
        return json_of(http.request(method, path, **kw), status)

    S = "/v1/sessions/{id}"
    made = call(
        "POST",
        "/v1/sessions",
        "/v1/sessions",
        201,
        json={"id": "s1", "user_id": "ada", "labels": {"role": "auth"}, "details": {"a": 1}},
    )
    assert set(made) == SESSION_KEYS
    assert (made["id"], made["state"], made["version"]) == ("s1", "CREATED", 1)
    assert (made["user_id"], made["labels"], made["details"]) == ("ada", {"role": "auth"}, {"a": 1})

    page = call("GET", "/v1/sessions", "/v1/sessions", params={"user_id": "ada", "limit": 10})
    assert set(page) == {"items", "cursor"}
    assert [s["id"] for s in page["items"]] == ["s1"]
    assert page["cursor"] is None
    assert call("GET", "/v1/count", "/v1/count", params={"label": "role:auth"}) == {"count": 1}
    assert call("GET", S, "/v1/sessions/s1") == made

    updated = call("PATCH", S, "/v1/sessions/s1", json={"details": {"b": 2}, "expected_version": 1})
    assert (updated["details"], updated["version"]) == ({"a": 1, "b": 2}, 2)
    touched = call("POST", S + "/touch", "/v1/sessions/s1/touch")
    assert set(touched) == SESSION_KEYS
    assert touched["last_activity_at"] >= made["last_activity_at"]
    spawned = call(
        "POST", S + "/transitions", "/v1/sessions/s1/transitions", json={"event": "SPAWN"}
    )
    assert spawned["state"] == "SPAWNING"
    counted = call("POST", S + "/counters/{name}", "/v1/sessions/s1/counters/calls", json={"by": 2})
    assert counted == {"value": 2}
    leased = call("POST", S + "/requests", "/v1/sessions/s1/requests", 201, json={"lease": 30})
    assert set(leased) == {"lease_id", "expires_in", "session"}
    assert (leased["expires_in"], leased["session"]["active_requests"]) == (30.0, 1)
    lease_path = f"/v1/sessions/s1/requests/{leased['lease_id']}"
    renewed = call("PUT", S + "/requests/{lease_id}", lease_path, json={"lease": 45})
    assert set(renewed) == {"lease_id", "expires_in", "session"}
    assert (renewed["lease_id"], renewed["expires_in"]) == (leased["lease_id"], 45.0)
    assert renewed["session"]["active_requests"] == 1
    released = call("DELETE", S + "/requests/{lease_id}", lease_path)
    assert set(released) == {"session"}
    assert released["session"]["active_requests"] == 0

    call("POST", "/v1/sessions", "/v1/sessions", 201, json={"id": "c1"})
    child = call("POST", S + "/children", "/v1/sessions/s1/children", json={"child_id": "c1"})
    assert (child["id"], child["parent_id"]) == ("c1", "s1")

    entry = call("PUT", S + "/data/{key}", "/v1/sessions/s1/data/stub", json={"value": {"r": "hi"}})
    assert entry == {"key": "stub", "value": {"r": "hi"}, "version": 1}
    assert set(entry) == ENTRY_KEYS
    assert call("GET", S + "/data/{key}", "/v1/sessions/s1/data/stub") == entry
    assert call("GET", S + "/data", "/v1/sessions/s1/data") == {"items": [entry]}
    deleted = call("DELETE", S + "/data/{key}", "/v1/sessions/s1/data/stub")
    assert deleted == {"deleted": True}

    record = call(
        "POST",
        S + "/history",
        "/v1/sessions/s1/history",
        201,
        json={"kind": "call", "payload": [1]},
    )
    assert set(record) == RECORD_KEYS
    assert (record["seq"], record["kind"], record["payload"]) == (1, "call", [1])
    assert call("GET", S + "/history", "/v1/sessions/s1/history") == {"items": [record]}
    batch = call(
        "POST",
        S + "/history/batch",
        "/v1/sessions/s1/history/batch",
        201,
        json={"records": [{"kind": "item", "payload": {"n": 1}}, {"kind": "item"}]},
    )
    assert [(r["seq"], r["kind"], r["payload"]) for r in batch["items"]] == [
        (2, "item", {"n": 1}),
        (3, "item", None),
    ]
    assert all(set(r) == RECORD_KEYS for r in batch["items"])
    pop = ("POST", S + "/history/pop", "/v1/sessions/s1/history/pop")
    body = {"kind": "item", "marker": "pop"}
    assert call(*pop, json=body) == {"record": batch["items"][1]}
    assert call(*pop, json=body) == {"record": batch["items"][0]}
    assert call(*pop, json=body) == {"record": None}
    assert call("GET", S + "/history/counts", "/v1/sessions/s1/history/counts") == {
        "counts": {"call": 1, "item": 2, "pop": 2}
    }

    ended = call("DELETE", "/v1/users/{user_id}/sessions", "/v1/users/nobody/sessions")
    assert ended == {"count": 0}
    stats = call("GET", "/v1/stats", "/v1/stats")
    assert set(stats) == STATS_KEYS
    assert stats["live_sessions"] == 2
    assert call("GET", "/healthz", "/healthz") == {"status": "ok"}

    assert call("DELETE", S, "/v1/sessions/s1", params={"reason": "done"}) == {"ended": True}
    assert call("DELETE", S, "/v1/sessions/s1") == {"ended": False}
    assert call("GET", "/v1/count", "/v1/count") == {"count": 0}  # the child ended with it

    metrics = http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    document = json_of(http.get("/openapi.json"), 200)
    assert document["openapi"].startswith("3.1")

    routes = {(method, route.template) for route in ROUTES for method in route.methods}
    assert hit == routes, routes ^ hit  # a new route needs a line here


# 400


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "says"),
    [
        ("POST", "/v1/sessions", {"content": b'{"id": "x"', "headers": JSON}, "not valid JSON"),
        ("POST", "/v1/sessions", {"content": b"[1, 2]", "headers": JSON}, "invalid request body"),
        ("POST", "/v1/sessions", {"json": {"idd": "x"}}, "unknown field `idd`"),
        ("POST", "/v1/sessions", {"json": {"id": 5}}, "$.id"),
        ("POST", "/v1/sessions", {"json": {"activate": "yes"}}, "$.activate"),
        ("POST", "/v1/sessions", {"json": {"idle_timeout": -1}}, "idle_timeout"),
        ("POST", "/v1/sessions", {"json": {"id": "has space"}}, "session id"),
        ("PATCH", "/v1/sessions/live", {"json": {"expected_version": 1.5}}, "expected_version"),
        ("POST", "/v1/sessions/live/counters/n", {"json": {"by": 2**63}}, "$.by"),
        ("POST", "/v1/sessions/live/transitions", {"json": {}}, "`event`"),
        ("POST", "/v1/sessions/live/transitions", {"json": {"event": "FLY"}}, "FLY"),
        ("POST", "/v1/sessions/live/history", {"json": {"kind": "bad kind!"}}, "kind"),
        ("GET", "/v1/sessions", {"params": {"limit": "ten"}}, "limit"),
        ("GET", "/v1/sessions", {"params": {"limit": "0"}}, "limit"),
        ("GET", "/v1/sessions", {"params": {"limit": str(2**64)}}, "limit"),
        ("GET", "/v1/sessions", {"params": {"include_ended": "maybe"}}, "include_ended"),
        ("GET", "/v1/sessions", {"params": {"include_ended": ""}}, "include_ended"),
        ("GET", "/v1/sessions", {"params": {"label": "no-colon"}}, "key:value"),
        ("GET", "/v1/sessions", {"params": {"namespce": "typo"}}, "unknown query parameter"),
        ("GET", "/v1/sessions/live/history", {"params": {"after": "-1"}}, "after"),
        ("GET", "/v1/sessions/live/history", {"params": {"order": ""}}, "order"),
        ("DELETE", "/v1/sessions/live", {"params": {"reason": ""}}, "reason"),
        ("DELETE", "/v1/sessions/live/data/k", {"params": {"expected_version": "x"}}, "expected"),
        ("GET", "/v1/sessions/has%20space", {}, "session id"),
        ("GET", "/v1/sessions/" + "x" * 201, {}, "session id"),
        ("GET", "/v1/sessions/live/data/%0A", {}, "data key"),
        ("GET", "/v1/stats", {"params": {"verbose": "1"}}, "unknown query parameter"),
    ],
)
def test_bad_input_is_a_400_that_changes_nothing(
    http: httpx.Client, method: str, path: str, kwargs: dict[str, Any], says: str
) -> None:
    json_of(http.post("/v1/sessions", json={"id": "live", "labels": {"k": "v"}}), 201)
    http.put("/v1/sessions/live/data/k", json={"value": 1})
    before = snapshot(http, "live")
    message = assert_error(http.request(method, path, **kwargs), 400, "invalid")
    assert says in message
    assert snapshot(http, "live") == before


# 401


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dXNlcjpwdw=="}],
    ids=["missing", "wrong", "not-bearer"],
)
def test_a_missing_or_wrong_token_is_a_401_that_changes_nothing(
    server: ThreadedServer, http: httpx.Client, headers: dict[str, str]
) -> None:
    json_of(http.post("/v1/sessions", json={"id": "live"}), 201)
    before = snapshot(http, "live")
    with httpx.Client(base_url=server.url, headers=headers, timeout=WAIT) as anon:
        for method, path in [
            ("POST", "/v1/sessions"),
            ("GET", "/v1/sessions"),
            ("GET", "/v1/sessions/live"),
            ("DELETE", "/v1/sessions/live"),
            ("PUT", "/v1/sessions/live/data/k"),
            ("GET", "/v1/stats"),
            ("GET", "/metrics"),
            ("GET", "/v1/events"),
            ("GET", "/no/such/route"),  # authentication comes first: nothing about routes leaks
        ]:
            response = anon.request(method, path, json={"value": 1} if method == "PUT" else None)
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
        assert json_of(anon.get("/healthz"), 200) == {"status": "ok"}
        assert json_of(anon.get("/openapi.json"), 200)["openapi"].startswith("3.1")
    assert snapshot(http, "live") == before


# 404


def test_unknown_sessions_keys_and_routes_are_404s_that_change_nothing(
    http: httpx.Client,
) -> None:
    json_of(http.post("/v1/sessions", json={"id": "live"}), 201)
    before = snapshot(http, "live")
    for method, path, body in [
        ("GET", "/v1/sessions/ghost", None),
        ("PATCH", "/v1/sessions/ghost", {"details": {"a": 1}}),
        ("POST", "/v1/sessions/ghost/touch", None),
        ("POST", "/v1/sessions/ghost/transitions", {"event": "SPAWN"}),
        ("POST", "/v1/sessions/ghost/counters/n", {"by": 1}),
        ("POST", "/v1/sessions/ghost/children", {"child_id": "live"}),
        ("PUT", "/v1/sessions/ghost/data/k", {"value": 1}),
        ("GET", "/v1/sessions/ghost/data", None),
        ("POST", "/v1/sessions/ghost/history", {"kind": "call"}),
        ("GET", "/v1/sessions/ghost/history", None),
        ("GET", "/v1/sessions/live/data/missing", None),
        ("POST", "/v1/sessions", {"parent_id": "ghost"}),
    ]:
        message = assert_error(http.request(method, path, json=body), 404, "not_found")
        assert "ghost" in message or "missing" in message
    for path in ["/nope", "/v1", "/v1/sessions/live/nope", "/v1/sessions/live/data/k/extra"]:
        assert "no route" in assert_error(http.get(path), 404, "not_found")
    assert snapshot(http, "live") == before


# 405


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/sessions", "GET, POST"),
        ("POST", "/v1/sessions/live", "DELETE, GET, PATCH"),
        ("GET", "/v1/sessions/live/touch", "POST"),
        ("POST", "/v1/sessions/live/data/k", "DELETE, GET, PUT"),
        ("DELETE", "/healthz", "GET"),
        ("POST", "/metrics", "GET"),
        ("POST", "/v1/events", "GET"),
        ("PUT", "/openapi.json", "GET"),
    ],
)
def test_a_wrong_method_is_a_405_naming_the_allowed_ones(
    http: httpx.Client, method: str, path: str, allowed: str
) -> None:
    json_of(http.post("/v1/sessions", json={"id": "live"}), 201)
    before = snapshot(http, "live")
    response = http.request(method, path)
    message = assert_error(response, 405, "method_not_allowed")
    assert allowed in message
    assert response.headers["allow"] == allowed
    assert snapshot(http, "live") == before


# 409


def test_conflicts_are_409s_that_change_nothing(client_of: Callable[..., httpx.Client]) -> None:
    http = client_of(unique_labels=["role"])
    json_of(http.post("/v1/sessions", json={"id": "live", "labels": {"role": "auth"}}), 201)
    json_of(http.put("/v1/sessions/live/data/k", json={"value": 1}), 200)
    before = snapshot(http, "live")
    message = assert_error(
        http.post("/v1/sessions/live/transitions", json={"event": "ACTIVATE"}),
        409,
        "invalid_transition",
    )
    assert message == "invalid transition: state=CREATED event=ACTIVATE reason=no such transition"
    assert_error(http.post("/v1/sessions", json={"id": "live"}), 409, "duplicate")
    assert_error(http.post("/v1/sessions", json={"labels": {"role": "auth"}}), 409, "duplicate")
    for method, path, body in [
        ("PATCH", "/v1/sessions/live", {"details": {"a": 1}, "expected_version": 7}),
        ("POST", "/v1/sessions/live/transitions", {"event": "SPAWN", "expected_version": 7}),
        ("PUT", "/v1/sessions/live/data/k", {"value": 2, "expected_version": 7}),
        ("PUT", "/v1/sessions/live/data/k", {"value": 2, "expected_version": 0}),
    ]:
        assert_error(http.request(method, path, json=body), 409, "version_conflict")
    conflict = http.delete("/v1/sessions/live/data/k", params={"expected_version": 9})
    assert_error(conflict, 409, "version_conflict")
    assert snapshot(http, "live") == before


# 413


def test_a_body_past_max_body_bytes_is_a_413_with_or_without_content_length(
    client_of: Callable[..., httpx.Client],
) -> None:
    http = client_of(app_options={"max_body_bytes": 1024})
    json_of(http.post("/v1/sessions", json={"id": "live"}), 201)
    before = snapshot(http, "live")
    big = b'{"value": "' + b"x" * 2000 + b'"}'
    declared = http.put("/v1/sessions/live/data/k", content=big, headers=JSON)
    assert "larger than 1024 bytes" in assert_error(declared, 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no content-length: chunked, counted while it arrives
        yield b'{"value": "'
        for _ in range(8):
            yield b"x" * 256
        yield b'"}'

    chunked = http.put("/v1/sessions/live/data/k", content=chunks(), headers=JSON)
    assert chunked.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in chunked.request.headers
    assert_error(chunked, 413, "payload_too_large")
    # Refused before their bodies were read: the client is told not to reuse the connection (a
    # next request on it would meet the server closing it: "server disconnected").
    assert declared.headers["connection"] == "close"
    assert chunked.headers["connection"] == "close"
    created = http.post(
        "/v1/sessions", content=b'{"details": {"k": "' + b"y" * 1100 + b'"}}', headers=JSON
    )
    assert_error(created, 413, "payload_too_large")
    assert snapshot(http, "live") == before
    small = http.put(
        "/v1/sessions/live/data/k", content=b'{"value": "' + b"x" * 900 + b'"}', headers=JSON
    )
    assert json_of(small, 200)["version"] == 1  # the limit is the body, not more
    assert "connection" not in small.headers


def test_a_field_past_the_hubs_size_limits_is_a_413(client_of: Callable[..., httpx.Client]) -> None:
    http = client_of(limits=Limits(max_details_bytes=100, max_data_value_bytes=100))
    json_of(http.post("/v1/sessions", json={"id": "live"}), 201)
    before = snapshot(http, "live")
    for method, path, body in [
        ("POST", "/v1/sessions", {"details": {"text": "x" * 200}}),
        ("PATCH", "/v1/sessions/live", {"details": {"text": "x" * 200}}),
        ("PUT", "/v1/sessions/live/data/k", {"value": "x" * 200}),
        ("POST", "/v1/sessions", {"labels": {f"k{n}": "v" for n in range(65)}}),
    ]:
        assert_error(http.request(method, path, json=body), 413, "payload_too_large")
    assert snapshot(http, "live") == before


# 429 and 503


def test_a_user_past_the_quota_gets_a_429_that_changes_nothing(
    client_of: Callable[..., httpx.Client],
) -> None:
    http = client_of(limits=Limits(max_sessions_per_user=1))
    json_of(http.post("/v1/sessions", json={"id": "live", "user_id": "ada"}), 201)
    before = snapshot(http, "live")
    response = http.post("/v1/sessions", json={"user_id": "ada"})
    assert "ada" in assert_error(response, 429, "quota_exceeded")
    assert snapshot(http, "live") == before
    json_of(http.post("/v1/sessions", json={"user_id": "bob"}), 201)  # others still may


def test_a_full_hub_answers_503_that_changes_nothing(
    client_of: Callable[..., httpx.Client],
) -> None:
    http = client_of(limits=Limits(max_sessions=2))
    for n in range(2):
        json_of(http.post("/v1/sessions", json={"id": f"s{n}"}), 201)
    before = snapshot(http, "s0", "s1")
    assert_error(http.post("/v1/sessions", json={}), 503, "capacity_exceeded")
    assert snapshot(http, "s0", "s1") == before
    json_of(http.delete("/v1/sessions/s0"), 200)
    json_of(http.post("/v1/sessions", json={}), 201)  # room again


@pytest.mark.parametrize(
    "error",
    [
        sessionhub.TooManyRequests("session s has 1 request in flight, its limit"),
        sessionhub.StoreUnavailable("the store went away"),
        sessionhub.QuotaExceeded("quota"),
        sessionhub.CapacityExceeded("full"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_errors_no_route_raises_over_a_memory_store_answer_their_status(
    server: ThreadedServer, http: httpx.Client, error: sessionhub.SessionHubError
) -> None:
    """Only middleware-bound requests are tracked, and a memory store never goes away: a hub that
    raises them shows that the face answers each with its own status and body."""

    async def failing(session_id: str) -> Session:
        raise error

    server.hub.get = failing  # type: ignore[method-assign]
    message = assert_error(http.get("/v1/sessions/any"), error.http_status, error.code)
    assert message == error.message
    assert error.http_status in (429, 503)


def test_an_unexpected_failure_is_a_500_without_details(
    server: ThreadedServer, http: httpx.Client
) -> None:
    async def broken(session_id: str) -> Session:
        raise RuntimeError("secret internals")

    server.hub.get = broken  # type: ignore[method-assign]
    message = assert_error(http.get("/v1/sessions/any"), 500, "internal")
    assert "secret" not in message
    assert json_of(http.get("/healthz"), 200) == {"status": "ok"}  # and it goes on


# ids with reserved characters


@pytest.mark.parametrize(
    "session_id",
    ["a/b", "a%2Fb", "100%", "q?x=1&y", "frag#ment", "..", ".", "~!$'()*+,;=:@[]", "%"],
)
def test_ids_with_reserved_url_characters_round_trip(http: httpx.Client, session_id: str) -> None:
    made = json_of(http.post("/v1/sessions", json={"id": session_id}), 201)
    assert made["id"] == session_id
    path = session_path(session_id)
    assert json_of(http.get(path), 200)["id"] == session_id
    key = "stub/" + session_id
    entry = json_of(http.put(path + "/data/" + segment(key), json={"value": 1}), 200)
    assert entry["key"] == key
    assert json_of(http.get(path + "/data"), 200)["items"] == [entry]
    assert json_of(http.post(path + "/counters/n"), 200) == {"value": 1}
    assert [s["id"] for s in json_of(http.get("/v1/sessions"), 200)["items"]] == [session_id]
    assert json_of(http.delete(path), 200) == {"ended": True}
    assert_error(http.get(path), 404, "not_found")


# /metrics


def scrape(http: httpx.Client) -> dict[str, list[Sample]]:
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


def test_metrics_are_prometheus_text(server: ThreadedServer, http: httpx.Client) -> None:
    def failing_hook(session: Session, reason: str) -> None:
        raise RuntimeError("hook failed on purpose")

    server.hub.on_end(failing_hook)
    for n in range(3):
        json_of(http.post("/v1/sessions", json={"id": f"a{n}", "namespace": "alpha"}), 201)
    json_of(http.post("/v1/sessions", json={"id": "b", "namespace": "beta", "activate": True}), 201)
    json_of(http.delete("/v1/sessions/a0", params={"reason": "done"}), 200)
    json_of(http.post("/v1/sessions", json={"id": "short", "idle_timeout": 0.05}), 201)
    wait_until(lambda: http.get("/v1/sessions/short").status_code == 404, "the session to expire")
    http.get("/v1/sessions/a1")
    http.get("/v1/sessions/ghost")

    metrics = scrape(http)
    sessions = metrics["sessionhub_sessions"]
    assert value(sessions, "sessionhub_sessions", namespace="alpha", state="CREATED") == 2
    assert value(sessions, "sessionhub_sessions", namespace="beta", state="ACTIVE") == 1
    created = metrics["sessionhub_sessions_created"]
    assert value(created, "sessionhub_sessions_created_total") == 5
    ended = metrics["sessionhub_sessions_ended"]
    assert value(ended, "sessionhub_sessions_ended_total", reason="done") == 1
    assert value(ended, "sessionhub_sessions_ended_total", reason="expired") == 1
    lateness = metrics["sessionhub_expiry_lateness_seconds"]
    assert value(lateness, "sessionhub_expiry_lateness_seconds_count") == 1
    buckets = [s for s in lateness if s.name == "sessionhub_expiry_lateness_seconds_bucket"]
    assert len(buckets) > 2
    assert buckets[-1].labels == {"le": "+Inf"}
    assert buckets[-1].value == 1
    assert [b.value for b in buckets] == sorted(b.value for b in buckets)  # cumulative
    hooks = metrics["sessionhub_hook_failures"]
    assert value(hooks, "sessionhub_hook_failures_total") == 2  # a0 and short
    assert value(metrics["sessionhub_hook_calls"], "sessionhub_hook_calls_total") == 2

    durations = metrics["sessionhub_http_request_duration_seconds"]
    counts = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in durations
        if s.name == "sessionhub_http_request_duration_seconds_count"
    }
    assert counts[("POST", "/v1/sessions", "201")] == 5
    assert counts[("GET", "/v1/sessions/{id}", "200")] >= 1  # and the polls while expiring
    assert counts[("GET", "/v1/sessions/{id}", "404")] >= 2
    assert counts[("DELETE", "/v1/sessions/{id}", "200")] == 1
    routes = {route for _, route, _ in counts}
    assert not any(sid in route for route in routes for sid in ("a1", "ghost", "short"))


def test_metrics_label_templates_never_raw_paths_or_methods(
    server: ThreadedServer, http: httpx.Client
) -> None:
    for n in range(20):
        assert http.get(f"/scan/{n}").status_code == 404
        assert http.request(f"X{n}", "/v1/sessions").status_code == 405
    with httpx.Client(base_url=server.url, timeout=WAIT) as anon:
        assert anon.get("/v1/sessions/secret-id").status_code == 401
    durations = scrape(http)["sessionhub_http_request_duration_seconds"]
    labels = {
        (s.labels["method"], s.labels["route"], s.labels["status"])
        for s in durations
        if s.name.endswith("_count")
    }
    assert labels == {
        ("GET", "/healthz", "200"),  # the readiness probe of ThreadedServer
        ("GET", "(unmatched)", "404"),
        ("OTHER", "/v1/sessions", "405"),
        ("GET", "/v1/sessions/{id}", "401"),
    }


def test_end_reasons_counted_are_bounded_in_metrics_and_stats(http: httpx.Client) -> None:
    reasons = [f"caller reason {n}" for n in range(CALLER_REASONS_KEPT + 8)]
    reasons += ["caller reason 0", "evicted", "ended", "other"]  # a kept one, hub's own, "other"
    for n, reason in enumerate(reasons):
        json_of(http.post("/v1/sessions", json={"id": f"s{n}"}), 201)
        json_of(http.delete(f"/v1/sessions/s{n}", params={"reason": reason}), 200)

    kept = {f"caller reason {n}": 1 for n in range(CALLER_REASONS_KEPT)}
    expected = {**kept, "caller reason 0": 2, "other": 8 + 1, "evicted": 1, "ended": 1}
    ended = scrape(http)["sessionhub_sessions_ended"]
    assert {s.labels["reason"]: s.value for s in ended if s.name.endswith("_total")} == expected
    stats = json_of(http.get("/v1/stats"), 200)
    assert stats["ended_total"] == expected
    assert sum(minute["ended"] for minute in stats["per_minute"]) == len(reasons)


# stopping


def test_stopping_the_server_ends_every_live_session_once_with_reason_shutdown(
    make_server: MakeServer,
) -> None:
    server = make_server()
    calls: list[tuple[str, str]] = []
    lock = threading.Lock()

    def record(session: Session, reason: str) -> None:
        with lock:
            calls.append((session.id, reason))

    server.hub.on_end(record)
    with authed(server) as http:
        for sid in ("one", "two", "three", "gone"):
            json_of(http.post("/v1/sessions", json={"id": sid}), 201)
        json_of(http.post("/v1/sessions/two/transitions", json={"event": "SPAWN"}), 200)
        json_of(http.delete("/v1/sessions/gone"), 200)
    server.stop()
    assert sorted(calls) == [
        ("gone", "ended"),
        ("one", "shutdown"),
        ("three", "shutdown"),
        ("two", "shutdown"),
    ]


async def test_the_asgi_lifespan_shutdown_ends_live_sessions() -> None:
    """The same through the bare ASGI lifespan, as any ASGI server drives it."""
    hub = sessionhub.SessionHub()
    calls: list[tuple[str, str]] = []

    @hub.on_end
    async def record(session: Session, reason: str) -> None:
        calls.append((session.id, reason))

    app = create_app(hub)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []
    answered = asyncio.Event()

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: Any) -> None:
        sent.append(dict(message))
        answered.set()

    lifespan = asyncio.create_task(app({"type": "lifespan"}, receive, send))
    await inbox.put({"type": "lifespan.startup"})
    await asyncio.wait_for(answered.wait(), WAIT)
    assert sent == [{"type": "lifespan.startup.complete"}]
    await hub.create("a")
    await hub.create("b", activate=True)
    await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(lifespan, WAIT)
    assert sent[-1] == {"type": "lifespan.shutdown.complete"}
    assert sorted(calls) == [("a", "shutdown"), ("b", "shutdown")]
