"""Entering a bubblewrap task's namespaces: ``python -m runner.executors.sandbox enter DIR``.

The local executor keeps one network namespace per task group (see ``LocalExecutor._network``).
``enter DIR`` is what ``runner.supervise`` starts instead of bwrap. It reads ``DIR/argv.json`` and prepares what bwrap itself cannot do, then replaces
itself with bwrap (``execve`` with a fixed environment of ours; bwrap gives the task its own):

- as root: the bind sources (the attempt's ``output`` and ``files``, its inputs) lie in the
  runner's data directory, which the sandbox user may not traverse (and must not: it holds
  every attempt). In a private mount namespace we open them, cover ``/tmp`` with an empty
  tmpfs and bind them to ``/tmp/gantry-stage/N``, where bwrap (running as the sandbox user)
  finds them. Then we join the group's network namespace (root may enter any), and drop to
  the sandbox user and group with no supplementary groups.
- as another user: the runner's own files are readable by bwrap already; we join the
  holder's user namespace (ours: it was created by our uid) and its network namespace.

Python 3.11 has no ``os.unshare``/``os.setns``/``mount``: they are called through libc.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import sys
from pathlib import Path

__all__ = ("STAGE", "main")

STAGE = "/tmp/gantry-stage"  # inside a private mount namespace, see _stage()
_BWRAP_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # bwrap's own, never the task's

_CLONE_NEWNS = 0x00020000
_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_NS_GET_USERNS = 0xB701  # ioctl on a namespace fd: its owning user namespace
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    enc = [None if s is None else s.encode() for s in (source, target, fstype)]
    result = _libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), data.encode() or None)
    _check(result, f"mount {target}")


def enter(directory: str) -> int:
    spec = json.loads((Path(directory) / "argv.json").read_text())
    box = spec["sandbox"]
    argv: list[str] = spec["argv"]
    # Kept open: after _stage() the directory's path may be hidden (it may lie under /tmp).
    folder = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if box["stage"]:
            _stage(box["stage"])
        host_net = os.stat("/proc/self/ns/net").st_ino
        net = os.open(f"/proc/{box['netns_pid']}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        if box["join_userns"]:
            # The user namespace that owns the network namespace (bwrap's holder sits in a
            # nested one): only there do we have the capability to join the network.
            owner = fcntl.ioctl(net, _NS_GET_USERNS)
            _check(_libc.setns(owner, _CLONE_NEWUSER), "setns into the network's user namespace")
            os.close(owner)
        _check(_libc.setns(net, _CLONE_NEWNET), "setns into the group's network namespace")
        os.close(net)
        if os.stat("/proc/self/ns/net").st_ino == host_net:
            raise OSError(0, "the group's network namespace is the host's; refusing to run")
        if box["uid"] is not None:
            os.setgroups([])
            os.setgid(box["gid"])
            os.setuid(box["uid"])
        # bwrap starts in the host's namespaces, so it must not run with the task's
        # environment: LD_PRELOAD or LD_LIBRARY_PATH there would run the task's code outside
        # the sandbox (found by a hostile test). bwrap gets a fixed one of ours, and sets the
        # task's only for the task, inside (--clearenv, --setenv).
        task_env = ["--clearenv"]
        for name, value in spec["env"].items():
            task_env += ["--setenv", name, value]
        os.execve(argv[0], [argv[0], *task_env, *argv[1:]], _BWRAP_ENV)  # noqa: S606 - bwrap, by absolute path
    except OSError as exc:
        message = f"could not set up the task's sandbox: {exc}"
        print(f"gantry sandbox: {message}", file=sys.stderr)
        # The executor reports an attempt with a start_error as FAILED_START_ERROR.
        with contextlib.suppress(OSError):
            fd = os.open("start_error", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=folder)
            with os.fdopen(fd, "w") as f:
                f.write(message)
        return 127


def _stage(sources: list[str]) -> None:
    """Bind ``sources[i]`` to ``STAGE/i`` in a private mount namespace (see the docstring)."""
    _check(_libc.unshare(_CLONE_NEWNS), "unshare the mount namespace")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing below propagates to the host
    # Opened in the new namespace (a bind from another namespace's mount is EINVAL), before
    # the tmpfs hides the sources that lie under /tmp.
    fds = [os.open(src, os.O_PATH | os.O_CLOEXEC) for src in sources]
    _mount("tmpfs", "/tmp", "tmpfs", 0, "mode=0755")
    os.mkdir(STAGE, 0o755)
    for i, fd in enumerate(fds):
        target = f"{STAGE}/{i}"
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.mkdir(target)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
        _mount(f"/proc/self/fd/{fd}", target, None, _MS_BIND)
        os.close(fd)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "enter":
        return enter(argv[1])
    print("usage: python -m runner.executors.sandbox enter DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
