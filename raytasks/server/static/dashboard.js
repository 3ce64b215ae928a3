// The raytasks dashboard. Served as a file so the page's Content-Security-Policy can forbid
// inline script. Every string that comes from the API is put in the page as text
// (textContent, never innerHTML): names, tags, parameters, errors, results, queues, types.
// The token is sent once to POST /session and forgotten; the session cookie is HttpOnly
// and the CSRF token lives in this script's memory only.
"use strict";

const PRI = {1: "HIGH", 2: "MEDIUM", 3: "LOW"};
const FINAL = ["COMPLETED", "FAILED", "CANCELLED"];
const SVG = "http://www.w3.org/2000/svg";
let csrf = null, lastEventId = null, socket = null, queueTimer = null;
const rows = new Map();
const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

async function api(path, options = {}) {
  const headers = {"Content-Type": "application/json"};
  if (csrf && options.method && options.method !== "GET") headers["X-CSRF-Token"] = csrf;
  const response = await fetch(path, {...options, headers, credentials: "same-origin"});
  if (response.status === 204) return null;
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || response.statusText);
  return body;
}

function rowFor(task) {
  let tr = rows.get(task.id);
  if (!tr) {
    tr = document.createElement("tr");
    tr.dataset.taskId = task.id;
    for (const name of ["name", "type", "priority", "status", "attempt"]) {
      tr.appendChild(el("td", "", name));
    }
    const barCell = el("td"), bar = el("div", null, "bar");
    bar.dataset.pct = "0";
    bar.appendChild(el("div"));
    barCell.appendChild(bar);
    tr.appendChild(barCell);
    tr.appendChild(el("td", "", "message"));
    tr.appendChild(el("td", "", "tags"));
    const actions = el("td");
    for (const [label, handler] of [["cancel", () => act(task.id, "cancel")],
                                    ["retry", () => act(task.id, "retry")],
                                    ["details", () => showDetail(task.id)]]) {
      const button = el("button", label, label);
      button.addEventListener("click", handler);
      actions.appendChild(button);
      actions.appendChild(document.createTextNode(" "));
    }
    tr.appendChild(actions);
    $("tasks").prepend(tr);
    rows.set(task.id, tr);
  }
  return tr;
}

function setStatus(tr, status, attempt) {
  const cell = tr.querySelector(".status");
  cell.textContent = status;
  cell.className = "status " + (FINAL.includes(status) || status === "PENDING" ||
                                status === "RUNNING" ? status : "");
  tr.dataset.status = status;
  if (attempt !== undefined) tr.querySelector(".attempt").textContent = String(attempt);
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
  const tags = tr.querySelector(".tags");
  tags.replaceChildren(...(task.tags || []).map((t) => el("span", t, "tag")));
  setStatus(tr, task.status, task.attempt);
  if (task.error && task.error.message) tr.querySelector(".message").textContent =
    task.error.message;
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
  const types = await api("/task-types");
  for (const select of [$("f-type"), $("filter-type")]) {
    select.querySelectorAll("option[data-type]").forEach((o) => o.remove());
    for (const name of types.map((x) => x.name).sort()) {
      const option = el("option", name);
      option.value = name;
      option.dataset.type = "1";
      select.appendChild(option);
    }
  }
  const names = types.map((t) => t.name);
  $("f-type").value = names.includes("prediction") ? "prediction" : names[0];
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
  $("error").textContent = "";
  try { showTask(await api(`/tasks/${encodeURIComponent(taskId)}/${action}`,
                           {method: "POST"})); }
  catch (e) { $("error").textContent = e.message; }
}

function chart(values) {
  const w = 480, h = 120, min = Math.min(...values), max = Math.max(...values);
  const span = max - min || 1;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", String(w));
  svg.setAttribute("height", String(h));
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", values.map((v, i) =>
    `${(i / Math.max(1, values.length - 1)) * w},${h - ((v - min) / span) * h}`).join(" "));
  svg.appendChild(line);
  return svg;
}

function seriesOf(value) {
  if (!Array.isArray(value) || value.length < 2) return null;
  const values = value.map((x) => typeof x === "number" ? x :
    (x && typeof x === "object" ? (x.value ?? x.equity) : undefined));
  return values.every((v) => typeof v === "number" && isFinite(v)) ? values : null;
}

async function showDetail(taskId) {
  const task = await api("/tasks/" + encodeURIComponent(taskId));
  showTask(task);  // the full task: its row also shows the error message
  const detail = $("detail");
  detail.replaceChildren(el("h2", task.name));
  if (task.error) detail.appendChild(el("p", `${task.error.type}: ${task.error.message}`,
                                        "task-error"));
  const result = task.result && typeof task.result === "object" ? task.result : {};
  for (const [key, value] of Object.entries(result)) {
    const values = seriesOf(value);
    if (values) {
      detail.appendChild(el("h3", key));
      detail.appendChild(chart(values));
    }
  }
  detail.appendChild(el("pre", JSON.stringify(task, null, 2)));
}

function onEvent(event) {
  if (event.event_id === undefined) return;
  lastEventId = event.event_id;
  if (event.kind === "status") {
    if (!rows.has(event.task_id)) {
      api("/tasks/" + encodeURIComponent(event.task_id))
        .then((t) => { if (matchesFilter(t)) showTask(t); }).catch(() => {});
      return;
    }
    setStatus(rows.get(event.task_id), event.status, event.attempt);
    if (event.error) rows.get(event.task_id).querySelector(".message").textContent =
      event.error.message;
  } else if (event.kind === "progress" && rows.has(event.task_id)) {
    const tr = rows.get(event.task_id);
    // progress is flushed in batches and can trail the final status: never let it undo one
    if (!FINAL.includes(tr.dataset.status)) setProgress(tr, event.percentage, event.message);
  }
}

function connect() {
  if (!csrf) return;
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  socket = new WebSocket(url);
  // no token in the hello: the HttpOnly session cookie authenticates this socket
  socket.onopen = () => socket.send(JSON.stringify({after_id: lastEventId}));
  socket.onmessage = (m) => {
    const data = JSON.parse(m.data);
    if (data.subscribed) $("conn").textContent = "live";
    onEvent(data);
  };
  socket.onclose = () => {
    $("conn").textContent = csrf ? "reconnecting…" : "disconnected";
    if (csrf) setTimeout(connect, 1000);
  };
}

function signedIn(session) {
  csrf = session.csrf;
  $("who").textContent = `${session.owner} (${session.role})`;
  $("login-form").hidden = true;
  $("logout").hidden = false;
}

async function start() {
  try {
    await loadTypes();
    await loadTasks();
    loadQueues();
    if (!queueTimer) queueTimer = setInterval(loadQueues, 2000);
    connect();
  } catch (e) { $("error").textContent = e.message; }
}

document.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("error").textContent = "";
    const token = $("token").value;
    $("token").value = "";  // the token is not kept anywhere page script can read
    try {
      signedIn(await api("/session", {method: "POST", body: JSON.stringify({token})}));
      start();
    } catch (err) { $("error").textContent = err.message; }
  });
  $("logout").addEventListener("click", async () => {
    try { await api("/session", {method: "DELETE"}); } catch (e) { /* already out */ }
    csrf = null;
    if (socket) socket.close();
    location.reload();
  });
  $("submit-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("error").textContent = "";
    try {
      const task = await api("/tasks", {method: "POST", body: JSON.stringify({
        name: $("f-name").value, task_type: $("f-type").value,
        priority: Number($("f-priority").value), parameters: JSON.parse($("f-params").value)})});
      showTask(task);
    } catch (err) { $("error").textContent = err.message; }
  });
  $("filter-status").addEventListener("change", loadTasks);
  $("filter-type").addEventListener("change", loadTasks);
  try {  // a session from earlier (the cookie is sent, but script never sees it)
    signedIn(await api("/session"));
    start();
  } catch (e) { /* not signed in yet */ }
});
