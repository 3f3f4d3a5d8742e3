"""The page follows the event stream with no reload: overview counts, table rows that appear,
change and leave, the idle countdown running out, and the event feed."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from playwright.sync_api import Locator, Page, expect

from .conftest import Served, Watched, session_path, ui_url

pytestmark = pytest.mark.xdist_group("browser")  # see conftest: one worker, back to back

expect.set_options(timeout=20_000)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def row(page: Page, session_id: str) -> Locator:
    return page.locator(f"#ss-rows tr[data-id={json.dumps(session_id)}]")


def pair(page: Page, table: str, key: str) -> Locator:
    """The value cell of ``key`` in one of the key/value tables."""
    exactly = re.compile(f"^{re.escape(key)}$")
    return (
        page.locator(f"#{table} tr").filter(has=page.locator("th", has_text=exactly)).locator("td")
    )


def open_dashboard(page: Page, served: Served) -> None:
    page.goto(ui_url(served))
    expect(page.get_by_test_id("stream-state")).to_have_text("live")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads


def still_same_document(page: Page) -> bool:
    return bool(page.evaluate("window.__sameDocument === true"))


def filter_namespace(page: Page, namespace: str) -> None:
    page.get_by_test_id("f-namespace").fill(namespace)
    page.get_by_test_id("f-apply").click()


def test_overview_counts_follow_creates_transitions_and_ends(
    server: Served, watched: Watched
) -> None:
    page = watched.page
    namespace = unique("ov")
    open_dashboard(page, server)
    before = server.http.get("/v1/stats").json()
    expect(page.get_by_test_id("ov-created")).to_have_text(str(before["created_total"]))

    ids = [f"{namespace}-{i}" for i in range(3)]
    for session_id in ids:
        server.create(session_id, namespace=namespace)
    expect(pair(page, "ov-namespaces", namespace)).to_have_text("3")
    expect(page.get_by_test_id("ov-created")).to_have_text(str(before["created_total"] + 3))

    server.http.post(session_path(ids[0]) + "/transitions", json={"event": "spawn"})
    stats = server.http.get("/v1/stats").json()
    spawning = sum(c["count"] for c in stats["sessions"] if c["state"] == "SPAWNING")
    expect(pair(page, "ov-states", "SPAWNING")).to_have_text(str(spawning))

    reason = unique("overview_test")
    server.http.delete(session_path(ids[1]), params={"reason": reason})
    expect(pair(page, "ov-reasons", reason)).to_have_text("1")
    expect(pair(page, "ov-namespaces", namespace)).to_have_text("2")
    live = server.http.get("/v1/stats").json()["live_sessions"]
    expect(page.get_by_test_id("ov-live")).to_have_text(str(live))
    assert still_same_document(page)


def test_overview_lists_namespaces_in_code_point_order(server: Served, watched: Watched) -> None:
    # Not the locale's order (which would put "alpha" before "Alpha"): see overview.js.
    suffix = uuid.uuid4().hex[:8]
    names = [f"beta-{suffix}", f"alpha-{suffix}", f"Alpha-{suffix}", f"_z-{suffix}"]
    for name in names:
        server.create(unique(name), namespace=name)
    page = watched.page
    open_dashboard(page, server)
    expect(pair(page, "ov-namespaces", names[0])).to_have_text("1")
    shown = [
        text
        for text in page.locator("#ov-namespaces th").all_text_contents()
        if text.endswith(suffix)
    ]
    assert shown == sorted(names) == [names[2], names[3], names[1], names[0]]


def test_a_new_session_appears_in_the_table_and_leaves_when_it_ends(
    server: Served, watched: Watched
) -> None:
    page = watched.page
    namespace = unique("tbl")
    open_dashboard(page, server)
    filter_namespace(page, namespace)
    expect(page.get_by_test_id("ss-count")).to_have_text("(0)")

    session_id = f"{namespace}-new"
    server.create(session_id, namespace=namespace, user_id="ann", labels={"tier": "gold"})
    expect(row(page, session_id)).to_be_visible()
    expect(row(page, session_id).locator("td").nth(2)).to_have_text("ann")
    expect(row(page, session_id).locator("td").nth(4)).to_have_text("tier=gold")

    server.http.post(session_path(session_id) + "/transitions", json={"event": "spawn"})
    expect(row(page, session_id).locator("td").nth(3)).to_have_text("SPAWNING")

    server.http.delete(session_path(session_id))
    expect(row(page, session_id)).to_have_count(0)
    expect(page.get_by_test_id("ss-count")).to_have_text("(0)")
    assert still_same_document(page)


def test_the_idle_countdown_reaches_expiry_and_the_row_leaves(
    server: Served, watched: Watched
) -> None:
    page = watched.page
    namespace = unique("exp")
    open_dashboard(page, server)
    filter_namespace(page, namespace)
    session_id = f"{namespace}-idle"
    server.create(session_id, namespace=namespace, idle_timeout=3, retention=60)
    idle = row(page, session_id).locator("td").nth(6)
    expect(idle).to_contain_text("s")
    first = float(idle.inner_text().removesuffix("s"))
    assert 0 < first <= 3
    expect(idle).not_to_have_text(idle.inner_text())  # it counts down
    expect(row(page, session_id)).to_have_count(0)  # expired: the `ended` event removed it
    reason = server.get(session_id)["end_reason"]
    feed = page.get_by_test_id("fd-list").locator("li.ended", has_text=session_id)
    expect(feed).to_contain_text(f"({reason})")
    assert still_same_document(page)


def test_the_feed_is_live_filterable_and_pausable(server: Served, watched: Watched) -> None:
    page = watched.page
    namespace = unique("feed")
    open_dashboard(page, server)
    feed = page.get_by_test_id("fd-list")

    server.create(f"{namespace}-a", namespace=namespace)
    expect(feed.locator("li.created", has_text=f"{namespace}-a")).to_have_count(1)

    page.get_by_test_id("fd-kind").select_option("ended")
    expect(feed.locator("li.created")).to_have_count(0)
    server.http.delete(session_path(f"{namespace}-a"))
    expect(feed.locator("li.ended", has_text=f"{namespace}-a")).to_have_count(1)
    page.get_by_test_id("fd-kind").select_option("")

    page.get_by_test_id("fd-text").fill(namespace)
    page.get_by_test_id("fd-pause").click()
    server.create(f"{namespace}-b", namespace=namespace)
    # While paused the stream still arrives (the table shows it) but the feed stands still.
    filter_namespace(page, namespace)
    expect(row(page, f"{namespace}-b")).to_be_visible()
    expect(feed.locator("li", has_text=f"{namespace}-b")).to_have_count(0)
    page.get_by_test_id("fd-pause").click()
    server.create(f"{namespace}-c", namespace=namespace)
    expect(feed.locator("li.created", has_text=f"{namespace}-c")).to_have_count(1)
    expect(feed.locator("li")).not_to_have_count(0)
    for text in feed.locator("li").all_inner_texts():
        assert namespace in text
