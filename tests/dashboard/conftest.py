"""A real ``sessionhub serve`` process and Debian's Chromium driven by Playwright.

Chromium comes from ``scripts/install-chromium`` (Debian's package; Playwright's own browser
download is never used): when it cannot be installed or started, these tests fail, not skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from tests.client.serving import free_port
from tests.server.conftest import WAIT, wait_until

__all__ = ["CHROMIUM", "TOKEN", "Served", "ui_url"]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "dash-tok-Zq81mXb4"


class Served:
    """One ``python -m sessionhub serve`` on free ports, its output going to a file."""

    def __init__(self, log: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONHUB_")}
        env["PYTHONUNBUFFERED"] = "1"
        command = [sys.executable, "-m", "sessionhub", "serve", "--port", str(self.port)]
        command += ["--grpc-port", "0", "--log-level", "warning", *args]
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.token = TOKEN if "--token" in args else None
        self.http = httpx.Client(base_url=self.url, headers=self._auth(), timeout=WAIT)

    def wait_ready(self) -> Served:
        wait_until(self._up, f"sessionhub serve at {self.url}")
        assert self.process.poll() is None, self.log.read_text(errors="replace")
        return self

    def _auth(self) -> dict[str, str]:
        return {} if self.token is None else {"Authorization": f"Bearer {self.token}"}

    def _up(self) -> bool:
        if self.process.poll() is not None:
            return True
        try:
            return httpx.get(self.url + "/healthz", timeout=WAIT).status_code == 200
        except httpx.TransportError:
            return False

    def create(self, session_id: str, **fields: Any) -> dict[str, Any]:
        response = self.http.post("/v1/sessions", json={"id": session_id, **fields})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def get(self, session_id: str) -> dict[str, Any]:
        response = self.http.get(session_path(session_id))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(WAIT)


def session_path(session_id: str) -> str:
    return "/v1/sessions/" + quote(session_id, safe="").replace(".", "%2E")


def ui_url(served: Served, session_id: str | None = None) -> str:
    """The dashboard, or one session's view (``#/session/<id>``)."""
    url = served.url + "/ui/"
    return url if session_id is None else url + "#/session/" + quote(session_id, safe="")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium, installed by the same script CI runs (fails the run if it cannot)."""
    subprocess.run([str(ROOT / "scripts" / "install-chromium")], check=True, timeout=900)
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing after scripts/install-chromium"
    return CHROMIUM


# Playwright's sync API keeps its event loop running on this thread while it is open, and no
# asyncio test can run beside it: so it lives for one module at a time, and the modules of this
# folder run back to back on one xdist worker (group "browser", scripts/test's --dist loadgroup).
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright, chromium_path: str) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    """The servers these tests share (each test uses its own namespace or ids), started together:
    starting one takes seconds on a busy machine."""
    folder = tmp_path_factory.mktemp("serve")
    started = {
        "plain": Served(folder / "plain.log"),
        "token": Served(folder / "token.log", "--token", TOKEN),
        "no-ui": Served(folder / "no-ui.log", "--no-ui"),
    }
    try:
        yield {name: served.wait_ready() for name, served in started.items()}
    finally:
        for served in started.values():
            served.stop()


@pytest.fixture
def server(servers: dict[str, Served]) -> Served:
    """Without a token."""
    return servers["plain"]


@pytest.fixture
def token_server(servers: dict[str, Served]) -> Served:
    """With ``--token TOKEN``."""
    return servers["token"]


@pytest.fixture
def no_ui_server(servers: dict[str, Served]) -> Served:
    """With ``--no-ui``."""
    return servers["no-ui"]


class Watched:
    """A page and what it did that a test must see: dialogs, script errors, requests."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("request", lambda request: self.requests.append((request.url, request.headers)))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    """A fresh tab (its own sessionStorage); at the end, no dialog opened and no script failed."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(WAIT * 1000)
    watched = Watched(context.new_page())
    yield watched
    context.close()
    assert watched.dialogs == []
    assert watched.errors == []
