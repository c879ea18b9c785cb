"""``GET /api/v1/audit``: the audit log, newest first, filtered and in keyset pages (audit:Read)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.exceptions import ValidationException

from app.audit.service import AuditService, Filters
from app.auth.middleware import allowed
from app.bounds import text_query
from app.paging import cursor_query, limit_query
from app.problems import problems

__all__ = ("AuditController", "filters")


class AuditItem(msgspec.Struct):
    time: datetime
    principal: str
    via: str
    action: str
    target: str
    source: str
    outcome: str


class AuditPage(msgspec.Struct):
    items: list[AuditItem]
    next_cursor: str | None


def _moment(name: str, value: str | None) -> datetime | None:
    """An ISO 8601 time with an offset; a time without one would be read in some zone."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is not None and moment.tzinfo is not None:
        try:
            # In UTC here: a time at the ends of the calendar (year 1 at +14:00) has no UTC
            # date, which the database driver raised as a 500 (found by a review).
            return moment.astimezone(UTC)
        except OverflowError:
            pass
    message = "give an ISO 8601 time with an offset, like 2026-12-01T19:00:00Z"
    raise ValidationException(
        detail=f"{name}: {message}",
        extra=[{"key": name, "source": "query", "message": message}],
    )


def filters(
    principal: str | None,
    action: str | None,
    target: str | None,
    outcome: str | None,
    since: str | None,
    until: str | None,
) -> Filters:
    return Filters(
        principal=principal or None,
        action=action or None,
        target=target or None,
        outcome=outcome or None,
        since=_moment("since", since),
        until=_moment("until", until),
    )


# The query parameters the API and the page share; their bounds are the columns'.
PRINCIPAL = text_query(200, default=None, description="the user (or backend) name")
ACTION = text_query(64, default=None, description="a policy action, like workflow:Cancel")
TARGET = text_query(200, default=None, description="a workflow id, user, role or token id")
OUTCOME = text_query(16, default=None, description="allowed, denied, failed or error")
SINCE = text_query(64, default=None, description="from this time on (ISO 8601 with offset)")
UNTIL = text_query(64, default=None, description="before this time (ISO 8601 with offset)")
LIMIT = limit_query()
CURSOR = cursor_query()


class AuditController(Controller):
    path = "/api/v1/audit"
    tags = ["audit"]
    guards = [allowed("audit:Read")]

    @get(
        "/",
        summary="State-changing requests, newest first (audit:Read)",
        description="Every POST, PUT, PATCH and DELETE, refused ones included, and runner "
        "sessions opening and closing; a runner's reports are not recorded one by one.",
        responses=problems(403, 422),
    )
    async def audit(
        self,
        request: Request[Any, Any, Any],
        principal: str | None = PRINCIPAL,
        action: str | None = ACTION,
        target: str | None = TARGET,
        outcome: str | None = OUTCOME,
        since: str | None = SINCE,
        until: str | None = UNTIL,
        limit: int = LIMIT,
        cursor: str | None = CURSOR,
    ) -> AuditPage:
        service: AuditService = request.app.state.audit
        chosen = filters(principal, action, target, outcome, since, until)
        items, next_cursor = await service.page(chosen, limit, cursor)
        return AuditPage(
            [
                AuditItem(
                    time=i["at"],
                    principal=i["principal"],
                    via=i["via"],
                    action=i["action"],
                    target=i["target"],
                    source=i["source"],
                    outcome=i["outcome"],
                )
                for i in items
            ],
            next_cursor,
        )
