"""Every page in Chromium: the DAG, the log viewer, submit, cancel, pools, tokens, themes, no-JS."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.conftest import SHOTS, signed_in
from tests.support import InProcessServer, runner_in_loop, submit, task_of, wait_for

pytestmark = pytest.mark.browser

XSS = "<script>window.__xss=1</script><img src=x onerror=window.__xss=1>"

PIPELINE = f"""\
workflow:
  name: pipeline
  groups:
  - name: prepare
    tasks:
    - {{name: fetch, lead: true, image: ubuntu, command: [sh, -c, "echo fetching; sleep 1"]}}
  - name: train
    tasks:
    - name: fit
      lead: true
      image: ubuntu
      command: [sh, -c]
      args: ["printf '\\\\033[32mgreen\\\\033[0m plain\\\\n'; echo '{XSS}'; for i in $(seq 1 40); do echo step $i; sleep 0.25; done"]
      inputs: [{{task: fetch}}]
    - {{name: eval, image: ubuntu, command: [sh, -c, "sleep 30"]}}
"""


async def _no_xss(page: Any) -> None:
    assert await page.evaluate("window.__xss") is None, "text from a spec or a log ran as code"


async def test_dag_colours_nodes_and_log_viewer_follows_and_pauses(
    browser: Any, server: InProcessServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    page = await signed_in(browser, server)
    wid = await submit(api, PIPELINE)
    await page.goto(f"{server.base}/workflows/{wid}")
    assert await page.locator("svg.dag").count() == 1
    assert await page.get_attribute("#dag-g-prepare", "data-status") == "PROCESSING"
    async with runner_in_loop(server.base, tmp_path / "r"):
        # The DAG colours the node as the task completes, without a reload.
        await page.wait_for_selector('#dag-g-prepare[data-status="COMPLETED"]', timeout=20_000)
        assert "st-ok" in (await page.get_attribute("#dag-g-prepare", "class") or "")
        await page.wait_for_selector('#dag-t-fit[data-status="RUNNING"]', timeout=20_000)
        # Durations of what runs keep ticking between the server's updates.
        ticking = page.locator("#wf-header time[data-since]")
        before = await ticking.inner_text()
        await asyncio.sleep(2.2)
        assert await ticking.inner_text() != before
        await page.screenshot(path=str(SHOTS / "detail-dag.png"), full_page=True)
        await _no_xss(page)

        # The log viewer follows the running task, and holds new lines while paused.
        await page.goto(f"{server.base}/workflows/{wid}/tasks/fit/logs")
        # Locators, not wait_for_function: the page's CSP refuses the eval that one needs.
        await page.locator("#log .ln").nth(5).wait_for(timeout=20_000)
        assert await page.locator("#log .fc2", has_text="green").count() == 1  # ANSI green
        assert "<script>" in await page.inner_text("#log")
        await _no_xss(page)
        await page.click("#pause")
        paused_at = await page.locator("#log .ln").count()
        await asyncio.sleep(1.5)
        assert await page.locator("#log .ln").count() == paused_at
        await page.click("#pause")  # resume: what arrived meanwhile appears
        await page.locator("#log .ln").nth(paused_at + 3).wait_for(timeout=10_000)
        numbers = await page.eval_on_selector_all(
            "#log .ln .n", "xs => xs.map(x => +x.textContent)"
        )
        assert numbers == list(range(1, len(numbers) + 1)), "each line once, in order"
        await page.screenshot(path=str(SHOTS / "log-viewer.png"), full_page=False)

        # Each line's time, on demand (and remembered on the next page).
        assert not await page.locator("#log .lt").first.is_visible()
        await page.check("#show-times")
        shown = await page.locator("#log .lt").first.inner_text()
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", shown), shown

        # Deep link to a line; the filter; the merged log of all tasks.
        await page.goto(f"{server.base}/workflows/{wid}/tasks/fit/logs#L5")
        assert await page.locator("#L5.hl").count() == 1
        await page.fill("input[name=q]", "step 1")
        await page.press("input[name=q]", "Enter")
        await page.wait_for_selector("text=matching line")
        texts = await page.eval_on_selector_all("#log .tx", "xs => xs.map(x => x.textContent)")
        assert texts and all("step 1" in t for t in texts)
        await page.goto(f"{server.base}/workflows/{wid}/logs")
        assert await page.locator("#log .tk", has_text="fetch").count() >= 1
        assert await page.locator("#log .lt").first.is_visible()  # still on
        await page.uncheck("#show-times")
        download = await page.get_attribute("a:has-text('Download')", "href")
        assert download == f"/workflows/{wid}/logs/download"
        await wait_for(api, wid, timeout=60)
    await page.goto(f"{server.base}/workflows/{wid}")
    assert await page.get_attribute("#dag-t-fit", "data-status") == "COMPLETED"
    assert await page.locator("#cancel-form").count() == 0  # nothing to cancel any more


async def test_cancel_from_the_detail_page(
    browser: Any, server: InProcessServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    page = await signed_in(browser, server)
    spec = "workflow:\n  name: long\n  tasks:\n  - {name: sleeper, image: x, command: [sleep, '300']}\n"
    wid = await submit(api, spec)
    async with runner_in_loop(server.base, tmp_path / "r") as runner:
        await wait_for(api, wid, lambda wf: task_of(wf, "sleeper")["status"] == "RUNNING", 20)
        await page.goto(f"{server.base}/workflows/{wid}")
        await page.fill("#cancel-form input[name=reason]", "wrong parameters")
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.click("#cancel-form button[type=submit]")
        await page.wait_for_selector(
            '#wf-header .status[data-status="FAILED_CANCELED"]', timeout=15_000
        )
        # The old page's live stream may show the new status before the redirected page
        # (with its flash message) arrives: wait for that page, not only for the status.
        await page.locator("main .flash", has_text="was canceled").wait_for(timeout=15_000)
        for _ in range(100):
            if not runner.attempts:
                break
            await asyncio.sleep(0.1)
        assert not runner.attempts, "the task's process was stopped"
    wf = (await api.get(f"/api/v1/workflows/{wid}")).json()
    assert "wrong parameters" in task_of(wf, "sleeper")["reason"]


async def test_submit_page_shows_errors_at_their_lines_then_submits(
    browser: Any, server: InProcessServer
) -> None:
    page = await signed_in(browser, server)
    await page.goto(f"{server.base}/submit")
    bad = (
        "workflow:\n  name: from-the-page\n  tasks:\n  - name: hello\n    image: ubuntu\n"
        f"    comand: ['echo', '{XSS}']\n"
    )
    await page.fill("#spec", bad)
    await page.click("button[value=validate]")
    await page.wait_for_selector("#errors")
    errors = await page.inner_text("#errors")
    assert "line 6" in errors and "did you mean 'command'" in errors
    assert await page.locator("#gutter span.err").all_inner_texts() == ["4", "6"]
    await _no_xss(page)
    await page.screenshot(path=str(SHOTS / "submit-error.png"), full_page=True)
    await page.fill("#spec", bad.replace("comand", "command") + "default-values:\n  greeting: hi\n")
    await page.click("button[value=validate]")
    await page.wait_for_selector("#valid")
    assert await page.input_value("input[name='var.greeting']") == "hi"
    await page.click("button[value=submit]")
    await page.wait_for_url(f"{server.base}/workflows/from-the-page-1")
    assert "Submitted from-the-page-1" in await page.inner_text("main")
    spec_text = await page.text_content("details pre.code") or ""
    assert "<script>" in spec_text  # shown as text
    await _no_xss(page)


async def test_pools_page_shows_a_runner_connect_live_and_tokens_work(
    browser: Any, server: InProcessServer, tmp_path: Path
) -> None:
    page = await signed_in(browser, server)
    await page.goto(f"{server.base}/pools")
    assert await page.get_attribute("#backend-local", "data-connected") == "no"
    async with runner_in_loop(server.base, tmp_path / "r"):
        await page.wait_for_selector('#backend-local[data-connected="yes"]', timeout=20_000)
        text = await page.inner_text("#backend-local")
        assert "connected for" in text and "/ 16" in text
        await page.screenshot(path=str(SHOTS / "pools.png"), full_page=True)

    await page.goto(f"{server.base}/tokens")
    await page.fill("input[name=name]", "laptop")
    await page.click("form[action='/tokens'] button")
    token = (await page.inner_text("#new-token")).strip()
    assert token.startswith("gnt_")
    async with httpx.AsyncClient(
        base_url=server.base, headers={"authorization": f"Bearer {token}"}
    ) as c:
        assert (await c.get("/api/v1/workflows")).status_code == 200
    await page.goto(f"{server.base}/tokens")
    assert await page.locator("#new-token").count() == 0  # shown once
    assert await page.locator("td", has_text="laptop").count() == 1
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click("tr:has-text('laptop') button.danger")
    await page.wait_for_selector("text=The token was revoked.")
    server.app.state.auth._cache.clear()
    async with httpx.AsyncClient(
        base_url=server.base, headers={"authorization": f"Bearer {token}"}
    ) as c:
        assert (await c.get("/api/v1/workflows")).status_code == 401


async def test_pages_work_without_javascript_and_follow_the_dark_theme(
    browser: Any, server: InProcessServer, api: httpx.AsyncClient
) -> None:
    wid = await submit(
        api, "workflow:\n  name: plain\n  tasks:\n  - {name: t, image: x, command: [echo, hi]}\n"
    )
    page = await signed_in(browser, server, java_script_enabled=False, color_scheme="dark")
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(18, 21, 27)", "the dark theme follows the system setting"
    await page.fill("input[name=name]", "plain")
    await page.click(".filters button[type=submit]")
    await page.wait_for_selector(f"#wf-{wid}")
    await page.click(f"a[href='/workflows/{wid}']")
    await page.wait_for_selector("svg.dag")
    await page.click("#task-t a")
    await page.wait_for_selector("#log")
    await page.goto(f"{server.base}/submit")
    await page.fill("#spec", "workflow:\n  name: x\n")
    await page.click("button[value=validate]")
    await page.wait_for_selector("#errors")
    assert "no `tasks`" in await page.inner_text("#errors")
    for path in ("/pools", "/tokens"):
        await page.goto(f"{server.base}{path}")
        assert await page.locator("main h1").count() == 1
    # Narrow windows (a laptop half-screen) keep every page usable.
    await page.set_viewport_size({"width": 640, "height": 800})
    await page.goto(f"{server.base}/workflows/{wid}")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 660, "no horizontal scrolling of the page at 640 px"
    await page.screenshot(path=str(SHOTS / "detail-dark-narrow.png"), full_page=True)
