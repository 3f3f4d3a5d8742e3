"""Request leases over HTTP (``POST/DELETE /v1/sessions/{id}/requests``): a remote
``track_request`` means what it means embedded and over gRPC: counted in ``active_requests``, the
session is not idle meanwhile, the per-session limit holds, and an abandoned lease expires."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sessionhub import Limits
from tests.client.serving import ThreadedServer

from .conftest import assert_error, authed, snapshot, wait_until

MakeServer = Callable[..., ThreadedServer]


def lease(http: httpx.Client, session_id: str, **body: Any) -> dict[str, Any]:
    response = http.post(f"/v1/sessions/{session_id}/requests", json=body or None)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_a_lease_counts_a_request_until_released(http: httpx.Client) -> None:
    made = http.post("/v1/sessions", json={"id": "s"}).json()
    time.sleep(0.01)
    first = lease(http, "s")
    assert first["expires_in"] == 60.0  # the default
    assert first["session"]["active_requests"] == 1
    assert first["session"]["last_activity_at"] > made["last_activity_at"]
    second = lease(http, "s", lease=5)
    assert second["expires_in"] == 5.0
    assert second["lease_id"] != first["lease_id"]
    assert http.get("/v1/sessions/s").json()["active_requests"] == 2

    released = http.delete(f"/v1/sessions/s/requests/{first['lease_id']}")
    assert released.status_code == 200, released.text
    assert released.json()["session"]["active_requests"] == 1
    again = http.delete(f"/v1/sessions/s/requests/{first['lease_id']}")
    assert_error(again, 404, "not_found")
    wrong_session = http.post("/v1/sessions", json={"id": "other"})
    assert wrong_session.status_code == 201
    assert_error(http.delete(f"/v1/sessions/other/requests/{second['lease_id']}"), 404, "not_found")
    http.delete(f"/v1/sessions/s/requests/{second['lease_id']}")
    assert http.get("/v1/sessions/s").json()["active_requests"] == 0


def test_the_per_session_limit_holds(make_server: MakeServer) -> None:
    with authed(make_server(limits=Limits(max_requests_per_session=1))) as http:
        http.post("/v1/sessions", json={"id": "s"})
        held = lease(http, "s")
        before = snapshot(http, "s")
        assert_error(http.post("/v1/sessions/s/requests"), 429, "too_many_requests")
        assert snapshot(http, "s") == before
        http.delete(f"/v1/sessions/s/requests/{held['lease_id']}")
        lease(http, "s")


@pytest.mark.parametrize("body", [{"lease": 0}, {"lease": -1}, {"lease": "60"}, {"lease": 1e9}])
def test_a_bad_lease_is_a_400_that_changes_nothing(http: httpx.Client, body: Any) -> None:
    http.post("/v1/sessions", json={"id": "s"})
    before = snapshot(http, "s")
    assert_error(http.post("/v1/sessions/s/requests", json=body), 400, "invalid")
    assert_error(http.post("/v1/sessions/s/requests", json={"lease": 5, "x": 1}), 400, "invalid")
    assert snapshot(http, "s") == before


def test_an_unknown_session_is_a_404(http: httpx.Client) -> None:
    assert_error(http.post("/v1/sessions/ghost/requests"), 404, "not_found")
    assert_error(http.delete("/v1/sessions/ghost/requests/nothing"), 404, "not_found")


def test_a_held_lease_keeps_an_idle_session_alive_and_an_abandoned_one_expires(
    http: httpx.Client,
) -> None:
    http.post("/v1/sessions", json={"id": "busy", "idle_timeout": 0.3})
    http.post("/v1/sessions", json={"id": "idle", "idle_timeout": 0.3})
    lease(http, "busy", lease=4)  # then abandoned: never released
    wait_until(lambda: http.get("/v1/sessions/idle").status_code == 404, "the idle one to end")
    assert http.get("/v1/sessions/busy").json()["active_requests"] == 1  # held off expiry
    wait_until(
        lambda: http.get("/v1/sessions/busy").status_code == 404,
        "the abandoned lease to expire, then the session to go idle",
    )
