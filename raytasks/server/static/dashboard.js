// The raytasks dashboard. Served as files so the page's Content-Security-Policy can forbid
// inline script. Every string that comes from the API is put in the page as text
// (textContent, never innerHTML): names, tags, parameters, errors, results, log lines.
// The token is sent once to POST /session and forgotten; the session cookie is HttpOnly
// and the CSRF token lives in this script's memory only.
"use strict";

import {followedLogs, isFinal, onLogMessage, setLogFollower, showDetail} from "./detail.js";
import {loadSchedules, setUpScheduleForm} from "./schedules.js";
import {$, api, button, el, fmtDuration, fmtTime, secondsBetween, showError, state}
  from "./util.js";

const PRI = {1: "HIGH", 2: "MEDIUM", 3: "LOW"};
let lastEventId = null, socket = null, queueTimer = null;
const rows = new Map();
// which actions apply to which status
const ACTIONS = {cancel: ["PENDING", "RUNNING"], retry: ["FAILED", "CANCELLED"],
                 delete: ["COMPLETED", "FAILED", "CANCELLED"]};

function rowFor(task) {
  let tr = rows.get(task.id);
  if (tr) return tr;
  tr = el("tr");
  tr.dataset.taskId = task.id;
  for (const name of ["name", "type", "priority", "status", "attempt", "created", "wait",
                      "run", "eta"]) {
    tr.appendChild(el("td", "", name));
  }
  const barCell = el("td"), bar = el("div", null, "bar");
  bar.dataset.pct = "0";
  bar.appendChild(el("div"));
  barCell.appendChild(bar);
  tr.appendChild(barCell);
  tr.appendChild(el("td", "", "message"));
  tr.appendChild(el("td", "", "tags"));
  const actions = el("td", null, "actions");
  actions.appendChild(button("cancel", "cancel", () => act(task.id, "cancel")));
  actions.appendChild(button("retry", "retry", () => act(task.id, "retry")));
  actions.appendChild(button("delete", "delete", (e) => remove(task.id, e.target)));
  actions.appendChild(button("details", "details", () => openDetail(task.id)));
  tr.appendChild(actions);
  $("tasks").prepend(tr);
  rows.set(task.id, tr);
  return tr;
}

function setTimes(tr) {
  const {created, started, finished} = tr.dataset;
  tr.querySelector(".created").textContent = fmtTime(created);
  tr.querySelector(".wait").textContent = started
    ? fmtDuration(secondsBetween(created, started)) : "";
  tr.querySelector(".run").textContent = started && finished
    ? fmtDuration(secondsBetween(started, finished)) : "";
}

// Status snapshots come from fetches and from events, and a fetch can answer after a later
// event: a row takes a status only from something at least as recent as what it shows.
function newer(tr, at) {
  const when = Date.parse(at || "");
  if (Number.isNaN(when)) return true;
  if (tr.dataset.seen && when < Number(tr.dataset.seen)) return false;
  tr.dataset.seen = String(when);
  return true;
}

function setStatus(tr, status, attempt, at) {
  const cell = tr.querySelector(".status");
  cell.textContent = status;
  cell.className = "status " + (status in {PENDING: 1, RUNNING: 1, COMPLETED: 1, FAILED: 1,
                                           CANCELLED: 1} ? status : "");
  tr.dataset.status = status;
  for (const [name, statuses] of Object.entries(ACTIONS)) {
    tr.querySelector("button." + name).hidden = !statuses.includes(status);
  }
  if (attempt !== undefined) tr.querySelector(".attempt").textContent = String(attempt);
  if (at) {  // a live event: its time is when the task started or finished
    if (status === "RUNNING") tr.dataset.started = at;
    if (status === "PENDING") { delete tr.dataset.started; delete tr.dataset.finished; }
    if (isFinal(status)) tr.dataset.finished = at;
    setTimes(tr);
  }
  if (status === "COMPLETED") setProgress(tr, 1, "done");
}

function setProgress(tr, fraction, message) {
  const pct = Math.max(0, Math.min(100, Math.round(Number(fraction) * 100) || 0));
  const bar = tr.querySelector(".bar");
  bar.dataset.pct = String(pct);
  bar.firstElementChild.style.width = pct + "%";
  if (message !== undefined) tr.querySelector(".message").textContent = message;
}

function showTask(task) {
  const tr = rowFor(task);
  tr.querySelector(".name").textContent = task.name;
  tr.querySelector(".type").textContent = task.task_type;
  tr.querySelector(".priority").textContent = PRI[task.priority] || String(task.priority);
  tr.querySelector(".tags").replaceChildren(...(task.tags || []).map((t) =>
    el("span", t, "tag")));
  tr.dataset.created = task.created_at || "";
  if (task.started_at) tr.dataset.started = task.started_at; else delete tr.dataset.started;
  if (task.finished_at) tr.dataset.finished = task.finished_at;
  else delete tr.dataset.finished;
  setTimes(tr);
  // a listed PENDING or RUNNING task carries its predicted start and finish
  const eta = task.status === "PENDING" && task.predicted_start
    ? `starts ~${fmtTime(task.predicted_start)}`
    : task.status === "RUNNING" && task.predicted_finish
      ? `ends ~${fmtTime(task.predicted_finish)}` : "";
  if (eta || ["COMPLETED", "FAILED", "CANCELLED"].includes(task.status)) {
    tr.querySelector(".eta").textContent = eta;
  }
  // a fetched task may be older than an event already shown: never let it undo one
  if (newer(tr, task.updated_at)) setStatus(tr, task.status, task.attempt);
  if (task.error && task.error.message) {
    tr.querySelector(".message").textContent = task.error.message;
  }
}

function matchesFilter(task) {
  const s = $("filter-status").value, t = $("filter-type").value;
  return (!s || task.status === s) && (!t || task.task_type === t);
}

async function loadTasks() {
  const q = new URLSearchParams({limit: "200", order_by: "created_at"});
  if ($("filter-status").value) q.append("status", $("filter-status").value);
  if ($("filter-type").value) q.append("task_type", $("filter-type").value);
  const page = await api("/tasks?" + q);
  $("tasks").replaceChildren();
  rows.clear();
  for (const task of page.items) showTask(task);
}

async function loadTypes() {
  const names = (await api("/task-types")).map((x) => x.name).sort();
  for (const select of [$("f-type"), $("filter-type"), $("s-type")]) {
    select.querySelectorAll("option[data-type]").forEach((o) => o.remove());
    for (const name of names) {
      const option = el("option", name);
      option.value = name;
      option.dataset.type = "1";
      select.appendChild(option);
    }
  }
  const first = names.includes("prediction") ? "prediction" : names[0];
  $("f-type").value = first;
  $("s-type").value = first;
}

async function loadQueues() {
  try {
    const queues = await api("/stats/queues");
    const box = $("queues");
    box.replaceChildren(document.createTextNode("queue depth: "));
    if (!queues.length) box.appendChild(document.createTextNode("empty"));
    for (const q of queues) {
      const span = el("span");
      span.dataset.queue = q.queue;
      span.appendChild(document.createTextNode(q.queue + ": "));
      Object.entries(q.waiting).forEach(([p, n], i) => {
        if (i) span.appendChild(document.createTextNode(", "));
        span.appendChild(document.createTextNode(p + " "));
        span.appendChild(el("b", n));
      });
      span.appendChild(document.createTextNode(` · leased ${Number(q.leased)} · ` +
                                                `delayed ${Number(q.delayed)}`));
      box.appendChild(span);
    }
  } catch (e) { /* shown by the connection state */ }
}

async function act(taskId, action) {
  showError("");
  try {
    showTask(await api(`/tasks/${encodeURIComponent(taskId)}/${action}`, {method: "POST"}));
  } catch (e) { showError(e.message); }
}

async function remove(taskId, target) {
  if (target.dataset.armed !== "1") {  // two clicks: a delete cannot be undone
    target.dataset.armed = "1";
    target.textContent = "confirm delete";
    setTimeout(() => { target.dataset.armed = ""; target.textContent = "delete"; }, 4000);
    return;
  }
  showError("");
  try {
    await api(`/tasks/${encodeURIComponent(taskId)}`, {method: "DELETE"});
    rows.get(taskId)?.remove();
    rows.delete(taskId);
    if ($("detail").dataset.taskId === taskId) $("detail").replaceChildren();
  } catch (e) { showError(e.message); }
}

async function openDetail(taskId) {
  showError("");
  try { showTask(await showDetail(taskId)); } catch (e) { showError(e.message); }
}

function onEvent(event) {
  if (onLogMessage(event)) return;
  if (event.event_id === undefined) return;
  lastEventId = event.event_id;
  if (event.kind === "status") {
    if (!rows.has(event.task_id)) {
      api("/tasks/" + encodeURIComponent(event.task_id))
        .then((t) => { if (matchesFilter(t)) showTask(t); }).catch(() => {});
      return;
    }
    const tr = rows.get(event.task_id);
    if (newer(tr, event.at)) setStatus(tr, event.status, event.attempt, event.at);
    if (event.error) tr.querySelector(".message").textContent = event.error.message;
  } else if (event.kind === "progress" && rows.has(event.task_id)) {
    const tr = rows.get(event.task_id);
    if (!isFinal(tr.dataset.status)) setProgress(tr, event.percentage, event.message);
  }
}

function follow(change) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(change));
}

function connect() {
  if (!state.csrf) return;
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  socket = new WebSocket(url);
  // no token in the hello: the HttpOnly session cookie authenticates this socket
  socket.onopen = () => socket.send(JSON.stringify({after_id: lastEventId,
                                                    ...followedLogs()}));
  socket.onmessage = (m) => {
    const data = JSON.parse(m.data);
    if (data.subscribed) $("conn").textContent = "live";
    onEvent(data);
  };
  socket.onclose = () => {
    $("conn").textContent = state.csrf ? "reconnecting…" : "disconnected";
    if (state.csrf) setTimeout(connect, 1000);
  };
}

function signedIn(session) {
  state.csrf = session.csrf;
  $("who").textContent = `${session.owner} (${session.role})`;
  $("login-form").hidden = true;
  $("logout").hidden = false;
}

async function start() {
  try {
    await loadTypes();
    await loadTasks();
    await loadSchedules();
    loadQueues();
    if (!queueTimer) queueTimer = setInterval(loadQueues, 2000);
    connect();
  } catch (e) { showError(e.message); }
}

async function main() {
  setLogFollower(follow);
  setUpScheduleForm();
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    showError("");
    const token = $("token").value;
    $("token").value = "";  // the token is not kept anywhere page script can read
    try {
      signedIn(await api("/session", {method: "POST", body: JSON.stringify({token})}));
      start();
    } catch (err) { showError(err.message); }
  });
  $("logout").addEventListener("click", async () => {
    try { await api("/session", {method: "DELETE"}); } catch (e) { /* already out */ }
    state.csrf = null;
    if (socket) socket.close();
    location.reload();
  });
  $("submit-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    showError("");
    try {
      showTask(await api("/tasks", {method: "POST", body: JSON.stringify({
        name: $("f-name").value, task_type: $("f-type").value,
        priority: Number($("f-priority").value),
        parameters: JSON.parse($("f-params").value)})}));
    } catch (err) { showError(err.message); }
  });
  $("filter-status").addEventListener("change", loadTasks);
  $("filter-type").addEventListener("change", loadTasks);
  // the login URL `raytasks serve` prints carries the token in the fragment (never sent to
  // a server, never logged): trade it for a session and take it out of the address bar
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromUrl) {
    history.replaceState(null, "", location.pathname + location.search);
    try {
      signedIn(await api("/session", {method: "POST", body: JSON.stringify({token: fromUrl})}));
      start();
      return;
    } catch (err) { showError(err.message); }
  }
  try {  // a session from earlier (the cookie is sent, but script never sees it)
    signedIn(await api("/session"));
    start();
  } catch (e) { /* not signed in yet */ }
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", main);
else main();
