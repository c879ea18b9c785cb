"""One user cannot exhaust what everyone shares (issue 7, finding 11): per-user limits on queued
workflows, submissions a minute, concurrent streams, log bytes per attempt, and attempt disk."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.limits import is_stream
from runner import protocol as p
from runner.executors.disk import DiskLimit, directory_usage
from runner.executors.local import LocalExecutor
from tests.integration.test_protocol_guards import ONE, FakeRunner
from tests.support import (
    ADMIN_TOKEN,
    InProcessServer,
    make_settings,
    runner_in_loop,
    submit,
    task_of,
    wait_for,
)

DRY = {"dry_run": True}


@contextlib.asynccontextmanager
async def limited(
    database_url: str, tmp_path: Path, **limits: Any
) -> AsyncIterator[InProcessServer]:
    server = InProcessServer(make_settings(database_url, tmp_path, **limits))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def user_token(server: InProcessServer, name: str) -> str:
    auth = server.app.state.auth
    await auth.ensure_user(name, ["user"], None)
    return str(await auth.create_token(name, "t"))


def assert_limit(response: httpx.Response, setting: str) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["setting"] == setting and setting in body["detail"], body
    return body


async def test_queued_workflows_per_user(database_url: str, tmp_path: Path) -> None:
    async with (
        limited(database_url, tmp_path, max_queued_per_user=3, max_submissions_per_minute=0) as s,
        s.client(ADMIN_TOKEN) as admin,
    ):
        ids = [await submit(admin, ONE) for _ in range(3)]  # no runner: they stay queued
        body = assert_limit(
            await admin.post("/api/v1/workflows", json={"spec": ONE}), "GANTRY_MAX_QUEUED_PER_USER"
        )
        assert body["limit"] == "queued workflows" and body["value"] == 3
        assert (
            "retry-after" not in (await admin.post("/api/v1/workflows", json={"spec": ONE})).headers
        )
        # A dry run queues nothing; another user has a limit of their own.
        assert (await admin.post("/api/v1/workflows", json={"spec": ONE, **DRY})).status_code == 200
        async with s.client(await user_token(s, "alice")) as alice:
            await submit(alice, ONE)
        # A workflow that ended frees its place.
        assert (await admin.post(f"/api/v1/workflows/{ids[0]}/cancel")).status_code == 200
        await wait_for(admin, ids[0])
        await submit(admin, ONE)


async def test_submissions_per_minute_count_dry_runs(database_url: str, tmp_path: Path) -> None:
    async with (
        limited(database_url, tmp_path, max_submissions_per_minute=3) as s,
        s.client(ADMIN_TOKEN) as admin,
    ):
        db = s.app.state.db.pool
        # The window is the clock minute: start early in one, so the four requests share it.
        second = await db.fetchval("SELECT extract(second FROM now())")
        if second > 50:
            await asyncio.sleep(61 - float(second))
        await submit(admin, ONE)
        for _ in range(2):
            assert (
                await admin.post("/api/v1/workflows", json={"spec": ONE, **DRY})
            ).status_code == 200
        refused = await admin.post("/api/v1/workflows", json={"spec": ONE, **DRY})
        body = assert_limit(refused, "GANTRY_MAX_SUBMISSIONS_PER_MINUTE")
        assert body["value"] == 3
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # The page's form says so too, as a page.
        page = await admin.post(
            "/submit",
            files={"spec": (None, ONE)},
            headers={"accept": "text/html"},
            follow_redirects=False,
        )
        assert page.status_code == 429 and "GANTRY_MAX_SUBMISSIONS_PER_MINUTE" in page.text
        async with s.client(await user_token(s, "alice")) as alice:
            await submit(alice, ONE)
        # The count lives in PostgreSQL, so every replica sees it.
        row = await db.fetchrow("SELECT submissions FROM submission_rate WHERE user_name = 'admin'")
        assert row["submissions"] >= 4


@contextlib.asynccontextmanager
async def stream(server: InProcessServer, token: str, path: str) -> AsyncIterator[httpx.Response]:
    """One stream on a connection of its own (HTTP/1.1), so leaving closes the connection."""
    async with (
        server.client(token) as client,
        client.stream("GET", path, headers={"accept": "text/event-stream"}) as response,
    ):
        yield response


async def test_concurrent_streams_per_user(database_url: str, tmp_path: Path) -> None:
    async with (
        limited(database_url, tmp_path, max_streams_per_user=3) as s,
        s.client(ADMIN_TOKEN) as admin,
    ):
        wid = await submit(admin, ONE)  # stays queued: its streams stay open
        paths = [
            f"/api/v1/workflows/{wid}/events",
            f"/workflows/{wid}/live",
            f"/api/v1/workflows/{wid}/tasks/t/logs?follow=true",
        ]
        async with contextlib.AsyncExitStack() as stack:
            opened = [await stack.enter_async_context(stream(s, ADMIN_TOKEN, x)) for x in paths]
            assert [r.status_code for r in opened] == [200, 200, 200]
            for path in ("/pools/live", "/workflows/live", f"/api/v1/workflows/{wid}/events"):
                async with stream(s, ADMIN_TOKEN, path) as refused:
                    await refused.aread()
                    body = assert_limit(refused, "GANTRY_MAX_STREAMS_PER_USER")
                    assert body["limit"] == "concurrent streams" and body["value"] == 3
            # Reading a log whole is no stream; another user has slots of their own.
            assert (await admin.get(f"/api/v1/workflows/{wid}/tasks/t/logs")).status_code == 200
            async with stream(s, await user_token(s, "alice"), "/pools/live") as other:
                assert other.status_code == 200
            # Closing one frees its slot once the server sees the connection go.
            await stack.aclose()
        deadline = time.monotonic() + 20
        while True:
            async with stream(s, ADMIN_TOKEN, "/pools/live") as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "closing streams did not free their slots"
            await asyncio.sleep(0.1)


def test_every_event_stream_route_takes_a_slot(server: InProcessServer) -> None:
    """Built from the app's own route table: every SSE handler counts without a line of its own."""
    sse = set()
    for route in server.app.routes:
        for handler in getattr(route, "route_handlers", []):
            if is_stream({"route_handler": handler, "query_string": b""}):  # type: ignore[typeddict-item]
                sse.add(route.path)
    assert {
        "/workflows/live",
        "/workflows/{workflow_id:str}/live",
        "/pools/live",
        "/workflows/{workflow_id:str}/logs/live",
        "/workflows/{workflow_id:str}/tasks/{task:str}/logs/live",
        "/api/v1/workflows/{workflow_id:str}/events",
    } <= sse, sse
    for logs in (
        "/api/v1/workflows/{workflow_id:str}/tasks/{task:str}/logs",
        "/api/v1/workflows/{workflow_id:str}/logs",  # every task merged: one slot in all
    ):
        assert logs not in sse  # only with follow=true:
        route = next(r for r in server.app.routes if r.path == logs)
        (handler,) = [h for h in route.route_handlers if "GET" in h.http_methods]  # type: ignore[attr-defined]
        assert is_stream({"route_handler": handler, "query_string": b"follow=true"})  # type: ignore[typeddict-item]


async def test_log_is_cut_at_the_cap_with_a_marker(database_url: str, tmp_path: Path) -> None:
    async with (
        limited(database_url, tmp_path, max_log_bytes_per_attempt=1000) as s,
        s.client(ADMIN_TOKEN) as admin,
    ):
        runner = FakeRunner(s)
        await runner.hello()
        wid = await submit(admin, ONE)
        (launch,) = await runner.launches(1)
        aid, epoch = launch.attempt.id, launch.epoch
        await runner.report(aid, "RUNNING")

        async def send(*chunks: tuple[str, int, bytes]) -> p.LogReply:
            batch = p.LogBatch([p.LogChunk(aid, epoch, st, off, data) for st, off, data in chunks])  # type: ignore[arg-type]
            reply: p.LogReply = await runner.post(f"/sessions/{runner.sid}/logs", batch, p.LogReply)
            return reply

        await send(("stdout", 0, b"a" * 599 + b"\n"))
        reply = await send(("stderr", 0, b"b" * 600), ("stdout", 600, b"c" * 10))
        # Both streams are acknowledged far ahead: the runner reads and sends nothing more.
        assert {o.offset for o in reply.offsets} == {2**40} and not reply.refused
        db = s.app.state.db.pool
        rows = await db.fetch("SELECT data FROM log_chunk WHERE task = $1 ORDER BY id", aid)
        *kept, marker = (bytes(r["data"]) for r in rows)
        assert sum(len(k) for k in kept) == 1000
        assert b"GANTRY_MAX_LOG_BYTES_PER_ATTEMPT" in marker and b"log cut" in marker
        before = await db.fetchval("SELECT count(*) FROM log_chunk WHERE task = $1", aid)
        later = await send(("stdout", 610, b"d" * 5000), ("stderr", 600, b"e" * 100))
        assert {o.offset for o in later.offsets} == {2**40}
        assert await db.fetchval("SELECT count(*) FROM log_chunk WHERE task = $1", aid) == before
        # Nor do chunks a hostile runner places across the far acknowledgement itself.
        across = await send(("stdout", 2**40 - 1, b"f" * 10), ("stderr", 2**40, b"g" * 10))
        assert {o.offset for o in across.offsets} == {2**40}
        assert await db.fetchval("SELECT count(*) FROM log_chunk WHERE task = $1", aid) == before
        text = (await admin.get(f"/api/v1/workflows/{wid}/tasks/t/logs")).text
        assert text.count("GANTRY_MAX_LOG_BYTES_PER_ATTEMPT") == 1 and "d" * 10 not in text
        assert (await runner.report(aid, "COMPLETED", exit_code=0)).results[0].outcome == "applied"
        await runner.close()


DISK_HOG = """\
workflow:
  name: hog
  tasks:
  - name: t
    image: ubuntu
    command: [sh, -c, 'head -c 3000000 /dev/zero > "$GANTRY_OUTPUT/big"; sleep 120']
"""


async def test_attempt_over_its_disk_limit_is_ended(
    server: InProcessServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    executor = LocalExecutor(tmp_path / "r", 4)
    executor.disk = DiskLimit(1_000_000, interval=0.2)
    async with runner_in_loop(server.base, tmp_path / "r", executor=executor):
        wid = await submit(api, DISK_HOG)
        wf = await wait_for(api, wid, timeout=60)
    task = task_of(wf, "t")
    assert task["status"] == "FAILED_EVICTED", wf
    assert "GANTRY_MAX_ATTEMPT_DISK_BYTES" in task["reason"] and "1000000" in task["reason"]


INODE_HOG = """\
workflow:
  name: inodes
  tasks:
  - name: t
    image: ubuntu
    command: [sh, -c, 'cd "$GANTRY_OUTPUT" && mkdir $(seq 1 3000) && sleep 120']
"""


async def test_attempt_over_its_file_limit_is_ended(
    server: InProcessServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Found by attacking it: empty directories counted nothing, so one task could use up the
    host's inodes (and its disk: 200,000 directories, 786 MB, measured as 24 KB)."""
    executor = LocalExecutor(tmp_path / "r", 4)
    executor.disk = DiskLimit(10_000_000_000, interval=0.2, max_files=1000)
    async with runner_in_loop(server.base, tmp_path / "r", executor=executor):
        wf = await wait_for(api, await submit(api, INODE_HOG), timeout=60)
    task = task_of(wf, "t")
    assert task["status"] == "FAILED_EVICTED", wf
    assert "GANTRY_MAX_ATTEMPT_FILES" in task["reason"] and "1000" in task["reason"]


def test_directories_count_as_disk(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / str(i)).mkdir()
    used, entries = directory_usage(tmp_path)
    assert entries == 50 and used >= 50 * 512
    assert directory_usage(tmp_path, max_entries=10)[1] == 11  # stops once past the limit


@pytest.mark.parametrize("limit", [0, 10_000_000])
async def test_attempt_under_its_disk_limit_runs(
    server: InProcessServer, api: httpx.AsyncClient, tmp_path: Path, limit: int
) -> None:
    executor = LocalExecutor(tmp_path / "r", 4)
    executor.disk = DiskLimit(limit, interval=0.1)
    spec = DISK_HOG.replace("sleep 120", "sleep 1")
    async with runner_in_loop(server.base, tmp_path / "r", executor=executor):
        wf = await wait_for(api, await submit(api, spec), timeout=60)
    assert wf["status"] == "COMPLETED", wf


def test_limits_are_settings() -> None:
    from app.settings import Settings, SettingsError

    s = Settings.from_env(
        {
            "GANTRY_SECRET_KEY": "k",
            "GANTRY_MAX_QUEUED_PER_USER": "7",
            "GANTRY_MAX_SUBMISSIONS_PER_MINUTE": "8",
            "GANTRY_MAX_STREAMS_PER_USER": "9",
            "GANTRY_MAX_LOG_BYTES_PER_ATTEMPT": "10",
            "GANTRY_RETENTION_DAYS": "0",
        }
    )
    assert (s.max_queued_per_user, s.max_submissions_per_minute, s.max_streams_per_user) == (
        7,
        8,
        9,
    )
    assert (s.max_log_bytes_per_attempt, s.retention_days) == (10, 0)
    d = Settings.from_env({"GANTRY_SECRET_KEY": "k"})
    assert (d.max_queued_per_user, d.max_submissions_per_minute, d.max_streams_per_user) == (
        1000,
        120,
        50,
    )
    assert d.max_log_bytes_per_attempt == 2**30 and d.retention_days == 30
    with pytest.raises(SettingsError, match="GANTRY_MAX_LOG_BYTES_PER_ATTEMPT"):
        Settings.from_env(
            {"GANTRY_SECRET_KEY": "k", "GANTRY_MAX_LOG_BYTES_PER_ATTEMPT": str(2**41)}
        )


async def test_real_runner_stops_sending_a_cut_log(database_url: str, tmp_path: Path) -> None:
    spec = """\
workflow:
  name: chatty
  tasks:
  - name: t
    image: ubuntu
    command: [sh, -c, 'for i in $(seq 2000); do echo "line $i"; done; echo done >&2']
"""
    async with (
        limited(database_url, tmp_path, max_log_bytes_per_attempt=1000) as s,
        s.client(ADMIN_TOKEN) as admin,
        runner_in_loop(s.base, tmp_path / "r"),
    ):
        wf = await wait_for(admin, await submit(admin, spec), timeout=60)
        assert wf["status"] == "COMPLETED", wf  # the attempt ends as usual
        text = (await admin.get(f"/api/v1/workflows/{wf['id']}/tasks/t/logs")).text
    assert "line 1\nline 2\n" in text and "line 2000" not in text
    assert text.endswith("(GANTRY_MAX_LOG_BYTES_PER_ATTEMPT); the rest of its output was dropped\n")
    assert len(text.encode()) < 1000 + 200
