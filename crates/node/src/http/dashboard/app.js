// The Perdure dashboard: plain JavaScript over the node's public HTTP API (docs/dashboard.md).
// Everything shown comes from the API; nothing is inserted as HTML (text nodes only).
"use strict";

const BASE = "/runtime/webhooks/durabletask";
const STATUSES = ["Pending", "Running", "Suspended", "Completed", "ContinuedAsNew", "Failed", "Terminated"];
const REFRESH_MS = 5000;
// Most rows a history table or a timeline shows.
const MAX_ROWS = 1000;

// ---- the API key: from ?code= (then kept for the tab), or typed into the key bar ----
let apiKey = null;
(function initKey() {
  const q = new URLSearchParams(location.search).get("code");
  if (q) {
    sessionStorage.setItem("perdure-key", q);
    // Out of the address bar and the history: the key stays in this tab's storage only.
    history.replaceState(null, "", location.pathname + location.hash);
  }
  apiKey = sessionStorage.getItem("perdure-key");
})();

// ---- DOM helpers ----
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    // Through the CSSOM: the page's CSP refuses inline style attributes.
    else if (k === "style") Object.assign(e.style, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
const view = () => document.getElementById("view");
function show(...nodes) {
  view().replaceChildren(...nodes);
}
// replaceChildren would insert "null" for an absent node.
function replace(parent, ...nodes) {
  parent.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined));
}
function flash(text, info) {
  const f = document.getElementById("flash");
  f.textContent = text;
  f.className = info ? "flash info" : "flash";
  f.hidden = !text;
}
function json(v) {
  return v === undefined || v === null ? "" : JSON.stringify(v, null, 2);
}
function short(v, n) {
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s && s.length > n ? s.slice(0, n) + "…" : s || "";
}
function when(t) {
  return t ? t.replace("T", " ").replace("Z", "") : "";
}

// ---- the API ----
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}
async function api(method, path, opts) {
  const headers = {};
  if (apiKey) headers["x-functions-key"] = apiKey;
  if (opts && opts.continuation) headers["x-ms-continuation-token"] = opts.continuation;
  let body;
  if (opts && opts.body !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(opts.body);
  }
  // Paths are under the Durable Functions base path, except the cluster view's.
  const url = path.startsWith("/cluster") ? path : BASE + path;
  const resp = await fetch(url, { method, headers, body });
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = text;
  }
  if (resp.status === 401) {
    askForKey(data && data.Message);
  }
  if (!resp.ok && !(opts && opts.accept && opts.accept.includes(resp.status))) {
    const msg = (data && (data.Message || data.message || data.reason)) || `${resp.status} ${resp.statusText}`;
    throw new ApiError(resp.status, `${method} ${path}: ${resp.status}: ${msg}`);
  }
  return { status: resp.status, data, continuation: resp.headers.get("x-ms-continuation-token") };
}
function askForKey(message) {
  const bar = document.getElementById("keybar");
  document.getElementById("keymsg").textContent = message || "This node needs an API key.";
  bar.hidden = false;
}

// ---- routing: #/instances, #/instances/<id>, #/entities, #/cluster ----
let current = null; // the view shown: { live, refresh(isCurrent) }
function route() {
  const hash = location.hash.replace(/^#/, "") || "/instances";
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", hash.startsWith(a.getAttribute("href").slice(1)));
  }
  flash("");
  if (hash.startsWith("/instances/")) {
    let id;
    try {
      id = decodeURIComponent(hash.slice("/instances/".length));
    } catch (_) {
      current = null;
      show(el("h2", {}, "Instance"));
      flash(`not an instance address: ${hash}`);
      return;
    }
    current = instancePage(id);
  } else if (hash.startsWith("/entities")) current = entitiesPage();
  else if (hash.startsWith("/cluster")) current = clusterPage();
  else current = instancesPage();
  refreshView();
}

// Refreshes run one at a time, in order: a refresh asked for while one runs runs after it,
// on whatever view is shown then; a reply for a view no longer shown is dropped.
let inFlight = false;
let again = false;
async function refreshView() {
  if (inFlight) {
    again = true;
    return;
  }
  inFlight = true;
  try {
    do {
      again = false;
      const view = current;
      if (!view) break;
      const isCurrent = () => view === current;
      try {
        await view.refresh(isCurrent);
      } catch (e) {
        if (isCurrent()) flash(e.message);
      }
    } while (again);
  } finally {
    inFlight = false;
  }
}

// Live refresh, only while the tab is visible and nothing else is being fetched.
setInterval(() => {
  if (!document.getElementById("live").checked || document.visibilityState !== "visible") return;
  if (inFlight || !current || !current.live) return;
  refreshView();
}, REFRESH_MS);

async function health() {
  const h = document.getElementById("health");
  try {
    const r = await fetch("/readyz");
    const d = await r.json();
    h.textContent = r.ok ? "ready" : `not ready: ${d.reason || ""}`;
    h.className = r.ok ? "health ok" : "health bad";
  } catch (_) {
    h.textContent = "unreachable";
    h.className = "health bad";
  }
}
setInterval(() => {
  if (document.visibilityState === "visible") health();
}, REFRESH_MS);

// Previous / next over a list's continuation tokens; a click while a page is being fetched
// is ignored (the token of the page after it is not known yet).
function pagerOf(state, at, continuation) {
  const go = (to) => () => {
    if (inFlight || state.page !== at) return;
    state.page = to;
    refreshView();
  };
  return [
    el("button", { type: "button", class: "prev", disabled: at === 0, onclick: go(at - 1) }, "‹ previous"),
    el("span", { class: "muted page-number" }, `page ${at + 1}`),
    el("button", { type: "button", class: "next", disabled: !continuation, onclick: go(at + 1) }, "next ›"),
  ];
}

// ---- instances ----
const listState = { filters: { statuses: [], name: "", prefix: "", from: "", to: "", top: "50" }, tokens: [null], page: 0 };

function isoOf(local) {
  // <input type=datetime-local> gives local time without a zone.
  if (!local) return null;
  const d = new Date(local);
  return isNaN(d) ? null : d.toISOString();
}

function instancesPage() {
  const f = listState.filters;
  const countsBox = el("div", { class: "counts", id: "counts" });
  const tableBox = el("div", { id: "instances" });
  const pager = el("div", { class: "pager" });
  const statusBoxes = STATUSES.map((s) =>
    el("label", {}, el("input", { type: "checkbox", name: "status", value: s, checked: f.statuses.includes(s) }), s));
  const input = (name, value, attrs) => el("input", Object.assign({ name, value }, attrs || {}));
  const form = el("form", { class: "filters", id: "filters" },
    el("label", {}, "status", el("div", { class: "statuses" }, statusBoxes)),
    el("label", {}, "name", input("name", f.name, { placeholder: "HelloSequence" })),
    el("label", {}, "id prefix", input("prefix", f.prefix, { placeholder: "order-" })),
    el("label", {}, "created from", input("from", f.from, { type: "datetime-local" })),
    el("label", {}, "created to", input("to", f.to, { type: "datetime-local" })),
    el("label", {}, "page size", el("select", { name: "top" }, ["10", "25", "50", "100", "500"].map((n) => el("option", { value: n, selected: n === f.top }, n)))),
    el("button", { type: "submit", id: "apply" }, "Apply"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    f.statuses = data.getAll("status");
    f.name = data.get("name").trim();
    f.prefix = data.get("prefix").trim();
    f.from = data.get("from");
    f.to = data.get("to");
    f.top = data.get("top");
    listState.tokens = [null];
    listState.page = 0;
    refreshView();
  });
  show(el("h2", {}, "Instances"), form, countsBox, tableBox, pager);

  const page = {
    live: true,
    async refresh(isCurrent) {
      const q = new URLSearchParams();
      if (f.statuses.length) q.set("runtimeStatus", f.statuses.join(","));
      if (f.name) q.set("name", f.name);
      if (f.prefix) q.set("instanceIdPrefix", f.prefix);
      if (isoOf(f.from)) q.set("createdTimeFrom", isoOf(f.from));
      if (isoOf(f.to)) q.set("createdTimeTo", isoOf(f.to));
      q.set("top", f.top);
      const at = listState.page;
      const token = listState.tokens[at];
      const cq = f.name ? `?name=${encodeURIComponent(f.name)}` : "";
      const [list, counts] = await Promise.all([
        api("GET", `/instances?${q}`, { continuation: token }),
        api("GET", `/instanceCounts${cq}`),
      ]);
      if (!isCurrent() || at !== listState.page) return;
      countsBox.replaceChildren(...STATUSES.map((s) =>
        el("button", { class: "count", type: "button", "data-status": s, onclick: () => {
          f.statuses = [s];
          listState.tokens = [null];
          listState.page = 0;
          route();
        } }, s, el("b", {}, String(counts.data[s] || 0)))));
      const rows = (list.data || []).map((i) => el("tr", { "data-id": i.instanceId },
        el("td", {}, el("a", { href: `#/instances/${encodeURIComponent(i.instanceId)}` }, i.instanceId)),
        el("td", {}, i.name),
        el("td", { class: `status-${i.runtimeStatus}` }, i.runtimeStatus),
        el("td", {}, when(i.createdTime)),
        el("td", {}, when(i.lastUpdatedTime)),
        el("td", { class: "json" }, short(i.customStatus, 60))));
      tableBox.replaceChildren(el("table", { id: "instance-table" },
        el("thead", {}, el("tr", {}, ["instance", "name", "status", "created", "updated", "custom status"].map((h) => el("th", {}, h)))),
        el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no instance matches")))));
      listState.tokens[at + 1] = list.continuation || undefined;
      pager.replaceChildren(...pagerOf(listState, at, list.continuation));
    },
  };
  return page;
}

// ---- one instance ----
function timelineOf(events, status) {
  if (!events || !events.length) return null;
  const t = (e) => Date.parse(e.Timestamp) || 0;
  let start = Infinity;
  let last = 0;
  for (const e of events) {
    start = Math.min(start, t(e));
    last = Math.max(last, t(e));
  }
  const finished = !["Running", "Pending", "Suspended"].includes(status);
  const end = finished ? last : Math.max(last, Date.now());
  const span = Math.max(end - start, 1);
  const byId = new Map();
  const rows = [];
  for (const e of events) {
    switch (e.EventType) {
      case "TaskScheduled":
      case "SubOrchestrationInstanceCreated":
      case "EntityOperationCalled":
      case "TimerCreated": {
        const label = e.EventType === "TimerCreated" ? `timer until ${when(e.FireAt)}`
          : e.EventType === "EntityOperationCalled" ? `call ${e.EntityId} ${e.Operation}`
          : e.EventType === "SubOrchestrationInstanceCreated" ? `sub-orchestration ${e.FunctionName} (${e.InstanceId})`
          : `activity ${e.FunctionName}`;
        const row = { label, from: t(e), to: null, kind: "open", id: e.EventId };
        byId.set(e.EventId, row);
        rows.push(row);
        break;
      }
      case "TaskCompleted":
      case "SubOrchestrationInstanceCompleted":
      case "EntityOperationCompleted":
      case "TimerFired":
      case "TaskFailed":
      case "SubOrchestrationInstanceFailed":
      case "EntityOperationFailed": {
        const row = byId.get(e.EventType === "TimerFired" ? e.TimerId : e.TaskScheduledId);
        if (row) {
          row.to = t(e);
          row.kind = e.EventType.endsWith("Failed") ? "failed" : "done";
        }
        break;
      }
      case "EventRaised":
        rows.push({ label: `event ${e.Name}`, from: t(e), to: t(e), kind: "point" });
        break;
      case "EventSent":
        rows.push({ label: `sent ${e.Name} to ${e.InstanceId}`, from: t(e), to: t(e), kind: "point" });
        break;
      case "EntityOperationSignaled":
        rows.push({ label: `signal ${e.EntityId} ${e.Operation}`, from: t(e), to: t(e), kind: "point" });
        break;
      default:
        break;
    }
  }
  const pct = (x) => `${(((x - start) / span) * 100).toFixed(2)}%`;
  const cut = rows.length > MAX_ROWS;
  const bars = rows.slice(0, MAX_ROWS).map((r) => {
    const to = r.to === null ? end : r.to;
    const cls = r.kind === "point" ? "tl-bar point" : r.kind === "failed" ? "tl-bar failed" : r.kind === "open" ? "tl-bar open" : "tl-bar";
    const style = { left: pct(r.from) };
    if (r.kind !== "point") style.width = `${(((to - r.from) / span) * 100).toFixed(2)}%`;
    return el("div", { class: "tl-row" },
      el("div", { class: "tl-label", title: r.label }, r.label),
      el("div", { class: "tl-track" }, el("div", { class: cls, style, title: `${r.label}: ${to - r.from} ms` })));
  });
  return el("div", { class: "timeline", id: "timeline" },
    bars.length ? bars : el("div", { class: "muted" }, "no activity, timer, sub-orchestration or event yet"),
    cut ? el("div", { class: "muted" }, `the first ${MAX_ROWS} of ${rows.length} rows`) : null,
    el("div", { class: "tl-axis" }, el("span", {}, "0 ms"), el("span", {}, `${end - start} ms`)));
}

function detailOf(e) {
  const parts = [];
  for (const k of ["FunctionName", "Name", "InstanceId", "EntityId", "Operation", "OrchestrationStatus", "Reason", "FireAt", "TaskScheduledId", "TimerId"]) {
    if (e[k] !== undefined && e[k] !== null) parts.push(`${k}: ${typeof e[k] === "string" ? e[k] : JSON.stringify(e[k])}`);
  }
  for (const k of ["Input", "Result"]) {
    if (e[k] !== undefined && e[k] !== null) parts.push(`${k}: ${short(e[k], 200)}`);
  }
  if (e.FailureDetails) parts.push(`Failure: ${short(e.FailureDetails, 300)}`);
  return parts.join("\n");
}

function instancePage(id) {
  const path = `/instances/${encodeURIComponent(id)}`;
  let acting = false;
  const act = async (label, method, suffix, opts) => {
    // The id quoted: bidirectional characters in it cannot reorder the question.
    if (acting || !confirm(`${label} ${JSON.stringify(id)}?`)) return;
    acting = true;
    try {
      const r = await api(method, path + suffix, opts);
      if (current !== page) return;
      flash(`${label}: done (${r.status})`, true);
      if (method === "DELETE") {
        location.hash = "#/instances";
        return;
      }
      if (r.data && r.data.id && r.data.id !== id) {
        location.hash = `#/instances/${encodeURIComponent(r.data.id)}`;
        return;
      }
      page.shown = null;
      refreshView();
    } catch (e) {
      if (current === page) flash(e.message);
    } finally {
      acting = false;
    }
  };
  const reason = el("input", { id: "reason", placeholder: "reason" });
  const eventName = el("input", { id: "event-name", placeholder: "event name" });
  const eventData = el("input", { id: "event-data", placeholder: "JSON data (optional)" });
  const newId = el("input", { type: "checkbox", id: "restart-new-id", checked: true });
  const why = () => (reason.value ? `?reason=${encodeURIComponent(reason.value)}` : "");
  const actions = el("div", { class: "actions" },
    reason,
    el("button", { id: "terminate", onclick: () => act("Terminate", "POST", `/terminate${why()}`) }, "Terminate"),
    el("button", { id: "suspend", onclick: () => act("Suspend", "POST", `/suspend${why()}`) }, "Suspend"),
    el("button", { id: "resume", onclick: () => act("Resume", "POST", `/resume${why()}`) }, "Resume"),
    el("button", { id: "rewind", onclick: () => act("Rewind", "POST", `/rewind${why()}`) }, "Rewind"),
    el("label", {}, newId, " new id"),
    el("button", { id: "restart", onclick: () => act("Restart", "POST", `/restart?restartWithNewInstanceId=${newId.checked}`) }, "Restart"),
    el("button", { id: "purge", onclick: () => act("Purge", "DELETE", "") }, "Purge"));
  const raise = el("div", { class: "actions" },
    eventName, eventData,
    el("button", { id: "raise", onclick: () => {
      let body;
      if (eventData.value.trim()) {
        try {
          body = JSON.parse(eventData.value);
        } catch (e) {
          flash(`event data is not JSON: ${e.message}`);
          return;
        }
      }
      if (!eventName.value.trim()) {
        flash("give the event a name");
        return;
      }
      act(`Raise ${eventName.value} on`, "POST", `/raiseEvent/${encodeURIComponent(eventName.value.trim())}`, { body });
    } }, "Raise event"));
  const fields = el("dl", { class: "fields", id: "fields" });
  const payloads = el("div", { id: "payloads" });
  const timeline = el("div");
  const table = el("div");
  show(el("h2", {}, "Instance ", el("span", { id: "instance-id" }, id)), fields, actions, raise, payloads,
    el("h3", {}, "Timeline"), timeline, el("h3", {}, "History"), table);

  const page = {
    live: true,
    shown: null, // what the page shows: status and last update, to skip unchanged refreshes
    async refresh(isCurrent) {
      const r = await api("GET", `${path}?showHistory=true&showHistoryOutput=true&showInput=true`, { accept: [404] });
      if (!isCurrent()) return;
      if (r.status === 404) {
        // Kept live: the instance may be about to start.
        page.shown = null;
        fields.replaceChildren(el("dt", {}, "status"), el("dd", { id: "status" }, "not found"));
        payloads.replaceChildren();
        timeline.replaceChildren();
        table.replaceChildren();
        return;
      }
      const s = r.data;
      const shown = `${s.runtimeStatus} ${s.lastUpdatedTime} ${(s.historyEvents || []).length}`;
      if (shown === page.shown) return;
      page.shown = shown;
      const row = (k, v, attrs) => [el("dt", {}, k), el("dd", attrs || {}, v === undefined || v === null ? "" : v)];
      fields.replaceChildren(
        ...row("name", s.name),
        ...row("status", s.runtimeStatus, { id: "status", class: `status-${s.runtimeStatus}` }),
        ...row("created", when(s.createdTime)),
        ...row("last updated", when(s.lastUpdatedTime)),
        ...row("version", s.version),
        ...row("execution", s.executionId),
        ...row("parent", s.parentInstanceId ? el("a", { href: `#/instances/${encodeURIComponent(s.parentInstanceId)}` }, s.parentInstanceId) : ""));
      replace(payloads,
        el("h3", {}, "Input"), el("pre", { id: "input" }, json(s.input)),
        el("h3", {}, "Output"), el("pre", { id: "output" }, json(s.output)),
        el("h3", {}, "Custom status"), el("pre", { id: "custom-status" }, json(s.customStatus)),
        s.failureDetails ? el("h3", {}, "Failure") : null,
        s.failureDetails ? el("pre", { id: "failure" }, json(s.failureDetails)) : null);
      const events = s.historyEvents || [];
      timeline.replaceChildren(timelineOf(events, s.runtimeStatus) || el("div", { class: "muted" }, "no history"));
      // A large history: its first and last events (the API has them all).
      const cut = events.length > MAX_ROWS;
      const rows = cut ? events.slice(0, MAX_ROWS / 2).concat(events.slice(-MAX_ROWS / 2)) : events;
      replace(table, cut ? el("p", { class: "muted", id: "history-cut" },
        `${events.length} events: the first and last ${MAX_ROWS / 2} are shown (GET ${path}?showHistory=true has them all)`) : null,
      el("table", { id: "history" },
        el("thead", {}, el("tr", {}, ["id", "event", "time", "details"].map((h) => el("th", {}, h)))),
        el("tbody", {}, rows.map((e) => el("tr", {},
          el("td", {}, e.EventId === -1 ? "" : String(e.EventId)),
          el("td", {}, e.EventType),
          el("td", {}, when(e.Timestamp)),
          el("td", { class: "json" }, detailOf(e)))))));
      page.live = ["Running", "Pending", "Suspended"].includes(s.runtimeStatus);
    },
  };
  return page;
}

// ---- entities ----
const entityState = { name: "", tokens: [null], page: 0 };
function entitiesPage() {
  const nameInput = el("input", { name: "entity-name", value: entityState.name, placeholder: "entity name (all when empty)" });
  const form = el("form", { class: "filters", id: "entity-filters" }, el("label", {}, "name", nameInput), el("button", { type: "submit" }, "Apply"));
  const box = el("div", { id: "entities" });
  const pager = el("div", { class: "pager" });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    entityState.name = nameInput.value.trim();
    entityState.tokens = [null];
    entityState.page = 0;
    refreshView();
  });
  show(el("h2", {}, "Entities"), form, box, pager);
  const page = {
    live: true,
    async refresh(isCurrent) {
      const path = entityState.name ? `/entities/${encodeURIComponent(entityState.name)}` : "/entities";
      const at = entityState.page;
      const r = await api("GET", `${path}?fetchState=true&top=50`, { continuation: entityState.tokens[at] });
      if (!isCurrent() || at !== entityState.page) return;
      const rows = (r.data || []).map((e) => el("tr", {},
        el("td", {}, e.entityId.name),
        el("td", {}, e.entityId.key),
        el("td", { class: "json" }, short(e.state, 300)),
        el("td", {}, e.lockedBy || ""),
        el("td", {}, String(e.backlogQueueSize)),
        el("td", {}, when(e.lastOperationTime))));
      box.replaceChildren(el("table", { id: "entity-table" },
        el("thead", {}, el("tr", {}, ["name", "key", "state", "locked by", "backlog", "last operation"].map((h) => el("th", {}, h)))),
        el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no entity")))));
      entityState.tokens[at + 1] = r.continuation || undefined;
      pager.replaceChildren(...pagerOf(entityState, at, r.continuation));
    },
  };
  return page;
}

// ---- cluster ----
function clusterPage() {
  const nodes = el("div", { id: "nodes" });
  const parts = el("div", { id: "partitions" });
  show(el("h2", {}, "Cluster"), el("h3", {}, "Nodes"), nodes, el("h3", {}, "Partitions"), parts);
  return {
    live: true,
    async refresh(isCurrent) {
      const [n, p] = await Promise.all([api("GET", "/cluster/nodes"), api("GET", "/cluster/partitions")]);
      if (!isCurrent()) return;
      const ms = (t) => (t ? new Date(t).toISOString().replace("T", " ").replace("Z", "") : "");
      nodes.replaceChildren(
        el("p", { class: "muted" }, `seen from ${n.data.node}`, n.data.notReady ? ` (not ready: ${n.data.notReady})` : ""),
        el("table", { id: "node-table" },
          el("thead", {}, el("tr", {}, ["node", "live", "leaving", "partitions", "HTTP", "cluster", "version", "started", "last seen"].map((h) => el("th", {}, h)))),
          el("tbody", {}, (n.data.nodes || []).map((x) => el("tr", {},
            el("td", {}, x.name), el("td", {}, x.live ? "yes" : "no"), el("td", {}, x.leaving ? "yes" : ""),
            el("td", {}, String(x.partitions)), el("td", {}, x.httpAddress), el("td", {}, x.clusterAddress),
            el("td", {}, x.version), el("td", {}, ms(x.startedAt)), el("td", {}, ms(x.lastSeen)))))));
      parts.replaceChildren(el("table", { id: "partition-table" },
        el("thead", {}, el("tr", {}, ["partition", "owner", "epoch", "since", "lease until", "desired"].map((h) => el("th", {}, h)))),
        el("tbody", {}, (p.data.partitions || []).map((x) => el("tr", {},
          el("td", {}, String(x.partition)), el("td", {}, x.owner || "—"), el("td", {}, String(x.epoch)),
          el("td", {}, ms(x.since)), el("td", {}, ms(x.expiresAt)), el("td", {}, x.desired || ""))))));
    },
  };
}

// ---- start ----
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("keyform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    apiKey = document.getElementById("keyinput").value.trim() || null;
    if (apiKey) sessionStorage.setItem("perdure-key", apiKey);
    else sessionStorage.removeItem("perdure-key");
    document.getElementById("keybar").hidden = true;
    route();
  });
  document.getElementById("keybutton").addEventListener("click", () => {
    const bar = document.getElementById("keybar");
    document.getElementById("keymsg").textContent = apiKey ? "Replace the API key:" : "API key:";
    bar.hidden = !bar.hidden;
  });
  window.addEventListener("hashchange", route);
  health();
  route();
});
