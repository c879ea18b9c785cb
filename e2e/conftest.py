"""The browser for e2e tests: Debian's Chromium through Playwright (it cannot download one here)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ADMIN_PASSWORD, InProcessServer

SHOTS = Path(__file__).resolve().parents[1] / "test-results" / "screenshots"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(executable):
        if os.environ.get("GANTRY_REQUIRE_BROWSER") == "1":
            pytest.fail(
                "GANTRY_REQUIRE_BROWSER=1 but Chromium is not installed (apt-get install chromium)"
            )
        pytest.skip("Chromium is not installed (apt-get install chromium); browser tests skipped")
    from playwright.async_api import async_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=executable, args=FLAGS)
        try:
            yield b
        finally:
            await b.close()


async def signed_in(browser: Any, server: InProcessServer, **context: Any) -> Any:
    """A page signed in as admin (through the login form), on the workflows list."""
    ctx = await browser.new_context(viewport={"width": 1280, "height": 800}, **context)
    page = await ctx.new_page()
    await page.goto(f"{server.base}/workflows")
    assert "/login" in page.url
    await page.fill("input[name=username]", "admin")
    await page.fill("input[name=password]", ADMIN_PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{server.base}/workflows")
    return page
