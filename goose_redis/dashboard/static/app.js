// The goose-redis dashboard: polls api/snapshot every 2 s and draws it; the controls POST to
// api/command. No library: the charts are inline SVG. Every text from the server goes into the
// page as text (textContent), never as markup.
"use strict";

const REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let report = null; // the final report, once fetched (kept when the server goes away)
let lastView = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  }
  for (const c of children) node.append(c === null || c === undefined ? "" : String(c));
  return node;
}

function num(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "-";
  return Number(v).toLocaleString("en-US", { maximumFractionDigits: digits ?? 0 });
}

function clock(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = String(m).padStart(2, "0"), ss = String(r).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

function setValue(id, value, text) {
  const node = $(id);
  node.dataset.value = value === null || value === undefined ? "" : String(value);
  node.textContent = text;
}

function cell(text, cls, value) {
  const td = el("td", { class: cls || null });
  td.textContent = text;
  if (value !== undefined) td.dataset.value = value === null ? "" : String(value);
  return td;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// -- the view ----------------------------------------------------------------------------

function render(view) {
  lastView = view;
  const snap = view.snapshot;
  const problem = $("problem");
  let trouble = view.problem || "";
  if (!snap && !trouble) {
    trouble = view.gaggle
      ? `No live view of gaggle '${view.gaggle}': no Manager has written one lately (state: ${view.run?.state || "none"}).`
      : "No view yet.";
  }
  if (snap && !view.manager_alive && !["done"].includes(snap.state)) {
    trouble = "The Manager's heartbeat is gone: these figures are its last.";
  }
  problem.hidden = !trouble;
  problem.textContent = trouble;
  $("source").textContent = view.redis ? `${view.redis}, gaggle '${view.gaggle}'` : "this run's own process";
  $("where").textContent = view.redis ? view.redis : "standalone run";
  if (!snap) return;
  document.body.dataset.state = snap.state;
  document.body.dataset.at = String(snap.at);
  $("name").textContent = snap.kind === "gaggle" ? `gaggle '${snap.name}'` : "standalone run";
  const state = $("state");
  const gone = !view.manager_alive && snap.state !== "done";
  state.textContent = gone ? `${snap.state} (manager gone)` : snap.state;
  state.className = `badge ${gone ? "gone" : snap.state}`;
  document.title = `${snap.state} - goose-redis ${snap.name}`;
  renderCards(snap);
  renderControls(snap, view);
  renderCharts(snap);
  renderWorkers(snap);
  renderRequests(snap);
  renderEvents(snap);
  $("updated").textContent = `snapshot of ${new Date(snap.at * 1000).toLocaleTimeString()}`;
  if (snap.state === "done" && snap.report && !report) loadReport();
}

function renderCards(snap) {
  const t = snap.totals;
  setValue("users", snap.users, num(snap.users));
  let target = snap.state === "done" ? `peak ${num(snap.shape.peak)}` : `target ${num(snap.shape.users)}`;
  if (snap.kind === "gaggle" && snap.state === "waiting") {
    target = `${snap.ready_workers} of ${snap.expect_workers} workers ready; starts with ${num(snap.shape.peak)}`;
  }
  $("users-target").textContent = target;
  setValue("rps", t.rps, num(t.rps, 1));
  $("fail-ps").textContent = `${num(t.fail_ps, 1)} failures/s`;
  setValue("requests-total", t.requests, num(t.requests));
  setValue("failures-total", t.failures, `${num(t.failures)} failed`);
  setValue("p95", t.p95_ms, t.p95_ms === null ? "-" : `${num(t.p95_ms, 1)} ms`);
  $("p95-when").textContent = snap.state === "done" ? "whole run" : "last seconds";
  $("elapsed").textContent = clock(snap.elapsed_s);
  const rem = snap.shape.remaining_s;
  $("remaining").textContent = snap.state === "done" ? snap.stop_reason
    : rem === null ? "until stopped" : `${clock(rem)} left`;
}

function renderControls(snap, view) {
  const over = snap.state === "done" || snap.state === "stopping" || !view.manager_alive;
  for (const b of document.querySelectorAll("#controls button")) b.disabled = over;
  const start = $("start");
  start.hidden = snap.autostart || snap.start_armed || snap.state !== "waiting";
  if (over) $("confirm-stop").hidden = true;
}

// -- charts ------------------------------------------------------------------------------

function niceMax(v) {
  if (!(v > 0)) return 1;
  const mag = 10 ** Math.floor(Math.log10(v));
  for (const f of [1, 2, 5, 10]) if (v <= f * mag) return f * mag;
  return 10 * mag;
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawChart(svg, points, lines, events) {
  const W = 600, H = 180, L = 40, R = 8, T = 8, B = 20;
  const nodes = [];
  if (points.length < 2) {
    nodes.push(svgEl("text", { x: W / 2, y: H / 2, class: "tick", "text-anchor": "middle" }, "waiting for data"));
    svg.replaceChildren(...nodes);
    return;
  }
  const t0 = points[0].t, t1 = points[points.length - 1].t;
  const span = Math.max(1, t1 - t0);
  let top = 0;
  for (const line of lines) for (const p of points) if (p[line.key] !== null) top = Math.max(top, p[line.key]);
  top = niceMax(top);
  const x = (t) => L + ((t - t0) / span) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);
  for (const f of [0, 0.5, 1]) {
    nodes.push(svgEl("line", { x1: L, x2: W - R, y1: y(top * f), y2: y(top * f), class: "grid" }));
    nodes.push(svgEl("text", { x: L - 4, y: y(top * f) + 4, class: "tick", "text-anchor": "end" }, num(top * f, 1)));
  }
  nodes.push(svgEl("text", { x: L, y: H - 4, class: "tick" }, clock(t0)));
  nodes.push(svgEl("text", { x: W - R, y: H - 4, class: "tick", "text-anchor": "end" }, clock(t1)));
  for (const e of events) {
    if (e.t < t0 || e.t > t1) continue;
    const m = svgEl("line", { x1: x(e.t), x2: x(e.t), y1: T, y2: H - B, class: "marker" });
    m.append(svgEl("title", {}, `${e.command} ${e.value ?? ""} (by ${e.by})`));
    nodes.push(m);
  }
  for (const line of lines) {
    let d = "";
    for (const p of points) {
      if (p[line.key] === null) continue;
      d += `${d ? "L" : "M"}${x(p.t).toFixed(1)},${y(p[line.key]).toFixed(1)}`;
    }
    if (line.area && d) {
      const area = `${d}L${x(t1).toFixed(1)},${y(0)}L${x(t0).toFixed(1)},${y(0)}Z`;
      nodes.push(svgEl("path", { d: area, class: "area" }));
    }
    nodes.push(svgEl("path", { d, class: `line ${line.cls}`, "data-series": line.key }));
  }
  svg.replaceChildren(...nodes);
}

function renderCharts(snap) {
  const pts = snap.points || [];
  drawChart($("chart-users"), pts, [{ key: "users", cls: "users", area: true }], snap.events);
  drawChart($("chart-rps"), pts, [{ key: "rps", cls: "rps" }, { key: "fail_ps", cls: "fail" }], snap.events);
  drawChart($("chart-p95"), pts, [{ key: "p95_ms", cls: "p95" }], snap.events);
}

// -- tables ------------------------------------------------------------------------------

function renderWorkers(snap) {
  $("workers-section").hidden = snap.kind !== "gaggle";
  fill($("workers").tBodies[0], snap.workers.map((w) => {
    const tr = el("tr", { "data-id": w.id, "data-index": w.index, class: w.alive ? null : "lost" });
    tr.append(cell(w.index), cell(w.host, "text"), cell(w.alive ? w.state : "lost", "text"),
      cell(num(w.users), "users", w.users), cell(num(w.requests), "requests", w.requests),
      cell(num(w.failures), "failures", w.failures), cell(num(w.rps, 1), "rps", w.rps), cell(w.id, "text"));
    return tr;
  }));
}

function requestRow(r, label) {
  const tr = el("tr", { "data-name": `${r.method} ${r.name}`.trim() });
  tr.append(cell(r.method, "text"), cell(label ?? r.name, "text"), cell(num(r.count), "count", r.count),
    cell(num(r.fail_count), "fails", r.fail_count), cell(num(r.rps, 1), "rps", r.rps), cell(num(r.p50_ms, 1)),
    cell(num(r.p95_ms, 1)), cell(num(r.p99_ms, 1)));
  return tr;
}

function renderRequests(snap) {
  $("requests-title").textContent = snap.state === "done" ? "Per request (final, merged)" : "Per request";
  fill($("requests").tBodies[0], snap.requests.map((r) => requestRow(r)));
  $("requests").tFoot.replaceChildren(requestRow(snap.aggregated, "Aggregated"));
  const omitted = $("rows-omitted");
  omitted.hidden = !snap.rows_omitted;
  omitted.textContent = `${snap.rows_omitted} quieter rows not shown (the JSON report has every row)`;
}

function renderEvents(snap) {
  fill($("events").tBodies[0], snap.events.map((e) => {
    const tr = el("tr");
    tr.append(cell(clock(e.t)), cell(e.command, "text"), cell(e.value ?? "", "text"), cell(e.by, "text"));
    return tr;
  }));
}

function pct(row, key) {
  return row.percentiles_ms && row.percentiles_ms[key] !== undefined ? num(row.percentiles_ms[key], 1) : "-";
}

async function loadReport() {
  try {
    const resp = await fetch("api/report", { cache: "no-store" });
    if (!resp.ok) return;
    const text = await resp.text();
    report = JSON.parse(text);
    $("report-link").href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  } catch (e) {
    return;
  }
  fill($("transactions").tBodies[0], (report.transactions || []).map((r) => {
    const tr = el("tr");
    tr.append(cell(r.scenario, "text"), cell(r.name, "text"), cell(num(r.count), "count", r.count),
      cell(num(r.fail_count)), cell(num(r.rps, 1)), cell(pct(r, "50")), cell(pct(r, "95")), cell(pct(r, "99")));
    return tr;
  }));
  fill($("scenarios").tBodies[0], (report.scenarios || []).map((r) => {
    const tr = el("tr");
    tr.append(cell(r.name, "text"), cell(num(r.users)), cell(num(r.count), "count", r.count), cell(num(r.fail_count)),
      cell(pct(r, "50")), cell(pct(r, "95")), cell(pct(r, "99")));
    return tr;
  }));
  $("final").hidden = false;
}

// -- commands ----------------------------------------------------------------------------

async function send(command, value) {
  const said = $("said");
  said.className = "said";
  said.textContent = `${command}${value ? " " + value : ""}...`;
  try {
    const resp = await fetch("api/command", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ command, value }),
    });
    const answer = await resp.json();
    said.className = `said ${answer.ok ? "ok" : "bad"}`;
    said.textContent = answer.said;
  } catch (e) {
    said.className = "said bad";
    said.textContent = `could not send ${command}: ${e}`;
  }
  refreshNow();
}

function wire() {
  for (const form of document.querySelectorAll("form[data-command]")) {
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = form.elements.namedItem("value");
      send(form.dataset.command, input.value.trim());
    });
  }
  $("start").addEventListener("click", () => send("start", null));
  $("stop").addEventListener("click", () => { $("confirm-stop").hidden = false; });
  $("stop-no").addEventListener("click", () => { $("confirm-stop").hidden = true; });
  $("stop-yes").addEventListener("click", () => { $("confirm-stop").hidden = true; send("stop", null); });
}

// -- polling -----------------------------------------------------------------------------

let timer = null;

async function refresh() {
  clearTimeout(timer);
  try {
    const resp = await fetch("api/snapshot", { cache: "no-store" });
    render(await resp.json());
  } catch (e) {
    const problem = $("problem");
    problem.hidden = false;
    problem.textContent = lastView?.snapshot?.state === "done"
      ? "The run is over and its process has exited: this page keeps its final figures."
      : `Cannot reach the dashboard's server: ${e}`;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function refreshNow() {
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  wire();
  refresh();
});
