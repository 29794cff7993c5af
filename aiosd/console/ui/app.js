// aiosd console: plain JS, no build step. Everything from the API is rendered with textContent
// (never innerHTML), requests carry the bearer token in a header (no cookies), live updates come
// from the registry watch stream (/v1/watch, server-sent events read through fetch).
"use strict";

// /ui/?logout: forget the session's token before anything reads it.
if (new URLSearchParams(location.search).has("logout")) sessionStorage.removeItem("aiosd.token");
const state = { token: sessionStorage.getItem("aiosd.token") || "", role: "", name: "", page: "overview",
                watch: null, timer: null };

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
  const opts = { method, headers: { Authorization: "Bearer " + state.token } };
  if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  const r = await fetch(path, opts);
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
      return [id, insts.length, insts.map((i) => i.node_id).join(", "), cell];
    });
    main.appendChild(table(["block", "instances", "placement", ""], rows, "blocks"));
    const ps = await api("GET", "/v1/ps").catch(() => ({ instances: [] }));
    main.appendChild(el("h2", "Instances on this node"));
    main.appendChild(table(["instance", "block", "state"], (ps.instances || []).map((i) =>
      [i.instance_id || i.id, i.block_id || i.block, i.state]), "instances"));
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

function status(msg) { document.getElementById("status").textContent = msg || ""; }

async function render() {
  const main = document.getElementById("main");
  const fresh = el("div", null, { id: "page-" + state.page });
  try { await pages[state.page](fresh); status(""); } catch (e) { status(e.message); }
  main.replaceChildren(fresh);
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === state.page));
}

function soon() { clearTimeout(state.timer); state.timer = setTimeout(render, 1000); }

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
