// Charts as inline SVG, built with DOM calls: line charts (axes with ticks, date labels, a
// legend) and heat-maps (a grid of cells, a colour bar). Axes come from the data: a little
// padding, then widened to round ticks, so every point lies inside the frame, and tick
// labels sit outside it. Labels and series names come from results: textContent only.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const STEPS = [1, 2, 2.5, 5, 10];
// matplotlib's RdYlGn, as the HTML report's heat-map: red low, yellow middle, green high
const RDYLGN = ["#a50026", "#d73027", "#f46d43", "#fdae61", "#fee08b", "#ffffbf", "#d9ef8b",
                "#a6d96a", "#66bd63", "#1a9850", "#006837"];
const CHAR_W = 6.5;  // the width of a digit at the charts' 11px, for margins that fit labels

function node(tag, attrs = {}, text) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  if (text !== undefined) n.textContent = String(text);
  return n;
}

/**
 * The axis for values from `min` to `max`: padded by `pad` of their range on each side
 * (never across zero: a drawdown tops out at 0 %, a price axis stops at 0), then widened to
 * whole steps of 1, 2, 2.5 or 5 × 10^k: of the steps that give `count` - 1 to `count` + 2
 * ticks, the one that wastes the least height. Values all within a billionth of each other
 * are drawn as flat, on an axis 5 % either side of them.
 * Returns {lo, hi, step, ticks}: lo and hi are the first and last ticks, and every value
 * from min to max lies between them.
 */
export function niceScale(min, max, {count = 5, pad = 0.03} = {}) {
  if (!Number.isFinite(min) || !Number.isFinite(max)) { min = 0; max = 1; }
  if (min > max) [min, max] = [max, min];
  if (max - min <= Math.max(Math.abs(min), Math.abs(max)) * 1e-9) {
    const mid = (min + max) / 2, half = Math.abs(mid) * 0.05 || 0.01;
    [min, max] = [mid - half, mid + half];
  }
  let lo = min - (max - min) * pad, hi = max + (max - min) * pad;
  if (min >= 0) lo = Math.max(lo, 0);
  if (max <= 0) hi = Math.min(hi, 0);
  const magnitude = 10 ** Math.floor(Math.log10((hi - lo) / count));
  const candidates = [0.1, 1, 10].flatMap((k) => STEPS.map((s) => s * k * magnitude))
    .map((step) => {
      const first = Math.floor(lo / step + 1e-9), last = Math.ceil(hi / step - 1e-9);
      const ticks = last - first + 1;
      return {step, first, last, misfit: Math.max(0, count - 1 - ticks, ticks - count - 2),
              span: Number(((last - first) * step).toPrecision(9)),
              off: Math.abs(ticks - count - 1)};
    });
  candidates.sort((a, b) => a.misfit - b.misfit || a.span - b.span || a.off - b.off);
  const {step, first, last} = candidates[0];
  const ticks = [];
  for (let k = first; k <= last; k++) {
    ticks.push(Number((k * step).toPrecision(12)) || 0);  // || 0: never "-0"
  }
  return {lo: ticks[0], hi: ticks[ticks.length - 1], step, ticks};
}

/** The labels of `ticks` `step` apart: "80%", "2.5M", "500k", "1.02"; as many decimals as
 * the step needs in that unit, so no two labels read the same. */
export function tickLabels(ticks, step, format = "number") {
  let scale = 1, suffix = "";
  const top = Math.max(...ticks.map(Math.abs));
  if (format === "percent") { scale = 0.01; suffix = "%"; }
  else if (top >= 1e6) { scale = 1e6; suffix = "M"; }
  else if (top >= 1e4) { scale = 1e3; suffix = "k"; }
  const unitStep = step / scale;
  let digits = 0;  // the fewest that write the step as a whole number of the last digit
  for (; digits < 12; digits++) {
    const x = unitStep * 10 ** digits;
    if (Math.round(x) >= 1 && Math.abs(x - Math.round(x)) <= 1e-6 * x) break;
  }
  return ticks.map((t) => (t === 0 ? "0" : (t / scale).toFixed(digits)) + (
    t === 0 && suffix !== "%" ? "" : suffix));
}

function figureOf(svg, title) {
  const figure = document.createElement("figure");
  figure.appendChild(svg);
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  figure.appendChild(caption);
  return figure;
}

/**
 * A line chart: `series` is [{name, values, className}], `labels` the x value of each point
 * (dates as strings, or numbers); `yFormat` "number" or "percent". The y axis spans every
 * finite value (see niceScale); the plot area is the <rect class="plot-area">.
 * Returns a <figure> holding the <svg> and a caption.
 */
export function lineChart({series, labels, title, yFormat = "number", xTitle = "",
                           width = 640, height = 240}) {
  const all = series.flatMap((s) => s.values).filter((v) => Number.isFinite(v));
  const scale = niceScale(Math.min(...all), Math.max(...all));
  const texts = tickLabels(scale.ticks, scale.step, yFormat);
  const m = {left: Math.max(44, 14 + CHAR_W * Math.max(...texts.map((t) => t.length))),
             right: 16, top: 26, bottom: 46};
  const w = width - m.left - m.right, h = height - m.top - m.bottom;
  const n = Math.max(...series.map((s) => s.values.length));
  const x = (i) => m.left + (n > 1 ? (i / (n - 1)) * w : w / 2);
  const y = (v) => m.top + h - ((v - scale.lo) / (scale.hi - scale.lo)) * h;
  const svg = node("svg", {width, height, viewBox: `0 0 ${width} ${height}`,
                           role: "img", class: "chart"});
  svg.appendChild(node("title", {}, title));
  svg.appendChild(node("rect", {x: m.left, y: m.top, width: w, height: h,
                                class: "plot-area"}));
  const yAxis = node("g", {class: "axis y-axis"});
  scale.ticks.forEach((t, k) => {
    yAxis.appendChild(node("line", {x1: m.left, x2: m.left + w, y1: y(t), y2: y(t),
                                    class: "grid"}));
    yAxis.appendChild(node("text", {x: m.left - 6, y: y(t) + 4, "text-anchor": "end"},
                           texts[k]));
  });
  svg.appendChild(yAxis);
  const xAxis = node("g", {class: "axis x-axis"});
  xAxis.appendChild(node("line", {x1: m.left, x2: m.left + w, y1: m.top + h, y2: m.top + h}));
  const marks = Math.min(6, n);
  for (let k = 0; k < marks; k++) {
    const i = marks > 1 ? Math.round((k / (marks - 1)) * (n - 1)) : 0;
    xAxis.appendChild(node("line", {x1: x(i), x2: x(i), y1: m.top + h, y2: m.top + h + 4}));
    const anchor = marks === 1 ? "middle" : (k === 0 ? "start" : (k === marks - 1 ? "end"
      : "middle"));
    xAxis.appendChild(node("text", {x: x(i), y: m.top + h + 17, "text-anchor": anchor},
                           labels ? labels[i] : i));
  }
  if (xTitle) {
    xAxis.appendChild(node("text", {x: m.left + w / 2, y: height - 3, "text-anchor": "middle",
                                    class: "axis-title"}, xTitle));
  }
  svg.appendChild(xAxis);
  series.forEach((s, idx) => {
    const points = s.values.map((v, i) => [v, i]).filter(([v]) => Number.isFinite(v))
      .map(([v, i]) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
    const line = node("polyline", {points: points.join(" "),
                                   class: `series s${idx} ${s.className || ""}`});
    line.dataset.series = s.name;
    svg.appendChild(line);
    if (points.length === 1) {  // a line of one point draws nothing: mark the point
      const [cx, cy] = points[0].split(",");
      svg.appendChild(node("circle", {cx, cy, r: 3, class: `dot s${idx} ${s.className || ""}`}));
    }
  });
  const legend = node("g", {class: "legend"});
  let offset = m.left;
  series.forEach((s, idx) => {
    legend.appendChild(node("line", {x1: offset, x2: offset + 18, y1: 12, y2: 12,
                                     class: `series s${idx} ${s.className || ""}`}));
    legend.appendChild(node("text", {x: offset + 22, y: 16}, s.name));
    offset += 34 + 7 * String(s.name).length;
  });
  svg.appendChild(legend);
  return figureOf(svg, title);
}

/** A colour on RdYlGn for `t` from 0 (lowest) to 1 (highest), as "rgb(r,g,b)". */
export function colourOf(t) {
  const at = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0.5)) * (RDYLGN.length - 1);
  const i = Math.min(Math.floor(at), RDYLGN.length - 2), f = at - i;
  const [a, b] = [RDYLGN[i], RDYLGN[i + 1]].map(
    (hex) => [1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16)));
  return `rgb(${a.map((c, k) => Math.round(c + (b[k] - c) * f)).join(",")})`;
}

function every(count, room, minGap) {  // label every k-th of `count` so labels do not meet
  return Math.max(1, Math.ceil(count / Math.max(1, Math.floor(room / minGap))));
}

/**
 * A heat-map of one value per (x, y) pair: `xs`, `ys` and `values` are parallel arrays (a
 * null value leaves its cell empty). Columns are the distinct xs in ascending order, rows
 * the distinct ys with the smallest at the bottom. Colour runs red (low), yellow, green
 * (high) over a colour bar with round ticks; the highest value's cell is outlined (class
 * "best"), and every cell's <title> names its pair and value (`xName`, `yName`,
 * `valueName`). The plot area is the <rect class="plot-area">.
 */
export function heatMap({xs, ys, values, title, xName, yName, valueName, xTitle, yTitle,
                         width = 640, height = 320}) {
  const columns = [...new Set(xs)].sort((a, b) => a - b);
  const rows = [...new Set(ys)].sort((a, b) => a - b);
  const finite = values.filter((v) => Number.isFinite(v));
  const scale = niceScale(Math.min(...finite), Math.max(...finite), {count: 4, pad: 0});
  const scaleTexts = tickLabels(scale.ticks, scale.step);
  const rowTexts = rows.map(String);
  const m = {left: 30 + CHAR_W * Math.max(...rowTexts.map((t) => t.length)), top: 12,
             bottom: 48, right: 40 + CHAR_W * Math.max(...scaleTexts.map((t) => t.length))};
  const w = width - m.left - m.right, h = height - m.top - m.bottom;
  const cw = w / columns.length, ch = h / rows.length;
  const col = new Map(columns.map((v, i) => [v, i])), row = new Map(rows.map((v, j) => [v, j]));
  const svg = node("svg", {width, height, viewBox: `0 0 ${width} ${height}`,
                           role: "img", class: "chart heatmap"});
  svg.appendChild(node("title", {}, title));
  svg.appendChild(node("rect", {x: m.left, y: m.top, width: w, height: h,
                                class: "plot-area"}));
  const best = finite.length ? Math.max(...finite) : null;
  let marked = false;
  const cells = node("g", {class: "cells"});
  values.forEach((v, k) => {
    if (!Number.isFinite(v)) return;
    const cell = node("rect", {
      x: m.left + col.get(xs[k]) * cw, y: m.top + (rows.length - 1 - row.get(ys[k])) * ch,
      width: cw, height: ch, fill: colourOf((v - scale.lo) / (scale.hi - scale.lo)),
      class: !marked && v === best ? "cell best" : "cell"});
    marked ||= v === best;
    cell.dataset.x = String(xs[k]);
    cell.dataset.y = String(ys[k]);
    cell.dataset.value = String(v);
    cell.appendChild(node("title", {}, `${yName} ${ys[k]}, ${xName} ${xs[k]}: ` +
                                       `${valueName} ${Number(v.toPrecision(4))}`));
    cells.appendChild(cell);
  });
  svg.appendChild(cells);
  const outlined = cells.querySelector(".best");
  if (outlined) cells.appendChild(outlined);  // drawn last: no neighbour covers its outline
  const xAxis = node("g", {class: "axis x-axis"});
  const xEvery = every(columns.length, w, 28);
  columns.forEach((v, i) => {
    if (i % xEvery) return;
    xAxis.appendChild(node("text", {x: m.left + (i + 0.5) * cw, y: m.top + h + 15,
                                    "text-anchor": "middle"}, v));
  });
  xAxis.appendChild(node("text", {x: m.left + w / 2, y: height - 8, "text-anchor": "middle",
                                  class: "axis-title"}, xTitle));
  svg.appendChild(xAxis);
  const yAxis = node("g", {class: "axis y-axis"});
  const yEvery = every(rows.length, h, 14);
  rows.forEach((v, j) => {
    if (j % yEvery) return;
    yAxis.appendChild(node("text", {x: m.left - 6, y: m.top + (rows.length - 0.5 - j) * ch + 4,
                                    "text-anchor": "end"}, v));
  });
  yAxis.appendChild(node("text", {x: 12, y: m.top + h / 2, "text-anchor": "middle",
                                  transform: `rotate(-90 12 ${m.top + h / 2})`,
                                  class: "axis-title"}, yTitle));
  svg.appendChild(yAxis);
  const bar = node("g", {class: "colour-bar"});
  const bx = m.left + w + 14, steps = 40;
  for (let s = 0; s < steps; s++) {
    bar.appendChild(node("rect", {x: bx, y: m.top + h - ((s + 1) / steps) * h, width: 12,
                                  height: h / steps + 0.5, fill: colourOf((s + 0.5) / steps)}));
  }
  scale.ticks.forEach((t, k) => {
    const ty = m.top + h - ((t - scale.lo) / (scale.hi - scale.lo)) * h;
    bar.appendChild(node("line", {x1: bx + 12, x2: bx + 16, y1: ty, y2: ty}));
    bar.appendChild(node("text", {x: bx + 18, y: ty + 4}, scaleTexts[k]));
  });
  svg.appendChild(bar);
  return figureOf(svg, title);
}

/** Each point's fall from the running peak, as a fraction (0 at a new high). */
export function drawdowns(values) {
  let peak = -Infinity;
  return values.map((v) => { peak = Math.max(peak, v); return peak > 0 ? v / peak - 1 : 0; });
}

export function numbers(value, min = 2) {
  return Array.isArray(value) && value.length >= min &&
    value.every((v) => typeof v === "number" && isFinite(v));
}
