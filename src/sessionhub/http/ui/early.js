// The page's first reads, before the rest of the page is parsed and compiled: api.js's call() takes
// these answers instead of asking again, once each. A server without a token puts the answers in
// the page itself (the JSON block "sessionhub-first-reads", http/_ui.py), so that the first table
// and overview are drawn before the first paint; those it left out (a read failed), and all of
// them when the server has a token, are asked for here: the same requests as main.js and
// sessions.js make at start, with the same headers (the token from this tab's sessionStorage,
// under api.js's key). An answer no one takes is simply not used.
(() => {
  const block = document.getElementById("sessionhub-first-reads");
  const given = block ? JSON.parse(block.textContent) : {};
  const early = new Map();
  let init = null;
  for (const url of ["/v1/stats", "/v1/sessions?limit=25", "/v1/count"]) {
    if (Object.hasOwn(given, url)) {
      early.set(url, { answer: given[url] });
      continue;
    }
    if (!init) {
      const headers = { Accept: "application/json" };
      const token = sessionStorage.getItem("sessionhub.token");
      if (token) headers.Authorization = `Bearer ${token}`;
      init = { headers, credentials: "same-origin", cache: "no-store" };
    }
    const response = fetch(url, init);
    response.catch(() => {}); // whoever takes it sees the failure; untaken, it is no error
    early.set(url, { response });
  }
  globalThis.sessionhubEarly = early;
})();
