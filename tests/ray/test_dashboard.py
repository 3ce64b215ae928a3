"""The dashboard in a real headless Chromium (Playwright driving Debian's /usr/bin/chromium)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

from raytasks import TaskExecutionContext, register_task_type
from tests.httpserver import TOKENS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def equity_curve(params: dict[str, Any], ctx: TaskExecutionContext) -> dict[str, Any]:
    return {"equity_curve": [1.0, 1.02, 0.99, 1.05, 1.08, 1.04, 1.11]}


def sign_in(page: Any, url: str, token: str) -> None:
    """Open the dashboard and sign in with the login form (the token is not kept)."""
    page.goto(url + "/")
    page.fill("#token", token)
    page.click("#login")
    expect(page.locator("#conn")).to_have_text("live", timeout=20_000)


def _submit(page: Any, task_type: str, name: str, params: str) -> Any:
    """Fill in and send the submit form; the row of the new task."""
    page.select_option("#f-type", task_type)
    page.fill("#f-name", name)
    page.fill("#f-params", params)
    page.click("#f-submit")
    return page.locator("tr[data-task-id]", has_text=name)


def test_dashboard_submits_watches_progress_and_cancels(api: Any, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test-deps` installs it (apt package chromium)")
    register_task_type("curve", equity_curve, workers=1, runtime=api.service)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        sign_in(page, api.url, TOKENS["alice"])
        # Given the submit form, when a 2-second task is submitted
        row = _submit(page, "sleepy", "dash-run", '{"seconds": 2}')
        bar = row.locator(".bar")
        # Then its progress bar moves through the middle to 100 %
        page.wait_for_function(
            "el => { const p = Number(el.dataset.pct); return p > 0 && p < 100; }",
            arg=bar.element_handle(), timeout=20_000)
        expect(bar).to_have_attribute("data-pct", "100", timeout=30_000)
        expect(row.locator(".status")).to_have_text("COMPLETED")
        # And another task is cancelled with its button
        other = _submit(page, "sleepy", "dash-cancel", '{"seconds": 30}')
        expect(other.locator(".status")).to_have_text("RUNNING", timeout=20_000)
        other.locator("button.cancel").click()
        expect(other.locator(".status")).to_have_text("CANCELLED", timeout=20_000)
        expect(page.locator("#queues")).to_contain_text("default")
        row.locator("button.details").click()
        expect(page.locator("#detail pre")).to_contain_text('"status": "COMPLETED"')
        # A result with a series is charted in the detail view
        curve = _submit(page, "curve", "dash-curve", "{}")
        expect(curve.locator(".status")).to_have_text("COMPLETED", timeout=20_000)
        curve.locator("button.details").click()
        expect(page.locator("#detail svg polyline")).to_have_count(1)
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
    out = Path("test-output")
    out.mkdir(exist_ok=True)
    shutil.copy(shot, out / "dashboard.png")
