"""The server beside a browser, against a real server with exactly the requests a hostile web page
(or a DNS-rebinding one) would make: nothing they send changes anything, while the server's own
clients and the origins the operator allowed keep working."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.client.serving import ThreadedServer

from .conftest import WAIT, SSEReader, assert_error, authed, snapshot

EVIL = "http://evil.example"
FRIEND = "http://dashboard.example:8080"

MakeServer = Callable[..., ThreadedServer]


@pytest.fixture
def friendly(make_server: MakeServer) -> ThreadedServer:
    """A server that allows one other origin and one other host name."""
    return make_server(app_options={"allow_origins": [FRIEND], "allow_hosts": ["hub.internal"]})


@pytest.fixture
def anon(server: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=WAIT) as client:
        yield client


def test_a_text_plain_post_from_another_origin_creates_nothing(
    server: ThreadedServer, http: httpx.Client
) -> None:
    before = snapshot(http)
    response = http.post(
        "/v1/sessions",
        content=b'{"id": "csrf"}',
        headers={"Content-Type": "text/plain", "Origin": EVIL},
    )
    message = assert_error(response, 403, "forbidden")
    assert "evil.example" in message
    assert "--allow-origin" in message
    assert "access-control-allow-origin" not in response.headers
    assert snapshot(http) == before


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_body_that_is_not_declared_json_is_a_415_that_creates_nothing(
    http: httpx.Client, content_type: str | None
) -> None:
    before = snapshot(http)
    headers = {} if content_type is None else {"Content-Type": content_type}
    # httpx adds no Content-Type of its own to raw content
    response = http.post("/v1/sessions", content=b'{"id": "simple"}', headers=headers)
    message = assert_error(response, 415, "unsupported_media_type")
    assert "application/json" in message
    assert snapshot(http) == before


def test_json_with_parameters_is_json(http: httpx.Client) -> None:
    response = http.post(
        "/v1/sessions",
        content=b'{"id": "charset"}',
        headers={"Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "host", ["evil.example:7480", "evil.example", "127.0.0.1.evil.example", "[::2]:80"]
)
def test_a_dns_rebinding_request_is_refused(server: ThreadedServer, host: str) -> None:
    with authed(server) as http:
        before = snapshot(http)
        for method, path in [
            ("GET", "/v1/sessions"),
            ("POST", "/v1/sessions"),
            ("GET", "/healthz"),
        ]:
            response = http.request(method, path, headers={"Host": host}, json={})
            message = assert_error(response, 403, "forbidden")
            assert "--allow-host" in message
        assert snapshot(http) == before


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST:7480", "127.0.0.1", "127.0.0.1:1", "[::1]", "[::1]:7480"]
)
def test_loopback_names_are_always_accepted(server: ThreadedServer, host: str) -> None:
    with authed(server) as http:
        assert http.get("/v1/count", headers={"Host": host}).json() == {"count": 0}


def test_allowed_hosts_and_origins_are_accepted(friendly: ThreadedServer) -> None:
    with authed(friendly) as http:
        assert http.get("/v1/count", headers={"Host": "hub.internal:7480"}).status_code == 200
        assert http.get("/v1/count", headers={"Host": "other.internal"}).status_code == 403
        answer = http.post("/v1/sessions", json={"id": "friend"}, headers={"Origin": FRIEND})
        assert answer.status_code == 201, answer.text
        assert answer.headers["access-control-allow-origin"] == FRIEND
        assert "Origin" in answer.headers["vary"]
        refused = http.post("/v1/sessions", json={"id": "foe"}, headers={"Origin": EVIL})
        assert_error(refused, 403, "forbidden")
        assert http.get("/v1/count").json() == {"count": 1}


def test_an_allowed_origin_gets_a_proper_preflight_answer(friendly: ThreadedServer) -> None:
    with httpx.Client(
        base_url=friendly.url, timeout=WAIT
    ) as browser:  # no token: preflights have none
        answer = browser.options(
            "/v1/sessions/s1/data/k",
            headers={
                "Origin": FRIEND,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
    assert answer.status_code == 204, answer.text
    headers = answer.headers
    assert headers["access-control-allow-origin"] == FRIEND
    assert headers["access-control-allow-methods"] == "DELETE, GET, PUT"
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "last-event-id"} <= allowed
    assert "Origin" in headers["vary"]
    assert headers["allow"] == "DELETE, GET, PUT"


def test_a_preflight_from_a_foreign_origin_is_refused(server: ThreadedServer) -> None:
    with httpx.Client(base_url=server.url, timeout=WAIT) as browser:
        answer = browser.options(
            "/v1/sessions", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"}
        )
    assert_error(answer, 403, "forbidden")
    assert "access-control-allow-origin" not in answer.headers


def test_options_without_origin_names_the_methods(anon: httpx.Client) -> None:
    answer = anon.options("/v1/sessions")
    assert answer.status_code == 204
    assert answer.headers["allow"] == "GET, POST"
    assert "access-control-allow-origin" not in answer.headers
    assert_error(anon.options("/no/such/route"), 404, "not_found")


def test_the_servers_own_origin_is_not_cross_origin(server: ThreadedServer) -> None:
    with authed(server) as http:
        answer = http.post("/v1/sessions", json={}, headers={"Origin": server.url})
        assert answer.status_code == 201, answer.text
        assert "access-control-allow-origin" not in answer.headers


def test_an_allowed_origin_can_read_the_event_stream(friendly: ThreadedServer) -> None:
    reader = SSEReader(friendly.url, friendly.token, headers={"Origin": FRIEND})
    try:
        reader.wait_live()
        assert reader.response is not None
        assert reader.response.headers["access-control-allow-origin"] == FRIEND
    finally:
        reader.close()
    with httpx.Client(base_url=friendly.url, timeout=WAIT) as foe:
        refused = foe.get(
            "/v1/events",
            headers={"Origin": EVIL, "Authorization": f"Bearer {friendly.token}"},
        )
        assert_error(refused, 403, "forbidden")


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(server: ThreadedServer, scheme: str) -> None:
    headers = {"Authorization": f"{scheme} {server.token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=WAIT) as http:
        assert http.get("/v1/count").json() == {"count": 0}


def test_any_origin_and_host_with_a_star(make_server: MakeServer) -> None:
    server = make_server(app_options={"allow_origins": ["*"], "allow_hosts": ["*"]})
    with authed(server) as http:
        headers: dict[str, Any] = {"Origin": EVIL, "Host": "elsewhere.example"}
        answer = http.post("/v1/sessions", json={}, headers=headers)
        assert answer.status_code == 201, answer.text
        assert answer.headers["access-control-allow-origin"] == EVIL
