"""JSON in and out of /api/v1/workflows (msgspec Structs, described in the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from app.bounds import NO_NUL, Name, Reason
from app.spec.parse import MAX_SPEC_BYTES

__all__ = (
    "CancelRequest",
    "DryRunPlan",
    "EventOut",
    "EventPage",
    "GroupOut",
    "PlanGroup",
    "SubmitRequest",
    "TaskOut",
    "WorkflowDetail",
    "WorkflowHead",
    "WorkflowOut",
    "WorkflowPage",
)


MAX_SET_VALUES = 1000

# The envelope only: a spec's text and the structure of `set` values are checked by the spec
# pipeline (app/spec), which names the line of what is wrong.
# A NUL in the spec is the pipeline's to refuse too (422 naming its line), so no pattern here.
SpecText = Annotated[str, msgspec.Meta(max_length=MAX_SPEC_BYTES)]
SetKey = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=NO_NUL)]
SetValues = Annotated[dict[SetKey, Any], msgspec.Meta(max_length=MAX_SET_VALUES)]


class SubmitRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A submission: the OSMO YAML spec as text, and how to run it."""

    spec: SpecText
    pool: Name | None = None
    set_values: SetValues | None = msgspec.field(default=None, name="set")
    priority: Literal["HIGH", "NORMAL", "LOW"] = "NORMAL"
    dry_run: bool = False


class CancelRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason = ""
    force: bool = False


class PlanGroup(msgspec.Struct):
    """A group of a dry run's plan; ``tasks`` are the rendered tasks with their resources."""

    name: str
    upstream: list[str]
    lead: str
    barrier: bool
    ignore_nonlead_status: bool
    tasks: list[dict[str, Any]]


class DryRunPlan(msgspec.Struct):
    """The answer to a dry run (200): what would run, and nothing stored."""

    name: str
    pool: str
    priority: str
    exec_timeout: int
    queue_timeout: int
    groups: list[PlanGroup]
    rendered_spec: str


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
    canceled_by: str | None = None  # who cancelled it (its reason says why)


class WorkflowHead(WorkflowOut):
    """The workflow as GET gives it, without its groups."""

    # Why it has not started every group yet, in words; null once nothing waits. Not in
    # lists: a list would have to ask it of every workflow it shows.
    waiting: str | None = None


class WorkflowDetail(WorkflowHead):
    groups: list[GroupOut] = msgspec.field(default_factory=list)


class WorkflowSpecOut(msgspec.Struct):
    spec: str  # as submitted
    rendered_spec: str  # after templating
    set: dict[str, Any]  # the values it was submitted with


class WorkflowPage(msgspec.Struct):
    items: list[WorkflowOut]
    next_cursor: str | None


class EventOut(msgspec.Struct):
    """One change of one task attempt, as the workflow page's timeline shows it."""

    id: int
    at: datetime
    task: str
    retry: int
    status: str
    source: str  # who made the change: the runner, the scheduler, the sweeper, a cancel
    reason: str | None
    exit_code: int | None


class EventPage(msgspec.Struct):
    items: list[EventOut]  # newest first
    next_cursor: str | None  # the events before these
