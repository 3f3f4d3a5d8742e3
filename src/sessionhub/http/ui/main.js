// Wires the dashboard together: the token, the hash route (#/session/<id>), the event stream
// (events are queued and applied once per animation frame) and the stats polling.

import { ApiError, call, streamEvents, token } from "./api.js";
import { $, serverClock, throttle } from "./dom.js";
import { addToFeed, initFeed } from "./feed.js";
import { loadChart, renderOverview } from "./overview.js";
import {
  closeSession, initSessionView, openSession, refreshSoon, reloadHistorySoon, viewedSession,
} from "./session.js";
import { applyToTable, initSessions, reload as reloadTable } from "./sessions.js";

// How long the page waits for the first table to be on screen before it goes on anyway.
const SHOWN_WAIT_MS = 300;

const app = { needsToken: false, stopStream: null, queue: [], frame: 0, firstReads: null };

function say(text, kind = "info") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
}

function onError(error) {
  if (error instanceof ApiError && error.status === 401) {
    app.needsToken = true;
    showTokenState(token.get() ? "the token was refused: enter the right one" : "this server needs a token: enter it to see and act");
    return;
  }
  say(error instanceof ApiError ? `${error.code}: ${error.message}` : String(error), "error");
}

function showTokenState(problem) {
  const has = Boolean(token.get());
  $("token-state").textContent = problem || (has ? "token set (this tab only)" : app.needsToken ? "" : "no token needed");
  $("token-forget").hidden = !has;
  if (problem) say(problem, "warn");
}

/** Actions need the token first when the server has one. */
function canAct() {
  if (app.needsToken && !token.get()) {
    say("enter the token before acting on sessions", "warn");
    return false;
  }
  return true;
}

const refreshStats = throttle(async () => {
  try {
    renderOverview(await call("GET", "/v1/stats"));
  } catch (error) {
    onError(error);
  }
}, 500);

function enqueue(event) {
  serverClock.observe(event.at);
  app.queue.push(event);
  if (!app.frame) app.frame = requestAnimationFrame(flush);
}

function flush() {
  app.frame = 0;
  const events = app.queue;
  app.queue = [];
  addToFeed(events);
  applyToTable(events);
  const viewed = viewedSession();
  if (viewed !== null && events.some((e) => e.kind === "missed" || (e.session && e.session.id === viewed))) {
    refreshSoon();
    reloadHistorySoon();
  }
  refreshStats();
}

function connect() {
  if (app.stopStream) app.stopStream();
  app.stopStream = streamEvents(enqueue, (state) => {
    $("stream-state").textContent = state;
    $("stream-state").className = `badge ${state}`;
    if (state === "unauthorized") onError(new ApiError(401, "unauthorized", "token needed"));
    if (state === "live") {
      // Whatever happened while not connected: read it all again. At start, after the first
      // reads (sent before the stream was live, they may have missed an event): the page is drawn
      // once before it is read again, rather than reading everything twice at the same time.
      app.firstReads.then(() => {
        refreshStats();
        reloadTable();
        if (viewedSession() !== null) refreshSoon();
      });
    }
  });
}

function route() {
  const match = location.hash.match(/^#\/session\/(.+)$/);
  const id = match ? decodeURIComponent(match[1]) : null;
  $("session-view").hidden = id === null;
  $("overview").hidden = id !== null;
  if (id === null) closeSession();
  else openSession(id);
}

function start() {
  performance.mark("sessionhub:start"); // the scripts are parsed: what is left is the API's
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    $("token-input").value = "";
    if (!value) return;
    token.set(value);
    app.needsToken = true;
    say("");
    showTokenState();
    connect();
    route();
  });
  $("token-forget").addEventListener("click", () => {
    token.clear();
    showTokenState("token forgotten");
    connect();
  });
  initFeed();
  initSessions(onError);
  initSessionView({ onError, canAct, onDone: (text) => say(text, "ok") });
  window.addEventListener("hashchange", route);
  route();
  // At once, not after the stream is up: the page is usable from the first answers (in the page
  // itself when the server has no token: drawn before the first paint).
  const stats = call("GET", "/v1/stats").then(renderOverview).catch(onError);
  app.firstReads = Promise.all([stats, reloadTable()]);
  // Once the frame that shows them is on screen, what it does not need (measured on cold visits):
  // the token's state (the visit's first sessionStorage read: synchronous calls to the browser,
  // 15-20 ms; a refused token has shown its state already), the event stream (its request: 5-10
  // ms) and the chart's library. Before that, on a busy machine, they competed with the raster of
  // that frame.
  app.firstReads.then(() => whenShown(() => {
    if (!app.needsToken) showTokenState();
    connect();
    loadChart();
  }));
  setInterval(refreshStats, 5000); // the per-minute chart moves on even when nothing happens
}

/** Calls `then` once the first table is on screen: when the browser reports the presentation of
 * its first cell (Element Timing, "sessionhub:table"), or after the next frame where it reports
 * none (another browser); at the latest after SHOWN_WAIT_MS (a background tab paints nothing). */
function whenShown(then) {
  let done = false;
  let observer = null;
  const once = () => {
    if (done) return;
    done = true;
    if (observer) observer.disconnect();
    then();
  };
  setTimeout(once, SHOWN_WAIT_MS);
  if (!PerformanceObserver.supportedEntryTypes?.includes("element")) {
    requestAnimationFrame(() => setTimeout(once, 0));
    return;
  }
  observer = new PerformanceObserver((list) => {
    if (list.getEntries().some((entry) => entry.identifier === "sessionhub:table")) once();
  });
  observer.observe({ type: "element", buffered: true });
}

start();
