// hookgate console: overview, request explorer, keys, pipeline. No framework, no build step.
//
// Every number comes from the admin API (/-/api/...), fetched again every data-refresh-ms while
// the tab is visible. Text that clients or admins choose (model names, key ids, metadata, bodies)
// is only ever written with textContent, never parsed as HTML. The session cookie is HttpOnly:
// this script never sees it; it holds the session's CSRF token in memory and sends it with every
// call. A created key is shown once, in a dialog, and removed from the page when it closes.

const API = "/-/api";
const BASE = "/-/dashboard";
const REFRESH_MS = Math.max(1000, Number(document.body.dataset.refreshMs) || 5000);
const main = document.getElementById("main");
const state = { csrf: null, timer: null, page: null, refresh: null };

// ----------------------------------------------------------------------------- helpers ---

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) if (child) node.append(child);
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error && body.error.code;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (state.csrf) headers["X-CSRF-Token"] = state.csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(API + path, {
    method, headers, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = null; }
  if (!response.ok) {
    if (response.status === 401 && state.csrf) { location.reload(); }
    throw new ApiError(response.status, parsed);
  }
  return parsed;
}

const fmt = {
  int: (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US")),
  ms: (n) => (n === null || n === undefined ? "–" : n >= 1000 ? `${(n / 1000).toFixed(2)} s` : `${n.toFixed(n < 10 ? 2 : 0)} ms`),
  pct: (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`),
  usd: (s) => {
    if (s === null || s === undefined) return "–";
    const n = Number(s);
    return n === 0 ? "$0" : n < 0.01 ? `$${n.toPrecision(3)}` : `$${n.toFixed(2)}`;
  },
  time: (iso) => new Date(iso).toLocaleString(),
  clock: (iso) => new Date(iso).toLocaleTimeString(),
};

function statusClass(status) { return status >= 400 ? "status-bad" : "status-ok"; }

function showError(where, error) {
  where.replaceChildren(el("p", { class: "error", role: "alert", text: error.message || String(error) }));
}

function setLive(ok) {
  const live = document.getElementById("live");
  live.className = ok ? "live on" : "live stale";
  live.title = ok ? `updated ${new Date().toLocaleTimeString()}` : "update failed: retrying";
}

// Re-run the current page's refresh every REFRESH_MS while the tab is visible.
function schedule(refresh) {
  state.refresh = refresh;
  clearTimeout(state.timer);
  if (!refresh) return;
  const tick = async () => {
    if (state.refresh !== refresh) return;
    if (document.visibilityState === "visible") {
      try { await refresh(); setLive(true); } catch (error) { setLive(false); }
    }
    state.timer = setTimeout(tick, REFRESH_MS);
  };
  state.timer = setTimeout(tick, REFRESH_MS);
}

function navigate(path) {
  history.pushState({}, "", path);
  route();
}

// ------------------------------------------------------------------------------ charts ---

function barChart(points, { value, label, bad = false, format = fmt.int }) {
  const width = 600, height = 140, pad = 24;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  if (!points.length) {
    chart.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty", text: "no requests in this range" }));
    return chart;
  }
  const max = Math.max(...points.map(value), 0) || 1;
  const step = (width - pad) / points.length;
  points.forEach((point, i) => {
    const v = value(point);
    const h = ((height - pad) * v) / max;
    const bar = svg("rect", { x: pad + i * step + 1, y: height - pad - h, width: Math.max(1, step - 2), height: Math.max(0, h), class: bad ? "bar bad" : "bar" });
    bar.append(svg("title", { text: `${fmt.clock(point.bucket)}: ${format(v)}` }));
    chart.append(bar);
  });
  chart.append(svg("text", { x: 2, y: 10, class: "axis", text: format(max) }));
  chart.append(svg("text", { x: pad, y: height - 6, class: "axis", text: fmt.clock(points[0].bucket) }));
  chart.append(svg("text", { x: width - 2, y: height - 6, class: "axis", "text-anchor": "end", text: fmt.clock(points[points.length - 1].bucket) }));
  return chart;
}

function lineChart(points, { value, label, format = fmt.ms }) {
  const width = 600, height = 140, pad = 24;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  const known = points.filter((p) => value(p) !== null && value(p) !== undefined);
  if (!known.length) {
    chart.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty", text: "no requests in this range" }));
    return chart;
  }
  const max = Math.max(...known.map(value)) || 1;
  const step = points.length > 1 ? (width - pad) / (points.length - 1) : 0;
  const at = (p) => [pad + points.indexOf(p) * step, height - pad - ((height - pad) * value(p)) / max];
  chart.append(svg("polyline", { points: known.map((p) => at(p).join(",")).join(" "), class: "line" }));
  for (const p of known) {
    const [x, y] = at(p);
    const dot = svg("circle", { cx: x, cy: y, r: 3, class: "dot" });
    dot.append(svg("title", { text: `${fmt.clock(p.bucket)}: ${format(value(p))}` }));
    chart.append(dot);
  }
  chart.append(svg("text", { x: 2, y: 10, class: "axis", text: format(max) }));
  return chart;
}

// One series per bucket: the API answers buckets per (time, group); overview asks ungrouped.
function panelChart(title, chart, testid) {
  return el("div", { class: "panel chart", "data-testid": testid }, el("h2", { text: title }), chart);
}

// ---------------------------------------------------------------------------- overview ---

const RANGES = { "1h": [3600, 60], "6h": [6 * 3600, 300], "24h": [86400, 1800], "7d": [7 * 86400, 6 * 3600] };

async function overview() {
  const range = new URLSearchParams(location.search).get("range") || "1h";
  const [seconds, bucket] = RANGES[range] || RANGES["1h"];
  const picker = el("select", { "aria-label": "time range", onchange: (e) => navigate(`${BASE}?range=${e.target.value}`) },
    Object.keys(RANGES).map((name) => el("option", { value: name, selected: name === range, text: `last ${name}` })));
  const body = el("div", {}, el("p", { class: "muted", text: "loading…" }));
  main.replaceChildren(el("div", { class: "row" }, el("h1", { text: "Overview" }), picker), body);

  async function load() {
    const until = new Date(Math.ceil(Date.now() / (bucket * 1000)) * bucket * 1000);
    const since = new Date(until.getTime() - seconds * 1000).toISOString();
    const window = `since=${encodeURIComponent(since)}&until=${encodeURIComponent(until.toISOString())}`;
    const [all, models, keys] = await Promise.all([
      api(`/stats?${window}&bucket_seconds=${bucket}`),
      api(`/stats?${window}&bucket_seconds=${seconds}&group_by=model&top=8`),
      api(`/stats?${window}&bucket_seconds=${seconds}&group_by=key&top=8`),
    ]);
    const total = all.totals[0] || { requests: 0, errors: 0, error_rate: 0, hit_rate: null, p50_ms: null, p95_ms: null, tokens: { prompt: 0, completion: 0 }, cost_usd: "0" };
    const tile = (label, value, testid) => el("div", { class: "tile", "data-testid": testid }, el("div", { class: "label", text: label }), el("div", { class: "value", text: value }));
    const tokens = (total.tokens.prompt || 0) + (total.tokens.completion || 0);
    const points = everyBucket(all.buckets, new Date(since), until, bucket);
    body.replaceChildren(
      el("div", { class: "tiles" },
        tile("Requests", fmt.int(total.requests), "tile-requests"),
        tile("Error rate", fmt.pct(total.error_rate), "tile-error-rate"),
        tile("Cache hit rate", fmt.pct(total.hit_rate), "tile-hit-rate"),
        tile("p50 latency", fmt.ms(total.p50_ms), "tile-p50"),
        tile("p95 latency", fmt.ms(total.p95_ms), "tile-p95"),
        tile("Tokens", fmt.int(tokens), "tile-tokens"),
        tile("Cost", fmt.usd(total.cost_usd), "tile-cost")),
      el("div", { class: "charts" },
        panelChart("Requests", barChart(points, { value: (p) => p.requests, label: "requests per bucket" }), "chart-requests"),
        panelChart("Errors", barChart(points, { value: (p) => p.errors, label: "errors per bucket", bad: true }), "chart-errors"),
        panelChart("p95 latency", lineChart(points, { value: (p) => p.p95_ms, label: "p95 latency per bucket" }), "chart-latency"),
        panelChart("Tokens", barChart(points, { value: (p) => (p.tokens.prompt || 0) + (p.tokens.completion || 0), label: "tokens per bucket" }), "chart-tokens"),
        panelChart("Cost", barChart(points, { value: (p) => Number(p.cost_usd), label: "cost per bucket", format: fmt.usd }), "chart-cost")),
      el("div", { class: "row" }, topTable("Top models", models.totals, "model", "top-models"), topTable("Top keys", keys.totals, "key", "top-keys")));
  }
  await load().catch((error) => showError(body, error));
  schedule(load);
}

// The API leaves out buckets without requests; a chart shows them, as zeros, so time reads evenly.
function everyBucket(buckets, since, until, seconds) {
  const found = new Map(buckets.map((b) => [new Date(b.bucket).getTime(), b]));
  const points = [];
  for (let t = Math.floor(since.getTime() / (seconds * 1000)) * seconds * 1000; t < until.getTime(); t += seconds * 1000) {
    points.push(found.get(t) || { bucket: new Date(t).toISOString(), requests: 0, errors: 0, p95_ms: null, tokens: { prompt: 0, completion: 0 }, cost_usd: "0" });
  }
  return points;
}

function topTable(title, rows, filter, testid) {
  const sorted = [...rows].sort((a, b) => b.requests - a.requests);
  return el("div", { class: "panel", "data-testid": testid }, el("h2", { text: title }),
    sorted.length ? el("table", {},
      el("thead", {}, el("tr", {}, el("th", { text: filter === "model" ? "model" : "key" }), el("th", { class: "num", text: "requests" }),
        el("th", { class: "num", text: "errors" }), el("th", { class: "num", text: "p95" }), el("th", { class: "num", text: "tokens" }), el("th", { class: "num", text: "cost" }))),
      el("tbody", {}, sorted.map((row) => el("tr", {
        class: row.group.startsWith("(") ? "" : "link",
        onclick: row.group.startsWith("(") ? null : () => navigate(`${BASE}/requests?${filter}=${encodeURIComponent(row.group)}`),
      }, el("td", { text: row.group }), el("td", { class: "num", text: fmt.int(row.requests) }), el("td", { class: "num", text: fmt.int(row.errors) }),
        el("td", { class: "num", text: fmt.ms(row.p95_ms) }), el("td", { class: "num", text: fmt.int(row.tokens.prompt + row.tokens.completion) }),
        el("td", { class: "num", text: fmt.usd(row.cost_usd) }))))) : el("p", { class: "muted", text: "no requests in this range" }));
}

// ---------------------------------------------------------------------------- requests ---

const FILTERS = ["model", "key", "status", "errors", "cache", "min_cost", "since", "until"];

async function requests() {
  const params = new URLSearchParams(location.search);
  if (params.get("id")) return requestDetail(params.get("id"));
  const field = (name, label, input) => el("label", {}, label, input);
  const value = (name) => params.get(name) || "";
  const form = el("form", { class: "filters", "data-testid": "request-filters", onsubmit: (e) => {
    e.preventDefault();
    const chosen = new URLSearchParams();
    for (const [name, v] of new FormData(form)) if (v) chosen.set(name, name === "since" || name === "until" ? new Date(v).toISOString() : v);
    navigate(`${BASE}/requests?${chosen}`);
  } },
    field("model", "model", el("input", { name: "model", value: value("model"), placeholder: "any", "data-testid": "filter-model" })),
    field("key", "key", el("input", { name: "key", value: value("key"), placeholder: "any" })),
    field("status", "status", el("input", { name: "status", value: value("status"), placeholder: "any", size: 5, inputmode: "numeric" })),
    field("errors", "outcome", el("select", { name: "errors" }, el("option", { value: "", text: "all" }),
      el("option", { value: "true", selected: value("errors") === "true", text: "errors" }), el("option", { value: "false", selected: value("errors") === "false", text: "successes" }))),
    field("cache", "cache", el("select", { name: "cache" }, ["", "HIT", "MISS", "BYPASS"].map((c) => el("option", { value: c, selected: value("cache") === c, text: c || "all" })))),
    field("min_cost", "min cost (USD)", el("input", { name: "min_cost", value: value("min_cost"), size: 8 })),
    field("since", "since", el("input", { name: "since", type: "datetime-local", value: localInput(value("since")) })),
    field("until", "until", el("input", { name: "until", type: "datetime-local", value: localInput(value("until")) })),
    el("button", { type: "submit", "data-testid": "filter-apply", text: "Filter" }),
    el("button", { type: "button", class: "quiet", text: "Clear", onclick: () => navigate(`${BASE}/requests`) }));
  const list = el("tbody", {});
  const more = el("button", { type: "button", class: "quiet", hidden: true, text: "Load more" });
  const problem = el("div", {});
  const query = new URLSearchParams();
  for (const name of FILTERS) if (params.get(name)) query.set(name, params.get(name));
  main.replaceChildren(el("h1", { text: "Requests" }), el("div", { class: "panel" }, form), problem,
    el("div", { class: "panel" }, el("table", { "data-testid": "request-table" },
      el("thead", {}, el("tr", {}, ["time", "status", "model", "key", "provider", "cache", "attempts", "latency", "tokens", "cost"].map((h, i) => el("th", { class: i >= 6 ? "num" : "", text: h })))),
      list), more));

  let cursor = null;
  const row = (r) => el("tr", { class: "link", "data-testid": "request-row", "data-id": r.id, onclick: () => navigate(`${BASE}/requests?id=${encodeURIComponent(r.id)}`) },
    el("td", { text: fmt.time(r.time) }), el("td", { class: statusClass(r.status), text: r.status }), el("td", { text: r.model || "–" }),
    el("td", { text: r.key_id || "–" }), el("td", { text: r.provider || "–" }), el("td", {}, el("span", { class: `pill ${r.cache.status}`, text: r.cache.status })),
    el("td", { class: "num", text: r.attempt_count }), el("td", { class: "num", text: fmt.ms(r.timings.total_ms) }),
    el("td", { class: "num", text: fmt.int((r.tokens.prompt || 0) + (r.tokens.completion || 0)) }), el("td", { class: "num", text: fmt.usd(r.cost_usd) }));
  async function first() {
    const page = await api(`/requests?${query}&limit=50`);
    problem.replaceChildren();
    list.replaceChildren(...page.data.map(row));
    if (!page.data.length) list.append(el("tr", {}, el("td", { colspan: 10, class: "muted", text: "no request matches" })));
    cursor = page.next_cursor;
    more.hidden = !cursor;
  }
  more.addEventListener("click", async () => {
    const page = await api(`/requests?${query}&limit=50&cursor=${encodeURIComponent(cursor)}`);
    list.append(...page.data.map(row));
    cursor = page.next_cursor;
    more.hidden = !cursor;
  });
  await first().catch((error) => showError(problem, error));
  // Live: the first page is fetched again only while nobody has paged further.
  schedule(async () => { if (list.children.length <= 50) await first(); });
}

function localInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const local = new Date(d.getTime() - d.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 16);
}

const PHASE_ORDER = ["authenticate", "before_request", "cache_lookup", "call_provider", "after_response", "on_error"];

async function requestDetail(id) {
  const body = el("div", {}, el("p", { class: "muted", text: "loading…" }));
  main.replaceChildren(el("p", {}, el("a", { href: `${BASE}/requests`, onclick: (e) => { e.preventDefault(); history.back(); }, text: "← requests" })),
    el("h1", { "data-testid": "request-id", text: `Request ${id}` }), body);
  schedule(null);
  let r;
  try { r = await api(`/requests/${encodeURIComponent(id)}`); } catch (error) { return showError(body, error); }
  const facts = (pairs) => el("dl", { class: "facts" }, pairs.map(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  const detail = [
    el("div", { class: "row" },
      el("div", { class: "panel", "data-testid": "request-summary" }, el("h2", { text: "Summary" }), facts([
        ["time", fmt.time(r.time)], ["status", `${r.status}${r.error_code ? ` (${r.error_code})` : ""}`], ["model", r.model || "–"],
        ["upstream model", r.upstream_model || "–"], ["provider", r.provider || "–"], ["surface", r.surface || "–"], ["key", r.key_id || "anonymous"]])),
      el("div", { class: "panel", "data-testid": "request-cost" }, el("h2", { text: "Cache, tokens, cost" }), facts([
        ["cache", `${r.cache.status}${r.cache.source ? ` from ${r.cache.source}` : ""}`], ["prompt tokens", fmt.int(r.tokens.prompt)],
        ["completion tokens", fmt.int(r.tokens.completion)], ["cached tokens", fmt.int(r.tokens.cached)], ["reasoning tokens", fmt.int(r.tokens.reasoning)],
        ["cost", r.cost_usd === null ? "unknown (no price)" : `$${r.cost_usd}`]]))),
    el("div", { class: "panel timeline", "data-testid": "phase-timeline" }, el("h2", { text: `Phases (total ${fmt.ms(r.timings.total_ms)}, upstream ${fmt.ms(r.timings.upstream_ms)}, first byte ${fmt.ms(r.timings.ttft_ms)})` }), timeline(r)),
    el("div", { class: "panel", "data-testid": "attempts" }, el("h2", { text: `Attempts (${r.attempt_count})` }),
      r.attempts.length ? el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "#" }), el("th", { text: "outcome" }), el("th", { text: "upstream status" }), el("th", { class: "num", text: "duration" }))),
        el("tbody", {}, r.attempts.map((a, i) => el("tr", {}, el("td", { text: i + 1 }), el("td", { text: a.outcome }), el("td", { text: a.status ?? "–" }), el("td", { class: "num", text: fmt.ms(a.duration_ms) })))))
        : el("p", { class: "muted", text: r.cache.status === "HIT" ? "answered from the cache: no upstream call" : "no upstream call" })),
  ];
  if (r.bodies) {
    detail.push(el("div", { class: "panel" }, el("h2", { text: `Bodies${r.bodies.truncated ? " (truncated)" : ""}` }),
      el("h2", { class: "muted", text: "request" }), el("pre", { text: pretty(r.bodies.request) }),
      el("h2", { class: "muted", text: "response" }), el("pre", { text: pretty(r.bodies.response) })));
  }
  body.replaceChildren(...detail);
}

function pretty(text) {
  if (text === null || text === undefined) return "–";
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}

function timeline(r) {
  const phases = PHASE_ORDER.filter((p) => r.timings.phases[p] !== undefined).map((p) => [p, r.timings.phases[p]]);
  for (const [p, ms] of Object.entries(r.timings.phases)) if (!PHASE_ORDER.includes(p)) phases.push([p, ms]);
  const total = Math.max(r.timings.total_ms, phases.reduce((s, [, ms]) => s + ms, 0)) || 1;
  const width = 800, rowHeight = 22, labelWidth = 130;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${rowHeight * (phases.length + 1)}`, role: "img", "aria-label": "phase timeline" });
  let offset = 0;
  phases.forEach(([name, ms], i) => {
    const x = labelWidth + ((width - labelWidth - 80) * offset) / total;
    const w = Math.max(2, ((width - labelWidth - 80) * ms) / total);
    chart.append(svg("text", { x: 0, y: i * rowHeight + 15, text: name }));
    const bar = svg("rect", { x, y: i * rowHeight + 4, width: w, height: 14, rx: 2, class: `phase ${name}` });
    bar.append(svg("title", { text: `${name}: ${fmt.ms(ms)}` }));
    chart.append(bar, svg("text", { x: x + w + 6, y: i * rowHeight + 15, text: fmt.ms(ms) }));
    offset += ms;
  });
  chart.append(svg("text", { x: 0, y: phases.length * rowHeight + 15, text: `total ${fmt.ms(r.timings.total_ms)} (the rest: reading the body, writing the answer)` }));
  return chart;
}

// -------------------------------------------------------------------------------- keys ---

function keySettingsForm(key, onsubmit, submitLabel) {
  const k = key || {};
  // Test ids mark the create form only (every key's edit form has the same fields).
  const input = (name, label, value, attrs = {}) => el("label", {}, label, el("input", { name, value: value ?? "", ...attrs, "data-testid": key ? null : attrs["data-testid"] }));
  const form = el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); onsubmit(settingsFrom(form, !key)); } },
    key ? null : input("id", "id", "", { required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}", "data-testid": "key-id" }),
    input("models", "models (comma-separated; empty: all)", (k.models || []).join(", "), { size: 28, "data-testid": "key-models" }),
    input("requests_per_minute", "requests/min", k.requests_per_minute, { size: 7, inputmode: "numeric", "data-testid": "key-rpm" }),
    input("tokens_per_minute", "tokens/min", k.tokens_per_minute, { size: 9, inputmode: "numeric" }),
    input("daily_budget_usd", "daily budget (USD)", k.daily_budget_usd, { size: 8, "data-testid": "key-daily" }),
    input("monthly_budget_usd", "monthly budget (USD)", k.monthly_budget_usd, { size: 8 }),
    el("label", {}, "metadata (k=v, one a line)", el("textarea", { name: "metadata", rows: 2, text: Object.entries(k.metadata || {}).map(([a, b]) => `${a}=${b}`).join("\n") })),
    el("label", {}, "admin", el("input", { name: "admin", type: "checkbox", checked: !!k.admin })),
    el("button", { type: "submit", "data-testid": key ? "key-save" : "key-create", text: submitLabel }));
  return form;
}

function settingsFrom(form, creating) {
  const data = new FormData(form);
  const text = (name) => (data.get(name) || "").toString().trim();
  const number = (name) => (text(name) ? Number(text(name)) : null);
  const settings = {
    models: text("models") ? text("models").split(",").map((m) => m.trim()).filter(Boolean) : null,
    requests_per_minute: number("requests_per_minute"),
    tokens_per_minute: number("tokens_per_minute"),
    daily_budget_usd: text("daily_budget_usd") || null,
    monthly_budget_usd: text("monthly_budget_usd") || null,
    admin: data.get("admin") === "on",
    metadata: Object.fromEntries(text("metadata").split("\n").map((l) => l.trim()).filter((l) => l.includes("=")).map((l) => [l.slice(0, l.indexOf("=")).trim(), l.slice(l.indexOf("=") + 1).trim()])),
  };
  if (creating) settings.id = text("id");
  return settings;
}

function showKeyOnce(created) {
  const secret = el("div", { class: "secret", "data-testid": "new-key", text: created.key });
  const dialog = el("dialog", { "data-testid": "new-key-dialog" },
    el("h2", { text: `Key ${created.id} created` }),
    el("p", { text: "Copy it now: this is the only time it is shown. The gateway keeps only its SHA-256." }),
    secret,
    el("div", { class: "actions", style: null },
      el("button", { type: "button", class: "quiet", text: "Copy", onclick: () => navigator.clipboard && navigator.clipboard.writeText(created.key) }),
      el("button", { type: "button", "data-testid": "new-key-done", text: "I have stored it", onclick: () => dialog.close() })));
  dialog.addEventListener("close", () => { secret.textContent = ""; dialog.remove(); });
  document.body.append(dialog);
  dialog.showModal();
}

async function keys() {
  const problem = el("div", {});
  const table = el("tbody", {});
  const create = el("div", { class: "panel" }, el("h2", { text: "Create a key" }), keySettingsForm(null, async (settings) => {
    try {
      const created = await api("/keys", { method: "POST", body: settings });
      problem.replaceChildren();
      create.querySelector("form").reset();
      showKeyOnce(created);
      await load();
    } catch (error) { showError(problem, error); }
  }, "Create"));
  main.replaceChildren(el("h1", { text: "Keys" }), create, problem,
    el("div", { class: "panel" }, el("table", { "data-testid": "key-table" },
      el("thead", {}, el("tr", {}, ["id", "source", "models", "requests/min", "tokens/min", "daily", "monthly", "admin", "metadata", ""].map((h) => el("th", { text: h })))),
      table)));

  async function load() {
    const listed = await api("/keys");
    table.replaceChildren(...listed.data.map((k) => {
      const editRow = el("tr", { hidden: true }, el("td", { colspan: 10 }, keySettingsForm(k, async (settings) => {
        try { await api(`/keys/${encodeURIComponent(k.id)}`, { method: "PATCH", body: settings }); await load(); } catch (error) { showError(problem, error); }
      }, "Save")));
      const actions = k.read_only ? el("span", { class: "muted", text: "plugins.toml" }) : el("div", { class: "actions" },
        el("button", { type: "button", class: "quiet", "data-testid": `edit-${k.id}`, text: "Edit", onclick: () => { editRow.hidden = !editRow.hidden; } }),
        el("button", { type: "button", class: "danger", "data-testid": `revoke-${k.id}`, text: "Revoke", onclick: async () => {
          if (!confirm(`Revoke ${k.id}? Clients using it are refused from now on.`)) return;
          try { await api(`/keys/${encodeURIComponent(k.id)}`, { method: "DELETE" }); await load(); } catch (error) { showError(problem, error); }
        } }));
      const row = el("tr", { "data-testid": "key-row", "data-id": k.id },
        el("td", { text: k.id }), el("td", { text: k.source }), el("td", { text: k.models ? k.models.join(", ") : "all" }),
        el("td", { text: k.requests_per_minute ?? "–" }), el("td", { text: k.tokens_per_minute ?? "–" }),
        el("td", { text: k.daily_budget_usd ? `$${k.daily_budget_usd}` : "–" }), el("td", { text: k.monthly_budget_usd ? `$${k.monthly_budget_usd}` : "–" }),
        el("td", { text: k.admin ? "yes" : "" }), el("td", { text: Object.entries(k.metadata || {}).map(([a, b]) => `${a}=${b}`).join(", ") }), el("td", {}, actions));
      return [row, editRow];
    }).flat());
  }
  await load().catch((error) => showError(problem, error));
}

// ---------------------------------------------------------------------------- pipeline ---

async function pipeline() {
  const body = el("div", {}, el("p", { class: "muted", text: "loading…" }));
  main.replaceChildren(el("h1", { text: "Pipeline" }), body);
  let report;
  try { report = await api("/pipeline"); } catch (error) { return showError(body, error); }
  const enabled = report.plugins.filter((p) => p.enabled).sort((a, b) => a.position - b.position);
  body.replaceChildren(
    el("div", { class: "panel", "data-testid": "pipeline-order" }, el("h2", { text: "Plugins, in order" }),
      el("ol", {}, enabled.map((p) => el("li", {}, el("strong", { text: p.name }), p.roles.length ? ` (${p.roles.join(", ")})` : "", " ",
        el("span", { class: "muted", text: p.description || "" }),
        p.rules.length ? el("ul", { class: "plugin-rules" }, p.rules.map((rule) => el("li", { text: rule }))) : null)))),
    el("div", { class: "panel" }, el("h2", { text: "Hook order" }), el("table", {}, el("tbody", {},
      Object.entries(report.hooks).filter(([, names]) => names.length).map(([hook, names]) => el("tr", {}, el("td", { text: hook }), el("td", { text: names.join(" → ") })))))),
    el("div", { class: "panel" }, el("h2", { text: `Models (${report.models.length})` }), el("p", { text: report.models.join(", ") || "none" })),
    ...(report.routes || []).map((r) => routePanel(r)),
    el("div", { class: "panel", "data-testid": "pipeline-config" }, el("h2", { text: "Effective configuration (secrets masked)" }),
      enabled.map((p) => el("details", {}, el("summary", { text: p.name }), el("pre", { text: JSON.stringify(p.config, null, 2) })))));
}

function routePanel(route) {
  const live = Object.fromEntries((route.live || []).map((d) => [d.name, d]));
  const cell = (value) => el("td", { text: value === null || value === undefined ? "–" : String(value) });
  const seconds = (value) => (value === null || value === undefined ? null : `${(value * 1000).toFixed(0)} ms`);
  return el("div", { class: "panel", "data-testid": "route-" + route.model },
    el("h2", { text: `${route.model}: ${route.strategy} (${route.state})` }),
    el("table", {},
      el("thead", {}, el("tr", {}, ["deployment", "upstream", "tier", "weight", "limits", "in flight", "requests/min", "tokens/min", "latency", "refusing"].map((h) => el("th", { text: h })))),
      el("tbody", {}, route.deployments.map((d) => {
        const now = live[d.name] || {};
        const limits = [d.requests_per_minute && `${d.requests_per_minute} rpm`, d.tokens_per_minute && `${d.tokens_per_minute} tpm`, d.max_in_flight && `≤ ${d.max_in_flight} at once`].filter(Boolean).join(", ");
        return el("tr", {}, cell(d.name), cell(`${d.provider}/${d.model}`), cell(d.tier), cell(d.weight), cell(limits || "none"),
          cell(now.in_flight), cell(now.requests_in_window), cell(now.tokens_in_window), cell(seconds(now.latency_seconds)), cell(now.refusal || ""));
      }))));
}

// ------------------------------------------------------------------------------- shell ---

const PAGES = { "": overview, "/requests": requests, "/keys": keys, "/pipeline": pipeline };

function route() {
  const sub = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length).replace(/\/$/, "") : "";
  const page = PAGES[sub] ? sub : "";
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.getAttribute("href") === BASE + page);
  state.refresh = null;
  clearTimeout(state.timer);
  PAGES[page]().catch((error) => showError(main, error));
}

function login(message) {
  const key = el("input", { type: "password", name: "key", autocomplete: "off", required: true, "data-testid": "login-key", placeholder: "hg-…" });
  const problem = el("div", {});
  if (message) problem.append(el("p", { class: "error", text: message }));
  const form = el("form", { onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api("/session", { method: "POST", body: { key: key.value } });
      key.value = "";
      location.reload();
    } catch (error) {
      key.value = "";
      showError(problem, error.status === 401 ? new Error("That key is not valid.") : error.status === 403 ? new Error("That key is not an admin key.") : error);
    }
  } }, el("label", {}, "Admin key", key), el("button", { type: "submit", "data-testid": "login-submit", text: "Log in" }));
  main.replaceChildren(el("div", { class: "panel login" }, el("h1", { text: "Log in" }),
    el("p", { class: "muted", text: "Log in with an admin gateway key. The key is exchanged for a session; it is not kept in your browser." }), form, problem));
  key.focus();
}

async function boot() {
  const view = document.body.dataset.view;
  if (view === "login") return login();
  if (view === "denied") return login("This key is not an admin key: log in with an admin key.");
  if (view === "unavailable") {
    main.replaceChildren(el("p", { class: "error", text: "The gateway cannot check credentials right now; try again shortly." }));
    return;
  }
  try {
    const session = await api("/session");
    state.csrf = session.csrf_token;
    document.getElementById("who").textContent = session.key_id;
    document.getElementById("session").hidden = false;
  } catch (error) {
    // No session: an admin key in a header (scripts), or a gateway without api_keys (open).
  }
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").addEventListener("click", async () => {
    try { await api("/session", { method: "DELETE" }); } finally { location.assign(BASE); }
  });
  for (const link of document.querySelectorAll("#nav a")) {
    link.addEventListener("click", (e) => { e.preventDefault(); navigate(link.getAttribute("href")); });
  }
  window.addEventListener("popstate", route);
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible" && state.refresh) state.refresh().catch(() => setLive(false)); });
  route();
}

boot();
