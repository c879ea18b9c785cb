"""The local executor's disk: a per-attempt limit, and removing old attempt directories.

- ``GANTRY_MAX_ATTEMPT_DISK_BYTES`` (default 10 GiB, 0 = no limit): while an attempt runs, its
  directory (output, logs, staged files, and the rewritten root without a sandbox) is measured
  every ``GANTRY_ATTEMPT_DISK_CHECK_INTERVAL`` seconds; over the limit, the attempt is killed and
  ends ``FAILED_EVICTED`` with a reason naming the limit, as a kubelet evicts a pod over its
  ``ephemeral-storage`` limit. Directories count, and so does the number of entries:
  ``GANTRY_MAX_ATTEMPT_FILES`` (default 100,000; 0 = no limit) files and directories at most,
  as the disk's inodes are the host's. A sandbox's ``/tmp`` is memory, not this disk.
- ``GANTRY_RETENTION_DAYS`` (default 30, 0 = keep everything): directories of attempts whose end
  the control plane has (``reported``) and that ended longer ago than that are removed at start
  and every hour.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

__all__ = (
    "DEFAULT_DISK_LIMIT",
    "DEFAULT_FILE_LIMIT",
    "DiskLimit",
    "directory_usage",
    "keep_removing_old_attempts",
    "remove_old_attempts",
)

log = logging.getLogger(__name__)
DEFAULT_DISK_LIMIT = 10 * 1024**3
DEFAULT_FILE_LIMIT = 100_000  # inodes per attempt, as the disk's are shared by the host
_EVICTED = "disk_evicted"  # in the attempt directory: why it was ended


def directory_size(path: Path) -> int:
    return directory_usage(path)[0]


def directory_usage(path: Path, max_entries: int = 0) -> tuple[int, int]:
    """Bytes allocated under ``path`` (sparse files count what they really use; directories
    count too) and how many entries (inodes) it holds, not following symlinks, so a task
    cannot make us measure the host. With ``max_entries``, the walk stops once past it.

    Directories used not to count: a task that made 200,000 empty ones (786 MB, 200,000 of
    the disk's inodes, the host's PostgreSQL's too) measured 24 KB (a hostile test).
    """
    total = entries_seen = 0
    stack = [path]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                entries_seen += 1
                if max_entries and entries_seen > max_entries:
                    return total, entries_seen
                try:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                except OSError:
                    continue  # removed while we looked
    return total, entries_seen


class DiskLimit:
    """Measures running attempts' directories now and then, and ends those over the limit."""

    def __init__(
        self,
        limit: int = DEFAULT_DISK_LIMIT,
        interval: float = 10.0,
        max_files: int = DEFAULT_FILE_LIMIT,
    ) -> None:
        self.limit = limit
        self.interval = interval
        self.max_files = max_files
        self._checked: dict[Path, float] = {}

    async def check(
        self, attempt: int, directory: Path, stop: Callable[[int, float], Awaitable[None]]
    ) -> str | None:
        """Why the attempt was ended for its disk use, or None. Measures only a running
        attempt, and each at most once per interval (the runner asks ten times a second)."""
        try:
            return (directory / _EVICTED).read_text()
        except FileNotFoundError:
            pass
        if (self.limit <= 0 and self.max_files <= 0) or (directory / "exit_code").exists():
            self._checked.pop(directory, None)
            return None
        now = time.monotonic()
        if now - self._checked.get(directory, 0.0) < self.interval:
            return None
        self._checked[directory] = now
        used, files = await asyncio.to_thread(directory_usage, directory, self.max_files)
        if self.max_files > 0 and files > self.max_files:
            reason = (
                f"the attempt made more than {self.max_files} files and directories, the limit "
                "(GANTRY_MAX_ATTEMPT_FILES); it was stopped"
            )
        elif self.limit > 0 and used > self.limit:
            reason = (
                f"the attempt used {used} bytes of disk, over the limit of {self.limit} "
                "(GANTRY_MAX_ATTEMPT_DISK_BYTES); it was stopped"
            )
        else:
            return None
        log.warning("attempt %d: %s", attempt, reason)
        (directory / _EVICTED).write_text(reason)
        self._checked.pop(directory, None)
        await stop(attempt, 0.0)
        return reason


def remove_old_attempts(root: Path, days: float, now: float | None = None) -> list[str]:
    """Remove directories of attempts that ended, with the end reported, more than ``days``
    ago (the time of their ``exit_code`` or ``reported`` file, whichever is later)."""
    if days <= 0 or not root.is_dir():
        return []
    cutoff = (time.time() if now is None else now) - days * 86400
    removed = []
    for d in root.iterdir():
        try:
            reported = (d / "reported").stat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            continue  # alive, or its end not yet with the control plane
        try:
            ended = max(reported, (d / "exit_code").stat().st_mtime)
        except FileNotFoundError:
            ended = reported
        if ended < cutoff:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d.name)
    if removed:
        log.info("removed %d attempt directories older than %g days", len(removed), days)
    return removed


async def keep_removing_old_attempts(root: Path, days: float, every: float = 3600.0) -> None:
    """At start, then every ``every`` seconds, until cancelled."""
    while True:
        try:
            await asyncio.to_thread(remove_old_attempts, root, days)
        except OSError:
            log.exception("removing old attempt directories failed")
        await asyncio.sleep(every)
