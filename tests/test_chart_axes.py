"""The dashboard's chart axes (``server/static/charts.js``) in a real headless Chromium, without
Ray: for ranges of every size and sign the axis spans the data with a little padding, its
ticks are round, few and distinct as labels, and every point of a chart is inside its frame."""

from __future__ import annotations

import itertools
import math
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

import raytasks.server
from tests.ray.test_dashboard import CHROMIUM, FLAGS

CHARTS = Path(raytasks.server.__file__).parent / "static" / "charts.js"
PAGE = b"""<!doctype html><meta charset="utf-8"><body>
<script type="module">import * as charts from "/charts.js"; window.charts = charts;</script>"""
ROUND = {1.0, 2.0, 2.5, 5.0}


class _Files(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body, kind = (CHARTS.read_bytes(), "text/javascript") if self.path == "/charts.js" \
            else (PAGE, "text/html")
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    """A page with charts.js loaded as ``window.charts``."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test-deps` installs it (apt package chromium)")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            opened = browser.new_page()
            opened.goto(f"http://127.0.0.1:{server.server_port}/")
            opened.wait_for_function("window.charts !== undefined")
            yield opened
            browser.close()
    finally:
        server.shutdown()
        server.server_close()


RANGES = [(0.37e6, 2.41e6), (0.5e6, 1.11e6), (-0.73, 0.0), (-0.153, 0.26), (1.0, 1.11),
          (0.0, 0.0), (5.0, 5.0), (-3e-5, 2e-5), (1e9, 1e9 + 7), (-2.5e6, -1e6),
          (0.0, 1.0), (-1.0, 0.0), (0.001, 1000.0)]


def _random_ranges(count: int) -> list[tuple[float, float]]:
    rng = random.Random(20261207)
    out = []
    for _ in range(count):
        centre = rng.choice([0.0, 1.0, -1.0]) * 10 ** rng.uniform(-4, 7)
        width = 10 ** rng.uniform(-5, 7)
        low = centre - width * rng.random()
        out.append((low, low + width))
    return out


@pytest.mark.parametrize("fmt", ["number", "percent"])
def test_an_axis_spans_its_data_on_few_round_distinct_ticks(page: Any, fmt: str) -> None:
    ranges = RANGES + _random_ranges(300)
    scales = page.evaluate("""([ranges, fmt]) => ranges.map(([a, b]) => {
      const s = charts.niceScale(a, b);
      return {...s, labels: charts.tickLabels(s.ticks, s.step, fmt)};
    })""", [ranges, fmt])
    for (low, high), scale in zip(ranges, scales, strict=True):
        ticks, step, what = scale["ticks"], scale["step"], f"{low}..{high}: {scale}"
        # Then the first and last ticks are the axis' ends, and the data lie between them
        assert scale["lo"] == ticks[0] and scale["hi"] == ticks[-1], what
        assert ticks[0] <= low and ticks[-1] >= high, what
        # with a little room, except where the axis stops at zero (no sign the data lack)
        span = high - low
        if span > 1e-9 * max(abs(low), abs(high)):  # (narrower: drawn as flat)
            assert low - ticks[0] >= 0.02 * span or ticks[0] == 0 <= low, what
            assert ticks[-1] - high >= 0.02 * span or ticks[-1] == 0 >= high, what
            assert span / (ticks[-1] - ticks[0]) >= 0.4, what  # the data fill the chart
        if low >= 0 and high > 0:  # (all zeros: either way)
            assert ticks[0] >= 0, what
        if high <= 0 and low < 0:
            assert ticks[-1] <= 0, what
        # And the ticks are 4 to 7, evenly apart by 1, 2, 2.5 or 5 x 10^k, read distinctly
        assert 4 <= len(ticks) <= 7, what
        assert all(math.isclose(b - a, step, rel_tol=1e-6)
                   for a, b in itertools.pairwise(ticks)), what
        mantissa = step / 10 ** math.floor(math.log10(step))
        assert any(math.isclose(mantissa, r, rel_tol=1e-9) for r in ROUND), what
        assert len(set(scale["labels"])) == len(ticks), what
        assert not any(label.startswith("-0") and label.strip("-0.%kM") == ""
                       for label in scale["labels"]), what


SERIES = {
    "wide": [[1e6, 2.6e6, 0.4e6, 1.7e6], [1e6, 0.9e6, 0.35e6, 2.41e6]],
    "negative": [[-3.0, -7.5, -1.2], [-0.5, -9.9, -4.0]],
    "flat": [[0.0, 0.0, 0.0]],
    "one point": [[5.0]],
    "tiny": [[1e-6, 3e-6, -2e-6]],
}


@pytest.mark.parametrize("name", list(SERIES))
def test_every_point_is_inside_the_frame_and_labels_outside_it(page: Any, name: str) -> None:
    drawn = page.evaluate("""(series) => {
      const figure = charts.lineChart({title: "t", series: series.map((values, k) => ({
        name: "s" + k, values}))});
      document.body.replaceChildren(figure);
      const svg = figure.querySelector("svg"), area = svg.querySelector("rect.plot-area");
      const n = (name) => Number(area.getAttribute(name));
      return {
        frame: [n("x"), n("y"), n("x") + n("width"), n("y") + n("height")],
        points: [...svg.querySelectorAll("polyline.series")].flatMap(
          (line) => [...line.points].map((p) => [p.x, p.y])),
        labels: [...svg.querySelectorAll(".y-axis text")].map((t) => {
          const b = t.getBBox(); return [b.x + b.width, t.textContent]; }),
      };
    }""", SERIES[name])
    left, top, right, bottom = drawn["frame"]
    assert len(drawn["points"]) == sum(len(s) for s in SERIES[name])
    for x, y in drawn["points"]:
        assert left - 0.1 <= x <= right + 0.1 and top - 0.1 <= y <= bottom + 0.1, (x, y)
    assert all(edge <= left for edge, _ in drawn["labels"]), drawn["labels"]
