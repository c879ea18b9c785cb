"""Pools: named sets of backends that workflows are submitted to."""

from __future__ import annotations

from piccolo.columns import JSONB, Array, Text, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

__all__ = ("Pool",)


class Pool(Table, tablename="pool"):
    """A pool; ``defaults`` holds default resources and timeouts, ``platforms`` its platforms.

    Who may use it is decided by roles' policies on ``pool/<name>`` (app/access/policy.py).
    """

    name = Varchar(length=64, primary_key=True)
    description = Text(default="")
    platforms = Array(Varchar(length=64), default=list)
    defaults = JSONB(default="{}")
    created_at = Timestamptz(default=TimestamptzNow())
