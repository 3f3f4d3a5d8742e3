"""Filters, paging and the session view show what the API returns; the actions work."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .conftest import Served, Watched, session_path, ui_url
from .test_live import filter_namespace, open_dashboard, pair, row

pytestmark = pytest.mark.xdist_group("browser")  # see conftest: one worker, back to back

expect.set_options(timeout=20_000)


def shown_ids(page: Page) -> list[str]:
    ids: list[str] = page.locator("#ss-rows tr[data-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.id)"
    )
    return ids


def api_ids(served: Served, **query: Any) -> tuple[list[str], str | None]:
    page = served.http.get("/v1/sessions", params={"limit": 25, **query}).json()
    return [s["id"] for s in page["items"]], page["cursor"]


def apply_filters(page: Page, **fields: str) -> None:
    for name, value in fields.items():
        page.get_by_test_id(f"f-{name}").fill(value)
    page.get_by_test_id("f-apply").click()


def test_filters_and_paging_show_what_the_api_lists(server: Served, watched: Watched) -> None:
    page = watched.page
    namespace = f"pg-{uuid.uuid4().hex[:8]}"
    for i in range(60):
        server.create(
            f"{namespace}-{i:02}",
            namespace=namespace,
            user_id=f"user{i % 3}",
            labels={"tier": "gold" if i % 4 == 0 else "free"},
        )
    for i in range(0, 60, 5):
        server.http.post(
            session_path(f"{namespace}-{i:02}") + "/transitions", json={"event": "spawn"}
        )
    open_dashboard(page, server)
    filter_namespace(page, namespace)

    first, cursor = api_ids(server, namespace=namespace)
    expect(page.get_by_test_id("ss-count")).to_have_text("(60)")
    assert shown_ids(page) == first
    second, cursor = api_ids(server, namespace=namespace, cursor=cursor)
    page.get_by_test_id("ss-next").click()
    expect(page.locator("#ss-rows tr[data-id]").first).to_have_attribute("data-id", second[0])
    assert shown_ids(page) == second
    third, last = api_ids(server, namespace=namespace, cursor=cursor)
    page.get_by_test_id("ss-next").click()
    expect(page.locator("#ss-rows tr[data-id]")).to_have_count(len(third))
    assert shown_ids(page) == third
    assert last is None
    expect(page.get_by_test_id("ss-next")).to_be_disabled()
    page.get_by_test_id("ss-prev").click()
    expect(page.locator("#ss-rows tr[data-id]").first).to_have_attribute("data-id", second[0])
    page.get_by_test_id("ss-first").click()
    expect(page.locator("#ss-rows tr[data-id]").first).to_have_attribute("data-id", first[0])

    apply_filters(page, user="user1", label="tier:gold")
    wanted, _ = api_ids(server, namespace=namespace, user_id="user1", label="tier:gold")
    count = server.http.get(
        "/v1/count", params={"namespace": namespace, "user_id": "user1", "label": "tier:gold"}
    ).json()["count"]
    expect(page.get_by_test_id("ss-count")).to_have_text(f"({count})")
    assert shown_ids(page) == wanted

    apply_filters(page, user="", label="", state="SPAWNING")
    wanted, _ = api_ids(server, namespace=namespace, state="SPAWNING")
    expect(page.get_by_test_id("ss-count")).to_have_text(f"({len(wanted)})")
    assert shown_ids(page) == wanted


def test_the_session_view_shows_record_data_history_counts_and_children(
    server: Served, watched: Watched
) -> None:
    page = watched.page
    base = f"sv-{uuid.uuid4().hex[:8]}"
    parent = base + "-parent"
    server.create(
        parent, user_id="viewer", labels={"app": "chat"}, details={"model": "m1", "n": [1, 2]}
    )
    children = [f"{base}-child-{i}" for i in range(2)]
    for child in children:
        server.create(child)
        server.http.post(session_path(parent) + "/children", json={"child_id": child})
    server.http.post(session_path(parent) + "/counters/calls", json={"by": 7})
    server.http.put(session_path(parent) + "/data/profile", json={"value": {"lang": "en"}})
    for seq in range(1, 31):
        kind = "call" if seq % 3 else "reply"
        server.http.post(session_path(parent) + "/history", json={"kind": kind, "payload": seq})

    page.goto(ui_url(server, parent))
    expect(page.get_by_test_id("sv-id")).to_have_text(parent)
    record = server.get(parent)
    expect(pair(page, "sv-record", "user_id")).to_have_text("viewer")
    expect(pair(page, "sv-record", "version")).to_have_text(str(record["version"]))
    expect(pair(page, "sv-labels", "app")).to_have_text("chat")
    expect(pair(page, "sv-counters", "calls")).to_have_text("7")
    expect(pair(page, "sv-data", "profile")).to_contain_text('{"lang":"en"}')
    details = page.get_by_test_id("sv-details").inner_text()
    assert details.replace(" ", "").replace("\n", "") == '{"model":"m1","n":[1,2]}'
    expect(page.get_by_test_id("sv-children").locator("a")).to_have_text(children)

    counts = server.http.get(session_path(parent) + "/history/counts").json()["counts"]
    expect(page.get_by_test_id("sv-counts")).to_have_text(
        " · ".join(f"{kind}: {n}" for kind, n in sorted(counts.items()))
    )
    history = page.get_by_test_id("sv-history").locator("tr")

    def shown_seqs() -> list[int]:
        return [int(text) for text in history.locator("td:first-child").all_inner_texts()]

    def api_seqs(**query: Any) -> list[int]:
        answer = server.http.get(
            session_path(parent) + "/history", params={"order": "newest", "limit": 20, **query}
        )
        return [r["seq"] for r in answer.json()["items"]]

    newest = api_seqs()
    expect(history).to_have_count(len(newest))
    assert shown_seqs() == newest
    page.get_by_test_id("sv-older").click()
    expect(history).to_have_count(30)
    assert shown_seqs() == newest + api_seqs(after=newest[-1])

    page.get_by_test_id("sv-kind").select_option("reply")
    expect(history).to_have_count(counts["reply"])
    assert shown_seqs() == api_seqs(kind="reply")
    expect(history.locator("td:nth-child(3)")).to_have_text(["reply"] * counts["reply"])

    page.get_by_test_id("sv-children").locator("a").first.click()
    expect(page.get_by_test_id("sv-id")).to_have_text(children[0])
    expect(pair(page, "sv-record", "parent_id")).to_have_text(parent)


def test_actions_end_touch_and_end_every_session_of_a_user(
    server: Served, watched: Watched
) -> None:
    page = watched.page
    base = f"act-{uuid.uuid4().hex[:8]}"
    user = base + "-user"
    mine = [f"{base}-{i}" for i in range(3)]
    for session_id in mine:
        server.create(session_id, user_id=user, retention=60)
    other = server.create(base + "-other", user_id=base + "-someone-else")

    page.goto(ui_url(server, mine[0]))
    before = server.get(mine[0])["last_activity_at"]
    page.get_by_test_id("sv-touch").click()
    expect(page.get_by_test_id("message")).to_have_text(f"touched {mine[0]}")
    assert server.get(mine[0])["last_activity_at"] > before

    page.get_by_test_id("sv-reason").fill("operator_review")
    page.get_by_test_id("sv-end").click()
    expect(page.get_by_test_id("message")).to_have_text(f"ended {mine[0]}")
    assert server.get(mine[0])["end_reason"] == "operator_review"
    expect(pair(page, "sv-record", "end_reason")).to_have_text("operator_review")
    expect(page.get_by_test_id("sv-end")).to_be_disabled()

    page.get_by_test_id("sv-reason").fill("signed_out")
    page.get_by_test_id("sv-end-user").click()
    expect(page.get_by_test_id("message")).to_have_text(f"ended 2 sessions of user {user}")
    for session_id in mine[1:]:
        assert server.get(session_id)["end_reason"] == "signed_out"
    assert server.get(other["id"])["ended_at"] is None


def test_rows_link_to_the_session_view_and_back(server: Served, watched: Watched) -> None:
    page = watched.page
    namespace = f"lk-{uuid.uuid4().hex[:8]}"
    session_id = f"{namespace}/with?odd#chars%2F."
    server.create(session_id, namespace=namespace)
    open_dashboard(page, server)
    filter_namespace(page, namespace)
    row(page, session_id).locator("a").click()
    expect(page.get_by_test_id("sv-id")).to_have_text(session_id)
    expect(pair(page, "sv-record", "namespace")).to_have_text(namespace)
    page.locator("a.back").click()
    expect(page.get_by_test_id("session-view")).to_be_hidden()
    expect(row(page, session_id)).to_be_visible()
