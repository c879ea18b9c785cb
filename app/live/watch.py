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
        self._changed = asyncio.Condition()
        self._renders: dict[str, tuple[int, Any]] = {}
        self._render_locks: dict[str, asyncio.Lock] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"watch-{self.workflow_id}")
        await self._ready.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _refresh(self) -> None:
        snapshot = await self.loader(self.workflow_id)
        async with self._changed:
            self.snapshot = snapshot
            self.version += 1
            self._changed.notify_all()

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
                await asyncio.sleep(COALESCE_SECONDS)
                sub.drain()
                try:
                    await self._refresh()
                except Exception:
                    log.exception("watch %s: refresh failed", self.workflow_id)
                    await asyncio.sleep(1)

    async def next_version(self, after: int, timeout: float) -> int:
        """Wait until a snapshot newer than ``after`` exists; return the current version."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.version > after), timeout
                )
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
            self._renders[key] = (self.version, value)
            return value


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
