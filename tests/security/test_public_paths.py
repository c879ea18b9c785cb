"""GANTRY_AUTH_PUBLIC_PATHS opens the prefixes a deployment lists, and nothing under /api."""

from __future__ import annotations

from pathlib import Path

from tests.support import InProcessServer, make_settings


async def test_a_listed_prefix_needs_no_identity_and_the_rest_still_does(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, auth_public_paths=("/metrics",))
    server = InProcessServer(settings)
    await server.start()
    try:
        async with server.client() as anonymous:
            metrics = await anonymous.get("/metrics")
            assert metrics.status_code == 200 and "gantry" in metrics.text
            assert (await anonymous.get("/api/v1/workflows")).status_code == 401
            assert (await anonymous.get("/workflows")).status_code in (302, 303, 401)
    finally:
        await server.stop()
