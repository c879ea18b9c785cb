"""Nothing is kept for ever by accident (issue 7, finding 12): finished workflows' log chunks
and attempt directories go after GANTRY_RETENTION_DAYS; workflow rows and events stay."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx

from app.workflows.scheduler import Retention
from runner import __main__ as runner_main
from runner import protocol as p
from runner.executors.disk import remove_old_attempts
from tests.integration.test_protocol_guards import ONE, FakeRunner
from tests.support import InProcessServer, submit, wait_for


async def _workflow_with_log(
    server: InProcessServer, api: httpx.AsyncClient, runner: FakeRunner, lines: int, end: bool
) -> tuple[str, int]:
    wid = await submit(api, ONE)
    (launch,) = await runner.launches(1)
    aid = launch.attempt.id
    await runner.report(aid, "RUNNING")
    chunks = [
        p.LogChunk(aid, launch.epoch, "stdout", i * 6, f"line{i}\n".encode()) for i in range(lines)
    ]
    await runner.post(f"/sessions/{runner.sid}/logs", p.LogBatch(chunks), p.LogReply)
    if end:
        await runner.report(aid, "COMPLETED", exit_code=0)
        await wait_for(api, wid)
    return wid, aid


async def _chunks(db: asyncpg.Pool, aid: int) -> int:
    return int(await db.fetchval("SELECT count(*) FROM log_chunk WHERE task = $1", aid))


async def test_old_finished_logs_are_removed_in_batches(
    server: InProcessServer, api: httpx.AsyncClient
) -> None:
    runner = FakeRunner(server)
    await runner.hello()
    old, old_attempt = await _workflow_with_log(server, api, runner, 7, end=True)
    recent, recent_attempt = await _workflow_with_log(server, api, runner, 3, end=True)
    running, running_attempt = await _workflow_with_log(server, api, runner, 3, end=False)
    db = server.app.state.db.pool
    await db.execute("UPDATE workflow SET ended_at = now() - interval '31 days' WHERE id = $1", old)
    # A running workflow never has its logs removed, however old it is.
    await db.execute(
        "UPDATE workflow SET submitted_at = now() - interval '90 days' WHERE id = $1", running
    )
    events_before = await db.fetchval("SELECT count(*) FROM task_event")

    retention = Retention(server.app.state.db, server.app.state.hub, server.settings, 3600)
    retention.CHUNK_BATCH = 2  # 7 chunks: four DELETE statements, each its own transaction
    # Another replica holding the lock: this one does nothing.
    async with server.app.state.db.connection() as other:
        await other.execute("SELECT pg_advisory_lock(hashtext('gantry-retention'))")
        assert await retention.pass_once() is False
        assert await _chunks(db, old_attempt) == 7
        await other.execute("SELECT pg_advisory_unlock(hashtext('gantry-retention'))")

    retention.BATCHES_PER_PASS = 3  # a pass does bounded work, then says there is more
    assert await retention.pass_once() is True
    assert await _chunks(db, old_attempt) == 1
    assert await retention.pass_once() is False  # done, nothing left
    assert await _chunks(db, old_attempt) == 0
    assert await _chunks(db, recent_attempt) == 3
    assert await _chunks(db, running_attempt) == 3
    # The workflow, its tasks and events stay, and say the logs were removed.
    wf = (await api.get(f"/api/v1/workflows/{old}")).json()
    assert wf["status"] == "COMPLETED"
    assert await db.fetchval("SELECT count(*) FROM task_event") == events_before
    removed = await db.fetchval("SELECT logs_removed_at FROM workflow WHERE id = $1", old)
    assert removed is not None
    assert await db.fetchval("SELECT logs_removed_at FROM workflow WHERE id = $1", recent) is None
    text = await api.get(f"/api/v1/workflows/{old}/tasks/t/logs")
    assert text.status_code == 200
    assert "removed" in text.text and "GANTRY_RETENTION_DAYS" in text.text
    assert text.text.count("\n") == 1
    followed = await api.get(f"/api/v1/workflows/{old}/tasks/t/logs?follow=true")
    assert "GANTRY_RETENTION_DAYS" in followed.text
    page = await api.get(f"/workflows/{old}/tasks/t/logs", headers={"accept": "text/html"})
    assert page.status_code == 200 and 'id="logs-removed"' in page.text
    assert "GANTRY_RETENTION_DAYS" in page.text
    merged = await api.get(f"/workflows/{old}/logs", headers={"accept": "text/html"})
    assert 'id="logs-removed"' in merged.text
    recent_text = (await api.get(f"/api/v1/workflows/{recent}/tasks/t/logs")).text
    assert recent_text == "line0\nline1\nline2\n"
    await runner.close()


async def test_zero_days_keeps_everything(server: InProcessServer, api: httpx.AsyncClient) -> None:
    runner = FakeRunner(server)
    await runner.hello()
    wid, aid = await _workflow_with_log(server, api, runner, 2, end=True)
    db = server.app.state.db.pool
    await db.execute(
        "UPDATE workflow SET ended_at = now() - interval '3000 days' WHERE id = $1", wid
    )
    settings = replace(server.settings, retention_days=0)
    retention = Retention(server.app.state.db, server.app.state.hub, settings, 3600)
    assert await retention.pass_once() is False
    assert await _chunks(db, aid) == 2
    await runner.close()


def _attempt(root: Path, name: str, age_days: float, *, reported: bool) -> Path:
    d = root / name
    (d / "output").mkdir(parents=True)
    (d / "output" / "data").write_bytes(b"x" * 100)
    (d / "exit_code").write_text("0")
    when = time.time() - age_days * 86400
    if reported:
        (d / "reported").touch()
        os.utime(d / "reported", (when, when))
    os.utime(d / "exit_code", (when, when))
    return d


def test_runner_removes_old_attempt_directories(tmp_path: Path) -> None:
    root = tmp_path / "attempts"
    old = _attempt(root, "1", 31, reported=True)
    recent = _attempt(root, "2", 29, reported=True)
    unreported = _attempt(root, "3", 90, reported=False)  # the control plane lacks its end
    running = root / "4"
    running.mkdir()
    assert remove_old_attempts(root, 30) == ["1"]
    assert not old.exists() and recent.exists() and unreported.exists() and running.exists()
    assert remove_old_attempts(root, 0) == []  # 0 keeps everything
    assert recent.exists()


async def test_runner_removes_them_at_start(tmp_path: Path) -> None:
    data = tmp_path / "r"
    old = _attempt(data / "attempts", "1", 40, reported=True)
    env = {
        "GANTRY_SERVER_URL": "http://127.0.0.1:9",  # nothing listens: the runner keeps retrying
        "GANTRY_BACKEND": "local",
        "GANTRY_RUNNER_TOKEN": "t",
        "GANTRY_RUNNER_DATA_DIR": str(data),
        "GANTRY_RETENTION_DAYS": "30",
    }
    task = asyncio.create_task(runner_main.run(env))
    try:
        deadline = time.monotonic() + 20
        while old.exists():
            assert time.monotonic() < deadline, "the runner did not remove the old attempt"
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        for sig in (signal.SIGTERM, signal.SIGINT):  # run() installed them on this loop
            asyncio.get_running_loop().remove_signal_handler(sig)
