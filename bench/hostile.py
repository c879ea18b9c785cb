"""`/healthz` latency while hostile specs are being checked: ``python -m bench.hostile``.

A real ``gantry serve`` process; one client sends a hostile request after another (an alias
bomb through the API and the /submit page, a 10,000-task dry run, the same submitted, a
template that burns its CPU limit) for a few seconds per scenario while another probes
``/healthz`` every 20 ms on its own connection. The spec pipeline runs in capped worker
processes, so the event loop should answer each probe at once (target: p99 under 50 ms).
Prints a table and writes bench/results/hostile-*.json; also part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.support import Stack

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

TARGETS = {
    "healthz_p99_ms_alias_bomb": ("<", 50),
    "healthz_p99_ms_alias_bomb_submit_page": ("<", 50),
    "healthz_p99_ms_dry_run_10000_tasks": ("<", 50),
    "healthz_p99_ms_submit_10000_tasks": ("<", 50),
    "healthz_p99_ms_cpu_limit_template": ("<", 50),
    "healthz_p99_ms_parallel_detail_10000_tasks": ("<", 50),
    "healthz_p99_ms_log_search_25mb": ("<", 50),
}

# 474 bytes that expand to 9^7 values: took 30 s and ~480 MB before aliases were bounded.
ALIAS_BOMB = """\
workflow:
  name: demo
  tasks:
  - {name: a, image: ubuntu, command: [echo, hi]}
default-values:
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""
# A short template that renders to the largest workflow allowed (10,000 tasks).
DRY_RUN_10000 = """\
workflow:
  name: wide
  tasks:
{% for i in range(10000) %}
  - {name: t{{i}}, image: x, command: [echo, '{{i}}']}
{% endfor %}
"""
# Rendering never ends: stopped by the worker's CPU limit (2 s).
CPU_LIMIT = """\
workflow:
  name: spin
  tasks:
  - name: a
    image: x
    command: ["{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"]
"""

SCENARIOS = {  # name: (spec, dry run, through the /submit page rather than the API)
    "alias_bomb": (ALIAS_BOMB, False, False),
    "alias_bomb_submit_page": (ALIAS_BOMB, True, True),
    "dry_run_10000_tasks": (DRY_RUN_10000, True, False),
    "submit_10000_tasks": (DRY_RUN_10000, False, False),
    "cpu_limit_template": (CPU_LIMIT, False, False),
}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _probe(base: str, stop: Any, out: Any) -> None:
    """Runs in a process of its own: the hostile clients' parsing of 16 answers of 4 MB in
    this process must not be counted as the server's latency (a thread here shares their GIL,
    and counted up to 30 ms of it)."""
    latencies = []
    with httpx.Client(base_url=base, timeout=30) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            r = client.get("/healthz")
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
            time.sleep(0.02)
    out.send(latencies)


async def _probed(
    stack: Stack,
    seconds: float,
    request: Callable[[Any], Awaitable[Any]] | None,
    clients: int = 1,
    minimum: int = 1,
) -> dict[str, Any]:
    """Probe /healthz while ``clients`` clients send ``request`` back to back for ``seconds``
    (and at least ``minimum`` times in all); with no request, while the server idles."""
    durations: list[float] = []
    statuses: dict[int, int] = {}
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    received, sent = spawn.Pipe(duplex=False)
    probe = spawn.Process(target=_probe, args=(stack.base, stop, sent), daemon=True)
    probe.start()
    deadline = time.monotonic() + seconds

    async def hostile() -> None:
        assert request is not None
        async with stack.client() as client:
            while time.monotonic() < deadline or len(durations) < minimum:
                t0 = time.perf_counter()
                r = await request(client)
                durations.append(time.perf_counter() - t0)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    try:
        if request is None:
            await asyncio.sleep(seconds)
        else:
            await asyncio.gather(*(hostile() for _ in range(clients)))
    finally:
        stop.set()
        latencies: list[float] = await asyncio.to_thread(received.recv)
        await asyncio.to_thread(probe.join, 30)
    return {
        "p50_ms": 1000 * _pct(latencies, 50),
        "p99_ms": 1000 * _pct(latencies, 99),
        "max_ms": 1000 * max(latencies),
        "probes": len(latencies),
        "hostile_s_p50": _pct(durations, 50),
        "statuses": statuses,
    }


async def _measure(
    stack: Stack, spec: str | None, dry_run: bool, page: bool, seconds: float
) -> dict[str, Any]:
    """A hostile submission (or dry run, through the page or the API) back to back."""
    if spec is None:
        return await _probed(stack, seconds, None)

    async def submit(client: Any) -> Any:
        if page:
            action = "validate" if dry_run else "submit"
            return await client.post(
                "/submit", files={"spec": (None, spec), "action": (None, action)}
            )
        return await client.post("/api/v1/workflows", json={"spec": spec, "dry_run": dry_run})

    return await _probed(stack, seconds, submit, minimum=3)


# Reads found by attacking it (docs/security.md): many clients reading one 10,000-task
# workflow's JSON, and searches of a 25 MB log (at most GANTRY_MAX_SEARCHES_PER_USER at once).
READS = {  # name: (path under the workflow, concurrent clients)
    "parallel_detail_10000_tasks": ("/api/v1/workflows/{id}", 16),
    "log_search_25mb": ("/workflows/{id}/tasks/t0/logs?q=zzz", 2),
}


async def _big_workflow(stack: Stack) -> str:
    """A 10,000-task workflow (no runner: it stays queued) with 25 MB of log on task t0."""
    import asyncpg

    async with stack.client() as client:
        r = await client.post("/api/v1/workflows", json={"spec": DRY_RUN_10000})
        assert r.status_code == 201, r.text
        workflow_id = str(r.json()["id"])
    conn = await asyncpg.connect(stack.database_url)
    try:
        task = await conn.fetchval(
            "SELECT id FROM task WHERE workflow = $1 AND name = 't0'", workflow_id
        )
        chunk = (b"y" * 79 + b"\n") * 800
        await conn.executemany(
            "INSERT INTO log_chunk (task, stream, start, data, newlines, received_at)"
            " VALUES ($1, 1, $2, $3, 800, now())",
            [(task, i * len(chunk), chunk) for i in range(400)],
        )
    finally:
        await conn.close()
    return workflow_id


def _record(bench: Any, name: str, got: dict[str, Any]) -> None:
    bench.results[f"healthz_p50_ms_{name}"] = got["p50_ms"]
    bench.results[f"healthz_p99_ms_{name}"] = got["p99_ms"]
    bench.results[f"healthz_max_ms_{name}"] = got["max_ms"]
    bench.results[f"hostile_request_s_{name}"] = got["hostile_s_p50"]
    bench.results[f"hostile_statuses_{name}"] = ",".join(
        f"{code}x{n}" for code, n in sorted(got["statuses"].items())
    )


async def healthz_under_hostile(bench: Any, seconds: float = 8.0, only: str | None = None) -> None:
    """Adds healthz_p99_ms_<scenario> (and details) to ``bench.results``."""
    stack: Stack = await bench.stack("hostile")
    try:
        idle = await _measure(stack, None, False, False, seconds)
        bench.results["healthz_p50_ms_idle"] = idle["p50_ms"]
        bench.results["healthz_p99_ms_idle"] = idle["p99_ms"]
        for name, (spec, dry_run, page) in SCENARIOS.items():
            if only is not None and name != only:
                continue
            _record(bench, name, await _measure(stack, spec, dry_run, page, seconds))
        wanted = [n for n in READS if only is None or n == only]
        workflow_id = await _big_workflow(stack) if wanted else ""
        for name in wanted:
            path, clients = READS[name]
            url = path.format(id=workflow_id)

            async def read(client: Any, url: str = url) -> Any:
                return await client.get(url)

            _record(bench, name, await _probed(stack, seconds, read, clients))
    finally:
        await stack.stop()


class _Bench:
    """The part of bench.__main__.Bench this module needs, to run on its own."""

    def __init__(self, databases: Any, workdir: Path) -> None:
        self.databases = databases
        self.workdir = workdir
        self.results: dict[str, Any] = {}

    async def stack(self, name: str) -> Stack:
        url = await self.databases.fresh()
        (self.workdir / name).mkdir(parents=True, exist_ok=True)
        stack = Stack(
            url, self.workdir / name, GANTRY_LOG_LEVEL="ERROR",
            # The hostile client repeats its request for seconds on end: without this the
            # per-user submission limit answers most of them 429 at no cost, and the figure
            # would measure the limit rather than a hostile request in flight.
            GANTRY_MAX_SUBMISSIONS_PER_MINUTE="0", GANTRY_MAX_QUEUED_PER_USER="0",
        )  # fmt: skip
        await stack.start(runner=False)
        return stack


def _table(results: dict[str, Any]) -> str:
    rows = []
    for key, value in results.items():
        verdict = ""
        if key in TARGETS and isinstance(value, int | float):
            op, limit = TARGETS[key]
            verdict = f"{op} {limit}  {'ok' if value < limit else 'MISSED'}"
        shown = f"{value:,.1f}" if isinstance(value, float) else str(value)
        rows.append((key, shown, verdict))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'figure':<{width}}  {'value':>10}  target", "-" * (width + 30)]
    lines += [f"{k:<{width}}  {v:>10}  {t}" for k, v, t in rows]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    from tests.fixtures import Databases

    server_url = os.environ.get("GANTRY_BENCH_DATABASE_URL") or os.environ.get(
        "GANTRY_TEST_DATABASE_URL"
    )
    if not server_url:
        print("set GANTRY_TEST_DATABASE_URL (or run `python -m bench`)", file=sys.stderr)
        return 2
    databases = Databases(server_url)
    await databases.make_template()
    bench = _Bench(databases, Path(tempfile.mkdtemp(prefix="gantry-bench-hostile-")))
    try:
        await healthz_under_hostile(bench, seconds=args.seconds, only=args.only)
    finally:
        await databases.drop_all()
    print(_table(bench.results))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"hostile-{stamp}.json"
    out.write_text(
        json.dumps({"when": stamp, "results": bench.results, "targets": TARGETS}, indent=2)
    )
    print(f"\nwritten to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.hostile")
    parser.add_argument(
        "--seconds",
        type=float,
        default=8.0,
        help="how long each scenario keeps hostile requests in flight",
    )
    parser.add_argument(
        "--only", choices=sorted([*SCENARIOS, *READS]), help="run one scenario (and idle)"
    )
    sys.exit(asyncio.run(main(parser.parse_args())))
