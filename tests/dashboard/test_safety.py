"""Values render as text, never as HTML; with a token, nothing is shown or done before the user
enters it, and the token goes only in the Authorization header of same-origin requests."""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from .conftest import TOKEN, Served, Watched, session_path, ui_url
from .test_live import filter_namespace, open_dashboard, pair, row

pytestmark = pytest.mark.xdist_group("browser")  # see conftest: one worker, back to back

expect.set_options(timeout=20_000)

IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "</script><script>alert(2)</script>"


def test_labels_details_ids_and_payloads_render_as_text(server: Served, watched: Watched) -> None:
    page = watched.page
    namespace = f"xss-{uuid.uuid4().hex[:8]}"
    hostile_id = f"<img/src=x/onerror=alert(3)>{namespace}"
    open_dashboard(page, server)
    filter_namespace(page, namespace)
    server.create(
        hostile_id,
        namespace=namespace,
        user_id="<b>bold</b>",
        labels={"note": IMG, "<i>k</i>": "v"},
        details={"html": SCRIPT},
    )
    server.http.put(session_path(hostile_id) + "/data/" + "k", json={"value": IMG})
    server.http.post(session_path(hostile_id) + "/history", json={"kind": "x", "payload": SCRIPT})
    cells = row(page, hostile_id).locator("td")
    expect(cells.nth(0)).to_have_text(hostile_id)
    expect(cells.nth(2)).to_have_text("<b>bold</b>")
    expect(cells.nth(4)).to_contain_text(f"note={IMG}")
    expect(page.get_by_test_id("fd-list").locator("li", has_text=hostile_id)).to_have_count(1)

    cells.nth(0).locator("a").click()
    expect(page.get_by_test_id("sv-id")).to_have_text(hostile_id)
    expect(pair(page, "sv-labels", "note")).to_have_text(IMG)
    expect(pair(page, "sv-labels", "<i>k</i>")).to_have_text("v")
    expect(page.get_by_test_id("sv-details")).to_contain_text(SCRIPT)
    expect(pair(page, "sv-data", "k")).to_contain_text(IMG)
    expect(page.get_by_test_id("sv-history").locator("td.payload")).to_have_text(SCRIPT)

    # Nothing became markup: no image, bold, italic or extra script element anywhere.
    assert page.locator("img, b:text('bold'), i").count() == 0
    # The page's own scripts only: its two inlined ones (beside the JSON block of its first reads,
    # data, never run), and uPlot once the chart has loaded.
    assert page.locator("script:not([src]):not([type='application/json'])").count() == 2
    assert page.locator("script[type='application/json']").count() == 1
    loaded = page.locator("script[src]").evaluate_all("scripts => scripts.map(s => s.src)")
    assert len(loaded) <= 1
    assert all(re.search(r"/ui/vendor/uPlot[.]iife[.]min[.]\w+[.]js$", src) for src in loaded)
    page.wait_for_timeout(300)  # an onerror would fire by now; the fixture asserts no dialog


def test_values_in_the_page_itself_render_as_text(server: Served, watched: Watched) -> None:
    """The first reads the server puts in the page (no token) hold the same hostile values."""
    page = watched.page
    namespace = f"xss-{uuid.uuid4().hex[:8]}"
    hostile_id = f"!{SCRIPT}{namespace}"  # "!": listed first, so in the page's first reads
    server.create(hostile_id, namespace=namespace, user_id="<b>bold</b>", labels={"note": IMG})
    page.goto(ui_url(server))
    cells = row(page, hostile_id).locator("td")
    expect(cells.nth(0)).to_have_text(hostile_id)
    expect(cells.nth(2)).to_have_text("<b>bold</b>")
    expect(cells.nth(4)).to_have_text(f"note={IMG}")
    # Drawn from the page's own data: no request for the sessions before the table was drawn.
    asked = page.evaluate(
        """() => performance.getEntriesByType("resource").filter((e) =>
             new URL(e.name).pathname === "/v1/sessions"
             && e.startTime < performance.getEntriesByName("sessionhub:table")[0].startTime).length"""
    )
    assert asked == 0
    assert page.locator("img, b:text('bold')").count() == 0
    assert page.locator("script:not([src]):not([type='application/json'])").count() == 2
    page.wait_for_timeout(300)  # an onerror would fire by now; the fixture asserts no dialog


def test_with_a_token_nothing_happens_until_it_is_entered(
    token_server: Served, watched: Watched
) -> None:
    page = watched.page
    target = f"tok-{uuid.uuid4().hex[:8]}"
    token_server.create(target, retention=60)

    page.goto(ui_url(token_server, target))
    expect(page.get_by_test_id("stream-state")).to_have_text("unauthorized")
    expect(page.get_by_test_id("message")).to_contain_text("needs a token")
    expect(page.get_by_test_id("sv-record")).not_to_contain_text(target)
    page.get_by_test_id("sv-end").click()
    expect(page.get_by_test_id("message")).to_have_text("enter the token before acting on sessions")
    assert token_server.get(target)["ended_at"] is None

    page.get_by_test_id("token-input").fill("not-the-token")
    page.get_by_test_id("token-use").click()
    expect(page.get_by_test_id("message")).to_contain_text("refused")
    with page.expect_response(lambda r: r.request.method == "DELETE") as refused:
        page.get_by_test_id("sv-end").click()
    assert refused.value.status == 401
    expect(page.get_by_test_id("message")).to_contain_text("refused")
    assert token_server.get(target)["ended_at"] is None

    page.get_by_test_id("token-input").fill(TOKEN)
    page.get_by_test_id("token-use").click()
    expect(page.get_by_test_id("stream-state")).to_have_text("live")
    expect(pair(page, "sv-record", "id")).to_have_text(target)
    page.get_by_test_id("sv-reason").fill("admin")
    page.get_by_test_id("sv-end").click()
    expect(page.get_by_test_id("message")).to_have_text(f"ended {target}")
    assert token_server.get(target)["end_reason"] == "admin"

    # The token stays in this tab: a new tab (a new browsing context) starts without it.
    assert page.evaluate("sessionStorage.getItem('sessionhub.token')") == TOKEN
    origin = urlsplit(token_server.url)
    for url, headers in watched.requests:
        assert TOKEN not in url
        assert urlsplit(url).netloc == origin.netloc, url
        if TOKEN in headers.get("authorization", ""):
            assert urlsplit(url).path.startswith("/v1/"), url
    assert TOKEN not in page.url


def test_the_token_state_is_shown_once_the_page_is_up(server: Served, watched: Watched) -> None:
    # The page reads the tab's token after its first table is on screen (main.js): no token...
    page = watched.page
    page.goto(ui_url(server))
    expect(page.get_by_test_id("token-state")).to_have_text("no token needed")
    expect(page.get_by_test_id("token-forget")).to_be_hidden()
    expect(page.get_by_test_id("stream-state")).to_have_text("live")
    # ... and one this tab holds, though this server needs none.
    page.evaluate(f"sessionStorage.setItem('sessionhub.token', {TOKEN!r})")
    page.reload()
    expect(page.get_by_test_id("token-state")).to_have_text("token set (this tab only)")
    expect(page.get_by_test_id("token-forget")).to_be_visible()
    page.get_by_test_id("token-forget").click()
    expect(page.get_by_test_id("token-state")).to_have_text("token forgotten")
    assert page.evaluate("sessionStorage.getItem('sessionhub.token')") is None


def test_a_new_tab_does_not_have_the_token(token_server: Served, watched: Watched) -> None:
    page = watched.page
    page.goto(ui_url(token_server))
    page.get_by_test_id("token-input").fill(TOKEN)
    page.get_by_test_id("token-use").click()
    expect(page.get_by_test_id("stream-state")).to_have_text("live")
    other = page.context.new_page()
    other.goto(ui_url(token_server))
    expect(other.get_by_test_id("stream-state")).to_have_text("unauthorized")
    assert other.evaluate("sessionStorage.getItem('sessionhub.token')") is None
    page.get_by_test_id("token-forget").click()
    assert page.evaluate("sessionStorage.getItem('sessionhub.token')") is None


def test_without_a_token_server_the_page_reads_and_acts(server: Served, watched: Watched) -> None:
    page = watched.page
    open_dashboard(page, server)
    expect(page.get_by_test_id("token-state")).to_have_text("no token needed")
    expect(page.get_by_test_id("message")).to_be_hidden()
