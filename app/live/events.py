"""The JSON event stream of a workflow (``GET /api/v1/workflows/{id}/events``).

First a ``snapshot`` (the workflow as ``GET`` returns it), then ``workflow`` and ``task``
events for what changed, then ``end`` once the workflow is terminal. A comment ping every
15 s keeps idle proxies from closing the stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar.response import ServerSentEventMessage

from app.live.watch import WatchRegistry

__all__ = ("PING_SECONDS", "SharedMessage", "task_key", "workflow_events")

PING_SECONDS = 15.0
_enc = msgspec.json.Encoder()
_WORKFLOW_FIELDS = ("id", "name", "status", "reason", "started_at", "ended_at",
                    "tasks_total", "tasks_completed", "waiting")  # fmt: skip


class SharedMessage(ServerSentEventMessage):
    """A message encoded once and sent as it is to every viewer (2,000 viewers of one
    workflow cost one encoding per change, not 2,000)."""

    _encoded: bytes | None = None

    def encode(self) -> bytes:
        if self._encoded is None:
            self._encoded = super().encode()
        return self._encoded


def task_key(task: dict[str, Any]) -> tuple[Any, ...]:
    return (task["status"], task["retry"], task["exit_code"], task["reason"], task["node"],
            task["started_at"], task["ended_at"])  # fmt: skip


def _snapshot_message(snapshot: dict[str, Any]) -> SharedMessage:
    public = {k: v for k, v in snapshot.items() if k != "timeline"}  # the GET shape
    return SharedMessage(event="snapshot", data=_enc.encode(public).decode())


def _tasks(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for g in snapshot.get("groups", []) for t in g["tasks"]}


async def workflow_events(
    watches: WatchRegistry, workflow_id: str
) -> AsyncIterator[ServerSentEventMessage]:
    async with watches.watch(workflow_id) as watch:
        version = watch.version
        snapshot = watch.snapshot
        if snapshot is None:
            yield ServerSentEventMessage(event="end", data='{"reason": "not found"}')
            return
        # Encoded once per version for every stream of this replica: 40 streams of a
        # 10,000-task workflow held 40 copies of its 3.9 MB snapshot (a hostile test).
        yield await watch.render("sse:snapshot", _snapshot_message)
        sent_wf = {k: snapshot.get(k) for k in _WORKFLOW_FIELDS}
        sent_tasks = {name: task_key(t) for name, t in _tasks(snapshot).items()}
        while not snapshot.get("terminal"):
            new_version = await watch.next_version(version, PING_SECONDS)
            if new_version == version:
                yield ServerSentEventMessage(comment="ping", data=None)
                continue
            version = new_version
            snapshot = watch.snapshot
            if snapshot is None:
                break
            for name, task in _tasks(snapshot).items():
                key = task_key(task)
                if sent_tasks.get(name) != key:
                    sent_tasks[name] = key
                    payload = {k: v for k, v in task.items() if k != "terminal"}
                    yield ServerSentEventMessage(event="task", data=_enc.encode(payload).decode())
            wf = {k: snapshot.get(k) for k in _WORKFLOW_FIELDS}
            if wf != sent_wf:
                sent_wf = wf
                yield ServerSentEventMessage(event="workflow", data=_enc.encode(wf).decode())
        yield ServerSentEventMessage(
            event="end",
            data=_enc.encode(
                {"id": workflow_id, "status": snapshot and snapshot["status"]}
            ).decode(),
        )
