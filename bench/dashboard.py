"""Dashboard benchmarks: many live viewers, big pages, and a log line's trip to the browser."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from typing import Any

import httpx

from tests.support import ADMIN_PASSWORD, ADMIN_TOKEN, Stack, wait_for


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _spec(name: str, tasks: int) -> str:
    lines = [f"workflow:\n  name: {name}\n  tasks:\n"]
    lines += [f"  - {{name: t{i}, image: x, command: [echo, '{i}']}}\n" for i in range(tasks)]
    return "".join(lines)


async def many_viewers(bench: Any, viewers: int = 2000, rounds: int = 5) -> None:
    """``viewers`` SSE streams of one workflow's page; a report's way to every one of them."""
    stack: Stack = await bench.stack("viewers")
    (fake,) = await bench.runners(stack, 1)
    latencies: list[float] = []
    clients: list[httpx.AsyncClient] = []
    try:
        async with stack.client() as client:
            wid = (
                await client.post("/api/v1/workflows", json={"spec": _spec("watched", 10)})
            ).json()["id"]
            await fake.connect()
            while len(fake.launches) < 10:
                await asyncio.sleep(0.01)
            by_task = {a.task: aid for aid, a in fake.launches.items()}
            per_connection = 100  # hypercorn's default limit of concurrent HTTP/2 streams
            for _ in range((viewers + per_connection - 1) // per_connection):
                clients.append(
                    httpx.AsyncClient(
                        base_url=stack.base,
                        http1=False,
                        http2=True,
                        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                        timeout=httpx.Timeout(60, read=None),
                    )
                )
            connected = 0
            all_connected = asyncio.Event()
            expected: dict[str, float] = {}  # marker text -> when its report was sent

            async def viewer(c: httpx.AsyncClient) -> None:
                nonlocal connected
                seen: set[str] = set()
                async with c.stream("GET", f"/workflows/{wid}/live") as r:
                    first = True
                    async for line in r.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        if first:
                            first = False
                            connected += 1
                            if connected == viewers:
                                all_connected.set()
                        now = time.monotonic()
                        for marker, sent in list(expected.items()):
                            if marker not in seen and marker in line:
                                seen.add(marker)
                                latencies.append(now - sent)
                        if len(seen) == rounds:
                            return

            tasks = [
                asyncio.create_task(viewer(clients[i // per_connection])) for i in range(viewers)
            ]
            await asyncio.wait_for(all_connected.wait(), 120)
            await asyncio.sleep(1)
            for i in range(rounds):
                marker = f'id="task-t{i}" data-status="RUNNING"'
                expected[marker] = time.monotonic()
                await fake.report([by_task[f"t{i}"]], "RUNNING")
                await asyncio.sleep(2)
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
        bench.results["viewers"] = viewers
        bench.results["viewers_update_p50_ms"] = 1000 * _pct(latencies, 50)
        bench.results["viewers_update_p99_ms"] = 1000 * _pct(latencies, 99)
        bench.results["viewers_update_samples"] = len(latencies)
    finally:
        for c in clients:
            await c.aclose()
        await fake.close()
        await stack.stop()


async def big_pages(bench: Any, tasks: int = 2000, workflows: int = 100_000) -> None:
    """Server time of the detail page of a 2,000-task workflow and of the list of 100,000."""
    stack: Stack = await bench.stack("pages")
    try:
        async with stack.client() as client:
            r = await client.post("/api/v1/workflows", json={"spec": _spec("huge", tasks)})
            wid = r.json()["id"]
            timings = []
            for _ in range(25):
                t0 = time.perf_counter()
                page = await client.get(f"/workflows/{wid}")
                timings.append(time.perf_counter() - t0)
                assert page.status_code == 200
            bench.results["detail_2000_tasks_p50_ms"] = 1000 * _pct(timings[5:], 50)
            bench.results["detail_2000_tasks_p99_ms"] = 1000 * _pct(timings[5:], 99)

            import asyncpg

            conn = await asyncpg.connect(stack.database_url)
            try:
                await conn.execute(
                    """
                    INSERT INTO workflow (id, name, owner, pool, priority, priority_rank, status,
                        spec_text, rendered_spec, set_values, labels, submitted_at, started_at, ended_at)
                    SELECT 'bulk-' || i, 'bulk', 'admin', 'default', 'NORMAL', 1,
                           CASE WHEN i % 10 = 0 THEN 'FAILED' ELSE 'COMPLETED' END, 'x', 'x', '{}', '{}',
                           now() - make_interval(secs => i * 60), now() - make_interval(secs => i * 60 - 5),
                           now() - make_interval(secs => i * 60 - 65)
                    FROM generate_series(1, $1) AS i
                    """,
                    workflows,
                )
                await conn.execute(
                    """
                    INSERT INTO task_group (workflow, name, position, status, upstream, lead_task,
                        ignore_nonlead, barrier, exec_timeout, queue_timeout)
                    SELECT id, 't', 0, status, '{}', 't', true, true, 3600, 3600
                    FROM workflow WHERE name = 'bulk'
                    """
                )
                await conn.execute(
                    """
                    INSERT INTO task (task_group, workflow, name, lead, retry, status, spec, cpu, memory,
                        gpu, storage)
                    SELECT g.id, g.workflow, 't', true, 0, g.status, '{}', 0, 0, 0, 0
                    FROM task_group g WHERE g.workflow LIKE 'bulk-%'
                    """
                )
                await conn.execute("ANALYZE")
            finally:
                await conn.close()
            for path, key in (
                ("/workflows", "list_page_100k"),
                ("/api/v1/workflows", "list_api_100k"),
            ):
                timings = []
                for _ in range(35):
                    t0 = time.perf_counter()
                    r = await client.get(path)
                    timings.append(time.perf_counter() - t0)
                    assert r.status_code == 200
                bench.results[f"{key}_p50_ms"] = 1000 * _pct(timings[5:], 50)
                bench.results[f"{key}_p99_ms"] = 1000 * _pct(timings[5:], 99)
    finally:
        await stack.stop()


async def log_line_to_browser(bench: Any, lines: int = 80) -> None:
    """A task prints its clock; Chromium notes when each line appears on the log page."""
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(executable):
        bench.results["log_line_to_browser_p99_ms"] = "skipped: no Chromium"
        return
    from playwright.async_api import async_playwright

    from e2e.conftest import FLAGS

    stack: Stack = await bench.stack("log-latency", runner=True)
    try:
        spec = (
            "workflow:\n  name: clock\n  tasks:\n  - name: ticker\n    image: x\n"
            f"    command: [sh, -c, 'sleep 3; for i in $(seq 1 {lines}); do date +%s%3N; sleep 0.1; done']\n"
        )
        async with stack.client() as client, async_playwright() as pw:
            wid = (await client.post("/api/v1/workflows", json={"spec": spec})).json()["id"]
            browser = await pw.chromium.launch(executable_path=executable, args=FLAGS)
            page = await browser.new_page()
            await page.goto(f"{stack.base}/login")
            await page.fill("input[name=username]", "admin")
            await page.fill("input[name=password]", ADMIN_PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(re.compile(r".*/workflows$"))
            await page.goto(f"{stack.base}/workflows/{wid}/tasks/ticker/logs")
            await page.evaluate(
                """() => {
                    window.__lat = [];
                    new MutationObserver(ms => { for (const m of ms) for (const n of m.addedNodes) {
                        if (n.classList && n.classList.contains('ln')) {
                            const t = parseInt(n.querySelector('.tx').textContent, 10);
                            if (t) window.__lat.push(Date.now() - t);
                        } } }).observe(document.getElementById('log'), {childList: true});
                }"""
            )
            await wait_for(client, wid, timeout=60)
            await asyncio.sleep(1)
            latencies = await page.evaluate("window.__lat")
            await browser.close()
        bench.results["log_line_to_browser_p50_ms"] = float(_pct(latencies, 50))
        bench.results["log_line_to_browser_p99_ms"] = float(_pct(latencies, 99))
        bench.results["log_line_samples"] = len(latencies)
    finally:
        await stack.stop()
