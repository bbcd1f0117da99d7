// qwen-sft ui: one page, four views (#/runs, #/new, #/run/ID, #/compare?runs=A,B). Plain JavaScript, no build step.
// Everything shown comes from /api (the run directories); live views follow /api/runs/events (server-sent
// events), which restart with the whole state on every (re)connection: a reload or a lost connection misses nothing.
// Text from runs (names, errors, logs) is always set as text, never as HTML.
"use strict";

// ---------------------------------------------------------------- helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body.error || `HTTP ${status}`);
    this.status = status;
    this.fields = body.fields || {};
  }
}

async function api(path, body) {
  const opts = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const res = await fetch(path, Object.assign({credentials: "same-origin"}, opts));
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

const fmt = (v) => window.formatNumber(v);
// Each folder name encoded (a run name may hold ? , # or a newline), the '/' between them kept.
const runLink = (id) => `#/run/${id.split("/").map(encodeURIComponent).join("/")}`;

function duration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.round(s);
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  return hh ? `${hh}h ${mm}m` : mm ? `${mm}m ${ss}s` : `${ss}s`;
}

// A file size as a person reads it: "0.6 KiB", "12.3 MiB" (one decimal; none from 100 on).
function sizeText(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  if (bytes < 100) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = bytes / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

function ago(t) {
  if (!t) return "–";
  return duration(Date.now() / 1000 - t) + " ago";
}

function badge(status) {
  return h("span", {class: `badge status-${status}`, "data-status": status}, status);
}

function toast(message, kind) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = `show ${kind || ""}`;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.className = ""; }, 6000);
}

// A message with one action (Undo), shown longer than a plain toast.
function undoToast(message, label, action) {
  const el = document.getElementById("toast");
  el.replaceChildren(message, h("button", {id: "undo", onclick: () => { el.className = ""; action(); }}, label));
  el.className = "show with-action";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.className = ""; }, 15000);
}

function progress(run) {
  const total = run.total_steps, step = run.step || 0;
  const share = total ? Math.min(step / total, 1) : 0;
  return h("div", {class: "progress", title: total ? `${step} / ${total}` : ""},
    h("div", {class: "progress-bar", style: null, dataset: {share: share.toFixed(3)}}),
    h("span", {class: "progress-text"}, total ? `${step} / ${total}` : run.status === "starting" ? "starting" : "–"));
}

// Widths come from data-share (a style attribute in markup would need a looser Content-Security-Policy).
function paintBars(root) {
  for (const bar of root.querySelectorAll(".progress-bar")) bar.style.width = `${Number(bar.dataset.share) * 100}%`;
}

function settingsText(s) {
  if (!s) return "–";
  const steps = s.max_steps > 0 ? `${s.max_steps} steps` : `${s.num_train_epochs} ep`;
  return `r${s.lora_rank}/α${s.lora_alpha} · lr ${fmt(s.learning_rate)} · bs ${s.per_device_train_batch_size}×${s.gradient_accumulation_steps} · ${steps}`;
}

const dataText = (d) => (Array.isArray(d) ? d.join(", ") : d || "–");

// ---------------------------------------------------------------- live events

let stream = null;

function follow(url, handlers) {
  if (stream) stream.close();
  const conn = document.getElementById("conn");
  stream = new EventSource(url);
  stream.onopen = () => { conn.textContent = "live"; conn.className = "conn ok"; };
  stream.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn bad"; };
  for (const [name, fn] of Object.entries(handlers)) stream.addEventListener(name, (e) => fn(JSON.parse(e.data)));
}

// ---------------------------------------------------------------- router

const page = () => document.getElementById("page");
const leaving = [];  // the current view's cleanups (timers, streams), run when the route changes
function onLeave(fn) { leaving.push(fn); }

function route() {
  const hash = location.hash || "#/runs";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", path.startsWith(`/${a.dataset.nav}`));
  if (stream) { stream.close(); stream = null; }
  for (const fn of leaving.splice(0)) fn();
  page().replaceChildren();
  if (path.startsWith("/run/")) return watchPage(decodeURIComponent(path.slice(5)));
  if (path === "/data") return dataPage(params);
  if (path === "/data/row") return rowPage(params);
  if (path === "/chat") return chatPage(params);
  if (path === "/new") return newRunPage(params);
  // runs=A,B: split before decoding (each name is encoded, its own commas included)
  if (path === "/compare") return comparePage(((query || "").match(/(?:^|&)runs=([^&]*)/) || ["", ""])[1]
    .split(",").filter(Boolean).map(decodeURIComponent));
  return runsPage();
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);

// ---------------------------------------------------------------- Runs

function runsPage() {
  const selected = new Set();
  let all = [];
  const compareBtn = h("button", {class: "primary", id: "compare-selected", disabled: true,
    onclick: () => { location.hash = `#/compare?runs=${[...selected].map(encodeURIComponent).join(",")}`; }}, "Compare selected");
  const body = h("tbody");
  const empty = h("p", {class: "empty", hidden: true}, "No runs in this workspace yet. ", h("a", {href: "#/new"}, "Start one"), ".");
  const nothing = h("p", {class: "empty", id: "no-match", hidden: true}, "No run matches the filter.");
  const filter = h("input", {type: "text", id: "runs-filter", placeholder: "filter by name", oninput: () => draw()});
  const statusFilter = h("select", {id: "status-filter", onchange: () => draw()}, h("option", {value: ""}, "any status"),
    ["running", "starting", "stopping", "finished", "stopped", "failed", "died", "unknown"].map((st) => h("option", {value: st}, st)));
  const trashList = h("details", {id: "trash", class: "card", hidden: true});
  page().append(
    h("div", {class: "toolbar"}, h("h1", {}, "Runs"), h("span", {class: "grow"}), compareBtn,
      h("a", {class: "button", href: "#/new"}, "New run")),
    h("div", {class: "filters"}, filter, statusFilter),
    h("table", {class: "runs", id: "runs-table"},
      h("thead", {}, h("tr", {}, ["", "run", "status", "progress", "base model", "data", "settings", "loss", "eval loss",
        "tokens/s", "peak GB", "updated", ""].map((t) => h("th", {}, t)))), body),
    empty, nothing, trashList);

  function draw() {
    const q = filter.value.trim().toLowerCase();
    const shown = all.filter((r) => (!q || r.name.toLowerCase().includes(q) || r.id.toLowerCase().includes(q))
      && (!statusFilter.value || r.status === statusFilter.value));
    empty.hidden = all.length > 0;
    nothing.hidden = !all.length || shown.length > 0;
    body.replaceChildren(...shown.map((r) => h("tr", {dataset: {run: r.id}},
      h("td", {}, h("input", {type: "checkbox", checked: selected.has(r.id), "aria-label": `select ${r.id}`, onchange: (e) => {
        if (e.target.checked) selected.add(r.id); else selected.delete(r.id);
        compareBtn.disabled = selected.size < 2;
      }})),
      h("td", {}, h("a", {href: runLink(r.id), class: "run-name"}, r.name), h("div", {class: "sub"}, r.id)),
      h("td", {}, badge(r.status)),
      h("td", {}, progress(r)),
      h("td", {}, r.base_model || "–"), h("td", {class: "sub"}, dataText(r.dataset)),
      h("td", {class: "sub"}, settingsText(r.settings)),
      h("td", {class: "num"}, fmt(r.loss)), h("td", {class: "num"}, fmt(r.eval_loss)),
      h("td", {class: "num"}, fmt(r.tokens_per_second)), h("td", {class: "num"}, fmt(r.memory_gb)),
      h("td", {class: "sub"}, ago(r.updated)),
      h("td", {}, h("button", {class: "trash-run", title: "move this run directory to the workspace's .trash/ (undo: Restore)",
        disabled: Boolean(r.alive) || r.alive === null, onclick: () => trash(r.id)}, "Move to trash")))));
    paintBars(body);
  }
  async function trash(run) {
    try {
      const res = await api("/api/trash/put", {run});
      selected.delete(run);
      compareBtn.disabled = selected.size < 2;
      undoToast(res.message, "Undo", () => restore(res.id));
    } catch (e) { toast(e.message, "bad"); }
    loadTrash();
  }
  async function restore(entry) {
    try { toast((await api("/api/trash/restore", {id: entry})).message); } catch (e) { toast(e.message, "bad"); }
    loadTrash();
  }
  async function loadTrash() {
    const {entries} = await api("/api/trash/list");
    trashList.hidden = !entries.length;
    trashList.replaceChildren(h("summary", {}, `Trash (${entries.length}): runs moved to .trash/ in the workspace`),
      h("ul", {class: "plain"}, entries.map((e) => h("li", {dataset: {entry: e.id}}, h("code", {}, e.run), " ",
        h("span", {class: "sub"}, `${ago(e.time)} (.trash/${e.id}) `),
        h("button", {class: "restore", onclick: () => restore(e.id)}, "Restore")))),
      h("p", {class: "sub"}, "Nothing here is deleted by qwen-sft; delete .trash/ yourself to free the space."));
  }
  loadTrash().catch((e) => toast(e.message, "bad"));
  follow("/api/runs/events", {runs: (runs) => { all = runs; draw(); }});
}

// New run: newrun.js

// ---------------------------------------------------------------- Watch one run

function watchPage(id) {
  let run = null, points = [];
  const title = h("h1", {id: "run-title"}, id.split("/").pop());
  const status = h("span", {id: "run-status"});
  const stopBtn = h("button", {id: "stop", class: "danger", hidden: true, onclick: () => act("stop")}, "Stop");
  const resumeBtn = h("button", {id: "resume", class: "primary", hidden: true, onclick: () => act("resume")}, "Resume");
  const newFrom = h("a", {class: "button", id: "new-from", hidden: true}, "New run from this config");
  const retryBtn = h("a", {class: "button primary", id: "retry", hidden: true, href: `#/new?retry=${encodeURIComponent(id)}`},
    "Retry with these settings");
  const banner = h("div", {id: "banner", class: "banner", hidden: true});
  const stats = h("div", {class: "stats", id: "stats"});
  const slider = h("input", {type: "range", min: "0", max: "0.99", step: "0.01", value: "0.6", id: "smoothing"});
  const charts = h("div", {class: "charts", id: "charts"});
  const noCurves = h("p", {class: "sub", id: "no-curves", hidden: true}, "No curves: the run ended before its first step.");
  const lossBox = h("div", {class: "card"}, h("h3", {}, "Loss"));
  const lrBox = h("div", {class: "card"}, h("h3", {}, "Learning rate"));
  const tpsBox = h("div", {class: "card"}, h("h3", {}, "Tokens per second"));
  charts.append(lossBox, lrBox, tpsBox);
  const checkpoints = h("ul", {id: "checkpoints", class: "plain"});
  const report = h("pre", {id: "data-report", class: "code"});
  const reportHead = h("h3", {}, "Data report");
  const logBox = h("pre", {id: "log", class: "code log"});
  const config = h("pre", {id: "run-config", class: "code"});
  const toolbar = h("div", {class: "toolbar"}, title, status, h("span", {class: "grow"}), stopBtn, resumeBtn, retryBtn, newFrom);
  const smoothing = h("div", {class: "smoothing"}, h("label", {for: "smoothing"}, "smoothing "), slider, h("span", {id: "smoothing-value"}, "0.6"));
  page().append(
    toolbar,
    h("div", {class: "sub"}, id), banner, stats, smoothing, charts, noCurves,
    h("div", {class: "columns"},
      h("div", {class: "card grow", id: "log-card"}, h("h3", {}, "Log (last lines)"), logBox),
      h("div", {class: "card report-card"}, h("h3", {}, "Checkpoints"), checkpoints, reportHead, report)),
    h("details", {class: "card"}, h("summary", {}, "Config"), config));
  runOps(id, page(), toolbar);  // merge and eval (ops.js), and a button at the top that goes there
  const lossChart = new LineChart(lossBox, {yLabel: "loss per trained token"});
  const lrChart = new LineChart(lrBox, {yLabel: "lr", height: 160});
  const tpsChart = new LineChart(tpsBox, {yLabel: "tokens/s", height: 160});
  slider.addEventListener("input", () => {
    document.getElementById("smoothing-value").textContent = slider.value;
    lossChart.setSmoothing(slider.value);
    tpsChart.setSmoothing(slider.value);
  });
  lossChart.setSmoothing(slider.value);
  tpsChart.setSmoothing(slider.value);

  async function act(what) {
    try {
      const res = await api(`/api/runs/${what}`, {run: id});
      toast(res.message || (what === "resume" ? "resuming from the last checkpoint" : "done"));
    } catch (e) { toast(e.message, "bad"); }
  }

  function draw() {
    const series = (key) => points.filter((p) => p[key] !== undefined).map((p) => [p.step, p[key]]);
    lossChart.set([{name: "train loss", points: series("loss")},
      {name: "eval loss", points: series("eval_loss"), markers: true, dashed: true, smooth: false}]);
    lrChart.set([{name: "lr", points: series("lr"), smooth: false}]);
    tpsChart.set([{name: "tokens/s", points: series("tokens_per_second")}]);
  }

  function show(d) {
    run = d;
    status.replaceChildren(badge(d.status));
    stopBtn.hidden = !d.can_stop;
    stopBtn.textContent = d.stops ? "Stop now (no save)" : "Stop";
    resumeBtn.hidden = !d.can_resume;
    newFrom.hidden = !d.config_file;
    retryBtn.hidden = !(d.retry && ["failed", "died"].includes(d.status));
    if (d.config_file) newFrom.setAttribute("href", `#/new?base=${encodeURIComponent(d.config_file)}`);
    banner.hidden = !(d.error || d.message);
    banner.className = `banner ${d.error ? "bad" : "info"}`;
    banner.replaceChildren(...[
      d.error ? h("div", {id: "error-line", class: "error-line"}, linkRows(d.error)) : null,
      d.message ? h("div", {id: "message-line"}, d.message) : null,
      d.checkpoint ? h("div", {id: "checkpoint-line"}, "checkpoint: ", h("code", {}, d.checkpoint)) : null,
      d.detail && d.detail !== d.error ? h("details", {}, h("summary", {}, "details"),
        h("pre", {class: "code", id: "error-detail"}, d.detail.split("\n").flatMap((line) => [linkRows(line), "\n"]).flat())) : null,
    ].filter(Boolean));
    stats.replaceChildren(
      h("div", {class: "stat wide"}, h("label", {}, "progress"), progress(d)),
      h("div", {class: "stat"}, h("label", {}, "ETA"), h("b", {id: "eta"}, d.alive ? duration(d.eta_s) : "–")),
      h("div", {class: "stat"}, h("label", {}, "loss"), h("b", {id: "last-loss"}, fmt(d.loss))),
      h("div", {class: "stat"}, h("label", {}, "eval loss"), h("b", {}, fmt(d.eval_loss))),
      h("div", {class: "stat"}, h("label", {}, "tokens/s"), h("b", {}, fmt(d.tokens_per_second))),
      h("div", {class: "stat"}, h("label", {}, "peak memory GB"), h("b", {}, fmt(d.memory_gb))),
      h("div", {class: "stat"}, h("label", {}, "base model"), h("b", {}, d.base_model || "–")),
      h("div", {class: "stat"}, h("label", {}, d.host ? `pid ${d.pid || "–"} on` : "process"), h("b", {}, d.host || "–")));
    paintBars(stats);
    checkpoints.replaceChildren(...(d.checkpoints.length ? d.checkpoints.map((c) => h("li", {}, h("code", {}, c.path)))
      : [h("li", {class: "sub"}, d.alive ? "none yet" : "none")]));
    // A run that ended without one will not write it: no promise then.
    report.textContent = d.data_report_text || (d.alive ? "(written when the data is loaded)" : "");
    report.hidden = reportHead.hidden = !d.data_report_text && !d.alive;
    const curves = points.length > 0 || d.alive || d.status === "starting";
    charts.hidden = smoothing.hidden = !curves;
    noCurves.hidden = curves;
    const atBottom = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 4;
    logBox.textContent = d.log.length ? d.log.join("\n") : d.launched ? "" : "(only runs started from this UI keep a log here; a CLI run prints to its terminal)";
    if (atBottom) logBox.scrollTop = logBox.scrollHeight;
    config.textContent = d.config ? Object.entries(d.config).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join("\n") : "";
  }

  follow(`/api/runs/events?run=${encodeURIComponent(id)}`, {run: (d) => {
    points = points.slice(0, d.points_from).concat(d.points);
    show(d);
    draw();
  }});
  api(`/api/runs/detail?run=${encodeURIComponent(id)}`).catch((e) => {
    if (stream) { stream.close(); stream = null; }  // no such run: do not retry for ever
    banner.hidden = false;
    banner.className = "banner bad";
    banner.textContent = e.message;
  });
}

// "data/a.jsonl:12: output: empty": the file:line (a JSONL / CSV line, "item N" of a JSON array, "row N" of a Parquet /
// Arrow file) becomes a link to that row (the data page's row view); the rest stays text.
const ROW_PLACE = /^(\S[^:]*?\.(?:jsonl|json|csv|tsv|parquet|arrow)):((?:item |row )?\d+):/i;

function linkRows(text) {
  const m = ROW_PLACE.exec(text);
  if (!m) return text;
  return [h("a", {class: "row-link", href: `#/data/row?file=${encodeURIComponent(m[1])}&where=${encodeURIComponent(m[2])}`},
    m[0].slice(0, -1)), text.slice(m[0].length - 1)];
}

// ---------------------------------------------------------------- Compare

function comparePage(ids) {
  const picker = h("div", {class: "picker", id: "picker"});
  const metric = h("select", {id: "metric"}, [["loss", "train loss"], ["eval_loss", "eval loss"], ["lr", "learning rate"],
    ["tokens_per_second", "tokens/s"]].map(([v, t]) => h("option", {value: v}, t)));
  const slider = h("input", {type: "range", min: "0", max: "0.99", step: "0.01", value: "0.6", id: "smoothing"});
  const chartBox = h("div", {class: "card"});
  const table = h("table", {class: "runs", id: "compare-table"});
  const diffs = h("table", {class: "runs", id: "config-diff"});
  const emptyState = h("div", {class: "empty", id: "compare-empty", hidden: true});
  const shown = h("div", {id: "compare-body"}, chartBox, h("h3", {}, "Runs"), table, h("h3", {}, "Config differences"), diffs,
    h("p", {class: "sub"}, "Not compared: how a run was started (resume_from_checkpoint, force_resume, overwrite_output_dir); "
      + "3 and 3.0 are the same number, and \"auto\" counts as what the run resolved it to."));
  page().append(
    h("div", {class: "toolbar"}, h("h1", {}, "Compare"), h("span", {class: "grow"}), h("label", {for: "metric"}, "curve "), metric,
      h("label", {for: "smoothing"}, " smoothing "), slider),
    picker, emptyState, shown);
  let known = [];
  function showEmpty() {  // what to do when there is nothing to compare yet
    const nothing = ids.length < 2;
    emptyState.hidden = !nothing;
    shown.hidden = !ids.length;
    emptyState.replaceChildren(...(!known.length ? ["No runs in this workspace yet. ", h("a", {href: "#/new"}, "Start a run"),
      ", then come back to compare two or more."]
      : ids.length === 1 ? ["Tick one more run above to compare it with ", h("b", {}, ids[0].split("/").pop()), "."]
        : ["Tick two or more runs above (or in the ", h("a", {href: "#/runs"}, "Runs"),
          " table) to see their curves overlaid, their results side by side and the settings on which they differ."]));
  }
  const chart = new LineChart(chartBox, {yLabel: "train loss", height: 300});
  chart.setSmoothing(slider.value);
  let data = null, updated = "";
  slider.addEventListener("input", () => chart.setSmoothing(slider.value));
  metric.addEventListener("change", () => draw());

  function draw() {
    if (!data) return;
    chart.options.yLabel = metric.selectedOptions[0].textContent;
    chart.set(data.runs.map((r) => ({name: r.name, markers: metric.value === "eval_loss",
      points: r.points.filter((p) => p[metric.value] !== undefined).map((p) => [p.step, p[metric.value]])})));
  }
  async function load() {
    showEmpty();
    if (!ids.length) { data = null; chart.set([]); table.replaceChildren(); diffs.replaceChildren(); return; }
    data = await api(`/api/runs/compare?${ids.map((i) => `run=${encodeURIComponent(i)}`).join("&")}`);
    draw();
    table.replaceChildren(h("thead", {}, h("tr", {}, ["run", "status", "base model", "data", "settings", "step", "loss",
      "eval loss", "tokens/s", "peak GB"].map((t) => h("th", {}, t)))),
    h("tbody", {}, data.runs.map((r) => h("tr", {}, h("td", {}, h("a", {href: runLink(r.id)}, r.name)), h("td", {}, badge(r.status)),
      h("td", {}, r.base_model || "–"), h("td", {class: "sub"}, dataText(r.dataset)), h("td", {class: "sub"}, settingsText(r.settings)),
      h("td", {class: "num"}, r.step === null ? "–" : r.step), h("td", {class: "num"}, fmt(r.loss)), h("td", {class: "num"}, fmt(r.eval_loss)),
      h("td", {class: "num"}, fmt(r.tokens_per_second)), h("td", {class: "num"}, fmt(r.memory_gb))))));
    diffs.replaceChildren(h("thead", {}, h("tr", {}, h("th", {}, "key"), data.runs.map((r) => h("th", {}, r.name)))),
      h("tbody", {}, data.differences.length ? data.differences.map((d) => h("tr", {dataset: {key: d.key}}, h("td", {}, h("code", {}, d.key)),
        d.values.map((v) => h("td", {}, v === undefined || v === null ? "–" : JSON.stringify(v)))))
        : [h("tr", {}, h("td", {colspan: data.runs.length + 1, class: "sub"}, "the configs are the same"))]));
  }
  follow("/api/runs/events", {runs: (runs) => {
    known = runs;
    showEmpty();
    picker.replaceChildren(h("span", {class: "sub"}, "runs: "), ...runs.map((r) => h("label", {class: "pick"},
      h("input", {type: "checkbox", checked: ids.includes(r.id), onchange: (e) => {
        ids = e.target.checked ? ids.concat([r.id]) : ids.filter((i) => i !== r.id);
        history.replaceState(null, "", `#/compare?runs=${ids.map(encodeURIComponent).join(",")}`);
        load().catch((err) => toast(err.message, "bad"));
      }}), r.name)));
    // Reload the curves when a compared run has moved on.
    const now = JSON.stringify(runs.filter((r) => ids.includes(r.id)).map((r) => [r.id, r.updated, r.status]));
    if (now !== updated) { updated = now; load().catch((err) => toast(err.message, "bad")); }
  }});
}
