"""Pages in a real browser (Debian's Chromium through Playwright): live updates without reloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.conftest import SHOTS, signed_in
from tests.support import InProcessServer, runner_in_loop, submit, wait_for

pytestmark = pytest.mark.browser


SLOW = """\
workflow:
  name: watched
  groups:
  - name: prepare
    tasks:
    - {name: fetch, lead: true, image: ubuntu, command: [sh, -c, "echo fetching; sleep 2; echo '<script>alert(1)</script>'"]}
  - name: train
    tasks:
    - {name: fit, lead: true, image: ubuntu, command: [sh, -c, "for i in 1 2 3; do echo epoch $i; sleep 1; done"], inputs: [{task: fetch}]}
"""


async def test_workflow_page_follows_states_without_reloading(
    browser: Any, server: InProcessServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    page = await signed_in(browser, server)
    wid = await submit(api, SLOW)
    await page.goto(f"{server.base}/workflows/{wid}")
    header = page.locator("#wf-header .status").first
    assert await header.get_attribute("data-status") == "PENDING"
    await page.evaluate("window.__notReloaded = true")
    async with runner_in_loop(server.base, tmp_path / "runner"):
        await page.wait_for_selector('#task-fetch [data-status="RUNNING"]', timeout=20_000)
        await page.wait_for_selector('#wf-header .status[data-status="RUNNING"]', timeout=20_000)
        await page.screenshot(path=str(SHOTS / "workflow-running.png"), full_page=True)
        await page.wait_for_selector('#wf-header .status[data-status="COMPLETED"]', timeout=30_000)
    assert await page.evaluate("window.__notReloaded") is True
    assert await page.locator('#task-fit [data-status="COMPLETED"]').count() == 1
    await page.screenshot(path=str(SHOTS / "workflow-completed.png"), full_page=True)

    # The log of a task: what it printed, HTML-escaped, so the script stays inert.
    await page.click("#task-fetch a")
    await page.wait_for_selector("#log")
    text = await page.inner_text("#log")
    assert "fetching" in text and "<script>alert(1)</script>" in text
    assert await page.locator("#log script").count() == 0


async def test_workflow_list_updates_live_and_log_follows(
    browser: Any, server: InProcessServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    page = await signed_in(browser, server)
    await page.evaluate("window.__notReloaded = true")
    spec = "workflow:\n  name: listed\n  tasks:\n  - {name: t, image: x, command: [sh, -c, 'for i in 1 2 3 4; do echo tick $i; sleep 1; done']}\n"
    wid = await submit(api, spec)
    row = f"#wf-{wid}-status"
    # A workflow submitted after the page loaded is announced, not pushed into the rows.
    await page.wait_for_selector("#new-banner a", timeout=15_000)
    assert "1 new workflow" in await page.inner_text("#new-banner")
    await page.click("#new-banner a")
    await page.wait_for_selector(f'{row}[data-status="PENDING"]', timeout=15_000)
    async with runner_in_loop(server.base, tmp_path / "runner"):
        await page.wait_for_selector(f'{row}[data-status="RUNNING"]', timeout=20_000)
        assert await page.evaluate("window.__notReloaded") is True
        await page.screenshot(path=str(SHOTS / "workflows-list.png"), full_page=True)
        # Open the log while the task runs: later lines arrive without a reload.
        await page.goto(f"{server.base}/workflows/{wid}/tasks/t/logs")
        await page.evaluate("window.__logPage = true")
        # Locators, not wait_for_function: the page's CSP refuses the eval that one needs.
        await page.locator("#log", has_text="tick 4").wait_for(timeout=20_000)
        assert await page.evaluate("window.__logPage") is True
        await wait_for(api, wid, timeout=20)
