"""Workflows, their groups, task attempts and the append-only event trail."""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    Array,
    BigInt,
    BigSerial,
    Boolean,
    DoublePrecision,
    ForeignKey,
    Integer,
    OnDelete,
    SmallInt,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from app.auth.tables import User
from app.pools.tables import Pool

__all__ = (
    "SubmissionRate", "Task", "TaskEvent", "TaskGroup", "Workflow", "WorkflowCounter"
)  # fmt: skip


class WorkflowCounter(Table, tablename="workflow_counter"):
    """The last number handed out per workflow name: ids are ``<name>-<N>``."""

    name = Varchar(length=64, primary_key=True)
    last = Integer(default=0)


class Workflow(Table, tablename="workflow"):
    """A submitted workflow: its spec as submitted and as rendered, and its status."""

    id = Varchar(length=80, primary_key=True)
    name = Varchar(length=64)
    owner = ForeignKey(references=User, on_delete=OnDelete.restrict, null=False)
    pool = ForeignKey(references=Pool, on_delete=OnDelete.restrict, null=False)
    priority = Varchar(length=8, default="NORMAL")
    priority_rank = SmallInt(default=1)
    status = Varchar(length=32, default="PENDING")
    spec_text = Text()
    rendered_spec = Text()
    set_values = JSONB(default="{}")
    labels = JSONB(default="{}")
    submitted_at = Timestamptz(default=TimestamptzNow())
    started_at = Timestamptz(null=True, default=None)
    ended_at = Timestamptz(null=True, default=None)
    reason = Text(null=True, default=None)
    canceled_by = Varchar(length=64, null=True, default=None)
    logs_removed_at = Timestamptz(null=True, default=None)  # set by the retention loop


class TaskGroup(Table, tablename="task_group"):
    """A gang-scheduled set of tasks; ``upstream`` holds positions of the groups it waits for."""

    id = BigSerial(primary_key=True)
    workflow = ForeignKey(references=Workflow, on_delete=OnDelete.cascade, null=False)
    name = Varchar(length=64)
    position = Integer()
    status = Varchar(length=32, default="WAITING")
    upstream = Array(Integer(), default=list)
    lead_task = Varchar(length=64)
    ignore_nonlead = Boolean(default=True)
    barrier = Boolean(default=True)
    exec_timeout = Integer()
    queue_timeout = Integer()
    backend = Varchar(length=64, null=True, default=None)
    reason = Text(null=True, default=None)
    processing_at = Timestamptz(null=True, default=None)
    scheduling_at = Timestamptz(null=True, default=None)
    started_at = Timestamptz(null=True, default=None)
    ended_at = Timestamptz(null=True, default=None)


class Task(Table, tablename="task"):
    """One attempt of a task; a retry is a new row with the next ``retry`` number.

    ``epoch`` is the runner-session epoch that may report on this attempt; ``launch_seq`` is
    the sequence number of its launch message; ``stdout_end``/``stderr_end`` are the highest
    contiguous log offsets stored.
    """

    id = BigSerial(primary_key=True)
    task_group = ForeignKey(references=TaskGroup, on_delete=OnDelete.cascade, null=False)
    workflow = ForeignKey(references=Workflow, on_delete=OnDelete.cascade, null=False)
    name = Varchar(length=64)
    lead = Boolean(default=False)
    retry = Integer(default=0)
    status = Varchar(length=32, default="WAITING")
    spec = JSONB(default="{}")
    cpu = DoublePrecision(default=0.0)
    memory = BigInt(default=0)
    gpu = Integer(default=0)
    storage = BigInt(default=0)
    platform = Varchar(length=64, null=True, default=None)
    backend = Varchar(length=64, null=True, default=None)
    node = Varchar(length=200, null=True, default=None)
    exit_code = Integer(null=True, default=None)
    reason = Text(null=True, default=None)
    epoch = Integer(default=0)
    launch_seq = BigInt(null=True, default=None)
    launch_acked = Boolean(default=False)
    lease_expires = Timestamptz(null=True, default=None)
    stop_requested_at = Timestamptz(null=True, default=None)
    stop_force = Boolean(default=False)
    runner_ended_at = Timestamptz(null=True, default=None)
    stdout_end = BigInt(default=0)
    stderr_end = BigInt(default=0)
    processing_at = Timestamptz(null=True, default=None)
    scheduling_at = Timestamptz(null=True, default=None)
    initializing_at = Timestamptz(null=True, default=None)
    started_at = Timestamptz(null=True, default=None)
    ended_at = Timestamptz(null=True, default=None)


class TaskEvent(Table, tablename="task_event"):
    """Append-only: every state change of an attempt, with its source and time."""

    id = BigSerial(primary_key=True)
    task = ForeignKey(references=Task, on_delete=OnDelete.cascade, null=False)
    workflow = Varchar(length=80, index=True)
    status = Varchar(length=32)
    source = Varchar(length=32)
    reason = Text(null=True, default=None)
    exit_code = Integer(null=True, default=None)
    at = Timestamptz(default=TimestamptzNow())


class SubmissionRate(Table, tablename="submission_rate"):
    """A user's current one-minute submission window (app/limits.py)."""

    user_name = Varchar(length=64, primary_key=True)
    window_start = Timestamptz()
    submissions = Integer()
