"""A task of a non-admin cannot read the control plane's, a runner's or another user's secrets.

Each test runs the real control plane and the real runner (`gantry serve` and `gantry runner`
processes, with their secrets in their environments as an operator might set them) and really
runs tasks under bubblewrap. A probe task (python3 from the host's /usr) tries everything a
hostile user would try and prints what it found as JSON; the tests assert on that.

Skipped (with the reason) only where bwrap is not installed, and failing instead when
GANTRY_REQUIRE_SANDBOX=1 (as `.ci/run` sets it).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import httpx
import pytest

from tests.runner.test_dev import _read_until
from tests.support import (
    ADMIN_TOKEN,
    ROOT,
    RUNNER_TOKEN,
    Stack,
    free_port,
    submit,
    task_of,
    wait_for,
)

BWRAP = shutil.which("bwrap")
PASTA = shutil.which("pasta")
TASK_VARIABLES = {
    "GANTRY_WORKFLOW_ID", "GANTRY_GROUP", "GANTRY_TASK", "GANTRY_RETRY", "GANTRY_ATTEMPT",
    "GANTRY_OUTPUT",
}  # fmt: skip
SECRETS = (ADMIN_TOKEN, RUNNER_TOKEN, "test-secret-key", "the-runner-environment-must-not-leak")


def _skip_unless_optional(reason: str) -> NoReturn:
    """Skip, saying why; under GANTRY_REQUIRE_SANDBOX=1 (CI) a missing part fails instead."""
    if os.environ.get("GANTRY_REQUIRE_SANDBOX") == "1":
        pytest.fail(f"GANTRY_REQUIRE_SANDBOX=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def bwrap() -> str:
    if BWRAP is None:
        reason = "bubblewrap (bwrap) is not installed: `apt-get install bubblewrap passt`"
        _skip_unless_optional(reason)
    return BWRAP


async def _user_token(database_url: str, name: str) -> str:
    from app.auth.service import AuthService
    from app.db import Database

    db = Database(database_url, pool_size=2)
    await db.start()
    try:
        auth = AuthService(db)
        await auth.ensure_user(name, ["user"], None)
        return await auth.create_token(name, "sandbox-test")
    finally:
        await db.close()


class _Listener:
    """A TCP service on the host's loopback, like a development machine's database."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])


@pytest.fixture(params=["pasta", "no-pasta"])
async def hostile_stack(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    """Runner and control-plane data directories inside /opt, a folder the sandbox binds;
    with pasta (outbound network) where it is installed, and without it (loopback only)."""
    if request.param == "pasta" and PASTA is None:
        _skip_unless_optional("pasta (Debian's passt) is not installed: `apt-get install passt`")
    extra = {"GANTRY_SANDBOX_PASTA": ""} if request.param == "no-pasta" else {}
    runner_dir = Path(tempfile.mkdtemp(prefix="gantry-sbx-runner-", dir="/opt"))
    control_dir = Path(tempfile.mkdtemp(prefix="gantry-sbx-data-", dir="/opt"))
    for name, mode in (("credentials.json", 0o600), ("secret_key", 0o600), ("notes", 0o644)):
        (control_dir / name).write_text(f"{name}: test-secret-key {ADMIN_TOKEN}")
        (control_dir / name).chmod(mode)
    s = Stack(database_url, tmp_path)
    s.runner_dir = runner_dir / "runner"
    s.control_dir = control_dir  # type: ignore[attr-defined]
    await s.start(runner=False)
    await s.start_runner(GANTRY_DATA_DIR=str(control_dir), **extra)
    s.pasta = request.param == "pasta"  # type: ignore[attr-defined]
    try:
        yield s
    finally:
        await s.stop()
        shutil.rmtree(runner_dir, ignore_errors=True)
        shutil.rmtree(control_dir, ignore_errors=True)


PROBE = r"""
import json, os, socket

def attempt(fn):
    try:
        return ["ok", fn()]
    except OSError as exc:
        return ["error", type(exc).__name__]

def read(path):
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")

def connect(host, port):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        return "connected"
    finally:
        s.close()

def gateway():
    for line in open("/proc/net/route").read().splitlines()[1:]:
        f = line.split()
        if f[1] == "00000000":
            return socket.inet_ntoa(bytes.fromhex(f[2])[::-1])
    return None

procs = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        procs[p] = {
            "cmdline": attempt(lambda: read(f"/proc/{p}/cmdline").split("\0")),
            "environ": attempt(lambda: read(f"/proc/{p}/environ")),
        }
status = read("/proc/self/status")
gw = gateway()
out = {
    "procs": procs,
    "env": dict(os.environ),
    "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
    "capeff": [l.split()[1] for l in status.splitlines() if l.startswith("CapEff")][0],
    "shadow": attempt(lambda: read("/etc/shadow")),
    "paths": {p: attempt(lambda: sorted(os.listdir(p)) if os.path.isdir(p) else read(p))
              for p in json.loads(os.environ["PATHS"])},
    "gateway": gw,
    "connect": {f"{h}:{port}": attempt(lambda: connect(h, port))
                for h in ["127.0.0.1"] + ([gw] if gw else [])
                for port in json.loads(os.environ["PORTS"])},
}
print("PROBE " + json.dumps(out))
"""


def _probe_spec(name: str, paths: list[str], ports: list[int]) -> str:
    env = json.dumps({"PATHS": json.dumps(paths), "PORTS": json.dumps(ports)})
    contents = "\n".join("        " + line for line in PROBE.strip().splitlines())
    return f"""\
workflow:
  name: {name}
  tasks:
  - name: probe
    image: ubuntu
    command: [python3, /probe.py]
    environment: {env}
    files:
    - path: /probe.py
      contents: |
{contents}
"""


async def _run_probe(client: httpx.AsyncClient, paths: list[str], ports: list[int]) -> dict:  # type: ignore[type-arg]
    wid = await submit(client, _probe_spec("probe", paths, ports))
    wf = await wait_for(client, wid, timeout=90)
    log = (await client.get(f"/api/v1/workflows/{wid}/tasks/probe/logs")).text
    assert wf["status"] == "COMPLETED", (wf, log)
    line = next(x for x in log.splitlines() if x.startswith("PROBE "))
    return json.loads(line.removeprefix("PROBE "))  # type: ignore[no-any-return]


def _database_port() -> list[int]:
    """The test's own PostgreSQL when it listens on the host's loopback (127.0.0.1:5432 here)."""
    url = os.environ.get("GANTRY_TEST_DATABASE_URL") or ""
    parts = urlsplit(url)
    if parts.hostname in ("127.0.0.1", "localhost"):
        return [parts.port or 5432]
    return []


async def test_a_users_task_sees_nothing_of_the_host(
    bwrap: str, hostile_stack: Stack, database_url: str
) -> None:
    stack = hostile_stack
    assert stack.runner is not None
    control_dir: Path = stack.control_dir  # type: ignore[attr-defined]
    listener = _Listener()
    ports = [listener.port, *_database_port()]
    for port in ports:  # reachable from the host itself: the checks below are not vacuous
        with socket.create_connection(("127.0.0.1", port), timeout=3):
            pass

    # Another user's finished task left a secret in its output and attempt directory.
    alice = await _user_token(database_url, "alice")
    victim_spec = """\
workflow:
  name: victim
  tasks:
  - name: secret
    image: ubuntu
    command: [sh, -c, 'echo alice-private > {{output}}/secret.txt; echo "attempt=$GANTRY_ATTEMPT"']
"""
    async with stack.client(token=alice) as client:
        wid = await submit(client, victim_spec)
        wf = await wait_for(client, wid, timeout=60)
        assert wf["status"] == "COMPLETED", wf
        log = (await client.get(f"/api/v1/workflows/{wid}/tasks/secret/logs")).text
    victim_attempt = stack.runner_dir / "attempts" / log.split("attempt=")[1].strip()
    assert (victim_attempt / "output" / "secret.txt").read_text() == "alice-private\n"

    paths = [
        str(stack.runner_dir),
        str(stack.runner_dir / "attempts"),
        str(victim_attempt / "output" / "secret.txt"),
        str(victim_attempt / "stdout"),
        str(control_dir),
        str(control_dir / "credentials.json"),
        str(control_dir / "secret_key"),
        str(control_dir / "notes"),
        str(stack.tmp / "data"),
        f"/proc/{stack.runner.pid}/environ",
        f"/proc/{stack.servers['a'][0].pid}/environ",
    ]
    mallory = await _user_token(database_url, "mallory")
    async with stack.client(token=mallory) as client:
        seen = await _run_probe(client, paths, ports)

    # Only its own processes: bwrap's init and the probe, none of the host's.
    for pid, proc in seen["procs"].items():
        assert proc["cmdline"][0] == "ok", (pid, proc)
        argv0 = os.path.basename(proc["cmdline"][1][0])
        assert argv0 in ("bwrap", "python3"), f"the task sees a host process: {proc['cmdline']}"
        environ = proc["environ"][1] if proc["environ"][0] == "ok" else ""
        assert not any(secret in environ for secret in SECRETS), (pid, environ)
    # Its environment is its own: nothing of the runner's.
    assert {k for k in seen["env"] if k.startswith("GANTRY_")} == TASK_VARIABLES
    assert not any(s in json.dumps(seen["env"]) for s in SECRETS)
    # No data directory, no other attempt, no credentials; masked folders are empty.
    for path, result in seen["paths"].items():
        assert result[0] == "error" or result == ["ok", []], f"the task read {path}: {result}"
        assert not any(s in json.dumps(result) for s in (*SECRETS, "alice-private")), path
    # An unprivileged user in a user namespace, no capability at all.
    assert seen["uid"] != 0 and seen["euid"] != 0 and seen["gid"] != 0
    assert int(seen["capeff"], 16) == 0, seen["capeff"]
    assert seen["shadow"] == ["error", "PermissionError"]
    # Not the host's network: neither its loopback nor the gateway that pasta could map to it.
    assert len(seen["connect"]) == len(ports) * (2 if seen["gateway"] else 1)
    for target, result in seen["connect"].items():
        assert result[0] == "error", f"the task reached {target} on the host"
    assert (seen["gateway"] is not None) == stack.pasta, "outbound only through pasta"  # type: ignore[attr-defined]


async def test_the_tasks_of_a_group_share_a_network(
    bwrap: str, hostile_stack: Stack, database_url: str
) -> None:
    spec = """\
workflow:
  name: pod
  groups:
  - name: g
    tasks:
    - name: client
      lead: true
      image: x
      command: [python3, -c]
      args:
      - |
        import socket, time
        for _ in range(100):
            try:
                s = socket.create_connection(("{{host:server}}", 18080), timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        print("got", s.recv(100).decode())
    - name: server
      image: x
      command: [python3, -c]
      args:
      - |
        import socket
        l = socket.socket()
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind(("0.0.0.0", 18080))
        l.listen()
        while True:
            c, _ = l.accept()
            c.sendall(b"hello-from-server")
            c.close()
"""
    mallory = await _user_token(database_url, "mallory")
    async with hostile_stack.client(token=mallory) as client:
        wid = await submit(client, spec)
        wf = await wait_for(client, wid, timeout=90)
        log = (await client.get(f"/api/v1/workflows/{wid}/tasks/client/logs")).text
    assert wf["status"] == "COMPLETED", (wf, log)
    assert "got hello-from-server" in log
    # The group's network holder ends with the group.
    await _until(lambda: not list(hostile_stack.runner_dir.glob("attempts/net-*")), 20)


async def _until(predicate: object, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.2)


HELLO = """\
workflow:
  name: hello
  tasks:
  - name: hello
    image: ubuntu
    command: [sh, -c, 'echo "hello [$RUNNER_SECRET_CANARY] [$GANTRY_RUNNER_TOKEN]"']
"""


async def test_without_bwrap_only_administrators_tasks_run(
    database_url: str, tmp_path: Path
) -> None:
    stack = Stack(database_url, tmp_path)
    await stack.start(runner=False)
    try:
        # Where bwrap is missing (the path a setting points at does not exist), `auto` runs
        # no sandbox: a user's task must fail at once, naming bubblewrap and how to install it.
        await stack.start_runner(GANTRY_SANDBOX_BWRAP=str(tmp_path / "no-such-bwrap"))
        mallory = await _user_token(database_url, "mallory")
        async with stack.client(token=mallory) as client:
            wid = await submit(client, HELLO)
            wf = await wait_for(client, wid, timeout=60)
        assert wf["status"] == "FAILED_START_ERROR", wf
        reason = task_of(wf, "hello")["reason"]
        assert "bubblewrap" in reason and "apt-get install bubblewrap" in reason, reason
        async with stack.client() as admin:
            wid = await submit(admin, HELLO)
            wf = await wait_for(admin, wid, timeout=60)
            log = (await admin.get(f"/api/v1/workflows/{wid}/tasks/hello/logs")).text
        assert wf["status"] == "COMPLETED", wf
        assert log == "hello [] []\n", "the runner's environment must not reach tasks"
        runner_log = (tmp_path / "runner.log").read_text()
        assert "only administrators' tasks run" in runner_log
    finally:
        await stack.stop()


async def test_sandbox_none_is_an_explicit_opt_out_with_a_warning(
    database_url: str, tmp_path: Path
) -> None:
    stack = Stack(database_url, tmp_path)
    await stack.start(runner=False)
    try:
        await stack.start_runner(GANTRY_SANDBOX="none")
        async with stack.client() as admin:
            wid = await submit(admin, HELLO)
            wf = await wait_for(admin, wid, timeout=60)
            log = (await admin.get(f"/api/v1/workflows/{wid}/tasks/hello/logs")).text
        assert wf["status"] == "COMPLETED", wf
        assert log == "hello [] []\n", "the runner's environment must not reach tasks"
        runner_log = (tmp_path / "runner.log").read_text()
        assert "WARNING" in runner_log and "GANTRY_SANDBOX=none" in runner_log
    finally:
        await stack.stop()


async def test_runner_reads_its_token_from_a_file(database_url: str, tmp_path: Path) -> None:
    token_file = tmp_path / "runner-token"
    token_file.write_text(RUNNER_TOKEN + "\n")
    token_file.chmod(0o600)
    stack = Stack(database_url, tmp_path)
    await stack.start(runner=False)
    try:
        # The plain variable is empty: the runner must use the file.
        await stack.start_runner(GANTRY_RUNNER_TOKEN="", GANTRY_RUNNER_TOKEN_FILE=str(token_file))
        assert stack.runner is not None
        environ = Path(f"/proc/{stack.runner.pid}/environ").read_bytes()
        assert RUNNER_TOKEN.encode() not in environ
    finally:
        await stack.stop()


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[-1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


@pytest.mark.slow
async def test_gantry_dev_keeps_secrets_out_of_its_childrens_environment(tmp_path: Path) -> None:
    data = tmp_path / "gantry-data"
    tmp_path.chmod(0o755)  # the embedded server runs as its own system user when we are root
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANTRY_")}
    env.update(
        GANTRY_DATA_DIR=str(data),
        GANTRY_PORT=str(port),
        GANTRY_LOG_LEVEL="WARNING",
        GANTRY_SECRET_KEY="dev-secret-key-from-the-operator",
    )
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
        assert "task isolation: " in text, text  # which isolation is in force, said at start
        token = re.search(r"admin token: (\S+)", text).group(1)  # type: ignore[union-attr]
        runner_token = json.loads((data / "credentials.json").read_text())["runner_token"]
        children = _children(proc.pid)
        assert len(children) >= 2, children  # serve and runner
        for child in children:
            environ = Path(f"/proc/{child}/environ").read_bytes().decode()
            for secret in (token, runner_token, "dev-secret-key-from-the-operator"):
                assert secret not in environ, f"a secret in the environment of {child}"
            names = {kv.split("=", 1)[0] for kv in environ.split("\0") if kv}
            assert not names & {
                "GANTRY_SECRET_KEY", "GANTRY_BOOTSTRAP_ADMIN_TOKEN",
                "GANTRY_BOOTSTRAP_ADMIN_PASSWORD", "GANTRY_RUNNER_TOKEN", "GANTRY_DATABASE_URL",
            }  # fmt: skip
        for path in (data / "secrets").iterdir():
            assert path.stat().st_mode & 0o777 == 0o600, path
        assert (data / "secrets").stat().st_mode & 0o777 == 0o700
        # The files serve: the admin token works, the runner is connected with its file.
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"authorization": f"Bearer {token}"}
        ) as client:
            backends = (await client.get("/api/v1/backends")).json()["items"]
            assert any(b["name"] == "local" and b["connected"] for b in backends)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def test_a_launch_from_an_older_control_plane_counts_as_not_admin() -> None:
    import msgspec

    from runner.protocol import Launch, StreamMessage

    launch = msgspec.json.decode(
        b'{"type":"launch","seq":1,"epoch":1,"attempt":{"id":1,"workflow_id":"w-1","group":"g",'
        b'"group_size":1,"barrier":false,"task":"t","retry":0,"lead":true,"image":"x",'
        b'"command":["true"],"args":[],"environment":{},"files":[],"inputs":[]}}',
        type=StreamMessage,
    )
    assert isinstance(launch, Launch) and launch.owner_admin is False


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    from app.settings import Settings, SettingsError

    files = {}
    for name, value in (
        ("GANTRY_SECRET_KEY", "key-from-file"),
        ("GANTRY_DATABASE_URL", "postgresql://u:p@db/gantry"),
        ("GANTRY_BOOTSTRAP_ADMIN_TOKEN", "gnt_from-file"),
        ("GANTRY_BOOTSTRAP_ADMIN_PASSWORD", "password-from-file"),
    ):
        path = tmp_path / name.lower()
        path.write_text(value + "\n")
        path.chmod(0o600)
        files[f"{name}_FILE"] = str(path)
    settings = Settings.from_env({"GANTRY_DATA_DIR": str(tmp_path), **files})
    assert settings.secret_key == "key-from-file"
    assert settings.database_url == "postgresql://u:p@db/gantry"
    assert settings.bootstrap_admin_token == "gnt_from-file"
    assert settings.bootstrap_admin_password == "password-from-file"
    # The plain variables keep working.
    assert Settings.from_env({"GANTRY_SECRET_KEY": "plain"}).secret_key == "plain"
    with pytest.raises(SettingsError, match="GANTRY_SECRET_KEY_FILE"):
        Settings.from_env({"GANTRY_SECRET_KEY_FILE": str(tmp_path / "missing")})


PRELOAD_C = r"""
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void mark(void) {
    int fd = open(MARKER, O_WRONLY | O_CREAT | O_APPEND, 0666);
    if (fd >= 0) { write(fd, "ran\n", 4); close(fd); }
}
"""


async def test_a_tasks_environment_does_not_reach_the_sandboxs_launcher(
    bwrap: str, hostile_stack: Stack, database_url: str, tmp_path: Path
) -> None:
    """LD_PRELOAD in a task's environment must load nothing before bwrap has isolated it.

    The library lies on the host, readable by anyone, and writes a marker on the host when
    loaded; inside the sandbox neither path exists, so a marker means code ran outside it.
    """
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        _skip_unless_optional("no C compiler to build the preload library")
    host = Path(tempfile.mkdtemp(prefix="gantry-preload-", dir="/opt"))
    try:
        host.chmod(0o777)
        marker = host / "marker"
        source = host / "p.c"
        source.write_text(PRELOAD_C)
        library = host / "p.so"
        subprocess.run(
            [gcc, "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(library), str(source)],
            check=True,
        )
        library.chmod(0o755)
        spec = f"""\
workflow:
  name: preload
  tasks:
  - name: t
    image: x
    command: [sh, -c, "echo task-ran"]
    environment: {{LD_PRELOAD: "{library}", LD_LIBRARY_PATH: "{host}"}}
"""
        mallory = await _user_token(database_url, "mallory")
        async with hostile_stack.client(token=mallory) as client:
            wid = await submit(client, spec)
            wf = await wait_for(client, wid, timeout=90)
            log = (await client.get(f"/api/v1/workflows/{wid}/tasks/t/logs")).text
        assert wf["status"] == "COMPLETED", (wf, log)
        assert "task-ran" in log
        assert not marker.exists(), "the task's LD_PRELOAD ran code outside the sandbox"
    finally:
        shutil.rmtree(host, ignore_errors=True)
