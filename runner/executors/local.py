"""The local executor: each attempt a process on this host, sandboxed with bubblewrap.

Layout of an attempt, under ``<data dir>/attempts/<id>/``: ``launch.json`` (the launch),
``epoch``, ``argv.json`` (what the supervisor starts), ``files/`` (the spec's files),
``output/`` (``{{output}}``), ``stdout`` and ``stderr``, ``pgid``, ``usage.json`` (what its
cgroup's limits did) and ``exit_code`` (written by ``runner.supervise``), ``start_error``, and
``reported`` once the control plane has the end.
A task group's network namespace is held by a process recorded in
``<data dir>/attempts/net-<key>/`` (``pgid``, ``pid``): like an attempt, it outlives the runner.

With bwrap, each attempt runs as an unprivileged user (``sandbox_uid``, 65534 by default; the
runner's own user when the runner is not root) in new user, mount, PID, IPC and UTS namespaces
with no capabilities, in the network namespace of its group. Its root is built from read-only
binds of the host's system folders (so anything can be mounted anywhere), with the runner's and
the control plane's data directories masked where they lie inside them: a private ``/tmp``,
the spec's files at their paths, ``/gantry/output`` and each input read-only at
``/gantry/input/N``. A group's network reaches the outside world through ``pasta`` (user-mode
networking, never the host's loopback) when it is installed, and has only loopback otherwise.

Without a sandbox (``GANTRY_SANDBOX=none``, or ``auto`` where bwrap is missing, which runs only
administrators' tasks) the same layout is rewritten into the attempt directory: file paths,
``/gantry/output`` and ``/gantry/input/N`` in command, args, environment and file contents
point at the real paths. The image is recorded, not pulled. A task sees only its spec's
environment plus PATH, HOME, LANG and GANTRY_* variables describing itself, never the runner's.

In every mode, where a cgroup hierarchy is writable, each attempt runs in cgroups of its own
that limit its processes, memory and CPU (runner/executors/cgroups.py); an attempt killed by
the kernel for its memory ends ``FAILED_EVICTED``, and stopping an attempt kills everything in
its cgroup, also what left its process group.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

import msgspec

from runner.executors import cgroups, timeline
from runner.executors.base import STREAMS, AttemptState, Executor, Held, LogPiece, expand_vars
from runner.executors.disk import DiskLimit
from runner.executors.sandbox import STAGE
from runner.protocol import Capacity, Launch, Node, Stream

__all__ = ("NO_SANDBOX_REASON", "LocalExecutor", "cgroup_prefix", "describe_isolation")

log = logging.getLogger(__name__)

OUTPUT_DIR = "/gantry/output"
INPUT_ROOT = "/gantry/input"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
SANDBOX_ID = 65534  # nobody/nogroup on Debian: owns no file a task could read
NO_SANDBOX_REASON = (
    "this runner has no sandbox: bubblewrap (bwrap) is not installed, so it runs only "
    "administrators' tasks; its operator can install it with `apt-get install bubblewrap` "
    "(and `passt` for outbound network)"
)
_launch_decoder = msgspec.json.Decoder(Launch)
_encoder = msgspec.json.Encoder()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class LocalExecutor(Executor):
    disk = DiskLimit()  # GANTRY_MAX_ATTEMPT_DISK_BYTES; runner/__main__.py sets its own

    def __init__(
        self,
        data_dir: Path,
        slots: int = 16,
        *,
        sandbox: str = "auto",
        platform: str | None = None,
        bwrap: str | None = None,
        pasta: str | None = None,
        sandbox_uid: int = SANDBOX_ID,
        sandbox_gid: int = SANDBOX_ID,
        mask: tuple[Path, ...] = (),
        max_processes: int = cgroups.DEFAULT_MAX_PROCESSES,
    ) -> None:
        """``bwrap``/``pasta``: their paths (default: found on PATH; a missing file counts as
        not installed, ``""`` switches pasta off). ``mask``: more folders tasks must not see
        (the control plane's data directory); this runner's own data directory always is.
        ``max_processes``: an attempt's pids limit (GANTRY_TASK_MAX_PROCESSES)."""
        # Absolute: tasks and their supervisors run elsewhere, so a relative directory (the
        # default `.gantry/runner-<backend>`) made every task fail to find its argv.json.
        data_dir = data_dir.resolve()
        self.root = data_dir / "attempts"
        # Per attempt, where in its timeline the records not yet shipped begin.
        self._timeline_at: dict[int, int] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)  # every attempt's files: nobody but the runner walks in here
        self.slots = slots
        self.platform = platform
        self.sandbox = sandbox
        found = _executable(bwrap if bwrap is not None else shutil.which("bwrap"))
        if sandbox == "none" or (sandbox == "auto" and found is None):
            self.bwrap = None
        elif found is None:
            raise RuntimeError("GANTRY_SANDBOX=bwrap but bwrap is not installed")
        else:
            self.bwrap = found
        self.pasta = _executable(pasta if pasta is not None else shutil.which("pasta"))
        # As root, tasks (and the network holders) run as the sandbox user; otherwise the
        # runner's user, which a user namespace can map but not change.
        self.as_root = os.geteuid() == 0
        self.uid, self.gid = sandbox_uid, sandbox_gid
        self.masks = tuple({p.resolve() for p in (data_dir, *mask)})
        self._stoppers: dict[int, asyncio.Task[None]] = {}
        self._net_locks: dict[str, asyncio.Lock] = {}
        self.max_processes = max_processes
        # Several runners may share a host (and its gantry-tasks parent): names carry the
        # data directory's.
        self.cgroup_prefix = cgroup_prefix(data_dir)
        self._recovered = False
        hierarchy = cgroups.detect()
        if not isinstance(hierarchy, str):
            try:
                hierarchy.prepare()
            except OSError as exc:
                hierarchy = f"could not set up the tasks' parent cgroup: {exc}"
        self.cgroups = None if isinstance(hierarchy, str) else hierarchy
        self.limits_unenforced = hierarchy if isinstance(hierarchy, str) else None

    @property
    def isolation(self) -> str:
        """What protects the host from tasks, in a sentence for logs and `gantry dev`."""
        if self.cgroups is not None:
            limits = self.cgroups.describe(self.max_processes)
        else:
            limits = f"resource limits NOT enforced: {self.limits_unenforced}"
        return describe_isolation(self.sandbox, self.bwrap, self.pasta, limits)

    async def open(self) -> None:
        if not self._recovered:
            self._recovered = True
            await asyncio.to_thread(self._remove_stale_cgroups)

    async def close(self) -> None:
        if self.cgroups is not None:
            self.cgroups.remove_parents()  # only where no attempt is left in them

    def _remove_stale_cgroups(self) -> None:
        """After a restart: cgroups of attempts whose supervisor is gone (killed with the
        host's processes, or before it could clean up) are emptied and removed."""
        if self.cgroups is None:
            return
        for name, cg in self.cgroups.attempts(self.cgroup_prefix).items():
            attempt = name.removeprefix(self.cgroup_prefix)
            d = self._dir(int(attempt)) if attempt.isdigit() else None
            supervisor = _read_int(d / "supervisor") if d is not None else None
            if supervisor is not None and d is not None and _is_supervisor(supervisor, d):
                continue
            _drop_cgroup(cg)

    def _cgroup_of(self, attempt: int) -> cgroups.AttemptCgroup | None:
        try:
            spec = json.loads((self._dir(attempt) / "argv.json").read_bytes())
            return cgroups.AttemptCgroup.from_json(spec["cgroup"]) if spec.get("cgroup") else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _dir(self, attempt: int) -> Path:
        return self.root / str(attempt)

    async def capacity(self) -> Capacity:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        node = Node(
            name=socket.gethostname(),
            cpu=float(cpus or 1),
            memory=cgroups.host_memory_bytes(),
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
            if self.bwrap is None and self.sandbox != "none" and not launch.owner_admin:
                raise _StartError(NO_SANDBOX_REASON)
            argv, env, cwd = self._layout(d, launch)
            box = await self._sandbox(d, launch, argv) if self.bwrap is not None else None
            group = self._cgroup(attempt, launch)
        except _StartError as exc:
            (d / "start_error").write_text(str(exc))
            return AttemptState(False, None, "FAILED_START_ERROR", str(exc))
        # The supervisor moves the task into ``cgroup`` before it execs (runner.supervise).
        spec = {"argv": argv, "env": env, "cwd": cwd, "sandbox": box, "cgroup": group}
        _write_atomic(d / "argv.json", json.dumps(spec).encode())
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

    def _cgroup(self, attempt: int, launch: Launch) -> dict[str, object] | None:
        if self.cgroups is None:
            return None
        a = launch.attempt
        try:
            cg = self.cgroups.create(
                f"{self.cgroup_prefix}{attempt}",
                memory=a.memory,
                cpu=a.cpu,
                max_processes=self.max_processes,
            )
        except OSError as exc:
            raise _StartError(f"could not create the attempt's cgroup: {exc}") from None
        return cg.to_json()

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
        """bwrap's arguments; each bind source is a ``\0<path>`` token that ``_sandbox``
        resolves (staged under ``STAGE`` when the runner is root)."""
        assert self.bwrap is not None
        # The user namespace maps one non-root uid and gid; --cap-drop ALL leaves no
        # capability in it, and --disable-userns forbids nesting one with new capabilities.
        # No --unshare-net: the task joins its group's network namespace before bwrap runs.
        uid, gid = (self.uid, self.gid) if self.as_root else (SANDBOX_ID, SANDBOX_ID)
        args = [self.bwrap, "--unshare-user", "--disable-userns", "--uid", str(uid)]
        args += ["--gid", str(gid), "--cap-drop", "ALL"]
        args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        bound = []
        for path in _SYSTEM_DIRS:
            if os.path.isdir(path) and not os.path.islink(path):
                args += ["--ro-bind", path, path]
                bound.append(Path(path).resolve())
            elif os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
        # A data directory inside a bound folder (/opt/gantry, /etc/gantry) is covered by
        # an empty tmpfs: its secrets and other attempts' files stay out of sight.
        for mask in sorted(self.masks):
            point = self._mask_point(mask) if any(mask.is_relative_to(b) for b in bound) else None
            if point is not None:
                args += ["--tmpfs", str(point)]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]
        args += ["--dir", "/gantry", "--bind", f"\0{output}", OUTPUT_DIR]
        for i, src in sorted(inputs.items()):
            args += ["--ro-bind", f"\0{src}", f"{INPUT_ROOT}/{i}"]
        for src, path in staged:
            args += ["--ro-bind", f"\0{src}", path]
        args += ["--chdir", "/"]
        return args

    def _mask_point(self, path: Path) -> Path | None:
        """Where to mount the tmpfs that hides ``path``: the path itself, or its first folder
        that the task's user may not search (bwrap, running as that user, could not reach
        below it to mount; the task cannot either, and masking it hides its name too).
        None when it does not exist: there is nothing to hide."""
        uid, gid = (self.uid, self.gid) if self.as_root else (os.getuid(), os.getgid())
        for folder in [*reversed(path.parents[:-1]), path]:
            try:
                st = folder.stat()
            except OSError:
                return None
            bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
            if not st.st_mode & bit:
                return folder
        return path

    async def _sandbox(self, d: Path, launch: Launch, argv: list[str]) -> dict[str, object]:
        """Resolve the bind sources in ``argv`` (in place) and say how ``enter`` gets in."""
        stage: list[str] = []
        for i, arg in enumerate(argv):
            if arg.startswith("\0"):
                source = arg[1:]
                if self.as_root:
                    argv[i] = f"{STAGE}/{len(stage)}"
                    stage.append(source)
                else:
                    argv[i] = source
        if self.as_root:
            output = d / "output"
            os.chown(output, self.uid, self.gid)  # the task's only writable folder
            for f in (d / "files").iterdir():
                f.chmod(0o644)
        pid = await self._network(launch)
        return {
            "netns_pid": pid,
            "join_userns": not self.as_root,
            "stage": stage,
            "uid": self.uid if self.as_root else None,
            "gid": self.gid if self.as_root else None,
        }

    async def _network(self, launch: Launch) -> int:
        """The pid of a process in the network namespace of the launch's task group.

        bwrap 0.8 cannot join a network namespace, and a namespace lives only while a process
        is in it, so each group on this host gets a holder process (a sleeping shell) in one;
        its tasks join it before bwrap runs (``runner.executors.sandbox.enter``), so they
        share loopback as a pod's containers do and ``{{host:<task>}}`` is 127.0.0.1. With
        pasta, pasta starts the holder in a new user and network namespace and forwards its
        outbound connections from the host's sockets, with ``--no-map-gw`` (the gateway
        address is not the host's loopback) and no port forwarded either way; without pasta,
        bwrap starts it with only loopback. The holder ends with the group (``forget``).
        """
        key = _net_key(launch)
        # The tasks of a group start together: one of them creates the holder.
        async with self._net_locks.setdefault(key, asyncio.Lock()):
            return await self._holder(key)

    async def _holder(self, key: str) -> int:
        d = self.root / f"net-{key}"
        name = f"gantry-net-{key}"
        pid, pgid = _read_int(d / "pid"), _read_int(d / "pgid")
        if pid is not None and pgid is not None and _holder_of(pgid, name) == pid:
            return pid
        if pgid is not None:
            _signal_group(pgid, signal.SIGKILL)  # what is left of a broken holder
        d.mkdir(exist_ok=True)
        # sh stays (no exec) so that its command line keeps the name.
        holder = ["/bin/sh", "-c", 'echo "$$"; while sleep 86400; do :; done', name]
        if self.pasta is not None:
            prefix = [self.pasta, "--config-net", "--no-map-gw", "-t", "none", "-u", "none"]
            prefix += ["-T", "none", "-U", "none", "--quiet", "--foreground", "--"]
        else:
            assert self.bwrap is not None
            prefix = [self.bwrap, "--unshare-net", "--ro-bind", "/", "/", "--dev", "/dev", "--"]
        as_user = {"user": self.uid, "group": self.gid, "extra_groups": []} if self.as_root else {}
        with open(d / "log", "ab") as errors:  # noqa: ASYNC230 - opening a local file
            proc = await asyncio.create_subprocess_exec(
                *prefix,
                *holder,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=errors,
                start_new_session=True,
                cwd="/",
                env={"PATH": DEFAULT_PATH},
                **as_user,  # type: ignore[arg-type]
            )
        _write_atomic(d / "pgid", str(proc.pid).encode())
        asyncio.get_running_loop().create_task(proc.wait())
        assert proc.stdout is not None
        try:
            # The holder prints its pid once its network is configured; pasta gives it a PID
            # namespace of its own, so that pid is 1: look it up in the process group we
            # started (only there: a task could name a process of its own like a holder).
            int(await asyncio.wait_for(proc.stdout.readline(), 15))
            pid = _holder_of(proc.pid, name)
            if pid is None:
                raise ValueError("the holder process vanished")
        except (TimeoutError, ValueError):
            _signal_group(proc.pid, signal.SIGKILL)
            tail = (d / "log").read_text(errors="replace")[-500:].strip()
            raise _StartError(f"could not create the task group's network: {tail}") from None
        _write_atomic(d / "pid", str(pid).encode())
        return pid

    def _release_network(self, launch: Launch) -> None:
        """Stop the group's holder once no attempt of the group is held here."""
        a = launch.attempt
        key = _net_key(launch)
        d = self.root / f"net-{key}"
        if not d.exists():
            return
        for other in self.root.iterdir():
            if other.name.startswith("net-") or (other / "reported").exists():
                continue
            try:
                o = _launch_decoder.decode((other / "launch.json").read_bytes()).attempt
            except (OSError, msgspec.DecodeError):
                continue
            if (o.workflow_id, o.group) == (a.workflow_id, a.group):
                return
        pgid = _read_int(d / "pgid")
        if pgid is not None:
            _signal_group(pgid, signal.SIGKILL)  # the holder is PID 1 of pasta's namespace
        shutil.rmtree(d, ignore_errors=True)
        self._net_locks.pop(key, None)

    async def state(self, attempt: int) -> AttemptState:
        d = self._dir(attempt)
        if (evicted := await self.disk.check(attempt, d, self.stop)) is not None:
            return AttemptState(False, None, "FAILED_EVICTED", evicted)
        code = _read_int(d / "exit_code")
        if code is not None:
            error = _read_text(d / "start_error")
            if error:
                return AttemptState(False, None, "FAILED_START_ERROR", error)
            cap = self.cgroups.memory_cap if self.cgroups is not None else 0
            if code != 0 and (oom := _oom_reason(d, cap)) is not None:
                return AttemptState(False, code, "FAILED_EVICTED", oom)
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
            await self._kill_cgroup(attempt)
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
            await self._kill_cgroup(attempt)
        finally:
            self._stoppers.pop(attempt, None)

    async def _kill_cgroup(self, attempt: int) -> None:
        """Everything in the attempt's cgroup, also what setsid() took out of its group.
        (When the task's group ends within the grace, its supervisor kills the rest.)"""
        cg = self._cgroup_of(attempt)
        if cg is not None:
            await asyncio.to_thread(cg.kill)

    async def read_logs(
        self, attempt: int, offsets: dict[Stream, int], limit: int, max_pieces: int
    ) -> list[LogPiece]:
        """Both streams in the order the task wrote them, from the supervisor's timeline
        (runner/supervise.py): each record ``o|e END TIME_NS`` says that the task's stdout (o)
        or stderr (e) reached byte END in a window that began at TIME_NS. Records of one
        stream close together in time are joined into one piece. Attempts started before the
        timeline existed fall back to each stream on its own."""
        d = self._dir(attempt)
        if not (d / "timeline").exists():
            return await super().read_logs(attempt, offsets, limit, max_pieces)
        files: dict[Stream, Path] = {stream: d / stream for stream in STREAMS}
        pieces, self._timeline_at[attempt] = timeline.read(
            d / "timeline", files, offsets, limit, max_pieces, self._timeline_at.get(attempt, 0)
        )
        if not pieces and (d / "exit_code").exists():
            # Ended: bytes the supervisor wrote but did not record (it was killed within a
            # window) go too, each stream on its own.
            return await super().read_logs(attempt, offsets, limit, max_pieces)
        return pieces

    async def read_log(self, attempt: int, stream: str, offset: int, limit: int) -> bytes:
        # A local file read of at most `limit` bytes: cheaper inline than in a thread.
        try:
            with open(self._dir(attempt) / stream, "rb") as f:  # noqa: ASYNC230
                f.seek(offset)
                return f.read(limit)
        except FileNotFoundError:
            return b""

    async def forget(self, attempt: int) -> None:
        self._timeline_at.pop(attempt, None)
        d = self._dir(attempt)
        if d.exists():
            (d / "reported").touch()
            with contextlib.suppress(OSError, msgspec.DecodeError):
                self._release_network(_launch_decoder.decode((d / "launch.json").read_bytes()))
            # Its supervisor removes the cgroup after the task; one it left (killed) goes now.
            cg = self._cgroup_of(attempt)
            supervisor = _read_int(d / "supervisor")
            alive = supervisor is not None and _is_supervisor(supervisor, d)
            if cg is not None and not alive:
                await asyncio.to_thread(_drop_cgroup, cg)


class _StartError(Exception):
    pass


# The supervisor imports `runner`, wherever this copy of the package lives.
_PYTHONPATH = str(Path(__file__).resolve().parents[2])


def describe_isolation(
    sandbox: str, bwrap: str | None, pasta: str | None, limits: str | None = None
) -> str:
    """The isolation a local runner with these settings gives its tasks, in a sentence;
    ``limits``: what its cgroups enforce (default: what a runner started here would)."""
    bwrap, pasta = _executable(bwrap), _executable(pasta)
    limits = cgroups.describe() if limits is None else limits
    if sandbox == "none":
        return (
            "none (GANTRY_SANDBOX=none): tasks run as plain processes of the runner's user; "
            + limits
        )
    if bwrap is None:
        return (
            "none: bubblewrap is not installed, so only administrators' tasks run, as plain "
            f"processes (`apt-get install bubblewrap passt` to sandbox everyone's); {limits}"
        )
    net = "outbound through pasta" if pasta else "loopback only (pasta is not installed)"
    return f"bubblewrap: an unprivileged user and namespaces per task; network {net}; {limits}"


def cgroup_prefix(data_dir: Path) -> str:
    """How the names of this runner's attempt cgroups begin (unique per data directory)."""
    digest = hashlib.sha256(str((data_dir / "attempts").resolve()).encode()).hexdigest()[:12]
    return f"r{digest}-"


def _oom_reason(d: Path, cap: int) -> str | None:
    """Why an attempt that ended failing was the kernel's OOM kill, as Kubernetes says it."""
    try:
        usage = json.loads((d / "usage.json").read_bytes())
        if not usage.get("oom_kill"):
            return None
        memory = _launch_decoder.decode((d / "launch.json").read_bytes()).attempt.memory
    except (OSError, ValueError, msgspec.DecodeError):
        return None
    # Its own limit when it reached it (the peak is page-granular, charged in batches).
    reached = usage.get("memory_peak", 0) >= memory - max(2**20, memory // 100)
    if memory > 0 and (usage.get("memory_limit_hit") or reached):
        return f"killed for using more memory than its limit ({_mib(memory)})"
    return (
        "killed for using more memory than this host leaves to its tasks together "
        f"({_mib(cap)}; ask for memory in the task's resources to get a limit of its own)"
    )


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


def _drop_cgroup(cg: cgroups.AttemptCgroup) -> None:
    with contextlib.suppress(OSError):
        cg.kill()
        cg.remove()


def _executable(path: str | None) -> str | None:
    return path if path and os.path.isfile(path) and os.access(path, os.X_OK) else None


def _holder_of(pgid: int, name: str) -> int | None:
    """The pid of the network holder ``name`` in the process group ``pgid``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[-1].split()[2]) != pgid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            # pasta's own command line names the holder too: the holder is the shell.
            if argv[0] == b"/bin/sh" and name.encode() in argv and _own_netns(entry):
                return int(entry.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


def _own_netns(proc: Path) -> bool:
    """Is ``proc`` in a network namespace other than the runner's (the host's)?"""
    return os.stat(proc / "ns" / "net").st_ino != os.stat("/proc/self/ns/net").st_ino


def _hosts(text: str, hosts: list[str]) -> str:
    """``{{host:<task>}}``: tasks of a group share one network namespace (or the host's)."""
    if "{{host:" not in text:
        return text
    for name in hosts:
        text = text.replace(f"{{{{host:{name}}}}}", "127.0.0.1")
    return text


def _rewrite(text: str, moves: dict[str, str]) -> str:
    for src in sorted(moves, key=len, reverse=True):
        text = text.replace(src, moves[src])
    return text


def _net_key(launch: Launch) -> str:
    """The name of the launch's task group's network on this host."""
    a = launch.attempt
    return hashlib.sha256(f"{a.workflow_id}\0{a.group}".encode()).hexdigest()[:24]


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
