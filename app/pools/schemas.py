"""What crosses the wire for pools and backends (the JSON API's bodies and answers)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from app.bounds import Description, Name
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


class PoolIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    description: Description = ""
    platforms: Annotated[list[Name], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=list
    )


class PoolOut(msgspec.Struct):
    name: str
    description: str
    platforms: list[str]
    backends: list[str]  # the names of the pool's backends
    queued_groups: int  # groups waiting for a place in the pool


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
