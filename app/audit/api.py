"""``GET /api/v1/audit``: the audit log, newest first, filtered and in keyset pages (audit:Read)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter

from app.audit.service import AuditService, Filters
from app.auth.middleware import allowed
from app.bounds import query_refused, text_query
from app.paging import cursor_query, limit_query
from app.problems import problems

__all__ = ("FILTERS", "AuditController", "provide_filters")


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
    raise query_refused(name, message)


# Its bound is checked below, not by Litestar, whose message would name the Python parameter
# (`who`) rather than the query's (`principal`).
_Who = Annotated[
    str | None,
    QueryParameter(name="principal", description="the user (or backend) name, at most 200"),
]


def provide_filters(
    # Not `principal`, which names the caller (app/deps.py); the query parameter keeps it.
    who: _Who = None,
    action: str | None = text_query(
        64, default=None, description="a policy action, like workflow:Cancel"
    ),
    target: str | None = text_query(
        200, default=None, description="a workflow id, user, role or token id"
    ),
    outcome: str | None = text_query(
        16, default=None, description="allowed, denied, failed or error"
    ),
    since: str | None = text_query(
        64, default=None, description="from this time on (ISO 8601 with offset)"
    ),
    until: str | None = text_query(
        64, default=None, description="before this time (ISO 8601 with offset)"
    ),
) -> Filters:
    """The audit log's filters, from the query parameters the API and the page share (their
    bounds are the columns')."""
    if who is not None and len(who) > 200:  # NUL is refused for every route (app/asgi.py)
        raise query_refused("principal", "at most 200 characters")
    return Filters(
        principal=who or None,
        action=action or None,
        target=target or None,
        outcome=outcome or None,
        since=_moment("since", since),
        until=_moment("until", until),
    )


# `filters: Filters` in a handler's signature (Litestar dependency injection).
FILTERS = {"filters": Provide(provide_filters, sync_to_thread=False)}


class AuditController(Controller):
    path = "/api/v1/audit"
    tags = ["audit"]
    guards = [allowed("audit:Read")]
    dependencies = FILTERS

    @get(
        "/",
        summary="State-changing requests, newest first (audit:Read)",
        description="Every POST, PUT, PATCH and DELETE, refused ones included, and runner "
        "sessions opening and closing; a runner's reports are not recorded one by one.",
        responses=problems(403, 422),
    )
    async def audit(
        self,
        audit: NamedDependency[AuditService],
        filters: NamedDependency[Filters],
        limit: int = limit_query(),
        cursor: str | None = cursor_query(),
    ) -> AuditPage:
        items, next_cursor = await audit.page(filters, limit, cursor)
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
