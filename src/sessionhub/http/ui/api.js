// The public HTTP API, same origin only. The token lives in this tab's sessionStorage and goes
// in the Authorization header, never in a URL; requests are relative, so it reaches no other host.

const TOKEN_KEY = "sessionhub.token"; // early.js reads it too

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

function headers(extra = {}) {
  const sent = { Accept: "application/json", ...extra };
  const value = token.get();
  if (value) sent.Authorization = `Bearer ${value}`;
  return sent;
}

/** `/v1/sessions/` + the id as one path segment. */
export function sessionPath(id) {
  return "/v1/sessions/" + encodeURIComponent(id).replaceAll(".", "%2E");
}

function url(path, query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined && item !== null && item !== "") params.append(name, String(item));
    }
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

export async function call(method, path, { query, body } = {}) {
  const target = url(path, query);
  const early = method === "GET" ? globalThis.sessionhubEarly?.get(target) : undefined;
  if (early) globalThis.sessionhubEarly.delete(target); // from early.js: taken once
  if (early && "answer" in early) return early.answer; // the server put it in the page
  // The headers (the token) only for a request: the first sessionStorage read of a visit costs
  // synchronous calls to the browser, which the answers in the page do not need.
  const init = { method, headers: headers(), credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await (early ? early.response : fetch(target, init));
  const answer = await response.json().catch(() => null);
  if (!response.ok) {
    const error = answer && answer.error ? answer.error : { code: "http", message: response.statusText };
    throw new ApiError(response.status, error.code, error.message);
  }
  return answer;
}

/**
 * Reads GET /v1/events with fetch (EventSource cannot send the Authorization header) and calls
 * `onEvent` for each event; reconnects with Last-Event-ID after a drop. `onState` hears
 * "live", "unauthorized" or "reconnecting". Returns a function that stops it.
 */
export function streamEvents(onEvent, onState) {
  const controller = new AbortController();
  let lastId = null;
  const run = async () => {
    while (!controller.signal.aborted) {
      try {
        const sent = headers({ Accept: "text/event-stream" });
        if (lastId) sent["Last-Event-ID"] = lastId;
        const response = await fetch("/v1/events", {
          headers: sent, cache: "no-store", signal: controller.signal,
        });
        if (response.status === 401) {
          onState("unauthorized");
          return; // a new token restarts the stream
        }
        if (!response.ok) throw new Error(`events: ${response.status}`);
        onState("live");
        await readFrames(response.body, (frame) => {
          if (frame.id) lastId = frame.id;
          if (frame.event && frame.data) onEvent(JSON.parse(frame.data));
        });
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  };
  run();
  return () => controller.abort();
}

async function readFrames(body, onFrame) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = {};
      for (const line of buffer.slice(0, end).split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        frame[field] = field in frame ? `${frame[field]}\n${text}` : text;
      }
      buffer = buffer.slice(end + 2);
      onFrame(frame);
    }
  }
}
