"""The local executor: each attempt a process on this host, sandboxed with bubblewrap if present.

Layout of an attempt, under ``<data dir>/attempts/<id>/``: ``launch.json`` (the launch),
``epoch``, ``argv.json`` (what the supervisor starts), ``files/`` (the spec's files),
``output/`` (``{{output}}``), ``stdout`` and ``stderr``, ``pgid`` and ``exit_code`` (written by
``runner.supervise``), ``start_error``, and ``reported`` once the control plane has the end.

With bwrap, each attempt gets mount, PID and IPC namespaces whose root is built from read-only
binds of the host's system folders (so anything can be mounted anywhere): a private ``/tmp``,
the spec's files at their paths, ``/gantry/output`` and each input read-only at
``/gantry/input/N``. Without bwrap the same layout is rewritten into the attempt directory:
file paths, ``/gantry/output`` and ``/gantry/input/N`` in command, args, environment and file
contents point at the real paths. The image is recorded, not pulled. A task sees only its
spec's environment plus PATH, HOME, LANG and GANTRY_* variables, never the runner's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

import msgspec

from runner.executors.base import AttemptState, Executor, Held, expand_vars
from runner.executors.disk import DiskLimit
from runner.protocol import Capacity, Launch, Node

__all__ = ("LocalExecutor",)

OUTPUT_DIR = "/gantry/output"
INPUT_ROOT = "/gantry/input"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
_launch_decoder = msgspec.json.Decoder(Launch)
_encoder = msgspec.json.Encoder()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _memory_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class LocalExecutor(Executor):
    disk = DiskLimit()  # GANTRY_MAX_ATTEMPT_DISK_BYTES; runner/__main__.py sets its own

    def __init__(
        self,
        data_dir: Path,
        slots: int = 16,
        *,
        sandbox: str = "auto",
        platform: str | None = None,
    ) -> None:
        self.root = data_dir / "attempts"
        self.root.mkdir(parents=True, exist_ok=True)
        self.slots = slots
        self.platform = platform
        bwrap = shutil.which("bwrap")
        if sandbox == "none" or (sandbox == "auto" and bwrap is None):
            self.bwrap = None
        elif bwrap is None:
            raise RuntimeError("GANTRY_SANDBOX=bwrap but bwrap is not installed")
        else:
            self.bwrap = bwrap
        self._stoppers: dict[int, asyncio.Task[None]] = {}

    def _dir(self, attempt: int) -> Path:
        return self.root / str(attempt)

    async def capacity(self) -> Capacity:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        node = Node(
            name=socket.gethostname(),
            cpu=float(cpus or 1),
            memory=_memory_total(),
            gpu=0,
            platform=self.platform,
        )
        return Capacity(nodes=[node], slots=self.slots)

    async def held(self) -> list[Held]:
        out = []
        for d in sorted(self.root.iterdir(), key=lambda p: p.name):
            launch_file = d / "launch.json"
            if not launch_file.exists() or (d / "reported").exists():
                continue
            try:
                launch = _launch_decoder.decode(launch_file.read_bytes())
                epoch = int((d / "epoch").read_text())
            except (OSError, ValueError, msgspec.DecodeError):
                continue  # a half-written attempt: it was never acknowledged
            out.append(Held(launch, epoch, (d / "argv.json").exists()))
        return out

    async def prepare(self, launch: Launch) -> None:
        d = self._dir(launch.attempt.id)
        d.mkdir(parents=True, exist_ok=True)
        _write_atomic(d / "epoch", str(launch.epoch).encode())
        _write_atomic(d / "launch.json", _encoder.encode(launch))

    async def set_epoch(self, attempt: int, epoch: int) -> None:
        _write_atomic(self._dir(attempt) / "epoch", str(epoch).encode())

    async def start(self, attempt: int) -> AttemptState:
        d = self._dir(attempt)
        if (d / "argv.json").exists():
            return await self.state(attempt)  # started before a runner restart
        launch = _launch_decoder.decode((d / "launch.json").read_bytes())
        try:
            argv, env, cwd = self._layout(d, launch)
        except _StartError as exc:
            (d / "start_error").write_text(str(exc))
            return AttemptState(False, None, "FAILED_START_ERROR", str(exc))
        _write_atomic(d / "argv.json", json.dumps({"argv": argv, "env": env, "cwd": cwd}).encode())
        (d / "stdout").touch()
        (d / "stderr").touch()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "runner.supervise",
            str(d),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            env={"PATH": os.environ.get("PATH", DEFAULT_PATH), "PYTHONPATH": _PYTHONPATH},
        )
        _write_atomic(d / "supervisor", str(proc.pid).encode())
        # Reap the supervisor when it ends while we live; after a restart init reaps it.
        asyncio.get_running_loop().create_task(proc.wait())
        return AttemptState(True)

    def _layout(self, d: Path, launch: Launch) -> tuple[list[str], dict[str, str], str]:
        a = launch.attempt
        output = d / "output"
        output.mkdir(exist_ok=True)
        inputs: dict[int, Path] = {}
        for inp in a.inputs:
            src = self._dir(inp.attempt) / "output"
            if inp.attempt == 0 or not src.is_dir():
                raise _StartError(
                    f"input {inp.index} (the output of task '{inp.task}') is not on this "
                    "runner's host"
                )
            inputs[inp.index] = src
        files_dir = d / "files"
        files_dir.mkdir(exist_ok=True)
        staged: list[tuple[Path, str]] = []
        for i, f in enumerate(a.files):
            data = base64.b64decode(f.contents) if f.base64 else f.contents.encode()
            staged.append((files_dir / str(i), f.path))
            (files_dir / str(i)).write_bytes(data)
        env = {
            "PATH": DEFAULT_PATH,
            "LANG": "C.UTF-8",
            "HOME": "/tmp",
            "GANTRY_WORKFLOW_ID": a.workflow_id,
            "GANTRY_GROUP": a.group,
            "GANTRY_TASK": a.task,
            "GANTRY_RETRY": str(a.retry),
            "GANTRY_ATTEMPT": str(a.id),
            "GANTRY_OUTPUT": OUTPUT_DIR,
        }
        env.update(a.environment)
        command = [_hosts(s, a.hosts) for s in a.command]
        args = [_hosts(s, a.hosts) for s in a.args]
        env = {k: _hosts(v, a.hosts) for k, v in env.items()}
        if self.bwrap is not None:
            argv = [*self._bwrap_args(output, inputs, staged), "--"]
            argv += [expand_vars(s, env) for s in [*command, *args]]
            return argv, env, "/"
        # Plain processes: rewrite the sandbox's paths into the attempt directory.
        root = d / "root"
        moves = {OUTPUT_DIR: str(output)}
        moves.update({f"{INPUT_ROOT}/{i}": str(p) for i, p in inputs.items()})
        targets = [(src, root / path.lstrip("/")) for src, path in staged]
        moves.update(
            {path: str(target) for (_, path), (_, target) in zip(staged, targets, strict=True)}
        )
        for src, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            text = src.read_bytes().decode(errors="surrogateescape")
            target.write_bytes(_rewrite(text, moves).encode(errors="surrogateescape"))
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        env["HOME"] = env["TMPDIR"] = str(root / "tmp")
        env = {k: _rewrite(v, moves) for k, v in env.items()}
        env["GANTRY_OUTPUT"] = str(output)
        argv = [expand_vars(_rewrite(s, moves), env) for s in [*command, *args]]
        return argv, env, str(root)

    def _bwrap_args(
        self, output: Path, inputs: dict[int, Path], staged: list[tuple[Path, str]]
    ) -> list[str]:
        assert self.bwrap is not None
        args = [self.bwrap, "--unshare-pid", "--unshare-ipc"]
        for path in _SYSTEM_DIRS:
            if os.path.isdir(path) and not os.path.islink(path):
                args += ["--ro-bind", path, path]
            elif os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]
        args += ["--dir", "/gantry", "--bind", str(output), OUTPUT_DIR]
        for i, src in sorted(inputs.items()):
            args += ["--ro-bind", str(src), f"{INPUT_ROOT}/{i}"]
        for src, path in staged:
            args += ["--ro-bind", str(src), path]
        args += ["--chdir", "/"]
        return args

    async def state(self, attempt: int) -> AttemptState:
        d = self._dir(attempt)
        if (evicted := await self.disk.check(attempt, d, self.stop)) is not None:
            return AttemptState(False, None, "FAILED_EVICTED", evicted)
        code = _read_int(d / "exit_code")
        if code is not None:
            error = _read_text(d / "start_error")
            if error:
                return AttemptState(False, None, "FAILED_START_ERROR", error)
            return AttemptState(False, code)
        error = _read_text(d / "start_error")
        if error:
            return AttemptState(False, None, "FAILED_START_ERROR", error)
        if not (d / "argv.json").exists():
            return AttemptState(True)  # prepared, not started yet
        supervisor = _read_int(d / "supervisor")
        if supervisor is not None and _is_supervisor(supervisor, d):
            return AttemptState(True)
        # The supervisor may have just written its exit code; look once more.
        code = _read_int(d / "exit_code")
        if code is not None:
            return AttemptState(False, code)
        return AttemptState(
            False, None, "FAILED_BACKEND_ERROR", "the attempt's supervisor process disappeared"
        )

    async def stop(self, attempt: int, grace: float) -> None:
        pgid = _read_int(self._dir(attempt) / "pgid")
        if pgid is None:
            return
        if grace <= 0:
            _signal_group(pgid, signal.SIGKILL)
            return
        _signal_group(pgid, signal.SIGTERM)
        if attempt not in self._stoppers:
            self._stoppers[attempt] = asyncio.get_running_loop().create_task(
                self._kill_after(attempt, pgid, grace)
            )

    async def _kill_after(self, attempt: int, pgid: int, grace: float) -> None:
        try:
            deadline = asyncio.get_running_loop().time() + grace
            while asyncio.get_running_loop().time() < deadline:
                if not _group_alive(pgid):
                    return
                await asyncio.sleep(0.1)
            _signal_group(pgid, signal.SIGKILL)
        finally:
            self._stoppers.pop(attempt, None)

    async def read_log(self, attempt: int, stream: str, offset: int, limit: int) -> bytes:
        # A local file read of at most `limit` bytes: cheaper inline than in a thread.
        try:
            with open(self._dir(attempt) / stream, "rb") as f:  # noqa: ASYNC230
                f.seek(offset)
                return f.read(limit)
        except FileNotFoundError:
            return b""

    async def forget(self, attempt: int) -> None:
        d = self._dir(attempt)
        if d.exists():
            (d / "reported").touch()


class _StartError(Exception):
    pass


# The supervisor imports `runner`, wherever this copy of the package lives.
_PYTHONPATH = str(Path(__file__).resolve().parents[2])


def _hosts(text: str, hosts: list[str]) -> str:
    """``{{host:<task>}}``: tasks of a group share this host's network."""
    if "{{host:" not in text:
        return text
    for name in hosts:
        text = text.replace(f"{{{{host:{name}}}}}", "127.0.0.1")
    return text


def _rewrite(text: str, moves: dict[str, str]) -> str:
    for src in sorted(moves, key=len, reverse=True):
        text = text.replace(src, moves[src])
    return text


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _is_supervisor(pid: int, d: Path) -> bool:
    """Is ``pid`` alive and our supervisor of ``d`` (not a reused pid)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False  # exited, not yet reaped
    return b"runner.supervise" in cmdline and str(d).encode() in cmdline


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
