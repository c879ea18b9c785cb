"""Runner protocol v1 played by hand over HTTP/2: guards against duplicate, late and stale reports,
idempotent logs, inventory on reconnect, capacity and priority in dispatch."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec

from runner import protocol as p
from tests.support import RUNNER_TOKEN, InProcessServer, submit, task_of, wait_for

ONE = "workflow:\n  name: one\n  tasks:\n  - {name: t, image: x, command: [echo, hi]}\n"


class FakeRunner:
    """Speaks the protocol directly, so a test decides every message."""

    def __init__(self, server: InProcessServer, capacity: p.Capacity | None = None) -> None:
        self.http = httpx.AsyncClient(
            base_url=server.base + "/api/runner/v1",
            http1=False,
            http2=True,
            headers={"authorization": f"Bearer {RUNNER_TOKEN}"},
            timeout=20,
        )
        self.capacity = capacity or p.Capacity(
            nodes=[p.Node("n", cpu=4, memory=8 * 2**30)], slots=8
        )
        self.welcome: p.Welcome | None = None

    async def post(self, path: str, body: Any, reply: type[Any]) -> Any:
        r = await self.http.post(path, content=msgspec.json.encode(body))
        assert r.status_code in (200, 201), r.text
        return msgspec.json.decode(r.content, type=reply)

    async def hello(self, inventory: list[p.InventoryItem] | None = None) -> p.Welcome:
        self.welcome = await self.post(
            "/sessions",
            p.Hello("local", 1, "fake", capacity=self.capacity, inventory=inventory or []),
            p.Welcome,
        )
        return self.welcome

    @property
    def sid(self) -> str:
        assert self.welcome is not None
        return self.welcome.session_id

    async def launches(self, count: int, timeout: float = 10) -> list[p.Launch]:
        got: list[p.Launch] = []
        async with self.http.stream("GET", f"/sessions/{self.sid}/stream") as r:
            assert r.http_version == "HTTP/2"
            async with asyncio.timeout(timeout):
                async for line in r.aiter_lines():
                    msg = p.decode_stream_line(line.encode())
                    if isinstance(msg, p.Launch):
                        got.append(msg)
                        if len(got) >= count:
                            break
        return got

    async def report(
        self, attempt: int, status: str, epoch: int | None = None, **kw: Any
    ) -> p.EventReply:
        assert self.welcome is not None
        event = p.StateReport(
            attempt, self.welcome.epoch if epoch is None else epoch, status, datetime.now(UTC), **kw
        )
        return await self.post(f"/sessions/{self.sid}/events", p.EventBatch([event]), p.EventReply)

    async def close(self) -> None:
        await self.http.aclose()


async def test_duplicate_and_late_reports_change_nothing(
    server: InProcessServer, api: httpx.AsyncClient
) -> None:
    runner = FakeRunner(server)
    await runner.hello()
    wid = await submit(api, ONE)
    (launch,) = await runner.launches(1)
    aid = launch.attempt.id
    assert launch.attempt.command == ["echo", "hi"] and launch.epoch == runner.welcome.epoch  # type: ignore[union-attr]
    assert (await runner.report(aid, "RUNNING")).results[0].outcome == "applied"
    assert (await runner.report(aid, "RUNNING")).results[0].outcome == "duplicate"
    assert (await runner.report(aid, "COMPLETED", exit_code=0)).results[0].outcome == "applied"
    assert (await runner.report(aid, "COMPLETED", exit_code=0)).results[0].outcome == "duplicate"
    assert (await runner.report(aid, "FAILED", exit_code=1)).results[0].outcome == "duplicate"
    assert (await runner.report(aid, "RUNNING")).results[0].outcome == "duplicate"
    wf = (await api.get(f"/api/v1/workflows/{wid}")).json()
    assert wf["status"] == "COMPLETED" and task_of(wf, "t")["exit_code"] == 0
    events = await server.app.state.db.pool.fetch(
        "SELECT status FROM task_event WHERE task = $1 ORDER BY id", aid
    )
    assert [e["status"] for e in events] == ["PROCESSING", "SCHEDULING", "RUNNING", "COMPLETED"]
    # A status a runner may not report is refused for that report alone, in the answer.
    r = await runner.http.post(
        f"/sessions/{runner.sid}/events",
        content=msgspec.json.encode(
            p.EventBatch([p.StateReport(aid, 1, "FAILED_CANCELED", datetime.now(UTC))])
        ),
    )
    assert r.status_code == 200, r.text
    reply = msgspec.json.decode(r.content, type=p.EventReply)
    assert reply.results == [] and [x.path for x in reply.refused] == ["events[0]"]
    assert "FAILED_CANCELED" in reply.refused[0].reason
    await runner.close()


async def test_stale_epoch_is_fenced_and_inventory_is_kept_or_killed(
    server: InProcessServer, api: httpx.AsyncClient
) -> None:
    old = FakeRunner(server)
    await old.hello()
    await submit(api, ONE)
    wid2 = await submit(api, ONE)
    launches = await old.launches(2)
    first, _second = (launch.attempt.id for launch in launches)
    await old.report(first, "RUNNING")
    await old.post(
        f"/sessions/{old.sid}/events",
        p.EventBatch(acks=[launch.seq for launch in launches]),
        p.EventReply,
    )
    # A new session (a restarted runner) offers only the first attempt.
    new = FakeRunner(server)
    welcome = await new.hello(
        [
            p.InventoryItem(first, old.welcome.epoch, "RUNNING"),
            p.InventoryItem(999999, 1, "RUNNING"),
        ]
    )  # type: ignore[union-attr]
    assert welcome.epoch == old.welcome.epoch + 1  # type: ignore[union-attr]
    decisions = {d.attempt: d.action for d in welcome.decisions}
    assert decisions == {first: "keep", 999999: "kill"}
    # The old session is over, and its epoch no longer counts.
    r = await old.http.post(
        f"/sessions/{old.sid}/heartbeat", content=msgspec.json.encode(p.Heartbeat(old.capacity))
    )
    assert r.status_code == 409
    assert (await new.report(first, "COMPLETED", epoch=welcome.epoch - 1, exit_code=0)).results[
        0
    ].outcome == "stale"
    assert (await new.report(first, "COMPLETED", exit_code=0)).results[0].outcome == "applied"
    # The acknowledged attempt the new runner did not offer was lost with the old runner.
    wf2 = await wait_for(api, wid2, timeout=10)
    assert wf2["status"] == "FAILED_BACKEND_ERROR"
    assert "restarted without this attempt" in task_of(wf2, "t")["reason"]
    await old.close()
    await new.close()


async def test_logs_are_stored_once_by_offset_and_gaps_are_refused(
    server: InProcessServer, api: httpx.AsyncClient
) -> None:
    runner = FakeRunner(server)
    await runner.hello()
    wid = await submit(api, ONE)
    (launch,) = await runner.launches(1)
    aid, epoch = launch.attempt.id, launch.epoch

    async def send(stream: str, offset: int, data: bytes) -> dict[str, int]:
        reply = await runner.post(
            f"/sessions/{runner.sid}/logs",
            p.LogBatch([p.LogChunk(aid, epoch, stream, offset, data)]),
            p.LogReply,  # type: ignore[arg-type]
        )
        return {o.stream: o.offset for o in reply.offsets}

    assert await send("stdout", 0, b"hello ") == {"stdout": 6}
    assert await send("stdout", 0, b"hello ") == {"stdout": 6}  # duplicate
    assert await send("stdout", 3, b"lo world\n") == {"stdout": 12}  # overlap: only the new part
    assert await send("stdout", 20, b"gap") == {"stdout": 12}  # beyond a gap: resend from 12
    assert await send("stderr", 0, b"oops\n") == {"stderr": 5}
    text = (await api.get(f"/api/v1/workflows/{wid}/tasks/t/logs")).text
    assert text == "hello world\noops\n"
    stale = await runner.post(
        f"/sessions/{runner.sid}/logs",
        p.LogBatch([p.LogChunk(aid, epoch - 1, "stdout", 12, b"x")]),
        p.LogReply,
    )
    assert stale.refused == [aid]
    await runner.close()


async def test_dispatch_respects_capacity_and_priority(
    server: InProcessServer, api: httpx.AsyncClient
) -> None:
    runner = FakeRunner(server, p.Capacity(nodes=[p.Node("n", cpu=2, memory=4 * 2**30)], slots=8))
    big = ONE.replace("name: one", "name: big").replace(
        "command: [echo, hi]", "command: [echo, hi], resources: {cpu: 2}"
    )
    low = await submit(api, big, priority="LOW")
    high = await submit(api, big, priority="HIGH")
    normal = await submit(api, big)
    await runner.hello()  # the runner connects after all three wait in the queue
    (launch,) = await runner.launches(1)
    assert launch.attempt.workflow_id == high  # first by priority, and only one fits
    await asyncio.sleep(1.5)  # the scheduler runs twice more: nothing else may fit
    statuses = {
        w: task_of((await api.get(f"/api/v1/workflows/{w}")).json(), "t")["status"]
        for w in (low, normal)
    }
    assert statuses == {low: "PROCESSING", normal: "PROCESSING"}
    await runner.report(launch.attempt.id, "COMPLETED", exit_code=0)
    (launch,) = await runner.launches(1)
    assert launch.attempt.workflow_id == normal
    await runner.close()


async def test_nothing_is_dispatched_without_a_connected_runner(
    server: InProcessServer, api: httpx.AsyncClient
) -> None:
    wid = await submit(api, ONE)
    await asyncio.sleep(1.5)
    wf = (await api.get(f"/api/v1/workflows/{wid}")).json()
    assert task_of(wf, "t")["status"] == "PROCESSING" and wf["status"] == "PENDING"


async def test_a_report_time_no_clock_gives_is_refused_and_the_page_stays_up(
    server: InProcessServer, api: httpx.AsyncClient
) -> None:
    """Year 1 and year 9999 became -infinity and infinity in PostgreSQL and made the workflow's
    page a 500 for everyone (a hostile test); such a report is refused for that item."""
    runner = FakeRunner(server)
    try:
        await runner.hello()
        wid = await submit(api, ONE)
        (launch,) = await runner.launches(1)
        attempt, epoch = launch.attempt.id, launch.epoch
        batch = {"events": [
            {"attempt": attempt, "epoch": epoch, "status": "RUNNING", "time": "0001-01-01T00:00:00Z"},
            {"attempt": attempt, "epoch": epoch, "status": "COMPLETED", "exit_code": 0,
             "time": "9999-12-31T23:59:59.999999Z"},
            {"attempt": attempt, "epoch": epoch, "status": "COMPLETED", "exit_code": 0,
             "time": "2026-12-01T12:00:00"},
        ]}  # fmt: skip
        r = await runner.http.post(f"/sessions/{runner.sid}/events", json=batch)
        assert r.status_code == 200, r.text
        reply = msgspec.json.decode(r.content, type=p.EventReply)
        assert [x.path for x in reply.refused] == ["events[0]", "events[1]", "events[2]"]
        assert "not within 30 days" in reply.refused[0].reason
        assert "UTC offset" in reply.refused[2].reason
        assert not reply.results
        done = await runner.report(attempt, "COMPLETED", epoch=epoch, exit_code=0)
        assert [x.outcome for x in done.results] == ["applied"]
        wf = await wait_for(api, wid, timeout=20)
        assert wf["status"] == "COMPLETED"
        page = await api.get(f"/workflows/{wid}", headers={"accept": "text/html"})
        assert page.status_code == 200
    finally:
        await runner.close()


PAIR = """\
workflow:
  name: pair
  groups:
  - name: g
    tasks:
    - {name: a, image: x, command: [sleep, '60'], lead: true}
    - {name: b, image: x, command: [echo, done]}
"""


async def test_a_task_that_ends_before_its_group_reaches_the_live_views_at_once(
    server: InProcessServer, api: httpx.AsyncClient
) -> None:
    """Found by a new user: the event stream said nothing of a task's end until its whole
    group ended, and the page showed it running meanwhile."""
    runner = FakeRunner(server)
    try:
        await runner.hello()
        wid = await submit(api, PAIR)
        launches = {launch.attempt.task: launch for launch in await runner.launches(2)}
        for launch in launches.values():
            await runner.report(launch.attempt.id, "RUNNING", launch.epoch)
        async with api.stream("GET", f"/api/v1/workflows/{wid}/events") as r:
            lines = r.aiter_lines()
            async with asyncio.timeout(10):
                async for line in lines:
                    if line.startswith("event: snapshot"):
                        break
            b = launches["b"]
            await runner.report(b.attempt.id, "COMPLETED", b.epoch, exit_code=0)
            seen = []
            async with asyncio.timeout(5):
                async for line in lines:
                    if line.startswith("data:") and '"COMPLETED"' in line:
                        seen.append(line)
                        if '"name":"b"' in line.replace(" ", ""):
                            break
            assert any('"name":"b"' in s.replace(" ", "") for s in seen), seen
        wf = (await api.get(f"/api/v1/workflows/{wid}")).json()
        assert task_of(wf, "a")["status"] == "RUNNING" and task_of(wf, "b")["status"] == "COMPLETED"
    finally:
        await runner.close()
