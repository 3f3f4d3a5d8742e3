"""How the page is served: one HTML with its styles and modules inlined under a hash-pinned CSP,
strong ETags (304 on a repeated visit), immutable hashed names for what it loads later, gzip for
whoever accepts it, and, from a server without a token, the answers of its first reads in a JSON
block; in the browser the page runs under that CSP, takes its first reads from the page or starts
them before its modules run, and draws its chart lazily."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import uuid

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.server.conftest import WAIT

from .conftest import TOKEN, Served, Watched, ui_url

pytestmark = pytest.mark.xdist_group("browser")  # see conftest: one worker, back to back

expect.set_options(timeout=20_000)

INLINE = re.compile(r"<(script|style)([^>]*)>(.*?)</\1>", re.S)
READS = re.compile(r'<script type="application/json" id="sessionhub-first-reads">(.*?)</script>')
FIRST_READS = ("/v1/stats", "/v1/sessions?limit=25", "/v1/count")


def plain(served: Served) -> httpx.Client:
    """A client that asks for identity bodies (httpx would accept gzip and decode it)."""
    return httpx.Client(base_url=served.url, timeout=WAIT, headers={"accept-encoding": "identity"})


def test_the_page_is_one_file_and_its_csp_allows_exactly_what_it_inlines(
    token_server: Served,
) -> None:
    with plain(token_server) as client:
        page = client.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    inlined = INLINE.findall(page.text)
    # early.js (a classic script starting the first reads), the styles, the modules in one
    # (a classic script too, at the end of the body: it runs as soon as it is parsed).
    assert [(kind, attributes) for kind, attributes, _ in inlined] == [
        ("script", ""),
        ("style", ""),
        ("script", ""),
    ]
    assert page.text.index("</main>") < page.text.rindex("<script>") < page.text.index("</body>")
    for kind in ("script", "style"):
        digests = [
            base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
            for found, _, text in inlined
            if found == kind
        ]
        directive = re.search(f"{kind}-src ([^;]*)", policy)
        assert directive is not None
        assert directive.group(1).split() == ["'self'", *(f"'sha256-{d}'" for d in digests)]
    # Nothing else is fetched to start: no script, module or stylesheet by URL.
    assert not re.search(r"<script[^>]* src=|rel=\"(stylesheet|modulepreload)\"", page.text)
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy


def test_etag_answers_a_repeated_visit_with_304_and_nothing_else(token_server: Served) -> None:
    with plain(token_server) as client:  # with a token, the page holds no data: always the same
        first = client.get("/ui/")
        etag = first.headers["etag"]
        assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
        assert first.headers["cache-control"] == "no-cache"  # revalidated on every visit

        again = client.get("/ui/", headers={"if-none-match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert "content-security-policy" in again.headers

        for tags in (f'"other", {etag}', f"W/{etag}", "*"):  # a list, a weak tag, any
            assert client.get("/ui/", headers={"if-none-match": tags}).status_code == 304, tags
        for other in ('"0123"', '"unterminated', ""):
            assert client.get("/ui/", headers={"if-none-match": other}).status_code == 200
        changed = client.get("/ui/", headers={"if-none-match": '"0123"'})
        assert changed.status_code == 200
        assert changed.content == first.content
        # Another file has another tag: a tag does not open every file.
        script = client.get("/ui/main.js", headers={"if-none-match": etag})
        assert script.status_code == 200
        assert script.headers["etag"] != etag


def test_without_a_token_the_page_carries_its_first_reads_as_data(server: Served) -> None:
    namespace = f"reads-{uuid.uuid4().hex[:8]}"
    # Sorted first (ids are listed in id order), so that it is in the first page the page carries.
    hostile = f"!</script><img/src=x/onerror=alert(5)>{namespace}"
    server.create(hostile, namespace=namespace, labels={"n": "</SCRIPT >"}, details={"<": "&"})
    with plain(server) as client:
        first = client.get("/ui/")
        blocks = READS.findall(first.text)
        assert len(blocks) == 1
        assert "<" not in blocks[0]  # nothing in it can end it: "<" is written \u003c
        reads = json.loads(blocks[0])
        assert list(reads) == list(FIRST_READS)
        listed = reads["/v1/sessions?limit=25"]
        assert listed == client.get("/v1/sessions?limit=25").json()
        assert listed["items"][0]["id"] == hostile
        assert listed["items"][0]["labels"] == {"n": "</SCRIPT >"}
        assert reads["/v1/count"] == client.get("/v1/count").json()
        assert reads["/v1/stats"].keys() == client.get("/v1/stats").json().keys()
        # It is read before the page's first script (early.js, which takes it).
        assert first.text.index("sessionhub-first-reads") < first.text.index("<script>")
        assert first.headers["cache-control"] == "no-cache"
        # Its tag is the page's with these reads: 304 while they stay, 200 once they change.
        etag = first.headers["etag"]
        assert client.get("/ui/", headers={"if-none-match": etag}).status_code == 304
        packed = client.get("/ui/", headers={"accept-encoding": "gzip"})
        assert packed.headers["content-encoding"] == "gzip"  # httpx decoded it
        assert packed.content == first.content
        server.create(f"{namespace}-2", namespace=namespace)
        changed = client.get("/ui/", headers={"if-none-match": etag})
        assert changed.status_code == 200
        assert changed.headers["etag"] != etag
        assert json.loads(READS.findall(changed.text)[0])["/v1/count"]["count"] == (
            reads["/v1/count"]["count"] + 1
        )


def test_with_a_token_the_page_carries_no_data(token_server: Served) -> None:
    token_server.create(f"nodata-{uuid.uuid4().hex[:8]}")
    with plain(token_server) as client:
        page = client.get("/ui/")
    assert page.status_code == 200
    assert READS.findall(page.text) == []
    assert 'type="application/json"' not in page.text
    assert "nodata-" not in page.text


def test_what_the_page_loads_later_has_a_hashed_name_cached_for_good(server: Served) -> None:
    with plain(server) as client:
        page = client.get("/ui/").text
        names = re.findall(
            r'"((?:vendor/uPlot[.]iife[.]min|favicon)[.][0-9a-f]{12}[.](?:js|svg))"', page
        )
        assert sorted(name.split(".")[0] for name in names) == ["favicon", "vendor/uPlot"]
        for name in names:
            versioned = client.get("/ui/" + name)
            assert versioned.status_code == 200
            assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"
            digest = name.split(".")[-2]
            assert hashlib.sha256(versioned.content).hexdigest().startswith(digest)
            original = client.get("/ui/" + re.sub(r"[.][0-9a-f]{12}[.]", ".", name))
            assert original.content == versioned.content
            assert original.headers["cache-control"] == "no-cache"
        assert client.get("/ui/vendor/uPlot.iife.min.000000000000.js").status_code == 404


def test_gzip_only_for_clients_that_accept_it(server: Served) -> None:
    with plain(server) as client:
        identity = client.get("/ui/")
        assert "content-encoding" not in identity.headers
        assert identity.headers["vary"] == "accept-encoding"
        for accepted in ("gzip", "br, gzip;q=0.5, deflate", "GZIP"):
            with client.stream("GET", "/ui/", headers={"accept-encoding": accepted}) as packed:
                assert packed.headers["content-encoding"] == "gzip", accepted
                assert gzip.decompress(b"".join(packed.iter_raw())) == identity.content
                assert packed.headers["etag"] == identity.headers["etag"]
        for refusing in ("gzip;q=0, br", "gzip;q=zero", "identity"):  # malformed: identity
            refused = client.get("/ui/", headers={"accept-encoding": refusing})
            assert "content-encoding" not in refused.headers, refusing
            assert refused.content == identity.content
        small = client.get("/ui/favicon.svg", headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in small.headers  # too small to be worth it


def ui_requests(served: Served) -> dict[int, int]:
    """How many requests for dashboard files the server answered, by status (its /metrics)."""
    found: dict[int, int] = {}
    for line in served.http.get("/metrics").text.splitlines():
        match = re.match(r'\w+_count\{method="GET",route="/ui",status="(\d+)"\} (\S+)', line)
        if match:
            found[int(match.group(1))] = int(float(match.group(2)))
    return found


def test_the_page_runs_under_its_csp_and_draws_the_chart_after_the_table(
    server: Served, watched: Watched
) -> None:
    page = watched.page
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text))
    server.create("serving-chart", namespace="serving", retention=60)
    page.goto(ui_url(server))
    expect(page.get_by_test_id("stream-state")).to_have_text("live")
    expect(page.locator("#ov-rate canvas").first).to_be_visible()
    marks = page.evaluate(
        """() => ["sessionhub:table", "sessionhub:overview", "sessionhub:chart"]
             .map((name) => performance.getEntriesByName(name)[0].startTime)"""
    )
    assert marks[2] >= max(marks[0], marks[1])  # uPlot is loaded once the first table is drawn
    # The first reads came in the page: no request for them before the first table was drawn.
    assert first_reads(page) == [[0, True]] * 3
    header = page.evaluate("getComputedStyle(document.querySelector('header')).display")
    assert header == "flex"  # the inlined stylesheet applies
    assert [text for text in refused if "Content Security Policy" in text] == []

    # The same tab opens the page again: the HTML is asked for again (with its reads), nothing
    # else is fetched.
    before = ui_requests(server)
    page.goto(ui_url(server))
    expect(page.get_by_test_id("stream-state")).to_have_text("live")
    expect(page.locator("#ov-rate canvas").first).to_be_visible()
    after = ui_requests(server)
    assert sum(after.values()) - sum(before.values()) == 1
    assert [text for text in refused if "Content Security Policy" in text] == []


def first_reads(page: Page) -> list[list[object]]:
    """For each first read: how many requests for it the page sent before its first table was
    drawn, and whether all of them started before its modules ran."""
    found: list[list[object]] = page.evaluate(
        """() => {
          const table = performance.getEntriesByName("sessionhub:table")[0].startTime;
          const started = performance.getEntriesByName("sessionhub:start")[0].startTime;
          return ["/v1/stats", "/v1/sessions", "/v1/count"].map((path) => {
            const reads = performance.getEntriesByType("resource")
              .filter((e) => new URL(e.name).pathname === path && e.startTime < table);
            return [reads.length, reads.every((e) => e.startTime < started)];
          });
        }"""
    )
    return found


def test_with_a_token_the_first_reads_start_before_the_modules_run(
    token_server: Served, watched: Watched
) -> None:
    page = watched.page
    page.context.add_init_script(f"sessionStorage.setItem('sessionhub.token', {TOKEN!r})")
    page.goto(ui_url(token_server))
    expect(page.get_by_test_id("stream-state")).to_have_text("live")
    expect(page.locator("#ss-rows tr").first).to_be_visible()
    # early.js asked for them with the token, once each, and main.js took those answers.
    assert first_reads(page) == [[1, True]] * 3
    for url, headers in watched.requests:
        if "/v1/" in url:
            assert headers.get("authorization") == f"Bearer {TOKEN}", url
