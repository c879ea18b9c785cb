"""Which workflows a list shows: one filter for the API's list, the page and its live rows."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from litestar.di import Provide
from litestar.params import Parameter

from app.bounds import query_refused, text_query

__all__ = ("FILTER", "NO_FILTER", "WorkflowFilter", "provide_workflow_filter")


class WorkflowFilter(msgspec.Struct, frozen=True):
    """Every field narrows the list; None is no filter. The caller's pools always do."""

    status: str | None = None  # statuses, comma-separated (checked by the service: 422)
    pool: str | None = None
    name: str | None = None  # a part of the workflow id, any case
    user: str | None = None  # the owner
    submitted_after: datetime | None = None  # at or after
    submitted_before: datetime | None = None

    def query(self) -> dict[str, str]:
        """The filters as a page's URL query (links and the live rows keep them)."""
        fields = msgspec.structs.asdict(self)
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items() if v}

    def any_status(self) -> WorkflowFilter:
        """The same filter for every status (the counts beside a status filter)."""
        return msgspec.structs.replace(self, status=None)


NO_FILTER = WorkflowFilter()


def _utc(name: str, moment: datetime | None) -> datetime | None:
    """In UTC (a time without a zone is read as UTC); a time with no UTC date (year 1 at
    +14:00) is refused naming the parameter: the database driver raised it as a 500."""
    if moment is None:
        return None
    try:
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError:
        raise query_refused(name, "give a time between the years 1 and 9999 in UTC") from None


_SUBMITTED_AFTER = Parameter(
    default=None, description="only those submitted at or after this time (ISO 8601)"
)
_SUBMITTED_BEFORE = Parameter(
    default=None, description="only those submitted before this time (ISO 8601)"
)


def provide_workflow_filter(
    # Every status name, comma-separated, fits: the CLI sends repeated --status this way.
    status: str | None = text_query(
        600, default=None, description="statuses, comma-separated (any of them)"
    ),
    pool: str | None = text_query(64, default=None),
    name: str | None = text_query(200, default=None, description="a part of the workflow id"),
    user: str | None = text_query(64, default=None, description="the owner"),
    submitted_after: datetime | None = _SUBMITTED_AFTER,
    submitted_before: datetime | None = _SUBMITTED_BEFORE,
) -> WorkflowFilter:
    # An empty value (a cleared form field) is no filter.
    return WorkflowFilter(
        status or None,
        pool or None,
        name or None,
        user or None,
        _utc("submitted_after", submitted_after),
        _utc("submitted_before", submitted_before),
    )


# `filters: WorkflowFilter` in a handler's signature (Litestar dependency injection).
FILTER = {"filters": Provide(provide_workflow_filter, sync_to_thread=False)}
