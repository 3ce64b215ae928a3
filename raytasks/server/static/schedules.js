// The schedules panel: the caller's schedules with their next run, pause/resume/delete, a
// preview of the next runs, and a small form to add one. Names and rules are shown as text.
"use strict";

import {$, api, button, el, fmtTime, showError} from "./util.js";

function ruleText(rule) {
  if (rule.cron) return `cron ${rule.cron}`;
  if (rule.interval_s) return `every ${rule.interval_s} s`;
  const t = rule.trading || {};
  const when = t.after_close_min !== null && t.after_close_min !== undefined
    ? `${t.after_close_min} min after the close` : `at ${t.at}`;
  const every = {day: "every trading day", week_first: "first trading day of the week",
                 week_last: "last trading day of the week",
                 month_first: "first trading day of the month",
                 month_last: "last trading day of the month"}[t.every] || t.every;
  return `${every} ${when} (${t.calendar || "XSHG"})`;
}

function row(schedule) {
  const tr = el("tr");
  tr.dataset.scheduleId = schedule.id;
  tr.dataset.paused = String(schedule.paused);
  tr.appendChild(el("td", schedule.name, "name"));
  tr.appendChild(el("td", schedule.template.task_type, "type"));
  tr.appendChild(el("td", `${ruleText(schedule.rule)} · ${schedule.timezone}`, "rule"));
  tr.appendChild(el("td", schedule.paused ? "paused" : fmtTime(schedule.next_run_at), "next"));
  tr.appendChild(el("td", fmtTime(schedule.last_run_at), "last"));
  tr.appendChild(el("td", schedule.last_error || "", "last-error"));
  const actions = el("td", null, "actions");
  const path = `/schedules/${encodeURIComponent(schedule.id)}`;
  actions.appendChild(schedule.paused
    ? button("resume", "resume", () => change(path + "/resume", "POST"))
    : button("pause", "pause", () => change(path + "/pause", "POST")));
  actions.appendChild(button("next 5", "preview", () => preview(tr, path)));
  actions.appendChild(button("delete", "delete", () => change(path, "DELETE")));
  tr.appendChild(actions);
  return tr;
}

async function change(path, method) {
  showError("");
  try { await api(path, {method}); } catch (e) { showError(e.message); }
  await loadSchedules();
}

async function preview(tr, path) {
  const next = tr.nextElementSibling;
  if (next && next.classList.contains("runs")) { next.remove(); return; }
  try {
    const runs = await api(path + "/next?count=5");
    const line = el("tr", null, "runs");
    const cell = el("td", runs.length ? runs.map((r) => fmtTime(r.at) +
      (r.provisional ? " (provisional)" : "")).join(" · ") : "no more runs");
    cell.colSpan = 7;
    line.appendChild(cell);
    tr.after(line);
  } catch (e) { showError(e.message); }
}

export async function loadSchedules() {
  const schedules = await api("/schedules");
  $("schedule-rows").replaceChildren(...schedules.map(row));
  $("schedule-empty").hidden = schedules.length > 0;
}

function ruleFromForm() {
  const kind = $("s-rule-kind").value, value = $("s-rule-value").value.trim();
  if (kind === "cron") return {cron: value};
  if (kind === "interval") return {interval_s: Number(value)};
  return {trading: {every: $("s-every").value, at: value || "15:30"}};
}

export function setUpScheduleForm() {
  $("s-rule-kind").addEventListener("change", () => {
    const kind = $("s-rule-kind").value;
    $("s-every").hidden = kind !== "trading";
    $("s-rule-value").value = {trading: "15:30", cron: "0 * * * *", interval: "3600"}[kind];
  });
  $("schedule-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    showError("");
    try {
      await api("/schedules", {method: "POST", body: JSON.stringify({
        name: $("s-name").value, rule: ruleFromForm(),
        template: {name: $("s-name").value, task_type: $("s-type").value,
                   parameters: JSON.parse($("s-params").value || "{}")}})});
      await loadSchedules();
    } catch (err) { showError(err.message); }
  });
}
