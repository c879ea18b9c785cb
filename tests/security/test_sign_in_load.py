"""A flood of sign-ins cannot starve the event loop: argon2 runs one check at a time, at low
priority, and a long queue answers 503 with Retry-After (found by a hostile test: 150
concurrent wrong passwords held /healthz at 2-4 s)."""

from __future__ import annotations

import asyncio
import os
import threading

import httpx
import pytest

from app.auth import service
from tests.support import ADMIN_PASSWORD, InProcessServer, csrf_token


def test_password_checks_run_in_one_low_priority_thread() -> None:
    def priority() -> tuple[int, str]:
        return os.getpriority(
            os.PRIO_PROCESS, threading.get_native_id()
        ), threading.current_thread().name

    nice, name = service._HASHING.submit(priority).result(timeout=10)
    assert name.startswith("gantry-argon2")
    assert nice >= 10
    assert service._HASHING._max_workers == 1  # type: ignore[attr-defined]


async def _sign_in(server: InProcessServer, username: str, password: str) -> httpx.Response:
    async with server.client() as browser:
        form = await browser.get("/login")
        return await browser.post(
            "/login",
            data={"username": username, "password": password, "_csrf_token": csrf_token(form.text)},
        )


async def test_a_flood_of_sign_ins_is_answered_busy_not_queued_for_ever(
    server: InProcessServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "HASH_QUEUE", 2)
    answers = await asyncio.gather(*(_sign_in(server, f"nobody-{i}", "wrong") for i in range(12)))
    statuses = sorted(r.status_code for r in answers)
    assert set(statuses) <= {401, 503}, statuses
    busy = [r for r in answers if r.status_code == 503]
    assert busy, "some sign-ins were answered busy"
    assert all(r.headers["retry-after"] == "5" for r in busy)
    assert "try again in a few seconds" in busy[0].text
    # Only the checked (wrong) passwords count towards the throttle; the busy ones do not.
    async with server.app.state.db.connection() as conn:
        counted = await conn.fetchval(
            "SELECT count(*) FROM sign_in_attempt WHERE account LIKE 'nobody-%'"
        )
    assert counted == statuses.count(401)
    # Once the flood is over, signing in works.
    ok = await _sign_in(server, "admin", ADMIN_PASSWORD)
    assert ok.status_code == 303
