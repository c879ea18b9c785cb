"""A pool's configuration (app/pools/config.py) through the API, and what it changes:
defaults and maxima of timeouts, a pool's own task limit, its default platform, maintenance
(no new dispatch) and the start timeout (issue 10, items 3, 9 and 10)."""

from __future__ import annotations

import asyncio

import httpx

from app.workflows.states import START_TIMEOUT_EXIT
from tests.integration.test_protocol_guards import ONE, FakeRunner
from tests.support import InProcessServer, submit, task_of, wait_for

POOL = "/api/v1/pools/default"


async def test_what_get_gives_can_be_put_back_and_patch_changes_only_what_it_names(
    api: httpx.AsyncClient,
) -> None:
    got = (await api.get(POOL)).json()
    assert got["name"] == "default" and got["maintenance"] is False and got["platforms"] == {}
    assert got["start_timeout"] == 1800 and got["max_tasks_per_workflow"] is None
    put = await api.put(POOL, json=got)  # read-only fields and all: accepted unchanged
    assert put.status_code == 200, put.text
    assert put.json() == got
    patched = await api.patch(
        POOL,
        json={"platforms": {"cpu": {"description": "plain nodes"}}, "default_platform": "cpu"},
    )
    assert patched.status_code == 200, patched.text
    after = patched.json()
    assert after["platforms"] == {"cpu": {"description": "plain nodes"}}
    assert after["default_platform"] == "cpu" and after["start_timeout"] == 1800
    listed = (await api.get("/api/v1/pools")).json()["items"]
    assert next(p for p in listed if p["name"] == "default")["default_platform"] == "cpu"


async def test_a_configuration_that_contradicts_itself_or_is_not_enforced_is_refused(
    api: httpx.AsyncClient,
) -> None:
    cases = [
        ({"default_platform": "gpu"}, "default_platform"),
        ({"default_exec_timeout": 7200, "max_exec_timeout": 3600}, "default_exec_timeout"),
        ({"max_tasks_per_workflow": 10**6}, "max_tasks_per_workflow"),
        ({"quota": {"guarantee": 4}}, "quota"),
        ({"max_retry_per_task": 2}, "max_retry_per_task"),
        ({"platforms": {"dgx": {"privileged_allowed": True}}}, "platforms.dgx.privileged_allowed"),
    ]
    for body, field in cases:
        r = await api.patch(POOL, json=body)
        assert r.status_code == 422, (body, r.status_code, r.text)
        assert field in [e["path"] for e in r.json()["errors"]], (body, r.json())
    bad = await api.put(POOL, json={"start_timeout": 0})
    assert bad.status_code == 400 and "start_timeout" in bad.text
    assert (await api.put("/api/v1/pools/nope", json={})).status_code == 404
    assert (await api.get(POOL)).json()["maintenance"] is False, "nothing refused was stored"


async def test_a_user_may_read_but_not_change_the_pool(
    server: InProcessServer, api: httpx.AsyncClient
) -> None:
    created = await api.post("/api/v1/users", json={"name": "bob", "password": "bob-password-1"})
    assert created.status_code == 201, created.text
    token = (await api.post("/api/v1/users/bob/tokens", json={"name": "t"})).json()["token"]
    async with server.client(token) as bob:
        assert (await bob.get(POOL)).status_code == 200
        assert (await bob.patch(POOL, json={"maintenance": True})).status_code == 403
        assert (await bob.get("/api/v1/pools/elsewhere")).status_code == 404
    assert (await api.post("/api/v1/pools", json={"name": "elsewhere"})).status_code == 201
    async with server.client(token) as bob:
        # A pool bob may not list: as if it did not exist, to read and to change.
        assert (await bob.get("/api/v1/pools/elsewhere")).status_code == 404
        assert (await bob.put("/api/v1/pools/elsewhere", json={})).status_code == 404


LONG = """\
workflow:
  name: long
  timeout:
    exec_timeout: 2h
  tasks:
  - {name: t, image: x, command: [echo, hi]}
"""


async def test_submissions_meet_the_pools_timeouts_and_task_limit(api: httpx.AsyncClient) -> None:
    await api.patch(
        POOL,
        json={"max_exec_timeout": 3600, "default_queue_timeout": 600, "max_tasks_per_workflow": 2},
    )
    refused = await api.post("/api/v1/workflows", json={"spec": LONG, "dry_run": True})
    assert refused.status_code == 422, refused.text
    (issue,) = refused.json()["errors"]
    assert issue["path"] == "workflow.timeout.exec_timeout" and issue["line"] in (3, 4), issue
    assert "1h" in issue["message"] and "max_exec_timeout" in issue["message"]
    plan = (await api.post("/api/v1/workflows", json={"spec": ONE, "dry_run": True})).json()
    assert plan["exec_timeout"] == 3600, "the service's 60 days, cut to the pool's maximum"
    assert plan["queue_timeout"] == 600, "the pool's default"
    three = (
        ONE + "  - {name: u, image: x, command: [echo]}\n  - {name: v, image: x, command: [echo]}\n"
    )
    many = await api.post("/api/v1/workflows", json={"spec": three, "dry_run": True})
    assert many.status_code == 422 and "at most 2 per workflow" in many.text, many.text


async def test_maintenance_holds_new_dispatch_and_says_so(
    server: InProcessServer, api: httpx.AsyncClient
) -> None:
    runner = FakeRunner(server)
    try:
        await runner.hello()
        assert (await api.patch(POOL, json={"maintenance": True})).status_code == 200
        wid = await submit(api, ONE)
        await asyncio.sleep(1.5)  # several scheduler passes
        wf = (await api.get(f"/api/v1/workflows/{wid}")).json()
        assert task_of(wf, "t")["status"] == "PROCESSING", wf
        assert "is in maintenance" in (wf["waiting"] or ""), wf["waiting"]
        await api.patch(POOL, json={"maintenance": False})
        (launch,) = await runner.launches(1)  # dispatched once maintenance ended
        assert launch.attempt.task == "t" and launch.attempt.workflow_id == wid
    finally:
        await runner.close()


async def test_an_attempt_that_never_starts_running_ends_at_the_start_timeout(
    server: InProcessServer, api: httpx.AsyncClient
) -> None:
    runner = FakeRunner(server)
    try:
        await runner.hello()
        assert (await api.patch(POOL, json={"start_timeout": 1})).status_code == 200
        wid = await submit(api, ONE)
        (launch,) = await runner.launches(1)
        await runner.report(launch.attempt.id, "INITIALIZING", launch.epoch)
        wf = await wait_for(api, wid, timeout=30)  # the sweeper, a pass every second or so
        task = task_of(wf, "t")
        assert task["status"] == "FAILED_START_TIMEOUT", task
        assert task["exit_code"] == START_TIMEOUT_EXIT and "start_timeout (1s)" in task["reason"]
        assert wf["status"] == "FAILED_START_TIMEOUT", wf
    finally:
        await runner.close()
