"""JSON in and out of /api/v1/workflows (msgspec Structs, described in the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

__all__ = (
    "CancelRequest",
    "GroupOut",
    "SubmitRequest",
    "TaskOut",
    "WorkflowDetail",
    "WorkflowOut",
    "WorkflowPage",
)


class SubmitRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A submission: the OSMO YAML spec as text, and how to run it."""

    spec: str
    pool: str | None = None
    set_values: dict[str, Any] | None = msgspec.field(default=None, name="set")
    priority: Literal["HIGH", "NORMAL", "LOW"] = "NORMAL"
    dry_run: bool = False


class CancelRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: str = ""
    force: bool = False


class TaskOut(msgspec.Struct):
    id: int  # the attempt
    name: str
    lead: bool
    status: str
    retry: int
    exit_code: int | None
    reason: str | None
    backend: str | None
    node: str | None
    image: str | None
    queued_at: datetime | None
    scheduled_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None


class GroupOut(msgspec.Struct):
    name: str
    status: str
    upstream: list[str]
    lead: str
    reason: str | None
    backend: str | None
    started_at: datetime | None
    ended_at: datetime | None
    tasks: list[TaskOut]


class WorkflowOut(msgspec.Struct):
    id: str
    name: str
    status: str
    pool: str
    user: str
    priority: str
    submitted_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    reason: str | None
    labels: dict[str, str]
    tasks_total: int
    tasks_completed: int


class WorkflowDetail(WorkflowOut):
    groups: list[GroupOut] = msgspec.field(default_factory=list)


class WorkflowPage(msgspec.Struct):
    items: list[WorkflowOut]
    next_cursor: str | None
