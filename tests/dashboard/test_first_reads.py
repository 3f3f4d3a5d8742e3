"""The page's first reads, as the dashboard puts them in the page (no browser: the assembled HTML).

Those the server could not read are left out (the page asks for them itself); no value can end the
data block; the reads are made only for the page itself, and only on GET and HEAD."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from sessionhub.http._ui import FIRST_READS, Dashboard

pytestmark = pytest.mark.xdist_group("browser")  # see conftest: one worker, back to back

BLOCK = re.compile(r'<script type="application/json" id="sessionhub-first-reads">(.*?)</script>')


class Reads:
    """Answers the given bodies and counts the calls."""

    def __init__(self, answers: dict[str, bytes]) -> None:
        self.answers = answers
        self.calls = 0

    async def __call__(self) -> dict[str, bytes]:
        self.calls += 1
        return self.answers


def page(dashboard: Dashboard, path: str = "/ui/", method: str = "GET") -> tuple[int, str]:
    reply = asyncio.run(dashboard.answer(path, method))
    return reply.status, reply.body.decode()


def test_a_read_left_out_is_not_in_the_page_and_hostile_text_cannot_end_the_block() -> None:
    hostile = b'{"count":1,"note":"</script><script>alert(1)</script><!--"}'
    reads = Reads({"/v1/count": hostile})
    status, html = page(Dashboard(reads))
    assert status == 200
    blocks = BLOCK.findall(html)
    assert len(blocks) == 1
    assert "<" not in blocks[0]
    assert json.loads(blocks[0]) == {"/v1/count": json.loads(hostile)}  # the same value
    assert html.count("<script>alert(1)") == 0


def test_no_read_succeeded_gives_an_empty_block() -> None:
    status, html = page(Dashboard(Reads({})))
    assert status == 200
    assert BLOCK.findall(html) == ["{}"]


def test_reads_only_for_the_page_and_only_on_get_or_head() -> None:
    reads = Reads(dict.fromkeys(FIRST_READS, b"{}"))
    dashboard = Dashboard(reads)
    assert page(dashboard, "/ui/index.html")[0] == 200
    assert page(dashboard, "/ui/", "HEAD")[0] == 200
    assert reads.calls == 2
    for path in ("/ui/main.js", "/ui/app.css", "/ui/favicon.svg", "/ui"):
        status, html = page(dashboard, path)
        assert status in (200, 308), path
        assert 'sessionhub-first-reads">' not in html
    assert page(dashboard, "/ui/", "POST")[0] == 405
    assert reads.calls == 2


def test_without_reads_the_page_holds_no_data() -> None:
    status, html = page(Dashboard())
    assert status == 200
    assert BLOCK.findall(html) == []
