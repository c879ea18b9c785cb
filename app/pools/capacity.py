"""Capacity: amounts of CPU, memory and GPUs, what a backend has per platform, and what is
free of it. One module for the submission check, the scheduler, "why is it waiting" and the
pools page, which each once kept positional ``[cpu, memory, gpu]`` lists of their own.

A backend's capacity is what its runner reports (runner/protocol.py ``Capacity``: nodes, each
with a platform, and slots); what is used is what the control plane dispatched there and has
not heard the end of: an attempt stays counted until its executor confirms it is gone
(``runner_ended_at``), so a pod in its grace period is not booked twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from runner import protocol as p

__all__ = (
    "CONNECTED",
    "Amount",
    "BackendRoom",
    "Need",
    "read_capacity",
    "room_of",
)

# Whether a backend is connected: a runner session is open and its last heartbeat is younger
# than the lease TTL (DESIGN.md §9), for a query that joins `backend b` LEFT JOIN
# `runner_session s ON s.id = b.session_id AND s.ended_at IS NULL`; {ttl} is the parameter
# that holds the TTL in seconds, such as "$2".
CONNECTED = "(s.id IS NOT NULL AND b.last_heartbeat > now() - make_interval(secs => {ttl}))"

_CPU_SLACK = 1e-9  # CPU is fractional: sums of 0.1 must fit in 0.3


def read_capacity(stored: str | bytes | None) -> dict[str, Any]:
    """A backend's stored capacity with only the nodes whose numbers can be true.

    The runner API refuses bad nodes before storing them (app/runner_api/service.py); this
    reads defensively anyway, so a row written by an older version (or by hand) can never make
    a page or a sum overflow: a node that does not decode or is out of bounds is left out.
    """
    try:
        raw = msgspec.json.decode(stored or "{}")
    except msgspec.DecodeError:
        return {"nodes": [], "slots": 0}
    if not isinstance(raw, dict):
        return {"nodes": [], "slots": 0}
    nodes = []
    for item in raw.get("nodes") or []:
        try:
            node = msgspec.convert(item, p.Node)
        except msgspec.ValidationError:
            continue
        if p.node_problem(node) is None:
            nodes.append(msgspec.to_builtins(node))
    slots = raw.get("slots", 0)
    if not isinstance(slots, int) or isinstance(slots, bool) or not 0 <= slots <= 100_000:
        slots = 0
    return {**raw, "nodes": nodes, "slots": slots}


@dataclass(slots=True)
class Amount:
    """An amount of CPU (cores), memory (bytes) and GPUs."""

    cpu: float = 0.0
    memory: float = 0.0
    gpu: float = 0.0

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> Amount:
        """From a node of a runner's capacity, a database row, or anything with the three."""
        return cls(
            float(item.get("cpu") or 0), float(item.get("memory") or 0), float(item.get("gpu") or 0)
        )

    def __add__(self, other: Amount) -> Amount:
        return Amount(self.cpu + other.cpu, self.memory + other.memory, self.gpu + other.gpu)

    def __sub__(self, other: Amount) -> Amount:
        return Amount(self.cpu - other.cpu, self.memory - other.memory, self.gpu - other.gpu)

    def fits(self, room: Amount) -> bool:
        """Whether this much fits in ``room``."""
        return not self.short_of(room)

    def short_of(self, room: Amount) -> list[str]:
        """The resources (``cpu``, ``memory``, ``gpu``) of which ``room`` has too little."""
        short = []
        if self.cpu > room.cpu + _CPU_SLACK:
            short.append("cpu")
        if self.memory > room.memory:
            short.append("memory")
        if self.gpu > room.gpu:
            short.append("gpu")
        return short


def room_of(
    nodes: Iterable[Mapping[str, Any]], default_platform: str | None = None
) -> dict[str | None, Amount]:
    """Nodes' amounts summed per platform; a node that reports none is on the pool's default
    platform (None where the pool has none)."""
    room: dict[str | None, Amount] = {}
    for node in nodes:
        platform = node.get("platform") or default_platform
        room[platform] = room.get(platform, Amount()) + Amount.of(node)
    return room


@dataclass(frozen=True, slots=True)
class Need:
    """What some tasks need on one platform, together (a group's share of it)."""

    platform: str | None
    amount: Amount
    tasks: int


@dataclass(slots=True)
class BackendRoom:
    """A connected backend as the scheduler sees it: what its nodes have, what is free."""

    name: str
    epoch: int
    slots: int  # attempts it may still start
    total_slots: int = 0
    free: dict[str | None, Amount] = field(default_factory=dict)
    total: dict[str | None, Amount] = field(default_factory=dict)

    def fits(self, needs: list[Need], free: bool = True) -> bool:
        """Whether the needs (a whole group) fit what is free now (or, with ``free=False``,
        what the backend has at all)."""
        have = self.free if free else self.total
        slots = self.slots if free else self.total_slots
        return slots >= sum(n.tasks for n in needs) and all(
            n.platform in have and n.amount.fits(have[n.platform]) for n in needs
        )

    def reserve(self, needs: list[Need]) -> None:
        """Count the needs as used (a group dispatched here in this pass)."""
        self.slots -= sum(n.tasks for n in needs)
        for n in needs:
            self.free[n.platform] = self.free.get(n.platform, Amount()) - n.amount
