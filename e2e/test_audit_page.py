"""The audit log page in Chromium: an admin finds their own sign-in and a submission there,
filters it, and no Content-Security-Policy violation or script error happens on the way."""

from __future__ import annotations

from typing import Any

import pytest

from e2e.conftest import SHOTS, signed_in
from tests.support import InProcessServer

pytestmark = pytest.mark.browser

SPEC = "workflow:\n  name: audited\n  tasks:\n  - {name: t, image: x, command: [echo, hi]}\n"


async def test_an_admin_reads_and_filters_the_audit_log(
    browser: Any, server: InProcessServer
) -> None:
    admin = await signed_in(browser, server)
    problems: list[str] = []
    admin.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    admin.on("pageerror", lambda e: problems.append(str(e)))
    async with server.client(server.settings.bootstrap_admin_token) as api:
        r = await api.post("/api/v1/workflows", json={"spec": SPEC})
        assert r.status_code == 201, r.text
        workflow = r.json()["id"]
    await admin.click("nav >> text=Audit")
    await admin.wait_for_url(f"{server.base}/admin/audit")
    rows = admin.locator("table.audit tbody tr")
    assert await rows.count() == 2  # newest first: the submission, then the sign-in
    assert "workflow:Create" in await rows.nth(0).inner_text()
    assert workflow in await rows.nth(0).inner_text()
    assert "auth:SignIn" in await rows.nth(1).inner_text()
    await admin.select_option("select[name=action]", "auth:SignIn")
    await admin.click("form.filters button[type=submit]")
    await admin.wait_for_url("**/admin/audit?*action=auth%3ASignIn*")
    assert await rows.count() == 1
    assert "password" in await rows.nth(0).inner_text()
    await admin.screenshot(path=str(SHOTS / "audit.png"), full_page=True)
    assert problems == []
