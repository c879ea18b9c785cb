"""Backends (one per cluster) and the sessions their runners open."""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    UUID,
    ForeignKey,
    Integer,
    OnDelete,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from app.pools.tables import Pool

__all__ = ("Backend", "RunnerSession")


class Backend(Table, tablename="backend"):
    """A compute cluster; its runner authenticates with the token whose hash is kept here."""

    name = Varchar(length=64, primary_key=True)
    pool = ForeignKey(references=Pool, on_delete=OnDelete.restrict, null=False)
    token_hash = Varchar(length=64, unique=True)
    # After a rotation the previous token works until ``previous_valid_until`` (a grace, so
    # a runner is redeployed without downtime); see migration gantry_2026_12_01t18_30_00.
    previous_token_hash = Varchar(length=64, null=True, default=None)
    previous_valid_until = Timestamptz(null=True, default=None)
    cluster_id = Varchar(length=200, default="")
    epoch = Integer(default=0)
    session_id = UUID(null=True, default=None)
    last_heartbeat = Timestamptz(null=True, default=None)
    capacity = JSONB(default="{}")
    created_at = Timestamptz(default=TimestamptzNow())


class RunnerSession(Table, tablename="runner_session"):
    """One connection epoch of a backend's runner; a newer session ends the older ones."""

    id = UUID(primary_key=True)
    backend = ForeignKey(references=Backend, on_delete=OnDelete.cascade, null=False)
    epoch = Integer()
    runner_version = Varchar(length=64, default="")
    connected_at = Timestamptz(default=TimestamptzNow())
    last_seen = Timestamptz(default=TimestamptzNow())
    ended_at = Timestamptz(null=True, default=None)
