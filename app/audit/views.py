"""``/admin/audit``: the audit log as a page, with the API's filters and keyset pages."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Template

from app.audit.api import ACTION, CURSOR, LIMIT, OUTCOME, PRINCIPAL, SINCE, TARGET, UNTIL, filters
from app.audit.middleware import ACTIONS
from app.audit.service import OUTCOMES, AuditService
from app.auth.middleware import allowed
from app.web import page

__all__ = ("AuditViews",)


class AuditViews(Controller):
    include_in_schema = False
    # Without audit:Read: a readable 403 page (app/asgi.py renders refusals off /api as pages).
    guards = [allowed("audit:Read")]

    @get("/admin/audit")
    async def audit_page(
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
    ) -> Template:
        service: AuditService = request.app.state.audit
        chosen = filters(principal, action, target, outcome, since, until)
        items, next_cursor = await service.page(chosen, limit, cursor)
        return page(
            request,
            "admin/audit.html",
            items=items,
            filters=chosen.query(),
            limit=limit,
            next_cursor=next_cursor,
            first_page=cursor is None,
            actions=sorted({*ACTIONS.values(), "runner:SessionClose"}),
            outcomes=OUTCOMES,
        )
