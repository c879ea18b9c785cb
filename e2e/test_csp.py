"""The Content-Security-Policy in Chromium: every page works under it and nothing is refused.

Chromium reports each refused script, style or connection on the console ("Refused to …");
a page that needed something the policy forbids would show up here first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.conftest import signed_in
from tests.support import InProcessServer, runner_in_loop, submit, wait_for

pytestmark = pytest.mark.browser

COLOURS = """\
workflow:
  name: colours
  tasks:
  - name: paint
    image: ubuntu
    command: [sh, -c]
    args: ["printf '\\\\033[38;2;255;0;0mtrue red\\\\033[0m \\\\033[38;5;208m256 orange\\\\033[0m \\\\033[32mgreen\\\\033[0m\\\\n'"]
"""


async def test_pages_run_under_the_policy_without_violations(
    browser: Any, server: InProcessServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    page = await signed_in(browser, server)
    refused: list[str] = []
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    async with runner_in_loop(server.base, tmp_path / "r"):
        wid = await submit(api, COLOURS)
        await wait_for(api, wid, timeout=60)
    for path in (
        "/login",
        "/workflows",
        "/submit",
        "/pools",
        "/tokens",
        "/account",
        "/admin/users",
        "/admin/roles",
        f"/workflows/{wid}",
        f"/workflows/{wid}/tasks/paint/logs",
        "/no-such-page",
    ):
        await page.goto(f"{server.base}{path}")
        await page.wait_for_load_state("networkidle")
    # htmx runs (it boosts links) although no script is inline and eval is off.
    assert await page.evaluate("typeof window.htmx") == "object"
    await page.goto(f"{server.base}/workflows")
    await page.click('nav a[href="/pools"]')
    await page.wait_for_url(f"{server.base}/pools")
    assert await page.locator("#pools").count() == 1
    # The log's true-colour and 256-colour spans keep their colours (style attributes).
    await page.goto(f"{server.base}/workflows/{wid}/tasks/paint/logs")
    red = page.locator("#log span[style]", has_text="true red")
    assert await red.evaluate("e => getComputedStyle(e).color") == "rgb(255, 0, 0)"
    assert not refused, refused


async def test_the_api_explorer_renders_offline_under_its_policy(
    browser: Any, server: InProcessServer
) -> None:
    """/schema is Swagger UI from /static (no CDN): it lists the operations, nothing refused."""
    page = await signed_in(browser, server)
    await page.goto(f"{server.base}/login")  # leave the live list: its stream ends on leaving
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    # A request the browser itself aborts on leaving a page (net::ERR_ABORTED) is no failure.
    page.on(
        "requestfailed",
        lambda r: (
            None
            if "ERR_ABORTED" in (r.failure or "")
            else problems.append(f"failed: {r.url} ({r.failure})")
        ),
    )
    for path in ("/schema", "/schema/swagger"):
        await page.goto(f"{server.base}{path}")
        await page.locator(".opblock-summary-path", has_text="/api/v1/workflows").first.wait_for()
        await page.wait_for_load_state("networkidle")
    assert not problems, problems
