"""The dashboard's research views in a real headless Chromium: task logs attempt by attempt
(also live), the schedules panel, a backtest's and a forecast's results as a researcher
reads them, the table's times and actions, and the API docs under their CSP."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright
from pydantic import BaseModel

from raytasks import TaskExecutionContext, register_task_type
from raytasks.settings import TaskTypeSettings
from tests.conftest import wait_for
from tests.httpserver import TOKENS, auth
from tests.ray.test_dashboard import CHROMIUM, FLAGS, sign_in

MARKUP = ['<img src=x onerror="window.__pwned=1">', "<script>window.__pwned=2</script>",
          "<b>bold?</b> &amp; done"]
OUT = Path("test-output")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class NoisyParams(BaseModel):
    release: str | None = None
    fail: bool = True


def noisy(params: NoisyParams, ctx: TaskExecutionContext) -> dict[str, int]:
    """Prints markup, waits for ``release`` (bounded) when given, prints more, fails."""
    print(f"loading bars for attempt {ctx.attempt}")
    for line in MARKUP:
        print(line)
    print("fit diverged", file=sys.stderr)
    if params.release:
        deadline = time.time() + 60
        while not Path(params.release).exists() and time.time() < deadline:
            ctx.check_cancelled()
            time.sleep(0.05)
        print("released")
    if params.fail:
        raise ValueError("the model did not converge")
    return {"ok": 1}


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test-deps` installs it (apt package chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.dialogs = []
        page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
        yield page
        browser.close()


def _shot(page: Any, name: str) -> None:
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / name), full_page=True)
    assert (OUT / name).stat().st_size > 10_000


def _no_script_ran(page: Any) -> None:
    assert page.evaluate("window.__pwned") is None and page.dialogs == []
    assert page.locator("#detail img, #detail script, #detail b").count() == 0


def test_a_task_that_logs_then_fails_shows_its_lines_attempt_by_attempt(
        api: Any, browser_page: Any, tmp_path: Path) -> None:
    register_task_type("noisy", noisy, params_model=NoisyParams, workers=1, max_retries=1,
                       runtime=api.service)
    page = browser_page
    with httpx.Client(base_url=api.url, headers=auth("alice")) as alice:
        # Given alice's task that logged markup and failed on both of its attempts
        task = alice.post("/tasks", json={"name": "noisy", "task_type": "noisy"}).json()
        wait_for(lambda: alice.get(f"/tasks/{task['id']}").json()["status"] == "FAILED",
                 what="the noisy task to fail")
    # When she opens its detail
    sign_in(page, api.url, TOKENS["alice"])
    row = page.locator(f"tr[data-task-id='{task['id']}']")
    expect(row.locator(".status")).to_have_text("FAILED")
    row.locator("button.details").click()
    # Then each attempt's lines are there, as text, the markup included
    attempts = page.locator("#detail details.attempt")
    expect(attempts).to_have_count(2)
    for n in (0, 1):
        log = page.locator(f"#detail details.attempt[data-attempt='{n}'] pre.log")
        expect(log).to_contain_text(f"loading bars for attempt {n}")
        expect(log.locator(".log-line .text")).to_contain_text(
            [f"loading bars for attempt {n}", *MARKUP, "fit diverged"])
        expect(log).to_contain_text("ValueError: the model did not converge")
    expect(page.locator("#detail .log-line.err .text").first).to_have_text("fit diverged")
    _no_script_ran(page)
    # And the failed row offers retry and delete, not cancel, and shows its times
    expect(row.locator("button.retry")).to_be_visible()
    expect(row.locator("button.delete")).to_be_visible()
    expect(row.locator("button.cancel")).to_be_hidden()
    expect(row.locator(".created")).to_have_text(re.compile(r"^\d{4}-\d{2}-\d{2} "))
    expect(row.locator(".run")).to_have_text(re.compile(r"\d s$"))
    _shot(page, "dashboard-logs.png")
    # And bob cannot read them over HTTP: the same 404 as a random id
    with httpx.Client(base_url=api.url, headers=auth("bob")) as bob:
        assert bob.get(f"/tasks/{task['id']}/logs").status_code == 404
        assert bob.get(f"/tasks/{'f' * 32}/logs").status_code == 404

    # Given a running task's detail open, When the task goes on printing
    release = tmp_path / "release"
    with httpx.Client(base_url=api.url, headers=auth("alice")) as alice:
        live = alice.post("/tasks", json={"name": "live", "task_type": "noisy",
                                          "max_retries": 0, "parameters": {
                                              "release": str(release), "fail": False}}).json()
        wait_for(lambda: alice.get(f"/tasks/{live['id']}").json()["status"] == "RUNNING",
                 what="the live task to run")
    live_row = page.locator(f"tr[data-task-id='{live['id']}']")
    expect(live_row.locator("button.cancel")).to_be_visible()
    expect(live_row.locator("button.delete")).to_be_hidden()
    live_row.locator("button.details").click()
    log = page.locator("#detail details.attempt[data-attempt='0'] pre.log")
    expect(log).to_contain_text("fit diverged")
    assert "released" not in log.text_content()
    release.touch()
    # Then its new lines arrive over the socket, once each
    expect(log).to_contain_text("released", timeout=20_000)
    with httpx.Client(base_url=api.url, headers=auth("alice")) as alice:
        wait_for(lambda: alice.get(f"/tasks/{live['id']}").json()["status"] == "COMPLETED",
                 what="the live task to complete")
    expect(live_row.locator(".status")).to_have_text("COMPLETED", timeout=20_000)
    expect(log.locator(".log-line", has_text="released")).to_have_count(1)
    ids = [int(x) for x in log.locator(".log-line").evaluate_all(
        "rows => rows.map(r => r.dataset.id)")]
    assert ids == sorted(set(ids))
    expect(live_row.locator("button.delete")).to_be_visible()
    expect(live_row.locator("button.cancel")).to_be_hidden()


def test_the_schedules_panel_adds_pauses_resumes_and_deletes(api: Any,
                                                             browser_page: Any) -> None:
    page = browser_page
    sign_in(page, api.url, TOKENS["alice"])
    name = "nightly <img src=x onerror=window.__pwned=1>"
    # When she adds a schedule every trading day at 15:30 through the form
    page.fill("#s-name", name)
    page.select_option("#s-type", "sleepy")
    page.fill("#s-params", '{"seconds": 0}')
    page.select_option("#s-rule-kind", "trading")
    page.fill("#s-rule-value", "15:30")
    page.click("#s-submit")
    row = page.locator("#schedule-rows tr[data-schedule-id]")
    # Then it is listed, its name as text, with its rule and next run
    expect(row).to_have_count(1)
    expect(row.locator(".name")).to_have_text(name)
    expect(row.locator(".rule")).to_contain_text("every trading day at 15:30")
    expect(row.locator(".next")).to_have_text(re.compile(r"^\d{4}-\d{2}-\d{2} \d\d:\d\d"))
    assert page.locator("#schedules img").count() == 0
    # And the next five runs are previewed
    row.locator("button.preview").click()
    expect(page.locator("#schedule-rows tr.runs")).to_contain_text(
        re.compile(r"(\d{4}-\d{2}-\d{2} \d\d:\d\d:\d\d.*){5}"))
    _shot(page, "dashboard-schedules.png")
    # When it is paused, it says so, and the server agrees
    row.locator("button.pause").click()
    expect(row).to_have_attribute("data-paused", "true")
    expect(row.locator(".next")).to_have_text("paused")
    schedule_id = row.get_attribute("data-schedule-id")
    with httpx.Client(base_url=api.url, headers=auth("alice")) as alice:
        assert alice.get(f"/schedules/{schedule_id}").json()["paused"] is True
        # And resumed
        row.locator("button.resume").click()
        expect(row).to_have_attribute("data-paused", "false")
        # And deleted
        row.locator("button.delete").click()
        expect(row).to_have_count(0)
        expect(page.locator("#schedule-empty")).to_be_visible()
        assert alice.get(f"/schedules/{schedule_id}").status_code == 404
    # A schedule that would run too often is refused, saying which limit
    page.select_option("#s-rule-kind", "interval")
    page.fill("#s-rule-value", "5")
    page.click("#s-submit")
    expect(page.locator("#error")).to_contain_text("min_schedule_interval_s")
    assert page.evaluate("window.__pwned") is None and page.dialogs == []


def test_a_backtest_and_a_forecast_read_as_a_researcher_reads_them(
        make_api: Any, browser_page: Any) -> None:
    api = make_api(task_types={"backtest": TaskTypeSettings(workers=1),
                               "prediction": TaskTypeSettings(workers=1)})
    with httpx.Client(base_url=api.url, headers=auth("alice"), timeout=60) as alice:
        # Given a completed SMA backtest and a completed price forecast
        bt = alice.post("/tasks", json={"name": "sma 5/20 on 000001.SZ",
                                        "task_type": "backtest", "parameters": {
                                            "kind": "strategy", "stock_code": "000001.SZ",
                                            "strategy": "sma", "fast": 5, "slow": 20,
                                            "start": "2021-01-04", "end": "2023-12-29"}}).json()
        fc = alice.post("/tasks", json={"name": "forecast 000001.SZ",
                                        "task_type": "prediction", "parameters": {
                                            "stock_code": "000001.SZ", "days": 5}}).json()
        for task in (bt, fc):
            wait_for(lambda t=task: alice.get(f"/tasks/{t['id']}").json()["status"]
                     in ("COMPLETED", "FAILED"), timeout_s=240, what="the quant tasks")
        result = alice.get(f"/tasks/{bt['id']}").json()["result"]
        assert alice.get(f"/tasks/{fc['id']}").json()["status"] == "COMPLETED"
    page = browser_page
    sign_in(page, api.url, TOKENS["alice"])
    row = page.locator(f"tr[data-task-id='{bt['id']}']")
    # Then the completed row shows its times and offers only delete
    expect(row.locator(".wait")).to_have_text(re.compile(r"\d s$"))
    expect(row.locator(".run")).to_have_text(re.compile(r"\d s$"))
    for hidden in ("cancel", "retry"):
        expect(row.locator(f"button.{hidden}")).to_be_hidden()
    expect(row.locator("button.delete")).to_be_visible()
    # When its detail is opened
    row.locator("button.details").click()
    equity = page.locator("#detail [data-figure='equity'] svg")
    # Then the equity curve is drawn against buy and hold, with dated and valued axes
    expect(equity.locator("polyline.series")).to_have_count(2)
    expect(equity.locator(".legend text")).to_have_text(["strategy", "buy and hold"])
    x_labels = equity.locator(".x-axis text:not(.axis-title)").all_text_contents()
    assert len(x_labels) >= 4 and all(DATE.match(x) for x in x_labels)
    expect(equity.locator(".x-axis .axis-title")).to_have_text("date")
    assert x_labels[0] == result["equity_dates"][0] and \
        x_labels[-1] == result["equity_dates"][-1]
    y_labels = equity.locator(".y-axis text").all_text_contents()
    assert len(y_labels) >= 3 and all(re.match(r"^-?[\d.]+[kM]?$", y) for y in y_labels)
    points = equity.locator("polyline.strategy").get_attribute("points")
    assert len(points.split()) == len(result["equity_curve"])
    # And the drawdown chart, in percent below zero
    drawdown = page.locator("#detail [data-figure='drawdown'] svg")
    expect(drawdown.locator("polyline.series")).to_have_count(2)
    assert "0%" in drawdown.locator(".y-axis text").all_text_contents()
    assert any(t.startswith("-") for t in drawdown.locator(".y-axis text").all_text_contents())
    # And the metrics table and the trades table
    metrics = page.locator("#detail table.metrics")
    expect(metrics.locator("th", has_text=re.compile("^risk.sharpe$"))).to_have_count(1)
    expect(metrics.locator("th", has_text=re.compile("^total_return$"))).to_have_count(1)
    trades = page.locator("#detail table.trades")  # a page of 25 (test_dashboard_charts.py)
    expect(trades.locator("tbody tr")).to_have_count(min(25, len(result["trade_log"])))
    expect(trades.locator("thead th").first).to_be_visible()
    assert DATE.match(trades.locator("tbody tr").first.locator("td").first.text_content())
    # and what its attempt used, as measured by its executor
    expect(page.locator("#detail p.meta")).to_contain_text(
        re.compile(r"used \d+\.\d\d CPU s, peak \d+ MiB"))
    # and its lineage, folded: the code's hash and the bars it read, as text
    lineage = page.locator("#detail details.lineage")
    lineage.locator("summary").click()
    text = lineage.locator("pre").inner_text()
    with httpx.Client(base_url=api.url, headers=auth("alice"), timeout=60) as alice:
        code = alice.get(f"/tasks/{bt['id']}").json()["lineage"]["code"]
    assert f"code       sha256 {code}" in text
    assert "bars       synthetic/000001.SZ 2021-01-04..2023-12-29" in text
    _shot(page, "dashboard-backtest.png")
    # And a forecast's detail draws forecast against actual
    page.locator(f"tr[data-task-id='{fc['id']}'] button.details").click()
    forecast = page.locator("#detail [data-figure='forecast'] svg")
    expect(forecast.locator("polyline.series")).to_have_count(2)
    expect(forecast.locator(".legend text")).to_have_text(["actual", "forecast"])
    assert DATE.match(forecast.locator(".x-axis text").first.text_content())
    _shot(page, "dashboard-forecast.png")


def test_the_api_docs_load_under_their_csp_and_the_dashboard_keeps_its_own(
        api: Any, browser_page: Any) -> None:
    page = browser_page
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text)
            if "Content Security Policy" in m.text else None)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    sign_in(page, api.url, TOKENS["alice"])
    # When the signed-in user opens /docs
    response = page.goto(api.url + "/docs")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-eval" not in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    # Then Swagger UI lists the routes, from files this server serves
    expect(page.locator(".opblock-summary-path", has_text="/schedules/{schedule_id}/next")
           ).to_have_count(1, timeout=20_000)
    expect(page.locator(".opblock-summary-path", has_text="/tasks/{task_id}/logs")
           ).to_have_count(1)
    assert all(u.startswith(api.url) or u.startswith("data:") for u in requests), requests
    assert violations == []
    _shot(page, "api-docs.png")
    # And the dashboard's own policy still allows no inline style or script
    with httpx.Client(base_url=api.url) as c:
        page_csp = c.get("/").headers["content-security-policy"]
        assert "unsafe-inline" not in page_csp and "script-src 'self'" in page_csp
        assert c.get("/docs/index.html").status_code == 404
        assert c.get("/static/..%2Fapp.py").status_code == 404
