// The Strata console: polls this node's admin routes every 2 s and draws what they say.
// No dependencies, nothing loaded from elsewhere (the page's CSP allows only this origin).
"use strict";
const HISTORY = 150; // samples kept per chart: 5 minutes at 2 s
const series = { commands: [], hits: [], l1: [] };
let last = null; // the previous /stats, for rates
const $ = (id) => document.getElementById(id);
const tokenInput = $("token");
tokenInput.value = sessionStorage.getItem("strata-token") || "";
let refused = false; // the last read was refused (401): wait for another credential
tokenInput.addEventListener("change", () => {
  sessionStorage.setItem("strata-token", tokenInput.value);
  refused = false;
  refreshNamespaces().catch(() => {});
});

function headers() {
  const t = tokenInput.value.trim();
  return t ? { Authorization: "Bearer " + t } : {};
}
async function get(path, method) {
  const r = await fetch(path, { method: method || "GET", headers: headers(), cache: "no-store",
    signal: AbortSignal.timeout(10000) });
  if (r.status === 401) refused = true;
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}
function text(el, v) { el.textContent = v; }
function cell(tr, v, cls) { const td = document.createElement("td"); td.textContent = v; if (cls) td.className = cls; tr.appendChild(td); }
function human(n) {
  if (n === null || n === undefined || isNaN(n)) return "-";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (a >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(1) + "K";
  return String(Math.round(n));
}
function secs(d) {
  if (d === null || d === undefined) return "none";
  return d >= 3600 ? (d / 3600).toFixed(1) + " h" : d >= 60 ? (d / 60).toFixed(1) + " min" : d + " s";
}
function ms(d) { return d === null || d === undefined ? "none" : d < 1000 ? d + " ms" : secs(d / 1000); }
function draw(id, values) {
  const svg = $(id), line = svg.querySelector("polyline");
  const max = Math.max(1e-9, ...values);
  const pts = values.map((v, i) => {
    const x = (i / Math.max(1, HISTORY - 1)) * 360;
    const y = 105 - (v / max) * 100;
    return x.toFixed(1) + "," + y.toFixed(1);
  });
  line.setAttribute("points", pts.join(" "));
  svg.dataset.samples = String(values.length);
}
function push(name, v) { const s = series[name]; s.push(v); if (s.length > HISTORY) s.shift(); }

async function refreshStatus() {
  const st = await get("status");
  text($("node"), st.node); text($("version"), "v" + st.version);
  text($("uptime"), secs(st.uptime_secs)); text($("connections"), st.connections);
  const c = st.cluster;
  const body = $("members").tBodies[0];
  body.textContent = "";
  if (!c) { text($("cluster-summary"), "not a cluster member"); return; }
  text($("cluster-summary"), `ring ${c.ring_version} · ${c.ring_members.length} on the ring · ` +
    `${c.replication_factor} owners per key · ${c.in_sync ? "in sync" : "NOT in sync"}`);
  $("cluster-summary").className = c.in_sync ? "good" : "bad";
  for (const m of c.members) {
    const tr = document.createElement("tr");
    tr.dataset.name = m.name; tr.className = m.state;
    cell(tr, m.name); cell(tr, m.state); cell(tr, m.generation); cell(tr, m.resp);
    const td = document.createElement("td"); const a = document.createElement("a");
    a.href = location.protocol + "//" + m.admin + "/"; a.textContent = m.admin; td.appendChild(a); tr.appendChild(td);
    cell(tr, m.rpc);
    const share = c.ring_shares ? c.ring_shares[m.name] : undefined;
    cell(tr, share === undefined ? "-" : (100 * share).toFixed(1) + " %", "num");
    const r = m.rpc_stats;
    cell(tr, r ? (r.rtt_us / 1000).toFixed(2) : "-", "num");
    cell(tr, r ? r.errors : "-", "num");
    body.appendChild(tr);
  }
}

async function refreshStats() {
  const s = await get("stats");
  const m = s.cache_manager, body = $("layers").tBodies[0];
  body.textContent = "";
  for (const layer of ["l1", "l2", "l3"]) {
    if (m[layer + "_hits"] === undefined) continue;
    const h = m[layer + "_hits"], mi = m[layer + "_misses"], lat = m[layer + "_latency_us"] || {};
    const tr = document.createElement("tr"); tr.dataset.layer = layer;
    cell(tr, layer.toUpperCase()); cell(tr, human(h), "num"); cell(tr, human(mi), "num");
    cell(tr, h + mi > 0 ? (100 * h / (h + mi)).toFixed(1) + " %" : "-", "num");
    cell(tr, lat.p50 ?? "-", "num"); cell(tr, lat.p99 ?? "-", "num"); cell(tr, m[layer + "_errors"], "num");
    body.appendChild(tr);
  }
  if (s.l1) {
    text($("l1-bytes"), human(s.l1.resident_bytes)); text($("l1-capacity"), human(s.l1.capacity_bytes));
    text($("l1-entries"), human(s.l1.entries)); text($("l1-evictions"), human(s.l1.evictions));
  }
  const now = { at: performance.now(), commands: s.server ? s.server.commands_total : 0,
    hits: s.hit_count, misses: s.miss_count };
  if (last) {
    const dt = Math.max(1e-3, (now.at - last.at) / 1000);
    const cmds = Math.max(0, (now.commands - last.commands) / dt);
    const lookups = (now.hits - last.hits) + (now.misses - last.misses);
    const ratio = lookups > 0 ? (now.hits - last.hits) / lookups : (series.hits.at(-1) ?? 0);
    push("commands", cmds); push("hits", ratio);
    text($("now-commands"), human(cmds)); text($("now-hits"), (100 * ratio).toFixed(1) + " %");
  }
  push("l1", s.l1 ? s.l1.resident_bytes : 0);
  text($("now-l1"), human(series.l1.at(-1)));
  last = now;
  draw("chart-commands", series.commands); draw("chart-hits", series.hits); draw("chart-l1", series.l1);
}

let counted = new Map(); // namespace -> {l1_keys, l3_keys}, from the last "count keys"
async function refreshNamespaces(list) {
  list = list || await get("namespaces");
  const body = $("namespaces").tBodies[0];
  body.textContent = "";
  for (const n of list) {
    const tr = document.createElement("tr"); tr.dataset.ns = n.name;
    cell(tr, n.name); cell(tr, ms(n.default_ttl_ms)); cell(tr, ms(n.max_ttl_ms));
    cell(tr, n.l1_share === null ? "shared" : (100 * n.l1_share).toFixed(0) + " %");
    cell(tr, n.use_l3 ? "on" : "off"); cell(tr, n.compression);
    const c = counted.get(n.name);
    const keys = (v) => (c === undefined ? "" : v === null ? "≥1M or -" : human(v));
    cell(tr, keys(c && c.l1_keys), "num"); cell(tr, keys(c && c.l3_keys), "num");
    body.appendChild(tr);
  }
}

async function refresh() {
  const line = $("status-line");
  try {
    await Promise.all([refreshStatus(), refreshStats()]);
    line.textContent = "ok " + new Date().toLocaleTimeString(); line.className = "good";
  } catch (e) {
    line.textContent = String(e.message) + (refused ? " (enter the admin credential)" : "");
    line.className = "bad";
  }
}
// One refresh at a time, every 2 s, while the tab is visible and the credential is not
// known to be refused (a wrong one is not retried until it changes).
async function loop() {
  if (!document.hidden && !refused) await refresh();
  setTimeout(loop, 2000);
}

$("act").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const kind = $("act-kind").value, ns = $("act-ns").value.trim() || "db0";
  const target = kind === "flush" ? "*" : $("act-target").value;
  const what = kind === "flush" ? `every key of namespace ${ns}` : `${kind} ${JSON.stringify(target)} in ${ns}`;
  if (!target || !window.confirm("Remove " + what + " on every layer (and every node)?")) return;
  const field = kind === "flush" ? "pattern" : kind;
  const url = `invalidate?ns=${encodeURIComponent(ns)}&${field}=${encodeURIComponent(target)}`;
  const out = $("act-result");
  try {
    const r = await fetch(url, { method: "POST", headers: headers() });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || r.status);
    out.textContent = `removed ${body.removed}`; out.className = "good";
  } catch (e) {
    out.textContent = "refused: " + e.message; out.className = "bad";
  }
});

// Counting passes over every key of each layer: on demand, one at a time.
$("count-keys").addEventListener("click", async () => {
  const button = $("count-keys");
  button.disabled = true;
  try {
    const list = await get("namespaces/count", "POST");
    counted = new Map(list.map((n) => [n.name, n]));
    await refreshNamespaces(list);
  } catch (e) { $("status-line").textContent = String(e.message); }
  button.disabled = false;
});

refreshNamespaces().catch(() => {});
loop();
