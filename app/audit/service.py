"""Writing audit events and reading them back a page at a time, newest first.

Every text field is cut to its column's length before it is written, so no request can make a
row (or the insert) fail by being long; what is written is chosen by the middleware and never
holds a request's body, a password or a token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from app.bounds import INT8_MAX
from app.db import Database
from app.errors import Invalid
from app.spec.errors import SpecIssue

__all__ = ("AuditService", "Event", "Filters", "outcome_of", "record_on")

log = logging.getLogger(__name__)

# The lengths of audit_event's columns (app/audit/tables.py).
LIMITS = {
    "principal": 200,
    "via": 32,
    "action": 64,
    "target": 200,
    "source": 64,
    "outcome": 16,
    "request": 200,
}
# How long a request's answer may wait for its row: an exhausted pool must not hold answers
# for ever. A row not written by then is logged and the answer goes out.
WRITE_TIMEOUT = 5.0

OUTCOMES = ("allowed", "denied", "failed", "error")


def outcome_of(status: int) -> str:
    """``allowed`` (2xx, 3xx), ``denied`` (401, 403, 429: refused for who asked), ``failed``
    (any other 4xx: the request itself was wrong) or ``error`` (5xx)."""
    if status < 400:
        return "allowed"
    if status in (401, 403, 429):
        return "denied"
    if status < 500:
        return "failed"
    return "error"


def _cut(name: str, value: str | None) -> str:
    text = (value or "").replace("\x00", "")  # PostgreSQL text cannot hold NUL
    return text[: LIMITS[name]]


@dataclass(frozen=True, slots=True)
class Event:
    principal: str
    via: str
    action: str
    target: str = ""
    source: str = ""
    outcome: str = "allowed"
    status: int | None = None
    request: str = ""

    def row(self) -> tuple[Any, ...]:
        return (
            _cut("principal", self.principal),
            _cut("via", self.via),
            _cut("action", self.action),
            _cut("target", self.target),
            _cut("source", self.source),
            _cut("outcome", self.outcome),
            self.status,
            _cut("request", self.request),
        )


_INSERT = """
INSERT INTO audit_event (principal, via, action, target, source, outcome, status, request)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""


async def record_on(conn: asyncpg.Connection, event: Event) -> None:
    """Write ``event`` on ``conn``, inside the caller's transaction (a service's own event)."""
    await conn.execute(_INSERT, *event.row())


@dataclass(frozen=True, slots=True)
class Filters:
    principal: str | None = None
    action: str | None = None
    target: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def query(self) -> dict[str, str]:
        """The filters as query parameters (for the page's links)."""
        out = {}
        for name in ("principal", "action", "target", "outcome"):
            value = getattr(self, name)
            if value:
                out[name] = value
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.isoformat()
        return out


def encode_cursor(event_id: int) -> str:
    return base64.urlsafe_b64encode(f"a{event_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("a") or not raw[1:].isdigit():
            raise ValueError(raw)
        event_id = int(raw[1:])
        if not 0 < event_id <= INT8_MAX:
            raise ValueError(raw)
        return event_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Invalid(
            "cursor is not one this API returned",
            [SpecIssue("cursor", None, "pass next_cursor from the previous page")],
        ) from None


class AuditService:
    """Writes a request's event on the pool it is given; reads pages on the request pool."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, event: Event, pool: Database | None = None) -> bool:
        """Write ``event``; False (and a log line) when it could not be, never an exception:
        an audit write that fails must not turn the answer into a 500."""
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                async with (pool or self.db).pool.acquire() as conn:
                    await record_on(conn, event)
            return True
        except Exception:
            log.exception(
                "could not write the audit event %s by %r on %r",
                event.action,
                event.principal,
                event.target,
            )
            return False

    async def page(
        self, filters: Filters, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Up to ``limit`` events matching ``filters``, newest first, and the next page's
        cursor (None on the last page). Keyset on ``id``: rows written meanwhile never shift
        a page."""
        before = decode_cursor(cursor) if cursor else None
        # Only the filters given go into the statement (not "$n IS NULL OR ..."), so that a
        # generic plan still reads the filter's own index, newest first.
        where, args = [], []
        for column, op, value in (
            ("id", "<", before),
            ("principal", "=", filters.principal),
            ("action", "=", filters.action),
            ("target", "=", filters.target),
            ("outcome", "=", filters.outcome),
            ("at", ">=", filters.since),
            ("at", "<", filters.until),
        ):
            if value is not None:
                args.append(value)
                where.append(f"{column} {op} ${len(args)}")
        args.append(limit + 1)
        # Columns and operators are the literals above; every value is a parameter.
        condition = " WHERE " + " AND ".join(where) if where else ""
        sql = (
            "SELECT id, at, principal, via, action, target, source, outcome, status, request"  # noqa: S608
            f" FROM audit_event{condition} ORDER BY id DESC LIMIT ${len(args)}"
        )
        async with self.db.connection() as conn:
            rows = await conn.fetch(sql, *args)
        items = [dict(r) for r in rows[:limit]]
        next_cursor = encode_cursor(items[-1]["id"]) if len(rows) > limit else None
        return items, next_cursor
