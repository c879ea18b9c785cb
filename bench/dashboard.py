"""Dashboard benchmarks: many live viewers, big pages, and a log line's trip to the browser."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from typing import Any

from tests.support import ADMIN_PASSWORD, ADMIN_TOKEN, Stack, wait_for


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _raise_open_files(needed: int) -> None:
    """Allow this process (and the servers it starts) ``needed`` open files."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def _spec(name: str, tasks: int) -> str:
    lines = [f"workflow:\n  name: {name}\n  tasks:\n"]
    lines += [f"  - {{name: t{i}, image: x, command: [echo, '{i}']}}\n" for i in range(tasks)]
    return "".join(lines)


async def _raw_viewer(
    host: str,
    port: int,
    path: str,
    token: str,
    expected: dict[bytes, float],
    rounds: int,
    latencies: list[float],
    on_open: Any,
) -> None:
    """A minimal SSE reader on a plain socket: finds each marker in the raw bytes.

    Browsers parse in processes of their own; a Python HTTP client parsing 2,000 streams in
    the benchmark's one process would measure itself, not the server.
    """
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    seen: set[bytes] = set()
    tail = b""
    opened = False
    try:
        while len(seen) < rounds:
            data = await reader.read(65536)
            if not data:
                return
            now = time.monotonic()
            if not opened and b"data:" in data:
                opened = True
                on_open()
            window = tail + data
            for marker, sent in list(expected.items()):
                if marker not in seen and marker in window:
                    seen.add(marker)
                    latencies.append(now - sent)
            tail = data[-200:]
    finally:
        writer.close()


async def many_viewers(bench: Any, viewers: int = 2000, rounds: int = 5) -> None:
    """``viewers`` SSE streams of one workflow's page; a report's way to every one of them."""
    stack: Stack = await bench.stack("viewers")
    (fake,) = await bench.runners(stack, 1)
    latencies: list[float] = []
    try:
        async with stack.client() as client:
            wid = (
                await client.post("/api/v1/workflows", json={"spec": _spec("watched", 10)})
            ).json()["id"]
            await fake.connect()
            while len(fake.launches) < 10:
                await asyncio.sleep(0.01)
            by_task = {a.task: aid for aid, a in fake.launches.items()}
            _raise_open_files(viewers * 2 + 500)
            port = stack.servers["a"][1]
            expected: dict[bytes, float] = {}
            opened = 0
            all_open = asyncio.Event()

            def on_open() -> None:
                nonlocal opened
                opened += 1
                if opened == viewers:
                    all_open.set()

            tasks = []
            for _ in range(viewers):
                tasks.append(
                    asyncio.create_task(
                        _raw_viewer(
                            "127.0.0.1", port, f"/workflows/{wid}/live", ADMIN_TOKEN, expected,
                            rounds, latencies, on_open,
                        )
                    )
                )  # fmt: skip
                await asyncio.sleep(0)  # let connections open gradually
            await asyncio.wait_for(all_open.wait(), 180)
            await asyncio.sleep(1)
            for i in range(rounds):
                marker = f'id="task-t{i}" data-status="RUNNING"'.encode()
                expected[marker] = time.monotonic()
                await fake.report([by_task[f"t{i}"]], "RUNNING")
                await asyncio.sleep(2)
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
        bench.results["viewers"] = viewers
        bench.results["viewers_update_p50_ms"] = 1000 * _pct(latencies, 50)
        bench.results["viewers_update_p99_ms"] = 1000 * _pct(latencies, 99)
        bench.results["viewers_update_samples"] = len(latencies)
    finally:
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


async def big_log(bench: Any, megabytes: int = 200) -> None:
    """Opening a 200 MB log: the tail, and a line in the middle (a deep link)."""
    stack: Stack = await bench.stack("big-log")
    try:
        async with stack.client() as client:
            spec = "workflow:\n  name: chatty\n  tasks:\n  - {name: t, image: x, command: [echo]}\n"
            wid = (await client.post("/api/v1/workflows", json={"spec": spec})).json()["id"]
            import asyncpg

            conn = await asyncpg.connect(stack.database_url)
            try:
                task = await conn.fetchval("SELECT id FROM task WHERE workflow = $1", wid)
                per_chunk = 2621  # lines of 100 bytes: 262,100 bytes a chunk
                chunks = megabytes * 1024 * 1024 // (per_chunk * 100)
                await conn.execute(
                    """
                    INSERT INTO log_chunk (task, stream, start, data, newlines, received_at)
                    SELECT $1, 1, (i - 1) * $2 * 100,
                           convert_to(repeat(rpad('a line of a big log ', 99, '.') || E'\\n', $2), 'UTF8'),
                           $2, now()
                    FROM generate_series(1, $3) AS i
                    """,
                    task,
                    per_chunk,
                    chunks,
                )
                total = await conn.fetchval(
                    "SELECT sum(length(data)) FROM log_chunk WHERE task = $1", task
                )
            finally:
                await conn.close()
            for key, path in (
                ("big_log_tail", f"/workflows/{wid}/tasks/t/logs"),
                (
                    "big_log_middle_line",
                    f"/workflows/{wid}/tasks/t/logs?line={chunks * per_chunk // 2}",
                ),
            ):
                timings = []
                for _ in range(12):
                    t0 = time.perf_counter()
                    r = await client.get(path)
                    timings.append(time.perf_counter() - t0)
                    assert r.status_code == 200 and 'class="ln out"' in r.text
                bench.results[f"{key}_p50_ms"] = 1000 * _pct(timings[2:], 50)
                bench.results[f"{key}_p99_ms"] = 1000 * _pct(timings[2:], 99)
            bench.results["big_log_mib"] = round(total / 2**20)
    finally:
        await stack.stop()


async def large_workflow_page(bench: Any, tasks: int = 10_000) -> None:
    """The page of a 10,000-task workflow (independent tasks, a chain, fan-out/fan-in):
    server time and bytes (bench/large_page.py has the details)."""
    from bench.large_page import measure

    stack: Stack = await bench.stack("large-page")
    try:
        for shape in ("independent", "chain", "fan"):
            figures = await measure(stack, shape, tasks, rounds=8)
            bench.results[f"large_page_{shape}_p50_ms"] = figures["page_p50_ms"]
            bench.results[f"large_page_{shape}_kib"] = round(figures["page_bytes"] / 1024)
    finally:
        await stack.stop()
