"""Issue 7, finding 1: one user's large workflow must not take the control plane offline.

- cancel, fail-downstream and settle run a bounded number of SQL statements, whatever the
  number of groups (counted with asyncpg's query logger on the connections they use);
- a second cancel of a workflow whose cancel is under way answers at once;
- a statement past ``GANTRY_STATEMENT_TIMEOUT`` becomes a 503 problem, not a 500 or a hang;
- with every connection of the request pool held, a runner still opens a session, the
  scheduler still dispatches to it and its heartbeat is still answered (the reserve pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from app.db import Database
from runner import protocol as p
from tests.support import (
    ADMIN_TOKEN,
    RUNNER_TOKEN,
    InProcessServer,
    make_settings,
    submit,
    wait_for,
)


def independent(name: str, n: int) -> str:
    """A workflow of ``n`` single-task groups with no dependencies."""
    tasks = "\n".join(f"  - {{name: t{i}, image: x, command: [sleep, '1000']}}" for i in range(n))
    return f"workflow:\n  name: {name}\n  tasks:\n{tasks}\n"


def fan_out(name: str, n: int) -> str:
    """A root group and ``n`` groups that each wait on it."""
    children = "\n".join(
        f"  - {{name: c{i}, image: x, command: [echo, hi], inputs: [{{task: root}}]}}"
        for i in range(n)
    )
    return (
        f"workflow:\n  name: {name}\n  tasks:\n"
        f"  - {{name: root, image: x, command: [sh, -c, 'exit 3']}}\n{children}\n"
    )


_counted: contextvars.ContextVar[bool] = contextvars.ContextVar("counted", default=False)


class StatementCounter:
    """Counts the statements one service method runs on the connections ``db`` hands it.

    Only connections taken while that method runs (in its task) are counted: not the
    token lookup before it, not a runner's stream or a background loop meanwhile.
    """

    def __init__(self, db: Database, service: object, method: str) -> None:
        self.db = db
        self.service = service
        self.method = method
        self.queries: list[str] = []

    def _log(self, record: Any) -> None:
        # asyncpg introspects a type once per connection (which connection a request gets
        # varies): the driver's queries, not the transition's statements.
        if "typeinfo_tree" not in record.query and "set_config('jit'" not in record.query:
            self.queries.append(" ".join(record.query.split()))

    def _wrap(self, opener: Any) -> Any:
        @contextlib.asynccontextmanager
        async def counted() -> AsyncIterator[Any]:
            async with opener() as conn:
                if not _counted.get():
                    yield conn
                    return
                conn.add_query_logger(self._log)
                try:
                    yield conn
                finally:
                    conn.remove_query_logger(self._log)

        return counted

    @contextlib.contextmanager
    def counting(self) -> Any:
        self.queries.clear()
        original = getattr(self.service, self.method)

        async def method(*args: Any, **kwargs: Any) -> Any:
            token = _counted.set(True)
            try:
                return await original(*args, **kwargs)
            finally:
                _counted.reset(token)

        opened = (self.db.transaction, self.db.connection)
        setattr(self.service, self.method, method)
        self.db.transaction = self._wrap(opened[0])  # type: ignore[method-assign]
        self.db.connection = self._wrap(opened[1])  # type: ignore[method-assign]
        try:
            yield self
        finally:
            delattr(self.service, self.method)  # the class's method again
            self.db.transaction, self.db.connection = opened  # type: ignore[method-assign]


class Runner:
    """The runner protocol played by hand, so a test decides every message."""

    def __init__(self, server: InProcessServer, slots: int = 500) -> None:
        self.http = httpx.AsyncClient(
            base_url=server.base + "/api/runner/v1",
            http1=False,
            http2=True,
            headers={"authorization": f"Bearer {RUNNER_TOKEN}"},
            timeout=20,
        )
        self.capacity = p.Capacity(
            nodes=[p.Node("n", cpu=10_000, memory=2**50, gpu=0)], slots=slots
        )
        self.welcome: p.Welcome | None = None

    async def post(self, path: str, body: Any, reply: type[Any]) -> Any:
        r = await self.http.post(path, content=msgspec.json.encode(body))
        assert r.status_code in (200, 201), r.text
        return msgspec.json.decode(r.content, type=reply)

    async def hello(self) -> p.Welcome:
        self.welcome = await self.post(
            "/sessions", p.Hello("local", 1, "fake", capacity=self.capacity), p.Welcome
        )
        return self.welcome

    @property
    def sid(self) -> str:
        assert self.welcome is not None
        return self.welcome.session_id

    async def launches(self, count: int, timeout: float = 30) -> list[p.Launch]:
        got: list[p.Launch] = []
        async with self.http.stream("GET", f"/sessions/{self.sid}/stream") as r:
            async with asyncio.timeout(timeout):
                async for line in r.aiter_lines():
                    msg = p.decode_stream_line(line.encode())
                    if isinstance(msg, p.Launch):
                        got.append(msg)
                        if len(got) >= count:
                            break
        return got

    async def report(self, reports: list[tuple[int, str, int | None]]) -> p.EventReply:
        assert self.welcome is not None
        events = [
            p.StateReport(a, self.welcome.epoch, s, datetime.now(UTC), exit_code=code)
            for a, s, code in reports
        ]
        return await self.post(f"/sessions/{self.sid}/events", p.EventBatch(events), p.EventReply)

    async def heartbeat(self) -> p.HeartbeatReply:
        return await self.post(
            f"/sessions/{self.sid}/heartbeat", p.Heartbeat(self.capacity), p.HeartbeatReply
        )

    async def close(self) -> None:
        await self.http.aclose()


@contextlib.asynccontextmanager
async def serving(database_url: str, tmp_path: Path, **settings: Any) -> AsyncIterator[Any]:
    srv = InProcessServer(make_settings(database_url, tmp_path, **settings))
    await srv.start()
    try:
        async with srv.client(ADMIN_TOKEN) as api:
            yield srv, api
    finally:
        await srv.stop()


async def test_cancel_runs_the_same_statements_for_10_and_200_groups(
    server: InProcessServer, api: httpx.AsyncClient
) -> None:
    state = server.app.state
    counter = StatementCounter(state.db, state.workflows, "cancel")
    counts = {}
    for n in (10, 200):
        wid = await submit(api, independent(f"wide{n}", n))
        with counter.counting():
            r = await api.post(f"/api/v1/workflows/{wid}/cancel", json={"reason": "stop"})
        assert r.status_code == 200 and r.json()["status"] == "FAILED_CANCELED", r.text
        counts[n] = len(counter.queries)
        wf = (await api.get(f"/api/v1/workflows/{wid}")).json()
        assert {g["status"] for g in wf["groups"]} == {"FAILED_CANCELED"}
        assert {t["status"] for g in wf["groups"] for t in g["tasks"]} == {"FAILED_CANCELED"}
        events = await server.app.state.db.pool.fetchval(
            "SELECT count(*) FROM task_event WHERE workflow = $1 AND status = 'FAILED_CANCELED'",
            wid,
        )
        assert events == n  # one event per attempt, however they were written
    assert 5 < counts[10] == counts[200], counts


async def test_fail_downstream_and_settle_run_the_same_statements_for_10_and_200_groups(
    server: InProcessServer, api: httpx.AsyncClient
) -> None:
    state = server.app.state
    counter = StatementCounter(state.reserve, state.runners, "events")
    runner = Runner(server)
    await runner.hello()
    failing, settling = {}, {}
    try:
        for n in (10, 200):
            # A failing root fails its n downstream groups (FAILED_UPSTREAM) and settles them.
            wid = await submit(api, fan_out(f"fan{n}", n))
            (launch,) = await runner.launches(1)
            await runner.report([(launch.attempt.id, "RUNNING", None)])
            with counter.counting():
                reply = await runner.report([(launch.attempt.id, "FAILED", 3)])
            assert reply.results[0].outcome == "applied"
            failing[n] = len(counter.queries)
            wf = (await api.get(f"/api/v1/workflows/{wid}")).json()
            assert wf["status"] == "FAILED" and "root" in wf["reason"], wf["reason"]
            downstream = [g for g in wf["groups"] if g["name"] != "root"]
            assert len(downstream) == n
            assert {g["status"] for g in downstream} == {"FAILED_UPSTREAM"}
            assert {t["exit_code"] for g in downstream for t in g["tasks"]} == {3000}

            # n independent groups: the last one to complete settles the workflow.
            wid = await submit(api, independent(f"flat{n}", n))
            launches = await runner.launches(n)
            ids = [launch.attempt.id for launch in launches]
            await runner.report([(a, "RUNNING", None) for a in ids])
            await runner.report([(a, "COMPLETED", 0) for a in ids[:-1]])
            with counter.counting():
                await runner.report([(ids[-1], "COMPLETED", 0)])
            settling[n] = len(counter.queries)
            assert (await api.get(f"/api/v1/workflows/{wid}")).json()["status"] == "COMPLETED"
    finally:
        await runner.close()
    assert 5 < failing[10] == failing[200], failing
    assert 5 < settling[10] == settling[200], settling


async def _wait_until_blocked_by(conn: asyncpg.Connection) -> None:
    """Until some other session waits on a lock that ``conn``'s transaction holds."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no request waited on the locks this test holds")


async def test_second_cancel_answers_while_the_first_holds_its_transaction(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(database_url, tmp_path, statement_timeout=120.0) as (_srv, api):
        wid = await submit(api, independent("twice", 20))
        holder = await asyncpg.connect(database_url)
        try:
            # The first cancel locks the workflow and its groups, then waits on these rows.
            tx = holder.transaction()
            await tx.start()
            await holder.execute("SELECT 1 FROM task WHERE workflow = $1 FOR UPDATE", wid)
            first = asyncio.create_task(api.post(f"/api/v1/workflows/{wid}/cancel", json={}))
            await _wait_until_blocked_by(holder)
            second = await asyncio.wait_for(
                api.post(f"/api/v1/workflows/{wid}/cancel", json={}), 20
            )
            assert not first.done(), "the first cancel is still in its transaction"
            assert second.status_code in (200, 202), second.text
            assert second.json()["status"] == "PENDING"  # as it stands: the first is not done
            await tx.commit()
            r = await asyncio.wait_for(first, 60)
            assert r.status_code == 200 and r.json()["status"] == "FAILED_CANCELED", r.text
        finally:
            await holder.close()


async def test_a_statement_past_the_timeout_is_a_503_problem(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(database_url, tmp_path, statement_timeout=2.0) as (_srv, api):
        wid = await submit(api, independent("stuck", 2))
        holder = await asyncpg.connect(database_url)
        try:
            async with holder.transaction():
                await holder.execute("SELECT 1 FROM workflow WHERE id = $1 FOR UPDATE", wid)
                r = await api.post(f"/api/v1/workflows/{wid}/cancel", json={})
                html = await api.post(f"/workflows/{wid}/cancel", data={"reason": "x"})
        finally:
            await holder.close()
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.headers["retry-after"]
        assert "too long" in r.json()["detail"]
        assert html.status_code == 503 and "too long" in html.text
        # Nothing was half done: the rolled-back cancel left the workflow as it was.
        after = (await api.get(f"/api/v1/workflows/{wid}")).json()
        assert after["status"] == "PENDING"


async def test_runners_and_the_scheduler_work_with_the_request_pool_exhausted(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(database_url, tmp_path, db_pool_size=3) as (srv, api):
        wid = await submit(api, independent("starved", 1))
        pool: asyncpg.Pool = srv.app.state.db.pool
        held = [await pool.acquire() for _ in range(3)]  # every request connection is taken
        try:
            with pytest.raises(TimeoutError):
                await pool.acquire(timeout=0.2)  # the request pool really is empty
            # A runner whose token this replica has never looked up connects, gets the
            # workflow dispatched by the scheduler and is answered on its heartbeat.
            runner = Runner(srv)
            try:
                await asyncio.wait_for(runner.hello(), 30)
                (launch,) = await runner.launches(1)
                assert launch.attempt.workflow_id == wid
                await runner.heartbeat()
            finally:
                await runner.close()
        finally:
            for conn in held:
                await pool.release(conn)


async def test_queue_timeout_ends_a_workflows_groups_together(
    server: InProcessServer, api: httpx.AsyncClient
) -> None:
    # No runner is connected: the 30 ready groups wait past their queue timeout; the sweeper
    # ends them in one step and fails the 30 groups after them as FAILED_UPSTREAM.
    tasks = "".join(
        f"  - {{name: t{i}, image: x, command: [echo]}}\n"
        f"  - {{name: c{i}, image: x, command: [echo], inputs: [{{task: t{i}}}]}}\n"
        for i in range(30)
    )
    spec = f"workflow:\n  name: late\n  timeout:\n    queue_timeout: 1s\n  tasks:\n{tasks}"
    wid = await submit(api, spec)
    wf = await wait_for(api, wid, timeout=60)
    assert wf["status"] == "FAILED_QUEUE_TIMEOUT", wf["status"]
    by_status: dict[str, set[str]] = {}
    for g in wf["groups"]:
        by_status.setdefault(g["status"], set()).add(g["name"][0])
    assert by_status == {"FAILED_QUEUE_TIMEOUT": {"t"}, "FAILED_UPSTREAM": {"c"}}, by_status
    assert "queue_timeout (1s)" in wf["reason"]
