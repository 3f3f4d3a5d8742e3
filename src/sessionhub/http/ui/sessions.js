// The sessions table: one page of GET /v1/sessions at a time (the API's cursor), so it never
// renders more than PAGE rows. Events change or remove the rows shown at once; anything that may
// add a row reloads the page (throttled), so that what is shown is what the API lists.

import { call } from "./api.js";
import { $, el, seconds, serverClock, throttle } from "./dom.js";

const PAGE = 25;

const table = {
  filters: {},
  cursors: [null], // cursor of each page visited so far; the last one is this page's
  next: null,
  rows: new Map(), // id -> { session, tr, age, idle, flight, state }
  onError: () => {},
};

export function initSessions(onError) {
  table.onError = onError;
  $("ss-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    table.filters = {};
    for (const name of ["namespace", "user_id", "state", "label"]) {
      const value = String(form.get(name) || "").trim();
      if (value) table.filters[name] = value;
    }
    table.cursors = [null];
    reload();
  });
  $("ss-next").addEventListener("click", () => {
    if (table.next) table.cursors.push(table.next);
    reload();
  });
  $("ss-prev").addEventListener("click", () => {
    if (table.cursors.length > 1) table.cursors.pop();
    reload();
  });
  $("ss-first").addEventListener("click", () => {
    table.cursors = [null];
    reload();
  });
  setInterval(tick, 500);
  // Touches and requests in flight emit no event: read the page again now and then.
  setInterval(() => reloadSoon(), 5000);
}

export async function reload() {
  const cursor = table.cursors[table.cursors.length - 1];
  try {
    const [page, count] = await Promise.all([
      call("GET", "/v1/sessions", { query: { ...table.filters, limit: PAGE, cursor } }),
      call("GET", "/v1/count", { query: table.filters }),
    ]);
    show(page.items, page.cursor, count.count);
  } catch (error) {
    table.onError(error);
  }
}

export const reloadSoon = throttle(reload, 400);

function show(items, next, total) {
  table.next = next;
  table.rows = new Map(items.map((session) => [session.id, makeRow(session)]));
  const trs = [...table.rows.values()].map((row) => row.tr);
  if (!trs.length) trs.push(el("tr", {}, el("td", { colspan: "8", class: "muted", text: "no sessions" })));
  if (!performance.getEntriesByName("sessionhub:table").length) {
    // The first rows' paint, as the browser reports it (Element Timing), for the benchmark.
    trs[0].firstChild.setAttribute("elementtiming", "sessionhub:table");
  }
  $("ss-rows").replaceChildren(...trs);
  $("ss-count").textContent = `(${total})`;
  const first = (table.cursors.length - 1) * PAGE + 1;
  $("ss-page").textContent = items.length
    ? `${first}–${first + items.length - 1} of ${total}` : `0 of ${total}`;
  $("ss-prev").disabled = table.cursors.length < 2;
  $("ss-first").disabled = table.cursors.length < 2;
  $("ss-next").disabled = !next;
  tick();
  if (!performance.getEntriesByName("sessionhub:table").length) performance.mark("sessionhub:table");
}

function makeRow(session) {
  const link = el("a", { href: `#/session/${encodeURIComponent(session.id)}`, text: session.id });
  const row = {
    session,
    state: el("td"),
    labels: el("td", { class: "labels" }),
    age: el("td", { class: "num" }),
    idle: el("td", { class: "num" }),
    flight: el("td", { class: "num" }),
  };
  row.tr = el("tr", { data: { id: session.id } },
    el("td", { class: "id" }, link), el("td", { text: session.namespace }),
    el("td", { text: session.user_id ?? "–" }), row.state, row.labels, row.age, row.idle,
    row.flight);
  fill(row);
  return row;
}

function fill(row) {
  const s = row.session;
  row.state.textContent = s.state;
  row.labels.textContent = Object.entries(s.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  row.flight.textContent = String(s.active_requests);
}

function tick() {
  const now = serverClock.now();
  for (const row of table.rows.values()) {
    const s = row.session;
    row.age.textContent = seconds(now - s.created_at);
    if (s.expires_at === null || s.expires_at === undefined) row.idle.textContent = "never";
    else {
      const left = s.expires_at - now;
      row.idle.textContent = left > 0 ? seconds(left) : "expiring";
      row.idle.classList.toggle("soon", left < 10);
    }
  }
}

function matches(session) {
  const f = table.filters;
  if (f.namespace && session.namespace !== f.namespace) return false;
  if (f.user_id && session.user_id !== f.user_id) return false;
  if (f.state && session.state !== f.state) return false;
  if (f.label) {
    const colon = f.label.indexOf(":");
    const key = f.label.slice(0, colon);
    if ((session.labels || {})[key] !== f.label.slice(colon + 1)) return false;
  }
  return true;
}

/** Whether a session not on this page may belong on it now: a new one, or one whose state or
 * labels changed while the table filters on them. Other changes leave the listing as it was. */
function mayEnter(event) {
  if (event.kind === "created") return true;
  if (event.kind === "transitioned") return Boolean(table.filters.state);
  if (event.kind === "updated") return Boolean(table.filters.label);
  return false;
}

/** A batch of events, once per animation frame. */
export function applyToTable(events) {
  let reloadNeeded = false;
  for (const event of events) {
    const session = event.session;
    if (event.kind === "missed") reloadNeeded = true;
    if (!session) continue;
    const row = table.rows.get(session.id);
    if (!row) {
      if (mayEnter(event) && matches(session)) reloadNeeded = true;
      continue;
    }
    if (event.kind === "ended" || !matches(session)) {
      row.tr.remove();
      table.rows.delete(session.id);
      reloadNeeded = true; // the next page's first row moves up
    } else if (session.version >= row.session.version) {
      row.session = session;
      fill(row);
    }
  }
  if (reloadNeeded) reloadSoon();
}
