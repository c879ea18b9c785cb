"""The pools page: each pool's backends, their runners, capacity and use, and queue depth; live."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import ServerSentEvent, ServerSentEventMessage, Template

from app.auth.service import Principal
from app.db import Hub
from app.pools.service import PoolService
from app.templating import render_block
from app.web import page

__all__ = ("PoolViews",)

_REFRESH = 5.0  # heartbeat ages and "connected for" move even without changes


async def _context(service: PoolService, principal: Principal) -> dict[str, Any]:
    pools = await service.summaries(principal)
    backends = await service.backends([p.name for p in pools])
    return {"pools": pools, "backends": backends}


class PoolViews(Controller):
    include_in_schema = False

    @get("/pools")
    async def pools_page(
        self,
        request: Request[Any, Any, Any],
        pools: NamedDependency[PoolService],
        principal: NamedDependency[Principal],
    ) -> Template:
        context = await _context(pools, principal)
        return page(request, "pools/list.html", **context)

    @get("/pools/live")
    async def pools_live(
        self,
        pools: NamedDependency[PoolService],
        hub: NamedDependency[Hub],
        principal: NamedDependency[Principal],
    ) -> ServerSentEvent:

        async def updates() -> AsyncIterator[ServerSentEventMessage]:
            last = ""
            with hub.subscribe("backends", "sched", "wfs") as sub:
                while True:
                    html = render_block(
                        "pools/list.html", "pools", await _context(pools, principal)
                    )
                    html = html.replace("\r", "").replace("\n", " ")
                    if html != last:
                        last = html
                        yield ServerSentEventMessage(event="pools", data=html)
                    else:
                        yield ServerSentEventMessage(comment="ping", data=None)
                    await sub.get(timeout=_REFRESH)
                    await asyncio.sleep(0.5)  # coalesce bursts of changes
                    sub.drain()

        return ServerSentEvent(updates())
