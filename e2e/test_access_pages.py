"""The account, users and roles pages in Chromium: an admin gives a new person a team's pool,
and that person sees only what the role allows."""

from __future__ import annotations

from typing import Any

import pytest

from e2e.conftest import SHOTS, signed_in
from tests.support import InProcessServer, csrf_token, submit

pytestmark = pytest.mark.browser


async def test_an_admin_makes_a_team_and_its_member_sees_only_its_pool(
    browser: Any, server: InProcessServer
) -> None:
    await server.app.state.pools.create_pool("gpu")
    admin = await signed_in(browser, server)
    await admin.click("nav >> text=Roles")
    await admin.wait_for_url(f"{server.base}/admin/roles")
    new_role = admin.locator("form", has=admin.locator("button", has_text="Create role"))
    await new_role.locator("input[name=name]").fill("gpu-team")
    await new_role.locator("textarea[name=policies]").fill(
        '[{"effect": "Allow", "actions": ["workflow:*", "pool:List"], "resources": ["pool/gpu"]}]'
    )
    await new_role.locator("button").click()
    await admin.wait_for_selector("text=Saved role gpu-team.")

    await admin.click("nav >> text=Users")
    await admin.wait_for_url(f"{server.base}/admin/users")
    add = admin.locator("form", has=admin.locator("button", has_text="Add user"))
    await add.locator("input[name=name]").fill("dana")
    await add.locator("select[name=roles]").select_option(["gpu-team"])
    await add.locator("input[name=password]").fill("dana's password")
    await add.locator("button").click()
    await admin.wait_for_selector("text=Created person dana.")
    await admin.screenshot(path=str(SHOTS / "admin-users.png"), full_page=True)

    ctx = await browser.new_context(viewport={"width": 1280, "height": 800})
    dana = await ctx.new_page()
    await dana.goto(f"{server.base}/login")
    await dana.fill("input[name=username]", "dana")
    await dana.fill("input[name=password]", "dana's password")
    await dana.click("button[type=submit]")
    await dana.wait_for_url(f"{server.base}/workflows")
    assert await dana.locator("nav >> text=Users").count() == 0  # not hers to see
    await dana.click("header >> text=dana")
    await dana.wait_for_url(f"{server.base}/account")
    facts = await dana.locator("dl.facts").inner_text()
    assert "gpu-team" in facts and "gpu" in facts and "default" not in facts
    await dana.goto(f"{server.base}/submit")
    options = await dana.locator("select[name=pool] option").all_inner_texts()
    assert [o.strip() for o in options] == ["as the spec says (else default)", "gpu"]
    response = await dana.goto(f"{server.base}/admin/users")
    assert response is not None and response.status == 403
    assert "user:Admin" in await dana.content()
    await ctx.close()
    await admin.context.close()


async def test_a_live_page_says_so_when_its_session_ends(
    browser: Any, server: InProcessServer, api: Any
) -> None:
    """Found by a review: a page whose session ended elsewhere went on showing an old state
    without a word; its live stream is refused and the page now says to sign in again."""
    wid = await submit(
        api, "workflow:\n  name: w\n  tasks:\n  - {name: t, image: x, command: [echo]}\n"
    )
    page = await signed_in(browser, server)
    await page.goto(f"{server.base}/workflows/{wid}")
    await page.wait_for_load_state("networkidle")
    cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
    async with server.client(cookies=cookies) as same:
        form = await same.get("/workflows")
        out = await same.post("/logout", data={"_csrf_token": csrf_token(form.text)})
        assert out.status_code == 303
    banner = page.locator("#signed-out")
    await banner.wait_for(timeout=20_000)
    assert "Sign in again" in await banner.inner_text()
    assert await banner.locator("a").get_attribute("href") == f"/login?next=%2Fworkflows%2F{wid}"
    await page.context.close()
