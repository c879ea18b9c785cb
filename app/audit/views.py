"""``/admin/audit``: the audit log as a page, with the API's filters and keyset pages."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Template

from app.audit.api import FILTERS
from app.audit.middleware import ACTIONS
from app.audit.service import OUTCOMES, AuditService, Filters
from app.auth.middleware import allowed
from app.paging import cursor_query, limit_query
from app.web import page

__all__ = ("AuditViews",)


class AuditViews(Controller):
    include_in_schema = False
    # Without audit:Read: a readable 403 page (app/asgi.py renders refusals off /api as pages).
    guards = [allowed("audit:Read")]
    dependencies = FILTERS

    @get("/admin/audit")
    async def audit_page(
        self,
        request: Request[Any, Any, Any],
        audit: NamedDependency[AuditService],
        filters: NamedDependency[Filters],
        limit: int = limit_query(),
        cursor: str | None = cursor_query(),
    ) -> Template:
        items, next_cursor = await audit.page(filters, limit, cursor)
        return page(
            request,
            "admin/audit.html",
            items=items,
            filters=filters.query(),
            limit=limit,
            next_cursor=next_cursor,
            first_page=cursor is None,
            actions=sorted({*ACTIONS.values(), "runner:SessionClose"}),
            outcomes=OUTCOMES,
        )
