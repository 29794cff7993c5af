// aiosd console: plain JS, no build step. Everything from the API is rendered with textContent
// (never innerHTML), requests carry the bearer token in a header (no cookies), live updates come
// from the registry watch stream (/v1/watch, server-sent events read through fetch).
"use strict";

// /ui/?logout: forget the session's token before anything reads it.
if (new URLSearchParams(location.search).has("logout")) sessionStorage.removeItem("aiosd.token");
const state = { token: sessionStorage.getItem("aiosd.token") || "", role: "", name: "", page: "overview",
                watch: null, timer: null, gen: 0, rendering: false, dirty: false };

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function table(headers, rows, id) {
  const t = el("table", null, id ? { id } : {});
  const hr = el("tr");
  headers.forEach((h) => hr.appendChild(el("th", h)));
  t.appendChild(hr);
  rows.forEach((r) => {
    const tr = el("tr");
    r.forEach((c) => {
      const td = el("td");
      if (c instanceof Node) td.appendChild(c); else td.textContent = c === undefined || c === null ? "" : String(c);
      tr.appendChild(td);
    });
    t.appendChild(tr);
  });
  return t;
}

async function api(method, path, body) {
  // A page never waits forever: a request gets 15 s, then the page shows the error (and the next
  // live update renders it again).
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 15000);
  const opts = { method, headers: { Authorization: "Bearer " + state.token }, signal: ctl.signal };
  if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  let r;
  try { r = await fetch(path, opts); } catch (e) {
    throw new Error(ctl.signal.aborted ? method + " " + path + ": no answer in 15 s" : e.message);
  } finally { clearTimeout(timer); }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((data.error && data.error.message) || ("HTTP " + r.status));
  return data;
}

const canOperate = () => state.role === "admin" || state.role === "operator";

const pages = {
  async overview(main) {
    const st = await api("GET", "/v1/status");
    main.appendChild(el("h2", "Network"));
    main.appendChild(table(["node", "network", "cluster", "version", "peers"],
      [[st.node_id, st.network_id, st.cluster, st.version, (st.peers || []).length]], "overview-status"));
    const cl = await api("GET", "/v1/clusters").catch(() => ({ clusters: [] }));
    main.appendChild(el("h2", "Clusters"));
    main.appendChild(table(["cluster", "leader", "nodes"], (cl.clusters || []).map((c) =>
      [c.name, c.leader, (c.nodes || []).length]), "clusters"));
    main.appendChild(el("h2", "Alerts"));
    const alerts = await collectAlerts();
    const ul = el("ul", null, { id: "alerts" });
    (alerts.length ? alerts : ["no alerts: every node alive, every instance here healthy, every vDAG served"])
      .forEach((a) => ul.appendChild(el("li", a)));
    main.appendChild(ul);
  },
  async nodes(main) {
    const n = await api("GET", "/v1/nodes");
    const m = await api("GET", "/v1/metrics/nodes").catch(() => ({ nodes: [] }));
    const byNode = {};
    (m.nodes || m.items || []).forEach((s) => { if (s && s.node) byNode[s.node] = s; });
    main.appendChild(el("h2", "Nodes"));
    main.appendChild(table(["node", "state", "address", "cluster", "roles", "gpus"], (n.nodes || []).map((x) =>
      [x.node_id, x.state, x.addr, x.cluster, (x.roles || []).join(","),
       JSON.stringify((byNode[x.node_id] || {}).gpus || "")]), "nodes"));
    const h = await api("GET", "/v1/metrics/history?from=" + Math.floor(Date.now() / 1000 - 3600));
    const name = Object.keys(h.series || {}).find((k) => k.startsWith("cpu")) || Object.keys(h.series || {})[0];
    main.appendChild(el("h3", "History (last hour) " + (name || "")));
    main.appendChild(chart(h.t || [], name ? h.series[name] : []));
  },
  async blocks(main) {
    const p = await api("GET", "/v1/controller/placements");
    main.appendChild(el("h2", "Blocks"));
    const rows = Object.entries(p.blocks || {}).map(([id, b]) => {
      const insts = b.instances || [];
      const cell = el("span");
      if (canOperate()) {
        const input = el("input", null, { type: "number", min: "0", value: String(insts.length),
                                          "data-block": id, class: "scale-count" });
        const btn = el("button", "Scale", { type: "button", "data-block": id, class: "scale" });
        btn.addEventListener("click", async () => {
          try { await api("POST", "/v1/controller/placements", { block_id: id, count: Number(input.value) });
                setTimeout(render, 300); } catch (e) { status(e.message); }
        });
        cell.appendChild(input); cell.appendChild(btn);
      }
      if (canOperate()) cell.appendChild(deleteButton(id, "/v1/controller/placements/" + encodeURIComponent(id)));
      return [id, insts.length, insts.map((i) => i.node_id).join(", "), cell];
    });
    main.appendChild(table(["block", "instances", "placement", ""], rows, "blocks"));
    const local = await api("GET", "/v1/blocks").catch(() => ({ items: [] }));
    main.appendChild(el("h2", "Blocks applied on this node"));
    main.appendChild(table(["block", "component", "instances", "healthy", ""], (local.items || []).map((b) => {
      const st = b.status || {};
      return [b.id, b.component || b.blockComponentURI || "", st.instances, st.healthy,
              canOperate() ? deleteButton(b.id, "/v1/blocks/" + encodeURIComponent(b.id)) : ""];
    }), "local-blocks"));
    const ps = await api("GET", "/v1/ps").catch(() => ({ instances: [] }));
    main.appendChild(el("h2", "Instances on this node"));
    const logs = el("pre", null, { id: "logs", class: "logs" });
    main.appendChild(table(["instance", "block", "state", ""], (ps.instances || []).map((i) => {
      const iid = i.instance_id || i.id;
      const btn = el("button", "Logs", { type: "button", class: "logs-btn", "data-instance": iid });
      btn.addEventListener("click", async () => {
        try { logs.textContent = await text("/v1/logs/" + encodeURIComponent(iid) + "?tail=100"); }
        catch (e) { status(e.message); }
      });
      return [iid, i.block_id || i.block, i.state, btn];
    }), "instances"));
    main.appendChild(logs);
  },
  async vdags(main) {
    const v = await api("GET", "/v1/vdags");
    main.appendChild(el("h2", "vDAGs"));
    const items = v.items || [];
    main.appendChild(table(["vDAG", "status", "stages", "reason"], items.map((x) =>
      [x.uri, x.status, x.stages, x.reason]), "vdags"));
    for (const x of items.slice(0, 20)) {
      const d = await api("GET", "/v1/vdags/" + encodeURIComponent(x.uri)).catch(() => null);
      if (!d) continue;
      const m = d.metrics || {};
      const lat = m.latency_ms || {};
      main.appendChild(el("h3", x.uri + " — " + (d.health || "") + ", " + (m.requests || 0) + " requests, p50 " +
        (lat.p50 || 0) + " ms, p99 " + (lat.p99 || 0) + " ms"));
      main.appendChild(graph(d.stages || [], m.errors_by_stage || {}, hopTimes(d.trace || [])));
    }
  },
  async llm(main) {
    const models = await api("GET", "/v1/models").catch(() => ({ data: [] }));
    main.appendChild(el("h2", "LLM endpoints"));
    main.appendChild(table(["model", "component"], (models.data || []).map((x) => [x.id, x.component]), "models"));
    const servers = await api("GET", "/v1/registry/inference_servers").catch(() => ({ items: [] }));
    main.appendChild(el("h3", "Inference servers"));
    main.appendChild(table(["node", "url", "models"], (servers.items || servers.records || []).map((r) => {
      const x = r.value || r;
      return [x.node || r.key, x.url, (x.models || []).join(", ")];
    }), "inference-servers"));
    const metrics = await api("GET", "/v1/metrics").catch(() => ({}));
    const rows = [];
    llmStats(metrics, "", rows);
    main.appendChild(el("h3", "Per instance"));
    main.appendChild(table(["instance", "tok/s", "TTFT p50 (ms)", "TPOT p50 (ms)", "sessions", "queue"], rows.map((r) =>
      [r.where, num(r.m.llm_tokens_per_second), ms(r.m.llm_ttft_p50_seconds), ms(r.m.llm_tpot_p50_seconds),
       r.m.llm_active_sessions, r.m.llm_queue_length]), "llm-stats"));
  },
  async preview(main) {
    main.appendChild(el("h2", "Placement preview (apply --dry-run)"));
    const area = el("textarea", null, { id: "preview-doc", rows: "12", cols: "90",
                                        placeholder: "AIOS JSON document(s): a component, a block, a vDAG" });
    const btn = el("button", "Preview", { type: "button", id: "preview-btn" });
    const out = el("div", null, { id: "preview-out" });
    btn.addEventListener("click", async () => {
      out.replaceChildren();
      try {
        const r = await fetch("/v1/apply?dry_run=1", { method: "POST", body: area.value,
          headers: { Authorization: "Bearer " + state.token, "Content-Type": "application/json" } });
        const data = await r.json().catch(() => ({}));
        if (!r.ok) throw new Error((data.error && data.error.message) || ("HTTP " + r.status));
        out.appendChild(table(["kind", "id", "action"], (data.documents || []).map((d) => [d.kind, d.id, d.action]),
          "preview-docs"));
        out.appendChild(el("pre", JSON.stringify(data, null, 2), { class: "logs" }));
      } catch (e) { out.appendChild(el("p", "refused: " + e.message, { class: "error", id: "preview-error" })); }
    });
    main.appendChild(area); main.appendChild(el("br")); main.appendChild(btn); main.appendChild(out);
  },
  async tasks(main) {
    const t = await api("GET", "/v1/tasks");
    main.appendChild(el("h2", "Tasks"));
    main.appendChild(table(["task", "kind", "state"], (t.tasks || []).map((x) => [x.id, x.kind, x.state]), "tasks"));
  },
  async policies(main) {
    const p = await api("GET", "/v1/policies");
    main.appendChild(el("h2", "Policies"));
    main.appendChild(table(["policy", "source"], (p.policies || []).map((x) => [x.uri || x.name, x.source || ""]),
      "policies"));
  },
  async assets(main) {
    const a = await api("GET", "/v1/assets");
    main.appendChild(el("h2", "Assets"));
    main.appendChild(table(["asset", "type", "size"], (a.assets || []).map((x) => [x.uri, x.type, x.size]), "assets"));
  },
  async audit(main) {
    main.appendChild(el("h2", "Audit"));
    if (state.role !== "admin") { main.appendChild(el("p", "The audit trail is for admins.")); return; }
    const a = await api("GET", "/v1/audit?scope=network&limit=200");
    main.appendChild(table(["time", "node", "user", "role", "action", "target", "result"], a.entries.map((e) =>
      [new Date(e.ts * 1000).toISOString(), e.node, e.user, e.role, e.action, e.target, e.result]), "audit"));
  },
};

function chart(ts, values) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart"); svg.setAttribute("width", "600"); svg.setAttribute("height", "120");
  const pts = ts.map((t, i) => [t, values[i]]).filter((p) => typeof p[1] === "number");
  if (pts.length > 1) {
    const t0 = pts[0][0], t1 = pts[pts.length - 1][0];
    const vmax = Math.max(...pts.map((p) => p[1]), 1e-9);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("fill", "none"); line.setAttribute("stroke", "#36c");
    line.setAttribute("points", pts.map((p) =>
      ((p[0] - t0) / Math.max(t1 - t0, 1) * 590 + 5).toFixed(1) + "," + (115 - p[1] / vmax * 110).toFixed(1)).join(" "));
    svg.appendChild(line);
  }
  return svg;
}

function deleteButton(id, path) {
  // Two clicks: "Delete", then "Confirm delete" (no browser dialog to get in the way).
  const btn = el("button", "Delete", { type: "button", class: "delete", "data-block": id });
  btn.addEventListener("click", async () => {
    if (btn.dataset.armed !== "1") { btn.dataset.armed = "1"; btn.textContent = "Confirm delete"; return; }
    try { await api("DELETE", path); setTimeout(render, 300); } catch (e) { status(e.message); }
  });
  return btn;
}

async function collectAlerts() {
  const out = [];
  const n = await api("GET", "/v1/nodes").catch(() => ({ nodes: [] }));
  (n.nodes || []).forEach((x) => { if (x.state !== "alive" && x.state !== "left") out.push("node " + x.node_id + " is " + x.state); });
  const ps = await api("GET", "/v1/ps").catch(() => ({ instances: [] }));
  (ps.instances || []).forEach((i) => {
    if (i.state && i.state !== "healthy") out.push("instance " + (i.instance_id || i.id) + " is " + i.state);
  });
  const v = await api("GET", "/v1/vdags").catch(() => ({ items: [] }));
  (v.items || []).forEach((x) => { if (x.status && x.status !== "active") out.push("vDAG " + x.uri + " is " + x.status); });
  return out;
}

async function text(path) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + state.token } });
  const body = await r.text();
  if (!r.ok) throw new Error(body.slice(0, 300) || ("HTTP " + r.status));
  return body;
}

const num = (x) => (typeof x === "number" ? x.toFixed(1) : "");
const ms = (x) => (typeof x === "number" ? (x * 1000).toFixed(1) : "");

function llmStats(obj, where, rows) {
  // Finds every object with llm_* numbers in /v1/metrics, wherever the instance sits in it.
  if (!obj || typeof obj !== "object" || rows.length > 200) return;
  if (Object.keys(obj).some((k) => k.startsWith("llm_"))) { rows.push({ where: where || "this node", m: obj }); return; }
  for (const [k, v] of Object.entries(obj)) llmStats(v, where ? where + "/" + k : k, rows);
}

function hopTimes(traces) {
  // Per stage: mean time from the previous stage's receipt to this one's (receipt clocks).
  const sums = {}, counts = {};
  for (const tr of traces) {
    for (let i = 1; i < tr.length; i++) {
      if (typeof tr[i].ts !== "number" || typeof tr[i - 1].ts !== "number") continue;
      sums[tr[i].label] = (sums[tr[i].label] || 0) + (tr[i].ts - tr[i - 1].ts);
      counts[tr[i].label] = (counts[tr[i].label] || 0) + 1;
    }
  }
  const out = {};
  for (const k of Object.keys(sums)) out[k] = (sums[k] / counts[k]) * 1000;
  return out;
}

function graph(stages, errors, hops) {
  // Stages in columns by depth (longest path from a head), edges parent -> child.
  const ns = "http://www.w3.org/2000/svg";
  const byLabel = {};
  stages.forEach((s) => { byLabel[s.label] = s; });
  const depth = {};
  const depthOf = (l, seen) => {
    if (depth[l] !== undefined) return depth[l];
    if (seen.has(l)) return 0;
    seen.add(l);
    const ps = (byLabel[l] && byLabel[l].parents) || [];
    depth[l] = ps.length ? 1 + Math.max(...ps.map((p) => depthOf(p, seen))) : 0;
    return depth[l];
  };
  stages.forEach((s) => depthOf(s.label, new Set()));
  const cols = {};
  stages.forEach((s) => { (cols[depth[s.label]] = cols[depth[s.label]] || []).push(s.label); });
  const W = 190, H = 70, pos = {};
  Object.entries(cols).forEach(([d, labels]) => labels.forEach((l, i) => { pos[l] = [10 + Number(d) * W, 10 + i * H]; }));
  const ncols = Object.keys(cols).length, nrows = Math.max(1, ...Object.values(cols).map((c) => c.length));
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "graph"); svg.setAttribute("width", String(ncols * W + 20));
  svg.setAttribute("height", String(nrows * H + 20));
  const add = (tag, attrs, txt) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (txt !== undefined) e.textContent = txt;
    svg.appendChild(e);
    return e;
  };
  stages.forEach((s) => (s.children || []).forEach((c) => {
    if (!pos[c]) return;
    add("line", { x1: pos[s.label][0] + 150, y1: pos[s.label][1] + 25, x2: pos[c][0], y2: pos[c][1] + 25,
                  stroke: "#888" });
  }));
  stages.forEach((s) => {
    const [x, y] = pos[s.label];
    const bad = !s.healthy || (errors[s.label] || 0) > 0;
    add("rect", { x, y, width: 150, height: 50, rx: 6, fill: bad ? "#fdd" : "#eef", stroke: bad ? "#c33" : "#36c",
                  class: "stage", "data-stage": s.label });
    add("text", { x: x + 6, y: y + 16, "font-size": 12 }, s.label + " · " + s.block_id);
    add("text", { x: x + 6, y: y + 31, "font-size": 11 },
        (s.serving || []).length + " serving" + (hops[s.label] !== undefined ? ", " + hops[s.label].toFixed(1) + " ms" : ""));
    add("text", { x: x + 6, y: y + 45, "font-size": 11 }, (errors[s.label] || 0) + " errors");
  });
  return svg;
}

function status(msg) { document.getElementById("status").textContent = msg || ""; }

async function render() {
  // Renders overlap (a live update, then a click to another page): only the newest one is shown,
  // so a slow answer for the page the user left never replaces the page they are on.
  const gen = ++state.gen;
  state.rendering = true;
  const page = state.page;
  const main = document.getElementById("main");
  const fresh = el("div", null, { id: "page-" + page });
  let problem = "";
  try { await pages[page](fresh); } catch (e) { problem = e.message; }
  if (gen !== state.gen) return;
  state.rendering = false;
  if (state.dirty) { state.dirty = false; soon(); }  // live updates that came meanwhile: one more render
  status(problem);
  main.replaceChildren(fresh);
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === state.page));
}

// Pages with a form the user fills keep it: a live update never re-renders them.
const STILL = new Set(["preview"]);

function soon() {
  clearTimeout(state.timer);
  state.timer = setTimeout(() => {
    const a = document.activeElement;
    if (STILL.has(state.page)) return;
    if (state.rendering) { state.dirty = true; return; }  // never supersede a render with a live update
    if (a && (a.tagName === "INPUT" || a.tagName === "TEXTAREA") && document.getElementById("main").contains(a)) {
      soon();  // the user is typing (a scale count): try again later
      return;
    }
    render();
  }, 1000);
}

async function watch() {
  // One stream for the session; a change re-renders the page at most once a second.
  if (state.watch) state.watch.abort();
  const ctl = new AbortController();
  state.watch = ctl;
  try {
    const r = await fetch("/v1/watch?table=nodes,metrics,clusters", { headers: { Authorization: "Bearer " + state.token },
                                                                        signal: ctl.signal });
    const reader = r.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (new TextDecoder().decode(value).includes("event:")) soon();
    }
  } catch (e) { /* aborted or the daemon went away */ }
}

async function login(token) {
  state.token = token;
  const me = await api("GET", "/v1/whoami");
  state.role = me.role; state.name = me.name;
  sessionStorage.setItem("aiosd.token", token);
  if (location.search) history.replaceState(null, "", "/ui/" + location.hash);  // drop ?logout
  document.getElementById("who").textContent = me.name + " (" + me.role + ")";
  document.getElementById("login").hidden = true;
  document.getElementById("nav").hidden = false;
  state.page = (location.hash || "#overview").slice(1);
  if (!pages[state.page]) state.page = "overview";
  await render();
  watch();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try { await login(document.getElementById("token").value.trim()); document.getElementById("login-error").textContent = ""; }
    catch (e) { document.getElementById("login-error").textContent = "login failed: " + e.message; }
  });
  document.getElementById("logout").addEventListener("click", () => {
    if (state.watch) state.watch.abort(); location.replace("/ui/?logout");
  });
  window.addEventListener("hashchange", () => {
    const p = location.hash.slice(1); if (pages[p]) { state.page = p; render(); }
  });
  if (state.token) login(state.token).catch(() => sessionStorage.removeItem("aiosd.token"));
});
