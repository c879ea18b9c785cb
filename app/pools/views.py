"""The pools page: each pool's backends, their runners and capacity."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Template

from app.auth.middleware import principal_of
from app.pools.service import PoolService
from app.web import page

__all__ = ("PoolViews",)


class PoolViews(Controller):
    include_in_schema = False

    @get("/pools")
    async def pools(self, request: Request[Any, Any, Any]) -> Template:
        service: PoolService = request.app.state.pools
        principal = principal_of(request)
        pools = await service.summaries(principal)
        backends = await service.backends([p["name"] for p in pools])
        return page(request, "pools/list.html", pools=pools, backends=backends)
