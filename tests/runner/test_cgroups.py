"""A task's processes, memory and CPU are enforced with cgroups (runner/executors/cgroups.py).

The first tests run real tasks under bubblewrap in this machine's real cgroups (the real
runner, in this event loop, against the real control plane). They are skipped, saying why,
only where no cgroup hierarchy is writable or bwrap is missing, and fail instead under
GANTRY_REQUIRE_SANDBOX=1 (as `.ci/run` sets it). cgroup v2 cannot be exercised for real on a
v1 host, so its file writes are checked against a fake cgroupfs tree in tmp_path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import msgspec
import pytest

from runner.executors import cgroups
from runner.executors.cgroups import AttemptCgroup, Cgroups
from runner.executors.local import LocalExecutor, cgroup_prefix
from runner.protocol import Launch, StreamMessage
from tests.support import InProcessServer, runner_in_loop, submit, task_of, wait_for

MAX_PROCESSES = 64


def _skip_unless_optional(reason: str) -> NoReturn:
    if os.environ.get("GANTRY_REQUIRE_SANDBOX") == "1":
        pytest.fail(f"GANTRY_REQUIRE_SANDBOX=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def hierarchy() -> Cgroups:
    found = cgroups.detect()
    if isinstance(found, str):
        _skip_unless_optional(f"task resources cannot be enforced here: {found}")
    if shutil.which("bwrap") is None:
        _skip_unless_optional("bubblewrap (bwrap) is not installed: `apt-get install bubblewrap`")
    return found


@pytest.fixture
def runner_dir(tmp_path: Path, hierarchy: Cgroups) -> Iterator[Path]:
    """The runner's data directory; afterwards no cgroup of its attempts may be left."""
    d = tmp_path / "r"
    yield d
    left = hierarchy.attempts(cgroup_prefix(d))
    for cg in left.values():  # not to leak them into the host even when failing
        cg.kill()
        cg.remove()
    assert not left, f"attempt cgroups left behind: {sorted(left)}"


def _executor(d: Path, **kw: Any) -> LocalExecutor:
    return LocalExecutor(d, 8, max_processes=MAX_PROCESSES, **kw)


def _attempt_dir(d: Path, task: str) -> Path:
    for launch in d.glob("attempts/*/launch.json"):
        if json.loads(launch.read_bytes())["attempt"]["task"] == task:
            return launch.parent
    raise AssertionError(f"no attempt of {task} in {d}")


def _usage(d: Path, task: str) -> dict[str, int]:
    return json.loads((_attempt_dir(d, task) / "usage.json").read_bytes())  # type: ignore[no-any-return]


async def _until(predicate: Any, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.1)


FORK_BOMB = """\
workflow:
  name: bomb
  tasks:
  - name: bomb
    image: x
    command: [python3, -c]
    args:
    - |
      import os, time
      # A fork bomb that stops at 1000 (so that the code before cgroups does not take the
      # host down): it forks until refused, and keeps trying for 8 s.
      kids, refused = 0, None
      deadline = time.time() + 8
      while time.time() < deadline and kids < 1000:
          try:
              pid = os.fork()
          except OSError as exc:
              refused = exc.strerror
              time.sleep(0.01)
              continue
          if pid == 0:
              time.sleep(30)
              os._exit(0)
          kids += 1
      print("forked", kids, "refused:", refused, flush=True)
  - name: neighbour
    image: x
    command: [sh, -c, 'sleep 2; for i in $(seq 20); do sh -c true; done; echo neighbour-ok']
"""


async def test_a_fork_bomb_is_contained(
    server: InProcessServer, api: httpx.AsyncClient, runner_dir: Path
) -> None:
    peak = 0
    async with runner_in_loop(server.base, runner_dir, executor=_executor(runner_dir)):
        wid = await submit(api, FORK_BOMB)
        await _until(lambda: list(runner_dir.glob("attempts/*/pgid")), 30)
        bomb = _attempt_dir(runner_dir, "bomb")
        await _until(lambda: (bomb / "argv.json").exists(), 30)
        spec = json.loads((bomb / "argv.json").read_bytes())
        pids = Path(spec["cgroup"]["paths"]["pids"])
        assert (pids / "pids.max").read_text().strip() == str(MAX_PROCESSES)
        host_forked = False
        while not (bomb / "exit_code").exists():
            try:
                current = int((pids / "pids.current").read_text())
            except (OSError, ValueError):
                break  # the cgroup is gone: the bomb ended
            peak = max(peak, current)
            if current >= MAX_PROCESSES - 2 and not host_forked:
                # The host forks fine while the bomb presses against its limit.
                subprocess.run(["true"], check=True)
                host_forked = True
            await asyncio.sleep(0.05)
        wf = await wait_for(api, wid, timeout=60)
        bomb_log = (await api.get(f"/api/v1/workflows/{wid}/tasks/bomb/logs")).text
        neighbour_log = (await api.get(f"/api/v1/workflows/{wid}/tasks/neighbour/logs")).text
    assert task_of(wf, "neighbour")["status"] == "COMPLETED", wf
    assert "neighbour-ok" in neighbour_log
    assert task_of(wf, "bomb")["status"] == "COMPLETED", (wf, bomb_log)
    assert "refused: Resource temporarily unavailable" in bomb_log, bomb_log
    kids = int(bomb_log.split("forked ")[1].split()[0])
    assert kids < MAX_PROCESSES, bomb_log
    assert host_forked and 0 < peak <= MAX_PROCESSES, peak
    assert _usage(runner_dir, "bomb")["pids_max_hit"] > 0
    subprocess.run(["true"], check=True)


MEMORY_HOG = """\
workflow:
  name: hog
  tasks:
  - name: hog
    image: x
    resources: {memory: 64Mi}
    command: [python3, -c, 'b = b"x" * (256 * 2**20); print("allocated", len(b))']
"""


async def test_a_memory_hog_over_its_request_is_evicted(
    server: InProcessServer, api: httpx.AsyncClient, runner_dir: Path
) -> None:
    async with runner_in_loop(server.base, runner_dir, executor=_executor(runner_dir)):
        wf = await wait_for(api, await submit(api, MEMORY_HOG), timeout=60)
    task = task_of(wf, "hog")
    assert task["status"] == "FAILED_EVICTED", wf
    assert task["reason"] == "killed for using more memory than its limit (64 MiB)", task
    assert _usage(runner_dir, "hog")["oom_kill"] >= 1
    # Under its limit, the same task completes.
    spec = MEMORY_HOG.replace("256 * 2**20", "16 * 2**20")
    async with runner_in_loop(server.base, runner_dir, executor=_executor(runner_dir)):
        wf = await wait_for(api, await submit(api, spec), timeout=60)
    assert wf["status"] == "COMPLETED", wf


CPU_SPINNER = """\
workflow:
  name: spin
  tasks:
  - name: spin
    image: x
    resources: {cpu: 100m}
    command: [python3, -c]
    args:
    - |
      import time
      end = time.time() + 1.5
      while time.time() < end:
          pass
      print("spun")
"""


async def test_a_cpu_request_is_a_quota(
    server: InProcessServer, api: httpx.AsyncClient, runner_dir: Path
) -> None:
    async with runner_in_loop(server.base, runner_dir, executor=_executor(runner_dir)):
        wid = await submit(api, CPU_SPINNER)
        await _until(lambda: list(runner_dir.glob("attempts/*/argv.json")), 30)
        spec = json.loads(next(runner_dir.glob("attempts/*/argv.json")).read_bytes())
        cpu = Path(spec["cgroup"]["paths"]["cpu"])
        if (cpu / "cpu.max").exists():  # v2
            assert (cpu / "cpu.max").read_text().split() == ["10000", "100000"]
        else:
            assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "10000"
        wf = await wait_for(api, wid, timeout=60)
    assert wf["status"] == "COMPLETED", wf
    # Throttled: the kernel held it back in at least one period (no timing asserted).
    assert _usage(runner_dir, "spin")["nr_throttled"] > 0


@pytest.mark.parametrize("sandbox", ["auto", "none"])
async def test_stop_kills_a_child_that_left_the_process_group(
    server: InProcessServer, api: httpx.AsyncClient, runner_dir: Path, sandbox: str
) -> None:
    marker = str(random.randint(10**6, 10**7))  # a sleep no other process on the host has
    spec = f"""\
workflow:
  name: escape
  tasks:
  - name: t
    image: x
    command: [sh, -c, "setsid sleep {marker} & echo started; sleep 300"]
"""

    def escapees() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and (entry / "cmdline").read_bytes() == (
                    f"sleep\0{marker}\0".encode()
                ):
                    stat = (entry / "stat").read_text()
                    if stat.rsplit(")", 1)[-1].split()[0] != "Z":
                        found.append(int(entry.name))
            except OSError:
                continue
        return found

    executor = _executor(runner_dir, sandbox=sandbox)
    try:
        async with runner_in_loop(server.base, runner_dir, executor=executor) as runner:
            wid = await submit(api, spec)
            await _until(escapees, 30)
            (escapee,) = escapees()
            # It really left the task's process group (and session).
            pgid = int((_attempt_dir(runner_dir, "t") / "pgid").read_text())
            assert os.getpgid(escapee) != pgid
            r = await api.post(f"/api/v1/workflows/{wid}/cancel", json={"reason": "stop"})
            assert r.json()["status"] == "FAILED_CANCELED"
            await _until(lambda: not runner.attempts, 30)
        await _until(lambda: not escapees(), 10)
    finally:
        for pid in escapees():  # the code before cgroups leaves it running
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _launch(attempt: int, command: list[str]) -> Launch:
    body = {
        "type": "launch", "seq": 1, "epoch": 1, "owner_admin": True,
        "attempt": {
            "id": attempt, "workflow_id": "w-1", "group": "g", "group_size": 1,
            "barrier": False, "task": "t", "retry": 0, "lead": True, "image": "x",
            "command": command, "args": [], "environment": {}, "files": [], "inputs": [],
        },
    }  # fmt: skip
    launch = msgspec.json.decode(json.dumps(body).encode(), type=StreamMessage)
    assert isinstance(launch, Launch)
    return launch


async def test_no_cgroup_remains_after_forget_or_a_restart(
    hierarchy: Cgroups, runner_dir: Path
) -> None:
    """The supervisor removes an attempt's cgroups when it ends; those of a supervisor that
    was killed go with ``forget``, or when the runner starts again."""
    executor = _executor(runner_dir, sandbox="none")
    prefix = cgroup_prefix(runner_dir)
    await executor.open()
    # An attempt that ends: its supervisor removes the cgroups before the exit code.
    await executor.prepare(_launch(1, ["true"]))
    assert (await executor.start(1)).running
    await _until(lambda: (runner_dir / "attempts/1/exit_code").exists(), 20)
    assert f"{prefix}1" not in hierarchy.attempts(prefix)
    await executor.forget(1)
    # Two whose supervisors are killed (as with the host's processes): the task lives on.
    for attempt in (2, 3):
        await executor.prepare(_launch(attempt, ["sleep", "300"]))
        await executor.start(attempt)
        d = runner_dir / "attempts" / str(attempt)
        await _until(lambda d=d: (d / "pgid").exists(), 20)
        os.kill(int((d / "supervisor").read_text()), signal.SIGKILL)
    await asyncio.sleep(0.5)
    assert {f"{prefix}2", f"{prefix}3"} <= set(hierarchy.attempts(prefix))
    await executor.stop(2, 0)
    await executor.forget(2)
    assert f"{prefix}2" not in hierarchy.attempts(prefix)
    # A runner started again on the same directory clears what no supervisor looks after.
    again = _executor(runner_dir, sandbox="none")
    await again.open()
    assert not hierarchy.attempts(prefix)
    await _until(lambda: not _alive(int((runner_dir / "attempts/3/pgid").read_text())), 10)
    await again.close()
    await executor.close()


def test_the_isolation_sentence_says_whether_limits_are_enforced(
    hierarchy: Cgroups, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from runner.__main__ import _log_isolation

    executor = _executor(tmp_path / "r")
    assert f"cgroup v{hierarchy.version} limits processes, memory, CPU" in executor.isolation
    assert f"at most {MAX_PROCESSES} processes" in executor.isolation
    executor.cgroups, executor.limits_unenforced = None, "no writable cgroup hierarchy"
    assert "resource limits NOT enforced: no writable cgroup hierarchy" in executor.isolation
    with caplog.at_level(logging.INFO, logger="runner"):
        _log_isolation(executor)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "not enforced" in warnings[0].getMessage()
    hierarchy.remove_parents()  # this executor's, if no other runner's attempt is in them


async def test_the_runner_setting_for_processes() -> None:
    from runner.__main__ import ConfigError, build

    env = {
        "GANTRY_SERVER_URL": "http://127.0.0.1:1",
        "GANTRY_BACKEND": "local",
        "GANTRY_RUNNER_TOKEN": "t",
        "GANTRY_RUNNER_DATA_DIR": "/tmp/gantry-cgroups-setting-test",
    }
    client, executor, _, _ = build({**env, "GANTRY_TASK_MAX_PROCESSES": "77"})
    assert isinstance(executor, LocalExecutor) and executor.max_processes == 77
    await executor.close()
    await client.close()
    client, executor, _, _ = build(env)
    assert isinstance(executor, LocalExecutor) and executor.max_processes == 1024
    await executor.close()
    await client.close()
    with pytest.raises(ConfigError, match="GANTRY_TASK_MAX_PROCESSES"):
        build({**env, "GANTRY_TASK_MAX_PROCESSES": "0"})
    shutil.rmtree("/tmp/gantry-cgroups-setting-test", ignore_errors=True)


# -- cgroup v1 and v2 logic against a fake cgroupfs ----------------------------------------


def _v2_tree(tmp_path: Path, procs: str) -> tuple[Path, str]:
    root = tmp_path / "cgroup"
    base = root / "runner.service"
    base.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
    (root / "cgroup.subtree_control").write_text("")
    (base / "cgroup.controllers").write_text("cpu memory pids\n")
    (base / "cgroup.subtree_control").write_text("")
    (base / "cgroup.procs").write_text(procs)
    (base / "memory.max").write_text("max\n")
    mountinfo = f"30 23 0:26 / {root} rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate\n"
    return base, mountinfo


def test_v2_the_runner_moves_into_a_leaf_then_enables_controllers(tmp_path: Path) -> None:
    base, mountinfo = _v2_tree(tmp_path, "4242\n")
    found = cgroups.detect(
        mountinfo=mountinfo,
        self_cgroup="0::/runner.service\n",
        pid=4242,
        host_memory=16 * 2**30,
        pid_max=4194304,
    )
    assert isinstance(found, Cgroups), found
    assert found.version == 2 and found.move_self
    assert found.memory_cap == 14 * 2**30  # 16 GiB less an eighth (2 GiB)
    assert found.pids_cap == 4194304 // 4
    found.prepare()
    # No internal processes: the runner is in a leaf before controllers are enabled.
    assert (base / "gantry-runner" / "cgroup.procs").read_text() == str(os.getpid())
    assert (base / "cgroup.subtree_control").read_text() == "+pids +memory +cpu"
    parent = base / "gantry-tasks"
    assert (parent / "cgroup.subtree_control").read_text() == "+pids +memory +cpu"
    assert (parent / "memory.max").read_text() == str(14 * 2**30)
    assert (parent / "pids.max").read_text() == str(4194304 // 4)
    assert (parent / "cpu.weight").read_text() == "50"

    cg = found.create("r1-7", memory=256 * 2**20, cpu=1.5, max_processes=100)
    d = parent / "r1-7"
    assert cg.paths == {"pids": d, "memory": d, "cpu": d}
    assert (d / "memory.max").read_text() == str(256 * 2**20)
    assert (d / "pids.max").read_text() == "100"
    assert (d / "cpu.max").read_text() == "150000 100000"
    assert (d / "memory.oom.group").read_text() == "1"
    assert AttemptCgroup.from_json(json.loads(json.dumps(cg.to_json()))) == cg
    # Not requested: no memory or cpu limit of its own, the parent's caps hold.
    other = found.create("r1-8", memory=0, cpu=0, max_processes=100)
    assert not (other.paths["memory"] / "memory.max").exists()
    assert not (other.paths["cpu"] / "cpu.max").exists()
    assert set(found.attempts("r1-")) == {"r1-7", "r1-8"}

    cg.join(1234)
    assert (d / "cgroup.procs").read_text() == "1234"
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\n")
    (d / "cpu.stat").write_text("usage_usec 100\nnr_periods 9\nnr_throttled 4\nthrottled_usec 9\n")
    (d / "pids.events").write_text("max 3\n")
    (d / "memory.peak").write_text(f"{256 * 2**20}\n")
    assert cg.usage() == {
        "oom_kill": 1, "memory_limit_hit": 12, "memory_peak": 256 * 2**20, "nr_throttled": 4,
        "pids_max_hit": 3,
    }  # fmt: skip
    # cgroup.kill where the kernel has it; the fake's cgroup.procs then says it is empty.
    (d / "cgroup.kill").write_text("")
    (d / "cgroup.procs").write_text("")
    assert cg.kill()
    assert (d / "cgroup.kill").read_text() == "1"


def test_v2_a_cgroup_shared_with_other_processes_is_not_used(tmp_path: Path) -> None:
    _, mountinfo = _v2_tree(tmp_path, "4242\n4343\n")
    found = cgroups.detect(mountinfo=mountinfo, self_cgroup="0::/runner.service\n", pid=4242)
    assert isinstance(found, str)
    assert "holds other processes" in found and "Delegate=yes" in found


def test_v2_at_the_root_controllers_are_enabled_in_place(tmp_path: Path) -> None:
    _, mountinfo = _v2_tree(tmp_path, "")
    found = cgroups.detect(mountinfo=mountinfo, self_cgroup="0::/\n", pid=1)
    assert isinstance(found, Cgroups) and not found.move_self
    assert set(found.bases) == {"cpu", "memory", "pids"}
    found.prepare()
    root = tmp_path / "cgroup"
    assert (root / "cgroup.subtree_control").read_text() == "+pids +memory +cpu"
    assert not (root / "gantry-runner").exists()


def test_v2_without_controllers_nothing_is_enforced(tmp_path: Path) -> None:
    base, mountinfo = _v2_tree(tmp_path, "1\n")
    (base / "cgroup.controllers").write_text("")
    found = cgroups.detect(mountinfo=mountinfo, self_cgroup="0::/runner.service\n", pid=1)
    assert isinstance(found, str) and "none of the pids, memory and cpu" in found


def test_v1_combined_mounts_and_a_mounted_subtree(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    (pids / "box").mkdir(parents=True)
    cpu = tmp_path / "cpu,cpuacct"
    (cpu / "user.slice").mkdir(parents=True)
    mountinfo = (
        f"31 24 0:27 /box {pids} rw - cgroup cgroup rw,pids\n"
        f"32 24 0:28 / {cpu} rw - cgroup cgroup rw,cpu,cpuacct\n"
        f"33 24 0:29 / {tmp_path / 'systemd'} rw - cgroup cgroup rw,name=systemd\n"
    )
    self_cgroup = "5:pids:/box\n3:cpu,cpuacct:/user.slice\n1:name=systemd:/\n0::/\n"
    found = cgroups.detect(mountinfo=mountinfo, self_cgroup=self_cgroup, pid_max=32768)
    assert isinstance(found, Cgroups), found
    assert found.bases == {"pids": pids, "cpu": cpu / "user.slice"}
    assert found.missing == ("memory",) and found.pids_cap == 8192
    assert "memory NOT limited" in found.describe(1024)
    found.prepare()
    assert (pids / "gantry-tasks" / "pids.max").read_text() == "8192"
    assert (cpu / "user.slice" / "gantry-tasks" / "cpu.shares").read_text() == "512"
    cg = found.create("r1-1", memory=2**20, cpu=0.25, max_processes=99999)
    assert (pids / "gantry-tasks" / "r1-1" / "pids.max").read_text() == "8192"  # the cap
    assert (cpu / "user.slice" / "gantry-tasks" / "r1-1" / "cpu.cfs_quota_us").read_text() == (
        "25000"
    )
    assert set(cg.paths) == {"pids", "cpu"}


def test_no_hierarchy_means_limits_not_enforced() -> None:
    found = cgroups.detect(mountinfo="", self_cgroup="0::/\n")
    assert isinstance(found, str) and "no cgroup hierarchy" in found


def test_the_memory_reserve() -> None:
    assert cgroups.memory_reserve(2 * 2**30) == 512 * 2**20
    assert cgroups.memory_reserve(16 * 2**30) == 2 * 2**30
    assert cgroups.memory_reserve(512 * 2**30) == 4 * 2**30
