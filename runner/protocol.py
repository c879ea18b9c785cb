"""Runner protocol v1: the wire contract between runners and the control plane.

msgspec Structs only; ``app/runner_api`` and ``runner/`` both import this module, and nothing
else is shared. Paths are under ``/api/runner/v1``; every request carries
``Authorization: Bearer <backend token>``.

1. ``POST /sessions`` (Hello → Welcome): open a session; inventory attempts get keep or kill.
2. ``GET /sessions/{id}/stream``: NDJSON ``Launch``, ``Cancel``, ``Ping``, ``Goodbye``.
3. ``POST /sessions/{id}/events`` (EventBatch → EventReply): state reports + launch acks.
4. ``POST /sessions/{id}/logs`` (LogBatch → LogReply): chunks by byte offset per stream.
5. ``POST /sessions/{id}/heartbeat`` (Heartbeat → HeartbeatReply): capacity, lease renewal.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import msgspec

__all__ = (
    "MAX_NODES",
    "NODE_LIMITS",
    "PROTOCOL_VERSION",
    "Attempt",
    "AttemptFile",
    "Cancel",
    "Capacity",
    "Decision",
    "EventBatch",
    "EventReply",
    "Goodbye",
    "Heartbeat",
    "HeartbeatReply",
    "Hello",
    "InputMount",
    "InventoryItem",
    "Launch",
    "LogBatch",
    "LogChunk",
    "LogOffset",
    "LogReply",
    "Node",
    "Ping",
    "Refusal",
    "ReportResult",
    "StateReport",
    "StreamMessage",
    "Welcome",
    "decode_stream_line",
    "encode_stream_line",
    "fit_report_text",
    "node_problem",
    "report_problem",
)

PROTOCOL_VERSION = 1
Stream = Literal["stdout", "stderr"]

# Bounds on what a peer may send. A message outside them is malformed (the control plane answers
# 400 naming the field): ids are PostgreSQL bigints, names fit their columns, and text carries no
# NUL (PostgreSQL cannot store it). Values a correct runner could still get wrong (a node's
# capacity, a status it may not report) are checked item by item and refused in the answer.
_NO_NUL = r"^[^\x00]*$"
Id = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Epoch = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Int8 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Short = Annotated[str, msgspec.Meta(max_length=64, pattern=_NO_NUL)]
NodeName = Annotated[str, msgspec.Meta(max_length=1000)]  # checked per node by node_problem()
MAX_NODE_NAME_IN_CAPACITY = 253  # a Kubernetes node name is a DNS subdomain
ClusterId = Annotated[str, msgspec.Meta(max_length=200, pattern=_NO_NUL)]
MAX_NODES = 10_000  # per report
MAX_ITEMS = 100_000  # events, acks, live attempts, inventory, log chunks per request
# What a real node can have (the largest machines have a few thousand cores, tens of TiB).
NODE_LIMITS = {"cpu": 100_000, "memory": 2**50, "gpu": 1024}


class Node(msgspec.Struct, frozen=True):
    """Total resources of one node (a host, a Kubernetes node)."""

    name: NodeName
    cpu: float  # bounded per node by node_problem(), so one bad node is refused alone
    memory: Int8
    gpu: Int8 = 0
    platform: Short | None = None  # None: the pool's default platform


def node_problem(node: Node) -> str | None:
    """Why ``node``'s reported capacity cannot be true (None: it can)."""
    if not node.name or len(node.name) > MAX_NODE_NAME_IN_CAPACITY or "\x00" in node.name:
        return f"a node needs a name of 1 to {MAX_NODE_NAME_IN_CAPACITY} characters without NUL"
    for resource, most in NODE_LIMITS.items():
        value = getattr(node, resource)
        if not math.isfinite(value) or value < 0 or value > most:
            return f"{resource} {value!r} is not between 0 and {most}"
    return None


class Capacity(msgspec.Struct, frozen=True):
    """What a backend has in total; the control plane subtracts what it dispatched there."""

    nodes: Annotated[list[Node], msgspec.Meta(max_length=MAX_NODES)] = msgspec.field(
        default_factory=list
    )
    slots: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 16  # concurrent attempts accepted


class InventoryItem(msgspec.Struct, frozen=True):
    """An attempt a (re)starting runner still holds, with the state it last saw."""

    attempt: Id
    epoch: Epoch
    status: Short


class Refusal(msgspec.Struct, frozen=True):
    """One item of a report the control plane refused: which (``path`` like ``capacity.nodes[3]``
    or ``events[0]``), the attempt it was about when there is one, and why."""

    path: str
    reason: str
    attempt: int | None = None


class Hello(msgspec.Struct, frozen=True):
    backend: Short
    protocol_version: Annotated[int, msgspec.Meta(ge=0, le=1000)]
    runner_version: Annotated[str, msgspec.Meta(max_length=200, pattern=_NO_NUL)]
    cluster_id: ClusterId = ""
    capacity: Capacity = msgspec.field(default_factory=Capacity)
    inventory: Annotated[list[InventoryItem], msgspec.Meta(max_length=MAX_ITEMS)] = msgspec.field(
        default_factory=list
    )


class LogOffset(msgspec.Struct, frozen=True):
    attempt: int
    stream: Stream
    offset: int  # bytes stored contiguously from 0


class Decision(msgspec.Struct, frozen=True):
    """Keep or kill an inventoried attempt; a kept one resumes its logs from ``offsets``."""

    attempt: int
    action: Literal["keep", "kill"]
    epoch: int
    reason: str = ""
    offsets: list[LogOffset] = msgspec.field(default_factory=list)


class Welcome(msgspec.Struct, frozen=True):
    session_id: str
    epoch: int
    heartbeat_interval: float
    lease_ttl: float
    log_flush_interval: float
    decisions: list[Decision] = msgspec.field(default_factory=list)
    refused: list[Refusal] = msgspec.field(default_factory=list)  # capacity nodes not counted


class AttemptFile(msgspec.Struct, frozen=True):
    path: str
    contents: str
    base64: bool = False


class InputMount(msgspec.Struct, frozen=True):
    """``{{input:index}}`` is the output directory of attempt ``attempt`` (task ``task``)."""

    index: int
    task: str
    attempt: int


class Attempt(msgspec.Struct, frozen=True):
    """A fully rendered task attempt: everything an executor needs to run it."""

    id: int
    workflow_id: str
    group: str
    group_size: int
    barrier: bool
    task: str
    retry: int
    lead: bool
    image: str
    command: list[str]
    args: list[str]
    environment: dict[str, str]
    files: list[AttemptFile]
    inputs: list[InputMount]
    cpu: float = 0.0
    memory: int = 0
    gpu: int = 0
    storage: int = 0
    platform: str | None = None
    hosts: list[str] = msgspec.field(
        default_factory=list
    )  # tasks of the same group, for {{host:<task>}}


class Launch(msgspec.Struct, frozen=True, tag="launch"):
    seq: int
    epoch: int
    attempt: Attempt
    # The workflow's owner holds the built-in `admin` role: a runner without a sandbox runs
    # only such tasks. An older control plane does not send it: treated as not an admin.
    owner_admin: bool = False


class Cancel(msgspec.Struct, frozen=True, tag="cancel"):
    attempt: int
    force: bool = False
    grace: float = 10.0
    reason: str = ""


class Ping(msgspec.Struct, frozen=True, tag="ping"):
    time: datetime


class Goodbye(msgspec.Struct, frozen=True, tag="goodbye"):
    reason: str
    reconnect: bool = True  # False: the session is over, open a new one


StreamMessage = Launch | Cancel | Ping | Goodbye


class StateReport(msgspec.Struct, frozen=True):
    attempt: Id
    epoch: Epoch
    status: Short
    time: datetime
    exit_code: Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)] | None = None
    # Text an executor passed on (an error message, a node name) is checked per report by
    # report_problem(), so one odd message refuses its report and not the whole batch.
    reason: Annotated[str, msgspec.Meta(max_length=65_536)] | None = None
    node: Annotated[str, msgspec.Meta(max_length=65_536)] | None = None


MAX_REASON = 4096
MAX_NODE_NAME = 200  # task.node is varchar(200)


def fit_report_text(text: str | None, most: int) -> str | None:
    """What a runner sends as a report's reason or node: without NUL and at most ``most``
    characters, so an executor's odd message never gets its report refused."""
    if text is None:
        return None
    text = text.replace("\x00", "\ufffd")
    return text if len(text) <= most else text[: most - 1] + "…"


# How far a report's time may lie from the control plane's clock: a runner reports late after
# a disconnect (work goes on meanwhile), and clocks drift; beyond that the time is not a time
# of this attempt, and stored it would break every duration shown (`-infinity`, year 1).
REPORT_TIME_PAST = timedelta(days=30)
REPORT_TIME_FUTURE = timedelta(hours=1)


def report_problem(
    report: StateReport, reportable: set[str] | frozenset[str], now: datetime | None = None
) -> str | None:
    """Why the control plane cannot apply ``report`` (None: it can)."""
    if report.time.tzinfo is None:
        return "time has no UTC offset; send ISO 8601 with Z or +00:00"
    now = now or datetime.now(UTC)
    if not now - REPORT_TIME_PAST <= report.time <= now + REPORT_TIME_FUTURE:
        return (
            f"time {report.time.isoformat()} is not within 30 days before and 1 hour after "
            f"the control plane's clock ({now.isoformat(timespec='seconds')})"
        )
    if report.status not in reportable:
        return (
            f"status {report.status!r} cannot be reported by a runner; "
            f"use one of {', '.join(sorted(reportable))}"
        )
    for field, text, most in (
        ("reason", report.reason, MAX_REASON),
        ("node", report.node, MAX_NODE_NAME),
    ):
        if text is not None and "\x00" in text:
            return f"{field} contains a NUL character"
        if text is not None and len(text) > most:
            return f"{field} is longer than {most} characters"
    return None


class EventBatch(msgspec.Struct, frozen=True):
    events: Annotated[list[StateReport], msgspec.Meta(max_length=MAX_ITEMS)] = msgspec.field(
        default_factory=list
    )
    acks: Annotated[list[Id], msgspec.Meta(max_length=MAX_ITEMS)] = msgspec.field(
        default_factory=list
    )  # launch sequence numbers received and persisted by the runner


class ReportResult(msgspec.Struct, frozen=True):
    attempt: int
    outcome: Literal["applied", "duplicate", "stale", "unknown"]


class EventReply(msgspec.Struct, frozen=True):
    results: list[ReportResult] = msgspec.field(default_factory=list)
    cancels: list[Cancel] = msgspec.field(default_factory=list)
    refused: list[Refusal] = msgspec.field(default_factory=list)  # reports not applied, and why


class LogChunk(msgspec.Struct, frozen=True):
    attempt: Id
    epoch: Epoch
    stream: Stream
    offset: Id
    data: bytes
    # When the task wrote these bytes (seconds since the epoch), where the runner knows it.
    # Added compatibly within v1: a server that predates it ignores it, and a runner that
    # predates it sends none. Chunks arrive in the order the task wrote them across streams.
    at: float | None = None


class LogBatch(msgspec.Struct, frozen=True):
    chunks: Annotated[list[LogChunk], msgspec.Meta(max_length=MAX_ITEMS)] = msgspec.field(
        default_factory=list
    )


class LogReply(msgspec.Struct, frozen=True):
    offsets: list[LogOffset] = msgspec.field(
        default_factory=list
    )  # per (attempt, stream): resend from here
    refused: list[int] = msgspec.field(
        default_factory=list
    )  # attempts this session may not write (stale epoch, unknown)


class Heartbeat(msgspec.Struct, frozen=True):
    capacity: Capacity
    live: Annotated[list[Id], msgspec.Meta(max_length=MAX_ITEMS)] = msgspec.field(
        default_factory=list
    )  # attempts alive on the runner


class HeartbeatReply(msgspec.Struct, frozen=True):
    cancels: list[Cancel] = msgspec.field(
        default_factory=list
    )  # stop these (a lost push is caught here)
    kill: list[int] = msgspec.field(
        default_factory=list
    )  # unknown here, or fenced by a newer epoch: stop without reporting
    refused: list[Refusal] = msgspec.field(default_factory=list)  # capacity nodes not counted


_encoder = msgspec.json.Encoder()
_stream_decoder = msgspec.json.Decoder(StreamMessage)


def encode_stream_line(message: StreamMessage) -> bytes:
    return _encoder.encode(message) + b"\n"


def decode_stream_line(line: bytes) -> StreamMessage:
    return _stream_decoder.decode(line)
