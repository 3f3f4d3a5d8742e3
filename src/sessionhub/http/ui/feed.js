// The event feed: the newest events first, filterable by kind and text, pausable. At most KEPT
// events are kept and at most SHOWN drawn, however fast they come; new ones are drawn at most
// every DRAW_MS (painting a list 60 times a second is what slows a page down, not the events).

import { $, el, throttle, time } from "./dom.js";

const KEPT = 2000;
const SHOWN = 150;
const DRAW_MS = 250;

const feed = { events: [], pending: [], paused: false, arrived: [], kind: "", text: "" };

export function initFeed() {
  $("fd-kind").addEventListener("change", (event) => {
    feed.kind = event.target.value;
    redraw();
  });
  $("fd-text").addEventListener("input", (event) => {
    feed.text = event.target.value.trim().toLowerCase();
    redraw();
  });
  $("fd-pause").addEventListener("click", () => {
    feed.paused = !feed.paused;
    $("fd-pause").textContent = feed.paused ? "Resume" : "Pause";
    $("fd-pause").classList.toggle("on", feed.paused);
    if (!feed.paused) redraw();
  });
  setInterval(rate, 1000);
}

/** A batch of events, once per animation frame. */
export function addToFeed(events) {
  feed.arrived.push(events.length);
  if (feed.paused) return; // what arrives while paused is not kept: the feed shows a moment
  for (const event of events) feed.events.push(event);
  if (feed.events.length > KEPT) feed.events.splice(0, feed.events.length - KEPT);
  for (const event of events) feed.pending.push(event);
  drawSoon();
}

const drawSoon = throttle(() => requestAnimationFrame(draw), DRAW_MS);

function draw() {
  const shown = feed.pending.filter(wanted);
  feed.pending = [];
  if (feed.paused || !shown.length) return;
  const list = $("fd-list");
  list.prepend(...shown.slice(-SHOWN).reverse().map(item));
  while (list.childElementCount > SHOWN) list.lastElementChild.remove();
}

function redraw() {
  feed.pending = [];
  const rows = [];
  for (let i = feed.events.length - 1; i >= 0 && rows.length < SHOWN; i--) {
    if (wanted(feed.events[i])) rows.push(item(feed.events[i]));
  }
  $("fd-list").replaceChildren(...rows);
}

function wanted(event) {
  if (feed.kind && event.kind !== feed.kind) return false;
  if (!feed.text) return true;
  const s = event.session;
  const haystack = s ? `${s.id} ${s.namespace} ${s.user_id ?? ""} ${s.state} ${s.end_reason ?? ""}` : "";
  return `${event.kind} ${haystack}`.toLowerCase().includes(feed.text);
}

function item(event) {
  const s = event.session;
  const what = s
    ? `${s.id} · ${s.namespace}${s.user_id ? " · " + s.user_id : ""} · ${s.state}${s.end_reason ? " (" + s.end_reason + ")" : ""}`
    : `${event.missed} events missed`;
  return el("li", { class: `ev ${event.kind}` },
    el("span", { class: "at", text: time(event.at).slice(11, 23) }),
    el("span", { class: "kind", text: event.kind }),
    s ? el("a", { href: `#/session/${encodeURIComponent(s.id)}`, text: what }) : el("span", { text: what }));
}

function rate() {
  const count = feed.arrived.reduce((a, b) => a + b, 0);
  feed.arrived = [];
  $("fd-rate").textContent = `${count}/s${feed.paused ? " · paused" : ""}`;
}
