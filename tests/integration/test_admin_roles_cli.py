"""`gantry admin create-role`, `grant` and `disable-user`, run as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from tests.support import ADMIN_TOKEN, InProcessServer


def gantry(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GANTRY_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "app", "admin", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def test_roles_are_made_granted_and_users_disabled_from_the_command_line(
    server: InProcessServer, database_url: str
) -> None:
    state = server.app.state
    await state.pools.create_pool("gpu")
    await state.pools.set_backend_token("gpu-be", "gpu", "gbk_gpu")
    await state.users.create("carol")
    token = await state.auth.create_token("carol", "t")
    policy = {"effect": "Allow", "actions": ["workflow:*", "pool:List"], "resources": ["pool/gpu"]}
    made = gantry(database_url, "create-role", "gpu-team", "--policy", json.dumps(policy))
    assert made.returncode == 0, made.stderr
    assert "role gpu-team created with 1 policy" in made.stdout
    again = gantry(database_url, "create-role", "gpu-team", "--policy", json.dumps(policy))
    assert "role gpu-team existed: its policies were replaced" in again.stdout
    granted = gantry(database_url, "grant", "carol", "gpu-team")
    assert granted.returncode == 0 and "carol holds gpu-team, user" in granted.stdout
    async with server.client(token) as carol:
        # The CLI's changes reach the running server through the same hint (within 1 s).
        for _ in range(50):
            pools = (await carol.get("/api/v1/me")).json()["pools"]
            if "gpu" in pools:
                break
            await asyncio.sleep(0.02)
        assert pools == ["default", "gpu"]
        disabled = gantry(database_url, "disable-user", "carol")
        assert disabled.returncode == 0, disabled.stderr
        for _ in range(50):
            if (await carol.get("/api/v1/me")).status_code == 401:
                break
            await asyncio.sleep(0.02)
        assert (await carol.get("/api/v1/me")).status_code == 401
    refused = gantry(database_url, "create-token", "carol")
    assert refused.returncode != 0 and "enable-user carol" in refused.stderr
    enabled = gantry(database_url, "enable-user", "carol")
    assert enabled.returncode == 0 and "enabled again" in enabled.stdout
    token_again = gantry(database_url, "create-token", "carol")
    assert token_again.returncode == 0 and token_again.stdout.startswith("gnt_")
    bad = gantry(database_url, "create-role", "odd", "--policy", '{"effect": "Maybe"}')
    assert bad.returncode != 0 and "--policy is not valid" in bad.stderr
    unknown = gantry(database_url, "grant", "carol", "no-such-role")
    assert unknown.returncode != 0 and "no-such-role" in unknown.stderr
    nobody = gantry(database_url, "grant", "ghost", "user")
    assert nobody.returncode != 0 and "ghost" in nobody.stderr
    async with server.client(ADMIN_TOKEN) as admin:
        assert (await admin.get("/api/v1/roles/gpu-team")).json()["policies"][0]["resources"] == [
            "pool/gpu"
        ]
