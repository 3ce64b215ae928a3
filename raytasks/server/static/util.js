// Helpers every dashboard module shares. Every string from the API is put in the page as
// text (textContent), never as markup: this module has no innerHTML and neither has any other.
"use strict";

export const state = {csrf: null};
export const $ = (id) => document.getElementById(id);

export function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

export function button(label, className, onClick) {
  const b = el("button", label, className);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

export async function api(path, options = {}) {
  const headers = {"Content-Type": "application/json"};
  if (state.csrf && options.method && options.method !== "GET") {
    headers["X-CSRF-Token"] = state.csrf;
  }
  const response = await fetch(path, {...options, headers, credentials: "same-origin"});
  if (response.status === 204) return null;
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || response.statusText);
  return body;
}

export function showError(message) {
  $("error").textContent = message || "";
}

const pad = (n) => String(n).padStart(2, "0");

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (isNaN(d)) return "—";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "—";
  const s = Math.max(0, seconds);
  if (s < 10) return s.toFixed(2) + " s";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

export function secondsBetween(from, to) {
  if (!from || !to) return null;
  return (new Date(to) - new Date(from)) / 1000;
}

export function fmtNumber(value) {
  if (typeof value !== "number" || !isFinite(value)) return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  if (Math.abs(value) >= 1e5) return Math.round(value).toLocaleString("en-US");
  return value.toLocaleString("en-US", {maximumFractionDigits: 4});
}
