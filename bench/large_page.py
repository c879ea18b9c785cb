"""The page of a 10,000-task workflow in three shapes: server time and size of what it sends.

``python -m bench.large_page`` (GANTRY_BENCH_DATABASE_URL or GANTRY_TEST_DATABASE_URL names a
PostgreSQL server). For each shape (independent tasks, a chain, a fan-out/fan-in) it submits
the workflow through the API as a Jinja loop, then times ``GET /workflows/{id}`` (the first
page of the task table, the collapsed graph, the latest events), a later page of the task
table, a page with a layer expanded, and the first message of the page's live stream. No
runner is connected, so the tasks stay queued and the snapshot is the one a viewer sees while
a large workflow waits. Prints a table and writes bench/results/large-page-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support import ADMIN_TOKEN, ROOT, Stack

RESULTS = ROOT / "bench" / "results"
TARGETS = {"page_ms": 300, "page_bytes": 1_000_000}


def shape_spec(shape: str, tasks: int) -> str:
    """A short spec whose Jinja loop expands to ``tasks`` tasks of the given shape."""
    head = f"workflow:\n  name: {shape}\n  tasks:\n"
    task = "  - {{name: {name}, image: x, command: [echo]{extra}}}\n"
    if shape == "independent":
        return (
            head
            + "{% for i in range("
            + str(tasks)
            + ") %}\n"
            + task.format(name="t{{i}}", extra="")
            + "{% endfor %}\n"
        )
    if shape == "chain":
        return (
            head
            + task.format(name="t0", extra="")
            + "{% for i in range(1, "
            + str(tasks)
            + ") %}\n"
            + task.format(name="t{{i}}", extra=", inputs: [{task: t{{i - 1}}}]")
            + "{% endfor %}\n"
        )
    if shape == "fan":
        middle = str(tasks - 2)
        return (
            head
            + task.format(name="root", extra="")
            + "{% for i in range("
            + middle
            + ") %}\n"
            + task.format(name="m{{i}}", extra=", inputs: [{task: root}]")
            + "{% endfor %}\n"
            + "  - name: sink\n    image: x\n    command: [echo]\n    inputs:\n"
            + "{% for i in range("
            + middle
            + ") %}\n    - task: m{{i}}\n{% endfor %}\n"
        )
    raise ValueError(shape)


async def first_live_message(base: str, path: str) -> tuple[float, int]:
    """Seconds to the first ``data:`` of an SSE stream and the size of that message."""
    import httpx

    headers = {"authorization": f"Bearer {ADMIN_TOKEN}", "accept": "text/event-stream"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        t0 = time.perf_counter()
        async with client.stream("GET", path) as r:
            buf = b""
            async for chunk in r.aiter_bytes():
                buf += chunk.replace(b"\r\n", b"\n")  # Litestar ends lines with CRLF
                start = buf.find(b"data:")
                if start >= 0 and b"\n\n" in buf[start:]:
                    return time.perf_counter() - t0, buf.index(b"\n\n", start) - start
    raise RuntimeError(f"{path}: the stream ended before its first message")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def measure(stack: Stack, shape: str, tasks: int, rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with stack.client() as client:
        t0 = time.perf_counter()
        r = await client.post("/api/v1/workflows", json={"spec": shape_spec(shape, tasks)})
        r.raise_for_status()
        out["submit_s"] = round(time.perf_counter() - t0, 3)
        print(f"{shape}: submitted in {out['submit_s']} s", file=sys.stderr)
        wid = r.json()["id"]
        base = f"/workflows/{wid}"
        for key, path in (
            ("page", base),
            ("page_last", f"{base}?page=50"),
            ("page_expanded", f"{base}?expand=layer:1"),
        ):
            timings, size = [], 0
            for _ in range(rounds):
                t0 = time.perf_counter()
                r = await client.get(path)
                timings.append(time.perf_counter() - t0)
                r.raise_for_status()
                size = len(r.content)
            out[f"{key}_p50_ms"] = round(1000 * _pct(timings[1:], 50), 1)
            out[f"{key}_max_ms"] = round(1000 * max(timings[1:]), 1)
            out[f"{key}_bytes"] = size
            print(f"{shape}: {key} {out[f'{key}_p50_ms']} ms {size} bytes", file=sys.stderr)
        seconds, size = await first_live_message(stack.base, f"{base}/live")
        out["live_first_ms"] = round(1000 * seconds, 1)
        out["live_first_bytes"] = size
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    keys = sorted({k for r in results.values() for k in r})
    width = max(len(k) for k in keys)
    lines = [f"{'':{width}}  " + "  ".join(f"{s:>12}" for s in results)]
    for k in keys:
        lines.append(f"{k:{width}}  " + "  ".join(f"{r.get(k, ''):>12}" for r in results.values()))
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    from tests.fixtures import Databases

    server_url = os.environ.get("GANTRY_BENCH_DATABASE_URL") or os.environ.get(
        "GANTRY_TEST_DATABASE_URL"
    )
    if not server_url:
        print("set GANTRY_BENCH_DATABASE_URL (or GANTRY_TEST_DATABASE_URL)", file=sys.stderr)
        return 2
    databases = Databases(server_url)
    await databases.make_template()
    work = Path(tempfile.mkdtemp(prefix="gantry-bench-large-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        stack = Stack(await databases.fresh(), work, GANTRY_LOG_LEVEL="ERROR")
        await stack.start(runner=False)
        try:
            for shape in args.shapes:
                results[shape] = await measure(stack, shape, args.tasks, args.rounds)
        finally:
            await stack.stop()
    finally:
        await databases.drop_all()
    print(f"{args.tasks} tasks per workflow; targets: {TARGETS}")
    print(table(results))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"large-page-{stamp}.json"
    path.write_text(
        json.dumps(
            {"when": stamp, "tasks": args.tasks, "results": results, "targets": TARGETS},
            indent=2,
        )
    )
    print(f"\nwritten to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.large_page")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--shapes", nargs="+", default=["independent", "chain", "fan"],
        choices=["independent", "chain", "fan"],
    )  # fmt: skip
    sys.exit(asyncio.run(main(parser.parse_args())))
