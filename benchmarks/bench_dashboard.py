"""The dashboard with 10,000 live sessions and a burst of events, in Debian's headless Chromium.

    uv run python benchmarks/bench_dashboard.py            # 10,000 sessions, 500 events/s for 10 s
    uv run python benchmarks/bench_dashboard.py --quick    # 2,000 sessions, 500 events/s for 3 s
    uv run python benchmarks/bench_dashboard.py --startup-only   # only the time until usable

A real ``sessionhub serve`` subprocess; sessions are created over HTTP.
First, how soon the page is usable, counted from navigation start: "usable" is when the frame
showing both the sessions table (``sessionhub:table``: its rows written from the API's first page)
and the overview (``sessionhub:overview``: its numbers written from ``/v1/stats``) was presented,
as the browser reports it: the benchmark's init script sees the page set the later of those two
marks and, in the same task, adds a dot with ``elementtiming`` to the page, whose Element Timing
``renderTime`` is when the frame that first shows it (and so the table and overview) was put on
screen (the same rule for any version of the page, so that ``--against`` compares like with like).
Beside it: ``drawn`` (a task queued by the next animation frame's callback, which runs once the
main thread has drawn that frame, before raster and presentation), ``table paint`` (Element Timing
of the first row, when the page sets it) and ``fcp`` (first contentful paint).
The page runs under its own CSP (no ``bypass_csp``), and the benchmark reads the page only with
plain evaluations once it is usable (no ``wait_for_function``, whose injected script would compile
on the page's main thread while it starts).
Measured on a cold navigation (a fresh browser context: empty cache) and on repeated navigations
(the same tab opening the page again), with no session and then with all of them; the HTML's own
arrival (``responseEnd``) is printed beside it as the floor that no page work can beat, and a
baseline measured in the same run: ``/healthz`` opened as a page (no script, no style) just before
each sample, until its load event, with ``usable/baseline`` (this machine's load makes the absolute
figures noise; the ratio less so). ``--against /work/main/src`` serves that checkout's package
beside this one and measures both, round by round, for a before/after under the same load.
Beside it: when the page's script began (``script``: after parsing it) and when the first answer of
each API call arrived (none when the server put them in the page), to tell the server's time from
the page's.
Then the page is watched twice for the same time: quiet (the baseline), then while a client ends
every session of one user after another (a mass sign-out), about ``--rate`` events per second on
the page's stream.
Printed, not asserted: long tasks (PerformanceObserver ``longtask``: main-thread work over 50 ms), frame intervals
(requestAnimationFrame), how long a click on Pause takes to show, and how many table rows and
feed items the page holds (it must never render all sessions or every event).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
USERS = 500  # sessions are spread over this many users
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Installed in the page before its scripts run: what the main thread does, frame by frame.
WATCH = """
window.__bench = { longTasks: [], frames: [], watching: false };
new PerformanceObserver((list) => {
  if (!window.__bench.watching) return;
  for (const entry of list.getEntries()) window.__bench.longTasks.push(entry.duration);
}).observe({ type: "longtask", buffered: false });
let last = performance.now();
const frame = (now) => {
  if (window.__bench.watching) window.__bench.frames.push(now - last);
  last = now;
  requestAnimationFrame(frame);
};
requestAnimationFrame(frame);
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int, log: Path, source: str | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONHUB_")}
    if source is not None:  # another checkout's package, e.g. the main branch to compare with
        env["PYTHONPATH"] = source
    command = [sys.executable, "-m", "sessionhub", "serve", "--port", str(port)]
    command += ["--grpc-port", "0", "--idle-timeout", "3600", "--log-level", "warning"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


def create_sessions(url: str, count: int) -> None:
    def create(first: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for i in range(first, count, 4):
                body = {
                    "id": f"bench-{i:05}",
                    "namespace": ("chat", "jobs", "web", "batch")[i % 4],
                    "user_id": f"user{i % USERS}",
                    "labels": {"tier": "gold" if i % 7 == 0 else "free"},
                }
                client.post("/v1/sessions", json=body).raise_for_status()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(create, range(4)))


async def burst(url: str, users: int, rate: int, seconds: float) -> int:
    """Events at about ``rate`` per second for ``seconds``: each user's sessions end at once
    (``DELETE /v1/users/{user_id}/sessions``, a mass sign-out: two events per session, the
    ``transitioned`` to TERMINATING and the ``ended``), user after user; how many were sent."""
    sent = 0
    user = 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        started = time.monotonic()
        while time.monotonic() - started < seconds and user < users:
            if sent < (time.monotonic() - started) * rate:
                response = await client.delete(f"/v1/users/user{user}/sessions")
                sent += 2 * response.json()["count"]
                user += 1
            else:
                await asyncio.sleep(0.005)
    return sent


def idle(seconds: float) -> int:
    time.sleep(seconds)
    return 0  # events sent


def watch(page: Page, action: Any) -> dict[str, Any]:
    """Run ``action()`` while the page records long tasks and frames; a Pause click is timed."""
    page.evaluate("window.__bench.longTasks = []; window.__bench.frames = []")
    page.evaluate("window.__bench.watching = true")
    started = time.monotonic()
    sent = action()
    elapsed = time.monotonic() - started
    page.evaluate("window.__bench.watching = false")
    click = page.evaluate(
        """async () => {
          const button = document.getElementById("fd-pause");
          const before = button.textContent;
          const t0 = performance.now();
          button.click();
          await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
          const ms = performance.now() - t0;
          if (button.textContent !== before) button.click();
          return ms;
        }"""
    )
    bench = page.evaluate("window.__bench")
    frames = sorted(bench["frames"]) or [0.0]
    return {
        "sent": sent,
        "events_per_s": sent / elapsed,  # what a busy machine let the client send
        "seconds": elapsed,
        "long_tasks": len(bench["longTasks"]),
        "long_task_ms": sum(bench["longTasks"]),
        "frame_p50": statistics.median(frames),
        "frame_p95": frames[int(0.95 * (len(frames) - 1))],
        "frame_max": frames[-1],
        "click_ms": click,
        "rows": page.locator("#ss-rows tr").count(),
        "feed": page.locator("#fd-list li").count(),
    }


MARKS = """() => {
  const at = (name) => {
    const found = performance.getEntriesByName(name);
    return found.length ? found[0].startTime : null;
  };
  const table = at("sessionhub:table");
  const overview = at("sessionhub:overview");
  const api = (path) => {  // a first read's answer: asked for before the table was drawn
    const found = performance.getEntriesByType("resource")
      .filter((e) => new URL(e.name).pathname === path && e.startTime < table);
    return found.length ? found[0].responseEnd : null;
  };
  const element = (name) => {
    const found = (window.__startupElements || []).find(([identifier]) => identifier === name);
    return found ? found[1] : null;
  };
  const fcp = performance.getEntriesByName("first-contentful-paint");
  return {
    usable: element("bench:frame") ?? at("bench:painted"),  // presented, else drawn
    drawn: at("bench:painted"),
    table,
    overview,
    "table paint": element("sessionhub:table"),
    fcp: fcp.length ? fcp[0].startTime : null,
    html: performance.getEntriesByType("navigation")[0].responseEnd,
    document: window.__startupDocument,
    script: at("sessionhub:start"),
    "/v1/stats": api("/v1/stats"),
    "/v1/sessions": api("/v1/sessions"),
    "/v1/count": api("/v1/count"),
    chart: at("sessionhub:chart"),
    "long tasks before": (window.__startupTasks || [])
      .filter(([start]) => start < Math.max(table, overview))
      .reduce((sum, [, duration]) => sum + duration, 0),
  };
}"""

# Installed in every page before its scripts run (CDP, not under the page's CSP): once the page
# has marked both its table and its overview drawn, a task queued by the next animation frame's
# callback marks "bench:painted": it runs once that frame (style, layout, paint) is done. Also
# kept: main-thread tasks over 50 ms (start, duration) and Element Timing entries (name, when the
# frame with them was presented).
STARTUP = """
window.__startupDocument = performance.now();
window.__startupTasks = [];
window.__startupElements = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__startupTasks.push([entry.startTime, entry.duration]);
}).observe({ type: "longtask", buffered: true });
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    window.__startupElements.push([entry.identifier, entry.renderTime || entry.loadTime]);
  }
}).observe({ type: "element", buffered: true });
(() => {
  const mark = performance.mark.bind(performance);
  let queued = false;
  performance.mark = (...args) => {
    const made = mark(...args);
    const has = (name) => performance.getEntriesByName(name).length > 0;
    if (!queued && has("sessionhub:table") && has("sessionhub:overview")) {
      queued = true;
      requestAnimationFrame(() => setTimeout(() => mark("bench:painted"), 0));
      // A dot drawn in the same frame: its Element Timing is when that frame was presented.
      const probe = document.createElement("span");
      probe.textContent = "·";
      probe.setAttribute("elementtiming", "bench:frame");
      Object.assign(probe.style, { position: "fixed", right: "0", bottom: "0", fontSize: "8px" });
      document.body.append(probe);
    }
    return made;
  };
})();
"""

# Resolves once the page is usable (see STARTUP), watching marks rather than polling the page;
# then waits a little for the presentation time of the first rows (Element Timing), reported
# once the frame is on screen, when the page asks for it.
USABLE = """() => new Promise((resolve) => {
  const done = () => performance.getEntriesByName("bench:painted").length > 0;
  if (done()) return resolve();
  const observer = new PerformanceObserver(() => {
    if (done()) {
      observer.disconnect();
      resolve();
    }
  });
  observer.observe({ type: "mark" });
}).then(() => new Promise((resolve) => {
  const started = performance.now();
  const seen = (name) => window.__startupElements.some(([found]) => found === name);
  const asked = document.querySelector("[elementtiming='sessionhub:table']");
  const check = () => (seen("bench:frame") && (!asked || seen("sessionhub:table")))
    || performance.now() - started > 1000 ? resolve() : setTimeout(check, 10);
  check();
}))"""

LIVE = """() => new Promise((resolve) => {
  const check = () => document.getElementById("stream-state").textContent === "live"
    ? resolve() : setTimeout(check, 20);
  check();
})"""


def open_page(page: Page, url: str) -> dict[str, float]:
    page.goto(url + "/ui/")
    page.evaluate(USABLE)
    marks: dict[str, float] = page.evaluate(MARKS)
    page.evaluate(LIVE)
    return marks


def baseline(page: Page, url: str) -> tuple[float, float, float | None]:
    """The same server's plainest page (``/healthz``: no script, no style), fully loaded: what this
    machine's load makes of one navigation right now; when its document was created, and its
    first contentful paint (the floor of a first frame in this context)."""
    page.goto(url + "/healthz")
    loaded: tuple[float, float, float | None] = page.evaluate(
        """new Promise((done) => {
          const answer = () => {
            const fcp = performance.getEntriesByName("first-contentful-paint");
            done([performance.getEntriesByType("navigation")[0].loadEventEnd,
                  window.__startupDocument, fcp.length ? fcp[0].startTime : null]);
          };
          const started = performance.now();
          const wait = () => performance.getEntriesByName("first-contentful-paint").length
            || performance.now() - started > 1000 ? answer() : setTimeout(wait, 10);
          wait();
        })"""
    )
    return loaded


def startup(browser: Browser, url: str, cold: int, repeated: int) -> dict[str, list[float]]:
    """Milliseconds from navigation start, per sample: ``cold`` fresh contexts (each opening the
    page once), then ``repeated`` navigations of one tab that opened the page already; each
    sample beside a baseline navigation measured just before it (a fresh context for a cold one)."""
    found: dict[str, list[float]] = {}

    def record(
        prefix: str, marks: dict[str, float], base: tuple[float, float, float | None]
    ) -> None:
        for key, value in marks.items():
            found.setdefault(prefix + key, []).append(value)
        found.setdefault(prefix + "baseline", []).append(base[0])
        found.setdefault(prefix + "baseline document", []).append(base[1])
        if base[2] is not None:
            found.setdefault(prefix + "baseline fcp", []).append(base[2])
        found.setdefault(prefix + "usable/baseline", []).append(marks["usable"] / base[0])

    def fresh() -> BrowserContext:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.add_init_script(STARTUP)
        return context

    for _ in range(cold):
        with fresh() as first:
            base = baseline(first.new_page(), url)
        with fresh() as context:
            record("cold ", open_page(context.new_page(), url), base)
    with fresh() as context:
        page = context.new_page()
        open_page(page, url)
        page.wait_for_timeout(500)  # the first visit's lazy loads are in the cache too
        other = context.new_page()
        for _ in range(repeated):
            base = baseline(other, url)
            record("again ", open_page(page, url), base)
    return found


def interleaved(
    browser: Browser, urls: dict[str, str], cold: int, repeated: int
) -> dict[str, dict[str, list[float]]]:
    """``startup`` for each server, round by round (one cold navigation and a share of the
    repeated ones each), so that every server sees the same moments of this machine's load."""
    found: dict[str, dict[str, list[float]]] = {name: {} for name in urls}
    for round_ in range(cold):
        share = repeated // cold + (round_ < repeated % cold)
        for name, url in urls.items():
            for key, values in startup(browser, url, 1, share).items():
                found[name].setdefault(key, []).extend(values)
    return found


def show_cases(title: str, found: dict[str, dict[str, list[float]]]) -> None:
    for name, figures in found.items():
        show_startup(f"{title} ({name}):", figures)
    if len(found) == 2:
        (this, ours), (that, theirs) = found.items()
        for key in ("cold usable", "again usable"):
            ratio = statistics.median(ours[key]) / statistics.median(theirs[key])
            print(f"{key:>24}: {this} / {that} = {ratio:.2f} (medians)")


def show_startup(title: str, found: dict[str, list[float]]) -> None:
    print(title)
    for key, values in found.items():
        present = sorted(v for v in values if v is not None)
        if not present:
            continue
        median = statistics.median(present)
        unit = "" if "/" in key and key.endswith("baseline") else " ms"
        digits = 2 if not unit else 0
        print(
            f"{key:>24}: median {median:7.{digits}f}{unit}, "
            f"range {present[0]:.{digits}f}-{present[-1]:.{digits}f}{unit}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=int, default=500, help="events per second in the burst")
    parser.add_argument("--sessions", type=int, help="live sessions (default 10,000; quick 2,000)")
    parser.add_argument("--seconds", type=float, help="each phase (default 10; quick 3)")
    parser.add_argument("--cold", type=int, default=5, help="cold navigations per case")
    parser.add_argument("--repeated", type=int, default=8, help="repeated navigations per case")
    parser.add_argument("--startup-only", action="store_true", help="no quiet/burst phases")
    parser.add_argument(
        "--against",
        metavar="SRC",
        help="also serve the package in SRC (e.g. /work/main/src) and compare startups, interleaved",
    )
    args = parser.parse_args()
    sessions = args.sessions or (2_000 if args.quick else 10_000)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(port, Path(tmp) / "serve.log")
        urls = {"this": url}
        other = None
        if args.against:
            other_port = free_port()
            other = start_server(other_port, Path(tmp) / "against.log", args.against)
            urls[args.against] = f"http://127.0.0.1:{other_port}"
        try:
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                found = interleaved(browser, urls, args.cold, args.repeated)
                show_cases("usable after navigation start, no session", found)
                started = time.monotonic()
                for each in urls.values():
                    create_sessions(each, sessions)
                print(
                    f"created {sessions:,} sessions on each server in {time.monotonic() - started:.1f} s"
                )
                found = interleaved(browser, urls, args.cold, args.repeated)
                show_cases(f"usable after navigation start, {sessions:,} sessions", found)
                if args.startup_only:
                    browser.close()
                    return
                page = browser.new_page(
                    viewport={"width": 1400, "height": 1000},
                    bypass_csp=True,  # wait_for_function evaluates strings; the page itself is untouched
                )
                page.add_init_script(STARTUP)
                page.add_init_script(WATCH)
                open_page(page, url)
                print("watching the page, quiet", flush=True)
                quiet = watch(page, lambda: idle(seconds))
                print("watching the page, during the burst", flush=True)
                with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's loop
                    loud = watch(
                        page,
                        lambda: pool.submit(
                            asyncio.run, burst(url, USERS, args.rate, seconds)
                        ).result(),
                    )
                browser.close()
        finally:
            for process in (server, other):
                if process is not None:
                    process.terminate()
                    process.wait(30)
    print(f"{seconds:.0f} s quiet, then {seconds:.0f} s sending {args.rate} events/s")
    print(f"{'':>22} {'quiet':>10} {'burst':>10}")
    for key, unit in [
        ("sent", "events"),
        ("events_per_s", "achieved"),
        ("seconds", "s"),
        ("long_tasks", ""),
        ("long_task_ms", "ms"),
        ("frame_p50", "ms"),
        ("frame_p95", "ms"),
        ("frame_max", "ms"),
        ("click_ms", "ms"),
        ("rows", ""),
        ("feed", ""),
    ]:
        label = f"{key} ({unit})" if unit else key
        print(f"{label:>22} {quiet[key]:>10.1f} {loud[key]:>10.1f}")


if __name__ == "__main__":
    main()
