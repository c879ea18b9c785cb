"""Audit events: one row per state-changing request (and per runner session closing)."""

from __future__ import annotations

from piccolo.columns import BigSerial, Integer, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

__all__ = ("AuditEvent",)


class AuditEvent(Table, tablename="audit_event"):
    """What was done, by whom, how they authenticated, and how it ended.

    Rows are kept: retention (``GANTRY_RETENTION_DAYS``) never deletes them. Created by the
    hand-written migration gantry_2026_12_01t19_00_00_000000; the lengths are the bounds
    ``app/audit/service.py`` truncates to.
    """

    id = BigSerial(primary_key=True)
    at = Timestamptz(default=TimestamptzNow())
    principal = Varchar(length=200, default="")
    via = Varchar(length=32, default="")
    action = Varchar(length=64, default="")
    target = Varchar(length=200, default="")
    source = Varchar(length=64, default="")
    outcome = Varchar(length=16, default="")
    status = Integer(null=True, default=None)
    request = Varchar(length=200, default="")
