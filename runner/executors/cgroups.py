"""Processes, memory and CPU of the local executor's tasks, enforced with cgroups (v1 or v2).

All tasks of a host sit under one parent cgroup, ``gantry-tasks``, nested in the runner's own
cgroup for each controller (``/proc/self/cgroup``). The parent caps them together below the
host: memory at the host's (or the runner's cgroup's) memory minus a reserve, so that the kernel
OOM-kills inside tasks and never the runner or a control plane beside it; processes at a
quarter of ``kernel.pid_max``; CPU at half the default weight, so the host's own processes
come first. Each attempt gets a child: its requested memory, its requested CPU as a quota,
and at most ``GANTRY_TASK_MAX_PROCESSES`` processes. The supervisor puts the task in it before
exec (``runner.supervise``), so nothing forked early escapes; when the task ends it kills what
is left in the cgroup, records what the limits did (``usage.json``) and removes it.

cgroup v1 (one mount per controller): ``pids.max``, ``memory.limit_in_bytes`` (and
``memory.memsw.limit_in_bytes`` where swap is accounted), ``cpu.cfs_quota_us``/``cpu.shares``;
OOM kills are counted in ``memory.oom_control``. cgroup v2 (one unified tree): ``pids.max``,
``memory.max`` (``memory.swap.max`` 0, ``memory.oom.group`` 1), ``cpu.max``/``cpu.weight``,
``memory.events``. v2's no-internal-process rule (a cgroup other than the root that has
processes cannot enable controllers for its children) is met by moving the runner alone into a
leaf ``gantry-runner`` first; if other processes share its cgroup, v2 limits are not enforced
and the reason says so (run the runner in a cgroup of its own, e.g. systemd's
``Delegate=yes``).

Where no hierarchy is writable (a runner that is not root, without delegation) nothing is
enforced: ``detect`` returns the reason, which the runner logs and ``gantry dev`` prints.
Stdlib only: the supervisor imports this module.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = (
    "CONTROLLERS",
    "DEFAULT_MAX_PROCESSES",
    "PARENT",
    "AttemptCgroup",
    "Cgroups",
    "describe",
    "detect",
    "host_memory_bytes",
    "memory_reserve",
)

CONTROLLERS = ("pids", "memory", "cpu")
PARENT = "gantry-tasks"  # every task of the host, capped together
RUNNER_LEAF = "gantry-runner"  # v2: where the runner moves itself (no-internal-process rule)
DEFAULT_MAX_PROCESSES = 1024
CPU_PERIOD = 100_000  # microseconds: the kernel's default CFS period
PARENT_CPU_SHARES = 512  # v1: the default is 1024
PARENT_CPU_WEIGHT = 50  # v2: the default is 100
_MiB = 1024**2
_GiB = 1024**3


def memory_reserve(total: int) -> int:
    """What the tasks together leave to the host: an eighth, at least 512 MiB, at most 4 GiB."""
    return min(max(total // 8, 512 * _MiB), 4 * _GiB)


def _write(path: Path, value: str) -> None:
    # One write(2) per value: cgroup files take a value per write, not a stream.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _keyed(path: Path, key: str) -> int:
    """The number after ``key`` in a flat-keyed file (``memory.events``, ``cpu.stat``)."""
    for line in (_read(path) or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            with contextlib.suppress(ValueError):
                return int(parts[1])
    return 0


def _number(path: Path) -> int:
    try:
        return int((_read(path) or "0").strip())
    except ValueError:
        return 0


def _limit(text: str | None) -> int | None:
    """A memory limit file's value; None for none ("max", or v1's huge page-aligned max)."""
    if text is None or text.strip() in ("", "max"):
        return None
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return None if value >= 2**62 else value


def host_memory_bytes() -> int:
    """MemTotal, in bytes (0 when /proc does not say)."""
    for line in (_read(Path("/proc/meminfo")) or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def _pid_max() -> int:
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return 32768


@dataclass(frozen=True)
class AttemptCgroup:
    """One attempt's cgroups: a directory per controller (the same one on v2)."""

    version: int
    paths: dict[str, Path]

    @property
    def dirs(self) -> list[Path]:
        return sorted(set(self.paths.values()))

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "paths": {c: str(p) for c, p in self.paths.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttemptCgroup:
        return cls(int(data["version"]), {c: Path(p) for c, p in data["paths"].items()})

    def join(self, pid: int) -> None:
        """Move ``pid`` into every controller's cgroup (the task's, before it execs)."""
        for d in self.dirs:
            _write(d / "cgroup.procs", str(pid))

    def procs(self) -> set[int]:
        pids: set[int] = set()
        for d in self.dirs:
            for line in (_read(d / "cgroup.procs") or "").split():
                with contextlib.suppress(ValueError):
                    pids.add(int(line))
        return pids

    def kill(self, timeout: float = 10.0) -> bool:
        """SIGKILL everything in the cgroup, also what left the task's process group (setsid);
        True once it is empty. A fork bomb forks no faster than this kills: pids.max holds."""
        for d in self.dirs:
            if (d / "cgroup.kill").exists():  # v2, Linux 5.14+: the kernel does it at once
                with contextlib.suppress(OSError):
                    _write(d / "cgroup.kill", "1")
        deadline = time.monotonic() + timeout
        while True:
            pids = self.procs()
            if not pids:
                return True
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def usage(self) -> dict[str, int]:
        """What the limits did, read before the cgroup goes: OOM kills, hits of the memory
        limit, CPU throttling periods, forks refused by pids.max."""
        memory, pids, cpu = self.paths.get("memory"), self.paths.get("pids"), self.paths.get("cpu")
        out = dict.fromkeys(
            ("oom_kill", "memory_limit_hit", "memory_peak", "nr_throttled", "pids_max_hit"), 0
        )
        if memory is not None:
            if self.version == 1:
                out["oom_kill"] = _keyed(memory / "memory.oom_control", "oom_kill")
                # With memsw limited too, neither failcnt counts on 6.x: the peak tells.
                out["memory_limit_hit"] = sum(
                    _number(memory / name) for name in ("memory.failcnt", "memory.memsw.failcnt")
                )
                out["memory_peak"] = _number(memory / "memory.max_usage_in_bytes")
            else:
                out["oom_kill"] = _keyed(memory / "memory.events", "oom_kill")
                out["memory_limit_hit"] = _keyed(memory / "memory.events", "max")
                out["memory_peak"] = _number(memory / "memory.peak")  # Linux 5.19+
        if cpu is not None:
            out["nr_throttled"] = _keyed(cpu / "cpu.stat", "nr_throttled")
        if pids is not None:
            out["pids_max_hit"] = _keyed(pids / "pids.events", "max")
        return out

    def remove(self, timeout: float = 5.0) -> None:
        """Remove the (empty) cgroups. The parent stays (the runner removes it when it stops):
        removing it whenever it was empty raced other attempts being created in it, and 20
        short tasks at once failed FAILED_START_ERROR under load (CI)."""
        for d in self.dirs:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    # EBUSY while the killed processes are being reaped.
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


@dataclass
class Cgroups:
    """A writable hierarchy: where each controller's ``gantry-tasks`` parent lies."""

    version: int
    bases: dict[str, Path]  # controller → the runner's own cgroup (v2: the same for all)
    move_self: bool = False  # v2: the runner must move into a leaf before enabling controllers
    memory_cap: int = 0
    pids_cap: int = 0
    missing: tuple[str, ...] = field(default=())

    def parent(self, controller: str) -> Path:
        return self.bases[controller] / PARENT

    def prepare(self) -> None:
        """Create the parents with their caps (again, if the last attempt removed them)."""
        if self.version == 1:
            self._prepare_v1()
        else:
            self._prepare_v2()

    def _prepare_v1(self) -> None:
        for c, base in self.bases.items():
            parent = base / PARENT
            with contextlib.suppress(FileExistsError):
                os.mkdir(parent)
            if c == "memory":
                # Only a hierarchical memory cgroup caps its children (always so since 6.x).
                if (_read(parent / "memory.use_hierarchy") or "1").strip() == "0":
                    with contextlib.suppress(OSError):
                        _write(parent / "memory.use_hierarchy", "1")
                _set_v1_memory(parent, self.memory_cap)
            elif c == "pids":
                _write(parent / "pids.max", str(self.pids_cap))
            elif c == "cpu":
                _write(parent / "cpu.shares", str(PARENT_CPU_SHARES))

    def _prepare_v2(self) -> None:
        base = next(iter(self.bases.values()))
        enable = " ".join(f"+{c}" for c in self.bases)
        if self.move_self:
            # No internal processes: the runner (alone in its cgroup, checked by detect)
            # moves into a leaf; its supervisors, started later, are born there.
            leaf = base / RUNNER_LEAF
            with contextlib.suppress(FileExistsError):
                os.mkdir(leaf)
            _write(leaf / "cgroup.procs", str(os.getpid()))
            self.move_self = False
        _write(base / "cgroup.subtree_control", enable)
        parent = base / PARENT
        with contextlib.suppress(FileExistsError):
            os.mkdir(parent)
        _write(parent / "cgroup.subtree_control", enable)
        if "memory" in self.bases:
            _write(parent / "memory.max", str(self.memory_cap))
        if "pids" in self.bases:
            _write(parent / "pids.max", str(self.pids_cap))
        if "cpu" in self.bases:
            _write(parent / "cpu.weight", str(PARENT_CPU_WEIGHT))

    def create(self, name: str, *, memory: int, cpu: float, max_processes: int) -> AttemptCgroup:
        """An attempt's cgroups with its limits (``memory`` bytes and ``cpu`` cores: 0 = not
        requested, only the parent's caps apply). Created anew: leftovers are cleared first."""
        for tries in range(10):
            try:
                self.prepare()
                paths = {c: self.parent(c) / name for c in self.bases}
                for d in sorted(set(paths.values())):
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(d)
                break
            except FileNotFoundError:
                # Another runner of this host stopped and removed the empty parent meanwhile.
                if tries == 9:
                    raise
        cg = AttemptCgroup(self.version, paths)
        processes = str(min(max_processes, self.pids_cap) if self.pids_cap else max_processes)
        if "pids" in paths:
            _write(paths["pids"] / "pids.max", processes)
        if "memory" in paths and memory > 0:
            if self.version == 1:
                _set_v1_memory(paths["memory"], memory)
            else:
                _write(paths["memory"] / "memory.max", str(memory))
                if (paths["memory"] / "memory.swap.max").exists():
                    _write(paths["memory"] / "memory.swap.max", "0")
        if "memory" in paths and self.version == 2:
            # The whole attempt is killed on OOM, as a pod's container is (Kubernetes 1.28+).
            _write(paths["memory"] / "memory.oom.group", "1")
        if "cpu" in paths and cpu > 0:
            quota = max(1000, int(cpu * CPU_PERIOD))
            if self.version == 1:
                _write(paths["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD))
                _write(paths["cpu"] / "cpu.cfs_quota_us", str(quota))
            else:
                _write(paths["cpu"] / "cpu.max", f"{quota} {CPU_PERIOD}")
        return cg

    def attempts(self, prefix: str) -> dict[str, AttemptCgroup]:
        """The attempt cgroups under the parents whose names start with ``prefix``."""
        found: dict[str, dict[str, Path]] = {}
        for c in self.bases:
            with contextlib.suppress(OSError):
                for entry in os.scandir(self.parent(c)):
                    if entry.is_dir(follow_symlinks=False) and entry.name.startswith(prefix):
                        found.setdefault(entry.name, {})[c] = Path(entry.path)
        return {name: AttemptCgroup(self.version, paths) for name, paths in found.items()}

    def remove_parents(self) -> None:
        """Remove the parents if no attempt is in them (a runner stopping, tests)."""
        for c in self.bases:
            with contextlib.suppress(OSError):
                os.rmdir(self.parent(c))

    def describe(self, max_processes: int) -> str:
        enforced = ", ".join(
            {"pids": "processes", "memory": "memory", "cpu": "CPU"}[c] for c in self.bases
        )
        text = (
            f"cgroup v{self.version} limits {enforced} per task (memory and CPU as requested, "
            f"at most {max_processes} processes); all tasks together at most "
        )
        caps = []
        if "memory" in self.bases:
            caps.append(f"{self.memory_cap // _MiB} MiB")
        if "pids" in self.bases:
            caps.append(f"{self.pids_cap} processes")
        text += " and ".join(caps) or "what the host has"
        if "cpu" in self.bases:
            text += ", at a lower CPU priority than the host's own processes"
        if self.missing:
            text += f" ({', '.join(self.missing)} NOT limited: no writable controller)"
        return text


def _set_v1_memory(d: Path, limit: int) -> None:
    """v1's memory limit, and the same for memory plus swap where swap is accounted (so the
    limit cannot be dodged by swapping). memsw must stay ≥ the limit: the order depends on
    whether it is raised or lowered, so try one order and then the other."""
    memsw = d / "memory.memsw.limit_in_bytes"
    has_memsw = memsw.exists()
    try:
        _write(d / "memory.limit_in_bytes", str(limit))
    except OSError:
        if not has_memsw:
            raise
        _write(memsw, str(limit))
        _write(d / "memory.limit_in_bytes", str(limit))
        return
    if has_memsw:
        _write(memsw, str(limit))


@dataclass(frozen=True)
class _Mount:
    root: str
    point: Path
    fstype: str
    options: frozenset[str]


def _mounts(mountinfo: str) -> list[_Mount]:
    out = []
    for line in mountinfo.splitlines():
        before, sep, after = line.partition(" - ")
        if not sep:
            continue
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        point = fields[4].replace("\\040", " ")
        out.append(_Mount(fields[3], Path(point), tail[0], frozenset(tail[2].split(","))))
    return out


def _within(mount: _Mount, path: str) -> Path | None:
    """The directory of cgroup ``path`` (as /proc/self/cgroup names it) under ``mount``."""
    root = mount.root.rstrip("/")
    if path != root and not path.startswith(root + "/"):
        return None  # mounted from below our cgroup: it is not reachable here
    return mount.point / path[len(root) :].lstrip("/")


def detect(
    *,
    mountinfo: str | None = None,
    self_cgroup: str | None = None,
    pid: int | None = None,
    host_memory: int | None = None,
    pid_max: int | None = None,
) -> Cgroups | str:
    """The writable hierarchy this process may nest tasks under, or why there is none.
    The keyword arguments replace what is read from /proc (tests give a fake cgroupfs)."""
    if mountinfo is None:
        mountinfo = _read(Path("/proc/self/mountinfo")) or ""
    if self_cgroup is None:
        self_cgroup = _read(Path("/proc/self/cgroup")) or ""
    pid = os.getpid() if pid is None else pid
    mounts = _mounts(mountinfo)
    mine: dict[str, str] = {}  # controller (or "" for v2) → our cgroup's path
    for line in self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for c in parts[1].split(",") if parts[1] else [""]:
                mine[c] = parts[2]
    v1: dict[str, Path] = {}
    for c in CONTROLLERS:
        mount = next((m for m in mounts if m.fstype == "cgroup" and c in m.options), None)
        if mount is not None and c in mine:
            d = _within(mount, mine[c])
            if d is not None and d.is_dir():
                v1[c] = d
    total = host_memory_bytes() if host_memory is None else host_memory
    found: Cgroups | str
    if v1:
        writable = {c: d for c, d in v1.items() if os.access(d, os.W_OK)}
        if not writable:
            return (
                "the runner may not create cgroups (cgroup v1 under "
                f"{sorted(v1.values())[0].parent}; run it as root or delegate a cgroup to it)"
            )
        found = Cgroups(1, writable, missing=tuple(c for c in CONTROLLERS if c not in writable))
        if "memory" in writable:
            own = _limit(_read(writable["memory"] / "memory.limit_in_bytes"))
            total = min(total, own) if own else total
    else:
        found = _detect_v2(mounts, mine.get(""), pid)
        if isinstance(found, str):
            return found
        own = _limit(_read(found.bases[next(iter(found.bases))] / "memory.max"))
        total = min(total, own) if own else total
    found.memory_cap = max(total - memory_reserve(total), 64 * _MiB)
    found.pids_cap = max((_pid_max() if pid_max is None else pid_max) // 4, 64)
    return found


def _detect_v2(mounts: list[_Mount], path: str | None, pid: int) -> Cgroups | str:
    mount = next((m for m in mounts if m.fstype == "cgroup2"), None)
    if mount is None or path is None:
        return "no cgroup hierarchy is mounted (neither v1 controllers nor v2)"
    own = _within(mount, path)
    if own is None or not own.is_dir():
        return f"the runner's cgroup {path} is not visible under {mount.point}"
    # A runner restarted inside its own leaf nests beside it, in the cgroup it delegated.
    base = own.parent if own.name == RUNNER_LEAF and own != mount.point else own
    available = set((_read(base / "cgroup.controllers") or "").split())
    controllers = [c for c in CONTROLLERS if c in available]
    if not controllers:
        return (
            f"cgroup v2 at {mount.point} offers the runner's cgroup none of the pids, memory "
            "and cpu controllers (enable them in its parent's cgroup.subtree_control)"
        )
    if not os.access(base, os.W_OK) or not os.access(base / "cgroup.subtree_control", os.W_OK):
        return (
            f"the runner may not create cgroups under {base} (cgroup v2; run it as root or "
            "delegate its cgroup to it, e.g. systemd's Delegate=yes)"
        )
    is_root = base == mount.point
    move_self = False
    if not is_root and base == own:
        others = {int(p) for p in (_read(base / "cgroup.procs") or "").split()} - {pid}
        if others:
            # The kernel's no-internal-process rule: this cgroup cannot give its children
            # controllers while it has processes, and those are not ours to move.
            return (
                f"the runner's cgroup {base} (cgroup v2) holds other processes too "
                f"({len(others)}), so it cannot enable controllers for task cgroups; run the "
                "runner in a cgroup of its own (e.g. a systemd unit with Delegate=yes)"
            )
        move_self = True
    missing = tuple(c for c in CONTROLLERS if c not in controllers)
    return Cgroups(2, dict.fromkeys(controllers, base), move_self=move_self, missing=missing)


def describe(max_processes: int = DEFAULT_MAX_PROCESSES) -> str:
    """The resource limits a runner started here would enforce, in a clause (no side effects)."""
    found = detect()
    if isinstance(found, str):
        return f"resource limits NOT enforced: {found}"
    return found.describe(max_processes)
