"""What crosses the wire for pools and backends (the JSON API's bodies and answers)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from app.bounds import Name
from app.pools.config import PoolConfig, PoolConfigIn
from runner.protocol import Capacity

__all__ = (
    "BackendCreated",
    "BackendIn",
    "BackendOut",
    "BackendPage",
    "PoolIn",
    "PoolOut",
    "PoolPage",
)


class PoolIn(PoolConfigIn, forbid_unknown_fields=True):
    """A new pool: its name and, optionally, its configuration."""

    name: Name = ""


class PoolOut(PoolConfig):
    """A pool: its configuration, and (read-only) its backends and queue."""

    name: str = ""
    backends: list[str] = msgspec.field(default_factory=list)  # the names of its backends
    queued_groups: int = 0  # groups waiting for a place in the pool


class PoolPage(msgspec.Struct):
    items: list[PoolOut]
    next_cursor: str | None


class BackendIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    pool: Name


class BackendOut(msgspec.Struct):
    name: str
    pool: str
    connected: bool
    last_heartbeat: datetime | None
    # What its runner last reported (runner/protocol.py); no nodes and 0 slots before then.
    capacity: Capacity


class BackendPage(msgspec.Struct):
    items: list[BackendOut]
    next_cursor: str | None


class BackendCreated(msgspec.Struct):
    name: str
    pool: str
    token: str
