"""Supervises one task process so it outlives the runner: ``python -m runner.supervise DIR``.

The local executor starts this in a session of its own. It reads ``DIR/argv.json`` (command,
environment, working directory), starts the task in its own process group with stdout and
stderr appended to ``DIR/stdout`` and ``DIR/stderr``, records the group in ``DIR/pgid``, waits,
and writes the exit code to ``DIR/exit_code`` (128 + N when killed by signal N, as shells
report). A runner that restarts finds live attempts and their results in these files.

The task writes to pipes, not to the files: the supervisor copies what each read returns to
its file and appends ``o|e END TIME_NS`` to ``DIR/timeline``: at most one record per stream per
2 ms window, in the order the streams first wrote in it.
Two files alone lose the order between stdout and stderr (a task's ``echo out; echo err >&2``
came out as ``err, out``); the runner ships the bytes in timeline order, with their times.

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
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

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
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    with (
        open(root / "stdout", "ab") as out,
        open(root / "stderr", "ab") as err,
        open(root / "timeline", "ab") as timeline,
    ):
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                process_group=0,
                # The task gets default signal handling back (we ignore TERM/INT/HUP above).
                restore_signals=True,
                preexec_fn=lambda: _in_child(root, cgroup),  # the supervisor is single-threaded
            )
        except OSError as exc:
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            _write_atomic(
                root / "start_error", f"could not start {spec['argv'][0]!r}: {exc.strerror}"
            )
            _end(root, cgroup)
            _write_atomic(root / "exit_code", "127")
            return 0
        os.close(out_w)
        os.close(err_w)
        _write_atomic(root / "pgid", str(proc.pid))
        code = _copy_until_exit(proc, {out_r: (b"o", out), err_r: (b"e", err)}, timeline)
    if code < 0:
        code = 128 - code
    _end(root, cgroup)
    _write_atomic(root / "exit_code", str(code))
    return 0


# After the task exits, what it wrote is still in the pipes; a process it left behind may hold
# them open, and gets this long before they close (and the cgroup, if any, kills it).
_DRAIN_SECONDS = 1.0
_WINDOW_NS = 2_000_000


def _copy_until_exit(
    proc: subprocess.Popen[bytes], pipes: dict[int, tuple[bytes, BinaryIO]], timeline: BinaryIO
) -> int:
    """Copies the task's output to its files as it comes, recording it in the timeline;
    returns the exit code once the task has ended and its pipes are drained."""
    selector = selectors.DefaultSelector()
    for fd in pipes:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    ends = {fd: f.tell() for fd, (_, f) in pipes.items()}
    # The timeline has at most one record per stream per window of _WINDOW_NS, in the order
    # the streams first wrote in it: a task alternating one-byte writes to both streams made
    # a record per byte (a hostile test: the timeline 28 times its log, 37,000 chunks per
    # batch). Lines further apart than the window keep their order.
    window: dict[bytes, list[int]] = {}  # stream -> [end, first write's time in ns]
    opened = 0
    broken = False  # the disk refused a write: drain the pipes, keep nothing more

    def flush() -> None:
        for stream, (end, ns) in window.items():
            timeline.write(b"%s %d %d\n" % (stream, end, ns))
        if window:
            timeline.flush()  # after the bytes: a reader that sees a record finds them
            window.clear()

    code: int | None = None
    deadline: float | None = None
    while selector.get_map():
        if code is None:
            code = proc.poll()
            if code is not None:
                deadline = time.monotonic() + _DRAIN_SECONDS
        wait = 0.2 if deadline is None else deadline - time.monotonic()
        if wait <= 0:
            break
        if window:
            wait = min(wait, max(0.0, (opened + _WINDOW_NS - time.time_ns()) / 1e9))
        for key, _ in selector.select(wait):
            fd = int(key.fd)
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not data:
                selector.unregister(fd)
                continue
            if broken:
                continue
            stream, f = pipes[fd]
            now = time.time_ns()
            try:
                if window and now - opened > _WINDOW_NS:
                    flush()
                f.write(data)
                f.flush()
            except OSError:
                broken = True  # a full disk: the task still runs and its exit code is kept
                continue
            ends[fd] += len(data)
            if not window:
                opened = now
            if stream in window:
                window[stream][0] = ends[fd]
            else:
                window[stream] = [ends[fd], now]
        if window and time.time_ns() - opened > _WINDOW_NS:
            with contextlib.suppress(OSError):
                flush()
    with contextlib.suppress(OSError):
        flush()
    selector.close()
    for fd in pipes:
        os.close(fd)
    return proc.wait() if code is None else code


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
