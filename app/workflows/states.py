"""Task, group and workflow statuses, with OSMO's names and the sets the rules are written in."""

from __future__ import annotations

from enum import StrEnum

__all__ = (
    "ALIVE",
    "DISPATCHED",
    "PRIORITIES",
    "TERMINAL",
    "WORKFLOW_ALIVE",
    "WORKFLOW_TERMINAL",
    "Status",
    "WorkflowStatus",
    "is_failure",
)


class Status(StrEnum):
    """Status of a task attempt or a group (OSMO's ``TaskGroupStatus``)."""

    SUBMITTING = "SUBMITTING"
    WAITING = "WAITING"  # upstream groups have not completed
    PROCESSING = "PROCESSING"  # ready; waiting in the control plane's queue for capacity
    SCHEDULING = "SCHEDULING"  # sent to a runner, not started
    INITIALIZING = "INITIALIZING"  # the runner is preparing the attempt
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    RESCHEDULED = "RESCHEDULED"
    FAILED = "FAILED"
    FAILED_CANCELED = "FAILED_CANCELED"
    FAILED_UPSTREAM = "FAILED_UPSTREAM"
    FAILED_EXEC_TIMEOUT = "FAILED_EXEC_TIMEOUT"
    FAILED_QUEUE_TIMEOUT = "FAILED_QUEUE_TIMEOUT"
    FAILED_IMAGE_PULL = "FAILED_IMAGE_PULL"
    FAILED_EVICTED = "FAILED_EVICTED"
    FAILED_PREEMPTED = "FAILED_PREEMPTED"
    FAILED_START_ERROR = "FAILED_START_ERROR"
    FAILED_START_TIMEOUT = "FAILED_START_TIMEOUT"
    FAILED_BACKEND_ERROR = "FAILED_BACKEND_ERROR"
    FAILED_SERVER_ERROR = "FAILED_SERVER_ERROR"


class WorkflowStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    FAILED_SUBMISSION = "FAILED_SUBMISSION"
    FAILED_CANCELED = "FAILED_CANCELED"
    FAILED_UPSTREAM = "FAILED_UPSTREAM"
    FAILED_EXEC_TIMEOUT = "FAILED_EXEC_TIMEOUT"
    FAILED_QUEUE_TIMEOUT = "FAILED_QUEUE_TIMEOUT"
    FAILED_IMAGE_PULL = "FAILED_IMAGE_PULL"
    FAILED_EVICTED = "FAILED_EVICTED"
    FAILED_PREEMPTED = "FAILED_PREEMPTED"
    FAILED_START_ERROR = "FAILED_START_ERROR"
    FAILED_START_TIMEOUT = "FAILED_START_TIMEOUT"
    FAILED_BACKEND_ERROR = "FAILED_BACKEND_ERROR"
    FAILED_SERVER_ERROR = "FAILED_SERVER_ERROR"


ALIVE: tuple[str, ...] = (
    Status.SUBMITTING,
    Status.WAITING,
    Status.PROCESSING,
    Status.SCHEDULING,
    Status.INITIALIZING,
    Status.RUNNING,
)
# Alive and handed to a runner: these hold a lease and count against capacity.
DISPATCHED: tuple[str, ...] = (Status.SCHEDULING, Status.INITIALIZING, Status.RUNNING)
TERMINAL: tuple[str, ...] = tuple(s.value for s in Status if s.value not in ALIVE)
WORKFLOW_ALIVE: tuple[str, ...] = (WorkflowStatus.PENDING, WorkflowStatus.RUNNING)
WORKFLOW_TERMINAL: tuple[str, ...] = tuple(
    s.value for s in WorkflowStatus if s.value not in WORKFLOW_ALIVE
)
PRIORITIES = {"HIGH": 0, "NORMAL": 1, "LOW": 2}

# OSMO's exit codes for ends the control plane decides (OSMO-REFERENCE.md §3.4).
UPSTREAM_EXIT = 3000  # never ran: an upstream group failed
START_TIMEOUT_EXIT = 3005  # did not start running within the pool's start_timeout


def is_failure(status: str) -> bool:
    return status.startswith("FAILED")
