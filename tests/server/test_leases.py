"""Request leases over HTTP (``POST/DELETE /v1/sessions/{id}/requests``): a remote
``track_request`` means what it means embedded and over gRPC: counted in ``active_requests``, the
session is not idle meanwhile, the per-session limit holds, and an abandoned lease expires.
``PUT .../requests/{lease_id}`` renews a held lease (never one that is gone)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

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


# renewing: PUT /v1/sessions/{id}/requests/{lease_id}


def renew(http: httpx.Client, session_id: str, lease_id: str, **body: Any) -> httpx.Response:
    return http.put(f"/v1/sessions/{session_id}/requests/{lease_id}", json=body or None)


def test_a_renewal_keeps_the_same_request_and_answers_as_a_lease(http: httpx.Client) -> None:
    http.post("/v1/sessions", json={"id": "s"})
    held = lease(http, "s", lease=5)
    renewed = renew(http, "s", held["lease_id"], lease=7)
    assert renewed.status_code == 200, renewed.text
    answer = renewed.json()
    assert set(answer) == {"lease_id", "expires_in", "session"}
    assert (answer["lease_id"], answer["expires_in"]) == (held["lease_id"], 7.0)
    assert answer["session"]["active_requests"] == 1  # the same request, not a second one
    assert renew(http, "s", held["lease_id"]).json()["expires_in"] == 60.0  # as POST: 60 s
    assert http.get("/v1/sessions/s").json()["active_requests"] == 1
    released = http.delete(f"/v1/sessions/s/requests/{held['lease_id']}")
    assert released.json()["session"]["active_requests"] == 0


def test_a_renewed_lease_outlives_its_first_expiry(http: httpx.Client) -> None:
    http.post("/v1/sessions", json={"id": "renewed", "idle_timeout": None})
    http.post("/v1/sessions", json={"id": "control", "idle_timeout": None})
    kept = lease(http, "renewed", lease=0.5)
    lease(http, "control", lease=0.5)
    assert renew(http, "renewed", kept["lease_id"], lease=60).status_code == 200
    wait_until(
        lambda: http.get("/v1/sessions/control").json()["active_requests"] == 0,
        "the lease that was not renewed to run out",
    )
    time.sleep(0.3)  # the renewed lease's first expiry (taken before the control's) is past too
    assert http.get("/v1/sessions/renewed").json()["active_requests"] == 1


def test_a_lease_that_is_gone_is_a_404_and_stays_gone(http: httpx.Client) -> None:
    http.post("/v1/sessions", json={"id": "s", "idle_timeout": None})
    http.post("/v1/sessions", json={"id": "other"})
    released = lease(http, "s")
    http.delete(f"/v1/sessions/s/requests/{released['lease_id']}")
    expired = lease(http, "s", lease=0.2)
    wait_until(lambda: http.get("/v1/sessions/s").json()["active_requests"] == 0, "the expiry")
    held = lease(http, "s")
    before = snapshot(http, "s", "other")
    for session_id, lease_id in [
        ("s", released["lease_id"]),  # released
        ("s", expired["lease_id"]),  # run out: a renewal never brings it back
        ("s", "nothing"),  # never given (a well-formed id)
        ("other", held["lease_id"]),  # another session's
        ("ghost", held["lease_id"]),  # no such session
    ]:
        assert_error(renew(http, session_id, lease_id), 404, "not_found")
    assert snapshot(http, "s", "other") == before
    assert http.get("/v1/sessions/s").json()["active_requests"] == 1


def test_renewing_on_an_ended_session_is_the_error_of_any_request_there(
    http: httpx.Client,
) -> None:
    http.post("/v1/sessions", json={"id": "s"})
    held = lease(http, "s")
    assert http.delete("/v1/sessions/s").json() == {"ended": True}
    refused = assert_error(http.post("/v1/sessions/s/requests"), 404, "not_found")
    assert assert_error(renew(http, "s", held["lease_id"]), 404, "not_found") == refused
    assert_error(http.post("/v1/sessions/s/touch"), 404, "not_found")


BAD_LEASE_IDS = ["a.b", "x" * 65, "with space", "é", "a%2Fb", "tab\t", "~"]


@pytest.mark.parametrize("lease_id", BAD_LEASE_IDS)
def test_a_lease_id_no_lease_can_have_is_a_400_that_changes_nothing(
    http: httpx.Client, lease_id: str
) -> None:
    http.post("/v1/sessions", json={"id": "s"})
    lease(http, "s")
    before = snapshot(http, "s")
    path = f"/v1/sessions/s/requests/{quote(lease_id, safe='%')}"
    message = assert_error(http.put(path, json={"lease": 5}), 400, "invalid")
    assert "lease id" in message
    assert len(message) < 300  # a prefix of a long id, not all of it
    assert_error(http.delete(path), 400, "invalid")
    assert_error(
        http.put(f"/v1/sessions/ghost/requests/{quote(lease_id, safe='%')}"), 400, "invalid"
    )
    assert snapshot(http, "s") == before


@pytest.mark.parametrize(
    "body", [{"lease": 0}, {"lease": -1}, {"lease": "60"}, {"lease": 1e9}, {"lease": 5, "x": 1}]
)
def test_a_bad_renewal_is_a_400_that_keeps_the_lease_as_it_was(
    http: httpx.Client, body: Any
) -> None:
    http.post("/v1/sessions", json={"id": "s", "idle_timeout": None})
    held = lease(http, "s", lease=0.5)
    assert_error(renew(http, "s", held["lease_id"], **body), 400, "invalid")
    assert_error(
        http.put(
            f"/v1/sessions/s/requests/{held['lease_id']}",
            content=b"[]",
            headers={"Content-Type": "application/json"},
        ),
        400,
        "invalid",
    )
    # not renewed: it runs out when it was due to
    wait_until(lambda: http.get("/v1/sessions/s").json()["active_requests"] == 0, "the expiry")
