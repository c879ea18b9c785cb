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

from datetime import datetime
from typing import Literal

import msgspec

__all__ = (
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
    "ReportResult",
    "StateReport",
    "StreamMessage",
    "Welcome",
    "decode_stream_line",
    "encode_stream_line",
)

PROTOCOL_VERSION = 1
Stream = Literal["stdout", "stderr"]


class Node(msgspec.Struct, frozen=True):
    """Total resources of one node (a host, a Kubernetes node)."""

    name: str
    cpu: float
    memory: int
    gpu: int = 0
    platform: str | None = None  # None: the pool's default platform


class Capacity(msgspec.Struct, frozen=True):
    """What a backend has in total; the control plane subtracts what it dispatched there."""

    nodes: list[Node] = msgspec.field(default_factory=list)
    slots: int = 16  # concurrent attempts the runner accepts


class InventoryItem(msgspec.Struct, frozen=True):
    """An attempt a (re)starting runner still holds, with the state it last saw."""

    attempt: int
    epoch: int
    status: str


class Hello(msgspec.Struct, frozen=True):
    backend: str
    protocol_version: int
    runner_version: str
    cluster_id: str = ""
    capacity: Capacity = msgspec.field(default_factory=Capacity)
    inventory: list[InventoryItem] = msgspec.field(default_factory=list)


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
    attempt: int
    epoch: int
    status: str
    time: datetime
    exit_code: int | None = None
    reason: str | None = None
    node: str | None = None


class EventBatch(msgspec.Struct, frozen=True):
    events: list[StateReport] = msgspec.field(default_factory=list)
    acks: list[int] = msgspec.field(
        default_factory=list
    )  # launch sequence numbers received and persisted by the runner


class ReportResult(msgspec.Struct, frozen=True):
    attempt: int
    outcome: Literal["applied", "duplicate", "stale", "unknown"]


class EventReply(msgspec.Struct, frozen=True):
    results: list[ReportResult] = msgspec.field(default_factory=list)
    cancels: list[Cancel] = msgspec.field(default_factory=list)


class LogChunk(msgspec.Struct, frozen=True):
    attempt: int
    epoch: int
    stream: Stream
    offset: int
    data: bytes


class LogBatch(msgspec.Struct, frozen=True):
    chunks: list[LogChunk] = msgspec.field(default_factory=list)


class LogReply(msgspec.Struct, frozen=True):
    offsets: list[LogOffset] = msgspec.field(
        default_factory=list
    )  # per (attempt, stream): resend from here
    refused: list[int] = msgspec.field(
        default_factory=list
    )  # attempts this session may not write (stale epoch, unknown)


class Heartbeat(msgspec.Struct, frozen=True):
    capacity: Capacity
    live: list[int] = msgspec.field(default_factory=list)  # attempts alive on the runner


class HeartbeatReply(msgspec.Struct, frozen=True):
    cancels: list[Cancel] = msgspec.field(
        default_factory=list
    )  # stop these (a lost push is caught here)
    kill: list[int] = msgspec.field(
        default_factory=list
    )  # unknown here, or fenced by a newer epoch: stop without reporting


_encoder = msgspec.json.Encoder()
_stream_decoder = msgspec.json.Decoder(StreamMessage)


def encode_stream_line(message: StreamMessage) -> bytes:
    return _encoder.encode(message) + b"\n"


def decode_stream_line(line: bytes) -> StreamMessage:
    return _stream_decoder.decode(line)
