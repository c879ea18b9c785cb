"""The /api/runner/v1 endpoints (runner protocol v1; see runner/protocol.py)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.response import Stream

from app.auth.middleware import principal_of
from app.runner_api.service import RunnerService
from runner import protocol as p

__all__ = ("RunnerController",)


def _service(request: Request[Any, Any, Any]) -> RunnerService:
    return request.app.state.runners


class RunnerController(Controller):
    path = "/api/runner/v1"
    tags = ["runner protocol"]

    @post("/sessions", status_code=201, summary="Open a runner session (hello)")
    async def open_session(self, request: Request[Any, Any, Any], data: p.Hello) -> p.Welcome:
        return await _service(request).open_session(principal_of(request).name, data)

    @get("/sessions/{session_id:str}/stream", summary="Launches and cancels as NDJSON")
    async def stream(self, request: Request[Any, Any, Any], session_id: str) -> Stream:
        service = _service(request)
        session = await service.session(principal_of(request).name, session_id)
        return Stream(
            service.stream(session),
            media_type="application/x-ndjson",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    @post("/sessions/{session_id:str}/events", status_code=200, summary="State reports and acks")
    async def events(
        self, request: Request[Any, Any, Any], session_id: str, data: p.EventBatch
    ) -> p.EventReply:
        service = _service(request)
        session = await service.session(principal_of(request).name, session_id)
        return await service.events(session, data)

    @post("/sessions/{session_id:str}/logs", status_code=200, summary="Log chunks by offset")
    async def logs(
        self, request: Request[Any, Any, Any], session_id: str, data: p.LogBatch
    ) -> p.LogReply:
        service = _service(request)
        session = await service.session(principal_of(request).name, session_id)
        return await service.logs(session, data)

    @post("/sessions/{session_id:str}/heartbeat", status_code=200, summary="Capacity and leases")
    async def heartbeat(
        self, request: Request[Any, Any, Any], session_id: str, data: p.Heartbeat
    ) -> p.HeartbeatReply:
        service = _service(request)
        session = await service.session(principal_of(request).name, session_id)
        return await service.heartbeat(session, data)
