"""Pools: named sets of backends that workflows are submitted to."""

from __future__ import annotations

from piccolo.columns import JSONB, Text, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

__all__ = ("Pool",)


class Pool(Table, tablename="pool"):
    """A pool; ``config`` is its configuration (app/pools/config.py: platforms, defaults,
    timeouts, limits, maintenance).

    Who may use it is decided by roles' policies on ``pool/<name>`` (app/access/policy.py).
    """

    name = Varchar(length=64, primary_key=True)
    description = Text(default="")
    config = JSONB(default="{}")
    created_at = Timestamptz(default=TimestamptzNow())
