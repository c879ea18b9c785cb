"""Supervises one task process so it outlives the runner: ``python -m runner.supervise DIR``.

The local executor starts this in a session of its own. It reads ``DIR/argv.json`` (command,
environment, working directory), starts the task in its own process group with stdout and
stderr appended to ``DIR/stdout`` and ``DIR/stderr``, records the group in ``DIR/pgid``, waits,
and writes the exit code to ``DIR/exit_code`` (128 + N when killed by signal N, as shells
report). A runner that restarts finds live attempts and their results in these files.

With a ``cgroup`` in ``argv.json`` (runner/executors/cgroups.py), the task joins it between
fork and exec, as root before any uid drop, so nothing it forks is outside it. When the task
ends, whatever is left in the cgroup (a daemon, a setsid()'d child) is killed, what the limits
did is written to ``DIR/usage.json`` (the OOM kill that makes the attempt FAILED_EVICTED), and
the cgroup is removed, all before ``exit_code``: an ended attempt has no process left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from runner.executors.cgroups import AttemptCgroup

__all__ = ("main",)

_PYTHONPATH = str(Path(__file__).resolve().parents[1])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(directory: str) -> int:
    root = Path(directory)
    spec = json.loads((root / "argv.json").read_text())
    argv, env, cwd = spec["argv"], spec["env"], spec["cwd"]
    cgroup = AttemptCgroup.from_json(spec["cgroup"]) if spec.get("cgroup") else None
    if spec.get("sandbox"):
        # Namespaces and the user switch are set up by a helper that then becomes bwrap, with
        # the task's environment (runner.executors.sandbox). PYTHONPATH is only the helper's.
        argv = [sys.executable, "-m", "runner.executors.sandbox", "enter", str(root)]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": _PYTHONPATH}
        cwd = "/"
    # Signals meant for the task go to its process group; the supervisor must not die of
    # them first (it would lose the exit code).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with open(root / "stdout", "ab") as out, open(root / "stderr", "ab") as err:
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                process_group=0,
                # The task gets default signal handling back (we ignore TERM/INT/HUP above).
                restore_signals=True,
                preexec_fn=lambda: _in_child(root, cgroup),  # the supervisor is single-threaded
            )
        except OSError as exc:
            _write_atomic(
                root / "start_error", f"could not start {spec['argv'][0]!r}: {exc.strerror}"
            )
            _end(root, cgroup)
            _write_atomic(root / "exit_code", "127")
            return 0
        _write_atomic(root / "pgid", str(proc.pid))
        code = proc.wait()
    if code < 0:
        code = 128 - code
    _end(root, cgroup)
    _write_atomic(root / "exit_code", str(code))
    return 0


def _in_child(root: Path, cgroup: AttemptCgroup | None) -> None:
    """In the task's process, before exec: default signals, and into its cgroup."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    if cgroup is None:
        return
    try:
        cgroup.join(os.getpid())
    except OSError as exc:
        # Never run a task outside its limits. The executor reports an attempt with a
        # start_error as FAILED_START_ERROR (exec never happens: Popen sees a quick exit).
        with contextlib.suppress(OSError):
            (root / "start_error").write_text(f"could not put the task in its cgroup: {exc}")
        os._exit(127)


def _end(root: Path, cgroup: AttemptCgroup | None) -> None:
    if cgroup is None:
        return
    usage: dict[str, Any] = {}
    with contextlib.suppress(OSError):
        cgroup.kill()
        usage = cgroup.usage()
    with contextlib.suppress(OSError):
        _write_atomic(root / "usage.json", json.dumps(usage))
    with contextlib.suppress(OSError):
        cgroup.remove()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
