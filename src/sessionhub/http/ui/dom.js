// Building DOM from data as text only: values go in textContent, never in innerHTML.

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else if (name === "data") Object.assign(node.dataset, value);
    else if (name === "href") node.setAttribute("href", value);
    else if (name === "title") node.title = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

export const $ = (id) => document.getElementById(id);

/** Replace the rows of `tbody` with one `key | value` row per entry. */
export function fillPairs(tbody, entries, empty = "none") {
  const rows = entries.map(([key, value]) =>
    el("tr", {}, el("th", { text: String(key) }), el("td", { text: display(value) })));
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "muted", text: empty })));
  tbody.replaceChildren(...rows);
}

export function display(value) {
  if (value === null || value === undefined) return "–";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

export function seconds(value) {
  if (value === null || value === undefined) return "–";
  const s = Math.max(0, value);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

export function time(unixSeconds) {
  if (unixSeconds === null || unixSeconds === undefined) return "–";
  return new Date(unixSeconds * 1000).toISOString().replace("T", " ").replace("Z", "");
}

/** Calls `fn` at most once per `ms`, the last call winning (trailing edge). */
export function throttle(fn, ms) {
  let timer = null;
  let again = false;
  const fire = () => {
    timer = null;
    if (again) {
      again = false;
      fn();
      timer = setTimeout(fire, ms);
    }
  };
  return () => {
    again = true;
    if (timer === null) fire();
  };
}

/** The server's clock as seen from here: event times tell how far ours is from it. */
export const serverClock = {
  offset: 0,
  now() {
    return Date.now() / 1000 + this.offset;
  },
  observe(at) {
    // An event arrives after it happened: the largest (at - now) seen is the closest estimate.
    const seen = at - Date.now() / 1000;
    if (!this.seen || seen > this.offset) this.offset = seen;
    this.seen = true;
  },
};
