// The overview, from GET /v1/stats: live sessions by namespace and state, ends by reason, hooks,
// subscribers, the expiry-lateness histogram and the created/ended per-minute chart.

import { $, el, fillPairs } from "./dom.js";

// The hub's lateness buckets (sessionhub._metrics.LATENESS_BUCKETS); /v1/stats gives cumulative
// counts per bucket, then +Inf.
const LATENESS_BOUNDS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const CHART_MINUTES = 30;
// uPlot (MIT, vendor/uPlot.LICENSE) draws the per-minute chart: a small, well-kept single file that
// draws on canvas, so the chart needs neither a build step nor a hand-written plotting layer. It is
// half of the page's script, so it is loaded only once the first table and overview are drawn.
const UPLOT = "vendor/uPlot.iife.min.js";

const rate = { chart: null, data: null, loading: false };

export function renderOverview(stats) {
  $("ov-live").textContent = String(stats.live_sessions);
  $("ov-created").textContent = String(stats.created_total);
  const ended = Object.values(stats.ended_total).reduce((a, b) => a + b, 0);
  $("ov-ended").textContent = String(ended);
  $("ov-hooks").textContent = `${stats.hook_failures_total} / ${stats.hook_calls_total}`;
  $("ov-hooks").classList.toggle("bad", stats.hook_failures_total > 0);
  $("ov-subscribers").textContent = String(stats.subscribers);
  fillPairs($("ov-namespaces"), totals(stats.sessions, "namespace"));
  fillPairs($("ov-states"), totals(stats.sessions, "state"));
  fillPairs($("ov-reasons"), Object.entries(stats.ended_total).sort((a, b) => b[1] - a[1]));
  renderLateness(stats);
  renderRate(stats.per_minute || []);
  if (!performance.getEntriesByName("sessionhub:overview").length) performance.mark("sessionhub:overview");
}

function totals(census, field) {
  const sums = new Map();
  for (const row of census) sums.set(row[field], (sums.get(row[field]) || 0) + row.count);
  // In code point order, not localeCompare's: its first call sets up the locale's collator,
  // 15-20 ms of a cold visit's first frame (and only with sessions, so only on a real server).
  return [...sums.entries()].sort((a, b) => byCodePoint(String(a[0]), String(b[0])));
}

function byCodePoint(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

function renderLateness(stats) {
  const cumulative = stats.expiry_lateness_buckets;
  const counts = cumulative.map((n, i) => n - (i ? cumulative[i - 1] : 0));
  const most = Math.max(1, ...counts);
  const rows = counts.map((n, i) => {
    const bar = el("span", { class: "bar" });
    bar.style.width = `${(100 * n) / most}%`;
    const bound = i < LATENESS_BOUNDS.length ? `≤ ${duration(LATENESS_BOUNDS[i])}` : "> 10s";
    return el("tr", {}, el("th", { text: bound }), el("td", {}, bar), el("td", { text: String(n) }));
  });
  const total = cumulative.length ? cumulative[cumulative.length - 1] : 0;
  rows.push(el("tr", {}, el("th", { text: "expired" }), el("td", { class: "muted",
    text: `max ${duration(stats.expiry_lateness_max)}` }), el("td", { text: String(total) })));
  $("ov-lateness").replaceChildren(...rows);
}

function duration(s) {
  return s < 1 ? `${+(s * 1000).toFixed(1)}ms` : `${+s.toFixed(2)}s`;
}

function renderRate(perMinute) {
  const recent = perMinute.slice(-CHART_MINUTES);
  rate.data = [
    recent.map((m) => m.minute),
    recent.map((m) => m.created),
    recent.map((m) => m.ended),
  ];
  if (rate.chart) rate.chart.setData(rate.data);
  else if (globalThis.uPlot) drawChart();
}

/** Loads uPlot (once) and draws the chart with the latest stats. */
export function loadChart() {
  if (rate.loading || globalThis.uPlot) return;
  rate.loading = true;
  const script = document.createElement("script");
  script.src = UPLOT;
  script.onload = () => {
    if (rate.data) drawChart();
  };
  script.onerror = () => {
    $("ov-rate").textContent = "chart unavailable";
  };
  document.head.append(script);
}

function drawChart() {
  const uPlot = globalThis.uPlot;
  const host = $("ov-rate");
  const bars = uPlot.paths.bars({ size: [0.5, 14] });
  rate.chart = new uPlot({
    width: Math.max(300, host.clientWidth || 600),
    height: 150,
    legend: { show: false }, // the panel's own legend; uPlot's would print "--" between hovers
    cursor: { show: false },
    scales: {
      x: { range: (u, min, max) => [min - 30, max + 30] }, // whole bars at both ends
      y: { range: (u, min, max) => [0, Math.max(1, max)] },
    },
    series: [
      {},
      { label: "created", stroke: "#2f7d32", fill: "rgba(47,125,50,0.35)", paths: bars },
      { label: "ended", stroke: "#b3261e", width: 2, points: { show: true, size: 4 } },
    ],
    // the y axis as wide as its longest label ("12,000" does not fit a fixed 40 px)
    axes: [{}, { size: (u, values) => 24 + 7 * Math.max(1, ...(values || []).map((v) => String(v).length)) }],
  }, rate.data, host);
  performance.mark("sessionhub:chart");
}
