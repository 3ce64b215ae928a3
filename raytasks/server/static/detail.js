// A task's detail: what it is, how long it waited and ran, its results as a researcher
// reads them (equity against buy and hold, drawdown, forecast against actual, an optimize
// run's heat-map, metrics, and trades a page at a time) and its log, attempt by attempt.
// Everything from the API is text.
"use strict";

import {drawdowns, heatMap, lineChart, numbers} from "./charts.js";
import {$, api, button, el, fmtDuration, fmtNumber, fmtTime, secondsBetween} from "./util.js";

const FINAL = ["COMPLETED", "FAILED", "CANCELLED"];
const METRIC_GROUPS = ["risk", "quality", "metrics", "best", "best_params", "fitted"];
const PAGE_ROWS = 25;  // rows of a records table shown at a time
const MAX_LOG_PAGES = 50;
let follower = () => {};
let shown = null;  // {taskId, after, box: element per attempt}

/** Set how the detail asks the live socket for a task's log lines (ids, {id: after}). */
export function setLogFollower(fn) { follower = fn; }

/** What the socket should follow now (for its hello after a reconnect). */
export function followedLogs() {
  return shown && !shown.done ? {logs: [shown.taskId], logs_after: {[shown.taskId]: shown.after}}
    : {logs: []};
}

export async function showDetail(taskId) {
  const task = await api("/tasks/" + encodeURIComponent(taskId));
  const detail = $("detail");
  detail.replaceChildren(el("h2", task.name));
  detail.dataset.taskId = task.id;
  detail.appendChild(meta(task));
  if (!FINAL.includes(task.status)) detail.appendChild(await why(task));
  if (task.cached_from) {  // an id (text, never markup): the task whose result this one took
    detail.appendChild(el("p", `from the cache: the result of ${task.cached_from} (nothing ran)`,
      "cached"));
  }
  if (task.error) {
    detail.appendChild(el("p", `${task.error.type}: ${task.error.message}`, "task-error"));
  }
  const result = task.result && typeof task.result === "object" && !Array.isArray(task.result)
    ? task.result : {};
  const used = new Set();
  for (const figure of figures(result, used)) detail.appendChild(figure);
  const metrics = metricsTable(result);
  if (metrics) { detail.appendChild(el("h3", "metrics")); detail.appendChild(metrics); }
  const trades = Array.isArray(result.trade_log) ? records(result.trade_log) : [];
  if (trades.length) detail.appendChild(pagedTable(trades, "trades"));
  if (task.lineage) detail.appendChild(lineage(task.lineage));
  const logBox = el("section", null, "logs");
  logBox.appendChild(el("h3", "log"));
  detail.appendChild(logBox);
  const raw = el("details");
  raw.appendChild(el("summary", "raw task"));
  raw.appendChild(el("pre", JSON.stringify(task, null, 2), "raw"));
  detail.appendChild(raw);
  await loadLogs(task, logBox);
  return task;
}

/** What a result came from (``task.lineage``), folded: a line per fingerprint, as text. */
function lineage(fingerprints) {
  const lines = [`raytasks   ${fingerprints.raytasks}`, `code       sha256 ${fingerprints.code}`,
    `parameters ${JSON.stringify(fingerprints.parameters)}`,
    `seeds      ${JSON.stringify(fingerprints.seeds || {})}`,
    "libraries  " + Object.entries(fingerprints.libraries || {}).sort()
      .map(([name, version]) => `${name} ${version}`).join(", ")];
  for (const [name, read] of Object.entries(fingerprints.bars || {}).sort()) {
    lines.push(`bars       ${name} ${read.start}..${read.end} ${read.rows} rows ` +
               `sha256 ${read.sha256}`);
  }
  for (const [name, used] of Object.entries(fingerprints.models || {}).sort()) {
    lines.push(`model      ${name} ${used.role} sha256 ${used.sha256}`);
  }
  const box = el("details", null, "lineage");
  box.appendChild(el("summary", "lineage: what this result came from"));
  box.appendChild(el("pre", lines.join("\n")));
  return box;
}

/** Why a PENDING task waits, or when a RUNNING one should end (``/tasks/{id}/explain``). */
async function why(task) {
  const p = el("p", "", "explain");
  try {
    const said = await api(`/tasks/${encodeURIComponent(task.id)}/explain`);
    const parts = [...said.reasons];
    if (said.predicted_start && said.status === "PENDING") {
      parts.push(`predicted start ${fmtTime(said.predicted_start)}`);
    }
    if (said.predicted_finish) parts.push(`predicted end ${fmtTime(said.predicted_finish)}`);
    p.textContent = parts.join(" · ");
  } catch (e) {
    p.textContent = "";
  }
  return p;
}

function meta(task) {
  const parts = [task.task_type, task.status, `attempt ${task.attempt}`,
                 `created ${fmtTime(task.created_at)}`];
  if (task.started_at) {
    parts.push(`waited ${fmtDuration(secondsBetween(task.created_at, task.started_at))}`);
  }
  if (task.started_at && task.finished_at) {
    parts.push(`ran ${fmtDuration(secondsBetween(task.started_at, task.finished_at))}`);
  }
  if (typeof task.cpu_s === "number") {
    const peak = typeof task.peak_rss_bytes === "number"
      ? `, peak ${(task.peak_rss_bytes / 1048576).toFixed(0)} MiB` : "";
    parts.push(`used ${task.cpu_s.toFixed(2)} CPU s${peak}`);
  }
  parts.push(`id ${task.id}`);
  const p = el("p", parts.join(" · "), "meta");
  for (const tag of task.tags || []) p.appendChild(el("span", tag, "tag"));
  return p;
}

function figures(result, used) {
  const out = [];
  const curve = result.equity_curve, dates = result.equity_dates;
  if (numbers(curve) && Array.isArray(dates) && dates.length === curve.length) {
    const bench = numbers(result.benchmark_curve) &&
      result.benchmark_curve.length === curve.length ? result.benchmark_curve : null;
    const series = [{name: "strategy", values: curve, className: "strategy"}];
    if (bench) series.push({name: "buy and hold", values: bench, className: "benchmark"});
    out.push(figureBox("equity", lineChart({
      series, labels: dates.map(String), xTitle: "date",
      title: bench ? "equity against buy and hold (CNY)" : "equity (CNY)"})));
    const falls = [{name: "strategy", values: drawdowns(curve), className: "strategy"}];
    if (bench) falls.push({name: "buy and hold", values: drawdowns(bench),
                           className: "benchmark"});
    out.push(figureBox("drawdown", lineChart({
      series: falls, labels: dates.map(String), yFormat: "percent", xTitle: "date",
      title: "drawdown from the running peak"})));
    used.add("equity_curve").add("benchmark_curve");
  }
  const sweep = result.sweep;
  if (sweep && typeof sweep === "object" && numbers(sweep.fast, 1) && numbers(sweep.slow, 1) &&
      Array.isArray(sweep.sharpe) && sweep.fast.length === sweep.slow.length &&
      sweep.sharpe.length === sweep.fast.length) {
    out.push(figureBox("heatmap", heatMap({
      xs: sweep.slow, ys: sweep.fast, values: sweep.sharpe, xName: "slow", yName: "fast",
      valueName: "Sharpe", xTitle: "slow SMA window (days)", yTitle: "fast SMA window (days)",
      title: "Sharpe ratio of every SMA pair (fast × slow)"})));
    used.add("sweep");
  }
  const oos = result.out_of_sample;
  if (oos && typeof oos === "object" && numbers(oos.actual) && numbers(oos.forecast) &&
      oos.actual.length === oos.forecast.length) {
    const labels = Array.isArray(oos.dates) && oos.dates.length === oos.actual.length
      ? oos.dates.map(String) : null;
    out.push(figureBox("forecast", lineChart({
      series: [{name: "actual", values: oos.actual, className: "actual"},
               {name: "forecast", values: oos.forecast, className: "forecast"}],
      labels, yFormat: "percent", xTitle: labels ? "date" : "test day",
      title: "forecast against actual return, out of sample"})));
  }
  if (result.kind === "volatility" && numbers(result.forecast, 1)) {
    out.push(figureBox("volatility", lineChart({
      series: [{name: "forecast volatility", values: result.forecast, className: "forecast"}],
      labels: result.forecast.map((_, i) => i + 1), xTitle: "days ahead",
      yFormat: "percent", title: "forecast daily volatility by day ahead"})));
    used.add("forecast");
  }
  for (const [key, value] of Object.entries(result)) {  // any other series: a plain chart
    if (used.has(key)) continue;
    const values = seriesOf(value);
    if (!values) continue;
    const box = el("div", null, "figure");
    box.appendChild(el("h3", key));
    box.appendChild(lineChart({series: [{name: key, values}], title: key}));
    out.push(box);
  }
  return out;
}

function figureBox(name, figure) {
  const box = el("div", null, "figure");
  box.dataset.figure = name;
  box.appendChild(figure);
  return box;
}

function seriesOf(value) {
  if (!Array.isArray(value) || value.length < 2) return null;
  const values = value.map((x) => typeof x === "number" ? x :
    (x && typeof x === "object" ? (x.value ?? x.equity) : undefined));
  return values.every((v) => typeof v === "number" && isFinite(v)) ? values : null;
}

function scalars(prefix, values) {
  return Object.entries(values).filter(([k, v]) => k !== "kind" &&
    (typeof v === "number" || (typeof v === "string" && v.length <= 80)))
    .map(([k, v]) => [prefix + k, v]);
}

function metricsTable(result) {
  let rows = scalars("", result);
  for (const group of METRIC_GROUPS) {
    if (result[group] && typeof result[group] === "object" && !Array.isArray(result[group])) {
      rows = rows.concat(scalars(group + ".", result[group]));
    }
  }
  if (!rows.length) return null;
  const table = el("table", null, "metrics");
  const body = el("tbody");
  for (const [name, value] of rows) {
    const tr = el("tr");
    tr.appendChild(el("th", name));
    tr.appendChild(el("td", typeof value === "number" ? fmtNumber(value) : value, "n"));
    body.appendChild(tr);
  }
  table.appendChild(body);
  return table;
}

function records(list) {
  return list.filter((r) => r && typeof r === "object" && !Array.isArray(r));
}

/** A table of `rows` (objects) under a heading that counts them, PAGE_ROWS at a time, with
 * a pager (previous, "rows 26–50 of 163", next) when there are more. */
function pagedTable(rows, name) {
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const box = el("section", null, "paged");
  box.dataset.table = name;
  box.appendChild(el("h3", `${name} (${rows.length})`));
  const table = el("table", null, name);
  const head = el("tr");
  for (const c of columns) head.appendChild(el("th", c));
  const thead = el("thead");
  thead.appendChild(head);
  table.appendChild(thead);
  const body = el("tbody");
  table.appendChild(body);
  const pages = Math.ceil(rows.length / PAGE_ROWS);
  let page = 0;
  const info = el("span", "", "page-info");
  const prev = button("‹ previous", "prev", () => show(page - 1));
  const next = button("next ›", "next", () => show(page + 1));
  function show(wanted) {
    page = Math.min(Math.max(wanted, 0), pages - 1);
    const from = page * PAGE_ROWS, to = Math.min(rows.length, from + PAGE_ROWS);
    body.replaceChildren(...rows.slice(from, to).map((r) => recordRow(r, columns)));
    info.textContent = `rows ${from + 1}–${to} of ${rows.length}`;
    prev.disabled = page === 0;
    next.disabled = page === pages - 1;
  }
  if (pages > 1) {  // above the table, so the buttons stay put when a page is short
    const pager = el("nav", null, "pager");
    pager.append(prev, info, next);
    box.appendChild(pager);
  }
  box.appendChild(table);
  show(0);
  return box;
}

function recordRow(record, columns) {
  const tr = el("tr");
  for (const c of columns) {
    const v = record[c];
    tr.appendChild(el("td", typeof v === "number" ? fmtNumber(v)
      : (v === null || v === undefined ? "" : (typeof v === "object" ? JSON.stringify(v)
        : v))));
  }
  return tr;
}

// ------------------------------------------------------------------------- the log

async function loadLogs(task, box) {
  shown = {taskId: task.id, after: 0, box, attempts: new Map(), done: false};
  const mine = shown;
  for (let pages = 0; pages < MAX_LOG_PAGES; pages++) {
    const page = await api(`/tasks/${encodeURIComponent(task.id)}/logs?` +
                           new URLSearchParams({after: String(mine.after), limit: "1000"}));
    if (shown !== mine) return;  // another detail was opened meanwhile
    for (const line of page.lines) addLine(mine, line);
    mine.after = page.next_after;
    if (page.complete) { mine.done = true; break; }
    if (page.lines.length < 1000) break;  // caught up with a running task
  }
  if (!mine.attempts.size) box.appendChild(el("p", "no log lines yet", "empty-log"));
  follower(followedLogs());
}

function addLine(view, line) {
  if (line.id <= view.after) return;  // seen already (a page and the socket overlap)
  let pre = view.attempts.get(line.attempt);
  if (!pre) {
    const block = el("details", null, "attempt");
    block.open = true;
    block.dataset.attempt = String(line.attempt);
    block.appendChild(el("summary", `attempt ${line.attempt}`));
    pre = el("pre", null, "log");
    block.appendChild(pre);
    view.box.querySelector(".empty-log")?.remove();
    view.box.appendChild(block);
    view.attempts.set(line.attempt, pre);
  }
  const row = el("span", null, `log-line ${line.stream === "stderr" ||
    ["ERROR", "CRITICAL"].includes(line.stream) ? "err" : ""}`);
  row.dataset.id = String(line.id);
  row.appendChild(el("span", fmtTime(new Date(line.at * 1000).toISOString()).slice(11),
                     "at"));
  row.appendChild(el("span", line.stream, "stream"));
  row.appendChild(el("span", line.line, "text"));
  pre.appendChild(row);
  view.after = Math.max(view.after, line.id);
}

/** A message from the live socket about logs; true when it was one. */
export function onLogMessage(message) {
  if (!message.kind || !message.kind.startsWith("log")) return false;
  if (!shown || message.task_id !== shown.taskId) return true;
  if (message.kind === "log") addLine(shown, message);
  else if (message.kind === "log_end") shown.done = true;
  return true;
}

export function isFinal(status) { return FINAL.includes(status); }
