"""The research report: written by `raytasks report` from real backtest and prediction tasks,
opened in a real headless Chromium, charts drawn, user strings shown as text, never run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import ray
from playwright.sync_api import sync_playwright

from raytasks import TaskCreateRequest, TaskManager
from raytasks.settings import TaskTypeSettings
from tests.ray.test_dashboard import CHROMIUM, FLAGS

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-output"
PAYLOAD = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">"


def test_raytasks_report_draws_the_results_and_shows_user_strings_as_text(
        make_service: Any) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test-deps` installs it (apt package chromium)")
    service = make_service(task_types={t: TaskTypeSettings(workers=1)
                                       for t in ("backtest", "prediction")})
    tm = TaskManager(service)
    # Given finished tasks, one named and tagged with a script payload
    common = {"stock_code": "000001.SZ", "start": "2021-01-01"}
    tasks = tm.wait_all_sync([t.id for t in tm.submit_many_sync([
        TaskCreateRequest(name=f"SMA 10/60 {PAYLOAD}", task_type="backtest",
                          tags=["<b>bold</b>", "x\" onmouseover=\"window.__pwned=3"],
                          parameters={"kind": "strategy", "fast": 10, "slow": 60, **common}),
        TaskCreateRequest(name="sweep", task_type="backtest", parameters={
            "kind": "optimize", "fast_values": [2, 6, 10, 14], "slow_values": [20, 40, 60],
            **common}),
        TaskCreateRequest(name="forecast", task_type="prediction",
                          parameters={"days": 5, **common})])], timeout_s=300)
    assert [t.status.value for t in tasks] == ["COMPLETED"] * 3, [t.error for t in tasks]
    # When `raytasks report` writes them to one file
    OUT.mkdir(exist_ok=True)
    path = OUT / "report.html"
    env = {**os.environ, "RAYTASKS_NAMESPACE": service.settings.namespace,
           "RAYTASKS_DATA_DIR": str(service.settings.data_dir)}
    out = subprocess.run([str(Path(sys.executable).parent / "raytasks"), "--address",
                          ray.get_runtime_context().gcs_address, "report",
                          *[t.id for t in tasks], "-o", str(path)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == str(path)
    # Then the file stands alone (no network, no script) ...
    html = path.read_text(encoding="utf-8")
    assert "<script" not in html and "<img" not in html and "&lt;b&gt;bold" in html
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html
    assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?(https?:)?//""", html)
    # ... and in Chromium the payloads are text, nothing ran, and the charts are there
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(path.as_uri())
        assert page.evaluate("window.__pwned") is None
        assert page.locator("script").count() == 0 and page.locator("img").count() == 0
        assert page.locator("h2").first.inner_text() == f"SMA 10/60 {PAYLOAD}"
        tags = page.locator(".tag").all_inner_texts()
        assert tags == ["<b>bold</b>", "x\" onmouseover=\"window.__pwned=3"]
        page.locator(".tag").nth(1).hover()
        assert page.evaluate("window.__pwned") is None
        captions = page.locator(".fig p").all_inner_texts()
        assert captions == ["equity against buy and hold (CNY)", "drawdown from the running peak",
                            "Sharpe ratio of every SMA pair (fast × slow)",
                            "forecast against actual return, out of sample"]
        assert page.locator(".fig svg").count() == 4
        svg_text = page.locator(".fig svg").first.text_content() or ""
        assert "date" in svg_text and "equity (CNY)" in svg_text and "buy and hold" in svg_text
        trades = page.locator("table.trades tbody tr").count()
        assert trades == min(60, tasks[0].result["trades"]) and trades > 0
        assert page.locator("table.metrics th", has_text="risk.sharpe").count() == 1
        # and each task's lineage, folded: its code hash and the bars it read
        page.locator("details summary").first.click()
        lineage = page.locator("details pre").first.inner_text()
        assert f"code       sha256 {tasks[0].lineage['code']}" in lineage
        assert "bars       synthetic/000001.SZ 2021-01-01.." in lineage
        page.screenshot(path=str(OUT / "report.png"), full_page=True)
        page.locator("section").first.screenshot(path=str(OUT / "report-backtest.png"))
        browser.close()
    assert errors == []
    print(json.dumps({"report": str(path), "screenshots": ["report.png",
                                                           "report-backtest.png"]}))
