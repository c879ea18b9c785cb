"""The workflows JSON API against a real database: submit, dry run, refusals, list, get, cancel."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.support import ADMIN_TOKEN, InProcessServer, make_settings, submit

HELLO = """\
workflow:
  name: hello
  tasks:
  - name: hello
    image: ubuntu:24.04
    command: ["echo", "hi"]
"""


async def test_submit_assigns_name_numbered_ids(api: httpx.AsyncClient) -> None:
    first = await api.post("/api/v1/workflows", json={"spec": HELLO})
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["id"] == "hello-1"
    assert body["status"] == "PENDING" and body["pool"] == "default" and body["user"] == "admin"
    assert (await api.post("/api/v1/workflows", json={"spec": HELLO})).json()["id"] == "hello-2"


async def test_dry_run_returns_the_plan_and_stores_nothing(api: httpx.AsyncClient) -> None:
    r = await api.post("/api/v1/workflows", json={"spec": HELLO, "dry_run": True})
    assert r.status_code == 200
    plan = r.json()
    assert "id" not in plan
    assert plan["groups"][0]["tasks"][0]["command"] == ["echo", "hi"]
    assert (await api.get("/api/v1/workflows")).json()["items"] == []


async def test_bad_spec_is_422_problem_with_path_and_line(api: httpx.AsyncClient) -> None:
    r = await api.post("/api/v1/workflows", json={"spec": HELLO.replace('["echo", "hi"]', "[]")})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["title"] and problem["detail"]
    assert problem["errors"] == [
        {
            "path": "workflow.tasks[0].command",
            "line": 6,
            "message": "`command` of task 'hello' is empty; give the program to run, such as "
            '`command: ["echo"]`',
        }
    ]
    assert (await api.get("/api/v1/workflows")).json()["items"] == []


async def test_malformed_json_and_wrong_shapes_are_400_problems(api: httpx.AsyncClient) -> None:
    r = await api.post(
        "/api/v1/workflows", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/problem+json")
    r = await api.post("/api/v1/workflows", json={"spec": HELLO, "priority": "URGENT"})
    assert r.status_code == 400 and "priority" in r.text
    r = await api.post("/api/v1/workflows", json={"spec": HELLO, "colour": "blue"})
    assert r.status_code == 400 and "colour" in r.text


async def test_unknown_pool_is_refused(api: httpx.AsyncClient) -> None:
    r = await api.post("/api/v1/workflows", json={"spec": HELLO, "pool": "nowhere"})
    assert r.status_code == 422 and "nowhere" in r.json()["detail"]


async def test_what_no_node_could_hold_is_refused_naming_the_resource(
    api: httpx.AsyncClient,
) -> None:
    # A runner must have reported its capacity once for the control plane to judge.
    from runner import protocol as p

    hello = p.Hello(
        backend="local",
        protocol_version=1,
        runner_version="test",
        capacity=p.Capacity(nodes=[p.Node(name="n", cpu=4, memory=8 * 2**30, gpu=0)], slots=4),
    )
    async with httpx.AsyncClient(
        base_url=str(api.base_url), headers={"authorization": "Bearer gbk_test-runner-token"}
    ) as runner:
        import msgspec

        r = await runner.post(
            "/api/runner/v1/sessions",
            content=msgspec.json.encode(hello),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 201, r.text
    spec = HELLO.replace("    image:", "    resources: {gpu: 1, cpu: 64, memory: 1Gi}\n    image:")
    r = await api.post("/api/v1/workflows", json={"spec": spec})
    assert r.status_code == 422
    message = r.json()["errors"][0]["message"]
    assert "gpu: 1 requested, at most 0" in message and "cpu: 64 requested, at most 4" in message
    assert r.json()["errors"][0]["path"] == "workflow.tasks[0].resources"


async def test_list_filters_and_keyset_pagination(api: httpx.AsyncClient) -> None:
    ids = [await submit(api, HELLO) for _ in range(5)]
    await submit(api, HELLO.replace("name: hello\n  tasks", "name: other\n  tasks"))
    page = (await api.get("/api/v1/workflows", params={"name": "hello", "limit": 2})).json()
    assert [w["id"] for w in page["items"]] == ids[::-1][:2]
    seen = [w["id"] for w in page["items"]]
    while page["next_cursor"]:
        page = (
            await api.get(
                "/api/v1/workflows",
                params={"name": "hello", "limit": 2, "cursor": page["next_cursor"]},
            )
        ).json()
        seen += [w["id"] for w in page["items"]]
    assert seen == ids[::-1]
    pending = (await api.get("/api/v1/workflows", params={"status": "PENDING"})).json()["items"]
    assert len(pending) == 6
    assert (await api.get("/api/v1/workflows", params={"status": "COMPLETED"})).json()[
        "items"
    ] == []
    r = await api.get("/api/v1/workflows", params={"cursor": "garbage!"})
    assert r.status_code == 422


async def test_get_unknown_is_404_and_cancel_ends_failed_canceled(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/v1/workflows/nope-1")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    wid = await submit(api, HELLO)
    r = await api.post(f"/api/v1/workflows/{wid}/cancel", json={"reason": "changed my mind"})
    assert r.status_code == 200 and r.json()["status"] == "FAILED_CANCELED"
    wf = (await api.get(f"/api/v1/workflows/{wid}")).json()
    task = wf["groups"][0]["tasks"][0]
    assert task["status"] == "FAILED_CANCELED" and "changed my mind" in task["reason"]
    # Who cancelled it, and why, wherever the workflow is shown (OSMO issue #755).
    assert wf["canceled_by"] == "admin" and "changed my mind" in wf["reason"], wf
    listed = (await api.get("/api/v1/workflows")).json()["items"]
    assert next(w for w in listed if w["id"] == wid)["canceled_by"] == "admin"
    # Cancelling twice changes nothing.
    assert (await api.post(f"/api/v1/workflows/{wid}/cancel")).json()["status"] == "FAILED_CANCELED"


async def test_openapi_schema_lists_the_api(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/schema/openapi.json")).json()
    assert "/api/v1/workflows" in schema["paths"]
    assert "/api/runner/v1/sessions" in schema["paths"]


async def test_bursts_beyond_the_connection_pool_do_not_deadlock(
    database_url: str, tmp_path: Path
) -> None:
    # Each request must hold at most one pooled connection at a time, or a burst larger than
    # the pool waits on itself forever.
    srv = InProcessServer(make_settings(database_url, tmp_path, db_pool_size=3))
    await srv.start()
    try:
        async with srv.client(ADMIN_TOKEN) as client:
            wid = await submit(client, HELLO)
            requests = [client.get(f"/api/v1/workflows/{wid}") for _ in range(30)]
            requests += [client.get(f"/api/v1/workflows/{wid}/tasks/hello/logs") for _ in range(10)]
            requests += [client.post(f"/api/v1/workflows/{wid}/cancel") for _ in range(5)]
            answers = await asyncio.wait_for(asyncio.gather(*requests), 30)
            assert {a.status_code for a in answers} == {200}
    finally:
        await srv.stop()


async def test_a_group_larger_than_any_backend_is_refused(api: httpx.AsyncClient) -> None:
    import msgspec

    from runner import protocol as p

    hello = p.Hello(
        backend="local",
        protocol_version=1,
        runner_version="test",
        capacity=p.Capacity(nodes=[p.Node(name="n", cpu=4, memory=8 * 2**30)], slots=2),
    )
    async with httpx.AsyncClient(
        base_url=str(api.base_url), headers={"authorization": "Bearer gbk_test-runner-token"}
    ) as runner:
        r = await runner.post("/api/runner/v1/sessions", content=msgspec.json.encode(hello))
        assert r.status_code == 201
    spec = """\
workflow:
  name: gang
  groups:
  - name: gang
    tasks:
    - {name: a, lead: true, image: x, command: [echo], resources: {cpu: 3}}
    - {name: b, image: x, command: [echo], resources: {cpu: 3}}
    - {name: c, image: x, command: [echo]}
"""
    r = await api.post("/api/v1/workflows", json={"spec": spec})
    assert r.status_code == 422
    error = r.json()["errors"][0]
    assert error["path"] == "workflow.groups[0]" and error["line"] == 4
    assert "3 tasks, backend 'local' runs at most 2" in error["message"]
    assert "cpu: 6 in total, backend 'local' has 4" in error["message"]


async def test_sorting_by_start_and_duration_pages_with_stable_cursors(
    server: InProcessServer, api: httpx.AsyncClient
) -> None:
    ids = [await submit(api, HELLO) for _ in range(5)]
    db = server.app.state.db
    # Give them known start and end times: durations 10 s, 40 s, 20 s, not started, 30 s.
    for wid, (start, end) in zip(
        ids, [(100, 110), (200, 240), (300, 320), (None, None), (400, 430)], strict=True
    ):
        if start is not None:
            await db.pool.execute(
                "UPDATE workflow SET started_at = to_timestamp($2), ended_at = to_timestamp($3) WHERE id = $1",
                wid,
                start,
                end,
            )

    async def pages(sort: str) -> list[str]:
        seen, cursor = [], None
        while True:
            params = {"sort": sort, "limit": 2} | ({"cursor": cursor} if cursor else {})
            page = (await api.get("/api/v1/workflows", params=params)).json()
            seen += [w["id"] for w in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                return seen

    assert await pages("started") == [ids[4], ids[2], ids[1], ids[0], ids[3]]
    assert await pages("duration") == [ids[1], ids[4], ids[2], ids[0], ids[3]]
    r = await api.get("/api/v1/workflows", params={"sort": "colour"})
    assert r.status_code == 422
    page = (await api.get("/api/v1/workflows", params={"sort": "started", "limit": 2})).json()
    r = await api.get(
        "/api/v1/workflows", params={"sort": "duration", "cursor": page["next_cursor"]}
    )
    assert r.status_code == 422  # a cursor belongs to its sort order


async def test_status_counts_and_bulk_cancel_from_the_list_page(
    server: InProcessServer, api: httpx.AsyncClient
) -> None:
    import re as regex

    ids = [await submit(api, HELLO) for _ in range(3)]
    async with server.client(follow_redirects=False) as browser:
        form = await browser.get("/login")
        token = regex.search(r'name="_csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        await browser.post(
            "/login",
            data={"username": "admin", "password": "test-admin-password", "_csrf_token": token},
        )
        listing = await browser.get("/workflows")
        assert "PENDING <b>3</b>" in listing.text
        r = await browser.post(
            "/workflows/cancel",
            data={
                "ids": [ids[0], ids[2], "missing-9"],
                "reason": "cleanup",
                "_csrf_token": token,
                "back": "/workflows?sort=started",
            },
        )
        assert r.status_code == 303 and r.headers["location"] == "/workflows?sort=started"
        page = await browser.get("/workflows")
        assert f"Canceled 2: {ids[0]}, {ids[2]}." in page.text
        assert "missing-9" in page.text  # named as not canceled
        assert "FAILED_CANCELED <b>2</b>" in page.text and "PENDING <b>1</b>" in page.text


async def test_a_post_without_a_body_says_it_needs_one(api: httpx.AsyncClient) -> None:
    r = await api.post("/api/v1/workflows")
    assert r.status_code == 400
    assert "needs a body" in r.json()["detail"], r.text


async def test_a_live_list_with_an_unknown_sort_is_refused_before_it_streams(
    api: httpx.AsyncClient,
) -> None:
    r = await api.get("/workflows/live", params={"sort": "x"})
    assert r.status_code == 422 and "is not one of" in r.text
    assert not r.headers["content-type"].startswith("text/event-stream")


GROUPS = """\
workflow:
  name: shapes
  groups:
  - name: first
    tasks:
    - {name: b, image: "img:1", command: [echo]}
    - {name: A, image: "img:2", command: [echo], lead: true}
    - {name: a1, image: "img:3", command: [echo]}
    - {name: Z9, image: "img:4", command: [echo]}
  - name: second
    tasks:
    - {name: d, image: x, command: [echo], inputs: [{task: b}]}
  - name: third
    tasks:
    - {name: e, image: x, command: [echo], inputs: [{task: d}, {task: A}]}
"""


async def test_the_detail_postgresql_builds_is_the_detail_the_structs_give(
    api: httpx.AsyncClient, server: InProcessServer
) -> None:
    """GET /api/v1/workflows/{id} is built as JSON by PostgreSQL; the live views build the
    same workflow from rows in Python. Both must give the same document: every field, nulls,
    times with and without microseconds, text that JSON escapes, a retried task's latest
    attempt, the lead first and the rest in code point order."""
    import asyncpg
    import msgspec

    from app.workflows.schemas import WorkflowDetail

    wid = await submit(api, GROUPS)
    conn = await asyncpg.connect(server.settings.database_url)
    try:
        await conn.execute(
            """
            UPDATE task SET status = 'FAILED', exit_code = -9, node = 'n"1\\',
                reason = E'quote " backslash \\\\ newline \\n tab \\t bell \\x07 é ✓',
                backend = 'b1', started_at = '2026-01-02T03:04:05Z',
                ended_at = '2026-01-02T03:04:05.000007+02:00', scheduling_at = now()
            WHERE workflow = $1 AND name IN ('b', 'a1')
            """,
            wid,
        )
        await conn.execute(
            """
            INSERT INTO task (task_group, workflow, name, lead, retry, status, spec)
            SELECT task_group, workflow, name, lead, 1, 'RUNNING', spec FROM task
            WHERE workflow = $1 AND name = 'b'
            """,
            wid,
        )
        await conn.execute(
            "UPDATE task_group SET status = 'RUNNING', reason = '✓', "
            "started_at = '2026-01-02T03:04:05.5Z' WHERE workflow = $1 AND name = 'first'",
            wid,
        )
    finally:
        await conn.close()
    got = (await api.get(f"/api/v1/workflows/{wid}")).json()
    rows = await server.app.state.workflows.detail(wid)
    want = msgspec.json.decode(msgspec.json.encode(msgspec.convert(rows, WorkflowDetail)))
    assert got == want
    first = got["groups"][0]
    assert [t["name"] for t in first["tasks"]] == ["A", "Z9", "a1", "b"]
    assert first["tasks"][3]["retry"] == 1 and first["started_at"] == "2026-01-02T03:04:05.500000Z"
    assert first["tasks"][2]["reason"].endswith("\x07 é ✓") and first["tasks"][2]["exit_code"] == -9
    assert first["tasks"][2]["ended_at"] == "2026-01-02T01:04:05.000007Z"
    assert got["groups"][2]["upstream"] == ["first", "second"]


async def test_the_list_filters_by_submission_time(api: httpx.AsyncClient) -> None:
    from datetime import UTC, datetime, timedelta

    first = await submit(api, HELLO)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.05)
    second = await submit(api, HELLO)

    async def ids(**params: str) -> list[str]:
        r = await api.get("/api/v1/workflows", params=params)
        assert r.status_code == 200, r.text
        return [w["id"] for w in r.json()["items"]]

    assert await ids(submitted_after=middle.isoformat()) == [second]
    assert await ids(submitted_before=middle.isoformat()) == [first]
    hour = (middle - timedelta(hours=1)).isoformat()
    assert await ids(submitted_after=hour, status="PENDING,RUNNING") == [second, first]
    bad = await api.get("/api/v1/workflows", params={"submitted_after": "yesterday"})
    assert bad.status_code == 400 and "submitted_after" in bad.text


async def test_a_time_filter_without_a_utc_date_is_refused_naming_it(
    api: httpx.AsyncClient,
) -> None:
    """Year 1 at +14:00 has no date in UTC: the driver raised it as a 500 (a review found)."""
    for name, value in (
        ("submitted_after", "0001-01-01T00:00:00+14:00"),
        ("submitted_before", "9999-12-31T23:59:59-14:00"),
    ):
        r = await api.get("/api/v1/workflows", params={name: value})
        assert r.status_code == 400 and name in r.json()["detail"], r.text
        page = await api.get("/workflows", params={name: value})
        assert page.status_code == 400, page.status_code
    # Several statuses, comma-separated, as `gantry workflow list --status A --status B` sends.
    every = ",".join(["FAILED_EXEC_TIMEOUT", "FAILED_QUEUE_TIMEOUT", "FAILED_START_TIMEOUT"] * 4)
    assert (await api.get("/api/v1/workflows", params={"status": every})).status_code == 200


async def test_crafted_cursors_and_times_past_the_calendar_are_400_not_500(
    api: httpx.AsyncClient,
) -> None:
    """Found by a hostile review: a cursor is the client's to send back, and msgspec raises
    a plain ValueError for a number of seconds past the year 9999; each was a 500."""
    import base64
    import json

    def cursor(*parts: str) -> str:
        return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")

    crafted = [
        ("submitted", cursor("submitted", "0001-01-01T00:00:00+14:00", "x", "2026-01-01T00:00:00+00:00")),
        ("submitted", cursor("submitted", "9999-12-31T23:59:59-14:00", "x", "2026-01-01T00:00:00+00:00")),
        ("duration", cursor("duration", "1", "x", "0001-01-01T00:00:00+00:00")),
        ("duration", cursor("duration", "1e308", "x", "2026-01-01T00:00:00+00:00")),
        ("submitted", cursor("submitted", "2026-01-01T00:00:00", "x", "2026-01-01T00:00:00+00:00")),
    ]  # fmt: skip
    for sort, value in crafted:
        r = await api.get("/api/v1/workflows", params={"sort": sort, "cursor": value})
        assert r.status_code == 422 and "cursor" in r.text, (value, r.status_code, r.text)
        page = await api.get("/workflows", params={"sort": sort, "cursor": value})
        assert page.status_code == 422, (value, page.status_code)
    for params in ({"submitted_after": "253402300800"}, {"submitted_before": "299999999999"}):
        r = await api.get("/api/v1/workflows", params=params)
        assert r.status_code == 400 and "out of range" in r.text, (params, r.status_code, r.text)
    for expires in (253402300800, "253402300800"):
        r = await api.post("/api/v1/tokens", json={"name": "x", "expires_at": expires})
        assert r.status_code == 400, (expires, r.status_code, r.text)
    long_name = await api.get("/api/v1/audit", params={"principal": "x" * 201})
    assert long_name.status_code == 400 and "principal" in long_name.json()["detail"]


async def test_the_token_form_refuses_digits_that_are_not_ascii(server: InProcessServer) -> None:
    """ "²".isdigit() is True and int("²") raises: the form answered 500."""
    async with server.client(ADMIN_TOKEN) as api:
        r = await api.post("/tokens", data={"name": "t", "days": "²"})
        assert r.status_code == 422, r.status_code
        listed = await api.get("/api/v1/tokens", params={"cursor": "²"})
        assert listed.status_code == 200, listed.status_code


async def test_the_live_list_takes_a_time_without_a_zone(api: httpx.AsyncClient) -> None:
    """A `since` without a zone was compared with aware times and ended the stream."""
    async with api.stream("GET", "/workflows/live", params={"since": "2026-01-01T00:00:00"}) as r:
        assert r.status_code == 200
        await submit(api, HELLO)
        async with asyncio.timeout(10):
            async for line in r.aiter_lines():
                if line.startswith("event: rows"):
                    break


async def test_the_history_pages_through_a_workflow_s_events_newest_first(
    api: httpx.AsyncClient,
) -> None:
    wid = await submit(api, HELLO)
    await api.post(f"/api/v1/workflows/{wid}/cancel", json={"reason": "enough"})
    first = (await api.get(f"/api/v1/workflows/{wid}/history", params={"limit": 1})).json()
    (newest,) = first["items"]
    assert newest["status"] == "FAILED_CANCELED" and "enough" in newest["reason"], newest
    assert newest["source"] == "cancel" and first["next_cursor"] == str(newest["id"])
    rest = await api.get(
        f"/api/v1/workflows/{wid}/history", params={"cursor": first["next_cursor"]}
    )
    assert rest.status_code == 200 and all(e["id"] < newest["id"] for e in rest.json()["items"])
    for bad in ("²", "0", "x" * 21, "-1"):
        r = await api.get(f"/api/v1/workflows/{wid}/history", params={"cursor": bad})
        assert r.status_code in (400, 422) and "cursor" in r.text, (bad, r.status_code)
    assert (await api.get("/api/v1/workflows/nope-1/history")).status_code == 404
