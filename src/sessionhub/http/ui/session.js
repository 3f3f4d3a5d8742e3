// One session: its record, labels, details, counters, children, data entries and history (newest
// first, a page at a time, filterable by kind, with counts by kind), and the actions on it.

import { call, sessionPath } from "./api.js";
import { $, display, el, fillPairs, throttle, time } from "./dom.js";

const HISTORY_PAGE = 20;
const RECORD_FIELDS = [
  "id", "namespace", "user_id", "parent_id", "state", "version", "created_at", "updated_at",
  "last_activity_at", "expires_at", "ended_at", "end_reason", "idle_timeout", "ttl", "retention",
  "active_requests",
];

const view = { id: null, session: null, oldest: null, onError: () => {}, onDone: () => {} };

export function initSessionView({ onError, onDone, canAct }) {
  view.onError = onError;
  view.onDone = onDone;
  $("sv-kind").addEventListener("change", () => loadHistory(true));
  $("sv-older").addEventListener("click", () => loadHistory(false));
  const act = (fn) => async () => {
    if (!canAct()) return;
    try {
      await fn();
    } catch (error) {
      view.onError(error);
    }
  };
  $("sv-end").addEventListener("click", act(async () => {
    const reason = $("sv-reason").value.trim() || "ended";
    const answer = await call("DELETE", sessionPath(view.id), { query: { reason } });
    view.onDone(answer.ended ? `ended ${view.id}` : `${view.id} had already ended`);
    await refreshSession();
  }));
  $("sv-touch").addEventListener("click", act(async () => {
    await call("POST", sessionPath(view.id) + "/touch", { body: {} });
    view.onDone(`touched ${view.id}`);
    await refreshSession();
  }));
  $("sv-end-user").addEventListener("click", act(async () => {
    const user = view.session && view.session.user_id;
    if (!user) return;
    const reason = $("sv-reason").value.trim() || "ended";
    const path = `/v1/users/${encodeURIComponent(user).replaceAll(".", "%2E")}/sessions`;
    const answer = await call("DELETE", path, { query: { reason } });
    view.onDone(`ended ${answer.count} sessions of user ${user}`);
    await refreshSession();
  }));
}

export async function openSession(id) {
  view.id = id;
  view.session = null;
  $("sv-id").textContent = id;
  $("sv-kind").replaceChildren(el("option", { value: "", text: "all" }));
  $("sv-history").replaceChildren();
  await Promise.all([refreshSession(), loadHistory(true)]);
}

export function closeSession() {
  view.id = null;
}

export function viewedSession() {
  return view.id;
}

export async function refreshSession() {
  const id = view.id;
  if (id === null) return;
  const path = sessionPath(id);
  try {
    const [session, data, children, counts] = await Promise.all([
      call("GET", path),
      call("GET", path + "/data"),
      call("GET", "/v1/sessions", { query: { parent_id: id, limit: 100 } }),
      call("GET", path + "/history/counts"),
    ]);
    if (view.id !== id) return;
    showSession(session, data.items, children.items, counts.counts);
  } catch (error) {
    view.onError(error);
  }
}

export const refreshSoon = throttle(refreshSession, 300);

function showSession(session, data, children, counts) {
  view.session = session;
  fillPairs($("sv-record"), RECORD_FIELDS.map((name) => [name, format(name, session[name])]));
  fillPairs($("sv-labels"), Object.entries(session.labels || {}));
  fillPairs($("sv-counters"), Object.entries(session.counters || {}));
  $("sv-details").textContent = JSON.stringify(session.details || {}, null, 2);
  fillPairs($("sv-data"), data.map((entry) => [entry.key, `${display(entry.value)}  (v${entry.version})`]));
  const links = children.map((child) => el("li", {},
    el("a", { href: `#/session/${encodeURIComponent(child.id)}`, text: child.id }),
    el("span", { class: "muted", text: ` ${child.state}` })));
  $("sv-children").replaceChildren(...(links.length ? links : [el("li", { class: "muted", text: "none" })]));
  const kinds = Object.entries(counts).sort((a, b) => a[0].localeCompare(b[0]));
  $("sv-counts").textContent = kinds.map(([kind, n]) => `${kind}: ${n}`).join(" · ") || "no records";
  const select = $("sv-kind");
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "", text: "all" }),
    ...kinds.map(([kind, n]) => el("option", { value: kind, text: `${kind} (${n})` })));
  select.value = chosen;
  const live = session.ended_at === null || session.ended_at === undefined;
  for (const id of ["sv-end", "sv-touch"]) $(id).disabled = !live;
  $("sv-end-user").disabled = !session.user_id;
}

function format(name, value) {
  return name.endsWith("_at") && typeof value === "number" ? `${time(value)} (${value})` : value;
}

async function loadHistory(fromNewest) {
  const id = view.id;
  if (id === null) return;
  const query = { order: "newest", limit: HISTORY_PAGE, kind: $("sv-kind").value };
  if (!fromNewest && view.oldest !== null) query.after = view.oldest;
  try {
    const answer = await call("GET", sessionPath(id) + "/history", { query });
    if (view.id !== id) return;
    const rows = answer.items.map((record) => el("tr", {},
      el("td", { class: "num", text: String(record.seq) }),
      el("td", { text: time(record.at) }),
      el("td", { text: record.kind }),
      el("td", { class: "payload", text: display(record.payload) })));
    if (fromNewest) $("sv-history").replaceChildren(...rows);
    else $("sv-history").append(...rows);
    if (answer.items.length) view.oldest = answer.items[answer.items.length - 1].seq;
    else if (fromNewest) view.oldest = null;
    $("sv-older").disabled = answer.items.length < HISTORY_PAGE;
  } catch (error) {
    view.onError(error);
  }
}

export const reloadHistorySoon = throttle(() => loadHistory(true), 500);
