"""Test helpers: the control plane in-process or as processes, runners, and waiting for states."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "gnt_test-admin-token"
ADMIN_PASSWORD = "test-admin-password"
RUNNER_TOKEN = "gbk_test-runner-token"
TERMINAL_WORKFLOW = {
    "COMPLETED", "FAILED", "FAILED_SUBMISSION", "FAILED_CANCELED", "FAILED_UPSTREAM",
    "FAILED_EXEC_TIMEOUT", "FAILED_QUEUE_TIMEOUT", "FAILED_IMAGE_PULL", "FAILED_EVICTED",
    "FAILED_PREEMPTED", "FAILED_START_ERROR", "FAILED_START_TIMEOUT", "FAILED_BACKEND_ERROR",
    "FAILED_SERVER_ERROR",
}  # fmt: skip


def conformance_dir() -> Path | None:
    path = Path(os.environ.get("GANTRY_CONFORMANCE_DIR") or ROOT.parent / "shared" / "conformance")
    return path if (path / "expect.yaml").exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        secret_key="test-secret-key",
        host="127.0.0.1",
        port=free_port(),
        bootstrap_admin_token=ADMIN_TOKEN,
        bootstrap_admin_password=ADMIN_PASSWORD,
        heartbeat_interval=1.0,
        lease_ttl=10.0,
        lease_grace=5.0,
        scheduler_interval=0.5,
        sweeper_interval=0.5,
        cancel_grace=3.0,
    )
    return replace(settings, **overrides)


async def ensure_local_backend(
    database_url: str, backend: str = "local", pool: str = "default"
) -> None:
    from app.db import Database
    from app.pools.service import PoolService

    db = Database(database_url, pool_size=2)
    await db.start()
    try:
        pools = PoolService(db, 10.0)
        await pools.create_pool(pool, exist_ok=True)
        await pools.set_backend_token(
            backend, pool, RUNNER_TOKEN if backend == "local" else f"{RUNNER_TOKEN}-{backend}"
        )
    finally:
        await db.close()


class InProcessServer:
    """The control plane in the test's event loop, served as `gantry serve` serves it (anycorn:
    HTTP/1.1 and h2c on one port)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        scheme = "https" if settings.certfile else "http"  # TLS when a certificate is given
        self.base = f"{scheme}://127.0.0.1:{settings.port}"
        # Test certificates are their own CA (self_signed_cert).
        self.verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=settings.certfile) if settings.certfile else True
        )
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.app: Any = None

    async def start(self) -> None:
        from app.asgi import create_app
        from app.cli import serve_app

        await ensure_local_backend(self.settings.database_url or "")
        self.app = create_app(self.settings)
        self._task = asyncio.create_task(serve_app(self.app, self.settings, self._stop))
        await wait_http(f"{self.base}/readyz", 20, verify=self.verify)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 15)

    def client(self, token: str | None = None, **kw: Any) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        kw.setdefault("verify", self.verify)
        return httpx.AsyncClient(base_url=self.base, headers=headers, timeout=30, **kw)


def csrf_token(html: str) -> str:
    """The CSRF token a page's forms carry (hidden input `_csrf_token`)."""
    import re

    match = re.search(r'name="_csrf_token" value="([^"]+)"', html)
    assert match, "the form carries a CSRF token"
    return match.group(1)


async def wait_http(url: str, timeout: float, verify: ssl.SSLContext | bool = True) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2, verify=verify) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s")


async def wait_for(
    client: httpx.AsyncClient,
    workflow_id: str,
    predicate: Callable[[dict[str, Any]], bool] | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    """Poll a workflow until ``predicate`` (default: terminal) holds; return it."""
    predicate = predicate or (lambda wf: wf["status"] in TERMINAL_WORKFLOW)
    deadline = time.monotonic() + timeout
    wf: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.get(f"/api/v1/workflows/{workflow_id}")
        response.raise_for_status()
        wf = response.json()
        if predicate(wf):
            return wf
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{workflow_id} did not get there in {timeout} s; last seen: {wf}")


def task_of(wf: dict[str, Any], name: str) -> dict[str, Any]:
    for group in wf["groups"]:
        for task in group["tasks"]:
            if task["name"] == name:
                return task  # type: ignore[no-any-return]
    raise KeyError(name)


class Stack:
    """`gantry serve` replicas and `gantry runner` as real processes on one database."""

    def __init__(self, database_url: str, tmp_path: Path, **env: str) -> None:
        self.database_url = database_url
        self.tmp = tmp_path
        self.extra_env = env
        self.servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        self.runner: subprocess.Popen[bytes] | None = None
        self.runner_dir = tmp_path / "runner"

    def server_env(self, port: int) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "GANTRY_DATABASE_URL": self.database_url,
            "GANTRY_DATA_DIR": str(self.tmp / "data"),
            "GANTRY_SECRET_KEY": "test-secret-key",
            "GANTRY_PORT": str(port),
            "GANTRY_BOOTSTRAP_ADMIN_TOKEN": ADMIN_TOKEN,
            "GANTRY_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "GANTRY_HEARTBEAT_INTERVAL": "1",
            "GANTRY_LEASE_TTL": "10",
            "GANTRY_LEASE_GRACE": "5",
            "GANTRY_SCHEDULER_INTERVAL": "0.5",
            "GANTRY_CANCEL_GRACE": "3",
            "GANTRY_LOG_LEVEL": "WARNING",
            **self.extra_env,
        }

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{next(iter(self.servers.values()))[1]}"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.servers[name][1]}"

    async def start(self, runner: bool = True) -> None:
        await ensure_local_backend(self.database_url)
        await self.start_server("a")
        if runner:
            await self.start_runner()

    async def start_server(self, name: str, port: int | None = None) -> None:
        port = port or free_port()
        log = open(self.tmp / f"serve-{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"],
            env=self.server_env(port),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.servers[name] = (proc, port)
        await wait_http(f"http://127.0.0.1:{port}/readyz", 30)

    def kill_server(self, name: str, sig: int = signal.SIGKILL) -> int:
        proc, port = self.servers[name]
        proc.send_signal(sig)
        proc.wait(15)
        return port

    async def start_runner(self, server: str = "a", wait: bool = True, **extra: str) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "GANTRY_SERVER_URL": self.url(server),
            "GANTRY_BACKEND": "local",
            "GANTRY_RUNNER_TOKEN": RUNNER_TOKEN,
            "GANTRY_RUNNER_DATA_DIR": str(self.runner_dir),
            "GANTRY_LOG_LEVEL": "INFO",
            "GANTRY_RUNNER_SLOTS": "32",
            "RUNNER_SECRET_CANARY": "the-runner-environment-must-not-leak",
            **extra,
        }
        log = open(self.tmp / "runner.log", "ab")  # noqa: SIM115
        self.runner = subprocess.Popen(
            [sys.executable, "-m", "app", "runner"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            await self.wait_connected()

    async def wait_connected(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        async with self.client() as client:
            while time.monotonic() < deadline:
                items = (await client.get("/api/v1/backends")).json()["items"]
                if any(b["name"] == "local" and b["connected"] for b in items):
                    return
                await asyncio.sleep(0.2)
        raise TimeoutError("the runner did not connect")

    def kill_runner(self, sig: int = signal.SIGKILL) -> None:
        assert self.runner is not None
        self.runner.send_signal(sig)
        self.runner.wait(15)
        self.runner = None

    def client(self, server: str | None = None, token: str = ADMIN_TOKEN) -> httpx.AsyncClient:
        base = self.url(server) if server else self.base
        return httpx.AsyncClient(
            base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=30
        )

    async def stop(self) -> None:
        if self.runner is not None and self.runner.poll() is None:
            self.runner.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.runner.wait(10)
            if self.runner.poll() is None:
                self.runner.kill()
        for proc, _ in self.servers.values():
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in self.servers.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        # Attempts outlive runners by design; a test must not leave any behind.
        kill_attempts(self.runner_dir)


def kill_attempts(runner_dir: Path) -> None:
    for pgid_file in runner_dir.glob("attempts/*/pgid"):
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError, OSError):
            os.killpg(int(pgid_file.read_text()), signal.SIGKILL)


async def submit(client: httpx.AsyncClient, spec: str, **body: Any) -> str:
    response = await client.post("/api/v1/workflows", json={"spec": spec, **body})
    assert response.status_code == 201, response.text
    return response.json()["id"]  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def runner_in_loop(base: str, data_dir: Path, **kw: Any) -> AsyncIterator[Any]:
    """The real runner (client, loop, local executor) in this event loop, over HTTP/2."""
    from runner.client import RunnerClient
    from runner.executors.local import LocalExecutor
    from runner.loop import Runner

    client = RunnerClient(base, kw.pop("token", RUNNER_TOKEN), verify=kw.pop("verify", True))
    executor = kw.pop("executor", None) or LocalExecutor(
        data_dir, kw.pop("slots", 16), sandbox=kw.pop("sandbox", "auto")
    )
    runner = Runner(client, executor, kw.pop("backend", "local"))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.wait_for(runner.connected.wait(), 20)
        yield runner
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await executor.close()
        await client.close()
        kill_attempts(data_dir)


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA, and its key: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gantry-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
