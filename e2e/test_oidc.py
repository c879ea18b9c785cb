"""Single sign-on in Chromium: the sign-in page's button, the provider's pages, and back.

The provider is the real one of tests/oidc (node's oidc-provider); skips without node or its
node_modules unless GANTRY_REQUIRE_OIDC=1, and without Chromium unless GANTRY_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import SHOTS
from tests.oidc_support import sso_stack

pytestmark = pytest.mark.browser


async def test_sign_in_with_the_provider_in_chromium(
    browser: Any, database_url: str, tmp_path: Path
) -> None:
    async with sso_stack(database_url, tmp_path, oidc_role_map=(("admins", "admin"),)) as sso:
        await sso.provider.set_account("ivan", name="Ivan Petrov", groups=["admins"])
        ctx = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await ctx.new_page()
        try:
            await page.goto(f"{sso.server.base}/pools")
            assert "/login" in page.url
            await page.click("#sso")  # "Sign in with 127.0.0.1:PORT"
            # The provider's pages import a web font: do not wait for "load" (no internet here).
            await page.wait_for_url(
                f"{sso.provider.issuer}/interaction/**", wait_until="domcontentloaded"
            )
            await page.fill("input[name=login]", "ivan")
            await page.fill("input[name=password]", "any")
            await page.click("button[type=submit]")
            await page.wait_for_selector("text=Authorize")  # the provider's consent page
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{sso.server.base}/pools")
            await page.screenshot(path=str(SHOTS / "oidc-signed-in.png"))
            me = await page.evaluate("fetch('/api/v1/me').then(r => r.json())")
            assert me["name"] == "ivan" and me["via"] == "oidc"
            assert me["display_name"] == "Ivan Petrov" and "admin" in me["roles"]
        finally:
            await ctx.close()
