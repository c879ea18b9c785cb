"""Supervises one task process so it outlives the runner: ``python -m runner.supervise DIR``.

The local executor starts this in a session of its own. It reads ``DIR/argv.json`` (command,
environment, working directory), starts the task in its own process group with stdout and
stderr appended to ``DIR/stdout`` and ``DIR/stderr``, records the group in ``DIR/pgid``, waits,
and writes the exit code to ``DIR/exit_code`` (128 + N when killed by signal N, as shells
report). A runner that restarts finds live attempts and their results in these files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

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
                preexec_fn=_default_signals,  # the supervisor is single-threaded
            )
        except OSError as exc:
            _write_atomic(
                root / "start_error", f"could not start {spec['argv'][0]!r}: {exc.strerror}"
            )
            _write_atomic(root / "exit_code", "127")
            return 0
        _write_atomic(root / "pgid", str(proc.pid))
        code = proc.wait()
    if code < 0:
        code = 128 - code
    _write_atomic(root / "exit_code", str(code))
    return 0


def _default_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
