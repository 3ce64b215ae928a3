"""The dashboard in a real headless Chromium (Playwright driving Debian's /usr/bin/chromium)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

from raytasks import TaskExecutionContext, register_task_type
from tests.conftest import wait_for
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
        expect(page.locator("#detail pre.raw")).to_contain_text('"status": "COMPLETED"')
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


PAYLOADS = ["<img src=x onerror=window.__pwned=1;alert(1)>",
            "<script>window.__pwned=2</script>",
            '"><svg onload=window.__pwned=3>']


def evil_result(params: dict[str, Any], ctx: TaskExecutionContext) -> dict[str, Any]:
    """A result whose keys and values are script payloads, one of them a charted series."""
    if params.get("fail"):
        raise ValueError(PAYLOADS[0])
    return {PAYLOADS[0]: [1.0, 2.0, 1.5, 3.0], "equity_curve": [1, 2, 3],
            PAYLOADS[1]: PAYLOADS[2]}


def test_script_payloads_in_every_field_never_run(api: Any) -> None:
    import httpx

    from tests.httpserver import auth

    register_task_type("evil", evil_result, workers=1, runtime=api.service)
    # Given tasks whose name, tags, parameters, error and result are script payloads
    with httpx.Client(base_url=api.url, headers=auth("alice")) as alice:
        ok = alice.post("/tasks", json={"name": PAYLOADS[0], "task_type": "evil",
                                        "tags": [PAYLOADS[0], PAYLOADS[2]],
                                        "parameters": {PAYLOADS[1]: PAYLOADS[2]}}).json()
        bad = alice.post("/tasks", json={"name": PAYLOADS[2], "task_type": "evil",
                                         "max_retries": 0, "parameters": {"fail": True}}).json()
        for task in (ok, bad):
            wait_for(lambda t=task: alice.get(f"/tasks/{t['id']}").json()["status"]
                     in ("COMPLETED", "FAILED"), what="the evil tasks to finish")
    dialogs: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        # When the admin opens the dashboard, the table, and each task's detail with charts
        sign_in(page, api.url, TOKENS["root"])
        rows = page.locator("tr[data-task-id]")
        expect(rows).to_have_count(2, timeout=20_000)
        expect(page.locator(f"tr[data-task-id='{bad['id']}'] .status")).to_have_text("FAILED")
        for task in (ok, bad):
            page.locator(f"tr[data-task-id='{task['id']}'] button.details").click()
            expect(page.locator("#detail h2")).to_have_text(task["name"])
            if task is ok:
                expect(page.locator("#detail svg polyline")).to_have_count(2)
                expect(page.locator("#detail h3").first).to_have_text(PAYLOADS[0])
            else:
                expect(page.locator("#detail .task-error")).to_contain_text(PAYLOADS[0])
        # Then every payload is shown as text, and none of them ran
        ok_row = page.locator(f"tr[data-task-id='{ok['id']}']")
        expect(ok_row.locator(".name")).to_have_text(PAYLOADS[0])
        expect(ok_row.locator(".tags .tag")).to_have_text([PAYLOADS[0], PAYLOADS[2]])
        expect(page.locator(f"tr[data-task-id='{bad['id']}'] .message")) \
            .to_have_text(PAYLOADS[0])
        assert page.locator("img, script:not([src]), #tasks svg, iframe").count() == 0
        assert page.evaluate("window.__pwned") is None and dialogs == []
        # And the token is nowhere page script can read it
        assert page.evaluate("Object.keys(localStorage).length + "
                             "Object.keys(sessionStorage).length") == 0
        assert "raytasks_session" not in page.evaluate("document.cookie")
        assert TOKENS["root"] not in page.content()
        browser.close()


def test_the_login_url_signs_in_and_leaves_no_token_behind(api: Any) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        # Given the login URL raytasks serve prints (the token in the fragment)
        page.goto(f"{api.url}/#token={TOKENS['alice']}")
        # Then the dashboard is signed in, and the token is gone from the address bar
        expect(page.locator("#conn")).to_have_text("live", timeout=20_000)
        expect(page.locator("#who")).to_contain_text("alice")
        assert TOKENS["alice"] not in page.evaluate("location.href")
        assert TOKENS["alice"] not in page.evaluate(
            "JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
        # And a wrong token in the URL signs nobody in
        other = browser.new_page()
        other.goto(f"{api.url}/#token=not-a-token")
        expect(other.locator("#error")).not_to_be_empty(timeout=20_000)
        expect(other.locator("#login-form")).to_be_visible()
        browser.close()
