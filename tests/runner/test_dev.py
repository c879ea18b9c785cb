"""`gantry dev`: embedded PostgreSQL, migrations, admin, pool, serve and a runner; Ctrl-C stops all."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, csrf_token, free_port, wait_for

pytestmark = pytest.mark.slow


def _read_until(proc: subprocess.Popen[str], pattern: str, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise AssertionError(f"gantry dev exited early: {''.join(lines)}")
            continue
        lines.append(line)
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"{pattern!r} not printed in {timeout} s: {''.join(lines)}")


async def test_gantry_dev_runs_everything_and_stops_everything(tmp_path: Path) -> None:
    data = tmp_path / "gantry-data"
    tmp_path.chmod(0o755)  # the embedded server runs as its own system user when we are root
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANTRY_")}
    env.update(GANTRY_DATA_DIR=str(data), GANTRY_PORT=str(port), GANTRY_LOG_LEVEL="WARNING")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "dev"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = await asyncio.to_thread(_read_until, proc, r"admin password: ", 120)
        text = "".join(lines)
        assert f"Gantry ready at http://127.0.0.1:{port}" in text
        token = re.search(r"admin token: (\S+)", text).group(1)  # type: ignore[union-attr]
        password = re.search(r"admin password: (\S+)", text).group(1)  # type: ignore[union-attr]
        assert (data / "postgres" / "PG_VERSION").exists(), (
            "the database is embedded in the data dir"
        )
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(
            base_url=base, headers={"authorization": f"Bearer {token}"}
        ) as client:
            spec = "workflow:\n  name: hello-osmo\n  tasks:\n  - name: hello\n    image: ubuntu:24.04\n    command: [echo]\n    args: ['Hello from OSMO!']\n"
            r = await client.post("/api/v1/workflows", json={"spec": spec})
            assert r.status_code == 201
            wf = await wait_for(client, r.json()["id"], timeout=60)
            assert wf["status"] == "COMPLETED"
            log = (await client.get(f"/api/v1/workflows/{wf['id']}/tasks/hello/logs")).text
            assert log == "Hello from OSMO!\n"
        async with httpx.AsyncClient(base_url=base, follow_redirects=False) as browser:
            form = await browser.get("/login")
            csrf = csrf_token(form.text)
            r = await browser.post(
                "/login", data={"username": "admin", "password": password, "_csrf_token": csrf}
            )
            assert r.status_code == 303
        # `gantry admin`, run beside the running dev, finds its embedded database by itself.
        admin = subprocess.run(
            [sys.executable, "-m", "app", "admin", "create-user", "bob", "--password-stdin"],
            cwd=ROOT, env=env, input="bob-password\n", capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert admin.returncode == 0, admin.stderr
        assert "user bob ready" in admin.stdout
        unknown = subprocess.run(
            [sys.executable, "-m", "app", "admin", "create-token", "nobody"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert unknown.returncode != 0 and "no user 'nobody'" in unknown.stderr
        assert "Traceback" not in unknown.stderr
        async with httpx.AsyncClient(base_url=base, follow_redirects=False) as browser:
            form = await browser.get("/login")
            csrf = csrf_token(form.text)
            r = await browser.post(
                "/login", data={"username": "bob", "password": "bob-password", "_csrf_token": csrf}
            )
            assert r.status_code == 303, "bob, made by `gantry admin`, signs in"
        token_only = subprocess.run(
            [sys.executable, "-m", "app", "admin", "create-token", "bob"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert re.fullmatch(r"gnt_\S+\n", token_only.stdout), token_only.stdout
        # A second `gantry dev` on the same data directory, or on the same port, says so in
        # one line and changes nothing.
        for what, overrides in (
            ("is in use by another gantry dev", {"GANTRY_PORT": str(free_port())}),
            (f"cannot listen on 127.0.0.1:{port}", {"GANTRY_DATA_DIR": str(tmp_path / "other")}),
        ):
            second = subprocess.run(
                [sys.executable, "-m", "app", "dev"],
                cwd=ROOT, env={**env, **overrides}, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert second.returncode != 0
            assert what in second.stderr, second.stderr
            assert "Traceback" not in second.stderr
        async with httpx.AsyncClient(base_url=base) as still:
            assert (await still.get("/readyz")).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    assert code == 0
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the control plane is gone"
    assert not (data / "postgres" / "postmaster.pid").exists(), "the embedded database stopped"
    # The generated credentials were kept: a second start reuses them.
    assert (data / "credentials.json").exists()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_a_killed_gantry_dev_leaves_nothing_that_blocks_the_next(tmp_path: Path) -> None:
    """SIGKILL of `gantry dev`: serve and the runner go with it, and the next start, and its
    Ctrl-C, work as if nothing happened (the embedded database stops again)."""
    data = tmp_path / "gantry-data"
    tmp_path.chmod(0o755)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANTRY_")}
    env.update(GANTRY_DATA_DIR=str(data), GANTRY_PORT=str(port), GANTRY_LOG_LEVEL="WARNING")

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "app", "dev"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    first = start()
    try:
        await asyncio.to_thread(_read_until, first, r"admin password: ", 120)
        children = [
            c for c in _children(first.pid) if "app" in Path(f"/proc/{c}/cmdline").read_text()
        ]
        assert len(children) == 2, children  # serve and runner
        first.kill()
        first.wait(10)
        deadline = time.monotonic() + 30
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert not any(_alive(c) for c in children), "serve or the runner outlived gantry dev"
    finally:
        if first.poll() is None:
            first.kill()
    second = start()
    try:
        await asyncio.to_thread(_read_until, second, r"admin password: ", 120)
    finally:
        second.send_signal(signal.SIGINT)
        assert second.wait(60) == 0
    deadline = time.monotonic() + 20
    while (data / "postgres" / "postmaster.pid").exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not (data / "postgres" / "postmaster.pid").exists(), "the embedded database stopped"


async def test_a_first_start_says_only_what_a_user_needs_and_ctrl_c_is_quiet(
    tmp_path: Path,
) -> None:
    """Issue 9 ("a quiet start"): no initdb or pg_ctl dumps, no contradictory migration
    counts, no failed connections of a runner started too early, no banner twice, and no
    traceback when Ctrl-C reaches the whole process group (the spec workers too)."""
    data = tmp_path / "gantry-data"
    tmp_path.chmod(0o755)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANTRY_")}
    env.pop("XDG_RUNTIME_DIR", None)
    env.update(GANTRY_DATA_DIR=str(data), GANTRY_PORT=str(port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "dev"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        lines = await asyncio.to_thread(_read_until, proc, r"\(sign in as", 120)
        token = re.search(r"admin token: (\S+)", "".join(lines)).group(1)  # type: ignore[union-attr]
        kinds = [re.sub(r"[:(].*", "", line).strip() for line in lines]
        assert kinds == [
            "database", "task isolation", "Gantry ready at http", "admin token",
            "admin password", "",
        ], "".join(lines)  # fmt: skip
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as api:
            r = await api.post(
                "/api/v1/workflows",
                headers={"authorization": f"Bearer {token}"},
                json={"spec": "workflow:\n  name: w\n  tasks:\n  - {name: t, image: x, command: [echo]}\n",
                      "dry_run": True},
            )  # fmt: skip
            assert r.status_code == 200, r.text  # spec workers are running now
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        rest, _ = await asyncio.to_thread(proc.communicate, None, 60)
    assert proc.returncode == 0, rest
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest
