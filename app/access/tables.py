"""Roles: a name, a description and OSMO-shaped policies (app/access/policy.py)."""

from __future__ import annotations

from piccolo.columns import JSONB, Boolean, Text, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

__all__ = ("Role",)


class Role(Table, tablename="role"):
    """A role; ``builtin`` roles (``admin``, ``user``) may be edited but not deleted.

    Created by the hand-written migration gantry_2026_12_01t18_00_00_000000.
    """

    name = Varchar(length=64, primary_key=True)
    description = Text(default="")
    policies = JSONB(default="[]")
    builtin = Boolean(default=False)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())
