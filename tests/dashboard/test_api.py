"""What the dashboard added to the server: the page's routes and headers, ``--no-ui``, bulk end
by user, and created/ended counts per minute in ``/v1/stats`` (and the OpenAPI document)."""

from __future__ import annotations

import itertools
import time
import uuid

import httpx
import pytest

from sessionhub._metrics import MINUTES_KEPT, HubMetrics
from tests.server.conftest import WAIT

from .conftest import Served, session_path

pytestmark = pytest.mark.xdist_group("browser")  # see conftest: one worker, back to back


def test_root_and_ui_redirect_to_the_page_which_is_public(token_server: Served) -> None:
    with httpx.Client(base_url=token_server.url, timeout=WAIT) as anonymous:
        for path in ("/", "/ui"):
            response = anonymous.get(path)
            assert response.status_code == 308
            assert response.headers["location"] == "/ui/"
        page = anonymous.get("/ui/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "connect-src 'self'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "streamEvents" in page.text  # main.js and its imports, inlined
        script = anonymous.get("/ui/main.js")  # the sources are served as they are
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert "streamEvents" in script.text
        assert anonymous.get("/ui/vendor/uPlot.LICENSE").text.startswith("The MIT License")
        assert anonymous.get("/ui/nothing.js").status_code == 404
        assert anonymous.post("/ui/").status_code == 405
        assert anonymous.get("/v1/stats").status_code == 401  # the data is not public


def test_no_ui_serves_no_page(no_ui_server: Served) -> None:
    for path in ("/", "/ui", "/ui/", "/ui/main.js"):
        assert no_ui_server.http.get(path).status_code == 404, path
    assert no_ui_server.http.get("/v1/stats").status_code == 200


def test_ending_every_session_of_a_user(server: Served) -> None:
    base = f"bulk-{uuid.uuid4().hex[:8]}"
    user = base + "-user"
    server.create(base + "-a", user_id=user, namespace=base + "-ns1", retention=60)
    server.create(base + "-b", user_id=user, namespace=base + "-ns2", retention=60)
    server.create(base + "-child", retention=60)
    server.http.post(session_path(base + "-b") + "/children", json={"child_id": base + "-child"})
    server.create(base + "-other", user_id=base + "-other-user")
    path = f"/v1/users/{user}/sessions"

    bad = server.http.delete(path, params={"reason": "no spaces allowed"})
    assert bad.status_code == 400, bad.text
    assert server.get(base + "-a")["ended_at"] is None

    first = server.http.delete(path, params={"namespace": base + "-ns1", "reason": "revoked"})
    assert first.json() == {"count": 1}
    assert server.get(base + "-a")["end_reason"] == "revoked"
    assert server.get(base + "-b")["ended_at"] is None

    rest = server.http.delete(path)
    assert rest.json() == {"count": 1}
    assert server.get(base + "-b")["end_reason"] == "ended"
    assert server.get(base + "-child")["end_reason"] == "parent_ended"
    assert server.get(base + "-other")["ended_at"] is None
    assert server.http.delete(path).json() == {"count": 0}

    document = server.http.get("/openapi.json").json()
    operation = document["paths"]["/v1/users/{user_id}/sessions"]["delete"]
    assert {p["name"] for p in operation["parameters"]} == {"user_id", "namespace", "reason"}
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/Count"}


def test_stats_count_sessions_created_and_ended_per_minute(server: Served) -> None:
    before = server.http.get("/v1/stats").json()["per_minute"]
    base = f"rate-{uuid.uuid4().hex[:8]}"
    for i in range(4):
        server.create(f"{base}-{i}")
    server.http.delete(session_path(f"{base}-0"))
    after = server.http.get("/v1/stats").json()["per_minute"]

    assert len(after) == MINUTES_KEPT
    minutes = [m["minute"] for m in after]
    assert minutes == sorted(minutes)
    assert {b - a for a, b in itertools.pairwise(minutes)} == {60}
    assert minutes[-1] == int(time.time() // 60) * 60  # same machine: the same wall clock
    # Whatever minute each landed in, the kept window holds them all.
    assert sum(m["created"] for m in after) - sum(m["created"] for m in before) >= 4
    assert sum(m["ended"] for m in after) - sum(m["ended"] for m in before) >= 1

    document = server.http.get("/openapi.json").json()
    stats = document["components"]["schemas"]["Stats"]["properties"]
    assert stats["per_minute"]["items"] == {"$ref": "#/components/schemas/Minute"}


def test_hub_metrics_keep_the_last_sixty_minutes() -> None:
    now = [1_000_020.0]  # 20 s into a minute
    metrics = HubMetrics(clock=lambda: now[0])
    metrics.created += 1
    metrics.ended["idle_timeout"] += 1
    metrics.ended["logout"] += 2
    now[0] += 60
    metrics.created += 3

    minutes = metrics.snapshot({}).per_minute
    assert len(minutes) == MINUTES_KEPT
    assert [(m.created, m.ended) for m in minutes[-2:]] == [(1, 3), (3, 0)]
    assert minutes[-1].minute == 1_000_020 // 60 * 60 + 60
    assert all((m.created, m.ended) == (0, 0) for m in minutes[:-2])
    assert metrics.snapshot({}).created_total == 4
    assert metrics.snapshot({}).ended_total == {"idle_timeout": 1, "logout": 2}

    now[0] += 60 * (MINUTES_KEPT - 1)  # the first minute falls out of the window
    minutes = metrics.snapshot({}).per_minute
    assert [(m.created, m.ended) for m in minutes if m.created or m.ended] == [(3, 0)]


def test_hub_metrics_count_creates_in_the_minute_of_each_and_at_its_edges() -> None:
    now = [1_000_019.999]  # the last instant before a minute boundary (1_000_020 is one)
    metrics = HubMetrics(clock=lambda: now[0])
    metrics.count_created()
    now[0] = 1_000_020.0  # the next minute's first instant
    metrics.count_created()
    metrics.created += 1  # the property and count_created count alike
    now[0] = 1_000_079.5
    metrics.count_created()
    now[0] = 1_000_080.0
    metrics.ended["expired"] += 1

    minutes = metrics.snapshot({}).per_minute
    assert [(m.minute, m.created, m.ended) for m in minutes[-3:]] == [
        (1_000_020.0 - 60, 1, 0),
        (1_000_020.0, 3, 0),
        (1_000_080.0, 0, 1),
    ]
    assert metrics.created == 4
