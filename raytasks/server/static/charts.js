// Line charts as inline SVG, built with DOM calls: axes with ticks, date labels, a legend.
// Labels and series names come from results, so they are set with textContent only.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function node(tag, attrs = {}, text) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  if (text !== undefined) n.textContent = String(text);
  return n;
}

export function niceTicks(min, max, count = 5) {
  if (!(max > min)) { max = min + 1; min = min - 1; }
  const raw = (max - min) / count;
  const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  const ticks = [];
  for (let t = Math.ceil(min / step) * step; t <= max + step * 1e-9; t += step) {
    ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  }
  return ticks;
}

function tickLabel(value, format, step) {
  if (format === "percent") {
    let digits = 0;  // as many decimals as the step between ticks needs
    while (digits < 3 && Math.abs(Math.round(step * 100 * 10 ** digits) -
                                  step * 100 * 10 ** digits) > 1e-6) digits++;
    return (value * 100).toFixed(digits) + "%";
  }
  const abs = Math.abs(value);
  if (abs >= 1e6) return (value / 1e6).toFixed(abs >= 1e7 ? 0 : 1) + "M";
  if (abs >= 1e4) return (value / 1e3).toFixed(0) + "k";
  if (abs >= 100) return value.toFixed(0);
  return String(Number(value.toPrecision(3)));
}

/**
 * A line chart: `series` is [{name, values, className}] of equal length, `labels` the x
 * value of each point (dates as strings, or numbers); `yFormat` "number" or "percent".
 * Returns a <figure> holding the <svg> and a caption.
 */
export function lineChart({series, labels, title, yFormat = "number", xTitle = "",
                           width = 640, height = 240}) {
  const m = {left: 60, right: 16, top: 26, bottom: 46};
  const w = width - m.left - m.right, h = height - m.top - m.bottom;
  const all = series.flatMap((s) => s.values).filter((v) => isFinite(v));
  const ticks = niceTicks(Math.min(...all), Math.max(...all));
  const lo = ticks[0], hi = ticks[ticks.length - 1], n = series[0].values.length;
  const x = (i) => m.left + (n > 1 ? (i / (n - 1)) * w : w / 2);
  const y = (v) => m.top + h - ((v - lo) / (hi - lo || 1)) * h;
  const svg = node("svg", {width, height, viewBox: `0 0 ${width} ${height}`,
                           role: "img", class: "chart"});
  svg.appendChild(node("title", {}, title));
  const yAxis = node("g", {class: "axis y-axis"});
  for (const t of ticks) {
    yAxis.appendChild(node("line", {x1: m.left, x2: m.left + w, y1: y(t), y2: y(t),
                                    class: "grid"}));
    yAxis.appendChild(node("text", {x: m.left - 6, y: y(t) + 4, "text-anchor": "end"},
                           tickLabel(t, yFormat, ticks.length > 1 ? ticks[1] - ticks[0] : 1)));
  }
  svg.appendChild(yAxis);
  const xAxis = node("g", {class: "axis x-axis"});
  xAxis.appendChild(node("line", {x1: m.left, x2: m.left + w, y1: m.top + h, y2: m.top + h}));
  const marks = Math.min(6, n);
  for (let k = 0; k < marks; k++) {
    const i = marks > 1 ? Math.round((k / (marks - 1)) * (n - 1)) : 0;
    xAxis.appendChild(node("line", {x1: x(i), x2: x(i), y1: m.top + h, y2: m.top + h + 4}));
    const anchor = k === 0 ? "start" : (k === marks - 1 ? "end" : "middle");
    xAxis.appendChild(node("text", {x: x(i), y: m.top + h + 17, "text-anchor": anchor},
                           labels ? labels[i] : i));
  }
  if (xTitle) {
    xAxis.appendChild(node("text", {x: m.left + w / 2, y: height - 3, "text-anchor": "middle",
                                    class: "axis-title"}, xTitle));
  }
  svg.appendChild(xAxis);
  series.forEach((s, idx) => {
    const points = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
    const line = node("polyline", {points: points.join(" "),
                                   class: `series s${idx} ${s.className || ""}`});
    line.dataset.series = s.name;
    svg.appendChild(line);
  });
  const legend = node("g", {class: "legend"});
  let offset = m.left;
  series.forEach((s, idx) => {
    legend.appendChild(node("line", {x1: offset, x2: offset + 18, y1: 12, y2: 12,
                                     class: `series s${idx} ${s.className || ""}`}));
    const text = node("text", {x: offset + 22, y: 16}, s.name);
    legend.appendChild(text);
    offset += 34 + 7 * String(s.name).length;
  });
  svg.appendChild(legend);
  const figure = document.createElement("figure");
  figure.appendChild(svg);
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  figure.appendChild(caption);
  return figure;
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
