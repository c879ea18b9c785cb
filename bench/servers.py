"""The ASGI server under the control plane, compared: ``python -m bench --only servers``.

Each server runs the real app as its own process on a fresh database: ``gantry serve`` itself
(anycorn with app.cli's body drain, the production path), hypercorn 0.18 (what Gantry used
before) and granian (Rust, ``--http auto``). For each: requests/s and p50/p99 of ``GET /healthz``
over HTTP/1.1 (8 keep-alive connections) and over h2c (one connection, as a runner), and the
refused-POST check of issue 7 item 8: 200 pairs of a refused POST (wrong token, 8 KiB: small
enough that httpx never waits for flow-control window while the GET reads, see
tests/security/test_h2_refused.py) with a GET at the same time on one h2 connection, plus 20
refused POSTs of 1 MiB alone; a pair whose requests fail is a disconnect, one that times out a
stall, and every new TCP connection counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support import Stack, ensure_local_backend, free_port, wait_http

REQUESTS = 2000
CONCURRENCY = 16
PAIRS = 200
LONG_REFUSALS = 20
EVENTS = "/api/runner/v1/sessions/no-such-session/events"


def granian_app() -> Any:
    """The app for granian's ``--factory`` (granian imports it in its own worker)."""
    from app.asgi import create_app
    from app.settings import Settings

    return create_app(Settings.from_env())


def hypercorn_main() -> None:
    """hypercorn 0.18 configured as `gantry serve` configured it before the switch."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from app.asgi import create_app
    from app.settings import Settings

    settings = Settings.from_env()
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.keep_alive_timeout = settings.keep_alive
    config.graceful_timeout = 5
    config.accesslog = None
    app = create_app(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    asyncio.run(main())


def _command(kind: str, port: int) -> list[str]:
    if kind == "anycorn":
        return [sys.executable, "-m", "app", "serve"]
    if kind == "hypercorn":
        return [sys.executable, "-c", "from bench.servers import hypercorn_main; hypercorn_main()"]
    return [
        sys.executable, "-m", "granian", "--interface", "asgi", "--http", "auto", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--no-ws",
        "--log-level", "error", "bench.servers:granian_app",
    ]  # fmt: skip


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _gets(client: httpx.AsyncClient) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        nonlocal errors
        async with sem:
            t0 = time.perf_counter()
            try:
                r = await client.get("/healthz")
            except httpx.TransportError:  # hypercorn's GOAWAY after 1000 requests
                errors += 1
                return
            latencies.append(time.perf_counter() - t0)
            r.raise_for_status()

    for _ in range(50):  # warm up
        await one()
    latencies.clear()
    errors = 0
    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(REQUESTS)))
    elapsed = time.perf_counter() - t0
    return {
        "rps": REQUESTS / elapsed,
        "p50_ms": 1000 * _pct(latencies, 50),
        "p99_ms": 1000 * _pct(latencies, 99),
        "errors": errors,
    }


async def _refusals(base: str) -> dict[str, int]:
    bad = {"authorization": "Bearer gbk_wrong-token"}
    disconnects = stalls = 0
    connections: set[Any] = set()
    async with httpx.AsyncClient(
        base_url=base, http1=False, http2=True, timeout=10, limits=httpx.Limits(max_connections=1)
    ) as client:

        async def pair(body: bytes, together: bool) -> None:
            nonlocal disconnects, stalls
            try:
                if together:
                    post, get = await asyncio.gather(
                        client.post(EVENTS, content=body, headers=bad), client.get("/healthz")
                    )
                else:
                    post = await client.post(EVENTS, content=body, headers=bad)
                    get = await client.get("/healthz")
                connections.add(post.extensions.get("network_stream"))
                connections.add(get.extensions.get("network_stream"))
                if post.status_code != 401 or get.status_code != 200:
                    disconnects += 1
            except httpx.TimeoutException:
                stalls += 1
            except httpx.TransportError:
                disconnects += 1

        for _ in range(PAIRS):
            await pair(b"x" * (8 * 1024), together=True)
        for _ in range(LONG_REFUSALS):
            await pair(b"x" * (1024 * 1024), together=False)
    return {"disconnects": disconnects, "stalls": stalls, "connections": len(connections)}


async def measure(databases: Any, workdir: Path, kind: str) -> dict[str, Any]:
    url = await databases.fresh()
    await ensure_local_backend(url)
    port = free_port()
    (workdir / kind).mkdir(parents=True, exist_ok=True)
    env = Stack(url, workdir / kind).server_env(port)
    env["GANTRY_LOG_LEVEL"] = "ERROR"
    log = open(workdir / kind / "serve.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(_command(kind, port), env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_http(f"{base}/readyz", 30)
        out: dict[str, Any] = {}
        async with httpx.AsyncClient(
            base_url=base, timeout=30, limits=httpx.Limits(max_connections=8)
        ) as h1:
            out["h1"] = await _gets(h1)
        async with httpx.AsyncClient(base_url=base, http1=False, http2=True, timeout=30) as h2:
            out["h2"] = await _gets(h2)
        out["refused"] = await _refusals(base)
        return out
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


async def compare(databases: Any, workdir: Path) -> dict[str, Any]:
    """Figures for each server, keyed by name; a server whose package is missing is skipped."""
    results: dict[str, Any] = {}
    for kind in ("anycorn", "hypercorn", "granian"):
        if importlib.util.find_spec(kind) is None:
            results[kind] = {"skipped": f"{kind} is not installed"}
            continue
        results[kind] = await measure(databases, workdir, kind)
    return results


def table(results: dict[str, Any]) -> str:
    head = (
        f"{'server':<10} {'h1 req/s':>9} {'h1 p50':>7} {'h1 p99':>7} {'h2 req/s':>9} "
        f"{'h2 p50':>7} {'h2 p99':>7} {'errors':>7} {'disconn':>8} {'stalls':>7} {'conns':>6}"
    )
    lines = [head, "-" * len(head)]
    for kind, r in results.items():
        if "skipped" in r:
            lines.append(f"{kind:<10} {r['skipped']}")
            continue
        h1, h2, ref = r["h1"], r["h2"], r["refused"]
        lines.append(
            f"{kind:<10} {h1['rps']:>9,.0f} {h1['p50_ms']:>7.1f} {h1['p99_ms']:>7.1f} "
            f"{h2['rps']:>9,.0f} {h2['p50_ms']:>7.1f} {h2['p99_ms']:>7.1f} "
            f"{h1['errors'] + h2['errors']:>7} "
            f"{ref['disconnects']:>8} {ref['stalls']:>7} {ref['connections']:>6}"
        )
    lines.append(
        f"(GET /healthz, {REQUESTS} requests, {CONCURRENCY} at a time, ms; refused: "
        f"{PAIRS} refused-POST+GET pairs and {LONG_REFUSALS} refused 1 MiB POSTs on one h2 "
        "connection; errors = failed GETs, conns = TCP connections the refusals took)"
    )
    return "\n".join(lines)
