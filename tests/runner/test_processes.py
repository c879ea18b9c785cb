"""Whole stacks as processes: runner and control plane killed mid-run, two replicas, lost runners."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from tests.support import Stack, submit, task_of, wait_for

pytestmark = pytest.mark.slow

COUNTER = """\
workflow:
  name: counter
  tasks:
  - name: count
    image: ubuntu
    command: [sh, -c, "for i in $(seq 1 40); do echo line $i; sleep 0.1; done; echo done"]
"""
EXPECTED = "".join(f"line {i}\n" for i in range(1, 41)) + "done\n"


async def _until_running_with_log(client: httpx.AsyncClient, wid: str, text: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        wf = (await client.get(f"/api/v1/workflows/{wid}")).json()
        if task_of(wf, "count")["status"] == "RUNNING":
            log = (await client.get(f"/api/v1/workflows/{wid}/tasks/count/logs")).text
            if text in log:
                return
        await asyncio.sleep(0.1)
    raise TimeoutError("the task did not start logging")


async def test_runner_killed_mid_task_and_restarted(stack: Stack) -> None:
    async with stack.client() as client:
        wid = await submit(client, COUNTER)
        await _until_running_with_log(client, wid, "line 5\n")
        stack.kill_runner(signal.SIGKILL)
        await asyncio.sleep(1.5)  # the task goes on without its runner
        await stack.start_runner()
        wf = await wait_for(client, wid, timeout=60)
        assert wf["status"] == "COMPLETED", wf
        assert task_of(wf, "count")["retry"] == 0  # the same attempt, adopted
        log = (await client.get(f"/api/v1/workflows/{wid}/tasks/count/logs")).text
        assert log == EXPECTED  # the whole log, nothing doubled


async def test_control_plane_killed_mid_run(stack: Stack) -> None:
    async with stack.client() as client:
        wid = await submit(client, COUNTER)
        await _until_running_with_log(client, wid, "line 3\n")
    port = stack.kill_server("a", signal.SIGKILL)
    await asyncio.sleep(1.0)
    await stack.start_server("a", port=port)
    async with stack.client() as client:
        wf = await wait_for(client, wid, timeout=60)
        assert wf["status"] == "COMPLETED", wf
        log = (await client.get(f"/api/v1/workflows/{wid}/tasks/count/logs")).text
        assert log == EXPECTED


async def test_two_replicas_share_one_database(stack: Stack) -> None:
    await stack.start_server("b")
    events: list[str] = []
    async with stack.client("b") as on_b:
        wid = await submit(on_b, COUNTER.replace("seq 1 40", "seq 1 5"))
        # The runner is connected to replica a; a watcher on replica b sees its reports.
        async with on_b.stream("GET", f"/api/v1/workflows/{wid}/events") as r:
            async for line in r.aiter_lines():
                if line.startswith("data:") and '"status"' in line:
                    events.append(line)
                if line.startswith("event: end"):
                    break
        assert any('"RUNNING"' in e for e in events)
        assert any('"COMPLETED"' in e for e in events)
        log = (await on_b.get(f"/api/v1/workflows/{wid}/tasks/count/logs")).text
        assert log.endswith("done\n")
        # The page's own live stream on replica b renders the states the runner reports to a.
        page_wid = await submit(on_b, COUNTER.replace("seq 1 40", "seq 1 5"))
        fragments: list[str] = []
        async with on_b.stream("GET", f"/workflows/{page_wid}/live") as r:
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    fragments.append(line)
                if line.startswith("event: end"):
                    break
        assert any('data-status="COMPLETED"' in f for f in fragments)
    # Both replicas run the scheduler; a burst of workflows is dispatched once each.
    async with stack.client("a") as on_a, stack.client("b") as on_b:
        ids = await asyncio.gather(
            *(
                submit(
                    c,
                    "workflow:\n  name: burst\n  tasks:\n  - {name: t, image: x, command: [echo, ok]}\n",
                )
                for c in [on_a, on_b] * 10
            )
        )
        for wid in ids:
            wf = await wait_for(on_a, wid, timeout=60)
            assert wf["status"] == "COMPLETED"
    import asyncpg

    conn = await asyncpg.connect(stack.database_url)
    try:
        dispatched = await conn.fetchval(
            "SELECT count(*) FROM task_event WHERE status = 'SCHEDULING' AND workflow LIKE 'burst-%'"
        )
    finally:
        await conn.close()
    assert dispatched == 20


async def test_a_runner_that_never_comes_back_fails_its_attempts(stack: Stack) -> None:
    async with stack.client() as client:
        wid = await submit(client, COUNTER.replace("seq 1 40", "seq 1 600"))
        await _until_running_with_log(client, wid, "line 2\n")
        stack.kill_runner(signal.SIGKILL)
        # Lease TTL 10 s + grace 5 s in these stacks.
        wf = await wait_for(client, wid, timeout=45)
        assert wf["status"] == "FAILED_BACKEND_ERROR"
        assert "lease" in task_of(wf, "count")["reason"]
