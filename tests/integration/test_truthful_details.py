"""What pages and the API say about tasks is what happened (issue 9, "the first hour" 6)."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from tests.support import InProcessServer, Stack, submit, task_of, wait_for

CHAIN = """\
workflow:
  name: chain
  groups:
  - name: first
    tasks:
    - {name: boom, image: x, command: [sh, -c, "exit 3"]}
  - name: second
    tasks:
    - {name: after, image: x, command: [echo, never], inputs: [{task: boom}]}
"""
TRAPS = """\
workflow:
  name: traps
  tasks:
  - name: trapper
    image: x
    command: [sh, -c, "trap 'exit 143' TERM; sleep 600 & wait"]
"""


async def test_a_failure_and_what_it_stopped_say_so_truthfully(stack: Stack) -> None:
    async with stack.client() as client:
        wid = await submit(client, CHAIN)
        wf = await wait_for(client, wid)
        boom, after = task_of(wf, "boom"), task_of(wf, "after")
        # The failing task's own reason, not only its group's.
        assert boom["exit_code"] == 3 and boom["reason"] == "exited with code 3"
        assert wf["groups"][0]["reason"] == "task 'boom': exited with code 3"
        # The task that never ran: OSMO's code 3000, explained, and not "by runner".
        assert after["status"] == "FAILED_UPSTREAM" and after["exit_code"] == 3000
        page = (await client.get(f"/workflows/{wid}")).text
        assert "3000 (never ran: an upstream group failed)" in page
    conn = await asyncpg.connect(stack.database_url)
    try:
        sources = await conn.fetch(
            "SELECT source FROM task_event WHERE task = $1 AND status = 'FAILED_UPSTREAM'",
            after["id"],
        )
    finally:
        await conn.close()
    assert [r["source"] for r in sources] == ["scheduler"]


async def test_a_cancelled_task_keeps_the_exit_code_it_ended_with(stack: Stack) -> None:
    async with stack.client() as client:
        wid = await submit(client, TRAPS)
        await wait_for(client, wid, lambda wf: task_of(wf, "trapper")["status"] == "RUNNING")
        await asyncio.sleep(0.5)  # the trap is set
        r = await client.post(f"/api/v1/workflows/{wid}/cancel", json={"reason": "enough"})
        assert r.status_code in (200, 202), r.text
        wf = await wait_for(client, wid, lambda wf: task_of(wf, "trapper")["exit_code"] == 143)
        assert task_of(wf, "trapper")["status"] == "FAILED_CANCELED"


async def test_pools_say_requested_and_list_rows_refresh_their_submitted_time(
    server: InProcessServer,
) -> None:
    async with server.client(server.settings.bootstrap_admin_token) as client:
        pools = (await client.get("/pools")).text
        assert "CPU requested / total" in pools and "CPU used" not in pools
        wid = await submit(client, TRAPS)
        page = (await client.get("/workflows")).text
        assert f'id="wf-{wid}-submitted"' in page
        async with client.stream("GET", "/workflows/live", timeout=20) as stream:
            await client.post(f"/api/v1/workflows/{wid}/cancel", json={"reason": "x"})
            deadline = time.monotonic() + 15
            async for line in stream.aiter_lines():
                if f'id="wf-{wid}-submitted"' in line and "hx-swap-oob" in line:
                    break
                assert time.monotonic() < deadline, "no refresh of the row came"


async def test_exit_labels() -> None:
    from app.templating import exit_label

    assert exit_label(None) == "—" and exit_label(143) == "143" and exit_label(0) == "0"
    assert exit_label(3004) == "3004 (evicted)"


def test_exit_reasons_name_the_signal() -> None:
    from app.workflows.transitions import exit_reason

    assert exit_reason(3) == "exited with code 3"
    assert exit_reason(137) == "exited with code 137 (killed by SIGKILL)"
    assert exit_reason(143) == "exited with code 143 (killed by SIGTERM)"


UPSTREAM = """\
workflow:
  name: up
  groups:
  - name: first
    tasks:
    - {name: slow, image: x, command: [sleep, "30"]}
  - name: second
    tasks:
    - {name: then, image: x, command: [echo], inputs: [{task: slow}]}
"""


def _hog(cpu: float) -> str:
    return (
        "workflow:\n  name: hog\n  tasks:\n"
        f"  - {{name: h, image: x, command: [sleep, '30'], resources: {{cpu: {cpu}}}}}\n"
    )


async def test_a_waiting_workflow_says_why(server: InProcessServer) -> None:
    """No runner here: the local backend exists but nobody serves it."""
    async with server.client(server.settings.bootstrap_admin_token) as client:
        wid = await submit(client, TRAPS)
        wf = (await client.get(f"/api/v1/workflows/{wid}")).json()
        assert wf["status"] == "PENDING"
        assert wf["waiting"].startswith("no runner is connected to pool 'default'"), wf
        page = (await client.get(f"/workflows/{wid}")).text
        assert "Waiting: no runner is connected to pool" in page
        listed = (await client.get("/api/v1/workflows")).json()["items"]
        assert "waiting" not in listed[0]  # lists leave it out (documented)
        await client.post(f"/api/v1/workflows/{wid}/cancel", json={})
        assert (await client.get(f"/api/v1/workflows/{wid}")).json()["waiting"] is None


async def test_waiting_for_upstream_and_for_resources(stack: Stack) -> None:
    async with stack.client() as client:
        wid = await submit(client, UPSTREAM)
        wf = await wait_for(client, wid, lambda wf: task_of(wf, "slow")["status"] == "RUNNING")
        wf = (await client.get(f"/api/v1/workflows/{wid}")).json()
        assert wf["waiting"] == "group 'second' waits for 'first' to complete", wf
        backends = (await client.get("/api/v1/backends")).json()["items"]
        cpus = sum(n["cpu"] for n in backends[0]["capacity"]["nodes"])
        first = await submit(client, _hog(cpus))
        await wait_for(client, first, lambda wf: task_of(wf, "h")["status"] == "RUNNING")
        second = await submit(client, _hog(cpus))
        wf = (await client.get(f"/api/v1/workflows/{second}")).json()
        assert wf["waiting"] == f"group 'h' waits for {cpus:g} CPU (free: 0 CPU)", wf
        for w in (wid, first, second):
            await client.post(f"/api/v1/workflows/{w}/cancel", json={"force": True})
