"""Shared live views of workflows: one read per burst of hints, shared by every viewer.

While anyone in this replica watches a workflow, one task listens for its hints, waits a few
milliseconds for the burst to settle, reads the workflow once, and hands that snapshot to
every viewer. Fragment renders of a snapshot are cached per version, so 2,000 viewers of one
workflow cost one read and one render per change. A viewer that (re)connects starts from the
current snapshot, so it never depends on a hint it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from app.db import Hub

__all__ = ("Watch", "WatchRegistry")

log = logging.getLogger(__name__)
Loader = Callable[[str], Awaitable[dict[str, Any] | None]]
COALESCE_SECONDS = 0.02


class Watch:
    """The live snapshot of one workflow, and the viewers waiting for the next one."""

    def __init__(self, hub: Hub, workflow_id: str, loader: Loader) -> None:
        self.hub = hub
        self.workflow_id = workflow_id
        self.loader = loader
        self.version = 0
        self.snapshot: dict[str, Any] | None = None
        self.viewers = 0
        # Resolved when a newer snapshot exists, then replaced: every viewer awaits the same
        # future, so a change wakes 2,000 viewers without a lock or a task each.
        self._next: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._renders: dict[str, tuple[int, Any]] = {}
        self._previous: dict[str, tuple[int, Any]] = {}
        self._render_locks: dict[str, asyncio.Lock] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.refresh_seconds = 0.0  # how long the last read took

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"watch-{self.workflow_id}")
        await self._ready.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _refresh(self) -> None:
        started = time.monotonic()
        snapshot = await self.loader(self.workflow_id)
        self.refresh_seconds = time.monotonic() - started
        self.snapshot = snapshot
        self.version += 1
        changed, self._next = self._next, asyncio.get_running_loop().create_future()
        changed.set_result(None)

    async def _run(self) -> None:
        with self.hub.subscribe(f"wf:{self.workflow_id}") as sub:
            try:
                await self._refresh()
            finally:
                self._ready.set()
            while True:
                hint = await sub.get(timeout=30)
                if hint is None:
                    continue  # idle; a periodic re-read is not needed, hints are reliable
                # Wait at least as long as the last read took: a 10,000-task workflow's read
                # costs ~0.1-0.3 s, and under a steady stream of hints re-reading at once
                # would keep the event loop busy with this one workflow. This way its reads
                # take at most about half of the time, and a burst still costs one read.
                await asyncio.sleep(max(COALESCE_SECONDS, min(self.refresh_seconds, 2.0)))
                sub.drain()
                try:
                    await self._refresh()
                except Exception:
                    log.exception("watch %s: refresh failed", self.workflow_id)
                    await asyncio.sleep(1)

    async def next_version(self, after: int, timeout: float) -> int:
        """Wait until a snapshot newer than ``after`` exists; return the current version."""
        if self.version <= after:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._next)  # a timeout must not cancel it for all
        return self.version

    async def render(self, key: str, fn: Callable[[dict[str, Any]], Any]) -> Any:
        """``fn(snapshot)`` once per version and key, shared by every viewer."""
        lock = self._render_locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._renders.get(key)
            if cached is not None and cached[0] == self.version:
                return cached[1]
            assert self.snapshot is not None
            value = fn(self.snapshot)
            if cached is not None:
                self._previous[key] = cached
            self._renders[key] = (self.version, value)
            return value

    def previous(self, key: str) -> tuple[int, Any] | None:
        """The render of ``key`` before the current one, with its version (for deltas)."""
        return self._previous.get(key)


class WatchRegistry:
    """The watches of this replica, started on first viewer and stopped after the last."""

    def __init__(self, hub: Hub, loader: Loader) -> None:
        self.hub = hub
        self.loader = loader
        self._watches: dict[str, Watch] = {}
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def watch(self, workflow_id: str) -> AsyncIterator[Watch]:
        async with self._lock:
            w = self._watches.get(workflow_id)
            if w is None:
                w = Watch(self.hub, workflow_id, self.loader)
                self._watches[workflow_id] = w
                await w.start()
            w.viewers += 1
        try:
            yield w
        finally:
            async with self._lock:
                w.viewers -= 1
                if w.viewers == 0 and self._watches.get(workflow_id) is w:
                    del self._watches[workflow_id]
                    await w.stop()

    async def close(self) -> None:
        for w in list(self._watches.values()):
            await w.stop()
        self._watches.clear()
