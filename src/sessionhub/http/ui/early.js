// Starts the page's first reads while the rest of the page is still being parsed and compiled:
// api.js's call() takes these answers instead of asking again, once each. The same requests as
// main.js and sessions.js make at start, with the same headers (the token from this tab's
// sessionStorage, under api.js's key); a request no one takes is simply not used.
(() => {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem("sessionhub.token");
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { headers, credentials: "same-origin", cache: "no-store" };
  const early = new Map();
  for (const url of ["/v1/stats", "/v1/sessions?limit=25", "/v1/count"]) {
    const answer = fetch(url, init);
    answer.catch(() => {}); // whoever takes it sees the failure; untaken, it is no error
    early.set(url, answer);
  }
  globalThis.sessionhubEarly = early;
})();
